"""Shared test fixtures: paths to the bundled demo and the shared SpokenWOZ sample."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_SCENARIO = REPO / "scenarios" / "demo.toml"
SPOKENWOZ = REPO.parent / "shared" / "data" / "spokenwoz"


@pytest.fixture
def spokenwoz() -> Path:
    """The shared SpokenWOZ sample; tests that need it skip where ../shared is absent."""
    if not (SPOKENWOZ / "audio").is_dir():
        pytest.skip(f"shared SpokenWOZ data not found at {SPOKENWOZ} (CI provides ../shared)")
    return SPOKENWOZ
