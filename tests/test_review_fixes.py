"""Regression tests for problems a review found in the back-ends and the sweep table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from kame_sim.llm.cassette import Cassette
from kame_sim.llm.openai_backend import OpenAiLlm
from kame_sim.llm.plan import LlmChunk, LlmPlan
from kame_sim.sweep.runner import typed_column


def test_two_writers_of_one_cassette_keep_their_plans_apart(tmp_path: Path):
    path = tmp_path / "c.arrows"
    first, second = Cassette(path), Cassette(path)  # both think the file holds 0 plans
    first.append("K", "{}", LlmPlan([LlmChunk(0.1, "A1"), LlmChunk(0.2, "A2")]))
    second.append("K", "{}", LlmPlan([LlmChunk(0.3, "B1")]))
    plans = Cassette(path).plans["K"]
    assert [[c.text for c in p.chunks] for p in plans] == [["A1", "A2"], ["B1"]]


def test_a_cassette_torn_inside_its_schema_is_treated_as_empty(tmp_path: Path):
    path = tmp_path / "c.arrows"
    Cassette(path).append("K", "{}", LlmPlan([LlmChunk(0.1, "x")]))
    path.write_bytes(path.read_bytes()[:100])  # a crash while the schema message was written
    cassette = Cassette(path)
    assert cassette.n_plans == 0
    cassette.append("K", "{}", LlmPlan([LlmChunk(0.2, "y")]))
    assert [c.text for c in Cassette(path).plans["K"][0].chunks] == ["y"]


def test_a_key_cut_short_in_an_error_message_is_still_masked():
    class Holder:
        _secret = "sk-" + "Q" * 40

    text = "http 401: echo " + "sk-" + "Q" * 19 + "..."
    masked = OpenAiLlm._mask(Holder(), text)  # type: ignore[arg-type]
    assert "QQQQQQQQ" not in masked and "***" in masked


def test_a_metric_undefined_in_every_run_is_a_float_column():
    assert typed_column([None, None]).type == pa.float64()
    assert typed_column([True, None]).type == pa.bool_()


def _run_or_die(task):
    """A stand-in for execute_run: the run called 'bad' kills its worker process outright."""
    import os

    from kame_sim.sweep.runner import RunOutcome

    if task.run_id == "bad":
        os._exit(3)
    return RunOutcome(task.run_id, "ok", None, task.conversation_id)


def test_a_run_that_kills_its_worker_fails_alone_and_the_rest_finish():
    from kame_sim.sweep.runner import RunTask, _process_pool

    ids = ["a", "b", "bad", "c", "d", "e"]
    tasks = [RunTask(i, f"/tmp/unused-{i}", {}, {}, 0, "conv") for i in ids]
    outcomes = {o.run_id: o for o in _process_pool(tasks, 2, _run_or_die)}
    assert set(outcomes) == set(ids)  # every run reported exactly once
    assert outcomes["bad"].status == "failed" and "died" in (outcomes["bad"].error or "")
    assert all(outcomes[i].status == "ok" for i in ids if i != "bad")


def test_replay_resends_dropped_puts_so_a_larger_queue_receives_them(tmp_path: Path):
    from conftest import DEMO_SCENARIO

    from kame_sim.config import load_scenario
    from kame_sim.metrics.summary import summarize
    from kame_sim.replay.oracle_replay import load_oracle_schedule
    from kame_sim.runner import run_scenario
    from kame_sim.trace import read_trace

    small = run_scenario(load_scenario(DEMO_SCENARIO, {"policy.queue_size": 2}), tmp_path / "small")
    dropped = summarize(read_trace(small.run_dir)).oracle_dropped
    assert dropped > 0
    items = load_oracle_schedule(small.run_dir)
    replay = load_scenario(DEMO_SCENARIO, {"replay.oracle_from": str(small.run_dir), "policy.queue_size": 64})
    summary = summarize(read_trace(run_scenario(replay, tmp_path / "big").run_dir))
    assert summary.oracle_dropped == 0 and summary.oracle_enqueued == len(items)
