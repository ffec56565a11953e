"""A tiny-kame sweep run as a user runs it, with ``--batch 1`` and ``--batch N``, side by side.

    .venv/bin/python benchmarks/bench_sweep_batch.py [--batch 8] [--repeats 2] [--workers W]
                                                      [--seconds S]

``kame-sim sweep scenarios/sweeps/tiny-kame-seeds.toml`` (16 seeds x 2 TTFT medians = 32 runs of
the demo conversation, greedy, the real front-end code path with the tiny random-weight
checkpoint on CPU) in a fresh ``kame-sim`` process per sweep, alternating the variants (1, N, 1,
N, ...) so both see the same machine load. The tiny checkpoint is written to a temporary folder
and the Mimi codes cache warmed there by one untimed run, so no variant pays for encoding.

Printed per sweep: the command's wall time (interpreter, imports, checkpoint load, every run,
results table) and the sweep's own wall time (what ``kame-sim sweep`` reports: planning, runs,
table). Then the median ratio batch 1 / batch N of each, and whether the two results tables are
identical (every column: a sweep's results table has no wall-clock column). Not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from kame_sim.frontend.kame.tiny import write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "scenarios" / "sweeps" / "tiny-kame-seeds.toml"


def kame_sim(args: list[str]) -> tuple[float, str]:
    """Run ``kame-sim ARGS`` in a fresh interpreter on this tree's code; (wall s, output)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_TORCH_COMPILE": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kame_sim.cli", *args], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"bench_sweep_batch: kame-sim {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return wall, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="the batched variant's --batch (default 8)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, default=None, help="--workers (default: kame-sim's, all cores)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="--set run.max_seconds (default: the file's)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kame-sweep-batch-") as tmp_:
        tmp = Path(tmp_)
        ckpt, codes = tmp / "ckpt", tmp / "codes"
        write_tiny_checkpoint(ckpt)
        spec = SPEC
        sets = ["--set", f"frontend.checkpoint={ckpt}", "--set", f"frontend.codes_cache={codes}"]
        if args.seconds is not None:
            sets += ["--set", f"run.max_seconds={args.seconds}"]
        workers = ["--workers", str(args.workers)] if args.workers is not None else []
        warm = ["run", str(REPO / "scenarios" / "tiny-kame.toml"), *sets, "--set", "run.max_seconds=0.2"]
        kame_sim([*warm, "--out", str(tmp / "warm"), "--quiet"])  # encodes the codes once, untimed
        load = os.getloadavg()[0]
        print(
            f"kame-sim sweep benchmark: {spec.name}, --batch 1 vs --batch {args.batch}, workers "
            f"{args.workers or 'default (all cores)'}, {os.cpu_count()} CPUs, load average {load:.2f}"
        )
        walls: dict[int, list[float]] = {1: [], args.batch: []}
        sweeps: dict[int, list[float]] = {1: [], args.batch: []}
        tables = {}
        for repeat in range(args.repeats):
            for batch in (1, args.batch):
                out = tmp / f"b{batch}-r{repeat}"
                command = ["sweep", str(spec), "--out", str(out), "--batch", str(batch), "--quiet"]
                wall, output = kame_sim([*command, *sets, *workers])
                found = re.search(r"runs: .* in ([0-9.]+) s", " ".join(output.split()))
                sweep_s = float(found.group(1)) if found else float("nan")
                walls[batch].append(wall)
                sweeps[batch].append(sweep_s)
                tables[batch] = pq.read_table(out / "results.parquet")
                print(f"  repeat {repeat} --batch {batch:<3} command {wall:7.2f} s   sweep {sweep_s:7.2f} s")
        base, batched = tables[1], tables[args.batch]
        same = base.column_names == batched.column_names and base.equals(batched)
        differing = [c for c in base.column_names if base[c].to_pylist() != batched[c].to_pylist()]
        for name, values in (("command", walls), ("sweep", sweeps)):
            ratios = [a / b for a, b in zip(values[1], values[args.batch], strict=True)]
            print(
                f"  {name:7} --batch 1 / --batch {args.batch} = {statistics.median(ratios):.2f}x "
                f"(each repeat: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
        rows = base.num_rows
        print(
            f"  results tables ({rows} runs x {base.num_columns} columns): "
            f"{'IDENTICAL' if same else 'DIFFER in ' + ', '.join(differing)}"
        )
        print(f"  load average at the end {os.getloadavg()[0]:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
