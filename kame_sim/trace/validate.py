"""Checking a trace against the schema before anyone reads a column of it.

Why: every command that reads traces (``trace show``, ``report``, metrics, oracle replay,
empirical delays) should fail with one line naming the file and the column, not with a
``KeyError`` or an Arrow kernel error deep inside. The checks are written against the schema's own
fields (:func:`kame_sim.trace.schema.trace_schema`), so they follow the schema as it grows: a
trace of the current version has exactly its columns; a trace of an older readable version may
lack columns added since (the reader fills them with nulls) but may not have unknown or
mistyped ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa

from kame_sim.errors import InputError
from kame_sim.trace.schema import SCHEMA_VERSION, trace_schema

#: Columns every row must fill, in every schema version (what a row means and when it happened).
ROW_COLUMNS = ("event", "t_sim")


def check_columns(file: Path, schema: pa.Schema, version: str | None) -> None:
    """Every column a schema field with that field's type, once; none missing (current version)."""
    expected = {f.name: f.type for f in trace_schema()}
    names = schema.names
    for name in names:
        if names.count(name) > 1:
            raise InputError(file, name, "the column appears more than once")
        if name not in expected:
            raise InputError(file, name, f"not a column of the trace schema (version {SCHEMA_VERSION})")
        got = schema.field(name).type
        if not got.equals(expected[name]):
            raise InputError(file, name, f"column type is {got}, the trace schema has {expected[name]}")
    if version == SCHEMA_VERSION:
        missing = [name for name in expected if name not in names]
        if missing:
            raise InputError(file, missing[0], f"column missing (trace schema {version} has it)")


def check_metadata(file: Path, metadata: dict[str, str]) -> None:
    """The metadata values readers parse must parse: the resolved scenario (a JSON object of
    tables) and the frame length (a positive number)."""
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


def check_rows(file: Path, table: pa.Table) -> None:
    """Every row names its event and its simulated time (a column an old trace lacks is all null)."""
    for name in ROW_COLUMNS:
        if table.column(name).null_count:
            raise InputError(file, name, "a row has no value (every event has one), or the column is missing")
