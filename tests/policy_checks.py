"""Back-end policy invariants every trace must satisfy (both KAME policies)."""

from __future__ import annotations

from kame_sim.trace.reader import TraceData

CANCEL_REASONS = {
    "poll": {"superseded", "session_end"},
    "multiplexer": {"adoption", "limit", "session_end"},
}
MUX_ONLY = {"llm_adopt", "llm_start_deferred", "llm_start_skipped", "oracle_put_wait", "oracle_flush"}


def check_policy_invariants(data: TraceData) -> str:
    """Generations, stream life cycles and (multiplexer) adoption rules; returns the policy kind."""
    policy = data.metadata["kame_sim.policy"]
    all_rows = data.table.to_pylist()
    starts = [r["stream_id"] for r in all_rows if r["event"] == "llm_start"]
    assert starts == list(range(1, len(starts) + 1)), "generations must be 1, 2, ... in start order"

    ended: dict[int, str] = {}
    adopted = 0
    active = 0  # the audio loop's generation
    live_at_end: set[int] = set(starts)
    for r in all_rows:
        event, sid = r["event"], r["stream_id"]
        if policy == "poll":
            assert event not in MUX_ONLY, f"{event} in a poll-loop trace"
        if event in ("llm_cancel", "llm_done", "llm_error"):
            assert sid not in ended, f"stream {sid} ended twice ({ended.get(sid)}, {event})"
            ended[sid] = event
            live_at_end.discard(sid)
            if event == "llm_cancel":
                assert r["detail"] in CANCEL_REASONS[policy], r
        elif event in ("llm_first_chunk", "llm_chunk", "oracle_enqueue", "oracle_put_wait", "oracle_drop"):
            assert sid not in ended, f"{event} of stream {sid} after it ended by {ended.get(sid)}"
        if policy != "multiplexer":
            continue
        if event == "llm_adopt":
            assert sid > adopted, "an adoption must be of a newer generation"
            adopted = sid
        elif event in ("oracle_enqueue", "oracle_put_wait"):
            assert sid == adopted, f"{event} of generation {sid} while {adopted} is adopted"
        elif event == "oracle_reset_applied":
            assert sid > active
            active = sid
        elif event == "oracle_append_applied":
            assert sid == active == adopted, f"applied chunk of {sid}; audio loop {active}, adopted {adopted}"
        elif event == "llm_chunk" and r["detail"] != "ignored":
            assert sid == adopted
    assert not live_at_end, f"streams {sorted(live_at_end)} never ended (no done, error or cancel)"
    return policy
