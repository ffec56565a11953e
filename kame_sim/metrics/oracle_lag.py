"""Oracle lag: from an LLM chunk's arrival to the frame in which its first token is fed.

The trace records the chain separately — ``llm_chunk`` (arrival), the queue put
(``oracle_enqueue`` / ``oracle_drop``), ``oracle_append_applied`` (frame, first oracle index,
tokens, late tokens) and ``oracle_token_fed`` (every frame) — so the chain is re-linked here:

1. the k-th chunk of stream s ↔ the k-th *append* put of stream s (every chunk is put at once);
2. the j-th *successful* append put of stream s ↔ the j-th ``oracle_append_applied`` of stream s
   (the queue is FIFO and drained whole, so applications keep put order);
3. an applied append whose first ``n_skipped`` tokens were late first feeds index
   ``i = oracle_index + n_skipped`` at frame ``T = anchor + i``, where ``anchor`` is the frame of
   the last reset applied before it (or, before any reset, of the first non-empty append, which
   acts as an implicit reset — kame-reference.md §2);
4. it is fed only if no reset is applied at a frame ``<= T`` after it (a reset replaces the
   oracle) and the trace reaches frame ``T``.

The rows are linked by order within a stream, not by text, because one stream may send the same
word twice; texts are kept so tests can check the links.

Every chunk ends in exactly one status (:data:`STATUSES`); only ``fed`` chunks have a lag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kame_sim.metrics.events import MISSING_INT, TraceColumns

FED, SKIPPED, DROPPED, SUPERSEDED, PENDING, EMPTY, UNMATCHED, IGNORED, FLUSHED, STALE = range(10)
STATUSES: tuple[str, ...] = (
    "fed",
    "skipped",
    "dropped",
    "superseded",
    "pending",
    "empty",
    "unmatched",
    "ignored",
    "flushed",
    "stale",
)
"""Why a chunk has or has no lag:

* ``fed`` — its first non-late token was fed; lag = t_sim of that frame − chunk arrival;
* ``skipped`` — every token arrived after its slot (``n_skipped == n_tokens``);
* ``dropped`` — the queue was full when it was put;
* ``superseded`` — a reset (a newer stream) was applied before its first token's slot;
* ``pending`` — not applied, or its slot lies after the last frame, when the trace ends;
* ``empty`` — it tokenised to nothing (KAME's append of an empty list does nothing);
* ``unmatched`` — the trace is inconsistent (e.g. the fed row at frame T shows another index);
  0 in every trace kame-sim writes; counted so a bug cannot hide inside another status;
* ``ignored`` — multiplexer: a chunk of a stream older than the adopted one (``llm_chunk`` with
  ``detail = ignored``), never put;
* ``flushed`` — multiplexer: put, then discarded by the queue flush of an adoption;
* ``stale`` — multiplexer: put, then skipped by the audio loop as an older generation's item
  (``oracle_stale_skipped``).
"""


@dataclass(frozen=True)
class ChunkLags:
    """One entry per ``llm_chunk`` row, in trace order."""

    stream_id: np.ndarray  # int64
    t_chunk: np.ndarray  # float64, arrival (s)
    status: np.ndarray  # int8, index into STATUSES
    fed_frame: np.ndarray  # int64, frame T of the first fed token; -1 unless fed
    lag_s: np.ndarray  # float64, NaN unless fed
    chunk_text: list[str | None]
    applied_text: list[str | None]  # text of the matched oracle_append_applied row (None if none)

    def count(self, status: str) -> int:
        """Chunks with ``status`` (one of :data:`STATUSES`)."""
        return int(np.count_nonzero(self.status == STATUSES.index(status)))

    @property
    def lags(self) -> np.ndarray:
        """Lags of the fed chunks (s)."""
        return self.lag_s[self.status == FED]

    @property
    def first_chunk_lags(self) -> np.ndarray:
        """Lags of each stream's *first* chunk, where fed (s).

        Why separately: a later chunk of a stream also waits for the tokens before it (one token
        per 80 ms frame), so its lag grows with its position in the reply; the first chunk's lag
        is only the wait for the next frame boundary plus the START token (<= 2 frames when the
        queue is healthy), which isolates back-end/queue trouble from the oracle's feed rate.
        """
        if len(self.stream_id) == 0:
            return np.zeros(0)
        _, first = np.unique(self.stream_id, return_index=True)
        first = first[self.status[first] == FED]
        return self.lag_s[first]


def _ordinal(streams: np.ndarray) -> np.ndarray:
    """For rows in event order: how many earlier rows have the same stream id (0, 1, 2, ...)."""
    if len(streams) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(streams, kind="stable")
    sorted_streams = streams[order]
    first = np.r_[True, sorted_streams[1:] != sorted_streams[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(len(order)) - group_start
    return out


def _link(left_stream: np.ndarray, right_stream: np.ndarray) -> np.ndarray:
    """For each left row, the right row with the same stream and the same ordinal (-1 if none)."""
    if len(left_stream) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(right_stream) == 0:
        return np.full(len(left_stream), -1, dtype=np.int64)
    shift = np.int64(1) << 32
    left_key = left_stream * shift + _ordinal(left_stream)
    right_key = right_stream * shift + _ordinal(right_stream)
    order = np.argsort(right_key)
    pos = np.searchsorted(right_key[order], left_key)
    pos_clipped = np.minimum(pos, len(order) - 1)
    hit = (pos < len(order)) & (right_key[order][pos_clipped] == left_key)
    return np.where(hit, order[pos_clipped], -1)


def _flushed_put_rows(cols: TraceColumns) -> np.ndarray:
    """Rows of the puts an ``oracle_flush`` discarded: the queue is FIFO and a flush empties it, so
    they are the ``queue_len`` latest successful puts before the flush."""
    flushes = cols.rows("oracle_flush")
    if len(flushes) == 0:
        return np.zeros(0, dtype=np.int64)
    enqueued = cols.rows("oracle_enqueue")
    n_flushed = cols.num_at(flushes, "queue_len").clip(min=0)
    ends = np.searchsorted(enqueued, flushes)
    parts = [enqueued[max(0, e - k) : e] for e, k in zip(ends.tolist(), n_flushed.tolist(), strict=True)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def chunk_lags(cols: TraceColumns) -> ChunkLags:
    """Link every ``llm_chunk`` to its put, application and first fed frame (module docstring)."""
    chunk_rows = cols.rows("llm_chunk")
    chunk_stream = cols.num_at(chunk_rows, "stream_id")
    t_chunk = cols.num_at(chunk_rows, "t_sim")
    n = len(chunk_rows)
    status = np.full(n, UNMATCHED, dtype=np.int8)
    fed_frame = np.full(n, -1, dtype=np.int64)
    lag = np.full(n, np.nan)

    # 1. chunk -> put (enqueue or drop, appends only). Traces without put rows (hand-made or
    #    imported) are read as "every chunk was enqueued".
    #    Ignored chunks (multiplexer: an older stream than the adopted one) are never put.
    ignored = np.array([d == "ignored" for d in cols.strings_at(chunk_rows, "detail")], dtype=bool)
    heard = np.flatnonzero(~ignored)
    status[ignored] = IGNORED
    put_rows = np.sort(np.concatenate([cols.rows("oracle_enqueue"), cols.rows("oracle_drop")]))
    put_rows = put_rows[np.array([d == "append" for d in cols.strings_at(put_rows, "detail")], dtype=bool)]
    applied_rows = cols.rows("oracle_append_applied")
    # A queued append leaves the queue applied or, under the multiplexer, skipped as stale: the
    # drained appends of a stream, in order, are its applied and stale rows merged.
    stale_rows = cols.rows("oracle_stale_skipped")
    drained_rows = np.sort(np.concatenate([applied_rows, stale_rows]))
    drained_applied = np.searchsorted(applied_rows, drained_rows)  # index into applied_rows …
    drained_applied[~np.isin(drained_rows, applied_rows)] = -1  # … or -1: skipped as stale
    drained_stream = cols.num_at(drained_rows, "stream_id")
    chunk_applied = np.full(n, -1, dtype=np.int64)
    if len(put_rows):
        put_stream = cols.num_at(put_rows, "stream_id")
        put_ok = np.isin(put_rows, cols.rows("oracle_enqueue"))
        flushed_put = np.isin(put_rows, _flushed_put_rows(cols))
        chunk_put = np.full(n, -1, dtype=np.int64)
        chunk_put[heard] = _link(chunk_stream[heard], put_stream)
        has_put = chunk_put >= 0
        at = np.maximum(chunk_put, 0)
        dropped = has_put & ~put_ok[at]
        flushed = has_put & put_ok[at] & flushed_put[at]
        ok_index = np.flatnonzero(put_ok & ~flushed_put)  # successful puts that left the queue, in order
        put_drained = np.full(len(put_rows), -1, dtype=np.int64)
        put_drained[ok_index] = _link(put_stream[ok_index], drained_stream)
        chunk_drained = np.where(has_put & ~dropped & ~flushed, put_drained[at], -1)
        status[dropped] = DROPPED
        status[flushed] = FLUSHED
        waiting = ~ignored & ~dropped & ~flushed & (chunk_drained < 0)
        status[waiting] = PENDING  # still queued, or a torn partial trace
    else:
        chunk_drained = np.full(n, -1, dtype=np.int64)
        chunk_drained[heard] = _link(chunk_stream[heard], drained_stream)
        status[~ignored & (chunk_drained < 0)] = PENDING
    linked_drain = chunk_drained >= 0
    chunk_applied[linked_drain] = drained_applied[chunk_drained[linked_drain]]
    chunk_stale = linked_drain & (chunk_applied < 0)
    status[chunk_stale] = STALE

    # 2. applied append -> first fed frame T, anchored at the last reset before it.
    a_frame = cols.num_at(applied_rows, "frame")
    a_index = cols.num_at(applied_rows, "oracle_index")
    a_tokens = cols.num_at(applied_rows, "n_tokens")
    a_skipped = cols.num_at(applied_rows, "n_skipped")
    nonempty = np.flatnonzero(a_tokens > 0)
    implicit_anchor = a_frame[nonempty[0]] if len(nonempty) else MISSING_INT
    reset_rows = cols.rows("oracle_reset_applied")
    never = np.iinfo(np.int64).max
    if len(reset_rows):
        reset_frame = cols.num_at(reset_rows, "frame")
        after = np.searchsorted(reset_rows, applied_rows)  # index of the first reset after each append
        anchor = np.where(after > 0, reset_frame[np.maximum(after - 1, 0)], implicit_anchor)
        next_reset = np.where(
            after < len(reset_rows), reset_frame[np.minimum(after, len(reset_rows) - 1)], never
        )
    else:
        anchor = np.full(len(applied_rows), implicit_anchor, dtype=np.int64)
        next_reset = np.full(len(applied_rows), never, dtype=np.int64)
    first_fed = a_index + a_skipped
    target = anchor + first_fed

    fed_rows = cols.rows("oracle_token_fed")
    fed_frames = cols.num_at(fed_rows, "frame")
    last_frame = int(fed_frames.max()) if len(fed_frames) else -1
    frame_t = np.full(last_frame + 2, np.nan)
    frame_index = np.full(last_frame + 2, -2, dtype=np.int64)  # -2: no fed row for this frame
    if len(fed_rows):
        frame_t[fed_frames] = cols.num_at(fed_rows, "t_sim")
        frame_index[fed_frames] = cols.num_at(fed_rows, "oracle_index")

    linked = np.flatnonzero(chunk_applied >= 0)
    a = chunk_applied[linked]
    s = np.full(len(linked), UNMATCHED, dtype=np.int8)
    empty = a_tokens[a] <= 0
    skipped = ~empty & (a_skipped[a] >= a_tokens[a])
    live = ~empty & ~skipped
    superseded = live & (next_reset[a] <= target[a])
    beyond = live & ~superseded & (target[a] > last_frame)
    candidate = live & ~superseded & ~beyond
    t_clipped = np.clip(target[a], 0, last_frame + 1)
    matches = candidate & (frame_index[t_clipped] == first_fed[a])
    s[empty] = EMPTY
    s[skipped] = SKIPPED
    s[superseded] = SUPERSEDED
    s[beyond] = PENDING
    s[matches] = FED
    status[linked] = s
    fed_frame[linked[matches]] = target[a][matches]
    lag[linked[matches]] = frame_t[t_clipped[matches]] - t_chunk[linked[matches]]

    applied_text_all = cols.strings_at(applied_rows, "text")
    applied_text = [applied_text_all[i] if i >= 0 else None for i in chunk_applied.tolist()]
    return ChunkLags(
        chunk_stream, t_chunk, status, fed_frame, lag, cols.strings_at(chunk_rows, "text"), applied_text
    )
