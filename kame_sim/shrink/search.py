"""The shrinking search: which delays away from nominal a failure needs, and how far away.

Given a run's realised schedule, the nominal delay per kind and a failure condition, a *candidate*
is a set of entries kept away from nominal (each at some value); every other event of a kind with
a nominal value gets exactly that value (the schedule's ``unscheduled`` table), so a candidate's
outcome depends on nothing but the candidate. The search:

1. tests the full set (the run's own delays, nominal where the run never reached an event): it
   must fail, or shrinking has nothing to stand on;
2. :func:`~kame_sim.shrink.ddmin.ddmin` level by level (hierarchical delta debugging, Misherghi
   and Su 2006): over kinds (all TTFTs, all chunk gaps, ...), then over what the kept entries are
   attached to (one group per LLM stream: its TTFT, gaps and fault; one per utterance: its
   partials and final), then over the entries left: a 1-minimal failing subset. A long
   conversation has hundreds of entries but a handful of kinds and tens of owners, and a cause is
   usually one kind and one stream or utterance, so the coarse passes save most of the replays;
3. for each entry left (faults excepted), :func:`~kame_sim.shrink.ddmin.bisect_magnitude`
   between nominal and its value, keeping the value closest to nominal that still fails; an entry
   that fails even at nominal is dropped;
4. the answer is a candidate that was run and failed (checked; anything else is a bug).

Replays are cached by candidate content; ``max_runs`` bounds the replays (cache hits are free), and
a search cut short by it returns its best failing candidate so far. Pure apart from ``evaluate``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kame_sim.clock import to_seconds, to_ticks
from kame_sim.schedule import attachment
from kame_sim.shrink.condition import Condition
from kame_sim.shrink.ddmin import bisect_magnitude, ddmin

Entry = dict[str, Any]
#: (runs done, the run budget, entries in the current candidate, phase) -> None
Progress = Callable[[int, int, int, str], None]


class ShrinkError(Exception):
    """The search cannot start (the run's own schedule does not fail when replayed)."""


@dataclass(frozen=True)
class ShrunkEntry:
    """One entry of the answer: its nominal value, the run's value, the shrunk one."""

    entry: Entry  # as in the schedule file, ``seconds`` the shrunk value
    nominal: float | None  # None for a fault
    original: float
    passing: float | None  # the nearest value tested to pass (None: not bisected)

    @property
    def key(self) -> tuple[Any, ...]:
        return attachment(self.entry)

    def note(self) -> str:
        if self.nominal is None:
            return "fault kept (a fault has no nominal value; nominal is no fault)"
        shrunk = self.entry["seconds"]
        text = f"nominal {self.nominal:.6g} s, run had {self.original:.6g} s, shrunk to {shrunk:.6g} s"
        if self.passing is not None:
            text += f" ({self.passing:.6g} s passes)"
        return text


@dataclass
class ShrinkResult:
    condition: Condition
    nominal: dict[str, float]
    n_away: int
    entries: list[ShrunkEntry]
    metric: float | None  # the condition's metric under the answer
    full_metric: float | None  # ... under the full set (the run's own delays)
    runs: int
    budget_hit: bool
    sizes: list[int] = field(default_factory=list)  # the candidate's size after each reduction

    @property
    def schedule_entries(self) -> list[Entry]:
        return [e.entry for e in self.entries]


def _tick(seconds: float) -> float:
    return to_seconds(to_ticks(seconds))


def is_away(entry: Entry, nominal: dict[str, float]) -> bool:
    """A fault is always away; a delay of a kind without a nominal value is not shrinkable."""
    if entry["kind"] == "fault":
        return True
    return entry["kind"] in nominal and entry["seconds"] != nominal[entry["kind"]]


def kind_of(entry: Entry) -> tuple[Any, ...]:
    return (entry["kind"],)


def owner_of(entry: Entry) -> tuple[Any, ...]:
    """What an entry is attached to: its stream, or its utterance."""
    return ("stream", entry["stream"]) if "stream" in entry else ("utterance", entry["utterance"])


def group_entries(entries: list[Entry], key: Callable[[Entry], tuple[Any, ...]]) -> list[list[Entry]]:
    """``entries`` grouped by ``key`` (groups in first-seen order, entries in their order)."""
    groups: dict[tuple[Any, ...], list[Entry]] = {}
    for entry in entries:
        groups.setdefault(key(entry), []).append(entry)
    return list(groups.values())


class _Tester:
    """Evaluates candidates through ``evaluate``, cached by content, counted against the budget."""

    def __init__(
        self,
        evaluate: Callable[[list[Entry]], dict[str, Any]],
        condition: Condition,
        max_runs: int,
        progress: Progress | None,
    ) -> None:
        self.evaluate = evaluate
        self.condition = condition
        self.max_runs = max_runs
        self.progress = progress
        self.cache: dict[str, float | None] = {}
        self.runs = 0
        self.phase = "full"
        self.size = 0

    def measured(self, entries: list[Entry]) -> float | None:
        key = json.dumps(sorted(entries, key=attachment), sort_keys=True)
        if key not in self.cache:
            value = self.evaluate(entries).get(self.condition.metric)
            self.cache[key] = None if value is None else float(value)
            self.runs += 1
            if self.progress is not None:
                self.progress(self.runs, self.max_runs, self.size, self.phase)
        return self.cache[key]

    def fails(self, entries: list[Entry]) -> bool:
        return self.condition.holds(self.measured(entries))

    def stop(self) -> bool:
        return self.runs >= self.max_runs


def shrink_entries(
    entries: list[Entry],
    nominal: dict[str, float],
    condition: Condition,
    evaluate: Callable[[list[Entry]], dict[str, Any]],
    max_runs: int = 300,
    tolerance: float = 0.01,
    progress: Progress | None = None,
) -> ShrinkResult:
    """Shrink ``entries`` (a run's schedule entries) to a minimal failing set; see the module doc.

    ``evaluate(entries)`` runs the scenario with exactly those entries and ``nominal`` for every
    other event and returns its metrics row.
    """
    away = [e for e in entries if is_away(e, nominal)]
    tester = _Tester(evaluate, condition, max(max_runs, 1), progress)
    tester.size = len(away)
    full_metric = tester.measured(away)
    if not condition.holds(full_metric):
        shown = "no value" if full_metric is None else f"{full_metric:.6g}"
        raise ShrinkError(
            f"replayed with its own delays (and nominal ones for events it never reached), the run "
            f"no longer fails {condition.text()} ({condition.metric} = {shown}): nothing to shrink from"
        )
    sizes = [len(away)]
    tester.phase = "ddmin"

    def fails_subset(subset: list[Entry]) -> bool:
        ok = tester.fails(subset)
        if ok:
            tester.size = len(subset)
            sizes.append(len(subset))
        return ok

    current = away
    for level in (kind_of, owner_of):
        groups = group_entries(current, level)
        kept = ddmin(groups, lambda chosen: fails_subset([e for g in chosen for e in g]), tester.stop)
        current = [e for g in kept for e in g]
    current = ddmin(current, fails_subset, tester.stop)
    tester.phase = "bisect"
    shrunk: list[ShrunkEntry] = []
    passing: dict[tuple[Any, ...], float | None] = {}
    for entry in list(current):
        key = attachment(entry)
        if entry["kind"] == "fault" or tester.stop():
            passing[key] = None
            continue
        others = [e for e in current if attachment(e) != key]
        if tester.fails(others):  # not needed any more (a later entry's change, or a cut ddmin)
            current = others
            tester.size = len(current)
            sizes.append(len(current))
            continue
        nom = nominal[entry["kind"]]

        def with_value(seconds: float, others: list[Entry] = others, entry: Entry = entry) -> list[Entry]:
            return sorted([*others, {**entry, "seconds": seconds}], key=attachment)

        hi, lo = bisect_magnitude(
            nom, entry["seconds"], lambda s: tester.fails(with_value(s)), tolerance, _tick, tester.stop
        )
        current = with_value(hi)
        passing[key] = lo
    originals = {attachment(e): e["seconds"] for e in away}
    for entry in current:
        key = attachment(entry)
        nom = None if entry["kind"] == "fault" else nominal[entry["kind"]]
        shrunk.append(ShrunkEntry(entry, nom, originals[key], passing.get(key)))
    metric = tester.measured(current)
    if not condition.holds(metric):  # every candidate taken was tested to fail
        raise RuntimeError(f"bug: the shrunk schedule passes ({condition.metric} = {metric})")
    return ShrinkResult(
        condition=condition,
        nominal=nominal,
        n_away=len(away),
        entries=shrunk,
        metric=metric,
        full_metric=full_metric,
        runs=tester.runs,
        budget_hit=tester.stop(),
        sizes=sizes,
    )
