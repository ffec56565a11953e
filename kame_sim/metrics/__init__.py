"""Metrics from traces (per run and per user turn) and their aggregation over sweeps.

Definitions, units and edge cases: docs/metrics.md.
"""

from kame_sim.metrics.aggregate import aggregate, robustness_curve
from kame_sim.metrics.fdb import FdbSummary, FdbTurn, fdb_from_tokens, fdb_from_words, silence_labels
from kame_sim.metrics.oracle_lag import STATUSES, ChunkLags, chunk_lags
from kame_sim.metrics.paired import PairedDifference, paired_difference
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
    "FdbSummary",
    "FdbTurn",
    "PairedDifference",
    "RunMetrics",
    "TurnMetrics",
    "aggregate",
    "chunk_lags",
    "compute_metrics",
    "fdb_from_tokens",
    "fdb_from_words",
    "levenshtein",
    "normalise_words",
    "normalised_edit_distance",
    "paired_difference",
    "reference_replies_from_conversation",
    "robustness_curve",
    "silence_labels",
    "word_f1",
]
