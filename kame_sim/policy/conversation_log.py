"""The conversation text the LLM sees, built exactly as KAME builds it (``user:``/``moshi:`` lines).

Committed text only: STT finals for the user, emitted text pieces for the front-end. KAME adds each
front-end SentencePiece piece as its own stripped chunk followed by a space, so sub-word pieces
stay apart ("moshi: hel lo"): the LLM sees what KAME's LLM sees, and cassette keys match.
"""

from __future__ import annotations


class ConversationLog:
    """KAME's ``conversation_text``: consecutive text of one speaker joins one line."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._speaker: str | None = None

    def add(self, speaker: str, text: str) -> None:
        """Append committed text for ``speaker`` ("user" or "moshi")."""
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
        """Append one front-end text piece, as KAME does: stripped, as its own chunk."""
        self.add("moshi", piece)

    def text(self) -> str:
        """The conversation so far."""
        return "".join(self._parts)
