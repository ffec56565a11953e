"""Configurations of the tiny random-weight KAME checkpoint used on CPU and in CI.

The architecture is the real one (Moshi LM with n_q 16 = 8 generated + 8 user codebooks, dep_q 8,
card 2048, the 7B's delays, plus ``oracle_emb``; Mimi with the real strides, so one frame is still
1920 samples at 24 kHz), only much narrower and shallower, so the whole real code path runs on two
CPU cores in milliseconds per frame. ``text_card`` matches the bundled 1024-piece tokenizer.
"""

from __future__ import annotations

from typing import Any

TINY_TEXT_CARD = 1024

TINY_LM_KWARGS: dict[str, Any] = {
    "dim": 128,
    "text_card": TINY_TEXT_CARD,
    "existing_text_padding_id": 3,
    "n_q": 16,
    "dep_q": 8,
    "card": 2048,
    "num_heads": 4,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 250,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 64,
    "depformer_dim_feedforward": 256,
    "depformer_num_heads": 2,
    "depformer_num_layers": 1,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 8,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
}

_TINY_SEANET: dict[str, Any] = {
    "channels": 1,
    "dimension": 64,
    "causal": True,
    "n_filters": 4,
    "n_residual_layers": 1,
    "activation": "ELU",
    "compress": 2,
    "dilation_base": 2,
    "disable_norm_outer_blocks": 0,
    "kernel_size": 7,
    "residual_kernel_size": 3,
    "last_kernel_size": 3,
    "norm": "none",
    "pad_mode": "constant",
    "ratios": [8, 6, 5, 4],
    "true_skip": True,
}

TINY_MIMI_CONFIG: dict[str, Any] = {
    "sample_rate": 24000,
    "channels": 1,
    "frame_rate": 12.5,
    "seanet": _TINY_SEANET,
    "quantizer": {
        "dimension": 32,
        "n_q": 8,
        "bins": 2048,
        "input_dimension": 64,
        "output_dimension": 64,
    },
    "transformer": {
        "d_model": 64,
        "num_heads": 2,
        "num_layers": 1,
        "causal": True,
        "layer_scale": 0.01,
        "context": 250,
        "conv_layout": True,
        "max_period": 10000,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "dim_feedforward": 128,
        "input_dimension": 64,
        "output_dimensions": [64],
    },
}
