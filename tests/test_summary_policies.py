"""The run summary, the streams tables, the timeline and the Perfetto export under both KAME
back-end policies: cancel reasons, adoptions, overlapping streams, waits, flushes, and stream
faults reported as errors (not as streams left open). Hand-built traces with hand-derived answers,
scripted simulated sessions under both policies, and a schema-1 trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import DEMO_SCENARIO
from policy_checks import check_policy_invariants
from rich.console import Console
from test_report import assert_png, nesting_violations, thread_names

from kame_sim.config import load_scenario
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.plan import LlmChunk, LlmPlan
from kame_sim.metrics import compute_metrics
from kame_sim.metrics.streams import max_live, overlapping, stream_lives
from kame_sim.metrics.summary import stream_rows, summarize, summary_facts
from kame_sim.report import export_perfetto, extract_timeline, plot_timeline, report_for_trace
from kame_sim.report.timeline import end_tag, pack_streams
from kame_sim.report_text import render_summary
from kame_sim.runner import build_session_parts, load_run_conversation, run_scenario, trace_metadata
from kame_sim.sim import Session
from kame_sim.stt.events import SttEvent
from kame_sim.trace import TraceWriter, read_trace
from kame_sim.trace.schema import trace_schema

ERROR_429 = "http 429: Too Many Requests"

# --------------------------------------------------------------------------------------------------
# a hand-built multiplexer session
# --------------------------------------------------------------------------------------------------

#  stream  start  first token        end    how it ended
#  1       0.10   0.60 adopted (.5)  1.00   cancelled (adoption by 3)
#  2       0.30   —                  0.50   cancelled (limit)
#  3       0.40   1.00 adopted (.6)  1.50   done; flushes 1's 2 items at 1.00; a put wait 1.10-1.30
#  4       0.45   1.20 ignored (.75) 1.40   done, ignored
#  5       0.90   —                  1.60   error (http 429)
#  6       1.70   7.50 ignored (5.8) 8.00   cancelled (session end): the 5.8 s stall
#  7       2.00   2.30 adopted (.3)  3.00   done; flushes 3's 2 items (no frame drained the queue)
# live at 0.45: 1, 2, 3, 4; at 0.90: 1, 3, 4, 5 -> at most 4 at once.
MUX_EVENTS: list[tuple[float, str, dict[str, Any]]] = [
    (0.00, "llm_warmup", {"detail": "simulated back-end: nothing sent"}),
    (0.10, "llm_start", {"stream_id": 1, "detail": "partial", "text": "hi", "request": "user: hi "}),
    (0.25, "llm_start_deferred", {"detail": "partial", "t_ref": 0.60}),
    (0.30, "llm_start", {"stream_id": 2, "detail": "trailing"}),
    (0.40, "llm_start", {"stream_id": 3, "detail": "trailing"}),
    (0.45, "llm_start", {"stream_id": 4, "detail": "final"}),
    (0.50, "llm_cancel", {"stream_id": 2, "detail": "limit"}),
    (0.60, "llm_first_chunk", {"stream_id": 1, "delay_s": 0.5}),
    (0.60, "llm_adopt", {"stream_id": 1, "delay_s": 0.5}),
    (0.60, "llm_chunk", {"stream_id": 1, "text": "Hello"}),
    (0.60, "oracle_enqueue", {"stream_id": 1, "text": "Hello", "queue_len": 1, "detail": "append"}),
    (0.62, "llm_chunk", {"stream_id": 1, "text": "there"}),
    (0.62, "oracle_enqueue", {"stream_id": 1, "text": " there", "queue_len": 2, "detail": "append"}),
    (0.90, "llm_start", {"stream_id": 5, "detail": "partial"}),
    (0.95, "llm_start_deferred", {"detail": "partial", "t_ref": 1.40}),
    (1.00, "llm_first_chunk", {"stream_id": 3, "delay_s": 0.6}),
    (1.00, "oracle_flush", {"stream_id": 3, "queue_len": 2}),
    (1.00, "llm_cancel", {"stream_id": 1, "detail": "adoption"}),
    (1.00, "llm_adopt", {"stream_id": 3, "delay_s": 0.6}),
    (1.00, "llm_chunk", {"stream_id": 3, "text": "Sure"}),
    (1.00, "oracle_enqueue", {"stream_id": 3, "text": "Sure", "queue_len": 1, "detail": "append"}),
    (1.10, "llm_chunk", {"stream_id": 3, "text": "thing"}),
    (1.20, "llm_first_chunk", {"stream_id": 4, "delay_s": 0.75, "detail": "ignored"}),
    (1.20, "llm_chunk", {"stream_id": 4, "text": "nope", "detail": "ignored"}),
    (1.30, "oracle_put_wait", {"stream_id": 3, "delay_s": 0.2, "t_ref": 1.10}),
    (1.30, "oracle_enqueue", {"stream_id": 3, "text": " thing", "queue_len": 1, "detail": "append"}),
    (1.40, "llm_done", {"stream_id": 4, "word_count": 1}),
    (1.50, "llm_done", {"stream_id": 3, "word_count": 2}),
    (1.55, "llm_start_skipped", {"detail": "no user input"}),
    (1.60, "llm_error", {"stream_id": 5, "word_count": 0, "detail": ERROR_429}),
    (1.70, "llm_start", {"stream_id": 6, "detail": "partial"}),
    (2.00, "llm_start", {"stream_id": 7, "detail": "final"}),
    (2.30, "llm_first_chunk", {"stream_id": 7, "delay_s": 0.3}),
    (2.30, "oracle_flush", {"stream_id": 7, "queue_len": 2}),
    (2.30, "llm_adopt", {"stream_id": 7, "delay_s": 0.3}),
    (2.30, "llm_chunk", {"stream_id": 7, "text": "Bye"}),
    (2.30, "oracle_enqueue", {"stream_id": 7, "text": "Bye", "queue_len": 1, "detail": "append"}),
    (3.00, "llm_done", {"stream_id": 7, "word_count": 1}),
    (7.50, "llm_first_chunk", {"stream_id": 6, "delay_s": 5.8, "detail": "ignored"}),
    (7.50, "llm_chunk", {"stream_id": 6, "text": "late", "detail": "ignored"}),
    (8.00, "llm_cancel", {"stream_id": 6, "detail": "session_end"}),
]


def write_rows(path: Path, events: list[tuple[float, str, dict[str, Any]]], meta: dict[str, str]) -> Path:
    with TraceWriter(path, {"kame_sim.conversation_id": "hand", "kame_sim.seed": "3", **meta}) as w:
        w.row("run_start", 0.0, detail="test")
        for t, event, columns in events:
            w.row(event, t, **columns)
        w.row("run_end", events[-1][0], detail="ok")
    return path


@pytest.fixture
def mux_trace(tmp_path: Path):
    return read_trace(write_rows(tmp_path / "mux.arrows", MUX_EVENTS, {"kame_sim.policy": "multiplexer"}))


def test_stream_lives_of_a_multiplexer_session(mux_trace):
    lives = {s.stream_id: s for s in stream_lives(mux_trace)}
    assert {k: (s.status, s.detail) for k, s in lives.items()} == {
        1: ("cancelled", "adoption"),
        2: ("cancelled", "limit"),
        3: ("done", None),
        4: ("done", None),
        5: ("error", ERROR_429),
        6: ("cancelled", "session_end"),
        7: ("done", None),
    }
    assert {k: s.outcome for k, s in lives.items()} == {
        1: "adoption",
        2: "limit",
        3: "done",
        4: "ignored",
        5: "error",
        6: "session_end",
        7: "done",
    }
    assert lives[5].end == pytest.approx(1.60) and lives[5].error_kind == "http 429"  # not open until 8 s
    assert lives[5].ending == "error (http 429)" and lives[6].ending == "cancelled (session end), ignored"
    assert [k for k, s in lives.items() if s.adopted is not None] == [1, 3, 7]
    assert [k for k, s in lives.items() if s.ignored] == [4, 6]
    assert lives[3].put_waits == [pytest.approx((1.10, 1.30))]
    assert lives[1].request == "user: hi "
    assert max_live(list(lives.values())) == 4
    overlaps = overlapping(list(lives.values()))
    assert overlaps[1] == [2, 3, 4, 5] and overlaps[2] == [1, 3, 4] and overlaps[7] == [6]
    assert overlaps[5] == [1, 3, 4]  # 5 starts at 0.90: 1 (to 1.00), 3 (to 1.50), 4 (to 1.40)


def test_summary_of_a_multiplexer_session(mux_trace):
    s = summarize(mux_trace)
    assert s.policy == "multiplexer" and s.policy_recorded
    assert (s.llm_started, s.llm_completed, s.llm_cancelled, s.llm_errored, s.llm_open) == (7, 3, 3, 1, 0)
    assert s.cancel_reasons == {"adoption": 1, "limit": 1, "session_end": 1}
    assert s.error_kinds == {"http 429": 1}
    assert (s.llm_adopted, s.llm_ignored, s.max_live_streams) == (3, 2, 4)
    assert (s.llm_start_deferred, s.llm_start_skipped) == (2, 1)
    # TTFT: every stream with a first token (0.5, 0.6, 0.75, 5.8, 0.3), the adopted ones (0.5, 0.6, 0.3)
    assert (s.ttft_n, s.ttft_median, s.ttft_max, s.ttft_max_stream) == (5, 0.6, 5.8, 6)
    assert (s.ttft_adopted_n, s.ttft_adopted_median, s.ttft_adopted_max) == (3, 0.5, 0.6)
    # no first token: 2 (0.30-0.50) and 5 (0.90-1.60, the longest wait)
    assert (s.no_token_n, s.no_token_longest, s.no_token_longest_stream) == (2, 0.7, 5)
    assert (s.oracle_put_waits, s.oracle_put_wait_s, s.oracle_put_wait_max_s) == (1, pytest.approx(0.2), 0.2)
    assert (s.oracle_flushes, s.oracle_flushed_items) == (2, 4)
    assert s.warmup == "simulated back-end: nothing sent"

    facts = dict(summary_facts(s))
    assert facts["back-end policy"].startswith("stream multiplexer")
    assert facts["  cancelled by"] == "adoption 1 · limit 1 · session end 1"
    assert facts["  errors"] == "1 (http 429 1)"
    assert facts["  ended: done / cancelled / error / open"] == "3 / 3 / 1 / 0"
    assert facts["  TTFT median, streams with a 1st token (n=5)"] == "0.600 s"
    assert facts["  TTFT median, adopted streams (n=3)"] == "0.500 s"
    assert facts["  TTFT max (stream #6)"] == "5.800 s"
    assert facts["  no 1st token (n=2), longest wait"] == "0.700 s (#5)"
    assert facts["  puts that waited (total wait)"] == "1 (0.200 s, longest 0.200 s)"
    assert facts["  flushes at adoption (items discarded)"] == "2 (4)"
    assert "  refused by rate limit" not in facts and "oracle items enqueued / dropped" not in facts


def test_streams_table_shows_adoption_overlap_and_how_each_ended(mux_trace, tmp_path: Path):
    rows = {r["stream"]: r for r in stream_rows(summarize(mux_trace))}
    assert rows[5]["ended"] == "error (http 429)" and rows[5]["error"] == ERROR_429
    assert rows[2]["ended"] == "cancelled (limit)" and rows[1]["ended"] == "cancelled (adoption)"
    assert rows[4]["adopted (s)"] == "ignored" and rows[3]["adopted (s)"] == 1.0
    assert rows[3]["put waits (s)"] == 0.2 and rows[7]["put waits (s)"] is None
    assert rows[1]["live with"] == "#2 #3 #4 #5" and rows[7]["live with"] == "#6"
    assert "user words" not in rows[1]  # the multiplexer counts no words
    # the console table and the HTML report carry the same words
    console = Console(record=True, width=200)
    render_summary(summarize(mux_trace), console, "t", streams=True)
    text = console.export_text()
    assert "error (http 429)" in text and "cancelled (limit)" in text and "open" not in text.split("LLM")[-1]
    index = report_for_trace(mux_trace.path, tmp_path / "rep")
    page = index.read_text(encoding="utf-8")
    assert "error (http 429)" in page and ERROR_429 in page and "cancelled (session end), ignored" in page
    assert "TTFT median, adopted streams (n=3)" in page and "back-end policy" in page


def test_timeline_extraction_and_rows_for_overlapping_streams(mux_trace, tmp_path: Path):
    d = extract_timeline(mux_trace)
    assert d.policy == "multiplexer"
    status = {s.stream_id: s.status for s in d.streams}
    assert status[5] == "error" and "open" not in status.values()
    assert [int(q.detail or 0) for q in d.flushes] == [2, 2]
    assert sorted(e.kind for e in d.decisions) == ["deferred", "deferred", "skipped", "warmup"]
    assert end_tag(d.streams[4]) == "error: http 429" and end_tag(d.streams[2]) is None
    rows, n_rows, room = pack_streams(d.streams, 1.25, 0.025)
    assert n_rows == 4  # one row per concurrently live stream, no more
    by_id = dict(zip((s.stream_id for s in d.streams), rows, strict=True))
    for a, others in overlapping(d.streams).items():
        assert all(by_id[a] != by_id[b] for b in others), (a, others)
    assert all(r > 0 for r in room)
    assert_png(plot_timeline(mux_trace, tmp_path / "mux.png"))


def test_perfetto_adoptions_cancel_reasons_errors_and_waits(mux_trace, tmp_path: Path):
    doc = json.loads(export_perfetto(mux_trace, tmp_path / "p.json").read_text(encoding="utf-8"))
    events = doc["traceEvents"]
    assert nesting_violations(events) == [] and doc["otherData"]["policy"] == "multiplexer"
    names = thread_names(doc)
    slots = sorted(v for v in names.values() if v.startswith("LLM slot"))
    assert slots == ["LLM slot", "LLM slot 2", "LLM slot 3", "LLM slot 4"]
    streams = {e["args"]["stream_id"]: e for e in events if e.get("cat") == "llm_stream"}
    assert streams[5]["name"] == "stream #5 [error (http 429)]"
    assert streams[5]["args"]["status"] == "error" and streams[5]["args"]["error_kind"] == "http 429"
    assert streams[5]["dur"] == 700_000  # ends at its error (1.6 s), not at the end of the run
    assert (
        streams[2]["args"]["cancel_reason"] == "limit" and streams[1]["args"]["cancel_reason"] == "adoption"
    )
    assert streams[3]["args"]["adopted_at_s"] == 1.0 and streams[4]["args"]["ignored"] is True
    adopt = [e for e in events if e["ph"] == "i" and e["name"].startswith("adopt #")]
    assert [e["name"] for e in adopt] == ["adopt #1", "adopt #3", "adopt #7"]
    assert adopt[1]["args"]["cancelled"] == [1] and adopt[1]["args"]["flushed_items"] == 2
    instants = {e["name"] for e in events if e["ph"] == "i"}
    assert {"cancel #2 (limit)", "cancel #6 (session_end)", "error #5 (http 429)"} <= instants
    assert {"start deferred", "start skipped", "warm-up request"} <= instants
    assert any(n.startswith("FLUSH 2 items") for n in instants)
    (wait,) = [e for e in events if e["ph"] == "X" and e["name"] == "put wait (queue full)"]
    assert (wait["ts"], wait["dur"], wait["tid"]) == (1_100_000, 200_000, streams[3]["tid"])
    s3 = streams[3]
    assert s3["ts"] <= wait["ts"] and wait["ts"] + wait["dur"] <= s3["ts"] + s3["dur"]
    ignored = [e for e in events if e["ph"] == "X" and e["name"] == "streaming (ignored)"]
    assert {e["tid"] for e in ignored} == {streams[4]["tid"], streams[6]["tid"]}


def test_run_metrics_columns_of_a_multiplexer_session(mux_trace):
    run, _ = compute_metrics(mux_trace)
    row = run.as_row()
    assert (row["n_streams"], row["n_streams_done"], row["n_streams_cancelled"], row["n_streams_error"]) == (
        7,
        3,
        3,
        1,
    )
    assert (row["n_cancel_superseded"], row["n_cancel_adoption"], row["n_cancel_limit"]) == (0, 1, 1)
    assert row["n_cancel_session_end"] == 1 and row["n_streams_open"] == 0
    assert (row["n_streams_adopted"], row["n_streams_ignored"], row["max_live_streams"]) == (3, 2, 4)
    assert (row["n_starts_deferred"], row["n_starts_skipped"], row["n_starts_rate_limited"]) == (2, 1, 0)
    assert (row["ttft_median_s"], row["ttft_max_s"], row["ttft_adopted_median_s"]) == (0.6, 5.8, 0.5)
    assert (row["n_streams_no_token"], row["no_token_wait_max_s"]) == (2, 0.7)
    assert (row["n_put_waits"], row["put_wait_max_s"]) == (1, 0.2)
    assert row["put_wait_total_s"] == pytest.approx(0.2)
    assert (row["n_flushes"], row["n_flushed_items"]) == (2, 4)
    # chunks: Hello, there flushed at 1.00 s; Sure, thing at 2.30 s; nope, late ignored (never put);
    # Bye still queued when the trace ends
    assert (row["n_chunks_flushed"], row["n_chunks_ignored"], row["n_chunks_pending"]) == (4, 2, 1)
    assert row["n_chunks"] == 7 and row["n_chunks_fed"] == 0


# --------------------------------------------------------------------------------------------------
# scripted simulated sessions: a stream fails with HTTP 429, under both policies
# --------------------------------------------------------------------------------------------------


class FaultyLlm:
    """Generation 1 fails with HTTP 429 after 0.2 s; 2 answers after 0.3 s; 3 stalls 5.8 s."""

    def __init__(self) -> None:
        self.plans = {
            1: LlmPlan([], error=ERROR_429, error_at=0.2),
            2: LlmPlan([LlmChunk(0.3, "Sure"), LlmChunk(0.35, " thing")]),
            3: LlmPlan([LlmChunk(5.8, "late")]),
        }

    def plan(self, request: LlmRequest) -> LlmPlan:
        return self.plans.get(request.stream_id, LlmPlan([]))


def partial(t: float, text: str) -> SttEvent:
    return SttEvent("partial", t, text, 0, 0.1, t - 0.1)


@pytest.fixture(params=["poll", "multiplexer"])
def faulty_run(request, tmp_path: Path):
    scenario = load_scenario(DEMO_SCENARIO, {"run.max_seconds": 6.0, "policy.kind": request.param})
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    # poll: starts at the polls of 0.5, 1.0 and 2.0 s (2 more words each time);
    # multiplexer: at 0.3, at the trailing 0.8 s (0.5 s after the first) and at 1.6 s
    parts.stt_events = [
        partial(0.3, "hello"),
        partial(0.5, "hello there you"),
        partial(1.6, "hello there you all now"),
    ]
    parts.llm = FaultyLlm()
    path = tmp_path / f"{request.param}.arrows"
    with TraceWriter(path, trace_metadata(scenario, conversation, parts.tokenizer)) as trace:
        Session(parts, trace).run()
    return request.param, read_trace(path)


def test_a_failed_stream_is_an_error_everywhere(faulty_run, tmp_path: Path):
    policy, data = faulty_run
    assert check_policy_invariants(data) == policy
    starts = {"poll": (0.5, 1.0, 2.0), "multiplexer": (0.3, 0.8, 1.6)}[policy]
    s = summarize(data)
    assert s.policy == policy and s.llm_started == 3
    assert (s.llm_errored, s.error_kinds, s.llm_open) == (1, {"http 429": 1}, 0)
    expected_cancels = {"poll": {"superseded": 0, "session_end": 1}}
    expected_cancels["multiplexer"] = {"adoption": 0, "limit": 0, "session_end": 1}
    assert s.cancel_reasons == expected_cancels[policy]
    assert s.ttft_n == 1 and s.ttft_median == pytest.approx(0.3)
    assert s.no_token_n == 2 and s.no_token_longest == pytest.approx(6.0 - starts[2])  # the stall
    assert s.no_token_longest_stream == 3
    assert (s.llm_adopted, s.ttft_adopted_n) == ((0, 0) if policy == "poll" else (1, 1))
    facts = dict(summary_facts(s))
    assert facts["  errors"] == "1 (http 429 1)"
    assert ("  refused by rate limit" in facts) == (policy == "poll")

    (failed,) = [st for st in s.streams if st.status == "error"]
    assert failed.stream_id == 1 and failed.detail == ERROR_429
    assert (failed.start, failed.end) == pytest.approx((starts[0], starts[0] + 0.2))
    rows = {r["stream"]: r for r in stream_rows(s)}
    assert rows[1]["ended"] == "error (http 429)" and rows[3]["ended"] == "cancelled (session end)"

    timeline = {st.stream_id: st for st in extract_timeline(data).streams}
    assert timeline[1].status == "error" and timeline[1].end == pytest.approx(starts[0] + 0.2)
    doc = json.loads(export_perfetto(data, tmp_path / "p.json").read_text(encoding="utf-8"))
    (slice1,) = [
        e for e in doc["traceEvents"] if e.get("cat") == "llm_stream" and e["args"]["stream_id"] == 1
    ]
    assert slice1["name"] == "stream #1 [error (http 429)]" and slice1["dur"] == 200_000

    run, _ = compute_metrics(data)
    assert (run.n_streams_error, run.n_cancel_session_end, run.n_streams_open) == (1, 1, 0)
    assert run.no_token_wait_max_s == pytest.approx(6.0 - starts[2])


# --------------------------------------------------------------------------------------------------
# both policies on the demo, and a schema-1 trace
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["poll", "multiplexer"])
def test_demo_summary_metrics_and_streams_agree(policy: str, tmp_path: Path):
    scenario = load_scenario(DEMO_SCENARIO, {"policy.kind": policy, "llm.ttft": 1.6})
    data = read_trace(run_scenario(scenario, tmp_path / "run").run_dir)
    s = summarize(data)
    run, _ = compute_metrics(data)
    assert s.policy == policy and s.llm_started == run.n_streams == len(s.streams)
    assert sum(s.cancel_reasons.values()) == s.llm_cancelled == run.n_streams_cancelled
    for reason, n in s.cancel_reasons.items():
        assert getattr(run, f"n_cancel_{reason}") == n
    assert s.llm_completed + s.llm_cancelled + s.llm_errored + s.llm_open == s.llm_started
    assert s.max_live_streams == run.max_live_streams
    assert (s.llm_adopted, s.oracle_flushed_items) == (run.n_streams_adopted, run.n_flushed_items)
    assert s.oracle_put_waits == run.n_put_waits
    row = run.as_row()
    assert sum(v for k, v in row.items() if k.startswith("n_chunks_")) == run.n_chunks
    assert run.n_chunks_unmatched == 0 and run.n_chunks_flushed == s.oracle_flushed_items
    if policy == "poll":
        assert s.max_live_streams == 1 and s.cancel_reasons["superseded"] > 0 and s.llm_adopted == 0
    else:
        # a 1.6 s TTFT against starts every 0.5 s: streams overlap, adoptions cancel older ones
        assert s.max_live_streams >= 3 and s.cancel_reasons["adoption"] > 0 and s.llm_adopted > 0
    _, n_rows, _ = pack_streams(extract_timeline(data).streams, 1.25, 0.025)
    assert n_rows == s.max_live_streams


def test_a_schema_1_trace_is_summarised_as_the_poll_loop(tmp_path: Path):
    """Version 1 had no ``request`` column and no ``kame_sim.policy``: it is a poll-loop trace."""
    schema = trace_schema({"kame_sim.conversation_id": "old", "kame_sim.seed": "1"})
    schema = schema.remove(schema.get_field_index("request"))
    schema = schema.with_metadata({**schema.metadata, b"kame_sim.schema_version": b"1"})
    events = [
        ("run_start", 0.0, {"detail": "behavioural"}),
        ("llm_start", 0.5, {"stream_id": 1, "word_count": 1, "detail": "first"}),
        ("llm_first_chunk", 0.9, {"stream_id": 1, "delay_s": 0.4}),
        ("llm_chunk", 0.9, {"stream_id": 1, "text": "Hi", "delay_s": 0.0}),
        ("llm_cancel", 1.0, {"stream_id": 1, "detail": "superseded"}),
        ("llm_start", 1.0, {"stream_id": 2, "word_count": 3, "detail": "words"}),
        ("llm_rate_limited", 1.5, {"word_count": 5, "detail": "words"}),
        ("llm_error", 1.8, {"stream_id": 2, "word_count": 0, "detail": "timeout: no data for 30 s"}),
        ("run_end", 2.0, {"detail": "ok"}),
    ]
    rows = [{"seq": i, "event": e, "t_sim": t, **cols} for i, (e, t, cols) in enumerate(events)]
    path = tmp_path / "v1" / "trace.arrows"
    path.parent.mkdir()
    with pa.ipc.new_stream(str(path), schema) as writer:
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    data = read_trace(path.parent)
    s = summarize(data)
    assert s.policy == "poll" and not s.policy_recorded
    assert s.cancel_reasons == {"superseded": 1, "session_end": 0}
    assert (s.llm_errored, s.error_kinds, s.llm_rate_limited, s.max_live_streams) == (1, {"timeout": 1}, 1, 1)
    facts = dict(summary_facts(s))
    assert "inferred" in facts["back-end policy"] and facts["  refused by rate limit"] == 1
    assert [r["ended"] for r in stream_rows(s)] == ["cancelled (superseded)", "error (timeout)"]
    assert [st.status for st in extract_timeline(data).streams] == ["cancelled", "error"]
    index = report_for_trace(path.parent, tmp_path / "rep")
    assert "error (timeout)" in index.read_text(encoding="utf-8")
