"""Export a trace as Chrome trace-event JSON, the format Perfetto UI and chrome://tracing open.

The PNG timeline is for a glance; this file is for zooming into one 80 ms frame of a five-minute
run. Timestamps are microseconds of SIMULATED time (``t_sim``), never wall time, so an export is
as reproducible as the trace itself.

Trace-event viewers draw complete events ("X") of one thread as a stack and expect them to nest:
a slice that starts inside another must also end inside it. Overlapping items (STT latencies
that overlap, words) are therefore spread over several threads by :func:`_allocate`, which places
each slice on the first track where it nests properly. LLM streams get one "slot" thread per
concurrently live stream (:func:`_stream_slots`): a stream never nests inside another one, and its
phases (waiting, streaming, put waits) sit inside it on its own slot. Times are rounded to integer
microseconds before any comparison, so a stream cancelled at 3.0 s and its successor started at
3.0 s touch exactly instead of overlapping by a rounding error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kame_sim.report.timeline import Stream, TimelineData, extract_timeline
from kame_sim.trace.reader import TraceData

PID = 1


def us(t: float) -> int:
    """Simulated seconds -> integer microseconds (the trace-event time unit)."""
    return round(t * 1_000_000)


@dataclass
class _Slice:
    """A complete event before it is given a track; ``depth`` breaks ties so parents come first."""

    name: str
    start: int
    end: int
    cat: str
    args: dict[str, Any] = field(default_factory=dict)
    depth: int = 0
    key: Any = None  # lets the caller find which track a slice landed on
    tid: int = 0


def _allocate(slices: list[_Slice]) -> int:
    """Put each slice on the first track where it nests properly; return how many tracks were used.

    Each track keeps a stack of open slices: a slice fits when, after closing every slice that ended
    at or before its start, it lies inside the innermost open one (or the stack is empty). Slices are
    visited by start, longest first, so parents are placed before their children.
    """
    stacks: list[list[int]] = []  # per track: ends of the open slices
    for s in sorted(slices, key=lambda s: (s.start, -s.end, s.depth)):
        for i, stack in enumerate(stacks):
            while stack and stack[-1] <= s.start:
                stack.pop()
            if not stack or s.end <= stack[-1]:
                stack.append(s.end)
                s.tid = i
                break
        else:
            stacks.append([s.end])
            s.tid = len(stacks) - 1
    return max(1, len(stacks))


class _Builder:
    """Collects events and names threads; tids are handed out in display order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.meta: list[dict[str, Any]] = []
        self._next_tid = 1

    def thread(self, name: str) -> int:
        tid = self._next_tid
        self._next_tid += 1
        self.meta.append(
            {"name": "thread_name", "ph": "M", "ts": 0, "pid": PID, "tid": tid, "args": {"name": name}}
        )
        self.meta.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "ts": 0,
                "pid": PID,
                "tid": tid,
                "args": {"sort_index": tid},
            }
        )
        return tid

    def family(self, name: str, slices: list[_Slice]) -> list[int]:
        """Allocate ``slices`` over as many threads as needed ("name", "name 2", ...), emit them."""
        if not slices:
            return []
        n = _allocate(slices)
        tids = [self.thread(name if i == 0 else f"{name} {i + 1}") for i in range(n)]
        for s in slices:
            s.tid = tids[s.tid]
            self.complete(s.name, s.start, s.end, s.tid, s.cat, s.args)
        return tids

    def complete(self, name: str, start: int, end: int, tid: int, cat: str, args: dict[str, Any]) -> None:
        ev = {
            "name": name,
            "cat": cat,
            "ph": "X",
            "ts": start,
            "dur": max(0, end - start),
            "pid": PID,
            "tid": tid,
        }
        if args:
            ev["args"] = args
        self.events.append(ev)

    def instant(self, name: str, t: float, tid: int, cat: str, args: dict[str, Any] | None = None) -> None:
        ev = {"name": name, "cat": cat, "ph": "i", "s": "t", "ts": us(t), "pid": PID, "tid": tid}
        if args:
            ev["args"] = args
        self.events.append(ev)

    def counter(self, name: str, t: float, tid: int, values: dict[str, float]) -> None:
        self.events.append(
            {"name": name, "cat": "oracle", "ph": "C", "ts": us(t), "pid": PID, "tid": tid, "args": values}
        )


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def _end_reason(s: Stream) -> str:
    """The cancel reason, the error's kind, or the status."""
    if s.status == "cancelled":
        return s.detail or "cancelled"
    if s.status == "error":
        return s.error_kind or "error"
    return s.status


def _end_args(s: Stream) -> dict[str, Any]:
    if s.status == "cancelled":
        return {"cancel_reason": s.detail}
    if s.status == "error":
        return {"error_kind": s.error_kind, "error": s.detail}
    return {}


def _stream_slots(streams: list[Stream]) -> list[int]:
    """One slot per concurrently live stream: the first slot whose last stream has ended (touching
    in integer microseconds is not overlapping); as many slots as streams were ever live at once."""
    ends: list[int] = []
    slots = []
    for s in streams:  # sorted by start
        a = us(s.start)
        for i, end in enumerate(ends):
            if end <= a:
                ends[i] = us(s.end)
                slots.append(i)
                break
        else:
            ends.append(us(s.end))
            slots.append(len(ends) - 1)
    return slots


def perfetto_events(data: TimelineData) -> dict[str, Any]:
    """The whole trace-event document for one run (see the module docstring for the layout)."""
    b = _Builder()
    proc = f"kame-sim {data.conversation_id} seed {data.seed} ({data.frontend})"
    b.meta.append({"name": "process_name", "ph": "M", "ts": 0, "pid": PID, "tid": 0, "args": {"name": proc}})

    # user: utterances with their words nested inside
    utter: dict[int, list] = {}
    for w in data.user_words:
        span = utter.setdefault(w.group, [w.start, w.end, []])
        span[0], span[1] = min(span[0], w.start), max(span[1], w.end)
        span[2].append(w.text)
    slices = [
        _Slice(f"utterance {u}", us(a), us(b_), "user", {"text": " ".join(words)}, depth=0)
        for u, (a, b_, words) in sorted(utter.items())
    ]
    slices += [
        _Slice(
            w.text,
            us(w.start),
            us(w.end),
            "user",
            {"utterance": w.group, "start_s": w.start, "end_s": w.end},
            1,
        )
        for w in data.user_words
    ]
    b.family("user speech", slices)

    # STT: arrivals as instants, finals' latency (speech end -> arrival) as slices
    if data.stt:
        tid = b.thread("STT results")
        for s in data.stt:
            args = {"text": s.text, "utterance": s.utterance, "speech_t_s": _r(s.speech_t)}
            if s.speech_t is not None:
                args["latency_s"] = _r(s.t - s.speech_t)
            b.instant("final" if s.final else "partial", s.t, tid, "stt", args)
    b.family(
        "STT final latency",
        [
            _Slice(
                f"final u{s.utterance}",
                us(s.speech_t),
                us(s.t),
                "stt",
                {"text": s.text, "latency_s": _r(s.t - s.speech_t)},
            )
            for s in data.stt
            if s.final and s.speech_t is not None
        ],
    )

    # LLM: the policy's decisions, then one slot per concurrently live stream (a stream and its
    # phases always on one slot, never nested in another stream)
    if data.streams or data.decisions:
        tid = b.thread("stream manager")
        for s in data.streams:
            b.instant(
                f"start #{s.stream_id}", s.start, tid, "llm", {"reason": s.reason, "user_words": s.user_words}
            )
            if s.adopted is not None:
                cancelled = [
                    o.stream_id
                    for o in data.streams
                    if o.status == "cancelled" and o.detail == "adoption" and us(o.end) == us(s.adopted)
                ]
                flushed = sum(int(q.detail or 0) for q in data.flushes if us(q.t) == us(s.adopted))
                args = {"ttft_s": _r(s.ttft), "cancelled": cancelled, "flushed_items": flushed}
                b.instant(f"adopt #{s.stream_id}", s.adopted, tid, "llm", args)
            if s.status in ("cancelled", "error"):
                what = "cancel" if s.status == "cancelled" else "error"
                b.instant(f"{what} #{s.stream_id} ({_end_reason(s)})", s.end, tid, "llm", _end_args(s))
        for e in data.decisions:
            if e.kind == "rate_limited":
                b.instant("start refused (rate limit)", e.t, tid, "llm", {"reason": e.detail})
            elif e.kind == "deferred":
                b.instant(
                    "start deferred", e.t, tid, "llm", {"reason": e.detail, "trailing_start_s": _r(e.t_ref)}
                )
            elif e.kind == "skipped":
                b.instant("start skipped", e.t, tid, "llm", {"reason": e.detail})
            elif e.kind == "warmup":
                b.instant("warm-up request", e.t, tid, "llm", {"outcome": e.detail})
    slots = _stream_slots(data.streams)
    slot_tids = [
        b.thread("LLM slot" if i == 0 else f"LLM slot {i + 1}") for i in range(max(slots, default=-1) + 1)
    ]
    for s, slot in zip(data.streams, slots, strict=True):
        tid = slot_tids[slot]
        a, e = us(s.start), us(s.end)
        args = {
            "stream_id": s.stream_id,
            "status": s.status,
            "ended": s.ending,
            **_end_args(s),
            "reason": s.reason,
            "user_words": s.user_words,
            "chunks": len(s.chunks),
            "ttft_s": _r(s.ttft),
            "adopted_at_s": _r(s.adopted),
            "ignored": s.ignored,
            "put_waits": len(s.put_waits),
            "put_wait_s": _r(s.put_wait_s),
            "text": " ".join(text for _, text in s.chunks),
        }
        b.complete(f"stream #{s.stream_id} [{s.ending}]", a, e, tid, "llm_stream", args)
        if s.first_chunk is not None:
            fc = min(max(us(s.first_chunk), a), e)
            b.complete("waiting for first token", a, fc, tid, "llm", {})
            b.complete("streaming (ignored)" if s.ignored else "streaming", fc, e, tid, "llm", {})
            for w0, w1 in s.put_waits:  # inside "streaming": a put happens after a chunk arrived
                lo, hi = min(max(us(w0), fc), e), min(max(us(w1), fc), e)
                b.complete("put wait (queue full)", lo, hi, tid, "oracle_wait", {"wait_s": _r(w1 - w0)})
        else:
            b.complete("no text" if s.status == "done" else "waiting for first token", a, e, tid, "llm", {})
        if s.first_chunk is not None:
            b.instant("first chunk", s.first_chunk, tid, "llm", {"ttft_s": _r(s.ttft), "ignored": s.ignored})
        if s.adopted is not None:
            b.instant("adopted", s.adopted, tid, "llm", {"ttft_s": _r(s.ttft)})
        for t, text in s.chunks:
            b.instant(f"chunk {text!r}", t, tid, "llm", {"text": text})
        if s.status != "done":
            b.instant(s.ending, s.end, tid, "llm", _end_args(s))

    # oracle: queue puts and drops with a queue-length counter, applications, what was fed
    if data.queue:
        tid = b.thread("oracle queue")
        for q in data.queue:
            if q.kind == "flush":
                args = {"stream_id": q.stream_id, "items_discarded": int(q.detail or 0)}
                b.instant(f"FLUSH {q.detail} items (adoption of #{q.stream_id})", q.t, tid, "oracle", args)
            elif q.kind != "drain":
                name = f"{'enqueue' if q.kind == 'enqueue' else 'DROP'} {q.detail or ''}".strip()
                b.instant(name, q.t, tid, "oracle", {"stream_id": q.stream_id, "queue_len": q.queue_len})
            b.counter("oracle queue length", q.t, tid, {"items": q.queue_len})
    stale = [e for e in data.decisions if e.kind == "stale"]
    if data.resets or data.oracle_chunks or stale:
        tid = b.thread("oracle applied")
        for e in stale:
            b.instant(f"stale item of #{e.stream_id} skipped", e.t, tid, "oracle", {"text": e.detail})
        for r in data.resets:
            wait = _r(r.t - r.enqueued_t) if r.enqueued_t is not None else None
            b.instant(f"reset → #{r.stream_id}", r.t, tid, "oracle", {"frame": r.frame, "queue_wait_s": wait})
        for c in data.oracle_chunks:
            args = {
                "stream_id": c.stream_id,
                "text": c.text,
                "n_tokens": c.n_tokens,
                "n_skipped": c.n_skipped,
                "first_index": c.first_index,
            }
            b.instant(
                f"append {c.text!r}" + (f" ({c.n_skipped} late)" if c.n_skipped else ""),
                c.applied_t,
                tid,
                "oracle",
                args,
            )
    fs = data.frame_s
    slices = []
    # one parent per oracle (START .. its last fed token), the START token and fed chunks inside it
    runs: list[list] = []  # [start_t, end_t, stream_id]
    starts = [f for f in data.oracle_frames if f.kind == "start"]
    reset_stream = {r.frame: r.stream_id for r in data.resets}
    for f in starts:
        runs.append([f.t, f.t + fs, reset_stream.get(f.frame)])  # no reset row: an implicit reset
        slices.append(_Slice("START", us(f.t), us(f.t + fs), "oracle", {"frame": f.frame}, 1))
    fed = [c for c in data.oracle_chunks if c.fed_start is not None and c.fed_end is not None]
    for c in fed:
        run = next((r for r in reversed(runs) if r[0] <= c.fed_start), None)  # type: ignore[operator]
        if run is not None:
            run[1] = max(run[1], c.fed_end)
            run[2] = c.stream_id if run[2] is None else run[2]
        slices.append(
            _Slice(
                c.text.strip() or repr(c.text),
                us(c.fed_start),
                us(c.fed_end),
                "oracle",  # type: ignore[arg-type]
                {"stream_id": c.stream_id, "n_tokens": c.n_tokens, "n_skipped": c.n_skipped},
                1,
            )
        )
    slices += [_Slice(f"oracle #{sid}", us(a), us(e), "oracle", {"stream_id": sid}, 0) for a, e, sid in runs]
    b.family("oracle fed", slices)

    # front-end: speaking bursts with their words nested inside
    bursts: dict[int, list[float]] = {}
    for w in data.frontend_words:
        span = bursts.setdefault(w.group, [w.start, w.end])
        span[0], span[1] = min(span[0], w.start), max(span[1], w.end)
    slices = [_Slice("speaking", us(a), us(e), "frontend", {}, 0) for a, e in bursts.values()]
    slices += [
        _Slice(w.text, us(w.start), us(w.end), "frontend", {"start_s": _r(w.start)}, 1)
        for w in data.frontend_words
    ]
    tids = b.family("front-end words", slices)
    if data.late_frames:
        tid = tids[0] if tids else b.thread("front-end words")
        for t in data.late_frames:
            b.instant("late frame", t, tid, "frontend")

    events = sorted(b.events, key=lambda e: (e["ts"], -e.get("dur", 0)))
    return {
        "traceEvents": b.meta + events,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": "kame-sim",
            "time": "simulated seconds x 1e6 (not wall time)",
            "conversation_id": data.conversation_id,
            "seed": data.seed,
            "frontend": data.frontend,
            "time_coupling": data.time_coupling,
            "complete": data.complete,
            "policy": data.policy,
        },
    }


def export_perfetto(trace: TraceData, path: Path) -> Path:
    """Write ``trace`` as trace-event JSON at ``path`` (open it in ui.perfetto.dev); return ``path``."""
    doc = perfetto_events(extract_timeline(trace))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return path
