"""Stream the demo's user channel (first 24 s) through the real tiny.en; print the events as JSON.

Test helper, run as a subprocess by test_whisper_stt.py: CTranslate2 picks its CPU back-end once,
when it loads (``CT2_USE_MKL=0``: oneDNN, the default on AMD; ``=1``: Intel MKL, the default on
Intel), so each back-end needs a process of its own. Usage: ``python whisper_demo.py MODEL_DIR``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from kame_sim.conversation import load_conversation
from kame_sim.stt.whisper import SAMPLE_RATE, FasterWhisperDecoder, stream_events, user_audio_16k

REPO = Path(__file__).resolve().parents[1]
DEMO_SECONDS = 24.0  # the first 24 s keep the test short


def main(model_dir: str) -> None:
    conversation = load_conversation(REPO / "scenarios" / "data" / "demo")
    decoder = FasterWhisperDecoder(Path(model_dir), cpu_threads=2)
    audio = user_audio_16k(conversation, "A")[: int(DEMO_SECONDS * SAMPLE_RATE)]
    # compute_scale = 0: decode boundaries do not depend on this machine's speed (deterministic text)
    result = stream_events(audio, decoder, chunk_seconds=1.0, compute_scale=0.0)
    json.dump([dataclasses.asdict(e) for e in result.events], sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
