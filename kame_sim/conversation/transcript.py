"""Parse and validate a text/<id>.json word-level transcript.

The file is ``[{"speaker": "A"|"B", "word": str, "start": s, "end": s}, ...]`` (extra keys are
ignored). What the canonical layout guarantees, checked against the shared SpokenWOZ samples:

* Words are sorted by start time **per speaker only**. The file lists words turn by turn, and
  when the speakers overlap a turn that started earlier can come after one that started later
  (SNG0480 entry 15, MUL1423 entries 57, 133, 156, 224). So we require non-decreasing starts
  within each speaker and sort the merged list ourselves (stably).
* Words of one speaker may overlap in time (the aligner nests MUL1423's "whale" inside "called"),
  so no non-overlap rule is enforced; consumers must not assume ``w[k].end <= w[k+1].start``.
* A word may end up to :data:`END_TOLERANCE_S` after the end of the audio (alignment rounding).

A word whose text is empty or whitespace-only is still validated (its timestamps must be sound,
as they are likely a sign of a broken export) but then dropped: it carries no text for the STT or
the LLM prompt, and keeping it would create words that no recogniser could ever emit. Surrounding
whitespace of the other words is stripped for the same reason. A transcript with no words left is
rejected, since nothing could be simulated from it.
"""

from __future__ import annotations

from pathlib import Path

from kame_sim.conversation.model import Word
from kame_sim.conversation.validate import TOP_LEVEL, get_str, get_time, parse_json_list
from kame_sim.errors import InputError

END_TOLERANCE_S = 0.05
#: A transcript word longer than this is a broken export (a whole turn in one "word"), not a word.
MAX_WORD_CHARS = 1000


def parse_transcript(
    path: Path, data: bytes, speakers: tuple[str, str], audio_duration_s: float
) -> tuple[Word, ...]:
    """The transcript's non-empty words, sorted by start time (stable across speakers)."""
    entries = parse_json_list(path, data)
    words: list[Word] = []
    last_start: dict[str, tuple[int, float]] = {}
    for i, entry in enumerate(entries):
        speaker = get_str(path, entry, i, "speaker")
        if speaker not in speakers:
            raise InputError(
                path, f"[{i}].speaker", f"unknown speaker {speaker!r}; expected one of {', '.join(speakers)}"
            )
        text = get_str(path, entry, i, "word", max_chars=MAX_WORD_CHARS).strip()
        start = get_time(path, entry, i, "start")
        end = get_time(path, entry, i, "end")
        if end < start:
            raise InputError(path, f"[{i}].end", f"end {end} is before start {start}")
        previous = last_start.get(speaker)
        if previous is not None and start < previous[1]:
            raise InputError(
                path,
                f"[{i}].start",
                f"words of speaker {speaker!r} are not sorted by start: {start} comes after "
                f"entry [{previous[0]}] starting at {previous[1]}",
            )
        last_start[speaker] = (i, start)
        if end > audio_duration_s + END_TOLERANCE_S:
            raise InputError(
                path,
                f"[{i}].end",
                f"word ends at {end} s, after the end of the audio ({audio_duration_s:.3f} s)",
            )
        if text:
            words.append(Word(speaker, text, start, end))
    if not words:
        raise InputError(path, TOP_LEVEL, "transcript has no (non-empty) words")
    words.sort(key=lambda w: w.start)
    return tuple(words)
