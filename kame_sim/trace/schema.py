"""The trace schema (version 2): one row per event, one wide table with nullable columns.

A wide table with plain string event names is what makes the trace easy to query from pyarrow,
DuckDB and Polars alike (``WHERE event = 'oracle_token_fed'``). Simulated time (``t_sim``) and
everything derived from the simulation are deterministic; measured wall-clock columns are listed
in :data:`WALL_COLUMNS` and are the only ones allowed to differ between two runs of one seed.

Version 2 (both KAME back-end policies) added the ``request`` column and the events
``llm_adopt``, ``llm_start_deferred``, ``llm_start_skipped``, ``llm_warmup``, ``oracle_put_wait``,
``oracle_flush`` and ``oracle_stale_skipped``; ``llm_cancel`` got reasons other than superseded.
Version 1 traces (poll loop only) are read by filling the new column with nulls
(:func:`kame_sim.trace.reader.read_trace`).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "2"
READABLE_VERSIONS = ("1", "2")
TRACE_FILENAME = "trace.arrows"

# event name -> what the row means (also the README's table).
EVENTS: dict[str, str] = {
    "run_start": "the run began (detail: front-end name)",
    "user_word": "a user word: t_sim = start, t_ref = end, utterance = index",
    "stt_partial": "a partial result arrived: text, utterance, t_ref = speech time, delay_s",
    "stt_final": "a final result arrived: text, utterance, t_ref = utterance end, delay_s",
    "llm_warmup": "multiplexer: KAME's one-token warm-up request at session start (detail: outcome)",
    "llm_start": (
        "a stream started: stream_id = generation, detail = reason, text = pending user text, "
        "request = the user message sent, word_count = user words (poll loop)"
    ),
    "policy_switch": "[switch]: the policy settings changed at this tick (detail: what changed)",
    "llm_rate_limited": "poll loop: a wanted start was refused by the rate limit (detail = reason)",
    "llm_start_deferred": "multiplexer: a candidate inside the restart interval; t_ref = trailing start time",
    "llm_start_skipped": "multiplexer: a start was due but refused (detail: why)",
    "llm_first_chunk": "first non-blank chunk: delay_s = time to first token; detail = ignored (older)",
    "llm_adopt": "multiplexer: the stream became the one the oracle follows; delay_s = its TTFT",
    "llm_chunk": "a non-blank chunk arrived: text, delay_s = gap since the previous chunk; detail = ignored",
    "llm_cancel": "a stream was cancelled: detail = superseded | adoption | limit | session_end",
    "llm_done": "a stream ended normally (word_count = non-blank chunks)",
    "llm_error": "a stream failed (detail: the fault); the oracle keeps its last state",
    "oracle_enqueue": "an item was put in the oracle queue: detail = reset|append, queue_len",
    "oracle_drop": "poll loop: an item was dropped because the queue was full",
    "oracle_put_wait": "multiplexer: a put waited for room; t_ref = when it began, delay_s = the wait",
    "oracle_flush": "multiplexer: queued items discarded at an adoption (queue_len = how many)",
    "oracle_reset_applied": "a reset was applied before the step of `frame` (t_ref = enqueue time)",
    "oracle_append_applied": "an append was applied: n_tokens, n_skipped late, oracle_index = first",
    "oracle_stale_skipped": "multiplexer: a queued item of an older generation was skipped",
    "oracle_token_fed": "per frame: token_id fed, oracle_index (null = padding), n_skipped",
    "frontend_token": "per frame: the front-end's text token_id and its text piece",
    "frame": "per frame: t_ref = when its audio was complete, step_wall_s = measured step time",
    "run_end": "the run finished (detail: status); absent in a partial trace",
}

WALL_COLUMNS = ("wall_s", "step_wall_s")

_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("seq", pa.int64(), "row number, in the order events happened"),
    ("event", pa.string(), "event name (see EVENTS)"),
    ("t_sim", pa.float64(), "simulated time of the event, seconds from the conversation start"),
    ("frame", pa.int32(), "front-end step index (frame rows and oracle applications)"),
    ("stream_id", pa.int32(), "LLM stream number = KAME's generation, from 1, in start order"),
    ("utterance", pa.int32(), "user utterance index, from 0"),
    ("text", pa.string(), "word, transcript, chunk or text piece"),
    ("token_id", pa.int32(), "token id (oracle fed or front-end output)"),
    ("oracle_index", pa.int32(), "index in the oracle token list (0 = START)"),
    ("n_tokens", pa.int32(), "tokens appended"),
    ("n_skipped", pa.int32(), "tokens that arrived after their slot and will never be fed"),
    ("word_count", pa.int32(), "user word count (llm_start) or chunk count (llm_done)"),
    ("queue_len", pa.int32(), "oracle queue length after the put"),
    ("delay_s", pa.float64(), "the simulated delay behind this event"),
    ("t_ref", pa.float64(), "a reference time (see EVENTS)"),
    ("detail", pa.string(), "small extra information (reason, action, status)"),
    ("request", pa.string(), "llm_start: the user message sent to the LLM (schema 2)"),
    ("wall_s", pa.float64(), "MEASURED wall-clock seconds since the run started (not reproducible)"),
    ("step_wall_s", pa.float64(), "MEASURED wall-clock seconds of the front-end step (not reproducible)"),
]

COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _FIELDS)


def trace_schema(metadata: dict[str, str] | None = None) -> pa.Schema:
    """The Arrow schema, with column descriptions as field metadata and run facts as schema metadata."""
    fields = [pa.field(name, dtype, metadata={"description": doc}) for name, dtype, doc in _FIELDS]
    meta = {"kame_sim.schema_version": SCHEMA_VERSION}
    meta.update(metadata or {})
    return pa.schema(fields, metadata=meta)
