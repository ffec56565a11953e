"""Run the oracle-capable LM over a fixed oracle schedule: the token-for-token comparison API.

:func:`run_oracle_schedule` is the smallest faithful model of KAME's server loop for one batch:
before step ``k`` it applies the oracle events of frame ``k`` (KAME drains its oracle queue at
every frame boundary, so an event takes effect at the next step, never mid-frame), feeds the
oracle token due at step ``k`` and steps the LM on the user's Mimi codes of frame ``k``. Given
the same weights, user codes, events and seed, KAME's own ``LMGen`` must produce the same
tokens; that is what this function is for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from kame_sim.frontend.kame.lm import OracleLMGen, OracleLMModel, ReplicaOracles

UNGENERATED_ID = -2  # moshi's "not generated yet" id, used for the first step's missing output


@dataclass
class OracleEvent:
    """One oracle queue item applied at the frame boundary before step ``frame``.

    ``reset`` starts a new oracle (START fed at ``frame``); ``append`` adds token ids. ``replica``
    None means every replica (and is the only choice for a shared oracle).
    """

    frame: int
    action: Literal["reset", "append"]
    ids: list[int] = field(default_factory=list)
    replica: int | None = None


@dataclass
class StepResult:
    """What ``lm_gen.step`` returned at each step, and the oracle ids fed.

    Column ``k`` of ``text_tokens`` / ``audio_tokens`` is moshi's output of step ``k``; column 0
    is ``-2`` (moshi returns nothing at the first step). Because of the acoustic delay of one
    frame, step ``k`` returns the aligned frame ``k - 1``: its text token and semantic code were
    sampled at step ``k - 1`` (after ``oracle_fed[:, k - 1]`` was fed), its seven acoustic codes
    at step ``k``. So the oracle token fed at step ``s`` can first show in ``text_tokens[:, s + 1]``.
    ``oracle_fed[:, k]`` is the oracle id fed at step ``k``.
    """

    text_tokens: torch.Tensor  # [B, T] long
    audio_tokens: torch.Tensor  # [B, dep_q, T] long
    oracle_fed: torch.Tensor  # [B, T] long


def _events_by_frame(events: Sequence[OracleEvent], batch: int, shared: bool) -> dict[int, list[OracleEvent]]:
    by_frame: dict[int, list[OracleEvent]] = defaultdict(list)
    for event in events:
        if event.frame < 0:
            raise ValueError(f"oracle event at negative frame {event.frame}")
        if event.action not in ("reset", "append"):
            raise ValueError(f"unknown oracle action {event.action!r}")
        if event.replica is not None and (shared or not 0 <= event.replica < batch):
            raise ValueError(f"event replica {event.replica} invalid (batch {batch}, shared={shared})")
        by_frame[event.frame].append(event)  # stable: same-frame events keep their order
    return by_frame


@torch.no_grad()
def run_oracle_schedule(
    lm: OracleLMModel,
    user_codes: torch.Tensor,
    events: Sequence[OracleEvent],
    *,
    seed: int | None = 42424242,
    greedy: bool = False,
    shared_oracle: bool = False,
) -> StepResult:
    """Step ``lm`` over T frames of ``user_codes`` [B, 8, T] (or [8, T]) with an oracle schedule.

    Sampling is moshi's and draws from torch's *global* RNG, exactly like KAME's server: with
    ``seed`` (KAME's server uses 42424242) the global RNG is seeded with ``torch.manual_seed``
    first, so the run is reproducible and comparable with KAME seeded the same way; ``seed=None``
    leaves the RNG as it is. ``greedy`` turns sampling off (argmax), which needs no seed.
    Sampling parameters are KAME's defaults (temp 0.8 / text 0.7, top-k 250 / text 25).
    Events at frame ``k`` take effect at step ``k`` (applied in their given order); events at
    frames >= T never take effect. ``shared_oracle`` reproduces KAME's single oracle stream.
    """
    if user_codes.dim() == 2:
        user_codes = user_codes[None]
    if user_codes.dim() != 3:
        raise ValueError(f"user_codes must be [B, K, T] or [K, T], got {tuple(user_codes.shape)}")
    B, _, T = user_codes.shape
    by_frame = _events_by_frame(events, B, shared_oracle)
    oracles = ReplicaOracles(B, lm.text_initial_token_id, lm.text_padding_token_id, shared=shared_oracle)
    gen = OracleLMGen(lm, batch_size=B, use_sampling=not greedy)
    user_codes = user_codes.to(lm.device)
    text = torch.full((B, T), UNGENERATED_ID, dtype=torch.long)
    audio = torch.full((B, lm.dep_q, T), UNGENERATED_ID, dtype=torch.long)
    fed = torch.empty((B, T), dtype=torch.long)
    if seed is not None:
        torch.manual_seed(seed)
    with gen.streaming():
        for k in range(T):
            for event in by_frame.get(k, ()):
                if event.action == "reset":
                    oracles.reset(k, event.replica)
                else:
                    oracles.append(event.ids, k, event.replica)
            tokens = oracles.tokens_at(k)
            fed[:, k] = torch.tensor(tokens, dtype=torch.long)
            out = gen.step(user_codes[:, :, k : k + 1], tokens)
            if out is not None:
                out = out[:, :, 0].cpu()
                text[:, k] = out[:, 0]
                audio[:, :, k] = out[:, 1:]
    return StepResult(text_tokens=text, audio_tokens=audio, oracle_fed=fed)
