"""Delay models for the simulator: validated specs, named presets, fast seeded samplers.

Typical use::

    spec = parse_delay("gpt-4.1-ttft")              # or a number, or {"kind": "lognormal", ...}
    ttft = spec.sampler(component_rng(seed, "llm.ttft"))
    delay = ttft.draw()                             # seconds, a finite float >= 0

Config models declare delay fields as ``ttft: DelayField = "gpt-4.1-ttft"``.
"""

from __future__ import annotations

from kame_sim.delays.models import (
    MAX_DELAY_SETTING_S,
    AR1LogNormal,
    Constant,
    DelayField,
    DelaySpec,
    Empirical,
    Gamma,
    LogNormal,
    Mixture,
    MixtureComponent,
    Pareto,
    TruncNormal,
    Uniform,
    parse_delay,
)
from kame_sim.delays.presets import PRESETS, Preset, preset_spec
from kame_sim.delays.rng import component_rng, component_seed
from kame_sim.delays.samplers import MAX_DELAY, DelaySampler

__all__ = [
    "MAX_DELAY",
    "MAX_DELAY_SETTING_S",
    "PRESETS",
    "AR1LogNormal",
    "Constant",
    "DelayField",
    "DelaySampler",
    "DelaySpec",
    "Empirical",
    "Gamma",
    "LogNormal",
    "Mixture",
    "MixtureComponent",
    "Pareto",
    "Preset",
    "TruncNormal",
    "Uniform",
    "component_rng",
    "component_seed",
    "parse_delay",
    "preset_spec",
]
