"""Writing a resolved scenario back out as a runnable scenario TOML file.

`search` writes the best scenarios it found, `shrink` its minimal failing reproducer and `fork` its
branches: each must be a file a person can read, edit and hand to ``kame-sim run``. The standard
library reads TOML but does not write it, and the subset a scenario needs (tables, strings,
numbers, booleans, lists of those) is small, so the emitter lives here. Every file is checked by
loading it back: a file that would not resolve to the same settings is never written.

Paths (conversation, checkpoint, schedule, ...) are written relative to the file's folder when they
lie below a common ancestor, so an output folder that is moved together with its inputs keeps
working; others stay absolute.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

from kame_sim.config import INPUT_PATH_KEYS, Scenario, load_scenario
from kame_sim.errors import InputError


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v, where) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_key(k)} = {_scalar(v, where)}" for k, v in value.items() if v is not None)
        return "{" + items + "}"
    raise TypeError(f"{where}: cannot write {type(value).__name__} to TOML")


def _string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters (DEL too) escaped."""
    out = []
    for c in text:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else _string(key)


def to_toml(data: dict[str, Any], header: str = "") -> str:
    """``data`` (top-level scalars, then one ``[table]`` per dict) as TOML; None values are left out.

    Tables nested inside a table (a delay model, e.g. ``llm.ttft``) are written inline, as a user
    would write them on one line.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    for key, value in data.items():
        if value is not None and not isinstance(value, dict):
            lines.append(f"{_key(key)} = {_scalar(value, key)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{_key(key)}]")
            for sub, v in value.items():
                if v is not None:
                    lines.append(f"{_key(sub)} = {_scalar(v, f'{key}.{sub}')}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _relative_paths(data: dict[str, Any], folder: Path) -> None:
    for section, key in INPUT_PATH_KEYS:
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            path = Path(table[key])
            if path.is_absolute():
                with contextlib.suppress(ValueError):  # another drive (Windows): keep it absolute
                    table[key] = os.path.relpath(path, folder.resolve())


def scenario_toml(scenario: Scenario, path: Path, header: str = "") -> str:
    """The text of a scenario file at ``path`` that loads back to ``scenario``'s settings."""
    data = json.loads(scenario.resolved_json())
    _relative_paths(data, path.parent)
    return to_toml(data, header)


def write_scenario(scenario: Scenario, path: Path, header: str = "") -> Path:
    """Write ``scenario`` as a runnable TOML file at ``path`` and check that it loads back the same.

    The caller owns the decision to write there (an output folder kame-sim made, see
    :mod:`kame_sim.output_dir`). Raises ``RuntimeError`` (a bug, not bad input) if the written file
    would resolve to different settings; the file is then removed again.
    """
    text = scenario_toml(scenario, path, header)
    path.write_text(text, encoding="utf-8")
    try:
        again = load_scenario(path)
    except InputError as exc:
        path.unlink()
        raise RuntimeError(f"{path}: the written scenario does not load: {exc}") from None
    if again.resolved_json() != scenario.resolved_json():
        path.unlink()
        raise RuntimeError(f"{path}: the written scenario does not resolve to the same settings")
    return path
