"""The oracle-capable LM: where the oracle enters, per-replica streams, KAME's schedule, determinism."""

from __future__ import annotations

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from moshi.models.lm import LMGen, LMModel

from kame_sim.frontend.kame.checkpoint import load_lm, load_mimi, read_checkpoint
from kame_sim.frontend.kame.lm import (
    OracleLMGen,
    OracleLMModel,
    ReplicaOracles,
    oracle_codes_from_kame,
    upgrade_legacy_state_dict,
)
from kame_sim.frontend.kame.stepper import OracleEvent, run_oracle_schedule
from kame_sim.frontend.kame.tiny import write_tiny_checkpoint
from kame_sim.frontend.kame.tiny_configs import TINY_LM_KWARGS

PAD = 3
START = TINY_LM_KWARGS["text_card"]  # 1024
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-lm") / "ckpt"
    write_tiny_checkpoint(directory, seed=0)
    return directory


@pytest.fixture(scope="module")
def lm(tiny_dir: Path) -> OracleLMModel:
    return load_lm(read_checkpoint(tiny_dir), CPU, torch.float32)


def _user_codes(batch: int, frames: int, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, 2048, (batch, 8, frames), generator=torch.Generator().manual_seed(seed))


def _stream(
    lm: OracleLMModel, user_codes: torch.Tensor, oracle: torch.Tensor, *, greedy: bool = True, seed: int = 0
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Step the LM with oracle ids [B, T]; return text logits [B, T, text_card] and step outputs."""
    batch, _, frames = user_codes.shape
    logits: list[torch.Tensor] = []
    gen = OracleLMGen(
        lm,
        batch_size=batch,
        use_sampling=not greedy,
        on_text_logits_hook=lambda x: logits.append(x[:, 0, 0].clone()),
    )
    outs = []
    torch.manual_seed(seed)
    with gen.streaming():
        for k in range(frames):
            outs.append(gen.step(user_codes[:, :, k : k + 1], oracle[:, k]))
    return torch.stack(logits, dim=1), outs


# ---------------------------------------------------------------- where the oracle enters


def test_oracle_token_changes_text_logits_at_its_step_and_not_before(lm: OracleLMModel) -> None:
    frames, s = 12, 6
    codes = _user_codes(1, frames)
    base = torch.full((1, frames), PAD)
    changed = base.clone()
    changed[0, s] = 500
    # Sampling on, same seed: identical logits before s means identical draws too.
    logits_a, _ = _stream(lm, codes, base, greedy=False, seed=11)
    logits_b, _ = _stream(lm, codes, changed, greedy=False, seed=11)
    assert torch.equal(logits_a[:, :s], logits_b[:, :s])
    assert (logits_a[:, s] - logits_b[:, s]).abs().max() > 1e-3


def test_per_replica_oracle_streams_are_independent(lm: OracleLMModel) -> None:
    frames = 14
    codes = _user_codes(1, frames).expand(2, -1, -1).contiguous()  # same user audio in both replicas
    events = [
        OracleEvent(2, "reset", replica=0),
        OracleEvent(2, "append", [10, 11, 12], replica=0),
        OracleEvent(4, "reset", replica=1),
        OracleEvent(4, "append", [700, 701], replica=1),
    ]
    pair = run_oracle_schedule(lm, codes, events, greedy=True)
    assert pair.oracle_fed[0].tolist() == [PAD, PAD, START, 10, 11, 12] + [PAD] * 8
    assert pair.oracle_fed[1].tolist() == [PAD] * 4 + [START, 700, 701] + [PAD] * 7

    logits_pair, _ = _stream(lm, codes, pair.oracle_fed)
    logits_one, _ = _stream(lm, codes[:1], pair.oracle_fed[:1])
    torch.testing.assert_close(logits_pair[:1], logits_one, rtol=0, atol=1e-5)
    assert torch.equal(logits_pair[1, :2], logits_pair[0, :2])  # same inputs until the first oracle
    assert (logits_pair[1, 2] - logits_pair[0, 2]).abs().max() > 1e-3

    single = run_oracle_schedule(lm, codes[:1], [e for e in events if e.replica == 0], greedy=True)
    assert torch.equal(single.text_tokens[0], pair.text_tokens[0])
    assert torch.equal(single.audio_tokens[0], pair.audio_tokens[0])


def test_shared_oracle_feeds_every_replica(lm: OracleLMModel) -> None:
    codes = _user_codes(1, 8).expand(3, -1, -1).contiguous()
    events = [OracleEvent(1, "reset"), OracleEvent(1, "append", [42, 43])]
    res = run_oracle_schedule(lm, codes, events, greedy=True, shared_oracle=True)
    expected = [PAD, START, 42, 43, PAD, PAD, PAD, PAD]
    assert all(row == expected for row in res.oracle_fed.tolist())
    assert torch.equal(res.text_tokens[0], res.text_tokens[2]) and torch.equal(
        res.audio_tokens[1], res.audio_tokens[2]
    )
    with pytest.raises(ValueError, match="replica"):
        run_oracle_schedule(lm, codes, [OracleEvent(0, "reset", replica=1)], shared_oracle=True)


def test_late_append_is_never_fed_and_reset_reanchors(lm: OracleLMModel) -> None:
    frames = 16
    events = [
        OracleEvent(0, "append", []),  # empty: not even an implicit reset
        OracleEvent(2, "reset"),
        OracleEvent(2, "append", [10, 11]),  # slots 3, 4
        OracleEvent(7, "append", [12]),  # slot 5 < 7: skipped for good, never played late
        OracleEvent(9, "reset"),
        OracleEvent(9, "append", [20]),  # slot 10
        OracleEvent(10, "append", [21, 22]),  # slots 11, 12; padding after the end
    ]
    res = run_oracle_schedule(lm, _user_codes(1, frames), events, greedy=True)
    assert res.oracle_fed[0].tolist() == [
        PAD,
        PAD,
        START,
        10,
        11,
        PAD,
        PAD,
        PAD,
        PAD,
        START,
        20,
        21,
        22,
        PAD,
        PAD,
        PAD,
    ]
    assert 12 not in res.oracle_fed.tolist()[0]


def test_append_without_oracle_is_an_implicit_reset_per_replica() -> None:
    oracles = ReplicaOracles(2, start_id=START)
    oracles.append([7, 8], step=1, replica=1)
    assert [oracles.tokens_at(s) for s in range(5)] == [
        [PAD, PAD],
        [PAD, START],
        [PAD, 7],
        [PAD, 8],
        [PAD, PAD],
    ]
    with pytest.raises(ValueError):
        oracles.reset(0, replica=2)


def test_first_step_output_is_ungenerated(lm: OracleLMModel) -> None:
    res = run_oracle_schedule(lm, _user_codes(1, 4), [], greedy=True)
    assert res.text_tokens.shape == (1, 4) and res.audio_tokens.shape == (1, lm.dep_q, 4)
    assert int(res.text_tokens[0, 0]) == -2 and bool((res.audio_tokens[:, :, 0] == -2).all())
    assert bool((res.text_tokens[:, 1:] >= 0).all()) and bool((res.audio_tokens[:, :, 1:] >= 0).all())
    assert res.oracle_fed.tolist() == [[PAD] * 4]


# ---------------------------------------------------------------- determinism and the global RNG


def test_same_seed_same_tokens_different_seed_different(lm: OracleLMModel) -> None:
    codes = _user_codes(1, 20)
    events = [OracleEvent(3, "reset"), OracleEvent(3, "append", [100, 200, 300])]
    a = run_oracle_schedule(lm, codes, events, seed=5)
    b = run_oracle_schedule(lm, codes, events, seed=5)
    c = run_oracle_schedule(lm, codes, events, seed=6)
    assert torch.equal(a.text_tokens, b.text_tokens) and torch.equal(a.audio_tokens, b.audio_tokens)
    assert not (torch.equal(a.text_tokens, c.text_tokens) and torch.equal(a.audio_tokens, c.audio_tokens))
    # The seed is just torch's global seed (as KAME's server does it): seeding by hand is the same.
    torch.manual_seed(5)
    d = run_oracle_schedule(lm, codes, events, seed=None)
    assert torch.equal(a.text_tokens, d.text_tokens) and torch.equal(a.audio_tokens, d.audio_tokens)


def test_global_rng_is_touched_only_by_sampling(lm: OracleLMModel, tmp_path: Path) -> None:
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt", seed=3)
    load_lm(ckpt, CPU, torch.float32)
    load_mimi(ckpt, CPU)
    run_oracle_schedule(lm, _user_codes(2, 6), [OracleEvent(1, "append", [5, 6])], seed=None, greedy=True)
    assert torch.equal(state, torch.random.get_rng_state())
    run_oracle_schedule(lm, _user_codes(1, 3), [], seed=None, greedy=False)
    assert not torch.equal(state, torch.random.get_rng_state()), "sampling draws from the global RNG"


# ---------------------------------------------------------------- equivalence with moshi and KAME


def test_forward_without_oracle_equals_moshi(lm: OracleLMModel) -> None:
    state, upgraded = upgrade_legacy_state_dict(lm.state_dict())
    assert not upgraded and state is not None
    plain = LMModel(**TINY_LM_KWARGS).eval()
    plain.load_state_dict(
        {k: v for k, v in lm.state_dict().items() if not k.startswith("oracle_emb.")}, strict=True
    )
    codes = torch.cat([torch.randint(0, 1024, (2, 1, 10)), torch.randint(0, 2048, (2, 16, 10))], dim=1)
    with torch.no_grad():
        ours, theirs = lm(codes), plain(codes)
    for a, b in ((ours.logits, theirs.logits), (ours.text_logits, theirs.text_logits)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(ours.mask, theirs.mask) and torch.equal(ours.text_mask, theirs.text_mask)


def test_zero_token_oracle_streams_exactly_like_moshi(lm: OracleLMModel) -> None:
    frames = 6
    codes = _user_codes(1, frames)
    ours, _ = _stream(lm, codes, torch.full((1, frames), -1))
    theirs: list[torch.Tensor] = []
    gen = LMGen(lm, use_sampling=False, on_text_logits_hook=lambda x: theirs.append(x[:, 0, 0].clone()))
    with gen.streaming(1):
        for k in range(frames):
            gen.step(codes[:, :, k : k + 1])
    assert torch.equal(ours, torch.stack(theirs, dim=1))


def test_teacher_forcing_matches_streaming(lm: OracleLMModel) -> None:
    """forward(codes, oracle_codes=fed) reproduces the streaming text logits of each step.

    Step ``t`` sees the generated frame ``t - 1`` (returned by step ``t``) and the user frame
    ``t`` at delay 0, so forward's frame ``j`` is: generated tokens returned at step ``j + 1``
    and user codes of frame ``j + 1``.
    """
    frames = 16
    codes = _user_codes(2, frames)
    oracle = torch.full((2, frames), PAD)
    oracle[0, 3:7] = torch.tensor([START, 5, 6, 7])
    oracle[1, 5:8] = torch.tensor([START, 900, 901])
    stream_logits, outs = _stream(lm, codes, oracle, greedy=False, seed=3)
    generated = torch.stack([o[:, :, 0] for o in outs[1:]], dim=2)  # type: ignore[index]
    forced = torch.cat([generated, codes[:, :, 1:]], dim=1)  # [B, 17, T - 1]
    with torch.no_grad():
        out = lm(forced, oracle_codes=oracle[:, None, : frames - 1])
    torch.testing.assert_close(out.text_logits[:, 0], stream_logits[:, : frames - 1], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        no_oracle = lm(forced)
    assert (no_oracle.text_logits[:, 0, 4] - out.text_logits[:, 0, 4]).abs().max() > 1e-3


def test_kame_forward_convention_conversion() -> None:
    x = torch.tensor([[[5, 6, 7]]])
    assert oracle_codes_from_kame(x, text_card=48).tolist() == [[[48, 5, 6]]]


def test_step_validates_oracle_tokens(lm: OracleLMModel) -> None:
    gen = OracleLMGen(lm, batch_size=2, use_sampling=False)
    codes = _user_codes(2, 1)
    with pytest.raises(RuntimeError, match="streaming"):
        gen.step(codes, [PAD, PAD])
    with gen.streaming():
        buffer = gen.oracle_ids
        with pytest.raises(ValueError, match="expected 2"):
            gen.step(codes, [PAD])
        with pytest.raises(ValueError, match="must lie in"):
            gen.step(codes, [PAD, START + 1])
        gen.step(codes, torch.tensor([START, 17]))
        assert gen.oracle_ids is buffer and buffer.tolist() == [[START], [17]]


def test_oracle_joins_the_text_embedding_as_in_kame(lm: OracleLMModel) -> None:
    """The transformer input is audio_sum + (text_emb + oracle_emb), KAME's order, bit for bit.

    moshi's sum_condition order, (audio_sum + text_emb) + oracle_emb, is the same sum in exact
    arithmetic but not in floating point, which is why forward_text is overridden.
    """
    seq = torch.cat([torch.randint(0, 1024, (1, 1, 5)), torch.randint(0, 2048, (1, 16, 5))], dim=1)
    oracle_ids = torch.tensor([[3, START, 17, 18, 3]])
    seen: list[torch.Tensor] = []
    handle = lm.transformer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            lm.forward_text(seq, lm.oracle_emb(oracle_ids))
    finally:
        handle.remove()
    with torch.no_grad():
        audio = lm.emb[0](seq[:, 1])
        for i in range(1, 16):
            audio = audio + lm.emb[i](seq[:, i + 1])
        text, oracle = lm.text_emb(seq[:, 0]), lm.oracle_emb(oracle_ids)
    assert torch.equal(seen[0], audio + (text + oracle))
    assert not torch.equal(seen[0], (audio + text) + oracle)
