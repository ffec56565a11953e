"""kame-sim fork: a branch equals its original before the fork time, and from it on shows the change
(a delay model, one stream's TTFT, a policy setting); edits of the prefix and bad input are refused."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import DEMO_SCENARIO

from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.fork.runner import first_divergence, plan_fork, run_branches, write_branches
from kame_sim.runner import run_scenario
from kame_sim.trace import WALL_COLUMNS, read_trace

POLICIES = ["poll", "multiplexer"]
SECONDS = 20.0  # the demo's first two turns: enough for every case, ~1 s a run


def deterministic(path: Path) -> pa.Table:
    table = read_trace(path).table
    return table.drop_columns([c for c in WALL_COLUMNS if c in table.column_names])


def before(table: pa.Table, at: float) -> list[dict]:
    return table.filter(pc.less(table["t_sim"], at)).drop_columns(["seq"]).to_pylist()


def events(table: pa.Table, name: str) -> list[dict]:
    return table.filter(pc.equal(table["event"], name)).to_pylist()


@pytest.fixture(scope="module", params=POLICIES)
def original(request, tmp_path_factory) -> Path:
    overrides = {"policy.kind": request.param, "run.max_seconds": SECONDS}
    folder = tmp_path_factory.mktemp(f"orig-{request.param}") / "run"
    run_scenario(load_scenario(DEMO_SCENARIO, overrides), folder)
    return folder


def fork(run: Path, at: float, *sets: str, out: Path) -> Path:
    """Plan, write and run one branch (no comparison picture: that is the CLI test's)."""
    plan = plan_fork(run, at, [list(sets)], out)
    write_branches(plan)
    (result,) = run_branches(plan)
    return result.trace_path


@pytest.mark.parametrize("at", [0.0, 7.3, 13.0, SECONDS + 5])
def test_a_fork_without_a_change_is_the_original_bit_for_bit(original: Path, tmp_path: Path, at: float):
    branch = fork(original, at, out=tmp_path / "f")
    # every column but the measured wall times, row for row (seq included)
    assert deterministic(branch).equals(deterministic(original / "trace.arrows"))
    assert first_divergence(read_trace(original), read_trace(branch)) is None


@pytest.mark.parametrize(
    "change",
    [
        'llm.ttft={kind="lognormal", median=2.0, sigma=0.3}',
        # faster: a stream of the prefix that was cancelled before its first chunk would now
        # speak before the fork, unless its (unrealised) draw is pinned too
        'llm.ttft={kind="uniform", low=0.0, high=0.01}',
        'stt.final_delay={kind="uniform", low=0.0, high=0.05}',
        'stt.partial_delay={kind="uniform", low=0.0, high=0.01}',
    ],
)
def test_a_delay_model_change_leaves_the_prefix_and_changes_what_follows(original, tmp_path, change):
    at = 7.3
    branch = deterministic(fork(original, at, change, out=tmp_path / "f"))
    orig = deterministic(original / "trace.arrows")
    assert before(branch, at) == before(orig, at)
    assert not branch.equals(orig), "the change must show after the fork"
    assert first_divergence(read_trace(original), read_trace(tmp_path / "f" / "branch")) >= at


def test_a_slower_stream_shows_in_its_first_chunk_and_only_from_its_start(original, tmp_path):
    orig = deterministic(original / "trace.arrows")
    starts = {r["stream_id"]: r["t_sim"] for r in events(orig, "llm_start")}
    firsts = {r["stream_id"]: r["delay_s"] for r in events(orig, "llm_first_chunk")}
    # a stream at a turn's end: nothing starts in the 3.5 s after it, so nothing cancels it
    sid = next(
        s
        for s in sorted(starts)
        if starts[s] > 5.0
        and s in firsts
        and all(not starts[s] < t < starts[s] + 3.5 for t in starts.values())
    )
    at = starts[sid]  # the fork exactly at its start: the stream is the branch's
    branch = deterministic(fork(original, at, f"stream.{sid}.ttft=3.0", out=tmp_path / "f"))
    (first,) = [r for r in events(branch, "llm_first_chunk") if r["stream_id"] == sid]
    assert first["delay_s"] == 3.0 and math.isclose(first["t_sim"], at + 3.0)
    assert firsts[sid] != 3.0
    assert before(branch, at) == before(orig, at)
    divergence = first_divergence(read_trace(original), read_trace(tmp_path / "f" / "branch"))
    assert divergence is not None and divergence >= at
    # every other stream started before the change takes effect keeps its own TTFT
    other = {r["stream_id"]: r["delay_s"] for r in events(branch, "llm_first_chunk")}
    assert all(other[s] == firsts[s] for s in firsts if s < sid)


def test_an_edit_of_a_stream_started_before_the_fork_is_refused(original):
    orig = deterministic(original / "trace.arrows")
    start = events(orig, "llm_start")[2]
    with pytest.raises(InputError) as err:
        plan_fork(original, start["t_sim"] + 0.01, [[f"stream.{start['stream_id']}.ttft=3.0"]])
    assert err.value.field == f"--set stream.{start['stream_id']}"
    assert "before the fork" in err.value.message


def test_stt_edits_before_the_fork_are_refused_and_after_it_apply(original, tmp_path):
    with pytest.raises(InputError, match="before the fork"):
        plan_fork(original, 10.0, [["stt.final.0=1.0"]])  # utterance 0 ends at ~7.3 s
    with pytest.raises(InputError, match="no such word"):
        plan_fork(original, 1.0, [["stt.partial.0.999=1.0"]])
    branch = deterministic(fork(original, 5.0, "stt.final.0=2.0", out=tmp_path / "f"))
    (final,) = [r for r in events(branch, "stt_final") if r["utterance"] == 0]
    assert final["delay_s"] == 2.0


def test_a_poll_interval_change_takes_effect_at_the_fork_and_not_before(tmp_path):
    run = tmp_path / "orig"
    run_scenario(load_scenario(DEMO_SCENARIO, {"run.max_seconds": SECONDS}), run)
    at = 10.2  # the poll before it: 10.0; the next at 10.0 + 1.5 = 11.5, then every 1.5 s
    branch = deterministic(fork(run, at, "policy.poll_interval=1.5", out=tmp_path / "f"))
    orig = deterministic(run / "trace.arrows")
    assert before(branch, at) == before(orig, at)
    (switch,) = events(branch, "policy_switch")
    assert switch["t_sim"] == at and switch["detail"] == "poll_interval=1.5"
    starts = [r["t_sim"] for r in events(branch, "llm_start")]
    assert all(round(t / 0.5, 6).is_integer() for t in starts if t < at)
    after = [t for t in starts if t > at]
    assert after, "the demo's second turn starts streams after the fork"
    assert all(round((t - 11.5) / 1.5, 6).is_integer() for t in after)
    assert after != [r["t_sim"] for r in events(orig, "llm_start") if r["t_sim"] > at]


def test_a_multiplexer_setting_takes_effect_at_the_fork_and_not_before(tmp_path):
    run = tmp_path / "orig"
    run_scenario(
        load_scenario(DEMO_SCENARIO, {"run.max_seconds": SECONDS, "policy.kind": "multiplexer"}), run
    )
    at = 3.0
    # one live stream at most from 3 s on: every start after it cancels the one before ("limit")
    branch = deterministic(fork(run, at, "policy.max_concurrent_streams=1", out=tmp_path / "f"))
    orig = deterministic(run / "trace.arrows")
    assert before(branch, at) == before(orig, at)
    limits = [r["t_sim"] for r in events(branch, "llm_cancel") if r["detail"] == "limit"]
    assert limits and min(limits) >= at
    assert not [r for r in events(orig, "llm_cancel") if r["detail"] == "limit"]


def test_a_switch_with_the_same_settings_changes_nothing_but_its_row(original, tmp_path):
    kind = read_trace(original).metadata["kame_sim.policy"]
    key = "policy.poll_interval=0.5" if kind == "poll" else "policy.min_restart_interval=0.5"
    branch = deterministic(fork(original, 9.0, key, out=tmp_path / "f"))
    orig = deterministic(original / "trace.arrows")
    rest = branch.filter(pc.not_equal(branch["event"], "policy_switch")).drop_columns(["seq"])
    assert rest.equals(orig.drop_columns(["seq"]))
    assert events(branch, "policy_switch")[0]["detail"] == "no change"


def test_a_fork_of_a_branch_keeps_the_branch_s_own_edits_and_switch(tmp_path: Path):
    run = tmp_path / "orig"
    run_scenario(load_scenario(DEMO_SCENARIO, {"run.max_seconds": SECONDS}), run)
    orig = deterministic(run / "trace.arrows")
    late = max(r["stream_id"] for r in events(orig, "llm_start"))
    first = fork(run, 9.0, f"stream.{late}.ttft=2.0", "policy.poll_interval=1.0", out=tmp_path / "f1")
    # forked again earlier, without a change: the edit of a stream after 5 s and the switch at 9 s
    # are the branch's own scenario (its schedule, its [switch]), so they stay
    again = fork(first.parent, 5.0, out=tmp_path / "f2")
    assert deterministic(again).equals(deterministic(first))


def test_a_fork_of_a_run_with_an_unscheduled_table_keeps_it(tmp_path: Path):
    """A shrink reproducer fixes every uncovered delay through its schedule's ``unscheduled``
    table; a fork without a change must keep those fixed delays after T too, not draw them."""
    schedule = tmp_path / "fixed.json"
    schedule.write_text('{"unscheduled": {"ttft": 0.9, "chunk_gap": 0.02, "stt_final": 0.3}, '
                        '"entries": [{"kind": "ttft", "stream": 3, "seconds": 1.7}]}')
    overrides = {"run.max_seconds": SECONDS, "delays.schedule": str(schedule)}
    original = tmp_path / "run"
    run_scenario(load_scenario(DEMO_SCENARIO, overrides), original)
    branch = fork(original, 7.3, out=tmp_path / "f")
    assert deterministic(branch).equals(deterministic(original / "trace.arrows"))
    after = [r for r in events(deterministic(branch), "llm_first_chunk") if r["t_sim"] > 7.3]
    assert after and all(r["delay_s"] == pytest.approx(0.9) for r in after)
