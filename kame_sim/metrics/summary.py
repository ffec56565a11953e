"""A run's summary, computed from the trace alone (so ``run`` and ``trace show`` agree).

Response onset for user turn ``u``: the start of the first front-end speaking burst that begins in
``[start_u, start_{u+1})`` minus the end of the turn's last word (negative = it started before the
user finished; None = no response before the next turn). Turns and bursts are defined once, in
:mod:`kame_sim.metrics.turns` (docs/metrics.md), and shared with the metrics.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from kame_sim.metrics.events import TraceColumns
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
    """Counts and timings a person wants at a glance."""

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

    @property
    def onset_median(self) -> float | None:
        values = [t.onset for t in self.turns if t.onset is not None]
        return statistics.median(values) if values else None


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
    """Summarise a (possibly partial) trace."""
    table = trace.table
    ev = table["event"]
    fed = table.filter(pc.equal(ev, "oracle_token_fed"))
    ttfts = [r["delay_s"] for r in _rows(table, "llm_first_chunk", ["delay_s"])]
    frames = table.filter(pc.equal(ev, "frame"))
    fe = table.filter(pc.equal(ev, "frontend_token"))
    applied = table.filter(pc.equal(ev, "oracle_append_applied"))
    return TraceSummary(
        conversation_id=trace.metadata.get("kame_sim.conversation_id", "?"),
        seed=trace.metadata.get("kame_sim.seed", "?"),
        complete=trace.complete,
        simulated_seconds=float(pc.max(table["t_sim"]).as_py() or 0.0) if len(table) else 0.0,
        frames=len(frames),
        late_frames=int(pc.sum(pc.equal(frames["detail"], "late")).as_py() or 0),
        user_words=_count(ev, "user_word"),
        stt_partials=_count(ev, "stt_partial"),
        stt_finals=_count(ev, "stt_final"),
        llm_started=_count(ev, "llm_start"),
        llm_cancelled=_count(ev, "llm_cancel"),
        llm_rate_limited=_count(ev, "llm_rate_limited"),
        llm_completed=_count(ev, "llm_done"),
        ttft_median=statistics.median(ttfts) if ttfts else None,
        oracle_enqueued=_count(ev, "oracle_enqueue"),
        oracle_dropped=_count(ev, "oracle_drop"),
        oracle_resets_applied=_count(ev, "oracle_reset_applied"),
        oracle_tokens_fed=int(pc.sum(pc.is_valid(fed["oracle_index"])).as_py() or 0),
        oracle_tokens_skipped=int(pc.sum(applied["n_skipped"]).as_py() or 0),
        frontend_tokens=int(pc.sum(pc.is_valid(fe["text"])).as_py() or 0),
        turns=response_onsets(table),
    )
