"""The live OpenAI-compatible back-end against real loopback servers (serve-llm, or a tiny capture app).

Every server binds 127.0.0.1 on a free port and is stopped at the end of its test; streams are
short (tens of ms) so the whole file runs in seconds. No test asserts a wall-clock duration: the
client's offsets are checked with a scripted clock, faults with serve-llm in virtual time (a stall
lasts until the client has given up), and how close measured offsets come to the served delays is
benchmarks/bench_serve_llm.py's job.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import DEMO_SCENARIO
from trace_checks import check_invariants, rows
from virtual_clock import ScriptedClock, VirtualClock

from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.openai_backend import KAME_SYSTEM_PROMPT, OpenAiLlm, ScaledLlm, kame_messages
from kame_sim.llm.plan import LlmChunk, LlmPlan
from kame_sim.llm.serve import ServeLlmConfig, serving
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace

SECRET = "sk-kamesim-test-SECRET-0123456789"
KEY_ENV = "KAME_SIM_TEST_OPENAI_KEY"
REPLY = "pizza express is on main street"
REQUEST = LlmRequest(1.0, "user: hello\nmoshi: hi there\nuser: i want pizza ", "i want pizza", 1)
STALL = 3600.0  # a stall no client waits out (serve-llm's VirtualClock holds it until released)


def fast_config(**kwargs: Any) -> ServeLlmConfig:
    """A quick stream: 6 words, 30 ms to the first, 5 ms apart."""
    return ServeLlmConfig(**{"content": f"fixed:{REPLY}", "ttft": 0.03, "inter_chunk": 0.005, **kwargs})


def llm_for(base_url: str, **kwargs: Any) -> OpenAiLlm:
    return OpenAiLlm(api_key=SECRET, base_url=base_url, **kwargs)


def closed_port_url() -> str:
    """A loopback URL nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@contextmanager
def app_in_thread(app: web.Application) -> Iterator[str]:
    """Any aiohttp app on 127.0.0.1 in a background loop; yields its /v1 base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def up() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    port = asyncio.run_coroutine_threadsafe(up(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def live_scenario(base_url: str, seconds: float = 8.0, **extra: Any):
    overrides = {
        "run.max_seconds": seconds,
        "llm.kind": "openai",
        "llm.base_url": base_url,
        "llm.api_key_env": KEY_ENV,
        "llm.request_timeout": 2.0,
        **extra,
    }
    return load_scenario(DEMO_SCENARIO, overrides)


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


# -- plans ------------------------------------------------------------------------------------------


def test_kame_messages_are_system_prompt_then_the_conversation():
    messages = kame_messages(REQUEST)
    assert messages == [
        {"role": "system", "content": KAME_SYSTEM_PROMPT},
        {"role": "user", "content": REQUEST.conversation},
    ]
    assert KAME_SYSTEM_PROMPT.startswith("You are Moshi, talking with the User.")
    assert "maximum 30 words" in KAME_SYSTEM_PROMPT
    assert kame_messages(REQUEST, "short")[0]["content"] == "short"


def test_a_plan_is_the_served_text_at_measured_offsets():
    """Each delta is timed once, on arrival, relative to the request start (clock readings in order)."""
    readings = [10.0, 10.25, 10.5, 11.0, 11.125, 12.0, 13.5]  # request start, then one per delta
    with serving(fast_config(), clock=VirtualClock()) as server:
        llm = llm_for(server.base_url, clock=ScriptedClock(readings))
        try:
            plan = llm.plan(REQUEST)
        finally:
            llm.close()
    assert plan.error is None and plan.source == "openai"
    assert [c.text for c in plan.chunks] == ["pizza", " express", " is", " on", " main", " street"]
    assert [c.at for c in plan.chunks] == [0.25, 0.5, 1.0, 1.125, 2.0, 3.5]


def test_the_request_is_exactly_kames_and_carries_the_key():
    seen: list[tuple[dict[str, Any], str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((await request.json(), request.headers.get("Authorization", "")))
        return web.json_response({"error": {"message": "no"}}, status=400)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    with app_in_thread(app) as base_url:
        llm = llm_for(base_url)
        plan = llm.plan(REQUEST)
        llm.close()
    body, auth = seen[0]
    assert body == {"model": "gpt-4.1", "messages": kame_messages(REQUEST), "stream": True}
    assert auth == f"Bearer {SECRET}"
    assert plan.error is not None and plan.error.startswith("http 400: no")


@pytest.mark.parametrize(
    ("fault", "prefix", "n_chunks"),
    [
        ("http_429", "http 429: Rate limit reached", 0),
        ("http_5xx", "http 503: ", 0),
        ("drop", "stream cut: ", 2),
        ("malformed", "malformed chunk: ", 2),
        ("stall", "timeout: ", 2),
    ],
)
def test_each_fault_kind_ends_the_plan_with_its_error(fault: str, prefix: str, n_chunks: int):
    # The stall outlasts the client's (real) timeout for sure: it ends only when released below.
    clock = VirtualClock(hold_from=STALL)
    config = fast_config(fault_schedule=("ok", fault), stall_seconds=STALL)
    with serving(config, clock=clock) as server:
        llm = llm_for(server.base_url, request_timeout=1.0, clock=ScriptedClock([]))  # 0, 1, 2, ...
        try:
            assert llm.plan(REQUEST).error is None  # readings 0 .. 6
            plan = llm.plan(REQUEST)  # starts at reading 7
        finally:
            clock.release()
            llm.close()
    assert plan.error is not None and plan.error.startswith(prefix), plan.error
    assert [c.at for c in plan.chunks] == [1.0, 2.0][:n_chunks]
    # The error is timed when it happens, after the chunks that came, from the same start.
    assert plan.error_at == n_chunks + 1.0


def test_a_closed_port_is_a_connect_error_not_an_exception():
    llm = llm_for(closed_port_url(), request_timeout=30.0, clock=ScriptedClock([5.0, 5.5]))
    plan = llm.plan(REQUEST)
    llm.close()
    assert plan.chunks == [] and plan.error is not None
    assert plan.error.startswith("connect error: "), plan.error  # refused at once, not a timeout
    assert plan.error_at == 0.5


def test_the_key_is_masked_in_errors_and_repr():
    async def echo_key(request: web.Request) -> web.Response:
        message = f"Incorrect API key provided: {request.headers['Authorization'].removeprefix('Bearer ')}"
        return web.json_response({"error": {"message": message, "code": "invalid_api_key"}}, status=401)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo_key)
    with app_in_thread(app) as base_url:
        llm = llm_for(base_url)
        plan = llm.plan(REQUEST)
        text = repr(llm)
        llm.close()
    assert plan.error == "http 401: Incorrect API key provided: ***"
    assert SECRET not in text


def test_time_scale_multiplies_every_time():
    class Fixed:
        def plan(self, request: LlmRequest) -> LlmPlan:
            return LlmPlan([LlmChunk(0.5, "a"), LlmChunk(0.75, " b")], error="stream cut: x", error_at=1.0)

    plan = ScaledLlm(Fixed(), 2.0).plan(REQUEST)
    assert [(c.at, c.text) for c in plan.chunks] == [(1.0, "a"), (1.5, " b")]
    assert plan.error == "stream cut: x" and plan.error_at == 2.0


# -- runs -------------------------------------------------------------------------------------------


def test_a_demo_run_streams_the_served_text(tmp_path: Path, api_key: str):
    with serving(fast_config()) as server:
        result = run_scenario(live_scenario(server.base_url), run_dir=tmp_path / "run")
        served = server.stats.requests
    data = read_trace(result.trace_path)
    check_invariants(data)
    starts = rows(data.table, "llm_start")
    assert len(starts) == served >= 3
    chunks = rows(data.table, "llm_chunk")
    by_stream: dict[int, list[str]] = {}
    for r in chunks:
        by_stream.setdefault(r["stream_id"], []).append(r["text"])
    assert by_stream and all(" ".join(words) == REPLY for words in by_stream.values())
    assert not rows(data.table, "llm_error")
    assert data.scenario["llm"]["api_key_env"] == KEY_ENV


def test_faults_become_llm_error_events_and_the_run_completes(tmp_path: Path, api_key: str):
    schedule = ("ok", "http_429", "http_5xx", "drop", "malformed", "stall")
    clock = VirtualClock(hold_from=STALL)  # the stall lasts until the run is over
    config = fast_config(fault_schedule=schedule, stall_seconds=STALL)
    with serving(config, clock=clock) as server:
        # The stall times out after 1 s of wall time; halved in simulated time, its error lands
        # before the next start (1 s after it) cancels the stream, even if the machine is slow.
        overrides = {"llm.request_timeout": 1.0, "llm.time_scale": 0.5}
        scenario = live_scenario(server.base_url, 8.0, **overrides)
        try:
            result = run_scenario(scenario, run_dir=tmp_path / "run")
        finally:
            clock.release()
    data = read_trace(result.trace_path)
    check_invariants(data)
    errors = {r["stream_id"]: r["detail"] for r in rows(data.table, "llm_error")}
    expected = {2: "http 429: ", 3: "http 503: ", 4: "stream cut: ", 5: "malformed chunk: ", 6: "timeout: "}
    for sid, prefix in expected.items():
        assert errors[sid].startswith(prefix), (sid, errors[sid])
    counts = {r["stream_id"]: r["word_count"] for r in rows(data.table, "llm_error")}
    assert counts[2] == 0 and counts[4] == 2 and counts[5] == 2


def test_an_unreachable_endpoint_is_llm_errors_and_the_run_completes(tmp_path: Path, api_key: str):
    result = run_scenario(live_scenario(closed_port_url(), 5.0), run_dir=tmp_path / "run")
    data = read_trace(result.trace_path)
    check_invariants(data)
    errors = rows(data.table, "llm_error")
    assert errors and len(errors) == len(rows(data.table, "llm_start"))
    assert all(e["detail"].startswith("connect error: ") for e in errors)
    assert data.complete


def test_a_missing_key_is_an_input_error_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(InputError) as info:
        run_scenario(live_scenario(closed_port_url()), run_dir=tmp_path / "run")
    assert info.value.field == "llm.api_key_env" and KEY_ENV in str(info.value)
    assert not (tmp_path / "run").exists()


def test_the_key_never_reaches_the_run_directory(tmp_path: Path, api_key: str):
    config = fast_config(fault_schedule=("ok", "http_429", "drop"))
    with serving(config) as server:
        result = run_scenario(live_scenario(server.base_url, 5.0), run_dir=tmp_path / "run")
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    for row in read_trace(result.trace_path).table.to_pylist():
        assert SECRET not in str(row)
