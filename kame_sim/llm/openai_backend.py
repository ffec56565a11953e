"""A live OpenAI-compatible back-end: real streaming requests, measured chunk times, faults as plans.

:class:`OpenAiLlm` sends exactly KAME's request (model, ``[system, user]`` messages, ``stream=True``,
nothing else) through the real ``openai`` client -- the async one KAME uses, on kame-sim's own event loop in
a worker thread, so it works from plain synchronous code and from inside someone else's running
loop alike. It records the monotonic arrival time of every content delta relative to the request
start; those measured offsets become the plan the simulator replays, so a virtual-time run shows the
latency the endpoint really had.

Faults never escape as exceptions (the simulator must keep running, as KAME's server does): a
refused or unreachable endpoint, a timeout, HTTP 429/5xx, a stream cut mid-way or a malformed chunk
become ``LlmPlan(chunks received so far, error="<kind>: <short message>", error_at=<measured>)``.
Error kinds: ``connect error``, ``timeout``, ``http <status>``, ``stream cut``,
``malformed chunk``, ``api error`` (an error event inside the stream), ``error`` (anything else).

The API key is read from the environment variable *named* by ``llm.api_key_env`` and is never
written anywhere: not in the resolved scenario (only the variable's name is), not in a plan, and it
is masked in every error message we build.
"""

from __future__ import annotations

import asyncio
import atexit
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
from kame_sim.llm.plan import LlmChunk, LlmPlan

if TYPE_CHECKING:
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

_MAX_MESSAGE = 160
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
        if threading.current_thread() is self.thread:
            raise RuntimeError("OpenAiLlm.plan() called from its own worker loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

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


class OpenAiLlm:
    """Live streaming chat completions; each ``plan()`` is one real request, measured."""

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

    def plan(self, request: LlmRequest) -> LlmPlan:
        """Make the request now and return what arrived when (never raises for a fault)."""
        try:
            return self._worker.run(self._stream(self.messages(request)))
        except Exception as exc:  # the simulator must never see an exception
            return LlmPlan(
                [], error=self._mask(f"error: {type(exc).__name__}: {_short(str(exc))}"), error_at=0.0
            )

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

    async def _stream(self, messages: list[dict[str, str]]) -> LlmPlan:
        import openai

        chunks: list[LlmChunk] = []
        perf = self._clock
        t0 = perf()
        responded = False
        try:
            async with asyncio.timeout(self.request_timeout):
                stream = await self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                )
                responded = True
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                        chunks.append(LlmChunk(perf() - t0, chunk.choices[0].delta.content))
        except TimeoutError:
            error = f"timeout: stream not finished within {self.request_timeout:g} s"
        except openai.APITimeoutError:
            error = f"timeout: no data for {self.request_timeout:g} s"
        except openai.APIStatusError as exc:
            error = f"http {exc.status_code}: {_short(_status_message(exc))}"
        except openai.APIConnectionError as exc:
            detail = _short(_root_cause(exc))
            error = f"stream cut: {detail}" if responded else f"connect error: {detail}"
        except json.JSONDecodeError as exc:
            error = f"malformed chunk: {_short(str(exc))}"
        except openai.APIError as exc:
            error = f"api error: {_short(exc.message)}"
        except Exception as exc:  # e.g. a bare httpx error from an older openai
            name = type(exc).__name__
            if "Timeout" in name:
                error = f"timeout: {name}"
            else:
                kind = "stream cut" if responded else "error"
                error = f"{kind}: {name}: {_short(str(exc))}"
        else:
            return LlmPlan(chunks, source="openai")
        return LlmPlan(chunks, error=self._mask(error), error_at=perf() - t0, source="openai")


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
    )


class ScaledLlm:
    """Wraps a back-end and scales its plans' times (``llm.time_scale``); cassettes keep raw times."""

    def __init__(self, inner: Any, factor: float) -> None:
        self.inner = inner
        self.factor = factor

    def plan(self, request: LlmRequest) -> LlmPlan:
        return scale_plan(self.inner.plan(request), self.factor)
