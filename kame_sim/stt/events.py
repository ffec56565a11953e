"""What every recogniser produces: partial and final results with their arrival times.

Shared by the simulated recogniser, faster-whisper's streaming policy and the STT cassette, so that
KAME's ASR state (kame_sim/policy/asr_state.py) never knows where its events came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class SttEvent:
    """One recogniser result: when it arrives, what it says, and the delay that was drawn."""

    kind: Literal["partial", "final"]
    arrival: float
    text: str
    utterance: int
    delay: float
    speech_time: float
