"""Import the plain-text session logs of a live KAME server (``--log-dir``) as a kame-sim trace.

KAME's server appends one line per event, ``{epoch_ms}: {text}``, to a handful of files
(kame-reference.md §6). Turning them into a trace with the simulator's schema lets every report,
metric and replay written for simulated runs work on real sessions too. What the logs do not say is
left null rather than invented, and docs/import-and-replay.md lists those gaps. Mapping:

* ``asr_partial.txt`` -> ``stt_partial`` (KAME logs a partial only when the user word count grew);
* ``user_words.txt``  -> ``stt_final`` (one line per final transcript);
* ``llm_stream_words.txt`` -> LLM stream rows. Two formats exist in KAME's history:
  the stream-manager server writes ONE line per stream when it ends, stamped with the stream's START
  time, the non-blank chunks joined by spaces, prefixed ``[CANCELLED]`` or ``[ERROR]`` when it did not
  finish (-> ``llm_start`` + ``llm_done``/``llm_cancel``/``llm_error``); the multiplexer server writes
  ``[RESET gen=N]`` when stream N is adopted and then one line per applied chunk (-> ``llm_chunk``);
* ``oracle_stream.txt`` -> ``oracle_enqueue`` (``[RESET]`` -> detail reset, other lines -> append);
* ``moshi_words.txt`` -> ``frontend_token`` (text piece, frame = round(t / 80 ms), token id unknown);
* ``conversation.txt`` is a snapshot without timestamps: kept verbatim in the trace metadata.

Times become seconds since the earliest logged event (``start_epoch_ms`` overrides that origin,
because KAME logs no session-start line).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kame_sim import __version__
from kame_sim.config import Scenario
from kame_sim.errors import InputError
from kame_sim.run_dir import prepare_run_dir
from kame_sim.trace.ipc_file import write_ipc_file
from kame_sim.trace.schema import TRACE_FILENAME
from kame_sim.trace.writer import TraceWriter

LOG_FILES = (
    "asr_partial.txt",
    "user_words.txt",
    "llm_stream_words.txt",
    "oracle_stream.txt",
    "moshi_words.txt",
)
# Without these two there is nothing to replay or to score; the others are optional because KAME
# creates a file only on its first write (no partials logged, no LLM output, a silent front-end).
REQUIRED_FILES = ("user_words.txt", "oracle_stream.txt")
CONVERSATION_FILE = "conversation.txt"

_LINE = re.compile(r"(\d+): ?(.*)")
_STREAM_MARK = re.compile(r"\[(CANCELLED|ERROR)\] ?(.*)")
_GEN_RESET = re.compile(r"\[RESET gen=(\d+)\]")


@dataclass(frozen=True)
class LogLine:
    """One parsed line: where it came from (for error messages), its epoch time and its text."""

    file: Path
    number: int
    epoch_ms: int
    text: str


def parse_log_file(path: Path) -> list[LogLine]:
    """Parse ``epoch_ms: text`` lines; a malformed line or a time going backwards is an InputError.

    Times may repeat (millisecond resolution) but never decrease: KAME appends as events happen, so
    a decrease means the file was edited or two sessions were concatenated.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"not UTF-8 text ({exc.reason})") from None
    lines: list[LogLine] = []
    previous = -1
    # split on "\n" only: a chunk of LLM text may hold other line-break characters.
    for number, line in enumerate(raw.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line and number == raw.count("\n") + 1:
            break  # the empty string after the final newline
        match = _LINE.fullmatch(line)
        if match is None:
            raise InputError(path, f"line {number}", "expected 'epoch_ms: text'")
        epoch = int(match.group(1))
        if epoch < previous:
            raise InputError(path, f"line {number}", f"time goes backwards ({epoch} < {previous})")
        previous = epoch
        lines.append(LogLine(path, number, epoch, match.group(2)))
    return lines


def log_dir_hash(log_dir: Path) -> str:
    """sha256 over the names and bytes of the log files present: identifies the imported session."""
    digest = hashlib.sha256()
    for name in (*LOG_FILES, CONVERSATION_FILE):
        path = log_dir / name
        if path.is_file():
            data = path.read_bytes()
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()


def default_import_dir(log_dir: Path, output_dir: Path = Path("traces")) -> Path:
    """``<output_dir>/kame-logs-<log dir name>``: where ``kame-sim import kame-logs`` writes by default."""
    return output_dir / f"kame-logs-{log_dir.resolve().name}"


@dataclass
class _Rows:
    """Rows collected from all files, written in time order (file order breaks ties)."""

    items: list[tuple[float, int, str, dict[str, Any]]] = field(default_factory=list)

    def add(self, t: float, event: str, **columns: Any) -> None:
        self.items.append((t, len(self.items), event, columns))

    def sorted(self) -> list[tuple[float, int, str, dict[str, Any]]]:
        return sorted(self.items, key=lambda item: (item[0], item[1]))


def _stt_rows(rows: _Rows, partials: list[LogLine], finals: list[LogLine], t: Any) -> None:
    # An utterance index is the number of finals logged before the line: KAME has no other notion of it.
    finals_ms = [line.epoch_ms for line in finals]
    for line in partials:
        utterance = sum(1 for ms in finals_ms if ms < line.epoch_ms)
        rows.add(t(line), "stt_partial", utterance=utterance, text=line.text)
    for u, line in enumerate(finals):
        rows.add(t(line), "stt_final", utterance=u, text=line.text)


def _llm_rows(rows: _Rows, lines: list[LogLine], t: Any) -> None:
    if any(_GEN_RESET.fullmatch(line.text) for line in lines):
        _llm_rows_multiplexer(rows, lines, t)
    else:
        _llm_rows_per_stream(rows, lines, t)


def _llm_rows_per_stream(rows: _Rows, lines: list[LogLine], t: Any) -> None:
    """One line per stream, stamped with its start: start known, end only for cancelled streams.

    KAME's stream manager cancels the running stream right before it starts the next one, so a
    cancelled stream ended at the next stream's start. A finished or failed stream's end is not
    logged; its end row is put at its start time with ``t_ref`` = start and says so in ``detail``.
    Streams that produced no chunk are not logged by KAME at all, so stream ids count logged ones.
    """
    for sid, line in enumerate(lines, start=1):
        start = t(line)
        mark = _STREAM_MARK.fullmatch(line.text)
        status, text = (mark.group(1), mark.group(2)) if mark else ("DONE", line.text)
        n_words = len(text.split())
        rows.add(start, "llm_start", stream_id=sid, detail="kame-log")
        if status == "CANCELLED":
            if sid < len(lines):
                end = t(lines[sid])
                rows.add(
                    end,
                    "llm_cancel",
                    stream_id=sid,
                    text=text,
                    word_count=n_words,
                    t_ref=start,
                    detail="superseded",
                )
            else:
                rows.add(
                    start,
                    "llm_cancel",
                    stream_id=sid,
                    text=text,
                    word_count=n_words,
                    t_ref=start,
                    detail="end time not logged",
                )
        elif status == "ERROR":
            rows.add(
                start,
                "llm_error",
                stream_id=sid,
                text=text,
                word_count=n_words,
                t_ref=start,
                detail="error (end time not logged)",
            )
        else:
            rows.add(
                start,
                "llm_done",
                stream_id=sid,
                text=text,
                word_count=n_words,
                t_ref=start,
                detail="end time not logged",
            )


def _llm_rows_multiplexer(rows: _Rows, lines: list[LogLine], t: Any) -> None:
    """``[RESET gen=N]`` then one line per applied chunk: chunk times are known, starts are not."""
    sid: int | None = None
    previous: float | None = None
    for line in lines:
        gen = _GEN_RESET.fullmatch(line.text)
        if gen is not None:
            sid, previous = int(gen.group(1)), None
            rows.add(t(line), "llm_first_chunk", stream_id=sid)
            continue
        now = t(line)
        delay = None if previous is None else now - previous
        rows.add(now, "llm_chunk", stream_id=sid, text=line.text, delay_s=delay)
        previous = now


def _oracle_rows(rows: _Rows, lines: list[LogLine], t: Any) -> None:
    # A stream id per [RESET]: the n-th reset starts the n-th oracle (appends before any reset: none).
    sid: int | None = None
    count = 0
    for line in lines:
        if line.text == "[RESET]":
            count += 1
            sid = count
            rows.add(t(line), "oracle_enqueue", stream_id=sid, detail="reset")
        else:
            rows.add(t(line), "oracle_enqueue", stream_id=sid, text=line.text, detail="append")


def import_kame_logs(
    log_dir: Path, out_dir: Path, overwrite: bool = False, start_epoch_ms: int | None = None
) -> Path:
    """Parse a KAME ``--log-dir`` into ``out_dir/trace.arrows`` and return the trace path.

    Everything is parsed and checked before ``out_dir`` is touched, so a bad log never leaves a
    half-written run behind. ``start_epoch_ms`` sets time zero (default: the earliest logged event).
    """
    if not log_dir.is_dir():
        raise InputError(log_dir, None, "not a directory (expected a KAME --log-dir)")
    for name in REQUIRED_FILES:
        if not (log_dir / name).is_file():
            raise InputError(log_dir / name, None, "required KAME log file is missing")
    parsed = {
        name: parse_log_file(log_dir / name) if (log_dir / name).is_file() else [] for name in LOG_FILES
    }
    epochs = [lines[0].epoch_ms for lines in parsed.values() if lines]
    if not epochs:
        raise InputError(log_dir, None, "the KAME log files hold no lines")
    t0 = min(epochs) if start_epoch_ms is None else start_epoch_ms
    if t0 > min(epochs):
        raise InputError("<cli>", "start_epoch_ms", f"{t0} is after the first logged event ({min(epochs)})")

    def t(line: LogLine) -> float:
        return (line.epoch_ms - t0) / 1000.0

    scenario = Scenario()
    frame_s = scenario.frame_seconds
    rows = _Rows()
    _stt_rows(rows, parsed["asr_partial.txt"], parsed["user_words.txt"], t)
    _llm_rows(rows, parsed["llm_stream_words.txt"], t)
    _oracle_rows(rows, parsed["oracle_stream.txt"], t)
    for line in parsed["moshi_words.txt"]:
        rows.add(t(line), "frontend_token", frame=round(t(line) / frame_s), text=line.text or None)

    conversation_file = log_dir / CONVERSATION_FILE
    metadata = {
        "kame_sim.version": __version__,
        "kame_sim.source": "kame-logs",
        "kame_sim.log_dir": str(log_dir.resolve()),
        "kame_sim.log_dir_hash": log_dir_hash(log_dir),
        "kame_sim.log_start_epoch_ms": str(t0),
        "kame_sim.scenario": scenario.resolved_json(),
        "kame_sim.conversation_id": log_dir.resolve().name,
        "kame_sim.frame_seconds": repr(frame_s),
        "kame_sim.time_coupling": "wall",
        "kame_sim.frontend": "kame-live",
        "kame_sim.kame_conversation": (
            conversation_file.read_text(encoding="utf-8", errors="replace")
            if conversation_file.is_file()
            else ""
        ),
        "kame_sim.files": json.dumps({name: len(lines) for name, lines in parsed.items()}, sort_keys=True),
    }
    out = prepare_run_dir(out_dir, overwrite)
    trace_file = out.record(TRACE_FILENAME)
    ordered = rows.sorted()
    end = ordered[-1][0] if ordered else 0.0
    with TraceWriter(trace_file, metadata) as trace:
        trace.row("run_start", 0.0, detail="kame-logs")
        for when, _, event, columns in ordered:
            trace.row(event, when, **columns)
        trace.row("run_end", end, frame=round(end / frame_s), detail="ok")
    write_ipc_file(trace_file)
    return trace_file
