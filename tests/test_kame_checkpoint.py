"""Checkpoint reading and loading: the real legacy Moshi fixture, the tiny checkpoint, bad input."""

from __future__ import annotations

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from kame_sim.errors import InputError
from kame_sim.frontend.kame.checkpoint import (
    KameCheckpoint,
    default_dtype,
    load_lm,
    load_mimi,
    load_tokenizer,
    read_checkpoint,
    resolve_device,
)
from kame_sim.frontend.kame.lm import OracleLMModel, upgrade_legacy_state_dict
from kame_sim.frontend.kame.tiny import KAME_LM_GEN_CONFIG, write_tiny_checkpoint
from kame_sim.frontend.kame.tiny_configs import TINY_TEXT_CARD

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "moshi_test_lm"
# The architecture of the fixture, from its README (moshi's own test LM).
FIXTURE_KWARGS = {
    "delays": [0, 1, 2, 4],
    "n_q": 3,
    "dep_q": 3,
    "card": 32,
    "text_card": 48,
    "dim": 16,
    "num_layers": 2,
    "num_heads": 1,
    "hidden_scale": 1,
    "depformer_dim": 16,
    "depformer_multi_linear": True,
    "depformer_weights_per_step": True,
    "depformer_weights_per_step_schedule": [0, 1, 1],
    "depformer_low_rank_embeddings": 8,
    "depformer_num_heads": 1,
    "depformer_gating": "silu",
    "context": 4,
}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fixture_dir() -> Path:
    if not (FIXTURE / "test_lm_model.safetensors").is_file():
        pytest.skip(f"moshi test LM fixture not found at {FIXTURE} (CI provides ../shared)")
    return FIXTURE


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "ckpt"
    write_tiny_checkpoint(directory, seed=0)
    return directory


@pytest.fixture
def tiny_copy(tiny_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    return Path(shutil.copytree(tiny_dir, tmp_path / "ckpt"))


def _cross_entropy(logits: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> float:
    return F.cross_entropy(logits[mask].double(), targets[mask]).item()


# ---------------------------------------------------------------- legacy fixture


def test_legacy_fixture_upgrades_and_reproduces_reference_cross_entropy(fixture_dir: Path) -> None:
    state = load_file(str(fixture_dir / "test_lm_model.safetensors"))
    assert not any(k.startswith("oracle_emb.") for k in state)
    upgraded, did = upgrade_legacy_state_dict(state)
    assert did
    assert not any(k.startswith("oracle_emb.") for k in state), "the input dict must not be modified"
    model = OracleLMModel(**FIXTURE_KWARGS)
    model.load_state_dict(upgraded, strict=True)
    model.eval()
    assert torch.equal(model.oracle_emb.weight, model.text_emb.weight)
    assert model.oracle_emb.weight.data_ptr() != model.text_emb.weight.data_ptr()
    assert upgraded["oracle_emb.weight"].data_ptr() != state["text_emb.weight"].data_ptr()

    codes = load_file(str(fixture_dir / "test_lm_codes.safetensors"))["codes"]
    ref = load_file(str(fixture_dir / "test_lm_out.safetensors"))
    with torch.no_grad():
        out = model(codes)
    assert torch.equal(out.mask, ref["mask"]) and torch.equal(out.text_mask, ref["text_mask"])
    audio_targets = codes[:, 1 : 1 + model.dep_q]
    text_targets = codes[:, :1]
    for ours, theirs in (
        (
            _cross_entropy(out.logits, out.mask, audio_targets),
            _cross_entropy(ref["logits"], ref["mask"], audio_targets),
        ),
        (
            _cross_entropy(out.text_logits, out.text_mask, text_targets),
            _cross_entropy(ref["text_logits"], ref["text_mask"], text_targets),
        ),
    ):
        assert abs(ours - theirs) / abs(theirs) < 1e-6, (ours, theirs)


def test_legacy_fixture_through_load_lm_logs_the_upgrade(
    fixture_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = KameCheckpoint(
        root=fixture_dir,
        lm_weights=fixture_dir / "test_lm_model.safetensors",
        mimi_weights=fixture_dir / "absent",
        tokenizer=fixture_dir / "absent",
        lm_kwargs=dict(FIXTURE_KWARGS),
        mimi_config=None,
    )
    with caplog.at_level(logging.INFO, logger="kame_sim.frontend.kame.checkpoint"):
        model = load_lm(ckpt, CPU, torch.float32)
    assert any("oracle_emb" in r.getMessage() and "text_emb" in r.getMessage() for r in caplog.records)
    assert isinstance(model, OracleLMModel) and not model.training
    assert torch.equal(model.oracle_emb.weight, model.text_emb.weight)
    assert model.oracle_emb.weight.data_ptr() != model.text_emb.weight.data_ptr()
    assert all(p.device.type == "cpu" for p in model.parameters())


# ---------------------------------------------------------------- tiny checkpoint


def test_tiny_checkpoint_round_trip(tiny_dir: Path) -> None:
    ckpt = read_checkpoint(tiny_dir)
    assert ckpt.lm_weights == tiny_dir / "model.safetensors"
    assert ckpt.mimi_weights == tiny_dir / "mimi.safetensors"
    assert ckpt.tokenizer == tiny_dir / "tokenizer.model"
    assert ckpt.mimi_config is not None and ckpt.mimi_config["quantizer"]["n_q"] == 8
    assert ckpt.lm_gen_config == KAME_LM_GEN_CONFIG
    assert "moshi_name" not in ckpt.lm_kwargs and ckpt.lm_kwargs["text_card"] == TINY_TEXT_CARD

    lm = load_lm(ckpt, CPU, torch.float32)
    file_state = load_file(str(ckpt.lm_weights))
    assert "oracle_emb.weight" in file_state
    assert set(lm.state_dict()) == set(file_state)
    assert all(torch.equal(lm.state_dict()[k], v) for k, v in file_state.items())
    assert not torch.equal(lm.oracle_emb.weight, lm.text_emb.weight)  # its own random init

    tok = load_tokenizer(ckpt)
    assert tok.vocab_size == lm.text_card == TINY_TEXT_CARD

    mimi = load_mimi(ckpt, CPU)
    with torch.no_grad():
        codes = mimi.encode(0.1 * torch.randn(1, 1, 1920 * 3, generator=torch.Generator().manual_seed(0)))
    assert codes.shape == (1, 8, 3)
    assert int(codes.max()) > 0, "filled codebooks must not emit only code 0"


def test_tiny_checkpoint_bytes_are_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    def digests(directory: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}

    again = digests(write_tiny_checkpoint(tmp_path / "again", seed=0).root)
    assert again == digests(tiny_dir)
    other = digests(write_tiny_checkpoint(tmp_path / "other", seed=1).root)
    assert other["model.safetensors"] != again["model.safetensors"]
    assert other["mimi.safetensors"] != again["mimi.safetensors"]
    assert other["config.json"] == again["config.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directory left behind"


def test_non_empty_directory_needs_overwrite(tiny_copy: Path) -> None:
    (tiny_copy / "notes.txt").write_text("mine")
    with pytest.raises(InputError) as err:
        write_tiny_checkpoint(tiny_copy, seed=3)
    assert str(tiny_copy) in str(err.value) and "not empty" in str(err.value)
    before = (tiny_copy / "model.safetensors").read_bytes()
    write_tiny_checkpoint(tiny_copy, seed=3, overwrite=True)
    assert (tiny_copy / "model.safetensors").read_bytes() != before
    assert (tiny_copy / "notes.txt").read_text() == "mine", "overwrite replaces only the checkpoint files"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("config.json", None),
        ("model.safetensors", "moshi_name"),
        ("mimi.safetensors", "mimi_name"),
        ("tokenizer.model", "tokenizer_name"),
        ("mimi_config.json", "mimi_config_name"),
    ],
)
def test_missing_file_is_named(tiny_copy: Path, name: str, field: str | None) -> None:
    (tiny_copy / name).unlink()
    with pytest.raises(InputError) as err:
        read_checkpoint(tiny_copy)
    assert err.value.source == str(tiny_copy / name)
    assert err.value.field == field
    assert "not found" in err.value.message


def _edit_config(directory: Path, **changes: object) -> Path:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"dimm": 128}, "dimm", "unknown key"),
        ({"depformer_num_layerz": 1}, "depformer_num_layerz", "unknown key"),
        ({"lora": True}, "lora", "LoRA"),
        ({"moshi_name": "hf://kyutai/moshiko/model.safetensors"}, "moshi_name", "local files only"),
        ({"lm_gen_config": {"temperature": 1.0}}, "lm_gen_config.temperature", "unknown key"),
        ({"model_type": "hibiki"}, "model_type", "not supported"),
    ],
)
def test_bad_config_key_is_named(tiny_copy: Path, changes: dict, field: str, words: str) -> None:
    config = _edit_config(tiny_copy, **changes)
    with pytest.raises(InputError) as err:
        read_checkpoint(tiny_copy)
    assert err.value.source == str(config)
    assert err.value.field == field
    assert words in err.value.message


def test_missing_architecture_key_is_an_error_not_the_7b_default(tiny_copy: Path) -> None:
    config = json.loads((tiny_copy / "config.json").read_text())
    del config["dim"]
    (tiny_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as err:
        read_checkpoint(tiny_copy)
    assert err.value.field == "dim" and "config.json" in str(err.value)


def test_tokenizer_vocab_must_match_text_card(tiny_copy: Path) -> None:
    _edit_config(tiny_copy, text_card=1000)
    ckpt = read_checkpoint(tiny_copy)
    with pytest.raises(InputError) as err:
        load_tokenizer(ckpt)
    assert err.value.source == str(tiny_copy / "tokenizer.model")
    assert err.value.field == "vocab_size"
    assert "1024" in err.value.message and "1000" in err.value.message and "text_card" in err.value.message


def test_weights_mismatch_lists_missing_extra_and_misshapen(tiny_copy: Path) -> None:
    weights = tiny_copy / "model.safetensors"
    state = load_file(str(weights))
    del state["text_linear.weight"]
    state["bogus.weight"] = torch.zeros(2)
    state["out_norm.alpha"] = torch.zeros(1, 1, 7)
    save_file(state, str(weights))
    with pytest.raises(InputError) as err:
        load_lm(read_checkpoint(tiny_copy), CPU, torch.float32)
    msg = str(err.value)
    assert err.value.source == str(weights) and err.value.field == "state_dict"
    assert "missing keys (1): text_linear.weight" in msg
    assert "unexpected keys (1): bogus.weight" in msg
    assert "shape mismatches (1): out_norm.alpha (1, 1, 7) != (1, 1, 128)" in msg
    assert "\n" not in msg


def test_weights_mismatch_message_is_truncated(tiny_copy: Path) -> None:
    weights = tiny_copy / "model.safetensors"
    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("transformer.")}
    save_file(state, str(weights))
    with pytest.raises(InputError) as err:
        load_lm(read_checkpoint(tiny_copy), CPU, torch.float32)
    assert "more)" in err.value.message and len(err.value.message) < 1000


def test_not_a_safetensors_file(tiny_copy: Path) -> None:
    (tiny_copy / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError) as err:
        load_lm(read_checkpoint(tiny_copy), CPU, torch.float32)
    assert err.value.source == str(tiny_copy / "model.safetensors")


def test_cuda_requested_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError) as err:
        resolve_device("cuda")
    assert err.value.field == "device" and "CUDA requested but not available" in err.value.message
    assert resolve_device("auto") == CPU
    with pytest.raises(InputError):
        resolve_device("tpu")


def test_default_dtype() -> None:
    assert default_dtype(CPU) == torch.float32
    assert default_dtype(torch.device("cuda")) == torch.bfloat16
    assert default_dtype(CPU, "bfloat16") == torch.bfloat16
    with pytest.raises(InputError) as err:
        default_dtype(CPU, "float64")
    assert err.value.field == "dtype"


# ---------------------------------------------------------------- Mimi built on the meta device


def test_mimi_is_built_without_weights_then_assigned_as_moshi_loads_it(tiny_dir: Path) -> None:
    from moshi.models.loaders import get_mimi

    ckpt = read_checkpoint(tiny_dir)
    ours = load_mimi(ckpt, CPU)
    moshis = get_mimi(ckpt.mimi_weights, ckpt.mimi_config, device=CPU, num_codebooks=ckpt.num_mimi_codebooks)
    tensors = [*ours.parameters(), *ours.buffers()]
    assert not any(t.is_meta for t in tensors) and {t.dtype for t in tensors} == {torch.float32}
    assert not ours.training
    theirs = moshis.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.state_dict().items())
    audio = 0.1 * torch.randn(1, 1, 1920 * 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        codes = ours.encode(audio)
        assert torch.equal(codes, moshis.encode(audio))
        assert torch.equal(ours.decode(codes), moshis.decode(codes))


def test_mimi_weights_that_do_not_match_are_named(tiny_copy: Path) -> None:
    weights = tiny_copy / "mimi.safetensors"
    state = load_file(str(weights))
    state.pop(next(iter(state)))
    save_file(state, str(weights))
    with pytest.raises(InputError) as err:
        load_mimi(read_checkpoint(tiny_copy), CPU)
    assert err.value.source == str(weights) and err.value.field == "state_dict"
    assert "does not match the Mimi config" in err.value.message and "missing keys (1)" in err.value.message
