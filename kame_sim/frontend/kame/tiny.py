"""A complete random-weight KAME checkpoint in the real layout, small enough for CPU and CI.

The point is to run the *real* code path (checkpoint reading, strict loading, Mimi encode/decode,
the oracle-capable LM streaming) everywhere, in milliseconds per frame, without downloading the
7B model. The weights are random, so the "speech" is noise and the text is random pieces: good
for timing, plumbing and determinism tests, meaningless for quality.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from moshi.models.loaders import get_mimi
from moshi.quantization.core_vq import EuclideanCodebook
from safetensors.torch import save_file

from kame_sim.errors import InputError
from kame_sim.frontend.kame.checkpoint import KameCheckpoint, read_checkpoint
from kame_sim.frontend.kame.lm import OracleLMModel
from kame_sim.frontend.kame.tiny_configs import TINY_LM_KWARGS, TINY_MIMI_CONFIG
from kame_sim.tokenizer import BUNDLED_MODEL

LM_NAME = "model.safetensors"
MIMI_NAME = "mimi.safetensors"
TOKENIZER_NAME = "tokenizer.model"
MIMI_CONFIG_NAME = "mimi_config.json"
# KAME's server sampling defaults (kame-reference.md §1).
KAME_LM_GEN_CONFIG: dict[str, Any] = {"temp": 0.8, "temp_text": 0.7, "top_k": 250, "top_k_text": 25}
_FILES = ("config.json", MIMI_CONFIG_NAME, LM_NAME, MIMI_NAME, TOKENIZER_NAME)


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no storage.
    return {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}


def _random_mimi() -> torch.nn.Module:
    """Tiny Mimi with filled codebooks: freshly built codebooks are all zero (always code 0)."""
    mimi = get_mimi(None, TINY_MIMI_CONFIG, device="cpu")
    for module in mimi.modules():
        if isinstance(module, EuclideanCodebook):
            module.embedding_sum.copy_(torch.randn_like(module.embedding_sum))
            module._initialized.fill_(1.0)
    return mimi


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Random init on one intra-op thread, restored afterwards.

    Initialising 10 M parameters takes ~0.15 s on one thread, but with two OpenMP threads on a
    two-core machine where another process holds a core, the threads spin-wait on each other and
    the same init took ~4 s (measured). One thread is fast in both cases.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _write_files(target: Path, seed: int) -> None:
    config = {
        **TINY_LM_KWARGS,
        "moshi_name": LM_NAME,
        "mimi_name": MIMI_NAME,
        "tokenizer_name": TOKENIZER_NAME,
        "mimi_config_name": MIMI_CONFIG_NAME,
        "lm_gen_config": KAME_LM_GEN_CONFIG,
        "model_type": "moshi",
    }
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (target / MIMI_CONFIG_NAME).write_text(json.dumps(TINY_MIMI_CONFIG, indent=2) + "\n", encoding="utf-8")
    # Seeded init inside a forked RNG: the caller's global RNG (moshi's sampling) is left alone.
    with torch.random.fork_rng(devices=[]), torch.no_grad(), _one_torch_thread():
        torch.manual_seed(seed)
        lm = OracleLMModel(**TINY_LM_KWARGS, device="cpu", dtype=torch.float32)
        save_file(_tensors(lm), str(target / LM_NAME))
        save_file(_tensors(_random_mimi()), str(target / MIMI_NAME))
    shutil.copyfile(BUNDLED_MODEL, target / TOKENIZER_NAME)


def write_tiny_checkpoint(directory: Path, seed: int = 0, overwrite: bool = False) -> KameCheckpoint:
    """Write config.json, mimi_config.json, model.safetensors, mimi.safetensors, tokenizer.model.

    Same seed, same bytes. The files are written to a temporary sibling directory first and
    moved into place at the end, so an interrupted write leaves no half-written checkpoint. An
    existing non-empty directory is refused unless ``overwrite``; then only these five files are
    replaced (each atomically) and anything else in the directory is left alone.
    """
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise InputError(directory, None, "exists and is not a directory")
    non_empty = directory.is_dir() and any(directory.iterdir())
    if non_empty and not overwrite:
        raise InputError(
            directory,
            None,
            "directory is not empty (overwrite=True, --overwrite on the CLI, replaces the checkpoint files)",
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        _write_files(tmp, seed)
        if not directory.exists():
            tmp.rename(directory)
        elif not non_empty:
            directory.rmdir()
            tmp.rename(directory)
        else:
            for name in _FILES:
                os.replace(tmp / name, directory / name)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
    return read_checkpoint(directory)
