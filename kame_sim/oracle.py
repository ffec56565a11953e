"""The oracle channel: KAME's bounded queue and its time-anchored reset/append state.

Two halves, both pure Python so they can be tested frame by frame against hand-computed answers:

* :class:`OracleQueue` is the asyncio queue between the LLM stream tasks and the audio loop in
  KAME's server: bounded (64 items for the poll loop, 256 for the multiplexer). What a put on a
  full queue does is the policy's business (the poll loop drops the item, a reset too; the
  multiplexer's stream waits for room): :meth:`OracleQueue.put` only refuses. The audio loop
  drains it at every frame boundary (all of it, or as many items as its budget allows).
* :class:`OracleState` is what the front-end consumes: a token list anchored at the step of the
  last reset. At step ``s`` the token fed is ``tokens[s - anchor]`` when that index exists,
  otherwise the text padding id. There is no read pointer: a token appended after its slot has
  passed is skipped for good, never played late (kame-reference.md §2).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

OracleAction = Literal["reset", "append"]


@dataclass(frozen=True, slots=True)
class OracleItem:
    """One queue item, as KAME's LLM stream enqueues it."""

    action: OracleAction
    text: str
    stream_id: int
    enqueued_at: int  # ticks (kame_sim.clock)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What applying one append did: how many tokens it added and how many of them were late."""

    n_tokens: int
    n_skipped: int
    first_index: int


class OracleQueue:
    """KAME's bounded oracle queue: ``put`` refuses (returns False) when the queue is full."""

    def __init__(self, maxsize: int = 64) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be >= 1")
        self.maxsize = maxsize
        self._items: deque[OracleItem] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: OracleItem) -> bool:
        """Enqueue ``item``; return False (and keep nothing) when the queue is full."""
        if len(self._items) >= self.maxsize:
            return False
        self._items.append(item)
        return True

    @property
    def full(self) -> bool:
        """No room for another item."""
        return len(self._items) >= self.maxsize

    def drain(self, max_items: int | None = None) -> list[OracleItem]:
        """Take queued items, oldest first: all of them, or at most ``max_items`` (the drain budget)."""
        if not self._items:
            return []
        if max_items is None or max_items >= len(self._items):
            items = list(self._items)
            self._items.clear()
            return items
        return [self._items.popleft() for _ in range(max_items)]

    def flush(self) -> int:
        """Discard every queued item (the multiplexer's adoption); return how many there were."""
        n = len(self._items)
        self._items.clear()
        return n


class OracleState:
    """KAME's oracle stream: ``tokens`` anchored at the step of the last reset.

    ``start_id`` is the START token (``text_card``) that a reset puts first; ``padding_id`` is fed
    whenever no token is due. One instance per simulated session (per replica).
    """

    def __init__(self, start_id: int, padding_id: int = 3) -> None:
        self.start_id = start_id
        self.padding_id = padding_id
        self.tokens: list[int] | None = None
        self.anchor = 0

    def clear(self) -> None:
        """Forget the oracle (a fresh session). KAME itself does not do this on reset_streaming."""
        self.tokens = None
        self.anchor = 0

    def reset(self, step: int) -> None:
        """Start a new oracle at ``step``: ``[START]`` fed at ``step``, appended text after it."""
        self.tokens = [self.start_id]
        self.anchor = step

    def append(self, ids: list[int], step: int) -> AppendResult:
        """Append ``ids``; an append with no oracle yet first behaves as a reset at ``step``.

        ``n_skipped`` counts the appended tokens whose slot lies before ``step`` (the step about to
        be fed): they will never be fed. An empty list changes nothing, not even the implicit reset.
        """
        if not ids:
            return AppendResult(0, 0, len(self.tokens) if self.tokens is not None else 0)
        if self.tokens is None:
            self.reset(step)
        assert self.tokens is not None
        first_index = len(self.tokens)
        self.tokens.extend(ids)
        rel_now = step - self.anchor
        n_skipped = max(0, min(len(self.tokens), rel_now) - first_index)
        return AppendResult(len(ids), n_skipped, first_index)

    def token_at(self, step: int) -> tuple[int, int | None]:
        """The token fed at ``step`` and its index in the oracle (None when padding is fed)."""
        tokens = self.tokens
        if tokens is not None:
            rel = step - self.anchor
            if 0 <= rel < len(tokens):
                return tokens[rel], rel
        return self.padding_id, None
