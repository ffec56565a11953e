"""The timeline picture: one run's lanes (user → STT → LLM → oracle → front-end) on one time axis.

This is the picture that explains KAME: the user is still talking while STT partials trickle in,
the stream manager starts and cancels LLM streams, their text is fed to the front-end one oracle
token per 80 ms frame, and the front-end is already speaking (and correcting itself). Everything is
read from the trace alone (:func:`extract_timeline`), so the picture shows what the run recorded,
not what the simulator meant to do; the Perfetto export reuses the same extraction.

Rendering uses :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot): no display is
needed and the caller's global matplotlib state (backend, open figures) is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kame_sim.metrics.streams import StreamLife, stream_lives, trace_policy
from kame_sim.report.follow import (
    FrontendToken,
    Generation,
    Switch,
    WordSource,
    build_generations,
    follow,
    word_source,
)
from kame_sim.trace.reader import TraceData

if TYPE_CHECKING:  # matplotlib is imported lazily: the Perfetto export needs only the extraction.
    from matplotlib.axes import Axes

# --------------------------------------------------------------------------------------------------
# Extraction: trace rows -> plain records (shared with the Perfetto export)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """A spoken word: the user's (``group`` = utterance) or the front-end's (``group`` = burst).

    A front-end word also has its ``tokens`` and what they followed (kame_sim/report/follow.py):
    ``source`` = ``oracle`` | ``guess`` | ``mixed`` and the oracle ``generation`` (its stream in
    ``stream_id``); user words have none of these.
    """

    start: float
    end: float
    text: str
    group: int
    tokens: tuple[FrontendToken, ...] = ()
    source: WordSource | None = None
    generation: int | None = None
    stream_id: int | None = None


@dataclass(frozen=True)
class SttResult:
    """An STT partial or final: when it arrived and the speech time it refers to."""

    t: float
    speech_t: float | None
    text: str
    utterance: int | None
    final: bool


# One LLM stream's life (start, first token, adoption, put waits, how it ended): the definition the
# summary and the metrics use too (kame_sim/metrics/streams.py). ``status`` is done | cancelled |
# error | open; ``detail`` = the cancel reason or the error text; ``outcome`` = one word for the end.
Stream = StreamLife


@dataclass(frozen=True)
class OracleFrame:
    """What was fed at one frame: START, a text token (of chunk ``chunk``) or padding."""

    t: float
    frame: int
    kind: Literal["start", "text", "pad"]
    oracle_index: int | None
    chunk: int | None
    token_id: int | None = None


@dataclass
class OracleChunk:
    """An appended LLM chunk and the frames its tokens were actually fed (none if all were late)."""

    stream_id: int | None
    text: str
    applied_t: float
    enqueued_t: float | None
    first_index: int | None
    n_tokens: int
    n_skipped: int
    fed_start: float | None = None
    fed_end: float | None = None
    frame: int | None = None  # the frame it was applied at
    n_fed: int = 0  # tokens actually fed (a reset can cut a chunk short)
    generation: int | None = None  # the oracle generation it was appended to (follow.py)


@dataclass(frozen=True)
class OracleReset:
    """A reset applied before step ``frame`` (t = that frame's time); START is fed at that frame."""

    t: float
    frame: int
    stream_id: int | None
    enqueued_t: float | None


@dataclass(frozen=True)
class QueuePoint:
    """The oracle queue length after an event: a put (enqueue/drop), a drain at a frame, or a flush
    (the multiplexer discards the queue at an adoption; ``detail`` = how many items)."""

    t: float
    queue_len: int
    kind: Literal["enqueue", "drop", "drain", "flush"]
    detail: str | None
    stream_id: int | None


@dataclass(frozen=True)
class PolicyEvent:
    """A back-end decision that is not a stream: a refused or deferred start (``t_ref`` = when the
    trailing start is due), a stale queue item skipped, KAME's warm-up request."""

    t: float
    kind: Literal["rate_limited", "deferred", "skipped", "stale", "warmup"]
    detail: str | None
    stream_id: int | None = None
    t_ref: float | None = None


@dataclass
class TimelineData:
    """Everything the timeline and the Perfetto export draw, read from one trace."""

    conversation_id: str
    seed: str
    frontend: str
    time_coupling: str
    run_name: str
    complete: bool
    frame_s: float
    t_end: float
    user_words: list[Word]
    stt: list[SttResult]
    streams: list[Stream]
    rate_limited: list[float]
    oracle_frames: list[OracleFrame]
    oracle_chunks: list[OracleChunk]
    resets: list[OracleReset]
    queue: list[QueuePoint]
    frontend_words: list[Word]
    late_frames: list[float]
    policy: str = "poll"
    decisions: list[PolicyEvent] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    frontend_tokens: list[FrontendToken] = field(default_factory=list)
    switches: list[Switch] = field(default_factory=list)

    def generation_of_stream(self) -> dict[int, int]:
        """stream id -> its (last) oracle generation, for the streams whose text was fed."""
        return {g.stream_id: g.number for g in self.generations if g.stream_id is not None}

    @property
    def drops(self) -> list[QueuePoint]:
        return [q for q in self.queue if q.kind == "drop"]

    @property
    def flushes(self) -> list[QueuePoint]:
        return [q for q in self.queue if q.kind == "flush"]


def _frontend_words(
    pieces: list[tuple[float, int, int | None, str]], frame_s: float, join_gap: float
) -> tuple[list[Word], list[FrontendToken]]:
    """Join text pieces ``(t, frame, token id, text)`` into words: a piece starting with a space
    starts a word, others continue it.

    A continuation piece after a silence of ``join_gap`` or more starts a new word anyway (it belongs
    to a new burst). ``group`` numbers the speaking bursts, so the Perfetto export can nest words in
    bursts. A word spans from its first token to the next word of its burst (the front-end emits
    about three tokens a second, so a one-token word would otherwise be an unreadable 80 ms sliver);
    the last word of a burst ends one frame after its last token. Returns the words and every text
    token (with its burst), for :func:`kame_sim.report.follow.follow`.
    """
    words: list[list] = []  # [start, last_t, text, group, tokens]
    tokens: list[FrontendToken] = []
    group = -1
    last_t: float | None = None
    for t, frame, token_id, raw in pieces:
        piece = raw.replace("▁", " ")
        new_burst = last_t is None or t - last_t >= join_gap
        if new_burst:
            group += 1
        tok = FrontendToken(frame, t, token_id, piece, group)
        tokens.append(tok)
        if new_burst or piece[:1].isspace() or not words:
            words.append([t, t, piece.strip(), group, [tok]])
        else:
            words[-1][1] = t
            words[-1][2] += piece.strip()
            words[-1][4].append(tok)
        last_t = t
    words = [w for w in words if w[2]]
    out: list[Word] = []
    for i, (start, last, text, g, toks) in enumerate(words):
        # a word lasts until the next word of its burst starts: that is when it is being "spoken"
        nxt = words[i + 1] if i + 1 < len(words) else None
        end = nxt[0] if nxt is not None and nxt[3] == g else last + frame_s
        out.append(Word(start, max(end, last + frame_s), text, g, tuple(toks)))
    return out, tokens


def _with_sources(words: list[Word], gens: list[Generation]) -> list[Word]:
    """The words again, each with what its tokens followed (after :func:`follow`)."""
    out = []
    for w in words:
        source, gen = word_source(w.tokens)
        stream = gens[gen].stream_id if gen is not None else None
        out.append(Word(w.start, w.end, w.text, w.group, w.tokens, source, gen, stream))
    return out


def extract_timeline(trace: TraceData, join_gap: float = 1.0) -> TimelineData:
    """Turn trace rows into per-lane records (one pass over the rows, in event order).

    The oracle's text is not stored per fed token, only per applied append; the mapping from a fed
    ``oracle_index`` back to the chunk that supplied it is rebuilt here, exactly as the oracle did it:
    a reset (explicit, or implicit for an append with no oracle yet) starts a fresh index space.
    """
    meta = trace.metadata
    frame_s = float(meta.get("kame_sim.frame_seconds", "0.08"))
    rows = trace.table.to_pylist()
    t_end = max((r["t_sim"] for r in rows if r["t_sim"] is not None), default=0.0)

    user_words: list[Word] = []
    stt: list[SttResult] = []
    rate_limited: list[float] = []
    decisions: list[PolicyEvent] = []
    oracle_frames: list[OracleFrame] = []
    chunks: list[OracleChunk] = []
    resets: list[OracleReset] = []
    queue: list[QueuePoint] = []
    pieces: list[tuple[float, int, int | None, str]] = []
    late: list[float] = []

    index_map: dict[int, int] | None = None  # fed oracle_index -> chunk number, for the current oracle
    drained_at: int | None = None
    for r in rows:
        ev, t = r["event"], r["t_sim"]
        if ev == "user_word":
            user_words.append(
                Word(t, r["t_ref"] if r["t_ref"] is not None else t, r["text"] or "", r["utterance"] or 0)
            )
        elif ev in ("stt_partial", "stt_final"):
            stt.append(SttResult(t, r["t_ref"], r["text"] or "", r["utterance"], ev == "stt_final"))
        elif ev == "llm_rate_limited":
            rate_limited.append(t)
            decisions.append(PolicyEvent(t, "rate_limited", r["detail"]))
        elif ev == "llm_start_deferred":
            decisions.append(PolicyEvent(t, "deferred", r["detail"], t_ref=r["t_ref"]))
        elif ev == "llm_start_skipped":
            decisions.append(PolicyEvent(t, "skipped", r["detail"]))
        elif ev == "llm_warmup":
            decisions.append(PolicyEvent(t, "warmup", r["detail"]))
        elif ev == "oracle_flush":
            queue.append(QueuePoint(t, 0, "flush", str(r["queue_len"] or 0), r["stream_id"]))
        elif ev in ("oracle_enqueue", "oracle_drop"):
            if r["queue_len"] is not None:
                kind = "enqueue" if ev == "oracle_enqueue" else "drop"
                queue.append(QueuePoint(t, r["queue_len"], kind, r["detail"], r["stream_id"]))
        elif ev in ("oracle_reset_applied", "oracle_append_applied", "oracle_stale_skipped"):
            if drained_at != r["frame"]:  # the frame loop drains the whole queue at once
                queue.append(QueuePoint(t, 0, "drain", None, None))
                drained_at = r["frame"]
            if ev == "oracle_stale_skipped":
                decisions.append(PolicyEvent(t, "stale", r["text"], r["stream_id"]))
            elif ev == "oracle_reset_applied":
                resets.append(OracleReset(t, r["frame"], r["stream_id"], r["t_ref"]))
                index_map = {}
            else:
                chunk = OracleChunk(
                    r["stream_id"],
                    r["text"] or "",
                    t,
                    r["t_ref"],
                    r["oracle_index"],
                    r["n_tokens"] or 0,
                    r["n_skipped"] or 0,
                    frame=r["frame"],
                )
                chunks.append(chunk)
                if index_map is None and chunk.n_tokens:  # KAME: an append with no oracle resets first
                    index_map = {}
                if index_map is not None and chunk.first_index is not None:
                    for i in range(chunk.first_index, chunk.first_index + chunk.n_tokens):
                        index_map[i] = len(chunks) - 1
        elif ev == "oracle_token_fed":
            idx, tok = r["oracle_index"], r["token_id"]
            if idx is None:
                oracle_frames.append(OracleFrame(t, r["frame"], "pad", None, None, tok))
            elif idx == 0:
                oracle_frames.append(OracleFrame(t, r["frame"], "start", 0, None, tok))
            else:
                c = (index_map or {}).get(idx)
                oracle_frames.append(OracleFrame(t, r["frame"], "text", idx, c, tok))
                if c is not None:
                    ch = chunks[c]
                    ch.fed_start = t if ch.fed_start is None else ch.fed_start
                    ch.fed_end = t + frame_s
                    ch.n_fed += 1
        elif ev == "frontend_token":
            if r["text"]:
                pieces.append((t, r["frame"], r["token_id"], r["text"]))
        elif ev == "frame" and r["detail"] == "late":
            late.append(t)

    streams = stream_lives(trace, t_end)
    scenario = trace.scenario
    words, front_tokens = _frontend_words(pieces, frame_s, join_gap)
    gens = build_generations(
        oracle_frames,
        [c.stream_id for c in chunks],
        {r.frame: r.stream_id for r in resets},
        [c.frame for c in chunks],
    )
    for g in gens:
        for c in g.chunks:
            chunks[c].generation = g.number
    switch_marks = follow(front_tokens, gens)
    return TimelineData(
        conversation_id=meta.get("kame_sim.conversation_id", "?"),
        seed=meta.get("kame_sim.seed", "?"),
        frontend=meta.get("kame_sim.frontend", "?"),
        time_coupling=meta.get("kame_sim.time_coupling", "?"),
        run_name=str(scenario.get("run", {}).get("name", "")),
        complete=trace.complete,
        frame_s=frame_s,
        t_end=t_end,
        user_words=user_words,
        stt=stt,
        streams=sorted(streams, key=lambda s: (s.start, s.stream_id)),
        rate_limited=rate_limited,
        oracle_frames=oracle_frames,
        oracle_chunks=chunks,
        resets=resets,
        queue=queue,
        frontend_words=_with_sources(words, gens),
        late_frames=late,
        policy=trace_policy(trace),
        decisions=decisions,
        generations=gens,
        frontend_tokens=front_tokens,
        switches=switch_marks,
    )


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

FONT = 7.0  # points, for labels inside lanes
_CHAR_IN = FONT / 72 * 0.60  # average DejaVu Sans glyph width (inches) at FONT, with a little slack
SUB = 1.0  # height of one sub-row in lane units
UNIT_IN = 0.21  # inches per lane unit
MARGIN_IN = 1.6  # lane names on the left, a little space on the right
MIN_WIDTH_IN = 9.0

C_UTTER = ["#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fc9272", "#c7e9c0", "#dadaeb", "#fdd0a2"]
C_UTTER_EDGE = ["#3182bd", "#e6550d", "#31a354", "#756bb1", "#de2d26", "#41ab5d", "#6a51a3", "#d94801"]
C_PARTIAL = "#737373"
C_FINAL = "#08519c"
C_WAIT = "#c6dbef"
C_STREAM = "#2171b5"
C_CANCEL = "#fcbba1"
C_CANCEL_EDGE = "#cb181d"
C_EMPTY = "#d9d9d9"
C_IGNORED = "#d9d9d9"
C_ERROR = "#000000"
C_ADOPT = "#238b45"
C_PUT_WAIT = "#fd8d3c"
C_SKIP = "#969696"
C_FLUSH = "#d94801"
C_START = "#6a3d9a"
C_TEXT = ("#1b9e77", "#66c2a5")  # alternating per chunk so word boundaries show in the strip
C_PAD = "#f0f0f0"
C_RESET = "#6a3d9a"
C_FRONT = "#fdd49e"  # the front-end's own guess
C_FRONT_EDGE = "#d7301f"
C_ALERT = "#e31a1c"
C_MARK = "#b10026"  # kame-sim shrink: an event its minimal schedule keeps away from nominal
C_UNFED = "#a3a3a3"  # oracle text appended but never fed (a reset came first, or it was late)
# One colour per oracle generation (in order, so consecutive generations always differ): its
# fed tokens in the oracle strip, its text line, its stream's label and the front-end words that
# followed it. No orange (the guess), red (alerts) or purple (START, resets) among them.
C_GEN = ("#1f78b4", "#1b9e77", "#e7298a", "#66a61e", "#17a2b8")
C_GEN_LIGHT = ("#c6dcef", "#bfe6da", "#f9c9e1", "#d5ebbd", "#bde8ef")
C_GEN_MID = ("#6fa6d0", "#6cc4aa", "#f07eb7", "#a3cf70", "#6ac9d6")


def gen_color(generation: int | None, shade: str = "dark") -> str:
    """The colour of an oracle generation (``dark`` | ``mid`` | ``light``); dark grey for none."""
    if generation is None:
        return {"dark": "#08306b", "mid": "#969696", "light": "#f0f0f0"}[shade]
    table = {"dark": C_GEN, "mid": C_GEN_MID, "light": C_GEN_LIGHT}[shade]
    return table[generation % len(table)]


def oracle_line(data: TimelineData, gen: Generation, unfed_chars: int = 40) -> tuple[str, str, str]:
    """One generation's oracle text as (``#id ``, the text fed before the next reset, the text
    appended but never fed, shortened to ``unfed_chars``). Chunks are joined as the LLM sent them
    when its chunks carry their own spaces, else with single spaces (word chunks)."""
    spaced = any(c.text[:1].isspace() for c in data.oracle_chunks)
    chunks = [data.oracle_chunks[i] for i in gen.chunks]
    last_fed = max((i for i, c in enumerate(chunks) if c.n_fed > 0), default=-1)

    def join(part: list[OracleChunk]) -> str:
        text = "".join(c.text for c in part) if spaced else " ".join(c.text.strip() for c in part)
        return " ".join(text.split())

    fed, rest = join(chunks[: last_fed + 1]), join(chunks[last_fed + 1 :])
    if rest:
        rest = (" " if fed else "") + _short(rest, unfed_chars)
    label = f"#{gen.stream_id} " if gen.stream_id is not None else f"gen {gen.number} "
    return label, fed, rest


def _text_seconds(text: str, spi: float) -> float:
    """How many seconds of the time axis a FONT-sized label takes, at ``spi`` seconds per inch."""
    return (len(text) + 1) * _CHAR_IN * spi


def _pack(spans: list[tuple[float, float]], gap: float) -> tuple[list[int], int]:
    """Greedy interval packing: the first sub-row whose last item ended ``gap`` before this start.

    Spans must come sorted by start. Used so labels and overlapping bars never collide.
    """
    ends: list[float] = []
    rows: list[int] = []
    for a, b in spans:
        for i, e in enumerate(ends):
            if a >= e + gap:
                ends[i] = b
                rows.append(i)
                break
        else:
            ends.append(b)
            rows.append(len(ends) - 1)
    return rows, max(1, len(ends))


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_SHORT_TAGS = {"superseded": "sup.", "adoption": "adopt.", "session end": "end", "ignored": "ign."}


def end_tag(s: Stream) -> str | None:
    """The words written after a stream's bar: why it ended, unless it simply finished."""
    outcome = s.outcome
    if outcome == "done":
        return None
    if outcome == "error":
        return "error: " + _short(s.error_kind or "error", 24)
    return _short(outcome.replace("_", " "), 24)


C_END = {
    "superseded": "#cb181d",
    "adoption": "#6a51a3",
    "limit": "#d94801",
    "session_end": "#525252",
    "error": "#000000",
    "ignored": "#737373",
    "open": "#525252",
}


def end_color(s: Stream) -> str:
    """The colour of a stream's end (cap, hatch, label): one per cancel reason, error, ignored."""
    return C_END.get(s.outcome, C_CANCEL_EDGE if s.status == "cancelled" else "#525252")


def short_tags(tag: str) -> tuple[str, ...]:
    """``tag`` and its shorter forms, longest first (``adoption``, ``adopt.``, ``a``)."""
    short = "err" if tag.startswith("error") else _SHORT_TAGS.get(tag, tag)
    return tuple(dict.fromkeys((tag, short, short[:1])))


def pack_streams(streams: list[Stream], spi: float, gap: float) -> tuple[list[int], int, list[float]]:
    """Sub-rows for stream bars: streams live at the same time never share one, and no more rows
    are used than streams were ever live at once (any free row will do when streams are visited in
    start order). Among the free rows, one whose last stream's label and end label are past too is
    preferred. Streams must come sorted by start. Returns (row per stream, number of rows, room in
    seconds after each bar before the next bar of its row: where its end label may go)."""
    rows: list[int] = []
    last: list[int] = []  # per row: index of its latest stream

    def clear_of(j: int) -> float:  # where stream j's drawing (bar, label, end label) ends
        p = streams[j]
        tag = end_tag(p)
        tag_end = p.end + (0.04 * spi + _text_seconds(tag, spi) if tag else 0.0)
        return max(tag_end, p.start + _text_seconds(f"#{p.stream_id}", spi))

    for i, s in enumerate(streams):
        free = [r for r, j in enumerate(last) if streams[j].end <= s.start]  # rows not live now
        roomy = [r for r in free if clear_of(last[r]) + gap <= s.start]
        if roomy or free:
            row = (roomy or free)[0]
        else:
            last.append(i)
            row = len(last) - 1
        last[row] = i
        rows.append(row)
    room = [math.inf] * len(streams)
    previous: dict[int, int] = {}
    for i, row in enumerate(rows):
        if row in previous:
            j = previous[row]
            room[j] = streams[i].start - streams[j].end - gap
        previous[row] = i
    return rows, max(1, len(last)), room


@dataclass
class _Lane:
    """A horizontal band of the row axes: a name and how many sub-rows it needs."""

    name: str
    units: float
    y0: float = 0.0


def _in_window(a: float, b: float, t0: float, t1: float) -> bool:
    return b >= t0 and a <= t1


class RowPainter:
    """Draws every lane for one time window [t0, t1] into one axes (lanes are y bands).

    Public, with :data:`MARGIN_IN`, :data:`UNIT_IN` and :func:`legend_handles`: ``compare`` and
    ``fork`` stack two runs' windows with the same painter, so both pictures read alike.
    """

    def __init__(self, data: TimelineData, t0: float, t1: float, spi: float) -> None:
        self.d, self.t0, self.t1, self.spi = data, t0, t1, spi
        self.gap = 0.15 * spi  # minimum horizontal space between labels in one sub-row (seconds)
        d = data
        self.users = [w for w in d.user_words if _in_window(w.start, w.end, t0, t1)]
        self.user_rows, self.n_user = _pack(
            [(w.start, max(w.end, w.start + _text_seconds(w.text, spi))) for w in self.users], self.gap
        )
        self.finals = [s for s in d.stt if s.final and _in_window(s.speech_t or s.t, s.t, t0, t1 + 5)]
        self.final_labels = [self._final_label(s) for s in self.finals]
        self.final_rows, self.n_final = _pack(
            [
                (s.t, s.t + _text_seconds(lbl, spi))
                for s, lbl in zip(self.finals, self.final_labels, strict=True)
            ],
            self.gap,
        )
        self.streams = [s for s in d.streams if _in_window(s.start, s.end, t0, t1)]
        self.stream_rows, self.n_stream, self.stream_room = pack_streams(self.streams, spi, 0.02 * spi)
        self.stream_gen = d.generation_of_stream()
        self.stream_by_id = {s.stream_id: s for s in d.streams}
        # oracle: one text line per generation (stream), from its START, packed so lines never
        # collide; the text is what the front-end could follow, so it is written out in full
        ends = [g.tokens[-1].t + d.frame_s if g.tokens else g.start_t + d.frame_s for g in d.generations]
        self.gens = [g for g, e in zip(d.generations, ends, strict=True) if _in_window(g.start_t, e, t0, t1)]
        self.gen_lines = [oracle_line(d, g) for g in self.gens]
        self.gen_rows, self.n_gen = _pack(
            [
                (
                    max(g.start_t, t0),
                    max(g.start_t, t0) + _text_seconds("◂ " + self._failed(g) + "".join(line), spi),
                )
                for g, line in zip(self.gens, self.gen_lines, strict=True)
            ],
            0.1 * spi,
        )
        if not self.gens:
            self.n_gen = 0
        self.fwords = [w for w in d.frontend_words if _in_window(w.start, w.end, t0, t1)]
        self.fword_rows, self.n_fword = _pack(
            [(w.start, max(w.end, w.start + _text_seconds(w.text, spi))) for w in self.fwords], self.gap
        )
        self.switches = [s for s in d.switches if t0 <= s.t <= t1]
        self.switch_rows, self.n_switch = _pack(
            [(s.t, s.t + _text_seconds(self._switch_label(s), spi) + 0.1 * spi) for s in self.switches], 0.0
        )
        if not self.switches:
            self.n_switch = 0
        self.lanes = [
            _Lane("user\nwords", self.n_user * SUB + 0.4),
            _Lane("STT\npartials, finals", (1 + self.n_final) * SUB + 0.4),
            _Lane("LLM\nstreams", self.n_stream * SUB + 0.4),
            _Lane("oracle\ntext per stream,\nfed per frame", (self.n_gen + 1.2) * SUB + 0.4),
            _Lane("front-end\nwords", (self.n_switch * 0.8 + self.n_fword) * SUB + 0.4),
        ]
        y = 0.0
        for lane in self.lanes:
            lane.y0 = y
            y += lane.units
        self.height = y

    @staticmethod
    def _final_label(s: SttResult) -> str:
        return "final: " + _short(s.text, 56)

    def _failed(self, g: Generation) -> str:
        """``✕ error: kind `` when the generation's stream failed, else ''."""
        life = self.stream_by_id.get(g.stream_id)
        return f"✕ {end_tag(life)} " if life is not None and life.status == "error" else ""

    @staticmethod
    def _switch_label(s: Switch) -> str:
        return f"#{s.stream_id}" if s.stream_id is not None else f"gen {s.generation}"

    # each sub-row i of a lane spans [y0 + 0.2 + i, y0 + 0.2 + i + 1); items use 70 % of it
    def _y(self, lane: int, sub: float) -> float:
        return self.lanes[lane].y0 + 0.2 + sub * SUB

    def _paint_stream(self, ax: Axes, s: Stream, y: float, h: float, room: float, text_kw: dict) -> None:
        from matplotlib.patches import Rectangle

        dur = max(s.end - s.start, 1e-3)
        if s.first_chunk is None:
            # ended without a single non-blank chunk (grey), or was cut off while waiting (light)
            fc = C_EMPTY if s.status == "done" else C_WAIT
            ax.add_patch(Rectangle((s.start, y), dur, h, fc=fc, ec="#969696", lw=0.6, zorder=3))
        else:
            ax.add_patch(
                Rectangle((s.start, y), s.first_chunk - s.start, h, fc=C_WAIT, ec=C_STREAM, lw=0.6, zorder=3)
            )
            rest = max(s.end - s.first_chunk, 1e-3)
            if s.ignored:
                ax.add_patch(
                    Rectangle(
                        (s.first_chunk, y),
                        rest,
                        h,
                        fc=C_IGNORED,
                        ec="#737373",
                        hatch="....",
                        lw=0.6,
                        zorder=3,
                    )
                )
            else:
                ax.add_patch(
                    Rectangle((s.first_chunk, y), rest, h, fc=C_STREAM, ec=C_STREAM, lw=0.6, zorder=3)
                )
        for a, b in s.put_waits:
            ax.add_patch(
                Rectangle((a, y + 0.5 * h), max(b - a, 1e-3), 0.5 * h, fc=C_PUT_WAIT, ec="none", zorder=4)
            )
        for tc, _ in s.chunks:
            ax.plot([tc, tc], [y + 0.45 * h, y + h], color="white", lw=0.5, zorder=4)
        color = end_color(s)
        if s.status == "cancelled":
            ax.add_patch(Rectangle((s.start, y), dur, h, fc="none", ec=color, hatch="////", lw=0.9, zorder=5))
        elif s.status == "error":
            ax.add_patch(Rectangle((s.start, y), dur, h, fc="none", ec=color, hatch="xxxx", lw=1.2, zorder=5))
        elif s.status == "open":
            ax.add_patch(Rectangle((s.start, y), dur, h, fc="none", ec=color, ls="--", lw=0.9, zorder=5))
        if s.outcome != "done":  # the end cap: why it ended, in colour, however short the bar
            ax.plot(
                [s.end] * 2, [y - 0.08, y + h + 0.08], color=color, lw=2.2, zorder=6, solid_capstyle="butt"
            )
        if s.adopted is not None:
            ax.plot([s.adopted], [y - 0.02], marker="*", ms=7, color=C_ADOPT, zorder=6, clip_on=True)
        elif s.first_chunk is not None:
            face = "white" if s.ignored else "black"
            ax.plot(
                [s.first_chunk], [y - 0.02], marker="v", ms=5, mfc=face, mec="black", zorder=6, clip_on=True
            )
        ax.text(
            s.start + 0.02 * self.spi,
            y + h / 2,
            f"#{s.stream_id}",
            color=gen_color(self.stream_gen.get(s.stream_id)),
            fontweight="bold",
            **text_kw,
        )
        tag = end_tag(s)
        if tag is not None:
            self._paint_end_tag(ax, s, y, h, room, tag, color, text_kw)

    def _paint_end_tag(
        self, ax: Axes, s: Stream, y: float, h: float, room: float, tag: str, color: str, text_kw: dict
    ) -> None:
        """Why it ended, in words: after the bar where there is room, else inside its end, else a
        shorter form (``adopt.``, ``a``); the coloured end cap is there in any case."""
        spi = self.spi
        inside = s.end - s.start - _text_seconds(f"#{s.stream_id}", spi) - 0.06 * spi
        weight = "bold" if s.status == "error" else "normal"
        for text in short_tags(tag):
            width = _text_seconds(text, spi)
            if width + 0.04 * spi <= room:
                ax.text(s.end + 0.04 * spi, y + h / 2, text, color=color, fontweight=weight, **text_kw)
                return
            if width <= inside:
                kw = {**text_kw, "ha": "right", "zorder": 7}
                box = {"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.85}
                ax.text(s.end - 0.04 * spi, y + h / 2, text, color=color, fontweight=weight, bbox=box, **kw)
                return

    def paint(self, ax: Axes) -> None:
        from matplotlib.patches import Rectangle
        from matplotlib.ticker import MultipleLocator

        d = self.d
        ax.set_xlim(self.t0, self.t1)
        ax.set_ylim(self.height, 0)
        for i, lane in enumerate(self.lanes):
            if i % 2:
                ax.axhspan(lane.y0, lane.y0 + lane.units, color="#f7f7f7", zorder=0, lw=0)
            ax.axhline(lane.y0, color="#bdbdbd", lw=0.6, zorder=1)
        ax.set_yticks([lane.y0 + lane.units / 2 for lane in self.lanes])
        ax.set_yticklabels([lane.name for lane in self.lanes], fontsize=8)
        ax.tick_params(axis="y", length=0)
        ax.xaxis.set_major_locator(MultipleLocator(1.0 if (self.t1 - self.t0) <= 40 else 5.0))
        ax.xaxis.set_minor_locator(MultipleLocator(0.2 if (self.t1 - self.t0) <= 40 else 1.0))
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", which="major", color="#e0e0e0", lw=0.6, zorder=0)
        ax.set_axisbelow(True)

        text_kw = {"fontsize": FONT, "va": "center", "ha": "left", "clip_on": True, "zorder": 5}
        h = 0.7 * SUB

        # user words: a box from start to end, the word at its start; colour per utterance
        for w, sub in zip(self.users, self.user_rows, strict=True):
            y = self._y(0, sub)
            k = w.group % len(C_UTTER)
            ax.add_patch(
                Rectangle((w.start, y), w.end - w.start, h, fc=C_UTTER[k], ec=C_UTTER_EDGE[k], lw=0.6)
            )
            ax.text(w.start + 0.02 * self.spi, y + h / 2, w.text, **text_kw)

        # STT: partials as ticks at arrival, with a thin line back to the speech they cover (latency)
        y = self._y(1, 0)
        for s in d.stt:
            if s.final or not _in_window(s.speech_t or s.t, s.t, self.t0, self.t1):
                continue
            if s.speech_t is not None:
                ax.plot([s.speech_t, s.t], [y + h / 2] * 2, color=C_PARTIAL, lw=0.6, alpha=0.6, zorder=3)
            ax.plot([s.t, s.t], [y + 0.05, y + h - 0.05], color=C_PARTIAL, lw=1.2, zorder=4)
        for s, lbl, sub in zip(self.finals, self.final_labels, self.final_rows, strict=True):
            y = self._y(1, 1 + sub)
            if s.speech_t is not None:
                ax.plot([s.speech_t, s.t], [y + h / 2] * 2, color=C_FINAL, lw=0.8, zorder=3)
            ax.plot([s.t], [y + h / 2], marker="D", ms=4.5, color=C_FINAL, zorder=5, clip_on=True)
            ax.text(s.t + 0.08 * self.spi, y + h / 2, lbl, color=C_FINAL, **text_kw)

        # LLM streams, one sub-row per concurrently live stream: waiting for the first token (light),
        # streaming (dark; grey dotted = ignored), put waits (orange); the end drawn by why it ended
        for s, sub, room in zip(self.streams, self.stream_rows, self.stream_room, strict=True):
            self._paint_stream(ax, s, self._y(2, sub), h, room, text_kw)
        for e in d.decisions:
            if not (self.t0 <= e.t <= self.t1):
                continue
            if e.kind == "rate_limited":
                ax.plot([e.t], [self._y(2, 0) + h / 2], marker="x", ms=6, color=C_ALERT, mew=1.5, zorder=7)
            elif e.kind == "skipped":
                ax.plot([e.t], [self._y(2, 0) + h / 2], marker="x", ms=5, color=C_SKIP, mew=1.2, zorder=7)

        # oracle: one line per generation (#stream, the text fed, the text never fed in grey),
        # above one strip of per-frame cells in the generation's colour (two shades: chunks)
        for g, (label, fed, rest), sub in zip(self.gens, self.gen_lines, self.gen_rows, strict=True):
            y = self._y(3, sub)
            dark = gen_color(g.number)
            x = max(g.start_t, self.t0)
            if g.start_t >= self.t0:
                ax.plot([x] * 2, [y + h, self._y(3, self.n_gen) + 0.1], color=dark, lw=0.6, zorder=2)
            else:  # continued from the previous row: written again from this row's start
                label = "◂ " + label
            prev = ax.text(x, y + h / 2, label, color=dark, fontweight="bold", **text_kw)
            failed = self._failed(g)
            if failed:  # the stream failed: the oracle kept what it had fed
                prev = ax.annotate(
                    failed, xy=(1, 0.5), xycoords=prev, va="center", ha="left", fontsize=FONT,
                    color=C_ERROR, fontweight="bold", annotation_clip=False, zorder=5,
                )  # fmt: skip
                prev.set_clip_path(ax.patch)
            for text, color in ((fed, dark), (rest, C_UNFED)):
                if text:  # chained: each part starts where the previous one's text ends
                    prev = ax.annotate(
                        text, xy=(1, 0.5), xycoords=prev, va="center", ha="left", fontsize=FONT,
                        color=color, annotation_clip=False, zorder=5,
                    )  # fmt: skip
                    prev.set_clip_path(ax.patch)
        ys = self._y(3, self.n_gen) + 0.1
        fs = d.frame_s
        gen_of_chunk = {c: g.number for g in d.generations for c in g.chunks}
        for f in d.oracle_frames:
            if not (self.t0 - fs <= f.t <= self.t1):
                continue
            if f.kind == "pad":
                color = C_PAD
            elif f.kind == "start":
                color = C_START
            else:
                gen = gen_of_chunk.get(f.chunk) if f.chunk is not None else None
                color = gen_color(gen, "dark" if (f.chunk or 0) % 2 == 0 else "mid")
            ax.add_patch(Rectangle((f.t, ys), fs, h, fc=color, ec="none", zorder=3))
        for c in d.oracle_chunks:
            if c.n_skipped and self.t0 <= c.applied_t <= self.t1:
                ax.plot(
                    [c.applied_t], [ys + h + 0.15], marker="^", ms=5, color=C_ALERT, zorder=7, clip_on=True
                )
                ax.text(
                    c.applied_t + 0.05 * self.spi,
                    ys + h + 0.15,
                    f"{c.n_skipped} late",
                    color=C_ALERT,
                    **text_kw,
                )
        for q in d.drops:
            if self.t0 <= q.t <= self.t1:
                ax.plot([q.t], [ys + h / 2], marker="x", ms=6, color=C_ALERT, mew=1.5, zorder=7)
        for q in d.flushes:  # the multiplexer discarded the queue at an adoption
            if self.t0 <= q.t <= self.t1:
                ax.plot([q.t], [ys + h + 0.15], marker="s", ms=4, color=C_FLUSH, zorder=7, clip_on=True)
                ax.text(q.t + 0.05 * self.spi, ys + h + 0.15, f"flush {q.detail}", color=C_FLUSH, **text_kw)
        for e in d.decisions:
            if e.kind == "stale" and self.t0 <= e.t <= self.t1:
                ax.plot([e.t], [ys + h / 2], marker="x", ms=5, color=C_SKIP, mew=1.2, zorder=7)
        top = self.lanes[2].y0  # resets: a line through the LLM and oracle lanes, to the front-end
        for r in d.resets:
            if self.t0 <= r.t <= self.t1:
                ax.plot([r.t, r.t], [top, self.height], color=C_RESET, lw=0.9, ls="--", alpha=0.55, zorder=2)

        # switches: where the front-end went from its guess (▲) or an older oracle (◆) to an oracle
        for sw, sub in zip(self.switches, self.switch_rows, strict=True):
            y = self._y(4, sub * 0.8) + 0.35
            color = gen_color(sw.generation)
            marker = "^" if sw.kind == "guess→oracle" else "D"
            ax.plot([sw.t], [y], marker=marker, ms=5.5 if marker == "^" else 4, color=color, zorder=7)
            ax.text(
                sw.t + 0.07 * self.spi, y, self._switch_label(sw), color=color, fontweight="bold", **text_kw
            )
            ax.plot([sw.t] * 2, [y, self.height], color=color, lw=0.8, ls=":", zorder=2)
        # front-end words, coloured by what they followed: an oracle generation (its colour) or
        # the front-end's own guess (orange); a word of both is coloured token by token
        for w, sub in zip(self.fwords, self.fword_rows, strict=True):
            y = self._y(4, self.n_switch * 0.8 + sub)
            if w.source == "mixed":
                for i, tok in enumerate(w.tokens):
                    end = w.tokens[i + 1].t if i + 1 < len(w.tokens) else w.end
                    fc = gen_color(tok.generation, "light") if tok.follows else C_FRONT
                    ax.add_patch(Rectangle((tok.t, y), end - tok.t, h, fc=fc, ec="none", zorder=3))
                fc, ec = "none", C_FRONT_EDGE
            elif w.source == "oracle":
                fc, ec = gen_color(w.generation, "light"), gen_color(w.generation)
            else:
                fc, ec = C_FRONT, C_FRONT_EDGE
            ax.add_patch(Rectangle((w.start, y), w.end - w.start, h, fc=fc, ec=ec, lw=0.7, zorder=3))
            color = "#67000d" if w.source == "guess" else "#000000"
            ax.text(w.start + 0.02 * self.spi, y + h / 2, w.text, color=color, **text_kw)
        for t in d.late_frames:
            if self.t0 <= t <= self.t1:
                ax.plot([t, t], [self.lanes[4].y0, self.height], color=C_ALERT, lw=0.5, alpha=0.6, zorder=2)


def legend_handles() -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [
        Patch(fc=C_UTTER[0], ec=C_UTTER_EDGE[0], label="user word (colour = utterance)"),
        Line2D([], [], color=C_PARTIAL, marker="|", ms=8, lw=0.6, label="STT partial (line = latency)"),
        Line2D([], [], color=C_FINAL, marker="D", ms=4.5, lw=0.8, label="STT final"),
        Patch(fc=C_WAIT, ec=C_STREAM, label="LLM waiting for 1st token"),
        Patch(fc=C_STREAM, ec=C_STREAM, label="LLM streaming (ticks = chunks)"),
        Line2D([], [], color="black", marker="v", ls="none", ms=5, label="first chunk"),
        Line2D([], [], color=C_ADOPT, marker="*", ls="none", ms=7, label="adopted (multiplexer)"),
        Patch(fc=C_IGNORED, ec="#737373", hatch="....", label="streaming, ignored (older)"),
        Patch(fc=C_PUT_WAIT, label="put waiting for room"),
        Patch(fc="white", ec=C_END["superseded"], hatch="////", label="cancelled: superseded"),
        Patch(fc="white", ec=C_END["adoption"], hatch="////", label="cancelled: adoption"),
        Patch(fc="white", ec=C_END["limit"], hatch="////", label="cancelled: limit"),
        Patch(fc="white", ec=C_END["session_end"], hatch="////", label="cancelled: session end"),
        Patch(fc="white", ec=C_ERROR, hatch="xxxx", label="error (its kind written)"),
        Patch(fc=C_EMPTY, ec="#969696", label="LLM no text"),
        Line2D([], [], color=C_ALERT, marker="x", ls="none", ms=6, mew=1.5, label="rate-limited / dropped"),
        Line2D(
            [], [], color=C_SKIP, marker="x", ls="none", ms=5, mew=1.2, label="start skipped / stale item"
        ),
        Line2D([], [], color=C_FLUSH, marker="s", ls="none", ms=4, label="queue flushed"),
        Patch(fc=C_START, label="oracle START"),
        Patch(fc=C_GEN[0], label="oracle token fed (colour = stream)"),
        Patch(fc=C_PAD, ec="#bdbdbd", label="padding"),
        Line2D([], [], color=C_UNFED, marker="$abc$", ls="none", ms=12, label="oracle text never fed"),
        Line2D([], [], color=C_RESET, ls="--", lw=0.9, label="oracle reset applied"),
        Patch(fc=C_GEN_LIGHT[0], ec=C_GEN[0], label="word following the oracle (its colour)"),
        Patch(fc=C_FRONT, ec=C_FRONT_EDGE, label="word of the front-end's own guess"),
        Patch(fc=C_GEN_LIGHT[0], ec=C_FRONT_EDGE, label="word partly guess (per token)"),
        Line2D([], [], color=C_GEN[0], marker="^", ls="none", ms=5.5, label="switch: guess → oracle"),
        Line2D([], [], color=C_GEN[0], marker="D", ls="none", ms=4, label="switch: to a newer oracle"),
    ]


def plot_timeline(
    trace: TraceData,
    path: Path,
    t_range: tuple[float, float] | None = None,
    *,
    seconds_per_inch: float = 1.25,
    row_seconds: float = 20.0,
    dpi: int = 110,
    marks: Sequence[tuple[float, str]] = (),
) -> Path:
    """Draw the run's timeline to a PNG at ``path`` and return ``path``.

    The scale is fixed (``seconds_per_inch``) rather than fitted to the figure, because the labels
    (words, oracle text) only stay legible at a fixed density; a window longer than
    ``row_seconds`` is split into rows of exactly ``row_seconds`` each (the last one too, so that
    every row has the same scale), stacked vertically, each with its own copy of the lanes and
    its own time axis. ``t_range`` restricts the picture to a window (seconds of simulated time).
    ``marks``: ``(t, label)`` pairs drawn as labelled vertical lines across every lane (``kame-sim
    shrink`` marks the events its minimal schedule keeps away from nominal).
    """
    from matplotlib.figure import Figure

    data = extract_timeline(trace)
    # by default one frame past the last event, so the last frame's cell and word are visible
    t0, t1 = t_range if t_range is not None else (0.0, data.t_end + data.frame_s)
    if not t1 > t0:
        raise ValueError(f"empty time range {t0}..{t1}")
    if not row_seconds > 0:
        raise ValueError(f"row_seconds must be positive, not {row_seconds}")
    n_rows = max(1, math.ceil((t1 - t0) / row_seconds - 1e-9))
    row_len = row_seconds if n_rows > 1 else t1 - t0
    # a short window is a zoom: stretch it to a readable minimum width instead of a thumbnail
    seconds_per_inch = min(seconds_per_inch, row_len / (MIN_WIDTH_IN - MARGIN_IN))
    painters = [
        RowPainter(data, t0 + i * row_len, t0 + (i + 1) * row_len, seconds_per_inch) for i in range(n_rows)
    ]
    width = row_len / seconds_per_inch + MARGIN_IN
    heights = [p.height * UNIT_IN + 0.45 for p in painters]
    fig = Figure(figsize=(width, sum(heights) + 1.5), dpi=dpi, layout="constrained")
    axes = fig.subplots(n_rows, 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, painter in zip(axes, painters, strict=True):
        painter.paint(ax)
        for t, label in marks:
            if painter.t0 <= t <= painter.t1:
                ax.axvline(t, color=C_MARK, lw=1.1, ls=(0, (3, 2)), zorder=7)
                ax.annotate(
                    label,
                    (t, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -2),
                    textcoords="offset points",
                    fontsize=7,
                    color=C_MARK,
                    fontweight="bold",
                    va="top",
                    ha="left",
                    zorder=8,
                    bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 0.5},
                )
    for ax in axes:
        ax.set_xlabel("simulated time (s)", fontsize=7, labelpad=1)
    window = f"window {t0:.1f}–{t1:.1f} s" if t_range is not None else f"{data.t_end:.1f} s simulated"
    details = [
        f"policy {data.policy}",
        f"front-end {data.frontend}",
        f"time coupling {data.time_coupling}",
        window,
    ]
    if data.run_name:
        details.insert(0, f"run {data.run_name}")
    if not trace.complete:
        details.append("PARTIAL trace (no run_end)")
    fig.suptitle(
        f"kame-sim timeline — conversation {data.conversation_id} · seed {data.seed}\n"
        + "  ·  ".join(details),
        fontsize=10,
    )
    ncol = max(3, min(7, int(width / 2.3)))
    handles = legend_handles()
    if marks:
        from matplotlib.lines import Line2D

        handles.append(
            Line2D([], [], color=C_MARK, ls=(0, (3, 2)), lw=1.1, label="shrunk event (away from nominal)")
        )
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=7.5, frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
