"""KAME's view of the user's speech, fed by STT partials and finals (kame-reference.md §4).

The stream manager reads only this state; whether the events come from simulated word timings
or a real recogniser does not matter to it.
"""

from __future__ import annotations

from dataclasses import dataclass


def count_words(text: str) -> int:
    """Words as KAME counts them: whitespace-separated pieces."""
    return len(text.split())


@dataclass(slots=True)
class AsrState:
    """Pending partial text, its running maximum word count, committed words and the final bump."""

    pending: str = ""
    max_pending: int = 0
    committed_words: int = 0
    final_bump: bool = False

    def on_partial(self, text: str) -> bool:
        """Apply a partial result; return False when the text did not change (KAME ignores it)."""
        if text == self.pending:
            return False
        self.pending = text
        self.max_pending = max(self.max_pending, count_words(text))
        return True

    def on_final(self, text: str) -> None:
        """Apply a final result: commit its words and raise the bump that forces a restart."""
        self.committed_words += count_words(text)
        self.pending = ""
        self.final_bump = True
        self.max_pending = 0

    def total_words(self) -> int:
        """User words so far: committed plus the best estimate of the pending utterance."""
        return self.committed_words + max(count_words(self.pending), self.max_pending)
