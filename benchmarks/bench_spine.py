"""Benchmark of the simulation spine: simulated seconds per wall second on the shared SpokenWOZ set.

    .venv/bin/python benchmarks/bench_spine.py [--repeats N] [--dataset PATH] [--profile]

For each of the three shared conversations, with ``scenarios/spokenwoz.toml``'s settings and the
behavioural front-end, it times separately (``time.perf_counter``, best and median of N repeats):

* ``load``  ``load_run_conversation``: read, hash and validate the files (the wav's header only:
            the behavioural front-end never reads the samples, so they are never decoded);
* ``prep``  ``build_session_parts``: tokenizer, front-end, content source, STT and delay draws;
* ``sim``   the simulation itself: trace metadata, ``TraceWriter`` on a temporary file,
            ``Session(...).run()`` and ``close()`` (the flush of the last batch included).

Side by side in the same repeat (so drift affects every variant alike) it also runs:

* ``null``  the same simulation with a :class:`NullTrace` whose ``row`` does nothing: the gap to
            ``sim`` is the trace writer's share;
* ``clock`` a bare SimPy loop yielding one timeout per frame for the same number of frames: the
            floor of the frame clock, below which no SimPy frame loop can go.

This is a benchmark, not a test: it prints ratios measured in one run, and a verdict against the
issue's target (the simulation at >= 2000x real time on the 2-core reference machine).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import simpy

from kame_sim.config import Scenario, load_scenario
from kame_sim.runner import build_session_parts, load_run_conversation, trace_metadata
from kame_sim.sim import Session
from kame_sim.trace.writer import TraceWriter

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "spokenwoz.toml"
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "spokenwoz"
CONVERSATIONS = ("SNG0072", "SNG0480", "MUL1423")
TARGET_X = 2000.0
VARIANTS = ("load", "prep", "sim", "null", "clock")


class NullTrace:
    """Stands in for :class:`TraceWriter`: same ``row`` signature, records nothing."""

    rows_written = 0

    def row(self, *_: object, **__: object) -> None:
        return None

    def close(self) -> None:
        return None


def bare_clock(n_frames: int, frame_s: float) -> None:
    """The frame clock alone: one SimPy timeout per frame, scheduled as the frame loop does."""
    env = simpy.Environment()

    def loop():
        for k in range(n_frames):
            ready = (k + 1) * frame_s
            if env.now < ready:
                yield env.timeout(ready - env.now)

    env.run(until=env.process(loop()))


@dataclass
class ConvResult:
    """Timings (seconds, one per repeat) and sizes for one conversation."""

    conv_id: str
    n_frames: int = 0
    sim_seconds: float = 0.0
    trace_rows: int = 0
    times: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})

    def best(self, variant: str) -> float:
        return min(self.times[variant])

    def median(self, variant: str) -> float:
        return statistics.median(self.times[variant])

    def end_to_end(self, stat: str) -> float:
        pick = self.best if stat == "best" else self.median
        return pick("load") + pick("prep") + pick("sim")


def scenario_for(dataset: Path, conv_id: str) -> Scenario:
    return load_scenario(SCENARIO, {"conversation.path": str(dataset), "conversation.id": conv_id})


def run_full(scenario: Scenario, trace_path: Path) -> tuple[float, float, float, Session, TraceWriter]:
    """One end-to-end run as ``run_scenario`` does it (minus the run directory); three timings."""
    t0 = time.perf_counter()
    conversation = load_run_conversation(scenario)
    t1 = time.perf_counter()
    parts = build_session_parts(scenario, conversation)
    t2 = time.perf_counter()
    writer = TraceWriter(trace_path, trace_metadata(scenario, conversation, parts.tokenizer))
    session = Session(parts, writer)
    session.run()
    writer.close()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, session, writer


def run_null(scenario: Scenario, conversation) -> float:
    parts = build_session_parts(scenario, conversation)  # fresh draws, as the full run has
    t0 = time.perf_counter()
    Session(parts, NullTrace()).run()  # type: ignore[arg-type]
    return time.perf_counter() - t0


def run_clock(n_frames: int, frame_s: float) -> float:
    t0 = time.perf_counter()
    bare_clock(n_frames, frame_s)
    return time.perf_counter() - t0


def bench(dataset: Path, repeats: int, trace_path: Path) -> list[ConvResult]:
    results = []
    for conv_id in CONVERSATIONS:
        scenario = scenario_for(dataset, conv_id)
        res = ConvResult(conv_id)
        run_full(scenario, trace_path)  # warm-up: imports, caches, page cache; not timed
        for _ in range(repeats):
            t_load, t_prep, t_sim, session, writer = run_full(scenario, trace_path)
            res.n_frames, res.sim_seconds = session.n_frames, session.end_time
            res.trace_rows = writer.rows_written
            res.times["load"].append(t_load)
            res.times["prep"].append(t_prep)
            res.times["sim"].append(t_sim)
            res.times["null"].append(run_null(scenario, session.parts.conversation))
            res.times["clock"].append(run_clock(session.n_frames, session.frame_s))
        results.append(res)
        print(
            f"  {conv_id}: {res.n_frames} frames, {res.sim_seconds:.1f} s simulated, "
            f"{res.trace_rows} trace rows; sim best {res.best('sim') * 1e3:.1f} ms",
            flush=True,
        )
    return results


def print_report(results: list[ConvResult], repeats: int) -> float:
    """The table; returns the aggregate simulation-alone speed (median) for the verdict."""
    hdr = (
        f"{'conversation':<12} {'frames':>6} {'sim s':>7} {'rows':>5} | {'load ms':>7} {'prep ms':>7} "
        f"{'sim ms':>7} | {'sim x':>7} {'e2e x':>6} | {'us/frame':>8} {'null':>6} {'clock':>6} | "
        f"{'full/clock':>10} {'full/null':>9} {'us/row':>6}"
    )
    print()
    print(f"best of {repeats} repeats (median in the second line of each conversation)")
    print(hdr)
    print("-" * len(hdr))
    for stat in ("best", "median"):
        for r in results:
            pick = r.best if stat == "best" else r.median
            sim, null, clock = pick("sim"), pick("null"), pick("clock")
            label = r.conv_id if stat == "best" else "  (median)"
            print(
                f"{label:<12} {r.n_frames:>6} {r.sim_seconds:>7.1f} {r.trace_rows:>5} | "
                f"{pick('load') * 1e3:>7.1f} {pick('prep') * 1e3:>7.1f} {sim * 1e3:>7.1f} | "
                f"{r.sim_seconds / sim:>7.0f} {r.sim_seconds / r.end_to_end(stat):>6.0f} | "
                f"{sim / r.n_frames * 1e6:>8.1f} {null / r.n_frames * 1e6:>6.1f} "
                f"{clock / r.n_frames * 1e6:>6.1f} | {sim / clock:>10.1f} {sim / null:>9.2f} "
                f"{(sim - null) / r.trace_rows * 1e6:>6.2f}"
            )
    total_s = sum(r.sim_seconds for r in results)
    total_frames = sum(r.n_frames for r in results)
    print("-" * len(hdr))
    for stat in ("best", "median"):
        pick = (lambda r, v: r.best(v)) if stat == "best" else (lambda r, v: r.median(v))
        sim = sum(pick(r, "sim") for r in results)
        e2e = sum(pick(r, "load") + pick(r, "prep") + pick(r, "sim") for r in results)
        null = sum(pick(r, "null") for r in results)
        clock = sum(pick(r, "clock") for r in results)
        print(
            f"all three ({stat}): {total_s:.1f} s simulated in {sim * 1e3:.1f} ms -> simulation "
            f"{total_s / sim:.0f}x real time, end to end {total_s / e2e:.0f}x; per frame "
            f"{sim / total_frames * 1e6:.1f} us (null trace {null / total_frames * 1e6:.1f} us, "
            f"bare clock {clock / total_frames * 1e6:.1f} us)"
        )
    print(
        "columns: sim x = simulated s per wall s of the simulation alone; e2e x = load+prep+sim; "
        "us/frame = sim wall / frames,\n  null = same with a no-op trace, clock = bare SimPy frame "
        "clock; us/row = (sim - null) / trace rows, the writer's cost per row"
    )
    median_sim = sum(r.median("sim") for r in results)
    return total_s / median_sim


def profile(dataset: Path, trace_path: Path, top: int = 20) -> None:
    """cProfile of the simulation alone (the longest conversation), top functions by own time."""
    scenario = scenario_for(dataset, CONVERSATIONS[-1])
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    writer = TraceWriter(trace_path, trace_metadata(scenario, conversation, parts.tokenizer))
    prof = cProfile.Profile()
    prof.enable()
    Session(parts, writer).run()
    writer.close()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print(f"\ncProfile of the simulation of {CONVERSATIONS[-1]} (sorted by own time):")
    print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per conversation (default 5)")
    parser.add_argument(
        "--dataset", type=Path, default=DEFAULT_DATASET, help=f"SpokenWOZ folder (default {DEFAULT_DATASET})"
    )
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one simulation")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    dataset = args.dataset.expanduser().resolve()
    missing = [c for c in CONVERSATIONS if not (dataset / "audio" / f"{c}.wav").is_file()]
    if not dataset.is_dir() or missing:
        what = "is not a directory" if not dataset.is_dir() else f"lacks {', '.join(missing)}"
        sys.exit(
            f"bench_spine: the SpokenWOZ dataset {dataset} {what}.\n"
            "It is shared, not in this repo: pass --dataset PATH to the folder holding audio/, text/ "
            "and oracle_raw/."
        )
    print(
        f"kame-sim spine benchmark: python {platform.python_version()}, simpy {simpy.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}; dataset {dataset}; {args.repeats} repeats + 1 warm-up"
    )
    with tempfile.TemporaryDirectory(prefix="kame-bench-") as tmp:
        trace_path = Path(tmp) / "trace.arrows"
        t0 = time.perf_counter()
        results = bench(dataset, args.repeats, trace_path)
        speed = print_report(results, args.repeats)
        verdict = "MEETS" if speed >= TARGET_X else "MISSES"
        worst = min(r.sim_seconds / r.median("sim") for r in results)
        print(
            f"\nverdict: the simulation runs at {speed:.0f}x real time (median, all three; slowest "
            f"conversation {worst:.0f}x): {verdict} the {TARGET_X:.0f}x target. "
            f"[benchmark took {time.perf_counter() - t0:.1f} s]"
        )
        if args.profile:
            profile(dataset, trace_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
