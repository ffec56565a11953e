"""The front-end interface: one step per 80 ms frame, oracle token in, text token out.

The simulator drives every front-end the same way: :meth:`Frontend.start_session` once per
conversation (precompute what does not depend on the simulation: voice activity, audio codes),
then :meth:`Frontend.step` once per frame with the oracle token KAME would feed at that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kame_sim.conversation import Conversation


@dataclass(frozen=True)
class SessionInfo:
    """What a front-end needs to know about the session it is about to play."""

    conversation: Conversation
    user_channel: int
    frontend_channel: int
    user_speaker: str
    n_frames: int
    frame_seconds: float
    user_voice_activity: np.ndarray  # bool [n_frames]: the user is speaking in frame k


class Frontend(Protocol):
    """A front-end stepped by the simulation clock."""

    name: str

    def start_session(self, session: SessionInfo) -> None:
        """Prepare for a new conversation (state from an earlier one is discarded)."""
        ...

    def step(self, step: int, oracle_token: int) -> tuple[int, str]:
        """Run frame ``step`` with ``oracle_token`` fed; return (text token id, its text piece)."""
        ...

    def end_session(self) -> None:
        """The session is over (also after a crash): release per-session resources, write outputs."""
        ...
