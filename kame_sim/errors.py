"""User-facing errors.

Every problem with user input (a file, a scenario key, a parameter) is raised as an
:class:`InputError` that names the file and the field, so the CLI can print one line and exit
non-zero instead of a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

# Characters that would break the one line (newlines), rewrite the terminal (escapes) or fail to
# print at all (lone surrogates, e.g. from an undecodable command-line byte).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class InputError(ValueError):
    """Bad user input: ``source`` is the file (or "<cli>"), ``field`` the key or column at fault."""

    def __init__(self, source: str | Path | None, field: str | None, message: str) -> None:
        self.source = str(source) if source is not None else None
        self.field = field
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``FILE: FIELD: message`` (parts that are unknown are left out), on one printable line.

        The message may quote the user's own text, so control characters and lone surrogates in
        it are shown as escapes (``\\n``, ``\\x1b``, ``\\udcff``) instead of being printed.
        """
        parts = [p for p in (self.source, self.field) if p]
        return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], ": ".join([*parts, self.message]))
