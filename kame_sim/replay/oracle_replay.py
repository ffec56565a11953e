"""Replay recorded oracle items: drive a front-end with exactly the oracle a trace recorded.

Why: to compare front-ends (or front-end settings) on the SAME back-end behaviour, or to re-drive
a front-end with what a live KAME session's LLM really produced (an imported log trace), the
back-end must be taken out of the loop. The replay process puts each recorded ``oracle_enqueue``
item into the oracle queue at its recorded simulated time; the frame loop then drains the queue at
the next frame boundary exactly as in a normal run, so a replayed simulated trace feeds the same
token, at the same oracle index, in every frame (tests/test_oracle_replay.py proves it).

Only *enqueued* items are replayed: dropped ones (``oracle_drop``) never reached the front-end.
For an imported KAME log the recorded time is when KAME's audio loop applied the item, which is at
most one loop iteration before the frame it took effect at; see docs/import-and-replay.md.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import simpy

from kame_sim.errors import InputError
from kame_sim.trace.reader import TraceData, read_trace


class RecordedOracleItem(NamedTuple):
    """One oracle queue item as a trace recorded it."""

    t: float
    action: str  # "reset" | "append" | "flush"
    text: str
    stream_id: int


def recorded_oracle_items(trace: TraceData) -> list[RecordedOracleItem]:
    """Every recorded put (``oracle_enqueue`` and ``oracle_drop`` rows) and flush, in trace order.

    Dropped puts are replayed too: the replaying scenario's own queue decides again whether they
    fit, so replaying into a larger queue does not silently lose what the back-end sent. An append
    recorded without a stream (an imported log whose first line is not a reset) gets
    stream 0; the oracle treats an append with no oracle yet as a reset, as KAME does.

    A multiplexer trace enqueues appends only (its audio loop resets the oracle when a newer
    generation's first item arrives) and flushes the queue at adoptions: the items returned say
    so explicitly (a ``reset`` before each newer generation's first append, a ``flush`` where the
    queue was flushed), so a replay under either policy feeds the recorded oracle.
    """
    table = trace.table
    multiplexed = trace.metadata.get("kame_sim.policy") == "multiplexer"
    wanted = pa.array(["oracle_enqueue", "oracle_drop", "oracle_flush"])
    rows = table.filter(pc.is_in(table.column("event"), wanted))
    items: list[RecordedOracleItem] = []
    columns = rows.select(["event", "t_sim", "detail", "text", "stream_id"]).to_pydict()
    generation = 0
    names = ("event", "t_sim", "detail", "text", "stream_id")
    for event, t, action, text, sid in zip(*(columns[name] for name in names), strict=True):
        sid = int(sid or 0)
        if event == "oracle_flush":
            items.append(RecordedOracleItem(float(t), "flush", "", sid))
            continue
        if action not in ("reset", "append"):
            raise InputError(trace.path, "oracle_enqueue.detail", f"expected reset or append, got {action!r}")
        if multiplexed and action == "append" and sid > generation:
            items.append(RecordedOracleItem(float(t), "reset", "", sid))
        if action == "reset" or multiplexed:
            generation = max(generation, sid)
        items.append(RecordedOracleItem(float(t), action, text or "", sid))
    return items


def load_oracle_schedule(path: Path, source: str = "replay.oracle_from") -> list[RecordedOracleItem]:
    """Read a trace (run directory or .arrows) and return its recorded oracle items.

    A trace without any oracle item is an error: replaying it would silently run with no oracle.
    """
    items = recorded_oracle_items(read_trace(path))
    if not items:
        raise InputError(path, source, "the trace has no oracle_enqueue rows to replay")
    return items


def oracle_replay_process(
    env: simpy.Environment,
    items: Sequence[RecordedOracleItem],
    enqueue: Callable[[str, str, int], object],
    end_tick: int,
    to_ticks: Callable[[float], int],
) -> Generator[simpy.Event, Any, None]:
    """SimPy process: call ``enqueue(action, text, stream_id)`` at each item's recorded time.

    Recorded times are seconds (the trace's ``t_sim``); ``to_ticks`` maps them back to the
    environment's integer clock, which recovers a simulated trace's ticks exactly. Items at the
    same instant are enqueued back to back without yielding, so they reach the queue in their
    recorded order before the frame loop's drain, as they did in the original run.
    """
    for item in items:
        at = to_ticks(item.t)
        if at >= end_tick:
            return
        if at > env.now:
            yield env.timeout(at - env.now)
        enqueue(item.action, item.text, item.stream_id)
