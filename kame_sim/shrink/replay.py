"""Replaying one scenario under many schedules, in this process, for the shrinker's tests.

Every replay is a whole run (any front-end) with the schedule given as an object rather than a
file: the session is prepared by :func:`kame_sim.runner.build_session_parts`, exactly as ``kame-sim
run`` prepares it, and its trace is written to one scratch file that each replay overwrites, read
back, and measured with :func:`kame_sim.sweep.runner.metrics_row`. So the metrics of a replay are
those ``kame-sim run`` gets for the same scenario with the schedule written to a file — which is
what the shrinker's final, reproducing run checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kame_sim.config import Scenario
from kame_sim.conversation import Conversation
from kame_sim.errors import InputError
from kame_sim.runner import build_session_parts, trace_metadata
from kame_sim.schedule import DelaySchedule, parse_schedule
from kame_sim.sim import Session
from kame_sim.sweep.runner import metrics_row
from kame_sim.trace.reader import read_trace
from kame_sim.trace.writer import TraceWriter

SCRATCH = "replay.arrows"


def schedule_of(
    entries: list[dict[str, Any]], unscheduled: dict[str, float], source: dict[str, Any]
) -> DelaySchedule:
    """A schedule holding exactly ``entries`` (schedule-file entry dicts) and ``unscheduled``."""
    text = json.dumps({"source": source, "unscheduled": unscheduled, "entries": entries}, allow_nan=False)
    return parse_schedule(text, Path("<shrink>"))


def schedulable(scenario: Scenario, source: str | Path = "<run>") -> tuple[bool, bool]:
    """Whether the scenario's STT and its LLM take scheduled delays (docs/schedules.md).

    Neither: an InputError naming the settings that stop it (nothing to shrink).
    """
    stt = scenario.stt.kind == "simulated" and scenario.replay.oracle_from is None
    llm = (
        scenario.llm.kind == "simulated"
        and scenario.llm.cassette is None
        and scenario.llm.time_scale == 1.0
        and scenario.replay.oracle_from is None
    )
    if not (stt or llm):
        raise InputError(
            source,
            "scenario",
            "neither its STT nor its LLM takes scheduled delays (needs stt.kind = 'simulated' or a "
            "simulated llm without cassette or time_scale, and no replay.oracle_from): nothing to shrink",
        )
    return stt, llm


class Replayer:
    """Runs ``scenario`` under a given schedule and returns the run's metrics row."""

    def __init__(self, scenario: Scenario, conversation: Conversation, scratch_dir: Path) -> None:
        self.scenario = scenario.model_copy(
            update={"delays": scenario.delays.model_copy(update={"schedule": None})}
        )
        self.conversation = conversation
        self.scratch = scratch_dir / SCRATCH
        self.runs = 0

    def metrics(self, schedule: DelaySchedule) -> dict[str, Any]:
        parts = build_session_parts(self.scenario, self.conversation, schedule=schedule)
        meta = trace_metadata(self.scenario, self.conversation, parts.tokenizer)
        with TraceWriter(self.scratch, meta) as trace:
            Session(parts, trace).run()
        self.runs += 1
        data = read_trace(self.scratch)
        if not data.complete:
            raise RuntimeError("a replay ended without a complete trace")
        return metrics_row(data, self.conversation)
