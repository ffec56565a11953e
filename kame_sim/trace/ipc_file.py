"""The trace as an Arrow IPC *file* (``trace.arrow``), written once the run has ended.

During a run the trace is an IPC *stream* (``trace.arrows``): a crashed run leaves every complete
batch readable, which a truncated IPC file would not. But Polars' ``read_ipc``, pandas'
``read_feather`` and DuckDB (through ``pyarrow.ipc.open_file``) want the random-access file
format, so at the end of a run the stream's batches are written into ``trace.arrow``: the
same schema, field and schema metadata, zstd-compressed. A run writes them from the batches
its writer kept in memory (:func:`write_ipc_batches`); :func:`write_ipc_file` copies them
from the stream file (a long run whose batches were not kept, or any stream given later). It
is written under a temporary name and renamed into place, so a crash never leaves a torn
``trace.arrow`` (at worst a stray ``trace.arrow.tmp``, removed when the copy fails).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

IPC_FILENAME = "trace.arrow"
TMP_SUFFIX = ".tmp"


def write_ipc_file(stream_path: Path, dest: Path | None = None) -> Path:
    """Copy an IPC stream into an IPC file next to it (default ``trace.arrow``) and return its path."""
    stream_path = Path(stream_path)
    with pa.OSFile(str(stream_path), "rb") as source:
        reader = pa.ipc.open_stream(source)
        return write_ipc_batches(stream_path, reader.schema, reader, dest)


def write_ipc_batches(
    stream_path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch], dest: Path | None = None
) -> Path:
    """Write the batches of the stream at ``stream_path`` into its IPC file, from memory.

    What :func:`write_ipc_file` does, given the batches instead of reading them back: a run's
    :class:`~kame_sim.trace.writer.TraceWriter` keeps what it streamed, so the end of a run
    compresses them once more instead of reading, decompressing and compressing the stream.
    """
    stream_path = Path(stream_path)
    dest = Path(dest) if dest is not None else stream_path.with_name(IPC_FILENAME)
    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    try:
        options = pa.ipc.IpcWriteOptions(compression="zstd", use_threads=False)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as out:
            for batch in batches:
                if batch.num_rows:
                    out.write_batch(batch)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return dest
