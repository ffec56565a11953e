"""Nothing of the user's is lost (issue 9, part 4): cassettes are untouched until a run really
starts, ``--overwrite`` and re-runs remove only what kame-sim wrote, failures leave a readable
partial trace or nothing, and a killed sweep takes its worker processes with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import invoke
from cli_helpers import one_line_error as error_line
from conftest import DEMO_SCENARIO, REPO

from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.frontend.behavioural import BehaviouralFrontend
from kame_sim.llm.cassette import Cassette
from kame_sim.llm.plan import LlmChunk, LlmPlan
from kame_sim.output_dir import MANIFEST
from kame_sim.runner import run_scenario
from kame_sim.stt.cassette import SttCassette, stt_key
from kame_sim.stt.events import SttEvent
from kame_sim.trace import read_trace
from kame_sim.trace import writer as trace_writer

DEMO_DATA = REPO / "scenarios" / "data" / "demo"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# --- cassettes -------------------------------------------------------------------------------------


def cassette_scenario(tmp_path: Path, cassette: Path, mode: str) -> Path:
    path = tmp_path / f"{mode}.toml"
    path.write_text(
        f'[conversation]\npath = "{DEMO_DATA}"\n[llm]\ncassette = "{cassette}"\ncassette_mode = "{mode}"\n',
        encoding="utf-8",
    )
    return path


def test_a_record_mode_cassette_survives_a_refused_run_and_validate(tmp_path: Path):
    cassette, out = tmp_path / "plans.arrows", tmp_path / "run"
    record = cassette_scenario(tmp_path, cassette, "record")
    assert invoke("run", record, "--out", out, "--quiet").exit_code == 0
    recorded = cassette.read_bytes()
    assert recorded

    line = error_line(invoke("run", record, "--out", out, "--quiet"))  # the run dir holds a trace
    assert "already holds a trace" in line
    assert cassette.read_bytes() == recorded, "a refused run emptied the cassette"
    for mode in ("record", "auto", "replay"):
        assert invoke("validate", cassette_scenario(tmp_path, cassette, mode)).exit_code == 0
        assert cassette.read_bytes() == recorded, f"validate ({mode}) changed the cassette"

    # A torn tail (a crash mid-append) is cut only by a run that appends, never by validate.
    torn = recorded + b"\xff\xff\xff\xff\x40\x00"
    cassette.write_bytes(torn)
    assert invoke("validate", cassette_scenario(tmp_path, cassette, "auto")).exit_code == 0
    assert cassette.read_bytes() == torn

    # Cut later than it is read, the tail is re-scanned: plans another run appended meanwhile stay.
    first, second = Cassette(cassette), Cassette(cassette)  # both read the torn file
    second.append("b" * 64, "{}", LlmPlan([LlmChunk(0.5, "second")]))
    first.append("a" * 64, "{}", LlmPlan([LlmChunk(0.25, "first")]))
    again = Cassette(cassette).plans
    assert again["a" * 64][0].chunks[0].text == "first" and again["b" * 64][0].chunks[0].text == "second"

    # The run that really starts does record afresh.
    assert invoke("run", record, "--out", out, "--quiet", "--overwrite").exit_code == 0
    assert cassette.read_bytes() == recorded


def test_record_mode_refuses_a_file_that_is_not_a_cassette(tmp_path: Path):
    notes = tmp_path / "notes.arrows"
    notes.write_text("my notes, not a cassette\n")
    line = error_line(invoke("run", cassette_scenario(tmp_path, notes, "record"), "--out", tmp_path / "run"))
    assert "notes.arrows: llm.cassette:" in line
    assert notes.read_text() == "my notes, not a cassette\n"
    assert not (tmp_path / "run").exists()
    folder = tmp_path / "a-folder.arrows"
    folder.mkdir()
    line = error_line(invoke("run", cassette_scenario(tmp_path, folder, "record"), "--out", tmp_path / "run"))
    assert "a-folder.arrows: llm.cassette: is not a file" in line


STT_EVENTS = [SttEvent("partial", 1.5, "hi", 0, 0.5, 1.0), SttEvent("final", 2.5, "hi there", 0, 1.0, 1.5)]


def test_an_stt_cassette_is_written_only_when_the_run_starts(tmp_path: Path):
    path = tmp_path / "stt.arrows"
    key = stt_key("abc", 0, "f" * 64, {"chunk_seconds": 1.0}, policy_version=1)
    SttCassette(path, "auto").events(*key, lambda: STT_EVENTS)
    recorded = path.read_bytes()

    recorder = SttCassette(path, "record")  # opening for record mode changes nothing
    hooks: list = []
    assert recorder.events(*key, lambda: STT_EVENTS[:1], hooks) == STT_EVENTS[:1]
    assert path.read_bytes() == recorded and len(hooks) == 1
    for hook in hooks:  # what the runner does once every check has passed
        hook()
    assert SttCassette(path, "replay").events(*key, lambda: pytest.fail("replay decodes")) == STT_EVENTS[:1]

    notes = tmp_path / "notes.arrows"
    notes.write_bytes(b"not arrow")
    with pytest.raises(InputError) as info:
        SttCassette(notes, "record")
    assert info.value.field == "stt.cassette" and notes.read_bytes() == b"not arrow"


# --- output folders ----------------------------------------------------------------------------------


def test_overwrite_replaces_kame_sims_files_and_keeps_the_users(tmp_path: Path):
    out = tmp_path / "run"
    assert invoke("run", DEMO_SCENARIO, "--out", out, "--quiet").exit_code == 0
    (out / "notes.txt").write_text("my notes")
    (out / "analysis").mkdir()
    (out / "analysis" / "plot.py").write_text("print(1)")
    assert invoke("run", DEMO_SCENARIO, "--out", out, "--quiet", "--overwrite").exit_code == 0
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "analysis" / "plot.py").read_text() == "print(1)"
    assert read_trace(out).complete
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(listed) == ["scenario.resolved.json", "trace.arrow", "trace.arrow.tmp", "trace.arrows"]


def test_overwrite_refuses_files_kame_sim_did_not_write(tmp_path: Path):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "trace.arrows").write_bytes(b"someone else's trace")
    line = error_line(invoke("run", DEMO_SCENARIO, "--out", foreign, "--quiet", "--overwrite"))
    assert "trace.arrows" in line and "not written by kame-sim" in line
    assert snapshot(foreign) == {"trace.arrows": b"someone else's trace"}

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "scenario.resolved.json").write_text("{}")  # a name a run writes, but not kame-sim's
    line = error_line(invoke("run", DEMO_SCENARIO, "--out", mixed, "--quiet"))
    assert "scenario.resolved.json" in line
    assert snapshot(mixed) == {"scenario.resolved.json": b"{}"}

    # A manifest is followed only inside its folder.
    hostile = tmp_path / "hostile"
    assert invoke("run", DEMO_SCENARIO, "--out", hostile, "--quiet").exit_code == 0
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    manifest = json.loads((hostile / MANIFEST).read_text())
    manifest["files"].append("../outside.txt")
    (hostile / MANIFEST).write_text(json.dumps(manifest))
    line = error_line(invoke("run", DEMO_SCENARIO, "--out", hostile, "--quiet", "--overwrite"))
    assert MANIFEST in line and "../outside.txt" in line
    assert outside.read_text() == "keep me"

    audio = tmp_path / "take.wav"
    audio.write_bytes(b"RIFF my recording")
    line = error_line(invoke("run", DEMO_SCENARIO, "--out", tmp_path / "r", "--audio-out", audio))
    assert "take.wav: --audio-out: already exists" in line and audio.read_bytes() == b"RIFF my recording"


def test_a_crash_leaves_a_readable_partial_trace_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    scenario = load_scenario(DEMO_SCENARIO)

    def broken_writer(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:  # the crash comes before the trace is open: nothing is left
        m.setattr(trace_writer.TraceWriter, "__init__", broken_writer)
        with pytest.raises(OSError, match="disk full"):
            run_scenario(scenario, tmp_path / "early")
    assert not (tmp_path / "early").exists()

    # Over an earlier run (--overwrite): the old run's files were removed, the folder goes too.
    again = tmp_path / "again"
    run_scenario(scenario, again)
    (again / "notes.txt").write_text("mine")
    with monkeypatch.context() as m:
        m.setattr(trace_writer.TraceWriter, "__init__", broken_writer)
        with pytest.raises(OSError):
            run_scenario(scenario, again, overwrite=True)
    assert snapshot(again) == {"notes.txt": b"mine"}

    steps = {"n": 0}
    step = BehaviouralFrontend.step

    def crashing_step(self, *args, **kwargs):
        steps["n"] += 1
        if steps["n"] > 200:
            raise RuntimeError("front-end crashed")
        return step(self, *args, **kwargs)

    with monkeypatch.context() as m:  # the crash comes mid-run: a readable partial trace
        m.setattr(BehaviouralFrontend, "step", crashing_step)
        with pytest.raises(RuntimeError, match="front-end crashed"):
            run_scenario(scenario, tmp_path / "mid")
    partial = read_trace(tmp_path / "mid")
    assert not partial.complete and not partial.truncated
    assert partial.table.column("event").to_pylist().count("frame") >= 190


def test_report_leaves_no_empty_folder_and_keeps_foreign_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = tmp_path / "run"
    assert invoke("run", DEMO_SCENARIO, "--out", run, "--quiet").exit_code == 0
    from kame_sim.report import html

    def broken_plot(*args, **kwargs):
        raise RuntimeError("matplotlib crashed")

    with monkeypatch.context() as m:
        m.setattr(html, "plot_timeline", broken_plot)
        result = invoke("report", run)
    assert result.exit_code != 0 and not (run / "report").exists(), "a failed report left a folder"
    assert invoke("report", tmp_path / "no-such-run").exit_code == 2
    assert not (tmp_path / "no-such-run").exists()

    report = run / "report"
    assert invoke("report", run).exit_code == 0
    (report / "my-notes.md").write_text("notes")
    (report / "timeline.png").write_bytes(b"stale")  # kame-sim's own file: replaced
    assert invoke("report", run).exit_code == 0
    assert (report / "my-notes.md").read_text() == "notes"
    assert (report / "timeline.png").read_bytes()[:4] == b"\x89PNG"

    foreign = tmp_path / "foreign-report"
    foreign.mkdir()
    (foreign / "index.html").write_text("<p>my page</p>")
    line = error_line(invoke("report", run, "--out", foreign))
    assert "index.html" in line and "not written by kame-sim" in line
    assert snapshot(foreign) == {"index.html": b"<p>my page</p>"}


def sweep_spec(tmp_path: Path, extra: str = "", seeds: int = 2) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(f'base = "{DEMO_SCENARIO}"\nseeds = {seeds}\n{extra}', encoding="utf-8")
    return path


def test_sweep_folders_keep_foreign_files_and_refuse_foreign_results(tmp_path: Path):
    spec, out = sweep_spec(tmp_path), tmp_path / "sweep"
    assert invoke("sweep", spec, "--out", out, "--workers", 1, "--quiet").exit_code == 0
    run_dirs = sorted((out / "runs").iterdir())
    (run_dirs[0] / "notes.txt").write_text("mine")
    (out / "README.md").write_text("what this sweep is for")
    assert invoke("sweep", spec, "--out", out, "--workers", 1, "--quiet", "--no-resume").exit_code == 0
    assert (run_dirs[0] / "notes.txt").read_text() == "mine"
    assert (out / "README.md").read_text() == "what this sweep is for"
    assert all(read_trace(d).complete for d in run_dirs)

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.parquet").write_bytes(b"their table")
    line = error_line(invoke("sweep", spec, "--out", theirs, "--workers", 1, "--quiet"))
    assert "results.parquet" in line and "not written by kame-sim" in line
    assert snapshot(theirs) == {"results.parquet": b"their table"}, "the sweep ran or wrote something"


# --- killing a sweep -----------------------------------------------------------------------------------


def _workers_of(pid: int) -> list[int]:
    """Pids of a process's spawned pool workers (not multiprocessing's resource tracker)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
            found += [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that will never reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _poll(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(what)
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find worker pids")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_killing_a_sweep_ends_its_workers(tmp_path: Path, sig: signal.Signals):
    # time_coupling = "wall" paces each run at 1x real time (38 s for the demo), without using the
    # CPU: long enough that a worker left behind is still running when we look.
    spec = sweep_spec(tmp_path, '[set]\n"run.time_coupling" = "wall"\n')
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kame_sim.cli",
            "sweep",
            str(spec),
            "--out",
            str(out),
            "--workers",
            "2",
            "--quiet",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    workers: list[int] = []
    try:

        def running() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended early: {proc.stderr.read().decode()}")
            workers[:] = _workers_of(proc.pid)
            started = list((out / "runs").glob("*/trace.arrows")) if (out / "runs").exists() else []
            return len(workers) == 2 and len(started) == 2

        _poll(running, 120, "the sweep's two runs did not start")
        proc.send_signal(sig)
        # Their runs have over 30 s to go: a worker that merely finishes its run is still alive here.
        _poll(lambda: not any(_alive(w) for w in workers), 20, f"workers {workers} outlived the sweep")
        proc.wait(timeout=60)
    finally:
        for pid in [proc.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
