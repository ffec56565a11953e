"""KAME's stream-manager policy and ASR state against hand-written event sequences (§4–5)."""

from __future__ import annotations

from kame_sim.policy.asr_state import AsrState
from kame_sim.policy.poll_loop import StreamManagerPolicy


def test_partial_only_counts_when_text_changes_and_keeps_the_maximum():
    asr = AsrState()
    assert asr.on_partial("i would like") is True
    assert asr.on_partial("i would like") is False
    assert asr.on_partial("i would") is True  # the recogniser revised itself
    assert (asr.pending, asr.max_pending, asr.total_words()) == ("i would", 3, 3)


def test_final_commits_words_and_raises_the_bump():
    asr = AsrState()
    asr.on_partial("a table for")
    asr.on_final("a table for two")
    assert (asr.pending, asr.max_pending, asr.committed_words, asr.final_bump) == ("", 0, 4, True)
    assert asr.total_words() == 4


def test_first_stream_starts_on_non_blank_pending_only():
    policy, asr = StreamManagerPolicy(), AsrState()
    assert policy.on_tick(0.5, asr).outcome == "idle"
    asr.on_partial("   ")
    assert policy.on_tick(1.0, asr).outcome == "idle"
    asr.on_partial("hello")
    decision = policy.on_tick(1.5, asr)
    assert (decision.outcome, decision.reason, decision.total_words) == ("start", "first", 1)


def test_first_stream_starts_on_a_final_bump_even_without_pending():
    policy, asr = StreamManagerPolicy(), AsrState()
    asr.on_final("hello")
    assert policy.on_tick(0.5, asr).reason == "first"


def test_restart_needs_two_new_words():
    policy, asr = StreamManagerPolicy(), AsrState()
    asr.on_partial("i")
    assert policy.on_tick(0.5, asr).outcome == "start"  # total 1
    asr.on_partial("i am")
    assert policy.on_tick(1.0, asr).outcome == "idle"  # +1 word
    asr.on_partial("i am looking")
    decision = policy.on_tick(1.5, asr)
    assert (decision.outcome, decision.reason, decision.total_words) == ("start", "words", 3)
    asr.on_partial("i am looking for")
    assert policy.on_tick(2.0, asr).outcome == "idle"


def test_final_restarts_without_new_words_and_the_bump_is_consumed():
    policy, asr = StreamManagerPolicy(), AsrState()
    asr.on_partial("a b c")
    policy.on_tick(0.5, asr)
    asr.on_final("a b c")  # same word count as at the last start
    assert policy.on_tick(1.0, asr).reason == "final"
    assert asr.final_bump is False
    assert policy.on_tick(1.5, asr).outcome == "idle"


def test_rate_limit_five_starts_per_two_seconds_and_refusal_consumes_the_bump():
    policy, asr = StreamManagerPolicy(2, 5, 2.0), AsrState()
    outcomes = []
    for i in range(1, 8):
        asr.on_final(f"word{i}")  # a bump on every tick (0.1 s apart)
        outcomes.append(policy.on_tick(round(0.1 * i, 10), asr).outcome)
    assert outcomes == ["start"] * 5 + ["rate_limited"] * 2
    assert asr.final_bump is False
    # No new bump and only the words of the refused finals: 2 new words since the last start
    # (word6, word7) -> the word rule fires once the window has room again.
    assert policy.on_tick(2.0, asr).outcome == "rate_limited"  # starts at 0.1..0.5 still in the window
    assert policy.on_tick(2.1, asr).outcome == "rate_limited"  # 0.1 is exactly 2.0 s old: KAME keeps it
    assert policy.on_tick(2.2, asr).outcome == "start"  # now 0.1 is older than the window


def test_rate_limit_is_a_trailing_window():
    policy, asr = StreamManagerPolicy(2, 2, 1.0), AsrState()
    asr.on_final("a")
    assert policy.on_tick(0.0, asr).outcome == "start"
    asr.on_final("b")
    assert policy.on_tick(0.5, asr).outcome == "start"
    asr.on_final("c")
    assert policy.on_tick(0.9, asr).outcome == "rate_limited"
    asr.on_final("d")
    assert policy.on_tick(1.0, asr).outcome == "rate_limited"  # 0.0 is exactly 1.0 s old: still counted
    asr.on_final("e")
    assert policy.on_tick(1.01, asr).outcome == "start"  # strictly older than the window: forgotten
