"""The pure parts of shrinking: ddmin, bisection and failure conditions (no simulation)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kame_sim.errors import InputError
from kame_sim.shrink.condition import NEGATION, OPS, Condition, parse_condition
from kame_sim.shrink.ddmin import bisect_magnitude, ddmin, split


class Counter:
    """A predicate that counts its calls (and remembers every set it was asked about)."""

    def __init__(self, predicate) -> None:
        self.predicate = predicate
        self.calls: list[frozenset[int]] = []

    def __call__(self, subset: list[int]) -> bool:
        self.calls.append(frozenset(subset))
        return self.predicate(set(subset))


def test_split_covers_everything_in_order():
    assert split(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split([1], 4) == [[1]]
    for n in range(1, 12):
        parts = split(list(range(10)), n)
        assert [x for p in parts for x in p] == list(range(10)) and all(parts)


def test_ddmin_finds_the_single_cause_among_many_in_few_tests():
    fails = Counter(lambda s: 37 in s)
    assert ddmin(list(range(200)), fails) == [37]
    assert len(fails.calls) <= 2 * math.ceil(math.log2(200)) + 2  # binary search, not 200 tests


def test_ddmin_finds_an_interacting_pair():
    # fails only when both 3 and 91 are away: neither half alone fails, complements must be tried
    assert ddmin(list(range(120)), Counter(lambda s: {3, 91} <= s)) == [3, 91]


def test_ddmin_returns_nothing_when_the_empty_set_fails():
    fails = Counter(lambda s: True)
    assert ddmin(list(range(50)), fails) == []
    assert fails.calls == [frozenset()]


def test_ddmin_stops_on_the_budget_with_a_failing_set():
    fails = Counter(lambda s: {5, 60} <= s)
    result = ddmin(list(range(100)), fails, stop=lambda: len(fails.calls) >= 3)
    assert {5, 60} <= set(result) and len(fails.calls) == 3


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    causes=st.lists(st.lists(st.integers(0, 39), min_size=1, max_size=3), min_size=1, max_size=3),
)
def test_ddmin_is_one_minimal_for_monotone_predicates(n: int, causes: list[list[int]]):
    """A predicate "some cause set is all present" (monotone): the answer fails, every set with one
    element fewer passes, and it is a subset of the input in the input's order."""
    causes = [set(c) for c in causes if set(c) <= set(range(n))] or [{n - 1}]

    def predicate(s: set[int]) -> bool:
        return any(c <= s for c in causes)

    result = ddmin(list(range(n)), Counter(predicate))
    assert predicate(set(result))
    assert result == sorted(result) and set(result) <= set(range(n))
    for x in result:
        assert not predicate(set(result) - {x})
    if len(causes) == 1:
        assert set(result) == causes[0]  # one cause: exactly it


def test_bisection_reaches_a_threshold_within_tolerance():
    calls = []

    def fails(x: float) -> bool:
        calls.append(x)
        return x > 2.345

    hi, lo = bisect_magnitude(0.7, 6.0, fails, 0.01)
    assert fails(hi) and not fails(lo) and hi - lo <= 0.01 and lo < 2.345 < hi
    assert len(calls) <= math.ceil(math.log2(5.3 / 0.01)) + 2


def test_bisection_works_below_nominal_and_on_the_quantum():
    # a too-fast event: the failing values lie below nominal
    hi, lo = bisect_magnitude(0.25, 0.0, lambda x: x < 0.1, 1e-9, quantum=lambda x: round(x, 6))
    assert hi < 0.1 <= lo and round(lo - hi, 6) <= 1e-6
    assert bisect_magnitude(1.0, 1.000001, lambda x: True, 0.0, quantum=lambda x: round(x, 6)) == (
        1.000001,
        1.0,
    )


@pytest.mark.parametrize("op", list(OPS))
def test_conditions_parse_and_negate(op: str):
    c = parse_condition(f"  reply_f1_mean{op}0.3 ")
    assert c == Condition("reply_f1_mean", op, 0.3)
    for v in (0.1, 0.3, 0.5):
        assert c.holds(v) != c.negated().holds(v)
    assert NEGATION[NEGATION[op]] == op
    assert not c.holds(None) and not c.holds(float("nan")) and not c.negated().holds(float("nan"))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("reply_f1 < 0.3", "did you mean reply_f1_mean"),
        ("reply_f1_mean < nan", "finite"),
        ("reply_f1_mean < 1e999", "finite"),
        ("reply_f1_mean < abc", "must be a number"),
        ("reply_f1_mean =< 0.3", "METRIC OP VALUE"),
        ("reply_f1_mean < 0.3 extra", "METRIC OP VALUE"),
        ("", "METRIC OP VALUE"),
        ("x" * 300, "chars"),
    ],
)
def test_bad_conditions_are_one_line_errors(text: str, words: str):
    with pytest.raises(InputError) as info:
        parse_condition(text)
    line = info.value.one_line()
    assert "--fails" in line and words in line and "\n" not in line


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_condition_or_one_input_error(text: str):
    try:
        c = parse_condition(text)
    except InputError as exc:
        assert "\n" not in exc.one_line()
    else:
        assert math.isfinite(c.value) and c.op in OPS
