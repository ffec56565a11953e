"""STT cassette: record a whisper STT event list to an Arrow file and replay it.

Why: a live decode measures its compute time, so two runs give slightly different arrival times.
Recording the event list once lets later runs replay exactly the same events (and so the same
simulated trace) without decoding.

Key: ``sha256`` of the canonical JSON ``{"channel", "content_hash", "model", "policy", "settings"}`` -- the
conversation's content hash, the user channel, the model fingerprint (sha256 of model.bin,
config.json, tokenizer.json and vocabulary files) and the settings that change the events
(:func:`kame_sim.stt.whisper.settings_key`). The last recording of a key wins.

File: an Arrow IPC stream (kame_sim/cassette_log.py), one record batch per recorded event
list, appended and fsynced; a torn tail is cut off on the next open. Columns: ``run_index``,
``key``, ``key_json`` (first row only), ``event_index`` (null for an empty list), ``kind``,
``arrival``, ``text``, ``utterance``, ``delay``, ``speech_time``.

Modes (``stt.cassette_mode``): ``record`` (decode, then start the file afresh and append once the
run starts -- a file that is not an STT cassette is refused, never emptied), ``replay``
(never decode; a missing file or key is an InputError naming stt.cassette), ``auto`` (replay a hit,
decode and append a miss).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pyarrow as pa

from kame_sim.cassette_log import append_batch, check_cassette_path, cut_torn_tail, read_stream
from kame_sim.errors import InputError
from kame_sim.stt.events import SttEvent

STT_CASSETTE_VERSION = "1"
SttCassetteMode = Literal["record", "replay", "auto"]

SCHEMA = pa.schema(
    [
        pa.field("run_index", pa.int64(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("key_json", pa.string()),
        pa.field("event_index", pa.int32()),
        pa.field("kind", pa.string()),
        pa.field("arrival", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("utterance", pa.int32()),
        pa.field("delay", pa.float64()),
        pa.field("speech_time", pa.float64()),
    ],
    metadata={"kame_sim.stt_cassette_version": STT_CASSETTE_VERSION},
)


def key_json_of(
    content_hash: str, channel: int, fingerprint: str, settings: dict[str, object], policy_version: int
) -> str:
    """The canonical key JSON (sorted keys, no spaces): what a recording is looked up by."""
    return json.dumps(
        {
            "channel": channel,
            "content_hash": content_hash,
            "model": fingerprint,
            "policy": policy_version,
            "settings": settings,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def stt_key(
    content_hash: str, channel: int, fingerprint: str, settings: dict[str, object], *, policy_version: int
) -> tuple[str, str]:
    """``(sha256 hex, canonical key JSON)``; ``policy_version`` is the streaming policy's version."""
    key_json = key_json_of(content_hash, channel, fingerprint, settings, policy_version)
    return hashlib.sha256(key_json.encode("utf-8")).hexdigest(), key_json


def events_batch(run_index: int, key: str, key_json: str, events: list[SttEvent]) -> pa.RecordBatch:
    n = max(len(events), 1)
    has = bool(events)

    def col(name: str) -> list[object]:
        return [getattr(e, name) for e in events] if has else [None]

    columns = {
        "run_index": [run_index] * n,
        "key": [key] * n,
        "key_json": [key_json] + [None] * (n - 1),
        "event_index": list(range(n)) if has else [None],
        **{name: col(name) for name in ("kind", "arrival", "text", "utterance", "delay", "speech_time")},
    }
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


class SttCassette:
    """The file: recorded event lists by key, and an append-only writer."""

    def __init__(self, path: Path, mode: SttCassetteMode = "auto") -> None:
        if mode == "replay" and not path.exists():
            raise InputError(
                path, "stt.cassette", "cassette not found (record one with cassette_mode = 'record')"
            )
        check_cassette_path(path, "stt.cassette")
        self.path, self.mode = path, mode
        self.recorded: dict[str, list[SttEvent]] = {}
        self.n_runs = 0
        self.hits = self.misses = 0
        self._end: int | None = None
        self.started = False
        if path.exists() and path.stat().st_size:
            table, end = read_stream(
                path,
                SCHEMA,
                "kame_sim.stt_cassette_version",
                STT_CASSETTE_VERSION,
                "stt.cassette",
                "kame-sim STT cassette",
            )
            self._end = end
            if mode == "record":
                return  # read only to refuse a file that is not a cassette; emptied by start()
            cols = table.to_pydict()
            runs: dict[int, tuple[str, list[SttEvent]]] = {}
            for i in range(table.num_rows):
                run = runs.setdefault(cols["run_index"][i], (cols["key"][i], []))
                if cols["event_index"][i] is not None:
                    run[1].append(
                        SttEvent(
                            cols["kind"][i],
                            cols["arrival"][i],
                            cols["text"][i],
                            cols["utterance"][i],
                            cols["delay"][i],
                            cols["speech_time"][i],
                        )
                    )
            for index in sorted(runs):
                key, events = runs[index]
                self.recorded[key] = events
            self.n_runs = len(runs)

    def start(self) -> None:
        """The run really starts: record mode empties the file, other modes cut a torn tail.

        Opening a cassette only reads it, so a run refused by a later check (or ``kame-sim
        validate``) leaves the file exactly as it was.
        """
        if self.started:
            return
        self.started = True
        if self.mode == "record":
            self.path.unlink(missing_ok=True)
        elif self._end is not None:
            cut_torn_tail(self.path, self._end)

    def append(self, key: str, key_json: str, events: list[SttEvent]) -> None:
        self.start()
        append_batch(self.path, SCHEMA, events_batch(self.n_runs, key, key_json, events))
        self.recorded[key] = list(events)
        self.n_runs += 1

    def events(
        self,
        key: str,
        key_json: str,
        live: Callable[[], list[SttEvent]],
        on_start: list[Callable[[], None]] | None = None,
    ) -> list[SttEvent]:
        """Replay ``key`` or (record/auto) run ``live`` and record its events.

        With ``on_start`` the recording is not written now but appended to it as a callable, for
        the runner to call once the run really starts (after every check has passed).
        """
        if self.mode != "record" and key in self.recorded:
            self.hits += 1
            return list(self.recorded[key])
        self.misses += 1
        if self.mode == "replay":
            raise InputError(
                self.path,
                "stt.cassette",
                f"no recording for this conversation, model and settings ({key[:16]})",
            )
        events = live()
        if on_start is None:
            self.append(key, key_json, events)
        else:
            on_start.append(lambda: self.append(key, key_json, events))
        return events
