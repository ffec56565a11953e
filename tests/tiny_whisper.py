"""Build a tiny random-weight Whisper in CTranslate2 format, on the fly, without torch.

Test helper: the model "transcribes" garbage, but faster-whisper loads it and runs the whole
pipeline (features, encoder, decoder, word timestamps), so the streaming policy and the loading
checks can be tested end to end in well under a second. Vocabulary: 256 byte symbols (a byte-level
BPE without merges), Whisper's special tokens and the 1501 timestamp tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

D_MODEL, FFN, N_MELS = 64, 128, 80
ENC_POSITIONS, DEC_POSITIONS = 1500, 448
SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]


def _tokenizer_json(path: Path) -> list[str]:
    """A byte-level BPE (no merges) with the special tokens; returns the full vocabulary in id order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    byte_symbols = sorted(alphabet)
    vocab = {s: i for i, s in enumerate(byte_symbols)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS + TIMESTAMPS)
    tok.save(str(path))
    return byte_symbols + SPECIALS + TIMESTAMPS


def _fill(spec, rng: np.random.Generator, vocab_size: int, prefix: str = "") -> None:
    """Give every required (``None``) variable of ``spec`` a small random array of the right shape."""
    from ctranslate2.specs import model_spec

    for name, value in list(vars(spec).items()):
        path = f"{prefix}{name}"
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, model_spec.LayerSpec):
                    _fill(item, rng, vocab_size, f"{path}.{i}.")
        elif isinstance(value, model_spec.LayerSpec):
            _fill(value, rng, vocab_size, path + ".")
        elif value is None:
            setattr(spec, name, _array(path, rng, vocab_size))


def _array(path: str, rng: np.random.Generator, vocab: int) -> np.ndarray:
    d = D_MODEL
    if path.endswith(("gamma",)):
        return np.ones(d, np.float32)
    if path.endswith("beta"):
        return np.zeros(d, np.float32)
    if path.endswith("conv1.weight"):
        shape: tuple[int, ...] = (d, N_MELS, 3)
    elif path.endswith("conv2.weight"):
        shape = (d, d, 3)
    elif path.endswith("position_encodings.encodings"):
        shape = (ENC_POSITIONS if path.startswith("encoder") else DEC_POSITIONS, d)
    elif path.endswith("embeddings.weight") or path.endswith("projection.weight"):
        shape = (vocab, d)
    elif "self_attention.linear.0" in path:
        shape = (3 * d, d)
    elif "attention.linear.1" in path and "self_attention" not in path:
        shape = (2 * d, d)
    elif ".linear.0" in path or ".linear.1" in path or ".linear.2" in path:
        shape = (d, d)
    elif path.endswith("linear_0.weight"):
        shape = (FFN, d)
    elif path.endswith("linear_1.weight"):
        shape = (d, FFN)
    else:
        raise AssertionError(f"tiny_whisper: no shape rule for {path}")
    return (rng.standard_normal(shape) * 0.2).astype(np.float32)


def build_tiny_whisper(out_dir: Path, seed: int = 0) -> Path:
    """Write ``model.bin``, ``config.json``, ``vocabulary.json`` and ``tokenizer.json`` to ``out_dir``."""
    from ctranslate2.specs import WhisperSpec

    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = _tokenizer_json(out_dir / "tokenizer.json")
    spec = WhisperSpec(2, 2, 2, 2)
    rng = np.random.default_rng(seed)
    _fill(spec, rng, len(tokens))
    # optional in the spec, but Whisper models carry learned/sinusoidal position tables
    spec.encoder.position_encodings.encodings = _array("encoder.position_encodings.encodings", rng, 0)
    spec.decoder.position_encodings.encodings = _array("decoder.position_encodings.encodings", rng, 0)
    spec.register_vocabulary(tokens)
    eot = tokens.index("<|endoftext|>")
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [eot]
    spec.config.lang_ids = []
    spec.config.alignment_heads = [(1, 0), (1, 1)]
    spec.validate()
    spec.save(str(out_dir))
    config = json.loads((out_dir / "config.json").read_text())
    assert config["alignment_heads"]
    return out_dir
