"""Delay samplers: the hot path that turns a validated spec into a stream of floats.

A sampler is drawn from once per simulated event (every STT partial, every LLM chunk), so
``draw()`` must be cheap. Calling numpy once per draw costs ~0.3 µs of call overhead; instead the
random samplers here draw a *block* of :data:`BLOCK` values with one vectorised numpy call and
hand them out from a Python list (~0.05 µs per draw). The values drawn are a pure function of the
generator's state, so a sampler built from the same seeded generator always yields the same
sequence; the only thing blocks change is that the generator runs ahead of what has been handed
out, which is why every component gets its own generator (see :mod:`kame_sim.delays.rng`).

This module knows nothing about pydantic: specs call these constructors with plain, already
validated numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

BLOCK = 256
"""Values drawn from the generator per refill."""

MAX_DELAY = 1e9
"""Upper clamp (s, ~32 years) so heavy tails (Pareto alpha < 1, huge sigma) can never yield inf."""

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

Fill = Callable[[np.random.Generator, int], np.ndarray]
"""``fill(rng, n)`` returns at least one (normally ``n``) delay values, before ``shift``."""


@runtime_checkable
class DelaySampler(Protocol):
    """Anything that yields delays: ``draw()`` returns seconds as a finite Python float >= 0."""

    def draw(self) -> float:
        """The next delay in seconds."""
        ...


class ConstantSampler:
    """Always the same delay; uses no randomness, so it leaves its generator untouched."""

    __slots__ = ("_value",)

    def __init__(self, value: float) -> None:
        self._value = float(value)

    def draw(self) -> float:
        return self._value


class BlockSampler:
    """Hands out values produced ``BLOCK`` at a time by ``fill`` (plus ``shift``), in order."""

    __slots__ = ("_buf", "_fill", "_rng", "_shift")

    def __init__(self, rng: np.random.Generator, fill: Fill, shift: float = 0.0) -> None:
        self._rng = rng
        self._fill = fill
        self._shift = float(shift)
        self._buf: list[float] = []

    def draw(self) -> float:
        buf = self._buf
        if not buf:
            self._refill()
            buf = self._buf
        return buf.pop()

    def _refill(self) -> None:
        block = np.asarray(self._fill(self._rng, BLOCK), dtype=np.float64)
        if self._shift:
            block = block + self._shift
        block = np.clip(block, 0.0, MAX_DELAY)
        # Reversed so that list.pop() (O(1) from the end) returns values in generation order,
        # which matters for the AR(1) sampler whose consecutive values are correlated.
        self._buf = block[::-1].tolist()


class MixtureSampler:
    """Picks a component per draw (selection indices drawn in blocks), then draws from it."""

    __slots__ = ("_cum", "_parts", "_rng", "_sel", "_shift")

    def __init__(
        self,
        rng: np.random.Generator,
        weights: Sequence[float],
        parts: Sequence[DelaySampler],
        shift: float = 0.0,
    ) -> None:
        cum = np.cumsum(np.asarray(weights, dtype=np.float64))
        cum /= cum[-1]
        cum[-1] = 1.0  # rng.random() < 1, so the last component always catches the remainder
        self._cum = cum
        self._parts = list(parts)
        self._rng = rng
        self._shift = float(shift)
        self._sel: list[int] = []

    def draw(self) -> float:
        sel = self._sel
        if not sel:
            picks = np.searchsorted(self._cum, self._rng.random(BLOCK), side="right")
            self._sel = sel = picks[::-1].tolist()
        return self._parts[sel.pop()].draw() + self._shift


# --------------------------------------------------------------------------- fills


def uniform_fill(low: float, high: float) -> Fill:
    width = high - low
    return lambda rng, n: low + width * rng.random(n)


def lognormal_fill(median: float, sigma: float) -> Fill:
    return lambda rng, n: median * np.exp(sigma * rng.standard_normal(n))


def gamma_fill(shape: float, scale: float) -> Fill:
    return lambda rng, n: rng.gamma(shape, scale, n)


def pareto_fill(scale: float, alpha: float) -> Fill:
    # numpy's pareto() is the Lomax (Pareto II, support >= 0, scale 1): 1 + Lomax is Pareto I
    # with x_min = 1, so scaling gives support [scale, inf) and P(X > x) = (scale / x) ** alpha.
    return lambda rng, n: scale * (1.0 + rng.pareto(alpha, n))


def empirical_fill(samples: Sequence[float]) -> Fill:
    values = np.asarray(samples, dtype=np.float64)
    return lambda rng, n: values[rng.integers(0, len(values), n)]


class AR1LogNormalFill:
    """Log-normal marginals whose log-jitter follows a stationary AR(1) process.

    ``z_t = rho z_{t-1} + sqrt(1 - rho^2) eps_t`` with ``z_0 ~ N(0, 1)`` keeps ``z_t ~ N(0, 1)``
    for every t, so each delay is LogN(median, sigma) while consecutive delays are correlated
    (a congested link stays congested for a while). The state survives between blocks.
    """

    def __init__(self, median: float, sigma: float, rho: float) -> None:
        self._median = median
        self._sigma = sigma
        self._rho = rho
        self._innovation = math.sqrt(1.0 - rho * rho)
        self._z: float | None = None

    def __call__(self, rng: np.random.Generator, n: int) -> np.ndarray:
        eps = rng.standard_normal(n).tolist()
        rho, c = self._rho, self._innovation
        z = eps[0] if self._z is None else rho * self._z + c * eps[0]
        out = [z]
        for e in eps[1:]:
            z = rho * z + c * e
            out.append(z)
        self._z = z
        return self._median * np.exp(self._sigma * np.asarray(out))


# --------------------------------------------------------------------------- truncated normal


def normal_mass(a: float, b: float) -> float:
    """``Phi(b) - Phi(a)`` for standardised bounds, accurate far out in either tail (via erfc)."""
    if a >= 0.0:
        return 0.5 * (math.erfc(a / _SQRT2) - math.erfc(b / _SQRT2))
    if b <= 0.0:
        return 0.5 * (math.erfc(-b / _SQRT2) - math.erfc(-a / _SQRT2))
    return 1.0 - 0.5 * math.erfc(-a / _SQRT2) - 0.5 * math.erfc(b / _SQRT2)


def truncnormal_mean(mean: float, std: float, low: float, high: float) -> float:
    """Mean of N(mean, std^2) restricted to [low, high]: ``mean + std (phi(a) - phi(b)) / Z``."""
    a, b = (low - mean) / std, (high - mean) / std
    mass = normal_mass(a, b)
    phi_a = math.exp(-0.5 * a * a)
    phi_b = 0.0 if math.isinf(b) else math.exp(-0.5 * b * b)
    return mean + std * (phi_a - phi_b) / (math.sqrt(2.0 * math.pi) * mass)


class TruncNormalFill:
    """Exact rejection sampling of a truncated normal, choosing the proposal that wastes least.

    Plain normal proposals are fine when [low, high] holds most of the mass, but e.g. a bound
    3 std above the mean would reject 99.9 % of them. Following Robert (1995, "Simulation of
    truncated normal variables"), the acceptance rate of three exact proposals is computed in
    closed form and the best is used: the normal itself, a uniform on [a, b] (narrow finite
    intervals) and a shifted exponential (intervals entirely in one tail). No inverse CDF is
    needed, so there is no scipy dependency and no precision loss in the tails.
    """

    def __init__(self, mean: float, std: float, low: float, high: float) -> None:
        self._mean, self._std, self._low, self._high = mean, std, low, high
        a, b = (low - mean) / std, (high - mean) / std
        self._flip = b <= 0.0  # sample -X on [-b, -a] so the exponential tail is always on the right
        if self._flip:
            a, b = -b, -a
        self._a, self._b = a, b
        log_mass = math.log(normal_mass(a, b))
        rates = {"normal": log_mass}
        if math.isfinite(b):
            peak = 0.0 if a <= 0.0 else a
            rates["uniform"] = log_mass + _LOG_SQRT_2PI - math.log(b - a) + 0.5 * peak * peak
        if a > 0.0:
            lam = 0.5 * (a + math.sqrt(a * a + 4.0))
            self._lam = lam
            rates["exponential"] = log_mass + math.log(lam) + _LOG_SQRT_2PI + lam * a - 0.5 * lam * lam
        self.method = max(rates, key=rates.__getitem__)
        self.acceptance = min(1.0, math.exp(rates[self.method]))

    def _propose(self, rng: np.random.Generator, m: int) -> np.ndarray:
        a, b = self._a, self._b
        if self.method == "normal":
            z = rng.standard_normal(m)
            return z[(z >= a) & (z <= b)]
        if self.method == "uniform":
            z = a + (b - a) * rng.random(m)
            peak = 0.0 if a <= 0.0 else a
            return z[rng.random(m) <= np.exp(0.5 * (peak * peak - z * z))]
        lam = self._lam
        z = a + rng.standard_exponential(m) / lam
        return z[(rng.random(m) <= np.exp(-0.5 * (z - lam) ** 2)) & (z <= b)]

    def __call__(self, rng: np.random.Generator, n: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        got = 0
        while got < n:
            m = min(1 << 16, int((n - got) / self.acceptance * 1.2) + 16)
            z = self._propose(rng, m)
            parts.append(z)
            got += len(z)
        z = np.concatenate(parts)
        if self._flip:
            z = -z
        # Rounding in mean + std * z can step a hair outside the bounds; never let it.
        return np.clip(self._mean + self._std * z, self._low, self._high)
