"""A sweep's report: aggregates with bootstrap CIs and robustness curves, from results.parquet alone.

A robustness curve answers the question people run sweeps for ("at what back-end latency does
self-correction break down?"): each key metric against each swept numeric parameter, with the
clustered bootstrap CI as a band.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from kame_sim.metrics import aggregate, robustness_curve
from kame_sim.report.curves import plot_robustness_curves
from kame_sim.report.html import ReportSection, write_html_report
from kame_sim.report.results_table import read_resolved, read_results

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


def _parameters(results_file: Path, table: pa.Table) -> list[str]:
    resolved = read_resolved(results_file)
    if resolved:
        return list(resolved.get("parameters", []))
    return [name for name in table.column_names if "." in name]


def _file_part(name: str) -> str:
    """A parameter name as part of a file name: a dotted key, never a path (``a/../b``)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def report_for_sweep(path: Path, out_dir: Path, metrics: tuple[str, ...] = KEY_METRICS) -> Path:
    """Write ``out_dir/index.html`` with a summary, one curves picture per numeric parameter and tables."""
    results_file = sweep_results_path(path)
    table = read_results(results_file, metrics)
    ok = table.filter(pc.equal(table["status"], "ok"))
    params = _parameters(results_file, table)
    present = [m for m in metrics if m in table.column_names]
    out_dir.mkdir(parents=True, exist_ok=True)
    n_failed = len(table) - len(ok)
    summary = (
        f"{len(table)} runs ({n_failed} failed) over {len(set(table['conversation_id'].to_pylist()))} "
        f"conversation(s) and {len(set(table['seed'].to_pylist()))} seed(s); parameters: "
        f"{', '.join(params) or 'none'}. Intervals are {int(0.95 * 100)} % bootstrap CIs clustered by "
        "conversation (resampling runs when there is a single conversation)."
    )
    sections = [ReportSection("Sweep", summary)]
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
        target = out_dir / f"curves-{_file_part(param)}.png"
        picture = plot_robustness_curves(curves, target, param, log_x=log_x)
        rows = [
            {k: r[k] for k in (param, "metric", "n", "mean", "mean_low", "mean_high", "median", "p95")}
            for r in agg.to_pylist()
        ]
        sections.append(ReportSection(f"Robustness vs {param}", "", rows=rows, images=[picture]))
    if n_failed:
        failed = table.filter(pc.not_equal(table["status"], "ok")).select(["run_id", "error"]).to_pylist()
        sections.append(ReportSection("Failed runs", "", rows=failed))
    return write_html_report(out_dir, f"kame-sim sweep report · {results_file.parent.name}", sections)
