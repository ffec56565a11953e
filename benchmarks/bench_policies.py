"""Benchmark: does the multiplexer slow the spine? Simulated seconds per wall second, both policies.

    .venv/bin/python benchmarks/bench_policies.py [--repeats N] [--dataset PATH]

For each of the three shared SpokenWOZ conversations (``scenarios/spokenwoz.toml``'s settings,
behavioural front-end), the simulation alone (trace writer on a temporary file, ``Session.run``,
``close``) is timed with ``time.perf_counter`` for ``policy.kind = "poll"`` and ``"multiplexer"``
in turn (poll, mux, poll, mux, ...), so machine drift hits both alike. It prints the median
real-time factor of each, the cost per trace row, the per-pair ratio mux/poll (median, min, max)
and the streams each policy started: the multiplexer starts more streams (one per 0.5 s of speech),
so it has more events to simulate; the cost per event is what shows whether it slows the spine.
A benchmark, not a test: the numbers are for people.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kame_sim.config import load_scenario
from kame_sim.runner import build_session_parts, load_run_conversation, trace_metadata
from kame_sim.sim import Session
from kame_sim.trace.writer import TraceWriter

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "spokenwoz.toml"
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "spokenwoz"
CONVERSATIONS = ("SNG0072", "SNG0480", "MUL1423")
POLICIES = ("poll", "multiplexer")


def simulate(dataset: Path, conv_id: str, policy: str, trace_file: Path) -> tuple[float, float, int, int]:
    """(wall seconds of the simulation, simulated seconds, streams started, trace rows)."""
    scenario = load_scenario(
        SCENARIO, {"conversation.path": str(dataset), "conversation.id": conv_id, "policy.kind": policy}
    )
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    t0 = time.perf_counter()
    with TraceWriter(trace_file, trace_metadata(scenario, conversation, parts.tokenizer)) as trace:
        session = Session(parts, trace)
        session.run()
    wall = time.perf_counter() - t0
    return wall, session.n_frames * session.frame_s, session.stream_count, trace.rows_written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs per conversation (default 5)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="canonical KAME dataset")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trace_file = Path(tmp) / "trace.arrows"
        print(
            f"{'conversation':<14}{'policy':<13}{'sim s':>8}{'streams':>9}{'rows':>8}"
            f"{'x real time':>13}{'us/row':>9}"
        )
        all_ratios: list[float] = []
        for conv_id in CONVERSATIONS:
            simulate(args.dataset, conv_id, "poll", trace_file)  # warm-up (imports, caches)
            walls: dict[str, list[float]] = {p: [] for p in POLICIES}
            info: dict[str, tuple[float, int, int]] = {}
            for _ in range(args.repeats):
                for policy in POLICIES:
                    wall, sim_s, streams, n_rows = simulate(args.dataset, conv_id, policy, trace_file)
                    walls[policy].append(wall)
                    info[policy] = (sim_s, streams, n_rows)
            ratios = [m / p for p, m in zip(walls["poll"], walls["multiplexer"], strict=True)]
            all_ratios.extend(ratios)
            for policy in POLICIES:
                sim_s, streams, n_rows = info[policy]
                median = statistics.median(walls[policy])
                print(
                    f"{conv_id:<14}{policy:<13}{sim_s:>8.1f}{streams:>9}{n_rows:>8}"
                    f"{sim_s / median:>12.0f}x{median / n_rows * 1e6:>9.1f}"
                )
            print(
                f"{'':<14}wall ratio multiplexer/poll: median {statistics.median(ratios):.2f} "
                f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
            )
        print(f"\nall pairs: multiplexer/poll wall ratio median {statistics.median(all_ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
