"""Live streams under both policies: concurrency, cancellation, the warm-up, cassettes of overlaps.

Everything runs against real loopback servers (serve-llm, or a tiny capture app). No assertion is
on an absolute duration: concurrency is "the measured intervals overlap" (and serve-llm's own
in-flight count), cancellation is "serve-llm saw the client go", record -> replay is "identical
simulated trace columns".
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_cassette import simulated_columns
from test_llm_plan import run_with
from test_openai_llm import KEY_ENV, REQUEST, SECRET, app_in_thread, closed_port_url, live_scenario, llm_for
from trace_checks import check_invariants, rows

from kame_sim.llm.cassette import read_cassette
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.openai_backend import ScaledLlm
from kame_sim.llm.plan import (
    NOTHING_SENT,
    LlmChunk,
    LlmPlan,
    StreamingLlmBackend,
    WarmableLlmBackend,
    read_plan,
    warm_up,
)
from kame_sim.llm.serve import ServeLlmConfig, serving
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace

WORDS = "one two three four five six seven eight nine ten"


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` (the server thread updates its stats asynchronously)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def numbered(i: int) -> LlmRequest:
    return LlmRequest(1.0, f"user: stream number {i} ", f"stream number {i}", i)


# -- streams ----------------------------------------------------------------------------------------


def test_seven_overlapping_streams_run_concurrently_and_all_complete():
    with serving(ServeLlmConfig(content="echo", ttft=0.5, inter_chunk=0.02)) as server:
        llm = llm_for(server.base_url)
        try:
            llm.plan(REQUEST)  # the client's first request pays its start-up
            streams = [llm.open(numbered(i)) for i in range(1, 8)]
            plans = [read_plan(stream) for stream in streams]  # read one after another
        finally:
            llm.close()
        stats = server.stats
    for i, plan in enumerate(plans, 1):
        assert plan.error is None and plan.cut_at is None and plan.source == "openai"
        assert "".join(c.text for c in plan.chunks) == f"stream number {i}"
    # Every stream was in flight before any of them delivered its first token: their TTFTs overlap.
    last_start = max(s.started for s in streams)
    first_tokens = [s.started + p.chunks[0].at for s, p in zip(streams, plans, strict=True)]
    assert last_start < min(first_tokens)
    assert last_start < min(s.ended for s in streams if s.ended is not None)
    assert stats.max_in_flight == 7 and stats.completed == 8 and stats.client_gone == 0


class Gated:
    """A streaming chat-completions app whose streams wait at two gates the test opens.

    Every stream sends its headers, waits at ``first``, sends its first word, waits at ``rest``,
    then sends the rest and ends: the test decides when, so nothing depends on timing.
    """

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.first, self.rest = threading.Event(), threading.Event()
        self.in_flight = self.max_in_flight = self.completed = 0

    @staticmethod
    async def _wait(gate: threading.Event) -> None:
        while not gate.is_set():
            await asyncio.sleep(0.005)

    @staticmethod
    def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [choice],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def handler(self, request: web.Request) -> web.StreamResponse:
        await request.json()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(self._event({"role": "assistant", "content": ""}))
            await self._wait(self.first)
            for i, word in enumerate(self.words):
                if i == 1:
                    await self._wait(self.rest)
                await response.write(self._event({"content": word}))
            await response.write(self._event({}, "stop"))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            self.completed += 1
            return response
        finally:
            self.in_flight -= 1

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handler)
        return app


def test_seven_streams_are_in_flight_at_once_and_hand_over_each_chunk_on_arrival():
    gated = Gated(["hello", " there", " friend"])
    with app_in_thread(gated.app()) as base_url:
        llm = llm_for(base_url)
        try:
            streams = [llm.open(numbered(i)) for i in range(1, 8)]
            assert wait_until(lambda: gated.in_flight == 7)  # seven requests open at once
            assert all(s.received().chunks == [] and not s.done for s in streams)
            gated.first.set()
            readers = [s.chunks() for s in streams]
            firsts = [next(reader) for reader in readers]  # each returns as soon as its word is there
            assert [c.text for c in firsts] == ["hello"] * 7
            assert not any(s.done for s in streams) and gated.in_flight == 7  # all still streaming
            gated.rest.set()
            rests = [[c.text for c in reader] for reader in readers]
        finally:
            gated.first.set()
            gated.rest.set()
            llm.close()
    assert rests == [[" there", " friend"]] * 7
    assert all(s.done and s.error is None and s.cut_at is None for s in streams)
    assert gated.completed == 7 and gated.max_in_flight == 7


def test_closing_a_stream_mid_way_closes_the_connection():
    config = ServeLlmConfig(content=f"fixed:{WORDS}", ttft=0.05, inter_chunk=0.1)
    with serving(config) as server:
        llm = llm_for(server.base_url)
        try:
            llm.plan(REQUEST)
            stream = llm.open(REQUEST)
            chunks = stream.chunks()
            read = [next(chunks), next(chunks)]
            stream.close()
            assert wait_until(lambda: server.stats.client_gone == 1)
            assert server.stats.completed == 1  # the warm-up request only
        finally:
            llm.close()
    received = stream.received()
    assert received.error is None and received.cut_at is not None
    assert received.chunks[:2] == read and len(received.chunks) < len(WORDS.split())
    assert all(c.at <= received.cut_at for c in received.chunks)
    stream.close()  # closing again changes nothing
    assert stream.received() == received


def test_a_stream_never_read_is_closed_too():
    with serving(ServeLlmConfig(content=f"fixed:{WORDS}", ttft=0.5)) as server:
        llm = llm_for(server.base_url)
        try:
            stream = llm.open(REQUEST)
            assert wait_until(lambda: server.stats.requests == 1)  # the server has it
            stream.close()
            assert wait_until(lambda: server.stats.client_gone == 1)
            assert list(stream.chunks()) == []
        finally:
            llm.close()
    assert server.stats.completed == 0 and stream.received().cut_at is not None


def test_closing_a_finished_stream_changes_nothing():
    with serving(ServeLlmConfig(content="fixed:just this", ttft=0.02, inter_chunk=0.0)) as server:
        llm = llm_for(server.base_url)
        try:
            stream = llm.open(REQUEST)
            plan = read_plan(stream)
            stream.close()
        finally:
            llm.close()
        assert wait_until(lambda: server.stats.completed == 1)
        assert server.stats.client_gone == 0
    assert plan.cut_at is None and stream.received() == plan


# -- the warm-up ------------------------------------------------------------------------------------


def test_the_warm_up_is_kames_one_token_request():
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        message = {"role": "assistant", "content": "OK"}
        choice = {"index": 0, "message": message, "finish_reason": "length"}
        body = {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice]}
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    with app_in_thread(app) as base_url:
        llm = llm_for(base_url, model="gpt-4.1-mini")
        try:
            assert isinstance(llm, WarmableLlmBackend) and isinstance(llm, StreamingLlmBackend)
            outcome = llm.warmup()
            plan = llm.warmup_plan()
        finally:
            llm.close()
    expected = {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "user", "content": "Reply OK."}],
        "max_completion_tokens": 1,
    }
    assert seen == [expected, expected]
    assert outcome.startswith("ok in ") and outcome.endswith(" s")
    assert [c.text for c in plan.chunks] == ["OK"] and plan.error is None


def test_a_failed_warm_up_is_an_outcome_not_an_exception():
    llm = llm_for(closed_port_url(), request_timeout=2.0)
    try:
        assert llm.warmup().startswith("connect error: ")
    finally:
        llm.close()
    with serving(ServeLlmConfig(fault_schedule=("http_429",))) as server:
        llm = llm_for(server.base_url)
        try:
            assert llm.warmup().startswith("http 429: ")
        finally:
            llm.close()

    class Broken:
        def warmup(self) -> str:
            raise RuntimeError("boom")

    assert warm_up(Broken()) == "error: RuntimeError"
    assert warm_up(object()) == NOTHING_SENT


def test_serve_llm_honours_the_token_limit_of_the_warm_up():
    config = ServeLlmConfig(content=f"fixed:{WORDS}", ttft=0.02, inter_chunk=0.0)
    with serving(config) as server:
        llm = llm_for(server.base_url)
        try:
            plan = llm.warmup_plan()
        finally:
            llm.close()
    assert [c.text for c in plan.chunks] == ["one"]


# -- time scale -------------------------------------------------------------------------------------


class FakeStream:
    def __init__(self, chunks: list[LlmChunk]) -> None:
        self._chunks = chunks
        self.error: str | None = None
        self.error_at: float | None = None
        self.cut_at: float | None = None
        self.closed = False

    def chunks(self) -> Iterator[LlmChunk]:
        yield from self._chunks

    def close(self) -> None:
        self.closed = True
        self.cut_at = 0.3

    def received(self) -> LlmPlan:
        return LlmPlan(list(self._chunks), self.error, self.error_at, "fake", self.cut_at)


class FakeStreaming:
    def __init__(self) -> None:
        self.opened: list[FakeStream] = []

    def plan(self, request: LlmRequest) -> LlmPlan:
        raise AssertionError("a streaming back-end is opened, not planned")

    def open(self, request: LlmRequest) -> FakeStream:
        self.opened.append(FakeStream([LlmChunk(0.1, "a"), LlmChunk(0.25, " b")]))
        return self.opened[-1]


def test_time_scale_wraps_streaming_back_ends():
    inner = FakeStreaming()
    scaled = ScaledLlm(inner, 2.0)
    assert isinstance(scaled, StreamingLlmBackend)
    stream = scaled.open(REQUEST)
    assert [(c.at, c.text) for c in stream.chunks()] == [(0.2, "a"), (0.5, " b")]
    stream.close()
    assert inner.opened[0].closed and stream.cut_at == 0.6
    assert stream.received().cut_at == 0.6 and stream.received().chunks[1].at == 0.5
    assert warm_up(scaled) == NOTHING_SENT  # the inner back-end has no warm-up


# -- whole runs -------------------------------------------------------------------------------------


def long_streams(**kwargs: Any) -> ServeLlmConfig:
    """Streams of 2 s (20 words, 0.1 s apart): every new start overlaps the running ones."""
    words = " ".join(f"w{i}" for i in range(20))
    return ServeLlmConfig(**{"content": f"fixed:{words}", "ttft": 0.1, "inter_chunk": 0.1, **kwargs})


def test_a_multiplexer_run_overlaps_live_streams_and_closes_the_cancelled_ones(tmp_path: Path, api_key: str):
    with serving(long_streams()) as server:
        scenario = live_scenario(server.base_url, 4.0, **{"policy.kind": "multiplexer"})
        result = run_scenario(scenario, run_dir=tmp_path / "run")
        stats = server.stats
        assert wait_until(lambda: stats.completed + stats.client_gone == stats.requests)
    data = read_trace(result.trace_path)
    check_invariants(data)
    (warmup,) = rows(data.table, "llm_warmup")
    assert warmup["detail"].startswith("ok in "), warmup["detail"]
    starts = rows(data.table, "llm_start")
    assert len(starts) >= 3 and stats.requests == len(starts) + 1  # + the warm-up
    cancels = rows(data.table, "llm_cancel")
    assert {"adoption", "session_end"} <= {r["detail"] for r in cancels}
    assert stats.max_in_flight >= 2  # overlapping streams, on the server too
    assert stats.client_gone >= 1  # a cancel closes the HTTP stream
    assert not rows(data.table, "llm_error")


def test_a_poll_loop_run_closes_superseded_live_streams(tmp_path: Path, api_key: str):
    with serving(long_streams()) as server:
        result = run_scenario(live_scenario(server.base_url, 4.0), run_dir=tmp_path / "run")
        stats = server.stats
        assert wait_until(lambda: stats.completed + stats.client_gone == stats.requests)
    data = read_trace(result.trace_path)
    check_invariants(data)
    assert not rows(data.table, "llm_warmup")  # the poll loop sends none
    superseded = [r for r in rows(data.table, "llm_cancel") if r["detail"] == "superseded"]
    assert superseded and stats.client_gone >= 1
    assert stats.requests == len(rows(data.table, "llm_start"))
    # a superseded stream delivered only the start of its reply
    by_stream = {r["stream_id"]: 0 for r in superseded}
    for r in rows(data.table, "llm_chunk"):
        if r["stream_id"] in by_stream:
            by_stream[r["stream_id"]] += 1
    assert all(n < 20 for n in by_stream.values())


def test_multiplexer_record_then_replay_is_identical_with_cut_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(KEY_ENV, "sk-cassette-test")
    cassette = tmp_path / "mux.arrows"
    cassette_keys = {"llm.cassette": str(cassette), "policy.kind": "multiplexer"}
    # Streams of 1.2 s started every 0.5 s: adoptions and the session end cut them mid-way.
    config = ServeLlmConfig(content=f"fixed:{WORDS} {WORDS}", ttft=0.1, inter_chunk=0.06)
    with serving(config) as server:
        recorded = run_scenario(
            live_scenario(server.base_url, 4.0, **cassette_keys, **{"llm.cassette_mode": "record"}),
            run_dir=tmp_path / "record",
        )
        url = server.base_url
    monkeypatch.delenv(KEY_ENV)  # a pure replay needs neither the key nor the server
    replayed = run_scenario(
        live_scenario(url, 4.0, **cassette_keys, **{"llm.cassette_mode": "replay"}),
        run_dir=tmp_path / "replay",
    )
    a, b = simulated_columns(recorded.trace_path), simulated_columns(replayed.trace_path)
    assert a.equals(b)
    events = a.column("event").to_pylist()
    assert "llm_adopt" in events and "llm_cancel" in events
    table, _ = read_cassette(cassette)
    assert table.column("cut_at").null_count < table.num_rows  # cancelled streams were recorded as cut
    warmups = [r["detail"] for r in a.to_pylist() if r["event"] == "llm_warmup"]
    assert len(warmups) == 1 and warmups[0].startswith("ok in ")


def test_a_cut_recording_that_runs_out_stays_silent_until_cancelled(tmp_path: Path):
    class Scripted:
        def plan(self, request: LlmRequest) -> LlmPlan:
            if request.stream_id == 1:
                return LlmPlan([LlmChunk(0.2, "hi")], source="cassette", cut_at=0.25)
            return LlmPlan([LlmChunk(0.2, "fine")], source="cassette")

    data = run_with(Scripted(), tmp_path, seconds=6.0)
    check_invariants(data)
    first = [r for r in data.table.to_pylist() if r["stream_id"] == 1 and r["event"].startswith("llm_")]
    assert [r["event"] for r in first] == ["llm_start", "llm_first_chunk", "llm_chunk", "llm_cancel"]
    assert first[-1]["detail"] == "superseded"
    assert rows(data.table, "llm_done")  # the other streams end normally
