"""The CI gate: run a small sweep and judge thresholds on its aggregated metrics.

A check file is a sweep (inline keys, or ``sweep = "path"``) plus ``[[assert]]`` tables::

    [[assert]]
    name = "skipped-token rate <= 5 % with GPT-4.1-like TTFT"
    metric = "skipped_token_rate"
    stat = "mean"                       # mean | median | p95 | max | min
    op = "<="                           # <= | < | >= | > | ==
    value = 0.05
    where = { "llm.ttft.median" = 0.73 } # optional: only runs with these parameter values

Each assertion aggregates one metric over the matching successful runs (the point estimate of
the metrics package's clustered aggregate; its confidence interval is reported, not judged, since
a CI gate must be deterministic) and compares it with the threshold.

A check may also compare against a **baseline** sweep (``kame-sim check --baseline RESULTS``, or
``baseline_results = "path"``) with ``[[baseline]]`` tables::

    [[baseline]]
    metric = "onset_median_s"
    direction = "lower"                 # lower | higher: which way is better
    tolerance = 0.05                    # how much worse is still fine (metric units)
    relative = false                    # true: tolerance is a fraction of the baseline mean
    judge = "significant"               # significant | mean
    where = { "llm.ttft.median" = 0.73 } # optional

Each design point is compared on its own: the difference of means with a paired bootstrap CI
(runs paired by conversation and seed, :mod:`kame_sim.metrics.paired`). ``judge = "mean"`` fails a
point whose regression (the difference in the bad direction) exceeds the tolerance;
``"significant"`` (the default) also needs the CI to exclude 0, so seed noise alone fails a point
at most ~2.5 % of the time. A failing point names its worst runs. A run that failed fails the
check too (the implicit "all runs completed" assertion): a gate that silently ignores crashing
runs would pass exactly when things are worst. Results go to JUnit XML (one testcase per
assertion, which every CI system renders) and a Markdown table (for job summaries / PR comments).
"""

from __future__ import annotations

import difflib
import json
import math
import operator
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kame_sim.compare import SweepResults, design_points, load_results, point_label, sample_of
from kame_sim.config import read_toml, validation_to_input_error
from kame_sim.errors import InputError
from kame_sim.metrics import RUN_METRIC_COLUMNS, aggregate
from kame_sim.metrics.aggregate import _rng
from kame_sim.metrics.paired import PairedDifference, Sample, paired_difference
from kame_sim.paths import make_output_dir
from kame_sim.shrink.condition import NEGATION, Condition
from kame_sim.sweep.runner import RUNS_DIR, ProgressCallback, SweepResult, execute_plan, folders_by_id
from kame_sim.sweep.spec import PlainName, SweepPlan, flatten_dotted, load_sweep, parse_spec, plan_sweep

Stat = Literal["mean", "median", "p95", "max", "min"]
Op = Literal["<=", "<", ">=", ">", "=="]
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
#: Columns a ``where`` filter may use besides the sweep's parameters.
RUN_COLUMNS = ("conversation_id", "seed")
CHECK_KEYS = frozenset(
    {"name", "description", "sweep", "assert", "allow_failed_runs", "baseline", "baseline_results"}
)
Direction = Literal["lower", "higher"]
#: (the worst run of a failed assertion, the check's folder) -> (reproducer command or None, summary)
Shrinker = Callable[["WorstRun", Path], tuple[str | None, str]]
Judge = Literal["significant", "mean"]


class Assertion(BaseModel):
    """One threshold on one aggregated metric."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    metric: str
    stat: Stat = "mean"
    op: Op = "<="
    value: float = Field(allow_inf_nan=False)
    where: dict[str, Any] = Field(default_factory=dict)

    def label(self) -> str:
        """The assertion's name, or a readable default built from what it checks."""
        return self.name or f"{self.stat}({self.metric}) {self.op} {self.value:g}{_where_text(self.where)}"

    def threshold(self) -> str:
        return f"{self.stat}({self.metric}) {self.op} {self.value:g}"


class BaselineCheck(BaseModel):
    """A metric that must not get worse than in the baseline sweep by more than ``tolerance``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    metric: str
    direction: Direction
    tolerance: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    relative: bool = False
    judge: Judge = "significant"
    where: dict[str, Any] = Field(default_factory=dict)
    worst: int = Field(3, ge=0, le=50)

    def label(self) -> str:
        tol = f"{self.tolerance:g}" + (" × baseline" if self.relative else "")
        better = "lower" if self.direction == "lower" else "higher"
        return self.name or f"{self.metric} ({better} is better) regresses <= {tol}{_where_text(self.where)}"


class _CheckHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PlainName = None
    description: str | None = None
    sweep: str | None = None
    allow_failed_runs: bool = False
    assertions: list[Assertion] = Field(default_factory=list, alias="assert")
    baseline: list[BaselineCheck] = Field(default_factory=list)
    baseline_results: str | None = None


@dataclass(frozen=True)
class CheckSpec:
    """A validated check: its sweep plan and assertions."""

    path: Path
    name: str
    description: str | None
    plan: SweepPlan
    assertions: list[Assertion]
    allow_failed_runs: bool
    baseline: list[BaselineCheck] = field(default_factory=list)
    baseline_results: Path | None = None  # from the file (relative to it); --baseline overrides


@dataclass(frozen=True)
class AssertionOutcome:
    """The verdict on one assertion."""

    name: str
    metric: str
    stat: str
    op: str
    threshold: float
    where: dict[str, Any]
    measured: float | None
    ci_low: float | None
    ci_high: float | None
    n_runs: int
    passed: bool
    message: str
    worst: WorstRun | None = None


@dataclass(frozen=True)
class WorstRun:
    """The run of a failed assertion that fails it most, and the command that shrinks it.

    The per-run condition is the assertion's comparison negated and applied to one run (an
    assertion ``mean(x) >= 0.3`` fails on runs with ``x < 0.3``); "most" is the largest value for
    ``<``/``<=``, the smallest for ``>``/``>=``, the farthest for ``==``.
    """

    run_id: str
    folder: Path
    seed: int
    conversation_id: str
    value: float
    condition: Condition
    reproducer: str | None = None  # ``kame-sim run .../scenario.toml`` when check shrank it
    shrunk: str | None = None  # the shrink's one-line summary (or why it could not shrink)

    def shrink_command(self) -> str:
        return f'kame-sim shrink {shlex.quote(str(self.folder))} --fails "{self.condition.text()}"'

    def text(self) -> str:
        return (
            f"worst run {self.run_id} (seed {self.seed}, conversation {self.conversation_id}): "
            f"{self.condition.metric} = {self.value:.6g}, folder {self.folder}"
        )


def worst_run(assertion: Assertion, runs: pa.Table, plan: SweepPlan, runs_dir: Path) -> WorstRun | None:
    """The selected run that violates ``assertion`` most on its own (None when none does)."""
    condition = Condition(assertion.metric, NEGATION[assertion.op], assertion.value)
    rows = [r for r in runs.select(["run_id", assertion.metric]).to_pylist() if condition.holds_for(r)]
    if not rows:
        return None

    def badness(row: dict[str, Any]) -> float:
        v = float(row[assertion.metric])
        return (
            v
            if assertion.op in ("<", "<=")
            else -v
            if assertion.op in (">", ">=")
            else abs(v - assertion.value)
        )

    row = max(rows, key=badness)  # the first of equals: the table's (plan) order
    planned = {r.run_id: r for r in plan.runs}[row["run_id"]]
    folder = folders_by_id(runs_dir).get(planned.run_id, runs_dir / planned.folder)
    return WorstRun(
        planned.run_id, folder, planned.seed, planned.conversation_id, float(row[assertion.metric]), condition
    )


@dataclass(frozen=True)
class BaselineOutcome:
    """The verdict on one ``[[baseline]]`` table at one design point (current vs baseline)."""

    name: str
    metric: str
    point: str
    direction: str
    judge: str
    tolerance: float  # absolute, in metric units (a relative one multiplied out)
    baseline: float | None  # the baseline's mean (over the pairs when paired)
    measured: float | None  # the current mean
    regression: float | None  # how much worse (> 0) or better (< 0) than the baseline
    ci_low: float | None  # CI of the regression
    ci_high: float | None
    ci_method: str
    n_runs: int
    n_baseline: int
    n_pairs: int
    passed: bool
    message: str
    worst_runs: tuple[str, ...] = ()


@dataclass
class CheckResult:
    """The check's verdict, per assertion (and baseline comparison), plus the sweep it ran."""

    name: str
    passed: bool
    assertions: list[AssertionOutcome]
    sweep: SweepResult
    markdown: str
    junit_path: Path | None = None
    markdown_path: Path | None = None
    failures: list[AssertionOutcome | BaselineOutcome] = field(default_factory=list)
    baseline: list[BaselineOutcome] = field(default_factory=list)
    baseline_path: Path | None = None


def _where_text(where: dict[str, Any]) -> str:
    if not where:
        return ""
    return " where " + ", ".join(f"{k} = {v}" for k, v in where.items())


def _matches(actual: Any, wanted: Any) -> bool:
    """Parameter equality; numbers compare with a relative tolerance (0.73 written vs 0.73 drawn)."""
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return actual is wanted
    if isinstance(actual, int | float) and isinstance(wanted, int | float):
        return math.isclose(float(actual), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return actual == wanted


def load_check(path: Path, cli_set: dict[str, Any] | None = None) -> CheckSpec:
    """Read a check file: its sweep (inline or referenced) and its assertions, all validated.

    ``cli_set``: scenario keys changed in every run (``--set``; see :func:`~.spec.plan_sweep`)."""
    path = Path(path)
    data = read_toml(path, "check")
    header_data = {k: v for k, v in data.items() if k in CHECK_KEYS}
    sweep_data = {k: v for k, v in data.items() if k not in CHECK_KEYS}
    for item in header_data.get("assert") or []:
        if isinstance(item, dict) and isinstance(item.get("where"), dict):
            item["where"] = dict(flatten_dotted(item["where"], frozenset()))
    for item in header_data.get("baseline") or []:
        if isinstance(item, dict) and isinstance(item.get("where"), dict):
            item["where"] = dict(flatten_dotted(item["where"], frozenset()))
    try:
        header = _CheckHeader.model_validate(header_data)
    except ValidationError as exc:
        raise validation_to_input_error(exc, path) from None
    if not header.assertions and not header.baseline:
        raise InputError(path, "assert", "at least one [[assert]] or [[baseline]] table is required")
    if header.sweep is not None:
        if sweep_data:
            key = next(iter(sweep_data))
            raise InputError(path, key, "give the sweep inline or as sweep = 'path', not both")
        plan = load_sweep((path.resolve().parent / header.sweep).resolve(), cli_set)
    else:
        if "base" not in sweep_data:
            raise InputError(
                path, "base", "a check needs a sweep: inline keys (base = ...) or sweep = 'path'"
            )
        sweep_data.setdefault("name", header.name or path.stem)
        plan = plan_sweep(parse_spec(sweep_data, path), path, cli_set)
    _check_filters(path, plan, header.assertions)
    _check_metrics(path, header.assertions)
    _check_filters(path, plan, header.baseline, "baseline")
    baseline_results = None
    if header.baseline_results is not None:
        baseline_results = (path.resolve().parent / header.baseline_results).resolve()
    return CheckSpec(
        path=path,
        name=header.name or path.stem,
        description=header.description,
        plan=plan,
        assertions=header.assertions,
        allow_failed_runs=header.allow_failed_runs,
        baseline=header.baseline,
        baseline_results=baseline_results,
    )


def _run_values(plan: SweepPlan, key: str) -> list[Any]:
    if key == "seed":
        return [r.seed for r in plan.runs]
    if key == "conversation_id":
        return [r.conversation_id for r in plan.runs]
    return [r.parameters[key] for r in plan.runs]


def _check_metrics(path: Path, assertions: list[Assertion]) -> None:
    """Every assertion must name a per-run metric: a typo would otherwise fail only after the
    whole sweep ran (and fail the gate for the wrong reason)."""
    for i, assertion in enumerate(assertions):
        if assertion.metric not in RUN_METRIC_COLUMNS:
            close = difflib.get_close_matches(assertion.metric, RUN_METRIC_COLUMNS, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise InputError(
                path,
                f"assert[{i}].metric",
                f"unknown metric {assertion.metric!r}; {hint}(docs/metrics.md lists the per-run metrics)",
            )


#: How the first bytes of a JUnit / Markdown file kame-sim check wrote begin (a file that does not
#: look like one is someone else's, and is not replaced).
_JUNIT_MARK = b'<testsuites name="kame-sim check"'
_MARKDOWN_MARK = b"## kame-sim check "


def check_report_file(path: Path | None, field: str, mark: bytes) -> None:
    """Refuse an output file that cannot be written, or that exists and is not one kame-sim wrote."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(path, field, "is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(path, field, f"{parent} is a file, not a folder")
            break
    if path.exists() or path.is_symlink():
        try:
            with path.open("rb") as f:
                head = f.read(512)
        except OSError as exc:
            raise InputError(path, field, f"cannot be read ({exc.strerror})") from None
        if path.is_symlink() or mark not in head:
            raise InputError(path, field, "exists and was not written by kame-sim check; choose another file")


def _check_filters(
    path: Path, plan: SweepPlan, assertions: list[Assertion] | list[BaselineCheck], table: str = "assert"
) -> None:
    """Every ``where`` key must be a parameter and match some run, or the check judges nothing."""
    for i, assertion in enumerate(assertions):
        for key, wanted in assertion.where.items():
            field_name = f"{table}[{i}].where.{key}"
            if key not in plan.parameter_keys and key not in RUN_COLUMNS:
                known = ", ".join([*plan.parameter_keys, *RUN_COLUMNS])
                raise InputError(path, field_name, f"not a parameter of the sweep (known: {known})")
            values = _run_values(plan, key)
            if not any(_matches(v, wanted) for v in values):
                shown = ", ".join(sorted({str(v) for v in values}))
                raise InputError(path, field_name, f"no run has {wanted!r} (the sweep has: {shown})")


def _selected(table: pa.Table, plan: SweepPlan, where: dict[str, Any]) -> pa.Table:
    """The successful runs matching ``where`` (failed runs have no metrics to judge).

    Matched against the plan's parameter values, not the table's columns, which hold tables and
    mixed-type values as JSON text.
    """
    values = {
        r.run_id: {**r.parameters, "seed": r.seed, "conversation_id": r.conversation_id} for r in plan.runs
    }
    keep = [
        status == "ok" and all(_matches(values[run_id].get(k), v) for k, v in where.items())
        for run_id, status in zip(
            table.column("run_id").to_pylist(), table.column("status").to_pylist(), strict=True
        )
    ]
    return table.filter(pa.array(keep, pa.bool_()))


@dataclass(frozen=True)
class Estimate:
    """An aggregated statistic: the point estimate and, where the aggregate gives one, its CI."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


def estimate(runs: pa.Table, metric: str, stat: str) -> Estimate:
    """Aggregate one metric over runs (null/NaN values are skipped).

    mean/median/p95 come from :func:`kame_sim.metrics.aggregate` (bootstrap CI clustered by
    conversation, deterministic) so the gate and the sweep reports agree on every number;
    max/min are taken directly (an extreme has no useful bootstrap interval).
    """
    agg = aggregate(runs, by=[], metrics=[metric], cluster="conversation_id").to_pylist()[0]
    n = int(agg["n"])
    if n == 0:
        return Estimate(None, None, None, 0)
    if stat in ("max", "min"):
        values = [v for v in runs.column(metric).to_pylist() if v is not None and not math.isnan(v)]
        return Estimate(float(max(values) if stat == "max" else min(values)), None, None, n)
    if stat == "p95":
        return Estimate(agg["p95"], None, None, n)
    return Estimate(agg[stat], agg[f"{stat}_low"], agg[f"{stat}_high"], n)


def _judge(
    assertion: Assertion, table: pa.Table, plan: SweepPlan, runs_dir: Path | None = None
) -> AssertionOutcome:
    """The verdict; a failed one names its worst run and the shrink command (``runs_dir`` given)."""
    runs = _selected(table, plan, assertion.where)
    base = {
        "name": assertion.label(),
        "metric": assertion.metric,
        "stat": assertion.stat,
        "op": assertion.op,
        "threshold": assertion.value,
        "where": assertion.where,
    }
    if assertion.metric not in table.column_names:
        known = ", ".join(c for c in table.column_names if c not in ("run_id", "status", "error"))
        message = f"no metric column {assertion.metric!r} in the results (columns: {known})"
        return AssertionOutcome(
            **base, measured=None, ci_low=None, ci_high=None, n_runs=0, passed=False, message=message
        )
    try:
        est = estimate(runs, assertion.metric, assertion.stat)
    except TypeError as exc:  # a non-numeric column
        return AssertionOutcome(
            **base, measured=None, ci_low=None, ci_high=None, n_runs=0, passed=False, message=str(exc)
        )
    if est.value is None:
        message = f"no successful run with a value of {assertion.metric}{_where_text(assertion.where)}"
        return AssertionOutcome(
            **base, measured=None, ci_low=None, ci_high=None, n_runs=0, passed=False, message=message
        )
    passed = OPS[assertion.op](est.value, assertion.value)
    verb = "meets" if passed else "violates"
    message = (
        f"measured {assertion.stat}({assertion.metric}) = {est.value:.6g} over {est.n} runs; "
        f"{verb} {assertion.op} {assertion.value:g}"
    )
    worst = None if passed or runs_dir is None else worst_run(assertion, runs, plan, runs_dir)
    return AssertionOutcome(
        **base,
        measured=est.value,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        n_runs=est.n,
        passed=passed,
        message=message,
        worst=worst,
    )


def _completion(check: CheckSpec, sweep: SweepResult) -> AssertionOutcome:
    failed = [row for row in sweep.table.to_pylist() if row["status"] != "ok"]
    passed = not failed or check.allow_failed_runs
    if failed:
        first = failed[0]
        message = f"{len(failed)} of {sweep.total} runs failed; first: {first['run_id']}: {first['error']}"
    else:
        message = f"all {sweep.total} runs completed"
    return AssertionOutcome(
        name="all runs completed",
        metric="status",
        stat="count",
        op="==",
        threshold=0.0,
        where={},
        measured=float(len(failed)),
        ci_low=None,
        ci_high=None,
        n_runs=sweep.total,
        passed=passed,
        message=message,
    )


# -- the baseline ----------------------------------------------------------------------------------


def load_baseline(check: CheckSpec, baseline: Path | None) -> SweepResults | None:
    """The baseline results a check compares against, validated before anything runs."""
    path = Path(baseline) if baseline is not None else check.baseline_results
    if path is None:
        if check.baseline:
            raise InputError(
                check.path,
                "baseline",
                "[[baseline]] tables need a baseline: --baseline RESULTS or baseline_results = 'path'",
            )
        return None
    if not check.baseline:
        raise InputError("<cli>", "--baseline", f"{check.path} has no [[baseline]] tables to judge")
    results = load_results(path)
    columns = results.table.column_names
    missing = [k for k in check.plan.parameter_keys if k not in columns]
    if missing:
        raise InputError(
            results.path,
            None,
            f"the baseline has no column for the check's parameter(s) {', '.join(missing)}",
        )
    for i, b in enumerate(check.baseline):
        if b.metric not in columns:
            raise InputError(
                check.path, f"baseline[{i}].metric", f"{b.metric!r} is not a column of {results.path}"
            )
    return results


def _rows_where(table: pa.Table, where: dict[str, Any]) -> pa.Table:
    """Successful baseline runs whose columns match ``where`` (numbers with a relative tolerance)."""
    keep = []
    cols = {k: table.column(k).to_pylist() for k in where if k in table.column_names}
    status = table.column("status").to_pylist() if "status" in table.column_names else ["ok"] * len(table)
    for i in range(len(table)):
        ok = status[i] == "ok"
        for k, wanted in where.items():
            value = cols[k][i] if k in cols else None
            if isinstance(wanted, dict | list) and isinstance(value, str):
                value = json.loads(value)
            ok = ok and _matches(value, wanted)
        keep.append(ok)
    return table.filter(pa.array(keep, pa.bool_()))


def _worst_runs(b: BaselineCheck, d: PairedDifference, current: Sample, sign: float) -> tuple[str, ...]:
    """The runs that regressed most: per pair (paired), else against the baseline mean."""
    lines = []
    if d.pairs:
        ranked = sorted(d.pairs, key=lambda p: -sign * p.delta)[: b.worst]
        for p in ranked:
            lines.append(
                f"{p.b_run or '?'} (conversation {p.conversation}, seed {p.seed}): {p.b:.4g} vs baseline "
                f"{p.a:.4g} ({sign * p.delta + 0.0:+.3g})"
            )
        return tuple(lines)
    valid = current.valid()
    if d.mean_a is None or not len(valid.values):
        return ()
    order = np.argsort(-sign * (valid.values - d.mean_a), kind="stable")[: b.worst]
    for i in order.tolist():
        run = valid.run_id[i] if len(valid.run_id) else "?"
        lines.append(
            f"{run} (conversation {valid.conversation[i]}, seed {valid.seed[i]}): {valid.values[i]:.4g} vs "
            f"baseline mean {d.mean_a:.4g} ({sign * (valid.values[i] - d.mean_a) + 0.0:+.3g})"
        )
    return tuple(lines)


def judge_baseline(
    b: BaselineCheck, table: pa.Table, plan: SweepPlan, baseline: SweepResults, seed: int = 0
) -> list[BaselineOutcome]:
    """One outcome per design point of the current sweep that ``b.where`` keeps."""
    params = plan.parameter_keys
    current = _selected(table, plan, b.where)
    base = _rows_where(baseline.table, b.where)
    base_points = design_points(base, params)
    sign = 1.0 if b.direction == "lower" else -1.0  # regression = sign × (current − baseline)
    out = []
    for key, (values, rows) in design_points(current, params).items():
        point = point_label(params, values)
        common = {
            "name": b.label(),
            "metric": b.metric,
            "point": point,
            "direction": b.direction,
            "judge": b.judge,
        }
        if b.metric not in current.column_names:
            out.append(
                BaselineOutcome(
                    **common,
                    tolerance=b.tolerance,
                    baseline=None,
                    measured=None,
                    regression=None,
                    ci_low=None,
                    ci_high=None,
                    ci_method="none",
                    n_runs=0,
                    n_baseline=0,
                    n_pairs=0,
                    passed=False,
                    message=f"no metric column {b.metric!r} in the current results",
                )
            )
            continue
        cur = sample_of(current, b.metric, rows)
        base_rows = base_points.get(key, (None, np.zeros(0, dtype=np.int64)))[1]
        ref = sample_of(base, b.metric, base_rows)
        d = paired_difference(ref, cur, _rng(seed, key, f"baseline:{b.metric}"))
        tol = b.tolerance * abs(d.mean_a) if (b.relative and d.mean_a is not None) else b.tolerance
        if d.delta is None:
            missing = "the baseline has no run" if d.n_a == 0 else "no current run"
            out.append(
                BaselineOutcome(
                    **common,
                    tolerance=tol,
                    baseline=d.mean_a,
                    measured=d.mean_b,
                    regression=None,
                    ci_low=None,
                    ci_high=None,
                    ci_method=d.method,
                    n_runs=d.n_b,
                    n_baseline=d.n_a,
                    n_pairs=0,
                    passed=False,
                    message=f"{missing} with a value of {b.metric} at {point}",
                )
            )
            continue
        regression = sign * d.delta + 0.0  # + 0.0: no "-0"
        low, high = (None, None) if d.low is None else sorted((sign * d.low + 0.0, sign * d.high + 0.0))
        beyond = regression > tol + 1e-12
        significant = low is not None and low > 0.0
        failed = beyond and (significant or b.judge == "mean")
        verb = "worse" if regression > 0 else "better" if regression < 0 else "unchanged"
        ci_text = "" if low is None else f", {d.ci_level:.0%} CI [{low:+.3g}, {high:+.3g}] ({d.method})"
        if failed:
            why = "beyond the tolerance" + (" and significant" if b.judge == "significant" else "")
        elif beyond:
            why = "beyond the tolerance but not significant (the CI includes 0)"
        else:
            why = "within the tolerance"
        message = (
            f"{b.metric} at {point}: {d.mean_b:.4g} vs baseline {d.mean_a:.4g}: "
            f"{f'{abs(regression):.3g} ' if regression else ''}{verb}"
            f"{ci_text}; tolerance {tol:.3g}: {why}"
        )
        out.append(
            BaselineOutcome(
                **common,
                tolerance=tol,
                baseline=d.mean_a,
                measured=d.mean_b,
                regression=regression,
                ci_low=low,
                ci_high=high,
                ci_method=d.method,
                n_runs=d.n_pairs or d.n_b,
                n_baseline=d.n_pairs or d.n_a,
                n_pairs=d.n_pairs,
                passed=not failed,
                message=message,
                worst_runs=_worst_runs(b, d, cur, sign) if b.worst else (),
            )
        )
    return out


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(
    check: CheckSpec,
    outcomes: list[AssertionOutcome],
    sweep: SweepResult,
    baseline: list[BaselineOutcome] | None = None,
    baseline_path: Path | None = None,
) -> str:
    """A Markdown summary: verdict, run counts, one table row per assertion (and per baseline
    comparison, with the worst runs of each failing one)."""
    baseline = baseline or []
    passed = all(o.passed for o in outcomes) and all(o.passed for o in baseline)
    n_failed = len(sweep.failed)
    lines = [
        f"## kame-sim check `{check.name}`: {'PASSED' if passed else 'FAILED'}",
        "",
    ]
    if check.description:
        lines += [check.description, ""]
    n_conv = len({r.conversation_id for r in check.plan.runs})
    lines += [
        f"{sweep.total} runs ({sweep.total - n_failed} ok, {n_failed} failed): "
        f"{_plural(len(check.plan.points), 'design point')} × "
        f"{_plural(len(check.plan.spec.seed_list), 'seed')}"
        f" × {_plural(n_conv, 'conversation')}. 95% CIs: cluster bootstrap over conversations"
        " (over runs when there is one conversation); they are reported, the point estimate is judged.",
        "",
        "| assertion | measured | 95% CI | threshold | runs | result |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        ci = f"[{_fmt(o.ci_low)}, {_fmt(o.ci_high)}]" if o.ci_low is not None else "–"
        threshold = (
            f"{o.stat}({o.metric}) {o.op} {o.threshold:g}{_where_text(o.where)}"
            if o.metric != "status"
            else "failed runs == 0"
        )
        measured = _fmt(o.measured) if o.measured is not None else "no data"
        result = "✅ pass" if o.passed else "❌ FAIL"
        lines.append(f"| {_cell(o.name)} | {measured} | {ci} | {_cell(threshold)} | {o.n_runs} | {result} |")
    for o in outcomes:
        if o.worst is not None:
            lines += [
                "",
                f"**{_cell(o.name)}**: {_cell(o.worst.text())}. A minimal failing delay schedule for it:",
                "",
                f"    {o.worst.shrink_command()}",
            ]
            if o.worst.shrunk is not None:
                lines += ["", f"Shrunk: {_cell(o.worst.shrunk)}"]
            if o.worst.reproducer is not None:
                lines += ["", "Reproduce it:", "", f"    {o.worst.reproducer}"]
    if baseline:
        lines += _baseline_markdown(baseline, baseline_path)
    return "\n".join(lines) + "\n"


def _baseline_markdown(outcomes: list[BaselineOutcome], path: Path | None) -> list[str]:
    lines = [
        "",
        f"### Against the baseline `{path}`" if path is not None else "### Against the baseline",
        "",
        "Regression = how much worse than the baseline (> 0 worse, < 0 better); 95% CI: paired bootstrap"
        " (runs paired by conversation and seed).",
        "",
        "| baseline check | design point | baseline | current | regression | 95% CI | tolerance | pairs"
        " | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        ci = f"[{o.ci_low:+.3g}, {o.ci_high:+.3g}]" if o.ci_low is not None and o.ci_high is not None else "–"
        reg = "–" if o.regression is None else f"{o.regression:+.4g}"
        result = "✅ pass" if o.passed else "❌ FAIL"
        lines.append(
            f"| {_cell(o.name)} | {_cell(o.point)} | {_fmt(o.baseline)} | {_fmt(o.measured)} | {reg} "
            f"| {ci} | {o.tolerance:.3g} | {o.n_pairs} | {result} |"
        )
    for o in outcomes:
        if o.passed:
            continue
        lines += ["", f"**{_cell(o.name)}** at {_cell(o.point)}: {_cell(o.message)}"]
        if o.worst_runs:
            lines += ["", "Worst runs:", *[f"- {_cell(w)}" for w in o.worst_runs]]
    return lines


def write_junit(
    path: Path,
    check: CheckSpec,
    outcomes: list[AssertionOutcome],
    seconds: float,
    baseline: list[BaselineOutcome] | None = None,
) -> None:
    """JUnit XML: one testcase per assertion (and per baseline comparison); a failed one carries the
    measured value (a baseline one, the worst runs too)."""
    baseline = baseline or []
    failures = sum(not o.passed for o in outcomes) + sum(not o.passed for o in baseline)
    n_tests = len(outcomes) + len(baseline)
    suites = ET.Element(
        "testsuites",
        name="kame-sim check",
        tests=str(n_tests),
        failures=str(failures),
        errors="0",
        time=f"{seconds:.3f}",
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=check.name,
        tests=str(n_tests),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{seconds:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="check", value=str(check.path))
    ET.SubElement(props, "property", name="runs", value=str(len(check.plan.runs)))
    for o in outcomes:
        case = ET.SubElement(
            suite, "testcase", classname=f"kame_sim.check.{check.name}", name=o.name, time="0"
        )
        if o.measured is not None:
            ET.SubElement(case, "system-out").text = o.message
        if not o.passed:
            failure = ET.SubElement(case, "failure", type="ThresholdFailed", message=o.message)
            failure.text = (
                f"measured: {_fmt(o.measured)}\nthreshold: {o.op} {o.threshold:g}\n"
                f"metric: {o.stat}({o.metric}){_where_text(o.where)}\nruns: {o.n_runs}"
            )
            if o.worst is not None:
                failure.text += (
                    f"\nworst run: {o.worst.run_id}\nseed: {o.worst.seed}\n"
                    f"conversation: {o.worst.conversation_id}\n"
                    f"{o.worst.condition.metric}: {o.worst.value:.6g}\n"
                    f"folder: {o.worst.folder}\nshrink: {o.worst.shrink_command()}"
                )
                if o.worst.shrunk is not None:
                    failure.text += f"\nshrunk: {o.worst.shrunk}"
                if o.worst.reproducer is not None:
                    failure.text += f"\nreproducer: {o.worst.reproducer}"
    for b in baseline:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"kame_sim.check.{check.name}.baseline",
            name=f"{b.name} at {b.point}",
            time="0",
        )
        worst = "\n".join(f"worst run: {w}" for w in b.worst_runs)
        ET.SubElement(case, "system-out").text = b.message + (f"\n{worst}" if worst else "")
        if not b.passed:
            failure = ET.SubElement(case, "failure", type="BaselineRegression", message=b.message)
            failure.text = (
                f"baseline: {_fmt(b.baseline)}\ncurrent: {_fmt(b.measured)}\n"
                f"regression: {'–' if b.regression is None else f'{b.regression:+.4g}'}\n"
                f"tolerance: {b.tolerance:.4g}\njudge: {b.judge}\npairs: {b.n_pairs}"
                + (f"\n{worst}" if worst else "")
            )
    make_output_dir(path.parent, "--junit")
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def run_check(
    check_path: Path,
    out_dir: Path | None = None,
    workers: int | None = None,
    junit: Path | None = None,
    markdown: Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    baseline: Path | None = None,
    cli_set: dict[str, Any] | None = None,
    shrink: Shrinker | None = None,
    batch_size: int | None = None,
) -> CheckResult:
    """Run a check file's sweep into ``out_dir`` (default ``traces/checks/<name>``) and judge it.

    Writes JUnit XML to ``junit`` and the Markdown summary to ``markdown`` when given (the
    summary text is also on the result). Bad input raises :class:`InputError` before any run;
    ``CheckResult.passed`` is the verdict (the CLI exits 1 when it is false). ``baseline`` (a sweep
    directory or results.parquet; default: the file's ``baseline_results``) is what the
    ``[[baseline]]`` tables compare against. ``resume`` is off
    by default, unlike for sweeps: run ids do not cover the code, so a gate re-run after a code
    change must not judge runs the old code made. ``shrink`` (``kame-sim check --shrink N``) is
    called with each failed assertion's worst run and the check's folder and returns the
    reproducer command and a summary, which the reports then name. ``batch_size`` (``--batch``)
    overrides the file's: real-front-end runs stepped as lockstep batches, the same verdict.
    """
    check = load_check(Path(check_path), cli_set)
    base = load_baseline(check, baseline)
    check_report_file(junit, "--junit", _JUNIT_MARK)
    check_report_file(markdown, "--markdown", _MARKDOWN_MARK)
    if junit is not None and markdown is not None and Path(junit).resolve() == Path(markdown).resolve():
        raise InputError(markdown, "--markdown", "is also the --junit file")
    out = Path(out_dir) if out_dir is not None else Path("traces") / "checks" / check.name
    for target, flag in ((junit, "--junit"), (markdown, "--markdown")):
        if target is not None:  # checked before the runs, not after them
            if Path(target).is_dir():
                raise InputError(target, flag, "is a folder, not a file")
            make_output_dir(Path(target).parent, flag)
    sweep = execute_plan(check.plan, out, workers, resume, progress, batch_size=batch_size)
    runs_dir = sweep.out_dir.resolve() / RUNS_DIR
    outcomes = [_judge(a, sweep.table, check.plan, runs_dir) for a in check.assertions]
    if shrink is not None:
        for i, o in enumerate(outcomes):
            if o.worst is not None:
                command, summary = shrink(o.worst, out)
                outcomes[i] = replace(o, worst=replace(o.worst, reproducer=command, shrunk=summary))
    outcomes.append(_completion(check, sweep))
    against = (
        [o for b in check.baseline for o in judge_baseline(b, sweep.table, check.plan, base)] if base else []
    )
    passed = all(o.passed for o in outcomes) and all(o.passed for o in against)
    base_path = base.path if base is not None else None
    text = render_markdown(check, outcomes, sweep, against, base_path)
    if junit is not None:
        write_junit(Path(junit), check, outcomes, sweep.wall_s, against)
    if markdown is not None:
        make_output_dir(Path(markdown).parent, "--markdown")
        Path(markdown).write_text(text, encoding="utf-8")
    return CheckResult(
        name=check.name,
        passed=passed,
        assertions=outcomes,
        sweep=sweep,
        markdown=text,
        junit_path=Path(junit) if junit is not None else None,
        markdown_path=Path(markdown) if markdown is not None else None,
        failures=[*(o for o in outcomes if not o.passed), *(o for o in against if not o.passed)],
        baseline=against,
        baseline_path=base_path,
    )
