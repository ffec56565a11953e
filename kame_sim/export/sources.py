"""Which traces a list of paths means: run directories, trace files, sweep directories.

``kame-sim metrics`` and ``kame-sim export`` take any mix of

* a **run directory** (it holds ``trace.arrows``; ``trace.arrow`` alone will do),
* a **trace file** (``trace.arrows`` or ``trace.arrow``),
* a **sweep directory** (it holds ``runs/`` and ``sweep.resolved.json`` or ``results.parquet``):
  every run of its plan, in plan order.

A run's id and swept parameters come from its trace's metadata (``kame_sim.run_id``,
``kame_sim.parameters``, written by sweeps), else from the sweep's ``metrics.json`` next to the
trace (sweeps written before the metadata existed), else the id is the run directory's name and
there are no parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kame_sim.errors import InputError
from kame_sim.sweep.runner import ERROR_FILE, METRICS_FILE, RESOLVED_FILE, RESULTS_FILE, RUNS_DIR
from kame_sim.sweep.spec import run_id_of_folder
from kame_sim.trace.ipc_file import IPC_FILENAME
from kame_sim.trace.reader import TraceData
from kame_sim.trace.schema import TRACE_FILENAME


@dataclass(frozen=True)
class RunSource:
    """One trace to read, and what its directory says about it."""

    trace: Path
    sweep_dir: Path | None = None
    #: ``ok`` / ``failed`` as the sweep recorded it; None outside sweeps or when never finished.
    sweep_status: str | None = None


@dataclass
class FoundRuns:
    """The traces found, in input order, and notes about what was left out (for stderr)."""

    runs: list[RunSource] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_sweep_dir(path: Path) -> bool:
    """A sweep's output directory: ``runs/`` plus the sweep's own bookkeeping."""
    return (path / RUNS_DIR).is_dir() and (
        (path / RESOLVED_FILE).is_file() or (path / RESULTS_FILE).is_file()
    )


def _trace_in(run_dir: Path) -> Path | None:
    for name in (TRACE_FILENAME, IPC_FILENAME):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def _sweep_status(run_dir: Path) -> str | None:
    if (run_dir / METRICS_FILE).is_file():
        try:
            return str(json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8")).get("status"))
        except (OSError, ValueError, AttributeError):
            return None
    if (run_dir / ERROR_FILE).is_file():
        return "failed"
    return None


def _planned_run_folders(sweep_dir: Path) -> list[str]:
    """The plan's run folders (sweep.resolved.json), else every folder under runs/ by name.

    A plan written before run folders had readable names lists no ``folder``: its runs are in
    ``runs/<run_id>/``.
    """
    try:
        resolved = json.loads((sweep_dir / RESOLVED_FILE).read_text(encoding="utf-8"))
        folders = [str(r.get("folder") or r["run_id"]) for r in resolved["runs"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        folders = sorted(p.name for p in (sweep_dir / RUNS_DIR).iterdir() if p.is_dir())
    return folders


def _sweep_runs(sweep_dir: Path, finished_only: bool, found: FoundRuns) -> list[RunSource]:
    out: list[RunSource] = []
    missing, unfinished = 0, 0
    for folder in _planned_run_folders(sweep_dir):
        run_dir = sweep_dir / RUNS_DIR / folder
        trace = _trace_in(run_dir)
        status = _sweep_status(run_dir)
        if trace is None:
            missing += 1
            continue
        if finished_only and status != "ok":
            unfinished += 1
            continue
        out.append(RunSource(trace, sweep_dir, status))
    if missing:
        found.notes.append(f"{sweep_dir}: {missing} planned run(s) have no trace (not run yet): left out")
    if unfinished:
        found.notes.append(f"{sweep_dir}: {unfinished} run(s) failed or did not finish: left out")
    if not out:
        what = "finished run" if finished_only else "run with a trace"
        raise InputError(sweep_dir, None, f"this sweep directory holds no {what}")
    return out


def find_runs(paths: list[Path], finished_only: bool = False) -> FoundRuns:
    """Resolve the command line's paths into traces (duplicates dropped, first one kept).

    ``finished_only``: leave out sweep runs that failed or never finished (a note says how many).
    Bad paths are an :class:`InputError` naming the path.
    """
    if not paths:
        raise InputError("<cli>", None, "give at least one run directory, trace file or sweep directory")
    found = FoundRuns()
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InputError(path, None, "no such file or directory")
        if path.is_file():
            candidates = [RunSource(path, None, _sweep_status(path.parent))]
        elif _trace_in(path) is not None:
            trace = _trace_in(path)
            assert trace is not None
            candidates = [RunSource(trace, None, _sweep_status(path))]
        elif is_sweep_dir(path):
            candidates = _sweep_runs(path, finished_only, found)
        else:
            message = "not a run directory (no trace.arrows), a trace file or a sweep directory (no runs/)"
            raise InputError(path, None, message)
        for run in candidates:
            key = run.trace.resolve()
            if key in seen:
                found.notes.append(f"{run.trace}: given twice, read once")
                continue
            seen.add(key)
            found.runs.append(run)
    return found


@dataclass(frozen=True)
class RunIdentity:
    """Who a run is: id, conversation, seed, policy and swept parameters."""

    run_id: str
    conversation_id: str
    seed: int | None
    policy: str
    parameters: dict[str, Any]


def run_identity(trace: TraceData) -> RunIdentity:
    """A trace's identity from its metadata, falling back to the sweep's metrics.json and folder."""
    meta = trace.metadata
    record: dict[str, Any] = {}
    metrics_json = trace.path.parent / METRICS_FILE
    if "kame_sim.run_id" not in meta or "kame_sim.parameters" not in meta:
        try:
            loaded = json.loads(metrics_json.read_text(encoding="utf-8"))
            record = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            record = {}
    folder = trace.path.parent.name
    run_id = meta.get("kame_sim.run_id") or record.get("run_id") or run_id_of_folder(folder) or folder
    parameters: Any = record.get("parameters") or {}
    if "kame_sim.parameters" in meta:
        try:
            parameters = json.loads(meta["kame_sim.parameters"])
        except ValueError:
            raise InputError(trace.path, "kame_sim.parameters", "metadata is not valid JSON") from None
    if not isinstance(parameters, dict):
        raise InputError(trace.path, "kame_sim.parameters", "metadata is not a JSON object")
    seed_text = meta.get("kame_sim.seed")
    seed = int(seed_text) if seed_text is not None and seed_text.lstrip("-").isdigit() else None
    return RunIdentity(
        run_id=str(run_id),
        conversation_id=meta.get("kame_sim.conversation_id", "?"),
        seed=seed,
        policy=meta.get("kame_sim.policy") or "unknown",
        parameters=parameters,
    )
