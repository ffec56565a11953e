"""Failure conditions: ``"reply_f1_mean < 0.3"`` — a per-run metric, a comparison, a threshold.

A condition says when a run *fails*: ``kame-sim shrink RUN --fails "reply_f1_mean < 0.3"`` looks
for the smallest schedule under which the condition still holds. A run whose metric is missing or
NaN does not fail (it satisfies no comparison), so a shrunk schedule always has a real value.
Pure (no SimPy, no trace): the shrinker and ``check`` both use it.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kame_sim.errors import InputError
from kame_sim.metrics import RUN_METRIC_COLUMNS

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    # == as check judges it (0.73 written vs 0.73 computed), != its negation
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
#: The opposite comparison: a check assertion ``metric >= v`` fails exactly when ``metric < v``.
NEGATION = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
MAX_TEXT = 200


@dataclass(frozen=True)
class Condition:
    """``metric op value``: true means the run fails."""

    metric: str
    op: str
    value: float

    def holds(self, measured: float | None) -> bool:
        """Whether a run with this metric value fails; a missing or NaN value never does."""
        if measured is None or not isinstance(measured, int | float) or math.isnan(measured):
            return False
        return OPS[self.op](float(measured), self.value)

    def holds_for(self, row: Mapping[str, Any]) -> bool:
        return self.holds(row.get(self.metric))

    def text(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"

    def negated(self) -> Condition:
        return Condition(self.metric, NEGATION[self.op], self.value)


def parse_condition(text: str, field: str = "--fails", source: str = "<cli>") -> Condition:
    """Parse ``"METRIC OP VALUE"``; every problem is one InputError naming ``field``."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise InputError(
            source, field, f'must be a short string like "reply_f1_mean < 0.3" (<= {MAX_TEXT} chars)'
        )
    match = _PATTERN.match(text)
    if match is None:
        shown = text if text.isprintable() else ascii(text)
        raise InputError(
            source, field, f'expected "METRIC OP VALUE" with OP one of {" ".join(OPS)}, got {shown!r}'
        )
    metric, op, raw = match.groups()
    if metric not in RUN_METRIC_COLUMNS:
        close = difflib.get_close_matches(metric, RUN_METRIC_COLUMNS, n=3)
        hint = (
            f"; did you mean {', '.join(close)}?" if close else " (docs/metrics.md lists the per-run metrics)"
        )
        raise InputError(source, field, f"unknown metric {metric!r}{hint}")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(source, field, f"the value must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise InputError(source, field, f"the value must be a finite number, got {raw!r}")
    return Condition(metric, op, value)
