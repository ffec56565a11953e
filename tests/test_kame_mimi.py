"""Mimi helpers of the KAME front-end: user-code cache, streaming decoder, stereo wav, fingerprints.

A tiny random Mimi (real architecture, narrow; ~0.2 M parameters) runs the real moshi code paths
on CPU in milliseconds per frame; its codebooks are filled (they start all zero) so codes vary.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import wave
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from moshi.models.loaders import get_mimi
from safetensors.torch import save_file

from kame_sim.conversation import Conversation, load_conversation
from kame_sim.errors import InputError
from kame_sim.frontend.kame.mimi import (
    FrontendAudioDecoder,
    UserCodesCache,
    encode_channel,
    fill_codebooks_,
    mimi_fingerprint,
    mimi_fingerprint_from_state,
    write_conversation_wav,
)
from kame_sim.frontend.kame.tiny_configs import TINY_MIMI_CONFIG

REPO = Path(__file__).resolve().parents[1]
FRAME = 1920
# 12 s of the demo: past the encoder's 10 s attention context, still well under a second to encode.
TEST_FRAMES = 150
# The cache tests encode many times; 3.2 s of audio keeps them fast.
SHORT_FRAMES = 40


def tiny_mimi(seed: int = 0):
    """A tiny random Mimi, built without touching torch's global RNG state, codebooks filled."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mimi = get_mimi(None, TINY_MIMI_CONFIG, num_codebooks=8, device="cpu")
    return fill_codebooks_(mimi, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def demo() -> Conversation:
    conv = load_conversation(REPO / "scenarios" / "data" / "demo")
    audio = np.array(conv.audio[:, : TEST_FRAMES * FRAME + 700])  # + a partial frame, to be dropped
    audio.setflags(write=False)
    return dataclasses.replace(conv, audio=audio)


@pytest.fixture(scope="module")
def short(demo) -> Conversation:
    audio = np.array(demo.audio[:, : SHORT_FRAMES * FRAME])
    audio.setflags(write=False)
    return dataclasses.replace(demo, audio=audio, content_hash="short-" + demo.content_hash)


@pytest.fixture(scope="module")
def mimi():
    return tiny_mimi()


@pytest.fixture(scope="module")
def fingerprint(mimi) -> str:
    return mimi_fingerprint_from_state(mimi)


class CountingEncode:
    """Wraps ``mimi.encode`` on the instance to count calls (streaming chunks included)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, mimi) -> None:
        self.calls = 0
        original = mimi.encode

        def encode(x):
            self.calls += 1
            return original(x)

        monkeypatch.setattr(mimi, "encode", encode)


# --- encode --------------------------------------------------------------------------------------


def test_encode_shape_dtype_range_and_variety(mimi, demo):
    codes = encode_channel(mimi, demo.audio[0], "cpu")
    assert codes.shape == (8, TEST_FRAMES) == (8, demo.n_frames(FRAME))
    assert codes.dtype == np.int16
    assert codes.min() >= 0 and codes.max() < 2048
    # Filled codebooks: not one constant code (all-zero codebooks would give code 0 everywhere).
    assert len(np.unique(codes)) > 8
    assert all(len(np.unique(row)) > 1 for row in codes)


def test_default_encode_is_the_live_servers_frame_by_frame_streaming(mimi, demo):
    """The cache must hold what KAME's server computes: mimi.encode on each 1920-sample frame,
    with Mimi's streaming state reset once, right after the session's first frame."""
    n = demo.n_frames(FRAME)
    live = []
    with torch.no_grad(), mimi.streaming(1):
        for k in range(n):
            live.append(mimi.encode(torch.tensor(demo.audio[0][k * FRAME : (k + 1) * FRAME])[None, None]))
            if k == 0:
                mimi.reset_streaming()
    expected = torch.cat(live, dim=-1)[0].numpy().astype(np.int16)
    assert np.array_equal(encode_channel(mimi, demo.audio[0], "cpu"), expected)


def test_chunked_and_offline_encode_equal_within_the_attention_context(mimi, demo):
    """Within 250 encoder steps (125 frames, 10 s) nothing is evicted from the KV ring: all agree.

    Past it, moshi's ring cache drops keys (see encode_channel), so only the live mode is kept.
    """
    audio = demo.audio[0][: 120 * FRAME]
    live = encode_channel(mimi, audio, "cpu")
    assert np.array_equal(encode_channel(mimi, audio, "cpu", chunk_frames=None), live)
    for chunk in (7, 50, 120):
        assert np.array_equal(encode_channel(mimi, audio, "cpu", chunk_frames=chunk), live), chunk


def test_partial_and_empty_audio(mimi):
    assert encode_channel(mimi, np.zeros(FRAME - 1, np.float32), "cpu").shape == (8, 0)
    assert encode_channel(mimi, np.zeros(3 * FRAME + 5, np.float32), "cpu").shape == (8, 3)


def test_unfilled_codebooks_emit_only_code_zero(demo):
    """Why fill_codebooks_ exists."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        raw = get_mimi(None, TINY_MIMI_CONFIG, num_codebooks=8, device="cpu")
    assert not encode_channel(raw, demo.audio[0][: 20 * FRAME], "cpu").any()


def test_fill_codebooks_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = tiny_mimi(5), tiny_mimi(5)
    assert torch.equal(torch.rand(3), expected)
    assert mimi_fingerprint_from_state(a) == mimi_fingerprint_from_state(b)
    assert mimi_fingerprint_from_state(a) != mimi_fingerprint_from_state(tiny_mimi(6))


# --- cache ---------------------------------------------------------------------------------------


def test_cache_miss_then_hit_without_encoding(tmp_path, monkeypatch, mimi, fingerprint, short):
    counter = CountingEncode(monkeypatch, mimi)
    cache = UserCodesCache(tmp_path / "codes")
    first = cache.get_or_encode(short, 0, mimi, fingerprint, "cpu")
    assert (cache.misses, cache.hits) == (1, 0)
    calls = counter.calls
    assert calls >= 1
    second = cache.get_or_encode(short, 0, mimi, fingerprint, "cpu")
    assert (cache.misses, cache.hits) == (1, 1)
    assert counter.calls == calls  # the hit did not touch the codec
    assert np.array_equal(first, second) and second.dtype == np.int16
    # A fresh cache object (a later run) hits the same file.
    again = UserCodesCache(tmp_path / "codes")
    assert np.array_equal(again.get_or_encode(short, 0, mimi, fingerprint, "cpu"), first)
    assert again.hits == 1 and counter.calls == calls
    assert np.array_equal(first, encode_channel(mimi, short.audio[0], "cpu"))
    assert [p.suffix for p in (tmp_path / "codes").iterdir()] == [".npy"]  # no temp files left


def test_cache_key_depends_on_channel_content_and_codec(tmp_path, mimi, fingerprint, short):
    cache = UserCodesCache(tmp_path)
    key = cache.key(short, 0, fingerprint)
    assert cache.key(short, 0, fingerprint) == key
    assert cache.key(short, 1, fingerprint) != key
    assert cache.key(dataclasses.replace(short, content_hash="0" * 64), 0, fingerprint) != key
    assert cache.key(short, 0, "f" * 64) != key
    assert cache.key(dataclasses.replace(short, sample_rate=16000), 0, fingerprint) != key
    assert UserCodesCache(tmp_path, encode_chunk_frames=None).key(short, 0, fingerprint) != key
    # And the entries really are separate: the other channel gets its own (different) codes.
    c0 = cache.get_or_encode(short, 0, mimi, fingerprint, "cpu")
    c1 = cache.get_or_encode(short, 1, mimi, fingerprint, "cpu")
    assert cache.misses == 2 and not np.array_equal(c0, c1)
    assert len(list(tmp_path.glob("*.npy"))) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.write_bytes(b"not a numpy file"),
        lambda p: np.save(p, np.zeros((8, 3), np.int16)),  # wrong shape
        lambda p: np.save(p, np.zeros((8, SHORT_FRAMES), np.int64)),  # wrong dtype
        lambda p: np.save(p, np.full((8, SHORT_FRAMES), 4000, np.int16)),  # out of range
    ],
    ids=["truncated", "garbage", "shape", "dtype", "range"],
)
def test_corrupt_cache_file_is_reencoded(tmp_path, caplog, mimi, fingerprint, short, damage):
    cache = UserCodesCache(tmp_path)
    good = cache.get_or_encode(short, 0, mimi, fingerprint, "cpu")
    path = cache.path_for(short, 0, fingerprint)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="kame_sim.frontend.kame.mimi"):
        again = cache.get_or_encode(short, 0, mimi, fingerprint, "cpu")
    assert np.array_equal(again, good)
    assert cache.misses == 2 and cache.hits == 0
    assert "re-encoding" in caplog.text
    # The rewritten file is valid again.
    assert np.array_equal(np.load(path), good)
    assert np.array_equal(cache.get_or_encode(short, 0, mimi, fingerprint, "cpu"), good)
    assert cache.hits == 1


def test_cache_input_errors(tmp_path, mimi, fingerprint, short):
    cache = UserCodesCache(tmp_path)
    with pytest.raises(InputError, match="channel"):
        cache.get_or_encode(short, 2, mimi, fingerprint, "cpu")
    with pytest.raises(InputError, match="sample_rate"):
        cache.get_or_encode(dataclasses.replace(short, sample_rate=16000), 0, mimi, fingerprint, "cpu")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="codes_cache"):
        UserCodesCache(tmp_path / "file")


# --- decoder -------------------------------------------------------------------------------------


def test_decoder_frames_silence_and_equality_with_offline(mimi, demo):
    codes = torch.from_numpy(encode_channel(mimi, demo.audio[0][: 6 * FRAME], "cpu").astype(np.int64))
    ungenerated = torch.full((1, 8, 1), -2, dtype=torch.long)
    with FrontendAudioDecoder(mimi, "cpu") as dec:
        assert mimi.is_streaming
        dec.push(None)
        dec.push(ungenerated)
        for k in range(6):
            dec.push(codes[None, :, k : k + 1])
        dec.push(None)
    assert not mimi.is_streaming  # the codec is handed back
    pcm = dec.pcm()
    assert pcm.dtype == np.float32 and pcm.shape == (FRAME * 9,) and dec.n_frames == 9
    assert not pcm[: 2 * FRAME].any() and not pcm[8 * FRAME :].any()
    voiced = pcm[2 * FRAME : 8 * FRAME]
    assert np.abs(voiced).max() > 0
    # Silent pushes do not advance the decoder: the voiced part equals one offline decode.
    with torch.no_grad():
        offline = mimi.decode(codes[None])[0, 0].numpy()
    np.testing.assert_allclose(voiced, offline[: 6 * FRAME], atol=1e-5)


def test_decoder_misuse(mimi):
    dec = FrontendAudioDecoder(mimi, "cpu")
    with pytest.raises(RuntimeError, match="not started"):
        dec.push(None)
    with dec, pytest.raises(ValueError, match="shape"):
        dec.push(torch.zeros((1, 7, 1), dtype=torch.long))
    with dec, pytest.raises(RuntimeError, match="streaming"):
        encode_channel(mimi, np.zeros(FRAME, np.float32), "cpu")
    assert not mimi.is_streaming
    assert dec.pcm().shape == (0,)


# --- wav -----------------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.reshape(-1, w.getnchannels()), w.getnchannels(), w.getframerate()


def test_conversation_wav_user_left_frontend_right(tmp_path, mimi, demo):
    user = demo.audio[0][: 5 * FRAME]
    codes = torch.from_numpy(encode_channel(mimi, demo.audio[1][: 4 * FRAME], "cpu").astype(np.int64))
    with FrontendAudioDecoder(mimi, "cpu") as dec:
        for k in range(4):
            dec.push(codes[None, :, k : k + 1])
    front = dec.pcm()
    path = tmp_path / "out" / "session.wav"
    write_conversation_wav(path, user, front, frontend_offset_samples=FRAME)
    data, channels, rate = read_wav(path)
    assert channels == 2 and rate == 24000
    assert data.shape[0] == 5 * FRAME  # both tracks end together here
    np.testing.assert_allclose(data[:, 0] / 32767.0, user, atol=1 / 32767)
    assert not data[:FRAME, 1].any()  # the offset delays the front-end track
    np.testing.assert_allclose(data[FRAME:, 1] / 32767.0, np.clip(front, -1, 1), atol=1 / 32767)
    assert [p.name for p in path.parent.iterdir()] == ["session.wav"]  # no temp file left


def test_conversation_wav_pads_and_clips(tmp_path, caplog):
    path = tmp_path / "x.wav"
    with caplog.at_level(logging.WARNING):
        write_conversation_wav(path, np.full(10, 0.5, np.float32), np.array([2.0, -3.0, np.nan], np.float32))
    data, _, _ = read_wav(path)
    assert data.shape == (10, 2)
    assert data[:, 0].tolist() == [16384] * 10  # round(0.5 * 32767)
    assert data[:3, 1].tolist() == [32767, -32767, 0] and not data[3:, 1].any()
    assert "clipped" in caplog.text
    write_conversation_wav(path, np.zeros(2, np.float32), np.ones(6, np.float32) * 0.25)
    data, _, _ = read_wav(path)
    assert data.shape == (6, 2) and not data[:, 0].any()


# --- fingerprints --------------------------------------------------------------------------------


def test_fingerprint_changes_with_weights_config_and_codebooks(tmp_path):
    model = tiny_mimi(3)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights = tmp_path / "mimi.safetensors"
    save_file(state, str(weights))
    base = mimi_fingerprint(weights, TINY_MIMI_CONFIG, 8)
    assert mimi_fingerprint(weights, dict(reversed(list(TINY_MIMI_CONFIG.items()))), 8) == base  # canonical
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(weights.read_bytes())
    assert mimi_fingerprint(copy, TINY_MIMI_CONFIG, 8) == base  # by content, not by name
    assert mimi_fingerprint(weights, TINY_MIMI_CONFIG, 4) != base
    assert mimi_fingerprint(weights, {**TINY_MIMI_CONFIG, "frame_rate": 25.0}, 8) != base
    assert mimi_fingerprint(None, None, 8) != mimi_fingerprint(None, TINY_MIMI_CONFIG, 8)

    before = mimi_fingerprint_from_state(model)
    name = next(k for k in state if k.endswith("weight"))
    state[name] = state[name].clone()
    state[name].view(-1)[0] += 1e-3
    save_file(state, str(weights))
    assert mimi_fingerprint(weights, TINY_MIMI_CONFIG, 8) != base
    model.load_state_dict(state)
    assert mimi_fingerprint_from_state(model) != before
    other = tiny_mimi(3)
    eight = mimi_fingerprint_from_state(other)
    other.set_num_codebooks(4)
    assert mimi_fingerprint_from_state(other) != eight


def test_fingerprint_input_errors(tmp_path):
    with pytest.raises(InputError, match="mimi_weights"):
        mimi_fingerprint(tmp_path / "missing.safetensors", None, 8)
    with pytest.raises(InputError, match="mimi_config"):
        mimi_fingerprint(None, {"x": object()}, 8)
    with pytest.raises(InputError, match="num_codebooks"):
        mimi_fingerprint(None, None, 0)
