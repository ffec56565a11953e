"""Both KAME back-end policies inside the simulator: exact clock, queue rules, end-to-end invariants.

The hand-built sessions below replace the STT events and the LLM with scripted ones, so each
expected time is derived by hand: frame k's audio is complete (and the queue drained) at
(k + 1) * 80 ms; a stream's chunk ``at`` is relative to its start.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from conftest import DEMO_SCENARIO
from policy_checks import check_policy_invariants
from trace_checks import check_invariants, rows

from kame_sim.clock import TICKS_PER_SECOND, frame_end_ticks, to_ticks
from kame_sim.config import load_scenario
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.plan import LlmChunk, LlmPlan
from kame_sim.policy.asr_state import AsrState
from kame_sim.policy.poll_loop import StreamManagerPolicy, poll_request
from kame_sim.runner import build_session_parts, load_run_conversation, run_scenario, trace_metadata
from kame_sim.sim import Session
from kame_sim.stt.events import SttEvent
from kame_sim.trace import WALL_COLUMNS, TraceWriter, read_trace

S = TICKS_PER_SECOND


class ScriptedLlm:
    """Each generation's plan is given up front; every request is recorded."""

    def __init__(self, plans: dict[int, list[tuple[float, str]]]) -> None:
        self.plans = plans
        self.requests: list[LlmRequest] = []

    def plan(self, request: LlmRequest) -> LlmPlan:
        self.requests.append(request)
        return LlmPlan([LlmChunk(at, text) for at, text in self.plans.get(request.stream_id, [])])


def scripted_run(tmp_path: Path, overrides: dict, stt: list[SttEvent], llm: ScriptedLlm, name="run"):
    scenario = load_scenario(DEMO_SCENARIO, {"run.max_seconds": 6.0, **overrides})
    conversation = load_run_conversation(scenario)
    parts = build_session_parts(scenario, conversation)
    parts.stt_events = stt
    parts.llm = llm
    path = tmp_path / f"{name}.arrows"
    with TraceWriter(path, trace_metadata(scenario, conversation, parts.tokenizer)) as trace:
        Session(parts, trace).run()
    return read_trace(path)


def partial(t: float, text: str, u: int = 0) -> SttEvent:
    return SttEvent("partial", t, text, u, 0.1, t - 0.1)


# -- the exact clock ----------------------------------------------------------------------------


def test_poll_rate_window_edges_on_integer_ticks():
    """Ticks every 0.2 s, a 1-word delta: starts at 0.2..1.0 s; at 2.2 s the 0.2 s start is
    exactly 2.0 s old, still inside KAME's window (it forgets only starts STRICTLY older), so
    2.2 s is refused and 2.4 s starts."""
    policy, asr = StreamManagerPolicy(1, 5, 2 * S), AsrState()
    outcomes = {}
    for k in range(1, 14):
        asr.on_partial(" ".join(["w"] * k))
        outcomes[k * 200_000] = policy.on_tick(k * 200_000, asr).outcome
    starts = [t for t, o in outcomes.items() if o == "start"]
    assert starts == [200_000, 400_000, 600_000, 800_000, 1_000_000, 2_400_000, 2_600_000]
    assert outcomes[2_200_000] == "rate_limited"


def test_poll_loop_in_a_run_never_has_six_starts_within_two_seconds(tmp_path: Path):
    """Float time accumulated 0.2 s steps to 2.2000000000000006 s and let a 6th start through."""
    data = read_trace(
        run_scenario(
            load_scenario(DEMO_SCENARIO, {"policy.poll_interval": 0.2, "policy.restart_word_delta": 1}),
            tmp_path / "r",
        ).run_dir
    )
    starts = [to_ticks(r["t_sim"]) for r in rows(data.table, "llm_start")]
    assert rows(data.table, "llm_rate_limited"), "the window must bind in this scenario"
    assert all(b - a > 2 * S for a, b in zip(starts, starts[5:], strict=False))
    ticks = [to_ticks(r["t_sim"]) for r in rows(data.table, "llm_start")]
    assert all(t % 200_000 == 0 for t in ticks), "polls happen at exact multiples of the interval"


def test_frame_times_are_exact_for_long_runs():
    assert frame_end_ticks(0, 1920, 24_000) == 80_000
    assert frame_end_ticks(99_999, 1920, 24_000) == 8_000_000_000  # no drift after 100k frames
    assert frame_end_ticks(2, 1000, 44_100) == 3000 * S // 44_100


def test_poll_request_always_starts_the_pending_line_on_a_new_line():
    assert poll_request("", "hi") == "\nuser: hi "
    assert poll_request("user: a \nmoshi: b ", " c ") == "user: a \nmoshi: b\nuser: c "
    assert poll_request("user: a ", "") == "user: a"


# -- the multiplexer in the simulator ----------------------------------------------------------

MUX = {"policy.kind": "multiplexer"}


def test_multiplexer_overlapping_streams_adopt_the_first_newer_one_and_flush(tmp_path: Path):
    """gen 1 starts at 1.0 s and speaks at 1.3 s, one chunk per 10 ms (faster than the 80 ms
    drain, so items queue up); gen 2 starts at 1.5 s and speaks at 1.55 s: adoption at 1.55 s
    flushes what gen 1 left in the queue and cancels gen 1 in the middle of its reply."""
    gen1 = [(0.3 + 0.01 * i, f" a{i}") for i in range(40)]  # 1.30 .. 1.69 s
    gen2 = [(0.05, "b0"), (0.06, " b1")]
    llm = ScriptedLlm({1: gen1, 2: gen2})
    data = scripted_run(tmp_path, MUX, [partial(1.0, "hello"), partial(1.5, "hello there")], llm)
    check_invariants(data)
    assert check_policy_invariants(data) == "multiplexer"
    t = data.table
    assert [(r["stream_id"], round(r["t_sim"], 6)) for r in rows(t, "llm_start")] == [(1, 1.0), (2, 1.5)]
    assert [(r["stream_id"], round(r["t_sim"], 6)) for r in rows(t, "llm_adopt")] == [(1, 1.3), (2, 1.55)]
    cancel = rows(t, "llm_cancel")
    assert [(r["stream_id"], r["detail"], round(r["t_sim"], 6)) for r in cancel] == [(1, "adoption", 1.55)]
    # gen 1's chunks at 1.30..1.54 s were enqueued; the drain at 1.36, 1.44, 1.52 s (frames 16, 17,
    # 18) took those before each, so at 1.55 s the queue holds the chunks of 1.52..1.54 s: 3 items
    (flush,) = rows(t, "oracle_flush")
    assert (flush["stream_id"], flush["queue_len"], round(flush["t_sim"], 6)) == (2, 3, 1.55)
    applied = [(r["stream_id"], r["text"]) for r in rows(t, "oracle_append_applied")]
    gen1_applied = [text for sid, text in applied if sid == 1]
    assert gen1_applied == [f" a{i}" for i in range(22)]  # chunks at 1.30..1.51 s
    assert [text for sid, text in applied if sid == 2] == ["b0", " b1"]  # raw deltas, as KAME enqueues
    resets = [(r["stream_id"], r["frame"]) for r in rows(t, "oracle_reset_applied")]
    assert resets == [(1, 16), (2, 19)]  # first applied at 1.36 s (frame 16) and 1.60 s (frame 19)
    assert [r["request"] for r in rows(t, "llm_start")] == ["user: hello ", "user: hello there "]


def test_multiplexer_put_waits_on_a_full_queue_instead_of_dropping(tmp_path: Path):
    """Queue of 2; gen 1 emits 5 chunks at 1.30 s. A stream awaits each put, so: c0, c1 fit; c2
    waits from 1.30 s to the drain at 1.36 s (frame 16); c3 then fits at once; c4 waits from 1.36 s
    to the next drain at 1.44 s. Nothing is dropped and every chunk is applied, in order."""
    llm = ScriptedLlm({1: [(0.3, f"c{i}") for i in range(5)]})
    data = scripted_run(tmp_path, {**MUX, "policy.queue_size": 2}, [partial(1.0, "hello")], llm)
    check_policy_invariants(data)
    t = data.table
    assert not rows(t, "oracle_drop")
    waits = [
        (round(r["t_ref"], 6), round(r["t_sim"], 6), round(r["delay_s"], 6))
        for r in rows(t, "oracle_put_wait")
    ]
    assert waits == [(1.3, 1.36, 0.06), (1.36, 1.44, 0.08)]
    applied = [(r["text"], r["frame"]) for r in rows(t, "oracle_append_applied")]
    assert applied == [("c0", 16), ("c1", 16), ("c2", 17), ("c3", 17), ("c4", 18)]


def test_poll_loop_drops_on_a_full_queue(tmp_path: Path):
    """The same stream under the poll loop with a queue of 2: reset + c0 fit, the rest are dropped."""
    llm = ScriptedLlm({1: [(0.3, f"c{i}") for i in range(5)]})
    data = scripted_run(tmp_path, {"policy.queue_size": 2}, [partial(0.9, "hello")], llm)
    check_policy_invariants(data)
    t = data.table
    assert [r["detail"] for r in rows(t, "oracle_enqueue")] == ["reset", "append"]
    assert [r["text"] for r in rows(t, "oracle_drop")] == ["c1", "c2", "c3", "c4"]


def test_multiplexer_trailing_start_and_final_bypass_in_a_run(tmp_path: Path):
    """Partials at 1.0, 1.2, 1.3 s; a final at 1.4 s. Starts: 1.0 (partial), the trailing start
    due at 1.5 s is cancelled by the final, which starts at once at 1.4 s (bypass)."""
    stt = [
        partial(1.0, "i want"),
        partial(1.2, "i want a"),
        partial(1.3, "i want a taxi"),
        SttEvent("final", 1.4, "i want a taxi please", 0, 0.2, 1.2),
    ]
    llm = ScriptedLlm({})
    data = scripted_run(tmp_path, MUX, stt, llm)
    t = data.table
    starts = [(r["stream_id"], round(r["t_sim"], 6), r["detail"], r["text"]) for r in rows(t, "llm_start")]
    assert starts == [(1, 1.0, "partial", "i want"), (2, 1.4, "final", None)]
    assert [round(r["t_ref"], 6) for r in rows(t, "llm_start_deferred")] == [1.5]
    assert llm.requests[1].conversation == "user: i want a taxi please"


def test_multiplexer_warmup_row_and_no_warmup_setting(tmp_path: Path):
    on = scripted_run(tmp_path, MUX, [], ScriptedLlm({}), "on")
    off = scripted_run(tmp_path, {**MUX, "policy.warmup": False}, [], ScriptedLlm({}), "off")
    assert [r["t_sim"] for r in rows(on.table, "llm_warmup")] == [0.0]
    assert not rows(off.table, "llm_warmup")


def test_session_end_cancels_live_streams_under_both_policies(tmp_path: Path):
    llm = ScriptedLlm({1: [(10.0, "late")]})  # still waiting for its first token at the end
    for kind in ("poll", "multiplexer"):
        data = scripted_run(tmp_path, {"policy.kind": kind}, [partial(1.0, "hi")], llm, kind)
        assert check_policy_invariants(data) == kind
        (cancel,) = rows(data.table, "llm_cancel")
        assert cancel["detail"] == "session_end" and cancel["stream_id"] == 1


# -- both policies end to end -------------------------------------------------------------------


def _simulated(table: pa.Table) -> pa.Table:
    return table.drop_columns(list(WALL_COLUMNS))


@pytest.mark.parametrize("kind", ["poll", "multiplexer"])
def test_both_policies_on_the_demo_are_consistent_and_deterministic(tmp_path: Path, kind: str):
    scenario = load_scenario(DEMO_SCENARIO, {"policy.kind": kind, "run.seed": 5})
    a = read_trace(run_scenario(scenario, tmp_path / "a").run_dir)
    b = read_trace(run_scenario(scenario, tmp_path / "b").run_dir)
    check_invariants(a)
    assert check_policy_invariants(a) == kind
    assert _simulated(a.table).equals(_simulated(b.table))
    assert a.metadata == b.metadata


def test_both_policies_on_a_spokenwoz_conversation(tmp_path: Path, spokenwoz: Path):
    counts = {}
    for kind in ("poll", "multiplexer"):
        scenario = load_scenario(
            DEMO_SCENARIO.parent / "spokenwoz.toml",
            {
                "conversation.path": str(spokenwoz),
                "conversation.id": "MUL1423",
                "policy.kind": kind,
                "llm.ttft": {"kind": "lognormal", "median": 1.5, "sigma": 0.6},
            },
        )
        data = read_trace(run_scenario(scenario, tmp_path / kind).run_dir)
        check_invariants(data)
        check_policy_invariants(data)
        counts[kind] = {e: len(rows(data.table, e)) for e in ("llm_start", "llm_adopt", "llm_cancel")}
    # the multiplexer starts on every partial's 0.5 s cadence and lets streams overlap
    assert counts["multiplexer"]["llm_start"] > counts["poll"]["llm_start"]
    assert counts["multiplexer"]["llm_adopt"] > 0 and counts["poll"]["llm_adopt"] == 0


def test_policy_settings_of_the_other_policy_are_rejected():
    from kame_sim.errors import InputError

    with pytest.raises(InputError, match=r"min_restart_interval is a setting of policy.kind = 'multiplexer'"):
        load_scenario(DEMO_SCENARIO, {"policy.min_restart_interval": 1.0})
    with pytest.raises(InputError, match=r"poll_interval is a setting of policy.kind = 'poll'"):
        load_scenario(DEMO_SCENARIO, {"policy.kind": "multiplexer", "policy.poll_interval": 1.0})


def test_a_version_1_trace_is_read_with_the_new_columns_as_nulls(tmp_path: Path):
    """Traces written before the multiplexer (schema 1, no ``request`` column) stay readable."""
    current = read_trace(
        run_scenario(load_scenario(DEMO_SCENARIO, {"run.max_seconds": 3.0}), tmp_path / "r").run_dir
    )
    old_table = current.table.drop_columns(["request"])
    meta = dict(current.table.schema.metadata)
    meta[b"kame_sim.schema_version"] = b"1"
    old_table = old_table.replace_schema_metadata(meta)
    path = tmp_path / "v1.arrows"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, old_table.schema) as writer:
        writer.write_table(old_table)
    upgraded = read_trace(path)
    assert upgraded.table.column_names == current.table.column_names
    assert upgraded.table["request"].null_count == len(upgraded.table)
    assert upgraded.table.drop_columns(["request"]).equals(current.table.drop_columns(["request"]))
    assert upgraded.metadata["kame_sim.schema_version"] == "1" and upgraded.complete


def test_an_adopted_stream_does_not_queue_behind_the_cancelled_streams_waiting_put(tmp_path: Path):
    """Queue of 2. gen 1 emits 5 chunks at 1.605 s (after the drain at 1.60 s): c0, c1 fit, c2
    waits. gen 2's first delta at 1.61 s is adopted: flush (2 items), gen 1 cancelled while
    waiting, and gen 2's put goes in at once (a stale waiter must not make it wait for 1.68 s)."""
    llm = ScriptedLlm({1: [(0.605, f"c{i}") for i in range(5)], 2: [(0.11, "b0")]})
    data = scripted_run(
        tmp_path, {**MUX, "policy.queue_size": 2}, [partial(1.0, "hi"), partial(1.5, "hi you")], llm
    )
    check_policy_invariants(data)
    t = data.table
    assert [r["stream_id"] for r in rows(t, "oracle_put_wait")] == []
    assert [(r["stream_id"], r["queue_len"]) for r in rows(t, "oracle_flush")] == [(2, 2)]
    enq = [(r["stream_id"], r["text"], round(r["t_sim"], 6)) for r in rows(t, "oracle_enqueue")]
    assert enq == [(1, "c0", 1.605), (1, "c1", 1.605), (2, "b0", 1.5 + 0.11)]
    assert [(r["text"], r["frame"]) for r in rows(t, "oracle_append_applied")] == [("b0", 20)]
