"""Invariants every trace must satisfy, shared by the end-to-end tests."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pyarrow as pa

from kame_sim.tokenizer import BUNDLED_MODEL, TextTokenizer
from kame_sim.trace.reader import TraceData


def rows(table: pa.Table, event: str) -> list[dict]:
    return [r for r in table.to_pylist() if r["event"] == event]


def trace_tokenizer(data: TraceData) -> TextTokenizer | None:
    """The tokenizer the trace was made with (matched by its sha256), when it can be found here.

    Candidates: the scenario's ``oracle.tokenizer``, the ``*.model`` files of a kame checkpoint,
    and the bundled model. None when none matches (the oracle check then uses ``n_tokens`` only).
    """
    scenario = data.scenario
    candidates: list[Path] = []
    if scenario.get("oracle", {}).get("tokenizer"):
        candidates.append(Path(scenario["oracle"]["tokenizer"]))
    checkpoint = scenario.get("frontend", {}).get("checkpoint")
    if checkpoint and Path(checkpoint).is_dir():
        candidates.extend(sorted(Path(checkpoint).glob("*.model")))
    candidates.append(BUNDLED_MODEL)
    wanted = data.metadata.get("kame_sim.tokenizer_sha256")
    for path in candidates:
        if path.is_file():
            tokenizer = TextTokenizer.load(path)
            if tokenizer.sha256() == wanted:
                return tokenizer
    return None


def check_oracle_feed(data: TraceData, tokenizer: TextTokenizer | None = None) -> None:
    """Rebuild KAME's oracle from the applied resets/appends and check every frame's fed token.

    At every frame the token fed must be ``oracle_tokens[frame - anchor]`` when that index exists,
    and padding otherwise (kame-reference.md §2): so every due token was fed, nothing was fed that
    was not due, and each item was applied at the first frame boundary after it was enqueued, in
    queue order. Under the multiplexer a reset comes from the audio loop itself (the first item
    of a newer generation, no reset item in the queue), an adoption flushes the queue, and an item
    of an older generation is skipped. Appended ids are re-derived with ``tokenizer``
    (``sp.encode`` per chunk); without one only their count (``n_tokens``) is known, and a due
    slot must then feed a non-padding id.
    """
    all_rows = data.table.to_pylist()
    padding = int(data.scenario.get("oracle", {}).get("padding_id", 3))
    start_id = int(data.metadata["kame_sim.tokenizer_vocab"])  # START = text_card = vocab size
    tokens: list[int | None] | None = None  # None: no oracle yet; None entries: unknown ids
    anchor = 0
    next_frame = 0  # the frame the next oracle_token_fed row must be for
    skipped_this_frame = 0
    pending: list[dict] = []  # enqueued items not applied yet, oldest first
    policy = data.scenario.get("policy", {})
    budgeted = float(policy.get("drain_event_cost", 0.0)) > 0  # the drain may leave items queued
    for r in all_rows:
        event = r["event"]
        if event == "oracle_enqueue":
            pending.append(r)
        elif event == "oracle_flush":
            assert r["queue_len"] == len(pending), f"flush of {r['queue_len']} items, {len(pending)} queued"
            pending.clear()
        elif event == "oracle_stale_skipped":
            assert pending and pending.pop(0)["stream_id"] == r["stream_id"], "skipped an item never queued"
        elif event in ("oracle_reset_applied", "oracle_append_applied"):
            k = r["frame"]
            assert k == next_frame, f"{event} for frame {k} while frame {next_frame} is next"
            assert pending, f"frame {k}: {event} of an item that was never enqueued"
            action = "reset" if event == "oracle_reset_applied" else "append"
            generation_reset = (
                action == "reset"
                and pending[0]["detail"] == "append"
                and pending[0]["stream_id"] == r["stream_id"]
                and policy.get("kind") == "multiplexer"
            )
            if generation_reset:  # the multiplexer's audio loop: a newer generation resets first
                assert r["t_ref"] == pending[0]["t_sim"]
                tokens, anchor = [start_id], k
                continue
            item = pending.pop(0)
            assert (item["detail"], item["stream_id"]) == (action, r["stream_id"]), f"frame {k}: out of order"
            assert item["text"] == r["text"] or action == "reset", f"frame {k}: applied text differs"
            assert item["t_sim"] == r["t_ref"], f"frame {k}: t_ref is not the enqueue time"
            if action == "reset":
                tokens, anchor = [start_id], k
                continue
            n = r["n_tokens"]
            ids: list[int | None] = [None] * n
            if tokenizer is not None:
                ids = list(tokenizer.encode(r["text"]))
                assert len(ids) == n, f"frame {k}: {r['text']!r} is {len(ids)} tokens, trace says {n}"
            if n and tokens is None:
                tokens, anchor = [start_id], k  # an append without an oracle first acts as a reset
            first = len(tokens) if tokens is not None else 0
            assert r["oracle_index"] == first, f"frame {k}: append at index {r['oracle_index']}, not {first}"
            if tokens is not None:
                tokens.extend(ids)
                late = max(0, min(len(tokens), k - anchor) - first)
                assert r["n_skipped"] == late, f"frame {k}: n_skipped {r['n_skipped']}, expected {late}"
                skipped_this_frame += late
        elif event == "oracle_token_fed":
            k = r["frame"]
            assert k == next_frame, f"oracle_token_fed for frame {k}, expected {next_frame}"
            # The drain before this step took the whole queue, and nothing can be enqueued between
            # the drain and the feed (no simulated time passes there): nothing may be pending.
            assert budgeted or not pending, (
                f"frame {k}: item enqueued at {pending[0]['t_sim']} not applied at this frame"
            )
            rel = k - anchor
            if tokens is not None and 0 <= rel < len(tokens):
                assert r["oracle_index"] == rel, f"frame {k}: index {r['oracle_index']}, due {rel}"
                due = tokens[rel]
                if due is None:
                    assert r["token_id"] != padding, f"frame {k}: padding fed while index {rel} was due"
                else:
                    assert r["token_id"] == due, f"frame {k}: fed {r['token_id']}, due {due} (index {rel})"
            else:
                assert r["oracle_index"] is None and r["token_id"] == padding, (
                    f"frame {k}: fed {r['token_id']} (index {r['oracle_index']}) but nothing was due"
                )
            assert r["n_skipped"] == skipped_this_frame, f"frame {k}: n_skipped {r['n_skipped']}"
            skipped_this_frame = 0
            next_frame += 1


def check_invariants(
    data: TraceData, frame_seconds: float = 0.08, tokenizer: TextTokenizer | None = None
) -> None:
    """Frame clock, oracle feed (see :func:`check_oracle_feed`) and LLM stream life cycles.

    ``tokenizer`` defaults to the trace's own when :func:`trace_tokenizer` can find it.
    """
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
    assert len(rows(table, "oracle_token_fed")) == len(frames)

    check_oracle_feed(data, tokenizer if tokenizer is not None else trace_tokenizer(data))

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
