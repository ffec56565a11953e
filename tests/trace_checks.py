"""Invariants every trace must satisfy, shared by the end-to-end tests."""

from __future__ import annotations

import itertools
import math

import pyarrow as pa

from kame_sim.trace.reader import TraceData


def rows(table: pa.Table, event: str) -> list[dict]:
    return [r for r in table.to_pylist() if r["event"] == event]


def check_invariants(data: TraceData, frame_seconds: float = 0.08) -> None:
    """Frame clock, oracle causality and LLM stream life cycles (asserts on failure)."""
    table = data.table
    all_rows = table.to_pylist()
    assert data.complete and all_rows[-1]["event"] == "run_end"
    assert [r["seq"] for r in all_rows] == list(range(len(all_rows)))
    times = [r["t_sim"] for r in all_rows]
    assert all(b >= a for a, b in itertools.pairwise(times)), "events out of time order"

    frames = rows(table, "frame")
    assert [r["frame"] for r in frames] == list(range(len(frames)))
    for r in frames:
        assert math.isclose(r["t_sim"], (r["frame"] + 1) * frame_seconds, abs_tol=1e-9)
    assert all(
        math.isclose(b["t_sim"] - a["t_sim"], frame_seconds, abs_tol=1e-9)
        for a, b in itertools.pairwise(frames)
    )

    # Every fed oracle token was applied before (or at) its frame, at the right offset.
    resets: dict[int, int] = {}
    appended: list[tuple[int, int, int]] = []  # (frame, first_index, n_tokens) since the last reset
    last_reset = None
    start_id = None
    for r in all_rows:
        if r["event"] == "oracle_reset_applied":
            last_reset = r["frame"]
            appended = []
            resets[r["frame"]] = r["stream_id"]
        elif r["event"] == "oracle_append_applied":
            if last_reset is None:
                last_reset = r["frame"]  # append without reset acts as a reset
            appended.append((r["frame"], r["oracle_index"], r["n_tokens"]))
        elif r["event"] == "oracle_token_fed" and r["oracle_index"] is not None:
            k, i = r["frame"], r["oracle_index"]
            assert last_reset is not None, f"token fed at frame {k} before any oracle existed"
            assert k - last_reset == i, f"frame {k}: index {i} but anchor {last_reset}"
            if i == 0:
                start_id = start_id or r["token_id"]
                assert r["token_id"] == start_id
            else:
                assert any(f <= k and first <= i < first + n for f, first, n in appended), (
                    f"frame {k}: oracle index {i} fed but never appended before"
                )

    # Applied items were enqueued earlier; LLM stream life cycles are well formed.
    for r in all_rows:
        if r["event"] in ("oracle_reset_applied", "oracle_append_applied"):
            assert r["t_ref"] <= r["t_sim"]
    started: dict[int, float] = {}
    ended: set[int] = set()
    for r in all_rows:
        sid = r["stream_id"]
        if r["event"] == "llm_start":
            assert sid not in started
            started[sid] = r["t_sim"]
        elif r["event"] in ("llm_cancel", "llm_done"):
            assert sid in started and sid not in ended, f"{r['event']} of stream {sid} without a live start"
            ended.add(sid)
        elif r["event"] in ("llm_first_chunk", "llm_chunk"):
            assert sid in started and sid not in ended
            assert r["t_sim"] >= started[sid]
