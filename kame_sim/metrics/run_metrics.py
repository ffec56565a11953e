"""Per-run and per-turn metrics, computed from a trace alone (definitions: docs/metrics.md).

Why from the trace alone: a sweep keeps only traces, and a metric that needed the live
simulation could not be recomputed when its definition changes. The one input a trace does not
hold — what the real speaker replied — is passed in (``reference_replies``) or rebuilt from the
conversation with :func:`reference_replies_from_conversation`.

Undefined values are ``None`` (no turns, no oracle, nothing said, ...), never 0, so that an
average over runs does not mix "bad" with "not applicable"; :mod:`kame_sim.metrics.aggregate`
skips and counts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from kame_sim.conversation import Conversation, user_utterances
from kame_sim.metrics import fdb
from kame_sim.metrics.events import TraceColumns
from kame_sim.metrics.fdb import TURN_END
from kame_sim.metrics.oracle_lag import STATUSES, ChunkLags, chunk_lags
from kame_sim.metrics.streams import CANCEL_REASONS, STREAM_STATUSES, StreamLife, max_live, stream_lives
from kame_sim.metrics.text import normalise_words, normalised_edit_distance, pieces_to_words, word_f1
from kame_sim.metrics.turns import DEFAULT_BURST_GAP, Speech, Turns, frontend_speech, onsets, user_turns
from kame_sim.trace.reader import TraceData

Number = float | int | None


def _opt(value: float) -> float | None:
    """NaN → None (numpy computations use NaN; the public fields use None)."""
    return None if value is None or math.isnan(value) else float(value)


def _stats(values: list[float | None] | np.ndarray) -> tuple[float | None, float | None]:
    """(mean, median) of the defined values; (None, None) when there are none."""
    arr = np.array([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    if len(arr) == 0:
        return None, None
    return float(arr.mean()), float(np.median(arr))


@dataclass
class TurnMetrics:
    """Metrics of one user turn and the front-end's response to it (docs/metrics.md, per turn)."""

    utterance: int
    start_s: float
    end_s: float
    responded: bool
    onset_s: float | None = None
    onset_clipped_s: float | None = None
    response_start_s: float | None = None
    response_end_s: float | None = None
    response_frames: int = 0
    response_words: int = 0
    oracle_coverage: float | None = None
    oracle_stream_id: int | None = None
    first_oracle_frame: int | None = None
    oracle_words: int = 0
    words_before_oracle: int = 0
    words_after_oracle: int = 0
    f1_before: float | None = None
    f1_after: float | None = None
    f1_response: float | None = None
    edit_before: float | None = None
    edit_after: float | None = None
    edit_response: float | None = None
    reply_f1: float | None = None
    # Full-Duplex-Bench's view of the silence after this turn (kame_sim/metrics/fdb.py)
    silence: str | None = None  # "turn_end" | "pause" | None (not labelled)
    fdb_words: int = 0
    fdb_span_s: float | None = None
    fdb_took_turn: bool = False
    fdb_latency_s: float | None = None
    response_text: str = ""
    oracle_text: str | None = None
    reference_text: str | None = None

    def as_row(self) -> dict[str, Number]:
        """Flat numeric row (the texts left out; ``responded``/``fdb_took_turn`` as 0/1; the
        silence label as ``turn_end`` = 1 turn end, 0 pause, None not labelled)."""
        row = _numeric_fields(self, skip=("response_text", "oracle_text", "reference_text", "silence"))
        row["responded"] = int(self.responded)
        row["fdb_took_turn"] = int(self.fdb_took_turn)
        row["turn_end"] = None if self.silence is None else int(self.silence == TURN_END)
        return row


@dataclass
class RunMetrics:
    """Metrics of one run (docs/metrics.md, per run). ``as_row`` leaves out the identifiers."""

    conversation_id: str
    seed: str
    complete: bool
    simulated_s: float
    # turns and onsets
    n_turns: int = 0
    n_responded: int = 0
    turn_over_rate: float | None = None
    onset_mean_s: float | None = None
    onset_median_s: float | None = None
    onset_clipped_mean_s: float | None = None
    onset_clipped_median_s: float | None = None
    # oracle lag, per LLM chunk
    n_chunks: int = 0
    n_chunks_fed: int = 0
    n_chunks_skipped: int = 0
    n_chunks_dropped: int = 0
    n_chunks_superseded: int = 0
    n_chunks_pending: int = 0
    n_chunks_empty: int = 0
    n_chunks_unmatched: int = 0
    n_chunks_ignored: int = 0
    n_chunks_flushed: int = 0
    n_chunks_stale: int = 0
    oracle_lag_mean_s: float | None = None
    oracle_lag_median_s: float | None = None
    oracle_lag_p95_s: float | None = None
    oracle_lag_max_s: float | None = None
    first_chunk_lag_mean_s: float | None = None
    first_chunk_lag_max_s: float | None = None
    # tokens and queue
    tokens_appended: int = 0
    tokens_skipped: int = 0
    skipped_token_rate: float | None = None
    queue_puts: int = 0
    queue_drops: int = 0
    queue_drop_rate: float | None = None
    # LLM streams, both policies (kame_sim/metrics/streams.py: how each stream ended)
    n_streams: int = 0
    n_streams_done: int = 0
    n_streams_cancelled: int = 0
    n_streams_error: int = 0
    n_streams_open: int = 0
    n_cancel_superseded: int = 0
    n_cancel_adoption: int = 0
    n_cancel_limit: int = 0
    n_cancel_session_end: int = 0
    n_streams_adopted: int = 0
    n_streams_ignored: int = 0
    n_streams_no_token: int = 0
    max_live_streams: int = 0
    n_starts_rate_limited: int = 0
    n_starts_deferred: int = 0
    n_starts_skipped: int = 0
    ttft_median_s: float | None = None
    ttft_max_s: float | None = None
    ttft_adopted_median_s: float | None = None
    no_token_wait_max_s: float | None = None
    # the multiplexer's queue: waiting puts, flushes at adoptions, stale items skipped
    n_put_waits: int = 0
    put_wait_total_s: float = 0.0
    put_wait_max_s: float | None = None
    n_flushes: int = 0
    n_flushed_items: int = 0
    n_stale_skipped: int = 0
    # coverage
    speaking_frames: int = 0
    oracle_speaking_frames: int = 0
    oracle_coverage: float | None = None
    # self-correction and agreement (means over the turns where defined)
    n_turns_with_oracle: int = 0
    f1_before_mean: float | None = None
    f1_after_mean: float | None = None
    f1_response_mean: float | None = None
    edit_before_mean: float | None = None
    edit_after_mean: float | None = None
    edit_response_mean: float | None = None
    n_turns_with_reference: int = 0
    reply_f1_mean: float | None = None
    # Full-Duplex-Bench turn-taking over the labelled user silences (kame_sim/metrics/fdb.py),
    # from the front-end's text tokens; labels need the reference replies (None without them)
    n_fdb_turn_ends: int = 0
    n_fdb_pauses: int = 0
    n_fdb_turn_overs: int = 0
    n_fdb_pause_turn_overs: int = 0
    fdb_turn_taking_tor: float | None = None
    fdb_turn_taking_latency_s: float | None = None
    fdb_turn_taking_latency_median_s: float | None = None
    fdb_pause_tor: float | None = None
    # The per-chunk linkage behind the lag numbers (for plots and checks); not part of the row.
    chunk_lags: ChunkLags | None = field(default=None, repr=False, compare=False)

    def as_row(self) -> dict[str, Number]:
        """Flat numeric row for a results table (``complete`` as 0/1; no conversation id or seed:
        the sweep that collects rows adds those, with its parameters)."""
        row = _numeric_fields(self, skip=_RUN_ROW_SKIP)
        row["complete"] = int(self.complete)
        return row


_RUN_ROW_SKIP = ("conversation_id", "seed", "chunk_lags")
#: The metric columns of :meth:`RunMetrics.as_row`, known before any run (a CI gate checks its
#: assertions' metric names against these before it runs anything).
RUN_METRIC_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RunMetrics) if f.name not in _RUN_ROW_SKIP)


def _numeric_fields(obj: object, skip: tuple[str, ...]) -> dict[str, Number]:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.name not in skip}  # type: ignore[arg-type]


def compute_metrics(
    trace: TraceData,
    reference_replies: Mapping[int, str] | None = None,
    burst_gap: float = DEFAULT_BURST_GAP,
    silence_labels: Mapping[int, str | None] | None = None,
) -> tuple[RunMetrics, list[TurnMetrics]]:
    """All metrics of one trace. ``reference_replies`` maps a user utterance index to the real reply.

    The Full-Duplex-Bench columns need each user silence labelled turn end or pause: from
    ``silence_labels`` when given, else from ``reference_replies`` (:func:`fdb.silence_labels`: a
    non-empty reply is a turn end, an empty one a pause); without either, nothing is labelled.
    ``RunMetrics.chunk_lags`` keeps the per-chunk linkage (:class:`ChunkLags`) for plots.
    """
    cols = TraceColumns(trace.table)
    turns = user_turns(cols)
    speech = frontend_speech(cols, turns, burst_gap)
    lags = chunk_lags(cols)
    fed_index = _fed_index_by_frame(cols)
    speaking_oracle = _oracle_at(fed_index, speech.frame)

    t_all = cols.num_at(np.arange(cols.n_rows), "t_sim") if cols.n_rows else np.zeros(0)
    run = RunMetrics(
        conversation_id=trace.metadata.get("kame_sim.conversation_id", "?"),
        seed=trace.metadata.get("kame_sim.seed", "?"),
        complete=trace.complete,
        simulated_s=float(np.nanmax(t_all)) if len(t_all) else 0.0,
    )
    turn_metrics = _turn_metrics(cols, turns, speech, speaking_oracle, reference_replies or {})
    _fill_turn_summary(run, turn_metrics)
    if silence_labels is None:
        silence_labels = fdb.silence_labels(reference_replies or {}, turns.utterance.tolist())
    _fill_fdb(run, turn_metrics, cols, turns, speech, silence_labels, fdb.frame_seconds(trace))
    _fill_oracle(run, cols, lags, speaking_oracle)
    _fill_streams(run, cols, stream_lives(trace, run.simulated_s))
    run.chunk_lags = lags
    return run, turn_metrics


# -- oracle --------------------------------------------------------------------------------------


def _fed_index_by_frame(cols: TraceColumns) -> np.ndarray:
    """Oracle index fed at each frame (-1 = padding or no row)."""
    frames = cols.num("oracle_token_fed", "frame")
    out = np.full(int(frames.max()) + 1 if len(frames) else 0, -1, dtype=np.int64)
    out[frames] = cols.num("oracle_token_fed", "oracle_index")
    return out


def _oracle_at(fed_index: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Boolean per frame: was a real oracle text token (index > 0, not START) fed."""
    ok = (frames >= 0) & (frames < len(fed_index))
    out = np.zeros(len(frames), dtype=bool)
    out[ok] = fed_index[frames[ok]] > 0
    return out


def _fill_oracle(run: RunMetrics, cols: TraceColumns, lags: ChunkLags, speaking_oracle: np.ndarray) -> None:
    run.n_chunks = len(lags.status)
    for name in STATUSES:
        setattr(run, f"n_chunks_{name}", lags.count(name))
    fed = lags.lags
    if len(fed):
        run.oracle_lag_mean_s = float(fed.mean())
        run.oracle_lag_median_s = float(np.median(fed))
        run.oracle_lag_p95_s = float(np.percentile(fed, 95))
        run.oracle_lag_max_s = float(fed.max())
    first = lags.first_chunk_lags
    if len(first):
        run.first_chunk_lag_mean_s = float(first.mean())
        run.first_chunk_lag_max_s = float(first.max())
    run.tokens_appended = int(cols.num("oracle_append_applied", "n_tokens").clip(min=0).sum())
    run.tokens_skipped = int(cols.num("oracle_append_applied", "n_skipped").clip(min=0).sum())
    run.skipped_token_rate = run.tokens_skipped / run.tokens_appended if run.tokens_appended else None
    run.queue_drops = cols.count("oracle_drop")
    run.queue_puts = cols.count("oracle_enqueue") + run.queue_drops
    run.queue_drop_rate = run.queue_drops / run.queue_puts if run.queue_puts else None
    run.speaking_frames = len(speaking_oracle)
    run.oracle_speaking_frames = int(speaking_oracle.sum())
    run.oracle_coverage = run.oracle_speaking_frames / run.speaking_frames if run.speaking_frames else None


def _fill_streams(run: RunMetrics, cols: TraceColumns, lives: list[StreamLife]) -> None:
    run.n_streams = cols.count("llm_start")
    for status in STREAM_STATUSES:
        setattr(run, f"n_streams_{status}", sum(s.status == status for s in lives))
    for reason in CANCEL_REASONS:
        setattr(run, f"n_cancel_{reason}", sum(s.status == "cancelled" and s.detail == reason for s in lives))
    run.n_streams_adopted = sum(s.adopted is not None for s in lives)
    run.n_streams_ignored = sum(s.ignored for s in lives)
    no_token = [s.duration for s in lives if s.first_chunk is None]
    run.n_streams_no_token = len(no_token)
    run.no_token_wait_max_s = max(no_token) if no_token else None
    run.max_live_streams = max_live(lives)
    run.n_starts_rate_limited = cols.count("llm_rate_limited")
    run.n_starts_deferred = cols.count("llm_start_deferred")
    run.n_starts_skipped = cols.count("llm_start_skipped")
    ttft = np.array([s.ttft for s in lives if s.ttft is not None], dtype=float)
    if len(ttft):
        run.ttft_median_s = float(np.median(ttft))
        run.ttft_max_s = float(ttft.max())
    adopted = cols.num("llm_adopt", "delay_s")
    adopted = adopted[~np.isnan(adopted)]
    run.ttft_adopted_median_s = float(np.median(adopted)) if len(adopted) else None
    waits = cols.num("oracle_put_wait", "delay_s")
    waits = waits[~np.isnan(waits)]
    run.n_put_waits = cols.count("oracle_put_wait")
    run.put_wait_total_s = float(waits.sum())
    run.put_wait_max_s = float(waits.max()) if len(waits) else None
    run.n_flushes = cols.count("oracle_flush")
    run.n_flushed_items = int(cols.num("oracle_flush", "queue_len").clip(min=0).sum())
    run.n_stale_skipped = cols.count("oracle_stale_skipped")


# -- turns ---------------------------------------------------------------------------------------


def _stream_starts(cols: TraceColumns) -> dict[int, float]:
    """Start time of every LLM stream: the earliest row carrying its id (its ``llm_start``)."""
    streams = cols.num_at(np.arange(cols.n_rows), "stream_id") if cols.n_rows else np.zeros(0, np.int64)
    has = np.flatnonzero(streams >= 0)
    if len(has) == 0:
        return {}
    ids = streams[has]
    t = cols.num_at(has, "t_sim")
    order = np.lexsort((t, ids))
    ids_sorted = ids[order]
    first = np.r_[True, ids_sorted[1:] != ids_sorted[:-1]]
    return dict(zip(ids_sorted[first].tolist(), t[order][first].tolist(), strict=True))


def _turn_metrics(
    cols: TraceColumns,
    turns: Turns,
    speech: Speech,
    speaking_oracle: np.ndarray,
    references: Mapping[int, str],
) -> list[TurnMetrics]:
    onset = onsets(turns, speech)
    pieces = cols.strings_at(speech.rows, "text")
    applied = cols.rows("oracle_append_applied")
    a_stream = cols.num_at(applied, "stream_id")
    a_frame = cols.num_at(applied, "frame")
    a_text = cols.strings_at(applied, "text")
    starts = _stream_starts(cols)
    a_stream_start = np.array([starts.get(s, np.inf) for s in a_stream.tolist()], dtype=float)

    out: list[TurnMetrics] = []
    for u in range(len(turns)):
        tm = TurnMetrics(
            utterance=int(turns.utterance[u]),
            start_s=float(turns.start[u]),
            end_s=float(turns.end[u]),
            responded=not math.isnan(onset[u]),
        )
        reference = references.get(tm.utterance)
        tm.reference_text = reference
        out.append(tm)
        if not tm.responded:
            continue
        tm.onset_s = float(onset[u])
        tm.onset_clipped_s = max(0.0, tm.onset_s)
        idx = np.flatnonzero(speech.turn == u)
        tm.response_start_s = float(speech.t[idx[0]])
        tm.response_end_s = float(speech.t[idx[-1]])
        tm.response_frames = len(idx)
        tm.oracle_coverage = float(speaking_oracle[idx].mean())
        # Bursts are joined with a space so a burst's first piece cannot glue onto the last word.
        resp_pieces: list[str] = []
        for k, i in enumerate(idx.tolist()):
            gap = " " if k and speech.burst[i] != speech.burst[idx[k - 1]] else ""
            resp_pieces.append(gap + (pieces[i] or ""))
        tm.response_text = "".join(resp_pieces).strip()
        words, word_frames = pieces_to_words(resp_pieces, speech.frame[idx].tolist())
        tm.response_words = len(words)
        if reference is not None:
            tm.reply_f1 = word_f1(words, normalise_words(reference))

        # The turn's oracle: streams started in [start_u, next_start_u), applied by the response's end.
        end_frame = int(speech.frame[idx[-1]])
        mine = np.flatnonzero(
            (a_stream_start >= turns.start[u])
            & (a_stream_start < turns.next_start[u])
            & (a_frame <= end_frame)
        )
        if len(mine) == 0:
            tm.words_before_oracle = len(words)
            continue
        first_frame = int(a_frame[mine].min())
        final_stream = int(a_stream[mine].max())
        final_rows = mine[a_stream[mine] == final_stream]
        tm.first_oracle_frame = first_frame
        tm.oracle_stream_id = final_stream
        tm.oracle_text = " ".join(a_text[i] or "" for i in final_rows.tolist()).strip()
        oracle_words = normalise_words(tm.oracle_text)
        tm.oracle_words = len(oracle_words)
        split = int(np.searchsorted(np.asarray(word_frames), first_frame, side="left"))
        before, after = words[:split], words[split:]
        tm.words_before_oracle, tm.words_after_oracle = len(before), len(after)
        tm.f1_before = word_f1(before, oracle_words)
        tm.f1_after = word_f1(after, oracle_words)
        tm.f1_response = word_f1(words, oracle_words)
        tm.edit_before = normalised_edit_distance(before, oracle_words)
        tm.edit_after = normalised_edit_distance(after, oracle_words)
        tm.edit_response = normalised_edit_distance(words, oracle_words)
    return out


def _fill_turn_summary(run: RunMetrics, turns: list[TurnMetrics]) -> None:
    run.n_turns = len(turns)
    run.n_responded = sum(t.responded for t in turns)
    run.turn_over_rate = run.n_responded / run.n_turns if run.n_turns else None
    run.onset_mean_s, run.onset_median_s = _stats([t.onset_s for t in turns])
    run.onset_clipped_mean_s, run.onset_clipped_median_s = _stats([t.onset_clipped_s for t in turns])
    run.n_turns_with_oracle = sum(t.oracle_words > 0 and t.response_words > 0 for t in turns)
    for name in ("f1_before", "f1_after", "f1_response", "edit_before", "edit_after", "edit_response"):
        setattr(run, f"{name}_mean", _stats([getattr(t, name) for t in turns])[0])
    run.n_turns_with_reference = sum(t.reply_f1 is not None for t in turns)
    run.reply_f1_mean = _stats([t.reply_f1 for t in turns])[0]


def _fill_fdb(
    run: RunMetrics,
    turn_metrics: list[TurnMetrics],
    cols: TraceColumns,
    turns: Turns,
    speech: Speech,
    labels: Mapping[int, str | None],
    frame_s: float,
) -> None:
    words, word_turn = fdb.token_words(cols, speech, frame_s)
    per_turn = fdb.fdb_turns(turns, words, word_turn, labels)
    for tm, ft in zip(turn_metrics, per_turn, strict=True):
        tm.silence = ft.label
        tm.fdb_words, tm.fdb_span_s, tm.fdb_took_turn, tm.fdb_latency_s = (
            ft.n_words,
            ft.span_s,
            ft.took_turn,
            ft.latency_s,
        )
    for name, value in fdb.summarise(per_turn).as_row().items():
        setattr(run, name, value)


# -- the real speaker's replies ------------------------------------------------------------------


def reference_replies_from_conversation(
    conversation: Conversation, scenario_dict: Mapping[str, Any]
) -> dict[int, str]:
    """What the front-end's speaker really said after each user utterance, by utterance index.

    Utterances are split exactly as the simulated STT splits them (``user_utterances`` with the
    scenario's ``stt.utterance_gap``), so index ``u`` here is ``user_word.utterance`` in the trace.
    The reply to ``u`` is every word of the front-end speaker that starts in
    ``[start of u's last word, start of utterance u+1)`` — from the last word's start, not its end,
    because real replies often overlap the user's last word (the same anchor the ``hint`` content
    source uses for the "true next reply"). An empty string means the real speaker said nothing.
    ``scenario_dict`` is a resolved scenario (``TraceData.scenario``); missing keys take the
    scenario defaults.
    """
    conv = scenario_dict.get("conversation", {})
    user = conv.get("user_speaker", "A")
    frontend = conv.get("frontend_speaker", "B")
    gap = float(scenario_dict.get("stt", {}).get("utterance_gap", 0.8))
    utterances = user_utterances(conversation.words_of(user), gap)
    replies = conversation.words_of(frontend)
    reply_starts = np.array([w.start for w in replies], dtype=float)
    out: dict[int, str] = {}
    for u, utterance in enumerate(utterances):
        lo = utterance[-1].start
        hi = utterances[u + 1][0].start if u + 1 < len(utterances) else math.inf
        i0, i1 = np.searchsorted(reply_starts, [lo, hi], side="left")
        out[u] = " ".join(w.text for w in replies[int(i0) : int(i1)])
    return out
