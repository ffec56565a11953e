"""Append-only Arrow IPC stream files that survive a crash (shared by the LLM and STT cassettes).

A file is an Arrow IPC *stream*: the schema message, then one record batch per entry, each written
and fsynced as it is appended. Reading keeps every complete message and reports the byte offset
just past the last one, so a torn tail (a crash mid-write) or an end-of-stream marker can be cut
off before appending again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pyarrow as pa

from kame_sim.errors import InputError


def read_stream(
    path: Path, schema: pa.Schema, version_key: str, version: str, field: str, what: str
) -> tuple[pa.Table, int]:
    """Every complete batch (cast to ``schema``) and the offset just past the last complete message.

    The file's schema must carry ``version_key = version`` in its metadata; otherwise (or when the
    file is not an Arrow stream) an :class:`InputError` naming ``field`` says it is not ``what``.
    """
    data = path.read_bytes()
    reader = pa.BufferReader(pa.py_buffer(data))
    good = 0
    found: pa.Schema | None = None
    batches: list[pa.RecordBatch] = []
    torn = False
    while True:
        try:
            message = pa.ipc.read_message(reader)
        except EOFError:
            break
        except (OSError, pa.ArrowInvalid):
            torn = True
            break  # a torn last message
        if found is None:
            if message.type != "schema":
                raise InputError(path, field, "not an Arrow stream cassette")
            found = pa.ipc.read_schema(message)
            if (found.metadata or {}).get(version_key.encode()) != version.encode():
                raise InputError(path, field, f"not a {what} (version {version})")
        else:
            batches.append(pa.ipc.read_record_batch(message, found))
        good = reader.tell()
    if found is None:
        # A crash while the very first message (the schema) was written leaves a torn prefix of an
        # IPC message (it starts with the 0xFFFFFFFF continuation marker): that file is empty.
        if data and not (torn and data[:4] == b"\xff\xff\xff\xff"):
            raise InputError(path, field, "not an Arrow stream cassette")
        return schema.empty_table(), 0
    return pa.Table.from_batches(batches, schema=found).select(schema.names).cast(schema), good


def check_cassette_path(path: Path, field: str) -> None:
    """A cassette path must be a plain file when it exists (a folder or a device is not one)."""
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise InputError(path, field, "is not a file (a cassette is one Arrow stream file)")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(path, field, f"{path.parent} is a file, not a folder")


def cut_torn_tail(path: Path, end: int) -> None:
    """Cut a torn tail (or an end-of-stream marker) off ``path`` so later appends stay readable.

    ``end`` is where :func:`read_stream` found the last complete message. The file is cut only
    when it is changed (when a run starts appending), which can be a while after it was read, so
    the bytes after ``end`` are scanned again under the file lock: whole messages another run
    appended meanwhile are kept, only what does not parse is cut.
    """
    if not path.exists() or end == path.stat().st_size:
        return
    with path.open("r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        data = f.read()
        reader = pa.BufferReader(pa.py_buffer(data))
        reader.seek(end)
        good = end
        while True:
            try:
                pa.ipc.read_message(reader)
            except (EOFError, OSError, pa.ArrowInvalid):
                break
            good = reader.tell()
        if good != len(data):
            f.truncate(good)


def append_batch(path: Path, schema: pa.Schema, batch: pa.RecordBatch) -> None:
    """Append one batch as one encapsulated IPC message (the schema first in a new file), fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # several runs of a sweep may share one cassette
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            f.write(schema.serialize().to_pybytes())
        f.write(batch.serialize().to_pybytes())
        f.flush()
        os.fsync(f.fileno())
