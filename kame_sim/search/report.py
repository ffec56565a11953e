"""What a search leaves behind: the trials table, the best scenarios as runnable files, a report.

- ``trials.parquet``: one row per trial (number order): state, feasibility, objective, best so
  far, every searched parameter, every constraint's measured statistic, the spread of the
  objective metric across the trial's runs, run counts, where the runs are, and the wall time
  (the one column that differs between two identical studies).
- ``best/``: the ``search.top`` best *feasible* trials, one scenario file per trial x conversation
  x seed (:func:`kame_sim.scenario_file.write_scenario`), so each finding can be re-run and
  inspected with ``kame-sim run``. An infeasible trial is never written there.
- ``report/index.html`` with ``search.png``: objective per trial with the best-so-far line and
  the parameter importances; ``summary.txt``: the text the command prints at the end.

Importances are Optuna's PED-ANOVA (:class:`optuna.importance.PedAnovaImportanceEvaluator`): it
needs no extra library (fANOVA, Optuna's default, needs scikit-learn, which kame-sim does not
install), is deterministic, and asks what distinguishes the *best* trials from the rest -- the
question an adversarial search asks -- rather than what explains the variance everywhere.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from kame_sim.config import scenario_from_dict
from kame_sim.output_dir import OutputDir
from kame_sim.report.html import ReportSection, write_html_report
from kame_sim.report.publish import publish_report
from kame_sim.scenario_file import write_scenario
from kame_sim.search.objective import statistic
from kame_sim.search.runner import (
    BEST_DIR,
    PLOT_FILE,
    REPORT_DIR,
    SUMMARY_FILE,
    TRIALS_FILE,
    SearchResult,
    best_trials,
    decode,
    is_feasible,
)
from kame_sim.search.spec import trial_plan
from kame_sim.sweep.runner import typed_column

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _value(trial: FrozenTrial) -> float | None:
    return float(trial.value) if trial.state == TrialState.COMPLETE and trial.value is not None else None


def _better(a: float, b: float, minimize: bool) -> bool:
    return a < b if minimize else a > b


def trials_table(result: SearchResult) -> pa.Table:
    """One row per trial of the study (see the module doc for the columns)."""
    spec = result.plan.spec
    minimize = spec.objective.direction == "minimize"
    trials = result.trials()
    best: float | None = None
    best_so_far: list[float | None] = []
    for t in trials:
        v = _value(t)
        if v is not None and is_feasible(t) and (best is None or _better(v, best, minimize)):
            best = v
        best_so_far.append(best)
    columns: dict[str, pa.Array] = {
        "number": pa.array([t.number for t in trials], pa.int64()),
        "state": pa.array([t.state.name.lower() for t in trials], pa.string()),
        "feasible": pa.array([is_feasible(t) for t in trials], pa.bool_()),
        "objective": pa.array([_value(t) for t in trials], pa.float64()),
        "best_so_far": pa.array(best_so_far, pa.float64()),
    }
    for key in spec.space:
        values = [decode(spec, t.params)[key] if key in t.params else None for t in trials]
        columns[key] = typed_column(values)
    for c in spec.constraint:
        columns[c.label] = pa.array(
            [(t.user_attrs.get("kame_sim.constraints") or {}).get(c.label) for t in trials], pa.float64()
        )
    metric = spec.objective.metric
    per_run = [t.user_attrs.get("kame_sim.objective_runs") or [] for t in trials]
    for stat in ("min", "max"):
        columns[f"{metric}.{stat}"] = pa.array([statistic(runs, stat) for runs in per_run], pa.float64())
    columns["n_runs"] = pa.array([t.user_attrs.get("kame_sim.n_runs") for t in trials], pa.int64())
    columns["n_failed"] = pa.array([t.user_attrs.get("kame_sim.n_failed") for t in trials], pa.int64())
    columns["error"] = pa.array([t.user_attrs.get("kame_sim.error") for t in trials], pa.string())
    columns["folder"] = pa.array([t.user_attrs.get("kame_sim.folder") for t in trials], pa.string())
    columns["wall_s"] = pa.array([t.user_attrs.get("kame_sim.wall_s") for t in trials], pa.float64())
    return pa.table(columns)


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances over the complete trials (PED-ANOVA, see the module doc); ``{}`` when
    the study is too small to say (fewer than two complete trials, or nothing varied)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    try:
        found = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}
    return {k: float(v) for k, v in found.items() if math.isfinite(v)}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _best_header(result: SearchResult, trial: FrozenTrial, rank: int, conversation: str, seed: int) -> str:
    spec = result.plan.spec
    o = spec.objective
    lines = [
        f"kame-sim search {result.plan.name}: best #{rank} (trial {trial.number} of {len(result.trials())})",
        f"objective: {o.stat} of {o.metric} = {_fmt(_value(trial))} ({o.direction}) over the trial's "
        f"{trial.user_attrs.get('kame_sim.n_runs')} runs",
        f"this file: conversation {conversation}, seed {seed}",
    ]
    measured = trial.user_attrs.get("kame_sim.constraints") or {}
    if measured:
        lines.append("constraints: " + ", ".join(f"{k} (measured {_fmt(v)})" for k, v in measured.items()))
    lines.append(
        "parameters: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in decode(spec, trial.params).items())
    )
    lines.append("run it: kame-sim run THIS_FILE")
    return "\n".join(lines)


def write_best(result: SearchResult, top: OutputDir) -> list[Path]:
    """The best feasible trials as runnable scenario files in ``best/`` (see the module doc)."""
    written: list[Path] = []
    for rank, trial in enumerate(best_trials(result.study, result.plan.spec.search.top), start=1):
        sweep = trial_plan(result.plan, decode(result.plan.spec, trial.params))
        for run in sweep.runs:
            conversation = _UNSAFE.sub("_", run.conversation_id).strip("._-") or "conversation"
            name = f"{BEST_DIR}/{rank}-trial{trial.number:04d}-{conversation}-seed{run.seed}.toml"
            path = top.record(name)
            scenario = scenario_from_dict(run.scenario, path)
            written.append(
                write_scenario(scenario, path, _best_header(result, trial, rank, conversation, run.seed))
            )
    return written


def plot_search(result: SearchResult, path: Path, found: dict[str, float], dpi: int = 110) -> Path:
    """Objective per trial (feasible / infeasible, best-so-far line, the base scenario's value) and
    the parameter importances, side by side."""
    spec = result.plan.spec
    minimize = spec.objective.direction == "minimize"
    trials = result.trials()
    fig = Figure(figsize=(11, 3.8), dpi=dpi, layout="constrained")
    ax, bars = fig.subplots(1, 2, width_ratios=[1.8, 1])
    feasible = [(t.number, _value(t)) for t in trials if is_feasible(t)]
    infeasible = [(t.number, _value(t)) for t in trials if _value(t) is not None and not is_feasible(t)]
    if feasible:
        x, y = zip(*feasible, strict=True)
        ax.scatter(x, y, s=22, color="C0", label="feasible trial", zorder=3)
    if infeasible:
        x, y = zip(*infeasible, strict=True)
        ax.scatter(
            x, y, s=26, marker="x", color="#999999", label="infeasible (outside the envelope)", zorder=2
        )
    steps: list[tuple[int, float]] = []
    best: float | None = None
    for number, value in sorted(feasible, key=lambda p: p[0]):
        if value is not None and (best is None or _better(value, best, minimize)):
            best = value
        if best is not None:
            steps.append((number, best))
    if steps:
        sx, sy = zip(*steps, strict=True)
        ax.step(sx, sy, where="post", color="C3", lw=1.8, label="best so far", zorder=4)
    if result.base is not None and result.base.objective is not None:
        ax.axhline(result.base.objective, color="C2", ls="--", lw=1.2, label="base scenario")
    o = spec.objective
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial", fontsize=9)
    ax.set_ylabel(f"{o.stat} {o.metric}", fontsize=9)
    failed = sum(1 for t in trials if t.state != TrialState.COMPLETE)
    extra = f", {failed} failed (not drawn)" if failed else ""
    ax.set_title(f"objective per trial ({o.direction}; {len(trials)} trials{extra})", fontsize=10)
    ax.grid(True, color="#e5e5e5", lw=0.6)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4)
    if found:
        names = list(found)[::-1]
        bars.barh(names, [found[n] for n in names], color="C1")
        bars.set_xlim(0, max(1.0, max(found.values())))
        bars.tick_params(labelsize=8)
        bars.set_xlabel("importance (PED-ANOVA, sums to 1)", fontsize=9)
    else:
        bars.text(0.5, 0.5, "too few complete trials\nfor importances", ha="center", va="center", fontsize=9)
        bars.set_axis_off()
    bars.set_title("parameter importances", fontsize=10)
    fig.suptitle(f"kame-sim search: {result.plan.name}", fontsize=11, fontweight="bold")
    fig.savefig(path, format="png")
    return path


@dataclass(frozen=True)
class SearchOutputs:
    """Where the outputs went, and the summary text."""

    trials_path: Path
    best_files: list[Path]
    report_index: Path
    summary: str


def summary_text(result: SearchResult, found: dict[str, float], best_files: list[Path]) -> str:
    """The one-screen summary: budget, infeasible/failed counts, best value and its parameters vs
    the base scenario, importances, where the files are."""
    spec = result.plan.spec
    o = spec.objective
    trials = result.trials()
    n_infeasible = sum(1 for t in trials if t.state == TrialState.COMPLETE and not is_feasible(t))
    n_failed = sum(1 for t in trials if t.state != TrialState.COMPLETE)
    conversations = len(spec.conversations) if spec.conversations else 1
    lines = [
        f"search {result.plan.name}: {len(trials)} trials "
        f"({result.executed} run now, {result.resumed} resumed), "
        f"{n_infeasible} infeasible, {n_failed} failed, in {result.wall_s:.1f} s",
        f"objective: {o.direction} {o.stat} {o.metric} over {conversations} conversation(s) x "
        f"{len(spec.seed_list)} seed(s), sampler {spec.search.sampler} (seed {spec.search.seed})",
    ]
    best = best_trials(result.study, 1)
    base = result.base.objective if result.base is not None else None
    if best:
        value = _value(best[0])
        vs = ""
        if base is not None and value is not None:
            vs = f"; base scenario {base:.4g} ({value - base:+.4g})"
        lines.append(f"best: {value:.4g} (trial {best[0].number}){vs}")
        for key, v in decode(spec, best[0].params).items():
            lines.append(f"  {key} = {_fmt(v)}")
        for label, measured in (best[0].user_attrs.get("kame_sim.constraints") or {}).items():
            lines.append(f"  constraint {label}: measured {_fmt(measured)}")
    else:
        lines.append(
            "best: none (no feasible trial)" + (f"; base scenario {base:.4g}" if base is not None else "")
        )
    if found:
        lines.append("importances (PED-ANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
    out = result.out_dir
    if best_files:
        more = f" (+{len(best_files) - 1} more in {out / BEST_DIR})" if len(best_files) > 1 else ""
        lines.append(f"best scenarios: {best_files[0]}{more}")
    lines.append(f"trials: {out / TRIALS_FILE}   report: {out / REPORT_DIR / 'index.html'}")
    return "\n".join(lines)


def _report_rows(table: pa.Table, limit: int = 200) -> list[dict[str, Any]]:
    rows = table.drop_columns(["wall_s", "folder"]).to_pylist()[:limit]
    return [{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def write_outputs(result: SearchResult) -> SearchOutputs:
    """Write ``trials.parquet``, ``best/``, ``summary.txt`` and ``report/`` into the search folder.

    Files of an earlier call that this one does not write again (a trial no longer among the
    best) are removed -- only files kame-sim listed in the folder's manifest.
    """
    top = OutputDir(result.out_dir, "search directory")
    table = trials_table(result)
    tmp = top.record(TRIALS_FILE + ".tmp")
    pq.write_table(table, tmp)
    trials_path = top.record(TRIALS_FILE)
    tmp.replace(trials_path)
    best_files = write_best(result, top)
    found = importances(result.study)
    summary = summary_text(result, found, best_files)
    top.record(SUMMARY_FILE).write_text(summary + "\n", encoding="utf-8")
    current = {p.relative_to(result.out_dir).as_posix() for p in best_files}
    top.remove_previous(keep=[n for n in top.written if not n.startswith(BEST_DIR + "/") or n in current])

    def build(staging: Path) -> Path:
        staging.mkdir(parents=True, exist_ok=True)
        plot = plot_search(result, staging / PLOT_FILE, found)
        sections = [
            ReportSection("Summary", body=f"<pre>{html.escape(summary)}</pre>", body_is_html=True),
            ReportSection("Objective and importances", images=[plot]),
            ReportSection("Trials", rows=_report_rows(table)),
        ]
        return write_html_report(staging, f"kame-sim search: {result.plan.name}", sections)

    index = publish_report(result.out_dir / REPORT_DIR, build)
    return SearchOutputs(trials_path, best_files, index, summary)
