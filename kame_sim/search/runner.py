"""The search loop: Optuna asks for a point, kame-sim runs it, the objective goes back; resumable.

Each trial is a one-point sweep (:func:`~kame_sim.search.spec.trial_plan`) run by the sweep's
own :func:`~kame_sim.sweep.runner.execute_plan` into ``trials/NNNN/`` -- so every trial folder is
a sweep folder (``results.parquet``, ``runs/<...>/trace.arrows``) that ``kame-sim report`` and
``metrics`` read as they read any sweep (and ``compare`` two of its runs). The base scenario
(base + ``[set]``, nothing searched) is run once too, into ``base/``, so the summary can say how
much worse the best point is than where the search started.

Why ask/tell, one trial at a time: the study is the journal file, and a trial's parameters
depend only on the trials before it, so the same spec and sampler seed give the same trials
(bit for bit) whether the study ran in one go or was resumed. To make that hold across a resume
the sampler is made afresh before every trial, seeded from ``(seed, trial number)``: a sampler's
random state lives in memory only, so one carried across trials would differ after a restart.
The runs of one trial may go to worker processes (``workers``); each run is seeded, so that does
not change the result. A trial whose runs were cut off (Ctrl-C, a kill) stays ``RUNNING`` in the
journal; a resume marks it failed and does not count it against the budget.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from kame_sim.errors import InputError
from kame_sim.output_dir import OutputDir
from kame_sim.paths import make_output_dir
from kame_sim.search.objective import TrialValue, evaluate_rows
from kame_sim.search.spec import Choices, Interval, SearchPlan, SearchSpec, trial_plan
from kame_sim.sweep.runner import FIXED_COLUMNS, execute_plan
from kame_sim.sweep.spec import value_text

JOURNAL_FILE = "study.journal"
RESOLVED_FILE = "search.resolved.json"
TRIALS_FILE = "trials.parquet"
SUMMARY_FILE = "summary.txt"
BEST_DIR = "best"
REPORT_DIR = "report"
PLOT_FILE = "search.png"
#: What a search writes at the top of its folder (checked before the first trial runs).
SEARCH_FILES = tuple(f + tmp for f in (RESOLVED_FILE, TRIALS_FILE, SUMMARY_FILE) for tmp in ("", ".tmp"))
TRIALS_DIR = "trials"
BASE_DIR = "base"
HASH_ATTR = "kame_sim.spec_hash"
_DONE = "kame_sim.done"  # set on every trial the loop finished (complete or failed): the budget

#: ``progress(done, total, best)``: trials finished (earlier ones of a resumed study included),
#: the budget, and the best feasible value so far (None before the first).
SearchProgress = Callable[[int, int, float | None], None]


@dataclass(frozen=True)
class TrialRuns:
    """What a trial's runs gave: one metrics row per finished run, an error line per failed one."""

    rows: list[dict[str, Any]]
    errors: list[str]
    folder: str | None = None  # where the runs are, relative to the search folder


#: ``evaluate(label, params) -> TrialRuns``: run the base scenario changed by ``params`` (scenario
#: values by dotted key; ``{}`` for the base itself) and return its runs. ``label`` names the
#: folder (``trials/0007`` or ``base``). Tests inject a synthetic one; see :class:`SimulationEvaluator`.
Evaluator = Callable[[str, dict[str, Any]], TrialRuns]


class SimulationEvaluator:
    """Runs a trial as a one-point sweep into ``<out>/<label>/`` (resuming finished runs)."""

    def __init__(self, plan: SearchPlan, out_dir: Path, workers: int = 1) -> None:
        self.plan = plan
        self.out_dir = out_dir
        self.workers = workers

    def __call__(self, label: str, params: dict[str, Any]) -> TrialRuns:
        sweep = trial_plan(self.plan, params)
        result = execute_plan(sweep, self.out_dir / label, self.workers, resume=True)
        skip = {*FIXED_COLUMNS, *sweep.parameter_keys}
        rows, errors = [], []
        for row in result.table.to_pylist():
            if row["status"] == "ok":
                rows.append({k: v for k, v in row.items() if k not in skip})
            else:
                errors.append(f"run {row['run_id']}: {row['error']}")
        return TrialRuns(rows, errors, label)


# --- the space in Optuna's terms -------------------------------------------------------------


def _choice_labels(dim: Choices) -> list[Any]:
    """What Optuna sees for each choice: the value itself when it is a plain scalar, else a label
    (``lognormal+median=0.25+sigma=0.11``) -- Optuna stores only scalars; :func:`decode` maps back."""
    scalars = all(isinstance(v, str | int | float | bool) for v in dim.choices)
    # 1, 1.0 and true are distinct choices but equal in Python (and to Optuna): label those too
    clash = any(a == b for i, a in enumerate(dim.choices) for b in dim.choices[i + 1 :])
    if scalars and not clash:
        return list(dim.choices)
    labels = [
        v if isinstance(v, str) else value_text(v) if isinstance(v, dict | list) else json.dumps(v)
        for v in dim.choices
    ]
    return labels if len(set(labels)) == len(labels) else [f"#{i}:{t}" for i, t in enumerate(labels)]


def distributions(spec: SearchSpec) -> dict[str, BaseDistribution]:
    """One Optuna distribution per ``[space]`` key, in file order."""
    out: dict[str, BaseDistribution] = {}
    for key, dim in spec.space.items():
        if isinstance(dim, Choices):
            out[key] = CategoricalDistribution(_choice_labels(dim))
        elif dim.integer:
            out[key] = IntDistribution(int(dim.low), int(dim.high), log=dim.log, step=int(dim.step or 1))
        else:
            out[key] = FloatDistribution(float(dim.low), float(dim.high), log=dim.log, step=dim.step)
    return out


def decode(spec: SearchSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's parameter values -> scenario values (a choice label back to its table)."""
    values: dict[str, Any] = {}
    for key, dim in spec.space.items():
        value = params[key]
        if isinstance(dim, Choices):
            value = dim.choices[_choice_labels(dim).index(value)]
        elif isinstance(dim, Interval) and not dim.integer:
            value = float(value)
        values[key] = value
    return values


def make_sampler(spec: SearchSpec, number: int) -> optuna.samplers.BaseSampler:
    """The sampler for trial ``number``, seeded from (sampler seed, trial number); see the module doc.

    TPE is multivariate (it models the parameters jointly, which finds interactions such as
    "high median *and* wide spread") and reads the constraints (``Trial.set_constraint``);
    CMA-ES and random search ignore them while sampling (infeasible trials are still never best).
    """
    seed = int(np.random.SeedSequence([spec.search.seed, number]).generate_state(1)[0])
    settings = spec.search
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "tpe":
            extra = {} if settings.startup_trials is None else {"n_startup_trials": settings.startup_trials}
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, **extra)
        if settings.sampler == "cmaes":
            extra = {} if settings.startup_trials is None else {"n_startup_trials": settings.startup_trials}
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **extra)
        return optuna.samplers.RandomSampler(seed=seed)


# --- the study -------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """What a search did: the study, its trials table, the best trials and the base's value."""

    out_dir: Path
    plan: SearchPlan
    study: optuna.Study
    base: TrialValue | None
    executed: int  # trials run by this call
    resumed: int  # trials found done in the journal
    wall_s: float

    def trials(self) -> list[FrozenTrial]:
        """Every trial of the study, in number order."""
        return sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number)


def default_out_dir(plan: SearchPlan) -> Path:
    """``traces/search/<name>`` (next to ``traces/sweeps/``; git-ignored)."""
    return Path("traces") / "search" / plan.name


def is_feasible(trial: FrozenTrial) -> bool:
    """A complete trial whose constraints all hold (no constraints: every complete trial)."""
    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


def best_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` best feasible trials, best first (ties: the earlier trial first)."""
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    feasible = [t for t in study.get_trials(deepcopy=False) if is_feasible(t) and t.value is not None]
    return sorted(feasible, key=lambda t: (sign * float(t.value or 0.0), t.number))[:k]


def _open_study(plan: SearchPlan, top: OutputDir, resume: bool) -> tuple[optuna.Study, bool]:
    """Create the study, or load it for ``--resume``; refuse a study of another spec."""
    journal = top.root / JOURNAL_FILE
    exists = journal.exists()
    if exists and not resume:
        raise InputError(
            top.root,
            "study",
            f"holds a search already ({JOURNAL_FILE}); --resume continues it, or choose another --out",
        )
    top.check([JOURNAL_FILE])
    spec_hash = plan.spec_hash()
    path = top.record(JOURNAL_FILE)
    storage = JournalStorage(JournalFileBackend(str(path)))
    direction = plan.spec.objective.direction
    if exists:
        try:
            study = optuna.load_study(study_name=plan.name, storage=storage)
        except KeyError:
            raise InputError(path, "study", f"holds no study named {plan.name!r}") from None
        found = study.user_attrs.get(HASH_ATTR)
        if found != spec_hash:
            raise InputError(
                path,
                "study",
                f"was made by another search spec (hash {found}, this spec {spec_hash}): only search.trials "
                "and search.top may change on --resume; choose another --out for a new search",
            )
        return study, True
    study = optuna.create_study(study_name=plan.name, storage=storage, direction=direction)
    study.set_user_attr(HASH_ATTR, spec_hash)
    return study, False


def _tell(study: optuna.Study, trial: optuna.Trial, value: TrialValue, runs: TrialRuns, wall: float) -> None:
    trial.set_user_attr("kame_sim.constraints", value.constraints)
    trial.set_user_attr("kame_sim.objective_runs", list(value.objective_runs))
    trial.set_user_attr("kame_sim.n_runs", value.n_runs)
    trial.set_user_attr("kame_sim.n_failed", value.n_failed)
    trial.set_user_attr("kame_sim.error", runs.errors[0] if runs.errors else None)
    trial.set_user_attr("kame_sim.folder", runs.folder)
    trial.set_user_attr("kame_sim.wall_s", wall)
    for label, amount in value.violations.items():
        trial.set_constraint(label, amount)
    trial.set_user_attr(_DONE, True)
    if value.objective is None or not math.isfinite(value.objective):
        if not runs.errors:
            why = "the objective metric is undefined in every run"
            trial.set_user_attr("kame_sim.error", why)
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value.objective)


def run_study(
    plan: SearchPlan,
    out_dir: Path | None = None,
    resume: bool = False,
    progress: SearchProgress | None = None,
    evaluate: Evaluator | None = None,
    workers: int = 1,
    baseline: bool = True,
) -> SearchResult:
    """Run (or, with ``resume``, continue) the study up to ``search.trials`` finished trials.

    ``evaluate`` defaults to :class:`SimulationEvaluator` (tests give a synthetic one). Bad input
    (an existing study without ``resume``, a study of another spec, files kame-sim did not write)
    raises :class:`InputError` before any trial runs.
    """
    started = time.perf_counter()
    if workers < 1:
        raise InputError("<cli>", "--workers", f"must be at least 1, got {workers}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(plan)
    top = OutputDir(out_dir, "search directory")
    top.check(SEARCH_FILES)  # every check before anything is written
    OutputDir(out_dir / REPORT_DIR, "report directory").check(["index.html", PLOT_FILE])
    make_output_dir(out_dir, "search directory")
    study, resumed_study = _open_study(plan, top, resume)
    tmp = top.record(RESOLVED_FILE + ".tmp")
    tmp.write_text(json.dumps(plan.resolved(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(top.record(RESOLVED_FILE))
    evaluate = evaluate or SimulationEvaluator(plan, out_dir, workers)

    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)  # cut off last time: not counted (no _DONE)
    spec = plan.spec
    budget = spec.search.trials
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(_DONE))
    resumed = done if resumed_study else 0
    base = None
    if baseline:
        base_runs = evaluate(BASE_DIR, {})
        base = evaluate_rows(base_runs.rows, spec.objective, spec.constraint, len(base_runs.errors))

    def best_value() -> float | None:
        best = best_trials(study, 1)
        return float(best[0].value) if best and best[0].value is not None else None

    if progress is not None:
        progress(done, budget, best_value())
    space = distributions(spec)
    executed = 0
    while done < budget:
        number = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(spec, number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # CMA-ES: "constraints ... will not use them"
            trial = study.ask(space)
            tick = time.perf_counter()
            runs = evaluate(f"{TRIALS_DIR}/{trial.number:04d}", decode(spec, trial.params))
            value = evaluate_rows(runs.rows, spec.objective, spec.constraint, len(runs.errors))
            _tell(study, trial, value, runs, time.perf_counter() - tick)
        done += 1
        executed += 1
        if progress is not None:
            progress(done, budget, best_value())
    return SearchResult(out_dir, plan, study, base, executed, resumed, time.perf_counter() - started)
