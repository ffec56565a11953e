"""Benchmark of lockstep replicas: B realisations of one conversation batched against one at a time.

    .venv/bin/python benchmarks/bench_lockstep.py [--replicas 32] [--seconds 20] [--dataset PATH]
                                                  [--id SNG0072] [--threads T]

``scenarios/spokenwoz.toml``'s settings with the REAL front-end code path (``frontend.kind =
"kame"``, the tiny random-weight checkpoint written into a temporary folder, CPU, fp32, sampling
on), seeds 0..B-1. The two variants run side by side in one process, after an untimed warm-up of
each (imports, the Mimi codes cache, allocator):

* ``batched``  ``kame_sim.lockstep.run_batch``: B sessions, one batched LM step per frame.
* ``solo``     ``kame_sim.runner.run_scenario`` for each seed in turn: B runs of one session.

Both write every trace (the same traces: see docs/lockstep.md for how exactly they agree). The
ratio solo / batched is the speed-up; the target is >= 8x at B = 32. ``--seconds`` shortens the
conversation (``run.max_seconds``) so the solo variant fits the shared 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from kame_sim.config import load_scenario
from kame_sim.frontend.kame.tiny import write_tiny_checkpoint
from kame_sim.lockstep import replica_scenarios, run_batch
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace

REPO = Path(__file__).resolve().parents[1]
TARGET = 8.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="run.max_seconds (default 20)")
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "data" / "spokenwoz")
    parser.add_argument("--id", default="SNG0072")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if not (args.dataset / "audio").is_dir():
        sys.exit(f"bench_lockstep: SpokenWOZ data not found at {args.dataset} (use --dataset)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="kame-lockstep-") as tmp_:
        tmp = Path(tmp_)
        ckpt = tmp / "ckpt"
        write_tiny_checkpoint(ckpt)
        base = load_scenario(
            REPO / "scenarios" / "spokenwoz.toml",
            {
                "conversation.path": str(args.dataset.resolve()),
                "conversation.id": args.id,
                "run.max_seconds": args.seconds,
                "frontend.kind": "kame",
                "frontend.checkpoint": str(ckpt),
                "frontend.codes_cache": str(tmp / "codes"),
                "frontend.device": "cpu",
            },
        )
        scenarios = replica_scenarios(base, args.replicas)
        # untimed warm-up of both paths (2 replicas, 2 s)
        warm = replica_scenarios(
            base.model_copy(update={"run": base.run.model_copy(update={"max_seconds": 2.0})}), 2
        )
        run_batch(warm, [tmp / "warm-b0", tmp / "warm-b1"])
        run_scenario(warm[0], tmp / "warm-s0")
        t0 = time.perf_counter()
        batched = run_batch(scenarios, [tmp / f"b{i}" for i in range(len(scenarios))])
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        solo = [run_scenario(sc, tmp / f"s{i}") for i, sc in enumerate(scenarios)]
        t_solo = time.perf_counter() - t0
        same = sum(
            read_trace(b.trace_path)
            .table.drop_columns(["wall_s", "step_wall_s"])
            .equals(read_trace(s.trace_path).table.drop_columns(["wall_s", "step_wall_s"]))
            for b, s in zip(batched, solo, strict=True)
        )
    n_frames = int(args.seconds / base.frame_seconds + 1e-9)
    ratio = t_solo / t_batched
    print(
        f"kame-sim lockstep benchmark: {args.id}, {args.replicas} replicas x {n_frames} frames "
        f"({args.seconds:g} s), tiny checkpoint, CPU, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"  batched (B={args.replicas}): {t_batched:8.2f} s  ({t_batched / n_frames * 1e3:.1f} ms per frame)"
    )
    print(
        f"  solo    (one at a time):  {t_solo:8.2f} s  "
        f"({t_solo / n_frames / args.replicas * 1e3:.1f} ms per frame)"
    )
    print(
        f"  solo / batched = {ratio:.1f}x: "
        f"{'MEETS' if ratio >= TARGET else 'MISSES'} the >= {TARGET:g}x target"
    )
    print(f"  replicas whose whole trace (wall columns aside) equals its solo run: {same} of {args.replicas}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
