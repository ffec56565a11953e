"""serve-llm on real loopback sockets: the wire format, its timing, and each injected fault.

The client here is plain aiohttp reading raw SSE lines, so these tests check the server on its own
(the openai-client path is tested in test_openai_llm.py). Timing is checked in virtual time (a
:class:`VirtualClock` and the virtual send time of every write), never as wall-clock durations:
how exactly the real server keeps its delays is measured by benchmarks/bench_serve_llm.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import REPO
from virtual_clock import VirtualClock, recorded_writes

from kame_sim.errors import InputError
from kame_sim.llm.serve import (
    ServeLlmConfig,
    check_host,
    echo_text,
    load_serve_config,
    parse_fault_options,
    run_in_thread,
    serving,
    user_word_count,
)

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "user: hello there\nmoshi: hi\nuser: i want a cheap pizza place "},
]
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def _stream(base_url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One streaming request: status, each SSE data line in arrival order, and how it ended."""
    payload = {"model": "gpt-4.1", "messages": MESSAGES, "stream": True, **(body or {})}
    events: list[str] = []
    ended = "ok"
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(f"{base_url}/chat/completions", json=payload) as response,
    ):
        if response.status != 200:
            return {"status": response.status, "body": await response.json(), "events": [], "ended": "http"}
        try:
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
        except aiohttp.ClientPayloadError:
            ended = "cut"
    return {"status": 200, "events": events, "ended": ended}


def stream(base_url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return asyncio.run(_stream(base_url, body))


def content_events(events: list[str]) -> list[str]:
    """The non-empty content deltas of a stream's SSE data lines, in order."""
    out = []
    for data in events:
        if data == "[DONE]" or not _is_json(data):
            continue
        chunk = json.loads(data)
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            out.append(chunk["choices"][0]["delta"]["content"])
    return out


def sent_deltas(writes: list[tuple[float, bytes]], t0: float) -> list[tuple[float, str]]:
    """(virtual send time - t0, delta) of every write that carried a role or content delta."""
    out = []
    for at, raw in writes:
        data = raw.decode().removeprefix("data: ").strip()
        if not raw.startswith(b"data: ") or data == "[DONE]" or not _is_json(data):
            continue
        choices = json.loads(data)["choices"]
        if choices and "content" in choices[0]["delta"]:
            out.append((round(at - t0, 9), choices[0]["delta"]["content"]))
    return out


def test_stream_is_the_openai_wire_format():
    config = ServeLlmConfig(content="fixed:one two three", ttft=0.01, inter_chunk=0.0)
    with serving(config) as server:
        result = stream(server.base_url, {"stream_options": {"include_usage": True}})
    data = result["events"]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4.1" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:4]]
    assert deltas == ["one", " two", " three"]
    assert chunks[4]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["completion_tokens"] == 3
    assert server.stats.completed == 1 and server.stats.requests == 1


def test_non_streaming_completion_and_models():
    async def go(base_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            body = {"model": "m", "messages": MESSAGES}
            async with session.post(f"{base_url}/chat/completions", json=body) as r:
                completion = await r.json()
            async with session.get(f"{base_url}/models") as r:
                models = await r.json()
        return completion, models

    base_url, stop = run_in_thread(ServeLlmConfig(ttft=0.0, inter_chunk=0.0, models=("gpt-4.1", "x")))
    try:
        completion, models = asyncio.run(go(base_url))
    finally:
        stop()
    assert completion["object"] == "chat.completion" and completion["model"] == "m"
    assert completion["choices"][0]["message"]["content"] == "i want a cheap pizza place"
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert [m["id"] for m in models["data"]] == ["gpt-4.1", "x"]


def test_ttft_and_gaps_follow_the_configured_delays():
    """The role delta and delta 0 go out at TTFT, delta k at TTFT + k gaps (from the request start)."""
    clock = VirtualClock()
    config = ServeLlmConfig(content="fixed:a b c d e f", ttft=0.2, inter_chunk=0.02)
    with serving(config, clock=clock) as server, recorded_writes(clock) as writes:
        clock.now = 100.0
        result = stream(server.base_url)
    assert sent_deltas(writes, 100.0) == [
        (0.2, ""), (0.2, "a"), (0.22, " b"), (0.24, " c"), (0.26, " d"), (0.28, " e"), (0.3, " f")
    ]  # fmt: skip
    assert content_events(result["events"]) == ["a", " b", " c", " d", " e", " f"]


def test_deadlines_are_absolute_so_oversleeping_does_not_accumulate():
    """Each sleep overshoots by 5 ms: every delta is 5 ms late, not 5 ms more late than the one before."""
    clock = VirtualClock(oversleep=0.005)
    config = ServeLlmConfig(content="fixed:a b c d", ttft=0.2, inter_chunk=0.02)
    with serving(config, clock=clock) as server, recorded_writes(clock) as writes:
        stream(server.base_url)
    times = [at for at, text in sent_deltas(writes, 0.0) if text]
    assert times == [0.205, 0.225, 0.245, 0.265]


def test_http_faults_are_openai_error_bodies():
    config = ServeLlmConfig(fault_schedule=("http_429", "http_5xx"), error_status=502, ttft=0.0)
    with serving(config) as server:
        rate_limited = stream(server.base_url)
        broken = stream(server.base_url)
        fine = stream(server.base_url)
    assert rate_limited["status"] == 429 and rate_limited["body"]["error"]["code"] == "rate_limit_exceeded"
    assert broken["status"] == 502 and broken["body"]["error"]["type"] == "server_error"
    assert fine["status"] == 200 and fine["ended"] == "ok"
    assert dict(server.stats.faults) == {"http_429": 1, "http_5xx": 1}


def test_mid_stream_faults():
    config = ServeLlmConfig(
        content="fixed:w1 w2 w3 w4 w5",
        ttft=0.01,
        inter_chunk=0.01,
        fault_schedule=("drop", "malformed", "stall"),
        stall_seconds=0.4,
        fault_after_chunks=2,
    )
    clock = VirtualClock()
    with serving(config, clock=clock) as server, recorded_writes(clock) as writes:
        dropped = stream(server.base_url)
        malformed = stream(server.base_url)
        n_before_stall = len(writes)
        stall_t0 = clock.now
        stalled = stream(server.base_url)
    # drop: two content chunks, then the connection is cut without the end of the chunked body
    assert dropped["ended"] == "cut"
    assert content_events(dropped["events"]) == ["w1", " w2"]
    # malformed: one data line is not JSON; the rest of the stream still comes
    bad = [d for d in malformed["events"] if d != "[DONE]" and not _is_json(d)]
    assert len(bad) == 1
    assert content_events(malformed["events"]) == ["w1", " w2", " w3", " w4", " w5"]
    assert malformed["events"][-1] == "[DONE]"
    # stall: nothing for stall_seconds after the second chunk, then the rest, shifted by the stall
    assert content_events(stalled["events"]) == ["w1", " w2", " w3", " w4", " w5"]
    assert stalled["ended"] == "ok"
    sent = [(at, text) for at, text in sent_deltas(writes[n_before_stall:], stall_t0) if text]
    assert sent == [(0.01, "w1"), (0.02, " w2"), (0.43, " w3"), (0.44, " w4"), (0.45, " w5")]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def test_a_stall_before_the_first_token_delays_it():
    config = ServeLlmConfig(content="fixed:x y", ttft=0.01, fault_schedule=("stall",), fault_after_chunks=0)
    config = config.model_copy(update={"stall_seconds": 0.3})
    clock = VirtualClock()
    with serving(config, clock=clock) as server, recorded_writes(clock) as writes:
        result = stream(server.base_url)
    assert content_events(result["events"]) == ["x", " y"]
    # The role delta goes out at the TTFT, the first content only after the stall.
    assert sent_deltas(writes, 0.0) == [(0.01, ""), (0.31, "x"), (0.33, " y")]  # default gap 0.02 s


def test_fault_probabilities_are_seeded_and_the_schedule_comes_first():
    def faults(seed: int) -> list[str]:
        config = ServeLlmConfig(
            ttft=0.0,
            seed=seed,
            fault_schedule=("ok", "http_5xx"),
            fault_probabilities={"http_429": 0.5},
        )
        with serving(config) as server:
            return [str(stream(server.base_url)["status"]) for _ in range(8)]

    a, b = faults(3), faults(3)
    assert a == b
    assert a[:2] == ["200", "503"]
    assert set(a[2:]) == {"200", "429"}


def test_repeat_schedule_cycles():
    config = ServeLlmConfig(ttft=0.0, fault_schedule=("http_429", "ok"), repeat_schedule=True)
    with serving(config) as server:
        statuses = [stream(server.base_url)["status"] for _ in range(4)]
    assert statuses == [429, 200, 429, 200]


def test_loopback_only_unless_allowed():
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_host(host, allow_remote=False)
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(InputError, match="--allow-remote"):
            check_host(host, allow_remote=False)
    check_host("0.0.0.0", allow_remote=True)


def test_config_errors_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="sum to"):
        load_serve_config(None, {"fault_probabilities": {"stall": 0.7, "drop": 0.6}})
    with pytest.raises(InputError, match="unknown key"):
        load_serve_config(None, {"tftt": 1})
    with pytest.raises(InputError, match="needs conversation_path"):
        load_serve_config(None, {"content": "oracle_raw"})
    with pytest.raises(InputError, match="fixed:<text>"):
        load_serve_config(None, {"content": "lorem"})
    with pytest.raises(InputError, match="--fault"):
        parse_fault_options(["explode=0.1"], None)
    config_file = tmp_path / "serve.toml"
    config_file.write_text('content = "fixed:hi"\nttft = "gpt-4.1-ttft"\nfault_schedule = ["drop"]\n')
    config = load_serve_config(config_file, parse_fault_options(["stall=0.25"], "ok,drop"))
    assert config.content == "fixed:hi" and config.fault_schedule == ("ok", "drop")
    assert config.fault_probabilities == {"stall": 0.25}


def test_echo_and_user_word_count():
    assert echo_text(MESSAGES) == "i want a cheap pizza place"
    assert echo_text([{"role": "user", "content": "plain question"}]) == "plain question"
    assert user_word_count(MESSAGES) == 8


def test_oracle_raw_content_follows_the_users_progress():
    data = REPO / "scenarios" / "data" / "demo"
    config = ServeLlmConfig(content="oracle_raw", conversation_path=data, ttft=0.0, inter_chunk=0.0)
    from kame_sim.conversation import load_conversation
    from kame_sim.llm.serve import ContentSource

    source = ContentSource(config)
    conversation = load_conversation(data, None, require_oracle=True)
    words = conversation.words_of("A")
    early = [{"role": "user", "content": "user: " + " ".join(w.text for w in words[:2])}]
    late = [{"role": "user", "content": "user: " + " ".join(w.text for w in words)}]
    predictions = [p for p in conversation.oracle_raw if p.channel == conversation.channel_of("B")]
    assert source.reply(late) == [p for p in predictions if p.timestamp_s <= words[-1].end][-1].prediction
    assert source.reply(early) != source.reply(late)


def test_a_kame_style_client_finds_it_through_the_environment(monkeypatch: pytest.MonkeyPatch):
    """What a live KAME server does: AsyncOpenAI() from OPENAI_BASE_URL/OPENAI_API_KEY, KAME's loop."""
    from openai import AsyncOpenAI

    async def kame_stream() -> list[str]:
        client = AsyncOpenAI()
        stream = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, stream=True)
        out = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                text = chunk.choices[0].delta.content.strip()
                if text:
                    out.append(text)
        await client.close()
        return out

    with serving(ServeLlmConfig(ttft=0.01, inter_chunk=0.0)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "dummy")
        assert asyncio.run(kame_stream()) == ["i", "want", "a", "cheap", "pizza", "place"]


def test_command_line_options_map_onto_the_config(tmp_path: Path):
    from kame_sim.llm.serve import config_from_options

    config = config_from_options(
        content="fixed:hi there", ttft="gpt-4.1-ttft", inter_chunk="0.01", faults=["drop=0.1"],
        schedule="ok,stall", stall_seconds=2, fault_after_chunks=0, seed=4, models=["m1"],
    )  # fmt: skip
    assert config.content == "fixed:hi there" and config.inter_chunk.mean() == 0.01
    assert config.fault_probabilities == {"drop": 0.1} and config.fault_schedule == ("ok", "stall")
    assert (config.stall_seconds, config.fault_after_chunks, config.seed) == (2.0, 0, 4)
    assert config.models == ("m1",)
    # a --config file, with options over it (None leaves the file's value)
    file = tmp_path / "serve.toml"
    file.write_text("seed = 9\nrepeat_schedule = true\nttft = 0.5\n", encoding="utf-8")
    over = config_from_options(file, seed=1)
    assert (over.seed, over.repeat_schedule, over.ttft.mean()) == (1, True, 0.5)
    assert config_from_options(file, repeat_schedule=False).repeat_schedule is False
    with pytest.raises(InputError, match="--fault-after"):
        config_from_options(fault_after_chunks=-1)
    file.write_text("seed = -2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"serve\.toml: seed"):
        config_from_options(file)
