"""What one sweep run costs, phase by phase: demo runs through ``execute_run`` in one process.

    .venv/bin/python benchmarks/bench_run_cost.py [--runs 40] [--baseline REV]

Not a test: it prints medians. Each run is a sweep run of the demo (5 TTFT medians x seeds, as in
``bench_sweep.py``) executed by ``kame_sim.sweep.runner.execute_run`` in this process, after 5
untimed warm-up runs. The phases are timed by wrapping the functions the run path calls (a
wrapper costs well under a microsecond; the phases are milliseconds). ``--baseline REV`` also
times that revision's code (``git archive``), in a fresh interpreter each, alternating with this
tree's (A B A B), so both see the same machine load. ``cpu`` is the process's CPU time per
run (``time.process_time``): on a shared machine it moves far less than the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_sweep import REPO, export_revision

# Runs inside the tree under test: wraps whichever of the phase functions that tree has.
MEASURE = r"""
import collections, json, sys, tempfile, time
from pathlib import Path
import kame_sim
runs, tree = int(sys.argv[1]), sys.argv[2]
assert Path(kame_sim.__file__).resolve().is_relative_to(Path(tree).resolve()), kame_sim.__file__
import kame_sim.output_dir as O, kame_sim.runner as R, kame_sim.sim as S, kame_sim.sweep.runner as SR
import kame_sim.trace.writer as W
from kame_sim.sweep.spec import load_sweep
acc = collections.defaultdict(float)
def wrap(owner, name, label):
    if not hasattr(owner, name):
        return
    f = getattr(owner, name)
    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            acc[label] += time.perf_counter() - t0
    setattr(owner, name, timed)
wrap(R, "load_run_conversation", "load")
wrap(R, "build_session_parts", "prepare")
wrap(S.Session, "run", "simulate")
wrap(W.TraceWriter, "close", "trace close")
wrap(R, "write_ipc_file", "trace.arrow")
wrap(R, "write_ipc_batches", "trace.arrow")
wrap(SR, "read_trace", "read back")
wrap(R, "trace_from_batches", "read back")
wrap(SR, "metrics_row", "metrics")
if hasattr(O.OutputDir, "record_all"):  # record calls it: wrap one of the two
    wrap(O.OutputDir, "record_all", "manifest")
else:
    wrap(O.OutputDir, "record", "manifest")
wrap(O.OutputDir, "remove_previous", "manifest")
tmp = Path(tempfile.mkdtemp())
spec = tmp / "bench.toml"
spec.write_text(f'''
name = "bench"
base = "{Path(tree) / 'scenarios' / 'demo.toml'}"
seeds = {(runs + 5 + 4) // 5}
design = "grid"
[set]
"llm.ttft" = {{ kind = "lognormal", median = 0.73, sigma = 0.32 }}
[parameters]
"llm.ttft.median" = [0.25, 0.5, 1.0, 2.0, 4.0]
''')
plan = load_sweep(spec)
tasks = SR._tasks(plan, plan.runs, tmp / "runs")
if hasattr(SR, "gc"):
    SR.gc.freeze()  # as the sweep's workers do on this tree
for task in tasks[:5]:
    SR.execute_run(task)
per = collections.defaultdict(list)
for task in tasks[5 : 5 + runs]:
    acc.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    outcome = SR.execute_run(task)
    total = time.perf_counter() - t0
    per["cpu"].append(time.process_time() - c0)
    assert outcome.status == "ok", outcome.error
    per["total"].append(total)
    for k, v in acc.items():
        per[k].append(v)
    per["other"].append(total - sum(acc.values()))
print(json.dumps(per))
"""

PHASES = (
    "load",
    "prepare",
    "simulate",
    "trace close",
    "trace.arrow",
    "read back",
    "metrics",
    "manifest",
    "other",
)


def measure(tree: Path, runs: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(runs), str(tree)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"the runs on {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="timed runs per tree and repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", help="git revision to compare with (e.g. main)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        trees = {"this tree": REPO}
        if args.baseline:
            trees[f"{args.baseline}"] = export_revision(args.baseline, Path(tmp_name) / "baseline")
        got: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for r in range(args.repeats):
            for name in trees if r % 2 == 0 else list(trees)[::-1]:
                for phase, values in measure(trees[name], args.runs).items():
                    got[name].setdefault(phase, []).extend(values)
    names = list(trees)
    print(f"one demo sweep run in one process, median ms of {args.runs * args.repeats} runs per tree")
    print(f"{'phase':<12}" + "".join(f"{n:>12}" for n in names))
    for phase in (*PHASES, "total", "cpu"):
        cells = [statistics.median(got[n][phase]) * 1000 if phase in got[n] else float("nan") for n in names]
        print(f"{phase:<12}" + "".join(f"{c:>12.2f}" for c in cells))
    print("(cpu: the process's CPU time per run, which other jobs on the machine disturb far less)")
    for name in names:
        best = min(got[name]["total"]) * 1000
        print(f"{name}: best run {best:.1f} ms, median {statistics.median(got[name]['total']) * 1000:.1f} ms")
    if args.baseline:
        base = names[1]
        for key in ("total", "cpu"):
            ratio = statistics.median(got[base][key]) / statistics.median(got["this tree"][key])
            print(f"{base} / this tree, median {key}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
