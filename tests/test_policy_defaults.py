"""KAME's poll-loop constants (kame-reference.md §5), pinned where a scenario and the policy get them.

A changed default would silently move every simulated start time, so each value is pinned twice:
in ``Scenario()`` (what a run uses when the file says nothing) and in the pure classes' own
defaults (what tests and notebooks use), and the rate limit is also pinned by behaviour.
"""

from __future__ import annotations

from kame_sim.config import Scenario
from kame_sim.oracle import OracleItem, OracleQueue
from kame_sim.policy.asr_state import AsrState
from kame_sim.policy.poll_loop import StreamManagerPolicy

# kame-reference.md §5: the poll-loop server's settings.
POLL_INTERVAL_S = 0.5  # the server's setting (the class default in KAME is 0.25 s)
RESTART_WORD_DELTA = 2
MAX_STARTS = 5
RATE_WINDOW_S = 2.0
QUEUE_SIZE = 64


def test_scenario_defaults_are_kames_poll_loop():
    policy = Scenario().policy
    assert policy.poll_interval == POLL_INTERVAL_S
    assert policy.restart_word_delta == RESTART_WORD_DELTA
    assert policy.max_starts == MAX_STARTS
    assert policy.rate_window == RATE_WINDOW_S
    assert policy.queue_size == QUEUE_SIZE


def test_policy_class_defaults_are_kames():
    policy = StreamManagerPolicy()
    assert policy.restart_word_delta == RESTART_WORD_DELTA
    assert policy.max_starts == MAX_STARTS
    assert policy.rate_window == RATE_WINDOW_S
    assert OracleQueue().maxsize == QUEUE_SIZE


def test_default_rate_limit_is_five_starts_in_any_two_seconds():
    """Six finals 0.1 s apart: five starts, then refusals until the first start is > 2 s old."""
    policy, asr = StreamManagerPolicy(), AsrState()
    outcomes = []
    for i in range(6):
        asr.on_final(f"word{i}")
        outcomes.append(policy.on_tick(round(0.1 * i, 10), asr).outcome)
    assert outcomes == ["start"] * 5 + ["rate_limited"]
    asr.on_final("again")
    assert policy.on_tick(2.0, asr).outcome == "rate_limited"  # the start at 0.0 is exactly 2 s old
    asr.on_final("later")
    assert policy.on_tick(2.05, asr).outcome == "start"


def test_default_restart_needs_two_new_words():
    policy, asr = StreamManagerPolicy(), AsrState()
    asr.on_partial("one")
    assert policy.on_tick(0.5, asr).outcome == "start"
    asr.on_partial("one two")
    assert policy.on_tick(1.0, asr).outcome == "idle"
    asr.on_partial("one two three")
    assert policy.on_tick(1.5, asr).outcome == "start"


def test_default_queue_holds_sixty_four_items():
    queue = OracleQueue()
    assert all(queue.put(OracleItem("append", str(i), 1, 0.0)) for i in range(QUEUE_SIZE))
    assert not queue.put(OracleItem("append", "one too many", 1, 0.0))
