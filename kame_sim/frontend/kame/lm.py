"""KAME's oracle-capable Moshi LM, as a thin extension of moshi (no copied moshi files).

KAME adds exactly one module to Moshi's LM: ``oracle_emb``, an embedding of the oracle text
token built like ``text_emb``, whose output is added to the text embedding of each step
(kame-reference.md §1). Everything else (delays, sampling, KV cache, depformer) is moshi's own
code, reused through subclassing and composition:

* :class:`OracleLMModel` subclasses ``LMModel``. It overrides ``forward_text`` only to add the
  oracle embedding at KAME's place, ``audio_sum + (text_emb + oracle_emb)``: adding it through
  moshi's ``sum_condition`` (``(audio_sum + text_emb) + oracle_emb``) is mathematically the same
  but not bitwise (up to 5e-7 apart in fp32, 1.6e-2 in bf16, measured), and a sampled token may
  flip on such a difference, so a token-for-token comparison with KAME would drift.
* :class:`OracleLMGen` drives moshi's ``LMGen`` unchanged. The oracle embedding reaches
  ``forward_text`` through the one per-step tensor argument ``LMGen`` already passes to it,
  ``condition_sum``. That is safe under CUDA graphs (``CUDAGraphed`` copies tensor arguments
  into its static buffers) and needs no override of ``LMGen``. An ``OracleLMModel`` never has a
  condition fuser, so ``sum_condition`` has no other use here; conditioned models are refused.
* :class:`ReplicaOracles` holds one :class:`kame_sim.oracle.OracleState` per batch replica
  (our extension) or one shared stream expanded over the batch (KAME).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import moshi.models.lm as moshi_lm
import torch
from moshi.models.lm import LMGen, LMModel, LMOutput
from moshi.models.lm_utils import ScaledEmbedding, _init_layer

from kame_sim.oracle import AppendResult, OracleState

log = logging.getLogger(__name__)

ORACLE_PREFIX = "oracle_emb."
TEXT_EMB_PREFIX = "text_emb."


class OracleLMModel(LMModel):
    """Moshi's ``LMModel`` plus KAME's ``oracle_emb`` (keyword arguments only, as moshi's configs).

    With no oracle the model is moshi's, bit for bit: ``forward(codes)`` and ``forward_text(seq)``
    run moshi's code unchanged, so a legacy (plain Moshi) checkpoint upgraded with
    :func:`upgrade_legacy_state_dict` reproduces moshi's outputs exactly.
    """

    def __init__(self, **lm_kwargs: Any) -> None:
        if lm_kwargs.get("condition_provider") is not None or lm_kwargs.get("fuser") is not None:
            # sum_condition carries the oracle embedding in this class; a fuser would collide.
            raise ValueError("conditioned Moshi models (condition_provider/fuser) are not supported")
        if lm_kwargs.get("quantize"):
            # moshi swaps Linear layers for 8-bit ones at the end of LMModel.__init__, before
            # oracle_emb exists here, so a quantized OracleLMModel would differ from KAME's.
            raise ValueError("quantized Moshi models are not supported")
        super().__init__(**lm_kwargs)
        device, dtype = lm_kwargs.get("device"), lm_kwargs.get("dtype")
        # Same factory and arguments as moshi's text_emb: text_card + 1 rows (START included),
        # the zero token embeds to exactly 0, optional embedding norm and stream demuxing.
        self.oracle_emb = ScaledEmbedding(
            self.text_card + 1,
            self.dim,
            norm=bool(lm_kwargs.get("norm_emb", False)),
            device=device,
            dtype=dtype,
            zero_idx=self.zero_token_id,
            demux_second_stream=bool(lm_kwargs.get("demux_second_text_stream", False)),
        )
        self.oracle_emb.to(device=device, dtype=dtype)
        _init_layer(self.oracle_emb)
        # Oracle codes of the forward() call in progress, read by forward_text (see forward).
        self._forward_oracle_codes: torch.Tensor | None = None

    def forward(  # type: ignore[override]
        self,
        codes: torch.Tensor,
        condition_tensors: Any = None,
        oracle_codes: torch.Tensor | None = None,
    ) -> LMOutput:
        """Teacher-forced logits, as moshi's ``forward``, with the oracle token of each step added.

        ``oracle_codes`` [B, 1, T] holds the oracle token *fed at each step*: position ``t`` is
        added to the text embedding of input position ``t``, which is streaming step ``t``
        (moshi's input at position ``t`` is the initial token for ``t == 0`` and the codes of
        frame ``t - 1 - delay`` after), so ``forward(codes, oracle_codes=fed)`` reproduces the
        text logits of :class:`OracleLMGen` stepping with ``fed``. KAME's own ``forward`` takes
        tokens aligned with ``codes`` instead and shifts them by one behind a START token; use
        :func:`oracle_codes_from_kame` to convert. ``None`` adds nothing (plain moshi).

        moshi's delay/undelay logic is reused, not copied: the oracle codes are parked on the
        instance for the duration of the call and picked up by :meth:`forward_text`.
        """
        if oracle_codes is None:
            return super().forward(codes, condition_tensors)
        B, _, T = codes.shape
        if tuple(oracle_codes.shape) != (B, 1, T):
            raise ValueError(f"oracle_codes must have shape ({B}, 1, {T}), got {tuple(oracle_codes.shape)}")
        self._forward_oracle_codes = oracle_codes
        try:
            return super().forward(codes, condition_tensors)
        finally:
            self._forward_oracle_codes = None

    def forward_text(
        self,
        sequence: torch.Tensor,
        sum_condition: torch.Tensor | None = None,
        cross_attention_src: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Main transformer step; ``sum_condition`` is the oracle *embedding* [B, S, dim] or None.

        The oracle embedding joins the text embedding before the text embedding joins the audio
        sum, exactly KAME's arithmetic (see the module docstring for why this is not moshi's
        ``sum_condition`` addition). With no oracle, moshi's own ``forward_text`` runs.
        """
        oracle = sum_condition
        if self._forward_oracle_codes is not None:
            oracle = self.oracle_emb(self._forward_oracle_codes[:, 0])
        if oracle is None:
            return super().forward_text(sequence, None, cross_attention_src)
        _, K, _ = sequence.shape
        assert self.num_codebooks == K, (
            f"sequence {tuple(sequence.shape)} needs {self.num_codebooks} codebooks"
        )
        audio_sum: torch.Tensor | None = None
        for cb_index in range(self.num_audio_codebooks):
            audio_emb = self.emb[cb_index](sequence[:, cb_index + self.audio_offset])
            audio_sum = audio_emb if audio_sum is None else audio_sum + audio_emb
        text = self.text_emb(sequence[:, 0])
        text = text + oracle.to(text)
        input_ = text if audio_sum is None else audio_sum + text
        if cross_attention_src is not None:
            cross_attention_src = cross_attention_src.to(input_)
        transformer_out = self.transformer(input_, cross_attention_src=cross_attention_src)
        if self.out_norm:
            transformer_out = self.out_norm(transformer_out)
        text_logits = self.text_linear(transformer_out)[:, None]
        return transformer_out, text_logits


def oracle_codes_from_kame(oracle_tokens: torch.Tensor, text_card: int) -> torch.Tensor:
    """Convert KAME's ``forward(..., oracle_tokens=x)`` convention to ``oracle_codes``.

    KAME's training forward prepends START (``text_card``) to ``x`` [B, 1, T] and drops the last
    token, i.e. step ``t`` gets ``x[t - 1]`` and step 0 gets START.
    """
    start = torch.full_like(oracle_tokens[:, :, :1], text_card)
    return torch.cat([start, oracle_tokens[:, :, :-1]], dim=2)


def upgrade_legacy_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Give a plain Moshi state dict an ``oracle_emb`` as KAME does: a clone of ``text_emb``.

    Returns ``(state, upgraded)``; the input dict is not modified. A clone, not a view: the two
    embeddings must be free to diverge (fine-tuning) and safetensors refuses shared storage.
    """
    if any(key.startswith(ORACLE_PREFIX) for key in state):
        return state, False
    upgraded = dict(state)
    for key, value in state.items():
        if key.startswith(TEXT_EMB_PREFIX):
            upgraded[ORACLE_PREFIX + key[len(TEXT_EMB_PREFIX) :]] = value.detach().clone()
    return upgraded, True


_moshi_sample_token = moshi_lm.sample_token


def per_replica_sampler(generators: Sequence[torch.Generator]) -> Callable[..., torch.Tensor]:
    """moshi's ``sample_token``, drawing replica ``b``'s noise from ``generators[b]``.

    moshi samples top-k by the exponential race (``probs / Exp(1)``, argmax) with noise drawn from
    torch's global RNG for the whole batch at once, so replica ``b``'s draws depend on the batch
    size and on the replicas before it. Here each replica's noise, of the shape it would have alone
    (``[1, k]`` per sample), comes from its own generator, and the rest is moshi's arithmetic on the
    whole batch (row-wise, so a row does not depend on its neighbours). With B = 1 and a generator
    seeded like the global RNG, the tokens are exactly moshi's. Greedy decoding draws nothing.
    """
    gens = list(generators)

    def sample_token(
        logits: torch.Tensor,
        use_sampling: bool = False,
        temp: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.0,
    ) -> torch.Tensor:
        if not use_sampling or temp <= 0.0:
            return _moshi_sample_token(logits, use_sampling, temp, top_k, top_p)
        if top_p > 0.0:
            raise NotImplementedError("per-replica sampling supports top-k only (LMGen uses no top-p)")
        B = logits.shape[0]
        if len(gens) != B:
            raise ValueError(f"{len(gens)} generators for a batch of {B}")
        probs = torch.softmax(logits / temp, dim=-1)
        indices = None
        if top_k > 0:
            probs, indices = torch.topk(probs, min(top_k, probs.shape[-1]), dim=-1)
        rows = probs.reshape(B, -1, probs.shape[-1])
        noise = torch.stack(
            [torch.empty_like(rows[b]).exponential_(1, generator=g) for b, g in enumerate(gens)]
        )
        choice = (rows / noise).argmax(dim=-1, keepdim=True).reshape(*probs.shape[:-1], 1)
        token = choice if indices is None else indices.gather(-1, choice)
        return token[..., 0]

    return sample_token


@contextlib.contextmanager
def _sampling_with(sampler: Callable[..., torch.Tensor] | None) -> Iterator[None]:
    """Swap moshi's module-level ``sample_token`` (what ``LMGen`` calls) for ``sampler``, for one step."""
    if sampler is None:
        yield
        return
    moshi_lm.sample_token = sampler  # type: ignore[assignment]
    try:
        yield
    finally:
        moshi_lm.sample_token = _moshi_sample_token  # type: ignore[assignment]


class OracleLMGen:
    """moshi's ``LMGen`` for ``batch_size`` replicas, with one oracle token per replica per step.

    Sampling is moshi's and draws from torch's *global* RNG (``torch.manual_seed`` makes a run
    reproducible, as KAME's server does), unless ``generators`` gives one ``torch.Generator`` per
    replica: then replica ``b`` samples from ``generators[b]`` only (:func:`per_replica_sampler`),
    so its tokens do not depend on the batch size or the other replicas (up to the float
    differences of batched matrix products, docs/lockstep.md), and the global RNG is not touched.
    On CUDA the depformer (whose sampling moshi captures in a CUDA graph) then runs ungraphed.
    The oracle ids go through a persistent [B, 1] long buffer (same storage for the whole session)
    whose embedding is handed to ``LMGen`` as ``condition_sum`` before every step, from the first
    step on: a CUDA graph is captured with the argument kinds and shapes of its first calls, so a
    ``condition_sum`` that starts as None and later becomes a tensor breaks it (toolchain-facts.md;
    not re-checked here, no GPU was available).
    """

    def __init__(
        self,
        lm: OracleLMModel,
        batch_size: int = 1,
        use_sampling: bool = True,
        temp: float = 0.8,
        temp_text: float = 0.7,
        top_k: int = 250,
        top_k_text: int = 25,
        on_text_logits_hook: Callable[[torch.Tensor], None] | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        if not isinstance(lm, OracleLMModel):
            raise TypeError(f"OracleLMGen needs an OracleLMModel, got {type(lm).__name__}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if lm.context is None:
            raise ValueError("streaming needs the LM's `context` (KV-cache size) to be set")
        if generators is not None and len(generators) != batch_size:
            raise ValueError(f"{len(generators)} generators for batch_size {batch_size}")
        self.lm = lm
        self.batch_size = batch_size
        self._sampler = None if generators is None else per_replica_sampler(generators)
        self.lm_gen = LMGen(
            lm,
            use_sampling=use_sampling,
            temp=temp,
            temp_text=temp_text,
            top_k=top_k,
            top_k_text=top_k_text,
            on_text_logits_hook=on_text_logits_hook,
        )
        self._oracle_ids = torch.full(
            (batch_size, 1), lm.text_padding_token_id, dtype=torch.long, device=lm.device
        )

    @contextlib.contextmanager
    def streaming(self) -> Iterator[OracleLMGen]:
        """A streaming session (KV caches allocated for ``batch_size``); closed on exit."""
        with self.lm_gen.streaming(self.batch_size):
            state = self.lm_gen._streaming_state
            graphed = state is not None and state.graphed_depth is not None
            if self._sampler is not None and graphed and self.lm.device.type == "cuda":
                from moshi.utils.compile import CUDAGraphed

                # a graph would bake the per-replica generators' draws in; run it eagerly
                assert state is not None
                state.graphed_depth = CUDAGraphed(self.lm_gen.depformer_step, disable=True)
            yield self

    @property
    def oracle_ids(self) -> torch.Tensor:
        """The persistent [B, 1] buffer holding the oracle ids of the last step (read only)."""
        return self._oracle_ids

    def _oracle_tensor(self, oracle_tokens: Sequence[int] | torch.Tensor) -> torch.Tensor:
        B, top = self.batch_size, self.lm.text_initial_token_id
        if isinstance(oracle_tokens, torch.Tensor):
            ids = oracle_tokens.reshape(-1)
            if ids.shape[0] != B:
                raise ValueError(f"expected {B} oracle tokens, got shape {tuple(oracle_tokens.shape)}")
            # A range check on a GPU tensor would synchronise every step; check CPU tensors only.
            if ids.device.type == "cpu" and (bool((ids < -1).any()) or bool((ids > top).any())):
                raise ValueError(f"oracle tokens must lie in [-1, {top}], got {ids.tolist()}")
            return ids.reshape(B, 1)
        values = list(oracle_tokens)
        if len(values) != B:
            raise ValueError(f"expected {B} oracle tokens, got {len(values)}")
        if any(not -1 <= int(v) <= top for v in values):
            raise ValueError(f"oracle tokens must lie in [-1, {top}], got {values}")
        return torch.tensor(values, dtype=torch.long).view(B, 1)

    @torch.no_grad()
    def step(
        self, user_codes: torch.Tensor, oracle_tokens: Sequence[int] | torch.Tensor
    ) -> torch.Tensor | None:
        """One 80 ms frame: user codes [B, 8, 1] in, [B, 1 + dep_q, 1] out (None at step 0).

        ``oracle_tokens`` are the B ids fed at this step (KAME feeds padding 3 when no oracle
        token is due and START = ``text_card`` at a reset's anchor). ``-1`` (moshi's zero token)
        embeds to exactly zero, i.e. plain Moshi with no oracle input at all.
        """
        state = self.lm_gen._streaming_state
        if state is None:
            raise RuntimeError("call step() inside `with gen.streaming():`")
        self._oracle_ids.copy_(self._oracle_tensor(oracle_tokens), non_blocking=True)
        state.condition_sum = self.lm.oracle_emb(self._oracle_ids)
        with _sampling_with(self._sampler):
            return self.lm_gen.step(user_codes)


class ReplicaOracles:
    """One KAME oracle stream per batch replica, or one shared by all (``shared=True``, KAME).

    Each stream is a :class:`kame_sim.oracle.OracleState` (time-anchored reset/append, no read
    pointer). ``replica=None`` addresses every replica; with ``shared=True`` there is a single
    stream and addressing one replica is an error, since it would silently change them all.
    """

    def __init__(self, batch_size: int, start_id: int, padding_id: int = 3, shared: bool = False) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.shared = shared
        self.states = [OracleState(start_id, padding_id) for _ in range(1 if shared else batch_size)]

    def _targets(self, replica: int | None) -> list[OracleState]:
        if replica is None:
            return self.states
        if self.shared:
            raise ValueError("a shared oracle stream cannot be addressed per replica (replica must be None)")
        if not 0 <= replica < self.batch_size:
            raise ValueError(f"replica {replica} out of range for batch size {self.batch_size}")
        return [self.states[replica]]

    def reset(self, step: int, replica: int | None = None) -> None:
        """KAME's reset: ``[START]`` anchored at ``step`` (START fed at ``step``)."""
        for state in self._targets(replica):
            state.reset(step)

    def append(self, ids: Sequence[int], step: int, replica: int | None = None) -> list[AppendResult]:
        """KAME's append (an implicit reset when no oracle exists yet); one result per stream."""
        return [state.append(list(ids), step) for state in self._targets(replica)]

    def clear(self, replica: int | None = None) -> None:
        """Forget the oracle (a fresh session); KAME itself keeps it across sessions."""
        for state in self._targets(replica):
            state.clear()

    def tokens_at(self, step: int) -> list[int]:
        """The B oracle ids fed at ``step`` (padding where no token is due)."""
        if self.shared:
            return [self.states[0].token_at(step)[0]] * self.batch_size
        return [state.token_at(step)[0] for state in self.states]
