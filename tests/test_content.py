"""Simulated LLM content: oracle_raw replay and the progressive-hint model (kame-reference.md §7)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from kame_sim.conversation import Conversation, OraclePrediction, Word, load_conversation
from kame_sim.llm.content import (
    HINT_LEVEL_BOUNDS,
    LlmRequest,
    OracleRawReplay,
    ProgressiveHintSource,
    hint_level,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "scenarios" / "data" / "demo"
DEMO = load_conversation(DEMO_DIR)
GAP = 0.8


def request(now: float) -> LlmRequest:
    return LlmRequest(now=now, conversation="", pending="", stream_id=0)


def hand_conversation(words: list[Word], oracle: list[OraclePrediction] = ()) -> Conversation:
    end = max(w.end for w in words) + 1.0
    audio = np.zeros((2, int(end * 8000)), dtype=np.float32)
    audio.setflags(write=False)
    return Conversation(
        id="hand",
        source_dir=Path("hand"),
        audio=audio,
        sample_rate=8000,
        words=tuple(sorted(words, key=lambda w: w.start)),
        oracle_raw=tuple(oracle),
        content_hash="hand",
    )


def prediction(t: float, text: str, channel: int) -> OraclePrediction:
    return OraclePrediction(
        timestamp_s=t,
        prediction=text,
        channel=channel,
        hint="",
        current_spoken_ratio=0.0,
        total_word_count=0,
        conversation_context="",
    )


# -- OracleRawReplay -----------------------------------------------------------------------------


def test_replay_of_the_demo_returns_the_latest_prediction_for_the_channel():
    raw = json.loads((DEMO_DIR / "oracle_raw" / "demo.json").read_text())
    by_ms = {(e["timestamp_ms"], e["channel"]): e["prediction"] for e in raw}
    # The demo's predictions for channel 1 (B) are at 5, 15, 20 and 25 s; for channel 0 at 10, 30 s.
    b = OracleRawReplay(DEMO, 1)
    expected_b = {
        0.0: "",
        4.999: "",
        5.0: by_ms[(5000, 1)],
        10.0: by_ms[(5000, 1)],  # channel 0's prediction at 10 s is not B's
        14.999: by_ms[(5000, 1)],
        15.0: by_ms[(15000, 1)],
        19.99: by_ms[(15000, 1)],
        20.0: by_ms[(20000, 1)],
        25.0: by_ms[(25000, 1)],
        30.0: by_ms[(25000, 1)],
        1e6: by_ms[(25000, 1)],
    }
    assert {t: b.reply(request(t)) for t in expected_b} == expected_b
    a = OracleRawReplay(DEMO, 0)
    expected_a = {
        5.0: "",
        9.999: "",
        10.0: by_ms[(10000, 0)],
        25.0: by_ms[(10000, 0)],
        30.0: by_ms[(30000, 0)],
    }
    assert {t: a.reply(request(t)) for t in expected_a} == expected_a


def test_replay_of_a_hand_built_conversation():
    words = [Word("A", "hi", 0.0, 0.5), Word("B", "hello", 1.0, 1.5)]
    oracle = [
        prediction(1.0, "b one", 1),
        prediction(2.0, "a one", 0),
        prediction(3.0, "b two", 1),
        prediction(3.0, "b three", 1),  # same time: the later entry is the latest
        prediction(4.0, "a two", 0),
    ]
    conv = hand_conversation(words, oracle)
    b = OracleRawReplay(conv, 1)
    assert [b.reply(request(t)) for t in (0.5, 1.0, 2.5, 3.0, 4.0, 9.0)] == [
        "",
        "b one",
        "b one",
        "b three",
        "b three",
        "b three",
    ]
    a = OracleRawReplay(conv, 0)
    assert [a.reply(request(t)) for t in (1.5, 2.0, 3.5, 4.0)] == ["", "a one", "a one", "a two"]
    assert OracleRawReplay(hand_conversation(words), 1).reply(request(10.0)) == ""


# -- hint levels ---------------------------------------------------------------------------------


def test_hint_level_examples():
    examples = {0.0: 0, 0.5: 0, 0.51: 1, 0.65: 1, 0.7: 2, 0.8: 2, 0.9: 3, 0.95: 3, 0.97: 4, 0.99: 4}
    examples |= {0.995: 5, 1.0: 5}
    assert {r: hint_level(r) for r in examples} == examples


@pytest.mark.parametrize(("level", "bound"), list(enumerate((0.5, 0.65, 0.8, 0.95, 0.99))))
def test_hint_level_boundaries_are_inclusive_upper_bounds(level, bound):
    assert HINT_LEVEL_BOUNDS[level] == bound
    assert hint_level(bound) == level  # level i covers r <= bound i
    assert hint_level(math.nextafter(bound, 2.0)) == level + 1
    assert hint_level(math.nextafter(bound, 0.0)) == level


# -- ProgressiveHintSource on the demo -----------------------------------------------------------

A_WORDS = [w for w in DEMO.words if w.speaker == "A"]
B_WORDS = [w for w in DEMO.words if w.speaker == "B"]


def demo_user_utterances() -> list[list[Word]]:
    """A's utterances, split here by hand-checked pauses of >= 0.8 s (independent of the library)."""
    out: list[list[Word]] = [[A_WORDS[0]]]
    for prev, word in itertools.pairwise(A_WORDS):
        if word.start - prev.end >= GAP:
            out.append([])
        out[-1].append(word)
    return out


UTTERANCES = demo_user_utterances()


def demo_reply_after(k: int) -> list[str]:
    """B's words between the end of A's utterance ``k`` and the start of A's next one."""
    end = UTTERANCES[k][-1].end
    until = UTTERANCES[k + 1][0].start if k + 1 < len(UTTERANCES) else math.inf
    return [w.text for w in B_WORDS if end <= w.start < until]


def hint_source(seed: int = 0, max_words: int = 30, conv: Conversation = DEMO) -> ProgressiveHintSource:
    return ProgressiveHintSource(conv, "A", "B", GAP, np.random.default_rng(seed), max_words)


def overlap(reply: str, truth: list[str]) -> float:
    """Share of the truth's positions where the reply has the true word."""
    words = reply.split()
    return sum(1 for k, t in enumerate(truth) if k < len(words) and words[k] == t) / len(truth)


def test_demo_has_the_expected_utterances():
    assert [len(u) for u in UTTERANCES] == [16, 12, 3, 6]
    expected = "pizza express on regent street is cheap would you like a table there"
    assert " ".join(demo_reply_after(0)) == expected


def test_fully_heard_utterance_gives_exactly_the_next_reply():
    raw_hints = {p.hint for p in DEMO.oracle_raw if p.channel == 1 and p.hint}
    source = hint_source()
    for k, utterance in enumerate(UTTERANCES):
        truth = " ".join(demo_reply_after(k))
        assert truth
        end = utterance[-1].end
        assert source.reply(request(end)) == truth
        # While the last word is being spoken the utterance is not fully heard yet.
        assert source.reply(request((utterance[-1].start + end) / 2)) != truth
        assert source.reply(request(end + 0.3)) == truth
        if k < 3:
            assert truth in raw_hints  # the recorded ground-truth hint agrees
    assert len(raw_hints) == 3


def test_replies_before_the_first_user_word_are_empty():
    source = hint_source()
    first = A_WORDS[0].start
    assert [source.reply(request(t)) for t in (0.0, first / 2, math.nextafter(first, 0.0))] == ["", "", ""]
    assert source.reply(request(first)) != ""


def test_also_empty_before_the_user_when_the_frontend_speaker_talks_first():
    conv = hand_conversation(
        [Word("B", "hello", 0.0, 0.4), Word("A", "hi", 1.0, 1.3), Word("B", "how", 1.8, 2.0)]
    )
    source = hint_source(conv=conv)
    assert source.reply(request(0.5)) == ""
    assert source.reply(request(1.3)) == "how"


def mean_overlap(now: float, truth: list[str], seeds: range, conv: Conversation = DEMO) -> float:
    replies = [hint_source(seed, conv=conv).reply(request(now)) for seed in seeds]
    return float(np.mean([overlap(reply, truth) for reply in replies]))


def test_demo_reply_converges_on_the_truth_as_the_utterance_is_heard():
    utterance, truth = UTTERANCES[0], demo_reply_after(0)
    seeds = range(300)
    # 16 words: after 4 (r = .25, level 0), 9 (.56, level 1), 12 (.75, level 2), 15 (.94, level 3).
    levels = {}
    for heard in (4, 9, 12, 15):
        now = utterance[heard - 1].end
        levels[heard] = mean_overlap(now, truth, seeds)
    assert levels[4] < levels[9] < levels[12] < levels[15] < 1.0
    assert levels[4] <= 0.1
    assert 0.1 <= levels[9] <= 0.35
    assert levels[15] >= 0.45
    assert mean_overlap(utterance[-1].end, truth, range(5)) == 1.0


def long_conversation(n_user: int = 200, n_reply: int = 40) -> Conversation:
    """A speaks ``n_user`` words (w0 w1 ...) without a pause, then B says ``n_reply`` (b0 b1 ...)."""
    words = [Word("A", f"w{i}", 0.2 * i, 0.2 * i + 0.15) for i in range(n_user)]
    t0 = 0.2 * n_user + 0.5
    words += [Word("B", f"b{i}", t0 + 0.2 * i, t0 + 0.2 * i + 0.15) for i in range(n_reply)]
    return hand_conversation(words)


def test_every_hint_level_is_reached_and_ordered():
    conv = long_conversation()
    truth = [f"b{i}" for i in range(30)]  # capped at max_words = 30

    def after(heard: int) -> float:
        return 0.2 * (heard - 1) + 0.16  # word heard-1 has ended, word heard has not

    # Heard 50, 120, 150, 180, 195, 199 of 200 words: r = .25 .6 .75 .9 .975 .995 -> levels 0..5.
    heard_by_level = (50, 120, 150, 180, 195, 199)
    assert [hint_level(h / 200) for h in heard_by_level] == [0, 1, 2, 3, 4, 5]
    means = [mean_overlap(after(h), truth, range(200), conv) for h in heard_by_level]
    assert means == sorted(means) and len(set(means)) == 6
    assert means[0] == 0.0  # no truth at all without a hint
    assert means[5] == 1.0
    for got, roughly in zip(means[1:5], (0.2, 0.4, 0.6, 0.8), strict=True):
        assert abs(got - roughly) < 0.1
    assert hint_source(conv=conv).reply(request(after(200))) == " ".join(truth)


def test_replies_respect_the_word_limits():
    conv = long_conversation()
    for max_words in (5, 12, 30):
        source = hint_source(max_words=max_words, conv=conv)
        for now in np.arange(0.0, 50.0, 0.37):
            n = len(source.reply(request(float(now))).split())
            assert n <= max_words
            if max_words >= 10:
                assert n >= 10  # kame_finetune's predictions are 10-30 words
        assert source.reply(request(41.0)) == " ".join(f"b{i}" for i in range(max_words))
    # The demo's last reply has 7 words; in-progress guesses are still padded to 10.
    source = hint_source(max_words=5)
    last = UTTERANCES[-1]
    assert source.reply(request(last[-1].end)) == " ".join(demo_reply_after(3)[:5])
    assert len(hint_source().reply(request(last[0].end)).split()) == 10


def test_same_seed_same_replies():
    times = [float(t) for t in np.arange(0.0, 38.0, 0.25)]
    source = hint_source(7)
    first = [source.reply(request(t)) for t in times]
    again = hint_source(7)
    assert [again.reply(request(t)) for t in times] == first
    other = hint_source(8)
    assert [other.reply(request(t)) for t in times] != first
