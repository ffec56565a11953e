"""Measured latencies read back from a trace, for the empirical delay model.

A trace (simulated, live or imported from KAME logs) records every latency it saw in ``delay_s``;
resampling those lets what was measured once drive later simulations without copying numbers.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from kame_sim.errors import InputError
from kame_sim.trace.reader import read_trace, trace_path

# measure -> the trace event whose delay_s holds it (inter_chunk: llm_chunk rows after each stream's first).
TRACE_MEASURES: dict[str, str] = {
    "ttft": "llm_first_chunk",
    "inter_chunk": "llm_chunk",
    "stt_final": "stt_final",
    "stt_partial": "stt_partial",
}


def trace_samples(path: Path, measure: str) -> tuple[float, ...]:
    """The measured latencies ``measure`` in a trace (run directory or .arrows), in trace order.

    Cached per (file, mtime, size, measure): a sweep validates the same spec once per run, and a
    trace can hold millions of rows; a rewritten file has a new mtime or size and is read again.
    Raises ``ValueError`` with a short reason when unreadable.
    """
    file = trace_path(path)
    try:
        stat = file.stat()
    except OSError as exc:
        raise ValueError(f"cannot read trace {file}: {exc.strerror or exc}") from None
    return _samples(str(file), stat.st_mtime_ns, stat.st_size, measure)


@lru_cache(maxsize=64)
def _samples(file: str, _mtime_ns: int, _size: int, measure: str) -> tuple[float, ...]:
    try:
        table = read_trace(Path(file)).table
    except InputError as exc:
        raise ValueError(f"cannot read trace: {exc.one_line()}") from None
    columns = table.select(["event", "stream_id", "delay_s"]).to_pydict()
    event = TRACE_MEASURES[measure]
    values: list[float] = []
    seen_streams: set[int | None] = set()
    for name, sid, delay in zip(columns["event"], columns["stream_id"], columns["delay_s"], strict=True):
        if name != event:
            continue
        if measure == "inter_chunk" and sid not in seen_streams:
            seen_streams.add(sid)  # a stream's first chunk gap is its TTFT, not an inter-chunk gap
            continue
        if delay is not None and math.isfinite(delay) and delay >= 0.0:
            values.append(float(delay))
    return tuple(values)
