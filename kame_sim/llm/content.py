"""Simulated LLM *content*: what the back-end would say, without a network.

Two sources stand behind the same :class:`LlmContentSource` protocol:

* :class:`OracleRawReplay` replays the predictions recorded in a conversation's oracle_raw file:
  the latest prediction addressed to the front-end's channel at request time.
* :class:`ProgressiveHintSource` follows kame_finetune's hint levels (kame-reference.md §7): the
  more of the user's current utterance has been heard, the closer the text gets to the real next
  utterance of the front-end's speaker. It is a model of an LLM's accuracy, not an LLM.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kame_sim.conversation import Conversation, Word, user_utterances


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """What KAME sends: the conversation so far and the pending partial, at simulated time ``now``."""

    now: float
    conversation: str
    pending: str
    stream_id: int


class LlmContentSource(Protocol):
    """Text of the reply the LLM streams back for a request."""

    def reply(self, request: LlmRequest) -> str: ...


class OracleRawReplay:
    """Latest recorded prediction for ``channel`` with timestamp <= request time ('' if none)."""

    def __init__(self, conversation: Conversation, channel: int) -> None:
        entries = [p for p in conversation.oracle_raw if p.channel == channel]
        self._times = [p.timestamp_s for p in entries]
        self._texts = [p.prediction for p in entries]

    def reply(self, request: LlmRequest) -> str:
        i = bisect.bisect_right(self._times, request.now) - 1
        return self._texts[i] if i >= 0 else ""


# Share of the true next utterance's words kept at each hint level (level 0 = no hint).
HINT_LEVEL_BOUNDS = (0.5, 0.65, 0.8, 0.95, 0.99)
HINT_LEVEL_FIDELITY = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Words a level-0 guess is made of: a generic, plausible-sounding agent reply.
GENERIC_REPLY = (
    "sure i can help you with that let me check what we have available and get back to you "
    "in just a moment is there anything else you would like"
)
GENERIC_REPLY_WORDS = tuple(GENERIC_REPLY.split())


def hint_level(spoken_ratio: float) -> int:
    """kame_finetune's hint level for the share of the current utterance heard so far."""
    return bisect.bisect_left(HINT_LEVEL_BOUNDS, spoken_ratio)


class ProgressiveHintSource:
    """Predictions that converge on the front-end speaker's real next utterance.

    At request time the user's current utterance (the one being spoken, or the last one) is found
    from the word timings; its spoken ratio ``r`` picks a hint level. The reply keeps a level-
    dependent share of the true next utterance's words (the rest is replaced by generic words,
    chosen with the source's own random stream) and is exactly the truth once ``r >= 1``.
    Guesses are 10–30 words, as kame_finetune's predictions are; the exact truth may be shorter.
    """

    def __init__(
        self,
        conversation: Conversation,
        user_speaker: str,
        frontend_speaker: str,
        utterance_gap: float,
        rng: np.random.Generator,
        max_words: int = 30,
    ) -> None:
        self._utterances = user_utterances(conversation.words_of(user_speaker), utterance_gap)
        self._starts = [u[0].start for u in self._utterances]
        self._frontend_words = conversation.words_of(frontend_speaker)
        self._frontend_starts = [w.start for w in self._frontend_words]
        self._rng = rng
        self._max_words = max_words
        self._utterance_gap = utterance_gap

    def _truth_after(self, t: float) -> list[str]:
        """The front-end speaker's next utterance starting after ``t`` (its words, capped)."""
        i = bisect.bisect_left(self._frontend_starts, t)
        words: list[Word] = list(self._frontend_words[i : i + self._max_words])
        out: list[str] = []
        for k, word in enumerate(words):
            if k and word.start - words[k - 1].end >= self._utterance_gap:
                break
            out.append(word.text)
        return out

    def reply(self, request: LlmRequest) -> str:
        now = request.now
        u = bisect.bisect_right(self._starts, now) - 1
        if u < 0:
            return ""
        utterance: Sequence[Word] = self._utterances[u]
        heard = sum(1 for w in utterance if w.end <= now)
        ratio = heard / len(utterance)
        truth = self._truth_after(utterance[-1].start)
        if not truth:
            return ""
        if ratio >= 1.0:
            return " ".join(truth)
        keep = HINT_LEVEL_FIDELITY[hint_level(ratio)]
        length = max(10, len(truth))
        out = []
        for k in range(length):
            if k < len(truth) and self._rng.random() < keep:
                out.append(truth[k])
            else:
                out.append(GENERIC_REPLY_WORDS[k % len(GENERIC_REPLY_WORDS)])
        return " ".join(out[: self._max_words])
