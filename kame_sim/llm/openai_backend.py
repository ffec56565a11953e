"""A live OpenAI-compatible back-end: real, concurrent streaming requests, measured chunk times.

:class:`OpenAiLlm` sends exactly KAME's request (model, ``[system, user]`` messages, ``stream=True``,
nothing else) through the real ``openai`` client -- the async one KAME uses, on kame-sim's own event
loop in a daemon worker thread, so it works from plain synchronous code and from inside someone
else's running loop alike.

:meth:`OpenAiLlm.open` starts a request at once, on that loop, and returns a :class:`LiveStream`:
the request runs in the background, each content delta is kept with its arrival time (monotonic,
relative to the ``open()`` call), and :meth:`LiveStream.chunks` hands each chunk over as soon as it
has arrived -- blocking the caller only until *that* chunk is there. Streams opened later run
alongside earlier ones on the same loop (KAME's multiplexer keeps up to 7 in flight).
:meth:`LiveStream.close` cancels the request's task, which closes the HTTP response: the server sees
the client go, as it does when KAME cancels a superseded stream. :meth:`OpenAiLlm.plan` is the same
request read to its end. :meth:`OpenAiLlm.warmup` sends KAME's one-token warm-up request.

Faults never escape as exceptions (the simulator must keep running, as KAME's server does): a
refused or unreachable endpoint, a timeout, HTTP 429/5xx, a stream cut mid-way or a malformed chunk
end the stream with the chunks received so far and ``error="<kind>: <short message>"`` at the
measured ``error_at``. Error kinds: ``connect error``, ``timeout``, ``http <status>``,
``stream cut``, ``malformed chunk``, ``api error`` (an error event inside the stream), ``error``
(anything else).

The API key is read from the environment variable *named* by ``llm.api_key_env`` and is never
written anywhere: not in the resolved scenario (only the variable's name is), not in a plan, and it
is masked in every error message we build.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from kame_sim.errors import InputError
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.plan import (
    LlmChunk,
    LlmPlan,
    LlmStream,
    PlannedStream,
    StreamingLlmBackend,
    read_plan,
    warm_up,
    warmup_outcome,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from openai import AsyncOpenAI

    from kame_sim.config import LlmSettings

# KAME's system prompt, verbatim (SakanaAI/kame src/kame/server_oracle.py, SYSTEM_PROMPT).
KAME_SYSTEM_PROMPT = """
You are Moshi, talking with the User. The User is currently mid-conversation.
Predict the flow of the User's dialogue and generate a suitable next response accordingly.
Generate only the dialogue directly, without any additional commentary.
Speak confidently on the predicted topic—there is no need to ask for confirmation.
Your answer must be short and concise in maximum 30 words. Do not include moshi: at the top.
Sometimes you as Moshi say incorrect things. Pay attention to the User's statements and provide correct information.
Since the output words will be spoken, do not include any symbols unrelated to pronunciation (e.g., " ー ;). Avoid anything not relevant to pronunciation.
""".strip()  # noqa: E501

# KAME's multiplexer warms the connection up at session start with a one-token request
# (kame-reference.md §5b: "Reply OK.", max 1 completion token), non-streamed, to the oracle model.
WARMUP_MESSAGES: tuple[dict[str, str], ...] = ({"role": "user", "content": "Reply OK."},)
WARMUP_MAX_COMPLETION_TOKENS = 1

_MAX_MESSAGE = 160
# How much longer than the request timeout a reader waits for the worker loop before giving up.
_READER_GRACE = 5.0
T = TypeVar("T")


def kame_messages(request: LlmRequest, system_prompt: str | None = None) -> list[dict[str, str]]:
    """KAME's ``_build_messages``: the system prompt, then the conversation with the pending line.

    The simulator already builds ``request.conversation`` the way KAME does (committed
    ``user:``/``moshi:`` lines, plus ``"\\nuser: {pending} "`` when a partial is pending).
    """
    prompt = KAME_SYSTEM_PROMPT if system_prompt is None else system_prompt
    return [{"role": "system", "content": prompt}, {"role": "user", "content": request.conversation}]


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def api_key_from_env(settings: LlmSettings, environ: Mapping[str, str] | None = None) -> str:
    """The key from the variable named by ``llm.api_key_env``; a missing one is an InputError."""
    env = os.environ if environ is None else environ
    key = env.get(settings.api_key_env, "")
    if not key.strip():
        raise InputError(
            "<scenario>",
            "llm.api_key_env",
            f"environment variable {settings.api_key_env} is not set; llm.kind = 'openai' needs a key "
            "(any non-empty value works for a local server such as kame-sim serve-llm)",
        )
    return key


class _LoopThread:
    """An asyncio loop on a daemon thread: ``run(coro)`` blocks the caller until it is done.

    One is shared by every :class:`OpenAiLlm` in the process: the simulator's objects live in
    reference cycles (SimPy processes), so a per-instance thread would outlive each run until the
    cyclic GC ran, and sweeps would pile up threads.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kame-sim-openai", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it."""
        return self.submit(coro).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop now; its future's ``cancel()`` cancels the task there."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("OpenAiLlm called from its own worker loop (it would wait on itself)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """At interpreter exit: finish async generators, stop and close the loop."""
        if self.loop.is_closed() or not self.thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.loop.shutdown_asyncgens(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


_WORKER_LOCK = threading.Lock()
_WORKER: _LoopThread | None = None


def _shared_worker() -> _LoopThread:
    """The process's worker loop (a fresh one after a fork: the parent's thread does not exist here)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None or not _WORKER.thread.is_alive():
            _WORKER = _LoopThread()
            atexit.register(_WORKER.stop)
        return _WORKER


def _close_client(worker: _LoopThread, client: Any) -> None:
    """Close a client's connections on the worker loop (a finalizer: it holds no reference to self).

    The cyclic GC may run it on the worker thread itself; there it must not wait for the loop.
    """
    if worker.loop.is_closed() or not worker.thread.is_alive():
        return
    with contextlib.suppress(Exception):  # best effort
        future = asyncio.run_coroutine_threadsafe(client.close(), worker.loop)
        if threading.current_thread() is not worker.thread:
            future.result(timeout=5)


class LiveStream:
    """One live request, running on the worker loop; chunks are handed over as they arrive.

    Thread-safe hand-over: the loop appends chunks under a condition variable; :meth:`chunks`
    (the simulator's thread) waits on it only until the next chunk, or the end, is there.
    """

    def __init__(self, llm: OpenAiLlm, messages: list[dict[str, str]]) -> None:
        self.error: str | None = None
        self.error_at: float | None = None
        self.cut_at: float | None = None
        self._llm = llm
        self._clock = llm._clock
        self.started = self._clock()  # offsets count from here (the back-end's clock)
        self.ended: float | None = None  # when the request ended (done, failed or closed), same clock
        self._cond = threading.Condition()
        self._chunks: list[LlmChunk] = []
        self._done = False
        self._closed = False
        try:
            self._future: concurrent.futures.Future[None] | None = llm._worker.submit(self._run(messages))
        except Exception as exc:  # e.g. the worker loop is gone (interpreter exit)
            self._future = None
            self._finish(f"error: {type(exc).__name__}: {_short(str(exc))}")

    @property
    def done(self) -> bool:
        """The request has ended (completed, failed or closed)."""
        return self._done or self._closed

    async def _run(self, messages: list[dict[str, str]]) -> None:
        try:
            error = await self._llm._request(messages, self._add, self.started)
        except asyncio.CancelledError:  # close(): it already marked the stream
            raise
        except BaseException as exc:  # never leave a reader waiting
            error = f"error: {type(exc).__name__}: {_short(str(exc))}"
        self._finish(error)

    def _add(self, at: float, text: str) -> None:
        with self._cond:
            if not self._closed:
                self._chunks.append(LlmChunk(at, text))
                self._cond.notify_all()

    def _finish(self, error: str | None) -> None:
        with self._cond:
            if not self._closed:
                if error is not None:
                    self.error = self._llm._mask(error)
                    self.error_at = self._clock() - self.started
                self.ended = self._clock()
            self._done = True
            self._cond.notify_all()

    def chunks(self) -> Iterator[LlmChunk]:
        """Each chunk as soon as it has arrived; ends when the request does (or was closed)."""
        i = 0
        patience = self._llm.request_timeout + _READER_GRACE
        while True:
            with self._cond:
                arrived = self._cond.wait_for(
                    lambda n=i: n < len(self._chunks) or self._done or self._closed, patience
                )
                chunk = self._chunks[i] if i < len(self._chunks) else None
            if chunk is not None:
                i += 1
                yield chunk
            elif arrived:
                return  # ended (or closed) with every chunk handed over
            else:  # the worker loop stopped answering (it has its own timeout): end as a timeout
                self.close()
                self.cut_at = None
                self.error = f"timeout: no answer from the worker loop in {patience:g} s"
                self.error_at = self._clock() - self.started
                return

    def close(self) -> None:
        """Cancel the request if it is still running (the HTTP stream is closed); else nothing."""
        with self._cond:
            if self._done or self._closed:
                return
            self._closed = True
            self.ended = self._clock()
            self.cut_at = self.ended - self.started
            self._cond.notify_all()
        if self._future is not None:
            self._future.cancel()  # cancels the task on the loop (thread-safe)

    def received(self) -> LlmPlan:
        """What arrived: the whole plan once done, or the chunks before the close (``cut_at``)."""
        with self._cond:
            return LlmPlan(list(self._chunks), self.error, self.error_at, "openai", self.cut_at)


class OpenAiLlm:
    """Live streaming chat completions: ``open()`` starts one real request, measured, concurrently."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-4.1",
        system_prompt: str | None = None,
        request_timeout: float = 30.0,
        max_retries: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``clock`` times the chunks (seconds, any origin); tests inject a scripted one."""
        from openai import AsyncOpenAI

        self.model = model
        self._clock = clock
        self.system_prompt = system_prompt
        self.request_timeout = request_timeout
        self._secret = api_key
        self._worker = _shared_worker()
        self._client: AsyncOpenAI = AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=request_timeout, max_retries=max_retries
        )
        self.base_url = str(self._client.base_url)
        self._finalizer = weakref.finalize(self, _close_client, self._worker, self._client)

    @classmethod
    def from_settings(cls, settings: LlmSettings, environ: Mapping[str, str] | None = None) -> OpenAiLlm:
        """Build from ``[llm]``; raises InputError naming llm.api_key_env when the key is missing."""
        return cls(
            api_key=api_key_from_env(settings, environ),
            base_url=settings.base_url,
            model=settings.model,
            system_prompt=settings.system_prompt,
            request_timeout=settings.request_timeout,
            max_retries=settings.max_retries,
        )

    def __repr__(self) -> str:  # never show the key
        return f"OpenAiLlm(model={self.model!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP client's connections (also done when the object is collected)."""
        self._finalizer()

    def messages(self, request: LlmRequest) -> list[dict[str, str]]:
        return kame_messages(request, self.system_prompt)

    def open(self, request: LlmRequest) -> LiveStream:
        """Start the request now, in the background; read its chunks as they arrive."""
        return LiveStream(self, self.messages(request))

    def plan(self, request: LlmRequest) -> LlmPlan:
        """Make the request now, read it to its end, and return what arrived when (never raises)."""
        return read_plan(self.open(request))

    def warmup_plan(self) -> LlmPlan:
        """KAME's warm-up request; its reply as one chunk at the measured time, or its fault."""
        t0 = self._clock()
        try:
            return self._worker.run(self._warmup(t0))
        except Exception as exc:
            error = self._mask(f"error: {type(exc).__name__}: {_short(str(exc))}")
            return LlmPlan([], error=error, error_at=self._clock() - t0, source="openai")

    def warmup(self) -> str:
        """Send the warm-up; a one-line outcome for the trace (``ok in 0.213 s`` or the fault)."""
        return warmup_outcome(self.warmup_plan())

    def _mask(self, text: str) -> str:
        """Hide the key, and any 8+ character prefix of it (a message cut short can end mid-key)."""
        secret = self._secret
        if len(secret) < 8:
            return text.replace(secret, "***") if len(secret) >= 4 else text
        out, i = [], 0
        while (j := text.find(secret[:8], i)) >= 0:
            k = 8
            while k < len(secret) and j + k < len(text) and text[j + k] == secret[k]:
                k += 1
            out += [text[i:j], "***"]
            i = j + k
        out.append(text[i:])
        return "".join(out)

    async def _request(self, messages: list[dict[str, str]], emit: Any, t0: float) -> str | None:
        """Stream one completion, calling ``emit(offset, text)`` per content delta; the fault or None.

        A cancel (``LiveStream.close``) raises CancelledError in here: leaving ``async with stream``
        closes the HTTP response, so the server sees the connection go.
        """
        perf = self._clock
        responded = False
        try:
            async with asyncio.timeout(self.request_timeout):
                stream = await self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                )
                responded = True
                async with stream:
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                            emit(perf() - t0, chunk.choices[0].delta.content)
        except Exception as exc:
            return self._classify(exc, responded)
        return None

    async def _warmup(self, t0: float) -> LlmPlan:
        perf = self._clock
        try:
            async with asyncio.timeout(self.request_timeout):
                response = await self._client.chat.completions.create(
                    model=self.model,
                    messages=[dict(m) for m in WARMUP_MESSAGES],  # type: ignore[misc]
                    max_completion_tokens=WARMUP_MAX_COMPLETION_TOKENS,
                )
            choices = getattr(response, "choices", None) or []
            text = (choices[0].message.content or "") if choices and choices[0].message else ""
        except Exception as exc:
            error = self._mask(self._classify(exc, responded=False))
            return LlmPlan([], error=error, error_at=perf() - t0, source="openai")
        return LlmPlan([LlmChunk(perf() - t0, text)], source="openai")

    def _classify(self, exc: Exception, responded: bool) -> str:
        """``"<kind>: <short message>"`` for a fault (unmasked; the caller masks it)."""
        import openai

        if isinstance(exc, TimeoutError):
            return f"timeout: stream not finished within {self.request_timeout:g} s"
        if isinstance(exc, openai.APITimeoutError):
            return f"timeout: no data for {self.request_timeout:g} s"
        if isinstance(exc, openai.APIStatusError):
            return f"http {exc.status_code}: {_short(_status_message(exc))}"
        if isinstance(exc, openai.APIConnectionError):
            detail = _short(_root_cause(exc))
            return f"stream cut: {detail}" if responded else f"connect error: {detail}"
        if isinstance(exc, json.JSONDecodeError):
            return f"malformed chunk: {_short(str(exc))}"
        if isinstance(exc, openai.APIError):
            return f"api error: {_short(exc.message)}"
        name = type(exc).__name__  # e.g. a bare httpx error from an older openai
        if "Timeout" in name:
            return f"timeout: {name}"
        kind = "stream cut" if responded else "error"
        return f"{kind}: {name}: {_short(str(exc))}"


def _root_cause(exc: BaseException) -> str:
    """The most specific message down the cause chain ("Connection refused", not "Connection error.").

    httpx wraps the socket error in "All connection attempts failed"; the OSError under it says why.
    """
    best = str(getattr(exc, "message", "") or exc)
    seen: set[int] = set()
    current: BaseException | None = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (current.errno or current.strerror):
            reason = os.strerror(current.errno) if current.errno else ""
            if current.strerror and current.strerror != reason:
                reason = f"{reason} ({current.strerror})" if reason else current.strerror
            return reason
        if str(current):
            best = str(current)
        current = current.__cause__ or current.__context__
    return best


def _status_message(exc: Any) -> str:
    """The API's own error message (``{"error": {"message": ...}}``), else the client's."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    return str(getattr(exc, "message", exc))


def scale_plan(plan: LlmPlan, factor: float) -> LlmPlan:
    """Every time in ``plan`` multiplied by ``factor`` (what-if: a back-end ``factor`` times slower)."""
    return LlmPlan(
        [LlmChunk(c.at * factor, c.text) for c in plan.chunks],
        error=plan.error,
        error_at=None if plan.error_at is None else plan.error_at * factor,
        source=plan.source,
        cut_at=None if plan.cut_at is None else plan.cut_at * factor,
    )


class ScaledStream:
    """A stream with every time multiplied by ``factor``; closing it closes the inner one."""

    def __init__(self, inner: LlmStream, factor: float) -> None:
        self.inner = inner
        self.factor = factor

    def _scaled(self, value: float | None) -> float | None:
        return None if value is None else value * self.factor

    @property
    def error(self) -> str | None:
        return self.inner.error

    @property
    def error_at(self) -> float | None:
        return self._scaled(self.inner.error_at)

    @property
    def cut_at(self) -> float | None:
        return self._scaled(getattr(self.inner, "cut_at", None))

    def chunks(self) -> Iterator[LlmChunk]:
        for chunk in self.inner.chunks():
            yield LlmChunk(chunk.at * self.factor, chunk.text)

    def close(self) -> None:
        self.inner.close()

    def received(self) -> LlmPlan:
        return scale_plan(self.inner.received(), self.factor)


class ScaledLlm:
    """Wraps a back-end and scales its times (``llm.time_scale``); cassettes keep raw times.

    Streams too: a live (streaming) back-end's chunks are scaled as they arrive.
    """

    def __init__(self, inner: Any, factor: float) -> None:
        self.inner = inner
        self.factor = factor

    def plan(self, request: LlmRequest) -> LlmPlan:
        return scale_plan(self.inner.plan(request), self.factor)

    def open(self, request: LlmRequest) -> LlmStream:
        if isinstance(self.inner, StreamingLlmBackend):
            return ScaledStream(self.inner.open(request), self.factor)
        return PlannedStream(self.plan(request))

    def warmup(self) -> str:
        """The inner back-end's warm-up (its outcome is a wall-time measurement: not scaled)."""
        return warm_up(self.inner)
