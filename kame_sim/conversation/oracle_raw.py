"""Parse and validate an oracle_raw/<id>.json file of recorded back-end predictions.

Entries are kame_finetune's records: ``timestamp_ms`` (int or number), ``prediction``, ``channel``
(0/1, the channel of the speaker the prediction is for), ``hint``, ``current_spoken_ratio``
(0..1), ``total_word_count``, ``conversation_context``; ``trigger_word`` and ``recent_words`` are
optional. Entries must be sorted by time, because the replay source looks predictions up by
bisection; a file that is not sorted would silently replay the wrong prediction.
"""

from __future__ import annotations

from pathlib import Path

from kame_sim.conversation.model import OraclePrediction
from kame_sim.conversation.validate import get_int, get_str, get_time, parse_json_list
from kame_sim.errors import InputError


def parse_oracle_raw(path: Path, data: bytes) -> tuple[OraclePrediction, ...]:
    """All predictions, in file order (which is validated to be time order)."""
    entries = parse_json_list(path, data)
    out: list[OraclePrediction] = []
    previous_ms = -1.0
    for i, entry in enumerate(entries):
        timestamp_ms = get_time(path, entry, i, "timestamp_ms")
        if timestamp_ms < previous_ms:
            raise InputError(
                path,
                f"[{i}].timestamp_ms",
                f"entries are not sorted by time: {timestamp_ms:g} comes after {previous_ms:g}",
            )
        previous_ms = timestamp_ms
        channel = get_int(path, entry, i, "channel")
        if channel not in (0, 1):
            raise InputError(path, f"[{i}].channel", f"must be 0 or 1, got {channel}")
        ratio = get_time(path, entry, i, "current_spoken_ratio")
        if ratio > 1.0:
            raise InputError(path, f"[{i}].current_spoken_ratio", f"must be between 0 and 1, got {ratio}")
        count = get_int(path, entry, i, "total_word_count")
        if count < 0:
            raise InputError(path, f"[{i}].total_word_count", f"must not be negative, got {count}")
        out.append(
            OraclePrediction(
                timestamp_s=timestamp_ms / 1000.0,
                prediction=get_str(path, entry, i, "prediction", free_text=True),
                channel=channel,
                hint=get_str(path, entry, i, "hint", free_text=True),
                current_spoken_ratio=ratio,
                total_word_count=count,
                conversation_context=get_str(path, entry, i, "conversation_context", free_text=True),
                trigger_word=_optional_str(path, entry, i, "trigger_word"),
                recent_words=_optional_str(path, entry, i, "recent_words"),
            )
        )
    return tuple(out)


def _optional_str(path: Path, entry: dict, i: int, key: str) -> str:
    return get_str(path, entry, i, key, free_text=True) if key in entry else ""
