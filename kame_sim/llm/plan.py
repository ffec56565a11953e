"""LLM back-ends as *plans* and *streams*: what a stream delivers, and when, relative to its start.

The simulator opens a stream (:func:`open_stream`) when the policy starts one and consumes its chunks
in simulated time, each at its offset from the stream's start; a cancel closes it. A simulated or
recorded back-end knows the whole plan up front (:class:`PlannedStream` replays it); a live one
(:class:`StreamingLlmBackend`) starts the real request at once, in the background, and hands each
chunk over as soon as it has arrived, with its measured offset: overlapping streams run
concurrently, and those offsets become the simulated delays, so a virtual-time run shows the latency
the back-end really had.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from kame_sim.delays import DelaySampler
from kame_sim.llm.content import LlmContentSource, LlmRequest

if TYPE_CHECKING:
    from kame_sim.schedule import DelaySchedule


@dataclass(frozen=True, slots=True)
class LlmChunk:
    """One streamed delta: ``at`` seconds after the stream started, raw (unstripped) text."""

    at: float
    text: str


@dataclass(frozen=True)
class LlmPlan:
    """A stream's chunks in time order; ``error`` ends the stream at ``error_at`` (a fault).

    ``cut_at``: the stream was cancelled (closed by the client) at that offset before it ended, so
    the plan holds only what had arrived by then and nothing is known after it; replayed, such a
    plan delivers its chunks and then stays silent until it is cancelled again (no end is invented).
    """

    chunks: list[LlmChunk] = field(default_factory=list)
    error: str | None = None
    error_at: float | None = None
    source: str = "simulated"
    cut_at: float | None = None


class LlmBackend(Protocol):
    """Anything that can answer a request with a timed plan."""

    def plan(self, request: LlmRequest) -> LlmPlan: ...


def chunk_reply(text: str, words_per_chunk: int) -> list[str]:
    """Split a reply into streamed deltas as an OpenAI stream sends them: words with their spaces."""
    words = text.split()
    return [
        (" " if i else "") + " ".join(words[i : i + words_per_chunk])
        for i in range(0, len(words), words_per_chunk)
    ]


class SimulatedLlm:
    """Text from a content source, timing from delay models: TTFT, then one gap per later chunk.

    ``schedule`` (:mod:`kame_sim.schedule`) fixes the TTFT, gaps and fault of the streams it
    covers, by generation (``request.stream_id``). Every draw is made all the same, covered or not,
    so the models' streams of numbers advance exactly as without a schedule.
    """

    def __init__(
        self,
        content: LlmContentSource,
        ttft: DelaySampler,
        inter_chunk: DelaySampler,
        words_per_chunk: int = 1,
        schedule: DelaySchedule | None = None,
    ) -> None:
        self.content = content
        self.ttft = ttft
        self.inter_chunk = inter_chunk
        self.words_per_chunk = words_per_chunk
        self.schedule = schedule

    def plan(self, request: LlmRequest) -> LlmPlan:
        texts = chunk_reply(self.content.reply(request), self.words_per_chunk)
        schedule, sid = self.schedule, request.stream_id
        at = self.ttft.draw()
        if schedule is not None:
            at = schedule.first_token(sid, at)
        chunks = []
        for i, text in enumerate(texts):
            if i:
                gap = self.inter_chunk.draw()
                at += gap if schedule is None else schedule.gap(sid, i, gap)
            chunks.append(LlmChunk(at, text))
        fault = None if schedule is None else schedule.fault.get(sid)
        if fault is not None:
            return LlmPlan(chunks, error=fault.detail, error_at=fault.seconds)
        return LlmPlan(chunks)


class LlmStream(Protocol):
    """An open stream as the simulator consumes it: chunks in time order, then how it ended.

    A live back-end's :meth:`chunks` may block (in wall time) until the next chunk has really
    arrived; :meth:`close` ends the request (closes the HTTP stream) when the policy cancels it.
    ``error``/``error_at``/``cut_at`` are read once :meth:`chunks` is exhausted; ``cut_at`` set
    means "a recording that was cut by a cancel": the stream neither ends nor fails, it goes silent.
    :meth:`received` is everything that arrived (what a cassette records), also after a close.
    """

    error: str | None
    error_at: float | None
    cut_at: float | None

    def chunks(self) -> Iterator[LlmChunk]: ...

    def close(self) -> None: ...

    def received(self) -> LlmPlan: ...


@runtime_checkable
class StreamingLlmBackend(Protocol):
    """A back-end whose streams are consumed while they arrive (live, overlapping requests)."""

    def open(self, request: LlmRequest) -> LlmStream: ...


@runtime_checkable
class WarmableLlmBackend(Protocol):
    """A back-end that can send KAME's one-token warm-up request ("Reply OK.", 1 token)."""

    def warmup(self) -> str: ...


class PlannedStream:
    """A plan replayed as a stream: the chunks up to the fault, nothing to close."""

    def __init__(self, plan: LlmPlan) -> None:
        self.plan = plan
        self.error = plan.error
        self.error_at = plan.error_at
        self.cut_at = plan.cut_at

    def chunks(self) -> Iterator[LlmChunk]:
        error_at = self.plan.error_at
        for chunk in self.plan.chunks:
            if error_at is not None and chunk.at > error_at:
                return
            yield chunk

    def close(self) -> None:
        """Nothing was opened."""

    def received(self) -> LlmPlan:
        return self.plan


def open_stream(backend: LlmBackend, request: LlmRequest) -> LlmStream:
    """The back-end's own stream when it streams live, else its plan replayed."""
    if isinstance(backend, StreamingLlmBackend):
        return backend.open(request)
    return PlannedStream(backend.plan(request))


def read_plan(stream: LlmStream) -> LlmPlan:
    """Consume ``stream`` to its end (blocking) and return everything it delivered, as a plan."""
    for _ in stream.chunks():
        pass
    return stream.received()


# -- the warm-up (kame-reference §5b) ----------------------------------------------------------

NOTHING_SENT = "simulated back-end: nothing sent"


def warmup_outcome(plan: LlmPlan) -> str:
    """The ``llm_warmup`` detail of a warm-up's plan: its error, ``ok in S s``, or nothing sent."""
    if plan.error is not None:
        return plan.error
    if not plan.chunks:
        return NOTHING_SENT
    return f"ok in {plan.chunks[-1].at:.3f} s"


def warm_up(backend: object) -> str:
    """Send the back-end's warm-up if it has one; never raises (a failed warm-up is a trace row)."""
    if not isinstance(backend, WarmableLlmBackend):
        return NOTHING_SENT
    try:
        return backend.warmup()
    except Exception as exc:  # the run must go on, as KAME's server does
        return f"error: {type(exc).__name__}"
