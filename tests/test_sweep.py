"""Sweeps: design expansion, up-front validation, parallel runs, resume, failures, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import DEMO_SCENARIO, REPO

from kame_sim.errors import InputError
from kame_sim.sweep import load_sweep, run_sweep
from kame_sim.sweep.runner import METRICS_FILE, RESOLVED_FILE, RESULTS_FILE
from kame_sim.trace import read_trace

TTFT_TABLE = '"llm.ttft" = { kind = "lognormal", median = 0.73, sigma = 0.32 }'
FIXED = ("run_id", "status", "error", "conversation_id", "seed")


def write_sweep(tmp_path: Path, body: str, *, base: Path = DEMO_SCENARIO, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'base = "{base}"\n{body}', encoding="utf-8")
    return path


def ttft_sweep(tmp_path: Path, medians: str = "[0.25, 2.0]", seeds: str = "2", extra: str = "") -> Path:
    return write_sweep(
        tmp_path,
        f'seeds = {seeds}\n{extra}\n[set]\n{TTFT_TABLE}\n[parameters]\n"llm.ttft.median" = {medians}\n',
    )


def metric_columns(table) -> list[str]:
    params = [c for c in table.column_names if "." in c]
    return [c for c in table.column_names if c not in FIXED and c not in params]


# --- design expansion ---------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_times_seeds(tmp_path: Path):
    spec = write_sweep(
        tmp_path,
        "seeds = [3, 5]\n[set]\n" + TTFT_TABLE + "\n[parameters]\n"
        '"llm.ttft.median" = [0.5, 1.0, 2.0]\n"policy.poll_interval" = [0.25, 0.5]\n',
    )
    plan = load_sweep(spec)
    assert plan.parameter_keys == ["llm.ttft.median", "policy.poll_interval"]
    assert plan.points == [
        {"llm.ttft.median": m, "policy.poll_interval": p} for m in (0.5, 1.0, 2.0) for p in (0.25, 0.5)
    ]
    assert len(plan.runs) == 6 * 2
    assert [r.seed for r in plan.runs[:4]] == [3, 5, 3, 5]
    run = plan.runs[0]
    assert run.scenario["llm"]["ttft"] == {"kind": "lognormal", "median": 0.5, "sigma": 0.32, "shift": 0.0}
    assert run.scenario["run"]["seed"] == 3 and run.conversation_id == "demo"
    assert len({r.run_id for r in plan.runs}) == 12
    # Stable: planning the same file again gives the same ids, in the same order.
    assert [r.run_id for r in load_sweep(spec).runs] == [r.run_id for r in plan.runs]


def test_run_ids_change_with_the_scenario_not_the_sweep_file(tmp_path: Path):
    a = load_sweep(ttft_sweep(tmp_path))
    other = tmp_path / "elsewhere"
    other.mkdir()
    b = load_sweep(ttft_sweep(other, medians="[0.25, 3.0]"))
    assert a.runs[0].run_id == b.runs[0].run_id  # same median, same seed: the same run
    assert a.runs[2].run_id != b.runs[2].run_id


def test_seed_count_and_unquoted_dotted_keys(tmp_path: Path):
    spec = write_sweep(
        tmp_path, "seeds = 3\n[set]\nllm.ttft = 0.5\n[parameters]\nstt.final_delay = [0.1, 0.3]\n"
    )
    plan = load_sweep(spec)
    assert plan.parameter_keys == ["stt.final_delay"]
    assert [(r.parameters["stt.final_delay"], r.seed) for r in plan.runs] == [
        (0.1, 0),
        (0.1, 1),
        (0.1, 2),
        (0.3, 0),
        (0.3, 1),
        (0.3, 2),
    ]
    assert plan.runs[0].scenario["llm"]["ttft"]["kind"] == "constant"


def test_random_design_is_seeded_and_within_bounds(tmp_path: Path):
    body = (
        'design = "random"\nsamples = 12\nsample_seed = 7\n[set]\n' + TTFT_TABLE + "\n[parameters]\n"
        '"llm.ttft.median" = { low = 0.2, high = 4.0, log = true }\n'
        '"policy.poll_interval" = { low = 0.2, high = 0.8 }\n'
        '"policy.restart_word_delta" = { low = 1, high = 4, integer = true }\n'
        '"llm.content" = ["oracle_raw", "hint"]\n'
    )
    plan = load_sweep(write_sweep(tmp_path, body))
    assert len(plan.points) == 12 and len(plan.runs) == 12
    for p in plan.points:
        assert 0.2 <= p["llm.ttft.median"] <= 4.0
        assert 0.2 <= p["policy.poll_interval"] <= 0.8
        assert p["policy.restart_word_delta"] in (1, 2, 3, 4)
        assert p["llm.content"] in ("oracle_raw", "hint")
    assert len({p["llm.content"] for p in plan.points}) == 2
    assert load_sweep(write_sweep(tmp_path, body, name="again.toml")).points == plan.points
    other = load_sweep(
        write_sweep(tmp_path, body.replace("sample_seed = 7", "sample_seed = 8"), name="o.toml")
    )
    assert other.points != plan.points


def test_random_choices_that_repeat_a_point_are_run_once(tmp_path: Path):
    body = 'design = "random"\nsamples = 30\n[parameters]\n"policy.poll_interval" = [0.25, 0.5]\n'
    plan = load_sweep(write_sweep(tmp_path, body))
    assert sorted(p["policy.poll_interval"] for p in plan.points) == [0.25, 0.5]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            f'[set]\n{TTFT_TABLE}\n[parameters]\n"llm.ttft.mediann" = [1.0]\n',
            "parameters.llm.ttft.mediann",
            "not a scenario key",
        ),
        (
            f'[set]\n{TTFT_TABLE}\n[parameters]\n"llm.ttft.median" = [1.0, -2.0]\n',
            "parameters.llm.ttft.median",
            "value -2.0",
        ),
        ('[parameters]\n"policy.poll_interval" = ["fast"]\n', "parameters.policy.poll_interval", "fast"),
        ('[parameters]\n"llm.ttft.median" = [1.0]\n', "parameters.llm.ttft.median", "not a table"),
        ('[parameters]\n"nope.key" = [1]\n', "parameters.nope.key", "not a scenario key"),
        ('[set]\n"llm.ttft" = { kind = "lognormal", median = 1.0 }\n', "set.llm.ttft", "sigma"),
        ('[parameters]\n"run.seed" = [1, 2]\n', "parameters.run.seed", "seeds"),
        ('[parameters]\n"policy.poll_interval" = []\n', "parameters.policy.poll_interval", "at least one"),
        ('[parameters]\n"policy.poll_interval" = 0.5\n', "parameters.policy.poll_interval", "list of values"),
        (
            '[parameters]\n"policy.poll_interval" = { low = 0.1, high = 1.0 }\n',
            "parameters.policy.poll_interval",
            "grid",
        ),
        ('design = "random"\n[parameters]\n"policy.poll_interval" = [0.5]\n', "samples", "needs samples"),
        (
            'design = "random"\nsamples = 2\n[parameters]\n"policy.poll_interval" = { low = 2, high = 1 }\n',
            "parameters.policy.poll_interval",
            "must not exceed",
        ),
        ("seeds = 0\n", "seeds", "at least 1"),
        ("seeds = [1, 1]\n", "seeds", "distinct"),
        ("sedes = 3\n", "sedes", "unknown key"),
        ('[[conversations]]\npath = "no/such/dir"\n', "conversations[0].path", "no such directory"),
        (
            '[[conversations]]\npath = "x"\n[parameters]\n"conversation.id" = ["a"]\n',
            "parameters.conversation.id",
            "conflicts",
        ),
        ('[parameters]\n"policy.poll_interval" = [0.5, 0.5]\n', "parameters", "repeats"),
    ],
)
def test_bad_sweeps_fail_before_running_naming_file_and_key(
    tmp_path: Path, body: str, field: str | None, words: str
):
    spec = write_sweep(tmp_path, body)
    with pytest.raises(InputError) as info:
        run_sweep(spec, tmp_path / "out", workers=1)
    err = info.value
    assert err.source == str(spec), err.one_line()
    if field is not None:
        assert err.field == field, err.one_line()
    assert words in err.one_line()
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_missing_base_and_broken_toml(tmp_path: Path):
    spec = write_sweep(tmp_path, "", base=tmp_path / "missing.toml")
    with pytest.raises(InputError, match="base scenario not found") as info:
        load_sweep(spec)
    assert info.value.field == "base"
    bad = tmp_path / "bad.toml"
    bad.write_text("base = ", encoding="utf-8")
    with pytest.raises(InputError, match="not valid TOML"):
        load_sweep(bad)
    with pytest.raises(InputError, match="sweep file not found"):
        load_sweep(tmp_path / "absent.toml")


# --- running ------------------------------------------------------------------------------------


def test_small_sweep_in_worker_processes_writes_the_results_table(tmp_path: Path):
    spec = ttft_sweep(tmp_path)
    out = tmp_path / "out"
    calls: list[tuple[int, int, int]] = []
    result = run_sweep(spec, out, workers=2, progress=lambda *a: calls.append(a))
    assert result.total == 4 and len(result.executed) == 4 and not result.failed and not result.resumed
    assert calls[0] == (0, 4, 0) and calls[-1] == (4, 4, 0)

    table = pq.read_table(out / RESULTS_FILE)
    assert table.num_rows == 4
    assert table.column_names[:6] == [*FIXED, "llm.ttft.median"]
    assert table.column("llm.ttft.median").to_pylist() == [0.25, 0.25, 2.0, 2.0]
    assert table.column("seed").to_pylist() == [0, 1, 0, 1]
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert table.column("conversation_id").to_pylist() == ["demo"] * 4
    assert metric_columns(table), table.column_names
    assert "skipped_token_rate" in table.column_names
    assert table.equals(result.table)

    resolved = json.loads((out / RESOLVED_FILE).read_text())
    assert [r["run_id"] for r in resolved["runs"]] == table.column("run_id").to_pylist()
    for run_id in table.column("run_id").to_pylist():
        run_dir = out / "runs" / run_id
        assert read_trace(run_dir).complete
        record = json.loads((run_dir / METRICS_FILE).read_text())
        assert record["run_id"] == run_id and record["status"] == "ok" and record["metrics"]
    # TTFT really was varied: the slow point waits longer for its first tokens.
    rows = table.to_pylist()
    meta = json.loads(read_trace(out / "runs" / rows[2]["run_id"]).metadata["kame_sim.scenario"])
    assert meta["llm"]["ttft"]["median"] == 2.0


def test_resume_redoes_only_damaged_runs(tmp_path: Path):
    spec = ttft_sweep(tmp_path, medians="[0.25, 1.0, 2.0]")
    out = tmp_path / "out"
    first = run_sweep(spec, out, workers=1)
    assert len(first.executed) == 6
    ids = first.table.column("run_id").to_pylist()
    (out / "runs" / ids[1] / METRICS_FILE).unlink()
    trace = out / "runs" / ids[4] / "trace.arrows"
    data = trace.read_bytes()
    trace.write_bytes(data[: len(data) // 2])
    assert not read_trace(trace).complete

    again = run_sweep(spec, out, workers=1)
    assert sorted(again.executed) == sorted([ids[1], ids[4]])
    assert sorted(again.resumed) == sorted(set(ids) - {ids[1], ids[4]})
    assert again.table.column("run_id").to_pylist() == ids
    assert set(again.table.column("status").to_pylist()) == {"ok"}
    assert read_trace(trace).complete
    assert again.table.select(metric_columns(again.table)).equals(
        first.table.select(metric_columns(first.table))
    )

    third = run_sweep(spec, out, workers=1)
    assert third.executed == [] and len(third.resumed) == 6
    redo = run_sweep(spec, out, workers=1, resume=False)
    assert len(redo.executed) == 6


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path: Path):
    # conversation.id "ghost" passes validation but the run cannot find its files.
    spec = write_sweep(tmp_path, 'seeds = 2\n[parameters]\n"conversation.id" = ["demo", "ghost"]\n')
    calls: list[tuple[int, int, int]] = []
    result = run_sweep(spec, tmp_path / "out", workers=1, progress=lambda *a: calls.append(a))
    rows = result.table.to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert rows[2]["error"] and "ghost" in rows[2]["error"] and "file not found" in rows[2]["error"]
    assert rows[0]["error"] is None and rows[0]["skipped_token_rate"] is not None
    assert rows[2]["skipped_token_rate"] is None
    assert len(result.failed) == 2 and not result.ok
    assert calls[-1] == (4, 4, 2)
    error = json.loads((tmp_path / "out" / "runs" / rows[2]["run_id"] / "error.json").read_text())
    assert error["status"] == "failed" and "ghost" in error["error"]
    # Failed runs are retried on resume; finished ones are not.
    again = run_sweep(spec, tmp_path / "out", workers=1)
    assert sorted(again.executed) == sorted(result.failed)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"sweep ended before it could be killed: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            pytest.fail("no run finished in time")
        time.sleep(0.002)


def test_sweep_resumes_after_being_killed(tmp_path: Path):
    spec = ttft_sweep(tmp_path, medians="[0.25, 0.5, 1.0, 2.0, 4.0]", seeds="2")
    out = tmp_path / "out"
    code = (
        "from pathlib import Path\nfrom kame_sim.sweep import run_sweep\n"
        f"run_sweep(Path({str(spec)!r}), Path({str(out)!r}), workers=1)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: any((out / "runs").glob(f"*/{METRICS_FILE}")), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.parent.name for p in (out / "runs").glob(f"*/{METRICS_FILE}")}
    assert 1 <= len(finished) < 10, "the kill should land mid-sweep"
    assert not (out / RESULTS_FILE).exists()

    result = run_sweep(spec, out, workers=1)
    all_ids = [r.run_id for r in result.plan.runs]
    assert set(result.resumed) == finished
    assert sorted(result.executed) == sorted(set(all_ids) - finished)  # each run done exactly once
    table = pq.read_table(out / RESULTS_FILE)
    assert table.column("run_id").to_pylist() == all_ids
    assert set(table.column("status").to_pylist()) == {"ok"}
    for run_id in all_ids:
        assert read_trace(out / "runs" / run_id).complete
        assert (out / "runs" / run_id / METRICS_FILE).exists()
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(all_ids)


def _spawned_workers(pid: int) -> list[int]:
    """Pids of this process's spawned pool workers (not multiprocessing's resource tracker)."""
    workers: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:  # threads and processes may come and go while we look
            children = [int(c) for c in (task / "children").read_text().split()]
            workers += [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        except OSError:
            continue
    return workers


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find worker pids")
def test_a_killed_worker_process_is_replaced_and_its_run_redone(tmp_path: Path):
    spec = ttft_sweep(tmp_path, medians="[0.25, 0.5, 1.0, 2.0]", seeds="2")
    killed: list[int] = []

    def kill_a_worker(done: int, total: int, failed: int) -> None:
        if done >= 1 and not killed:
            workers = _spawned_workers(os.getpid())
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])

    result = run_sweep(spec, tmp_path / "out", workers=2, progress=kill_a_worker)
    assert killed
    assert not result.failed
    assert sorted(result.executed) == sorted(r.run_id for r in result.plan.runs)
    assert set(result.table.column("status").to_pylist()) == {"ok"}


def test_same_spec_same_metrics(tmp_path: Path):
    spec = ttft_sweep(tmp_path, medians="[0.5, 4.0]", seeds="[0, 9]")
    a = run_sweep(spec, tmp_path / "a", workers=2)
    b = run_sweep(spec, tmp_path / "b", workers=1)
    cols = metric_columns(a.table)
    assert cols == metric_columns(b.table)
    assert a.table.column("run_id").equals(b.table.column("run_id"))
    assert a.table.select(cols).equals(b.table.select(cols))
    # ...and the design really matters: a 4 s TTFT changes the metrics.
    rows = a.table.to_pylist()
    assert {k: rows[0][k] for k in cols} != {k: rows[2][k] for k in cols}


def test_the_example_ttft_sweep(tmp_path: Path):
    plan = load_sweep(REPO / "scenarios" / "sweeps" / "ttft.toml")
    assert plan.name == "ttft"
    assert [p["llm.ttft.median"] for p in plan.points] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert len(plan.runs) == 20 and {r.seed for r in plan.runs} == {0, 1, 2, 3}
    assert {r.conversation_id for r in plan.runs} == {"demo"}
    result = run_sweep(REPO / "scenarios" / "sweeps" / "ttft.toml", tmp_path / "out", workers=1)
    assert result.table.num_rows == 20 and not result.failed


# --- Ray ----------------------------------------------------------------------------------------


def test_ray_backend_runs_a_tiny_sweep_on_a_local_instance(tmp_path: Path):
    pytest.importorskip("ray", reason="Ray is optional (pip install ray); the Ray backend is untested here")
    spec = ttft_sweep(tmp_path, medians="[0.5]", seeds="2")
    result = run_sweep(spec, tmp_path / "out", workers=2, ray_address="local")
    assert len(result.executed) == 2 and not result.failed
    local = run_sweep(spec, tmp_path / "pool", workers=1)
    cols = metric_columns(result.table)
    assert result.table.select(cols).equals(local.table.select(cols))


def test_ray_missing_is_a_clear_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    spec = ttft_sweep(tmp_path, medians="[0.5]", seeds="1")
    with pytest.raises(InputError, match="Ray is not installed") as info:
        run_sweep(spec, tmp_path / "out", workers=1, ray_address="local")
    assert info.value.field == "--ray"
    assert not (tmp_path / "out").exists()
