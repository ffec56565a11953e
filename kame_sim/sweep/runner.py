"""Running a sweep: many independent runs in worker processes (or on Ray), resumable, one table.

Each run writes ``runs/<parameters>-<run_id>/`` (the trace via :func:`kame_sim.runner.run_scenario`, then
``metrics.json``); the parent only schedules, counts and finally gathers every run's
``metrics.json`` into ``results.parquet``. Because a run's output is complete only when its trace
ends with ``run_end`` *and* its ``metrics.json`` exists (written last, atomically), a sweep killed
at any moment can be re-run: finished runs are skipped, half-done run directories are redone.

A failed run (bad input only visible at run time, a crash in the simulation) is recorded with
status ``failed`` and its error, and the sweep goes on: one broken design point must not cost the
other hundreds. Failed runs are retried on the next resume.

With ``batch_size`` > 1, runs that may share a front-end step (:mod:`kame_sim.sweep.batching`)
are one task, a :class:`RunBatch` run by :func:`execute_batch` as lockstep replicas
(:func:`kame_sim.lockstep.run_batch`); each replica still writes its own run folder, exactly as
the solo run does, and yields its own outcome.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kame_sim import __version__
from kame_sim.config import KameSettings, scenario_from_dict
from kame_sim.conversation import Conversation
from kame_sim.errors import InputError
from kame_sim.lockstep import run_batch
from kame_sim.metrics import compute_metrics, reference_replies_from_conversation
from kame_sim.output_dir import OutputDir
from kame_sim.paths import make_output_dir
from kame_sim.runner import RUN_FILES, RunResult, check_checkpoint_files, run_scenario
from kame_sim.sweep.batching import batch_key, plan_batches
from kame_sim.sweep.spec import MAX_BATCH_SIZE, PlannedRun, SweepPlan, load_sweep, run_id_of_folder
from kame_sim.trace import TraceData, read_trace

#: ``progress(done, total, failed)``: runs finished (resumed ones included), runs in the sweep,
#: runs failed so far. Called in the calling process, once at the start and after every run.
ProgressCallback = Callable[[int, int, int], None]

METRICS_FILE = "metrics.json"
ERROR_FILE = "error.json"
RESULTS_FILE = "results.parquet"
RESOLVED_FILE = "sweep.resolved.json"
RUNS_DIR = "runs"
FIXED_COLUMNS = ("run_id", "status", "error", "conversation_id", "seed")
#: How often a process pool may be rebuilt after a worker died (OOM killer, segfault, SIGKILL)
#: before the runs still pending are recorded as failed; bounds the damage of a run that kills
#: its worker every time.


@dataclass(frozen=True)
class RunTask:
    """What a worker needs for one run: plain data, so it pickles to processes and Ray."""

    run_id: str
    run_dir: str
    scenario: dict[str, Any]
    parameters: dict[str, Any]
    seed: int
    conversation_id: str


@dataclass(frozen=True)
class RunBatch:
    """Runs a worker steps as one lockstep batch (one task for the pool); one run: a solo run."""

    tasks: tuple[RunTask, ...]


@dataclass(frozen=True)
class RunOutcome:
    """One run's result as the parent sees it."""

    run_id: str
    status: str  # "ok" | "failed"
    error: str | None
    conversation_id: str
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


@dataclass
class SweepResult:
    """What a sweep did: the results table and which runs ran, were resumed, or failed."""

    out_dir: Path
    results_path: Path
    table: pa.Table
    plan: SweepPlan
    executed: list[str]  # run ids run by this call (ok or failed)
    resumed: list[str]  # run ids found complete and skipped
    failed: list[str]  # run ids whose status is "failed"
    wall_s: float
    batch_size: int = 1  # the most runs one lockstep batch could hold
    batches: int = 0  # lockstep batches of more than one run this call ran

    @property
    def total(self) -> int:
        return len(self.plan.runs)

    @property
    def ok(self) -> bool:
        """True when every run of the sweep finished."""
        return not self.failed


def _write_json_atomic(out: OutputDir, name: str, data: dict[str, Any]) -> None:
    """Write-then-rename, so a reader (or a resume) never sees half a file; both names are listed
    in the folder's manifest first (a crash between the two leaves a file kame-sim may remove)."""
    tmp, path = out.record_all((name + ".tmp", name))
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return exc.one_line()
    return f"{type(exc).__name__}: {exc}"


#: ``metrics.json`` as :func:`_write_json_atomic` lists it (temporary name first), so that the run
#: lists it with its own files in one manifest write.
_METRICS_NAMES = (METRICS_FILE + ".tmp", METRICS_FILE)


def metrics_row(trace: TraceData, conversation: Conversation | None = None) -> dict[str, Any]:
    """The per-run metric columns of one complete trace (:meth:`RunMetrics.as_row`).

    With the conversation, the reply-agreement metrics (``reply_f1_mean``) are filled in too:
    the reference is what the front-end's speaker really said after each user utterance.
    """
    references = None
    if conversation is not None:
        references = reference_replies_from_conversation(conversation, trace.scenario)
    run_metrics, _turns = compute_metrics(trace, references)
    return run_metrics.as_row()


def run_metadata(task: RunTask) -> dict[str, str]:
    """What a sweep adds to each trace's schema metadata: the run id and the swept values (JSON,
    in the sweep's parameter order), so a trace file alone says which design point it is."""
    return {"kame_sim.run_id": task.run_id, "kame_sim.parameters": json.dumps(task.parameters)}


def execute_run(task: RunTask, batch: dict[str, Any] | None = None) -> RunOutcome:
    """Run one sweep run from scratch and write its ``metrics.json`` (runs in a worker).

    Never raises for a failed run: the error is returned (and written to ``error.json``) so the
    sweep can go on. What an earlier attempt wrote in the run directory is removed first (a killed
    worker's half-done run is redone); files kame-sim did not write there are left alone.
    ``batch``: what ``metrics.json`` records about the lockstep batch this run fell back from.
    """
    started = time.perf_counter()
    run_dir = Path(task.run_dir)
    conversation_id = task.conversation_id
    try:
        OutputDir(run_dir).remove_previous()
        scenario = scenario_from_dict(task.scenario, run_dir / "scenario.resolved.json")
        result = run_scenario(scenario, run_dir, metadata=run_metadata(task), also_record=_METRICS_NAMES)
        conversation_id = result.conversation_id
        return _record_ok(task, result, time.perf_counter() - started, batch)
    except Exception as exc:
        return _record_failure(task, exc, conversation_id, time.perf_counter() - started)


def _record_ok(
    task: RunTask, result: RunResult, wall: float, batch: dict[str, Any] | None = None
) -> RunOutcome:
    """A finished run's metrics, written to its ``metrics.json`` (last, atomically).

    The trace the run kept in memory is the one measured (the same table, checked as a read
    would); a run whose trace outgrew what a run keeps is read back from its file.
    """
    trace = result.trace if result.trace is not None else read_trace(result.run_dir)
    if not trace.complete:
        raise RuntimeError("the run ended without a complete trace")
    row = metrics_row(trace, result.conversation)  # the run's own: no second load
    record: dict[str, Any] = {
        "run_id": task.run_id,
        "status": "ok",
        "kame_sim_version": __version__,
        "conversation_id": result.conversation_id,
        "seed": task.seed,
        "parameters": task.parameters,
        "wall_s": wall,
        "metrics": row,
    }
    if batch is not None:
        record["batch"] = batch
    _write_json_atomic(OutputDir(Path(task.run_dir)), METRICS_FILE, record)
    return RunOutcome(task.run_id, "ok", None, result.conversation_id, row, wall)


def _record_failure(task: RunTask, exc: BaseException, conversation_id: str, wall: float) -> RunOutcome:
    """A failed run: its ``error.json`` (any stale ``metrics.json`` removed) and its outcome."""
    message = _error_text(exc)
    run_dir = Path(task.run_dir)
    try:
        out = OutputDir(run_dir)
        if out.owns(METRICS_FILE):
            (run_dir / METRICS_FILE).unlink(missing_ok=True)
        _write_json_atomic(
            out,
            ERROR_FILE,
            {"run_id": task.run_id, "status": "failed", "error": message, "parameters": task.parameters},
        )
    except (OSError, InputError):
        pass  # the outcome still carries the error
    return RunOutcome(task.run_id, "failed", message, conversation_id, {}, wall)


def execute_batch(batch: RunBatch) -> list[RunOutcome]:
    """Run a batch's runs as lockstep replicas; one outcome per run, in the batch's order.

    Each replica writes its own run folder as :func:`execute_run` would (its trace adds
    ``kame_sim.batch_size`` / ``kame_sim.replica_index`` metadata; ``metrics.json`` a ``batch``
    entry; ``wall_s`` is the batch's wall time over its size). Never raises for a failed run. A
    failure of the batch itself (a replica's bad input that only the run sees, a back-end that
    raises mid-run, a model error) falls back to running every replica alone: the replica at fault
    then fails alone with its own error and the others finish, the same runs they are in a batch
    (a model error fails each of them with that error). A failure after the batch ran (a
    replica's metrics) fails that replica only.
    """
    tasks = batch.tasks
    if len(tasks) == 1:
        return [execute_run(tasks[0])]
    started = time.perf_counter()
    try:
        scenarios = []
        for task in tasks:
            run_dir = Path(task.run_dir)
            OutputDir(run_dir).remove_previous()
            scenarios.append(scenario_from_dict(task.scenario, run_dir / "scenario.resolved.json"))
        results = run_batch(
            scenarios, [Path(t.run_dir) for t in tasks], metadata=[run_metadata(t) for t in tasks]
        )
    except Exception as exc:
        fallback = {"size": 1, "fallback_from": len(tasks), "batch_error": _error_text(exc)}
        return [execute_run(task, fallback) for task in tasks]
    share = (time.perf_counter() - started) / len(tasks)
    outcomes = []
    for index, (task, result) in enumerate(zip(tasks, results, strict=True)):
        info = {"size": len(tasks), "index": index}
        try:
            outcomes.append(_record_ok(task, result, share, info))
        except Exception as exc:
            outcomes.append(_record_failure(task, exc, result.conversation_id, share))
    return outcomes


def make_batches(tasks: list[RunTask], batch_size: int) -> list[RunBatch]:
    """The pool's tasks: runs that may share a front-end step grouped by up to ``batch_size``
    (:func:`kame_sim.sweep.batching.plan_batches`), every other run alone."""
    keys = [batch_key(t.scenario, t.conversation_id) for t in tasks]
    return [RunBatch(tuple(tasks[i] for i in group)) for group in plan_batches(keys, batch_size)]


def finished_outcome(run_dir: Path, run_id: str) -> RunOutcome | None:
    """The recorded outcome of a finished run, or None if it has to be (re)done.

    Finished means: ``metrics.json`` is whole, names this run and this kame-sim version, and the
    trace is complete (ends with ``run_end``, no torn batch). Anything else (a worker killed
    mid-run, a corrupted trace, deleted metrics) is redone.
    """
    try:
        record = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
        if record.get("run_id") != run_id or record.get("status") != "ok":
            return None
        if record.get("kame_sim_version") != __version__:
            return None  # written by another release: its metrics may mean something else
        trace = read_trace(run_dir)
    except (OSError, ValueError, AttributeError):  # bad JSON, not an object, InputError (a ValueError)
        return None
    if not trace.complete or trace.truncated:
        return None
    return RunOutcome(
        run_id,
        "ok",
        None,
        str(record.get("conversation_id", "?")),
        dict(record.get("metrics") or {}),
        float(record.get("wall_s") or 0.0),
    )


def _failed(task: RunTask, message: str) -> RunOutcome:
    return RunOutcome(task.run_id, "failed", message, task.conversation_id)


#: What the pool runs: a batch (:func:`execute_batch`), or one run (:func:`execute_run`).
Unit = RunBatch | RunTask


def _unit_tasks(unit: Unit) -> tuple[RunTask, ...]:
    return unit.tasks if isinstance(unit, RunBatch) else (unit,)


def _split(unit: Unit) -> list[Unit]:
    """A batch as batches of one run each (a run alone is itself)."""
    if isinstance(unit, RunBatch):
        return [RunBatch((task,)) for task in unit.tasks]
    return [unit]


def _as_outcomes(result: RunOutcome | list[RunOutcome]) -> list[RunOutcome]:
    return [result] if isinstance(result, RunOutcome) else list(result)


def _failed_unit(unit: Unit, message: str) -> list[RunOutcome]:
    return [_failed(task, message) for task in _unit_tasks(unit)]


def _init_worker(parent: int, torch_threads: int, uses_torch: bool) -> None:
    """Pool worker set-up: die with the sweep process (:func:`die_with_parent`), and
    ``torch_threads`` intra-op threads, so N workers share the cores instead of each starting one
    thread per core. torch is imported only for a sweep that uses the real front-end (a
    behavioural sweep never imports it)."""
    die_with_parent(parent)
    gc.freeze()  # see _in_process
    if uses_torch or "torch" in sys.modules:
        import torch

        torch.set_num_threads(torch_threads)


def _worker_initargs(tasks: Iterable[RunTask], workers: int) -> tuple[int, bool]:
    """``(cores // workers, whether any run uses the real front-end)`` for :func:`_init_worker`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    uses_torch = any((t.scenario.get("frontend") or {}).get("kind") == "kame" for t in tasks)
    return max(1, cores // workers), uses_torch


def _in_process(units: list[RunBatch]) -> Iterator[RunOutcome]:
    # What is loaded by now (kame-sim, pyarrow, numpy, pydantic) lives as long as the process:
    # frozen, the garbage collector stops rescanning it after every few runs (a run's own garbage
    # is still collected). Changes no result, only when memory is scanned.
    gc.freeze()
    for unit in units:
        yield from execute_batch(unit)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _watch_parent(parent: int, interval: float = 0.5) -> None:
    """Poll the parent's pid; once the worker has been handed to another parent, end it."""
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as the sweep process that started it dies.

    Why: a killed sweep (SIGKILL gives it no chance to stop its pool) would otherwise leave workers
    running their current runs to the end, burning CPU and writing into the sweep folder behind
    the user's back. On Linux the kernel kills the worker with its parent (``PR_SET_PDEATHSIG``);
    everywhere, a daemon thread also polls the parent's pid (the only way on macOS, and a safety
    net for a parent that died before ``prctl`` took effect).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="kame-sim-parent-watch", daemon=True).start()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now (their runs are redone on resume) instead of waiting for them.

    ``ProcessPoolExecutor`` has no public way to stop running tasks; ``_processes`` is the map of
    its worker processes (stable since Python 3.2).
    """
    for process in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(Exception):
            process.kill()


def _process_pool(
    units: Sequence[Unit],
    workers: int,
    run: Callable[[Any], RunOutcome | list[RunOutcome]] = execute_batch,
) -> Iterator[RunOutcome]:
    """Run units (batches or single runs) in spawned worker processes; a run that kills its worker
    fails alone.

    spawn (not fork): a fresh interpreter per worker is safe with torch and threads, and behaves
    the same on Linux and macOS. At most ``workers`` units are in flight, so when a worker dies
    (and takes the pool with it) the suspects are exactly the units in flight. Each suspect run is
    then run alone in a fresh pool (a batch is split into its runs): one that breaks its pool alone
    is recorded as failed, the others (and every unit not started yet) go on. One broken design
    point never costs the other hundreds.
    """
    context = multiprocessing.get_context("spawn")
    initargs = _worker_initargs((t for u in units for t in _unit_tasks(u)), workers)
    queue: deque[Unit] = deque(units)
    suspects: deque[Unit] = deque()
    while queue or suspects:
        solo = bool(suspects)
        source = deque([suspects.popleft()]) if solo else queue
        limit = 1 if solo else workers
        in_flight: dict[Future[Any], Unit] = {}
        victims: list[Unit] = []
        broken: BaseException | None = None
        pool = ProcessPoolExecutor(
            max_workers=limit, mp_context=context, initializer=_init_worker, initargs=(os.getpid(), *initargs)
        )
        try:
            while source and len(in_flight) < limit:
                unit = source.popleft()
                in_flight[pool.submit(run, unit)] = unit
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = in_flight.pop(future)
                    try:
                        outcomes = _as_outcomes(future.result())
                    except BrokenProcessPool as exc:
                        broken = exc
                        victims.append(unit)
                        continue
                    except Exception as exc:  # e.g. a task that could not be pickled
                        outcomes = _failed_unit(unit, _error_text(exc))
                    yield from outcomes
                if broken is not None:
                    victims.extend(in_flight.values())  # they die with the pool
                    in_flight.clear()
                    break
                while source and len(in_flight) < limit:
                    unit = source.popleft()
                    in_flight[pool.submit(run, unit)] = unit
        except BaseException:
            # Ctrl-C, SIGTERM turned into an exception, or a consumer that stops early: stop the runs
            # in flight (a resume redoes them) and drop the queued ones instead of finishing them.
            _kill_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if broken is not None:
            if solo and len(_unit_tasks(victims[0])) == 1:
                yield from _failed_unit(victims[0], f"its worker process died while it ran alone: {broken}")
            else:
                for victim in victims:
                    suspects.extend(_split(victim))


def _require_ray() -> Any:
    """The ray module, or an InputError saying how to get it (Ray is optional)."""
    try:
        import ray
    except ImportError:
        raise InputError(
            "<cli>", "--ray", "Ray is not installed in this environment (pip install 'ray>=2.9')"
        ) from None
    return ray


def _ray_backend(units: list[RunBatch], workers: int, address: str) -> Iterator[RunOutcome]:
    """Run units (batches) as Ray remote tasks: ``address="local"`` starts a private local instance.

    The output directory must be visible to every Ray node (a shared file system), since each
    task writes its own run directory. Ray retries a task whose worker died (``max_retries``).
    """
    ray = _require_ray()
    started_here = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
        if address == "local":
            ray.init(num_cpus=workers, **options)
        else:
            ray.init(address=address, **options)
        started_here = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=2)(execute_batch)
        queue = list(units)
        in_flight: dict[Any, RunBatch] = {}
        limit = max(workers, 1) * 2
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                unit = queue.pop(0)
                in_flight[remote.remote(unit)] = unit
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                unit = in_flight.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except Exception as exc:  # ray.exceptions.RayError and friends
                    outcomes = _failed_unit(unit, _error_text(exc))
                yield from outcomes
    finally:
        if started_here:
            ray.shutdown()


def typed_column(values: list[Any]) -> pa.Array:
    """A typed column from Python values; mixed ints/floats become float, anything else JSON."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.array(values, pa.float64())  # a metric undefined in every run is still a number
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if all(isinstance(v, str) for v in present):
        return pa.array(values, pa.string())
    return pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in values], pa.string())


def results_table(plan: SweepPlan, outcomes: dict[str, RunOutcome]) -> pa.Table:
    """One row per planned run (plan order): ids, status, parameters, then every metric column."""
    runs = plan.runs
    rows = [outcomes[r.run_id] for r in runs]
    columns: dict[str, pa.Array] = {
        "run_id": pa.array([r.run_id for r in runs], pa.string()),
        "status": pa.array([o.status for o in rows], pa.string()),
        "error": pa.array([o.error for o in rows], pa.string()),
        "conversation_id": pa.array(
            [
                o.conversation_id if o.conversation_id != "?" else r.conversation_id
                for o, r in zip(rows, runs, strict=True)
            ],
            pa.string(),
        ),
        "seed": pa.array([r.seed for r in runs], pa.int64()),
    }
    for key in plan.parameter_keys:
        columns[key] = typed_column([r.parameters[key] for r in runs])
    metric_names: list[str] = []
    for outcome in rows:
        for name in outcome.metrics:
            if name not in metric_names and name not in columns:
                metric_names.append(name)
    for name in metric_names:
        columns[name] = typed_column([o.metrics.get(name) for o in rows])
    return pa.table(columns)


def _tasks(plan: SweepPlan, runs: list[PlannedRun], runs_dir: Path) -> list[RunTask]:
    return [
        RunTask(
            run_id=r.run_id,
            run_dir=str(runs_dir / r.folder),
            scenario=r.scenario,
            parameters=r.parameters,
            seed=r.seed,
            conversation_id=r.conversation_id,
        )
        for r in runs
    ]


def adopt_run_folders(plan: SweepPlan, runs_dir: Path) -> int:
    """Rename run folders found by id to the names the plan gives them; returns how many.

    A folder of an earlier layout (``runs/<run_id>/``, before readable names) or of another
    naming (a parameter renamed in a label, a longer name cut elsewhere) still ends with its run
    id, so a resume finds it, moves it under its current name and judges it as usual (reused if
    finished, redone if not). A folder whose current name is taken already is left alone.
    """
    wanted = {r.run_id: r.folder for r in plan.runs}
    moved = 0
    try:
        entries = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    except OSError:
        return 0
    for entry in entries:
        run_id = run_id_of_folder(entry.name)
        folder = wanted.get(run_id) if run_id is not None else None
        if folder is None or entry.name == folder or (runs_dir / folder).exists():
            continue
        os.replace(entry, runs_dir / folder)
        moved += 1
    return moved


#: What a sweep writes at the top of its folder, and in each run folder besides the run's own files.
SWEEP_FILES = tuple(f + tmp for f in (RESOLVED_FILE, RESULTS_FILE) for tmp in ("", ".tmp"))
RUN_EXTRA_FILES = tuple(f + tmp for f in (METRICS_FILE, ERROR_FILE) for tmp in ("", ".tmp"))


def folders_by_id(runs_dir: Path) -> dict[str, Path]:
    """The run folders already in ``runs_dir``, by the run id their name ends with (reads only)."""
    try:
        entries = [p for p in runs_dir.iterdir() if p.is_dir()]
    except OSError:
        return {}
    return {run_id: p for p in entries if (run_id := run_id_of_folder(p.name)) is not None}


def check_sweep_dir(out_dir: Path, runs: list[PlannedRun], existing: dict[str, Path]) -> OutputDir:
    """Before anything runs: refuse a sweep folder, or the folder of a run to be (re)done, where a
    file the sweep would write exists but was not written by kame-sim. Writes nothing."""
    top = OutputDir(out_dir, "sweep directory")
    top.check(SWEEP_FILES)
    runs_dir = out_dir / RUNS_DIR
    if runs_dir.exists() and not runs_dir.is_dir():
        raise InputError(runs_dir, None, "is a file, not a folder; choose another --out")
    for run in runs:
        OutputDir(existing.get(run.run_id, runs_dir / run.folder)).check((*RUN_FILES, *RUN_EXTRA_FILES))
    return top


def default_out_dir(plan: SweepPlan) -> Path:
    """``traces/sweeps/<name>`` (``traces/`` is where single runs go, and is git-ignored)."""
    return Path("traces") / "sweeps" / plan.name


def check_sweep_checkpoints(runs: Sequence[PlannedRun]) -> None:
    """Each real front-end checkpoint the runs use, checked once (files, config, device), so a
    missing or broken one stops the sweep with one line before anything is written."""
    seen: set[str] = set()
    for run in runs:
        frontend = run.scenario.get("frontend", {})
        if frontend.get("kind") != "kame" or json.dumps(frontend, sort_keys=True) in seen:
            continue
        seen.add(json.dumps(frontend, sort_keys=True))
        scenario = scenario_from_dict(run.scenario, f"sweep run {run.folder}")
        assert isinstance(scenario.frontend, KameSettings)
        check_checkpoint_files(scenario.frontend)


def execute_plan(
    plan: SweepPlan,
    out_dir: Path | None = None,
    workers: int | None = None,
    resume: bool = True,
    progress: ProgressCallback | None = None,
    ray_address: str | None = None,
    batch_size: int | None = None,
) -> SweepResult:
    """Run (or resume) a planned sweep and write ``results.parquet``; see :func:`run_sweep`."""
    started = time.perf_counter()
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise InputError("<cli>", "--workers", f"must be at least 1, got {workers}")
    batch = check_batch_size(batch_size) if batch_size is not None else plan.spec.batch_size
    if ray_address is not None:
        _require_ray()  # before anything is written
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(plan)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "sweep directory", "is a file, not a folder; choose another --out")
    runs_dir = out_dir.resolve() / RUNS_DIR  # absolute: Ray workers do not share our cwd

    outcomes: dict[str, RunOutcome] = {}
    resumed: list[str] = []
    todo: list[PlannedRun] = []
    existing = folders_by_id(runs_dir)
    for run in plan.runs:  # reads only
        folder = existing.get(run.run_id, runs_dir / run.folder)
        found = finished_outcome(folder, run.run_id) if resume else None
        if found is not None:
            outcomes[run.run_id] = found
            resumed.append(run.run_id)
        else:
            todo.append(run)
    top = check_sweep_dir(out_dir, todo, existing)  # every check before anything is written
    check_sweep_checkpoints(todo)
    make_output_dir(out_dir, "sweep directory")
    make_output_dir(runs_dir, "sweep directory")
    adopt_run_folders(plan, runs_dir)
    _write_json_atomic(top, RESOLVED_FILE, {**plan.resolved(), "batch_size": batch})
    total = len(plan.runs)
    n_failed = 0
    if progress is not None:
        progress(len(outcomes), total, n_failed)

    # only unfinished runs are batched: a resume after a partial batch reruns the rest of it
    units = make_batches(_tasks(plan, todo, runs_dir), batch)
    backend: Iterator[RunOutcome]
    if ray_address is not None and units:
        backend = _ray_backend(units, workers, ray_address)
    elif workers == 1:
        backend = _in_process(units)
    else:
        backend = _process_pool(units, workers)
    executed: list[str] = []
    # closing(): an exception in the loop (Ctrl-C inside the progress callback) stops the pool now,
    # not whenever the generator is collected.
    with contextlib.closing(backend):  # type: ignore[type-var]  (the backends are generators)
        for outcome in backend:
            outcomes[outcome.run_id] = outcome
            executed.append(outcome.run_id)
            n_failed += outcome.status != "ok"
            if progress is not None:
                progress(len(outcomes), total, n_failed)

    table = results_table(plan, outcomes)
    tmp = top.record(RESULTS_FILE + ".tmp")
    results_path = top.record(RESULTS_FILE)
    pq.write_table(table, tmp)
    os.replace(tmp, results_path)
    failed = [r.run_id for r in plan.runs if outcomes[r.run_id].status != "ok"]
    return SweepResult(
        out_dir=out_dir,
        results_path=results_path,
        table=table,
        plan=plan,
        executed=executed,
        resumed=resumed,
        failed=failed,
        wall_s=time.perf_counter() - started,
        batch_size=batch,
        batches=sum(len(u.tasks) > 1 for u in units),
    )


def check_batch_size(value: object) -> int:
    """``--batch``: a whole number 1..MAX_BATCH_SIZE (the sweep file's ``batch_size`` is checked
    by its model)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError("<cli>", "--batch", f"must be a whole number, got {value!r}")
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise InputError("<cli>", "--batch", f"must be between 1 and {MAX_BATCH_SIZE}, got {value}")
    return value


def run_sweep(
    spec_path: Path,
    out_dir: Path | None = None,
    workers: int | None = None,
    resume: bool = True,
    progress: ProgressCallback | None = None,
    ray_address: str | None = None,
    cli_set: dict[str, Any] | None = None,
    batch_size: int | None = None,
) -> SweepResult:
    """Plan, validate and run a sweep file; resumable; returns the results table.

    ``out_dir`` defaults to ``traces/sweeps/<name>``. ``workers`` processes (default: the CPU
    count; 1 runs in this process, which is easiest to debug). ``resume=False`` redoes every run.
    ``ray_address`` ("local" or a cluster address such as "ray://head:10001" / "auto") runs the
    runs as Ray tasks instead. Bad input in the sweep or any design point raises
    :class:`InputError` before any run starts; a run that fails is recorded, never raised.
    ``cli_set``: scenario keys to change in every run (``--set``; :func:`~.spec.plan_sweep`).
    ``batch_size`` (``--batch``; default: the file's ``batch_size``, else 1): most runs stepped as
    one lockstep batch (:mod:`kame_sim.sweep.batching` says which runs may share one).
    """
    if batch_size is not None:
        check_batch_size(batch_size)  # before the sweep is planned
    plan = load_sweep(Path(spec_path), cli_set)
    return execute_plan(plan, out_dir, workers, resume, progress, ray_address, batch_size)
