"""Local KAME/Moshi checkpoints: read the layout, load LM, Mimi and tokenizer, explain failures.

The layout is Kyutai's and KAME's: a directory whose ``config.json`` holds the LM keyword
arguments plus the file names (``moshi_name``, ``mimi_name``, ``tokenizer_name``, optional
``mimi_config_name``) and optional ``lm_gen_config`` / ``model_type``. Unlike moshi's
``CheckpointInfo`` this never touches the network and never guesses: moshi silently assumes
the 7B config when ``config.json`` is missing and fetches bare names from the hub, which on a
simulator means a confusing failure minutes later (or a 15 GB download). Every problem with the
files is an :class:`~kame_sim.errors.InputError` naming the file and the field.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from moshi.models.compression import MimiModel
from moshi.models.lm import LMGen, LMModel
from moshi.models.loaders import MIMI_NAME, MOSHI_NAME, TEXT_TOKENIZER_NAME, get_mimi
from moshi.modules.transformer import StreamingTransformer, StreamingTransformerLayer

from kame_sim.errors import InputError
from kame_sim.frontend.kame.lm import OracleLMModel, upgrade_legacy_state_dict
from kame_sim.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
_MAX_LISTED = 8  # keys listed per category in a state-dict error, so the message stays one readable line

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# config.json keys that are not LMModel arguments. Names are resolved here; the rest is either
# used (lm_gen_config, model_type) or traceability information moshi ignores too (model_id).
_FILE_KEYS = ("moshi_name", "mimi_name", "tokenizer_name", "mimi_config_name")
_NON_LM_KEYS = frozenset({*_FILE_KEYS, "lm_gen_config", "model_type", "model_id", "tts_config", "stt_config"})
# Present in Kyutai configs but features kame-sim does not implement: refused when enabled.
_UNSUPPORTED = {
    "lora": "LoRA checkpoints are not supported (fuse the LoRA weights into the LM first)",
    "lora_name": "LoRA checkpoints are not supported (fuse the LoRA weights into the LM first)",
    "conditioners": "conditioned Moshi models are not supported",
    "fuser": "conditioned Moshi models are not supported",
    "quantize": "quantized checkpoints are not supported",
    "tts_config": "TTS models are not supported",
    "stt_config": "STT models are not supported",
}
_IGNORED_LEGACY = frozenset({"depformer_causal", "lora_rank", "lora_scaling"})  # moshi drops these too
# Without these the LM would be built from moshi's defaults and fail later with a long diff.
_REQUIRED_LM_KEYS = (
    "dim",
    "text_card",
    "n_q",
    "dep_q",
    "card",
    "num_heads",
    "num_layers",
    "delays",
    "context",
)


def _param_names(fn: Any) -> set[str]:
    return {p for p in inspect.signature(fn).parameters if p not in ("self", "kwargs", "args")}


def _accepted_lm_keys() -> frozenset[str]:
    """The config keys LMModel really consumes, derived from moshi's signatures.

    LMModel forwards unknown keyword arguments to its transformers, so a typo would surface
    as a TypeError deep inside moshi (or, for ``depformer_*`` keys, be silently ignored).
    """
    lm = _param_names(LMModel.__init__) - {"device", "dtype", "condition_provider", "fuser", "quantize"}
    transformer = _param_names(StreamingTransformer.__init__) | _param_names(
        StreamingTransformerLayer.__init__
    )
    # LMModel sets these itself (passing them again clashes), or they are not JSON values.
    transformer -= {"d_model", "dim_feedforward", "rope", "layer_class", "device", "dtype", "activation"}
    transformer -= {"quantize", "checkpointing"}
    # depformer_causal clashes with LMModel's own causal (moshi's loader drops it, so do we);
    # depformer_weights_per_step_schedule is an LMModel argument already.
    depformer = {"depformer_" + k for k in transformer - {"causal", "weights_per_step_schedule"}}
    return frozenset(lm | transformer | depformer)


_ACCEPTED_LM_KEYS = _accepted_lm_keys()
_LM_GEN_KEYS = frozenset({"use_sampling", "temp", "temp_text", "top_k", "top_k_text", "cfg_coef"})
assert _param_names(LMGen.__init__) >= _LM_GEN_KEYS, "moshi's LMGen changed its arguments"


@dataclass
class KameCheckpoint:
    """Resolved paths and configuration of one local checkpoint (nothing loaded yet)."""

    root: Path
    lm_weights: Path
    mimi_weights: Path
    tokenizer: Path
    lm_kwargs: dict[str, Any]
    mimi_config: dict[str, Any] | None
    lm_gen_config: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None  # where lm_kwargs came from, for error messages

    @property
    def num_mimi_codebooks(self) -> int:
        """Codebooks Mimi must produce: max(generated, user) streams, as moshi's CheckpointInfo."""
        n_q, dep_q = int(self.lm_kwargs["n_q"]), int(self.lm_kwargs["dep_q"])
        return max(dep_q, n_q - dep_q)


def _resolve_name(root: Path, name: Any, config: Path, key: str) -> Path:
    if not isinstance(name, str) or not name:
        raise InputError(config, key, f"must be a file name, got {name!r}")
    if name.startswith("hf://"):
        raise InputError(config, key, f"{name!r} is a Hugging Face hub file; kame-sim reads local files only")
    path = Path(name.removeprefix("file://")).expanduser()
    return path if path.is_absolute() else root / path


def _require_file(path: Path, key: str, what: str) -> Path:
    if not path.is_file():
        raise InputError(path, key, f"{what} not found")
    return path


def _read_json_object(path: Path, key: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, key, f"cannot read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, key, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(path, key, "must be a JSON object")
    return data


def _split_config(raw: dict[str, Any], config: Path) -> dict[str, Any]:
    """The LMModel keyword arguments of ``raw``, with every other key checked and removed."""
    lm_kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _UNSUPPORTED:
            if value:  # lora: false, quantize: false, tts_config: {} are harmless
                raise InputError(config, key, _UNSUPPORTED[key])
            continue
        if key in _NON_LM_KEYS or key in _IGNORED_LEGACY:
            continue
        if key == "demux_second_stream":  # renamed in moshi; its loader accepts the old name too
            key = "demux_second_text_stream"
        if key not in _ACCEPTED_LM_KEYS:
            raise InputError(config, key, "unknown key (not an LMModel argument nor a known checkpoint key)")
        lm_kwargs[key] = value
    for key in _REQUIRED_LM_KEYS:
        if lm_kwargs.get(key) is None:
            raise InputError(config, key, "missing: the LM architecture must be given explicitly")
    model_type = raw.get("model_type", "moshi")
    if model_type != "moshi":
        raise InputError(config, "model_type", f"{model_type!r} is not supported (only 'moshi')")
    return lm_kwargs


def _lm_gen_config(raw: dict[str, Any], config: Path) -> dict[str, Any]:
    gen = raw.get("lm_gen_config", {})
    if not isinstance(gen, dict):
        raise InputError(config, "lm_gen_config", "must be a JSON object")
    for key, value in gen.items():
        if key not in _LM_GEN_KEYS:
            raise InputError(
                config, f"lm_gen_config.{key}", f"unknown key (known: {', '.join(sorted(_LM_GEN_KEYS))})"
            )
        if key == "cfg_coef" and value != 1.0:
            raise InputError(
                config, "lm_gen_config.cfg_coef", "classifier-free guidance is not supported (use 1.0)"
            )
    return dict(gen)


def read_checkpoint(
    root: Path,
    *,
    lm_weights: Path | None = None,
    mimi_weights: Path | None = None,
    tokenizer: Path | None = None,
    config: Path | None = None,
) -> KameCheckpoint:
    """Resolve a local checkpoint: ``root/config.json`` (or ``config``) plus the files it names.

    Explicit paths override the names in the config; relative names resolve against ``root``.
    Every referenced file must exist. ``mimi_config_name`` absent means moshi's full-size Mimi.
    """
    root = Path(root).expanduser()
    config_path = Path(config).expanduser() if config is not None else root / CONFIG_NAME
    if not config_path.is_file():
        raise InputError(
            config_path, None, "checkpoint config not found (kame-sim never assumes the 7B Moshi config)"
        )
    raw = _read_json_object(config_path, "config")
    lm_kwargs = _split_config(raw, config_path)
    gen_config = _lm_gen_config(raw, config_path)

    def pick(explicit: Path | None, key: str, default: str) -> Path:
        if explicit is not None:
            return Path(explicit).expanduser()
        return _resolve_name(root, raw.get(key, default), config_path, key)

    # moshi's default file names, as its loader uses them, but resolved locally.
    lm_path = _require_file(pick(lm_weights, "moshi_name", MOSHI_NAME), "moshi_name", "LM weights")
    mimi_path = _require_file(pick(mimi_weights, "mimi_name", MIMI_NAME), "mimi_name", "Mimi weights")
    tok_path = _require_file(
        pick(tokenizer, "tokenizer_name", TEXT_TOKENIZER_NAME), "tokenizer_name", "text tokenizer"
    )
    mimi_config: dict[str, Any] | None = None
    if raw.get("mimi_config_name") is not None:
        mimi_config_path = _resolve_name(root, raw["mimi_config_name"], config_path, "mimi_config_name")
        _require_file(mimi_config_path, "mimi_config_name", "Mimi config")
        mimi_config = _read_json_object(mimi_config_path, "mimi_config")
        for key in ("seanet", "quantizer", "transformer", "channels", "sample_rate", "frame_rate"):
            if key not in mimi_config:
                raise InputError(mimi_config_path, key, "missing from the Mimi config")
    return KameCheckpoint(
        root=root,
        lm_weights=lm_path,
        mimi_weights=mimi_path,
        tokenizer=tok_path,
        lm_kwargs=lm_kwargs,
        mimi_config=mimi_config,
        lm_gen_config=gen_config,
        config_path=config_path,
    )


def resolve_device(name: str, source: str | Path | None = "<cli>") -> torch.device:
    """``auto`` = CUDA when available, else CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            source, "device", f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)"
        ) from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise InputError(
            source, "device", f"device type {device.type!r} is not supported (use auto, cpu or cuda)"
        )
    if not torch.cuda.is_available():
        raise InputError(
            source, "device", f"CUDA requested but not available on this machine ({name!r}); use cpu"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(source, "device", f"{name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def default_dtype(
    device: torch.device, name: str = "auto", source: str | Path | None = "<cli>"
) -> torch.dtype:
    """``auto``: float32 on CPU (bf16 is ~2x slower there), bfloat16 on CUDA (KAME runs bf16)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise InputError(source, "dtype", f"unknown dtype {name!r} (use auto, {', '.join(_DTYPES)})")
    return _DTYPES[name]


def _short_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", … (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _key_list(kind: str, keys: list[str]) -> str:
    return f"{kind} ({len(keys)}): {_short_list(keys)}"


def explain_load_error(exc: RuntimeError) -> str:
    """One readable line from torch's strict ``load_state_dict`` error.

    The comparison is left to torch on purpose: moshi's modules rename legacy keys while loading
    (e.g. ``self_attn.in_proj_weight``), so comparing key names beforehand would reject valid
    checkpoints. torch's message has listed missing keys, unexpected keys and size mismatches in
    the same words for years; anything unrecognised is passed through, shortened.
    """
    missing: list[str] = []
    unexpected: list[str] = []
    shapes: list[str] = []
    other: list[str] = []
    for line in (part.strip() for part in str(exc).split("\n")[1:]):
        if not line:
            continue
        if line.startswith("Missing key(s)"):
            missing = re.findall(r'"([^"]+)"', line)
        elif line.startswith("Unexpected key(s)"):
            unexpected = re.findall(r'"([^"]+)"', line)
        elif m := _SIZE_MISMATCH.match(line):
            shapes.append(f"{m[1]} ({m[2]}) != ({m[3]})")
        else:
            other.append(line)
    parts = []
    if missing:
        parts.append(_key_list("missing keys", missing))
    if unexpected:
        parts.append(_key_list("unexpected keys", unexpected))
    if shapes:
        parts.append(_key_list("shape mismatches", shapes))
    if other or not parts:
        raw = " ".join(" ".join(other or [str(exc)]).split())
        parts.append(raw if len(raw) <= 300 else raw[:300] + " …")
    return "; ".join(parts)


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[([^\]]*)\]\)"
)


def _load_safetensors(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError, ...
        raise InputError(path, "state_dict", f"cannot read as safetensors ({str(exc).strip()})") from exc


def build_lm(
    lm_kwargs: dict[str, Any], device: torch.device | str, dtype: torch.dtype, config: Path | None = None
) -> OracleLMModel:
    """Build an ``OracleLMModel`` from config kwargs, mapping moshi's asserts to an InputError."""
    try:
        model = OracleLMModel(device=device, dtype=dtype, **lm_kwargs)
    except Exception as exc:  # moshi validates with asserts and TypeErrors
        raise InputError(
            config, "config", f"cannot build the LM from this config ({type(exc).__name__}: {exc})"
        ) from exc
    return model


def load_lm(ckpt: KameCheckpoint, device: torch.device, dtype: torch.dtype) -> OracleLMModel:
    """Build the oracle-capable LM and load its weights strictly (legacy Moshi weights upgraded).

    The model is built on the meta device (no memory, no random init, and so no draw from
    torch's global RNG that moshi's sampling uses) and the weights are assigned in place.
    """
    state = _load_safetensors(ckpt.lm_weights, device)
    state, upgraded = upgrade_legacy_state_dict(state)
    if upgraded:
        log.info(
            "%s has no oracle_emb (a plain Moshi checkpoint): oracle_emb = copy of text_emb, as KAME does",
            ckpt.lm_weights,
        )
    state = {k: v.to(dtype) if v.dtype.is_floating_point else v for k, v in state.items()}
    with torch.device("meta"):
        model = build_lm(ckpt.lm_kwargs, "meta", dtype, ckpt.config_path)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        where = ckpt.config_path or "the config"
        raise InputError(
            ckpt.lm_weights, "state_dict", f"does not match {where}: {explain_load_error(exc)}"
        ) from exc
    return model.eval()


def load_mimi(ckpt: KameCheckpoint, device: torch.device) -> MimiModel:
    """Mimi with the checkpoint's config (None = moshi's full-size Mimi), loaded strictly.

    Built by moshi's ``get_mimi`` without weights, on the meta device, then the weights are
    assigned in place (as :func:`load_lm` does): no random initialisation that loading would
    overwrite (about 90 % of the full-size Mimi's load time, benchmarks/bench_model_load.py) and
    no draw from torch's global RNG, which moshi's sampling uses. Tensors are assigned at the
    dtypes the modules declare (float32), as ``get_mimi``'s copying load gives them.
    """
    state = _load_mimi_state(ckpt.mimi_weights, device)
    try:
        with torch.device("meta"):
            model = get_mimi(None, ckpt.mimi_config, device="meta", num_codebooks=ckpt.num_mimi_codebooks)
    except Exception as exc:  # moshi validates with asserts and TypeErrors
        message = f"cannot build Mimi from its config ({type(exc).__name__}: {exc})"
        raise InputError(ckpt.mimi_weights, "mimi", message) from exc
    declared = model.state_dict()
    state = {
        k: v.to(declared[k].dtype) if k in declared and v.dtype != declared[k].dtype else v
        for k, v in state.items()
    }
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise InputError(
            ckpt.mimi_weights, "state_dict", f"does not match the Mimi config: {explain_load_error(exc)}"
        ) from exc
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # a tensor the state dict does not hold: a moshi version kame-sim does not know
        raise RuntimeError(f"Mimi tensors left unloaded on the meta device: {_short_list(left)}")
    return model.eval()


def _load_mimi_state(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """Mimi's weights: safetensors, or a torch pickle holding ``{"model": state}`` (as moshi reads)."""
    if Path(path).suffix in (".safetensors", ".sft", ".sfts"):
        return _load_safetensors(path, device)
    try:
        state = torch.load(path, map_location=device, weights_only=True)["model"]
    except Exception as exc:
        message = f"cannot read Mimi weights ({type(exc).__name__}: {exc})"
        raise InputError(path, "state_dict", message) from exc
    if not isinstance(state, dict):
        raise InputError(path, "state_dict", "the checkpoint's 'model' entry is not a state dict")
    return state


def load_tokenizer(ckpt: KameCheckpoint) -> TextTokenizer:
    """The checkpoint's SentencePiece model; its size must be the LM's ``text_card``.

    A mismatch would make START (``text_card``) a real piece, or leave LM ids without text.
    """
    tok = TextTokenizer.load(ckpt.tokenizer)
    text_card = int(ckpt.lm_kwargs["text_card"])
    where = ckpt.config_path or "the config"
    if tok.vocab_size != text_card:
        raise InputError(
            ckpt.tokenizer,
            "vocab_size",
            f"{tok.vocab_size} pieces does not match text_card {text_card} of {where}",
        )
    return tok
