"""The conversation text the LLM sees, built as KAME builds it (``user:``/``moshi:`` lines).

Committed text only: STT finals for the user, emitted text pieces for the front-end.
"""

from __future__ import annotations


class ConversationLog:
    """KAME's ``conversation_text``: consecutive text of one speaker joins one line."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._speaker: str | None = None
        self._moshi_line: list[str] = []

    def add(self, speaker: str, text: str) -> None:
        """Append committed text for ``speaker`` ("user" or "moshi")."""
        if speaker != "moshi":
            self._flush_word()
        text = text.strip()
        if not text:
            return
        if speaker != self._speaker:
            if self._parts:
                self._parts.append("\n")
            self._parts.append(f"{speaker}: ")
            self._speaker = speaker
        self._parts.append(f"{text} ")

    def add_piece(self, piece: str) -> None:
        """Append a front-end text piece ("▁"-decoded, may start with a space) to its line."""
        if piece.startswith(" ") or not self._moshi_line:
            self._flush_word()
        self._moshi_line.append(piece.strip())

    def _flush_word(self) -> None:
        if self._moshi_line:
            self.add("moshi", "".join(self._moshi_line))
            self._moshi_line = []

    def text(self) -> str:
        """The conversation so far."""
        self._flush_word()
        return "".join(self._parts)
