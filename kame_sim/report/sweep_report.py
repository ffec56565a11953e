"""A sweep's report: aggregates with bootstrap CIs and robustness curves, from results.parquet alone.

A robustness curve answers the question people run sweeps for ("at what back-end latency does
self-correction break down?", "which back-end policy holds up better?"): each key metric against
the swept parameters, with the clustered bootstrap CI.

Layout (docs/reports.md): one parameter goes on the x axis (numeric: a curve with a band;
text or table values such as preset names or delay tables: one group per value), a second one
is drawn as one colour per value in every panel (so a 2-D sweep is never averaged over its second
parameter), and every further parameter gets one picture per combination of its values. When the
colours compare exactly two values, runs that differ only there (same other parameters,
conversation and seed) are paired and their difference is aggregated with its own CI.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kame_sim.errors import InputError
from kame_sim.metrics import aggregate, robustness_curve
from kame_sim.paths import make_output_dir
from kame_sim.report.curves import plot_comparison, plot_heatmaps, plot_robustness_curves
from kame_sim.report.html import Link, ReportSection, write_html_report
from kame_sim.report.interactive import write_bokeh_js, write_interactive_timeline
from kame_sim.report.results_table import read_resolved, read_results
from kame_sim.sweep.spec import run_id_of_folder
from kame_sim.trace.reader import read_trace

# The metrics a robustness report leads with (all computed per run by kame_sim.metrics).
KEY_METRICS = (
    "onset_median_s",
    "oracle_lag_median_s",
    "skipped_token_rate",
    "oracle_coverage",
    "f1_after_mean",
    "reply_f1_mean",
)

# metric -> (what it is, unit, which way is better: "higher" | "lower" | None); docs/metrics.md
METRIC_INFO: dict[str, tuple[str, str, str | None]] = {
    "onset_median_s": ("median response onset", "s after the user's turn", "lower"),
    "onset_mean_s": ("mean response onset", "s after the user's turn", "lower"),
    "onset_clipped_median_s": ("median response onset, clipped at 0", "s", "lower"),
    "onset_clipped_mean_s": ("mean response onset, clipped at 0", "s", "lower"),
    "turn_over_rate": ("turns answered", "share of user turns", "higher"),
    "oracle_lag_median_s": ("median oracle lag", "s, chunk arrival to fed", "lower"),
    "oracle_lag_mean_s": ("mean oracle lag", "s, chunk arrival to fed", "lower"),
    "oracle_lag_p95_s": ("p95 oracle lag", "s, chunk arrival to fed", "lower"),
    "oracle_lag_max_s": ("max oracle lag", "s, chunk arrival to fed", "lower"),
    "first_chunk_lag_mean_s": ("first-chunk lag", "s, arrival to fed", "lower"),
    "skipped_token_rate": ("skipped oracle tokens", "share of appended tokens", "lower"),
    "queue_drop_rate": ("oracle queue drops", "share of puts", "lower"),
    "oracle_coverage": ("oracle coverage", "share of speaking frames with oracle text", "higher"),
    "f1_before_mean": ("agreement with the oracle before it", "word F1, 0-1", None),
    "f1_after_mean": ("post-oracle agreement", "word F1 with the final oracle, 0-1", "higher"),
    "f1_response_mean": ("response-oracle agreement", "word F1, 0-1", "higher"),
    "edit_after_mean": ("post-oracle edit distance", "normalised, 0-1", "lower"),
    "edit_response_mean": ("response-oracle edit distance", "normalised, 0-1", "lower"),
    "reply_f1_mean": ("agreement with the real reply", "word F1, 0-1", "higher"),
}

MAX_FIGURES = 24
ALL_RUNS = "__all_runs"
TIMELINES_PER_POINT = 3  # interactive timelines written per design point (kame-sim report --timelines)


def metric_title(metric: str) -> str:
    """A panel title: ``label (metric)``, then ``unit · ↑ higher is better`` on a second line."""
    label, unit, better = METRIC_INFO.get(metric, (metric, "", None))
    head = f"{label} ({metric})" if label != metric else metric
    direction = {"higher": "↑ higher is better", "lower": "↓ lower is better"}.get(better or "", "")
    tail = " · ".join(part for part in (unit, direction) if part)
    return f"{head}\n{tail}" if tail else head


def sweep_results_path(path: Path) -> Path:
    """Accept a sweep directory or its results.parquet."""
    return path / "results.parquet" if path.is_dir() else path


def _resolved(results_file: Path) -> dict[str, Any]:
    return read_resolved(results_file)


def _parameters(resolved: dict[str, Any], table: pa.Table) -> list[str]:
    if "parameters" in resolved:
        return list(resolved["parameters"])
    return [name for name in table.column_names if "." in name]


def _is_numeric(column: pa.ChunkedArray) -> bool:
    return pa.types.is_floating(column.type) or pa.types.is_integer(column.type)


def value_label(value: Any) -> str:
    """A short label for a parameter value: a number, a name, or a table described in words.

    Table values are stored as JSON text in results.parquet (and a mix of names and tables, such
    as ``["gpt-4.1-ttft", {kind = ...}]``, as JSON throughout); delay tables read as their model
    (``LogN(median=2 s, sigma=0.3)``), a mixture with one component per line.
    """
    if isinstance(value, str) and value[:1] in ('"', "{", "["):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        if "kind" in value:
            from kame_sim.delays import parse_delay

            try:
                text = parse_delay(value).describe()
            except (ValueError, TypeError):
                pass
            else:  # "LogN(median=2 s, sigma=0.3)" -> "LogN(2 s, σ=0.3)"; a mixture one part per line
                return text.replace("median=", "").replace("sigma=", "σ=").replace(" + ", " +\n")
        return ", ".join(f"{k}={value_label(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(value_label(v) for v in value) + "]"
    return str(value)


def _canonical(value: Any) -> str:
    """A comparable form of a parameter value, as written in the sweep file or read from results."""
    if isinstance(value, str) and value[:1] in ('"', "{", "["):
        try:
            value = json.loads(value)
        except ValueError:
            return json.dumps(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(float(value))
    return json.dumps(value, sort_keys=True)


class _Labels:
    """Parameter value -> label: the sweep file's ``[report] labels``, else :func:`value_label`."""

    def __init__(self, spec: dict[str, Any]) -> None:
        given = (spec.get("report") or {}).get("labels") or {}
        values = spec.get("parameters") or {}
        self._map = {
            key: {_canonical(v): label for v, label in zip(values.get(key) or [], labels, strict=False)}
            for key, labels in given.items()
        }

    def __call__(self, param: str, value: Any) -> str:
        return self._map.get(param, {}).get(_canonical(value)) or value_label(value)


def _distinct(column: pa.ChunkedArray) -> list[Any]:
    """Distinct non-null values: numbers sorted, anything else in order of first appearance."""
    values = [v for v in dict.fromkeys(column.to_pylist()) if v is not None]
    return sorted(values) if _is_numeric(column) else values


def _layout(
    ok: pa.Table, params: list[str], report: dict[str, Any]
) -> tuple[str | None, str | None, list[str], list[str]]:
    """(x, series, facets, constant parameters) for the pictures; see the module docstring."""
    present = [p for p in params if p in ok.column_names]
    counts = {p: len(_distinct(ok[p])) for p in present}
    varying = [p for p in present if counts[p] > 1]
    constant = [p for p in present if counts[p] <= 1]
    x = report.get("x")
    series = report.get("series")
    rest = [p for p in varying if p not in (x, series)]
    if x is None and rest:
        numeric = [p for p in rest if _is_numeric(ok[p])]
        pool = numeric or rest
        x = max(reversed(pool), key=lambda p: counts[p])  # most values; a tie goes to the later one
        rest.remove(x)
    if series is None and rest:
        series = min(rest, key=lambda p: counts[p])  # fewest values; a tie goes to the earlier one
        rest.remove(series)
    return x, series, rest, constant


def _paired_differences(
    ok: pa.Table, x: str | None, series: str, facets: list[str], metrics: list[str]
) -> tuple[pa.Table, Any, Any] | None:
    """Per run pair (same x, facets, conversation and seed): metric(second value) − metric(first)."""
    values = _distinct(ok[series])
    if len(values) != 2:
        return None
    first, second = values
    keys = [k for k in (x, *facets) if k is not None]
    rows = ok.select([*keys, "conversation_id", "seed", series, *metrics]).to_pylist()
    by_pair: dict[tuple, dict[Any, dict]] = {}
    for row in rows:
        pair = tuple(row[k] for k in (*keys, "conversation_id", "seed"))
        by_pair.setdefault(pair, {})[row[series]] = row
    out: dict[str, list] = {c: [] for c in (*keys, "conversation_id", *metrics)}
    for both in by_pair.values():
        if first not in both or second not in both:
            continue
        a, b = both[first], both[second]
        for k in (*keys, "conversation_id"):
            out[k].append(a[k])
        for m in metrics:
            out[m].append(None if a[m] is None or b[m] is None else float(b[m]) - float(a[m]))
    if not out["conversation_id"]:
        return None
    schema = {k: ok.schema.field(k).type for k in (*keys, "conversation_id")}
    columns = {k: pa.array(out[k], schema[k]) for k in schema}
    columns.update({m: pa.array(out[m], pa.float64()) for m in metrics})
    table = pa.table(columns)
    return aggregate(table, keys, metrics), first, second


def _fmt_ci(mean: float | None, low: float | None, high: float | None, signed: bool = False) -> str:
    """``0.42 [0.31, 0.57]`` (``+0.42 [+0.31, +0.57]`` when ``signed``); '' when undefined."""
    if mean is None or np.isnan(mean):
        return ""
    spec = "+.2f" if signed else ".2f"

    def f(v: float) -> str:
        return f"{round(v, 2) + 0.0:{spec}}"  # + 0.0: no "-0.00"

    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return f(mean)
    return f"{f(mean)} [{f(low)}, {f(high)}]"


def _category_curve(agg: pa.Table, x: str, categories: list[Any], metric: str, where: dict[str, Any]) -> dict:
    """mean/low/high per category index for the rows of ``agg`` matching ``where`` and ``metric``."""
    mean = np.full(len(categories), np.nan)
    low, high = mean.copy(), mean.copy()
    index = {v: i for i, v in enumerate(categories)}
    for row in agg.to_pylist():
        if row["metric"] != metric or any(row[k] != v for k, v in where.items()) or row[x] not in index:
            continue
        i = index[row[x]]
        stats = ("mean", "mean_low", "mean_high")
        mean[i], low[i], high[i] = (np.nan if row[c] is None else row[c] for c in stats)
    return {"x": np.arange(len(categories), dtype=float), "mean": mean, "low": low, "high": high}


def _filter(table: pa.Table, where: dict[str, Any]) -> pa.Table:
    for key, value in where.items():
        table = table.filter(pc.equal(table[key], pa.scalar(value, table.schema.field(key).type)))
    return table


def _with_points(curve: dict, runs: pa.Table, x: str, metric: str, categories: list[Any] | None) -> dict:
    """``curve`` plus the per-run values behind its mean (``points_x``, ``points_y``)."""
    xs = runs[x].to_pylist()
    ys = runs[metric].to_pylist()
    if categories is not None:
        index = {v: i for i, v in enumerate(categories)}
        xs = [index.get(v) for v in xs]
    keep = [(a, b) for a, b in zip(xs, ys, strict=True) if a is not None and b is not None]
    return {**curve, "points_x": [float(a) for a, _ in keep], "points_y": [float(b) for _, b in keep]}


def _heatmap_means(
    agg: pa.Table, x: str, series: str, xs: list[Any], ys: list[Any], metric: str
) -> np.ndarray:
    means = np.full((len(ys), len(xs)), np.nan)
    ix = {v: i for i, v in enumerate(xs)}
    iy = {v: j for j, v in enumerate(ys)}
    for row in agg.to_pylist():
        if row["metric"] == metric and row[x] in ix and row[series] in iy and row["mean"] is not None:
            means[iy[row[series]], ix[row[x]]] = row["mean"]
    return means


def _timeline_links(
    ok: pa.Table,
    keys: list[str],
    label: _Labels,
    runs_dir: Path,
    out_dir: Path,
    per_point: int,
) -> tuple[list[dict[str, Any]], int]:
    """One row per design point: its parameter values, how many runs, and links to the interactive
    timelines of its first ``per_point`` runs (by conversation, then seed), written into
    ``out_dir/runs/`` with one shared copy of BokehJS in ``out_dir/js/``. Returns (rows, pages)."""
    folders = {
        run_id_of_folder(d.name): d for d in (runs_dir.iterdir() if runs_dir.is_dir() else ()) if d.is_dir()
    }
    cols = [*keys, "run_id", "conversation_id", "seed"]
    points: dict[tuple, list[dict[str, Any]]] = {}  # design points in the sweep's order
    for r in ok.select(cols).to_pylist():
        points.setdefault(tuple(_canonical(r[k]) for k in keys), []).append(r)
    for members in points.values():  # the first seed of every conversation first
        members.sort(key=lambda r: (r["seed"], r["conversation_id"]))
    js = None
    written = 0
    rows = []
    for members in points.values():
        first = members[0]
        row: dict[str, Any] = {k: label(k, first[k]).replace("\n", " ") for k in keys if k != ALL_RUNS}
        row["runs"] = len(members)
        links = []
        for r in members[:per_point]:
            trace_dir = folders.get(r["run_id"])
            name = f"{r['conversation_id']} seed {r['seed']}"
            if trace_dir is None:
                continue
            try:
                trace = read_trace(trace_dir)
            except InputError:
                continue
            if js is None:
                js = write_bokeh_js(out_dir / "js")
            page = out_dir / "runs" / f"{_file_part(r['run_id'])}.html"
            write_interactive_timeline(
                trace, page, js_src=f"../js/{js.name}", links=[("sweep report", "../index.html")]
            )
            written += 1
            links.append(Link(name, page.relative_to(out_dir).as_posix()))
        row["timelines"] = links or "—"
        more = len(members) - len(links)
        row["other runs"] = f"{more} (kame-sim report {runs_dir.name}/<folder>)" if more > 0 else "—"
        rows.append(row)
    return rows, written


def _file_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def report_for_sweep(
    path: Path,
    out_dir: Path,
    metrics: tuple[str, ...] | None = None,
    timelines: int = TIMELINES_PER_POINT,
) -> Path:
    """Write ``out_dir/index.html`` with a summary, the curves pictures and the aggregate tables.

    ``metrics`` default to the sweep file's ``[report] metrics``, else :data:`KEY_METRICS`.
    Every picture shows the per-run values behind each mean; a sweep of two numeric parameters
    also gets heatmaps (one per metric); each design point links to the interactive timelines of
    its first ``timelines`` runs (0: none).
    Raises :class:`InputError` (never an empty report) when there is nothing to draw: no
    results, no successful run, or none of the metrics defined in any successful run.
    """
    results_file = sweep_results_path(path)
    table = read_results(results_file, metrics or ())
    resolved = _resolved(results_file)
    spec = resolved.get("spec") or {}
    report_spec = spec.get("report") or {}
    label = _Labels(spec)
    ok = table.filter(pc.equal(table["status"], "ok"))
    n_failed = len(table) - len(ok)
    if len(ok) == 0:
        errors = [e for e in table["error"].to_pylist() if e] if "error" in table.column_names else []
        first = f"; first error: {errors[0]}" if errors else ""
        raise InputError(results_file, None, f"no successful run to report on ({n_failed} failed{first})")
    wanted = list(metrics or report_spec.get("metrics") or KEY_METRICS)
    for m in wanted:
        if m in table.column_names and not (_is_numeric(table[m]) or pa.types.is_null(table[m].type)):
            message = f"metric column is {table.schema.field(m).type}, not numeric"
            raise InputError(results_file, m, message + " (not a kame-sim sweep results table)")
    present = [m for m in wanted if m in ok.column_names and pc.count(ok[m]).as_py() > 0]
    if not present:
        raise InputError(
            results_file, None, f"none of the metrics {', '.join(wanted)} has a value in any successful run"
        )
    params = _parameters(resolved, table)
    x, series, facets, constant = _layout(ok, params, report_spec)
    make_output_dir(out_dir, "report directory")
    n_conversations = len(set(ok["conversation_id"].to_pylist()))

    layout = [f"x axis: {x}"] if x else []
    if series:
        layout.append(f"one colour per {series}")
    if facets:
        layout.append(f"one picture per {' × '.join(facets)}")
    fixed = [f"{p} = {label(p, _distinct(ok[p])[0])}" for p in constant if _distinct(ok[p])]
    summary = (
        f"{len(table)} runs ({n_failed} failed) over {len(set(table['conversation_id'].to_pylist()))} "
        f"conversation(s) and {len(set(table['seed'].to_pylist()))} seed(s); parameters: "
        f"{', '.join(params) or 'none'}"
        + (f" ({'; '.join(layout)})" if layout else "")
        + (f"; the same in every run: {', '.join(fixed)}" if fixed else "")
        + ". Intervals are 95 % bootstrap CIs of the mean, clustered by conversation (resampling "
        "runs when there is a single conversation)."
    )
    if n_conversations < 5:
        summary += (
            f" With {n_conversations} conversation(s) the intervals are coarse: a cluster bootstrap has "
            "few distinct resamples, and the interval mostly shows how much the conversations differ."
        )
    sections = [ReportSection("Sweep", summary)]

    if x is None:  # nothing varies (or only what is drawn as colours): one group of all runs
        x = ALL_RUNS
        ok = ok.append_column(ALL_RUNS, pa.array(["all runs"] * len(ok)))
    by = [k for k in (x, series, *facets) if k is not None]
    agg = aggregate(ok, by, present)
    paired = _paired_differences(ok, x, series, facets, present) if series else None
    x_numeric = _is_numeric(ok[x])
    categories = None if x_numeric else _distinct(ok[x])
    x_label = "" if x == ALL_RUNS else x
    xs = [v for v in ok[x].to_pylist() if v is not None] if x_numeric else []
    log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 8
    series_values = _distinct(ok[series]) if series else []
    name = resolved.get("name") or results_file.parent.name
    headline = f"{name}: {len(ok)} runs, {n_conversations} conversation{'s' if n_conversations != 1 else ''}"
    if paired is not None:
        _, first, second = paired
        if categories is not None:
            headline += (
                f"; Δ = {label(series, second)} − {label(series, first)}, paired by conversation and seed"
            )
    combos = list(itertools.product(*(_distinct(ok[f]) for f in facets)))
    images = []
    for n_fig, combo in enumerate(combos[:MAX_FIGURES]):
        where = dict(zip(facets, combo, strict=True))
        suffix = "".join(f"-{_file_part(f)}={_file_part(label(f, v))}" for f, v in where.items())
        fig_title = ", ".join([headline, *(f"{f} = {label(f, v)}" for f, v in where.items())])
        stem = f"curves-{_file_part(x)}" + (f"-by-{_file_part(series)}" if series else "") + suffix
        target = out_dir / f"{stem if len(stem) <= 150 else f'curves-{n_fig}'}.png"
        sub = _filter(agg, where)
        runs_here = _filter(ok, where)
        if series is None and x_numeric:  # the classic robustness curves: one metric per panel
            curves = [
                (metric_title(m), _with_points(robustness_curve(sub, x, m), runs_here, x, m, None))
                for m in present
            ]
            images.append(plot_robustness_curves(curves, target, x, log_x=log_x, title=fig_title))
            continue
        notes = None
        if paired is not None and categories is not None:
            dsub = _filter(paired[0], where).to_pylist()
            notes = []
            for m in present:
                rows = {r[x]: r for r in dsub if r["metric"] == m}
                texts = [_fmt_ci(rows[c]["mean"], rows[c]["mean_low"], rows[c]["mean_high"], True)
                         if c in rows else "" for c in categories]  # fmt: skip
                notes.append([f"Δ {t}" if t else "" for t in texts])
        panels = []
        for m in present:
            lines = {}
            for value in series_values or [None]:
                key = label(series, value) if series else "mean (95 % CI)"
                these = _filter(runs_here, {series: value}) if series else runs_here
                if x_numeric:
                    curve = robustness_curve(_filter(sub, {series: value}), x, m)
                else:
                    curve = _category_curve(sub, x, categories or [], m, {series: value} if series else {})
                lines[key] = _with_points(curve, these, x, m, categories)
            panels.append((metric_title(m), lines))
        cat_labels = [label(x, c) for c in categories] if categories is not None else None
        images.append(
            plot_comparison(
                panels,
                target,
                x_label,
                categories=cat_labels,
                log_x=log_x,
                series_label=series,
                notes=notes,
                title=fig_title,
            )
        )
        if x_numeric and series is not None and _is_numeric(ok[series]):  # two numeric parameters
            heat = out_dir / f"heatmap-{target.name.removeprefix('curves-')}"
            images.append(
                plot_heatmaps(
                    [
                        (
                            metric_title(m),
                            _heatmap_means(sub, x, series, _distinct(ok[x]), series_values, m),
                            METRIC_INFO.get(m, ("", "", None))[2],
                        )
                        for m in present
                    ],
                    heat,
                    x,
                    series,
                    [label(x, v) for v in _distinct(ok[x])],
                    [label(series, v) for v in series_values],
                    title=fig_title + " (mean per design point)",
                )
            )
    if len(combos) > MAX_FIGURES:
        sections[0].body += f" Pictures: the first {MAX_FIGURES} of {len(combos)} combinations (tables: all)."

    def shown(row: dict[str, Any], keys: list[str], delta: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: row[k] if isinstance(row[k], int | float) else label(k, row[k]).replace("\n", " ")
            for k in keys
            if k != ALL_RUNS
        }
        out.update(metric=row["metric"], n=row["n"])
        out["mean Δ [95 % CI]" if delta else "mean [95 % CI]"] = _fmt_ci(
            row["mean"], row["mean_low"], row["mean_high"], signed=delta
        )
        out.update(median=row["median"], p95=row["p95"])
        return out

    heading = f"Robustness vs {x}" if x != ALL_RUNS else "All runs"
    sections.append(ReportSection(heading, "", rows=[shown(r, by) for r in agg.to_pylist()], images=images))
    if paired is not None:
        diffs, first, second = paired
        keys = [k for k in (x, *facets) if k != ALL_RUNS]
        rows = [shown(r, keys, delta=True) for r in diffs.to_pylist()]
        a, b = label(series, first), label(series, second)
        body = (
            f"{series} = {b} minus {series} = {a}, for runs that differ only there (same other "
            "parameters, conversation and seed); CIs clustered by conversation."
        )
        sections.append(ReportSection(f"Paired difference: {b} − {a}", body, rows=rows))
    if timelines > 0:
        point_rows, n_pages = _timeline_links(ok, by, label, results_file.parent / "runs", out_dir, timelines)
        body = (
            f"Each design point's runs, with the interactive timelines (zoom, pan, hover) of up to "
            f"{timelines} of them ({n_pages} pages, sharing one copy of BokehJS in `js/`): which "
            "front-end words followed which oracle, where it switched from its guess, how each stream "
            "ended. Any other run: `kame-sim report` on its run directory."
        )
        sections.append(ReportSection("Runs and timelines", body, rows=point_rows))
    if n_failed:
        failed = table.filter(pc.not_equal(table["status"], "ok")).select(["run_id", "error"]).to_pylist()
        sections.append(ReportSection("Failed runs", "", rows=failed))
    return write_html_report(out_dir, f"kame-sim sweep report · {results_file.parent.name}", sections)
