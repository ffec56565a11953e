"""Cassettes: record every LLM stream's plan to an Arrow file and replay it in later runs.

Why: a live back-end makes a run unrepeatable (the endpoint's latency and text change) and needs a
network and a key. Recording each stream's *plan* (its chunks with their measured offsets, and the
fault if any) once lets every later run replay exactly the same back-end behaviour offline, bit for
bit: record -> replay gives the identical trace.

Key: ``sha256`` of the canonical JSON ``{"model": ..., "messages": [...]}`` -- the request as the
LLM sees it (KAME's system prompt and ``user:``/``moshi:`` conversation). The nth request with a
given key in a run replays the nth recording of that key; once they are used up, the last one is
replayed again (a request repeated more often than recorded is still a hit).

File: an Arrow IPC *stream*, one record batch per recorded stream, appended as the run goes (a
crashed run keeps every complete plan; a torn last message is cut off on the next open). Columns:
``plan_index`` (recording order), ``key``, ``request`` (the canonical request JSON, on a plan's
first row only), ``chunk_index`` (null for a plan without chunks), ``at`` and ``text`` of each
chunk, ``error``/``error_at`` (the fault, on every row of the plan), ``source`` (who made the plan,
e.g. ``openai``). Times are raw (``llm.time_scale`` is applied after replay).

Modes: ``record`` (start the file afresh when the run starts -- never while a run is only
prepared or validated, and only if the file is a cassette -- then ask the wrapped back-end for
every stream and append it), ``replay`` (never record; a miss is ``on_miss``: ``"error"`` -> a
plan whose error is ``"cassette miss: <key>"`` at t = 0, which the run records as an
``llm_error`` event -- a run-time event rather than an input error, so one unknown request does
not throw away a long run; ``"live"`` -> ask the wrapped back-end), ``auto`` (replay hits,
record misses).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Literal

import pyarrow as pa

from kame_sim.cassette_log import append_batch, check_cassette_path, cut_torn_tail, read_stream
from kame_sim.errors import InputError
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.openai_backend import kame_messages
from kame_sim.llm.plan import LlmBackend, LlmChunk, LlmPlan

CASSETTE_VERSION = "1"
CassetteMode = Literal["record", "replay", "auto"]
OnMiss = Literal["error", "live"]

SCHEMA = pa.schema(
    [
        pa.field("plan_index", pa.int64(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("request", pa.string()),
        pa.field("chunk_index", pa.int32()),
        pa.field("at", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("error", pa.string()),
        pa.field("error_at", pa.float64()),
        pa.field("source", pa.string()),
    ],
    metadata={"kame_sim.cassette_version": CASSETTE_VERSION},
)


def canonical_request(model: str, messages: list[dict[str, str]]) -> str:
    """The JSON a key is the hash of (sorted keys, no whitespace, UTF-8 kept)."""
    return json.dumps(
        {"messages": messages, "model": model}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def request_key(model: str, messages: list[dict[str, str]]) -> str:
    """sha256 hex of :func:`canonical_request`."""
    return hashlib.sha256(canonical_request(model, messages).encode("utf-8")).hexdigest()


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
    }
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def _plans_of(table: pa.Table) -> list[tuple[str, LlmPlan]]:
    """Rows back into ``(key, plan)`` in recording order (consecutive rows of one plan_index)."""
    out: list[tuple[str, LlmPlan]] = []
    cols = table.to_pydict()
    current: tuple[int, str] | None = None
    chunks: list[LlmChunk] = []
    meta: tuple[str | None, float | None, str] = (None, None, "")
    for i in range(table.num_rows):
        ident = (cols["plan_index"][i], cols["key"][i])
        # A plan's rows start at chunk 0 (or are one chunk-less row): two writers that appended
        # plans with the same index and key still come back as two plans.
        if ident != current or cols["chunk_index"][i] in (0, None):
            if current is not None:
                out.append((current[1], LlmPlan(chunks, meta[0], meta[1], meta[2])))
            current, chunks = ident, []
            meta = (cols["error"][i], cols["error_at"][i], cols["source"][i] or "")
        if cols["chunk_index"][i] is not None:
            chunks.append(LlmChunk(cols["at"][i], cols["text"][i]))
    if current is not None:
        out.append((current[1], LlmPlan(chunks, meta[0], meta[1], meta[2])))
    return out


def read_cassette(path: Path) -> tuple[pa.Table, int]:
    """Every complete batch of a cassette, and the byte offset just past the last complete message.

    Cut-off tails (a crash mid-write) and an end-of-stream marker are not part of the returned
    offset, so appending starts there.
    """
    return read_stream(
        path, SCHEMA, "kame_sim.cassette_version", CASSETTE_VERSION, "llm.cassette", "kame-sim cassette"
    )


class Cassette:
    """The file: recorded plans by key, and an append-only writer.

    Opening only reads (and so validates) the file; the file is changed only once the run starts
    (:meth:`start`, or the first :meth:`append`): then ``fresh`` (record mode) starts it afresh,
    otherwise a torn tail is cut off. A refused run, or ``kame-sim validate``, never touches it.
    """

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.fresh = fresh
        self.plans: dict[str, list[LlmPlan]] = defaultdict(list)
        self.n_plans = 0
        self._end: int | None = None
        self.started = False
        check_cassette_path(path, "llm.cassette")
        if path.exists() and path.stat().st_size:
            table, self._end = read_cassette(path)  # a file that is not a cassette is refused here
            if not fresh:
                for key, plan in _plans_of(table):
                    self.plans[key].append(plan)
                    self.n_plans += 1

    def start(self) -> None:
        """The run really starts: record mode empties the file, other modes cut a torn tail."""
        if self.started:
            return
        self.started = True
        if self.fresh:
            self.path.unlink(missing_ok=True)  # record = this run's streams only
        elif self._end is not None:
            cut_torn_tail(self.path, self._end)  # drop a torn tail / EOS marker so appends are readable

    def append(self, key: str, request_json: str, plan: LlmPlan) -> None:
        """Append one plan as one encapsulated IPC message (the schema first in a new file)."""
        self.start()
        batch = plan_batch(self.n_plans, key, request_json, plan)
        append_batch(self.path, SCHEMA, batch)
        self.plans[key].append(plan)
        self.n_plans += 1


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

    def plan(self, request: LlmRequest) -> LlmPlan:
        key, request_json = self.key_of(request)
        if self.mode != "record":
            recorded = self.cassette.plans.get(key)
            if recorded:
                n = self._seen[key]
                self._seen[key] = n + 1
                self.hits += 1
                hit = recorded[min(n, len(recorded) - 1)]
                return LlmPlan(list(hit.chunks), hit.error, hit.error_at, "cassette")
            self.misses += 1
            if self.mode == "replay":
                if self.on_miss == "error":
                    return LlmPlan([], error=f"cassette miss: {key[:16]}", error_at=0.0, source="cassette")
                assert self.inner is not None
                return self.inner.plan(request)
        assert self.inner is not None
        plan = self.inner.plan(request)
        self.cassette.append(key, request_json, plan)
        self._seen[key] += 1
        return plan
