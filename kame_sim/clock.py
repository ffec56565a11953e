"""Simulated time as exact integer ticks (microseconds), seconds only at the edges.

Why: KAME's decisions compare time differences against thresholds (a 2.0 s rate window, a 0.5 s
restart interval). With float seconds accumulated step by step (0.2 + 0.2 + ...), a start that
should be exactly 2.0 s after another lands at 1.9999999999999 s or 2.0000000000001 s and falls
on the wrong side of the window. Every SimPy environment in kame-sim therefore counts integer
ticks; delays drawn in seconds are rounded to the nearest tick once, where they enter the core,
and the trace gets seconds (``ticks / TICKS_PER_SECOND``, correctly rounded) on the way out.
A tick of 1 µs is far below anything the simulator models (the shortest is a 1 ms drain budget).
"""

from __future__ import annotations

TICKS_PER_SECOND = 1_000_000
"""One tick is one microsecond of simulated time."""


def to_ticks(seconds: float) -> int:
    """Seconds -> the nearest whole tick (delays, settings and recorded times enter here)."""
    return round(seconds * TICKS_PER_SECOND)


def to_seconds(ticks: int) -> float:
    """Ticks -> seconds for the trace and for anything that reports to people."""
    return ticks / TICKS_PER_SECOND


def frame_end_ticks(frame: int, frame_samples: int, sample_rate: int) -> int:
    """When frame ``frame``'s audio is complete: ``(frame + 1) * frame_samples / sample_rate`` s.

    Computed from the frame index each time (never by adding a frame duration), so frame 10 000
    is as exact as frame 1; floor division keeps it an integer for any rate (80 000 ticks per
    frame at 24 kHz and 1920 samples).
    """
    return (frame + 1) * frame_samples * TICKS_PER_SECOND // sample_rate
