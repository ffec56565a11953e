"""Loading the real front-end's models: built on the meta device and assigned, against building
with random weights and copying the checkpoint over them, side by side (A B A B) in one run.

    .venv/bin/python benchmarks/bench_model_load.py [--checkpoint DIR] [--repeats 7] [--full-mimi]

Not a test: it prints what it measured. Without ``--checkpoint`` it writes the tiny checkpoint
(``kame-sim init-checkpoint --tiny``) to a temporary folder. ``--full-mimi`` also times moshi's
full-size Mimi architecture, with random weights saved to a temporary file (kame-sim bundles no
real weights), since the tiny Mimi is too small for the initialisation to matter much.

Each row times the two ways to load one model, alternating, after one untimed warm-up of each:

* ``init + load``: build with random weights, then copy the checkpoint over them. For Mimi this
  is moshi's ``get_mimi(file)``, which kame-sim's ``load_mimi`` called before; for the LM it is
  ``OracleLMModel`` built on the CPU, then ``load_state_dict`` (``load_lm`` never did this).
* ``meta + assign``: kame-sim's ``load_mimi`` / ``load_lm``: build on the meta device, then
  ``load_state_dict(assign=True)``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")

import torch
from moshi.models.loaders import get_mimi
from safetensors.torch import load_file, save_file

from kame_sim.frontend.kame.checkpoint import KameCheckpoint, build_lm, load_lm, load_mimi, read_checkpoint
from kame_sim.frontend.kame.lm import upgrade_legacy_state_dict
from kame_sim.frontend.kame.tiny import write_tiny_checkpoint

CPU = torch.device("cpu")


def lm_init_then_load(ckpt: KameCheckpoint) -> None:
    state, _ = upgrade_legacy_state_dict(load_file(str(ckpt.lm_weights)))
    model = build_lm(ckpt.lm_kwargs, CPU, torch.float32, ckpt.config_path)
    model.load_state_dict(state, strict=True)


def full_size_mimi(directory: Path) -> KameCheckpoint:
    """A checkpoint view whose Mimi is moshi's full-size one, with random weights on disk."""
    torch.manual_seed(0)
    mimi = get_mimi(None, None, device=CPU, num_codebooks=8)
    path = directory / "mimi-full.safetensors"
    save_file({k: v.contiguous() for k, v in mimi.state_dict().items()}, str(path))
    return KameCheckpoint(directory, path, path, path, {"n_q": 16, "dep_q": 8}, None)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--full-mimi", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = read_checkpoint(args.checkpoint or write_tiny_checkpoint(Path(tmp) / "tiny").root)
        pairs: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            (
                "tiny Mimi",
                lambda: get_mimi(ckpt.mimi_weights, ckpt.mimi_config, CPU, ckpt.num_mimi_codebooks),
                lambda: load_mimi(ckpt, CPU),
            ),
            ("tiny LM", lambda: lm_init_then_load(ckpt), lambda: load_lm(ckpt, CPU, torch.float32)),
        ]
        if args.full_mimi:
            full = full_size_mimi(Path(tmp))
            moshi_full = lambda: get_mimi(full.mimi_weights, None, CPU, 8)  # noqa: E731
            pairs.append(("full-size Mimi", moshi_full, lambda: load_mimi(full, CPU)))
        threads = torch.get_num_threads()
        print(f"torch {torch.__version__}, {threads} threads, {args.repeats} repeats + 1 warm-up")
        print(f"{'model':<15} {'init + load ms':>15} {'meta + assign ms':>17} {'ratio':>7}")
        for name, before, after in pairs:
            before(), after()  # warm-up
            a: list[float] = []
            b: list[float] = []
            for r in range(args.repeats):
                order = ((a, before), (b, after)) if r % 2 == 0 else ((b, after), (a, before))
                for bucket, fn in order:
                    bucket.append(timed(fn))
            ma, mb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
            print(f"{name:<15} {ma:>15.1f} {mb:>17.1f} {ma / mb:>6.1f}x")


if __name__ == "__main__":
    main()
