"""kame-sim fork's inputs: bad RUN, --at and --set are one line and exit 2 before anything is written;
the CLI writes the comparison; [switch] scenarios load, refuse what cannot change and round-trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import invoke
from conftest import DEMO_SCENARIO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.fork.edits import parse_changes
from kame_sim.fork.runner import branch_groups, plan_fork, run_branches, write_branches
from kame_sim.runner import run_scenario
from kame_sim.scenario_file import write_scenario
from kame_sim.sim import Session
from kame_sim.trace import read_trace


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("orig") / "run"
    # 9 s: stream 8 (started by the first final, 7.5 s) runs to its end; the pictures stay quick
    run_scenario(load_scenario(DEMO_SCENARIO, {"run.max_seconds": 9.0}), folder)
    return folder


def test_the_cli_prints_the_change_and_writes_the_comparison(run: Path, tmp_path: Path):
    out = tmp_path / "fork"
    result = invoke("fork", run, "--at", 7.4, "--set", "stream.8.ttft=1.0", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "stream.8.ttft=1.0" in result.output and "first differ at t = " in result.output
    names = {p.name for p in out.iterdir()}
    assert {"branch", "branch.toml", "branch.schedule.json", "branch.png", "deltas.csv", "fork.json"} <= names
    summary = json.loads((out / "fork.json").read_text())
    (branch,) = summary["branches"]
    assert branch["first_divergence_s"] >= 7.4
    assert branch["changed_metrics"]["ttft_max_s"]["branch"] == 1.0
    deltas = (out / "deltas.csv").read_text().splitlines()
    assert deltas[0] == '"branch","metric","original","value","delta"'
    # the branch's scenario file is runnable and replays the branch exactly
    again = run_scenario(load_scenario(out / "branch.toml"), tmp_path / "again")
    drop = ["wall_s", "step_wall_s"]
    a = read_trace(again.trace_path).table.drop_columns(drop)
    assert a.equals(read_trace(out / "branch").table.drop_columns(drop))
    # a second fork into the same folder needs --overwrite; with it, it replaces only its files
    assert invoke("fork", run, "--at", 7.4, "--out", out, "--quiet").exit_code == 2
    (out / "mine.txt").write_text("keep")
    write_branches(plan_fork(run, 7.4, [[]], out, overwrite=True))
    assert (out / "mine.txt").read_text() == "keep"
    assert not (out / "deltas.csv").exists(), "the earlier fork's files are kame-sim's: replaced"


def test_several_branches_of_one_prefix_are_planned_and_run_as_one_each(run: Path, tmp_path: Path):
    groups = branch_groups([], ["stream.8.ttft=1.0", "policy.poll_interval=1.0 stream.9.fault=0.1"])
    assert groups == [["stream.8.ttft=1.0"], ["policy.poll_interval=1.0", "stream.9.fault=0.1"]]
    plan = plan_fork(run, 7.4, groups, tmp_path / "fork")
    assert [b.name for b in plan.branches] == ["b1", "b2"]
    write_branches(plan)
    results = run_branches(plan)
    solo = plan_fork(run, 7.4, [groups[1]], tmp_path / "solo")
    write_branches(solo)
    (alone,) = run_branches(solo)
    drop = ["wall_s", "step_wall_s"]
    tables = [read_trace(r.trace_path).table.drop_columns(drop) for r in [*results, alone]]
    assert tables[1].equals(tables[2]), "a branch runs the same whether it has siblings or not"
    assert not tables[0].equals(tables[1])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--at", "-1"], "--at: must be a time in seconds"),
        (["--at", "nan"], "--at: must be a time in seconds"),
        (["--at", "5", "--set", "llm.bogus=1"], "--set llm.bogus: cannot change at the fork"),
        (["--at", "5", "--set", "frobnicate=1"], "--set frobnicate: unknown key"),
        (
            ["--at", "5", "--set", "policy.kind=multiplexer"],
            "--set policy.kind: the policy's kind cannot change",
        ),
        (
            ["--at", "5", "--set", "policy.queue_size=3"],
            "--set policy.queue_size: policy.queue_size cannot change",
        ),
        (["--at", "5", "--set", "policy.poll_interval=0"], "switch.policy.poll_interval"),
        (["--at", "5", "--set", "policy.poll_interval=1e9"], "switch.policy.poll_interval"),
        (["--at", "5", "--set", "run.seed=3"], "--set run.seed: cannot change at the fork"),
        (["--at", "5", "--set", "stream.0.ttft=1"], "--set stream.0.ttft: '0' is not a number >= 1"),
        (["--at", "5", "--set", "stream.99.ttft=-1"], "--set stream.99.ttft: must be >= 0"),
        (["--at", "5", "--set", "stream.99.ttft=fast"], "--set stream.99.ttft: must be a number of seconds"),
        (["--at", "5", "--set", "stream.99.speed=1"], "expected stream.N.ttft"),
        (["--at", "5", "--set", "stream.1.ttft=1"], "--set stream.1: stream 1 started at"),
        (["--at", "5", "--set", "llm.ttft.median=1"], "llm.ttft is a mixture model"),
        (["--at", "5", "--set", "llm.ttft={kind='lognormal', median=-1.0, sigma=0.3}"], "llm.ttft"),
        (["--at", "5", "--set", "stt.final.0=1", "--set", "stt.final.0=2"], "given twice"),
        (["--at", "5", "--branch", "stream.9.ttft='1"], "--branch: cannot split"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(run, tmp_path, args, expected):
    out = tmp_path / "fork"
    result = invoke("fork", run, *args, "--out", out, "--quiet")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0]
    assert not out.exists()


def test_a_fork_never_writes_into_the_run_it_forks(run: Path, tmp_path: Path):
    named = tmp_path / "branch"  # a run folder named like the branch folder of a fork next to it
    shutil.copytree(run, named)
    for folder, out in ((run, run), (named, tmp_path)):
        before = sorted(p.name for p in folder.iterdir())
        result = invoke("fork", folder, "--at", 1, "--out", out, "--overwrite", "--quiet")
        assert result.exit_code == 2 and "would write into the run being forked" in result.output
        assert sorted(p.name for p in folder.iterdir()) == before


def test_run_must_be_a_finished_run_folder(run: Path, tmp_path: Path):
    for bad, expected in (
        (tmp_path / "nowhere", "not a run folder"),
        (run / "trace.arrows", "not a run folder"),
        (tmp_path, "not a run folder: no trace.arrows"),
    ):
        result = invoke("fork", bad, "--at", 1, "--quiet")
        assert result.exit_code == 2 and expected in result.output, result.output
    live = tmp_path / "live"
    live.mkdir()
    (live / "trace.arrows").write_bytes((run / "trace.arrows").read_bytes())
    scenario = json.loads((run / "scenario.resolved.json").read_text())
    scenario["llm"]["kind"] = "openai"
    (live / "scenario.resolved.json").write_text(json.dumps(scenario))
    result = invoke("fork", live, "--at", 1, "--quiet")
    assert result.exit_code == 2 and "llm.kind" in result.output and "simulated LLM" in result.output


PARTS = ["stream", "stt", "partial", "final", "ttft", "fault", "gap", "policy", "llm", "7", "0", "-1", ""]
PARTS += ["x", "poll_interval", "median", "kind", "inter_chunk"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.one_of(
        st.text(max_size=30),
        st.lists(
            st.sampled_from(PARTS),
            min_size=1, max_size=5,
        ).map(".".join),
    ),
    value=st.one_of(st.text(max_size=10), st.floats(allow_nan=True).map(repr), st.integers().map(str)),
    kind=st.sampled_from(["poll", "multiplexer"]),
)  # fmt: skip
def test_any_assignment_is_accepted_or_one_input_error(key: str, value: str, kind: str):
    """The --set grammar of fork never fails with anything but a one-line InputError."""
    try:
        changes = parse_changes([f"{key}={value}"], kind)
    except InputError as exc:
        assert "\n" not in exc.one_line()
        return
    assert not changes.empty, "an accepted assignment is a change"


# -- [switch] in a scenario ---------------------------------------------------------------------


def test_a_switch_section_merges_into_the_policy_and_round_trips(tmp_path: Path):
    sc = load_scenario(
        DEMO_SCENARIO,
        {"policy.restart_word_delta": 3, "switch.at": 4.0, "switch.policy": {"poll_interval": 1.0}},
    )
    assert sc.switch.given() and sc.switch.at == 4.0
    assert sc.switch.policy.poll_interval == 1.0
    assert sc.switch.policy.restart_word_delta == 3, "what the switch does not name stays [policy]'s"
    path = write_scenario(sc, tmp_path / "s.toml")
    assert load_scenario(path).resolved_json() == sc.resolved_json()
    assert "switch" not in json.loads(load_scenario(DEMO_SCENARIO).resolved_json())


@pytest.mark.parametrize(
    ("policy", "switch", "field"),
    [
        ({}, {"queue_size": 8}, "switch.policy.queue_size"),
        ({}, {"kind": "multiplexer"}, "switch.policy.kind"),
        ({"policy.kind": "multiplexer"}, {"warmup": False}, "switch.policy.warmup"),
        ({}, {"poll_interval": 1e-6}, "switch.policy.poll_interval"),
        ({}, None, "switch.policy"),
    ],
)
def test_a_switch_of_what_cannot_change_mid_run_is_refused(policy, switch, field):
    with pytest.raises(InputError) as err:
        sets = {"switch.at": 4.0} if switch is None else {"switch.at": 4.0, "switch.policy": switch}
        load_scenario(DEMO_SCENARIO, {**policy, **sets})
    assert err.value.field == field


def _poll_times(at: float, interval: float, new: float, n: int = 8) -> list[int]:
    sc = load_scenario(
        DEMO_SCENARIO,
        {"policy.poll_interval": interval, "switch.at": at, "switch.policy": {"poll_interval": new}},
    )
    session = Session.__new__(Session)  # only the poll schedule: no parts needed
    session.scenario, session.policy_settings = sc, sc.policy
    session.switch_at = round(at * 1_000_000)
    times = session._poll_times()
    return [next(times) for _ in range(n)]


def test_the_poll_schedule_changes_at_the_switch_and_only_there():
    # same interval: the original grid exactly
    assert _poll_times(1.2, 0.5, 0.5) == [k * 500_000 for k in range(1, 9)]
    # longer: the sleep in progress is extended (last poll 1.0 s -> 1.0 + 2.0 = 3.0 s)
    assert _poll_times(1.2, 0.5, 2.0)[:4] == [500_000, 1_000_000, 3_000_000, 5_000_000]
    # shorter, its end already past: the poll comes at the switch itself, then every 0.1 s
    assert _poll_times(1.2, 0.5, 0.1)[:4] == [500_000, 1_000_000, 1_200_000, 1_300_000]
    # at 0: the new interval from the start
    assert _poll_times(0.0, 0.5, 2.0)[:2] == [2_000_000, 4_000_000]
