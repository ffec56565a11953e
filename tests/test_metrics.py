"""Run and turn metrics: hand-built traces with hand-computed answers, and real runs for consistency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DEMO_SCENARIO

from kame_sim.config import load_scenario
from kame_sim.conversation import Conversation, Word, load_conversation
from kame_sim.metrics import (
    STATUSES,
    compute_metrics,
    levenshtein,
    normalise_words,
    normalised_edit_distance,
    reference_replies_from_conversation,
    word_f1,
)
from kame_sim.metrics.summary import response_onsets, summarize
from kame_sim.metrics.text import pieces_to_words
from kame_sim.runner import run_scenario
from kame_sim.trace import TraceWriter, read_trace

FS = 0.08


def frame_t(k: int) -> float:
    """Step time of frame k, rounded so hand-computed answers are exact decimals."""
    return round((k + 1) * FS, 2)


def write_trace(
    path: Path,
    n_frames: int,
    events: list[tuple[float, str, dict[str, Any]]],
    applied: dict[int, list[tuple[str, dict[str, Any]]]] | None = None,
    fed: dict[int, int] | None = None,
    speech: dict[int, str] | None = None,
    tail: list[tuple[float, str, dict[str, Any]]] | None = None,
    run_end: bool = True,
):
    """Write a trace the way the simulator orders it: timed events, then per frame the applied
    items, the frame row, the token fed and the front-end token; then ``tail`` and run_end."""
    applied, fed, speech = applied or {}, fed or {}, speech or {}
    events = sorted(events, key=lambda e: e[0])
    with TraceWriter(path, {"kame_sim.conversation_id": "hand", "kame_sim.seed": "7"}) as w:
        w.row("run_start", 0.0, detail="test")
        i = 0
        for k in range(n_frames):
            t = frame_t(k)
            while i < len(events) and events[i][0] < t:
                w.row(events[i][1], events[i][0], **events[i][2])
                i += 1
            for name, kw in applied.get(k, []):
                w.row(name, t, frame=k, **kw)
            w.row("frame", t, frame=k, t_ref=t)
            index = fed.get(k)
            w.row(
                "oracle_token_fed",
                t,
                frame=k,
                token_id=3 if index is None else 100 + index,
                oracle_index=index,
            )
            piece = speech.get(k)
            w.row("frontend_token", t, frame=k, token_id=3 if piece is None else 500 + k, text=piece)
        for t, name, kw in events[i:] + (tail or []):
            w.row(name, t, **kw)
        if run_end:
            w.row("run_end", frame_t(n_frames - 1), detail="complete")
    return read_trace(path)


def put(t: float, stream: int, text: str | None, ok: bool = True) -> list[tuple[float, str, dict[str, Any]]]:
    """A chunk's arrival and its put (text None = the stream's reset put)."""
    kind = "append" if text else "reset"
    out: list[tuple[float, str, dict[str, Any]]] = []
    if text:
        out.append((t, "llm_chunk", {"stream_id": stream, "text": text}))
    event = "oracle_enqueue" if ok else "oracle_drop"
    out.append((t, event, {"stream_id": stream, "text": text, "detail": kind}))
    return out


def reset(stream: int) -> tuple[str, dict[str, Any]]:
    return ("oracle_reset_applied", {"stream_id": stream})


def append(stream: int, text: str, index: int, n: int, skipped: int = 0) -> tuple[str, dict[str, Any]]:
    return (
        "oracle_append_applied",
        {"stream_id": stream, "text": text, "oracle_index": index, "n_tokens": n, "n_skipped": skipped},
    )


def word(t0: float, t1: float, u: int, text: str) -> tuple[float, str, dict[str, Any]]:
    return (t0, "user_word", {"t_ref": t1, "utterance": u, "text": text})


@pytest.fixture
def hand_trace(tmp_path: Path):
    """Three user turns, three LLM streams, one chunk of every lag status (see the comments).

    Frame k is stepped at t = (k+1)·0.08: frame 8 at 0.72, 10 at 0.88, 16 at 1.36, 18 at 1.52.
    """
    events = [
        word(0.10, 0.40, 0, "hello"),
        word(0.45, 0.70, 0, "there"),  # turn 0: 0.10-0.70
        word(3.00, 3.40, 1, "thanks"),  # turn 1: 3.00-3.40
        word(3.60, 3.80, 2, "bye"),  # turn 2: 3.60-3.80, never answered
        (0.50, "llm_start", {"stream_id": 1, "word_count": 1, "detail": "first"}),
        *put(0.85, 1, None),
        *put(0.85, 1, "Hi"),
        *put(0.86, 1, "there friend"),
        *put(1.30, 1, "late"),
        *put(1.31, 1, "partly late"),
        *put(1.32, 1, "dropped", ok=False),
        *put(1.37, 1, "tail"),
        (1.40, "llm_cancel", {"stream_id": 1, "detail": "superseded"}),
        (1.40, "llm_start", {"stream_id": 2, "word_count": 2, "detail": "words"}),
        *put(1.45, 2, None),
        *put(1.45, 2, "Sure"),
        *put(1.46, 2, "thing"),
        *put(1.47, 2, "~"),
        (3.70, "llm_start", {"stream_id": 3, "word_count": 3, "detail": "final"}),
    ]
    applied = {
        10: [reset(1), append(1, "Hi", 1, 1), append(1, "there friend", 2, 2)],
        # anchor 10, step 16 -> relative 6: "late" (slot 4) is all late, "partly late" loses slot 5.
        16: [append(1, "late", 4, 1, skipped=1), append(1, "partly late", 5, 3, skipped=1)],
        17: [append(1, "tail", 8, 2)],  # slots 18, 19 ...
        18: [
            reset(2),
            append(2, "Sure", 1, 1),
            append(2, "thing", 2, 1),
            append(2, "~", 3, 0),
        ],  # ... replaced
    }
    fed = {10: 0, 11: 1, 12: 2, 13: 3, 16: 6, 17: 7, 18: 0, 19: 1, 20: 2}
    speech = {
        8: " sure",
        9: " let",  # before the first oracle application (frame 10)
        12: " Hi",
        13: " there",
        14: " fri",
        15: "end",
        20: " Sure",
        21: " thing",
        22: ".",
        37: " ok",  # t = 3.04: a new burst (gap 1.2 s) in turn 1's window, before its end
    }
    tail = [*put(4.00, 3, None), *put(4.00, 3, "never")]  # arrives after the last frame: pending
    return write_trace(tmp_path / "hand.arrows", 50, events, applied, fed, speech, tail)


def test_hand_trace_chunk_statuses_and_lags(hand_trace):
    run, _ = compute_metrics(hand_trace)
    lags = run.chunk_lags
    assert [STATUSES[s] for s in lags.status] == [
        "fed",
        "fed",
        "skipped",
        "fed",
        "dropped",
        "superseded",
        "fed",
        "fed",
        "empty",
        "pending",
    ]
    assert lags.chunk_text == [
        "Hi",
        "there friend",
        "late",
        "partly late",
        "dropped",
        "tail",
        "Sure",
        "thing",
        "~",
        "never",
    ]
    assert lags.fed_frame.tolist() == [11, 12, -1, 16, -1, -1, 19, 20, -1, -1]
    expected = [0.96 - 0.85, 1.04 - 0.86, 1.36 - 1.31, 1.60 - 1.45, 1.68 - 1.46]
    np.testing.assert_allclose(lags.lags, expected)
    assert run.n_chunks == 10
    assert (run.n_chunks_fed, run.n_chunks_skipped, run.n_chunks_dropped) == (5, 1, 1)
    assert (run.n_chunks_superseded, run.n_chunks_pending, run.n_chunks_empty, run.n_chunks_unmatched) == (
        1,
        1,
        1,
        0,
    )
    assert run.oracle_lag_mean_s == pytest.approx(np.mean(expected))
    assert run.oracle_lag_median_s == pytest.approx(0.15)
    assert run.oracle_lag_p95_s == pytest.approx(0.18 + 0.8 * (0.22 - 0.18))
    assert run.oracle_lag_max_s == pytest.approx(0.22)
    assert run.first_chunk_lag_mean_s == pytest.approx((0.11 + 0.15) / 2)
    assert run.first_chunk_lag_max_s == pytest.approx(0.15)


def test_multiplexer_chunk_statuses_flushed_stale_ignored(tmp_path: Path):
    """Chunks that never reach a slot for multiplexer reasons get their own status, not ``pending``.

    Rows are linked by order (not a realistic session): gen 2 is adopted at 0.50 s; at frame 6
    (0.56 s) its "Sure" is applied and gen 1's "old", queued behind it, is skipped as stale; gen 3's
    adoption at 0.60 s flushes the 2 queued items ("you", "all"); gen 1's "nope" is ignored (never
    put); gen 3's reset at frame 7 supersedes "Sure" before its slot; "Bye" is fed at frame 8."""
    events = [
        (0.10, "llm_start", {"stream_id": 1, "detail": "partial"}),
        (0.20, "llm_start", {"stream_id": 2, "detail": "trailing"}),
        (0.30, "llm_start", {"stream_id": 3, "detail": "trailing"}),
        (0.50, "llm_first_chunk", {"stream_id": 2, "delay_s": 0.3}),
        (0.50, "llm_adopt", {"stream_id": 2, "delay_s": 0.3}),
        *put(0.50, 2, "Sure"),
        *put(0.51, 1, "old"),
        *put(0.58, 2, "you"),
        *put(0.59, 2, "all"),
        (0.595, "llm_chunk", {"stream_id": 1, "text": "nope", "detail": "ignored"}),
        (0.60, "llm_first_chunk", {"stream_id": 3, "delay_s": 0.3}),
        (0.60, "oracle_flush", {"stream_id": 3, "queue_len": 2}),
        (0.60, "llm_cancel", {"stream_id": 2, "detail": "adoption"}),
        (0.60, "llm_cancel", {"stream_id": 1, "detail": "adoption"}),
        (0.60, "llm_adopt", {"stream_id": 3, "delay_s": 0.3}),
        *put(0.60, 3, "Bye"),
    ]
    applied = {
        6: [reset(2), append(2, "Sure", 1, 1), ("oracle_stale_skipped", {"stream_id": 1, "text": "old"})],
        7: [reset(3), append(3, "Bye", 1, 1)],
    }
    data = write_trace(tmp_path / "mux.arrows", 12, events, applied, fed={6: 0, 7: 0, 8: 1})
    run, _ = compute_metrics(data)
    lags = run.chunk_lags
    assert lags.chunk_text == ["Sure", "old", "you", "all", "nope", "Bye"]
    assert [STATUSES[s] for s in lags.status] == [
        "superseded",
        "stale",
        "flushed",
        "flushed",
        "ignored",
        "fed",
    ]
    assert lags.applied_text == ["Sure", None, None, None, None, "Bye"]
    np.testing.assert_allclose(lags.lags, [frame_t(8) - 0.60])
    assert (run.n_chunks_flushed, run.n_chunks_stale, run.n_chunks_ignored, run.n_chunks_pending) == (
        2,
        1,
        1,
        0,
    )
    assert (run.n_flushes, run.n_flushed_items, run.n_stale_skipped) == (1, 2, 1)
    assert (run.n_streams_adopted, run.n_cancel_adoption, run.max_live_streams) == (2, 2, 3)


def test_hand_trace_tokens_queue_and_coverage(hand_trace):
    run, turns = compute_metrics(hand_trace)
    assert (run.tokens_appended, run.tokens_skipped) == (11, 2)
    assert run.skipped_token_rate == pytest.approx(2 / 11)
    # enqueues: stream 1 reset + 5 appends, stream 2 reset + 3, stream 3 reset + 1 = 12; one drop
    assert (run.queue_puts, run.queue_drops) == (13, 1)
    assert run.queue_drop_rate == pytest.approx(1 / 13)
    # speaking frames 8 9 12 13 14 15 20 21 22 37; oracle index > 0 at 12 (2), 13 (3), 20 (2)
    assert (run.speaking_frames, run.oracle_speaking_frames) == (10, 3)
    assert run.oracle_coverage == pytest.approx(0.3)
    assert turns[0].oracle_coverage == pytest.approx(3 / 9)
    assert turns[1].oracle_coverage == 0.0
    assert run.conversation_id == "hand" and run.seed == "7" and run.complete


def test_hand_trace_turns_onsets_and_turn_over(hand_trace):
    run, turns = compute_metrics(hand_trace)
    assert [t.utterance for t in turns] == [0, 1, 2]
    assert [t.responded for t in turns] == [True, True, False]
    assert turns[0].onset_s == pytest.approx(0.72 - 0.70)
    assert turns[1].onset_s == pytest.approx(3.04 - 3.40)
    assert turns[1].onset_clipped_s == 0.0
    assert turns[2].onset_s is None and turns[2].onset_clipped_s is None
    assert (turns[0].response_start_s, turns[0].response_end_s) == (0.72, 1.84)
    assert run.turn_over_rate == pytest.approx(2 / 3)
    assert run.onset_mean_s == pytest.approx((0.02 - 0.36) / 2)
    assert run.onset_median_s == pytest.approx((0.02 - 0.36) / 2)
    assert run.onset_clipped_mean_s == pytest.approx(0.01)
    # Same turns and onsets as the run summary.
    summary = response_onsets(hand_trace.table)
    assert [s.onset for s in summary] == pytest.approx([t.onset_s for t in turns[:2]] + [None])


def test_hand_trace_self_correction(hand_trace):
    run, turns = compute_metrics(hand_trace)
    t0 = turns[0]
    assert t0.response_text == "sure let Hi there friend Sure thing."
    # Streams 1 and 2 start in turn 0's window; stream 2 is the last one applied before frame 22.
    assert (t0.oracle_stream_id, t0.first_oracle_frame) == (2, 10)
    assert t0.oracle_text == "Sure thing ~" and t0.oracle_words == 2
    assert (t0.response_words, t0.words_before_oracle, t0.words_after_oracle) == (7, 2, 5)
    # before [sure let] vs [sure thing]; after [hi there friend sure thing]; all seven words.
    assert t0.f1_before == pytest.approx(0.5)
    assert t0.edit_before == pytest.approx(0.5)
    assert t0.f1_after == pytest.approx(4 / 7)
    assert t0.edit_after == pytest.approx(3 / 5)
    assert t0.f1_response == pytest.approx(4 / 9)
    assert t0.edit_response == pytest.approx(5 / 7)
    # Turn 1 has no stream of its own: everything it said is "before", nothing to compare with.
    t1 = turns[1]
    assert t1.oracle_stream_id is None and t1.oracle_text is None
    assert (t1.words_before_oracle, t1.words_after_oracle) == (1, 0)
    assert t1.f1_before is None and t1.edit_after is None
    assert run.n_turns_with_oracle == 1
    assert run.f1_before_mean == pytest.approx(0.5)
    assert run.f1_after_mean == pytest.approx(4 / 7)
    assert run.edit_response_mean == pytest.approx(5 / 7)


def test_hand_trace_reply_agreement(hand_trace):
    refs = {0: "Sure thing, friend!", 1: "okay", 2: "bye"}
    run, turns = compute_metrics(hand_trace, reference_replies=refs)
    # [sure let hi there friend sure thing] vs [sure thing friend]: overlap 3 -> 6/10
    assert turns[0].reply_f1 == pytest.approx(0.6)
    assert turns[1].reply_f1 == 0.0  # "ok" is not "okay"
    assert turns[2].reply_f1 is None  # no response
    assert run.n_turns_with_reference == 2
    assert run.reply_f1_mean == pytest.approx(0.3)
    assert compute_metrics(hand_trace)[0].reply_f1_mean is None


def test_rows_are_flat_and_numeric(hand_trace):
    run, turns = compute_metrics(hand_trace)
    row = run.as_row()
    assert "conversation_id" not in row and "chunk_lags" not in row
    assert row["complete"] == 1 and row["n_turns"] == 3
    for r in (row, *(t.as_row() for t in turns)):
        assert all(v is None or (isinstance(v, int | float) and not isinstance(v, str)) for v in r.values())
    assert turns[2].as_row()["responded"] == 0 and "response_text" not in turns[0].as_row()


def test_empty_trace_gives_none_not_zero(tmp_path: Path):
    trace = write_trace(tmp_path / "empty.arrows", 5, [])
    run, turns = compute_metrics(trace)
    assert turns == []
    assert run.n_turns == 0 and run.turn_over_rate is None
    assert run.onset_mean_s is None and run.onset_clipped_median_s is None
    assert run.oracle_coverage is None and run.skipped_token_rate is None and run.queue_drop_rate is None
    assert run.oracle_lag_median_s is None and run.first_chunk_lag_mean_s is None
    assert run.n_chunks == 0 and run.f1_after_mean is None and run.reply_f1_mean is None
    # A trace with no rows at all (torn right after the header) is handled too.
    with TraceWriter(tmp_path / "none.arrows", {}) as _:
        pass
    run, turns = compute_metrics(read_trace(tmp_path / "none.arrows"))
    assert turns == [] and run.simulated_s == 0.0 and not run.complete


def test_no_oracle_at_all(tmp_path: Path):
    trace = write_trace(
        tmp_path / "t.arrows", 20, [word(0.1, 0.5, 0, "hi")], speech={7: " hello", 8: " there"}, run_end=False
    )
    run, turns = compute_metrics(trace)
    assert not run.complete
    assert run.oracle_coverage == 0.0  # it spoke, with no oracle under it
    assert turns[0].responded and turns[0].words_before_oracle == 2 and turns[0].f1_before is None
    assert run.n_turns_with_oracle == 0 and run.n_chunks == 0


def test_implicit_reset_anchor(tmp_path: Path):
    """A dropped reset with no oracle yet: the first append acts as the reset (anchor = its frame)."""
    events = [*put(0.30, 1, None, ok=False), *put(0.30, 1, "go")]
    trace = write_trace(
        tmp_path / "t.arrows", 10, events, applied={3: [append(1, "go", 1, 2)]}, fed={3: 0, 4: 1, 5: 2}
    )
    run, _ = compute_metrics(trace)
    assert run.chunk_lags.fed_frame.tolist() == [4]
    assert run.oracle_lag_mean_s == pytest.approx(0.40 - 0.30)
    assert (run.queue_puts, run.queue_drops) == (2, 1)


def test_chunks_without_put_rows_are_read_as_enqueued(tmp_path: Path):
    events = [(0.30, "llm_chunk", {"stream_id": 1, "text": "go"})]
    trace = write_trace(
        tmp_path / "t.arrows", 10, events, applied={3: [reset(1), append(1, "go", 1, 1)]}, fed={3: 0, 4: 1}
    )
    assert compute_metrics(trace)[0].chunk_lags.lags.tolist() == pytest.approx([0.10])


def test_reference_replies_from_conversation():
    w = Word
    words = (
        w("A", "a1", 0.0, 0.5),
        w("B", "mm", 0.2, 0.3),
        w("A", "a2", 0.6, 1.0),
        w("B", "b1", 0.9, 1.2),
        w("B", "b2", 1.3, 1.6),
        w("A", "a3", 3.0, 3.5),
        w("B", "b3", 3.2, 3.4),
    )
    conv = Conversation("c", Path("."), np.zeros((2, 10), dtype=np.float32), 24000, words, (), "hash")
    scenario = {"conversation": {"user_speaker": "A", "frontend_speaker": "B"}, "stt": {"utterance_gap": 0.8}}
    # The backchannel before the user's last word is not part of the reply; the overlap with it is.
    assert reference_replies_from_conversation(conv, scenario) == {0: "b1 b2", 1: "b3"}
    scenario["stt"]["utterance_gap"] = 5.0  # one utterance: the reply starts after a3's start
    assert reference_replies_from_conversation(conv, scenario) == {0: "b3"}
    swapped = {"conversation": {"user_speaker": "B", "frontend_speaker": "A"}, "stt": {"utterance_gap": 0.8}}
    # B's utterances: [mm b1 b2], [b3]; nobody answers the second one ("" = the real speaker was silent).
    assert reference_replies_from_conversation(conv, swapped) == {0: "a3", 1: ""}


# -- text helpers --------------------------------------------------------------------------------


def test_text_helpers():
    assert normalise_words("Great, I'm glad. Twenty-four!") == ["great", "i'm", "glad", "twenty", "four"]
    # A word belongs to the frame of the piece holding its first character (not of a bare " ").
    assert pieces_to_words([" W", "ould", " you", " ", "8", "."], [1, 2, 3, 4, 5, 6]) == (
        ["would", "you", "8"],
        [1, 3, 5],
    )
    assert levenshtein(["a", "b", "c"], ["a", "c"]) == 1
    assert levenshtein([], ["a", "b"]) == 2
    assert levenshtein(list("kitten"), list("sitting")) == 3
    assert normalised_edit_distance(["a", "b"], ["b", "a"]) == 1.0
    assert normalised_edit_distance([], ["a"]) is None
    assert word_f1(["a", "a", "b"], ["a", "c"]) == pytest.approx(2 * 1 / 5)
    assert word_f1(["a"], []) is None


# -- real runs -----------------------------------------------------------------------------------


def _replay_first_fed_frames(table) -> list[int | None]:
    """Brute force: replay resets/appends row by row, note the frame each append's token is first fed."""
    rows = table.select(["event", "frame", "stream_id", "oracle_index", "n_tokens", "n_skipped"]).to_pylist()
    owner: dict[int, int] = {}  # oracle index -> append number
    first_fed: list[int | None] = []
    for r in rows:
        if r["event"] == "oracle_reset_applied":
            owner = {}
        elif r["event"] == "oracle_append_applied":
            first_fed.append(None)
            for i in range(r["oracle_index"] + r["n_skipped"], r["oracle_index"] + r["n_tokens"]):
                owner[i] = len(first_fed) - 1
        elif r["event"] == "oracle_token_fed" and r["oracle_index"] is not None:
            a = owner.get(r["oracle_index"])
            if a is not None and first_fed[a] is None:
                first_fed[a] = r["frame"]
    return first_fed


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("metrics")
    runs = {}
    for name, overrides in {
        "default": {},
        "drops": {"policy.queue_size": 2},
        "late": {"llm.inter_chunk": 0.3},
    }.items():
        runs[name] = run_scenario(load_scenario(DEMO_SCENARIO, overrides), out / name).run_dir
    return runs


@pytest.mark.parametrize("name", ["default", "drops", "late"])
def test_real_run_is_consistent(demo_runs, name):
    trace = read_trace(demo_runs[name])
    run, turns = compute_metrics(trace)
    summary = summarize(trace)
    lags = run.chunk_lags
    # Every chunk has exactly one status, and every link joins the same text.
    assert sum(run.as_row()[f"n_chunks_{s}"] for s in STATUSES) == run.n_chunks == len(lags.status)
    assert run.n_chunks_unmatched == 0
    assert all(a is None or a == c for c, a in zip(lags.chunk_text, lags.applied_text, strict=True))
    # The vectorised linkage agrees with a row-by-row replay of the oracle.
    replay = _replay_first_fed_frames(trace.table)
    linked = [a for a, s in zip(lags.applied_text, lags.status, strict=True) if a is not None]
    assert len(linked) == len(replay)
    fed_by_linkage = [
        f if f >= 0 else None
        for f, a in zip(lags.fed_frame.tolist(), lags.applied_text, strict=True)
        if a is not None
    ]
    assert fed_by_linkage == replay
    # Agreement with the run summary.
    assert [t.onset_s for t in turns] == [t.onset for t in summary.turns]
    assert run.queue_drops == summary.oracle_dropped
    assert run.queue_puts == summary.oracle_enqueued + summary.oracle_dropped
    assert run.tokens_skipped == summary.oracle_tokens_skipped
    assert run.speaking_frames == summary.frontend_tokens
    # Ranges.
    assert 0.0 <= run.oracle_coverage <= 1.0 and 0.0 <= run.turn_over_rate <= 1.0
    assert np.all(lags.lags >= 0.0)
    assert run.first_chunk_lag_max_s <= 2 * FS + 1e-9  # next frame boundary + START
    for t in turns:
        for value in (t.f1_before, t.f1_after, t.f1_response, t.edit_before, t.edit_after, t.oracle_coverage):
            assert value is None or 0.0 <= value <= 1.0
    if name == "default":
        assert run.oracle_lag_median_s < 1.0 and run.n_chunks_fed > 0
        assert run.queue_drops == 0 and run.skipped_token_rate == 0.0
        assert run.n_turns == 4 and run.n_turns_with_oracle == 4
    if name == "drops":
        assert run.queue_drops > 0 and run.n_chunks_dropped > 0 and 0 < run.queue_drop_rate < 1
    if name == "late":
        assert run.tokens_skipped > 0 and run.n_chunks_skipped > 0 and 0 < run.skipped_token_rate < 1


def test_real_run_reply_agreement(demo_runs):
    trace = read_trace(demo_runs["default"])
    scenario = trace.scenario
    conv = load_conversation(Path(scenario["conversation"]["path"]))
    refs = reference_replies_from_conversation(conv, scenario)
    assert sorted(refs) == [0, 1, 2, 3]
    assert refs[0].startswith("pizza express on regent street")
    run, turns = compute_metrics(trace, refs)
    assert run.n_turns_with_reference == 4
    assert 0.0 < run.reply_f1_mean < 1.0
    assert turns[0].reply_f1 > 0.5  # the recorded oracle for turn 0 is close to the real reply
