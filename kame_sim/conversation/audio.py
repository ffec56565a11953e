"""Decode a stereo wav and bring it to the simulator's sample rate.

The bytes are decoded from memory (the loader has already read them to hash them), so each file
is read from disk exactly once. Resampling uses soxr's HQ quality: KAME's front-end consumes
24 kHz audio while SpokenWOZ is recorded at 8 kHz, and a poor resampler would add aliasing that a
real telephone front-end never sees.
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
            samples = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(path, "audio", f"cannot read audio: {e}") from None
    if samples.shape[0] == 0:
        raise InputError(path, "samples", "audio has no samples")
    return samples, rate


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``[n, channels]`` -> ``[channels, m]`` C-contiguous float32 at ``rate_out``.

    soxr filters every channel independently, so one multichannel call equals one call per
    channel, at half the overhead.
    """
    if rate_in != rate_out:
        samples = soxr.resample(samples, rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(samples.T, dtype=np.float32)
