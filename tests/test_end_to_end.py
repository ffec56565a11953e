"""Whole runs through the CLI's code path: trace invariants, determinism, partial traces."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import DEMO_SCENARIO
from trace_checks import check_invariants, rows

from kame_sim.config import load_scenario
from kame_sim.metrics.summary import summarize
from kame_sim.runner import build_session_parts, load_run_conversation, run_scenario, trace_metadata
from kame_sim.sim import Session
from kame_sim.trace import WALL_COLUMNS, TraceWriter, read_trace


def simulated(table: pa.Table) -> pa.Table:
    return table.drop_columns(list(WALL_COLUMNS))


def test_demo_run_produces_a_consistent_trace(tmp_path: Path):
    result = run_scenario(load_scenario(DEMO_SCENARIO), tmp_path / "run")
    data = read_trace(result.run_dir)
    check_invariants(data)
    summary = summarize(data)
    assert summary.frames == 481  # 38.55 s of audio -> 481 complete 80 ms frames
    assert summary.stt_finals == 4 and summary.user_words == 37
    assert summary.llm_started >= 4 and summary.oracle_tokens_fed > 0
    assert summary.frontend_tokens > 0
    assert all(t.onset is not None for t in summary.turns)
    meta = data.metadata
    assert meta["kame_sim.conversation_id"] == "demo" and meta["kame_sim.seed"] == "0"
    assert len(meta["kame_sim.conversation_hash"]) == 64
    assert data.scenario["llm"]["content"] == "oracle_raw"
    assert (result.run_dir / "scenario.resolved.json").exists()


def _cli_run(out: Path, *args: str) -> pa.Table:
    cmd = [
        sys.executable,
        "-m",
        "kame_sim.cli",
        "run",
        str(DEMO_SCENARIO),
        "--out",
        str(out),
        "--quiet",
        *args,
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return read_trace(out).table


def test_same_seed_same_trace_bit_for_bit_across_processes(tmp_path: Path):
    first = _cli_run(tmp_path / "a", "--seed", "3")
    second = _cli_run(tmp_path / "b", "--seed", "3")
    assert simulated(first).equals(simulated(second))
    assert first.schema.metadata == second.schema.metadata
    other = _cli_run(tmp_path / "c", "--seed", "4")
    assert not simulated(first).equals(simulated(other))


def test_components_draw_from_their_own_streams(tmp_path: Path):
    """Changing the LLM's delay model must not change what the STT does."""
    base = load_scenario(DEMO_SCENARIO)
    slow = load_scenario(DEMO_SCENARIO, {"llm.ttft": {"kind": "constant", "value": 2.0}})
    a = read_trace(run_scenario(base, tmp_path / "a").run_dir).table
    b = read_trace(run_scenario(slow, tmp_path / "b").run_dir).table

    def stt(t: pa.Table) -> list:
        return [(r["event"], r["t_sim"], r["text"]) for r in t.to_pylist() if r["event"].startswith("stt_")]

    assert stt(a) == stt(b)
    assert [r["delay_s"] for r in rows(b, "llm_first_chunk")] == [2.0] * len(rows(b, "llm_first_chunk"))


def test_spokenwoz_run(tmp_path: Path, spokenwoz: Path):
    scenario = load_scenario(
        DEMO_SCENARIO.parent / "spokenwoz.toml",
        {"conversation.path": str(spokenwoz), "conversation.id": "SNG0072", "run.seed": 7},
    )
    data = read_trace(run_scenario(scenario, tmp_path / "sw").run_dir)
    check_invariants(data)
    summary = summarize(data)
    assert summary.frames == int(101.7 / 0.08)
    assert summary.stt_finals > 5 and summary.llm_started > 10
    assert summary.oracle_resets_applied > 0


class ExplodingFrontend:
    """Wraps a front-end and raises at a given frame, like a crash in the middle of a run."""

    def __init__(self, inner, at: int) -> None:
        self.inner, self.at, self.name = inner, at, "exploding"

    def start_session(self, session) -> None:
        self.inner.start_session(session)

    def step(self, step: int, oracle_token: int):
        if step == self.at:
            raise RuntimeError("boom")
        return self.inner.step(step, oracle_token)

    def end_session(self) -> None:
        self.ended = True


def test_a_crash_leaves_a_readable_partial_trace(tmp_path: Path):
    scenario = load_scenario(DEMO_SCENARIO)
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    parts.frontend = ExplodingFrontend(parts.frontend, at=200)
    path = tmp_path / "trace.arrows"
    with (
        pytest.raises(RuntimeError, match="boom"),
        TraceWriter(path, trace_metadata(scenario, conversation, parts.tokenizer), batch_rows=64) as trace,
    ):
        Session(parts, trace).run()
    data = read_trace(path)
    assert not data.complete
    frames = rows(data.table, "frame")
    assert len(frames) == 200 and frames[-1]["frame"] == 199
    assert parts.frontend.ended  # the front-end was closed despite the crash


def test_a_torn_trace_file_still_yields_its_complete_batches(tmp_path: Path):
    scenario = load_scenario(DEMO_SCENARIO)
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    path = tmp_path / "trace.arrows"
    with TraceWriter(path, trace_metadata(scenario, conversation, parts.tokenizer), batch_rows=100) as trace:
        Session(parts, trace).run()
    full = read_trace(path)
    raw = path.read_bytes()
    torn = tmp_path / "torn.arrows"
    torn.write_bytes(raw[: int(len(raw) * 0.6)])  # what a killed process leaves behind
    data = read_trace(torn)
    assert data.truncated and not data.complete
    assert 0 < len(data.table) < len(full.table)
    assert simulated(data.table).equals(simulated(full.table.slice(0, len(data.table))))


def test_budget_mode_counts_late_frames_when_steps_are_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A step that costs more than its 80 ms frame delays the next frame, and only that one.

    The step cost comes from a fake ``time.perf_counter`` that only the slow steps advance (by
    0.1 s), so the late frames are exact, whatever the machine's load (no real sleeping).
    """
    fake_now = [1000.0]
    monkeypatch.setattr(time, "perf_counter", lambda: fake_now[0])

    class Slow:
        name = "slow"

        def __init__(self, inner) -> None:
            self.inner = inner

        def start_session(self, session) -> None:
            self.inner.start_session(session)

        def step(self, step: int, oracle_token: int):
            if step % 10 == 0:
                fake_now[0] += 0.1  # longer than the 80 ms frame
            return self.inner.step(step, oracle_token)

        def end_session(self) -> None:
            self.inner.end_session()

    scenario = load_scenario(DEMO_SCENARIO, {"run.time_coupling": "budget", "run.max_seconds": 4.0})
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    parts.frontend = Slow(parts.frontend)
    path = tmp_path / "trace.arrows"
    with TraceWriter(path, trace_metadata(scenario, conversation, parts.tokenizer)) as trace:
        Session(parts, trace).run()
    data = read_trace(path)
    summary = summarize(data)
    assert summary.frames == 50
    frames = {r["frame"]: r for r in rows(data.table, "frame")}
    late = {k for k, r in frames.items() if r["detail"] == "late"}
    # Step 0 ends at 0.08 + 0.1 = 0.18 s: frame 1 (ready at 0.16 s) starts 20 ms late; frame 2
    # (ready at 0.24 s) is on time again: the loop catches up once steps are fast.
    assert late == {1, 11, 21, 31, 41}
    for k in late:
        assert frames[k]["t_sim"] - frames[k]["t_ref"] == pytest.approx(0.1 - 0.08)
    assert [frames[k]["step_wall_s"] for k in (0, 1, 10)] == pytest.approx([0.1, 0.0, 0.1])


_KILL_SCRIPT = """
import sys, time
from pathlib import Path
from kame_sim.trace import TraceWriter
writer = TraceWriter(
    Path(sys.argv[1]), {"kame_sim.seed": "0"}, batch_rows=int(sys.argv[2]), flush_seconds=3600
)
for k in range(int(sys.argv[3])):
    writer.row("frame", (k + 1) * 0.08, frame=k)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("batch_rows", "rows_written", "expected"), [(100, 250, 200), (10_000, 50, 0)])
def test_a_killed_run_leaves_every_flushed_batch_readable(
    tmp_path: Path, batch_rows: int, rows_written: int, expected: int
):
    """SIGKILL (no Python clean-up at all): flushed batches survive; before any flush, the schema does."""
    path = tmp_path / "trace.arrows"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(path), str(batch_rows), str(rows_written)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    data = read_trace(path)
    assert not data.complete
    assert len(data.table) == expected
    assert data.metadata["kame_sim.seed"] == "0"
