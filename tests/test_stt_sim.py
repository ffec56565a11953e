"""Simulated STT: arrival times, ordering and dropping rules, on hand-built word timings."""

from __future__ import annotations

from collections.abc import Iterable

from kame_sim.conversation import Word
from kame_sim.stt.simulated import schedule_stt_events


class Fixed:
    """A DelaySampler that returns the given delays in order (then repeats the last)."""

    def __init__(self, values: Iterable[float]) -> None:
        self.values = list(values)

    def draw(self) -> float:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


WORDS = (
    Word("A", "i", 0.0, 0.3),
    Word("A", "want", 0.35, 0.6),
    Word("A", "yes", 1.6, 1.9),  # 1.0 s of silence before: a new utterance
)


def summary(events):
    return [(e.kind, round(e.arrival, 6), e.text, e.utterance) for e in events]


def test_partials_after_each_word_and_a_final_after_each_utterance():
    events = schedule_stt_events(WORDS, 0.8, Fixed([0.1]), Fixed([0.25]))
    assert summary(events) == [
        ("partial", 0.4, "i", 0),
        ("partial", 0.7, "i want", 0),
        ("final", 0.85, "i want", 0),
        ("partial", 2.0, "yes", 1),
        ("final", 2.15, "yes", 1),
    ]
    assert events[2].speech_time == 0.6 and events[2].delay == 0.25


def test_a_partial_that_would_arrive_after_its_final_is_dropped():
    events = schedule_stt_events(WORDS[:2], 0.8, Fixed([0.5]), Fixed([0.1]))
    # partial "i" at 0.8 and "i want" at 1.1 both come after the final at 0.7
    assert summary(events) == [("final", 0.7, "i want", 0)]


def test_arrivals_never_go_backwards():
    events = schedule_stt_events(WORDS[:2], 0.8, Fixed([0.5, 0.05]), Fixed([1.0]))
    assert summary(events) == [
        ("partial", 0.8, "i", 0),
        ("partial", 0.8, "i want", 0),  # nominal 0.65, but results come in order
        ("final", 1.6, "i want", 0),
    ]


def test_a_slow_final_is_not_overtaken_by_the_next_utterance():
    events = schedule_stt_events(WORDS, 0.8, Fixed([0.1]), Fixed([2.0, 1.0]))
    kinds = [(e.kind, e.utterance) for e in events]
    assert kinds.index(("final", 0)) < kinds.index(("partial", 1))
    times = [e.arrival for e in events]
    assert times == sorted(times)


def test_partials_can_be_switched_off():
    events = schedule_stt_events(WORDS, 0.8, Fixed([0.1]), Fixed([0.25]), emit_partials=False)
    assert [e.kind for e in events] == ["final", "final"]


def test_utterance_gap_decides_the_segmentation():
    events = schedule_stt_events(WORDS, 1.5, Fixed([0.1]), Fixed([0.25]))
    assert [e.text for e in events if e.kind == "final"] == ["i want yes"]
