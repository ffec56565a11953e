"""Explicit delay schedules: the delays a run realised, written down so that another run replays them.

A schedule is a JSON file with one entry per delay, each naming what it is attached to::

    {"kind": "stt_partial", "utterance": 0, "word": 2, "seconds": 0.148}   word end -> partial
    {"kind": "stt_final",   "utterance": 0, "seconds": 0.251}              utterance end -> final
    {"kind": "ttft",        "stream": 3, "seconds": 0.731}                 stream start -> chunk 0
    {"kind": "chunk_gap",   "stream": 3, "chunk": 1, "seconds": 0.0112}    chunk 0 -> chunk 1
    {"kind": "fault",       "stream": 4, "seconds": 1.5, "detail": "..."}  the stream fails then

A scenario replays one with ``[delays] schedule = "FILE"``: the simulated STT and the simulated LLM
take a covered event's delay from the schedule and draw every other one from their delay models.

Determinism rule: a covered event still consumes the draw it would have consumed (the draw is made
and replaced), so every stream of random numbers advances exactly as it does without a schedule.
An uncovered event therefore gets the very value it gets in a run of the same seed without a
schedule, whatever else the schedule covers: a schedule covering only some streams changes only
those (and what follows from them in the simulation).

The values are the *realised* delays, as the trace shows them (``delay_s`` of ``stt_partial``,
``stt_final``, ``llm_first_chunk`` and ``llm_chunk``, the offset of ``llm_error``), so a run's own
schedule is extracted from its trace (:func:`schedule_from_trace`), and ``run --save-schedule``
writes exactly what ``kame-sim schedule TRACE`` extracts. Replayed with the same seed it reproduces
the trace bit for bit; docs/schedules.md explains why.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from kame_sim.clock import to_seconds, to_ticks
from kame_sim.delays.samplers import MAX_DELAY
from kame_sim.errors import InputError

if TYPE_CHECKING:
    from kame_sim.config import Scenario
    from kame_sim.trace.reader import TraceData

SCHEDULE_VERSION = 1
"""The value of the optional top-level ``kame_sim_schedule`` key."""

DEFAULT_FAULT_DETAIL = "error: scheduled fault"

# kind -> the integer keys that attach it to an event, with their smallest value
KINDS: dict[str, tuple[tuple[str, int], ...]] = {
    "stt_partial": (("utterance", 0), ("word", 0)),
    "stt_final": (("utterance", 0),),
    "ttft": (("stream", 1),),
    "chunk_gap": (("stream", 1), ("chunk", 1)),
    "fault": (("stream", 1),),
}
_OPTIONAL = {"fault": ("detail",)}
_TOP_KEYS = ("kame_sim_schedule", "source", "note", "unscheduled", "entries")
#: The kinds an ``unscheduled`` table may give a fixed delay for (a fault has no "nominal" value).
UNSCHEDULED_KINDS = ("stt_partial", "stt_final", "ttft", "chunk_gap")


@dataclass(frozen=True)
class Fault:
    """A scheduled stream failure: ``seconds`` after the stream's start, with this detail."""

    seconds: float
    detail: str = DEFAULT_FAULT_DETAIL


@dataclass
class DelaySchedule:
    """Delays by what they are attached to; ``sha256`` is that of the file it was read from."""

    stt_partial: dict[tuple[int, int], float] = field(default_factory=dict)
    stt_final: dict[int, float] = field(default_factory=dict)
    ttft: dict[int, float] = field(default_factory=dict)
    chunk_gap: dict[tuple[int, int], float] = field(default_factory=dict)
    fault: dict[int, Fault] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    #: kind -> the delay every event of that kind the entries do not cover gets instead of its draw
    #: (the draw is still made). Empty: uncovered events keep their draws (the default).
    unscheduled: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None

    def __len__(self) -> int:
        return sum(map(len, (self.stt_partial, self.stt_final, self.ttft, self.chunk_gap, self.fault)))

    @property
    def has_stt(self) -> bool:
        return bool(
            self.stt_partial or self.stt_final or {"stt_partial", "stt_final"} & self.unscheduled.keys()
        )

    @property
    def has_llm(self) -> bool:
        return bool(
            self.ttft or self.chunk_gap or self.fault or {"ttft", "chunk_gap"} & self.unscheduled.keys()
        )

    # -- the hooks ---------------------------------------------------------------------------------

    def partial_delay(self, utterance: int, word: int, drawn: float) -> float:
        return self.stt_partial.get((utterance, word), self.unscheduled.get("stt_partial", drawn))

    def final_delay(self, utterance: int, drawn: float) -> float:
        return self.stt_final.get(utterance, self.unscheduled.get("stt_final", drawn))

    def first_token(self, stream: int, drawn: float) -> float:
        return self.ttft.get(stream, self.unscheduled.get("ttft", drawn))

    def gap(self, stream: int, chunk: int, drawn: float) -> float:
        return self.chunk_gap.get((stream, chunk), self.unscheduled.get("chunk_gap", drawn))

    # -- writing -----------------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every entry in a canonical order: STT per utterance (partials, final), then per stream."""
        out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for (u, w), s in self.stt_partial.items():
            out.append(((0, u, 0, w), {"kind": "stt_partial", "utterance": u, "word": w, "seconds": s}))
        for u, s in self.stt_final.items():
            out.append(((0, u, 1, 0), {"kind": "stt_final", "utterance": u, "seconds": s}))
        for sid, s in self.ttft.items():
            out.append(((1, sid, 0, 0), {"kind": "ttft", "stream": sid, "seconds": s}))
        for (sid, c), s in self.chunk_gap.items():
            out.append(((1, sid, 1, c), {"kind": "chunk_gap", "stream": sid, "chunk": c, "seconds": s}))
        for sid, f in self.fault.items():
            out.append(
                ((1, sid, 2, 0), {"kind": "fault", "stream": sid, "seconds": f.seconds, "detail": f.detail})
            )
        return [entry for _, entry in sorted(out, key=lambda pair: pair[0])]

    def to_json(self, note: str | None = None, entry_notes: dict[tuple[Any, ...], str] | None = None) -> str:
        """The file's text: a small header, then one entry per line (easy to read, diff and edit).

        ``note`` (top level) and ``entry_notes`` (by :func:`attachment`) are written as ``note``
        keys: what a tool that wrote the file wants a reader to know (shrink: nominal vs shrunk).
        ``unscheduled`` is written only when set, so a run's own schedule reads as before.
        """
        lines = [
            "{",
            f'  "kame_sim_schedule": {SCHEDULE_VERSION},',
            f'  "source": {json.dumps(self.source, sort_keys=True)},',
        ]
        if note is not None:
            lines.append(f'  "note": {json.dumps(note)},')
        if self.unscheduled:
            lines.append(f'  "unscheduled": {json.dumps(self.unscheduled, allow_nan=False)},')
        notes = entry_notes or {}
        entries = []
        for e in self.entries():
            text = notes.get(attachment(e))
            entries.append(json.dumps(e if text is None else {**e, "note": text}, allow_nan=False))
        if entries:
            lines += ['  "entries": [', *(f"    {e}," for e in entries[:-1]), f"    {entries[-1]}", "  ]"]
        else:
            lines.append('  "entries": []')
        return "\n".join([*lines, "}", ""])

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def attachment(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What an entry is attached to, as a key: ``("ttft", 7)``, ``("chunk_gap", 7, 2)``."""
    return (entry["kind"], *(entry[key] for key, _ in KINDS[entry["kind"]]))


# -- reading -----------------------------------------------------------------------------------------


def _unscheduled(path: Path, value: Any) -> dict[str, float]:
    """The ``unscheduled`` table: a fixed delay per kind for the events the entries leave out."""
    if not isinstance(value, dict):
        raise InputError(path, "unscheduled", 'must be an object of kind -> seconds, e.g. {"ttft": 0.73}')
    out: dict[str, float] = {}
    for kind, seconds in value.items():
        if kind not in UNSCHEDULED_KINDS:
            shown = json.dumps(kind)
            raise InputError(
                path, f"unscheduled.{kind}", f"unknown kind {shown}; known: {', '.join(UNSCHEDULED_KINDS)}"
            )
        out[kind] = _seconds(path, "unscheduled", {"kind": kind, "seconds": seconds}, f"unscheduled.{kind}")
    return out


def _int_key(path: Path, where: str, entry: dict[str, Any], key: str, low: int) -> int:
    if key not in entry:
        raise InputError(path, where, f"{entry['kind']} needs {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(path, f"{where}.{key}", f"must be an integer, got {json.dumps(value)}")
    if value < low:
        raise InputError(path, f"{where}.{key}", f"must be >= {low}, got {value}")
    return value


def _seconds(path: Path, where: str, entry: dict[str, Any], field_: str | None = None) -> float:
    if "seconds" not in entry:
        raise InputError(path, where, f"{entry['kind']} needs 'seconds'")
    value = entry["seconds"]
    field_ = field_ or f"{where}.seconds"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(path, field_, f"must be a number of seconds, got {json.dumps(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(path, field_, f"must be a finite number, got {value}")
    if not 0.0 <= value <= MAX_DELAY:
        raise InputError(path, field_, f"must be >= 0 and <= {MAX_DELAY:g}, got {value!r}")
    return value


def parse_schedule(text: str, path: Path) -> DelaySchedule:
    """Validate a schedule's text; every problem is one InputError naming the file and the entry."""
    try:
        data = json.loads(text)  # NaN and Infinity parse, and are refused where they stand
    except ValueError as exc:
        raise InputError(path, None, f"not valid JSON: {exc}") from None
    if isinstance(data, list):
        data = {"entries": data}
    if not isinstance(data, dict):
        raise InputError(path, None, "must be a JSON object with an 'entries' list (or the list itself)")
    for key in data:
        if key not in _TOP_KEYS:
            raise InputError(path, key, f"unknown key; known: {', '.join(_TOP_KEYS)}")
    version = data.get("kame_sim_schedule", SCHEDULE_VERSION)
    if isinstance(version, bool) or version != SCHEDULE_VERSION:
        raise InputError(path, "kame_sim_schedule", f"unsupported version {json.dumps(version)}; use 1")
    source = data.get("source", {})
    if not isinstance(source, dict):
        raise InputError(path, "source", "must be an object (it is informational only)")
    if not isinstance(data.get("note", ""), str):
        raise InputError(path, "note", "must be a string")
    if "entries" not in data:
        raise InputError(path, "entries", "missing (a list of entries, [] for none)")
    entries = data["entries"]
    if not isinstance(entries, list):
        raise InputError(path, "entries", "must be a list")
    schedule = DelaySchedule(source=source, unscheduled=_unscheduled(path, data.get("unscheduled", {})))
    seen: dict[tuple[Any, ...], int] = {}
    for i, entry in enumerate(entries):
        where = f"entries[{i}]"
        if not isinstance(entry, dict):
            raise InputError(path, where, f"must be an object, got {json.dumps(entry)}")
        kind = entry.get("kind")
        if kind not in KINDS:
            shown = json.dumps(kind) if "kind" in entry else "none"
            raise InputError(path, f"{where}.kind", f"unknown kind {shown}; known: {', '.join(KINDS)}")
        allowed = {"kind", "seconds", "note", *(k for k, _ in KINDS[kind]), *_OPTIONAL.get(kind, ())}
        for key in entry:
            if key not in allowed:
                raise InputError(
                    path, f"{where}.{key}", f"unknown key for {kind}; known: {', '.join(sorted(allowed))}"
                )
        if not isinstance(entry.get("note", ""), str):
            raise InputError(path, f"{where}.note", "must be a string")
        ids = tuple(_int_key(path, where, entry, key, low) for key, low in KINDS[kind])
        seconds = _seconds(path, where, entry)
        attached = (kind, *ids)
        if attached in seen:
            raise InputError(path, where, f"repeats entries[{seen[attached]}] ({_describe(kind, ids)})")
        seen[attached] = i
        if kind == "stt_partial":
            schedule.stt_partial[(ids[0], ids[1])] = seconds
        elif kind == "stt_final":
            schedule.stt_final[ids[0]] = seconds
        elif kind == "ttft":
            schedule.ttft[ids[0]] = seconds
        elif kind == "chunk_gap":
            schedule.chunk_gap[(ids[0], ids[1])] = seconds
        else:
            detail = entry.get("detail", DEFAULT_FAULT_DETAIL)
            if not isinstance(detail, str) or not detail.strip():
                raise InputError(path, f"{where}.detail", "must be a non-empty string")
            schedule.fault[ids[0]] = Fault(seconds, detail)
    return schedule


def _describe(kind: str, ids: tuple[int, ...]) -> str:
    return f"{kind} " + ", ".join(f"{key} {v}" for (key, _), v in zip(KINDS[kind], ids, strict=True))


def load_schedule(path: Path) -> DelaySchedule:
    """Read and validate a schedule file; its sha256 is kept for the trace's metadata."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "schedule file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, "is a directory, not a schedule file") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot read the schedule file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, None, "not UTF-8 text (a schedule is a JSON file)") from None
    schedule = parse_schedule(text, path)
    schedule.path = path
    schedule.sha256 = hashlib.sha256(raw).hexdigest()
    return schedule


def scenario_schedule(scenario: Scenario) -> DelaySchedule | None:
    """The scenario's ``delays.schedule``, loaded and checked against what the scenario simulates.

    STT entries need the simulated recogniser; LLM entries the simulated back-end, uncached and
    unscaled (a live, recorded or time-scaled back-end does not take its delays from the models).
    """
    path = scenario.delays.schedule
    if path is None:
        return None
    schedule = load_schedule(path)
    field_ = "delays.schedule"
    if scenario.replay.oracle_from is not None and (len(schedule) or schedule.unscheduled):
        raise InputError(
            "<scenario>", field_, "replay.oracle_from replays the oracle: no STT or LLM delays to schedule"
        )
    if schedule.has_stt and scenario.stt.kind != "simulated":
        message = f"{path} has STT entries but stt.kind = {scenario.stt.kind!r} measures its own delays"
        raise InputError("<scenario>", field_, message + "; use stt.kind = 'simulated'")
    if schedule.has_llm:
        llm = scenario.llm
        why = None
        if llm.kind != "simulated":
            why = f"llm.kind = {llm.kind!r} takes its delays from the live back-end"
        elif llm.cassette is not None:
            why = "llm.cassette replays recorded plans"
        elif llm.time_scale != 1.0:
            why = "llm.time_scale would scale the scheduled delays again"
        if why is not None:
            message = f"{path} has LLM entries (ttft, chunk_gap, fault) but {why}"
            raise InputError("<scenario>", field_, message + "; they need the simulated back-end")
    return schedule


def check_schedule_target(path: Path, option: str) -> None:
    """A schedule can be written to ``path`` (checked before a run, so nothing is left half-done)."""
    if path.is_dir():
        raise InputError("<cli>", option, f"{path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise InputError("<cli>", option, f"no such directory: {path.parent}")


# -- extracting ------------------------------------------------------------------------------------------

_COLUMNS = ["event", "t_sim", "stream_id", "utterance", "text", "delay_s", "detail"]
_EVENTS = {"user_word", "stt_partial", "stt_final", "llm_start", "llm_first_chunk", "llm_chunk", "llm_error"}


def word_index(text: str, spoken: list[str]) -> int:
    """Which word of its utterance a partial follows: its text is the words so far, space-joined.

    The simulated recogniser's partial ``i`` reads ``" ".join(words[: i + 1])``; the utterance's
    ``user_word`` rows give the words. A partial that is no such prefix (another recogniser) is
    attached by its word count.
    """
    joined = ""
    for i, word in enumerate(spoken):
        joined = f"{joined} {word}" if i else word
        if joined == text:
            return i
    return max(len(text.split()) - 1, 0)


def schedule_from_rows(rows: Iterable[dict[str, Any]], source: dict[str, Any] | None = None) -> DelaySchedule:
    """The realised delays in trace rows (dicts with the trace's columns), as a schedule.

    A repeated attachment (another recogniser's two partials of the same length) keeps the first.
    Rows without a delay (an imported log may lack them) are skipped.
    """
    schedule = DelaySchedule(source=dict(source or {}))
    words: dict[int, list[str]] = {}
    started: dict[int, int] = {}
    chunks: dict[int, int] = {}
    for row in rows:
        event, delay = row["event"], row["delay_s"]
        if row["utterance" if event in ("user_word", "stt_partial", "stt_final") else "stream_id"] is None:
            continue  # an imported log's rows may lack what they are attached to
        if event == "user_word":
            words.setdefault(row["utterance"], []).append(row["text"])
        elif event == "llm_start":
            started[row["stream_id"]] = to_ticks(row["t_sim"])
        elif event == "llm_error":
            sid = row["stream_id"]
            if sid in started and sid not in schedule.fault:
                offset = to_seconds(to_ticks(row["t_sim"]) - started[sid])
                schedule.fault[sid] = Fault(offset, row["detail"] or DEFAULT_FAULT_DETAIL)
        elif delay is None:
            continue
        elif event == "stt_partial":
            u = row["utterance"]
            key = (u, word_index(row["text"] or "", words.get(u, [])))
            schedule.stt_partial.setdefault(key, delay)
        elif event == "stt_final":
            schedule.stt_final.setdefault(row["utterance"], delay)
        elif event == "llm_first_chunk":
            schedule.ttft.setdefault(row["stream_id"], delay)
        elif event == "llm_chunk":
            sid = row["stream_id"]
            k = chunks.get(sid, 0)
            chunks[sid] = k + 1
            if k:  # chunk 0's gap is measured from the stream's start: it is the TTFT
                schedule.chunk_gap.setdefault((sid, k), delay)
    return schedule


def schedule_from_trace(data: TraceData) -> DelaySchedule:
    """Everything a trace realised: STT partial/final delays, each stream's TTFT, gaps and fault."""
    meta = data.metadata
    source: dict[str, Any] = {
        key: meta[f"kame_sim.{key}"] for key in ("policy", "conversation_id") if f"kame_sim.{key}" in meta
    }
    if meta.get("kame_sim.seed", "").isdigit():
        source["seed"] = int(meta["kame_sim.seed"])
    table = data.table.select(_COLUMNS)
    mask = [event in _EVENTS for event in table.column("event").to_pylist()]
    return schedule_from_rows(table.filter(pa.array(mask)).to_pylist(), source)
