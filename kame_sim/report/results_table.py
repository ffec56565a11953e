"""Reading a sweep's ``results.parquet`` and ``sweep.resolved.json`` for a report, checked.

Why: a report is often made from a folder someone sent, long after the sweep ran. A file that is
not Parquet, a table without the columns a sweep writes, a metric column of text, or a resolved
sweep that is not JSON must be one line naming the file and the column, not a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kame_sim.errors import InputError

RESOLVED_FILE = "sweep.resolved.json"

#: The columns of results.parquet a report reads, and the kind of values each must hold.
RESULT_COLUMNS: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    "run_id": ("text", pa.types.is_string),
    "status": ("text", pa.types.is_string),
    "conversation_id": ("text", pa.types.is_string),
    "seed": ("integers", pa.types.is_integer),
    "error": ("text", lambda t: pa.types.is_string(t) or pa.types.is_null(t)),
}


def is_numeric(t: pa.DataType) -> bool:
    """A metric column: numbers (or no values at all)."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def read_results(results_file: Path, metrics: Iterable[str] = ()) -> pa.Table:
    """results.parquet, checked: readable Parquet with the id/status columns a sweep writes, and
    the named ``metrics`` (where present) numeric."""
    if not results_file.is_file():
        raise InputError(results_file, None, "no sweep results here (expected a sweep directory)")
    try:
        table = pq.read_table(results_file)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(results_file, None, f"not a readable Parquet file ({exc})") from None
    for name, (kind, ok) in RESULT_COLUMNS.items():
        if name not in table.column_names:
            raise InputError(results_file, name, "column missing (not a kame-sim sweep results table)")
        got = table.schema.field(name).type
        if not ok(got):
            raise InputError(results_file, name, f"column type is {got}, expected {kind}")
    for name in ("run_id", "status"):
        if table.column(name).null_count:
            raise InputError(results_file, name, "a row has no value")
    for name in metrics:
        got = table.schema.field(name).type if name in table.column_names else pa.null()
        if not is_numeric(got):
            raise InputError(results_file, name, f"metric column type is {got}, expected numbers")
    return table


def read_resolved(results_file: Path) -> dict[str, Any]:
    """The sweep's resolved spec next to its results ({} when there is none), checked to be a
    JSON object whose ``parameters`` (if any) is a list of names."""
    resolved = results_file.parent / RESOLVED_FILE
    if not resolved.exists():
        return {}
    try:
        data = json.loads(resolved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(resolved, None, f"not a resolved sweep (not readable JSON: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(resolved, None, "not a resolved sweep (not a JSON object)")
    params = data.get("parameters", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise InputError(resolved, "parameters", "must be a list of parameter names")
    return data
