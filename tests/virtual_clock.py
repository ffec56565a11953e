"""Deterministic clocks for the live-server tests: serve-llm in virtual time, a scripted client clock.

Why: asserting wall-clock durations (a TTFT window, a gap spread) fails on a loaded machine. With
these clocks the tests check the *schedule* the server keeps and the offsets the client computes,
exactly, and never how long anything really took (benchmarks/bench_serve_llm.py measures that).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from aiohttp import web


class VirtualClock:
    """A :class:`~kame_sim.llm.serve.ServeClock` whose sleeps end at once and advance ``now``.

    ``oversleep`` is added to every sleep, as a loaded machine would wake the server late.
    A sleep of at least ``hold_from`` seconds (a stall the test wants to outlast a client's timeout)
    advances nothing and lasts until :meth:`release`: the stall ends only after the test has seen
    the client give up, so no race between the client's timeout and the server's data is possible.
    """

    def __init__(self, hold_from: float = float("inf"), oversleep: float = 0.0) -> None:
        self.now = 0.0
        self.hold_from = hold_from
        self.oversleep = oversleep
        self.sleeps: list[float] = []
        self._released = threading.Event()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds >= self.hold_from:
            while not self._released.is_set():
                await asyncio.sleep(0.005)
            return
        self.now += seconds + self.oversleep
        await asyncio.sleep(0)

    def release(self) -> None:
        """End every held stall (call it before stopping the server, which waits for its handlers)."""
        self._released.set()


@contextmanager
def recorded_writes(clock: VirtualClock) -> Iterator[list[tuple[float, bytes]]]:
    """Every byte string serve-llm writes to a streamed response, with the virtual time it was sent."""
    log: list[tuple[float, bytes]] = []
    original = web.StreamResponse.write

    async def write(self: web.StreamResponse, data: bytes) -> None:
        log.append((clock.now, bytes(data)))
        await original(self, data)

    web.StreamResponse.write = write  # type: ignore[method-assign]
    try:
        yield log
    finally:
        web.StreamResponse.write = original  # type: ignore[method-assign]


class ScriptedClock:
    """A client clock that returns the given readings in order (then keeps counting by 1 s)."""

    def __init__(self, readings: Iterable[float]) -> None:
        readings = list(readings)
        tail = itertools.count(readings[-1] + 1.0 if readings else 0.0)
        self._values = itertools.chain(readings, (float(x) for x in tail))
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return next(self._values)
