"""Empirical delays resampled from a trace's measured latencies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_SCENARIO
from test_kame_logs import write_log

from kame_sim.config import load_scenario, scenario_from_dict
from kame_sim.delays import component_rng
from kame_sim.delays.models import Empirical, parse_delay
from kame_sim.errors import InputError
from kame_sim.replay import import_kame_logs
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario(load_scenario(DEMO_SCENARIO), tmp_path_factory.mktemp("demo") / "run").run_dir


def _delays(run: Path, event: str) -> list[float]:
    return [r["delay_s"] for r in read_trace(run).table.to_pylist() if r["event"] == event]


@pytest.mark.parametrize(
    ("measure", "event"),
    [("ttft", "llm_first_chunk"), ("stt_final", "stt_final"), ("stt_partial", "stt_partial")],
)
def test_a_trace_sampler_reproduces_the_trace_distribution(demo_run: Path, measure: str, event: str):
    expected = _delays(demo_run, event)
    spec = parse_delay({"kind": "empirical", "trace": str(demo_run), "measure": measure})
    assert isinstance(spec, Empirical) and spec.values() == tuple(expected)
    sampler = spec.sampler(component_rng(2, "x"))
    draws = np.array([sampler.draw() for _ in range(20_000)])
    assert set(draws.tolist()) <= set(expected)
    assert draws.mean() == pytest.approx(np.mean(expected), rel=0.05)
    assert spec.mean() == pytest.approx(np.mean(expected))
    assert f"{measure} from" in spec.describe()


def test_inter_chunk_leaves_out_each_streams_first_gap(demo_run: Path):
    rows = [r for r in read_trace(demo_run).table.to_pylist() if r["event"] == "llm_chunk"]
    seen: set[int] = set()
    expected = []
    for r in rows:
        if r["stream_id"] in seen:
            expected.append(r["delay_s"])
        seen.add(r["stream_id"])
    spec = parse_delay(
        {"kind": "empirical", "trace": str(demo_run / "trace.arrows"), "measure": "inter_chunk"}
    )
    assert spec.values() == tuple(expected) and len(expected) > 10


def test_a_scenario_can_take_its_ttft_from_a_trace(demo_run: Path, tmp_path: Path):
    scenario = load_scenario(
        DEMO_SCENARIO,
        {"llm.ttft": {"kind": "empirical", "trace": str(demo_run), "measure": "ttft"}, "run.max_seconds": 10},
    )
    result = run_scenario(scenario, tmp_path / "run")
    allowed = _delays(demo_run, "llm_first_chunk")
    # The simulated TTFT is the draw (llm chunk times are relative to the stream start).
    got = _delays(result.run_dir, "llm_first_chunk")
    assert got and all(min(abs(g - a) for a in allowed) < 1e-9 for g in got)


def test_relative_trace_paths_resolve_against_the_current_directory(demo_run: Path, monkeypatch):
    monkeypatch.chdir(demo_run.parent)
    spec = parse_delay({"kind": "empirical", "trace": demo_run.name, "measure": "ttft"})
    assert spec.trace == demo_run.resolve()


def _error(ttft: dict) -> str:
    with pytest.raises(InputError) as info:
        scenario_from_dict({"llm": {"ttft": ttft}})
    return info.value.one_line()


def test_bad_trace_specs_name_the_key(demo_run: Path, tmp_path: Path):
    message = _error({"kind": "empirical", "trace": str(tmp_path / "missing"), "measure": "ttft"})
    assert "llm.ttft.trace" in message and "cannot read trace" in message

    logs = tmp_path / "logs"
    write_log(logs, "user_words.txt", [(1000, "hello")])
    write_log(logs, "oracle_stream.txt", [(1000, "[RESET]")])
    imported = import_kame_logs(logs, tmp_path / "imported")  # KAME logs no STT latencies
    message = _error({"kind": "empirical", "trace": str(imported), "measure": "stt_final"})
    assert "llm.ttft.trace" in message and "no stt_final latencies" in message

    both = {"kind": "empirical", "trace": str(demo_run), "measure": "ttft", "samples": [0.1]}
    assert "exactly one of samples or trace" in _error(both)
    assert "exactly one of samples or trace" in _error({"kind": "empirical"})
    assert "trace needs measure" in _error({"kind": "empirical", "trace": str(demo_run)})
    assert "measure needs trace" in _error({"kind": "empirical", "samples": [0.1], "measure": "ttft"})
    assert "llm.ttft.measure" in _error({"kind": "empirical", "trace": str(demo_run), "measure": "rtt"})
