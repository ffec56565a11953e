"""KAME's stream multiplexer (kame-reference.md §5b) against hand-written event sequences.

Times are ticks (µs). Each answer below is derived by hand from the rules, not from running the
code: the comments say which rule gives it.
"""

from __future__ import annotations

import pytest

from kame_sim.policy.multiplexer import (
    StreamMultiplexerPolicy,
    last_speaker,
    multiplexer_request,
    normalise,
)

S = 1_000_000  # ticks per second
CONV_USER = "user: hi there "  # a conversation whose last line is the user's
CONV_MOSHI = "user: hi \nmoshi: hello "


def mux(**kw) -> StreamMultiplexerPolicy:
    return StreamMultiplexerPolicy(**kw)


def test_kame_constants_are_the_defaults():
    p = mux()
    assert (p.min_restart_interval, p.max_concurrent_streams, p.max_prompt_chars) == (S // 2, 7, 6000)
    assert p.trailing_start and p.final_bypass and p.skip_final_equal_to_requested and p.require_user_input


def test_first_start_is_never_held_back():
    d = mux().on_partial(3, "hello", "")
    assert (d.outcome, d.reason, d.generation, d.pending) == ("start", "partial", 1, "hello")


def test_trailing_start_is_scheduled_once_and_uses_the_latest_partial():
    p = mux()
    assert p.on_partial(0, "i", "").outcome == "start"  # gen 1 at t=0
    d = p.on_partial(S // 10, "i am", "")  # inside the 0.5 s gap: ONE trailing start at 0 + 0.5 s
    assert (d.outcome, d.at) == ("deferred", S // 2)
    d = p.on_partial(3 * S // 10, "i am looking", "")  # a trailing start is pending: nothing moves
    assert (d.outcome, p.trailing_at) == ("idle", S // 2)
    d = p.on_trailing(S // 2, "")
    # fires at exactly last_start + interval with the LATEST partial of the utterance
    assert (d.outcome, d.reason, d.generation, d.pending) == ("start", "trailing", 2, "i am looking")
    assert d.request == "user: i am looking "
    assert p.last_start == S // 2


def test_interval_edges_are_exact_on_the_integer_clock():
    p = mux()
    p.on_partial(0, "a", "")
    assert p.on_partial(S // 2 - 1, "a b", "").outcome == "deferred"  # 1 µs short of the interval
    p = mux()
    p.on_partial(0, "a", "")
    d = p.on_partial(S // 2, "a b", "")  # exactly 0.5 s later: KAME refuses only now - last < 0.5
    assert (d.outcome, d.generation) == ("start", 2)


def test_final_bypasses_the_interval_and_cancels_the_trailing_start():
    p = mux()
    p.on_partial(0, "book a", "")
    assert p.on_partial(S // 10, "book a table", "").outcome == "deferred"
    # the final lands 0.2 s after the last start: it starts at once anyway
    d = p.on_final(2 * S // 10, "book a table for two", "user: book a table for two ")
    assert (d.outcome, d.reason, d.generation) == ("start", "final", 2)
    assert d.pending == "" and d.request == "user: book a table for two"
    assert p.utterance == 1 and p.trailing_at is None
    assert p.on_trailing(S // 2, "user: book a table for two ").outcome == "idle"  # cancelled


def test_a_final_equal_to_the_last_requested_partial_starts_nothing():
    p = mux()
    p.on_partial(0, "a  table\tfor two", "")  # requested "a table for two" (normalised)
    d = p.on_final(3 * S, " a table for  two ", "user: a table for two ")
    assert (d.outcome, d.reason) == ("skipped", "final equals the last requested partial")
    assert p.utterance == 1 and p.live == (1,)


def test_a_final_equal_to_an_older_partial_still_starts():
    p = mux()
    p.on_partial(0, "a table", "")  # gen 1 asked for "a table"
    p.on_partial(S, "a table for", "")  # gen 2 asked for "a table for"
    d = p.on_final(3 * S, "a table", "user: a table ")  # equals gen 1's request, not the LAST one
    assert (d.outcome, d.generation) == ("start", 3)


def test_the_repeat_rule_only_looks_at_the_same_utterance():
    p = mux()
    p.on_partial(0, "yes", "")
    assert p.on_final(S, "yes", "user: yes ").outcome == "skipped"  # utterance 0 -> 1
    # utterance 1: the last start asked for "yes" in utterance 0, so this "yes" final starts
    d = p.on_final(5 * S, "yes", "user: yes yes ")
    assert (d.outcome, d.generation) == ("start", 2)


def test_a_blank_final_clears_the_pending_partial_only():
    p = mux()
    p.on_partial(0, "um", "")
    d = p.on_final(S, "   ", "")
    assert d.outcome == "idle" and p.pending == "" and p.utterance == 0


def test_no_start_without_user_input():
    p = mux()
    assert p.on_partial(0, "   ", CONV_MOSHI).outcome == "skipped"  # blank pending, moshi spoke last
    assert p.last_start is None  # a refused start does not count as a start
    assert p.on_partial(S // 10, "   ", CONV_USER).outcome == "start"  # the user's line is last


def test_request_text_trimming_and_no_newline_in_front_of_an_empty_conversation():
    assert multiplexer_request("", "hello", 6000) == ("user: hello ", True)
    assert multiplexer_request("user: hi \nmoshi: yo ", "  next  ", 6000) == (
        "user: hi \nmoshi: yo\nuser: next ",
        True,
    )
    long = "user: " + "x" * 7000 + " "
    text, has_user = multiplexer_request(long, "", 6000)
    assert len(text) == 6000 and text == long.rstrip()[-6000:] and has_user
    assert multiplexer_request("user: a \nmoshi: b ", "", 6000) == ("user: a \nmoshi: b", False)


def test_helpers():
    assert normalise("  a \t b\nc ") == "a b c"
    assert last_speaker("user: a \nmoshi: b: c \n\n") == "moshi"
    assert last_speaker("") is None


def _started(p: StreamMultiplexerPolicy, n: int, step: int = S) -> list[int]:
    """Start ``n`` streams one second apart (each outside the interval)."""
    gens = []
    for i in range(n):
        d = p.on_partial(i * step, f"word {i}", "")
        assert d.outcome == "start"
        gens.append(d.generation)
    return gens


def test_a_later_started_but_faster_stream_is_adopted_and_the_older_one_cancelled():
    p = mux()
    _started(p, 2)  # gen 1 at 0 s, gen 2 at 1 s
    e = p.on_first_delta(2)  # gen 2 speaks first
    assert e.adopted and e.adoption_cancels == (1,) and p.adopted == 2
    assert p.accepts(2) and not p.accepts(1)
    # gen 1 was cancelled; had it been slower but still live, its first delta would be ignored
    assert not p.on_first_delta(1).adopted and p.adopted == 2


def test_an_older_stream_that_speaks_after_adoption_is_ignored_not_adopted():
    p = mux()
    _started(p, 3)
    assert p.on_first_delta(3).adoption_cancels == (1, 2)
    p2 = mux()
    _started(p2, 3)
    assert p2.on_first_delta(2).adoption_cancels == (1,)  # gen 3 is newer: it stays live
    assert p2.live == (2, 3)
    e = p2.on_first_delta(1)  # already cancelled, older than adopted: ignored
    assert not e.adopted and p2.adopted == 2


def test_a_stream_is_overtaken_in_the_middle_of_its_reply():
    p = mux()
    _started(p, 2)
    assert p.on_first_delta(1).adopted  # gen 1 is speaking ...
    assert p.accepts(1)
    e = p.on_first_delta(2)  # ... when gen 2's first delta arrives: gen 2 takes over
    assert e.adopted and e.adoption_cancels == (1,)
    assert not p.accepts(1) and p.accepts(2) and p.live == (2,)


def test_the_seven_stream_limit_keeps_the_newest_silent_streams():
    p = mux()
    gens = _started(p, 7)
    assert p.live == tuple(gens)  # 7 live: at the limit, nothing cancelled
    d = p.on_partial(7 * S, "word 7", "")
    assert d.generation == 8 and d.limit_cancels == (1,)  # the oldest silent stream goes
    assert p.live == (2, 3, 4, 5, 6, 7, 8)


def test_the_limit_keeps_the_adopted_stream_even_when_it_is_the_oldest():
    p = mux()
    _started(p, 3)
    p.on_first_delta(1)  # gen 1 adopted (and speaking); gens 2, 3 silent
    _started_after = [p.on_partial((3 + i) * S, f"w{i}", "") for i in range(5)]  # gens 4..8
    assert [d.generation for d in _started_after] == [4, 5, 6, 7, 8]
    # after gen 8: 8 live > 7: keep gen 1 (adopted) + the 6 newest silent (3..8): gen 2 cancelled
    assert _started_after[-1].limit_cancels == (2,)
    assert p.live == (1, 3, 4, 5, 6, 7, 8)


def test_the_limit_cancels_emitting_streams_that_were_not_adopted():
    p = mux(max_concurrent_streams=2)
    _started(p, 2)
    assert p.on_first_delta(2).adopted  # adoption cancels gen 1
    d = p.on_partial(2 * S, "x", "")  # gen 3 (silent)
    assert d.limit_cancels == ()
    p.on_first_delta(3)  # gen 3 adopted, gen 2 cancelled by adoption
    d4 = p.on_partial(3 * S, "y", "")
    d5 = p.on_partial(4 * S, "z", "")
    assert (d4.limit_cancels, d5.limit_cancels) == ((), (4,))  # keep adopted 3 + newest silent 5


def test_finished_streams_do_not_count_and_session_end_cancels_the_rest():
    p = mux(max_concurrent_streams=2)
    _started(p, 2)
    p.on_stream_end(1)
    assert p.on_partial(2 * S, "x", "").limit_cancels == ()  # gen 1 finished: 2 live
    assert p.end_session() == (2, 3) and p.live == ()


@pytest.mark.parametrize("switch", ["trailing_start", "final_bypass", "skip_final_equal_to_requested"])
def test_each_rule_can_be_switched_off(switch: str):
    p = mux(**{switch: False})
    p.on_partial(0, "a b", "")
    if switch == "trailing_start":
        assert p.on_partial(S // 10, "a b c", "").outcome == "idle"
    elif switch == "final_bypass":
        p.on_partial(S // 10, "a b c", "")  # trailing pending at 0.5 s
        # the final is now an ordinary candidate inside the gap; the final cancelled the old
        # trailing start, so it schedules a new one
        assert p.on_final(S // 5, "a b c d", "user: a b c d ").outcome == "deferred"
    else:
        assert p.on_final(S, "a b", "user: a b ").outcome == "start"
