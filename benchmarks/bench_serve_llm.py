"""Benchmark of serve-llm on loopback: streams per second, and how exactly it keeps its delays.

    .venv/bin/python benchmarks/bench_serve_llm.py [--clients 1,8,32,64] [--seconds 4]
                                                   [--accuracy-clients 1,16,64] [--streams 40]

The server runs in its own process (``python -m kame_sim.cli serve-llm --port 0``), as it does
when a KAME server is pointed at it; the clients run in this process on one asyncio loop.

1. **Throughput.** Zero delays, a 30-word reply (30 content chunks + role, stop and [DONE] events).
   N concurrent clients each loop "POST, read the whole SSE stream" for ``--seconds``; the table
   gives completed streams and SSE events per second. Two clients: raw aiohttp (what the server can
   do) and the ``openai`` AsyncOpenAI client KAME uses (what a real client can consume).
2. **Timing accuracy.** TTFT 0.2 s and 20 ms gaps (constants), a 10-word reply. N concurrent
   clients run ``--streams`` streams in all; the error is measured - configured, for the TTFT
   (first content delta) and for each gap, p50 and p99 in ms. The last row measures through
   kame-sim's own :class:`OpenAiLlm` (the path whose measured offsets become simulated delays).

This is a benchmark, not a test: it prints what it measured and fails nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORDS30 = " ".join(f"w{i}" for i in range(30))
WORDS10 = " ".join(f"w{i}" for i in range(10))
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "user: hello there "}]


@contextmanager
def server(*args: str) -> Iterator[str]:
    """serve-llm in a subprocess on a free loopback port; yields its base URL."""
    cmd = [sys.executable, "-m", "kame_sim.cli", "serve-llm", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("serve-llm: "):
            raise RuntimeError(f"serve-llm did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(10)


async def _raw_stream(session: aiohttp.ClientSession, url: str) -> tuple[float | None, list[float], int]:
    """One stream read as raw SSE lines: (first content time, content times, events)."""
    body = {"model": "gpt-4.1", "messages": MESSAGES, "stream": True}
    t0 = time.perf_counter()
    times: list[float] = []
    events = 0
    async with session.post(url, json=body) as response:
        async for raw in response.content:
            if raw.startswith(b"data: "):
                events += 1
                if b'"content":"' in raw and b'"content":""' not in raw:
                    times.append(time.perf_counter() - t0)
    return (times[0] if times else None), times, events


async def throughput_raw(base_url: str, clients: int, seconds: float) -> tuple[int, int]:
    url = f"{base_url}/chat/completions"
    connector = aiohttp.TCPConnector(limit=0)
    done = events = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done, events
            while time.perf_counter() < deadline:
                _, _, n = await _raw_stream(session, url)
                done += 1
                events += n

        await asyncio.gather(*(worker() for _ in range(clients)))
    return done, events


async def throughput_openai(base_url: str, clients: int, seconds: float) -> tuple[int, int]:
    import httpx2
    from openai import AsyncOpenAI

    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
    client = AsyncOpenAI(
        base_url=base_url, api_key="dummy", max_retries=0, http_client=httpx2.AsyncClient(limits=limits)
    )
    done = events = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, events
        while time.perf_counter() < deadline:
            stream = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, stream=True)
            async for _ in stream:
                events += 1
            done += 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    await client.close()
    return done, events


async def accuracy_raw(base_url: str, clients: int, streams: int) -> tuple[list[float], list[float]]:
    url = f"{base_url}/chat/completions"
    ttfts: list[float] = []
    gaps: list[float] = []
    remaining = streams
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(_raw_stream(session, url) for _ in range(clients)))  # warm connections

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                first, times, _ = await _raw_stream(session, url)
                if first is not None:
                    ttfts.append(first)
                    gaps.extend(b - a for a, b in itertools.pairwise(times))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return ttfts, gaps


def accuracy_openai_llm(base_url: str, streams: int) -> tuple[list[float], list[float]]:
    from kame_sim.llm.content import LlmRequest
    from kame_sim.llm.openai_backend import OpenAiLlm

    llm = OpenAiLlm(api_key="dummy", base_url=base_url)
    request = LlmRequest(0.0, "user: hello there ", "hello there", 1)
    llm.plan(request)  # warm-up
    ttfts: list[float] = []
    gaps: list[float] = []
    for _ in range(streams):
        plan = llm.plan(request)
        times = [c.at for c in plan.chunks if c.text.strip()]
        ttfts.append(times[0])
        gaps.extend(b - a for a, b in itertools.pairwise(times))
    llm.close()
    return ttfts, gaps


def pct_ms(values: list[float], target: float, q: float) -> float:
    return float(np.percentile(np.asarray(values) - target, q)) * 1000


def _errors(ttfts: list[float], gaps: list[float]) -> str:
    ttft = f"{pct_ms(ttfts, 0.2, 50):>10.1f}ms {pct_ms(ttfts, 0.2, 99):>5.1f}ms"
    gap = f"{pct_ms(gaps, 0.02, 50):>9.1f}ms {pct_ms(gaps, 0.02, 99):>5.1f}ms"
    return f"{ttft} | {gap} | {len(ttfts)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1,8,32,64")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--accuracy-clients", default="1,16,64")
    p.add_argument("--streams", type=int, default=40)
    args = p.parse_args()
    started = time.perf_counter()
    import aiohttp as _a
    import openai as _o

    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, aiohttp {_a.__version__}, openai {_o.__version__}"
    )

    print("\n1. throughput: zero delays, 30 content chunks per stream (33 SSE events)")
    print(f"{'clients':>7} | {'raw aiohttp':>24} | {'openai AsyncOpenAI':>24}")
    print(f"{'':>7} | {'streams/s':>11} {'events/s':>12} | {'streams/s':>11} {'events/s':>12}")
    with server("--content", f"fixed:{WORDS30}", "--ttft", "0", "--inter-chunk", "0") as url:
        for n in (int(x) for x in args.clients.split(",")):
            raw_done, raw_events = asyncio.run(throughput_raw(url, n, args.seconds))
            oa_done, oa_events = asyncio.run(throughput_openai(url, n, args.seconds))
            s = args.seconds
            raw = f"{raw_done / s:>11.0f} {raw_events / s:>12.0f}"
            print(f"{n:>7} | {raw} | {oa_done / s:>11.0f} {oa_events / s:>12.0f}")

    print(
        "\n2. timing accuracy: configured TTFT 200 ms, gaps 20 ms, 10 chunks; error = measured - configured"
    )
    print(f"{'client':>22} {'N':>3} | {'TTFT err p50':>12} {'p99':>7} | {'gap err p50':>11} {'p99':>7} | n")
    with server("--content", f"fixed:{WORDS10}", "--ttft", "0.2", "--inter-chunk", "0.02") as url:
        for n in (int(x) for x in args.accuracy_clients.split(",")):
            ttfts, gaps = asyncio.run(accuracy_raw(url, n, max(args.streams, n)))
            print(f"{'raw aiohttp':>22} {n:>3} | {_errors(ttfts, gaps)}")
        ttfts, gaps = accuracy_openai_llm(url, args.streams)
        mean = f"   (mean TTFT {statistics.mean(ttfts) * 1000:.1f} ms)"
        print(f"{'kame-sim OpenAiLlm':>22} {1:>3} | {_errors(ttfts, gaps)}{mean}")
    print(f"\n[benchmark took {time.perf_counter() - started:.1f} s]")


if __name__ == "__main__":
    main()
