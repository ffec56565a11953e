"""A trial's runs turned into numbers: the objective value and how far each constraint is violated.

A trial runs every conversation x seed; each run gives one metrics row (the columns of a sweep's
``results.parquet``, :func:`kame_sim.sweep.runner.metrics_row`). A statistic across those rows is
the trial's value. Undefined metrics (``None``: no turns, nothing said) are skipped, as the sweep
aggregates do, so one run without a reply does not poison the mean; a trial where the metric is
undefined in *every* run has no value and is recorded as failed (and never as a best).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kame_sim.search.spec import ConstraintSpec, ObjectiveSpec


def statistic(values: Sequence[float | int | None], stat: str) -> float | None:
    """``stat`` (mean, median, min, max, pNN) of the defined values; None when there are none.

    Percentiles use numpy's default (linear) interpolation, so ``p50`` equals ``median``.
    """
    arr = np.array([float(v) for v in values if v is not None and not isinstance(v, bool)], dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return None
    if stat == "mean":
        return float(arr.mean())
    if stat == "median":
        return float(np.median(arr))
    if stat == "min":
        return float(arr.min())
    if stat == "max":
        return float(arr.max())
    return float(np.percentile(arr, float(stat[1:])))


def violation(constraint: ConstraintSpec, measured: float | None) -> float:
    """Optuna's convention: <= 0 when the constraint holds, the distance past its bound otherwise.

    An undefined measurement violates (``inf``): a trial cannot prove it stayed in the envelope.
    """
    if measured is None:
        return math.inf
    return measured - constraint.value if constraint.op == "<=" else constraint.value - measured


@dataclass(frozen=True)
class TrialValue:
    """What one trial's runs amount to."""

    objective: float | None
    constraints: dict[str, float | None]  # constraint label -> measured statistic
    violations: dict[str, float]  # constraint label -> violation (<= 0: holds)
    n_runs: int
    n_failed: int
    objective_runs: tuple[float | None, ...]  # the objective metric of each run, in run order

    @property
    def feasible(self) -> bool:
        """Every constraint holds (a trial without constraints always does)."""
        return all(v <= 0 for v in self.violations.values())


def evaluate_rows(
    rows: Sequence[dict[str, Any]],
    objective: ObjectiveSpec,
    constraints: Sequence[ConstraintSpec],
    n_failed: int,
) -> TrialValue:
    """The objective and the constraints over the metric rows of a trial's finished runs."""
    measured = {c.label: statistic([r.get(c.metric) for r in rows], c.stat) for c in constraints}
    return TrialValue(
        objective=statistic([r.get(objective.metric) for r in rows], objective.stat),
        constraints=measured,
        violations={c.label: violation(c, measured[c.label]) for c in constraints},
        n_runs=len(rows) + n_failed,
        n_failed=n_failed,
        objective_runs=tuple(r.get(objective.metric) for r in rows),
    )
