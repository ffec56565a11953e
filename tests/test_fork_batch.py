"""Branches of one fork with the real front-end share one lockstep batch, and each equals its solo run
(tiny random-weight checkpoint, greedy decoding: batched logits differ from B = 1 by ~1e-6 and do
not flip a greedy token, docs/lockstep.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEMO_SCENARIO
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.config import load_scenario
from kame_sim.fork.runner import plan_fork, run_branches, write_branches
from kame_sim.runner import run_scenario
from kame_sim.trace import WALL_COLUMNS, read_trace

TINY_SCENARIO = DEMO_SCENARIO.parent / "tiny-kame.toml"


def rows(path: Path) -> list[dict]:
    table = read_trace(path).table
    return table.drop_columns([c for c in WALL_COLUMNS if c in table.column_names]).to_pylist()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    result = CliRunner().invoke(app, ["init-checkpoint", "--tiny", str(root / "ckpt")])
    assert result.exit_code == 0, result.output
    overrides = {
        "frontend.checkpoint": str(root / "ckpt"),
        "frontend.codes_cache": str(root / "codes"),
        "frontend.use_sampling": False,
        "run.max_seconds": 3.0,
    }
    run_scenario(load_scenario(TINY_SCENARIO, overrides), root / "run")
    return root / "run"


def test_batched_branches_equal_their_solo_runs(tiny_run: Path, tmp_path: Path):
    groups = [[], ["stream.2.ttft=0.2", "policy.poll_interval=1.0"]]
    plan = plan_fork(tiny_run, 1.6, groups, tmp_path / "batch")
    write_branches(plan)
    batched = run_branches(plan)
    assert [read_trace(r.trace_path).metadata["kame_sim.batch_size"] for r in batched] == ["2", "2"]
    # the unchanged branch is the original (a solo run) token for token
    assert rows(batched[0].trace_path) == rows(tiny_run / "trace.arrows")
    solo = plan_fork(tiny_run, 1.6, [groups[1]], tmp_path / "solo")
    write_branches(solo)
    (alone,) = run_branches(solo)
    assert "kame_sim.batch_size" not in read_trace(alone.trace_path).metadata
    assert rows(batched[1].trace_path) == rows(alone.trace_path)
    assert rows(batched[1].trace_path) != rows(batched[0].trace_path)
