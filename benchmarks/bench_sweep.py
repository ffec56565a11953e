"""Sweep throughput with the behavioural front-end: runs per minute, simulated hours per wall
minute, and the scaling from 1 to 2 worker processes, measured side by side in one run.

    .venv/bin/python benchmarks/bench_sweep.py [--seeds 24] [--repeats 2]

Not a test: it prints what it measured. Each repeat runs the same sweep (the demo conversation,
5 TTFT medians x N seeds) into a fresh directory with 1 worker and with 2 workers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc

from kame_sim.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "scenarios" / "demo.toml"


def write_spec(directory: Path, seeds: int) -> Path:
    spec = directory / "bench.toml"
    spec.write_text(
        f"""
name = "bench"
base = "{DEMO}"
seeds = {seeds}
design = "grid"

[set]
"llm.ttft" = {{ kind = "lognormal", median = 0.73, sigma = 0.32 }}

[parameters]
"llm.ttft.median" = [0.25, 0.5, 1.0, 2.0, 4.0]
""",
        encoding="utf-8",
    )
    return spec


def one(spec: Path, out: Path, workers: int) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    result = run_sweep(spec, out, workers=workers, resume=False)
    wall = time.perf_counter() - t0
    simulated = float(pc.sum(result.table["simulated_s"]).as_py() or 0.0)
    if result.failed:
        raise SystemExit(f"{result.failed} runs failed; see {result.results_path}")
    return result.total, wall, simulated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    walls: dict[int, list[float]] = {1: [], 2: []}
    runs = simulated = 0
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_spec(Path(tmp), args.seeds)
        for r in range(args.repeats):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                runs, wall, simulated = one(spec, Path(tmp) / f"r{r}-w{workers}", workers)
                walls[workers].append(wall)
                print(f"repeat {r} workers {workers}: {runs} runs in {wall:.2f} s", flush=True)
    hours = simulated / 3600
    print(f"\nsweep of {runs} demo runs ({hours:.2f} simulated hours each time), median of repeats:")
    print(f"{'workers':>7} {'wall s':>8} {'runs/min':>9} {'sim h / wall min':>17}")
    for workers, values in walls.items():
        wall = statistics.median(values)
        print(f"{workers:>7} {wall:>8.2f} {runs / wall * 60:>9.0f} {simulated / 3600 / (wall / 60):>17.1f}")
    speedup = statistics.median(walls[1]) / statistics.median(walls[2])
    print(f"\nscaling 1 -> 2 workers: {speedup:.2f}x (ideal 2.0x on 2 cores; worker start-up included)")


if __name__ == "__main__":
    main()
