"""Benchmark of the real KAME front-end: kame-sim's frame loop against a bare ``LMGen.step`` loop.

    .venv/bin/python benchmarks/bench_kame.py [--device cpu|cuda] [--arch tiny|7b] [--batch 1,8,32]
                                              [--frames N] [--repeats R] [--threads T] [--context C]

One model, one set of user codes, three ways of stepping it, measured side by side in each repeat
(after an untimed warm-up of every variant, so imports, allocations and caches are settled):

* ``(a) bare``    moshi's ``LMGen.step`` in a plain Python loop: no oracle, no simulator. The floor.
* ``(b) oracle``  ``OracleLMGen.step`` with one oracle stream per replica (``ReplicaOracles``): each
                  replica appends one random token every frame and resets every 40 frames (phases
                  staggered), so the fed oracle tokens change every frame and differ across replicas.
* ``(c) session`` (B = 1 only) the full simulator: ``Session`` from ``kame_sim.sim`` with a
                  ``KameFrontend``, a ``TraceWriter`` on a temporary file, the bundled demo
                  conversation and the behavioural back-end (simulated STT, LLM streams, oracle queue).

The model is the tiny random-weight checkpoint (``--arch tiny``, written by ``write_tiny_checkpoint``
into a temporary folder) or the real 7B architecture with random weights (``--arch 7b``: moshi's
``_lm_kwargs`` plus ``oracle_emb``, built on the meta device and materialised on the GPU in bf16;
CUDA only). With ``--arch 7b`` the session's ``KameFrontend`` steps the 7B LM; the tiny checkpoint
still provides Mimi (to encode the user's audio) and the tokenizer (to encode oracle text), which is
fine for timing: their ids are valid 7B ids, and the 7B's sampled ids are named modulo 1024.

The user codes are the demo conversation's user channel encoded by the tiny checkpoint's Mimi
(random weights, so effectively random codes), identical in (a), (b) and (c); replica ``r`` of a
batch gets them rotated by ``37 r`` frames. Sampling is on with KAME's parameters in every variant.

Timing (``time.perf_counter``; on CUDA ``torch.cuda.synchronize`` after every step, which the
simulator's front-end also pays through its ``int(token)``, and around every timed region):

* ``step``    wall time of the step call alone: (a) ``LMGen.step``, (b) ``OracleLMGen.step``,
              (c) the trace's ``step_wall_s`` (``KameFrontend.step``: oracle embedding, step, token
              read-back, tokenizer piece).
* ``frame``   wall time of one whole iteration of the per-frame loop, from the end of one step to
              the end of the next: (b) adds the per-replica oracle bookkeeping, (c) everything the
              simulator does per frame (SimPy, oracle queue, trace rows and their periodic flushes,
              STT and LLM processes). For (c) it is the difference of consecutive ``frame`` rows'
              ``wall_s`` in the trace (each row is written right after its step).
* ``all-in``  the whole session divided by its frames: set-up and tear-down included (LM generator,
              KV caches, codes cache, trace open and final flush; on CUDA the graph capture).

Steady state excludes the first ``SKIP`` frames of every session (CUDA graphs are captured at the
second call; step 0 returns nothing). The simulator's overhead is
``(frame mean of (c) - frame mean of (a)) / frame mean of (a)``, computed per repeat (the variants
run back to back, so slow drift hits both alike) and reported as the median over repeats with its
range. The same ratio of per-frame *medians* is printed beside it: a few frames stalled by another
process move the mean but not the median, so when the two disagree the machine was not quiet.

This is a benchmark, not a test. It prints the per-frame times, the real-time factors
(80 ms / loop per frame; per replica for a batch) and a verdict against the issue's targets:
simulator overhead <= 5 % of a step (any device); and, for the 7B on a GPU, >= 15x real time at
B = 1 and >= 32 replicas at >= 4x real time each.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

# kame_sim.frontend.kame sets NO_TORCH_COMPILE / HF_HUB_OFFLINE before moshi is first imported
# (through these modules); moshi's LMGen is imported where it is used, after them.
from kame_sim.config import Scenario, load_scenario
from kame_sim.frontend.kame.frontend import KameFrontend, LoadedKame
from kame_sim.frontend.kame.lm import OracleLMGen, OracleLMModel, ReplicaOracles
from kame_sim.frontend.kame.mimi import UserCodesCache
from kame_sim.frontend.kame.tiny import write_tiny_checkpoint
from kame_sim.runner import build_session_parts, load_run_conversation, trace_metadata
from kame_sim.sim import Session
from kame_sim.trace import read_trace
from kame_sim.trace.writer import TraceWriter

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "tiny-kame.toml"  # the demo conversation, behavioural back-end
FRAME_MS = 80.0
SKIP = 3  # frames per session left out of the steady state (step 0 is empty, graphs captured at 1)
RESET_EVERY = 40  # (b): each replica's oracle is reset every 40 frames, phases staggered
ROTATE = 37  # replica r sees the user codes rotated by 37 r frames
TARGET_OVERHEAD = 0.05
TARGET_X_B1 = 15.0
TARGET_REPLICAS, TARGET_X_REPLICA = 32, 4.0
# issue 11 (lockstep replicas): >= 6x real time per replica at B = 32 on an H100-class GPU
TARGET_LOCKSTEP_B, TARGET_LOCKSTEP_X = 32, 6.0


# -- helpers -----------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Run:
    """One timed session of one variant (seconds).

    ``frames[i]`` is the wall time from the end of step ``SKIP + i - 1`` to the end of step
    ``SKIP + i``: one whole iteration of the per-frame loop, step included.
    """

    steps: np.ndarray  # [n] wall time of each step call
    frames: np.ndarray  # [n - SKIP] per-frame loop intervals of the steady state
    all_in_s: float  # the whole session: set-up, every frame, tear-down

    def loop(self) -> float:
        return float(self.frames.mean())

    def loop_p50(self) -> float:
        return float(np.median(self.frames))

    def all_in(self) -> float:
        return self.all_in_s / len(self.steps)


def steady_intervals(ends: np.ndarray) -> np.ndarray:
    """Per-frame loop intervals of the steady state from the end time of every step."""
    return np.diff(ends[SKIP - 1 :])


@dataclass
class Series:
    """The repeats of one variant at one batch size."""

    label: str
    batch: int
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    peak_gib: float | None = None

    def steady_steps(self) -> np.ndarray:
        return np.concatenate([r.steps[SKIP:] for r in self.runs])

    def steady_frames(self) -> np.ndarray:
        return np.concatenate([r.frames for r in self.runs])

    def loop(self) -> float:
        return statistics.median(r.loop() for r in self.runs)

    def all_in(self) -> float:
        return statistics.median(r.all_in() for r in self.runs)


class WideTokenizer:
    """Names the 7B's ids (text_card 32000) with the tiny tokenizer's pieces, modulo its size.

    Only ``piece`` is used by ``KameFrontend.step``; the text is meaningless (random weights) and
    only its cost matters here.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.vocab_size = inner.vocab_size

    def piece(self, token_id: int) -> str:
        return self.inner.piece(token_id % self.vocab_size)


def build_random_7b(device: torch.device, dtype: torch.dtype, context: int | None) -> OracleLMModel:
    """The real 7B architecture plus ``oracle_emb`` with random weights, directly on ``device``.

    Built on the meta device (no memory, no init), then ``to_empty`` on the target device and
    filled in place: RMS-norm gains 1, every other weight N(0, 0.02) from a seeded generator.
    """
    from moshi.models.loaders import _lm_kwargs

    kwargs = dict(_lm_kwargs)
    if context is not None:
        kwargs["context"] = context
    with torch.device("meta"):
        lm = OracleLMModel(**kwargs, device="meta", dtype=dtype)
    lm = lm.to_empty(device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    with torch.no_grad():
        for name, param in lm.named_parameters():
            if name.endswith(".alpha"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=gen)
    leftover = [n for n, t in [*lm.named_parameters(), *lm.named_buffers()] if t.device != device]
    if leftover:
        raise RuntimeError(f"not materialised on {device}: {leftover[:5]}")
    return lm.eval()


# -- the three variants ----------------------------------------------------------------------------


def run_bare(lm: OracleLMModel, codes: torch.Tensor, gen_kwargs: dict[str, Any]) -> Run:
    """(a) moshi's LMGen.step on the user codes, no oracle at all."""
    from moshi.models.lm import LMGen

    device, perf = lm.device, time.perf_counter
    B, _, n = codes.shape
    steps, ends = np.empty(n), np.empty(n)
    sync(device)
    t0 = perf()
    gen = LMGen(lm, **gen_kwargs)
    with gen.streaming(B):
        for k in range(n):
            ts = perf()
            gen.step(codes[:, :, k : k + 1])
            sync(device)
            ends[k] = perf()
            steps[k] = ends[k] - ts
    sync(device)
    return Run(steps, steady_intervals(ends), perf() - t0)


def run_oracle(
    lm: OracleLMModel, codes: torch.Tensor, gen_kwargs: dict[str, Any], ids: list[list[int]]
) -> Run:
    """(b) OracleLMGen.step with per-replica oracles whose fed tokens change every frame."""
    device, perf = lm.device, time.perf_counter
    B, _, n = codes.shape
    steps, ends = np.empty(n), np.empty(n)
    sync(device)
    t0 = perf()
    gen = OracleLMGen(lm, batch_size=B, **gen_kwargs)
    oracles = ReplicaOracles(B, lm.text_initial_token_id, lm.text_padding_token_id)
    with gen.streaming():
        for k in range(n):
            row = ids[k]
            for r in range(B):
                if (k + r * 7) % RESET_EVERY == 0:
                    oracles.reset(k, r)
                oracles.append(row[r : r + 1], k, r)
            tokens = oracles.tokens_at(k)
            ts = perf()
            gen.step(codes[:, :, k : k + 1], tokens)
            sync(device)
            ends[k] = perf()
            steps[k] = ends[k] - ts
    sync(device)
    return Run(steps, steady_intervals(ends), perf() - t0)


@dataclass
class SessionSetup:
    """Everything the session variant needs, prepared once."""

    scenario: Scenario
    conversation: Any
    loaded: LoadedKame
    trace_path: Path


def run_session(setup: SessionSetup) -> Run:
    """(c) the whole simulator for one session (B = 1) with the shared model.

    Per-frame figures come from the trace itself: ``step_wall_s`` of every ``frame`` row, and the
    difference of consecutive ``frame`` rows' ``wall_s`` (each is written right after its step).
    """
    sc, conv, device = setup.scenario, setup.conversation, setup.loaded.device
    # Fresh per-session draws (STT, delays, content) as a real run has; untimed. The front-end it
    # built is replaced by one on the shared, already loaded model.
    parts = build_session_parts(sc, conv)
    seed = parts.frontend.sampling_seed  # type: ignore[attr-defined]
    frontend = KameFrontend(sc.frontend, setup.loaded, seed)  # type: ignore[arg-type]
    parts = dataclasses.replace(parts, frontend=frontend)
    free_memory(device)
    perf = time.perf_counter
    sync(device)
    t0 = perf()
    writer = TraceWriter(setup.trace_path, trace_metadata(sc, conv, parts.tokenizer))
    session = Session(parts, writer)
    session.run()
    writer.close()
    sync(device)
    all_in = perf() - t0
    table = read_trace(setup.trace_path).table
    frames = table.filter(pc.equal(table["event"], "frame"))
    order = np.argsort(frames["frame"].to_numpy())
    steps = frames["step_wall_s"].to_numpy()[order]
    ends = frames["wall_s"].to_numpy()[order]
    if len(steps) != session.n_frames:
        raise RuntimeError(f"trace holds {len(steps)} frame rows for {session.n_frames} frames")
    return Run(steps, steady_intervals(ends), all_in)


# -- preparation -----------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[SessionSetup, OracleLMModel, torch.Tensor, int]:
    """Tiny checkpoint, scenario, model(s) and the user codes; returns (session setup, LM, codes, N)."""
    device = torch.device(args.device)
    t0 = time.perf_counter()
    ckpt = write_tiny_checkpoint(tmp / "tiny", seed=0)
    frame_s = FRAME_MS / 1000
    overrides = {
        "frontend.checkpoint": str(ckpt.root),
        "frontend.codes_cache": str(tmp / "codes"),
        "frontend.device": args.device,
        "run.max_seconds": (args.frames + 0.5) * frame_s,
    }
    scenario = load_scenario(SCENARIO, overrides)
    conversation = load_run_conversation(scenario)
    loaded = build_session_parts(scenario, conversation).frontend.loaded  # type: ignore[attr-defined]
    n_conv = conversation.n_frames(scenario.conversation.frame_samples)
    n = min(args.frames, n_conv)
    if n < args.frames:
        print(f"  note: the demo conversation has {n_conv} frames; using --frames {n}")
        scenario = load_scenario(SCENARIO, {**overrides, "run.max_seconds": (n + 0.5) * frame_s})
    channel = conversation.channel_of(scenario.conversation.user_speaker)
    codes_np = UserCodesCache(scenario.frontend.codes_cache).get_or_encode(  # type: ignore[union-attr]
        conversation, channel, loaded.mimi, loaded.mimi_fingerprint, loaded.device
    )
    codes = torch.from_numpy(codes_np.astype(np.int64))[:, :n]
    print(
        f"  tiny checkpoint, demo conversation ({n_conv} frames) and user codes "
        f"{tuple(codes_np.shape)} ready in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    lm = loaded.lm
    if args.arch == "7b":
        t0 = time.perf_counter()
        lm = build_random_7b(device, torch.bfloat16, args.context)
        sync(device)
        n_params = sum(p.numel() for p in lm.parameters())
        print(
            f"  7B LM (random, bf16, context {lm.context}): {n_params / 1e9:.3f} G parameters on {device} "
            f"in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        loaded = dataclasses.replace(
            loaded, lm=lm, tokenizer=WideTokenizer(loaded.tokenizer), dtype=torch.bfloat16
        )  # type: ignore[arg-type]
    setup = SessionSetup(scenario, conversation, loaded, tmp / "trace.arrows")
    return setup, lm, codes.to(device), n


def batch_codes(codes: torch.Tensor, batch: int) -> torch.Tensor:
    """[B, K, N]: replica r gets the user codes rotated by ROTATE * r frames."""
    return torch.stack([codes.roll(-ROTATE * r, dims=1) for r in range(batch)]).contiguous()


def oracle_ids(n: int, batch: int, high: int, seed: int = 0) -> list[list[int]]:
    """Random oracle text ids per frame and replica (numpy RNG: torch's global RNG is moshi's)."""
    return np.random.default_rng(seed).integers(4, high, size=(n, batch)).tolist()


# -- benchmark -------------------------------------------------------------------------------------


def attempt(series: Series, device: torch.device, fn: Callable[[], Run]) -> None:
    """Run one timed session of a variant; on CUDA an error (out of memory) is recorded, not fatal."""
    if series.error is not None:
        return
    free_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        series.runs.append(fn())
    except RuntimeError as exc:  # torch.OutOfMemoryError included
        if device.type != "cuda":
            raise
        # On a GPU a batch that does not fit (or a failed graph capture) should not cost the other
        # rows: the error is printed in full and the row reports it.
        traceback.print_exc()
        series.error = f"{type(exc).__name__}: " + str(exc).strip().split("\n")[0][:100]
    finally:
        free_memory(device)
    if device.type == "cuda" and series.error is None:
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        series.peak_gib = max(series.peak_gib or 0.0, peak)


def bench(args: argparse.Namespace, tmp: Path) -> tuple[dict[int, list[Series]], int]:
    device = torch.device(args.device)
    setup, lm, codes, n = prepare(args, tmp)
    gen_kwargs = {
        k: getattr(setup.scenario.frontend, k) for k in ("temp", "temp_text", "top_k", "top_k_text")
    }
    gen_kwargs["use_sampling"] = setup.scenario.frontend.use_sampling  # type: ignore[union-attr]
    high = min(lm.text_card, setup.loaded.tokenizer.vocab_size)
    inputs = {b: (batch_codes(codes, b), oracle_ids(n, b, high)) for b in args.batch}
    results: dict[int, list[Series]] = {}
    for b in args.batch:
        results[b] = [Series("(a) bare LMGen.step", b), Series("(b) OracleLMGen+oracles", b)]
        if b == 1:
            results[b].append(Series("(c) kame-sim Session", b))

    def variants(b: int, frames: int | None = None) -> list[tuple[Series, Callable[[], Run]]]:
        c, ids = inputs[b]
        if frames is not None:
            c, ids = c[:, :, :frames], ids[:frames]
        out: list[tuple[Series, Callable[[], Run]]] = [
            (results[b][0], lambda: run_bare(lm, c, gen_kwargs)),
            (results[b][1], lambda: run_oracle(lm, c, gen_kwargs, ids)),
        ]
        if b == 1:
            out.append((results[b][2], lambda: run_session(setup)))
        return out

    t0 = time.perf_counter()
    for b in args.batch:  # warm-up, untimed: short runs of (a) and (b), one whole session for (c)
        for series, fn in variants(b, frames=min(n, 30)):
            attempt(series, device, fn)
            series.runs.clear()
    print(f"  warm-up done in {time.perf_counter() - t0:.1f} s", flush=True)
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        for b in args.batch:
            todo = variants(b)
            if rep % 2:  # alternate the order so that slow drift does not favour one variant
                todo.reverse()
            for series, fn in todo:
                attempt(series, device, fn)
        line = ", ".join(
            f"B={b} " + "/".join(f"{s.runs[-1].loop() * 1e3:.2f}" for s in results[b] if s.runs)
            for b in args.batch
        )
        print(
            f"  repeat {rep + 1}/{args.repeats} ({time.perf_counter() - t0:.1f} s): frame ms (mean) "
            f"(a)/(b)[/(c)] {line}",
            flush=True,
        )
    return results, n


# -- report ----------------------------------------------------------------------------------------


def overheads(base: Series, other: Series, stat: str = "mean") -> list[float]:
    """Per-repeat paired overhead of ``other``'s per-frame loop over ``base``'s.

    The two ran back to back in the same repeat, so slow drift of the machine hits both alike.
    ``stat`` "mean" compares loop time per frame (throughput); "p50" compares per-frame medians,
    which a few frames stalled by another process cannot move.
    """
    pick = (lambda r: r.loop()) if stat == "mean" else (lambda r: r.loop_p50())
    return [pick(o) / pick(a) - 1.0 for a, o in zip(base.runs, other.runs, strict=False)]


def fmt_range(values: list[float]) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med * 100:+6.2f} %"
    return f"{med * 100:+6.2f} % (range {min(values) * 100:+.2f} .. {max(values) * 100:+.2f} %)"


def complete_b1(results: dict[int, list[Series]]) -> bool:
    return 1 in results and len(results[1]) == 3 and all(s.runs for s in results[1])


def print_table(results: dict[int, list[Series]], args: argparse.Namespace, n: int) -> None:
    gpu = args.device == "cuda"
    hdr = (
        f"{'variant':<24} {'B':>3} | {'step ms':>7} {'p50':>7} | {'frame ms':>8} {'p50':>7} {'p95':>7} | "
        f"{'x real':>6} | {'vs (a)':>6} {'p50':>6} | {'all-in ms':>9}" + (f" {'peak GiB':>8}" if gpu else "")
    )
    print()
    print(
        f"steady state: frames {SKIP}..{n - 1} of every session, {args.repeats} repeats.\n"
        "  step     the step call alone ((c): the trace's step_wall_s)\n"
        "  frame    one whole iteration of the per-frame loop: mean = median over repeats of each repeat's\n"
        "           mean; p50 and p95 over all steady frames of all repeats\n"
        "  x real   80 ms / frame mean (per replica: each step advances every replica by one frame)\n"
        "  vs (a)   frame mean (and p50) relative to (a) at the same B\n"
        "  all-in   the whole session per frame: set-up (generator, KV caches, codes, trace) and tear-down"
    )
    print(hdr)
    print("-" * len(hdr))
    for b, series in results.items():
        base = series[0] if series[0].runs else None
        for s in series:
            if s.error is not None or not s.runs:
                print(f"{s.label:<24} {b:>3} | {s.error or 'no run'}")
                continue
            steps, frames = s.steady_steps() * 1e3, s.steady_frames() * 1e3
            if base is not None:
                p50_ratio = np.median(frames) / np.median(base.steady_frames() * 1e3)
                ratio = f"{s.loop() / base.loop():>6.3f} {p50_ratio:>6.3f}"
            else:
                ratio = f"{'-':>6} {'-':>6}"
            peak = f" {s.peak_gib:>8.1f}" if gpu and s.peak_gib is not None else ""
            print(
                f"{s.label:<24} {b:>3} | {steps.mean():>7.3f} {np.median(steps):>7.3f} | "
                f"{s.loop() * 1e3:>8.3f} {np.median(frames):>7.3f} {np.percentile(frames, 95):>7.3f} | "
                f"{FRAME_MS / (s.loop() * 1e3):>6.1f} | {ratio} | {s.all_in() * 1e3:>9.3f}{peak}"
            )
    print("-" * len(hdr))


def print_report(results: dict[int, list[Series]], args: argparse.Namespace, n: int) -> bool:
    """The table, the ratios and the verdict; returns whether the overhead target is met."""
    print_table(results, args, n)
    print(
        "\nper-repeat paired ratios, median (range) over repeats; mean = frame time, p50 = per-frame median:"
    )
    for b, series in results.items():
        a, o = series[0], series[1]
        if a.runs and o.runs:
            print(
                f"  B={b:<3} (b) vs (a), oracle input + per-replica oracles: "
                f"mean {fmt_range(overheads(a, o))}"
                f"; p50 {fmt_range(overheads(a, o, 'p50'))}"
            )
    over = over_p50 = None
    if complete_b1(results):
        a, o, c = results[1]
        print(
            f"  B=1   (c) vs (b), the simulator around the oracle LM:    mean {fmt_range(overheads(o, c))}"
            f"; p50 {fmt_range(overheads(o, c, 'p50'))}"
        )
        print(
            f"  B=1   (c) vs (a), the simulator's overhead on a bare step: mean {fmt_range(overheads(a, c))}"
            f"; p50 {fmt_range(overheads(a, c, 'p50'))}"
        )
        over = statistics.median(overheads(a, c))
        over_p50 = statistics.median(overheads(a, c, "p50"))
        all_in = c.all_in() / a.all_in() - 1.0
        print(f"  B=1   all-in (c) vs all-in (a), set-up and final flush included: {all_in * 100:+.2f} %")
        print(
            f"  absolute: the simulator adds {(c.loop() - a.loop()) * 1e6:.0f} us per frame (mean; p50 "
            f"{(np.median(c.steady_frames()) - np.median(a.steady_frames())) * 1e6:.0f} us) "
            f"to a bare {a.loop() * 1e3:.3f} ms frame"
        )
        if abs(over - over_p50) > 0.02:
            print(
                "  warning: mean and p50 overheads differ by more than 2 points: other processes stalled "
                "some frames.\n  Rerun on an idle machine (see the load averages) or with --threads 1."
            )
    print()
    print("verdict:")
    meets = over is not None and over <= TARGET_OVERHEAD
    if over is not None:
        print(
            f"  simulator overhead {over * 100:+.2f} % of a bare step (mean; p50 {over_p50 * 100:+.2f} %): "
            f"{'MEETS' if meets else 'MISSES'} the <= {TARGET_OVERHEAD * 100:.0f} % target"
            + (
                " (unreliable: see the warning above)"
                if over_p50 is not None and abs(over - over_p50) > 0.02
                else ""
            )
        )
    else:
        print("  simulator overhead: not measured (needs batch size 1 in --batch)")
    note = "" if args.arch == "7b" and args.device == "cuda" else " [informational: set for the 7B on a GPU]"
    if 1 in results and results[1][1].runs:
        x_b = FRAME_MS / (results[1][1].loop() * 1e3)
        x_c = FRAME_MS / (results[1][2].loop() * 1e3) if complete_b1(results) else None
        word = "MEETS" if min(x_b, x_c or x_b) >= TARGET_X_B1 else "MISSES"
        extra = f", full simulator (c) {x_c:.1f}x" if x_c is not None else ""
        print(
            f"  B=1: oracle LM (b) at {x_b:.1f}x real time{extra}: "
            f"{word} the >= {TARGET_X_B1:.0f}x target{note}"
        )
    ok = [
        b
        for b, series in results.items()
        if series[1].runs and FRAME_MS / (series[1].loop() * 1e3) >= TARGET_X_REPLICA
    ]
    best = max(ok) if ok else None
    word = "MEETS" if best is not None and best >= TARGET_REPLICAS else "MISSES"
    tried = ",".join(str(b) for b in results)
    print(
        f"  batched: largest B of {tried} with (b) >= {TARGET_X_REPLICA:.0f}x real time per replica: "
        f"{best if best is not None else 'none'}: {word} the >= {TARGET_REPLICAS} replicas target{note}"
    )
    lockstep = results.get(TARGET_LOCKSTEP_B)
    if lockstep is not None and lockstep[1].runs:
        x_lock = FRAME_MS / (lockstep[1].loop() * 1e3)
        word = "MEETS" if x_lock >= TARGET_LOCKSTEP_X else "MISSES"
        print(
            f"  lockstep: B={TARGET_LOCKSTEP_B} at {x_lock:.1f}x real time per replica (b): {word} the "
            f">= {TARGET_LOCKSTEP_X:.0f}x per replica target{note}"
        )
    return meets


def machine_line(args: argparse.Namespace) -> str:
    import moshi
    import simpy

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    parts = [
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"moshi {moshi.__version__}",
        f"simpy {simpy.__version__}",
        f"{os.cpu_count()} CPUs ({cpu})",
        f"torch threads {torch.get_num_threads()}",
    ]
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        parts.append(f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB)")
        parts.append(f"NO_CUDA_GRAPH={os.environ.get('NO_CUDA_GRAPH', '')!r}")
    parts.append(f"NO_TORCH_COMPILE={os.environ.get('NO_TORCH_COMPILE', '')!r}")
    return ", ".join(parts)


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}"


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch wants comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--batch wants positive integers, got {text!r}")
    return sorted(set(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    parser.add_argument("--arch", choices=("tiny", "7b"), default="tiny", help="default tiny")
    parser.add_argument("--batch", type=parse_batches, default=[1, 8, 32], help="default 1,8,32")
    parser.add_argument("--frames", type=int, default=400, help="frames per session (default 400, 32 s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--context", type=int, default=None, help="7B KV-cache frames (default moshi's 3000)")
    args = parser.parse_args(argv)
    if args.frames < SKIP + 10:
        parser.error(f"--frames must be at least {SKIP + 10}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.arch == "7b" and args.device != "cuda":
        sys.exit(
            "bench_kame: --arch 7b needs --device cuda. The 7B LM holds 7.8 G parameters (14.6 GiB in bf16)\n"
            "and every step reads all of them: seconds per frame on a CPU, which says nothing about the GPU\n"
            "target. Use --arch tiny on CPU, or --device cuda on a machine with a GPU."
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "bench_kame: --device cuda but torch sees no CUDA device on this machine (use --device cpu)."
        )
    if args.context is not None and args.arch != "7b":
        parser.error("--context applies to --arch 7b only (the tiny checkpoint fixes its own)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"kame-sim front-end benchmark: {machine_line(args)}")
    print(
        f"device {args.device}, arch {args.arch}, batch {','.join(map(str, args.batch))}, "
        f"{args.frames} frames, {args.repeats} repeats + 1 warm-up; {load_line()} at start",
        flush=True,
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kame-bench-") as tmp, torch.no_grad():
        results, n = bench(args, Path(tmp))
    print_report(results, args, n)
    print(f"\n[benchmark took {time.perf_counter() - t0:.1f} s; {load_line()} at end]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
