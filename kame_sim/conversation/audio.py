"""Decode a stereo wav and bring it to the simulator's sample rate.

The bytes are decoded from memory (the loader has already read them to hash them), so each file
is read from disk exactly once. Resampling uses soxr's HQ quality: KAME's front-end consumes
24 kHz audio while SpokenWOZ is recorded at 8 kHz, and a poor resampler would add aliasing that a
real telephone front-end never sees.

libsndfile reads what it can: a wav whose data chunk is cut short (an interrupted copy) decodes as
a shorter recording without a word, so the RIFF header is checked against the bytes present. Float
wavs can hold NaN or infinity, which would poison every frame downstream; both are refused here.
"""

from __future__ import annotations

import io
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


def decode_stereo_wav(
    path: Path, data: bytes, speakers: tuple[str, str] = ("A", "B")
) -> tuple[np.ndarray, int]:
    """``(samples [n, 2] float32, native sample rate)``; raises InputError for anything else."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            fmt, channels, rate = f.format, f.channels, f.samplerate
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
            samples = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(path, "audio", f"cannot read audio: {e}") from None
    _check_data_chunk(path, data)
    if samples.shape[0] == 0:
        raise InputError(path, "samples", "audio has no samples")
    finite = np.isfinite(samples)
    if not finite.all():
        frame, channel = np.argwhere(~finite)[0]
        raise InputError(
            path,
            "samples",
            f"sample {frame} of channel {channel} ({frame / rate:.3f} s) is {samples[frame, channel]}; "
            "audio must be finite",
        )
    return samples, rate


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


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``[n, channels]`` -> ``[channels, m]`` C-contiguous float32 at ``rate_out``.

    soxr filters every channel independently, so one multichannel call equals one call per
    channel, at half the overhead.
    """
    if rate_in != rate_out:
        samples = soxr.resample(samples, rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(samples.T, dtype=np.float32)
