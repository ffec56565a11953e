"""The trace as an Arrow IPC *file* (``trace.arrow``), written once the run has ended.

During a run the trace is an IPC *stream* (``trace.arrows``): a crashed run leaves every complete
batch readable, which a truncated IPC file would not. But Polars' ``read_ipc``, pandas'
``read_feather`` and DuckDB (through ``pyarrow.ipc.open_file``) want the random-access file
format, so at the end of a run the stream is copied, batch by batch, into ``trace.arrow``: the
same schema, field and schema metadata, zstd-compressed. It is written under a temporary name and
renamed into place, so a crash never leaves a torn ``trace.arrow`` (at worst a stray
``trace.arrow.tmp``, removed when the copy fails).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa

IPC_FILENAME = "trace.arrow"
TMP_SUFFIX = ".tmp"


def write_ipc_file(stream_path: Path, dest: Path | None = None) -> Path:
    """Copy an IPC stream into an IPC file next to it (default ``trace.arrow``) and return its path."""
    stream_path = Path(stream_path)
    dest = Path(dest) if dest is not None else stream_path.with_name(IPC_FILENAME)
    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    try:
        with pa.OSFile(str(stream_path), "rb") as source:
            reader = pa.ipc.open_stream(source)
            options = pa.ipc.IpcWriteOptions(compression="zstd")
            with (
                pa.OSFile(str(tmp), "wb") as sink,
                pa.ipc.new_file(sink, reader.schema, options=options) as out,
            ):
                for batch in reader:
                    if batch.num_rows:
                        out.write_batch(batch)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return dest
