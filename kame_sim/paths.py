"""Names and folders a user chooses for output: plain names only, and folders that can be made.

A run's ``name`` (and a sweep's) becomes one component of a directory name
(``<output_dir>/<name>-<conversation>-seed<seed>``), so a name holding a separator or ``..``
would write outside the output folder, and a control character would make a folder no shell
shows faithfully. These rules are checked when a scenario or sweep file is validated, long before
anything is written. Making an output folder turns the operating system's refusal (a regular file
in the way, no permission) into one :class:`InputError` line instead of a traceback.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from kame_sim.errors import InputError

#: Longest name, in UTF-8 bytes: a file-name component may have 255, and the run directory adds
#: the conversation id and the seed to it.
MAX_NAME_BYTES = 100


def plain_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as (part of) one file-name component, or None when it can."""
    if not name:
        return "must not be empty"
    if name in (".", ".."):
        return f"{name!r} is not a name"
    if "/" in name or "\\" in name:
        return f"must be a plain name without / or \\, got {name!r}"
    bad = next((c for c in name if unicodedata.category(c).startswith("C")), None)
    if bad is not None:
        return f"must not contain control or unassigned characters (U+{ord(bad):04X})"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def make_output_dir(path: Path, what: str = "output folder") -> None:
    """``mkdir -p path``; a file in the way or a refusal is an InputError naming ``path``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(path, what, "is a file, not a folder") from None
    except NotADirectoryError:
        raise InputError(path, what, "cannot be created: a part of the path is a file") from None
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(path, what, f"cannot be created: {reason}") from None
