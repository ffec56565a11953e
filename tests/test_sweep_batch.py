"""Sweeps in lockstep batches (kame_sim/sweep/batching.py, sweep/runner.execute_batch): the same
results as runs one at a time, resumable per replica, a failing replica failing alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch
from conftest import DEMO_SCENARIO
from hypothesis import given, settings
from hypothesis import strategies as st
from sweep_pool_helpers import batch_or_die
from typer.testing import CliRunner

from kame_sim import lockstep, runner
from kame_sim.cli import app
from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.frontend.kame import model_cache
from kame_sim.sweep.batching import batch_key, plan_batches
from kame_sim.sweep.runner import (
    METRICS_FILE,
    RESOLVED_FILE,
    RunBatch,
    RunTask,
    _process_pool,
    _tasks,
    make_batches,
    run_sweep,
)
from kame_sim.sweep.spec import MAX_BATCH_SIZE, load_sweep, parse_spec
from kame_sim.trace import WALL_COLUMNS, read_trace

TINY_SCENARIO = DEMO_SCENARIO.parent / "tiny-kame.toml"
TOKENIZER = "tokenizer.model"
TTFT_TABLE = '"llm.ttft" = { kind = "lognormal", median = 0.73, sigma = 0.32 }'


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread, as a sweep worker on a busy 2-core machine gets: oversubscribed OpenMP
    threads make every tiny-model step many times slower (benchmarks/README.md, bench_lockstep)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt") / "tiny"
    result = CliRunner().invoke(app, ["init-checkpoint", "--tiny", str(directory)])
    assert result.exit_code == 0, result.output
    return directory


@pytest.fixture(scope="module")
def codes(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("codes")


def tiny_sweep(
    tmp_path: Path,
    checkpoint: Path,
    codes: Path,
    *,
    seeds: int = 4,
    sampling: bool = False,
    seconds: float = 0.5,
) -> Path:
    """seeds x 2 TTFT medians of 0.5 s of the demo through the tiny checkpoint (6 frames a run)."""
    path = tmp_path / "tiny-sweep.toml"
    path.write_text(
        f'base = "{TINY_SCENARIO}"\nseeds = {seeds}\n[set]\n{TTFT_TABLE}\n'
        f'"frontend.checkpoint" = "{checkpoint}"\n"frontend.codes_cache" = "{codes}"\n'
        f'"frontend.use_sampling" = {str(sampling).lower()}\n"run.max_seconds" = {seconds}\n'
        '[parameters]\n"llm.ttft.median" = [0.3, 2.0]\n',
        encoding="utf-8",
    )
    return path


def folders(out: Path) -> dict[str, Path]:
    runs = json.loads((out / RESOLVED_FILE).read_text())["runs"]
    return {r["run_id"]: out / "runs" / r["folder"] for r in runs}


def tokens(run_dir: Path) -> list[int]:
    table = read_trace(run_dir).table
    return table.filter(pc.equal(table["event"], "frontend_token"))["token_id"].to_pylist()


def trace_rows(run_dir: Path) -> list[dict]:
    table = read_trace(run_dir).table
    return table.drop_columns([c for c in WALL_COLUMNS if c in table.column_names]).to_pylist()


# --- grouping (pure) --------------------------------------------------------------------------


def kame_scenario(**changes) -> dict:
    scenario = {
        "run": {"seed": 0, "max_seconds": 5.0, "time_coupling": "virtual", "name": "r", "output_dir": "t"},
        "conversation": {"path": "/data/demo", "id": "demo", "user_speaker": "A"},
        "frontend": {"kind": "kame", "checkpoint": "/ckpt/a", "use_sampling": False},
        "llm": {"ttft": {"kind": "fixed", "value": 0.5}},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        scenario[section] = {**scenario[section], key: value}
    return scenario


def test_only_runs_sharing_conversation_checkpoint_and_frames_share_a_batch():
    runs = [
        (kame_scenario(), "demo"),  # 0
        (kame_scenario(run__seed=1, llm__ttft={"kind": "fixed", "value": 2.0}), "demo"),  # 1: batches with 0
        (kame_scenario(conversation__id="other"), "other"),  # 2
        (kame_scenario(frontend__checkpoint="/ckpt/b"), "demo"),  # 3
        (kame_scenario(frontend__use_sampling=True), "demo"),  # 4
        (kame_scenario(run__max_seconds=6.0), "demo"),  # 5
        (kame_scenario(run__seed=7), "demo-edited"),  # 6: same path + id, other content
        (kame_scenario(run__seed=2) | {"policy": {"kind": "multiplexer"}}, "demo"),  # 7: batches with 0
    ]
    keys = [batch_key(sc, conv) for sc, conv in runs]
    assert plan_batches(keys, 8) == [[0, 1, 7], [2], [3], [4], [5], [6]]


def test_behavioural_budget_and_wall_runs_stay_solo():
    behavioural = kame_scenario(frontend__kind="behavioural")
    assert batch_key(behavioural, "demo") is None
    assert batch_key(kame_scenario(run__time_coupling="budget"), "demo") is None
    assert batch_key(kame_scenario(run__time_coupling="wall"), "demo") is None
    keys = [batch_key(behavioural, "demo")] * 3
    assert plan_batches(keys, 8) == [[0], [1], [2]]


def test_batches_are_cut_at_batch_size_in_plan_order():
    keys = ["a", "b", "a", "a", "b", "a", "a"]
    assert plan_batches(keys, 3) == [[0, 2, 3], [1, 4], [5, 6]]
    assert plan_batches(keys, 1) == [[i] for i in range(7)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", None]), max_size=40), st.integers(1, 9))
def test_plan_batches_partitions_the_runs(keys, size):
    batches = plan_batches(keys, size)
    assert sorted(i for b in batches for i in b) == list(range(len(keys)))  # each run exactly once
    for b in batches:
        assert 1 <= len(b) <= size and b == sorted(b)
        assert len({keys[i] for i in b}) == 1
        assert None not in {keys[i] for i in b} or len(b) == 1
    # no batch could have been merged with a later one of its key that is not full
    firsts = [b[0] for b in batches]
    assert firsts == sorted(firsts)


# --- spec and CLI validation --------------------------------------------------------------------


def parse(value: str, tmp_path: Path):
    return parse_spec({"base": "x.toml", "batch_size": value}, tmp_path / "s.toml")


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.integers(-5, MAX_BATCH_SIZE + 5),
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.lists(st.integers(), max_size=2),
    )
)
def test_batch_size_is_a_whole_number_in_range(tmp_path_factory, value):
    source = tmp_path_factory.getbasetemp() / "s.toml"
    good = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_BATCH_SIZE
    if good:
        assert parse_spec({"base": "x.toml", "batch_size": value}, source).batch_size == value
    else:
        with pytest.raises(InputError) as info:
            parse_spec({"base": "x.toml", "batch_size": value}, source)
        assert info.value.field == "batch_size" and "\n" not in info.value.one_line()


@pytest.mark.parametrize(
    ("body", "args", "message"),
    [
        ('batch_size = "8"\n', [], "s.toml: batch_size:"),
        ("batch_size = 0\n", [], "s.toml: batch_size:"),
        ("", ["--batch", "0"], "<cli>: --batch: must be between 1 and 256, got 0"),
        ("", ["--batch", "257"], "<cli>: --batch: must be between 1 and 256, got 257"),
    ],
)
def test_bad_batch_sizes_exit_2_with_one_line_before_anything_runs(tmp_path: Path, body, args, message):
    spec = tmp_path / "s.toml"
    spec.write_text(f'base = "{DEMO_SCENARIO}"\n{body}', encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(out), "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


# --- batched sweeps equal solo sweeps -----------------------------------------------------------


def test_greedy_batched_sweep_writes_the_same_table_loading_the_checkpoint_once(
    tmp_path: Path, checkpoint: Path, codes: Path
):
    spec = tiny_sweep(tmp_path, checkpoint, codes, seeds=2)
    model_cache.clear()
    loads = model_cache.load_count()
    solo = run_sweep(spec, tmp_path / "solo", workers=1)
    assert model_cache.load_count() - loads == 1  # 4 runs, one load: the worker keeps it
    batched = run_sweep(spec, tmp_path / "batched", workers=1, batch_size=2)
    assert (solo.batches, batched.batches, batched.batch_size) == (0, 2, 2)
    assert solo.ok and batched.ok and batched.table.num_rows == 4
    assert batched.table.equals(solo.table)  # every column: no wall time in results.parquet
    by_id = folders(tmp_path / "batched")
    for index, run_id in enumerate(batched.table["run_id"].to_pylist()):
        meta = read_trace(by_id[run_id]).metadata
        assert meta["kame_sim.batch_size"] == "2"
        assert meta["kame_sim.run_id"] == run_id  # the sweep's own metadata is there too
        record = json.loads((by_id[run_id] / METRICS_FILE).read_text())
        assert record["batch"] == {"size": 2, "index": index % 2}
    solo_dirs = folders(tmp_path / "solo")
    assert {p.name for p in solo_dirs.values()} == {p.name for p in by_id.values()}  # same folders


def test_sampled_replicas_equal_their_solo_runs_token_for_token(
    tmp_path: Path, checkpoint: Path, codes: Path
):
    spec = tiny_sweep(tmp_path, checkpoint, codes, seeds=2, sampling=True)
    solo = run_sweep(spec, tmp_path / "solo", workers=1)
    batched = run_sweep(spec, tmp_path / "batched", workers=1, batch_size=4)
    assert batched.batches == 1 and batched.table.equals(solo.table)
    solo_dirs, batch_dirs = folders(tmp_path / "solo"), folders(tmp_path / "batched")
    for run_id, folder in batch_dirs.items():
        assert trace_rows(folder) == trace_rows(solo_dirs[run_id])
    assert len({tuple(tokens(f)) for f in batch_dirs.values()}) == 2  # each seed its own draws


def test_resume_after_a_partial_batch_reruns_only_the_unfinished_replicas(
    tmp_path: Path, checkpoint: Path, codes: Path
):
    spec = tiny_sweep(tmp_path, checkpoint, codes, seeds=2)
    out = tmp_path / "out"
    first = run_sweep(spec, out, workers=1, batch_size=4)
    by_id = folders(out)
    unfinished = first.table["run_id"].to_pylist()[1:3]  # two replicas of the first batch
    for run_id in unfinished:
        (by_id[run_id] / METRICS_FILE).unlink()  # as a kill before metrics.json leaves them
    again = run_sweep(spec, out, workers=1, batch_size=4)
    assert sorted(again.executed) == sorted(unfinished)
    assert len(again.resumed) == 2 and again.batches == 1
    for run_id in unfinished:  # the two ran as one batch of two
        assert json.loads((by_id[run_id] / METRICS_FILE).read_text())["batch"]["size"] == 2
    assert again.table.equals(first.table)


def test_a_replica_whose_backend_raises_fails_alone(
    tmp_path: Path, checkpoint: Path, codes: Path, monkeypatch
):
    spec = tiny_sweep(tmp_path, checkpoint, codes, seeds=1, seconds=2.0)  # the LLM is asked by 2 s
    clean = run_sweep(spec, tmp_path / "clean", workers=1)
    real = runner.build_llm

    def build_llm(scenario, *args, **kwargs):
        llm = real(scenario, *args, **kwargs)
        if scenario.llm.ttft.median == 2.0:

            def plan(request):
                raise RuntimeError("back-end exploded")

            llm.plan = plan
        return llm

    monkeypatch.setattr(lockstep, "build_llm", build_llm)
    monkeypatch.setattr(runner, "build_llm", build_llm)
    result = run_sweep(spec, tmp_path / "out", workers=1, batch_size=4)
    rows = result.table.to_pylist()
    bad = [r for r in rows if r["status"] == "failed"]
    assert [(r["seed"], r["llm.ttft.median"]) for r in bad] == [(0, 2.0)]
    assert bad[0]["error"] == "RuntimeError: back-end exploded"
    clean_rows = {r["run_id"]: r for r in clean.table.to_pylist()}
    for row in rows:
        if row["status"] == "ok":
            assert row == clean_rows[row["run_id"]]  # the others finish, the same runs
    ok_dir = folders(tmp_path / "out")[next(r["run_id"] for r in rows if r["status"] == "ok")]
    record = json.loads((ok_dir / METRICS_FILE).read_text())["batch"]
    assert record["fallback_from"] == 2 and "exploded" in record["batch_error"]
    args = ["sweep", str(spec), "--out", str(tmp_path / "out"), "--batch", "4", "--workers", "1"]
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 1 and "1 failed" in cli.output  # the sweep reports it


def test_a_replica_with_a_bad_input_fails_alone(tmp_path: Path, checkpoint: Path, codes: Path):
    """A broken per-replica file (here ``oracle.tokenizer``) that only the run reads."""
    broken = tmp_path / "broken.model"
    broken.write_bytes(b"not a sentencepiece model")
    good = checkpoint / TOKENIZER
    spec = tiny_sweep(tmp_path, checkpoint, codes, seeds=2)
    spec.write_text(
        spec.read_text().replace(
            '"llm.ttft.median" = [0.3, 2.0]', f'"oracle.tokenizer" = ["{good}", "{broken}"]'
        )
    )
    result = run_sweep(spec, tmp_path / "out", workers=1, batch_size=4)
    rows = result.table.to_pylist()
    assert [(r["oracle.tokenizer"], r["status"]) for r in rows] == [(str(good), "ok")] * 2 + [
        (str(broken), "failed")
    ] * 2
    assert all(str(broken) in r["error"] for r in rows if r["status"] == "failed")


def test_a_behavioural_sweep_is_the_same_with_batch(tmp_path: Path):
    spec = tmp_path / "s.toml"
    body = f'seeds = 3\n[set]\n{TTFT_TABLE}\n[parameters]\n"llm.ttft.median" = [0.3, 2.0]\n'
    spec.write_text(f'base = "{DEMO_SCENARIO}"\n{body}')
    solo = run_sweep(spec, tmp_path / "a", workers=1)
    batched = run_sweep(spec, tmp_path / "b", workers=1, batch_size=8)
    assert batched.batches == 0 and batched.table.equals(solo.table)


def test_a_cached_checkpoint_gives_the_runs_a_fresh_load_gives(tmp_path: Path, checkpoint: Path, codes: Path):
    overrides = {
        "frontend.checkpoint": str(checkpoint),
        "frontend.codes_cache": str(codes),
        "run.max_seconds": 1.0,
    }
    scenario = load_scenario(TINY_SCENARIO, overrides)
    other = load_scenario(TINY_SCENARIO, {**overrides, "run.seed": 5})
    model_cache.clear()
    fresh = runner.run_scenario(scenario, tmp_path / "fresh")
    runner.run_scenario(other, tmp_path / "other")  # the model streams another session meanwhile
    loads = model_cache.load_count()
    cached = runner.run_scenario(scenario, tmp_path / "cached")
    assert model_cache.load_count() == loads  # served from the cache
    assert trace_rows(cached.run_dir) == trace_rows(fresh.run_dir)
    # another dtype, or a rewritten weights file, is another model
    as_bf16 = load_scenario(TINY_SCENARIO, {**overrides, "frontend.dtype": "bfloat16"})
    assert model_cache.checkpoint_key(as_bf16.frontend) != model_cache.checkpoint_key(scenario.frontend)
    key = model_cache.checkpoint_key(scenario.frontend)
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    os.replace(weights, weights.with_suffix(".old"))
    weights.write_bytes(data)
    assert model_cache.checkpoint_key(scenario.frontend) != key


# --- the process pool: a batch that kills its worker --------------------------------------------


def test_a_batch_that_kills_its_worker_is_rerun_run_by_run():
    ids = ["a", "bad", "c"]
    tasks = [RunTask(i, f"/tmp/unused-{i}", {}, {}, 0, "conv") for i in ids]
    units = [RunBatch(tuple(tasks[:2])), RunBatch(tuple(tasks[2:]))]
    outcomes = list(_process_pool(units, 2, batch_or_die))
    assert sorted(o.run_id for o in outcomes) == sorted(ids)  # every run reported exactly once
    by_id = {o.run_id: o for o in outcomes}
    assert by_id["bad"].status == "failed" and "died" in (by_id["bad"].error or "")
    assert all(by_id[i].status == "ok" for i in ids if i != "bad")


def test_the_bundled_tiny_kame_sweep_forms_four_batches_of_eight(tmp_path: Path):
    """scenarios/sweeps/tiny-kame-seeds.toml (docs/sweeps.md's example): 32 greedy runs, one key."""
    spec = DEMO_SCENARIO.parent / "sweeps" / "tiny-kame-seeds.toml"
    plan = load_sweep(spec)  # plans without the checkpoint: it is read when a run starts
    assert len(plan.runs) == 32 and plan.spec.batch_size == 1
    assert all(r.scenario["frontend"]["use_sampling"] is False for r in plan.runs)
    batches = make_batches(_tasks(plan, plan.runs, tmp_path), 8)
    assert [len(b.tasks) for b in batches] == [8, 8, 8, 8]
    assert [len(b.tasks) for b in make_batches(_tasks(plan, plan.runs, tmp_path), 1)] == [1] * 32


@pytest.mark.parametrize("broken", ["missing", "bad-json", "no-weights"])
def test_a_sweep_with_a_broken_checkpoint_stops_before_writing(tmp_path, codes, broken):
    """Every run would fail in its worker; the sweep checks each checkpoint once, up front."""
    ckpt = tmp_path / "ckpt"
    if broken != "missing":
        ckpt.mkdir()
        text = "{" if broken == "bad-json" else '{"lm_weights": "nope.safetensors"}'
        (ckpt / "config.json").write_text(text)
    spec = tiny_sweep(tmp_path, ckpt, codes)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and str(ckpt) in result.output
    assert not out.exists()
