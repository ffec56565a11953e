"""KAME's oracle semantics against hand-computed frames (kame-reference.md §2)."""

from __future__ import annotations

import pytest

from kame_sim.oracle import OracleItem, OracleQueue, OracleState

START, PAD = 500, 3
A, B, C, D, E = 11, 12, 13, 14, 15


def fed(state: OracleState, steps: range) -> list[int]:
    """Tokens the current state would feed at ``steps`` (no events in between)."""
    return [state.token_at(s)[0] for s in steps]


def play(schedule: dict[int, list[tuple[str, list[int]]]], steps: range) -> tuple[list[int], int]:
    """Apply each step's events before feeding it, as the frame loop does; return fed tokens, skips."""
    state, out, skipped = OracleState(START, PAD), [], 0
    for step in steps:
        for action, ids in schedule.get(step, []):
            if action == "reset":
                state.reset(step)
            else:
                skipped += state.append(ids, step).n_skipped
        out.append(state.token_at(step)[0])
    return out, skipped


def test_no_oracle_feeds_padding():
    state = OracleState(START, PAD)
    assert fed(state, range(5)) == [PAD] * 5
    assert state.token_at(0) == (PAD, None)


def test_reset_then_append_feeds_start_then_one_token_per_frame():
    state = OracleState(START, PAD)
    state.reset(10)
    result = state.append([A, B, C], 10)
    assert (result.n_tokens, result.n_skipped, result.first_index) == (3, 0, 1)
    assert fed(state, range(8, 16)) == [PAD, PAD, START, A, B, C, PAD, PAD]
    assert state.token_at(12) == (B, 2)


def test_token_appended_after_its_slot_is_skipped_never_played_late():
    state = OracleState(START, PAD)
    state.reset(10)
    state.append([A, B], 10)  # slots 11, 12
    result = state.append([C, D, E], 14)  # C's slot (13) has passed when applied before step 14
    assert (result.n_skipped, result.first_index) == (1, 3)
    assert fed(state, range(14, 18)) == [D, E, PAD, PAD]
    assert C not in fed(state, range(14, 100))


def test_schedule_with_a_late_append_feeds_hand_computed_frames():
    schedule = {10: [("reset", []), ("append", [A, B])], 14: [("append", [C, D, E])]}
    tokens, skipped = play(schedule, range(8, 18))
    #            8    9    10     11 12 13   14 15 16   17
    assert tokens == [PAD, PAD, START, A, B, PAD, D, E, PAD, PAD]
    assert skipped == 1


def test_append_whose_slots_all_passed_skips_everything():
    state = OracleState(START, PAD)
    state.reset(0)
    result = state.append([A, B], 20)
    assert result.n_skipped == 2
    assert fed(state, range(18, 24)) == [PAD] * 6


def test_append_without_reset_behaves_as_reset_at_that_step():
    state = OracleState(START, PAD)
    result = state.append([A, B], 5)
    assert result.n_skipped == 0
    assert fed(state, range(4, 9)) == [PAD, START, A, B, PAD]


def test_empty_append_changes_nothing_not_even_the_implicit_reset():
    state = OracleState(START, PAD)
    state.append([], 5)
    assert state.tokens is None
    assert fed(state, range(4, 8)) == [PAD] * 4


def test_reset_reanchors_and_forgets_the_old_text():
    schedule = {0: [("reset", []), ("append", [A, B, C, D, E])], 3: [("reset", [])], 6: [("append", [E])]}
    tokens, skipped = play(schedule, range(0, 8))
    #                0      1  2  3      4    5    6    7
    assert tokens == [START, A, B, START, PAD, PAD, PAD, PAD]
    assert skipped == 1  # E's slot after the second reset was step 4


def test_steps_before_the_anchor_feed_padding():
    state = OracleState(START, PAD)
    state.reset(10)
    assert state.token_at(9) == (PAD, None)


def test_clear_models_a_fresh_session():
    state = OracleState(START, PAD)
    state.reset(0)
    state.append([A], 0)
    state.clear()
    assert fed(state, range(0, 3)) == [PAD] * 3


def item(action: str, i: int = 0) -> OracleItem:
    return OracleItem(action, f"w{i}", 1, 0.0)  # type: ignore[arg-type]


def test_queue_drops_on_full_reset_included_and_drains_in_order():
    queue = OracleQueue(64)
    assert all(queue.put(item("append", i)) for i in range(64))
    assert len(queue) == 64
    assert queue.put(item("reset")) is False
    assert queue.put(item("append", 99)) is False
    drained = queue.drain()
    assert [x.text for x in drained] == [f"w{i}" for i in range(64)]
    assert len(queue) == 0 and queue.drain() == []
    assert queue.put(item("reset")) is True


def test_queue_size_must_be_positive():
    with pytest.raises(ValueError):
        OracleQueue(0)


def test_queued_resets_count_towards_the_bound():
    """A queued reset takes a slot like an append: reset + 63 appends fill the 64-item queue."""
    queue = OracleQueue(64)
    assert queue.put(item("reset"))
    assert all(queue.put(item("append", i)) for i in range(63))
    assert len(queue) == 64
    assert queue.put(item("append", 63)) is False
    assert queue.put(item("reset")) is False
    assert [x.action for x in queue.drain()] == ["reset"] + ["append"] * 63
