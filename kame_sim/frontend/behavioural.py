"""A behavioural model of KAME's front-end: fast, non-neural, and *not* KAME.

It exists so the whole back-end/oracle pipeline can be exercised at thousands of times real time
without a GPU. What it models, in simulated frames:

* **Turn taking.** While listening, it takes the turn once the user has said something new and
  then been silent for ``turn_take_pause``. While speaking, it stops when the user has been
  speaking for ``yield_after`` (barge-in), or when it has nothing left to say. Shorter user speech
  during its turn is a backchannel: it does not count as something new to answer.
* **Speaking.** One text token every ``12.5 / tokens_per_second`` frames (padding in between).
* **Following the oracle.** Oracle tokens fed at step ``s`` become visible to it at
  ``s + reaction_delay``. A START token begins a fresh oracle text. A turn speaks the fresh
  oracle text if one has arrived since its last turn, otherwise its own guess (``guess_text``);
  when a fresh oracle arrives mid-turn it switches to it at the same token position: the
  self-correction KAME is built for. While the oracle is still arriving (non-padding tokens are
  being fed) and has not reached its position, it bridges with its guess; once padding follows the
  oracle text, the text is finished and so is the turn. Stale oracle text is not spoken twice.

Real KAME's timing and wording are learned, not rules; use ``frontend = "kame"`` for that.
"""

from __future__ import annotations

from collections import deque

from kame_sim.config import BehaviouralSettings
from kame_sim.frontend.protocol import SessionInfo
from kame_sim.tokenizer import TextTokenizer


class BehaviouralFrontend:
    """Rule-based front-end; see the module docstring for the rules."""

    name = "behavioural"

    def __init__(self, settings: BehaviouralSettings, tokenizer: TextTokenizer, padding_id: int = 3) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.padding_id = padding_id
        self.start_id = tokenizer.start_id
        self._guess = tokenizer.encode(settings.guess_text) or [padding_id]
        self._vad: list[bool] = []

    def start_session(self, session: SessionInfo) -> None:
        fs = session.frame_seconds
        self._vad = [bool(v) for v in session.user_voice_activity]
        self._pause_frames = max(1, round(self.settings.turn_take_pause / fs))
        self._yield_frames = max(1, round(self.settings.yield_after / fs))
        self._reaction_frames = round(self.settings.reaction_delay / fs)
        self._frames_per_token = 1.0 / (self.settings.tokens_per_second * fs)
        self._seen: deque[tuple[int, int]] = deque()  # (visible_at_step, token)
        self._oracle: list[int] = []
        self._oracle_fresh = False
        self._oracle_streaming = False
        self._speaking = False
        self._script: list[int] = []
        self._script_is_oracle = False
        self._pos = 0
        self._phase = 0.0
        self._silent_frames = 0
        self._user_frames = 0
        self._user_said_something = False

    def _observe_oracle(self, step: int, oracle_token: int) -> None:
        self._seen.append((step + self._reaction_frames, oracle_token))
        seen = self._seen
        while seen and seen[0][0] <= step:
            token = seen.popleft()[1]
            if token == self.padding_id:
                self._oracle_streaming = False  # the oracle text (if any) has ended for now
            elif token == self.start_id:
                self._oracle = []
                self._oracle_fresh = True
                self._oracle_streaming = True
                if self._speaking:
                    self._script, self._script_is_oracle = self._oracle, True
            else:
                self._oracle.append(token)
                self._oracle_streaming = True

    def _update_turn(self, step: int) -> None:
        user_active = self._vad[step] if step < len(self._vad) else False
        if user_active:
            self._silent_frames = 0
            self._user_frames += 1
            # Speech under its own turn is a backchannel unless it grows into a barge-in.
            if not self._speaking:
                self._user_said_something = True
        else:
            self._silent_frames += 1
            self._user_frames = 0
        if self._speaking:
            if self._user_frames >= self._yield_frames:
                self._end_turn()
                self._user_said_something = True
        elif self._user_said_something and self._silent_frames >= self._pause_frames:
            self._speaking = True
            self._user_said_something = False
            # step() adds one frame before comparing, so this makes the first token come at once
            # and the next one a full 12.5 / tokens_per_second frames later.
            self._phase = self._frames_per_token - 1.0
            self._pos = 0
            if self._oracle_fresh:
                self._script, self._script_is_oracle = self._oracle, True
            else:
                self._script, self._script_is_oracle = self._guess, False

    def _end_turn(self) -> None:
        self._speaking = False
        if self._script_is_oracle:
            self._oracle_fresh = False

    def step(self, step: int, oracle_token: int) -> tuple[int, str]:
        self._observe_oracle(step, oracle_token)
        self._update_turn(step)
        if not self._speaking:
            return self.padding_id, ""
        self._phase += 1.0
        if self._phase < self._frames_per_token:
            return self.padding_id, ""
        self._phase -= self._frames_per_token
        pos = self._pos
        if pos < len(self._script):
            token = self._script[pos]
        elif self._script_is_oracle and self._oracle_streaming and pos < len(self._guess):
            token = self._guess[pos]  # the oracle is still arriving but has not reached this position
        else:
            self._end_turn()
            return self.padding_id, ""
        self._pos = pos + 1
        return token, self.tokenizer.piece(token)

    def end_session(self) -> None:
        """Nothing to release: all state is plain Python, rebuilt by ``start_session``."""
