"""Benchmark of the analysis side: per-run metrics on a long trace, and clustered bootstrap CIs.

    .venv/bin/python benchmarks/bench_metrics.py [--repeats N] [--dataset PATH]

These timings used to be assertions in tests (``compute_metrics`` on a 120 s trace "< 0.2 s",
``aggregate`` of 200 groups "< 5 s"), which failed whenever the shared machine was busy. Here they
are measured side by side, so a ratio says something even on a loaded machine:

1. **Metrics vs simulation.** MUL1423 (120 s of SpokenWOZ, ``scenarios/spokenwoz.toml``) is
   simulated into a trace; then, alternating in each repeat, the whole run (``run_scenario``:
   load, prepare, simulate, write the trace) and ``compute_metrics`` on its trace are timed.
   ``metrics/sim`` is what the metrics cost next to producing the trace.
2. **Clustered vs naive bootstrap.** The test suite's coverage check (200 groups of 8 clusters x
   10 runs, 2000 resamples) with ``cluster`` on and off; ``clustered/naive`` is the price of
   resampling clusters instead of runs.

Best and median of ``--repeats`` (default 5), after one untimed warm-up. This is a benchmark, not a
test: it prints what it measured and fails nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from kame_sim.config import load_scenario
from kame_sim.metrics import aggregate, compute_metrics
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "spokenwoz.toml"
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "spokenwoz"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def clustered_results(reps: int = 200, clusters: int = 8, runs: int = 10, seed: int = 123) -> pa.Table:
    """The same synthetic sweep results as tests/test_aggregate.py's coverage check."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.0, 1.0, size=(reps, clusters, 1))
    values = 1.5 + effect + rng.normal(0.0, 1.0, size=(reps, clusters, runs))
    return pa.table(
        {
            "rep": np.repeat(np.arange(reps), clusters * runs),
            "conversation_id": np.tile(np.repeat([f"c{j}" for j in range(clusters)], runs), reps),
            "seed": np.tile(np.arange(runs), reps * clusters),
            "lag": values.ravel(),
        }
    )


def report(name: str, a: list[float], b: list[float], a_name: str, b_name: str) -> None:
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    print(
        f"{name}: {a_name} best {min(a) * 1e3:.1f} ms (median {statistics.median(a) * 1e3:.1f}), "
        f"{b_name} best {min(b) * 1e3:.1f} ms (median {statistics.median(b) * 1e3:.1f}); "
        f"{a_name}/{b_name} median of paired ratios {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f} .. {max(ratios):.2f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    args = parser.parse_args()
    if not (args.dataset / "audio").is_dir():
        print(f"SpokenWOZ sample not found at {args.dataset} (pass --dataset)", file=sys.stderr)
        return 2
    scenario = load_scenario(SCENARIO, {"conversation.path": str(args.dataset), "conversation.id": "MUL1423"})
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(10**6))

        def simulate() -> Path:
            return run_scenario(scenario, Path(tmp) / f"run{next(runs)}").run_dir

        trace = read_trace(simulate())
        compute_metrics(trace)  # warm-up (imports, caches)
        sims, metrics = [], []
        for r in range(args.repeats):
            pair = [("sim", simulate), ("metrics", lambda: compute_metrics(trace))]
            for name, fn in pair if r % 2 == 0 else pair[::-1]:
                (sims if name == "sim" else metrics).append(timed(fn))
        seconds = float(trace.table["t_sim"].to_numpy().max())
        print(f"MUL1423: {seconds:.1f} s simulated, {trace.table.num_rows} trace rows")
        report("1. metrics vs simulation", metrics, sims, "metrics", "sim")

    results = clustered_results()
    aggregate(results, by=["rep"], metrics=["lag"], n_boot=200, seed=1)  # warm-up
    clustered, naive = [], []

    def boot(cluster: str | None) -> None:
        aggregate(results, by=["rep"], metrics=["lag"], cluster=cluster, n_boot=2000, seed=1)

    for r in range(args.repeats):
        pair = [("clustered", lambda: boot("conversation_id")), ("naive", lambda: boot(None))]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            (clustered if name == "clustered" else naive).append(timed(fn))
    report("2. bootstrap, 200 groups x 80 runs, 2000 resamples", clustered, naive, "clustered", "naive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
