"""KAME's LLM stream-manager policy (kame-reference.md §5), as a pure decision function.

The SimPy process in :mod:`kame_sim.sim` calls :meth:`StreamManagerPolicy.on_tick` every
``poll_interval`` simulated seconds and starts a stream when told to; keeping the rule free of
SimPy, clocks and I/O lets the tests drive it with hand-written event sequences.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from kame_sim.policy.asr_state import AsrState

TickOutcome = Literal["idle", "start", "rate_limited"]


@dataclass(frozen=True, slots=True)
class TickDecision:
    """What a poll tick decided and why (the reason goes into the trace)."""

    outcome: TickOutcome
    reason: str
    total_words: int


class StreamManagerPolicy:
    """Start/restart rule with KAME's defaults: >= 2 new user words or a final, 5 starts per 2 s."""

    def __init__(self, restart_word_delta: int = 2, max_starts: int = 5, rate_window: float = 2.0) -> None:
        self.restart_word_delta = restart_word_delta
        self.max_starts = max_starts
        self.rate_window = rate_window
        self.ever_started = False
        self.total_at_last_start = 0
        self._recent_starts: deque[float] = deque()

    def on_tick(self, now: float, asr: AsrState) -> TickDecision:
        """Decide at time ``now``; consumes ``asr.final_bump`` whether or not a start happens."""
        total = asr.total_words()
        bump = asr.final_bump
        asr.final_bump = False
        if not self.ever_started:
            wanted = bool(asr.pending.strip()) or bump
            reason = "first" if wanted else ""
        elif bump:
            wanted, reason = True, "final"
        elif total - self.total_at_last_start >= self.restart_word_delta:
            wanted, reason = True, "words"
        else:
            wanted, reason = False, ""
        if not wanted:
            return TickDecision("idle", "", total)
        # KAME forgets a start only once it is strictly older than the window.
        while self._recent_starts and now - self._recent_starts[0] > self.rate_window:
            self._recent_starts.popleft()
        if len(self._recent_starts) >= self.max_starts:
            return TickDecision("rate_limited", reason, total)
        self._recent_starts.append(now)
        self.ever_started = True
        self.total_at_last_start = total
        return TickDecision("start", reason, total)


def poll_request(conversation: str, pending: str) -> str:
    """KAME's poll-loop ``_build_messages``: the conversation, then ``"\\nuser: {pending} "``.

    The newline is added even to an empty conversation (KAME strips the conversation's end and
    then adds one whenever it does not already end with a newline).
    """
    request = conversation.rstrip()
    pending = pending.strip()
    if pending:
        request += f"\nuser: {pending} "
    return request
