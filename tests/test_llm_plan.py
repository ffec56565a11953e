"""LLM streams as timed plans: simulated timing, blank deltas, and faults recorded as events."""

from __future__ import annotations

from pathlib import Path

from conftest import DEMO_SCENARIO
from test_stt_sim import Fixed
from trace_checks import check_invariants, rows

from kame_sim.config import load_scenario
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.plan import LlmChunk, LlmPlan, SimulatedLlm, chunk_reply
from kame_sim.runner import build_session_parts, load_run_conversation, trace_metadata
from kame_sim.sim import Session
from kame_sim.trace import TraceWriter, read_trace


class Constant:
    def __init__(self, text: str) -> None:
        self.text = text

    def reply(self, request: LlmRequest) -> str:
        return self.text


def test_chunking_keeps_the_spaces_an_openai_stream_sends():
    assert chunk_reply("sure what kind", 1) == ["sure", " what", " kind"]
    assert chunk_reply("a b c d e", 2) == ["a b", " c d", " e"]
    assert chunk_reply("", 1) == []


def test_simulated_plan_is_ttft_then_cumulative_gaps():
    llm = SimulatedLlm(Constant("one two three"), Fixed([0.5]), Fixed([0.1, 0.2]), 1)
    plan = llm.plan(LlmRequest(0.0, "", "", 1))
    assert [(round(c.at, 9), c.text) for c in plan.chunks] == [(0.5, "one"), (0.6, " two"), (0.8, " three")]
    assert plan.error is None


class Scripted:
    """A back-end that returns hand-written plans, one per stream in order."""

    def __init__(self, plans: list[LlmPlan]) -> None:
        self.plans = plans

    def plan(self, request: LlmRequest) -> LlmPlan:
        return self.plans[min(request.stream_id, len(self.plans)) - 1]


def run_with(llm, tmp_path: Path, seconds: float = 12.0):
    scenario = load_scenario(DEMO_SCENARIO, {"run.max_seconds": seconds})
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    parts.llm = llm
    path = tmp_path / "trace.arrows"
    with TraceWriter(path, trace_metadata(scenario, conversation, parts.tokenizer)) as trace:
        Session(parts, trace).run()
    return read_trace(path)


def test_blank_deltas_are_skipped_and_the_reset_comes_with_the_first_real_chunk(tmp_path: Path):
    plan = LlmPlan([LlmChunk(0.2, ""), LlmChunk(0.3, "  "), LlmChunk(0.35, "hi"), LlmChunk(0.4, " there")])
    data = run_with(Scripted([plan]), tmp_path)
    check_invariants(data)
    start = rows(data.table, "llm_start")[0]
    first = next(r for r in rows(data.table, "llm_first_chunk") if r["stream_id"] == start["stream_id"])
    assert abs(first["delay_s"] - 0.35) < 1e-9
    enqueued = [(r["detail"], r["text"]) for r in rows(data.table, "oracle_enqueue") if r["stream_id"] == 1]
    assert enqueued == [("reset", None), ("append", "hi"), ("append", "there")]


def test_a_fault_is_an_event_and_the_oracle_keeps_its_last_state(tmp_path: Path):
    good = LlmPlan([LlmChunk(0.3, "pizza"), LlmChunk(0.32, " express")])
    broken = LlmPlan([LlmChunk(0.2, "wrong")], error="HTTP 503", error_at=0.3)  # before the next tick
    silent = LlmPlan([], error="connection refused", error_at=0.05)
    data = run_with(Scripted([good, broken, silent]), tmp_path, seconds=20.0)
    check_invariants(data)
    errors = rows(data.table, "llm_error")
    assert [e["detail"] for e in errors[:2]] == ["HTTP 503", "connection refused"]
    assert errors[0]["word_count"] == 1 and errors[1]["word_count"] == 0
    done_or_error = {
        r["stream_id"] for r in data.table.to_pylist() if r["event"] in ("llm_done", "llm_error")
    }
    cancelled = {r["stream_id"] for r in rows(data.table, "llm_cancel")}
    started = {r["stream_id"] for r in rows(data.table, "llm_start")}
    assert started == done_or_error | cancelled
    # A stream that failed before any chunk never reset the oracle.
    failed_silent = [e["stream_id"] for e in errors if e["word_count"] == 0]
    resets = {r["stream_id"] for r in rows(data.table, "oracle_reset_applied")}
    assert not resets & set(failed_silent)
