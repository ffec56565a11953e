"""Mimi around the KAME front-end: user-code cache, streaming decoder, stereo wav, fingerprints.

KAME's front-end (Moshi) hears the user as Mimi codes, 8 codebooks per 80 ms frame, and speaks
Mimi codes that Mimi decodes back to audio. In the simulator the user side is a *recording*, so its
codes depend only on the audio and the codec weights, never on the simulated timing: they are
encoded once per (conversation, channel, codec) and cached on disk (:class:`UserCodesCache`), so a
sweep of hundreds of runs pays for the encode once. The generated side is decoded frame by frame
as the LM produces it (:class:`FrontendAudioDecoder`), and both are written side by side to a
stereo wav a person can listen to (:func:`write_conversation_wav`).

Codec identity is a fingerprint: :func:`mimi_fingerprint` for a weights file,
:func:`mimi_fingerprint_from_state` for a model that only exists in memory (the tiny random test
codec). :func:`fill_codebooks_` makes a randomly initialised Mimi usable at all (its codebooks are
all zero, so it would emit code 0 everywhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from moshi.models.compression import MimiModel
from moshi.quantization.core_vq import EuclideanCodebook

from kame_sim.conversation.model import Conversation
from kame_sim.errors import InputError

log = logging.getLogger(__name__)

# Bump when the encode procedure or the file layout changes, so stale cache files are not reused.
CACHE_FORMAT_VERSION = 2  # 2: reset after the first frame, as KAME does
# Frames per streaming encode call: 1, like KAME's server, whose codes the cache must reproduce
# (see encode_channel for why larger chunks and offline encodes differ past 10 s).
LIVE_CHUNK_FRAMES = 1
# Default norm of the random centroids written by fill_codebooks_ (see there for why 0.1).
DEFAULT_CODEBOOK_SCALE = 0.1
_READ_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


def _default_mimi_config() -> dict[str, Any]:
    from moshi.models import loaders

    return loaders._mimi_config


def _canonical_json(value: Any, field: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(
            None, field, f"must be plain JSON data (numbers, strings, lists, dicts): {e}"
        ) from None


def _update_framed(h: Any, label: str, data: bytes) -> None:
    """Label and length before the bytes, so moving bytes between fields changes the hash."""
    h.update(f"{label}\0{len(data)}\0".encode())
    h.update(data)


def mimi_fingerprint(weights_path: Path | None, mimi_config: dict | None, num_codebooks: int) -> str:
    """sha256 identifying a Mimi codec: weights file bytes + canonical config JSON + codebook count.

    The file is hashed by content (read in 1 MiB chunks, never whole into memory), not by name or
    mtime, so a copied or re-downloaded checkpoint keeps its cached codes and a replaced one does
    not. ``mimi_config=None`` means moshi's default config, and hashes the same as passing that
    config explicitly. ``weights_path=None`` identifies *no* weights file: only use it for models
    that are fully determined by the config; a randomly initialised in-memory model must use
    :func:`mimi_fingerprint_from_state` instead, or two different random codecs would share cached
    codes.
    """
    if isinstance(num_codebooks, bool) or not isinstance(num_codebooks, int) or num_codebooks <= 0:
        raise InputError(None, "num_codebooks", f"must be a positive integer, got {num_codebooks!r}")
    h = hashlib.sha256(b"kame-sim mimi fingerprint v1\0")
    if weights_path is None:
        _update_framed(h, "weights", b"<none>")
    else:
        path = Path(weights_path)
        if not path.is_file():
            raise InputError(path, "mimi_weights", "file not found")
        fh = hashlib.sha256()
        try:
            with path.open("rb") as f:
                while chunk := f.read(_READ_CHUNK):
                    fh.update(chunk)
        except OSError as e:
            raise InputError(path, "mimi_weights", f"cannot read: {e}") from None
        _update_framed(h, "weights", fh.hexdigest().encode())
    config = _default_mimi_config() if mimi_config is None else mimi_config
    _update_framed(h, "config", _canonical_json(config, "mimi_config").encode())
    _update_framed(h, "num_codebooks", str(num_codebooks).encode())
    return h.hexdigest()


def mimi_fingerprint_from_state(mimi: MimiModel) -> str:
    """sha256 of a model's state_dict (names, dtypes, shapes, raw bytes, in name order) + codebooks.

    For codecs that have no weights file (the tiny random test Mimi). Every persistent tensor is
    hashed, codebook buffers included, so filling the codebooks or changing one weight changes the
    fingerprint; the active codebook count is not in the state_dict, so it is added explicitly.
    """
    h = hashlib.sha256(b"kame-sim mimi state fingerprint v1\0")
    state = mimi.state_dict()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        _update_framed(h, "name", name.encode())
        _update_framed(h, "meta", f"{t.dtype}:{tuple(t.shape)}".encode())
        _update_framed(h, "data", t.reshape(-1).view(torch.uint8).numpy().tobytes())
    _update_framed(h, "num_codebooks", str(int(mimi.num_codebooks)).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Random codebooks for untrained Mimi
# --------------------------------------------------------------------------------------------


def _codebooks(mimi: MimiModel) -> Iterator[EuclideanCodebook]:
    for m in mimi.modules():
        if isinstance(m, EuclideanCodebook):
            yield m


def _set_centroids(cb: EuclideanCodebook, centroids: torch.Tensor) -> None:
    # embedding = embedding_sum / cluster_usage, so scale by the usage to get these centroids.
    cb.embedding_sum.copy_(centroids.to(cb.embedding_sum) * cb.cluster_usage.clamp(min=cb.epsilon)[:, None])
    cb._initialized.fill_(1)
    cb._cached_initialized = False
    # Drop the cached centroids (a non-persistent buffer computed on first use), else a codebook
    # used before filling would keep quantizing to the old all-zero table.
    cb.register_buffer("_embedding", None, persistent=False)


def fill_codebooks_(
    mimi: MimiModel, generator: torch.Generator, *, scale: float = DEFAULT_CODEBOOK_SCALE
) -> MimiModel:
    """Give every codebook of a randomly initialised Mimi random centroids, in place; returns ``mimi``.

    Why: Mimi's codebooks are trained buffers (k-means at training time) and a fresh
    ``get_mimi(None, ...)`` leaves them all zero, so every frame quantizes to code 0 and the
    front-end's LM would hear the same thing whatever the user says. All draws come from
    ``generator`` (never torch's global RNG, which moshi's sampler uses), so the result is
    reproducible and does not disturb sampling. Reuse: build the model under
    ``torch.random.fork_rng()`` + ``torch.manual_seed(seed)``, then call this with
    ``torch.Generator().manual_seed(seed)``.

    The centroids are random directions of norm ``scale``. Equal norms make each choice depend on
    the latent's direction rather than on which centroid happens to be shortest; the norm matters
    for the residual stages. Measured on the demo with the tiny Mimi (latent norm ~0.1): plain
    ``randn`` centroids (norm ~5.7) give 1–2 distinct codes per codebook, norm 1.0 gives 3–4,
    norm 0.1 gives 3–22 (the later codebooks vary more). Centroids drawn from the audio's own
    latents (a k-means-like seeding) were tried and rejected: they give many more distinct codes
    but sit so close together that float noise of 1e-8 (offline vs streaming encode) flips 60–90 %
    of the frames, so codes would depend on the device and the chunking.
    """
    for cb in _codebooks(mimi):
        c = torch.randn(cb.embedding_sum.shape, generator=generator, dtype=torch.float32)
        c = c / c.norm(dim=-1, keepdim=True).clamp(min=1e-12) * scale
        with torch.no_grad():
            _set_centroids(cb, c)
    return mimi


# --------------------------------------------------------------------------------------------
# Encoding the user channel
# --------------------------------------------------------------------------------------------


def encode_channel(
    mimi: MimiModel,
    audio: np.ndarray,
    device: torch.device | str,
    chunk_frames: int | None = LIVE_CHUNK_FRAMES,
) -> np.ndarray:
    """Codes of a mono waveform's complete frames: int16 ``[num_codebooks, n_frames]``.

    A trailing partial frame is dropped (the simulator never feeds one to the model). The default,
    ``chunk_frames=1``, runs Mimi in streaming mode one 80 ms frame per call, exactly as KAME's
    (moshi's) server encodes the microphone live, so the cached codes are bit for bit what the
    real front-end would have heard; memory stays bounded (a KV ring of ``context`` steps).

    Why not offline or bigger chunks: they are equal only while the audio fits in the encoder's
    attention context (250 steps at 25 Hz = 10 s). moshi's streaming attention keeps a ring KV
    cache of exactly ``context`` entries, so each call of ``T`` steps overwrites ``T − 1`` keys its
    own first queries still need: frame-by-frame streaming loses 1 key every other step, 50-frame
    chunks lose up to 99, offline loses none. Measured on the full-size architecture, 50-frame
    chunks vs offline: latents differ by ~1e-4 once keys are dropped (2e-8 before), enough to
    flip codes that sit near a tie. Offline
    also builds a full ``T × T`` attention mask (a 10-minute call: 15,000 steps, ~0.9 GB per head
    per layer). ``chunk_frames=None`` (offline) and ``> 1`` remain available for experiments.

    Cost, tiny Mimi, 2 CPU cores, the 38.6 s demo channel: frame by frame ~1.1 s (real-time factor
    ~0.03), 50-frame chunks ~0.11 s, offline ~0.18 s. The cache pays it once per conversation.
    ``mimi`` must not already be streaming (a decoder holding it would have its state clobbered).
    """
    if mimi.is_streaming:
        raise RuntimeError("this Mimi is in streaming mode (a decoder holds it); encode before starting it")
    if chunk_frames is not None and (isinstance(chunk_frames, bool) or chunk_frames <= 0):
        raise ValueError(f"chunk_frames must be a positive integer or None, got {chunk_frames!r}")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {audio.shape}")
    frame = mimi.frame_size
    n_frames = audio.shape[0] // frame
    k = int(mimi.num_codebooks)
    if n_frames == 0:
        return np.zeros((k, 0), dtype=np.int16)
    # One copy of the whole channel (the conversation's audio is a read-only numpy view).
    wav = torch.tensor(audio[: n_frames * frame], dtype=torch.float32, device=device)[None, None]
    with torch.no_grad():
        # KAME's audio loop resets Mimi's streaming state after a session's first frame is encoded,
        # so frame 0 is encoded on its own and every mode encodes the rest from a fresh state.
        with mimi.streaming(1):
            first = mimi.encode(wav[..., :frame])
        rest = wav[..., frame:]
        if n_frames == 1:
            codes = first
        elif chunk_frames is None:
            codes = torch.cat([first, mimi.encode(rest)], dim=-1)
        else:
            step = chunk_frames * frame
            with mimi.streaming(1):
                parts = [mimi.encode(rest[..., a : a + step]) for a in range(0, rest.shape[-1], step)]
            codes = torch.cat([first, *parts], dim=-1)
    codes = codes[0].cpu()
    if codes.shape != (k, n_frames):
        raise RuntimeError(f"Mimi returned codes of shape {tuple(codes.shape)}, expected {(k, n_frames)}")
    if int(codes.min()) < 0 or int(codes.max()) > np.iinfo(np.int16).max:
        raise RuntimeError("Mimi codes do not fit int16")
    return codes.numpy().astype(np.int16)


class UserCodesCache:
    """On-disk cache of the user channel's Mimi codes, one ``<key>.npy`` (int16 ``[K, n_frames]``).

    Why: the codes depend only on the audio and the codec weights, not on the simulation (timing,
    oracle, delays, seeds), so every run of a sweep over the same conversation needs the very same
    codes; encoding them once and reusing them removes the codec from all later runs. The key is
    sha256(format version, conversation.content_hash, channel, sample rate, codec fingerprint,
    encode mode), so a changed recording, the other speaker or a different codec never hits a stale
    entry. ``encode_chunk_frames`` is passed to :func:`encode_channel`; keep the default (1 frame,
    what KAME's server computes live) unless experimenting, since other modes differ past 10 s.

    Files are written atomically (temp file in the same folder + ``os.replace``), so a crash or a
    parallel run never leaves a half-written entry under the final name; a corrupt or truncated
    file found anyway (unreadable, wrong shape, dtype or range) is logged and re-encoded, never
    fatal. ``hits``/``misses`` count lookups for tests and run summaries.
    """

    def __init__(self, cache_dir: Path, encode_chunk_frames: int | None = LIVE_CHUNK_FRAMES) -> None:
        self.cache_dir = Path(cache_dir)
        if self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise InputError(self.cache_dir, "codes_cache", "exists and is not a directory")
        self.encode_chunk_frames = encode_chunk_frames
        self.hits = 0
        self.misses = 0

    def key(self, conversation: Conversation, channel: int, fingerprint: str) -> str:
        """The cache key (hex sha256) of one conversation channel under one codec and encode mode."""
        mode = "offline" if self.encode_chunk_frames is None else f"streaming:{self.encode_chunk_frames}"
        h = hashlib.sha256(b"kame-sim user codes\0")
        for label, value in (
            ("version", CACHE_FORMAT_VERSION),
            ("content_hash", conversation.content_hash),
            ("channel", channel),
            ("sample_rate", conversation.sample_rate),
            ("fingerprint", fingerprint),
            ("encode", mode),
        ):
            _update_framed(h, label, str(value).encode())
        return h.hexdigest()

    def path_for(self, conversation: Conversation, channel: int, fingerprint: str) -> Path:
        """Where the entry for this conversation channel and codec lives (whether or not it exists)."""
        return self.cache_dir / f"{self.key(conversation, channel, fingerprint)}.npy"

    def get_or_encode(
        self,
        conversation: Conversation,
        channel: int,
        mimi: MimiModel,
        fingerprint: str,
        device: torch.device | str,
    ) -> np.ndarray:
        """int16 ``[num_codebooks, n_frames]`` codes of ``channel`` (complete frames only).

        Loaded from the cache when a valid entry exists, else encoded with :func:`encode_channel`
        and stored. ``fingerprint`` must identify ``mimi`` (see :func:`mimi_fingerprint`).
        """
        if isinstance(channel, bool) or channel not in (0, 1):
            raise InputError(conversation.source_dir, "channel", f"must be 0 or 1, got {channel!r}")
        if conversation.sample_rate != mimi.sample_rate:
            raise InputError(
                conversation.source_dir,
                "sample_rate",
                f"conversation is at {conversation.sample_rate} Hz but Mimi needs {mimi.sample_rate} Hz",
            )
        frame = mimi.frame_size
        expected = (int(mimi.num_codebooks), conversation.n_frames(frame))
        path = self.path_for(conversation, channel, fingerprint)
        cached = self._load(path, expected, int(mimi.cardinality))
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        audio = conversation.frames(channel, frame).reshape(-1)
        codes = encode_channel(mimi, audio, device, self.encode_chunk_frames)
        self._store(path, codes)
        return codes

    @staticmethod
    def _load(path: Path, expected: tuple[int, int], cardinality: int) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            codes = np.load(path, allow_pickle=False)
        except Exception as e:  # any unreadable file is just a miss: re-encoding fixes it
            log.warning("codes cache file %s is unreadable (%s); re-encoding", path, e)
            return None
        problem = None
        if not isinstance(codes, np.ndarray) or codes.dtype != np.int16:
            problem = f"dtype {getattr(codes, 'dtype', type(codes).__name__)}, expected int16"
        elif codes.shape != expected:
            problem = f"shape {codes.shape}, expected {expected}"
        elif codes.size and (int(codes.min()) < 0 or int(codes.max()) >= cardinality):
            problem = f"codes outside [0, {cardinality})"
        if problem is not None:
            log.warning("codes cache file %s is invalid (%s); re-encoding", path, problem)
            return None
        return codes

    def _store(self, path: Path, codes: np.ndarray) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, lambda f: np.save(f, codes, allow_pickle=False))
        except OSError as e:
            # The codes are in hand; a read-only or full cache disk only costs the next run.
            log.warning("cannot write codes cache file %s (%s); continuing without caching", path, e)


def _atomic_write(path: Path, write: Any) -> None:
    """Write through ``write(file)`` into a temp file beside ``path``, fsync, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# Decoding the front-end's audio
# --------------------------------------------------------------------------------------------


class FrontendAudioDecoder:
    """Streaming Mimi decode of the front-end's audio tokens, one 80 ms frame per :meth:`push`.

    Use as a context manager (or :meth:`start`/:meth:`close`): it holds ``mimi`` in streaming mode
    (batch 1) for the session, so the decoder's causal state carries across frames exactly as in
    KAME's server, and gives it back on close. :meth:`pcm` still works after close.

    Frames the LM has not generated yet (``None``, or tokens containing a negative id such as
    moshi's ungenerated id -2 during the first steps' delays) produce 1920 samples of silence
    *without* advancing the decoder, like the server, which skips them; emitting the silence keeps
    the output frame-aligned with the simulation clock (frame ``k`` of the pcm is step ``k``).
    """

    def __init__(self, mimi: MimiModel, device: torch.device | str) -> None:
        self.mimi = mimi
        self.device = torch.device(device)
        self.frame_size = int(mimi.frame_size)
        self._parts: list[np.ndarray] = []
        self._stack: contextlib.ExitStack | None = None
        self._pcm_cache: np.ndarray | None = None

    def start(self) -> FrontendAudioDecoder:
        """Put ``mimi`` into streaming mode (fails if something else already holds it)."""
        if self._stack is not None:
            raise RuntimeError("decoder already started")
        if self.mimi.is_streaming:
            raise RuntimeError("this Mimi is already in streaming mode; one decoder per Mimi at a time")
        self._stack = self.mimi.streaming(1)
        return self

    def close(self) -> None:
        """Leave streaming mode (idempotent)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> FrontendAudioDecoder:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def n_frames(self) -> int:
        """Frames pushed so far (decoded or silent)."""
        return len(self._parts)

    def push(self, audio_tokens: torch.Tensor | None) -> None:
        """Decode one frame of tokens ``[1, num_codebooks, 1]``, or append silence (see class doc)."""
        if self._stack is None:
            raise RuntimeError("decoder not started (use it as a context manager or call start())")
        self._pcm_cache = None
        if audio_tokens is None or bool((audio_tokens < 0).any()):
            self._parts.append(np.zeros(self.frame_size, dtype=np.float32))
            return
        expected = (1, int(self.mimi.num_codebooks), 1)
        if tuple(audio_tokens.shape) != expected:
            raise ValueError(f"audio tokens must have shape {expected}, got {tuple(audio_tokens.shape)}")
        with torch.no_grad():
            out = self.mimi.decode(audio_tokens.to(self.device, dtype=torch.long))
        pcm = out[0, 0].float().cpu().numpy()
        if pcm.shape[0] != self.frame_size:
            raise RuntimeError(
                f"Mimi decoded {pcm.shape[0]} samples for one frame, expected {self.frame_size}"
            )
        self._parts.append(pcm)

    def pcm(self) -> np.ndarray:
        """All audio so far, float32 ``[frame_size × pushes]`` (cached until the next push)."""
        if self._pcm_cache is None:
            self._pcm_cache = (
                np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float32)
            ).astype(np.float32, copy=False)
        return self._pcm_cache


# --------------------------------------------------------------------------------------------
# Listening
# --------------------------------------------------------------------------------------------


def _to_int16(x: np.ndarray) -> tuple[np.ndarray, int]:
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    clipped = int(np.count_nonzero(np.abs(x) > 1.0))
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16), clipped


def write_conversation_wav(
    path: Path,
    user_audio: np.ndarray,
    frontend_pcm: np.ndarray,
    sample_rate: int = 24000,
    frontend_offset_samples: int = 0,
) -> None:
    """Stereo 16-bit wav to listen to a session: the user on the LEFT, the front-end on the RIGHT.

    ``frontend_offset_samples`` delays the front-end track (e.g. one frame, the LM's output lag) so
    that both tracks share the conversation's clock. The shorter track is padded with silence to
    the longer. Samples beyond ±1 (and NaN/inf) are clipped rather than wrapped, with a warning,
    because an untrained decoder can produce anything and int16 wrap-around is painful to hear.
    Written atomically, so a listener never opens a half-written file.
    """
    user = np.asarray(user_audio)
    front = np.asarray(frontend_pcm)
    if user.ndim != 1 or front.ndim != 1:
        raise ValueError(f"expected 1-D tracks, got user {user.shape} and front-end {front.shape}")
    if isinstance(frontend_offset_samples, bool) or frontend_offset_samples < 0:
        raise ValueError(f"frontend_offset_samples must be >= 0, got {frontend_offset_samples!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    n = max(user.shape[0], frontend_offset_samples + front.shape[0])
    stereo = np.zeros((n, 2), dtype=np.float32)
    stereo[: user.shape[0], 0] = user
    stereo[frontend_offset_samples : frontend_offset_samples + front.shape[0], 1] = front
    samples, clipped = _to_int16(stereo)
    if clipped:
        log.warning("%s: %d samples outside [-1, 1] were clipped", path, clipped)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f: Any) -> None:
        with wave.open(f, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(samples.astype("<i2").tobytes())

    _atomic_write(path, write)
