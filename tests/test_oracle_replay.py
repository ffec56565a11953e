"""Replaying recorded oracle items re-drives a front-end exactly (simulated and imported traces)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from conftest import DEMO_SCENARIO
from test_kame_logs import write_log

from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.replay import import_kame_logs
from kame_sim.replay.oracle_replay import load_oracle_schedule, recorded_oracle_items
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace


def _events(table: pa.Table, event: str, columns: list[str]) -> list[tuple]:
    rows = [r for r in table.to_pylist() if r["event"] == event]
    return [tuple(r[c] for c in columns) for r in rows]


def test_replaying_a_simulated_trace_feeds_the_same_oracle_bit_for_bit(tmp_path: Path):
    original = run_scenario(load_scenario(DEMO_SCENARIO, {"run.seed": 5}), tmp_path / "orig")
    first = read_trace(original.run_dir)
    items = recorded_oracle_items(first)
    assert items and items[0].action == "reset"

    replay = run_scenario(
        load_scenario(DEMO_SCENARIO, {"run.seed": 5, "replay.oracle_from": str(original.run_dir)}),
        tmp_path / "replay",
    )
    second = read_trace(replay.run_dir)
    fed = ["frame", "token_id", "oracle_index", "n_skipped"]
    assert _events(second.table, "oracle_token_fed", fed) == _events(first.table, "oracle_token_fed", fed)
    applied = ["frame", "stream_id", "text", "oracle_index", "n_tokens", "n_skipped"]
    assert _events(second.table, "oracle_append_applied", applied) == _events(
        first.table, "oracle_append_applied", applied
    )
    assert _events(second.table, "oracle_reset_applied", ["frame", "stream_id"]) == _events(
        first.table, "oracle_reset_applied", ["frame", "stream_id"]
    )
    # Same enqueues at (numerically) the same times; no STT or LLM rows in the replay.
    enq = _events(second.table, "oracle_enqueue", ["t_sim", "detail", "text", "stream_id"])
    assert [e[1:] for e in enq] == [(i.action, i.text or None, i.stream_id) for i in items]
    assert all(abs(e[0] - i.t) < 1e-9 for e, i in zip(enq, items, strict=True))
    events = set(second.table.column("event").to_pylist())
    assert not events & {"stt_final", "stt_partial", "llm_start", "llm_chunk"}
    assert "user_word" in events and second.complete
    # The front-end saw the same oracle, so it spoke the same tokens.
    out = ["frame", "token_id", "text"]
    assert _events(second.table, "frontend_token", out) == _events(first.table, "frontend_token", out)


def test_replaying_an_imported_kame_log_runs_end_to_end(tmp_path: Path):
    logs = tmp_path / "logs"
    base = 1_700_000_000_000
    write_log(logs, "user_words.txt", [(base + 2500, "hi I need a taxi to the station")])
    write_log(
        logs,
        "oracle_stream.txt",
        [
            (base + 3000, "[RESET]"),
            (base + 3000, "Sure,"),
            (base + 3040, "where are you"),
            (base + 3100, "now?"),
            (base + 9000, "[RESET]"),
            (base + 9001, "Booked, a red car is coming."),
        ],
    )
    # KAME logs no session start: anchor time zero at the (known) start of the audio.
    trace = import_kame_logs(logs, tmp_path / "imported", start_epoch_ms=base)
    run = run_scenario(load_scenario(DEMO_SCENARIO, {"replay.oracle_from": str(trace)}), tmp_path / "replay")
    data = read_trace(run.run_dir)
    assert data.complete
    table = data.table
    resets = _events(table, "oracle_reset_applied", ["frame", "stream_id"])
    # Applied at the first frame boundary at or after the recorded time: 3.0 s -> frame 37 (ready 3.04 s).
    assert resets == [(37, 1), (112, 2)]
    fed = [r for r in table.to_pylist() if r["event"] == "oracle_token_fed" and r["oracle_index"] is not None]
    assert fed[0]["frame"] == 37 and fed[0]["oracle_index"] == 0
    spoken = [r for r in table.to_pylist() if r["event"] == "frontend_token" and r["text"]]
    assert spoken  # the behavioural front-end spoke from the replayed oracle


def test_a_trace_without_oracle_items_is_refused(tmp_path: Path):
    logs = tmp_path / "logs"
    write_log(logs, "user_words.txt", [(1000, "hello")])
    write_log(logs, "oracle_stream.txt", [])
    trace = import_kame_logs(logs, tmp_path / "imported")
    with pytest.raises(InputError, match="no oracle_enqueue rows"):
        load_oracle_schedule(trace)


@pytest.mark.parametrize("replaying_policy", ["multiplexer", "poll"])
def test_replaying_a_multiplexer_trace_feeds_its_oracle_under_either_policy(tmp_path: Path, replaying_policy):
    """A multiplexer trace has no reset items and flushes at adoptions: the replay makes both
    explicit, so the oracle fed frame by frame is the recorded one whichever policy replays it."""
    original = run_scenario(
        load_scenario(DEMO_SCENARIO, {"run.seed": 5, "policy.kind": "multiplexer"}), tmp_path / "orig"
    )
    first = read_trace(original.run_dir)
    assert _events(first.table, "oracle_flush", ["stream_id"]), "the original must contain a flush"
    replay = run_scenario(
        load_scenario(
            DEMO_SCENARIO,
            {"run.seed": 5, "policy.kind": replaying_policy, "replay.oracle_from": str(original.run_dir)},
        ),
        tmp_path / "replay",
    )
    second = read_trace(replay.run_dir)
    fed = ["frame", "token_id", "oracle_index", "n_skipped"]
    assert _events(second.table, "oracle_token_fed", fed) == _events(first.table, "oracle_token_fed", fed)
    applied = ["frame", "stream_id", "text", "oracle_index", "n_tokens"]
    assert _events(second.table, "oracle_append_applied", applied) == _events(
        first.table, "oracle_append_applied", applied
    )
