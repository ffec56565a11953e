"""Aggregation with clustered bootstrap CIs: coverage, width, determinism, missing values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from kame_sim.metrics import aggregate, robustness_curve
from kame_sim.metrics.aggregate import _bootstrap

TRUE_MEAN = 1.5


def clustered_results(
    reps: int, clusters: int = 8, runs: int = 10, tau: float = 1.0, sigma: float = 1.0, seed: int = 123
) -> pa.Table:
    """``reps`` independent sweeps: value = TRUE_MEAN + cluster effect N(0, tau) + run noise N(0, sigma)."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.0, tau, size=(reps, clusters, 1))
    values = TRUE_MEAN + effect + rng.normal(0.0, sigma, size=(reps, clusters, runs))
    return pa.table(
        {
            "rep": np.repeat(np.arange(reps), clusters * runs),
            "conversation_id": np.tile(np.repeat([f"c{j}" for j in range(clusters)], runs), reps),
            "seed": np.tile(np.arange(runs), reps * clusters),
            "lag": values.ravel(),
        }
    )


def test_clustered_ci_covers_the_true_mean_at_about_the_nominal_rate():
    results = clustered_results(reps=200)
    agg = aggregate(results, by=["rep"], metrics=["lag"], n_boot=2000, seed=1)
    low, high = agg["mean_low"].to_numpy(), agg["mean_high"].to_numpy()
    coverage = np.mean((low <= TRUE_MEAN) & (high >= TRUE_MEAN))
    assert 0.85 <= coverage <= 0.99, coverage
    assert set(agg["ci_method"].to_pylist()) == {"cluster"}
    assert set(agg["n_clusters"].to_pylist()) == {8} and set(agg["n"].to_pylist()) == {80}
    # Resampling runs as if they were independent covers far less: the reason for clustering.
    naive = aggregate(results, by=["rep"], metrics=["lag"], cluster=None, n_boot=2000, seed=1)
    naive_cov = np.mean(
        (naive["mean_low"].to_numpy() <= TRUE_MEAN) & (naive["mean_high"].to_numpy() >= TRUE_MEAN)
    )
    assert naive_cov < 0.7
    assert set(naive["ci_method"].to_pylist()) == {"run"}


def test_clustered_ci_is_wider_than_naive_when_clusters_differ():
    results = clustered_results(reps=20, tau=2.0, sigma=0.5)
    clustered = aggregate(results, by=["rep"], metrics=["lag"], n_boot=1000)
    naive = aggregate(results, by=["rep"], metrics=["lag"], cluster=None, n_boot=1000)
    for stat in ("mean", "median"):
        wide = clustered[f"{stat}_high"].to_numpy() - clustered[f"{stat}_low"].to_numpy()
        narrow = naive[f"{stat}_high"].to_numpy() - naive[f"{stat}_low"].to_numpy()
        assert np.all(wide > narrow)
        assert np.mean(wide / narrow) > 2.0
    # With no cluster effect the two agree roughly.
    flat = clustered_results(reps=20, tau=0.0, sigma=1.0)
    ratio = np.mean(
        (
            aggregate(flat, ["rep"], ["lag"])["mean_high"].to_numpy()
            - aggregate(flat, ["rep"], ["lag"])["mean_low"].to_numpy()
        )
        / (
            aggregate(flat, ["rep"], ["lag"], cluster=None)["mean_high"].to_numpy()
            - aggregate(flat, ["rep"], ["lag"], cluster=None)["mean_low"].to_numpy()
        )
    )
    assert 0.7 < ratio < 1.3


def test_point_estimates_and_determinism():
    results = clustered_results(reps=3)
    a = aggregate(results, by=["rep"], metrics=["lag"], seed=5)
    b = aggregate(results, by=["rep"], metrics=["lag"], seed=5)
    c = aggregate(results, by=["rep"], metrics=["lag"], seed=6)
    assert a.equals(b)
    assert not np.allclose(a["mean_low"].to_numpy(), c["mean_low"].to_numpy())
    values = results.filter(pa.compute.equal(results["rep"], 1))["lag"].to_numpy()
    row = a.filter(pa.compute.equal(a["rep"], 1)).to_pylist()[0]
    assert row["mean"] == pytest.approx(values.mean())
    assert row["median"] == pytest.approx(np.median(values))
    assert row["p95"] == pytest.approx(np.percentile(values, 95))
    assert row["mean_low"] < row["mean"] < row["mean_high"]
    assert row["median_low"] <= row["median"] <= row["median_high"]
    assert row["ci_level"] == 0.95 and row["metric"] == "lag"
    # A metric's interval does not depend on which other metrics are aggregated with it.
    both = aggregate(results.append_column("other", results["lag"]), ["rep"], ["other", "lag"], seed=5)
    only_lag = both.filter(pa.compute.equal(both["metric"], "lag")).select(a.column_names)
    assert only_lag.equals(a)
    assert a.schema.field("rep").type == results.schema.field("rep").type


def test_missing_values_are_ignored_and_counted():
    results = pa.table(
        {
            "ttft": [1.0, 1.0, 2.0, 2.0, 2.0],
            "conversation_id": ["a", "a", "b", "b", "c"],
            "onset": pa.array([0.1, None, 0.3, float("nan"), 0.5], type=pa.float64()),
            "never": pa.array([None] * 5, type=pa.float64()),
            "count": [1, 2, 3, 4, 5],
        }
    )
    agg = aggregate(results, by=["ttft"], metrics=["onset", "never", "count"], n_boot=500)
    rows = {(r["ttft"], r["metric"]): r for r in agg.to_pylist()}
    assert rows[(1.0, "onset")]["n"] == 1 and rows[(1.0, "onset")]["n_missing"] == 1
    assert rows[(1.0, "onset")]["mean"] == 0.1 and rows[(1.0, "onset")]["ci_method"] == "none"
    assert rows[(1.0, "onset")]["mean_low"] is None
    r = rows[(2.0, "onset")]
    assert (r["n"], r["n_missing"], r["n_clusters"]) == (2, 1, 2)
    assert r["mean"] == pytest.approx(0.4) and r["ci_method"] == "cluster"
    assert 0.3 <= r["mean_low"] <= r["mean_high"] <= 0.5
    r = rows[(2.0, "never")]
    assert (r["n"], r["n_missing"], r["mean"], r["median"], r["ci_method"]) == (0, 3, None, None, "none")
    r = rows[(1.0, "count")]  # a single conversation: runs are resampled, and the table says so
    assert r["ci_method"] == "run (single cluster)" and r["n_clusters"] == 1
    assert 1.0 <= r["mean_low"] <= r["mean_high"] <= 2.0


def test_no_grouping_and_bad_input():
    results = clustered_results(reps=1)
    agg = aggregate(results, by=[], metrics=["lag"], n_boot=200)
    assert len(agg) == 1 and agg.column_names[0] == "metric"
    with pytest.raises(KeyError):
        aggregate(results, by=["nope"], metrics=["lag"])
    with pytest.raises(ValueError):
        aggregate(results, by=["rep"], metrics=["lag"], ci=1.5)
    with pytest.raises(TypeError):
        aggregate(results, by=["rep"], metrics=["conversation_id"])


def test_vectorised_bootstrap_matches_explicit_resamples():
    rng_values = np.random.default_rng(0)
    values = rng_values.normal(size=23)
    unit = np.array([0] * 5 + [1] * 3 + [2] * 8 + [3] * 1 + [4] * 6)
    means, medians = _bootstrap(values, unit, 5, 300, np.random.default_rng(42))
    draws = np.random.default_rng(42).integers(0, 5, size=(300, 5))
    for b in range(300):
        sample = np.concatenate([values[unit == u] for u in draws[b]])
        assert means[b] == pytest.approx(sample.mean())
        assert medians[b] == pytest.approx(np.median(sample))


def test_robustness_curve_is_sorted_by_x():
    rng = np.random.default_rng(3)
    ttft = np.repeat([2.0, 0.5, 1.0], 12)
    results = pa.table(
        {
            "llm.ttft": ttft,
            "conversation_id": np.tile(np.repeat(["a", "b", "c"], 4), 3),
            "onset": ttft + rng.normal(0, 0.1, size=len(ttft)),
        }
    )
    agg = aggregate(results, by=["llm.ttft"], metrics=["onset"], n_boot=300)
    curve = robustness_curve(agg, "llm.ttft", "onset")
    assert curve["x"].tolist() == [0.5, 1.0, 2.0]
    assert np.all(curve["low"] <= curve["mean"]) and np.all(curve["mean"] <= curve["high"])
    np.testing.assert_allclose(curve["mean"], [0.5, 1.0, 2.0], atol=0.1)
    assert curve["n"].tolist() == [12, 12, 12]
    with pytest.raises(KeyError):
        robustness_curve(agg, "llm.ttft", "missing")
    two = aggregate(results.append_column("arm", pa.array(["x", "y"] * 18)), ["llm.ttft", "arm"], ["onset"])
    with pytest.raises(ValueError):
        robustness_curve(two, "llm.ttft", "onset")
