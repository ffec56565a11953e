"""Group one speaker's words into utterances by silence.

The simulated STT finalises an utterance after a pause, and the metrics measure latency from the
end of an utterance, so both need the same segmentation; it lives here so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from kame_sim.conversation.model import Word

# Timestamps are decimal seconds (ms resolution); without a tolerance 1.4 - 0.6 < 0.8 in binary
# floating point, and a pause of exactly ``gap`` would not split.
GAP_TOLERANCE_S = 1e-9


def user_utterances(words: Sequence[Word], gap: float) -> list[tuple[Word, ...]]:
    """Split ``words`` (one speaker, sorted by start) wherever the silence is ``>= gap`` seconds.

    The silence before a word is measured from the latest end of any earlier word of the current
    utterance, not just the previous word: aligners sometimes nest a short word inside a longer one
    (SpokenWOZ MUL1423), and measuring from the nested word's end would invent a pause that the
    speaker never made.
    """
    if not gap > 0:
        raise ValueError(f"utterance gap must be > 0 seconds, got {gap!r}")
    utterances: list[tuple[Word, ...]] = []
    current: list[Word] = []
    latest_end = 0.0
    for k, word in enumerate(words):
        if current:
            previous = current[-1]
            if word.speaker != previous.speaker:
                raise ValueError(
                    f"user_utterances expects one speaker's words; word {k} is {word.speaker!r}, "
                    f"not {previous.speaker!r}"
                )
            if word.start < previous.start:
                raise ValueError(f"words must be sorted by start; word {k} ({word.text!r}) is not")
            if word.start - latest_end >= gap - GAP_TOLERANCE_S:
                utterances.append(tuple(current))
                current = []
        latest_end = max(latest_end, word.end) if current else word.end
        current.append(word)
    if current:
        utterances.append(tuple(current))
    return utterances
