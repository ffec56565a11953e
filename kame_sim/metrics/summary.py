"""A run's summary, computed from the trace alone (so ``run`` and ``trace show`` agree).

Response onset for user turn ``u``: the start of the first front-end speaking burst that begins in
``[start_u, start_{u+1})`` minus the end of the turn's last word (negative = it started before the
user finished; None = no response before the next turn). Turns and bursts are defined once, in
:mod:`kame_sim.metrics.turns` (docs/metrics.md), and shared with the metrics.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kame_sim.metrics.events import TraceColumns
from kame_sim.metrics.streams import (
    POLICY_CANCEL_REASONS,
    StreamLife,
    max_live,
    overlapping,
    reason_label,
    stream_lives,
    trace_policy,
)
from kame_sim.metrics.turns import frontend_speech, onsets, user_turns
from kame_sim.trace.reader import TraceData


@dataclass
class TurnOnset:
    """One user turn and the front-end's response onset to it."""

    utterance: int
    start: float
    end: float
    onset: float | None


@dataclass
class TraceSummary:
    """Counts and timings a person wants at a glance (both back-end policies).

    Stream counts come from :func:`kame_sim.metrics.streams.stream_lives`, so the summary, the
    streams tables, the timeline and the Perfetto export agree on how every stream ended.
    TTFT figures: ``ttft_median``/``ttft_max`` over every stream that produced a first non-blank
    token (``ttft_n`` of them; ignored ones included), ``ttft_adopted_*`` over the streams the
    multiplexer adopted; ``no_token_*`` are the streams that ended (or the trace ended) before a first
    token, with the longest such wait, which no TTFT figure can show.
    """

    conversation_id: str
    seed: str
    complete: bool
    simulated_seconds: float
    frames: int
    late_frames: int
    user_words: int
    stt_partials: int
    stt_finals: int
    llm_started: int
    llm_cancelled: int
    llm_rate_limited: int
    llm_completed: int
    ttft_median: float | None
    oracle_enqueued: int
    oracle_dropped: int
    oracle_resets_applied: int
    oracle_tokens_fed: int
    oracle_tokens_skipped: int
    frontend_tokens: int
    turns: list[TurnOnset] = field(default_factory=list)
    # the back-end policy ("poll" | "multiplexer"); policy_recorded False: inferred (v1 trace, import)
    policy: str = "poll"
    policy_recorded: bool = True
    llm_errored: int = 0
    llm_open: int = 0
    cancel_reasons: dict[str, int] = field(default_factory=dict)  # reason -> streams
    error_kinds: dict[str, int] = field(default_factory=dict)  # fault kind -> streams
    max_live_streams: int = 0
    llm_adopted: int = 0
    llm_ignored: int = 0
    llm_start_deferred: int = 0
    llm_start_skipped: int = 0
    ttft_n: int = 0
    ttft_max: float | None = None
    ttft_max_stream: int | None = None
    ttft_adopted_median: float | None = None
    ttft_adopted_n: int = 0
    ttft_adopted_max: float | None = None
    no_token_n: int = 0
    no_token_longest: float | None = None
    no_token_longest_stream: int | None = None
    oracle_put_waits: int = 0
    oracle_put_wait_s: float = 0.0
    oracle_put_wait_max_s: float | None = None
    oracle_flushes: int = 0
    oracle_flushed_items: int = 0
    oracle_stale_skipped: int = 0
    warmup: str | None = None
    streams: list[StreamLife] = field(default_factory=list, repr=False)

    @property
    def onset_median(self) -> float | None:
        values = [t.onset for t in self.turns if t.onset is not None]
        return statistics.median(values) if values else None

    @property
    def multiplexer(self) -> bool:
        return self.policy == "multiplexer"


def _count(events: pa.ChunkedArray, name: str) -> int:
    return int(pc.sum(pc.equal(events, name)).as_py() or 0)


def _rows(table: pa.Table, event: str, columns: list[str]) -> list[dict]:
    return table.filter(pc.equal(table["event"], event)).select(columns).to_pylist()


def response_onsets(table: pa.Table) -> list[TurnOnset]:
    """Per user turn: the onset of the front-end's response (see :mod:`kame_sim.metrics.turns`)."""
    cols = TraceColumns(table)
    turns = user_turns(cols)
    values = onsets(turns, frontend_speech(cols, turns))
    return [
        TurnOnset(int(u), float(start), float(end), None if math.isnan(onset) else float(onset))
        for u, start, end, onset in zip(turns.utterance, turns.start, turns.end, values, strict=True)
    ]


def summarize(trace: TraceData) -> TraceSummary:
    """Summarise a (possibly partial) trace, of either policy (v1 traces: the poll loop)."""
    table = trace.table
    ev = table["event"]
    fed = table.filter(pc.equal(ev, "oracle_token_fed"))
    frames = table.filter(pc.equal(ev, "frame"))
    fe = table.filter(pc.equal(ev, "frontend_token"))
    applied = table.filter(pc.equal(ev, "oracle_append_applied"))
    t_end = float(pc.max(table["t_sim"]).as_py() or 0.0) if len(table) else 0.0
    lives = stream_lives(trace, t_end)
    policy = trace_policy(trace)
    status = Counter(s.status for s in lives)
    cancel_reasons = dict.fromkeys(POLICY_CANCEL_REASONS.get(policy, ()), 0)
    cancel_reasons.update(Counter(s.detail or "?" for s in lives if s.status == "cancelled"))
    error_kinds = dict(Counter(s.error_kind or "error" for s in lives if s.status == "error"))
    with_token = [s for s in lives if s.ttft is not None]
    ttfts = [s.ttft for s in with_token]
    adopted = [r["delay_s"] for r in _rows(table, "llm_adopt", ["delay_s"]) if r["delay_s"] is not None]
    slowest = max(with_token, key=lambda s: (s.ttft, -s.stream_id), default=None)
    no_token = [s for s in lives if s.first_chunk is None]
    longest = max(no_token, key=lambda s: (s.duration, -s.stream_id), default=None)
    waits = _rows(table, "oracle_put_wait", ["delay_s"])
    wait_s = [r["delay_s"] or 0.0 for r in waits]
    flushes = _rows(table, "oracle_flush", ["queue_len"])
    warmup = _rows(table, "llm_warmup", ["detail"])
    return TraceSummary(
        conversation_id=trace.metadata.get("kame_sim.conversation_id", "?"),
        seed=trace.metadata.get("kame_sim.seed", "?"),
        complete=trace.complete,
        simulated_seconds=t_end,
        frames=len(frames),
        late_frames=int(pc.sum(pc.equal(frames["detail"], "late")).as_py() or 0),
        user_words=_count(ev, "user_word"),
        stt_partials=_count(ev, "stt_partial"),
        stt_finals=_count(ev, "stt_final"),
        llm_started=_count(ev, "llm_start"),
        llm_cancelled=status["cancelled"],
        llm_rate_limited=_count(ev, "llm_rate_limited"),
        llm_completed=status["done"],
        ttft_median=statistics.median(ttfts) if ttfts else None,
        oracle_enqueued=_count(ev, "oracle_enqueue"),
        oracle_dropped=_count(ev, "oracle_drop"),
        oracle_resets_applied=_count(ev, "oracle_reset_applied"),
        oracle_tokens_fed=int(pc.sum(pc.is_valid(fed["oracle_index"])).as_py() or 0),
        oracle_tokens_skipped=int(pc.sum(applied["n_skipped"]).as_py() or 0),
        frontend_tokens=int(pc.sum(pc.is_valid(fe["text"])).as_py() or 0),
        turns=response_onsets(table),
        policy=policy,
        policy_recorded="kame_sim.policy" in trace.metadata,
        llm_errored=status["error"],
        llm_open=status["open"],
        cancel_reasons=cancel_reasons,
        error_kinds=error_kinds,
        max_live_streams=max_live(lives),
        llm_adopted=sum(s.adopted is not None for s in lives),
        llm_ignored=sum(s.ignored for s in lives),
        llm_start_deferred=_count(ev, "llm_start_deferred"),
        llm_start_skipped=_count(ev, "llm_start_skipped"),
        ttft_n=len(ttfts),
        ttft_max=slowest.ttft if slowest else None,
        ttft_max_stream=slowest.stream_id if slowest else None,
        ttft_adopted_median=statistics.median(adopted) if adopted else None,
        ttft_adopted_n=len(adopted),
        ttft_adopted_max=max(adopted) if adopted else None,
        no_token_n=len(no_token),
        no_token_longest=longest.duration if longest else None,
        no_token_longest_stream=longest.stream_id if longest else None,
        oracle_put_waits=len(waits),
        oracle_put_wait_s=float(sum(wait_s)),
        oracle_put_wait_max_s=max(wait_s) if wait_s else None,
        oracle_flushes=len(flushes),
        oracle_flushed_items=sum(r["queue_len"] or 0 for r in flushes),
        oracle_stale_skipped=_count(ev, "oracle_stale_skipped"),
        warmup=warmup[0]["detail"] if warmup else None,
        streams=lives,
    )


# -- for people: the same facts in `kame-sim run`, `trace show` and the HTML report -----------------

POLICY_NAMES = {
    "poll": "poll loop (KAME's README commit)",
    "multiplexer": "stream multiplexer (KAME main)",
}


def _sec(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f} s" if signed else f"{value:.3f} s"


def _counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{reason_label(k)} {v}" for k, v in counts.items()) or "—"


def summary_facts(summary: TraceSummary) -> list[tuple[str, str | int]]:
    """The summary as (what, value) rows; rows of the other policy are left out."""
    s = summary
    mux = s.multiplexer
    policy = POLICY_NAMES.get(s.policy, s.policy)
    if not s.policy_recorded:
        policy += " (not recorded in the trace: inferred)"
    facts: list[tuple[str, str | int]] = [
        ("conversation / seed", f"{s.conversation_id} / {s.seed}"),
        ("trace", "complete" if s.complete else "PARTIAL (no run_end row)"),
        ("back-end policy", policy),
        ("simulated time", f"{s.simulated_seconds:.2f} s"),
        ("frames (late)", f"{s.frames} ({s.late_frames})"),
        ("user words", s.user_words),
        ("STT partials / finals", f"{s.stt_partials} / {s.stt_finals}"),
        ("LLM streams started", s.llm_started),
    ]
    if mux:
        facts += [
            ("  starts deferred / skipped", f"{s.llm_start_deferred} / {s.llm_start_skipped}"),
            ("  adopted / ignored", f"{s.llm_adopted} / {s.llm_ignored}"),
        ]
    else:
        facts.append(("  refused by rate limit", s.llm_rate_limited))
    facts += [
        ("  most live at once", s.max_live_streams),
        (
            "  ended: done / cancelled / error / open",
            f"{s.llm_completed} / {s.llm_cancelled} / {s.llm_errored} / {s.llm_open}",
        ),
        ("  cancelled by", _counts(s.cancel_reasons)),
        ("  errors", f"{s.llm_errored}" + (f" ({_counts(s.error_kinds)})" if s.error_kinds else "")),
        (f"  TTFT median, streams with a 1st token (n={s.ttft_n})", _sec(s.ttft_median)),
    ]
    if mux:
        facts.append((f"  TTFT median, adopted streams (n={s.ttft_adopted_n})", _sec(s.ttft_adopted_median)))
    facts.append(
        (
            "  TTFT max" + (f" (stream #{s.ttft_max_stream})" if s.ttft_max_stream is not None else ""),
            _sec(s.ttft_max),
        )
    )
    longest = (
        "—" if s.no_token_longest is None else f"{s.no_token_longest:.3f} s (#{s.no_token_longest_stream})"
    )
    facts.append((f"  no 1st token (n={s.no_token_n}), longest wait", longest))
    if mux:
        wait_max = "" if s.oracle_put_wait_max_s is None else f", longest {s.oracle_put_wait_max_s:.3f} s"
        facts += [
            ("oracle items enqueued", s.oracle_enqueued),
            (
                "  puts that waited (total wait)",
                f"{s.oracle_put_waits} ({s.oracle_put_wait_s:.3f} s{wait_max})",
            ),
            ("  flushes at adoption (items discarded)", f"{s.oracle_flushes} ({s.oracle_flushed_items})"),
            ("  stale items skipped", s.oracle_stale_skipped),
        ]
    else:
        facts.append(("oracle items enqueued / dropped", f"{s.oracle_enqueued} / {s.oracle_dropped}"))
    facts += [
        ("oracle resets applied", s.oracle_resets_applied),
        ("oracle tokens fed / skipped (late)", f"{s.oracle_tokens_fed} / {s.oracle_tokens_skipped}"),
        ("front-end text tokens", s.frontend_tokens),
        ("median response onset", _sec(s.onset_median, signed=True)),
    ]
    return facts


def stream_rows(summary: TraceSummary, text_limit: int = 90) -> list[dict[str, Any]]:
    """One row per LLM stream: when it started and why, TTFT, adoption, which streams it overlapped,
    when and how it ended (``error (http 429)``, ``cancelled (adoption)``, ...)."""
    overlaps = overlapping(summary.streams)
    mux = summary.multiplexer
    out = []
    for s in summary.streams:
        others = overlaps.get(s.stream_id, [])
        shown = " ".join(f"#{o}" for o in others[:6]) + (f" +{len(others) - 6}" if len(others) > 6 else "")
        row: dict[str, Any] = {
            "stream": s.stream_id,
            "reason": s.reason,
            "user words": s.user_words,
            "start (s)": round(s.start, 3),
            "TTFT (s)": None if s.ttft is None else round(s.ttft, 3),
        }
        if mux:
            row["adopted (s)"] = (
                round(s.adopted, 3) if s.adopted is not None else ("ignored" if s.ignored else None)
            )
            row["put waits (s)"] = round(s.put_wait_s, 3) if s.put_waits else None
        row.update(
            {
                "end (s)": round(s.end, 3),
                "ended": s.ending,
                "error": s.detail if s.status == "error" else None,
                "live with": shown or None,
                "chunks": len(s.chunks),
                "text": _short(" ".join(text for _, text in s.chunks), text_limit),
            }
        )
        if mux:
            del row["user words"]  # the multiplexer counts no words
        out.append(row)
    return out


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
