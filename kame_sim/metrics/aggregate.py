"""Aggregating sweep results with uncertainty: cluster bootstrap over conversations.

Why clustered: runs of one conversation share its content and timing (which turns are long,
where the LLM is wrong), so they are not independent. Resampling single runs treats 10 seeds
of one conversation as 10 independent observations and gives intervals that are too narrow;
resampling whole conversations (keeping all their runs) respects the real unit of variation.
With a single conversation there is nothing to resample at that level, so runs are resampled
instead and ``ci_method`` says so.

Everything is vectorised: one index matrix of ``n_boot × n_clusters`` draws per (group, metric);
the bootstrap mean is a ratio of cluster sums, the bootstrap median a weighted median over the
sorted values with the draw multiplicities as weights — so 2000 resamples cost milliseconds.
Each (group, metric) gets its own random stream derived from ``seed`` and its key, so adding a
metric or a group does not change any other interval.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Bound on the n_boot × n_values weight matrix built at once for the bootstrap median.
_MAX_MATRIX = 4_000_000

OUTPUT_COLUMNS = (
    "metric",
    "n",
    "n_missing",
    "n_clusters",
    "mean",
    "median",
    "p95",
    "mean_low",
    "mean_high",
    "median_low",
    "median_high",
    "ci_level",
    "ci_method",
)


def _bootstrap(
    values: np.ndarray, unit: np.ndarray, n_units: int, n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap means and medians, resampling whole units (clusters, or runs when unit = arange).

    ``unit[i]`` is the unit (0..n_units-1) of ``values[i]``; every unit holds at least one value.
    """
    sums = np.bincount(unit, weights=values, minlength=n_units)
    counts = np.bincount(unit, minlength=n_units).astype(float)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    sorted_unit = unit[order]
    means = np.empty(n_boot)
    medians = np.empty(n_boot)
    step = max(1, _MAX_MATRIX // max(len(values), n_units))
    offsets = None
    for b0 in range(0, n_boot, step):
        b1 = min(n_boot, b0 + step)
        draws = rng.integers(0, n_units, size=(b1 - b0, n_units))
        means[b0:b1] = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        # Multiplicity of each unit in each resample, then of each (sorted) value.
        if offsets is None or len(offsets) != b1 - b0:
            offsets = (np.arange(b1 - b0) * n_units)[:, None]
        mult = np.bincount((draws + offsets).ravel(), minlength=(b1 - b0) * n_units).reshape(b1 - b0, n_units)
        cum = np.cumsum(mult.astype(np.int32)[:, sorted_unit], axis=1, dtype=np.int32)
        total = cum[:, -1:]
        # np.median of the resampled multiset: mean of the elements at positions (T-1)//2 and T//2,
        # i.e. the first sorted values whose cumulative multiplicity exceeds those positions.
        lo = np.count_nonzero(cum <= (total - 1) // 2, axis=1)
        hi = np.count_nonzero(cum <= total // 2, axis=1)
        medians[b0:b1] = 0.5 * (sorted_values[lo] + sorted_values[hi])
    return means, medians


def _rng(seed: int, key: tuple, metric: str) -> np.random.Generator:
    """A random stream per (group, metric) that does not depend on what else is aggregated."""
    tag = zlib.crc32(repr((key, metric)).encode("utf-8"))
    return np.random.default_rng([seed, tag])


def _float_column(results: pa.Table, name: str) -> np.ndarray:
    column = results.column(name)
    kind = column.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    if not numeric and not pa.types.is_null(kind):
        raise TypeError(f"metric column {name!r} is {kind}, not numeric")
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)  # null -> NaN


def _cluster_codes(results: pa.Table, cluster: str | None) -> np.ndarray:
    if cluster is None:
        return np.arange(len(results))
    column = results.column(cluster).combine_chunks()
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _groups(results: pa.Table, by: Sequence[str]) -> list[tuple[tuple, np.ndarray]]:
    """(key, row indices) per group, in order of first appearance."""
    if not by:
        return [((), np.arange(len(results)))]
    indexed = results.select(list(by)).append_column("__row", pa.array(np.arange(len(results))))
    grouped = indexed.group_by(list(by), use_threads=False).aggregate([("__row", "list")])
    keys = grouped.select(list(by)).to_pylist()
    rows = grouped.column("__row_list").to_pylist()
    out = [(tuple(k[c] for c in by), np.asarray(r, dtype=np.int64)) for k, r in zip(keys, rows, strict=True)]
    out.sort(key=lambda item: item[1][0])
    return out


def aggregate(
    results: pa.Table,
    by: list[str],
    metrics: list[str],
    cluster: str | None = "conversation_id",
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pa.Table:
    """Per group (``by`` columns) and metric: n, mean, median, p95 and bootstrap percentile CIs.

    One output row per (group, metric): the ``by`` columns, then :data:`OUTPUT_COLUMNS`.
    ``n`` counts the runs with a value; ``n_missing`` those with null/NaN, which are ignored.
    ``n_clusters`` counts the clusters with at least one value. ``ci_method`` is ``cluster``
    (conversations resampled with replacement, all their runs kept), ``run (single cluster)``
    (only one conversation: runs resampled), ``run`` (``cluster=None``) or ``none`` (fewer than two
    values: no interval). Deterministic for a given ``seed``.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    missing = [c for c in [*by, *metrics, *([cluster] if cluster else [])] if c not in results.column_names]
    if missing:
        raise KeyError(f"results have no column(s) {missing}; they have {results.column_names}")
    clash = set(by) & set(OUTPUT_COLUMNS)
    if clash:
        raise ValueError(f"group columns {sorted(clash)} clash with output columns")

    codes = _cluster_codes(results, cluster)
    values = {m: _float_column(results, m) for m in metrics}
    alpha = (1.0 - ci) / 2.0
    out: dict[str, list] = {c: [] for c in [*by, *OUTPUT_COLUMNS]}
    for key, rows in _groups(results, by):
        for metric in metrics:
            v = values[metric][rows]
            valid = ~np.isnan(v)
            vv = v[valid]
            n = len(vv)
            stats = dict.fromkeys(
                ("mean", "median", "p95", "mean_low", "mean_high", "median_low", "median_high")
            )
            n_clusters = 0
            method = "none"
            if n:
                stats["mean"] = float(vv.mean())
                stats["median"] = float(np.median(vv))
                stats["p95"] = float(np.percentile(vv, 95))
                uniq, unit = np.unique(codes[rows][valid], return_inverse=True)
                n_clusters = len(uniq) if cluster else 0
            if n >= 2:
                if cluster is None:
                    method, unit, n_units = "run", np.arange(n), n
                elif n_clusters == 1:
                    method, unit, n_units = "run (single cluster)", np.arange(n), n
                else:
                    method, n_units = "cluster", n_clusters
                means, medians = _bootstrap(vv, unit, n_units, n_boot, _rng(seed, key, metric))
                stats["mean_low"], stats["mean_high"] = (
                    float(q) for q in np.quantile(means, [alpha, 1 - alpha])
                )
                stats["median_low"], stats["median_high"] = (
                    float(q) for q in np.quantile(medians, [alpha, 1 - alpha])
                )
            for c, k in zip(by, key, strict=True):
                out[c].append(k)
            out["metric"].append(metric)
            out["n"].append(n)
            out["n_missing"].append(int(len(v) - n))
            out["n_clusters"].append(n_clusters)
            for name, value in stats.items():
                out[name].append(value)
            out["ci_level"].append(ci)
            out["ci_method"].append(method)

    columns: dict[str, pa.Array] = {}
    for c in by:
        columns[c] = pa.array(out[c], type=results.schema.field(c).type)
    columns["metric"] = pa.array(out["metric"], type=pa.string())
    for c in ("n", "n_missing", "n_clusters"):
        columns[c] = pa.array(out[c], type=pa.int64())
    for c in ("mean", "median", "p95", "mean_low", "mean_high", "median_low", "median_high", "ci_level"):
        columns[c] = pa.array(out[c], type=pa.float64())
    columns["ci_method"] = pa.array(out["ci_method"], type=pa.string())
    return pa.table(columns)


def robustness_curve(agg: pa.Table, x: str, metric: str) -> dict[str, np.ndarray]:
    """One metric's mean and CI against a swept parameter ``x``, sorted by ``x``, ready to plot.

    Returns numpy arrays ``x``, ``mean``, ``low``, ``high`` (the mean's CI) plus ``median``,
    ``median_low``, ``median_high`` and ``n``; undefined values are NaN. ``agg`` must hold one row
    per ``x`` value for ``metric`` (aggregate with ``by=[x]``, or filter other parameters first).
    """
    rows = agg.filter(pc.equal(agg.column("metric"), metric))
    if len(rows) == 0:
        raise KeyError(f"no rows for metric {metric!r}")
    xs = pc.cast(rows.column(x), pa.float64()).to_numpy(zero_copy_only=False)
    if len(np.unique(xs)) != len(xs):
        raise ValueError(
            f"several rows per {x!r} value for {metric!r}; aggregate by [{x!r}] only, or filter first"
        )
    order = np.argsort(xs, kind="stable")

    def col(name: str) -> np.ndarray:
        return pc.cast(rows.column(name), pa.float64()).to_numpy(zero_copy_only=False)[order]

    return {
        "x": xs[order],
        "mean": col("mean"),
        "low": col("mean_low"),
        "high": col("mean_high"),
        "median": col("median"),
        "median_low": col("median_low"),
        "median_high": col("median_high"),
        "n": col("n"),
    }
