"""The in-memory form of one recorded conversation.

Everything here is immutable: a :class:`Conversation` is loaded once and then shared by the
simulated STT, the LLM content sources, the frame loop and the metrics, so none of them may change
what the others see. The audio array is therefore made read-only, and :meth:`Conversation.frames`
hands out (read-only) views instead of copies, which keeps the frame loop allocation-free.

The audio is decoded on first use: the loader gives a :class:`LazyAudio` (header checked, length
known), and ``Conversation.audio`` decodes it the first time it is read. The length, duration
and frame count never decode, so a behavioural run never reads a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kame_sim.conversation.audio import LazyAudio
from kame_sim.errors import InputError

# KAME's audio frame: 80 ms at 24 kHz (Mimi's frame rate is 12.5 Hz).
DEFAULT_FRAME_SAMPLES = 1920


@dataclass(frozen=True, slots=True)
class Word:
    """One transcribed word: who said it and when (seconds from the start of the recording)."""

    speaker: str
    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class OraclePrediction:
    """One entry of an oracle_raw file: a back-end LLM prediction recorded at ``timestamp_s``.

    ``channel`` is the channel of the speaker the prediction is *for* (the next speaker), and
    ``hint`` the ground-truth next utterance (empty while ``current_spoken_ratio <= 0.5``). The file
    stores the time as ``timestamp_ms``; it is converted to seconds here so every time in the
    simulator has the same unit.
    """

    timestamp_s: float
    prediction: str
    channel: int
    hint: str
    current_spoken_ratio: float
    total_word_count: int
    conversation_context: str
    trigger_word: str = ""
    recent_words: str = ""


class _AudioField:
    """The ``audio`` field: holds an array or a :class:`LazyAudio`; reading it gives the array.

    A data descriptor as a dataclass field (the dataclass machinery calls ``__set__`` from
    ``__init__`` and ``dataclasses.replace``), so ``Conversation(..., audio=array, ...)`` and
    ``replace(conv, audio=array)`` keep working while the loader passes a LazyAudio. Reading the
    field (``replace`` of another field reads it too) decodes a LazyAudio.
    """

    def __get__(self, obj: Any, objtype: Any = None) -> np.ndarray:
        if obj is None:
            raise AttributeError("audio")  # tells dataclasses the field has no default
        source = obj.__dict__["_audio_source"]
        return source.samples() if isinstance(source, LazyAudio) else source

    def __set__(self, obj: Any, value: np.ndarray | LazyAudio) -> None:
        obj.__dict__["_audio_source"] = value


# eq=False: the generated __eq__/__hash__ would compare numpy arrays (ambiguous truth value, not
# hashable). Two loads of the same files are recognised by ``content_hash`` instead.
@dataclass(frozen=True, eq=False)
class Conversation:
    """A stereo recording with its word-level transcript and (optionally) recorded predictions.

    ``audio`` is float32 ``[2, n_samples]`` at ``sample_rate``; row ``i`` is the voice of
    ``speakers[i]``. Constructed from a :class:`LazyAudio` (as the loader does) it is decoded
    the first time it is read (:meth:`load_audio` says so explicitly); ``n_samples``,
    ``duration_s`` and ``n_frames`` never decode. ``words`` is sorted by start time across both
    speakers (stable, so words that start together keep their file order). ``content_hash``
    identifies the source files, so a trace can say exactly which data it was produced from.
    """

    id: str
    source_dir: Path
    # A descriptor, not a default: the field is required (see _AudioField).
    audio: np.ndarray = _AudioField()  # type: ignore[assignment]
    sample_rate: int
    words: tuple[Word, ...]
    oracle_raw: tuple[OraclePrediction, ...]
    content_hash: str
    speakers: tuple[str, str] = ("A", "B")

    def __repr__(self) -> str:  # the generated one would print (and decode) the audio
        return (
            f"Conversation(id={self.id!r}, source_dir={self.source_dir!r}, sample_rate={self.sample_rate}, "
            f"n_samples={self.n_samples}, words={len(self.words)}, oracle_raw={len(self.oracle_raw)}, "
            f"content_hash={self.content_hash!r}, speakers={self.speakers!r})"
        )

    @property
    def n_samples(self) -> int:
        """Samples per channel at ``sample_rate`` (known without decoding)."""
        source = self.__dict__["_audio_source"]
        return source.n_samples if isinstance(source, LazyAudio) else int(source.shape[1])

    @property
    def audio_loaded(self) -> bool:
        """Whether the samples are in memory (a LazyAudio not read yet: False)."""
        source = self.__dict__["_audio_source"]
        return source.loaded if isinstance(source, LazyAudio) else True

    def load_audio(self) -> np.ndarray:
        """Decode the audio now (if not yet) and return it: InputError for bad samples (NaN, inf)."""
        return self.audio

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return self.n_samples / self.sample_rate

    def channel_of(self, speaker: str) -> int:
        """The audio row (0 or 1) that carries ``speaker``'s voice."""
        try:
            return self.speakers.index(speaker)
        except ValueError:
            raise InputError(
                self.source_dir,
                "speaker",
                f"unknown speaker {speaker!r}; this conversation has {', '.join(self.speakers)}",
            ) from None

    def words_of(self, speaker: str) -> tuple[Word, ...]:
        """``speaker``'s words in start order (validates the speaker name)."""
        self.channel_of(speaker)
        return tuple(w for w in self.words if w.speaker == speaker)

    def n_frames(self, frame_samples: int = DEFAULT_FRAME_SAMPLES) -> int:
        """Number of *complete* frames; a trailing partial frame is never fed to the model."""
        _check_frame_samples(frame_samples)
        return self.n_samples // frame_samples

    def frames(self, channel: int, frame_samples: int = DEFAULT_FRAME_SAMPLES) -> np.ndarray:
        """``channel``'s audio as ``[n_frames, frame_samples]`` float32 (a read-only view)."""
        if isinstance(channel, bool) or channel not in (0, 1):
            raise InputError(self.source_dir, "channel", f"must be 0 or 1, got {channel!r}")
        n = self.n_frames(frame_samples)
        return self.audio[channel, : n * frame_samples].reshape(n, frame_samples)


def _check_frame_samples(frame_samples: int) -> None:
    if isinstance(frame_samples, bool) or not isinstance(frame_samples, int) or frame_samples <= 0:
        raise InputError(None, "frame_samples", f"must be a positive integer, got {frame_samples!r}")
