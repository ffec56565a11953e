"""Metrics from traces (per run and per user turn) and their aggregation over sweeps.

Definitions, units and edge cases: docs/metrics.md.
"""

from kame_sim.metrics.aggregate import aggregate, robustness_curve
from kame_sim.metrics.oracle_lag import STATUSES, ChunkLags, chunk_lags
from kame_sim.metrics.run_metrics import (
    RUN_METRIC_COLUMNS,
    RunMetrics,
    TurnMetrics,
    compute_metrics,
    reference_replies_from_conversation,
)
from kame_sim.metrics.text import levenshtein, normalise_words, normalised_edit_distance, word_f1

__all__ = [
    "RUN_METRIC_COLUMNS",
    "STATUSES",
    "ChunkLags",
    "RunMetrics",
    "TurnMetrics",
    "aggregate",
    "chunk_lags",
    "compute_metrics",
    "levenshtein",
    "normalise_words",
    "normalised_edit_distance",
    "reference_replies_from_conversation",
    "robustness_curve",
    "word_f1",
]
