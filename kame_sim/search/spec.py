"""Search specs: a base scenario, an objective, a search space, constraints and a trial budget.

A search file is TOML validated with pydantic (strict, unknown keys are errors), like a sweep file
(:mod:`kame_sim.sweep.spec`), whose pieces it reuses: ``base``, ``seeds``, ``[[conversations]]``
and ``[set]`` mean exactly what they mean there, and every trial is planned as a one-point sweep
(:func:`trial_plan`), so a trial's runs are ordinary sweep runs.

Everything is checked **before the first trial runs**: metric names (a typo lists close names),
bounds (``low > high``, empty choices, ``log`` with ``low <= 0``), the budget, and every searched
key, by building the scenario at each bound and each choice of the space. Each problem is one
:class:`InputError` line naming the search file and the key (``space.llm.ttft.median``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kame_sim import __version__
from kame_sim.config import MAX_SEED, read_toml, validation_to_input_error
from kame_sim.errors import InputError
from kame_sim.sweep.spec import (
    ConversationRef,
    PlainName,
    Seeds,
    SweepPlan,
    SweepSpec,
    flatten_dotted,
    metric_names,
    plan_sweep,
)

#: Most trials one search may run (a budget, not a target: a typo of 1e9 fails at once).
MAX_TRIALS = 10_000
#: Most runs one trial may plan (conversations x seeds): a trial is meant to be small.
MAX_RUNS_PER_TRIAL = 1_000
#: The samplers a spec may name; see docs/search.md for what each does with constraints.
SAMPLERS = ("tpe", "cmaes", "random")
#: ``p`` followed by a percentile, e.g. ``p95``, ``p5``, ``p99.9``.
_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?|100)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def check_stat(stat: str) -> str:
    """``mean``, ``median``, ``min``, ``max`` or ``pNN`` (a percentile 0..100); the name itself."""
    if stat in ("mean", "median", "min", "max") or _PERCENTILE.fullmatch(stat):
        return stat
    raise ValueError(f"{stat!r} is not a statistic (mean, median, min, max or pNN such as p95)")


class ObjectiveSpec(_Strict):
    """What a trial is worth: ``stat`` of ``metric`` over the trial's runs (conversations x seeds)."""

    metric: str
    stat: str = "mean"
    direction: Literal["minimize", "maximize"]

    @field_validator("stat")
    @classmethod
    def _stat(cls, value: str) -> str:
        return check_stat(value)


class ConstraintSpec(_Strict):
    """A bound on a realised metric (``stat`` of ``metric`` over the trial's runs, ``op`` ``value``).

    Keeps the search honest: the worst case *within* an envelope, not the trivial one outside it.
    """

    metric: str
    stat: str = "mean"
    op: Literal["<=", ">="]
    value: float

    @field_validator("stat")
    @classmethod
    def _stat(cls, value: str) -> str:
        return check_stat(value)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @property
    def label(self) -> str:
        """``ttft_median_s.median<=1.5``: the constraint's column name and its short text."""
        return f"{self.metric}.{self.stat}{self.op}{self.value:g}"


class SearchSettings(_Strict):
    """The ``[search]`` table: budget, sampler and its seed, and how many best trials to keep."""

    trials: int = Field(..., ge=1, le=MAX_TRIALS, description="trials in the whole study")
    sampler: Literal["tpe", "cmaes", "random"] = "tpe"
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the sampler's seed")
    startup_trials: int | None = Field(
        None, ge=0, le=MAX_TRIALS, description="random trials before TPE / CMA-ES model (default: Optuna's)"
    )
    top: int = Field(3, ge=1, le=100, description="best feasible trials written to best/")


class Interval(_Strict):
    """A numeric dimension: floats, or integers when ``low``, ``high`` (and ``step``) are integers."""

    low: int | float
    high: int | float
    log: bool = False
    step: int | float | None = None

    @model_validator(mode="after")
    def _valid(self) -> Interval:
        numbers = [self.low, self.high, *([] if self.step is None else [self.step])]
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError("low, high and step must be finite")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not exceed high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("log = true needs low > 0")
        if self.step is not None:
            if self.step <= 0:
                raise ValueError(f"step must be > 0, got {self.step:g}")
            if self.log:
                raise ValueError("log = true and step cannot be combined")
        return self

    @property
    def integer(self) -> bool:
        """Integers when every number given is a TOML integer (``1``, not ``1.0``)."""
        return all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)

    def bounds(self) -> list[int | float]:
        """The values :func:`plan_search` builds a scenario at: both ends (the highest on the grid)."""
        if self.step is None or self.low == self.high:
            return [self.low, self.high] if self.low != self.high else [self.low]
        top = self.low + math.floor((self.high - self.low) / self.step + 1e-9) * self.step
        return [self.low, int(top) if self.integer else float(top)]


class Choices(_Strict):
    """A categorical dimension: one of the listed values (numbers, strings, booleans or tables)."""

    choices: list[Any] = Field(..., min_length=1, max_length=1000)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        texts = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(texts)) != len(texts):
            raise ValueError("choices must be distinct")
        return value


Dimension = Interval | Choices


class SearchSpec(_Strict):
    """A whole search file (the TOML keys, validated)."""

    name: PlainName = Field(None, description="search name (default: the file's stem)")
    base: str = Field(..., description="base scenario TOML, relative to the search file")
    seeds: Seeds = Field(1, description="seeds per trial: a list, or n meaning 0..n-1")
    conversations: list[ConversationRef] | None = None
    set: dict[str, Any] = Field(default_factory=dict, description="fixed dotted-key overrides")
    objective: ObjectiveSpec
    search: SearchSettings
    space: dict[str, Dimension] = Field(..., min_length=1)
    constraint: list[ConstraintSpec] = Field(default_factory=list, max_length=100)

    @property
    def seed_list(self) -> list[int]:
        """The seeds every trial is run with."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class SearchPlan:
    """A validated search: where it came from, its space, and how to plan one trial."""

    spec_path: Path
    spec: SearchSpec
    name: str
    base_path: Path
    cli_set: dict[str, Any] = _field(default_factory=dict)

    @property
    def runs_per_trial(self) -> int:
        return len(self.spec.seed_list) * (len(self.spec.conversations) if self.spec.conversations else 1)

    def spec_hash(self) -> str:
        """What a resumed study must share with the one it continues: everything that changes a
        trial's meaning (the spec minus the budget and ``top``, ``--set``, the base file's bytes)."""
        spec = self.spec.model_dump(mode="json")
        spec["search"].pop("trials")
        spec["search"].pop("top")
        blob = json.dumps(
            {
                "spec": spec,
                "cli_set": self.cli_set,
                "base": hashlib.sha256(self.base_path.read_bytes()).hexdigest(),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def resolved(self) -> dict[str, Any]:
        """What ``search.resolved.json`` records: enough to see what was searched, and how."""
        return {
            "kame_sim_version": __version__,
            "name": self.name,
            "spec_path": str(self.spec_path),
            "base": str(self.base_path),
            "spec": self.spec.model_dump(mode="json"),
            "cli_set": self.cli_set,
            "spec_hash": self.spec_hash(),
        }


def _one_line(exc: ValidationError, source: Path, prefix: str) -> InputError:
    error = validation_to_input_error(exc, source)
    field = ".".join(p for p in (prefix, error.field) if p) or None
    return InputError(source, field, error.message)


def _dimension(key: str, value: Any, source: Path) -> Dimension:
    """One ``[space]`` entry: ``{low, high, ...}`` or ``{choices = [...]}``, each reported at its key."""
    where = f"space.{key}"
    if not isinstance(value, dict):
        raise InputError(source, where, "expected a {low, high} table or a {choices = [...]} table")
    model: type[Interval] | type[Choices] = Choices if "choices" in value else Interval
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _one_line(exc, source, where) from None


def parse_search(data: dict[str, Any], source: Path) -> SearchSpec:
    """Validate the keys of a parsed search file (dotted keys of ``[set]``/``[space]`` flattened)."""
    data = dict(data)
    if isinstance(data.get("set"), dict):
        data["set"] = dict(flatten_dotted(data["set"], frozenset({"kind"})))
    if isinstance(data.get("space"), dict):
        flat = flatten_dotted(data["space"], frozenset({"low", "high", "choices", "log", "step"}))
        data["space"] = {key: _dimension(key, value, source) for key, value in flat}
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as exc:
        raise _one_line(exc, source, "") from None
    _check_metrics(spec, source)
    return spec


def check_metric(metric: str, source: Path | str, field: str) -> None:
    """A metric must be a column of every run's metrics (``results.parquet``); a typo lists close names."""
    known = metric_names()
    if metric in known:
        return
    close = difflib.get_close_matches(metric, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see docs/metrics.md for the names"
    raise InputError(source, field, f"{metric!r} is not a run metric; {hint}")


def _check_metrics(spec: SearchSpec, source: Path) -> None:
    check_metric(spec.objective.metric, source, "objective.metric")
    for i, constraint in enumerate(spec.constraint):
        check_metric(constraint.metric, source, f"constraint[{i}].metric")
    if spec.search.sampler == "random" and spec.search.startup_trials is not None:
        raise InputError(source, "search.startup_trials", "only for sampler = 'tpe' or 'cmaes'")
    labels = [c.label for c in spec.constraint]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise InputError(
                source, f"constraint[{i}]", f"repeats constraint[{labels.index(label)}] ({label})"
            )
    runs = len(spec.seed_list) * (len(spec.conversations) if spec.conversations else 1)
    if runs > MAX_RUNS_PER_TRIAL:
        raise InputError(
            source, "seeds", f"{runs} runs per trial (conversations x seeds); at most {MAX_RUNS_PER_TRIAL}"
        )


def trial_plan(plan: SearchPlan, params: dict[str, Any]) -> SweepPlan:
    """The runs of one trial: a one-point sweep of ``params`` over the conversations and seeds.

    Errors a sweep reports at ``parameters.KEY`` are reported at ``space.KEY`` (where the user
    has to change the search file).
    """
    spec = plan.spec
    sweep = SweepSpec.model_validate(
        {
            "name": plan.name,
            "base": spec.base,
            "seeds": spec.seeds,
            "conversations": [c.model_dump() for c in spec.conversations] if spec.conversations else None,
            "set": spec.set,
            "parameters": {key: [value] for key, value in params.items()},
        }
    )
    try:
        return plan_sweep(sweep, plan.spec_path, plan.cli_set)
    except InputError as exc:
        field = exc.field
        if field is not None and field.startswith("parameters"):
            field = "space" + field.removeprefix("parameters")
        message = exc.message.replace("(parameters.", "(space.").replace("the sweep", "the search")
        raise InputError(exc.source, field, message.replace("a sweep", "a search")) from None


def probe_points(spec: SearchSpec) -> list[dict[str, Any]]:
    """Points that visit every bound and every choice of the space (the others at their first value).

    Checking these before the first trial means a key that is not a scenario key, or a bound the
    scenario refuses (a negative delay), fails at once instead of in trial 37.
    """
    first: dict[str, Any] = {
        key: dim.bounds()[0] if isinstance(dim, Interval) else dim.choices[0]
        for key, dim in spec.space.items()
    }
    points = [dict(first)]
    for key, dim in spec.space.items():
        values = dim.bounds() if isinstance(dim, Interval) else dim.choices
        for value in values[1:]:
            points.append({**first, key: value})
    return points


def plan_search(spec: SearchSpec, spec_path: Path, cli_set: dict[str, Any] | None = None) -> SearchPlan:
    """Check the whole search against the base scenario before anything runs (:func:`probe_points`)."""
    spec_path = Path(spec_path)
    base_path = (spec_path.resolve().parent / spec.base).resolve()
    if not base_path.is_file():
        raise InputError(spec_path, "base", f"base scenario not found: {base_path}")
    plan = SearchPlan(spec_path, spec, spec.name or spec_path.stem, base_path, dict(cli_set or {}))
    for point in probe_points(spec):
        trial_plan(plan, point)
    return plan


def load_search(path: Path, cli_set: dict[str, Any] | None = None) -> SearchPlan:
    """Read a search file and check it (:func:`plan_search`); ``cli_set``: ``--set`` as for a sweep."""
    path = Path(path)
    return plan_search(parse_search(read_toml(path, "search"), path), path, cli_set)
