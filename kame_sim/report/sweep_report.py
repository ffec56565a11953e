"""A sweep's report: aggregates with bootstrap CIs and robustness curves, from results.parquet alone.

A robustness curve answers the question people run sweeps for ("at what back-end latency does
self-correction break down?"): each key metric against each swept numeric parameter, with the
clustered bootstrap CI as a band.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kame_sim.errors import InputError
from kame_sim.metrics import aggregate, robustness_curve
from kame_sim.output_dir import OutputDir
from kame_sim.report.curves import plot_robustness_curves
from kame_sim.report.html import INDEX, ReportSection, write_html_report

# The metrics a robustness report leads with (all computed per run by kame_sim.metrics).
KEY_METRICS = (
    "onset_median_s",
    "oracle_lag_median_s",
    "skipped_token_rate",
    "oracle_coverage",
    "f1_after_mean",
    "reply_f1_mean",
)


def sweep_results_path(path: Path) -> Path:
    """Accept a sweep directory or its results.parquet."""
    return path / "results.parquet" if path.is_dir() else path


#: The columns of results.parquet the report reads, and the kinds of values they must hold.
_RESULT_COLUMNS: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    "run_id": ("text", pa.types.is_string),
    "status": ("text", pa.types.is_string),
    "conversation_id": ("text", pa.types.is_string),
    "seed": ("integers", pa.types.is_integer),
    "error": ("text", lambda t: pa.types.is_string(t) or pa.types.is_null(t)),
}


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def read_results(results_file: Path) -> pa.Table:
    """results.parquet, checked: a Parquet file with the sweep's id/status columns and numeric
    metric columns (what a sweep writes); anything else is one InputError naming file and column."""
    try:
        table = pq.read_table(results_file)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(results_file, None, f"not a readable Parquet file ({exc})") from None
    for name, (kind, ok) in _RESULT_COLUMNS.items():
        if name not in table.column_names:
            raise InputError(results_file, name, "column missing (not a kame-sim sweep results table)")
        got = table.schema.field(name).type
        if not ok(got):
            raise InputError(results_file, name, f"column type is {got}, expected {kind}")
    if table.column("run_id").null_count or table.column("status").null_count:
        raise InputError(results_file, "status", "a row has no run id or status")
    for name in KEY_METRICS:
        got = table.schema.field(name).type if name in table.column_names else pa.null()
        if not _numeric(got):
            raise InputError(results_file, name, f"metric column type is {got}, expected numbers")
    return table


def _parameters(results_file: Path, table: pa.Table) -> list[str]:
    resolved = results_file.parent / "sweep.resolved.json"
    if not resolved.exists():
        return [name for name in table.column_names if "." in name]
    try:
        data = json.loads(resolved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(resolved, None, f"not a resolved sweep (not readable JSON: {exc})") from None
    params = data.get("parameters", []) if isinstance(data, dict) else None
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise InputError(resolved, "parameters", "must be a list of parameter names")
    return list(params)


def report_for_sweep(path: Path, out_dir: Path, metrics: tuple[str, ...] = KEY_METRICS) -> Path:
    """Write ``out_dir/index.html`` with a summary, one curves picture per numeric parameter and tables.

    Everything is read and checked before ``out_dir`` is created; a failure while writing removes
    what this report wrote (no half report, no empty folder).
    """
    results_file = sweep_results_path(path)
    if not results_file.is_file():
        raise InputError(results_file, None, "no sweep results here (expected a sweep directory)")
    table = read_results(results_file)
    ok = table.filter(pc.equal(table["status"], "ok"))
    params = _parameters(results_file, table)
    present = [m for m in metrics if m in table.column_names and _numeric(table.schema.field(m).type)]
    n_failed = len(table) - len(ok)
    summary = (
        f"{len(table)} runs ({n_failed} failed) over {len(set(table['conversation_id'].to_pylist()))} "
        f"conversation(s) and {len(set(table['seed'].to_pylist()))} seed(s); parameters: "
        f"{', '.join(params) or 'none'}. Intervals are {int(0.95 * 100)} % bootstrap CIs clustered by "
        "conversation (resampling runs when there is a single conversation)."
    )
    plots: list[tuple[str, list[tuple[str, dict[str, object]]], pa.Table, bool]] = []
    for param in params:
        column = ok[param] if param in ok.column_names else None
        if column is None or (not pa.types.is_floating(column.type) and not pa.types.is_integer(column.type)):
            continue
        agg = aggregate(ok, [param], present)
        curves = [(metric, robustness_curve(agg, param, metric)) for metric in present]
        curves = [(m, c) for m, c in curves if len(c["x"])]
        if not curves:
            continue
        xs = [v for v in ok[param].to_pylist() if v is not None]
        log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 8
        plots.append((param, curves, agg, log_x))
    output = OutputDir(out_dir)
    output.check([INDEX, *(_curves_file(param) for param, *_ in plots)])  # before anything is written
    try:
        sections = [ReportSection("Sweep", summary)]
        for param, curves, agg, log_x in plots:
            picture = plot_robustness_curves(curves, output.record(_curves_file(param)), param, log_x=log_x)
            rows = [
                {k: r[k] for k in (param, "metric", "n", "mean", "mean_low", "mean_high", "median", "p95")}
                for r in agg.to_pylist()
            ]
            sections.append(ReportSection(f"Robustness vs {param}", "", rows=rows, images=[picture]))
        if n_failed:
            failed = table.filter(pc.not_equal(table["status"], "ok")).select(["run_id", "error"]).to_pylist()
            sections.append(ReportSection("Failed runs", "", rows=failed))
        title = f"kame-sim sweep report · {results_file.parent.name}"
        index = write_html_report(output.root, title, sections, output=output)
    except BaseException:
        output.rollback()
        raise
    output.commit(remove_stale=True)
    return index


def _curves_file(param: str) -> str:
    """The picture of one parameter's curves (a parameter name is a dotted scenario key)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", param).lstrip(".") or "parameter"
    return f"curves-{safe}.png"
