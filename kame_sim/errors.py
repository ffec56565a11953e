"""User-facing errors.

Every problem with user input (a file, a scenario key, a parameter) is raised as an
:class:`InputError` that names the file and the field, so the CLI can print one line and exit
non-zero instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: ``source`` is the file (or "<cli>"), ``field`` the key or column at fault."""

    def __init__(self, source: str | Path | None, field: str | None, message: str) -> None:
        self.source = str(source) if source is not None else None
        self.field = field
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``FILE: FIELD: message`` (parts that are unknown are left out)."""
        parts = [p for p in (self.source, self.field) if p]
        return ": ".join([*parts, self.message])
