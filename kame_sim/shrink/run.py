"""``kame-sim shrink RUN --fails "METRIC OP VALUE"``: from a failing run to a minimal reproducer.

Reads the run's trace (its resolved scenario and the delays it realised), checks every input
before anything is written (the condition, that the run fails it, the output folder), searches
(:mod:`kame_sim.shrink.search`), then writes into the output folder, through its manifest:

- ``schedule.json``: the minimal schedule, ``unscheduled`` = the nominal delays, a ``note`` per
  entry (nominal, the run's value, the shrunk value);
- ``scenario.toml``: the run's scenario with ``delays.schedule = "schedule.json"``, runnable with
  ``kame-sim run``;
- ``run/``: that scenario's run (the reproducer), which must fail the condition — checked;
- ``timeline.png``: the reproducer's timeline, the shrunk events marked.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kame_sim.config import Scenario, load_scenario, scenario_from_dict
from kame_sim.draws import original_draws
from kame_sim.errors import InputError
from kame_sim.output_dir import OutputDir
from kame_sim.report.timeline import plot_timeline
from kame_sim.run_dir import check_run_dir
from kame_sim.runner import RUN_FILES, load_run_conversation, run_scenario
from kame_sim.scenario_file import write_scenario
from kame_sim.schedule import attachment, schedule_from_trace, word_index
from kame_sim.shrink.condition import Condition, parse_condition
from kame_sim.shrink.nominal import nominal_delays
from kame_sim.shrink.replay import Replayer, schedulable, schedule_of
from kame_sim.shrink.search import Progress, ShrinkResult, shrink_entries
from kame_sim.sweep.runner import metrics_row
from kame_sim.trace.reader import TraceData, read_trace

SCHEDULE_FILE = "schedule.json"
SCENARIO_FILE = "scenario.toml"
TIMELINE_FILE = "timeline.png"
RUN_DIR = "run"
OUT_FILES = (SCHEDULE_FILE, SCENARIO_FILE, TIMELINE_FILE)
MAX_RUNS_LIMIT = 100_000
MAX_TOLERANCE = 10.0


@dataclass(frozen=True)
class ShrinkOutcome:
    """What the command reports: the search's result, the run's metric, where the files went."""

    result: ShrinkResult
    original: float
    out_dir: Path
    schedule_path: Path
    scenario_path: Path
    run_dir: Path
    timeline_path: Path | None  # None: not drawn (--no-timeline)
    reproduced: float
    nominal_from: Path | None = None  # the scenario whose models gave the nominal delays, if not RUN's

    def summary(self) -> str:
        r = self.result
        nominal = "nominal" if self.nominal_from is None else f"nominal ({self.nominal_from}'s medians)"
        line = (
            f"{r.n_away} events away from {nominal} → {len(r.entries)} (runs spent {r.runs}); "
            f"condition still fails: {r.condition.metric} = {self.reproduced:.6g} (was {self.original:.6g})"
        )
        if not r.entries:
            line += "; the nominal delays alone fail it"
        return line + (" — run budget spent, the answer may not be minimal" if r.budget_hit else "")

    def command(self) -> str:
        return f"kame-sim run {self.scenario_path}"


def default_out_dir(run: Path) -> Path:
    folder = run if run.is_dir() else run.parent
    return folder.parent / f"{folder.name}-shrunk"


def _check_options(max_runs: int, tolerance: float) -> None:
    if isinstance(max_runs, bool) or not 1 <= max_runs <= MAX_RUNS_LIMIT:
        raise InputError("<cli>", "--max-runs", f"must be between 1 and {MAX_RUNS_LIMIT}, got {max_runs}")
    if not 0.0 < tolerance <= MAX_TOLERANCE:  # NaN fails this too
        raise InputError("<cli>", "--tolerance", f"must be > 0 and <= {MAX_TOLERANCE:g} s, got {tolerance}")


def shrink_run(
    run: Path,
    fails: str | Condition,
    out: Path | None = None,
    max_runs: int = 300,
    tolerance: float = 0.01,
    progress: Progress | None = None,
    timeline: bool = True,
    nominal_from: Path | None = None,
) -> ShrinkOutcome:
    """Shrink the failing run ``run`` (a run folder or its trace) under the condition ``fails``.

    ``timeline``: also draw the reproducer's ``timeline.png`` (a second or two of matplotlib).
    ``nominal_from``: a scenario file whose delay models define the nominal delays instead of the
    run's own. A run found by ``search`` is bad *because* its models are: against its own medians
    it is nominal everywhere, and the question worth asking is which of its delays, away from a
    realistic scenario's (the search's base), make it fail.

    InputError (one line, nothing written) for bad input, a run that does not fail the condition,
    or one with no value for its metric; :class:`~kame_sim.shrink.search.ShrinkError` when the run's
    own delays no longer fail when replayed with nominal ones elsewhere.
    """
    condition = fails if isinstance(fails, Condition) else parse_condition(fails)
    _check_options(max_runs, tolerance)
    run = Path(run)
    trace = read_trace(run)
    if not trace.complete:
        raise InputError(run, None, "the trace is not complete (the run did not end): nothing to shrink")
    scenario = scenario_from_dict(trace.scenario, f"{run} (its resolved scenario)")
    stt, llm = schedulable(scenario, run)
    conversation = load_run_conversation(scenario)
    row = metrics_row(trace, conversation)
    measured = row.get(condition.metric)
    if measured is None or measured != measured:
        raise InputError(run, condition.metric, "the run has no value of this metric (missing or NaN)")
    if not condition.holds(measured):
        raise InputError(
            run,
            "--fails",
            f"RUN passes the condition ({condition.metric} = {measured:.6g}; fails when "
            f"{condition.text()}): nothing to shrink",
        )
    out_dir = Path(out) if out is not None else default_out_dir(run)
    target = OutputDir(out_dir, "--out")
    target.check(OUT_FILES)
    check_run_dir(out_dir / RUN_DIR, True, RUN_FILES)
    reference = scenario if nominal_from is None else load_scenario(Path(nominal_from))
    nominal = nominal_delays(reference, stt, llm)
    kinds = {*nominal, *(("fault",) if llm else ())}
    # Start from every delay the run drew, not only those its trace realised: a stream cancelled
    # before its first chunk has no row, and giving it the nominal TTFT instead may let it speak.
    drawn = original_draws(scenario, conversation, trace)
    entries = [e for e in drawn.entries() if e["kind"] in kinds]
    source = {**schedule_from_trace(trace).source, "shrunk_from": str(run)}
    with tempfile.TemporaryDirectory(prefix="kame-sim-shrink-") as scratch:
        replayer = Replayer(scenario, conversation, Path(scratch))
        result = shrink_entries(
            entries,
            nominal,
            condition,
            lambda chosen: replayer.metrics(schedule_of(chosen, nominal, source)),
            max_runs,
            tolerance,
            progress,
        )
    outcome = _write(result, float(measured), scenario, source, target, out_dir, timeline)
    return dataclasses.replace(outcome, nominal_from=None if nominal_from is None else Path(nominal_from))


def _write(
    result: ShrinkResult,
    original: float,
    scenario: Scenario,
    source: dict[str, object],
    target: OutputDir,
    out_dir: Path,
    timeline: bool = True,
) -> ShrinkOutcome:
    """Write the schedule, the scenario, the reproducing run and its timeline; check it fails."""
    schedule = schedule_of(result.schedule_entries, result.nominal, source)
    note = (
        f"kame-sim shrink: fails {result.condition.text()} with {len(result.entries)} of {result.n_away} "
        f"events away from nominal; every other event at its nominal delay (unscheduled)"
    )
    notes = {e.key: e.note() for e in result.entries}
    try:
        schedule_path = target.record(SCHEDULE_FILE)
        schedule_path.write_text(schedule.to_json(note, notes), encoding="utf-8")
        shrunk_scenario = scenario.model_copy(
            update={"delays": scenario.delays.model_copy(update={"schedule": schedule_path.resolve()})}
        )
        header = f"{note}\nrun it with: kame-sim run {out_dir / SCENARIO_FILE}"
        scenario_path = write_scenario(shrunk_scenario, target.record(SCENARIO_FILE), header)
        ran = run_scenario(shrunk_scenario, out_dir / RUN_DIR, overwrite=True)
        reproduced = read_trace(ran.run_dir)
        row = metrics_row(reproduced, ran.conversation)
        value = row.get(result.condition.metric)
        if not result.condition.holds(value):
            raise RuntimeError(
                f"bug: the reproducer {ran.run_dir} passes {result.condition.text()} "
                f"({result.condition.metric} = {value}); the search measured {result.metric}"
            )
        marks = event_marks(reproduced, result.schedule_entries)
        picture = plot_timeline(reproduced, target.record(TIMELINE_FILE), marks=marks) if timeline else None
    except BaseException:
        target.rollback()
        raise
    target.commit()
    assert value is not None
    return ShrinkOutcome(
        result, original, out_dir, schedule_path, scenario_path, ran.run_dir, picture, float(value)
    )


def event_marks(trace: TraceData, entries: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """Where each entry's event happened in ``trace`` (``t_sim`` of the row it delays), labelled
    for the timeline: ``ttft #15`` at the first chunk, ``gap #15.2`` at the chunk, ``partial
    u1 w1`` / ``final u2`` at the STT result, ``fault #7`` at the error. Events the trace never
    reached are left out."""
    wanted = {attachment(e) for e in entries}
    table = trace.table.select(["event", "t_sim", "stream_id", "utterance", "text"]).to_pylist()
    words: dict[int, list[str]] = {}
    chunks: dict[int, int] = {}
    found: dict[tuple[Any, ...], tuple[float, str]] = {}
    for row in table:
        event, t, sid, u = row["event"], row["t_sim"], row["stream_id"], row["utterance"]
        key: tuple[Any, ...] | None = None
        label = ""
        if event == "user_word" and u is not None:
            words.setdefault(u, []).append(row["text"])
        elif event == "llm_first_chunk" and sid is not None:
            key, label = ("ttft", sid), f"ttft #{sid}"
        elif event == "llm_chunk" and sid is not None:
            k = chunks.get(sid, 0)
            chunks[sid] = k + 1
            key, label = ("chunk_gap", sid, k), f"gap #{sid}.{k}"
        elif event == "llm_error" and sid is not None:
            key, label = ("fault", sid), f"fault #{sid}"
        elif event == "stt_final" and u is not None:
            key, label = ("stt_final", u), f"final u{u}"
        elif event == "stt_partial" and u is not None:
            w = word_index(row["text"] or "", words.get(u, []))
            key, label = ("stt_partial", u, w), f"partial u{u} w{w}"
        if key is not None and key in wanted and key not in found:
            found[key] = (float(t), label)
    return sorted(found.values())
