"""Reading traces back, including partial traces left by a crashed or killed run.

Each trace is checked against the schema as it is read (:mod:`kame_sim.trace.validate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from kame_sim.errors import InputError
from kame_sim.trace.schema import READABLE_VERSIONS, SCHEMA_VERSION, TRACE_FILENAME, trace_schema
from kame_sim.trace.validate import check_columns, check_metadata, check_rows


@dataclass(frozen=True)
class TraceData:
    """A trace table plus what its metadata says, and whether it is complete."""

    path: Path
    table: pa.Table
    metadata: dict[str, str]
    complete: bool
    truncated: bool

    @property
    def scenario(self) -> dict[str, Any]:
        """The resolved scenario the run used (checked to be a JSON object when it was read)."""
        return json.loads(self.metadata.get("kame_sim.scenario", "{}"))


def trace_path(path: Path) -> Path:
    """Accept a run directory or the trace file itself."""
    return path / TRACE_FILENAME if path.is_dir() else path


def _is_ipc_file(file: Path) -> bool:
    """An Arrow IPC file (``trace.arrow``) starts with the magic ``ARROW1``; a stream does not."""
    try:
        with open(file, "rb") as f:
            return f.read(6) == b"ARROW1"
    except OSError:
        return False


def read_trace(path: Path) -> TraceData:
    """Read every complete record batch; a torn last batch is reported, not fatal.

    Reads the streamed ``trace.arrows`` (a run directory means that one) and also the IPC file
    ``trace.arrow`` written at the end of a run.
    """
    file = trace_path(path)
    if not file.exists():
        raise InputError(file, None, "no trace here (expected a run directory, a .arrows or a .arrow file)")
    if not file.is_file():
        raise InputError(file, None, "not a file (expected a run directory, a .arrows or a .arrow file)")
    batches: list[pa.RecordBatch] = []
    truncated = False
    if _is_ipc_file(file):
        # trace.arrow, written whole at the end of a run: all or nothing (no torn batches).
        try:
            whole = pa.ipc.open_file(str(file))
            schema = whole.schema
            batches = [whole.get_batch(i) for i in range(whole.num_record_batches)]
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(file, "schema", f"a torn or damaged Arrow IPC file ({exc})") from None
    else:
        try:
            reader = pa.ipc.open_stream(pa.OSFile(str(file), "rb"))
        except (pa.ArrowInvalid, OSError) as exc:
            message = f"not an Arrow IPC stream, or its header is torn ({exc})"
            raise InputError(file, "schema", message) from None
        schema = reader.schema
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                truncated = True
                break
    return trace_from_batches(file, schema, batches, truncated)


def trace_from_batches(
    file: Path, schema: pa.Schema, batches: list[pa.RecordBatch], truncated: bool = False
) -> TraceData:
    """A trace from its schema and record batches, checked as :func:`read_trace` checks a file.

    :func:`read_trace` ends here with the batches it read; a finished run hands in the batches its
    :class:`~kame_sim.trace.writer.TraceWriter` wrote (``writer.batches``: the same batches, so
    the same table, chunk for chunk), which spares a sweep reading its own trace back.
    """
    raw = schema.metadata or {}
    metadata = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    version = metadata.get("kame_sim.schema_version")
    if version not in READABLE_VERSIONS:
        raise InputError(file, "kame_sim.schema_version", f"unsupported trace schema {version!r}")
    check_columns(file, schema, version)
    check_metadata(file, metadata)
    table = pa.Table.from_batches(batches, schema=schema)
    if version != SCHEMA_VERSION:
        table = _upgrade(table)
    events = table.column("event")
    complete = len(table) > 0 and events[len(table) - 1].as_py() == "run_end"
    check_rows(file, table)
    return TraceData(file, table, metadata, complete, truncated)


def _upgrade(table: pa.Table) -> pa.Table:
    """An older trace in today's layout: columns it lacks are added as nulls, in schema order.

    Every column added since version 1 is optional information (``request``), so the upgraded
    table means what the old one meant; the schema metadata (run facts) is kept.
    """
    current = trace_schema()
    columns = []
    for f in current:
        if f.name in table.column_names:
            columns.append(table.column(f.name))
        else:
            columns.append(pa.nulls(len(table), type=f.type))
    upgraded = pa.Table.from_arrays(columns, schema=current.with_metadata(table.schema.metadata))
    return upgraded
