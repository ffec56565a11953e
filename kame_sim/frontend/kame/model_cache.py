"""Loaded checkpoints kept per process, so a sweep worker loads each checkpoint once.

Why: a sweep worker runs many runs (or lockstep batches) of the same checkpoint one after the
other; loading it again for each one costs seconds for the tiny checkpoint and minutes for 7B.
A :class:`~kame_sim.frontend.kame.frontend.LoadedKame` holds no per-session state (every session
builds its own ``OracleLMGen`` and streaming state and closes it), so reusing it gives the same
tokens as a fresh load (``tests/test_sweep_batch.py`` checks this).

The key is the checkpoint's resolved files, each with its size, modification time and inode (a
rewritten or replaced file is a new key, so it is loaded again: hashing a 15 GB weights file per
run would cost what the cache saves), plus the resolved device and dtype. At most
:data:`MAX_KEPT` checkpoints are kept, least recently used dropped first, so a sweep over many
checkpoints does not hold them all in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from kame_sim.config import KameSettings
from kame_sim.errors import InputError
from kame_sim.frontend.kame.checkpoint import default_dtype, read_checkpoint, resolve_device
from kame_sim.frontend.kame.frontend import LoadedKame, load_kame

#: How many loaded checkpoints one process keeps.
MAX_KEPT = 2

_cache: OrderedDict[tuple, LoadedKame] = OrderedDict()
_loads = 0  # how many times this process really loaded a checkpoint (tests read it)


def _file_key(path: Path | None) -> tuple:
    if path is None:
        return ("<none>",)
    resolved = Path(path).resolve()
    try:
        st = resolved.stat()
    except OSError as exc:
        raise InputError(resolved, None, f"cannot read checkpoint file: {exc.strerror}") from None
    return (str(resolved), st.st_size, st.st_mtime_ns, st.st_ino)


def checkpoint_key(settings: KameSettings) -> tuple:
    """What identifies a loaded checkpoint: its files (path, size, mtime, inode), device, dtype."""
    ckpt = read_checkpoint(settings.checkpoint)
    device = resolve_device(settings.device)
    dtype = default_dtype(device, settings.dtype)
    files = (ckpt.config_path, ckpt.lm_weights, ckpt.mimi_weights, ckpt.tokenizer)
    return (*(_file_key(p) for p in files), str(device), str(dtype))


def cached_load_kame(settings: KameSettings) -> LoadedKame:
    """:func:`load_kame`, or the checkpoint this process loaded already for the same key."""
    global _loads
    key = checkpoint_key(settings)
    loaded = _cache.get(key)
    if loaded is not None:
        _cache.move_to_end(key)
        return loaded
    loaded = load_kame(settings)
    _loads += 1
    _cache[key] = loaded
    while len(_cache) > MAX_KEPT:
        _cache.popitem(last=False)
    return loaded


def load_count() -> int:
    """How many checkpoints this process has really loaded (not served from the cache)."""
    return _loads


def clear() -> None:
    """Forget every kept checkpoint (frees its memory once nothing else holds it)."""
    _cache.clear()
