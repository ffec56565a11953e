"""Small checks shared by the transcript and oracle_raw parsers.

Each failure is an :class:`InputError` naming the file and a JSON-path-like field (``[12].start``),
so a user can jump straight to the bad entry instead of reading a traceback.

Strings are checked as text, not just as JSON: JSON's ``\\ud800`` escape decodes to a lone
surrogate that no UTF-8 writer (the trace, a report) can encode, so it would crash a run halfway
through; control characters (NUL, terminal escapes) are refused for the same reason, except the
tabs and newlines that free text such as an LLM prediction may hold.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from kame_sim.errors import InputError

TOP_LEVEL = "(top level)"
# C0/C1 control characters and lone surrogates; free text may keep tab, newline and return.
_BAD_IN_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_IN_FREE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def parse_json_list(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Decode ``data`` as a JSON list of objects (the shape of both text/ and oracle_raw/ files)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(path, "json", f"not UTF-8 text (byte {e.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            path, "json", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos})"
        ) from None
    except RecursionError:
        raise InputError(path, "json", "not valid JSON here: nested too deeply") from None
    if not isinstance(doc, list):
        raise InputError(path, TOP_LEVEL, f"expected a JSON list of objects, got {_json_type(doc)}")
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict):
            raise InputError(path, f"[{i}]", f"expected an object, got {_json_type(entry)}")
    return doc


def get_str(
    path: Path,
    entry: dict[str, Any],
    i: int,
    key: str,
    *,
    free_text: bool = False,
    max_chars: int | None = None,
) -> str:
    """A required string field of valid text; ``free_text`` allows tabs and newlines."""
    value = _get(path, entry, i, key)
    if not isinstance(value, str):
        raise InputError(path, f"[{i}].{key}", f"expected a string, got {_json_type(value)}")
    problem = text_problem(value, free_text)
    if problem is None and max_chars is not None and len(value) > max_chars:
        problem = f"is {len(value)} characters long (at most {max_chars})"
    if problem is not None:
        raise InputError(path, f"[{i}].{key}", problem)
    return value


def text_problem(value: str, free_text: bool = False) -> str | None:
    """Why ``value`` is not text a trace can hold (lone surrogate, control character), or None."""
    bad = (_BAD_IN_FREE_TEXT if free_text else _BAD_IN_TEXT).search(value)
    if bad is None:
        return None
    code = ord(bad.group())
    if 0xD800 <= code <= 0xDFFF:
        return f"not valid Unicode text: lone surrogate U+{code:04X} at character {bad.start()}"
    return f"control character U+{code:04X} at character {bad.start()}"


def get_int(path: Path, entry: dict[str, Any], i: int, key: str) -> int:
    """A required integer field (``true``/``false`` and ``3.0`` are rejected)."""
    value = _get(path, entry, i, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(path, f"[{i}].{key}", f"expected an integer, got {_json_type(value)}")
    return value


def get_time(path: Path, entry: dict[str, Any], i: int, key: str) -> float:
    """A required finite, non-negative number (Python's json accepts NaN/Infinity, we do not)."""
    value = _get(path, entry, i, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(path, f"[{i}].{key}", f"expected a number, got {_json_type(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(path, f"[{i}].{key}", f"must be finite, got {value}")
    if value < 0:
        raise InputError(path, f"[{i}].{key}", f"must not be negative, got {value}")
    return value


def _get(path: Path, entry: dict[str, Any], i: int, key: str) -> Any:
    if key not in entry:
        raise InputError(path, f"[{i}].{key}", "missing")
    return entry[key]


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a user would recognise it in the file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) <= 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
