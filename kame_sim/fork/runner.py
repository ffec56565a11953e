"""``kame-sim fork RUN --at T``: plan the branches (every check first, nothing written), run them,
compare each with the original.

Output folder (default ``RUN-fork-at-Ts`` next to RUN), every file listed in its manifest:

* ``NAME/``                 the branch's run folder (trace, resolved scenario);
* ``NAME.toml``             the branch as a runnable scenario (``kame-sim run NAME.toml`` replays it);
* ``NAME.schedule.json``    its delay schedule: the pinned prefix plus the edits;
* ``deltas.csv``            per branch and metric: original, branch, branch − original;
* ``NAME.png``              the original's timeline above the branch's, the fork time marked;
* ``fork.json``             what changed, where the traces first diverge, the changed metrics.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from kame_sim.clock import to_seconds, to_ticks
from kame_sim.compare import RunComparison, compare_runs, plot_comparison, write_table
from kame_sim.config import MAX_RUN_S, KameSettings, Scenario, scenario_from_dict, set_dotted
from kame_sim.conversation import Conversation
from kame_sim.draws import original_draws
from kame_sim.errors import InputError
from kame_sim.fork.edits import BranchChanges, parse_changes
from kame_sim.fork.prefix import Causes, causes, merged, pin_prefix
from kame_sim.lockstep import run_batch
from kame_sim.output_dir import OutputDir
from kame_sim.run_dir import RESOLVED_SCENARIO, check_run_dir
from kame_sim.runner import RUN_FILES, RunResult, load_run_conversation, run_scenario
from kame_sim.scenario_file import write_scenario
from kame_sim.schedule import DelaySchedule, scenario_schedule
from kame_sim.sim import ProgressCallback
from kame_sim.trace import WALL_COLUMNS, read_trace
from kame_sim.trace.reader import TraceData
from kame_sim.trace.schema import TRACE_FILENAME

DELTAS_FILE = "deltas.csv"
SUMMARY_FILE = "fork.json"


@dataclass
class Branch:
    name: str
    changes: BranchChanges
    scenario: Scenario
    schedule: DelaySchedule

    def files(self) -> list[str]:
        return [f"{self.name}.toml", f"{self.name}.schedule.json", f"{self.name}.png"]


@dataclass
class ForkPlan:
    run: Path
    original: Scenario
    trace: TraceData
    conversation: Conversation
    at: float
    out: Path
    branches: list[Branch]
    overwrite: bool


@dataclass
class BranchResult:
    branch: Branch
    result: RunResult
    comparison: RunComparison
    first_divergence: float | None  # t_sim of the first row that differs (None: identical)
    picture: Path


def default_out(run: Path, at: float) -> Path:
    return run.parent / f"{run.name}-fork-at-{at:g}s"


def load_original(run: Path) -> tuple[Scenario, TraceData]:
    """A run folder's resolved scenario and trace; anything else is one line naming RUN."""
    if not run.is_dir():
        raise InputError(
            run, None, "not a run folder (give the folder a run wrote: trace.arrows, scenario.resolved.json)"
        )
    for name in (TRACE_FILENAME, RESOLVED_SCENARIO):
        if not (run / name).is_file():
            raise InputError(run, None, f"not a run folder: no {name}")
    try:
        data = json.loads((run / RESOLVED_SCENARIO).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(run / RESOLVED_SCENARIO, None, f"not a resolved scenario ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(run / RESOLVED_SCENARIO, None, "not a resolved scenario (a JSON object)")
    scenario = scenario_from_dict(data, run / RESOLVED_SCENARIO)
    trace = read_trace(run / TRACE_FILENAME)
    if not trace.complete:
        raise InputError(run / TRACE_FILENAME, None, "partial trace (no run_end): fork a finished run")
    return scenario, trace


def check_forkable(scenario: Scenario, source: Path) -> None:
    """A fork replays the original's delays from a schedule: simulated STT and LLM, virtual time."""
    why = None
    if scenario.stt.kind != "simulated":
        why = ("stt.kind", f"{scenario.stt.kind!r} measures its own delays; a fork needs the simulated STT")
    elif scenario.llm.kind != "simulated" or scenario.llm.cassette is not None:
        why = (
            "llm.kind",
            "a live or recorded back-end cannot be replayed to a time; a fork needs the simulated LLM",
        )
    elif scenario.llm.time_scale != 1.0:
        why = ("llm.time_scale", "must be 1 (a schedule's delays would be scaled again)")
    elif scenario.replay.oracle_from is not None:
        why = ("replay.oracle_from", "a replayed oracle has no back-end to change")
    elif scenario.run.time_coupling != "virtual":
        why = (
            "run.time_coupling",
            f"{scenario.run.time_coupling!r} is not reproducible; a fork needs 'virtual'",
        )
    if why is not None:
        raise InputError(source, why[0], why[1])


def check_at(at: float) -> None:
    if not math.isfinite(at) or not 0.0 <= at <= MAX_RUN_S:
        raise InputError("<cli>", "--at", f"must be a time in seconds, 0 .. {MAX_RUN_S:g}, got {at!r}")


def _check_edits(edits: DelaySchedule, found: Causes, at: int) -> None:
    """Every edit must be of an event caused at or after the fork (the prefix is the original's)."""
    fork_s = to_seconds(at)
    prefix = f"before the fork at {fork_s:g} s (part of the prefix)"
    for sid in [*edits.ttft, *edits.fault, *(s for s, _ in edits.chunk_gap)]:
        start = found.stream_start.get(sid)
        if start is not None and start < at:
            raise InputError(
                "<cli>",
                f"--set stream.{sid}",
                f"stream {sid} started at {to_seconds(start):g} s, before the fork at {fork_s:g} s: it is "
                "part of the replayed prefix (streams started from the fork on can be edited)",
            )
    for key in edits.stt_partial:
        end = found.word_end.get(key)
        if end is None:
            raise InputError("<cli>", f"--set stt.partial.{key[0]}.{key[1]}", "no such word of the user's")
        if end < at:
            raise InputError(
                "<cli>",
                f"--set stt.partial.{key[0]}.{key[1]}",
                f"the word ended at {to_seconds(end):g} s, {prefix}",
            )
    for u in edits.stt_final:
        end = found.utterance_end.get(u)
        if end is None:
            raise InputError("<cli>", f"--set stt.final.{u}", "no such utterance of the user's")
        if end < at:
            raise InputError(
                "<cli>",
                f"--set stt.final.{u}",
                f"the utterance ended at {to_seconds(end):g} s, {prefix}",
            )


def branch_groups(sets: Sequence[str], branches: Sequence[str]) -> list[list[str]]:
    """``--set`` assignments are one branch; each ``--branch "K=V K=V"`` is another."""
    groups = [list(sets)] if sets or not branches else []
    for text in branches:
        try:
            groups.append(shlex.split(text))
        except ValueError as exc:
            raise InputError("<cli>", "--branch", f"cannot split {text!r}: {exc}") from None
    return groups


def _check_model_key(data: dict[str, Any], key: str) -> None:
    """A key inside a delay model must be one of the original's model's keys (else: set it whole)."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        if i >= 2 and (not isinstance(node, dict) or part not in node):
            model = ".".join(parts[:2])
            kind = data[parts[0]][parts[1]].get("kind", "?")
            known = ", ".join(k for k in node if k != "kind") if isinstance(node, dict) else "none"
            raise InputError(
                "<cli>",
                f"--set {key}",
                f"the run's {model} is a {kind} model with keys {known}; set a key it has, or the whole "
                f"model ({model}={{kind=...}})",
            )
        node = node[part] if isinstance(node, dict) else None


def _branch_scenario(original: Scenario, changes: BranchChanges, at: float, schedule_path: Path) -> Scenario:
    data = json.loads(original.resolved_json())
    for key, value in changes.models.items():
        _check_model_key(data, key)
        set_dotted(data, key, value)
    data["delays"] = {"schedule": str(schedule_path)}
    if changes.policy:
        if original.switch.at is not None:
            raise InputError(
                "<cli>",
                "--set policy",
                f"the original already switches its policy at {original.switch.at:g} s",
            )
        data["switch"] = {"at": at, "policy": changes.policy}
    source = "<cli> (--set " + ", ".join(changes.assignments) + ")" if changes.assignments else "<cli>"
    return scenario_from_dict(data, source)


def plan_fork(
    run: Path,
    at: float,
    groups: Sequence[Sequence[str]],
    out: Path | None = None,
    overwrite: bool = False,
) -> ForkPlan:
    """Every check before anything is run or written: RUN, T, each branch's keys and values, OUT."""
    check_at(at)
    original, trace = load_original(run)
    check_forkable(original, run / RESOLVED_SCENARIO)
    conversation = load_run_conversation(original)
    recorded = trace.metadata.get("kame_sim.conversation_hash")
    if recorded is not None and recorded != conversation.content_hash:
        raise InputError(
            original.conversation.path, "conversation", "changed since the run (its content hash differs)"
        )
    out = out or default_out(run, at)
    tick = to_ticks(at)
    found = causes(original, conversation, trace)
    draws = original_draws(original, conversation, trace)
    base = scenario_schedule(original) or DelaySchedule()
    pinned = pin_prefix(draws, found, tick)
    names = ["branch"] if len(groups) == 1 else [f"b{i + 1}" for i in range(len(groups))]
    branches = []
    for name, group in zip(names, groups, strict=True):
        changes = parse_changes(list(group), original.policy.kind)
        _check_edits(changes.edits, found, tick)
        schedule = merged(base, pinned, changes.edits)
        schedule.source = {"forked_from": str(run), "at": at, "set": list(group)}
        scenario = _branch_scenario(original, changes, at, (out / f"{name}.schedule.json").resolve())
        branches.append(Branch(name, changes, scenario, schedule))
    check_out(out, branches, overwrite, run)
    return ForkPlan(run, original, trace, conversation, at, out, branches, overwrite)


def check_out(out: Path, branches: Sequence[Branch], overwrite: bool, run: Path | None = None) -> OutputDir:
    """The fork folder: not the original's folder (nor a branch's run folder: that would replace
    the original's trace), no foreign files where the fork writes, an earlier fork only with
    ``overwrite``."""
    if run is not None:
        here = run.resolve()
        if here in (out.resolve(), *((out / b.name).resolve() for b in branches)):
            raise InputError(
                out, "--out", f"would write into the run being forked ({run}); choose another folder"
            )
    folder = OutputDir(out, "fork folder")
    if folder.written and not overwrite:
        raise InputError(out, None, "already holds a fork's output; pass --overwrite or choose --out")
    folder.check([DELTAS_FILE, SUMMARY_FILE, *(f for b in branches for f in b.files())])
    for b in branches:
        check_run_dir(out / b.name, overwrite, RUN_FILES)
    return folder


def first_divergence(a: TraceData, b: TraceData) -> float | None:
    """The ``t_sim`` of the first row (in trace order) that differs, wall columns aside.

    ``policy_switch`` rows are left out: they say where a change was made, not what it changed.
    """
    ta = a.table.drop_columns([c for c in WALL_COLUMNS if c in a.table.column_names] + ["seq"])
    tb = b.table.drop_columns([c for c in WALL_COLUMNS if c in b.table.column_names] + ["seq"])
    ra = [r for r in ta.to_pylist() if r["event"] != "policy_switch"]
    rb = [r for r in tb.to_pylist() if r["event"] != "policy_switch"]
    for x, y in zip(ra, rb, strict=False):
        if x != y:
            return min(x["t_sim"], y["t_sim"])
    if len(ra) != len(rb):
        longer = ra if len(ra) > len(rb) else rb
        return longer[min(len(ra), len(rb))]["t_sim"]
    return None


def _deltas(results: Sequence[BranchResult]) -> pa.Table:
    rows: dict[str, list[Any]] = {"branch": [], "metric": [], "original": [], "value": [], "delta": []}
    for r in results:
        for m in r.comparison.metrics:
            rows["branch"].append(r.branch.name)
            rows["metric"].append(m.name)
            rows["original"].append(None if m.a is None else float(m.a))
            rows["value"].append(None if m.b is None else float(m.b))
            rows["delta"].append(m.delta)
    types = [pa.string(), pa.string(), pa.float64(), pa.float64(), pa.float64()]
    return pa.table({k: pa.array(v, type=t) for (k, v), t in zip(rows.items(), types, strict=True)})


def write_branches(plan: ForkPlan) -> OutputDir:
    """Each branch's schedule and runnable scenario, listed in the fork folder's manifest."""
    folder = check_out(plan.out, plan.branches, plan.overwrite, plan.run)
    folder.remove_previous()
    try:
        for b in plan.branches:
            b.schedule.write(folder.record(f"{b.name}.schedule.json"))
            header = (
                f"kame-sim fork {plan.run} --at {plan.at:g}: branch {b.name}\n"
                f"changes: {' '.join(b.changes.assignments) or 'none'}\n"
                f"the schedule pins every delay caused before {plan.at:g} s to the original's"
            )
            write_scenario(b.scenario, folder.record(f"{b.name}.toml"), header)
    except BaseException:
        folder.rollback()
        raise
    folder.commit()
    return folder


def run_branches(plan: ForkPlan, progress: ProgressCallback | None = None) -> list[RunResult]:
    """Run the branches: one lockstep batch with the real front-end, else one after the other."""
    dirs: list[Path | None] = [plan.out / b.name for b in plan.branches]
    scenarios = [b.scenario for b in plan.branches]
    if isinstance(plan.original.frontend, KameSettings) and len(plan.branches) > 1:
        return run_batch(scenarios, dirs, plan.overwrite, progress)
    return [run_scenario(sc, d, plan.overwrite, progress) for sc, d in zip(scenarios, dirs, strict=True)]


def run_fork(
    plan: ForkPlan,
    progress: ProgressCallback | None = None,
    t_range: tuple[float | None, float | None] = (None, None),
) -> list[BranchResult]:
    """Write the branches, run them, compare each with the original, write the comparison.

    ``t_range``: the part of the run the pictures show (default: all of it).
    """
    folder = write_branches(plan)
    runs = run_branches(plan, progress)
    results = []
    original_trace = plan.run / TRACE_FILENAME
    for b, run in zip(plan.branches, runs, strict=True):
        comparison = compare_runs(original_trace, run.trace_path)
        picture = plot_comparison(
            comparison.a,
            comparison.b,
            folder.record(f"{b.name}.png"),
            ("original", b.name),
            mark_at=plan.at,
            t_range=t_range,
            title=f"kame-sim fork at {plan.at:g} s — original (upper) vs {b.name} (lower): "
            + (" ".join(b.changes.assignments) or "no change"),
        )
        results.append(
            BranchResult(b, run, comparison, first_divergence(comparison.a, comparison.b), picture)
        )
    write_table(_deltas(results), folder.record(DELTAS_FILE))
    folder.record(SUMMARY_FILE).write_text(
        json.dumps(summary(plan, results), indent=2) + "\n", encoding="utf-8"
    )
    folder.commit()
    return results


def summary(plan: ForkPlan, results: Sequence[BranchResult]) -> dict[str, Any]:
    return {
        "run": str(plan.run),
        "at": plan.at,
        "branches": [
            {
                "name": r.branch.name,
                "set": r.branch.changes.assignments,
                "run_dir": str(r.result.run_dir),
                "first_divergence_s": r.first_divergence,
                "changed_metrics": {
                    m.name: {"original": m.a, "branch": m.b, "delta": m.delta}
                    for m in r.comparison.metrics
                    if m.changed()
                },
            }
            for r in results
        ],
    }
