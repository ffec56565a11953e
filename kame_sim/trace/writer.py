"""Streaming trace writer: rows are buffered in column lists and flushed as Arrow record batches.

The file is an Arrow IPC *stream*: every flushed batch is readable even if the process dies
later, so a crashed or killed run leaves a readable partial trace (it lacks the ``run_end`` row).
Batches are flushed every ``batch_rows`` rows and at least every ``flush_seconds`` of wall time.

Asked to (``keep_bytes``), the writer also keeps the batches it wrote, so that the end of a run can
write ``trace.arrow`` and compute a sweep run's metrics from them instead of reading the stream
back: the same batches, so the same table (:func:`kame_sim.trace.reader.trace_from_batches`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from kame_sim.trace.schema import COLUMNS, trace_schema

#: The order of a row's values in :meth:`TraceWriter.row`'s tuples (the schema's, after ``seq``).
ROW_ORDER = (
    "event", "t_sim", "frame", "stream_id", "utterance", "text", "token_id", "oracle_index", "n_tokens",
    "n_skipped", "word_count", "queue_len", "delay_s", "t_ref", "detail", "request", "wall_s", "step_wall_s",
)  # fmt: skip
assert ("seq", *ROW_ORDER) == COLUMNS, "TraceWriter.row's tuple no longer matches the trace schema"


#: What a single run keeps (:func:`kame_sim.runner.run_scenario`): past this many bytes of
#: batches (a very long run) they are dropped, and its ``trace.arrow`` is copied from the stream
#: file, as before, instead of written from memory.
KEEP_BYTES = 64 * 1024 * 1024


class TraceWriter:
    """Append rows with :meth:`row`; call :meth:`close` (or use as a context manager)."""

    def __init__(
        self,
        path: Path,
        metadata: dict[str, str],
        batch_rows: int = 8192,
        flush_seconds: float = 1.0,
        keep_bytes: int | None = None,
    ) -> None:
        self.path = path
        self.schema = trace_schema(metadata)
        self._sink = pa.OSFile(str(path), "wb")
        # Compressed on this thread: a batch's buffers are small, and a sweep's workers already
        # keep every core busy (the compressed bytes are the same either way).
        self._writer = pa.ipc.new_stream(
            self._sink, self.schema, options=pa.ipc.IpcWriteOptions(compression="zstd", use_threads=False)
        )
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._last_flush = time.perf_counter()
        self._t0 = time.perf_counter()
        # One tuple per row, in column order after ``seq`` (seq is the row number, made at flush):
        # one list append per row instead of one per column; transposed when flushed.
        self._rows: list[tuple[Any, ...]] = []
        self._seq = 0
        self.rows_written = 0
        self._keep_bytes = keep_bytes or 0
        self._kept_bytes = 0
        #: Every batch written to the stream, in order; None without ``keep_bytes`` (nothing is
        #: kept: lockstep's many writers, importers) or once past it.
        self.batches: list[pa.RecordBatch] | None = [] if keep_bytes is not None else None
        # pyarrow writes the schema lazily; an empty batch puts it (and the run's metadata) on disk
        # now, so a run killed before its first flush still leaves a readable (empty) trace.
        self._write(pa.RecordBatch.from_pylist([], schema=self.schema))
        self._append = self._rows.append
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
        now = time.perf_counter()
        self._append(
            (
                event,
                t_sim,
                frame,
                stream_id,
                utterance,
                text,
                token_id,
                oracle_index,
                n_tokens,
                n_skipped,
                word_count,
                queue_len,
                delay_s,
                t_ref,
                detail,
                request,
                now - self._t0,
                step_wall_s,
            )
        )
        self._seq += 1
        if self._seq - self.rows_written >= self._batch_rows or now - self._last_flush >= self._flush_seconds:
            self.flush()

    def _write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self._sink.flush()
        if self.batches is not None:
            self._kept_bytes += batch.nbytes
            if self._kept_bytes > self._keep_bytes:
                self.batches = None
            else:
                self.batches.append(batch)

    def flush(self) -> None:
        """Write the buffered rows as one record batch (no-op when empty)."""
        n = self._seq - self.rows_written
        if n == 0 or self.closed:
            return
        fields = list(self.schema)
        arrays = [pa.array(range(self.rows_written, self._seq), type=fields[0].type)]
        columns = zip(*self._rows, strict=True)
        arrays += [pa.array(values, type=f.type) for f, values in zip(fields[1:], columns, strict=True)]
        self._write(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self._rows.clear()
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
