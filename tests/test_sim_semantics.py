"""KAME semantics the simulator must keep, each pinned by a test that fails for a plausible bug.

Runs use the demo conversation with a scripted or recording LLM back-end and read the answers
from the trace (what metrics see), so they hold whatever the simulation's internals look like:

* the oracle queue bound counts queued resets (kame-reference.md §5: one 64-item queue);
* the front-end's words reach the conversation the LLM is sent, as ``moshi:`` lines (§3 step 2);
* ``llm_chunk.delay_s`` is the gap since the previous chunk, not since the stream start;
* each chunk is tokenised on its own, stripped (§3 step 1, §5);
* voice activity covers exactly the frames a word overlaps, also at frame boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DEMO_SCENARIO
from trace_checks import check_invariants, rows

from kame_sim.config import Scenario, load_scenario
from kame_sim.conversation import Word
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.plan import LlmBackend, LlmChunk, LlmPlan
from kame_sim.runner import build_session_parts, load_run_conversation, trace_metadata
from kame_sim.sim import Session, voice_activity
from kame_sim.tokenizer import TextTokenizer
from kame_sim.trace import TraceData, TraceWriter, read_trace

FS = Scenario().frame_seconds
PAD = 3


class Scripted:
    """The same plan for every stream."""

    def __init__(self, plan: LlmPlan) -> None:
        self._plan = plan

    def plan(self, request: LlmRequest) -> LlmPlan:
        return self._plan


class Recording:
    """Wraps a back-end and keeps every request it was asked to plan."""

    def __init__(self, inner: LlmBackend) -> None:
        self.inner = inner
        self.requests: list[LlmRequest] = []

    def plan(self, request: LlmRequest) -> LlmPlan:
        self.requests.append(request)
        return self.inner.plan(request)


def run_demo(
    tmp_path: Path,
    llm: LlmBackend | Callable[[LlmBackend], LlmBackend],
    seconds: float | None = None,
    **overrides: Any,
) -> TraceData:
    """One demo session; ``llm`` is the back-end, or a function wrapping the scenario's own."""
    if seconds is not None:
        overrides["run.max_seconds"] = seconds
    scenario = load_scenario(DEMO_SCENARIO, overrides)
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    parts.llm = llm(parts.llm) if callable(llm) else llm
    path = tmp_path / "trace.arrows"
    with TraceWriter(path, trace_metadata(scenario, conversation, parts.tokenizer)) as trace:
        Session(parts, trace).run()
    return read_trace(path)


def by_stream(table_rows: list[dict], events: tuple[str, ...]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in table_rows:
        if r["event"] in events:
            out.setdefault(r["stream_id"], []).append(r)
    return out


# -- the oracle queue bound ---------------------------------------------------------------------


def test_a_queued_reset_takes_a_slot_in_the_bounded_queue(tmp_path: Path):
    """Queue of 3, four chunks within 3 ms (no drain in between): reset, a, b fit; c and d drop.

    Start times are on the 0.5 s poll grid, so chunks at +0.31 s never straddle an 80 ms boundary.
    """
    chunks = [LlmChunk(0.31 + 0.001 * i, text) for i, text in enumerate(["a", " b", " c", " d"])]
    data = run_demo(tmp_path, Scripted(LlmPlan(chunks)), 12.0, **{"policy.queue_size": 3})
    check_invariants(data)
    puts = by_stream(data.table.to_pylist(), ("oracle_enqueue", "oracle_drop"))
    assert puts
    for sid, items in puts.items():
        got = [(r["event"], r["detail"], r["text"], r["queue_len"]) for r in items]
        assert got == [
            ("oracle_enqueue", "reset", None, 1),
            ("oracle_enqueue", "append", "a", 2),
            ("oracle_enqueue", "append", "b", 3),
            ("oracle_drop", "append", "c", 3),
            ("oracle_drop", "append", "d", 3),
        ], sid
    applied = [r["text"] for r in rows(data.table, "oracle_append_applied")]
    assert set(applied) == {"a", "b"}


# -- the conversation the LLM sees ------------------------------------------------------------


def expected_conversation(prior: list[dict]) -> str:
    """KAME's conversation text from the trace rows before a request: user finals, front-end pieces.

    Consecutive text of one speaker joins one ``speaker: `` line; each piece is stripped and
    followed by a space (kame-reference.md §3-4), so "moshi: hel lo " keeps sub-word pieces apart.
    """
    lines: list[tuple[str, list[str]]] = []
    for r in prior:
        if r["event"] == "stt_final":
            speaker, text = "user", r["text"]
        elif r["event"] == "frontend_token" and r["token_id"] != PAD and r["text"]:
            speaker, text = "moshi", r["text"]
        else:
            continue
        text = text.strip()
        if not text:
            continue
        if lines and lines[-1][0] == speaker:
            lines[-1][1].append(text)
        else:
            lines.append((speaker, [text]))
    return "\n".join(f"{speaker}: " + "".join(f"{t} " for t in texts) for speaker, texts in lines)


def test_the_llm_sees_the_front_ends_words_as_moshi_lines(tmp_path: Path):
    recorders: list[Recording] = []

    def recording(inner: LlmBackend) -> Recording:
        recorders.append(Recording(inner))
        return recorders[-1]

    all_rows = run_demo(tmp_path, recording).table.to_pylist()  # the whole demo, simulated LLM
    requests = {r.stream_id: r for r in recorders[0].requests}
    starts = [i for i, r in enumerate(all_rows) if r["event"] == "llm_start"]
    assert len(starts) == len(requests) >= 4
    with_moshi = 0
    for i in starts:
        request = requests[all_rows[i]["stream_id"]]
        expected = expected_conversation(all_rows[:i]).rstrip()
        if request.pending:
            expected += f"\nuser: {request.pending} "
        assert request.conversation == expected, all_rows[i]["stream_id"]
        with_moshi += "\nmoshi: " in request.conversation
    # The front-end spoke before later requests, so its words really were in them.
    assert with_moshi >= 2


# -- chunk delays ---------------------------------------------------------------------------------


def test_chunk_delay_is_the_gap_since_the_previous_non_blank_chunk(tmp_path: Path):
    plan = LlmPlan([LlmChunk(0.3, "a"), LlmChunk(0.35, "  "), LlmChunk(0.4, " b"), LlmChunk(0.9, " c")])
    data = run_demo(tmp_path, Scripted(plan))
    check_invariants(data)
    table_rows = data.table.to_pylist()
    chunks = by_stream(table_rows, ("llm_chunk",))
    firsts = by_stream(table_rows, ("llm_first_chunk",))
    expected = [0.3, 0.1, 0.5]  # 0.3 after the start, then 0.4 - 0.3 (the blank one skipped), 0.9 - 0.4
    assert any(len(c) == 3 for c in chunks.values())
    for sid, items in chunks.items():
        assert [r["delay_s"] for r in items] == pytest.approx(expected[: len(items)], abs=1e-9), sid
        assert firsts[sid][0]["delay_s"] == pytest.approx(0.3, abs=1e-9)


# -- tokenisation per chunk -------------------------------------------------------------------------

# Deltas as an OpenAI stream sends them: punctuation and sub-word pieces on their own.
CHUNKS = ["sure", ",", " reg", "ent", " street", "!"]


def test_each_chunk_is_tokenised_on_its_own_after_stripping(tmp_path: Path):
    tokenizer = TextTokenizer.load()
    per_chunk = [i for c in CHUNKS for i in tokenizer.encode(c.strip())]
    whole = tokenizer.encode("".join(CHUNKS))
    assert per_chunk != whole  # the test can tell per-chunk from whole-reply tokenisation
    plan = LlmPlan([LlmChunk(0.2, c) for c in CHUNKS])  # all at once: every token is due and fed
    data = run_demo(tmp_path, Scripted(plan), 12.0)
    check_invariants(data, tokenizer=tokenizer)
    table_rows = data.table.to_pylist()
    applied = [r for r in table_rows if r["event"] == "oracle_append_applied"]
    assert applied and all(r["n_tokens"] == len(tokenizer.encode(r["text"])) for r in applied)
    assert [r["text"] for r in applied[: len(CHUNKS)]] == [c.strip() for c in CHUNKS]
    # Play-back of a whole oracle: START at the reset's frame, then the per-chunk ids one per frame.
    fed = {r["frame"]: r for r in table_rows if r["event"] == "oracle_token_fed"}
    complete = 0
    for reset in (r for r in table_rows if r["event"] == "oracle_reset_applied"):
        played = []
        for k in range(reset["frame"], reset["frame"] + len(per_chunk) + 1):
            if k not in fed or fed[k]["oracle_index"] != k - reset["frame"]:
                break  # a newer reset (or the end of the run) cut this oracle short
            played.append(fed[k]["token_id"])
        assert played == [tokenizer.start_id, *per_chunk][: len(played)]
        complete += len(played) == len(per_chunk) + 1
    assert complete >= 1


# -- voice activity -------------------------------------------------------------------------------


def active_frames(words: list[tuple[float, float]], n_frames: int = 100) -> list[int]:
    vad = voice_activity(tuple(Word("A", "w", s, e) for s, e in words), n_frames, FS)
    return np.flatnonzero(vad).tolist()


@pytest.mark.parametrize(
    ("start", "end", "frames"),
    [
        (2.32, 2.40, [29]),  # exactly frame 29: 2.32 / 0.08 is 28.999999999999996 in floats
        (0.50, 0.56, [6]),  # ends exactly where frame 7 starts: 0.56 / 0.08 is 7.000000000000001
        (0.24, 0.30, [3]),  # starts exactly on frame 3's boundary
        (0.25, 0.26, [3]),  # a tiny word inside one frame
        (0.318, 0.322, [3, 4]),  # a tiny word across a boundary covers both frames
        (0.30, 0.50, [3, 4, 5, 6]),
        (7.90, 8.50, [98, 99]),  # clipped at the last frame
    ],
)
def test_a_word_covers_exactly_the_frames_it_overlaps(start: float, end: float, frames: list[int]):
    assert active_frames([(start, end)]) == frames


def test_words_on_every_frame_boundary_mark_only_their_own_frame():
    """Word k spans exactly frame k ([0.08 k, 0.08 (k + 1)] as a transcript writes it)."""
    for k in range(0, 150):
        start, end = round(k * 0.08, 2), round((k + 1) * 0.08, 2)
        assert active_frames([(start, end)], 200) == [k], (k, start, end)
    # Alternate frames spoken: no word may bleed into its silent neighbours.
    words = [(round(k * 0.08, 2), round((k + 1) * 0.08, 2)) for k in range(0, 100, 2)]
    assert active_frames(words) == list(range(0, 100, 2))


def test_voice_activity_matches_floor_and_ceil_in_exact_arithmetic():
    """Random millisecond word times: frames floor(start / f) .. ceil(end / f) - 1, computed in ms."""
    rng = np.random.default_rng(7)
    for _ in range(500):
        start_ms = int(rng.integers(0, 7000))
        end_ms = start_ms + int(rng.integers(1, 600))
        first = start_ms // 80
        last = min(math.ceil(end_ms / 80), 100)
        frames = active_frames([(start_ms / 1000, end_ms / 1000)])
        assert frames == list(range(first, last)), (start_ms, end_ms)
