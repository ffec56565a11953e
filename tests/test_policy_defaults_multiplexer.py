"""KAME's stream-multiplexer constants (kame-reference.md §5b), pinned in the scenario and the class.

The values are KAME's server options (--min-restart-interval, --max-concurrent-streams,
--max-prompt-chars) and its event queue size; a change to any default must fail here.
"""

from __future__ import annotations

from kame_sim.clock import to_ticks
from kame_sim.config import Scenario, scenario_from_dict
from kame_sim.policy.multiplexer import StreamMultiplexerPolicy

MIN_RESTART_INTERVAL_S = 0.5
MAX_CONCURRENT_STREAMS = 7
MAX_PROMPT_CHARS = 6000
EVENT_QUEUE_SIZE = 256


def multiplexer_settings():
    return scenario_from_dict({"policy": {"kind": "multiplexer"}}).policy


def test_the_poll_loop_stays_the_default_policy():
    assert Scenario().policy.kind == "poll"
    assert Scenario().policy.queue_size == 64


def test_scenario_defaults_are_kames_multiplexer():
    policy = multiplexer_settings()
    assert policy.kind == "multiplexer"
    assert policy.min_restart_interval == MIN_RESTART_INTERVAL_S
    assert policy.max_concurrent_streams == MAX_CONCURRENT_STREAMS
    assert policy.max_prompt_chars == MAX_PROMPT_CHARS
    assert policy.queue_size == EVENT_QUEUE_SIZE
    assert policy.drain_budget == 0.002
    assert policy.warmup and policy.trailing_start and policy.final_bypass
    assert policy.skip_final_equal_to_requested and policy.require_user_input


def test_multiplexer_class_defaults_are_kames():
    policy = StreamMultiplexerPolicy()
    assert policy.min_restart_interval == to_ticks(MIN_RESTART_INTERVAL_S)
    assert policy.max_concurrent_streams == MAX_CONCURRENT_STREAMS
    assert policy.max_prompt_chars == MAX_PROMPT_CHARS
