"""Every delay a finished run drew, recomputed from its scenario and seed (not only what it realised).

A run's trace holds the delays that happened; a stream cancelled before its first chunk, or a
partial overtaken by its final, left no row, yet its draw decides what happens when a replay does
not cancel it (or moves its final). ``fork`` pins a prefix to these draws and ``shrink`` starts
from them: the simulated STT is a pure function of the word timings and its seeded samplers, and
the simulated LLM plans each stream from its request (the trace's ``llm_start`` rows) in
generation order, exactly as the original run did, so replaying all of them reproduces the run.
"""

from __future__ import annotations

from kame_sim.config import Scenario
from kame_sim.conversation import Conversation
from kame_sim.llm.content import LlmRequest
from kame_sim.runner import build_llm, build_stt_events
from kame_sim.schedule import DelaySchedule, scenario_schedule
from kame_sim.trace.reader import TraceData


class RecordingSchedule(DelaySchedule):
    """A schedule that writes down every delay it hands out (the base schedule's, else the draw)."""

    def __init__(self, base: DelaySchedule | None) -> None:
        super().__init__()
        self.base = base or DelaySchedule()
        self.fault = dict(self.base.fault)

    def partial_delay(self, utterance: int, word: int, drawn: float) -> float:
        value = self.base.partial_delay(utterance, word, drawn)
        self.stt_partial[(utterance, word)] = value
        return value

    def final_delay(self, utterance: int, drawn: float) -> float:
        value = self.base.final_delay(utterance, drawn)
        self.stt_final[utterance] = value
        return value

    def first_token(self, stream: int, drawn: float) -> float:
        value = self.base.first_token(stream, drawn)
        self.ttft[stream] = value
        return value

    def gap(self, stream: int, chunk: int, drawn: float) -> float:
        value = self.base.gap(stream, chunk, drawn)
        self.chunk_gap[(stream, chunk)] = value
        return value


def stream_starts(trace: TraceData) -> list[dict]:
    table = trace.table.select(["event", "t_sim", "stream_id", "text", "request"])
    return [r for r in table.to_pylist() if r["event"] == "llm_start"]


def original_draws(scenario: Scenario, conversation: Conversation, trace: TraceData) -> DelaySchedule:
    """Every delay the original run used: STT for all words, LLM for every stream it started.

    ``scenario`` is the original's (its own ``delays.schedule``, if any, is applied as it was).
    """
    base = scenario_schedule(scenario)
    recorder = RecordingSchedule(base)
    if scenario.stt.kind == "simulated":
        build_stt_events(scenario, conversation, recorder)
    llm = build_llm(scenario, conversation, schedule=recorder)
    for row in stream_starts(trace):
        llm.plan(LlmRequest(row["t_sim"], row["request"] or "", row["text"] or "", row["stream_id"]))
    return recorder
