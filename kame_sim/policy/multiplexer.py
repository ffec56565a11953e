"""KAME's stream multiplexer (kame-reference.md §5b), as pure decision logic.

The newer KAME back-end (``LLMStreamMultiplexer`` on KAME's main branch) replaced the poll loop
(:mod:`kame_sim.policy.poll_loop`) with an event-driven one:

* every ASR partial is a start candidate; starts are at least ``min_restart_interval`` apart, and
  a candidate inside that gap schedules ONE trailing start at ``last_start + interval``;
* a final bypasses the interval (unless its text is exactly what the last start already asked
  for in this utterance) and cancels the pending trailing start;
* no start without user input (a pending partial, or the conversation's last line is the user's);
* streams overlap: a start cancels nothing. The first non-blank delta of a generation newer than
  the adopted one makes it the adopted one: the event queue is flushed, every older live stream is
  cancelled; deltas of any other generation are ignored;
* at most ``max_concurrent_streams`` live streams: after every start and every adoption the adopted
  one plus the newest not-yet-emitting ones are kept, the rest cancelled.

This module decides; :mod:`kame_sim.sim` executes (SimPy processes, queue, trace rows). Times are
integer ticks (:mod:`kame_sim.clock`), so the interval edge is exact: a candidate exactly
``min_restart_interval`` after the last start starts (KAME refuses only ``now - last < interval``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CancelReason = Literal["superseded", "adoption", "limit", "session_end"]
StartOutcome = Literal["start", "deferred", "skipped", "idle"]


def normalise(text: str) -> str:
    """Whitespace-normalised text: what a partial is compared by."""
    return " ".join(text.split())


def last_speaker(conversation: str) -> str | None:
    """KAME's ``get_last_speaker``: the label before ':' on the last non-empty line."""
    for line in reversed(conversation.strip().split("\n")):
        line = line.strip()
        if line and ":" in line:
            return line.split(":", 1)[0].strip()
    return None


def multiplexer_request(conversation: str, pending: str, max_chars: int) -> tuple[str, bool]:
    """KAME's ``_build_messages_from_state``: the user message and whether there is user input.

    Unlike the poll loop's request, no newline is put in front of the pending line when the
    conversation is still empty, and the message is trimmed to its last ``max_chars`` characters.
    """
    committed = conversation.rstrip()
    pending = pending.strip()
    if pending:
        if committed and not committed.endswith("\n"):
            committed += "\n"
        committed += f"user: {pending} "
        has_user_input = True
    else:
        has_user_input = last_speaker(committed) == "user"
    if len(committed) > max_chars:
        committed = committed[-max_chars:]
    return committed, has_user_input


@dataclass(frozen=True, slots=True)
class StartDecision:
    """What a candidate (partial, final or trailing timer) led to.

    ``start``: a new stream ``generation`` with ``request``; ``limit_cancels`` are the generations
    the concurrency limit cancelled right after it. ``deferred``: a trailing start is scheduled at
    ``at``. ``skipped``: a start was due but refused (``reason``). ``idle``: nothing to do.
    """

    outcome: StartOutcome
    reason: str
    generation: int = 0
    request: str = ""
    pending: str = ""
    at: int | None = None
    limit_cancels: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class EmitDecision:
    """What a stream's first non-blank delta led to.

    Adopted: ``flush`` the event queue, cancel ``adoption_cancels`` (older live streams), then
    ``limit_cancels``; the delta is enqueued. Not adopted (``ignored``): this stream is older than
    the adopted one, and neither this delta nor any later one of it reaches the oracle.
    """

    adopted: bool
    adoption_cancels: tuple[int, ...] = ()
    limit_cancels: tuple[int, ...] = ()


@dataclass
class StreamMultiplexerPolicy:
    """KAME's multiplexer with its constants as settings (KAME's values as defaults).

    ``min_restart_interval`` is in ticks. The switches turn single rules off for what-if studies;
    all on is KAME.
    """

    min_restart_interval: int = 500_000
    max_concurrent_streams: int = 7
    max_prompt_chars: int = 6000
    trailing_start: bool = True
    final_bypass: bool = True
    skip_final_equal_to_requested: bool = True
    require_user_input: bool = True

    utterance: int = 0
    pending: str = ""
    adopted: int = 0
    last_start: int | None = None
    trailing_at: int | None = None
    _trailing_utterance: int = -1
    _generations: int = 0
    _requested: tuple[int, str] | None = None
    # live generation -> whether it has emitted a non-blank delta (dicts keep start order)
    _live: dict[int, bool] = field(default_factory=dict)

    # -- ASR events -------------------------------------------------------------------------------

    def on_partial(self, now: int, text: str, conversation: str) -> StartDecision:
        """A changed partial: remember it and treat it as a start candidate."""
        self.pending = text
        return self._candidate(now, "partial", conversation)

    def on_final(self, now: int, text: str, conversation: str) -> StartDecision:
        """A final, already appended to ``conversation`` by the caller (when non-blank).

        The pending partial is cleared either way; a non-blank final also ends the utterance,
        cancels the trailing start and starts at once (unless it repeats the last request).
        """
        self.pending = ""
        final = normalise(text)
        if not final:
            return StartDecision("idle", "blank final")
        finished = self.utterance
        self.utterance += 1
        self.trailing_at = None
        if self.skip_final_equal_to_requested and self._requested == (finished, final):
            return StartDecision("skipped", "final equals the last requested partial")
        if self.final_bypass:
            return self._start(now, "final", conversation)
        return self._candidate(now, "final", conversation)

    def on_trailing(self, now: int, conversation: str) -> StartDecision:
        """The trailing timer fired; stale timers (cancelled or replaced) do nothing."""
        if self.trailing_at != now or self._trailing_utterance != self.utterance:
            return StartDecision("idle", "stale trailing start")
        self.trailing_at = None
        return self._start(now, "trailing", conversation)

    # -- streams ----------------------------------------------------------------------------------

    def on_first_delta(self, generation: int) -> EmitDecision:
        """A stream's first non-blank delta: adopt it if it is newer than the adopted one."""
        if generation in self._live:
            self._live[generation] = True
        if generation <= self.adopted:
            return EmitDecision(False)
        older = tuple(g for g in self._live if g < generation)
        for g in older:
            del self._live[g]
        self.adopted = generation
        return EmitDecision(True, older, self._enforce_limit())

    def accepts(self, generation: int) -> bool:
        """Whether a delta of ``generation`` is enqueued (only the adopted generation's are)."""
        return generation == self.adopted

    def on_stream_end(self, generation: int) -> None:
        """A stream finished or failed by itself: it no longer counts as live."""
        self._live.pop(generation, None)

    def end_session(self) -> tuple[int, ...]:
        """Every live stream, cancelled because the session ends."""
        live = tuple(self._live)
        self._live.clear()
        self.trailing_at = None
        return live

    @property
    def live(self) -> tuple[int, ...]:
        """Live generations, oldest first."""
        return tuple(self._live)

    # -- rules ------------------------------------------------------------------------------------

    def _candidate(self, now: int, reason: str, conversation: str) -> StartDecision:
        if self.last_start is not None and now - self.last_start < self.min_restart_interval:
            if not self.trailing_start:
                return StartDecision("idle", "inside the restart interval")
            if self.trailing_at is not None:
                return StartDecision("idle", "a trailing start is already pending")
            self.trailing_at = self.last_start + self.min_restart_interval
            self._trailing_utterance = self.utterance
            return StartDecision("deferred", reason, at=self.trailing_at)
        return self._start(now, reason, conversation)

    def _start(self, now: int, reason: str, conversation: str) -> StartDecision:
        request, has_user_input = multiplexer_request(conversation, self.pending, self.max_prompt_chars)
        if self.require_user_input and not has_user_input:
            return StartDecision("skipped", "no user input")
        self.last_start = now
        self._generations += 1
        generation = self._generations
        self._live[generation] = False
        pending = normalise(self.pending)
        self._requested = (self.utterance, pending)
        return StartDecision(
            "start", reason, generation, request, pending, limit_cancels=self._enforce_limit()
        )

    def _enforce_limit(self) -> tuple[int, ...]:
        """Keep the adopted stream plus the newest not-yet-emitting ones; cancel the rest."""
        if len(self._live) <= self.max_concurrent_streams:
            return ()
        keep: set[int] = set()
        if self.adopted in self._live:
            keep.add(self.adopted)
        silent_newest_first = [
            g for g in sorted(self._live, reverse=True) if not self._live[g] and g != self.adopted
        ]
        budget = self.max_concurrent_streams - len(keep)
        keep.update(silent_newest_first[: max(budget, 0)])
        cancelled = tuple(g for g in self._live if g not in keep)
        for g in cancelled:
            del self._live[g]
        return cancelled
