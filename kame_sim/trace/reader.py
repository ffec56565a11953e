"""Reading traces back, including partial traces left by a crashed or killed run.

A trace is checked against the schema before anyone reads a column of it: every command that
reads traces (``trace show``, ``report``, metrics, oracle replay, empirical delays) then fails
with one line naming the file and the column instead of a ``KeyError`` deep inside. The check is
written against the schema's own fields (:func:`kame_sim.trace.schema.trace_schema`), so it
follows the schema as it grows; traces of an older schema version are accepted with the columns
that version had, and the columns added since are filled with nulls.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from kame_sim.errors import InputError
from kame_sim.trace.schema import SCHEMA_VERSION, TRACE_FILENAME, trace_schema

# The columns of schema versions this reader still accepts, older than the current one: history,
# which never changes. The current version's columns come from schema.py.
_V1_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("seq", pa.int64()),
    ("event", pa.string()),
    ("t_sim", pa.float64()),
    ("frame", pa.int32()),
    ("stream_id", pa.int32()),
    ("utterance", pa.int32()),
    ("text", pa.string()),
    ("token_id", pa.int32()),
    ("oracle_index", pa.int32()),
    ("n_tokens", pa.int32()),
    ("n_skipped", pa.int32()),
    ("word_count", pa.int32()),
    ("queue_len", pa.int32()),
    ("delay_s", pa.float64()),
    ("t_ref", pa.float64()),
    ("detail", pa.string()),
    ("wall_s", pa.float64()),
    ("step_wall_s", pa.float64()),
)
_PAST_VERSIONS: dict[str, tuple[tuple[str, pa.DataType], ...]] = {"1": _V1_FIELDS}


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
        """The resolved scenario the run used (checked to be a JSON object when the trace was read)."""
        return json.loads(self.metadata.get("kame_sim.scenario", "{}"))


def trace_path(path: Path) -> Path:
    """Accept a run directory or the trace file itself."""
    return path / TRACE_FILENAME if path.is_dir() else path


def expected_fields(version: str | None) -> dict[str, pa.DataType] | None:
    """Column name -> type of a trace of schema ``version``, or None for a version not read here."""
    if version == SCHEMA_VERSION:
        return {f.name: f.type for f in trace_schema()}
    past = _PAST_VERSIONS.get(version or "")
    return dict(past) if past is not None else None


def check_columns(file: Path, schema: pa.Schema, version: str) -> None:
    """Every column must be one of the version's, with its type, once; none may be missing."""
    expected = expected_fields(version)
    assert expected is not None
    names = schema.names
    for name in names:
        if names.count(name) > 1:
            raise InputError(file, name, "the column appears more than once")
        if name not in expected:
            raise InputError(file, name, f"not a column of trace schema {version}")
        if not schema.field(name).type.equals(expected[name]):
            got, want = schema.field(name).type, expected[name]
            raise InputError(file, name, f"column type is {got}, trace schema {version} has {want}")
    missing = [name for name in expected if name not in names]
    if missing:
        raise InputError(file, missing[0], f"column missing (trace schema {version} has it)")


def check_metadata(file: Path, metadata: dict[str, str]) -> None:
    """The metadata values readers parse must parse: the scenario (a JSON object of sections)
    and the frame length (a positive number)."""
    scenario = metadata.get("kame_sim.scenario")
    if scenario is not None:
        try:
            value = json.loads(scenario)
        except json.JSONDecodeError as exc:
            raise InputError(file, "kame_sim.scenario", f"not JSON ({exc.msg})") from None
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise InputError(file, "kame_sim.scenario", "not a resolved scenario (a JSON object of tables)")
    frame = metadata.get("kame_sim.frame_seconds")
    if frame is not None:
        try:
            seconds = float(frame)
        except ValueError:
            raise InputError(file, "kame_sim.frame_seconds", f"{frame!r} is not a number") from None
        if not (math.isfinite(seconds) and seconds > 0):
            raise InputError(file, "kame_sim.frame_seconds", f"must be a positive number, got {frame!r}")


def upgrade(table: pa.Table) -> pa.Table:
    """An older trace in the current layout: the columns added since are all-null, in schema order
    (a column whose type has changed since is cast to the current type)."""
    current = trace_schema()
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in current
    ]
    return pa.Table.from_arrays(columns, schema=current.with_metadata(table.schema.metadata))


def read_trace(path: Path) -> TraceData:
    """Read every complete record batch; a torn last batch is reported, not fatal."""
    file = trace_path(path)
    if not file.exists():
        raise InputError(file, None, "no trace here (expected a run directory or a .arrows file)")
    if not file.is_file():
        raise InputError(file, None, "not a file (expected a run directory or a .arrows file)")
    batches: list[pa.RecordBatch] = []
    truncated = False
    try:
        reader = pa.ipc.open_stream(pa.OSFile(str(file), "rb"))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(file, "schema", f"not an Arrow IPC stream, or its header is torn ({exc})") from None
    schema = reader.schema
    raw = schema.metadata or {}
    try:
        metadata = {k.decode(): v.decode() for k, v in raw.items()}
    except UnicodeDecodeError:
        raise InputError(file, "schema", "the schema metadata is not UTF-8 text") from None
    version = metadata.get("kame_sim.schema_version")
    if expected_fields(version) is None:
        raise InputError(file, "kame_sim.schema_version", f"unsupported trace schema {version!r}")
    assert version is not None
    check_columns(file, schema, version)
    check_metadata(file, metadata)
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            truncated = True
            break
    table = pa.Table.from_batches(batches, schema=schema)
    if table.column("event").null_count:
        raise InputError(file, "event", "a row has no event name")
    if version != SCHEMA_VERSION:
        table = upgrade(table)
    events = table.column("event")
    complete = len(table) > 0 and events[len(table) - 1].as_py() == "run_end"
    return TraceData(file, table, metadata, complete, truncated)
