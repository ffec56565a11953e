"""LLM back-ends as *plans*: what a stream will deliver, and when, relative to its start.

The simulator asks a back-end for a plan when the stream manager starts a stream, then replays the
plan in simulated time (and stops replaying when the stream is cancelled). This is the seam that
lets simulated, recorded (cassette) and live back-ends sit side by side: a live back-end makes the
real request at once, measures when each chunk arrived, and those measured offsets become the
simulated delays, so a virtual-time run shows the latency the back-end really had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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
