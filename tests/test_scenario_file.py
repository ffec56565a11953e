"""A resolved scenario written back out loads to the same settings (search, shrink and fork rely on it)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kame_sim.config import load_scenario
from kame_sim.scenario_file import scenario_toml, to_toml, write_scenario

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = sorted(p for p in (REPO / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("source", SCENARIOS, ids=lambda p: p.name)
def test_bundled_scenarios_round_trip(source: Path, tmp_path: Path) -> None:
    scenario = load_scenario(source, {"llm.ttft": {"kind": "lognormal", "median": 1.25, "sigma": 0.4}})
    out = write_scenario(scenario, tmp_path / "again.toml", header="made by a test\nsecond line")
    text = out.read_text()
    assert text.startswith("# made by a test\n# second line\n")
    assert load_scenario(out).resolved_json() == scenario.resolved_json()
    # input paths are written relative to the file, so moving both together keeps them working
    conv = tomllib.loads(text)["conversation"]["path"]
    assert not Path(conv).is_absolute()


def test_paths_relative_to_the_file_folder(tmp_path: Path) -> None:
    scenario = load_scenario(REPO / "scenarios" / "demo.toml")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    written = write_scenario(scenario, deep / "s.toml")
    assert load_scenario(written).conversation.path == scenario.conversation.path


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1),
                     st.floats(allow_nan=False), _text)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3),
                    st.dictionaries(_text, _scalars, max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_text, st.one_of(_values, st.dictionaries(_text, _values, max_size=4)), max_size=5))
def test_any_table_round_trips_through_tomllib(data: dict) -> None:
    # hostile keys and strings (quotes, newlines, control characters, non-ASCII) survive
    assert tomllib.loads(to_toml(data)) == data


def test_none_values_are_left_out() -> None:
    assert tomllib.loads(to_toml({"a": None, "t": {"x": None, "y": 1}})) == {"t": {"y": 1}}


def test_scenario_toml_is_stable(tmp_path: Path) -> None:
    scenario = load_scenario(REPO / "scenarios" / "demo.toml")
    assert scenario_toml(scenario, tmp_path / "x.toml") == scenario_toml(scenario, tmp_path / "x.toml")
