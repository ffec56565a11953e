"""The real KAME front-end behind the simulator's ``Frontend`` protocol.

The simulator owns the oracle (KAME's time-anchored state in :mod:`kame_sim.oracle`) and hands
this adapter the token due at each step; the adapter embeds it with ``oracle_emb`` and steps the
oracle-capable Moshi LM on the user's Mimi codes for that frame. The user channel is encoded once
per conversation and cached on disk. Like KAME's server, the LM's outputs lag one frame (moshi's
max delay): step 0 returns nothing, step ``k`` returns the text token generated at step ``k − 1``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kame_sim.config import KameSettings
from kame_sim.frontend.kame.checkpoint import (
    KameCheckpoint,
    default_dtype,
    load_lm,
    load_mimi,
    load_tokenizer,
    read_checkpoint,
    resolve_device,
)
from kame_sim.frontend.kame.lm import OracleLMGen, OracleLMModel
from kame_sim.frontend.kame.mimi import (
    FrontendAudioDecoder,
    UserCodesCache,
    mimi_fingerprint,
    write_conversation_wav,
)
from kame_sim.frontend.protocol import SessionInfo
from kame_sim.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Text ids KAME's server never sends out as words: end-of-padding (0) and padding (3).
_SILENT_TEXT_IDS = (0, 3)


@dataclass
class LoadedKame:
    """A checkpoint loaded once per run (sweeps reuse it across sessions)."""

    checkpoint: KameCheckpoint
    lm: OracleLMModel
    mimi: torch.nn.Module
    tokenizer: TextTokenizer
    device: torch.device
    dtype: torch.dtype
    mimi_fingerprint: str


def load_kame(settings: KameSettings) -> LoadedKame:
    """Read and load the checkpoint named by the scenario (no network, clear errors)."""
    ckpt = read_checkpoint(settings.checkpoint)
    device = resolve_device(settings.device)
    dtype = default_dtype(device) if settings.dtype == "auto" else _DTYPES[settings.dtype]
    tokenizer = load_tokenizer(ckpt)
    lm = load_lm(ckpt, device, dtype)
    mimi = load_mimi(ckpt, device)
    n_codebooks = max(lm.dep_q, lm.n_q - lm.dep_q)
    fingerprint = mimi_fingerprint(ckpt.mimi_weights, ckpt.mimi_config, n_codebooks)
    return LoadedKame(ckpt, lm, mimi, tokenizer, device, dtype, fingerprint)


class KameBatchFrontend:
    """Steps the oracle-capable LM once per frame for B replicas: one batched step, B oracle tokens.

    Replica ``i`` samples from its own ``torch.Generator`` seeded with ``sampling_seeds[i]`` (the
    seed a run alone gets), so its tokens are the same run batched or not (docs/lockstep.md says
    how exactly, measured). Each replica plays its own session's user codes.
    """

    name = "kame"

    def __init__(self, settings: KameSettings, loaded: LoadedKame, sampling_seeds: Sequence[int]) -> None:
        if not sampling_seeds:
            raise ValueError("a batch needs at least one replica")
        self.settings = settings
        self.loaded = loaded
        self.sampling_seeds = [int(s) for s in sampling_seeds]
        self.batch_size = len(self.sampling_seeds)
        self.padding_id = loaded.lm.existing_text_padding_id
        self.codes_cache = UserCodesCache(settings.codes_cache.expanduser())
        self._stack = contextlib.ExitStack()
        self._codes: torch.Tensor | None = None
        self.last_out: torch.Tensor | None = None  # the last step's [B, 1 + dep_q, 1] output

    def start_sessions(self, sessions: Sequence[SessionInfo]) -> None:
        self.end_sessions()
        if len(sessions) != self.batch_size:
            raise ValueError(f"{len(sessions)} sessions for a batch of {self.batch_size}")
        n_frames = {s.n_frames for s in sessions}
        if len(n_frames) != 1:
            raise ValueError(f"lockstep replicas must have the same number of frames, got {sorted(n_frames)}")
        n = n_frames.pop()
        loaded = self.loaded
        per_source: dict[tuple[int, int], torch.Tensor] = {}
        rows = []
        for session in sessions:
            key = (id(session.conversation), session.user_channel)
            if key not in per_source:
                codes = self.codes_cache.get_or_encode(
                    session.conversation,
                    session.user_channel,
                    loaded.mimi,
                    loaded.mimi_fingerprint,
                    loaded.device,
                )
                if codes.shape[1] < n:
                    raise ValueError(f"{codes.shape[1]} frames of user codes for {n} frames")
                per_source[key] = torch.from_numpy(codes[:, :n].astype(np.int64))
            rows.append(per_source[key])
        self._codes = torch.stack(rows).to(loaded.device)  # [B, K, n_frames]
        s = self.settings
        device = loaded.device
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in self.sampling_seeds]
        self._gen = OracleLMGen(
            loaded.lm,
            batch_size=self.batch_size,
            use_sampling=s.use_sampling,
            temp=s.temp,
            temp_text=s.temp_text,
            top_k=s.top_k,
            top_k_text=s.top_k_text,
            generators=generators,
        )
        self._stack.enter_context(self._gen.streaming())

    def step_raw(self, step: int, oracle_tokens: Sequence[int]) -> torch.Tensor | None:
        """One batched LM step; the raw output (None at step 0, moshi's one-frame delay)."""
        assert self._codes is not None, "start_sessions first"
        self.last_out = self._gen.step(self._codes[:, :, step : step + 1], oracle_tokens)
        return self.last_out

    def step_batch(self, step: int, oracle_tokens: Sequence[int]) -> list[tuple[int, str]]:
        out = self.step_raw(step, oracle_tokens)
        if out is None:
            return [(self.padding_id, "")] * self.batch_size
        piece = self.loaded.tokenizer.piece
        return [
            (t, "" if t in _SILENT_TEXT_IDS or t < 0 else piece(t)) for t in out[:, 0, 0].tolist()
        ]

    def end_sessions(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self._codes = None


class KameFrontend:
    """Steps the oracle-capable LM once per simulated frame: a :class:`KameBatchFrontend` of one.

    Sampling draws from a ``torch.Generator`` seeded with ``sampling_seed``, never from torch's
    global RNG; the tokens are the ones the global RNG seeded the same way gave (moshi's noise for
    B = 1 has the same shape), so traces of earlier versions are reproduced.
    """

    name = "kame"

    def __init__(
        self,
        settings: KameSettings,
        loaded: LoadedKame,
        sampling_seed: int,
        audio_out: Path | None = None,
    ) -> None:
        self.settings = settings
        self.loaded = loaded
        self.sampling_seed = sampling_seed
        self.audio_out = audio_out
        self.padding_id = loaded.lm.existing_text_padding_id
        self._batch = KameBatchFrontend(settings, loaded, [sampling_seed])
        self.codes_cache = self._batch.codes_cache
        self._decoder: FrontendAudioDecoder | None = None
        self._session: SessionInfo | None = None

    def start_session(self, session: SessionInfo) -> None:
        self.end_session()
        self._batch.start_sessions([session])
        if self.audio_out is not None:
            self._decoder = FrontendAudioDecoder(self.loaded.mimi, self.loaded.device)
            self._decoder.__enter__()
        self._session = session

    def step(self, step: int, oracle_token: int) -> tuple[int, str]:
        out = self._batch.step_raw(step, [oracle_token])
        if out is None:
            if self._decoder is not None:
                self._decoder.push(None)
            return self.padding_id, ""
        if self._decoder is not None:
            self._decoder.push(out[:, 1:, :])
        token = int(out[0, 0, 0])
        if token in _SILENT_TEXT_IDS or token < 0:
            return token, ""
        return token, self.loaded.tokenizer.piece(token)

    def end_session(self) -> None:
        """Close the streaming state; write the stereo wav when ``--audio-out`` was asked for."""
        decoder, session = self._decoder, self._session
        self._decoder, self._session = None, None
        try:
            if decoder is not None:
                decoder.__exit__(None, None, None)
        finally:
            self._batch.end_sessions()
        if decoder is not None and session is not None and self.audio_out is not None:
            user = session.conversation.audio[session.user_channel]
            write_conversation_wav(self.audio_out, user, decoder.pcm(), frontend_offset_samples=1920)
            log.info("wrote %s", self.audio_out)
