"""The behavioural front-end stepped frame by frame against hand-computed frame indices.

Settings are chosen so the arithmetic is exact at 80 ms frames: turn_take_pause 0.24 s = 3 frames,
yield_after 0.24 s = 3 frames, reaction_delay 0.16 s = 2 frames, and tokens_per_second 3.125 =
one token every 12.5 / 3.125 = 4 frames.

Most tests use one user utterance in frames 5..14 (inclusive). The user is silent from frame 15,
so the silence reaches 3 frames at frame 17: the first speaking frame, where the first token is
spoken at once. Token ``k`` of a turn that starts at frame 17 comes at frame ``17 + 4 k``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kame_sim.config import BehaviouralSettings
from kame_sim.conversation import load_conversation
from kame_sim.frontend.behavioural import BehaviouralFrontend
from kame_sim.frontend.protocol import SessionInfo
from kame_sim.tokenizer import TextTokenizer

REPO = Path(__file__).resolve().parents[1]
DEMO = load_conversation(REPO / "scenarios" / "data" / "demo")
TOK = TextTokenizer.load()
PAD = 3
START = TOK.start_id
FS = 0.08

GUESS_TEXT = BehaviouralSettings().guess_text
GUESS = TOK.encode(GUESS_TEXT)
ORACLE_TEXT = "pizza express on regent street is cheap would you like a table there"
ORACLE = TOK.encode(ORACLE_TEXT)
OTHER_TEXT = "great your table for four is booked the reference is k two nine"
OTHER = TOK.encode(OTHER_TEXT)

FIRST = 17  # first speaking frame after the user speaks in frames 5..14 (see the module docstring)


def settings(**overrides) -> BehaviouralSettings:
    values = {"tokens_per_second": 3.125, **overrides}
    return BehaviouralSettings(**values)


def frontend(**overrides) -> BehaviouralFrontend:
    return BehaviouralFrontend(settings(**overrides), TOK, padding_id=PAD)


def vad(n_frames: int, *spans: tuple[int, int]) -> np.ndarray:
    """A voice-activity array with the user speaking in each inclusive frame span."""
    active = np.zeros(n_frames, dtype=bool)
    for first, last in spans:
        active[first : last + 1] = True
    return active


def session(activity: np.ndarray) -> SessionInfo:
    return SessionInfo(
        conversation=DEMO,
        user_channel=0,
        frontend_channel=1,
        user_speaker="A",
        n_frames=len(activity),
        frame_seconds=FS,
        user_voice_activity=activity,
    )


def oracle_feed(start_step: int, tokens: list[int]) -> dict[int, int]:
    """KAME's oracle after a reset at ``start_step``: START, then one token per step."""
    feed = {start_step: START}
    feed.update({start_step + 1 + k: t for k, t in enumerate(tokens)})
    return feed


def run(fe: BehaviouralFrontend, activity: np.ndarray, feed: dict[int, int] | None = None):
    """Play one session; return every step's (token, piece), checking the pieces on the way."""
    feed = feed or {}
    fe.start_session(session(activity))
    outputs = [fe.step(k, feed.get(k, PAD)) for k in range(len(activity))]
    for token, piece in outputs:
        assert piece == ("" if token == PAD else TOK.piece(token))
    return outputs


def spoken(outputs) -> list[tuple[int, int]]:
    """(frame, token) of every non-padding output."""
    return [(k, token) for k, (token, _) in enumerate(outputs) if token != PAD]


def at(first: int, tokens: list[int], every: int = 4) -> list[tuple[int, int]]:
    """``tokens`` spoken from frame ``first``, one every ``every`` frames."""
    return [(first + every * k, t) for k, t in enumerate(tokens)]


def test_fixture_texts_differ_at_every_position():
    # Otherwise a test could not tell which script a token came from.
    assert len(ORACLE) >= len(GUESS) and len(OTHER) >= len(GUESS)
    assert all(g != o and g != p and o != p for g, o, p in zip(GUESS, ORACLE, OTHER, strict=False))
    assert PAD not in GUESS + ORACLE + OTHER and START not in GUESS + ORACLE + OTHER


# -- turn taking ---------------------------------------------------------------------------------


def test_silent_while_the_user_speaks_and_until_the_pause_is_long_enough():
    # A 2-frame gap (frames 10, 11) is shorter than the 3-frame pause: no turn there.
    outputs = run(frontend(), vad(40, (5, 9), (12, 14)))
    assert all(out == (PAD, "") for out in outputs[:FIRST])
    assert spoken(outputs)[0] == (FIRST, GUESS[0])


@pytest.mark.parametrize(("pause", "first"), [(0.08, 15), (0.24, 17), (0.4, 19)])
def test_first_speaking_frame_follows_turn_take_pause(pause, first):
    outputs = run(frontend(turn_take_pause=pause), vad(40, (5, 14)))
    assert spoken(outputs)[0] == (first, GUESS[0])


def test_never_speaks_before_the_user_has_said_anything():
    assert spoken(run(frontend(), vad(60))) == []


# -- speaking the guess --------------------------------------------------------------------------


@pytest.mark.parametrize(("tokens_per_second", "every"), [(3.125, 4), (6.25, 2), (12.5, 1)])
def test_guess_is_spoken_at_the_token_rate_from_the_first_frame_then_stops(tokens_per_second, every):
    outputs = run(frontend(tokens_per_second=tokens_per_second), vad(100, (5, 14)))
    assert spoken(outputs) == at(FIRST, GUESS, every)
    assert TOK.decode([t for _, t in spoken(outputs)]) == GUESS_TEXT


def test_default_rate_averages_12_5_over_tokens_per_second_frames():
    outputs = run(frontend(tokens_per_second=3.0), vad(100, (5, 14)))
    frames = [k for k, _ in spoken(outputs)]
    assert frames[0] == FIRST and len(frames) == len(GUESS)
    gaps = set(np.diff(frames).tolist())
    assert gaps <= {4, 5}  # 12.5 / 3 = 4.17 frames per token
    assert frames[-1] - frames[0] in (41, 42)  # 10 intervals of 4.17 frames


# -- following the oracle ------------------------------------------------------------------------


def test_oracle_fed_before_the_turn_is_spoken_instead_of_the_guess():
    outputs = run(frontend(), vad(150, (5, 14)), oracle_feed(2, ORACLE))
    assert spoken(outputs) == at(FIRST, ORACLE)
    assert TOK.decode([t for _, t in spoken(outputs)]) == ORACLE_TEXT


@pytest.mark.parametrize(
    ("start_step", "reaction_delay", "expected"),
    [
        # START at 14: token 0 is fed at 15 and visible at 17, the first speaking frame.
        (14, 0.16, ORACLE),
        # START at 15: token 0 becomes visible at 18, after the first token was due (17). The
        # turn already speaks the oracle from position 1 (token 1 is visible at 19 < 21).
        (15, 0.16, [GUESS[0], *ORACLE[1:]]),
        # START at 16 becomes visible at 18: the turn started on the guess and switches.
        (16, 0.16, [GUESS[0], *ORACLE[1:]]),
        # Without a reaction delay the same feed is seen in time.
        (15, 0.0, ORACLE),
    ],
)
def test_oracle_becomes_visible_after_the_reaction_delay(start_step, reaction_delay, expected):
    fe = frontend(reaction_delay=reaction_delay)
    outputs = run(fe, vad(150, (5, 14)), oracle_feed(start_step, ORACLE))
    assert spoken(outputs) == at(FIRST, expected)


def test_oracle_arriving_mid_turn_takes_over_at_the_same_position():
    # Guess tokens at 17 (pos 0) and 21 (pos 1). START fed at 20 is visible at 22, and oracle
    # token k (fed at 21 + k) at 23 + k: token 2 is visible at 25, in time for position 2.
    outputs = run(frontend(), vad(150, (5, 14)), oracle_feed(20, ORACLE))
    assert spoken(outputs) == at(FIRST, [GUESS[0], GUESS[1], *ORACLE[2:]])


def test_mid_turn_switch_waits_for_the_reaction_delay():
    # The same feed with a 3-frame delay: oracle token 2 is visible only at 26, after position
    # 2 was spoken (25), so the switch shows from position 3 (token 3 visible at 27 < 29).
    outputs = run(frontend(reaction_delay=0.24), vad(150, (5, 14)), oracle_feed(20, ORACLE))
    assert spoken(outputs) == at(FIRST, [*GUESS[:3], *ORACLE[3:]])


def test_a_second_oracle_mid_turn_replaces_the_first_at_the_same_position():
    # ORACLE before the turn; OTHER's START fed at 28 is visible at 30, its token k at 31 + k.
    # Positions 0..3 (frames 17..29) are ORACLE. At position 4 (frame 33) only OTHER[:3] is
    # visible, so the guess fills in; from position 5 (frame 37, OTHER[5] visible at 36) it is
    # OTHER.
    feed = {**oracle_feed(2, ORACLE), **oracle_feed(28, OTHER)}
    outputs = run(frontend(), vad(150, (5, 14)), feed)
    assert spoken(outputs) == at(FIRST, [*ORACLE[:4], GUESS[4], *OTHER[5:]])


# -- barge-in ------------------------------------------------------------------------------------


def test_user_speech_for_yield_after_stops_the_turn():
    # Guess tokens at 17, 21, 25; the user speaks from 26: 3 frames of speech at 28 end the
    # turn, so position 3 (due at 29) is never spoken. The user stops after 35, so the front-end
    # takes a new turn at 38 and starts its script from the beginning.
    outputs = run(frontend(), vad(100, (5, 14), (26, 35)))
    assert spoken(outputs) == [*at(FIRST, GUESS[:3]), *at(38, GUESS)]


def test_barge_in_at_one_token_per_frame_stops_on_the_third_frame_of_speech():
    # Tokens every frame from 17; user speech at 20, 21, 22: tokens at 20 and 21 still come
    # (1 and 2 frames of speech), the turn ends at 22.
    outputs = run(frontend(tokens_per_second=12.5), vad(60, (5, 14), (20, 40)))
    assert spoken(outputs)[:5] == at(FIRST, GUESS[:5], every=1)
    assert [k for k, _ in spoken(outputs)][5] == 43  # the next turn: 40 + 3


def test_user_speech_shorter_than_yield_after_does_not_stop_the_turn():
    outputs = run(frontend(), vad(100, (5, 14), (26, 27)))
    # A backchannel neither stops the turn nor counts as something new to answer afterwards.
    assert spoken(outputs) == at(FIRST, GUESS)


def test_a_finished_short_oracle_ends_the_turn_without_the_guess_tail():
    short = TOK.encode("hello there")
    assert len(short) < len(GUESS)
    outputs = run(frontend(), vad(60, (5, 14)), oracle_feed(2, short))
    assert spoken(outputs) == at(FIRST, short)


# -- stale oracle ---------------------------------------------------------------------------------


def test_an_oracle_is_not_spoken_again_in_the_next_turn():
    # Turn 1 (frame 17) speaks ORACLE to its end (frame 17 + 4 * 21 = 101); turn 2 starts at 133.
    outputs = run(frontend(), vad(200, (5, 14), (120, 130)), oracle_feed(2, ORACLE))
    assert spoken(outputs) == [*at(FIRST, ORACLE), *at(133, GUESS)]


def test_a_new_oracle_between_turns_is_spoken_in_the_next_turn():
    feed = {**oracle_feed(2, ORACLE), **oracle_feed(110, OTHER)}
    outputs = run(frontend(), vad(200, (5, 14), (120, 130)), feed)
    assert spoken(outputs) == [*at(FIRST, ORACLE), *at(133, OTHER)]


def test_an_oracle_cut_short_by_barge_in_is_stale_too():
    outputs = run(frontend(), vad(120, (5, 14), (26, 35)), oracle_feed(2, ORACLE))
    assert spoken(outputs) == [*at(FIRST, ORACLE[:3]), *at(38, GUESS)]


def test_an_oracle_switched_to_mid_turn_is_consumed_by_that_turn():
    outputs = run(frontend(), vad(200, (5, 14), (120, 130)), oracle_feed(20, ORACLE))
    assert spoken(outputs) == [*at(FIRST, [GUESS[0], GUESS[1], *ORACLE[2:]]), *at(133, GUESS)]


# -- sessions ------------------------------------------------------------------------------------


def test_start_session_resets_all_state():
    fe = frontend()
    plain = vad(100, (5, 14))
    expected = run(frontend(), plain)  # a fresh front-end's answer
    # A session that ends with the user talking (a barge-in at 32 ended the ORACLE turn), a fresh
    # oracle (OTHER, visible from 36) not spoken yet and oracle tokens still in flight (fed at
    # 38 and 39, visible only after the end).
    busy = vad(40, (5, 14), (30, 39))
    busy_feed = {**oracle_feed(2, ORACLE), **oracle_feed(34, OTHER)}
    first = run(fe, busy, busy_feed)
    assert spoken(first)  # it was speaking
    assert run(fe, plain) == expected  # no oracle, no half-heard user, no turn carried over
    assert spoken(run(fe, vad(60))) == []  # a silent user after a talking one: nothing to say
    assert run(fe, busy, busy_feed) == first  # and the same session replays identically


def test_two_sessions_with_the_same_inputs_give_the_same_outputs():
    fe = frontend()
    activity = vad(200, (5, 14), (26, 35), (120, 130))
    feed = {**oracle_feed(2, ORACLE), **oracle_feed(60, OTHER)}
    assert run(fe, activity, feed) == run(fe, activity, feed)
