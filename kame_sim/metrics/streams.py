"""LLM stream life cycles read from a trace: start, first token, adoption, waits, how each one ended.

One definition, shared by the run summary, the per-run metrics, the timeline picture, the Perfetto
export and the streams tables, so that all of them say the same thing about a stream:

* ``status`` — ``done`` (``llm_done``), ``cancelled`` (``llm_cancel``; ``detail`` = why:
  ``superseded`` | ``adoption`` | ``limit`` | ``session_end``, or an importer's text), ``error``
  (``llm_error``; ``detail`` = the fault, e.g. ``http 429: Too Many Requests``) or ``open`` (no end
  row: the trace stopped first, a partial trace; ``end`` is then the trace's last time);
* ``adopted`` — when the multiplexer adopted it (``llm_adopt``), ``ignored`` — its first non-blank
  delta came after a newer stream had been adopted (``llm_first_chunk`` with ``detail = ignored``), so
  nothing it said reached the oracle. The poll loop has neither: its newest stream always speaks;
* ``put_waits`` — the multiplexer's back-pressure: each ``oracle_put_wait`` as (began, ended).

Streams overlap under the multiplexer (and in imported logs); :func:`max_live` and
:func:`overlapping` answer how many were live at once and with whom. A stream is live over
``[start, end)``: a stream cancelled at t and its successor started at t do not overlap.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from kame_sim.trace.reader import TraceData

StreamStatus = Literal["done", "cancelled", "error", "open"]
STREAM_STATUSES: tuple[str, ...] = ("done", "cancelled", "error", "open")
CANCEL_REASONS: tuple[str, ...] = ("superseded", "adoption", "limit", "session_end")
# The cancel reasons each policy can write (docs/policies.md); other texts come from importers.
POLICY_CANCEL_REASONS: dict[str, tuple[str, ...]] = {
    "poll": ("superseded", "session_end"),
    "multiplexer": ("adoption", "limit", "session_end"),
}
POLICIES = ("poll", "multiplexer")
# Rows only the multiplexer writes: how a trace without ``kame_sim.policy`` is recognised.
MULTIPLEXER_EVENTS = (
    "llm_adopt",
    "llm_start_deferred",
    "llm_start_skipped",
    "llm_warmup",
    "oracle_put_wait",
    "oracle_flush",
    "oracle_stale_skipped",
)
STREAM_EVENTS = (
    "llm_start",
    "llm_first_chunk",
    "llm_adopt",
    "llm_chunk",
    "llm_cancel",
    "llm_done",
    "llm_error",
    "oracle_put_wait",
)
_COLUMNS = ["event", "t_sim", "stream_id", "text", "word_count", "delay_s", "t_ref", "detail", "request"]


def trace_policy(trace: TraceData) -> str:
    """The back-end policy of a run: the ``kame_sim.policy`` metadata; a trace without it (schema 1,
    or an import) is a poll-loop one unless it holds rows only the multiplexer writes."""
    policy = trace.metadata.get("kame_sim.policy")
    if policy:
        return policy
    if len(trace.table) and pc.any(pc.is_in(trace.table["event"], pa.array(MULTIPLEXER_EVENTS))).as_py():
        return "multiplexer"
    return "poll"


def reason_label(reason: str) -> str:
    """``session_end`` -> ``session end`` (for people)."""
    return reason.replace("_", " ")


def error_kind(detail: str | None) -> str:
    """The fault's kind: the text before the first ``:`` (``http 429: Too Many…`` -> ``http 429``)."""
    if not detail:
        return "error"
    return detail.split(":", 1)[0].strip() or "error"


@dataclass
class StreamLife:
    """One LLM stream from ``llm_start`` to the row that ended it (see the module docstring)."""

    stream_id: int
    start: float
    end: float
    status: StreamStatus
    reason: str | None  # why it started (llm_start.detail)
    user_words: int | None
    detail: str | None = None  # cancel reason or error text
    first_chunk: float | None = None  # t_sim of its first non-blank delta
    ttft: float | None = None  # time to that delta (llm_first_chunk.delay_s)
    adopted: float | None = None  # multiplexer: when it was adopted
    ignored: bool = False  # multiplexer: its first delta came after a newer stream was adopted
    chunks: list[tuple[float, str]] = field(default_factory=list)
    put_waits: list[tuple[float, float]] = field(default_factory=list)  # (began, ended)
    request: str | None = None
    started_recorded: bool = True  # False: no llm_start row (an imported log), start = first row

    @property
    def duration(self) -> float:
        return round(max(0.0, self.end - self.start), 6)  # trace times are whole microseconds

    @property
    def put_wait_s(self) -> float:
        return sum(b - a for a, b in self.put_waits)

    @property
    def error_kind(self) -> str | None:
        return error_kind(self.detail) if self.status == "error" else None

    @property
    def outcome(self) -> str:
        """One word for how it ended: done, ignored (ran to the end, unheard), superseded, adoption,
        limit, session_end (cancelled, by reason), error or open."""
        if self.status == "cancelled":
            return self.detail or "cancelled"
        if self.status == "done" and self.ignored:
            return "ignored"
        return self.status

    @property
    def ending(self) -> str:
        """How it ended, for people: ``done``, ``cancelled (adoption)``, ``error (http 429)``,
        ``open (trace ended)``; ``, ignored`` is added when nothing it said was used."""
        if self.status == "cancelled":
            text = f"cancelled ({reason_label(self.detail)})" if self.detail else "cancelled"
        elif self.status == "error":
            text = f"error ({error_kind(self.detail)})"
        elif self.status == "open":
            text = "open (trace ended)"
        else:
            text = "done"
        return text + (", ignored" if self.ignored else "")


def stream_lives(trace: TraceData, t_end: float | None = None) -> list[StreamLife]:
    """Every stream of the trace, by stream id (= start order; KAME's generation number).

    ``t_end`` (default: the largest ``t_sim``) is where a stream still open at the end stops.
    A stream with rows but no ``llm_start`` (an imported multiplexer log) starts at its first row.
    """
    table = trace.table
    if t_end is None:
        t_end = float(pc.max(table["t_sim"]).as_py() or 0.0) if len(table) else 0.0
    mask = pc.is_in(table["event"], pa.array(STREAM_EVENTS))
    rows = table.filter(mask).select(_COLUMNS).to_pylist() if len(table) else []
    streams: dict[int, StreamLife] = {}
    for r in rows:
        ev, t, sid = r["event"], r["t_sim"], r["stream_id"]
        if sid is None:
            continue
        if ev == "llm_start":
            streams[sid] = StreamLife(sid, t, t, "open", r["detail"], r["word_count"], request=r["request"])
            continue
        s = streams.get(sid)
        if s is None:  # a stream whose start was not recorded: make it visible anyway
            s = streams[sid] = StreamLife(sid, t, t, "open", None, None, started_recorded=False)
        if ev == "llm_first_chunk":
            if s.first_chunk is None:
                s.first_chunk = t
                if r["delay_s"] is not None:
                    s.ttft = r["delay_s"]
                elif s.started_recorded:
                    s.ttft = t - s.start
                s.ignored = r["detail"] == "ignored"
        elif ev == "llm_adopt":
            s.adopted = t
            s.ignored = False
        elif ev == "llm_chunk":
            s.chunks.append((t, r["text"] or ""))
        elif ev == "oracle_put_wait":
            began = r["t_ref"] if r["t_ref"] is not None else t - (r["delay_s"] or 0.0)
            s.put_waits.append((began, t))
        elif s.status == "open":  # llm_cancel / llm_done / llm_error: the first end row counts
            s.status = {"llm_cancel": "cancelled", "llm_done": "done", "llm_error": "error"}[ev]  # type: ignore[assignment]
            s.detail = r["detail"] if ev != "llm_done" else None
            s.end = t
    for s in streams.values():
        if s.status == "open":
            s.end = max(t_end, s.start)
    return [streams[k] for k in sorted(streams)]


def max_live(streams: list[StreamLife]) -> int:
    """The most streams live at one instant (0 without streams; a stream that ended the instant it
    started counts as live on its own)."""
    best = 1 if streams else 0
    ends: list[float] = []
    for s in sorted(streams, key=lambda s: (s.start, s.stream_id)):
        if s.end <= s.start:
            continue
        while ends and ends[0] <= s.start:
            heapq.heappop(ends)
        heapq.heappush(ends, s.end)
        best = max(best, len(ends))
    return best


def overlapping(streams: list[StreamLife]) -> dict[int, list[int]]:
    """For each stream, the ids of the other streams live at the same time (lives ``[start, end)``
    that intersect; touching is not overlapping)."""
    out: dict[int, list[int]] = {s.stream_id: [] for s in streams}
    ordered = sorted(streams, key=lambda s: (s.start, s.stream_id))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.start >= a.end:
                break
            if b.end > b.start:  # b starts inside a's life and lasts
                out[a.stream_id].append(b.stream_id)
                out[b.stream_id].append(a.stream_id)
    return {k: sorted(v) for k, v in out.items()}
