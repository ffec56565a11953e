"""``kame-sim export --parquet DIR``: every event of many runs as one hive-partitioned Parquet dataset.

One row per trace row of every run, with the run's identity beside the trace columns:

* ``run_id`` (string), ``seed`` (int64, null for imported KAME logs), then one column per swept
  parameter under its dotted key (``llm.ttft.median``; numbers as int64/float64, text as strings,
  tables as JSON text; null for runs that did not sweep it), then the trace columns (schema
  version 2, older traces upgraded as :func:`kame_sim.trace.read_trace` does);
* partitioned by ``conversation_id`` and ``policy``: ``DIR/conversation_id=demo/policy=poll/
  part-0.parquet`` (zstd). Hive-aware readers (DuckDB ``hive_partitioning``, Polars, pandas through
  pyarrow) put the two back as columns.

Only complete traces are exported: a partial trace is refused (an :class:`InputError` naming it),
and a sweep's runs that failed or never finished are left out with a note, so a cross-run query
never mixes half runs with whole ones.

``DIR`` is written whole under a temporary name beside it and then renamed into place, with
``_kame_sim_export.json`` (what was exported, and every file written). A non-empty ``DIR`` is
replaced only if that manifest lists every file in it; anything else is refused untouched.
(Readers skip the manifest: pyarrow and pandas ignore ``_``-prefixed files, and the README's
DuckDB and Polars queries read ``**/*.parquet``.)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from kame_sim import __version__
from kame_sim.errors import InputError
from kame_sim.export.sources import RunIdentity, find_runs, run_identity
from kame_sim.sweep.runner import typed_column
from kame_sim.trace.reader import read_trace
from kame_sim.trace.schema import SCHEMA_VERSION, trace_schema

MANIFEST_FILE = "_kame_sim_export.json"
PARTITION_COLUMNS = ("conversation_id", "policy")


@dataclass
class ExportResult:
    """What an export wrote."""

    out_dir: Path
    runs: int
    rows: int
    files: list[str]
    parameter_keys: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Run:
    trace: Path
    ident: RunIdentity
    rows: int


def check_target(out_dir: Path) -> None:
    """Refuse a target that is a file, or a non-empty directory kame-sim export did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "--parquet", "is a file; give a directory")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    refusal = "choose a new or empty directory"
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        listed = {str(f) for f in manifest["files"]} | {MANIFEST_FILE}
    except (OSError, ValueError, KeyError, TypeError):
        message = f"is not empty and was not written by kame-sim export; {refusal}"
        raise InputError(out_dir, "--parquet", message) from None
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if path.is_symlink() or (path.is_file() and rel not in listed):
            message = f"holds {rel}, which kame-sim export did not write; {refusal}"
            raise InputError(out_dir, "--parquet", message)


def _collect(paths: list[Path]) -> tuple[list[_Run], list[str]]:
    """Read every trace once (validating it) and keep who it is and how many rows it has."""
    found = find_runs(paths, finished_only=True)
    runs: list[_Run] = []
    by_id: dict[str, Path] = {}
    for source in found.runs:
        trace = read_trace(source.trace)
        if trace.truncated or not trace.complete:
            why = "its last record batch is torn" if trace.truncated else "no run_end row"
            raise InputError(trace.path, None, f"partial trace ({why}): export takes complete runs only")
        ident = run_identity(trace)
        if ident.run_id in by_id:
            other = by_id[ident.run_id]
            raise InputError(trace.path, "run_id", f"{ident.run_id!r} is also the run id of {other}")
        by_id[ident.run_id] = trace.path
        runs.append(_Run(trace.path, ident, len(trace.table)))
    return runs, found.notes


def _parameter_columns(runs: list[_Run]) -> dict[str, pa.Array]:
    """One typed value per run for each parameter key (the results.parquet typing rules)."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.ident.parameters if k not in keys)
    return {key: typed_column([run.ident.parameters.get(key) for run in runs]) for key in keys}


def export_schema(parameters: dict[str, pa.Array]) -> pa.Schema:
    """run_id, seed, parameters, the trace columns, then the partition columns."""
    fields = [pa.field("run_id", pa.string()), pa.field("seed", pa.int64())]
    fields += [pa.field(key, column.type) for key, column in parameters.items()]
    fields += list(trace_schema())
    fields += [pa.field(name, pa.string()) for name in PARTITION_COLUMNS]
    meta = {"kame_sim.schema_version": SCHEMA_VERSION, "kame_sim.version": __version__}
    return pa.schema(fields, metadata=meta)


def _batches(
    runs: list[_Run], parameters: dict[str, pa.Array], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Each run's trace with its identity columns, one run in memory at a time."""
    trace_names = [f.name for f in trace_schema()]
    for i, run in enumerate(runs):
        table = read_trace(run.trace).table
        n = len(table)
        columns: list[pa.Array | pa.ChunkedArray] = [
            pa.repeat(pa.scalar(run.ident.run_id, pa.string()), n),
            pa.repeat(pa.scalar(run.ident.seed, pa.int64()), n),
        ]
        columns += [pa.repeat(column[i], n) for column in parameters.values()]
        columns += [table.column(name) for name in trace_names]
        columns += [
            pa.repeat(pa.scalar(run.ident.conversation_id, pa.string()), n),
            pa.repeat(pa.scalar(run.ident.policy, pa.string()), n),
        ]
        yield from pa.Table.from_arrays(columns, schema=schema).to_batches()


def export_parquet(paths: list[Path], out_dir: Path) -> ExportResult:
    """Write every event of the given runs / sweeps as one Parquet dataset at ``out_dir``."""
    out_dir = Path(out_dir)
    check_target(out_dir)
    runs, notes = _collect(paths)
    parameters = _parameter_columns(runs)
    schema = export_schema(parameters)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.export-tmp-{os.getpid()}"
    old = out_dir.parent / f".{out_dir.name}.export-old-{os.getpid()}"
    written: list[str] = []
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        ds.write_dataset(
            _batches(runs, parameters, schema),
            tmp,
            schema=schema,
            format="parquet",
            partitioning=ds.partitioning(
                pa.schema([schema.field(name) for name in PARTITION_COLUMNS]), flavor="hive"
            ),
            basename_template="part-{i}.parquet",
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
            preserve_order=True,
            existing_data_behavior="error",
            file_visitor=lambda f: written.append(Path(f.path).relative_to(tmp).as_posix()),
        )
        files = sorted(written)
        manifest = {
            "written_by": "kame-sim export",
            "kame_sim_version": __version__,
            "format": "parquet",
            "partitioning": list(PARTITION_COLUMNS),
            "columns": {f.name: str(f.type) for f in schema},
            "rows": sum(r.rows for r in runs),
            "runs": [
                {
                    "run_id": r.ident.run_id,
                    "trace": str(r.trace),
                    "conversation_id": r.ident.conversation_id,
                    "seed": r.ident.seed,
                    "policy": r.ident.policy,
                    "parameters": r.ident.parameters,
                    "rows": r.rows,
                }
                for r in runs
            ],
            "files": files,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        check_target(out_dir)  # still ours (or empty) now that the data is ready
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return ExportResult(out_dir, len(runs), sum(r.rows for r in runs), files, list(parameters), notes)
