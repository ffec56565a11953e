"""Sweep throughput with the behavioural front-end: runs per minute, simulated hours per wall
minute, and the scaling from 1 to 2 worker processes, measured side by side in one run.

    .venv/bin/python benchmarks/bench_sweep.py [--seeds 24] [--repeats 2] [--baseline REV]

Not a test: it prints what it measured. Each repeat runs the same sweep (the demo conversation,
5 TTFT medians x N seeds) into a fresh directory with 1 worker and with 2 workers.

``--baseline REV`` (a git revision, e.g. ``main``) also runs the sweep on that revision's code,
exported with ``git archive`` to a temporary folder, alternating with this tree's code (A B A B):
the before/after of a change, measured under the same machine load. Every sweep runs in a fresh
interpreter whose ``PYTHONPATH`` is the tree under test (checked), timed inside it, so import
times are left out for both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SWEEP = """
import json, sys, time
from pathlib import Path
import kame_sim
spec, out, workers, tree = sys.argv[1:]
assert Path(kame_sim.__file__).resolve().is_relative_to(Path(tree).resolve()), kame_sim.__file__
import pyarrow.compute as pc
from kame_sim.sweep.runner import run_sweep
t0 = time.perf_counter()
result = run_sweep(Path(spec), Path(out), workers=int(workers), resume=False)
wall = time.perf_counter() - t0
if result.failed:
    sys.exit(f"{len(result.failed)} runs failed; see {result.results_path}")
simulated = float(pc.sum(result.table["simulated_s"]).as_py() or 0.0)
print(json.dumps({"runs": result.total, "wall": wall, "simulated": simulated}))
"""


def write_spec(directory: Path, seeds: int, demo: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = directory / "bench.toml"
    spec.write_text(
        f"""
name = "bench"
base = "{demo}"
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


def export_revision(rev: str, into: Path) -> Path:
    """``git archive REV`` of this repository, unpacked into ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def one(tree: Path, spec: Path, out: Path, workers: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", SWEEP, str(spec), str(out), str(workers), str(tree)],
        env=env,
        cwd=tree,  # not this folder: `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"the sweep on {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", help="git revision to compare with (e.g. main)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trees = {"this tree": REPO}
        if args.baseline:
            trees[f"baseline {args.baseline}"] = export_revision(args.baseline, tmp / "baseline")
        specs = {
            name: write_spec(tmp / f"spec{i}", args.seeds, tree / "scenarios" / "demo.toml")
            for i, (name, tree) in enumerate(trees.items())
        }
        walls: dict[tuple[str, int], list[float]] = {(n, w): [] for n in trees for w in (1, 2)}
        runs = simulated = 0.0
        for r in range(args.repeats):
            order = [(n, w) for w in (1, 2) for n in trees]
            for name, workers in order if r % 2 == 0 else order[::-1]:
                out = tmp / f"r{r}-{len(walls[name, workers])}-{workers}-{name.replace(' ', '_')}"
                got = one(trees[name], specs[name], out, workers)
                runs, simulated = got["runs"], got["simulated"]
                walls[name, workers].append(got["wall"])
                line = f"repeat {r} {name:<16} workers {workers}: {runs:.0f} runs in {got['wall']:.2f} s"
                print(line, flush=True)
    hours = simulated / 3600
    print(f"\nsweep of {runs:.0f} demo runs ({hours:.2f} simulated hours each time), median of repeats:")
    print(f"{'code':<16} {'workers':>7} {'wall s':>8} {'runs/min':>9} {'sim h / wall min':>17}")
    for (name, workers), values in walls.items():
        wall = statistics.median(values)
        print(f"{name:<16} {workers:>7} {wall:>8.2f} {runs / wall * 60:>9.0f} {hours / (wall / 60):>17.1f}")
    for name in trees:
        speedup = statistics.median(walls[name, 1]) / statistics.median(walls[name, 2])
        print(f"\n{name}: scaling 1 -> 2 workers {speedup:.2f}x (ideal 2.0x on 2 cores; start-up included)")
    if args.baseline:
        base = f"baseline {args.baseline}"
        for workers in (1, 2):
            ratios = [b / a for a, b in zip(walls["this tree", workers], walls[base, workers], strict=True)]
            print(
                f"this tree / {base}, {workers} worker{'s' if workers > 1 else ''}: "
                f"{statistics.median(ratios):.2f}x the runs per minute "
                f"(per-repeat ratios {', '.join(f'{x:.2f}' for x in ratios)})"
            )


if __name__ == "__main__":
    main()
