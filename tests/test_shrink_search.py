"""The shrinking search over schedule entries with a stand-in for the simulation: a metric computed
from the entries alone, so the known answers are exact and many cases run in a second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kame_sim.errors import InputError
from kame_sim.schedule import UNSCHEDULED_KINDS, parse_schedule
from kame_sim.shrink.condition import Condition
from kame_sim.shrink.search import ShrinkError, shrink_entries

NOMINAL = {"stt_partial": 0.15, "stt_final": 0.25, "ttft": 0.7, "chunk_gap": 0.011}


def entries(n_streams: int) -> list[dict]:
    out = []
    for sid in range(1, n_streams + 1):
        out.append({"kind": "ttft", "stream": sid, "seconds": 0.7 + 0.01 * sid})
        out.append({"kind": "chunk_gap", "stream": sid, "chunk": 1, "seconds": 0.012})
    return out


class Model:
    """``lateness`` = the largest TTFT beyond ``nominal`` among ``streams`` (+ the others' sum x eps):
    a stand-in metric with a known minimal cause. Counts its evaluations."""

    def __init__(self, streams: set[int], eps: float = 0.0) -> None:
        self.streams, self.eps, self.calls = streams, eps, 0

    def __call__(self, chosen: list[dict]) -> dict:
        self.calls += 1
        ttft = {e["stream"]: e["seconds"] for e in chosen if e["kind"] == "ttft"}
        late = [ttft.get(s, NOMINAL["ttft"]) - NOMINAL["ttft"] for s in self.streams]
        rest = sum(v - NOMINAL["ttft"] for s, v in ttft.items() if s not in self.streams)
        return {"ttft_max_s": max(late) + self.eps * rest}


def test_one_slow_stream_is_the_whole_answer_and_its_value_is_the_threshold():
    items = entries(30)
    items[20] = {"kind": "ttft", "stream": 11, "seconds": 6.0}
    model = Model({11})
    result = shrink_entries(items, NOMINAL, Condition("ttft_max_s", ">", 2.0), model, tolerance=0.001)
    assert [e.entry["stream"] for e in result.entries] == [11]
    value, passing = result.entries[0].entry["seconds"], result.entries[0].passing
    assert passing is not None and passing <= 2.7 < value <= passing + 0.001
    assert result.n_away == 30 + 30  # every TTFT and every gap differs from nominal
    assert result.runs == model.calls  # cached candidates are not replayed
    assert result.metric is not None and result.metric > 2.0 and not result.budget_hit


def test_two_streams_needed_together_are_both_kept():
    items = entries(16)
    for i in (4, 24):
        items[i] = {**items[i], "seconds": 3.0}  # streams 3 and 13

    def both(chosen: list[dict]) -> dict:
        ttft = {e["stream"]: e["seconds"] for e in chosen if e["kind"] == "ttft"}
        return {"ttft_max_s": min(ttft.get(3, 0.7), ttft.get(13, 0.7))}

    result = shrink_entries(items, NOMINAL, Condition("ttft_max_s", ">=", 2.0), both)
    assert sorted(e.entry["stream"] for e in result.entries) == [3, 13]
    assert all(2.0 <= e.entry["seconds"] <= 2.01 for e in result.entries)


def test_a_run_that_passes_when_replayed_is_refused():
    with pytest.raises(ShrinkError, match="no longer fails ttft_max_s > 9"):
        shrink_entries(entries(3), NOMINAL, Condition("ttft_max_s", ">", 9.0), Model({1}))


def test_faults_are_kept_or_dropped_never_moved():
    items = [*entries(4), {"kind": "fault", "stream": 2, "seconds": 1.5, "detail": "error: x"}]

    def broken(chosen: list[dict]) -> dict:
        return {"n_streams_error": float(any(e["kind"] == "fault" for e in chosen))}

    result = shrink_entries(items, NOMINAL, Condition("n_streams_error", ">=", 1), broken)
    assert [e.entry for e in result.entries] == [items[-1]]
    assert result.entries[0].nominal is None and "fault kept" in result.entries[0].note()


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 12),
    causes=st.sets(st.integers(1, 12), min_size=1, max_size=3),
    eps=st.sampled_from([0.0, 0.05, 0.3]),
    threshold=st.floats(0.0, 6.0),
    budget=st.integers(1, 60),
)
def test_the_answer_always_fails_and_is_empty_only_if_nominal_fails(n, causes, eps, threshold, budget):
    items = entries(n)
    for e in items:
        if e["kind"] == "ttft" and e["stream"] in causes:
            e["seconds"] = 6.0
    model = Model(causes, eps)
    condition = Condition("ttft_max_s", ">", threshold)
    try:
        result = shrink_entries(items, NOMINAL, condition, model, max_runs=budget)
    except ShrinkError:
        assert not condition.holds(model(items)["ttft_max_s"])
        return
    assert condition.holds(model(result.schedule_entries)["ttft_max_s"])
    assert result.runs <= budget  # the budget holds (the answer was tested: a cache hit)
    if not result.entries:
        assert condition.holds(model([])["ttft_max_s"])


# -- the unscheduled table, a new input -----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*UNSCHEDULED_KINDS, "fault", "TTFT", ""]), json_values, max_size=4)
    | json_values
)
def test_any_unscheduled_table_is_read_or_one_line_error(value):
    text = json.dumps({"unscheduled": value, "entries": []})
    try:
        schedule = parse_schedule(text, Path("s.json"))
    except InputError as exc:
        line = exc.one_line()
        assert line.startswith("s.json: unscheduled") and "\n" not in line
    else:
        assert isinstance(value, dict) and set(schedule.unscheduled) == set(value) <= set(UNSCHEDULED_KINDS)
        assert all(0.0 <= v <= 1e9 for v in schedule.unscheduled.values())
