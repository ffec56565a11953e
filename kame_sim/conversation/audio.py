"""Check a stereo wav's header at load; decode it and bring it to the simulator's rate on first use.

The bytes are decoded from memory (the loader has already read them to hash them), so each file
is read from disk exactly once. Resampling uses soxr's HQ quality: KAME's front-end consumes
24 kHz audio while SpokenWOZ is recorded at 8 kHz, and a poor resampler would add aliasing that a
real telephone front-end never sees.

Most runs never look at a sample: the behavioural front-end and the simulated STT work from the
transcript's word times. So loading a conversation checks only what the header tells, which is
cheap (format, channels, rate, a data chunk present in full, at least one sample), and
:class:`LazyAudio` decodes and resamples on first use. The length the resampled audio will have
is known without resampling (:func:`resampled_length`), so the number of frames is too.

libsndfile reads what it can: a wav whose data chunk is cut short (an interrupted copy) decodes as
a shorter recording without a word, so the RIFF header is checked against the bytes present. Float
wavs can hold NaN or infinity, which would poison every frame downstream; both are refused when
the samples are decoded (a run that needs them decodes them before its run directory is made).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from kame_sim.errors import InputError

# libsndfile's names for the RIFF/WAVE family; anything else (FLAC, OGG, ...) is not the layout.
WAV_FORMATS = frozenset({"WAV", "WAVEX", "RF64"})

#: Real audio sample rates (Hz): telephone speech is 8 kHz, studio audio at most 384 kHz.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 384000

# A data-chunk size that writers use when they stream and cannot seek back to fill it in.
_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF})


@dataclass(frozen=True)
class WavInfo:
    """What a checked wav header says: the native rate and the number of (stereo) sample frames."""

    rate: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate


def read_wav_info(path: Path, data: bytes, speakers: tuple[str, str] = ("A", "B")) -> WavInfo:
    """Every check that needs no decoding: a stereo WAV at a real rate, whole, not empty."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            fmt, channels, rate, frames = f.format, f.channels, f.samplerate, f.frames
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(path, "audio", f"cannot read audio: {e}") from None
    if fmt not in WAV_FORMATS:
        raise InputError(path, "format", f"expected a WAV file, got {fmt}")
    if channels != 2:
        raise InputError(
            path,
            "channels",
            f"expected a stereo wav (speaker {speakers[0]} left, {speakers[1]} right), "
            f"got {channels} channel{'s' if channels != 1 else ''}",
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(
            path,
            "samplerate",
            f"{rate} Hz is not a real audio rate ({MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz)",
        )
    _check_data_chunk(path, data)
    if frames <= 0:
        raise InputError(path, "samples", "audio has no samples")
    return WavInfo(rate, frames)


def read_samples(path: Path, data: bytes, info: WavInfo) -> np.ndarray:
    """The samples of a wav that :func:`read_wav_info` accepted: ``[frames, 2]`` float32, finite."""
    try:
        samples, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(path, "audio", f"cannot read audio: {e}") from None
    if samples.shape[0] != info.frames:
        raise InputError(
            path, "samples", f"the header announces {info.frames} samples but {samples.shape[0]} decode"
        )
    finite = np.isfinite(samples)
    if not finite.all():
        frame, channel = np.argwhere(~finite)[0]
        raise InputError(
            path,
            "samples",
            f"sample {frame} of channel {channel} ({frame / info.rate:.3f} s) is "
            f"{samples[frame, channel]}; audio must be finite",
        )
    return samples


def decode_stereo_wav(
    path: Path, data: bytes, speakers: tuple[str, str] = ("A", "B")
) -> tuple[np.ndarray, int]:
    """``(samples [n, 2] float32, native sample rate)``; raises InputError for anything else."""
    info = read_wav_info(path, data, speakers)
    return read_samples(path, data, info), info.rate


def _check_data_chunk(path: Path, data: bytes) -> None:
    """Refuse a RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return  # RF64 and other containers keep their sizes elsewhere; libsndfile checks them
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            available = len(data) - pos - 8
            if size not in _UNKNOWN_SIZES and size > available:
                raise InputError(
                    path,
                    "audio",
                    f"truncated wav: the data chunk declares {size} bytes but only {available} follow",
                )
            return
        pos += 8 + size + (size & 1)


def resampled_length(frames: int, rate_in: int, rate_out: int) -> int:
    """How many samples :func:`resample` makes of ``frames``: ``frames * rate_out / rate_in``,
    rounded half up, as soxr does (tests/test_conversation.py checks it against soxr)."""
    return (2 * frames * rate_out + rate_in) // (2 * rate_in)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``[n, channels]`` -> ``[channels, m]`` C-contiguous float32 at ``rate_out``.

    soxr filters every channel independently, so one multichannel call equals one call per
    channel, at half the overhead.
    """
    if rate_in != rate_out:
        samples = soxr.resample(samples, rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(samples.T, dtype=np.float32)


class LazyAudio:
    """A wav whose header passed :func:`read_wav_info`, decoded and resampled on first use.

    ``n_samples`` (the resampled length) is known before decoding. :meth:`samples` decodes,
    checks that every sample is finite, resamples to ``sample_rate`` and keeps the read-only
    ``[2, n_samples]`` result. The file's bytes are kept (a fraction of the decoded size), so a
    failed decode fails the same way again, and two threads that decode at once both succeed and
    keep identical results: no lock is needed.
    """

    def __init__(self, path: Path, data: bytes, info: WavInfo, sample_rate: int) -> None:
        self.path, self.info, self.sample_rate = path, info, sample_rate
        self.n_samples = resampled_length(info.frames, info.rate, sample_rate)
        self._data = data
        self._samples: np.ndarray | None = None

    @property
    def loaded(self) -> bool:
        """Whether the samples have been decoded."""
        return self._samples is not None

    def samples(self) -> np.ndarray:
        """float32 ``[2, n_samples]`` at ``sample_rate`` (read-only); InputError for bad samples."""
        if self._samples is None:
            audio = resample(read_samples(self.path, self._data, self.info), self.info.rate, self.sample_rate)
            if audio.shape[1] != self.n_samples:  # soxr changed its rounding: n_frames would be wrong
                raise RuntimeError(
                    f"{self.path}: resampling gave {audio.shape[1]} samples, expected {self.n_samples}"
                )
            audio.setflags(write=False)
            self._samples = audio
        return self._samples
