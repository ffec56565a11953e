"""``kame-sim compare A B``: two runs side by side, or two sweeps point by point (docs/metrics.md).

* **Two runs** (run directories or trace files): every metric of :func:`compute_metrics` for both
  with the difference B − A; the user turns whose response onset, response or agreement changed
  (turns matched by utterance index, so the runs should replay the same conversation); and, with
  ``out``, one timeline above the other on a shared time axis (the lanes of
  :mod:`kame_sim.report.timeline`, drawn by its painter).
* **Two sweeps** (sweep directories or ``results.parquet`` files): per design point and metric, the
  means of A and B and the difference B − A with a paired bootstrap interval
  (:func:`kame_sim.metrics.paired.paired_difference`: runs paired by conversation and seed). The
  same machinery judges ``kame-sim check --baseline``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kame_sim.config import scenario_from_dict
from kame_sim.errors import InputError
from kame_sim.metrics import reference_replies_from_conversation
from kame_sim.metrics.aggregate import _rng
from kame_sim.metrics.paired import Sample, paired_difference
from kame_sim.metrics.run_metrics import RunMetrics, TurnMetrics, compute_metrics
from kame_sim.report import timeline as tl
from kame_sim.runner import load_run_conversation
from kame_sim.trace.reader import TraceData, read_trace

RESULTS_FILE = "results.parquet"
RESOLVED_FILE = "sweep.resolved.json"
#: Columns of results.parquet that are neither parameters nor metrics.
RUN_COLUMNS = ("run_id", "status", "error", "conversation_id", "seed")
#: What ``compare`` shows for sweeps unless told otherwise (``--metric``, ``--all``).
DEFAULT_METRICS = (
    "turn_over_rate",
    "onset_median_s",
    "onset_clipped_mean_s",
    "fdb_turn_taking_tor",
    "fdb_turn_taking_latency_s",
    "fdb_pause_tor",
    "oracle_coverage",
    "oracle_lag_median_s",
    "first_chunk_lag_mean_s",
    "skipped_token_rate",
    "queue_drop_rate",
    "ttft_median_s",
    "f1_after_mean",
    "reply_f1_mean",
)
#: Turn fields whose change ``compare`` reports (onset and agreement).
TURN_FIELDS = ("responded", "onset_s", "response_words", "f1_response", "f1_after", "reply_f1")


# -- loading ---------------------------------------------------------------------------------------


def is_sweep(path: Path) -> bool:
    """A sweep directory (it holds results.parquet) or a .parquet file."""
    path = Path(path)
    return path.suffix == ".parquet" or (path.is_dir() and (path / RESULTS_FILE).is_file())


@dataclass(frozen=True)
class SweepResults:
    """A sweep's results table and which of its columns are the swept parameters."""

    path: Path
    table: pa.Table
    parameters: list[str]

    def ok(self) -> pa.Table:
        """The successful runs (failed ones have no metrics)."""
        if "status" not in self.table.column_names:
            return self.table
        return self.table.filter(pc.equal(self.table.column("status"), "ok"))

    def metrics(self) -> list[str]:
        return metric_columns(self.table, self.parameters)


def _known_metrics() -> set[str]:
    return {f.name for f in fields(RunMetrics)} | set(RunMetrics("", "", True, 0.0).as_row())


def metric_columns(table: pa.Table, parameters: Sequence[str]) -> list[str]:
    """Numeric columns that are neither run columns nor parameters, in table order."""
    out = []
    for name in table.column_names:
        if name in RUN_COLUMNS or name in parameters:
            continue
        kind = table.schema.field(name).type
        if (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_null(kind)
        ):
            out.append(name)
    return out


def load_results(path: Path) -> SweepResults:
    """Read a sweep's ``results.parquet`` (a sweep directory or the file) and its parameter keys.

    The keys come from ``sweep.resolved.json`` next to it; without one, every column that is not a
    run column and not a metric kame-sim knows is taken for a parameter.
    """
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(path, None, f"no {RESULTS_FILE} here (expected a sweep directory or the file)")
    try:
        table = pq.read_table(file)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(file, None, f"cannot read the results table ({exc})") from None
    missing = [c for c in ("conversation_id", "seed") if c not in table.column_names]
    if missing:
        raise InputError(file, None, f"not a sweep's results table: no column(s) {', '.join(missing)}")
    resolved = file.parent / RESOLVED_FILE
    parameters: list[str] | None = None
    if resolved.is_file():
        try:
            keys = json.loads(resolved.read_text(encoding="utf-8")).get("parameters")
            if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
                parameters = [k for k in keys if k in table.column_names]
        except (OSError, ValueError, AttributeError):
            parameters = None
    if parameters is None:
        known = _known_metrics()
        parameters = [c for c in table.column_names if c not in RUN_COLUMNS and c not in known]
    return SweepResults(file, table, parameters)


# -- design points ---------------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    """A parameter value as a hashable key: numbers compare by value (0.73 == 0.7300000000000001)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(f"{float(value):.12g}")
    return str(value)


def point_label(parameters: Sequence[str], values: Sequence[Any]) -> str:
    if not parameters:
        return "(all runs)"
    return ", ".join(f"{k}={v}" for k, v in zip(parameters, values, strict=True))


def design_points(table: pa.Table, parameters: Sequence[str]) -> dict[tuple, tuple[list[Any], np.ndarray]]:
    """Normalised point key → (the point's values as written, its row indices), in table order."""
    cols = [table.column(p).to_pylist() for p in parameters]
    out: dict[tuple, tuple[list[Any], list[int]]] = {}
    for i in range(len(table)):
        raw = [c[i] for c in cols]
        key = tuple(_norm(v) for v in raw)
        out.setdefault(key, (raw, []))[1].append(i)
    return {k: (raw, np.asarray(rows, dtype=np.int64)) for k, (raw, rows) in out.items()}


def _float_values(table: pa.Table, metric: str, rows: np.ndarray) -> np.ndarray:
    if metric not in table.column_names:
        return np.full(len(rows), np.nan)
    column = table.column(metric).take(pa.array(rows, pa.int64()))
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def sample_of(table: pa.Table, metric: str, rows: np.ndarray) -> Sample:
    """One metric's values at ``rows`` with their conversation, seed and run id."""
    take = pa.array(rows, pa.int64())
    ids = table.column("run_id").take(take).to_pylist() if "run_id" in table.column_names else []
    return Sample.of(
        _float_values(table, metric, rows),
        table.column("conversation_id").take(take).to_pylist(),
        table.column("seed").take(take).to_pylist(),
        ids,
    )


COMPARE_COLUMNS = (
    "point",
    "metric",
    "n_a",
    "n_b",
    "n_pairs",
    "mean_a",
    "mean_b",
    "delta",
    "delta_low",
    "delta_high",
    "ci_level",
    "ci_method",
    "significant",
)


def compare_sweeps(
    a: SweepResults,
    b: SweepResults,
    metrics: Sequence[str] | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pa.Table:
    """One row per (design point, metric): B − A with a paired bootstrap interval.

    Columns: the parameters, then :data:`COMPARE_COLUMNS` (``point`` is a readable label). A point
    that only one sweep has gets a row with no difference (``n_a`` or ``n_b`` = 0). Only successful
    runs count. ``metrics`` defaults to every metric column both tables have.
    """
    if sorted(a.parameters) != sorted(b.parameters):
        raise InputError(
            b.path,
            None,
            f"the sweeps vary different parameters: A {a.parameters or '(none)'}, "
            f"B {b.parameters or '(none)'}",
        )
    params = list(a.parameters)
    ta, tb = a.ok(), b.ok()
    if metrics is None:
        metrics = [m for m in a.metrics() if m in set(b.metrics())]
    else:
        unknown = [m for m in metrics if m not in ta.column_names and m not in tb.column_names]
        if unknown:
            raise InputError("<cli>", "--metric", f"no metric column {', '.join(unknown)} in either table")
    pa_points = design_points(ta, params)
    pb_points = design_points(tb, params)
    keys = list(pa_points) + [k for k in pb_points if k not in pa_points]
    out: dict[str, list] = {c: [] for c in [*params, *COMPARE_COLUMNS]}
    empty = np.zeros(0, dtype=np.int64)
    for key in keys:
        raw, rows_a = pa_points.get(key, (None, empty))
        raw_b, rows_b = pb_points.get(key, (None, empty))
        values = raw if raw is not None else raw_b
        for metric in metrics:
            d = paired_difference(
                sample_of(ta, metric, rows_a),
                sample_of(tb, metric, rows_b),
                _rng(seed, key, metric),
                n_boot=n_boot,
                ci=ci,
            )
            for p, v in zip(params, values, strict=True):
                out[p].append(v)
            out["point"].append(point_label(params, values))
            out["metric"].append(metric)
            for name, value in (
                ("n_a", d.n_a),
                ("n_b", d.n_b),
                ("n_pairs", d.n_pairs),
                ("mean_a", d.mean_a),
                ("mean_b", d.mean_b),
                ("delta", d.delta),
                ("delta_low", d.low),
                ("delta_high", d.high),
                ("ci_level", ci),
                ("ci_method", d.method),
                ("significant", d.significant),
            ):
                out[name].append(value)
    columns: dict[str, pa.Array] = {}
    for p in params:
        columns[p] = pa.array(out[p], type=ta.schema.field(p).type if p in ta.column_names else None)
    for c in COMPARE_COLUMNS:
        kind = {
            "point": pa.string(),
            "metric": pa.string(),
            "ci_method": pa.string(),
            "significant": pa.bool_(),
            "n_a": pa.int64(),
            "n_b": pa.int64(),
            "n_pairs": pa.int64(),
        }.get(c, pa.float64())
        columns[c] = pa.array(out[c], type=kind)
    return pa.table(columns)


# -- two runs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricDelta:
    name: str
    a: float | int | None
    b: float | int | None

    @property
    def delta(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        return float(self.b) - float(self.a)

    def changed(self, tol: float = 1e-9) -> bool:
        return _differs(self.a, self.b, tol)


@dataclass(frozen=True)
class TurnChange:
    """A user turn whose response changed between the runs (``None``: the turn is not in that run)."""

    utterance: int
    a: TurnMetrics | None
    b: TurnMetrics | None
    changed: tuple[str, ...]


@dataclass
class RunComparison:
    a: TraceData
    b: TraceData
    metrics: list[MetricDelta]
    turns: list[TurnChange]
    same_conversation: bool
    references: bool  # reply agreement (and FDB labels) computed from the conversation
    notes: list[str] = field(default_factory=list)


def load_references(trace: TraceData) -> tuple[dict[int, str] | None, str | None]:
    """The real speaker's replies for a trace (from its scenario's conversation), or (None, why not)."""
    try:
        scenario = scenario_from_dict(trace.scenario, trace.path)
        conversation = load_run_conversation(scenario)
    except (InputError, OSError, ValueError) as exc:
        text = exc.one_line() if isinstance(exc, InputError) else str(exc)
        return None, f"{trace.path}: no reference replies ({text})"
    return reference_replies_from_conversation(conversation, trace.scenario), None


def _turn_value(tm: TurnMetrics, name: str) -> Any:
    value = getattr(tm, name)
    return int(value) if isinstance(value, bool) else value


def _differs(x: Any, y: Any, tol: float) -> bool:
    if x is None or y is None:
        return (x is None) != (y is None)
    return not math.isclose(float(x), float(y), rel_tol=tol, abs_tol=tol)


def changed_turns(a: Sequence[TurnMetrics], b: Sequence[TurnMetrics], tol: float = 1e-6) -> list[TurnChange]:
    """Turns (by utterance index) whose onset, response size or agreement differ by more than ``tol``."""
    by_a = {t.utterance: t for t in a}
    by_b = {t.utterance: t for t in b}
    out = []
    for u in sorted(set(by_a) | set(by_b)):
        ta, tb = by_a.get(u), by_b.get(u)
        if ta is None or tb is None:
            out.append(TurnChange(u, ta, tb, ("turn",)))
            continue
        diff = tuple(f for f in TURN_FIELDS if _differs(_turn_value(ta, f), _turn_value(tb, f), tol))
        if diff:
            out.append(TurnChange(u, ta, tb, diff))
    return out


def compare_runs(a_path: Path, b_path: Path, tol: float = 1e-6) -> RunComparison:
    """Both runs' metrics (with reply agreement when their conversations load) and changed turns."""
    ta, tb = read_trace(Path(a_path)), read_trace(Path(b_path))
    notes = []
    for t in (ta, tb):
        if not t.complete:
            notes.append(f"{t.path}: partial trace (no run_end)")
    refs_a, why_a = load_references(ta)
    refs_b, why_b = load_references(tb)
    notes += [w for w in (why_a, why_b) if w]
    references = refs_a is not None and refs_b is not None
    run_a, turns_a = compute_metrics(ta, refs_a if references else None)
    run_b, turns_b = compute_metrics(tb, refs_b if references else None)
    row_a, row_b = run_a.as_row(), run_b.as_row()
    deltas = [MetricDelta(k, row_a.get(k), row_b.get(k)) for k in dict.fromkeys([*row_a, *row_b])]
    same = _same_conversation(ta, tb)
    if not same:
        notes.append("the runs replay different conversations: turns are matched by index only")
    return RunComparison(ta, tb, deltas, changed_turns(turns_a, turns_b, tol), same, references, notes)


def _same_conversation(a: TraceData, b: TraceData) -> bool:
    keys = ("kame_sim.conversation_id", "kame_sim.conversation_hash")
    return all(a.metadata.get(k) == b.metadata.get(k) for k in keys)


def plot_comparison(
    a: TraceData,
    b: TraceData,
    path: Path,
    labels: tuple[str, str] = ("A", "B"),
    *,
    seconds_per_inch: float = 1.25,
    row_seconds: float = 20.0,
    dpi: int = 110,
    mark_at: float | None = None,
    title: str | None = None,
    t_range: tuple[float | None, float | None] = (None, None),
) -> Path:
    """Run A's timeline above run B's, window by window, on one shared time axis (a PNG).

    ``mark_at``: a time (s) marked by a vertical line in every panel (``kame-sim fork``'s fork time).
    ``t_range``: draw only ``[start, end]`` seconds (either may be None: the run's start / end), to
    show the moment that matters of a long conversation (checked by :func:`check_t_range`).

    The lanes are :mod:`kame_sim.report.timeline`'s, drawn by its row painter; a run longer than
    ``row_seconds`` is split into windows of exactly that length (as the single-run timeline is),
    each a pair of panels (A, then B) sharing the x axis.
    """
    from matplotlib.figure import Figure

    data = [tl.extract_timeline(a), tl.extract_timeline(b)]
    t0 = t_range[0] or 0.0
    t1 = t_range[1] if t_range[1] is not None else max(d.t_end + d.frame_s for d in data)
    n_windows = max(1, math.ceil((t1 - t0) / row_seconds - 1e-9))
    row_len = row_seconds if n_windows > 1 else t1 - t0
    spi = min(seconds_per_inch, row_len / (tl.MIN_WIDTH_IN - tl.MARGIN_IN))
    painters = []
    for i in range(n_windows):
        for d in data:
            painters.append(tl.RowPainter(d, t0 + i * row_len, t0 + (i + 1) * row_len, spi))
    width = row_len / spi + tl.MARGIN_IN
    heights = [p.height * tl.UNIT_IN + 0.45 for p in painters]
    fig = Figure(figsize=(width, sum(heights) + 1.8), dpi=dpi, layout="constrained")
    axes = fig.subplots(len(painters), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for k, (ax, painter) in enumerate(zip(axes, painters, strict=True)):
        painter.paint(ax)
        start = t0 + i_window(k, row_len)
        if mark_at is not None and start <= mark_at <= start + row_len:
            ax.axvline(mark_at, color="crimson", linewidth=1.4, linestyle="--", zorder=10)
            if k % 2 == 0:
                ax.annotate(
                    f"fork at {mark_at:g} s",
                    (mark_at, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -10),
                    textcoords="offset points",
                    color="crimson",
                    fontsize=8,
                )
        if k % 2:
            ax.sharex(axes[k - 1])
        d = data[k % 2]
        ax.set_title(
            f"{labels[k % 2]}: {(a, b)[k % 2].path.parent.name} · {d.conversation_id} · seed {d.seed}"
            f" · policy {d.policy}",
            fontsize=8,
            loc="left",
        )
    axes[-1].set_xlabel("simulated time (s)", fontsize=8)
    title = title or f"kame-sim compare — {labels[0]} (upper) vs {labels[1]} (lower) of each pair"
    fig.suptitle(title, fontsize=10)
    ncol = max(3, min(7, int(width / 2.3)))
    fig.legend(
        handles=tl.legend_handles(), loc="outside lower center", ncol=ncol, fontsize=7.5, frameon=False
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# -- text ------------------------------------------------------------------------------------------


def check_t_range(start: float | None, end: float | None) -> tuple[float | None, float | None]:
    """``--from`` / ``--to`` of a picture: finite, ``0 <= start < end`` (one-line errors)."""
    for name, value in (("--from", start), ("--to", end)):
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1e7):
            raise InputError("<cli>", name, f"must be a time in seconds, 0 to 1e7, got {value}")
    if start is not None and end is not None and end <= start:
        raise InputError("<cli>", "--to", f"must be after --from ({start:g} s), got {end:g} s")
    return start, end


def i_window(panel: int, row_len: float) -> float:
    """Where the window of ``panel`` (two panels, A and B, per window) starts (s)."""
    return (panel // 2) * row_len


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def signed(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:+.{digits}g}"


def write_table(table: pa.Table, path: Path) -> Path:
    """``.parquet`` as is; anything else as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    return path
