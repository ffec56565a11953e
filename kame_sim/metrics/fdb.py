"""Full-Duplex-Bench (FDB v1) turn-taking metrics, per user silence (definitions: docs/metrics.md).

FDB (Lin et al., arXiv 2503.04721; github.com/DanielLin94144/Full-Duplex-Bench,
``evaluation/eval_smooth_turn_taking.py`` and ``eval_pause_handling.py``) judges a model's output
words — time-aligned ASR words of its audio — with one rule: the model **took the turn** (TOR = 1)
when its words span at least ``TURN_DURATION_THRESHOLD_S`` (1 s, first word start to last word end)
or are more than ``TURN_NUM_WORDS_THRESHOLD`` (3) words; otherwise (nothing, or a short
backchannel-like burst) TOR = 0. Smooth turn-taking reports the mean TOR over turn ends (higher is
better) and the mean latency ``first word start − user turn end`` over the samples with TOR = 1,
negative latencies counted as 0; pause handling reports the mean TOR over pauses (lower is better).

FDB has one user turn (or pause) per sample. kame-sim replays whole conversations, so every user
silence between two utterances (at least ``stt.utterance_gap`` long: that is how utterances are
split) is one sample: a **turn end** when the recorded other speaker replied before the user spoke
again, a **pause** when the user went on. The front-end's "output" for silence ``u`` is its response
to turn ``u`` exactly as the other metrics define it (every speaking burst that starts in
``[start_u, start_{u+1})``, whole). Its words are either the front-end's text tokens with their
frame times (:func:`token_words`, the default: no audio needed) or recognised speech, FDB's way
(:func:`kame_sim.metrics.fdb_asr.recognise_frontend_audio` and :func:`fdb_from_words`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from kame_sim.metrics.events import TraceColumns
from kame_sim.metrics.turns import DEFAULT_BURST_GAP, Speech, Turns, frontend_speech, user_turns
from kame_sim.trace.reader import TraceData

#: FDB's thresholds (``turn_duration_threshold = 1``, ``turn_num_words_threshold = 3``).
TURN_DURATION_THRESHOLD_S = 1.0
TURN_NUM_WORDS_THRESHOLD = 3
#: Frame times are sums of 0.08 s steps: a span of "exactly" 1.0 s must not fall short by 1e-16.
SPAN_TOLERANCE_S = 1e-9

TURN_END = "turn_end"
PAUSE = "pause"
LABELS = (TURN_END, PAUSE)

_HAS_WORD_CHAR = re.compile(r"\w")


@dataclass(frozen=True)
class TimedWord:
    """One word the front-end said: its text and when (seconds on the trace's clock)."""

    start: float
    end: float
    text: str


def took_turn(words: Sequence[TimedWord]) -> bool:
    """FDB's TOR rule: the words span >= 1 s (first start to last end) or are more than 3 words."""
    if not words:
        return False
    span = words[-1].end - words[0].start
    return span >= TURN_DURATION_THRESHOLD_S - SPAN_TOLERANCE_S or len(words) > TURN_NUM_WORDS_THRESHOLD


# -- labels ----------------------------------------------------------------------------------------


def silence_labels(reference_replies: Mapping[int, str], utterances: Sequence[int]) -> dict[int, str | None]:
    """Turn end / pause per user utterance index, from what the other speaker really said after it.

    ``reference_replies[u]`` is the recorded other speaker's words between the start of ``u``'s
    last word and the start of utterance ``u+1`` (:func:`reference_replies_from_conversation`).
    Non-empty: a **turn end** (they replied before the user spoke again). Empty: a **pause** (the
    user went on) — except after the last of ``utterances`` (the trace's last turn, whose window is
    cut by the end of the run, or after which nobody speaks): ``None``, not a sample. A missing key
    is ``None`` too.
    """
    out: dict[int, str | None] = {}
    last = int(utterances[-1]) if len(utterances) else None
    for u in (int(x) for x in utterances):
        reply = reference_replies.get(u)
        if reply is None:
            out[u] = None
        elif reply.strip():
            out[u] = TURN_END
        else:
            out[u] = None if u == last else PAUSE
    return out


# -- words -----------------------------------------------------------------------------------------


def token_words(cols: TraceColumns, speech: Speech, frame_s: float) -> tuple[list[TimedWord], np.ndarray]:
    """The front-end's words from its text tokens, and the turn (position) each belongs to (-1: none).

    A burst's pieces are concatenated and split on whitespace (SentencePiece pieces carry their own
    leading space; ``▁`` is read as a space); a word starts at the ``t_sim`` of the frame holding
    its first character and ends one frame after the frame holding its last character (a frame's
    token is "spoken" during that frame). Runs without a letter or digit (punctuation) are not
    words. A word belongs to the turn of its burst.
    """
    pieces = [(p or "").replace("▁", " ") for p in cols.strings_at(speech.rows, "text")]
    words: list[TimedWord] = []
    turn_of: list[int] = []
    if not pieces:
        return words, np.zeros(0, dtype=np.int64)
    # one burst at a time: a word never spans two bursts
    bounds = np.r_[0, np.flatnonzero(np.diff(speech.burst)) + 1, len(pieces)]
    for b0, b1 in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        chars: list[int] = []  # frame position (index into speech arrays) of every character
        text = ""
        for i in range(b0, b1):
            text += pieces[i]
            chars.extend([i] * len(pieces[i]))
        for match in re.finditer(r"\S+", text):
            if not _HAS_WORD_CHAR.search(match.group()):
                continue
            first, last = chars[match.start()], chars[match.end() - 1]
            words.append(TimedWord(float(speech.t[first]), float(speech.t[last]) + frame_s, match.group()))
            turn_of.append(int(speech.turn[first]))
    return words, np.asarray(turn_of, dtype=np.int64)


def assign_words(
    words: Sequence[TimedWord], turns: Turns, burst_gap: float = DEFAULT_BURST_GAP
) -> np.ndarray:
    """Turn position of each (recognised) word: its burst's, a burst being the words with no
    silence of ``burst_gap`` or more between one word's end and the next word's start; a burst
    belongs to the turn whose window ``[start_u, start_{u+1})`` holds its first word's start."""
    n = len(words)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.array([w.start for w in words], dtype=float)
    ends = np.array([w.end for w in words], dtype=float)
    latest_end = np.maximum.accumulate(ends)
    new_burst = np.r_[True, starts[1:] - latest_end[:-1] >= burst_gap]
    burst = np.cumsum(new_burst) - 1
    burst_start = starts[new_burst]
    if len(turns) == 0:
        return np.full(n, -1, dtype=np.int64)
    pos = np.searchsorted(turns.start, burst_start, side="right") - 1
    inside = (pos >= 0) & (burst_start < turns.next_start[np.maximum(pos, 0)])
    return np.where(inside, pos, -1)[burst]


# -- per silence and per run -----------------------------------------------------------------------


@dataclass
class FdbTurn:
    """FDB's view of one user silence (the one after utterance ``utterance``)."""

    utterance: int
    end_s: float  # the user's turn end: end of the utterance's last word
    label: str | None  # "turn_end" | "pause" | None (not a sample: the trace's last turn, no reply)
    n_words: int = 0
    span_s: float | None = None  # last word end − first word start
    took_turn: bool = False  # FDB's TOR of this sample (0/1)
    latency_s: float | None = None  # first word start − end_s, raw (negative: started before the end)
    text: str = ""

    @property
    def latency_clipped_s(self) -> float | None:
        return None if self.latency_s is None else max(0.0, self.latency_s)


@dataclass
class FdbSummary:
    """FDB's per-run numbers over the silences of one trace (``None`` when there is no such sample)."""

    n_turn_ends: int = 0
    n_pauses: int = 0
    n_turn_overs: int = 0  # turn ends the front-end took (TOR = 1)
    n_pause_turn_overs: int = 0  # pauses the front-end took (TOR = 1): interruptions
    turn_taking_tor: float | None = None  # mean TOR over turn ends (higher is better)
    turn_taking_latency_s: float | None = None  # mean max(0, latency) over turn ends with TOR = 1
    turn_taking_latency_median_s: float | None = None
    pause_tor: float | None = None  # mean TOR over pauses (lower is better)

    def as_row(self, prefix: str = "fdb_") -> dict[str, float | int | None]:
        """Flat columns; counts as ``n_<prefix>…`` (``n_fdb_turn_ends``), rates as ``<prefix>…``."""
        row: dict[str, float | int | None] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            name = f"n_{prefix}{f.name[2:]}" if f.name.startswith("n_") else f"{prefix}{f.name}"
            row[name] = value
        return row


def fdb_turns(
    turns: Turns,
    words: Sequence[TimedWord],
    word_turn: np.ndarray,
    labels: Mapping[int, str | None],
) -> list[FdbTurn]:
    """One :class:`FdbTurn` per user turn: its label and FDB's TOR and latency of its response."""
    out: list[FdbTurn] = []
    for u in range(len(turns)):
        utt = int(turns.utterance[u])
        mine = [words[i] for i in np.flatnonzero(word_turn == u).tolist()]
        ft = FdbTurn(utterance=utt, end_s=float(turns.end[u]), label=labels.get(utt))
        if mine:
            ft.n_words = len(mine)
            ft.span_s = mine[-1].end - mine[0].start
            ft.took_turn = took_turn(mine)
            ft.latency_s = mine[0].start - ft.end_s
            ft.text = " ".join(w.text for w in mine)
        out.append(ft)
    return out


def summarise(turns: Sequence[FdbTurn]) -> FdbSummary:
    """FDB's means over the labelled silences (latency: turn-overs only, negatives counted as 0)."""
    ends = [t for t in turns if t.label == TURN_END]
    pauses = [t for t in turns if t.label == PAUSE]
    overs = [t for t in ends if t.took_turn]
    s = FdbSummary(n_turn_ends=len(ends), n_pauses=len(pauses), n_turn_overs=len(overs))
    s.n_pause_turn_overs = sum(t.took_turn for t in pauses)
    if ends:
        s.turn_taking_tor = len(overs) / len(ends)
    latencies = [t.latency_clipped_s for t in overs if t.latency_clipped_s is not None]
    if latencies:
        s.turn_taking_latency_s = float(np.mean(latencies))
        s.turn_taking_latency_median_s = float(np.median(latencies))
    if pauses:
        s.pause_tor = s.n_pause_turn_overs / len(pauses)
    return s


def frame_seconds(trace: TraceData) -> float:
    value = float(trace.metadata.get("kame_sim.frame_seconds", "0.08"))
    return value if value > 0 and not math.isnan(value) else 0.08


def fdb_from_words(
    trace: TraceData,
    words: Sequence[TimedWord],
    reference_replies: Mapping[int, str] | None = None,
    labels: Mapping[int, str | None] | None = None,
    burst_gap: float = DEFAULT_BURST_GAP,
) -> tuple[FdbSummary, list[FdbTurn]]:
    """FDB's metrics of a trace's user turns against any list of front-end words (e.g. recognised
    speech, sorted by start): words are grouped into bursts and given to turns by
    :func:`assign_words`. Labels come from ``labels`` or else from ``reference_replies``. Words
    that start after the trace's last time are dropped: the run never got there (a recording of
    the front-end is padded with silence to the length of the user's channel)."""
    cols = TraceColumns(trace.table)
    turns = user_turns(cols)
    t_all = cols.num_at(np.arange(cols.n_rows), "t_sim") if cols.n_rows else np.zeros(0)
    t_end = float(np.nanmax(t_all)) if len(t_all) else 0.0
    words = sorted((w for w in words if w.start <= t_end), key=lambda w: (w.start, w.end))
    if labels is None:
        labels = silence_labels(reference_replies or {}, turns.utterance.tolist())
    per_turn = fdb_turns(turns, words, assign_words(words, turns, burst_gap), labels)
    return summarise(per_turn), per_turn


def fdb_from_tokens(
    trace: TraceData,
    reference_replies: Mapping[int, str] | None = None,
    labels: Mapping[int, str | None] | None = None,
    burst_gap: float = DEFAULT_BURST_GAP,
) -> tuple[FdbSummary, list[FdbTurn]]:
    """FDB's metrics with the front-end's text tokens as its words (what :func:`compute_metrics`
    puts in the ``fdb_*`` columns)."""
    cols = TraceColumns(trace.table)
    turns = user_turns(cols)
    speech = frontend_speech(cols, turns, burst_gap)
    words, word_turn = token_words(cols, speech, frame_seconds(trace))
    if labels is None:
        labels = silence_labels(reference_replies or {}, turns.utterance.tolist())
    per_turn = fdb_turns(turns, words, word_turn, labels)
    return summarise(per_turn), per_turn
