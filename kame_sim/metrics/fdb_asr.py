"""FDB's way: recognise the front-end's audio and judge turn-taking on the recognised words.

Full-Duplex-Bench never reads a model's text: it transcribes the model's output audio with
time-aligned ASR (``get_transcript/asr.py``; parakeet-tdt-0.6b-v2 today, CrisperWhisper before)
and applies its TOR and latency rules to those words. kame-sim's default ``fdb_*`` columns use the
front-end's text tokens instead (no audio needed, and the behavioural front-end has none). With the
real front-end, ``kame-sim run --audio-out WAV`` writes what it said (right channel, on the
conversation's clock: the writer delays it by the LM's one-frame output lag); this module
recognises that channel with faster-whisper (word timestamps, voice-activity detection; by
default the tiny.en model kame-sim's whisper STT uses) and
:func:`kame_sim.metrics.fdb.fdb_from_words` computes the same metrics from the recognised words.

The decoder is injected (:class:`kame_sim.stt.whisper.Decoder`), so the plumbing is tested with a
random-weight model or a stub.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kame_sim.errors import InputError
from kame_sim.metrics.fdb import FdbSummary, FdbTurn, TimedWord, fdb_from_words
from kame_sim.stt.whisper import SAMPLE_RATE, DecodedWord, Decoder, DecodeResult
from kame_sim.trace.reader import TraceData

FRONTEND_CHANNEL = 1  # write_conversation_wav: the user on the left, the front-end on the right
#: Per 30 s window of a long recording (Whisper's context is 448 tokens, prompt included).
MAX_NEW_TOKENS = 224
_HAS_WORD_CHAR = re.compile(r"\w")


def frontend_audio_16k(wav: Path, channel: int = FRONTEND_CHANNEL) -> np.ndarray:
    """One channel of a wav (the front-end's, by default) as 16 kHz mono float32."""
    import soundfile as sf
    import soxr

    wav = Path(wav)
    try:
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as exc:  # soundfile raises LibsndfileError (a RuntimeError)
        raise InputError(wav, "--audio", f"cannot read the audio ({exc})") from None
    if audio.shape[1] <= channel:
        raise InputError(
            wav, "--audio", f"has {audio.shape[1]} channel(s); the front-end is channel {channel}"
        )
    mono = np.ascontiguousarray(audio[:, channel])
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
    return mono


def default_decoder(model_dir: Path | None = None) -> Decoder:
    """faster-whisper on CPU from ``model_dir`` (default: the tiny.en the whisper STT uses), with
    voice-activity detection (:class:`RecordingDecoder`)."""
    from kame_sim.stt.whisper import default_model_dir

    return RecordingDecoder(Path(model_dir) if model_dir is not None else default_model_dir())


class RecordingDecoder:
    """Whole-recording transcription: like the streaming STT's decoder (CPU, English, greedy, word
    timestamps, repetition loops dropped) plus faster-whisper's Silero VAD filter.

    Why the VAD: a front-end's channel is mostly silence, and Whisper decodes long silence into
    loops ("the the the …" over the demo's first 25 s with tiny.en); the filter decodes only the
    speech and maps the word times back to the recording's clock.
    """

    def __init__(self, model_dir: Path, compute_type: str = "int8", cpu_threads: int = 2) -> None:
        from kame_sim.stt.whisper import FasterWhisperDecoder

        self._inner = FasterWhisperDecoder(model_dir, compute_type, cpu_threads)

    def decode(self, audio: np.ndarray, prompt: str) -> DecodeResult:
        from kame_sim.stt.whisper import MAX_COMPRESSION_RATIO

        t0 = time.perf_counter()
        words: list[DecodedWord] = []
        if len(audio):
            segments, _ = self._inner.model.transcribe(
                audio,
                language="en",
                beam_size=1,
                temperature=0.0,
                word_timestamps=True,
                condition_on_previous_text=False,
                initial_prompt=prompt or None,
                vad_filter=True,
                max_new_tokens=MAX_NEW_TOKENS,
            )
            for segment in segments:
                if segment.compression_ratio > MAX_COMPRESSION_RATIO:
                    continue
                for w in segment.words or []:
                    words.append(DecodedWord(float(w.start), float(w.end), w.word))
        return DecodeResult(words, time.perf_counter() - t0)


def recognise_frontend_audio(
    wav: Path,
    decoder: Decoder | None = None,
    model_dir: Path | None = None,
    channel: int = FRONTEND_CHANNEL,
) -> list[TimedWord]:
    """The front-end's words as recognised from its channel of ``wav``, with their times.

    One decode of the whole channel (faster-whisper windows long audio itself); times are seconds
    from the start of the file, which is the conversation's clock. Words without a letter or digit
    are dropped.
    """
    audio = frontend_audio_16k(wav, channel)
    dec = decoder if decoder is not None else default_decoder(model_dir)
    result = dec.decode(audio, "")
    words = []
    for w in result.words:
        text = w.text.strip()
        if text and _HAS_WORD_CHAR.search(text):
            words.append(TimedWord(float(w.start), float(max(w.end, w.start)), text))
    return sorted(words, key=lambda w: (w.start, w.end))


def fdb_from_audio(
    trace: TraceData,
    wav: Path,
    reference_replies: Mapping[int, str] | None = None,
    decoder: Decoder | None = None,
    model_dir: Path | None = None,
) -> tuple[FdbSummary, list[FdbTurn], list[TimedWord]]:
    """FDB's metrics of ``trace`` from the recognised front-end audio in ``wav`` (and those words)."""
    words = recognise_frontend_audio(wav, decoder, model_dir)
    summary, turns = fdb_from_words(trace, words, reference_replies)
    return summary, turns, words
