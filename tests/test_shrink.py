"""kame-sim shrink on the demo: a constructed failure whose whole cause is one slow stream at a
turn end shrinks to exactly that stream, at the smallest failing TTFT; a shrunk schedule never
passes; the ``unscheduled`` table; the reproducer files; check naming the shrink command; bad input."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from conftest import DEMO_SCENARIO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.runner import load_run_conversation, run_scenario
from kame_sim.schedule import (
    DelaySchedule,
    load_schedule,
    parse_schedule,
    scenario_schedule,
    schedule_from_trace,
)
from kame_sim.shrink.condition import Condition
from kame_sim.shrink.nominal import nominal_delays
from kame_sim.shrink.replay import Replayer, schedule_of
from kame_sim.shrink.run import event_marks, shrink_run
from kame_sim.shrink.search import ShrinkError, shrink_entries
from kame_sim.sweep.check import run_check
from kame_sim.sweep.runner import metrics_row
from kame_sim.trace import WALL_COLUMNS, read_trace

runner = CliRunner()
SLOW = 8  # the demo's stream 8 starts at the end of the user's first turn (nominal timeline)
CAUSE = "f1_response_mean < 0.55"  # nominal: 0.609; stream 8 at 6 s: 0.509


@pytest.fixture(scope="module")
def demo():
    scenario = load_scenario(DEMO_SCENARIO)
    conversation = load_run_conversation(scenario)
    nominal = nominal_delays(scenario)
    scratch = Path(tempfile.mkdtemp(prefix="kame-sim-test-shrink-"))
    replayer = Replayer(scenario, conversation, scratch)
    replayer.metrics(schedule_of([], nominal, {}))
    nominal_entries = schedule_from_trace(read_trace(scratch / "replay.arrows")).entries()
    return scenario, conversation, nominal, replayer, nominal_entries


def constructed(nominal_entries: list[dict]) -> list[dict]:
    """The nominal run's delays, stream 8's TTFT at 6 s, and noise that does not matter: every
    chunk gap 1 ms and every STT partial 10 ms longer than nominal."""
    out = []
    for e in nominal_entries:
        if e["kind"] == "ttft" and e["stream"] == SLOW:
            e = {**e, "seconds": 6.0}
        elif e["kind"] == "chunk_gap":
            e = {**e, "seconds": round(e["seconds"] + 0.001, 6)}
        elif e["kind"] == "stt_partial":
            e = {**e, "seconds": e["seconds"] + 0.01}
        out.append(e)
    return out


@pytest.fixture(scope="module")
def failing_run(demo, tmp_path_factory):
    """The constructed case as a run folder, made by ``kame-sim run`` from a schedule file."""
    scenario, *_, nominal_entries = demo
    folder = tmp_path_factory.mktemp("failing")
    schedule = folder / "slow.json"
    schedule.write_text(json.dumps({"entries": constructed(nominal_entries)}), encoding="utf-8")
    slow = scenario.model_copy(update={"delays": scenario.delays.model_copy(update={"schedule": schedule})})
    return run_scenario(slow, folder / "run").run_dir


def test_the_constructed_case_fails_and_its_noise_matters_not(demo):
    *_, nominal, replayer, nominal_entries = demo
    assert all(e["seconds"] == nominal[e["kind"]] for e in nominal_entries)  # nominal is nominal
    row = replayer.metrics(schedule_of(constructed(nominal_entries), nominal, {}))
    only = replayer.metrics(schedule_of([{"kind": "ttft", "stream": SLOW, "seconds": 6.0}], nominal, {}))
    assert row["f1_response_mean"] == only["f1_response_mean"] < 0.55
    assert replayer.metrics(schedule_of([], nominal, {}))["f1_response_mean"] > 0.55


@pytest.fixture(scope="module")
def shrunk(failing_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("shrunk") / "out"
    return shrink_run(failing_run, CAUSE, out, max_runs=200, tolerance=0.01, timeline=False)


def test_shrink_finds_the_one_slow_stream_at_its_smallest_failing_delay(demo, shrunk):
    *_, nominal, replayer, nominal_entries = demo
    result = shrunk.result
    n_noise = sum(e["kind"] in ("chunk_gap", "stt_partial") for e in nominal_entries)
    assert result.n_away >= n_noise + 1  # the noise moves some arrivals: a few more events differ
    assert [(e.entry["kind"], e.entry.get("stream")) for e in result.entries] == [("ttft", SLOW)]
    seconds = result.entries[0].entry["seconds"]
    assert nominal["ttft"] < seconds < 6.0 and result.runs < 60 and not result.budget_hit

    # within tolerance of the smallest failing TTFT: 10 ms less passes, the value itself fails
    def f1(ttft: float) -> float:
        entry = {"kind": "ttft", "stream": SLOW, "seconds": ttft}
        return replayer.metrics(schedule_of([entry], nominal, {}))["f1_response_mean"]

    assert f1(seconds) < 0.55 <= f1(round(seconds - 0.01, 6))


def test_the_reproducer_files_run_and_fail(demo, shrunk, tmp_path):
    *_, nominal, _, _ = demo
    out, result = shrunk.out_dir, shrunk.result
    data = json.loads((out / "schedule.json").read_text())
    assert data["unscheduled"] == nominal and len(data["entries"]) == 1
    assert "nominal 0.733232 s, run had 6 s" in data["entries"][0]["note"]
    assert shrunk.reproduced < 0.55 and shrunk.reproduced == result.metric
    summary = shrunk.summary()
    assert summary.startswith(f"{result.n_away} events away from nominal → 1 (runs spent {result.runs})")
    assert shrunk.command() == f"kame-sim run {out / 'scenario.toml'}"
    # the reproducer command gives the same trace as the run shrink checked
    again = runner.invoke(
        app, ["run", str(out / "scenario.toml"), "--out", str(tmp_path / "again"), "--quiet"]
    )
    assert again.exit_code == 0, again.output
    a = read_trace(tmp_path / "again").table.drop_columns(list(WALL_COLUMNS))
    b = read_trace(out / "run").table.drop_columns(list(WALL_COLUMNS))
    assert a.equals(b)
    # the timeline marks the kept event where it happened: stream 8's first chunk
    t = read_trace(out / "run").table.to_pylist()
    first = next(r["t_sim"] for r in t if r["event"] == "llm_first_chunk" and r["stream_id"] == SLOW)
    assert event_marks(read_trace(out / "run"), result.schedule_entries) == [(first, f"ttft #{SLOW}")]
    start = next(r["t_sim"] for r in t if r["event"] == "llm_start" and r["stream_id"] == SLOW)
    assert abs(first - start - result.entries[0].entry["seconds"]) < 1e-6


def test_a_cut_search_still_fails_and_reruns_keep_foreign_files(failing_run, tmp_path):
    """A search cut short by its budget returns a failing schedule and says so; shrinking again
    into the same folder replaces only what shrink wrote there."""
    out = tmp_path / "out"
    shrink_run(failing_run, CAUSE, out, max_runs=2, timeline=False)
    (out / "mine.txt").write_text("keep me")
    cut = shrink_run(failing_run, CAUSE, out, max_runs=3, timeline=False)
    assert (out / "mine.txt").read_text() == "keep me"
    assert cut.result.budget_hit and cut.result.runs == 3 and cut.reproduced < 0.55
    assert "run budget spent" in cut.summary()
    assert len(json.loads((out / "schedule.json").read_text())["entries"]) == len(cut.result.entries) > 1


def test_the_timeline_is_drawn(failing_run, tmp_path):
    outcome = shrink_run(failing_run, CAUSE, tmp_path / "out", max_runs=1)
    assert outcome.timeline_path == tmp_path / "out" / "timeline.png"
    assert outcome.timeline_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_away_is_returned_only_when_nominal_fails(demo, failing_run, tmp_path):
    *_, nominal, replayer, _ = demo
    nominal_f1 = replayer.metrics(schedule_of([], nominal, {}))["f1_response_mean"]
    outcome = shrink_run(
        failing_run, f"f1_response_mean < {nominal_f1 + 0.01}", tmp_path / "o", max_runs=50, timeline=False
    )
    assert outcome.result.entries == [] and outcome.result.runs == 2  # the full set, then nominal
    assert "the nominal delays alone fail it" in outcome.summary()


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    metric=st.sampled_from(["f1_response_mean", "oracle_coverage", "reply_f1_mean", "ttft_max_s"]),
    strict=st.booleans(),
    margin=st.floats(0.0, 0.3),
)
def test_a_shrunk_schedule_never_passes(demo, metric: str, strict: bool, margin: float):
    """Random conditions the constructed run fails, small budgets: the answer, replayed afresh (no
    cache), fails; an empty answer means the nominal run fails."""
    scenario, conversation, nominal, replayer, nominal_entries = demo
    entries = constructed(nominal_entries)
    value = replayer.metrics(schedule_of(entries, nominal, {}))[metric]
    # a condition on the side the slow stream pushes the metric to, with the run inside it
    if metric == "ttft_max_s":
        condition = Condition(metric, ">" if strict else ">=", value - margin * 10 - (1e-6 if strict else 0))
    else:
        condition = Condition(metric, "<" if strict else "<=", value + margin + (1e-9 if strict else 0))
    assert condition.holds(value)
    try:
        result = shrink_entries(
            entries,
            nominal,
            condition,
            lambda es: replayer.metrics(schedule_of(es, nominal, {})),
            max_runs=20,
        )
    except ShrinkError:
        return  # the full set did not fail: nothing was returned
    fresh = Replayer(scenario, conversation, Path(tempfile.mkdtemp(prefix="kame-sim-test-shrink-")))
    again = fresh.metrics(schedule_of(result.schedule_entries, nominal, {}))
    assert condition.holds(again[metric])
    if not result.entries:
        assert condition.holds(fresh.metrics(schedule_of([], nominal, {}))[metric])


# -- the unscheduled table -----------------------------------------------------------------------------


def delays(path: Path) -> list[tuple]:
    t = read_trace(path).table
    return [
        (e, d)
        for e, d in zip(t.column("event").to_pylist(), t.column("delay_s").to_pylist(), strict=True)
        if d is not None
    ]


def test_unscheduled_delays_are_nominal_whatever_the_seed(demo, tmp_path):
    scenario, *_ = demo
    nominal = nominal_delays(scenario)
    path = tmp_path / "nominal.json"
    path.write_text(
        json.dumps({"unscheduled": nominal, "entries": [{"kind": "ttft", "stream": SLOW, "seconds": 1.5}]})
    )
    runs = []
    for seed in (0, 7):
        sc = load_scenario(DEMO_SCENARIO, {"delays.schedule": str(path), "run.seed": seed})
        runs.append(run_scenario(sc, tmp_path / f"seed{seed}").run_dir)
    a, b = delays(runs[0]), delays(runs[1])
    assert a == b  # no delay depends on the seed any more
    kinds = {"stt_partial": "stt_partial", "stt_final": "stt_final", "llm_first_chunk": "ttft"}
    firsts = [d for e, d in a if e == "llm_first_chunk"]
    assert sorted(set(firsts)) == [nominal["ttft"], 1.5]
    for event, delay in a:
        if event in kinds and event != "llm_first_chunk":
            assert delay == nominal[kinds[event]]


def test_without_unscheduled_a_schedule_is_what_it_was(tmp_path):
    own = tmp_path / "own.json"
    first = run_scenario(load_scenario(DEMO_SCENARIO), tmp_path / "first").run_dir
    schedule = schedule_from_trace(read_trace(first))
    own.write_text(schedule.to_json())
    assert '"unscheduled"' not in own.read_text()  # a run's own schedule file reads as before
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"unscheduled": {}, "entries": schedule.entries()}))
    for name, path in (("own", own), ("empty", empty)):
        sc = load_scenario(DEMO_SCENARIO, {"delays.schedule": str(path)})
        replay = run_scenario(sc, tmp_path / name).run_dir
        a = read_trace(first).table.drop_columns(list(WALL_COLUMNS))
        assert read_trace(replay).table.drop_columns(list(WALL_COLUMNS)).equals(a)
    assert load_schedule(own).unscheduled == {} and DelaySchedule().unscheduled == {}


@pytest.mark.parametrize(
    ("unscheduled", "field", "words"),
    [
        ({"fault": 1.0}, "unscheduled.fault", "unknown kind"),
        ({"ttft": -1}, "unscheduled.ttft", ">= 0"),
        ({"ttft": "0.7"}, "unscheduled.ttft", "number of seconds"),
        ({"ttft": True}, "unscheduled.ttft", "number of seconds"),
        ([0.7], "unscheduled", "object of kind"),
    ],
)
def test_bad_unscheduled_tables_are_one_line_errors(unscheduled, field: str, words: str):
    with pytest.raises(Exception) as info:
        parse_schedule(json.dumps({"unscheduled": unscheduled, "entries": []}), Path("s.json"))
    line = info.value.one_line()
    assert line.startswith(f"s.json: {field}: ") and words in line


# -- check ---------------------------------------------------------------------------------------------


def write_gate(tmp_path: Path) -> Path:
    check = tmp_path / "gate.toml"
    check.write_text(
        f'name = "gate"\nbase = "{DEMO_SCENARIO}"\nseeds = 2\n'
        '[[assert]]\nmetric = "ttft_max_s"\nstat = "max"\nop = "<="\nvalue = 1.0\n',
        encoding="utf-8",
    )
    return check


def test_a_failed_check_names_the_worst_run_and_the_shrink_command(tmp_path):
    check = write_gate(tmp_path)
    junit, md = tmp_path / "junit.xml", tmp_path / "summary.md"
    result = run_check(check, tmp_path / "out", workers=1, junit=junit, markdown=md)
    assert not result.passed
    worst = result.assertions[0].worst
    values = [r["ttft_max_s"] for r in result.sweep.table.to_pylist()]
    assert worst is not None and worst.value == max(values) > 1.0  # the worse seed
    assert worst.condition == Condition("ttft_max_s", ">", 1.0)
    assert worst.folder.is_dir() and (worst.folder / "trace.arrows").is_file()
    assert read_trace(worst.folder).metadata["kame_sim.seed"] == str(worst.seed)
    command = f'kame-sim shrink {worst.folder} --fails "ttft_max_s > 1"'
    assert worst.shrink_command() == command
    assert command in md.read_text() and f"seed {worst.seed}" in md.read_text()
    failure = next(c for c in junit.read_text().split("<testcase") if "<failure" in c)
    assert f"seed: {worst.seed}" in failure and "shrink: kame-sim shrink" in failure
    assert worst.reproducer is None and "Reproduce it" not in md.read_text()  # no --shrink: no shrinking


def test_check_shrink_names_the_reproducer(tmp_path):
    """--shrink N: check shrinks the worst run itself and names the reproducer, which fails."""
    check = write_gate(tmp_path)
    worst_folder = "demo-seed0-"
    md2, junit2 = tmp_path / "summary2.md", tmp_path / "junit2.xml"
    args = ["check", str(check), "--out", str(tmp_path / "out2"), "--workers", "1", "--quiet"]
    out = runner.invoke(app, [*args, "--markdown", str(md2), "--junit", str(junit2), "--shrink", "80"])
    assert out.exit_code == 1, out.output
    (folder,) = (tmp_path / "out2" / "shrunk").iterdir()
    assert folder.name.startswith(worst_folder)  # seed 0 is the worse run
    reproducer = f"kame-sim run {folder / 'scenario.toml'}"
    assert reproducer in md2.read_text() and f"reproducer: {reproducer}" in junit2.read_text()
    assert re.search(r"Shrunk: \d+ events away from nominal → \d+ ", md2.read_text())
    shrunk = json.loads((folder / "schedule.json").read_text())["entries"]
    assert 1 <= len(shrunk) <= 3 and any(e["kind"] == "ttft" and 1.0 < e["seconds"] < 1.02 for e in shrunk)
    again = read_trace(folder / "run")
    assert metrics_row(again, load_run_conversation(load_scenario(DEMO_SCENARIO)))["ttft_max_s"] > 1.0


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--fails", "f1_response_mean > 0.9"], "RUN passes the condition (f1_response_mean = 0.509"),
        (["--fails", "f1_response < 0.5"], "did you mean f1_response_mean"),
        (["--fails", "f1_response_mean < 0.5", "--max-runs", "0"], "--max-runs: must be between 1"),
        (["--fails", "f1_response_mean < 0.5", "--tolerance", "nan"], "--tolerance: must be > 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(failing_run, tmp_path, args, words):
    out = tmp_path / "nothing"
    result = runner.invoke(app, ["shrink", str(failing_run), *args, "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_foreign_file_in_the_output_folder_is_refused(failing_run, tmp_path):
    (tmp_path / "schedule.json").write_text("mine")
    result = runner.invoke(app, ["shrink", str(failing_run), "--fails", CAUSE, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not written by kame-sim" in result.output
    assert (tmp_path / "schedule.json").read_text() == "mine"
    (tmp_path / "a-file").write_text("x")
    as_file = runner.invoke(
        app, ["shrink", str(failing_run), "--fails", CAUSE, "--out", str(tmp_path / "a-file")]
    )
    assert as_file.exit_code == 2 and "--out: is a file" in as_file.output
    missing = runner.invoke(app, ["shrink", str(tmp_path / "none"), "--fails", CAUSE])
    assert missing.exit_code == 2 and "no trace here" in missing.output


def test_metrics_of_the_failing_run(failing_run):
    """The run folder the other tests shrink fails the cause for the stated reason."""
    trace = read_trace(failing_run)
    row = metrics_row(trace, load_run_conversation(load_scenario(DEMO_SCENARIO)))
    assert row["f1_response_mean"] < 0.55 and row["ttft_max_s"] == 6.0


def test_a_run_without_scheduled_delays_has_nothing_to_shrink(failing_run, tmp_path):
    sc = load_scenario(DEMO_SCENARIO, {"replay.oracle_from": str(failing_run)})
    replayed = run_scenario(sc, tmp_path / "replayed").run_dir
    result = runner.invoke(app, ["shrink", str(replayed), "--fails", CAUSE, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nothing to shrink" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_an_unscheduled_table_needs_what_entries_need(tmp_path):
    """Fixed LLM delays with a time-scaled back-end would be scaled again: refused like entries."""
    path = tmp_path / "nominal.json"
    path.write_text(json.dumps({"unscheduled": {"ttft": 0.7}, "entries": []}))
    scenario = load_scenario(DEMO_SCENARIO, {"delays.schedule": str(path), "llm.time_scale": 2.0})
    with pytest.raises(InputError) as info:
        scenario_schedule(scenario)
    assert info.value.field == "delays.schedule" and "time_scale" in info.value.one_line()
    fine = load_scenario(DEMO_SCENARIO, {"delays.schedule": str(path)})
    assert scenario_schedule(fine).unscheduled == {"ttft": 0.7}


def test_unreached_events_keep_their_draws(tmp_path):
    """The demo's own run has reply_f1_mean 0.3205. Its trace alone lacks the TTFT of the streams
    cancelled before their first token; replayed with nominal ones there it gets 0.3233, so a
    shrink built on the realised delays alone could not start on a condition between the two. The
    full set is the run's draws (recomputed), which replays the run exactly: shrinking works."""
    run = run_scenario(load_scenario(DEMO_SCENARIO), tmp_path / "demo").run_dir
    out = tmp_path / "o"
    result = runner.invoke(
        app, ["shrink", str(run), "--fails", "reply_f1_mean < 0.322", "--out", str(out), "--quiet",
              "--no-timeline"]
    )
    assert result.exit_code == 0, result.output
    reproduced = read_trace(out / "run")
    value = metrics_row(reproduced, load_run_conversation(load_scenario(DEMO_SCENARIO)))["reply_f1_mean"]
    assert value < 0.322


def test_nominal_from_another_scenario(tmp_path):
    """A run whose models are the bad part (a 1.6 s TTFT median) is nominal everywhere against its
    own medians; --nominal-from the realistic demo measures it against the demo's 0.73 s."""
    slow = {"llm.ttft": {"kind": "lognormal", "median": 1.6, "sigma": 0.2}}
    run = run_scenario(load_scenario(DEMO_SCENARIO, slow), tmp_path / "slow").run_dir
    row = metrics_row(read_trace(run), load_run_conversation(load_scenario(DEMO_SCENARIO)))
    fails = f"reply_f1_mean < {row['reply_f1_mean'] + 1e-9}"
    own = shrink_run(run, fails, tmp_path / "own", max_runs=60, timeline=False)
    assert own.result.nominal["ttft"] == pytest.approx(1.6, abs=1e-6)
    other = shrink_run(run, fails, tmp_path / "other", max_runs=60, timeline=False,
                       nominal_from=DEMO_SCENARIO)
    assert other.result.nominal["ttft"] == pytest.approx(0.733232, abs=1e-6)
    assert "medians" in other.summary() and str(DEMO_SCENARIO) in other.summary()
    written = json.loads((tmp_path / "other" / "schedule.json").read_text())
    assert written["unscheduled"]["ttft"] == pytest.approx(0.733232, abs=1e-6)
    assert any(e.entry["kind"] == "ttft" for e in other.result.entries)  # a slow stream is needed


def test_nominal_from_a_broken_scenario_is_one_line(tmp_path):
    run = run_scenario(load_scenario(DEMO_SCENARIO), tmp_path / "demo").run_dir
    bad = tmp_path / "bad.toml"
    bad.write_text("[llm\n")
    result = runner.invoke(app, ["shrink", str(run), "--fails", "reply_f1_mean < 0.5", "--nominal-from",
                                 str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and str(bad) in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
