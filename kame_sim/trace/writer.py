"""Streaming trace writer: rows are buffered in column lists and flushed as Arrow record batches.

The file is an Arrow IPC *stream*: every flushed batch is readable even if the process dies
later, so a crashed or killed run leaves a readable partial trace (it lacks the ``run_end`` row).
Batches are flushed every ``batch_rows`` rows and at least every ``flush_seconds`` of wall time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from kame_sim.trace.schema import COLUMNS, trace_schema


class TraceWriter:
    """Append rows with :meth:`row`; call :meth:`close` (or use as a context manager)."""

    def __init__(
        self,
        path: Path,
        metadata: dict[str, str],
        batch_rows: int = 8192,
        flush_seconds: float = 1.0,
    ) -> None:
        self.path = path
        self.schema = trace_schema(metadata)
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(
            self._sink, self.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")
        )
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._last_flush = time.perf_counter()
        self._t0 = time.perf_counter()
        self._columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        self._seq = 0
        self.rows_written = 0
        # pyarrow writes the schema lazily; an empty batch puts it (and the run's metadata) on disk
        # now, so a run killed before its first flush still leaves a readable (empty) trace.
        self._writer.write_batch(pa.RecordBatch.from_pylist([], schema=self.schema))
        self._sink.flush()
        # Bound appenders: the per-frame hot path appends to these lists directly.
        c = self._columns
        self._append = tuple(c[name].append for name in COLUMNS[1:])
        self._seq_append = c["seq"].append
        self.closed = False

    def row(
        self,
        event: str,
        t_sim: float,
        frame: int | None = None,
        stream_id: int | None = None,
        utterance: int | None = None,
        text: str | None = None,
        token_id: int | None = None,
        oracle_index: int | None = None,
        n_tokens: int | None = None,
        n_skipped: int | None = None,
        word_count: int | None = None,
        queue_len: int | None = None,
        delay_s: float | None = None,
        t_ref: float | None = None,
        detail: str | None = None,
        step_wall_s: float | None = None,
        request: str | None = None,
    ) -> None:
        """Record one event (argument order = column order after ``seq``; wall_s is measured here)."""
        self._seq_append(self._seq)
        self._seq += 1
        a = self._append
        now = time.perf_counter()
        a[0](event)
        a[1](t_sim)
        a[2](frame)
        a[3](stream_id)
        a[4](utterance)
        a[5](text)
        a[6](token_id)
        a[7](oracle_index)
        a[8](n_tokens)
        a[9](n_skipped)
        a[10](word_count)
        a[11](queue_len)
        a[12](delay_s)
        a[13](t_ref)
        a[14](detail)
        a[15](request)
        a[16](now - self._t0)
        a[17](step_wall_s)
        if self._seq - self.rows_written >= self._batch_rows or now - self._last_flush >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one record batch (no-op when empty)."""
        n = self._seq - self.rows_written
        if n == 0 or self.closed:
            return
        arrays = [pa.array(self._columns[f.name], type=f.type) for f in self.schema]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self._sink.flush()
        for values in self._columns.values():
            values.clear()
        self.rows_written = self._seq
        self._last_flush = time.perf_counter()

    def close(self) -> None:
        """Flush what is left and end the stream."""
        if self.closed:
            return
        self.flush()
        self._writer.close()
        self._sink.close()
        self.closed = True

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
