"""``serve-llm``: a loopback OpenAI-compatible chat-completions server with timing and faults.

Why a real server and not a mock: the thing under test is a live client (a running KAME server,
or kame-sim's own :class:`~kame_sim.llm.openai_backend.OpenAiLlm`) talking HTTP + SSE through the
real ``openai`` library. Its behaviour under a slow first token, a stalled stream or a connection
cut half-way can only be seen with real sockets, so this server speaks the wire format exactly as
the OpenAI API does and injects the faults at the byte level:

* ``POST /v1/chat/completions`` with ``stream=true``: ``data: {chat.completion.chunk}`` events --
  first delta ``{"role": "assistant", "content": ""}``, one content delta per chunk, an empty delta
  with ``finish_reason: "stop"``, a usage chunk when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``. Without ``stream`` one ``chat.completion`` object after the whole delay.
* ``GET /v1/models``: the configured model names.

Text comes from a simple, deterministic content source (``fixed:<text>``, ``echo`` of the last
user line, or a conversation's recorded ``oracle_raw`` predictions); timing from kame-sim's delay
models (TTFT and inter-chunk gaps, seeded); faults from per-request probabilities and/or a
deterministic schedule. The server measures nothing: it is a stress target. Its waits go through a
:class:`ServeClock` (the event loop's by default), so tests can run it in virtual time.

It binds 127.0.0.1 by default and refuses a non-loopback host unless ``allow_remote`` is set,
because it answers anyone without authentication (it never reads or logs the API key).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kame_sim.config import parse_toml_value, read_toml
from kame_sim.conversation import load_conversation
from kame_sim.delays import DelayField, DelaySampler, component_rng
from kame_sim.errors import InputError
from kame_sim.llm.content import LlmRequest, OracleRawReplay
from kame_sim.llm.plan import chunk_reply
from kame_sim.llm.serve_request import BadRequest, parse_chat_request

FaultKind = Literal["http_429", "http_5xx", "stall", "drop", "malformed"]
ScheduleEntry = Literal["ok", "http_429", "http_5xx", "stall", "drop", "malformed"]
FAULT_KINDS: tuple[str, ...] = ("http_429", "http_5xx", "stall", "drop", "malformed")
DEFAULT_PORT = 8089


class ServeLlmConfig(BaseModel):
    """Everything the server does: content, timing, faults. Unknown keys are errors.

    ``content``: ``"echo"`` (the last ``user:`` line of the request, or the last user message),
    ``"fixed:<text>"``, or ``"oracle_raw"`` (needs ``conversation_path``: the latest recorded
    prediction for ``frontend_speaker``'s channel at the moment the request's user words were
    spoken -- the server finds that moment by counting the ``user:`` words the request carries).

    Faults: ``fault_schedule`` decides requests 1, 2, ... in order (``"ok"`` = no fault; with
    ``repeat_schedule`` it cycles); requests past its end draw one fault kind from
    ``fault_probabilities`` (at most one fault per request). Mid-stream faults (``stall``,
    ``drop``, ``malformed``) happen just before content chunk ``fault_after_chunks``.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    content: str = "echo"
    conversation_path: Path | None = None
    conversation_id: str | None = None
    user_speaker: str = "A"
    frontend_speaker: str = "B"
    words_per_chunk: int = Field(1, ge=1)
    ttft: DelayField = 0.2
    inter_chunk: DelayField = 0.02
    seed: int = Field(0, ge=0)
    models: tuple[str, ...] = ("gpt-4.1",)
    fault_probabilities: dict[FaultKind, float] = Field(default_factory=dict)
    fault_schedule: tuple[ScheduleEntry, ...] = ()
    repeat_schedule: bool = False
    error_status: int = Field(503, ge=500, le=599, description="status of an http_5xx fault")
    stall_seconds: float = Field(
        5.0, ge=0, allow_inf_nan=False, description="how long a stalled stream sends nothing"
    )
    fault_after_chunks: int = Field(2, ge=0, description="content chunks sent before a mid-stream fault")

    @field_validator("content")
    @classmethod
    def _content_kind(cls, value: str) -> str:
        if value in ("echo", "oracle_raw") or value.startswith("fixed:"):
            return value
        raise ValueError("must be 'echo', 'oracle_raw' or 'fixed:<text>'")

    @field_validator("fault_probabilities")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, p in value.items():
            if not (math.isfinite(p) and 0.0 <= p <= 1.0):
                raise ValueError(f"probability of {kind} must be in [0, 1], got {p}")
        if sum(value.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities sum to {sum(value.values()):g} > 1")
        return value

    @model_validator(mode="after")
    def _needs_conversation(self) -> ServeLlmConfig:
        if self.content == "oracle_raw" and self.conversation_path is None:
            raise ValueError("content = 'oracle_raw' needs conversation_path")
        return self


def load_serve_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> ServeLlmConfig:
    """A config from an optional TOML file (top-level keys) plus overrides; one-line errors."""
    data: dict[str, Any] = {}
    source: str | Path = "<cli>"
    if path is not None:
        source = path
        data = read_toml(path, "config")
        cp = data.get("conversation_path")
        if isinstance(cp, str) and not Path(cp).expanduser().is_absolute():
            data["conversation_path"] = str((path.resolve().parent / cp).resolve())
    data.update(overrides or {})
    try:
        return ServeLlmConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-", "tagged-")))
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise InputError(source, loc or None, message.removeprefix("Value error, ")) from None


def parse_fault_options(faults: list[str], schedule: str | None) -> dict[str, Any]:
    """CLI helpers: ``--fault stall=0.1`` (repeatable) and ``--schedule ok,http_429,drop``."""
    out: dict[str, Any] = {}
    probabilities: dict[str, float] = {}
    for item in faults:
        kind, _, p = item.partition("=")
        if kind not in FAULT_KINDS or not p:
            raise InputError("<cli>", "--fault", f"expected KIND=P with KIND in {', '.join(FAULT_KINDS)}")
        try:
            probabilities[kind] = float(p)
        except ValueError:
            raise InputError("<cli>", "--fault", f"{p!r} is not a probability") from None
    if probabilities:
        out["fault_probabilities"] = probabilities
    if schedule:
        out["fault_schedule"] = [s.strip() for s in schedule.split(",") if s.strip()]
    return out


# -- content ------------------------------------------------------------------------------------

_USER_LINE = re.compile(r"^\s*user:\s?(.*)$")


def _last_user_content(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def echo_text(messages: list[dict[str, Any]]) -> str:
    """The last ``user:`` line of the last user message (KAME's layout), else its last line."""
    lines = [line for line in _last_user_content(messages).splitlines() if line.strip()]
    for line in reversed(lines):
        match = _USER_LINE.match(line)
        if match:
            return match.group(1).strip()
    return lines[-1].strip() if lines else ""


def user_word_count(messages: list[dict[str, Any]]) -> int:
    """Words on the ``user:`` lines of the last user message: how far the user has got."""
    count = 0
    for line in _last_user_content(messages).splitlines():
        match = _USER_LINE.match(line)
        if match:
            count += len(match.group(1).split())
    return count


class ContentSource:
    """Request messages -> reply text, per :attr:`ServeLlmConfig.content`."""

    def __init__(self, config: ServeLlmConfig) -> None:
        self.kind = config.content
        self._replay: OracleRawReplay | None = None
        self._word_ends: list[float] = []
        if config.content == "oracle_raw":
            assert config.conversation_path is not None
            conversation = load_conversation(
                config.conversation_path, config.conversation_id, require_oracle=True
            )
            self._replay = OracleRawReplay(conversation, conversation.channel_of(config.frontend_speaker))
            self._word_ends = [w.end for w in conversation.words_of(config.user_speaker)]

    def reply(self, messages: list[dict[str, Any]]) -> str:
        if self.kind == "echo":
            return echo_text(messages)
        if self.kind.startswith("fixed:"):
            return self.kind.removeprefix("fixed:")
        assert self._replay is not None
        n = user_word_count(messages)
        now = self._word_ends[min(n, len(self._word_ends)) - 1] if n and self._word_ends else 0.0
        return self._replay.reply(LlmRequest(now, "", "", 0))


# -- the app --------------------------------------------------------------------------------------


class ServeClock(Protocol):
    """Where the server's time comes from: request starts, chunk deadlines and stalls.

    A seam so tests can check the schedule in virtual time (no assertion on wall-clock durations,
    which fail on a loaded machine); the real server uses :class:`LoopClock`.
    """

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's monotonic clock and ``asyncio.sleep``: real time."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class ServeStats:
    """What the server did (for tests and the benchmark; it never stores request content)."""

    requests: int = 0
    completed: int = 0
    client_gone: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0  # chat-completion requests being answered right now
    max_in_flight: int = 0  # the most at once (overlapping streams)


class _State:
    """Per-app state: samplers and fault RNG live on the event loop thread, so draws never race."""

    def __init__(self, config: ServeLlmConfig, clock: ServeClock | None = None) -> None:
        self.config = config
        self.clock: ServeClock = clock or LoopClock()
        self.content = ContentSource(config)
        self.ttft: DelaySampler = config.ttft.sampler(component_rng(config.seed, "serve.ttft"))
        self.inter_chunk: DelaySampler = config.inter_chunk.sampler(
            component_rng(config.seed, "serve.inter_chunk")
        )
        self.fault_rng = component_rng(config.seed, "serve.faults")
        self.stats = ServeStats()
        self._ids = 0

    def next_request(self) -> tuple[int, str]:
        """Request number (from 1) and the fault it gets ('ok' for none)."""
        self.stats.requests += 1
        n = self.stats.requests
        schedule = self.config.fault_schedule
        if schedule and (n <= len(schedule) or self.config.repeat_schedule):
            fault = schedule[(n - 1) % len(schedule)]
        else:
            fault = "ok"
            u = float(self.fault_rng.random())
            acc = 0.0
            for kind in FAULT_KINDS:
                acc += self.config.fault_probabilities.get(kind, 0.0)  # type: ignore[call-overload]
                if u < acc:
                    fault = kind
                    break
        if fault != "ok":
            self.stats.faults[fault] += 1
        return n, fault

    def completion_id(self) -> str:
        self._ids += 1
        return f"chatcmpl-kamesim{self._ids:012d}"


STATE = web.AppKey("kame_sim_serve_state", _State)


@web.middleware
async def _count_in_flight(request: web.Request, handler: Any) -> web.StreamResponse:
    """``stats.in_flight`` / ``max_in_flight``: how many completions are being answered at once."""
    if request.path != "/v1/chat/completions":
        return await handler(request)
    stats = request.app[STATE].stats
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    try:
        return await handler(request)
    finally:
        stats.in_flight -= 1


def _error_response(
    status: int, message: str, type_: str, code: str | None, param: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers={"x-request-id": f"req_kamesim_{time.time_ns()}"})


async def _sleep_until(clock: ServeClock, deadline: float) -> None:
    delay = deadline - clock.time()
    if delay > 0:
        await clock.sleep(delay)


def _chunk_event(base: dict[str, Any], delta: dict[str, Any], finish: str | None, usage: bool) -> bytes:
    chunk = {
        **base,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = None
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


async def _models(request: web.Request) -> web.Response:
    models = request.app[STATE].config.models
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "kame-sim"} for m in models]
    return web.json_response({"object": "list", "data": data})


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    clock = state.clock
    t0 = clock.time()
    parsed = parse_chat_request(await request.read())
    if isinstance(parsed, BadRequest):
        return _error_response(400, parsed.message, "invalid_request_error", None, parsed.param)
    messages = parsed.message_dicts()
    model = parsed.model
    config = state.config
    _, fault = state.next_request()
    if fault == "http_429":
        return _error_response(
            429, "Rate limit reached (kame-sim serve-llm fault injection).", "requests", "rate_limit_exceeded"
        )
    if fault == "http_5xx":
        return _error_response(
            config.error_status,
            "The server had an error while processing your request.",
            "server_error",
            None,
        )

    pieces = chunk_reply(state.content.reply(messages), config.words_per_chunk)
    limit = parsed.max_completion_tokens or parsed.max_tokens  # a word stands for a token
    if limit is not None:
        pieces = chunk_reply(" ".join("".join(pieces).split()[:limit]), config.words_per_chunk)
    # Offsets of content chunks from the request start: TTFT, then one gap per later chunk.
    offsets: list[float] = []
    at = state.ttft.draw()
    for i in range(len(pieces)):
        if i:
            at += state.inter_chunk.draw()
        offsets.append(at)
    first_at = offsets[0] if offsets else at
    fault_index = min(config.fault_after_chunks, len(pieces))
    cid, created = state.completion_id(), int(time.time())

    if not parsed.stream:
        return await _complete(request, state, fault, pieces, offsets, first_at, t0, cid, created, model)

    include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
    base = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_kamesim",
    }
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "x-request-id": f"req_{cid}",
        }
    )
    shift = 0.0  # a stall delays everything after it
    last_at = offsets[-1] if offsets else first_at
    try:
        # Headers and the role-only delta go out when the first token is ready, as the API does.
        await _sleep_until(clock, t0 + first_at)
        await response.prepare(request)
        await response.write(_chunk_event(base, {"role": "assistant", "content": ""}, None, include_usage))
        for i in range(len(pieces) + 1):
            if i == fault_index and fault in ("stall", "drop", "malformed"):
                if fault == "drop":
                    if request.transport is not None:
                        request.transport.abort()  # the body is never completed (no last chunk)
                    return response
                if fault == "stall":
                    shift += config.stall_seconds
                    await clock.sleep(config.stall_seconds)
                if fault == "malformed":
                    await response.write(
                        b'data: {"id":"' + cid.encode() + b'","choices":[{"delta":{"content":\n\n'
                    )
            await _sleep_until(clock, t0 + (offsets[i] if i < len(pieces) else last_at) + shift)
            if i < len(pieces):
                await response.write(_chunk_event(base, {"content": pieces[i]}, None, include_usage))
        await response.write(_chunk_event(base, {}, "stop", include_usage))
        if include_usage:
            usage_chunk = {**base, "choices": [], "usage": _usage(messages, pieces)}
            await response.write(
                b"data: " + json.dumps(usage_chunk, separators=(",", ":")).encode() + b"\n\n"
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        state.stats.completed += 1
    except (ConnectionResetError, ConnectionError):
        state.stats.client_gone += 1  # the client went away (cancelled stream, timeout): normal
    return response


def _usage(messages: list[dict[str, Any]], pieces: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion = sum(len(p.split()) for p in pieces)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _complete(
    request: web.Request,
    state: _State,
    fault: str,
    pieces: list[str],
    offsets: list[float],
    first_at: float,
    t0: float,
    cid: str,
    created: int,
    model: str,
) -> web.StreamResponse:
    """Non-streaming: one chat.completion after the whole stream's delay (faults still apply)."""
    total = (offsets[-1] if offsets else first_at) + (state.config.stall_seconds if fault == "stall" else 0.0)
    await _sleep_until(state.clock, t0 + total)
    if fault == "drop":
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    if fault == "malformed":
        return web.Response(
            body=b'{"id":"' + cid.encode() + b'","choices":[', content_type="application/json"
        )
    text = "".join(pieces)
    body = {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_kamesim",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage([], pieces),
    }
    state.stats.completed += 1
    return web.json_response(body)


def create_app(config: ServeLlmConfig, clock: ServeClock | None = None) -> web.Application:
    """The aiohttp application (routes under /v1, state built from ``config``; real time by default)."""
    app = web.Application(client_max_size=16 * 1024**2)
    app[STATE] = _State(config, clock)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _models)
    app.middlewares.append(_count_in_flight)
    return app


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind unless asked: the server has no authentication at all."""
    if allow_remote or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(
            "<cli>", "--host", f"{host} is not a loopback address; pass --allow-remote to serve on it"
        )


async def serve(
    config: ServeLlmConfig,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled. ``ready`` gets the base URL (``http://HOST:PORT/v1``) once bound."""
    check_host(host, allow_remote)
    runner = web.AppRunner(create_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:  # port taken, no permission, an address this machine does not have
            reason = exc.strerror or str(exc)
            raise InputError("<cli>", "--port", f"cannot listen on {host}:{port} ({reason})") from None
        bound_port = runner.addresses[0][1]
        if ready is not None:
            url_host = f"[{host}]" if ":" in host else host
            ready(f"http://{url_host}:{bound_port}/v1")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


class ServeLlmServer:
    """serve-llm on a background thread with its own event loop (tests, benchmarks, notebooks)."""

    def __init__(
        self, config: ServeLlmConfig, host: str = "127.0.0.1", port: int = 0, clock: ServeClock | None = None
    ) -> None:
        check_host(host, allow_remote=False)
        self.config = config
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="serve-llm", daemon=True)
        self.base_url = ""
        self.app = create_app(config, clock)

    @property
    def stats(self) -> ServeStats:
        return self.app[STATE].stats

    def start(self) -> ServeLlmServer:
        self._thread.start()

        async def up() -> str:
            self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
            await self._runner.setup()
            await web.TCPSite(self._runner, self._host, self._port).start()
            return f"http://{self._host}:{self._runner.addresses[0][1]}/v1"

        self.base_url = asyncio.run_coroutine_threadsafe(up(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Close every connection, stop the loop and join the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            runner = self._runner
            self._runner = None
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ServeLlmServer:
        return self.start() if not self._thread.is_alive() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(
    config: ServeLlmConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Start serve-llm on a free loopback port in a thread: ``(base_url, stop)``."""
    server = ServeLlmServer(config, host, port).start()
    return server.base_url, server.stop


@contextlib.contextmanager
def serving(
    config: ServeLlmConfig, host: str = "127.0.0.1", port: int = 0, clock: ServeClock | None = None
) -> Iterator[ServeLlmServer]:
    """``with serving(config) as server: ... server.base_url ... server.stats``; stopped on exit."""
    server = ServeLlmServer(config, host, port, clock).start()
    try:
        yield server
    finally:
        server.stop()


# -- the command line (``kame-sim serve-llm``, or ``python -m kame_sim.cli serve-llm``) -----------
# The options are declared once, as typer options on ``kame_sim.cli.serve_llm``; these helpers
# turn them into a config and serve it.


def check_port(port: int) -> None:
    """A TCP port number: 0 (any free port, printed once bound) to 65535."""
    if not 0 <= port <= 65535:
        raise InputError("<cli>", "--port", f"must be 0..65535 (0: any free port), got {port}")


def config_from_options(
    config: Path | None = None,
    *,
    content: str | None = None,
    conversation: Path | None = None,
    conversation_id: str | None = None,
    user_speaker: str | None = None,
    frontend_speaker: str | None = None,
    models: list[str] | None = None,
    ttft: str | None = None,
    inter_chunk: str | None = None,
    words_per_chunk: int | None = None,
    seed: int | None = None,
    faults: list[str] | None = None,
    schedule: str | None = None,
    repeat_schedule: bool | None = None,
    stall_seconds: float | None = None,
    fault_after_chunks: int | None = None,
    error_status: int | None = None,
) -> ServeLlmConfig:
    """Command-line options over an optional ``--config`` TOML file: a validated config.

    ``None`` leaves the file's value (or the default); delays (``ttft``, ``inter_chunk``) are read
    as TOML values, so they take seconds, a preset name or a table. Bad values are InputErrors.
    """
    overrides: dict[str, Any] = parse_fault_options(faults or [], schedule)
    plain = {
        "content": content,
        "conversation_id": conversation_id,
        "user_speaker": user_speaker,
        "frontend_speaker": frontend_speaker,
        "models": list(models) if models else None,
        "words_per_chunk": words_per_chunk,
        "seed": seed,
        "repeat_schedule": repeat_schedule,
        "stall_seconds": stall_seconds,
        "fault_after_chunks": fault_after_chunks,
        "error_status": error_status,
    }
    overrides.update({k: v for k, v in plain.items() if v is not None})
    if conversation is not None:
        overrides["conversation_path"] = str(conversation.resolve())
    if ttft is not None:
        overrides["ttft"] = parse_toml_value(ttft)
    if inter_chunk is not None:
        overrides["inter_chunk"] = parse_toml_value(inter_chunk)
    try:
        return load_serve_config(config, overrides)
    except InputError as exc:  # a bad option is named as the user typed it, not as its config key
        key = (exc.field or "").split(".")[0]
        if key not in overrides:
            raise
        flag = _OPTION_OF.get(key, "--" + key.replace("_", "-"))
        raise InputError("<cli>", flag, exc.message) from None


_OPTION_OF = {
    "conversation_path": "--conversation",
    "conversation_id": "--id",
    "fault_probabilities": "--fault",
    "fault_schedule": "--schedule",
    "fault_after_chunks": "--fault-after",
    "models": "--model",
}


def serve_forever(config: ServeLlmConfig, host: str, port: int, allow_remote: bool) -> None:
    """Serve until Ctrl-C; print the base URL and the environment a KAME server needs."""

    def ready(base_url: str) -> None:
        print(f"serve-llm: {base_url} (content {config.content}; Ctrl-C stops)", flush=True)
        print(f"  export OPENAI_BASE_URL={base_url} OPENAI_API_KEY=dummy   # for a KAME server", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, host, port, allow_remote, ready))
