"""Front-ends stepped for B lockstep replicas at once (kame_sim/lockstep.py drives them).

A batch front-end takes one step per frame for every replica together: replica ``i`` feeds its own
oracle token and gets its own (text token, piece) back. :class:`LoopedBatch` steps B independent
single front-ends one after another (the behavioural front-end: its rules cost microseconds);
:class:`kame_sim.frontend.kame.frontend.KameBatchFrontend` runs ONE batched LM step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kame_sim.frontend.protocol import Frontend, SessionInfo


class BatchFrontend(Protocol):
    """B replicas of a front-end, stepped together by the simulation clock."""

    name: str
    batch_size: int

    def start_sessions(self, sessions: Sequence[SessionInfo]) -> None:
        """Prepare replica ``i`` for ``sessions[i]`` (all with the same number of frames)."""
        ...

    def step_batch(self, step: int, oracle_tokens: Sequence[int]) -> list[tuple[int, str]]:
        """Run frame ``step`` with replica ``i`` fed ``oracle_tokens[i]``; one (token, piece) each."""
        ...

    def end_sessions(self) -> None:
        """Every replica's session is over (also after a crash)."""
        ...


class LoopedBatch:
    """B single front-ends, one per replica, stepped in turn."""

    def __init__(self, frontends: Sequence[Frontend]) -> None:
        if not frontends:
            raise ValueError("a batch needs at least one front-end")
        self.frontends = list(frontends)
        self.batch_size = len(self.frontends)
        self.name = self.frontends[0].name

    def start_sessions(self, sessions: Sequence[SessionInfo]) -> None:
        if len(sessions) != self.batch_size:
            raise ValueError(f"{len(sessions)} sessions for a batch of {self.batch_size}")
        for frontend, session in zip(self.frontends, sessions, strict=True):
            frontend.start_session(session)

    def step_batch(self, step: int, oracle_tokens: Sequence[int]) -> list[tuple[int, str]]:
        return [f.step(step, t) for f, t in zip(self.frontends, oracle_tokens, strict=True)]

    def end_sessions(self) -> None:
        errors: list[BaseException] = []
        for frontend in self.frontends:
            try:
                frontend.end_session()
            except Exception as exc:  # end every replica's session, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]


class ReplicaView:
    """What replica ``index``'s session sees as its front-end: the batch's name, no stepping.

    A lockstep session is stepped by the driver through the batch; this stands in
    ``SessionParts.frontend`` so the session's trace names the front-end it ran.
    """

    def __init__(self, batch: BatchFrontend, index: int) -> None:
        self.batch = batch
        self.index = index
        self.name = batch.name

    def start_session(self, session: SessionInfo) -> None:
        raise RuntimeError("a lockstep replica's front-end is started by its batch")

    def step(self, step: int, oracle_token: int) -> tuple[int, str]:
        raise RuntimeError("a lockstep replica's front-end is stepped by its batch")

    def end_session(self) -> None:
        raise RuntimeError("a lockstep replica's front-end is ended by its batch")
