"""Cassettes: record every LLM stream's plan to an Arrow file and replay it in later runs.

Why: a live back-end makes a run unrepeatable (the endpoint's latency and text change) and needs a
network and a key. Recording each stream's *plan* (its chunks with their measured offsets, and the
fault if any) once lets every later run replay exactly the same back-end behaviour offline, bit for
bit: record -> replay gives the identical trace.

Key: ``sha256`` of the canonical JSON ``{"model": ..., "messages": [...]}`` -- the request as the
LLM sees it (KAME's system prompt and ``user:``/``moshi:`` conversation). The nth request with a
given key in a run replays the nth recording of that key; once they are used up, the last one is
replayed again (a request repeated more often than recorded is still a hit).

Streams overlap (the multiplexer): a live stream is recorded when it ends -- read to its end, or
cancelled -- so the file's order is the order streams *ended*; ``plan_index`` is reserved when the
stream *starts*, and "the nth recording of a key" counts in that order. A stream cancelled before
its end records what had arrived by then and its ``cut_at`` (seconds after its start): replayed, it
delivers those chunks and then stays silent until it is cancelled again -- a replay never invents an
end (``llm_done``) or a fault that the endpoint did not send. An identical replay cancels it at the
same simulated moment, before it runs out.

KAME's one-token warm-up (multiplexer sessions) is recorded too, under the key of its own request,
so a replayed run's ``llm_warmup`` row is the recorded outcome.

File: an Arrow IPC *stream*, one record batch per recorded stream, appended as the run goes (a
crashed run keeps every complete plan; a torn last message is cut off on the next open). Columns:
``plan_index`` (start order), ``key``, ``request`` (the canonical request JSON, on a plan's first
row only), ``chunk_index`` (null for a plan without chunks), ``at`` and ``text`` of each chunk,
``error``/``error_at`` (the fault, on every row of the plan), ``source`` (who made the plan, e.g.
``openai``), ``cut_at`` (version 2: null unless the stream was cancelled while recording). Times
are raw (``llm.time_scale`` is applied after replay). Version-1 files (no ``cut_at``) are read as
they are and rewritten as version 2 before anything is appended to them.

Modes: ``record`` (start the file afresh when the run starts -- never while a run is only
prepared or validated, and only if the file is a cassette -- then ask the wrapped back-end for
every stream and append it), ``replay`` (never record; a miss is ``on_miss``: ``"error"`` -> a
plan whose error is ``"cassette miss: <key>"`` at t = 0, which the run records as an
``llm_error`` event -- a run-time event rather than an input error, so one unknown request does
not throw away a long run; ``"live"`` -> ask the wrapped back-end), ``auto`` (replay hits,
record misses).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa

from kame_sim.cassette_log import append_batch, check_cassette_path, cut_torn_tail, read_stream
from kame_sim.errors import InputError
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.openai_backend import (
    WARMUP_MAX_COMPLETION_TOKENS,
    WARMUP_MESSAGES,
    kame_messages,
)
from kame_sim.llm.plan import (
    LlmBackend,
    LlmChunk,
    LlmPlan,
    LlmStream,
    PlannedStream,
    StreamingLlmBackend,
    WarmableLlmBackend,
    open_stream,
    read_plan,
    warm_up,
    warmup_outcome,
)

CASSETTE_VERSION = "2"
_VERSION_KEY = "kame_sim.cassette_version"
CassetteMode = Literal["record", "replay", "auto"]
OnMiss = Literal["error", "live"]

_FIELDS_V1 = [
    pa.field("plan_index", pa.int64(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("request", pa.string()),
    pa.field("chunk_index", pa.int32()),
    pa.field("at", pa.float64()),
    pa.field("text", pa.string()),
    pa.field("error", pa.string()),
    pa.field("error_at", pa.float64()),
    pa.field("source", pa.string()),
]
SCHEMA = pa.schema([*_FIELDS_V1, pa.field("cut_at", pa.float64())], metadata={_VERSION_KEY: CASSETTE_VERSION})
SCHEMA_V1 = pa.schema(_FIELDS_V1, metadata={_VERSION_KEY: "1"})


def canonical_request(model: str, messages: list[dict[str, str]]) -> str:
    """The JSON a key is the hash of (sorted keys, no whitespace, UTF-8 kept)."""
    return json.dumps(
        {"messages": messages, "model": model}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def request_key(model: str, messages: list[dict[str, str]]) -> str:
    """sha256 hex of :func:`canonical_request`."""
    return hashlib.sha256(canonical_request(model, messages).encode("utf-8")).hexdigest()


def warmup_request(model: str) -> tuple[str, str]:
    """``(key, canonical JSON)`` of KAME's warm-up request (its own key: it has no system prompt)."""
    request_json = json.dumps(
        {
            "max_completion_tokens": WARMUP_MAX_COMPLETION_TOKENS,
            "messages": [dict(m) for m in WARMUP_MESSAGES],
            "model": model,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(request_json.encode("utf-8")).hexdigest(), request_json


def plan_batch(plan_index: int, key: str, request_json: str, plan: LlmPlan) -> pa.RecordBatch:
    """One plan as one record batch (a plan without chunks is one row with null chunk fields)."""
    n = max(len(plan.chunks), 1)
    has = bool(plan.chunks)
    columns = {
        "plan_index": [plan_index] * n,
        "key": [key] * n,
        "request": [request_json] + [None] * (n - 1),
        "chunk_index": list(range(n)) if has else [None],
        "at": [c.at for c in plan.chunks] if has else [None],
        "text": [c.text for c in plan.chunks] if has else [None],
        "error": [plan.error] * n,
        "error_at": [plan.error_at] * n,
        "source": [plan.source] * n,
        "cut_at": [plan.cut_at] * n,
    }
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def _plans_of(table: pa.Table) -> list[tuple[int, str, LlmPlan]]:
    """Rows back into ``(plan_index, key, plan)`` in file order (consecutive rows of one plan)."""
    out: list[tuple[int, str, LlmPlan]] = []
    cols = table.to_pydict()
    current: tuple[int, str] | None = None
    chunks: list[LlmChunk] = []
    meta: tuple[str | None, float | None, str, float | None] = (None, None, "", None)

    def flush() -> None:
        if current is not None:
            out.append((current[0], current[1], LlmPlan(chunks, meta[0], meta[1], meta[2], meta[3])))

    for i in range(table.num_rows):
        ident = (cols["plan_index"][i], cols["key"][i])
        # A plan's rows start at chunk 0 (or are one chunk-less row): two writers that appended
        # plans with the same index and key still come back as two plans.
        if ident != current or cols["chunk_index"][i] in (0, None):
            flush()
            current, chunks = ident, []
            meta = (cols["error"][i], cols["error_at"][i], cols["source"][i] or "", cols["cut_at"][i])
        if cols["chunk_index"][i] is not None:
            chunks.append(LlmChunk(cols["at"][i], cols["text"][i]))
    flush()
    return out


def _read(path: Path) -> tuple[pa.Table, int, str]:
    """``(table as SCHEMA, end offset, version)``; a version-1 file gets a null ``cut_at``."""
    try:
        table, end = read_stream(
            path, SCHEMA, _VERSION_KEY, CASSETTE_VERSION, "llm.cassette", "kame-sim cassette"
        )
        return table, end, CASSETTE_VERSION
    except InputError as current:
        try:
            table, end = read_stream(path, SCHEMA_V1, _VERSION_KEY, "1", "llm.cassette", "kame-sim cassette")
        except InputError:
            raise current from None
    table = table.append_column(SCHEMA.field("cut_at"), pa.nulls(table.num_rows, pa.float64()))
    return table.replace_schema_metadata(SCHEMA.metadata), end, "1"


def read_cassette(path: Path) -> tuple[pa.Table, int]:
    """Every complete batch of a cassette, and the byte offset just past the last complete message.

    Cut-off tails (a crash mid-write) and an end-of-stream marker are not part of the returned
    offset, so appending starts there. A version-1 cassette comes back with a null ``cut_at``.
    """
    table, end, _ = _read(path)
    return table, end


class Cassette:
    """The file: recorded plans by key (in start order), and an append-only writer.

    Opening only reads (and so validates) the file; the file is changed only once the run starts
    (:meth:`start`, or the first :meth:`append`): then ``fresh`` (record mode) starts it afresh,
    otherwise a torn tail is cut off. A refused run, or ``kame-sim validate``, never touches it.
    """

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.fresh = fresh
        self._plans: dict[str, list[tuple[int, int, LlmPlan]]] = defaultdict(list)
        self.plans: dict[str, list[LlmPlan]] = defaultdict(list)
        self.n_plans = 0  # the next plan_index to reserve
        self._added = 0
        self.version = CASSETTE_VERSION
        self._end: int | None = None
        self.started = False
        check_cassette_path(path, "llm.cassette")
        if path.exists() and path.stat().st_size:
            # a file that is not a cassette is refused here; nothing is written yet
            table, self._end, self.version = _read(path)
            if not fresh:
                for index, key, plan in _plans_of(table):
                    self._insert(index, key, plan)
                    self.n_plans = max(self.n_plans, index + 1)

    def start(self) -> None:
        """The run really starts: record mode empties the file, other modes cut a torn tail."""
        if self.started:
            return
        self.started = True
        if self.fresh:
            self.path.unlink(missing_ok=True)  # record = this run's streams only
            self.version = CASSETTE_VERSION
        elif self._end is not None:
            cut_torn_tail(self.path, self._end)  # drop a torn tail / EOS marker so appends are readable

    def _insert(self, index: int, key: str, plan: LlmPlan) -> None:
        """Keep each key's plans in plan_index (start) order; ties keep the order they came in."""
        entries = self._plans[key]
        position = bisect.bisect_right([(i, n) for i, n, _ in entries], (index, self._added))
        entries.insert(position, (index, self._added, plan))
        self._added += 1
        self.plans[key] = [p for _, _, p in entries]

    def reserve(self) -> int:
        """A plan_index for a stream that starts now and is appended when it ends."""
        index = self.n_plans
        self.n_plans += 1
        return index

    def append(self, key: str, request_json: str, plan: LlmPlan, index: int | None = None) -> None:
        """Append one plan as one encapsulated IPC message (the schema first in a new file)."""
        self.start()
        if index is None:
            index = self.reserve()
        if self.version != CASSETTE_VERSION:
            self._upgrade()
        append_batch(self.path, SCHEMA, plan_batch(index, key, request_json, plan))
        self._insert(index, key, plan)

    def _upgrade(self) -> None:
        """Rewrite a version-1 file as version 2 (same rows, null cut_at), atomically."""
        table, _, _ = _read(self.path)
        tmp = self.path.with_name(self.path.name + ".upgrade")
        with tmp.open("wb") as f:
            f.write(SCHEMA.serialize().to_pybytes())
            for batch in table.to_batches():
                f.write(batch.serialize().to_pybytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.version = CASSETTE_VERSION


class RecordingStream:
    """Passes a live stream through unchanged and records it once it ends or is closed.

    Recorded: the inner stream's :meth:`received` -- the whole plan when it was read to its end (or
    had ended before the close), else the chunks that arrived before the close with ``cut_at``.
    """

    def __init__(self, inner: LlmStream, record: Callable[[LlmPlan], None]) -> None:
        self.inner = inner
        self._record = record
        self.recorded: LlmPlan | None = None

    @property
    def error(self) -> str | None:
        return self.inner.error

    @property
    def error_at(self) -> float | None:
        return self.inner.error_at

    @property
    def cut_at(self) -> float | None:
        return getattr(self.inner, "cut_at", None)

    def chunks(self) -> Iterator[LlmChunk]:
        yield from self.inner.chunks()
        self._done()

    def close(self) -> None:
        self.inner.close()
        self._done()

    def received(self) -> LlmPlan:
        return self.inner.received()

    def _done(self) -> None:
        if self.recorded is None:
            self.recorded = self.inner.received()
            self._record(self.recorded)


class CassetteLlm:
    """Wraps a back-end (or none, for a pure replay) with a cassette; see the module docstring."""

    def __init__(
        self,
        inner: LlmBackend | None,
        path: Path,
        mode: CassetteMode = "auto",
        on_miss: OnMiss = "error",
        *,
        model: str = "gpt-4.1",
        system_prompt: str | None = None,
    ) -> None:
        if mode == "replay" and not path.exists():
            raise InputError(
                path, "llm.cassette", "cassette not found (record one with cassette_mode = 'record')"
            )
        if inner is None and (mode != "replay" or on_miss == "live"):
            raise ValueError(f"cassette mode {mode!r} with on_miss {on_miss!r} needs a back-end to ask")
        self.inner = inner
        self.mode = mode
        self.on_miss = on_miss
        self.model = model
        self.system_prompt = system_prompt
        # record = this run's streams only ('auto' is the mode that adds to a cassette); the file is
        # emptied when the run starts (start()), never while a run is only being prepared.
        self.cassette = Cassette(path, fresh=mode == "record")
        self._seen: dict[str, int] = defaultdict(int)
        self.hits = 0
        self.misses = 0

    def start(self) -> None:
        """Called when the run really starts (after every check): see :meth:`Cassette.start`."""
        if self.mode != "replay":
            self.cassette.start()

    def key_of(self, request: LlmRequest) -> tuple[str, str]:
        """``(key, canonical request JSON)`` of what the live back-end would send for ``request``."""
        request_json = canonical_request(self.model, kame_messages(request, self.system_prompt))
        return hashlib.sha256(request_json.encode("utf-8")).hexdigest(), request_json

    def _hit(self, key: str) -> LlmPlan | None:
        """The recording the next request with ``key`` replays (counted), or None."""
        recorded = self.cassette.plans.get(key)
        if not recorded:
            return None
        n = self._seen[key]
        self._seen[key] = n + 1
        hit = recorded[min(n, len(recorded) - 1)]
        return LlmPlan(list(hit.chunks), hit.error, hit.error_at, "cassette", hit.cut_at)

    def open(self, request: LlmRequest) -> LlmStream:
        """A recorded stream replayed, or the back-end's own stream (recorded when it ends)."""
        key, request_json = self.key_of(request)
        if self.mode != "record":
            hit = self._hit(key)
            if hit is not None:
                self.hits += 1
                return PlannedStream(hit)
            self.misses += 1
            if self.mode == "replay":
                if self.on_miss == "error":
                    miss = LlmPlan([], error=f"cassette miss: {key[:16]}", error_at=0.0, source="cassette")
                    return PlannedStream(miss)
                assert self.inner is not None
                return open_stream(self.inner, request)
        assert self.inner is not None
        index = self.cassette.reserve()  # start order: the nth request of a key is the nth recording
        self._seen[key] += 1
        if not isinstance(self.inner, StreamingLlmBackend):
            plan = self.inner.plan(request)  # known whole at once: recorded now
            self.cassette.append(key, request_json, plan, index)
            return PlannedStream(plan)

        def record(plan: LlmPlan) -> None:
            self.cassette.append(key, request_json, plan, index)

        return RecordingStream(self.inner.open(request), record)

    def plan(self, request: LlmRequest) -> LlmPlan:
        """:meth:`open` read to its end (a live stream is recorded then)."""
        return read_plan(self.open(request))

    def warmup(self) -> str:
        """KAME's warm-up, recorded like a stream so that a replay repeats its outcome."""
        key, request_json = warmup_request(self.model)
        if self.mode != "record":
            hit = self._hit(key)
            if hit is not None:
                return warmup_outcome(hit)
            if self.mode == "replay":
                if self.on_miss == "live" and self.inner is not None:
                    return warm_up(self.inner)
                return f"cassette miss: {key[:16]}"
        assert self.inner is not None
        warmup_plan = getattr(self.inner, "warmup_plan", None)
        if callable(warmup_plan):
            plan = warmup_plan()
        elif isinstance(self.inner, WarmableLlmBackend):
            return self.inner.warmup()  # an outcome without a plan: nothing to record
        else:
            plan = LlmPlan([], source="simulated")  # nothing sent (recorded, so a replay says so too)
        self.cassette.append(key, request_json, plan)
        self._seen[key] += 1
        return warmup_outcome(plan)
