"""User turns and the front-end's speaking bursts, vectorised.

The definitions are exactly those of :mod:`kame_sim.metrics.summary` (``response_onsets``), so the
run summary and the metrics can never disagree about a turn's onset (a test checks it):

* a **user turn** is one ``utterance`` index of the ``user_word`` rows: it starts at the earliest
  word start (``t_sim``) and ends at the latest word end (``t_ref``); turns are ordered by index;
* a **speaking frame** is a ``frontend_token`` row with a text piece (not padding);
* a **burst** is a run of speaking frames with no gap of ``burst_gap`` seconds or more inside;
* turn ``u``'s **window** is ``[start_u, start_{u+1})`` (the last turn's runs to the end of the
  trace), and the **response** to turn ``u`` is every burst that *starts* in its window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kame_sim.metrics.events import TraceColumns

DEFAULT_BURST_GAP = 1.0


@dataclass(frozen=True)
class Turns:
    """User turns, ordered by utterance index."""

    utterance: np.ndarray  # int64
    start: np.ndarray  # float64 (s)
    end: np.ndarray  # float64 (s)
    next_start: np.ndarray  # float64 (s); inf for the last turn

    def __len__(self) -> int:
        return len(self.utterance)


@dataclass(frozen=True)
class Speech:
    """The front-end's speaking frames (in frame order) and their bursts and turns."""

    rows: np.ndarray  # trace row positions of the speaking frontend_token rows
    frame: np.ndarray  # int64
    t: np.ndarray  # float64 (s)
    burst: np.ndarray  # int64, burst number of each speaking frame
    burst_start: np.ndarray  # float64, start time of each burst
    turn: np.ndarray  # int64, turn position (index into Turns) of each frame's burst; -1 = none


def user_turns(cols: TraceColumns) -> Turns:
    """Group ``user_word`` rows into turns by their utterance index."""
    utt = cols.num("user_word", "utterance")
    if len(utt) == 0:
        empty = np.zeros(0)
        return Turns(np.zeros(0, dtype=np.int64), empty, empty, empty)
    t_start = cols.num("user_word", "t_sim")
    t_end = cols.num("user_word", "t_ref")
    order = np.argsort(utt, kind="stable")
    utt_sorted = utt[order]
    first = np.flatnonzero(np.r_[True, utt_sorted[1:] != utt_sorted[:-1]])
    start = np.minimum.reduceat(t_start[order], first)
    end = np.fmax.reduceat(t_end[order], first)  # fmax: a missing word end (NaN) is ignored
    next_start = np.r_[start[1:], np.inf]
    return Turns(utt_sorted[first], start, end, next_start)


def frontend_speech(cols: TraceColumns, turns: Turns, burst_gap: float = DEFAULT_BURST_GAP) -> Speech:
    """Speaking frames, split into bursts, each burst assigned to the turn whose window holds its start."""
    fe_rows = cols.rows("frontend_token")
    rows = fe_rows[cols.valid_at(fe_rows, "text")]
    t = cols.num_at(rows, "t_sim")
    frame = cols.num_at(rows, "frame")
    new_burst = np.r_[True, np.diff(t) >= burst_gap] if len(t) else np.zeros(0, dtype=bool)
    burst = np.cumsum(new_burst) - 1
    burst_start = t[new_burst]
    if len(turns):
        # Turn windows [start_u, next_start_u): the turn whose start is the last one <= the burst start.
        pos = np.searchsorted(turns.start, burst_start, side="right") - 1
        inside = (pos >= 0) & (burst_start < turns.next_start[np.maximum(pos, 0)])
        burst_turn = np.where(inside, pos, -1)
    else:
        burst_turn = np.full(len(burst_start), -1, dtype=np.int64)
    turn = burst_turn[burst] if len(burst) else np.zeros(0, dtype=np.int64)
    return Speech(rows, frame, t, burst, burst_start, turn)


def onsets(turns: Turns, speech: Speech) -> np.ndarray:
    """Per turn: first burst start in its window minus the turn's end (s); NaN = no response."""
    out = np.full(len(turns), np.nan)
    if len(speech.burst_start) == 0 or len(turns) == 0:
        return out
    burst_turn = speech.turn[np.r_[0, np.flatnonzero(np.diff(speech.burst)) + 1]]
    has = burst_turn >= 0
    # The first burst of each turn: bursts are in time order, so the first occurrence.
    turn_ids, first = np.unique(burst_turn[has], return_index=True)
    out[turn_ids] = speech.burst_start[has][first] - turns.end[turn_ids]
    return out
