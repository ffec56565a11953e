"""The prefix a branch shares with its original: every delay whose cause lies before the fork time.

A delay's *cause* is what it is measured from: a word's end (its STT partial), an utterance's end
(its final), a stream's start (its TTFT, chunk gaps and fault). Everything that happens before T
follows from causes before T (a delay is never negative), so pinning those delays to the values
the original drew — and leaving the policy as it was until T — makes the branch's trace equal the
original's for every row with ``t_sim < T``, whatever the branch changes from T on.

The values pinned are the original's *draws*, not only what its trace realised: a stream cancelled
before its first chunk, or a partial overtaken by its final, has no row, yet its draw decides what
happens if the branch does not cancel it (or moves its final). The draws are recomputed here from
the original scenario and seed: the simulated STT is a pure function of the word timings and its
seeded samplers, and the simulated LLM plans each stream from its request (in the trace's
``llm_start`` rows) in generation order, exactly as the original run did.
"""

from __future__ import annotations

from dataclasses import dataclass

from kame_sim.clock import to_ticks
from kame_sim.config import Scenario
from kame_sim.conversation import Conversation, user_utterances
from kame_sim.draws import stream_starts
from kame_sim.schedule import DelaySchedule, Fault
from kame_sim.trace.reader import TraceData


@dataclass(frozen=True)
class Causes:
    """When each delay's cause happened in the original, in ticks."""

    word_end: dict[tuple[int, int], int]  # (utterance, word) -> the word's end
    utterance_end: dict[int, int]
    stream_start: dict[int, int]  # generation -> its llm_start


def causes(scenario: Scenario, conversation: Conversation, trace: TraceData) -> Causes:
    """The causes of the original's delays: word and utterance ends, stream starts (from its trace)."""
    words = conversation.words_of(scenario.conversation.user_speaker)
    word_end: dict[tuple[int, int], int] = {}
    utterance_end: dict[int, int] = {}
    for u, utterance in enumerate(user_utterances(words, scenario.stt.utterance_gap)):
        for i, word in enumerate(utterance):
            word_end[(u, i)] = to_ticks(word.end)
        utterance_end[u] = to_ticks(utterance[-1].end)
    starts = {r["stream_id"]: to_ticks(r["t_sim"]) for r in stream_starts(trace)}
    return Causes(word_end, utterance_end, starts)


def pin_prefix(draws: DelaySchedule, found: Causes, at: int) -> DelaySchedule:
    """The entries of ``draws`` whose cause lies strictly before tick ``at``."""
    pinned = DelaySchedule()
    pinned.stt_partial = {k: v for k, v in draws.stt_partial.items() if found.word_end.get(k, at) < at}
    pinned.stt_final = {u: v for u, v in draws.stt_final.items() if found.utterance_end.get(u, at) < at}
    before = {sid for sid, start in found.stream_start.items() if start < at}
    pinned.ttft = {s: v for s, v in draws.ttft.items() if s in before}
    pinned.chunk_gap = {k: v for k, v in draws.chunk_gap.items() if k[0] in before}
    pinned.fault = {s: Fault(f.seconds, f.detail) for s, f in draws.fault.items() if s in before}
    return pinned


def merged(*layers: DelaySchedule) -> DelaySchedule:
    """Later layers win: the original's own schedule, then the pinned prefix, then the edits.

    The ``unscheduled`` table (fixed delays for events no entry covers, as a shrink reproducer has)
    is carried too: without it a branch's events after T would be drawn from the delay models.
    """
    out = DelaySchedule()
    for layer in layers:
        out.unscheduled.update(layer.unscheduled)
        out.stt_partial.update(layer.stt_partial)
        out.stt_final.update(layer.stt_final)
        out.ttft.update(layer.ttft)
        out.chunk_gap.update(layer.chunk_gap)
        out.fault.update(layer.fault)
    return out
