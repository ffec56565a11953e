"""Simulated streaming STT: partials and finals from the user's word timestamps.

The recogniser is modelled by its *output timing* only: after each user word ends, a partial with
the utterance so far arrives ``partial_delay`` later; after an utterance ends (a silence of at
least ``utterance_gap`` follows), a final arrives ``final_delay`` later (the presets measure exactly
this: end of speech to final transcript). A real recogniser emits its results in order, so arrival
times are made non-decreasing, a final is never overtaken by a later partial, and partials that
would arrive after their utterance's final are dropped.

A delay schedule (:mod:`kame_sim.schedule`) may fix the delay of a partial (by utterance and word
index) or a final (by utterance); the model's draw is still made, so the streams of random numbers,
and so every delay the schedule leaves out, are exactly those of a run without it.

Every partial carries the utterance so far, so an utterance of n words costs O(n^2) text (in
memory and in the trace): utterances are bounded by :data:`MAX_UTTERANCE_WORDS`, which no speaker
reaches without a pause of ``utterance_gap`` (it is ~13 minutes of continuous speech).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kame_sim.conversation import Word, user_utterances
from kame_sim.delays import DelaySampler
from kame_sim.errors import InputError
from kame_sim.schedule import DelaySchedule
from kame_sim.stt.events import SttEvent

MAX_UTTERANCE_WORDS = 2000


def schedule_stt_events(
    words: Sequence[Word],
    utterance_gap: float,
    partial_delay: DelaySampler,
    final_delay: DelaySampler,
    emit_partials: bool = True,
    schedule: DelaySchedule | None = None,
    source: Path | str | None = None,
) -> list[SttEvent]:
    """All STT results for one speaker's words, in arrival order (draws happen in word order).

    ``schedule``: delays to use instead of the draws it covers (each covered draw is still made).
    An utterance longer than :data:`MAX_UTTERANCE_WORDS` is an InputError naming ``source`` (the
    transcript) before anything is drawn.
    """
    utterances = user_utterances(words, utterance_gap)
    for u, utterance in enumerate(utterances):
        if len(utterance) > MAX_UTTERANCE_WORDS:
            raise InputError(
                source,
                f"utterance {u}",
                f"{len(utterance)} words from {utterance[0].start:g} s without a pause of "
                f"stt.utterance_gap = {utterance_gap:g} s; at most {MAX_UTTERANCE_WORDS} per utterance",
            )
    events: list[SttEvent] = []
    last_arrival = 0.0
    for u, utterance in enumerate(utterances):
        partials: list[SttEvent] = []
        texts = []
        for i, word in enumerate(utterance):
            texts.append(word.text)
            if emit_partials:
                delay = partial_delay.draw()
                if schedule is not None:
                    delay = schedule.partial_delay(u, i, delay)
                partials.append(SttEvent("partial", word.end + delay, " ".join(texts), u, delay, word.end))
        end = utterance[-1].end
        delay = final_delay.draw()
        if schedule is not None:
            delay = schedule.final_delay(u, delay)
        final_arrival = max(last_arrival, end + delay)
        for partial in partials:
            arrival = max(last_arrival, partial.arrival)
            if arrival >= final_arrival:
                break
            events.append(SttEvent("partial", arrival, partial.text, u, partial.delay, partial.speech_time))
            last_arrival = arrival
        final_arrival = max(last_arrival, final_arrival)
        events.append(SttEvent("final", final_arrival, " ".join(texts), u, delay, end))
        last_arrival = final_arrival
    return events
