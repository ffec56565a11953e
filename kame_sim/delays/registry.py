"""The names a delay field may use instead of a table: filled by :mod:`kame_sim.delays.presets`.

Why a registry: a mixture component takes the same shorthand as any delay field (so it may name a
preset), while presets are built from the delay models. The models read names from this dict and
the presets module writes them into it, so neither imports the other. ``kame_sim.delays`` imports
the presets, so the registry is full whenever any delay module has been imported.
"""

from __future__ import annotations

from typing import Any

PRESET_SPECS: dict[str, Any] = {}
"""Preset name -> its delay spec (a model instance)."""
