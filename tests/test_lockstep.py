"""Lockstep replicas: every replica of a batch is the run it would be alone (kame_sim/lockstep.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch
from conftest import DEMO_SCENARIO, REPO
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.lockstep import replica_scenarios, run_batch
from kame_sim.runner import run_scenario
from kame_sim.trace import WALL_COLUMNS, read_trace

TINY_SCENARIO = DEMO_SCENARIO.parent / "tiny-kame.toml"


def rows(path: Path) -> list[dict]:
    """A trace without its wall-clock columns: what must not depend on batching."""
    table = read_trace(path).table
    return table.drop_columns([c for c in WALL_COLUMNS if c in table.column_names]).to_pylist()


def events(path: Path, name: str):
    table = read_trace(path).table
    return table.filter(pc.equal(table["event"], name))


def batch_vs_solo(scenarios, tmp_path: Path) -> tuple[list[Path], list[Path]]:
    batched = run_batch(scenarios, [tmp_path / f"b{i}" for i in range(len(scenarios))])
    solo = [run_scenario(sc, tmp_path / f"s{i}") for i, sc in enumerate(scenarios)]
    return [r.trace_path for r in batched], [r.trace_path for r in solo]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt") / "tiny"
    result = CliRunner().invoke(app, ["init-checkpoint", "--tiny", str(directory)])
    assert result.exit_code == 0, result.output
    return directory


def tiny(checkpoint: Path, cache: Path, **extra):
    overrides = {"frontend.checkpoint": str(checkpoint), "frontend.codes_cache": str(cache), **extra}
    return load_scenario(TINY_SCENARIO, overrides)


@pytest.mark.parametrize("policy", ["poll", "multiplexer"])
def test_behavioural_replicas_equal_solo_runs_row_for_row(tmp_path: Path, policy: str):
    scenarios = replica_scenarios(load_scenario(DEMO_SCENARIO, {"policy.kind": policy}), 3)
    assert [sc.run.seed for sc in scenarios] == [0, 1, 2]
    batched, solo = batch_vs_solo(scenarios, tmp_path)
    for i, (b, s) in enumerate(zip(batched, solo, strict=True)):
        assert rows(b) == rows(s), f"replica {i}"
        data = read_trace(b)
        assert data.complete
        assert data.metadata["kame_sim.batch_size"] == "3"
        assert data.metadata["kame_sim.replica_index"] == str(i)
        assert data.metadata["kame_sim.seed"] == str(i)
    # the replicas are different realisations (their own seeds), not copies
    assert rows(batched[0]) != rows(batched[1])


def test_budget_replicas_are_charged_the_batch_step(tmp_path: Path):
    scenarios = replica_scenarios(load_scenario(DEMO_SCENARIO, {"run.time_coupling": "budget"}), 2)
    results = run_batch(scenarios, [tmp_path / "r0", tmp_path / "r1"])
    frames = [events(r.trace_path, "frame") for r in results]
    assert frames[0]["step_wall_s"].to_pylist() == frames[1]["step_wall_s"].to_pylist()


def test_kame_greedy_replicas_equal_solo_runs_token_for_token(checkpoint: Path, tmp_path: Path):
    # 20 s = 250 frames of greedy decoding; measured: batched logits differ from B = 1 by ~4e-6 and
    # never flipped a greedy token (docs/lockstep.md)
    base = tiny(checkpoint, tmp_path / "codes", **{"run.max_seconds": 20.0, "frontend.use_sampling": False})
    batched, solo = batch_vs_solo(replica_scenarios(base, 4), tmp_path)
    for i, (b, s) in enumerate(zip(batched, solo, strict=True)):
        assert rows(b) == rows(s), f"replica {i}"
        meta = read_trace(b).metadata
        assert (meta["kame_sim.batch_size"], meta["kame_sim.replica_index"]) == ("4", str(i))
        assert "float" in meta["kame_sim.batch_numerics"]


def test_kame_sampled_replicas_equal_solo_runs_on_a_short_run(checkpoint: Path, tmp_path: Path):
    # sampled: a near tie flips about once per 1400 replica-frames (docs/lockstep.md), so 3 s
    base = tiny(checkpoint, tmp_path / "codes", **{"run.max_seconds": 3.0})
    batched, solo = batch_vs_solo(replica_scenarios(base, 4), tmp_path)
    for i, (b, s) in enumerate(zip(batched, solo, strict=True)):
        assert rows(b) == rows(s), f"replica {i}"
    tokens = [events(b, "frontend_token")["token_id"].to_pylist() for b in batched]
    assert len({tuple(t) for t in tokens}) == 4, "each replica samples from its own seed"


def test_per_replica_sampler_does_not_depend_on_the_batch():
    """Same logits row, same generator seed: the same token whatever the batch around it."""
    from kame_sim.frontend.kame.lm import per_replica_sampler

    logits = torch.randn(4, 1, 1, 500, generator=torch.Generator().manual_seed(3))
    gens_b = [torch.Generator().manual_seed(10 + b) for b in range(4)]
    gens_s = [torch.Generator().manual_seed(10 + b) for b in range(4)]
    sample_b = per_replica_sampler(gens_b)
    solo = [per_replica_sampler([g]) for g in gens_s]
    for _ in range(50):
        out = sample_b(logits, True, 0.7, 25)
        for b in range(4):
            assert torch.equal(out[b : b + 1], solo[b](logits[b : b + 1], True, 0.7, 25))
    # and B = 1 is exactly moshi's global-RNG sampling seeded the same way
    from moshi.utils.sampling import sample_token

    gen = torch.Generator().manual_seed(7)
    ours = [per_replica_sampler([gen])(logits[:1], True, 0.7, 25) for _ in range(20)]
    with torch.random.fork_rng():
        torch.manual_seed(7)
        theirs = [sample_token(logits[:1], True, 0.7, 25) for _ in range(20)]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_bad_batches_are_refused_before_anything_is_written(tmp_path: Path):
    sc = load_scenario(DEMO_SCENARIO)
    wall = replica_scenarios(load_scenario(DEMO_SCENARIO, {"run.time_coupling": "wall"}), 2)
    with pytest.raises(InputError, match="wall"):
        run_batch(wall, [tmp_path / "a", tmp_path / "b"])
    short = load_scenario(DEMO_SCENARIO, {"run.max_seconds": 5.0, "run.seed": 1})
    with pytest.raises(InputError, match="same number of frames"):
        run_batch([sc, short], [tmp_path / "a", tmp_path / "b"])
    other = load_scenario(DEMO_SCENARIO, {"frontend.yield_after": 0.3, "run.seed": 1})
    with pytest.raises(InputError, match="front-end"):
        run_batch([sc, other], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(InputError, match="share a run directory"):
        run_batch(replica_scenarios(sc, 2), [tmp_path / "a", tmp_path / "a"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_replicas_writes_one_run_dir_per_seed(tmp_path: Path):
    out = tmp_path / "rep"
    result = CliRunner().invoke(
        app, ["run", str(DEMO_SCENARIO), "--replicas", "3", "--seed", "5", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    for i, seed in enumerate((5, 6, 7)):
        data = read_trace(out / f"seed{seed}")
        assert data.complete
        assert data.metadata["kame_sim.seed"] == str(seed)
        assert data.metadata["kame_sim.replica_index"] == str(i)
    bad = CliRunner().invoke(app, ["run", str(DEMO_SCENARIO), "--replicas", "2", "--audio-out", "x.wav"])
    assert bad.exit_code == 2 and "--replicas" in bad.output


_KILL = """
import os, sys
os.environ["NO_TORCH_COMPILE"] = "1"
from pathlib import Path
from kame_sim.config import load_scenario
from kame_sim.lockstep import replica_scenarios, run_batch
sc = load_scenario(Path(sys.argv[1]), {"frontend.checkpoint": sys.argv[2],
                                       "frontend.codes_cache": sys.argv[3]})
out = Path(sys.argv[4])
run_batch(replica_scenarios(sc, 3), [out / f"r{i}" for i in range(3)])
"""


def test_a_killed_batch_leaves_every_replica_a_readable_partial_trace(checkpoint: Path, tmp_path: Path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILL,
            str(TINY_SCENARIO),
            str(checkpoint),
            str(tmp_path / "codes"),
            str(tmp_path),
        ],
        cwd=REPO,
    )
    try:
        # the writers flush at least every second: wait until every replica has frame rows on disk
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                if all(len(events(tmp_path / f"r{i}", "frame")) > 0 for i in range(3)):
                    break
            except Exception:
                continue
        assert proc.poll() is None, "the batch ended before it could be killed"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    for i in range(3):
        data = read_trace(tmp_path / f"r{i}")
        assert not data.complete
        assert len(events(tmp_path / f"r{i}", "frame")) > 0
        assert data.metadata["kame_sim.replica_index"] == str(i)
