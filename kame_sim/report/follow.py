"""Which front-end token followed which oracle: the self-correction the timeline shows.

KAME's front-end is fed the oracle one token per 80 ms frame and speaks at its own pace (about
three text tokens a second), so "following the oracle" cannot be read off a single frame. The rule
used here, on token ids (the oracle and the front-end share one text vocabulary):

* an **oracle generation** begins with each START fed (a reset, explicit or KAME's implicit one)
  and holds the text tokens fed after it, each with its frame, oracle index and LLM stream;
* a front-end text token spoken at frame ``k`` **follows the oracle** when its id equals a text
  token of the generation current at ``k`` (the last START fed at or before ``k``) that was fed
  at or before ``k`` and lies after the last token it followed in that generation (the front-end
  reads its oracle forwards and may skip ahead, as the behavioural model does when it switches to a
  fresh oracle at its current position). For ``lookback`` seconds after a START, the generation
  before it is tried too: a front-end reacts some frames late and may still be finishing the old
  text. Tokens fed later, of a later generation, or skipped as late never count;
* every other text token is the front-end's **own guess**;
* a **switch** is where, inside one speaking burst, the source changes from the guess to an
  oracle (``guess→oracle``) or from one generation to a newer one (``oracle→newer``): the marks the
  timeline draws where the front-end corrected itself.

A word (the pieces joined as the timeline joins them) is ``oracle`` when all its tokens followed
one generation, ``guess`` when none did, and ``mixed`` otherwise.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

LOOKBACK_S = 0.5


@dataclass(frozen=True)
class FedToken:
    """One text token of an oracle generation, as it was fed."""

    frame: int
    t: float
    index: int  # oracle index (1 = first text token after START)
    token_id: int | None
    stream_id: int | None
    chunk: int | None  # index into the timeline's oracle chunks


@dataclass
class Generation:
    """The oracle between one START and the next: what the front-end could follow."""

    number: int
    stream_id: int | None
    start_frame: int
    start_t: float
    tokens: list[FedToken] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)  # indices into the timeline's oracle chunks


@dataclass
class FrontendToken:
    """One front-end text token and, once :func:`follow` ran, the oracle token it followed."""

    frame: int
    t: float
    token_id: int | None
    piece: str
    burst: int = 0
    generation: int | None = None  # None: the front-end's own guess
    stream_id: int | None = None
    oracle_index: int | None = None
    fed_frame: int | None = None

    @property
    def follows(self) -> bool:
        return self.generation is not None


@dataclass(frozen=True)
class Switch:
    """Where, inside a burst, the front-end went from its guess (or an older oracle) to an oracle."""

    t: float
    frame: int
    kind: Literal["guess→oracle", "oracle→newer"]
    generation: int
    stream_id: int | None


WordSource = Literal["oracle", "guess", "mixed"]


def build_generations(
    frames: Sequence,
    chunk_streams: Sequence[int | None],
    reset_streams: dict[int, int | None],
    chunk_frames: Sequence[int | None] = (),
) -> list[Generation]:
    """Oracle generations from the fed frames (``kind`` start/text/pad, ``frame``, ``t``,
    ``oracle_index``, ``token_id``, ``chunk``), the stream of each chunk and of each reset by frame.
    ``chunk_frames`` (the frame each chunk was applied at) gives every generation all the chunks
    appended to it, fed or not; without it a generation lists the chunks it fed.

    A text token fed before any START (not written by kame-sim, possible in an imported trace)
    opens a generation of its own at its frame.
    """
    gens: list[Generation] = []
    for f in frames:
        if f.kind == "start":
            gens.append(Generation(len(gens), reset_streams.get(f.frame), f.frame, f.t))
        elif f.kind == "text":
            stream = chunk_streams[f.chunk] if f.chunk is not None and f.chunk < len(chunk_streams) else None
            if not gens:
                gens.append(Generation(0, stream, f.frame, f.t))
            g = gens[-1]
            if g.stream_id is None:
                g.stream_id = stream
            g.tokens.append(FedToken(f.frame, f.t, f.oracle_index, f.token_id, stream, f.chunk))
            if not chunk_frames and f.chunk is not None and f.chunk not in g.chunks:
                g.chunks.append(f.chunk)
    if chunk_frames and gens:
        starts = [g.start_frame for g in gens]
        for c, frame in enumerate(chunk_frames):
            if frame is not None and frame >= starts[0]:
                gens[bisect.bisect_right(starts, frame) - 1].chunks.append(c)
    return gens


def follow(tokens: list[FrontendToken], gens: list[Generation], lookback: float = LOOKBACK_S) -> list[Switch]:
    """Fill in which generation each front-end token followed (module docstring); return the
    switches. ``tokens`` must come in frame order."""
    starts = [g.start_frame for g in gens]
    pointer = [0] * len(gens)  # per generation: the next token position that may be followed
    current = -1
    for tok in tokens:
        while current + 1 < len(gens) and starts[current + 1] <= tok.frame:
            current += 1
        tok.generation = tok.stream_id = tok.oracle_index = tok.fed_frame = None
        if current < 0 or tok.token_id is None:
            continue
        candidates = [current]
        if current > 0 and tok.t - gens[current].start_t <= lookback + 1e-9:
            candidates.append(current - 1)
        for g in candidates:
            hit = _match(gens[g], pointer[g], tok)
            if hit is not None:
                ft = gens[g].tokens[hit]
                pointer[g] = hit + 1
                tok.generation, tok.stream_id = g, ft.stream_id
                tok.oracle_index, tok.fed_frame = ft.index, ft.frame
                break
    return switches(tokens)


def _match(gen: Generation, start: int, tok: FrontendToken) -> int | None:
    for p in range(start, len(gen.tokens)):
        ft = gen.tokens[p]
        if ft.frame > tok.frame:
            return None
        if ft.token_id == tok.token_id:
            return p
    return None


def switches(tokens: list[FrontendToken]) -> list[Switch]:
    """Source changes inside each burst: guess → oracle, or an oracle → a newer generation."""
    out: list[Switch] = []
    prev: FrontendToken | None = None
    for tok in tokens:
        if prev is not None and prev.burst == tok.burst and tok.generation is not None:
            if prev.generation is None:
                out.append(Switch(tok.t, tok.frame, "guess→oracle", tok.generation, tok.stream_id))
            elif tok.generation > prev.generation:
                out.append(Switch(tok.t, tok.frame, "oracle→newer", tok.generation, tok.stream_id))
        prev = tok
    return out


def word_source(tokens: Sequence[FrontendToken]) -> tuple[WordSource, int | None]:
    """(``oracle`` | ``guess`` | ``mixed``, the generation followed) for a word's tokens; the
    generation of a mixed word is the last one any of its tokens followed."""
    gens = [t.generation for t in tokens]
    followed = [g for g in gens if g is not None]
    if not followed:
        return "guess", None
    if len(followed) == len(gens) and len(set(followed)) == 1:
        return "oracle", followed[0]
    return "mixed", followed[-1]
