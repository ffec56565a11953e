"""The real front-end code path end to end on CPU: tiny checkpoint → Mimi codes → LM steps → trace."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from conftest import DEMO_SCENARIO
from trace_checks import check_invariants, rows
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.config import load_scenario
from kame_sim.metrics.summary import summarize
from kame_sim.runner import run_scenario
from kame_sim.trace import WALL_COLUMNS, read_trace

TINY_SCENARIO = DEMO_SCENARIO.parent / "tiny-kame.toml"
SECONDS = 6.0  # enough for two user utterance partials, a few LLM streams and oracle tokens


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt") / "tiny"
    result = CliRunner().invoke(app, ["init-checkpoint", "--tiny", str(directory)])
    assert result.exit_code == 0, result.output
    return directory


def scenario(checkpoint: Path, cache: Path, **extra):
    overrides = {
        "frontend.checkpoint": str(checkpoint),
        "frontend.codes_cache": str(cache),
        "run.max_seconds": SECONDS,
        **extra,
    }
    return load_scenario(TINY_SCENARIO, overrides)


def test_tiny_checkpoint_runs_the_real_path_end_to_end(checkpoint: Path, tmp_path: Path):
    wav = tmp_path / "out.wav"
    result = run_scenario(scenario(checkpoint, tmp_path / "cache"), tmp_path / "run", audio_out=wav)
    data = read_trace(result.run_dir)
    check_invariants(data)
    summary = summarize(data)
    assert summary.frames == int(SECONDS / 0.08)
    assert summary.oracle_tokens_fed > 0
    assert data.metadata["kame_sim.frontend"] == "kame"
    assert data.metadata["kame_sim.tokenizer_vocab"] == "1024"
    tokens = rows(data.table, "frontend_token")
    assert tokens[0]["token_id"] == 3  # moshi's first step returns nothing: padding
    assert len({r["token_id"] for r in tokens}) > 1  # random weights still sample varied text tokens
    audio, rate = sf.read(wav, always_2d=True)
    assert rate == 24000 and audio.shape[1] == 2
    assert audio.shape[0] >= summary.frames * 1920
    assert abs(audio[:, 1]).max() > 0  # the decoded front-end channel is not silent


def test_same_seed_same_tokens_and_codes_cache_reuse(checkpoint: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = read_trace(run_scenario(scenario(checkpoint, cache), tmp_path / "a").run_dir).table
    cached = list(cache.glob("*.npy"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    second = read_trace(run_scenario(scenario(checkpoint, cache), tmp_path / "b").run_dir).table
    assert cached[0].stat().st_mtime_ns == mtime  # reused, not re-encoded
    assert first.drop_columns(list(WALL_COLUMNS)).equals(second.drop_columns(list(WALL_COLUMNS)))
    other = read_trace(
        run_scenario(scenario(checkpoint, cache, **{"run.seed": 1}), tmp_path / "c").run_dir
    ).table
    assert [r["token_id"] for r in rows(first, "frontend_token")] != [
        r["token_id"] for r in rows(other, "frontend_token")
    ]


def test_bad_kame_settings_are_one_line_errors(checkpoint: Path, tmp_path: Path):
    runner = CliRunner()
    cases = [
        (["--set", f"frontend.checkpoint='{tmp_path / 'nowhere'}'"], "nowhere"),
        (["--set", f"frontend.checkpoint='{checkpoint}'", "--set", "frontend.device=cuda"], "CUDA"),
    ]
    for args, words in cases:
        result = runner.invoke(app, ["run", str(TINY_SCENARIO), "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 2, result.output
        assert words in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["run", str(DEMO_SCENARIO), "--audio-out", str(tmp_path / "x.wav")])
    assert result.exit_code == 2 and "--audio-out" in result.output
