"""LLM back-ends as *plans*: what a stream will deliver, and when, relative to its start.

The simulator asks a back-end for a plan when the stream manager starts a stream, then replays the
plan in simulated time (and stops replaying when the stream is cancelled). This is the seam that
lets simulated, recorded (cassette) and live back-ends sit side by side: a live back-end makes the
real request at once, measures when each chunk arrived, and those measured offsets become the
simulated delays, so a virtual-time run shows the latency the back-end really had.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from kame_sim.delays import DelaySampler
from kame_sim.llm.content import LlmContentSource, LlmRequest


@dataclass(frozen=True, slots=True)
class LlmChunk:
    """One streamed delta: ``at`` seconds after the stream started, raw (unstripped) text."""

    at: float
    text: str


@dataclass(frozen=True)
class LlmPlan:
    """A stream's chunks in time order; ``error`` ends the stream at ``error_at`` (a fault)."""

    chunks: list[LlmChunk] = field(default_factory=list)
    error: str | None = None
    error_at: float | None = None
    source: str = "simulated"


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
    """Text from a content source, timing from delay models: TTFT, then one gap per later chunk."""

    def __init__(
        self,
        content: LlmContentSource,
        ttft: DelaySampler,
        inter_chunk: DelaySampler,
        words_per_chunk: int = 1,
    ) -> None:
        self.content = content
        self.ttft = ttft
        self.inter_chunk = inter_chunk
        self.words_per_chunk = words_per_chunk

    def plan(self, request: LlmRequest) -> LlmPlan:
        texts = chunk_reply(self.content.reply(request), self.words_per_chunk)
        at = self.ttft.draw()
        chunks = []
        for i, text in enumerate(texts):
            if i:
                at += self.inter_chunk.draw()
            chunks.append(LlmChunk(at, text))
        return LlmPlan(chunks)


class LlmStream(Protocol):
    """An open stream as the simulator consumes it: chunks in time order, then how it ended.

    A live back-end's :meth:`chunks` may block (in wall time) until the next chunk has really
    arrived; :meth:`close` ends the request (closes the HTTP stream) when the policy cancels it.
    ``error``/``error_at`` are read once :meth:`chunks` is exhausted.
    """

    error: str | None
    error_at: float | None

    def chunks(self) -> Iterator[LlmChunk]: ...

    def close(self) -> None: ...


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

    def chunks(self) -> Iterator[LlmChunk]:
        error_at = self.plan.error_at
        for chunk in self.plan.chunks:
            if error_at is not None and chunk.at > error_at:
                return
            yield chunk

    def close(self) -> None:
        """Nothing was opened."""


def open_stream(backend: LlmBackend, request: LlmRequest) -> LlmStream:
    """The back-end's own stream when it streams live, else its plan replayed."""
    if isinstance(backend, StreamingLlmBackend):
        return backend.open(request)
    return PlannedStream(backend.plan(request))
