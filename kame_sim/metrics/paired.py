"""The difference of two sets of runs' means, with a paired bootstrap CI (docs/metrics.md).

Comparing two sweeps (``kame-sim compare``, ``kame-sim check --baseline``) asks: at one design point,
did a metric's mean move, beyond what run-to-run noise explains? Two sweeps of the same design run
the same conversations with (usually) the same seeds, and a run's seed fixes its random delays and
content draws, so run ``(conversation, seed)`` of A and of B share most of their noise: the
**difference per pair** is far less noisy than either side. The interval therefore comes from the
pairs, resampled the way :mod:`kame_sim.metrics.aggregate` resamples runs (whole conversations when
there are two or more, its ``_bootstrap`` on the per-pair differences; single runs otherwise):

* ``paired (cluster)``: runs matched by (conversation, seed), pairs of at least ``MIN_UNITS`` (5)
  conversations: conversations resampled (a draw keeps all the pairs of a conversation);
* ``paired (runs)``: matched pairs of fewer conversations: the pairs resampled (this ignores how
  much the *difference* varies between conversations, which pairing mostly cancels);
* ``cluster-paired``: no run pairs (different seed sets) but 5 or more conversations run by both:
  the same drawn conversations on both sides (a draw keeps all their runs, of A and of B);
* ``unpaired (runs)``: no pairs, fewer shared conversations: each side's runs resampled on its own
  (a two-sample bootstrap);
* ``none``: fewer than 5 pairs (paired) or runs on a side (unpaired): the difference, no interval.

Unmatched runs are left out of a paired comparison (``n_unpaired`` counts them), so its means are
over the pairs. The interval is the *expanded* percentile interval (:func:`expanded_level`) of
``n_boot`` resampled differences, so that it keeps its nominal coverage with a handful of
conversations; a difference is ``significant`` when the interval excludes 0. Deterministic for a
given ``rng``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from kame_sim.metrics.aggregate import _bootstrap

#: Fewer resampling units than this give no interval. A bootstrap of a handful of values cannot
#: reach its nominal coverage: with 4 pairs all of one sign (1 time in 8 when nothing changed) every
#: resampled mean has that sign too, so any percentile interval excludes 0.
MIN_UNITS = 5


@dataclass(frozen=True)
class Sample:
    """One side's runs: values (NaN = undefined, left out), their conversation and seed, an id each."""

    values: np.ndarray
    conversation: Sequence[str]
    seed: Sequence[object]
    run_id: Sequence[str] = ()

    @classmethod
    def of(cls, values, conversation, seed, run_id=()) -> Sample:
        return cls(np.asarray(values, dtype=float), list(conversation), list(seed), list(run_id))

    def valid(self) -> Sample:
        keep = ~np.isnan(self.values)
        idx = np.flatnonzero(keep)
        ids = [self.run_id[i] for i in idx] if len(self.run_id) else []
        return Sample(
            self.values[keep], [self.conversation[i] for i in idx], [self.seed[i] for i in idx], ids
        )


@dataclass(frozen=True)
class Pair:
    """One matched pair of runs (B − A)."""

    conversation: str
    seed: object
    a: float
    b: float
    a_run: str | None
    b_run: str | None

    @property
    def delta(self) -> float:
        return self.b - self.a


@dataclass(frozen=True)
class PairedDifference:
    """``delta = mean_b − mean_a`` and its bootstrap interval (``None`` when there is none)."""

    mean_a: float | None
    mean_b: float | None
    delta: float | None
    low: float | None
    high: float | None
    n_a: int
    n_b: int
    n_pairs: int
    n_unpaired: int
    n_clusters: int
    method: str
    ci_level: float
    pairs: list[Pair] = field(default_factory=list, repr=False)

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (``False`` without an interval)."""
        if self.low is None or self.high is None:
            return False
        return self.low > 0.0 or self.high < 0.0


def _keys(sample: Sample) -> list[tuple[str, str, int]]:
    """(conversation, seed, occurrence): a repeated (conversation, seed) pairs in order of appearance."""
    seen: Counter = Counter()
    out = []
    for c, s in zip(sample.conversation, sample.seed, strict=True):
        k = (str(c), str(s))
        out.append((*k, seen[k]))
        seen[k] += 1
    return out


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher series
    of Abramowitz & Stegun 26.7.5 (error < 0.2 % at 3 df for p = 0.975, far less above)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2.0 * p - 1.0) / math.sqrt(2.0 * p * (1.0 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def expanded_level(ci: float, n_units: int) -> float:
    """The percentile level that gives a nominal ``ci`` interval from ``n_units`` resampled units.

    Hesterberg's *expanded percentile* interval ("What teachers should know about the bootstrap",
    The American Statistician 69, 2015): the plain percentile interval of a mean is too narrow for
    small samples (it uses z where t applies, and the bootstrap variance is (n−1)/n of the
    sample's), so its tail levels are taken at ``Φ(−sqrt(n/(n−1))·t_{n−1, 1−α/2})`` instead of
    ``α/2``. With 8 conversations a plain 95 % interval covers ~89 %; expanded, ~95 %.
    """
    if n_units < 2:
        return ci
    stretch = math.sqrt(n_units / (n_units - 1)) * t_quantile((1.0 + ci) / 2.0, n_units - 1)
    return 2.0 * NormalDist().cdf(stretch) - 1.0


def _quantiles(draws: np.ndarray, ci: float, n_units: int) -> tuple[float, float]:
    level = expanded_level(ci, n_units)
    lo, hi = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def _cluster_means(values: np.ndarray, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.bincount(codes, weights=values, minlength=n), np.bincount(codes, minlength=n).astype(float)


def paired_difference(
    a: Sample, b: Sample, rng: np.random.Generator, n_boot: int = 2000, ci: float = 0.95
) -> PairedDifference:
    """B − A: the difference of means with a paired bootstrap interval (module docstring)."""
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    a, b = a.valid(), b.valid()
    n_a, n_b = len(a.values), len(b.values)
    base = {"n_a": n_a, "n_b": n_b, "ci_level": ci}
    if n_a == 0 or n_b == 0:
        mean_a = float(a.values.mean()) if n_a else None
        mean_b = float(b.values.mean()) if n_b else None
        return PairedDifference(
            mean_a,
            mean_b,
            None,
            None,
            None,
            **base,
            n_pairs=0,
            n_unpaired=n_a + n_b,
            n_clusters=0,
            method="none",
        )

    index_b = {k: i for i, k in enumerate(_keys(b))}
    pairs: list[Pair] = []
    for i, k in enumerate(_keys(a)):
        j = index_b.get(k)
        if j is not None:
            pairs.append(
                Pair(
                    k[0],
                    a.seed[i],
                    float(a.values[i]),
                    float(b.values[j]),
                    a.run_id[i] if len(a.run_id) else None,
                    b.run_id[j] if len(b.run_id) else None,
                )
            )
    if pairs:
        d = np.array([p.delta for p in pairs])
        mean_a = float(np.mean([p.a for p in pairs]))
        mean_b = float(np.mean([p.b for p in pairs]))
        clusters, unit = np.unique([p.conversation for p in pairs], return_inverse=True)
        common = {
            **base,
            "n_pairs": len(pairs),
            "n_unpaired": n_a + n_b - 2 * len(pairs),
            "n_clusters": len(clusters),
            "pairs": pairs,
        }
        delta = float(d.mean())
        if len(pairs) < MIN_UNITS:
            return PairedDifference(mean_a, mean_b, delta, None, None, **common, method="none")
        if len(clusters) >= MIN_UNITS:
            method, n_units = "paired (cluster)", len(clusters)
        else:
            method, unit, n_units = "paired (runs)", np.arange(len(d)), len(d)
        means, _medians = _bootstrap(d, unit, n_units, n_boot, rng)
        low, high = _quantiles(means, ci, n_units)
        return PairedDifference(mean_a, mean_b, delta, low, high, **common, method=method)

    # No run pairs: pair by conversation where both sides ran enough of the same ones.
    shared = sorted(set(map(str, a.conversation)) & set(map(str, b.conversation)))
    if len(shared) >= MIN_UNITS:
        code = {c: i for i, c in enumerate(shared)}
        ka = np.array([str(c) in code for c in a.conversation])
        kb = np.array([str(c) in code for c in b.conversation])
        ca = np.array([code[str(c)] for c in a.conversation if str(c) in code], dtype=np.int64)
        cb = np.array([code[str(c)] for c in b.conversation if str(c) in code], dtype=np.int64)
        va, vb = a.values[ka], b.values[kb]
        sa, na = _cluster_means(va, ca, len(shared))
        sb, nb = _cluster_means(vb, cb, len(shared))
        draws = rng.integers(0, len(shared), size=(n_boot, len(shared)))
        deltas = sb[draws].sum(axis=1) / nb[draws].sum(axis=1) - sa[draws].sum(axis=1) / na[draws].sum(axis=1)
        low, high = _quantiles(deltas, ci, len(shared))
        mean_a, mean_b = float(va.mean()), float(vb.mean())
        return PairedDifference(
            mean_a,
            mean_b,
            mean_b - mean_a,
            low,
            high,
            **base,
            n_pairs=0,
            n_unpaired=int(n_a - len(va) + n_b - len(vb)),
            n_clusters=len(shared),
            method="cluster-paired",
        )

    mean_a, mean_b = float(a.values.mean()), float(b.values.mean())
    if n_a < MIN_UNITS or n_b < MIN_UNITS:
        return PairedDifference(
            mean_a,
            mean_b,
            mean_b - mean_a,
            None,
            None,
            **base,
            n_pairs=0,
            n_unpaired=0,
            n_clusters=len(shared),
            method="none",
        )
    ma, _ = _bootstrap(a.values, np.arange(n_a), n_a, n_boot, rng)
    mb, _ = _bootstrap(b.values, np.arange(n_b), n_b, n_boot, rng)
    low, high = _quantiles(mb - ma, ci, min(n_a, n_b))
    return PairedDifference(
        mean_a,
        mean_b,
        mean_b - mean_a,
        low,
        high,
        **base,
        n_pairs=0,
        n_unpaired=0,
        n_clusters=len(shared),
        method="unpaired (runs)",
    )
