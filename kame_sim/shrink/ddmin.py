"""The two searches of shrinking, as pure functions over a predicate: delta debugging and bisection.

``fails(subset) -> bool`` is the test ("a run with just these entries away from nominal still
fails"). :func:`ddmin` is Zeller's ddmin (Zeller & Hildebrandt, "Simplifying and Isolating
Failure-Inducing Input", 2002): it returns a *1-minimal* failing subset — removing any single
element makes the test pass — in O(n²) tests worst case and O(k log n) for k causes among n.
:func:`bisect_magnitude` then pulls one value towards its nominal value while it still fails.
Both keep order and are deterministic; both stop early when ``stop()`` says the budget is spent,
returning the best *known failing* answer so far (never an untested one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def _never() -> bool:
    return False


def split(items: Sequence[T], n: int) -> list[list[T]]:
    """``items`` in ``n`` contiguous, nearly equal parts (the first ones one longer)."""
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        parts.append(list(items[start:end]))
        start = end
    return [p for p in parts if p]


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], stop: Callable[[], bool] = _never) -> list[T]:
    """A 1-minimal subset of ``items`` (which must fail) that still fails.

    The empty set is tried first: if it fails, nothing in ``items`` is needed. Then the set is cut
    into n parts; a part that fails alone becomes the set (n back to 2), else a complement that
    fails does (n - 1), else n doubles, until n exceeds the set's size.
    """
    current = list(items)
    if stop():
        return current
    if fails([]):
        return []
    n = 2
    while len(current) >= 2 and not stop():
        parts = split(current, n)
        reduced = False
        for part in parts:
            if stop():
                return current
            if fails(part):
                current, n, reduced = part, 2, True
                break
        if not reduced and n > 2:
            for i in range(len(parts)):
                if stop():
                    return current
                complement = [x for j, p in enumerate(parts) if j != i for x in p]
                if fails(complement):
                    current, n, reduced = complement, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    return current


def bisect_magnitude(
    nominal: float,
    value: float,
    fails: Callable[[float], bool],
    tolerance: float,
    quantum: Callable[[float], float] = float,
    stop: Callable[[], bool] = _never,
) -> tuple[float, float]:
    """The value closest to ``nominal`` between ``nominal`` and ``value`` (which fails) that fails.

    Returns ``(failing, passing)``: a failing value and a passing one at most ``tolerance`` apart
    (``passing`` is ``nominal`` itself when ``nominal`` is never tested as passing: the caller
    tests it first). ``quantum`` rounds a midpoint to what the simulation can represent (whole
    microseconds); bisection ends when the midpoint rounds onto an end. The test need not be
    monotone: the answer is a boundary, every value of which was tested.
    """
    hi, lo = value, nominal
    while abs(hi - lo) > tolerance and not stop():
        mid = quantum((hi + lo) / 2.0)
        if mid in (hi, lo):
            break
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return hi, lo
