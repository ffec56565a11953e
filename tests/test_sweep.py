"""Sweeps: design expansion, up-front validation, parallel runs, resume, failures, determinism."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DEMO_SCENARIO, REPO

from kame_sim.errors import InputError
from kame_sim.report.sweep_report import KEY_METRICS, report_for_sweep, value_label
from kame_sim.sweep.runner import METRICS_FILE, RESOLVED_FILE, RESULTS_FILE, run_sweep
from kame_sim.sweep.spec import MAX_FOLDER_NAME, load_sweep, run_folder_name, run_id_of_folder
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


def run_dir(out: Path, run_id: str) -> Path:
    """A run's folder, as the sweep's plan names it (its parameters, then its id)."""
    runs = json.loads((out / RESOLVED_FILE).read_text())["runs"]
    return out / "runs" / next(r["folder"] for r in runs if r["run_id"] == run_id)


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
        folder = run_dir(out, run_id)
        assert read_trace(folder).complete
        record = json.loads((folder / METRICS_FILE).read_text())
        assert record["run_id"] == run_id and record["status"] == "ok" and record["metrics"]
    # TTFT really was varied: the slow point waits longer for its first tokens.
    rows = table.to_pylist()
    meta = json.loads(read_trace(run_dir(out, rows[2]["run_id"])).metadata["kame_sim.scenario"])
    assert meta["llm"]["ttft"]["median"] == 2.0


def test_resume_redoes_only_damaged_runs(tmp_path: Path):
    spec = ttft_sweep(tmp_path, medians="[0.25, 1.0, 2.0]")
    out = tmp_path / "out"
    first = run_sweep(spec, out, workers=1)
    assert len(first.executed) == 6
    ids = first.table.column("run_id").to_pylist()
    (run_dir(out, ids[1]) / METRICS_FILE).unlink()
    trace = run_dir(out, ids[4]) / "trace.arrows"
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
    error = json.loads((run_dir(tmp_path / "out", rows[2]["run_id"]) / "error.json").read_text())
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
        "from pathlib import Path\nfrom kame_sim.sweep.runner import run_sweep\n"
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
    finished = {run_id_of_folder(p.parent.name) for p in (out / "runs").glob(f"*/{METRICS_FILE}")}
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
        assert read_trace(run_dir(out, run_id)).complete
        assert (run_dir(out, run_id) / METRICS_FILE).exists()
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r.folder for r in result.plan.runs)


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
# --- run folders: readable names, found by id -----------------------------------------------------


def test_run_folder_names_read_as_parameters_then_the_id():
    name = run_folder_name(
        {"policy.kind": "multiplexer", "llm.ttft": "gpt-4.1-ttft"}, "SNG0072", 3, "1a2b3c4d5e6f7a8b"
    )
    assert name == "policy.kind=multiplexer,llm.ttft=gpt-4.1-ttft-SNG0072-seed3-1a2b3c4d5e6f7a8b"
    assert run_id_of_folder(name) == run_id_of_folder("1a2b3c4d5e6f7a8b") == "1a2b3c4d5e6f7a8b"
    assert run_id_of_folder("notes") is None and run_id_of_folder("x-1A2B3C4D5E6F7A8B") is None
    table = {"kind": "lognormal", "median": 2.0, "sigma": 0.3}
    assert run_folder_name({"llm.ttft": table, "x": True}, "demo", 0, "0" * 16).startswith(
        "llm.ttft=lognormal+median=2+sigma=0.3,x=true-demo-seed0-"
    )
    # anything unsafe becomes '_', and a long name is cut before the id, which always ends it
    nasty = run_folder_name({"a": "../../etc/\x1b[31m\n" + "v" * 300}, "c/d", 1, "f" * 16)
    assert len(nasty) <= MAX_FOLDER_NAME and nasty.endswith("-" + "f" * 16)
    assert nasty.startswith("a=.._.._etc_31m_vvv") and "/" not in nasty and "\x1b" not in nasty
    assert re.fullmatch(r"[A-Za-z0-9._=+,-]+", nasty) and not nasty.startswith((".", "-"))
    assert run_folder_name({}, "", 0, "e" * 16) == "seed0-" + "e" * 16
    # the parameters are cut, not the conversation and the seed (a search trial's long tables)
    assert nasty.endswith("-c_d-seed1-" + "f" * 16)


def test_a_sweep_names_its_run_folders_and_resumes_the_old_layout(tmp_path: Path):
    spec = ttft_sweep(tmp_path)
    out = tmp_path / "out"
    first = run_sweep(spec, out, workers=1)
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == sorted(r.folder for r in first.plan.runs)
    assert names[0] == f"llm.ttft.median=0.25-demo-seed0-{first.plan.runs[0].run_id}"
    resolved = json.loads((out / RESOLVED_FILE).read_text())
    assert [r["folder"] for r in resolved["runs"]] == [r.folder for r in first.plan.runs]
    # a sweep written before readable names: runs/<run_id>/ -- found by id, moved, reused
    for run in first.plan.runs:
        (out / "runs" / run.folder).rename(out / "runs" / run.run_id)
    (out / "runs" / first.plan.runs[1].run_id / METRICS_FILE).unlink()  # one of them unfinished
    again = run_sweep(spec, out, workers=1)
    assert len(again.resumed) == 3 and again.executed == [first.plan.runs[1].run_id]
    assert sorted(p.name for p in (out / "runs").iterdir()) == names
    assert again.table.column("status").to_pylist() == ["ok"] * 4


def test_set_on_the_command_line_changes_every_run_and_its_id(tmp_path: Path):
    spec = ttft_sweep(tmp_path)
    out = tmp_path / "out"
    plain = run_sweep(spec, out, workers=1)
    changed = run_sweep(spec, out, workers=1, cli_set={"policy.kind": "multiplexer", "llm.ttft.sigma": 0.5})
    assert len(changed.executed) == 4 and not changed.resumed  # new scenarios, new ids: run again
    assert {r.run_id for r in changed.plan.runs}.isdisjoint(r.run_id for r in plain.plan.runs)
    resolved = json.loads((out / RESOLVED_FILE).read_text())
    assert resolved["cli_set"] == {"policy.kind": "multiplexer", "llm.ttft.sigma": 0.5}
    for run in changed.plan.runs:
        scenario = json.loads(read_trace(run_dir(out, run.run_id)).metadata["kame_sim.scenario"])
        assert scenario["policy"]["kind"] == "multiplexer"
        assert scenario["llm"]["ttft"]["sigma"] == 0.5  # over the sweep's [set] table
        assert scenario["llm"]["ttft"]["median"] == run.parameters["llm.ttft.median"]  # under the design
    same = run_sweep(spec, out, workers=1, cli_set={"policy.kind": "multiplexer", "llm.ttft.sigma": 0.5})
    assert same.executed == [] and len(same.resumed) == 4
    back = run_sweep(spec, out, workers=1)
    assert back.executed == [] and sorted(back.resumed) == sorted(plain.resumed + plain.executed)


@pytest.mark.parametrize(
    ("cli_set", "field", "words"),
    [
        ({"llm.ttft.median": 1.0}, "--set llm.ttft.median", "varies llm.ttft.median"),
        ({"run.seed": 3}, "--set run.seed", "seeds = ..."),
        ({"run.output_dir": "x"}, "--set run.output_dir", "per run"),
        ({"llm.ttft.sigma": -1}, "--set llm.ttft.sigma", "> 0"),
        ({"policy.nope": 1}, "--set policy.nope", "not a scenario key"),
    ],
)
def test_bad_command_line_sets_name_the_option(tmp_path: Path, cli_set: dict, field: str, words: str):
    with pytest.raises(InputError) as caught:
        load_sweep(ttft_sweep(tmp_path), cli_set)
    line = caught.value.one_line()
    assert line.startswith(f"<cli>: {field}: ") and words in line, line


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


# --- the sweep report: categorical and 2-D sweeps -------------------------------------------------


def _img_srcs(index: Path) -> list[str]:
    return re.findall(r'<img[^>]*src="([^"]+)"', index.read_text(encoding="utf-8"))


def test_a_sweep_over_a_text_parameter_reports_one_group_per_value(tmp_path: Path):
    """Issue 10: a sweep over preset names used to give an empty report (no picture, no table)."""
    presets = ("instant", "gpt-4.1-ttft", "claude-sonnet-ttft")
    spec = write_sweep(tmp_path, f'seeds = 2\n[parameters]\n"llm.ttft" = {json.dumps(list(presets))}\n')
    result = run_sweep(spec, tmp_path / "out", workers=1)
    assert not result.failed and result.table.column("llm.ttft").type == pa.string()
    index = report_for_sweep(tmp_path / "out", tmp_path / "report")
    assert len(_img_srcs(index)) == 1
    assert (tmp_path / "report" / "curves-llm.ttft.png").stat().st_size > 10_000
    text = index.read_text(encoding="utf-8")
    # one aggregate row per (value, metric), each over that value's 2 runs, and one row per value
    # in "Runs and timelines", linking both runs' interactive timelines
    for name in presets:
        assert text.count(f"<td>{name}</td>") == len(KEY_METRICS) + 1
    assert text.count('<td>oracle_coverage</td><td class="num">2</td>') == 3
    pages = sorted((tmp_path / "report" / "runs").glob("*.html"))
    assert len(pages) == 6 and all(f'href="runs/{p.name}"' in text for p in pages)
    assert len(list((tmp_path / "report" / "js").glob("bokeh-*.min.js"))) == 1
    assert '<script src="../js/bokeh-' in pages[0].read_text(encoding="utf-8")


def _fake_sweep(tmp_path: Path, points: list[dict], spec: dict, metric) -> Path:
    """A sweep directory by hand: results.parquet with one row per (point, conversation, seed)."""
    rows = []
    for i, point in enumerate(points):
        for conv in ("c0", "c1", "c2"):
            for seed in (0, 1):
                ids = {"run_id": f"r{i}{conv}{seed}", "status": "ok", "error": None}
                rows.append(
                    {**ids, "conversation_id": conv, "seed": seed, **point, **metric(point, conv, seed)}
                )
    out = tmp_path / "sweep"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), out / RESULTS_FILE)
    resolved = {"name": "fake", "parameters": list(points[0]), "spec": spec}
    (out / RESOLVED_FILE).write_text(json.dumps(resolved), encoding="utf-8")
    return out


def test_a_2d_sweep_keeps_its_second_parameter_and_pairs_the_two_policies(tmp_path: Path):
    """Issue 10: a 2-D sweep's curves averaged the second parameter away."""
    slow = {"kind": "lognormal", "median": 2.0, "sigma": 0.3}
    stored = ['"gpt-4.1-ttft"', json.dumps(slow, sort_keys=True)]  # as results.parquet holds them
    points = [{"policy.kind": k, "llm.ttft": t} for k in ("poll", "multiplexer") for t in stored]
    conversation_effect = {"c0": 0.0, "c1": 0.1, "c2": 0.2}

    def metric(point: dict, conv: str, seed: int) -> dict:  # the multiplexer gains 0.4 with the slow TTFT
        gain = 0.4 if point["policy.kind"] == "multiplexer" and point["llm.ttft"] == stored[1] else 0.0
        return {
            "oracle_coverage": 0.3 + conversation_effect[conv] + gain + 0.01 * seed,
            "reply_f1_mean": None,
        }

    spec = {
        "parameters": {"policy.kind": ["poll", "multiplexer"], "llm.ttft": ["gpt-4.1-ttft", slow]},
        "report": {"metrics": ["oracle_coverage", "reply_f1_mean"], "labels": {"llm.ttft": ["GPT", "slow"]}},
    }
    index = report_for_sweep(_fake_sweep(tmp_path, points, spec, metric), tmp_path / "report")
    text = index.read_text(encoding="utf-8")
    # x = the TTFT (a tie in value counts goes to the later parameter), one colour per policy
    assert _img_srcs(index) == ["curves-llm.ttft-by-policy.kind.png"]
    assert "x axis: llm.ttft; one colour per policy.kind" in text
    assert "reply_f1_mean" not in text  # no value in any run: no panel, no rows
    # not averaged over the policy: one row per (ttft, policy), with the labels of [report] labels
    assert text.count("<td>oracle_coverage</td>") == 4 + 2  # 4 groups, then 2 paired differences
    assert "<td>slow</td><td>multiplexer</td>" in text and "<td>GPT</td><td>poll</td>" in text
    # paired by conversation and seed, the conversation effect cancels: an exact difference
    assert "Paired difference: multiplexer − poll" in text
    cells = '<td>oracle_coverage</td><td class="num">6</td><td>{}</td>'
    assert "<td>slow</td>" + cells.format("+0.40 [+0.40, +0.40]") in text
    assert "<td>GPT</td>" + cells.format("+0.00 [+0.00, +0.00]") in text


def test_a_numeric_x_with_a_second_parameter_draws_one_line_per_value(tmp_path: Path):
    points = [
        {"policy.kind": k, "llm.ttft.median": m} for k in ("poll", "multiplexer") for m in (0.5, 2.0, 4.0)
    ]

    def metric(point: dict, conv: str, seed: int) -> dict:
        slope = 0.1 if point["policy.kind"] == "poll" else 0.0
        return {"oracle_coverage": 0.8 - slope * point["llm.ttft.median"]}

    index = report_for_sweep(
        _fake_sweep(tmp_path, points, {}, metric), tmp_path / "report", ("oracle_coverage",)
    )
    assert _img_srcs(index) == ["curves-llm.ttft.median-by-policy.kind.png"]
    text = index.read_text(encoding="utf-8")
    assert "x axis: llm.ttft.median; one colour per policy.kind" in text
    assert '<td class="num">4</td><td>poll</td><td>oracle_coverage</td><td class="num">6</td><td>0.40' in text
    assert (
        '<td class="num">4</td><td>multiplexer</td><td>oracle_coverage</td><td class="num">6</td><td>0.80'
        in text
    )
    assert "Paired difference" in text and "+0.05 [+0.05, +0.05]" in text and "+0.40 [+0.40, +0.40]" in text


def test_sweep_report_errors_instead_of_an_empty_report(tmp_path: Path):
    out = _fake_sweep(tmp_path, [{"policy.kind": "poll"}], {}, lambda *_: {"oracle_coverage": None})
    with pytest.raises(InputError, match=r"none of the metrics oracle_coverage has a value"):
        report_for_sweep(out, tmp_path / "r1", metrics=("oracle_coverage",))
    table = pq.read_table(out / RESULTS_FILE)
    failed = pa.array(["failed"] * table.num_rows)
    pq.write_table(
        table.set_column(table.schema.get_field_index("status"), "status", failed), out / RESULTS_FILE
    )
    with pytest.raises(InputError, match="no successful run to report on"):
        report_for_sweep(out, tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


def test_value_labels_for_presets_tables_and_numbers():
    assert value_label('"gpt-4.1-ttft"') == "gpt-4.1-ttft"
    assert value_label("poll") == "poll" and value_label(0.5) == "0.5"
    assert value_label('{"kind": "lognormal", "median": 2.0, "sigma": 0.3}') == "LogN(2 s, σ=0.3)"
    body = {"kind": "lognormal", "median": 0.8, "sigma": 0.5}
    spikes = {"kind": "uniform", "low": 2, "high": 5}
    mixture = {
        "kind": "mixture",
        "components": [{"weight": 0.9, "model": body}, {"weight": 0.1, "model": spikes}],
    }
    assert value_label(json.dumps(mixture)) == "90% LogN(0.8 s, σ=0.5) +\n10% U(2 s, 5 s)"
    assert (
        value_label('{"kind": "behavioural", "reaction_delay": 0.5}')
        == "kind=behavioural, reaction_delay=0.5"
    )


@pytest.mark.parametrize(
    ("report", "field", "message"),
    [
        ('metrics = ["oracle_coverage", "nope"]', "report.metrics", "'nope' is not a metric"),
        ('x = "policy.kind"', "report.x", "'policy.kind' is not a parameter of this sweep"),
        ('x = "llm.ttft.median"\nseries = "llm.ttft.median"', "report.series", "must differ"),
        ('labels = { "llm.ttft.median" = ["a"] }', "report.labels.llm.ttft.median", "1 label"),
        ("colour = 1", "report.colour", "unknown key"),
    ],
)
def test_bad_report_tables_fail_before_running(tmp_path: Path, report: str, field: str, message: str):
    with pytest.raises(InputError, match=re.escape(message)) as info:
        load_sweep(ttft_sweep(tmp_path, extra=f"[report]\n{report}\n"))
    assert info.value.field == field


def test_the_report_table_changes_no_run(tmp_path: Path):
    plain = load_sweep(ttft_sweep(tmp_path))
    (tmp_path / "sub").mkdir()
    extra = '[report]\nmetrics = ["oracle_coverage"]\n[report.labels]\nllm.ttft.median = ["fast", "slow"]\n'
    labelled = load_sweep(ttft_sweep(tmp_path / "sub", extra=extra))
    assert [r.run_id for r in plain.runs] == [r.run_id for r in labelled.runs]
    assert labelled.resolved()["spec"]["report"]["labels"] == {"llm.ttft.median": ["fast", "slow"]}


def test_the_policies_sweep(spokenwoz: Path):
    plan = load_sweep(REPO / "scenarios" / "sweeps" / "policies.toml")
    assert plan.parameter_keys == ["policy.kind", "llm.ttft"]
    assert [p["policy.kind"] for p in plan.points] == ["poll"] * 3 + ["multiplexer"] * 3
    assert {r.conversation_id for r in plan.runs} == {"SNG0072", "SNG0480", "MUL1423"}
    assert len(plan.runs) == 6 * 3 * 24
    assert plan.spec.report is not None and plan.spec.report.x == "llm.ttft"


def test_a_schedule_edited_in_place_is_a_new_run_on_resume(tmp_path: Path):
    """Run ids hash a schedule's bytes, not its path: a resumed sweep reruns after an edit and
    reuses runs only while the file is unchanged (moved or not)."""
    schedule = tmp_path / "slow.json"
    every = [{"kind": "ttft", "stream": i, "seconds": 0.05} for i in range(1, 60)]
    schedule.write_text(json.dumps(every))
    spec = write_sweep(
        tmp_path,
        f'seeds = 1\n[set]\n{TTFT_TABLE}\n"delays.schedule" = "{schedule}"\n[parameters]\n'
        '"llm.ttft.median" = [0.5]\n',
    )
    out = tmp_path / "out"
    first = run_sweep(spec, out, workers=1)
    again = run_sweep(spec, out, workers=1)
    assert len(again.resumed) == first.total  # unchanged file: reused
    schedule.write_text(json.dumps([{**e, "seconds": 0.3} for e in every]))
    edited = run_sweep(spec, out, workers=1)
    assert not edited.resumed and len(edited.executed) == first.total
    assert edited.table["ttft_max_s"].to_pylist() != first.table["ttft_max_s"].to_pylist()
