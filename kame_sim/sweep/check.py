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
a CI gate must be deterministic) and compares it with the threshold. A run that failed fails the
check too (the implicit "all runs completed" assertion): a gate that silently ignores crashing
runs would pass exactly when things are worst. Results go to JUnit XML (one testcase per
assertion, which every CI system renders) and a Markdown table (for job summaries / PR comments).
"""

from __future__ import annotations

import difflib
import math
import operator
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kame_sim.config import read_toml, validation_to_input_error
from kame_sim.errors import InputError
from kame_sim.metrics import RUN_METRIC_COLUMNS, aggregate
from kame_sim.sweep.runner import ProgressCallback, SweepResult, execute_plan
from kame_sim.sweep.spec import SweepPlan, flatten_dotted, load_sweep, parse_spec, plan_sweep

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
CHECK_KEYS = frozenset({"name", "description", "sweep", "assert", "allow_failed_runs"})


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


class _CheckHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    sweep: str | None = None
    allow_failed_runs: bool = False
    assertions: list[Assertion] = Field(..., alias="assert", min_length=1)


@dataclass(frozen=True)
class CheckSpec:
    """A validated check: its sweep plan and assertions."""

    path: Path
    name: str
    description: str | None
    plan: SweepPlan
    assertions: list[Assertion]
    allow_failed_runs: bool


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


@dataclass
class CheckResult:
    """The check's verdict, per assertion, plus the sweep it ran."""

    name: str
    passed: bool
    assertions: list[AssertionOutcome]
    sweep: SweepResult
    markdown: str
    junit_path: Path | None = None
    markdown_path: Path | None = None
    failures: list[AssertionOutcome] = field(default_factory=list)


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


def load_check(path: Path) -> CheckSpec:
    """Read a check file: its sweep (inline or referenced) and its assertions, all validated."""
    path = Path(path)
    data = read_toml(path, "check")
    header_data = {k: v for k, v in data.items() if k in CHECK_KEYS}
    sweep_data = {k: v for k, v in data.items() if k not in CHECK_KEYS}
    for item in header_data.get("assert") or []:
        if isinstance(item, dict) and isinstance(item.get("where"), dict):
            item["where"] = dict(flatten_dotted(item["where"], frozenset()))
    try:
        header = _CheckHeader.model_validate(header_data)
    except ValidationError as exc:
        raise validation_to_input_error(exc, path) from None
    if header.sweep is not None:
        if sweep_data:
            key = next(iter(sweep_data))
            raise InputError(path, key, "give the sweep inline or as sweep = 'path', not both")
        plan = load_sweep((path.resolve().parent / header.sweep).resolve())
    else:
        if "base" not in sweep_data:
            raise InputError(
                path, "base", "a check needs a sweep: inline keys (base = ...) or sweep = 'path'"
            )
        sweep_data.setdefault("name", header.name or path.stem)
        plan = plan_sweep(parse_spec(sweep_data, path), path)
    _check_filters(path, plan, header.assertions)
    _check_metrics(path, header.assertions)
    return CheckSpec(
        path=path,
        name=header.name or path.stem,
        description=header.description,
        plan=plan,
        assertions=header.assertions,
        allow_failed_runs=header.allow_failed_runs,
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


def _check_filters(path: Path, plan: SweepPlan, assertions: list[Assertion]) -> None:
    """Every ``where`` key must be a parameter and match some run, or the check judges nothing."""
    for i, assertion in enumerate(assertions):
        for key, wanted in assertion.where.items():
            field_name = f"assert[{i}].where.{key}"
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


def _judge(assertion: Assertion, table: pa.Table, plan: SweepPlan) -> AssertionOutcome:
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
    return AssertionOutcome(
        **base,
        measured=est.value,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        n_runs=est.n,
        passed=passed,
        message=message,
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


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(check: CheckSpec, outcomes: list[AssertionOutcome], sweep: SweepResult) -> str:
    """A Markdown summary: verdict, run counts, and one table row per assertion."""
    passed = all(o.passed for o in outcomes)
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
    return "\n".join(lines) + "\n"


def write_junit(path: Path, check: CheckSpec, outcomes: list[AssertionOutcome], seconds: float) -> None:
    """JUnit XML: one testcase per assertion; a failed one carries the measured value."""
    failures = sum(not o.passed for o in outcomes)
    suites = ET.Element(
        "testsuites",
        name="kame-sim check",
        tests=str(len(outcomes)),
        failures=str(failures),
        errors="0",
        time=f"{seconds:.3f}",
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=check.name,
        tests=str(len(outcomes)),
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
    path.parent.mkdir(parents=True, exist_ok=True)
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
) -> CheckResult:
    """Run a check file's sweep into ``out_dir`` (default ``traces/checks/<name>``) and judge it.

    Writes JUnit XML to ``junit`` and the Markdown summary to ``markdown`` when given (the
    summary text is also on the result). Bad input raises :class:`InputError` before any run;
    ``CheckResult.passed`` is the verdict (the CLI exits 1 when it is false). ``resume`` is off
    by default, unlike for sweeps: run ids do not cover the code, so a gate re-run after a code
    change must not judge runs the old code made.
    """
    check = load_check(Path(check_path))
    check_report_file(junit, "--junit", _JUNIT_MARK)
    check_report_file(markdown, "--markdown", _MARKDOWN_MARK)
    if junit is not None and markdown is not None and Path(junit).resolve() == Path(markdown).resolve():
        raise InputError(markdown, "--markdown", "is also the --junit file")
    out = Path(out_dir) if out_dir is not None else Path("traces") / "checks" / check.name
    sweep = execute_plan(check.plan, out, workers, resume, progress)
    outcomes = [_judge(a, sweep.table, check.plan) for a in check.assertions]
    outcomes.append(_completion(check, sweep))
    passed = all(o.passed for o in outcomes)
    text = render_markdown(check, outcomes, sweep)
    if junit is not None:
        write_junit(Path(junit), check, outcomes, sweep.wall_s)
    if markdown is not None:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(text, encoding="utf-8")
    return CheckResult(
        name=check.name,
        passed=passed,
        assertions=outcomes,
        sweep=sweep,
        markdown=text,
        junit_path=Path(junit) if junit is not None else None,
        markdown_path=Path(markdown) if markdown is not None else None,
        failures=[o for o in outcomes if not o.passed],
    )
