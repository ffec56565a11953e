"""Delay specifications: validated, frozen, TOML-friendly descriptions of a delay distribution.

A spec is data (it is written into every trace's metadata); a *sampler* built from it with a
seeded generator does the drawing. Specs are pydantic models so that a bad value in a scenario
file fails at load time with the key that is wrong, not halfway through a simulation. Validators
raise :class:`pydantic_core.PydanticCustomError` so that ``error["msg"]`` is the bare, short
message ("must be a finite number > 0, got nan") without pydantic's "Value error, " prefix.
"""

from __future__ import annotations

import math
import numbers
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kame_sim.delays.from_trace import TRACE_MEASURES, trace_samples
from kame_sim.delays.registry import PRESET_SPECS
from kame_sim.delays.samplers import (
    AR1LogNormalFill,
    BlockSampler,
    ConstantSampler,
    DelaySampler,
    MixtureSampler,
    TruncNormalFill,
    empirical_fill,
    gamma_fill,
    lognormal_fill,
    normal_mass,
    pareto_fill,
    truncnormal_mean,
    uniform_fill,
)

# --------------------------------------------------------------------------- number checks

MAX_DELAY_SETTING_S = 3600.0
"""Largest number of seconds any delay parameter (and any timing setting of a scenario) may be.

An hour is far beyond every latency KAME's loop can meaningfully absorb; a larger value is a typo
or a unit mix-up (ms for s) that would otherwise run to a "complete" trace in which nothing ever
arrives. Draws of heavy-tailed models may still exceed it (samplers clamp at ``MAX_DELAY``).
"""

MAX_SIGMA = 10.0
"""Largest log-space spread of a (AR(1)-)log-normal: e^10 ~ 22000x per standard deviation."""

MAX_GAMMA_SHAPE = 1e6
MAX_MIXTURE_WEIGHT = 1e6
"""Weights are relative; bounding them keeps their sum finite (1e308 + 1e308 would be inf)."""


def _error(message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError("delay_spec", message, context)


def _real_number(value: Any) -> Any:
    # pydantic would quietly read `true` as 1.0 and "0.5" as 0.5; in a delay both are mistakes.
    if isinstance(value, bool):
        raise _error("must be a number, got a boolean")
    if not isinstance(value, numbers.Real):
        shown = (
            f"a string ({value!r})" if isinstance(value, str) and len(value) <= 40 else type(value).__name__
        )
        raise _error("must be a number, got {got}", got=shown)
    return value


def _at_most(limit: float, unit: str = "") -> Any:
    def check(value: float) -> float:
        if value > limit:
            raise _error(
                "must be at most {limit}{unit}, got {got}", limit=f"{limit:g}", unit=unit, got=str(value)
            )
        return value

    return AfterValidator(check)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise _error("must be a finite number, got {got}", got=str(value))
    return value


def _non_negative(value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise _error("must be a finite number >= 0, got {got}", got=str(value))
    return value


def _positive(value: float) -> float:
    if not (math.isfinite(value) and value > 0.0):
        raise _error("must be a finite number > 0, got {got}", got=str(value))
    return value


def _upper_bound(value: Any) -> Any:
    # JSON has no infinity: model_dump_json() writes it as null, so read null back as "no bound".
    return math.inf if value is None else _real_number(value)


def _open_unit(value: float) -> float:
    if not (math.isfinite(value) and -1.0 < value < 1.0):
        raise _error("must be a number in (-1, 1), got {got}", got=str(value))
    return value


def _not_nan_bound(value: float) -> float:
    if math.isnan(value) or value == -math.inf:
        raise _error("must be a number > 0 or inf, got {got}", got=str(value))
    if math.isfinite(value) and value > MAX_DELAY_SETTING_S:
        raise _error(
            "must be at most {limit} s or inf, got {got}", limit=f"{MAX_DELAY_SETTING_S:g}", got=str(value)
        )
    return value


def _within_seconds(value: float) -> float:
    if abs(value) > MAX_DELAY_SETTING_S:
        raise _error(
            "must be between -{limit} and {limit} s, got {got}",
            limit=f"{MAX_DELAY_SETTING_S:g}",
            got=str(value),
        )
    return value


_SECONDS_CAP = _at_most(MAX_DELAY_SETTING_S, " s")
_Number = BeforeValidator(_real_number)
Positive = Annotated[float, _Number, AfterValidator(_positive)]
Seconds = Annotated[float, _Number, AfterValidator(_non_negative), _SECONDS_CAP]
PositiveSeconds = Annotated[float, _Number, AfterValidator(_positive), _SECONDS_CAP]
Location = Annotated[float, _Number, AfterValidator(_finite), AfterValidator(_within_seconds)]
Sigma = Annotated[float, _Number, AfterValidator(_positive), _at_most(MAX_SIGMA)]
GammaShape = Annotated[float, _Number, AfterValidator(_positive), _at_most(MAX_GAMMA_SHAPE)]
Weight = Annotated[float, _Number, AfterValidator(_positive), _at_most(MAX_MIXTURE_WEIGHT)]
UpperBound = Annotated[float, BeforeValidator(_upper_bound), AfterValidator(_not_nan_bound)]
Correlation = Annotated[float, _Number, AfterValidator(_open_unit)]


def _non_empty(value: tuple[Any, ...]) -> tuple[Any, ...]:
    if not value:
        raise _error("must not be empty")
    return value


def _s(x: float) -> str:
    """Compact number for describe(): 0.73, 2, 0.0112, inf."""
    return f"{x:.4g}"


# --------------------------------------------------------------------------- models


class _DelayBase(BaseModel):
    """Shared by all specs: strict keys, immutability and the optional fixed ``shift``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shift: Seconds = Field(0.0, description="fixed seconds added to every draw (e.g. network overhead)")

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        """A sampler drawing from this distribution with ``rng`` (give each component its own)."""
        raise NotImplementedError

    def mean(self) -> float:
        """Expected delay in seconds, shift included (inf for Pareto with alpha <= 1)."""
        return self._base_mean() + self.shift

    def describe(self) -> str:
        """Short human form for logs and reports, e.g. ``LogN(median=0.73 s, sigma=0.32)``."""
        base = self._describe_base()
        return f"{base} + {_s(self.shift)} s" if self.shift else base

    def _base_mean(self) -> float:
        raise NotImplementedError

    def _describe_base(self) -> str:
        raise NotImplementedError


class Constant(_DelayBase):
    """A fixed delay (algorithmic latency, or a bare number in a scenario file)."""

    kind: Literal["constant"] = "constant"
    value: Seconds

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        return ConstantSampler(self.value + self.shift)

    def _base_mean(self) -> float:
        return self.value

    def _describe_base(self) -> str:
        return f"{_s(self.value)} s"


class Uniform(_DelayBase):
    """Uniform on [low, high]: bounded jitter with no preferred value."""

    kind: Literal["uniform"] = "uniform"
    low: Seconds
    high: Seconds

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.low > self.high:
            raise _error("low ({low}) must be <= high ({high})", low=self.low, high=self.high)
        return self

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        return BlockSampler(rng, uniform_fill(self.low, self.high), self.shift)

    def _base_mean(self) -> float:
        return 0.5 * (self.low + self.high)

    def _describe_base(self) -> str:
        return f"U({_s(self.low)} s, {_s(self.high)} s)"


class TruncNormal(_DelayBase):
    """Normal(mean, std) restricted to [low, high]; low defaults to 0 so delays stay >= 0."""

    kind: Literal["truncnormal"] = "truncnormal"
    mean_: Location = Field(alias="mean")
    std: PositiveSeconds
    low: Seconds = 0.0
    high: UpperBound = math.inf

    # `mean` is the key users write, but a field of that name would hide the mean() method.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    @model_validator(mode="after")
    def _interval(self) -> TruncNormal:
        if not self.low < self.high:
            raise _error("low ({low}) must be < high ({high})", low=self.low, high=self.high)
        a, b = (self.low - self.mean_) / self.std, (self.high - self.mean_) / self.std
        if normal_mass(a, b) < 1e-100:
            raise _error("[low, high] is too many std away from mean to hold any probability")
        return self

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        return BlockSampler(rng, TruncNormalFill(self.mean_, self.std, self.low, self.high), self.shift)

    def _base_mean(self) -> float:
        return truncnormal_mean(self.mean_, self.std, self.low, self.high)

    def _describe_base(self) -> str:
        return (
            f"TruncN(mean={_s(self.mean_)} s, std={_s(self.std)} s, in [{_s(self.low)}, {_s(self.high)}] s)"
        )


class LogNormal(_DelayBase):
    """exp(N(ln median, sigma^2)): the usual fit for service latencies (right-skewed, > 0)."""

    kind: Literal["lognormal"] = "lognormal"
    median: PositiveSeconds
    sigma: Sigma

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        return BlockSampler(rng, lognormal_fill(self.median, self.sigma), self.shift)

    def _base_mean(self) -> float:
        return self.median * math.exp(0.5 * self.sigma**2)

    def _describe_base(self) -> str:
        return f"LogN(median={_s(self.median)} s, sigma={_s(self.sigma)})"


class Gamma(_DelayBase):
    """Gamma(shape, scale): the best fit for Internet round-trip times (arXiv 1202.2153)."""

    kind: Literal["gamma"] = "gamma"
    shape: GammaShape
    scale: PositiveSeconds

    @model_validator(mode="after")
    def _bounded_mean(self) -> Gamma:
        if self.shape * self.scale > MAX_DELAY_SETTING_S:
            raise _error(
                "mean shape * scale = {mean} s is more than {limit} s",
                mean=f"{self.shape * self.scale:g}",
                limit=f"{MAX_DELAY_SETTING_S:g}",
            )
        return self

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        return BlockSampler(rng, gamma_fill(self.shape, self.scale), self.shift)

    def _base_mean(self) -> float:
        return self.shape * self.scale

    def _describe_base(self) -> str:
        return f"Gamma(shape={_s(self.shape)}, scale={_s(self.scale)} s)"


class Pareto(_DelayBase):
    """Pareto type I: x >= scale, P(X > x) = (scale/x)^alpha; heavy tails (alpha ~ 1 on long paths)."""

    kind: Literal["pareto"] = "pareto"
    scale: PositiveSeconds
    alpha: Positive

    @model_validator(mode="after")
    def _bounded_median(self) -> Pareto:
        # median = scale * 2^(1/alpha), compared in logs: a tiny alpha would overflow the power
        if math.log(self.scale) + math.log(2.0) / self.alpha > math.log(MAX_DELAY_SETTING_S):
            raise _error(
                "median scale * 2^(1/alpha) is more than {limit} s (alpha = {alpha} is too small)",
                limit=f"{MAX_DELAY_SETTING_S:g}",
                alpha=f"{self.alpha:g}",
            )
        return self

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        return BlockSampler(rng, pareto_fill(self.scale, self.alpha), self.shift)

    def _base_mean(self) -> float:
        return self.alpha * self.scale / (self.alpha - 1.0) if self.alpha > 1.0 else math.inf

    def _describe_base(self) -> str:
        return f"Pareto(scale={_s(self.scale)} s, alpha={_s(self.alpha)})"


class MixtureComponent(BaseModel):
    """One weighted part of a mixture; ``model`` takes the same shorthand as any delay field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: Weight
    model: DelayField


class Mixture(_DelayBase):
    """A draw comes from component i with probability weight_i / sum(weights).

    This is how rare slow modes are modelled (OpenAI TTFT: a log-normal body plus 1–3 % of
    multi-second stalls), which a single log-normal cannot produce.
    """

    kind: Literal["mixture"] = "mixture"
    components: Annotated[tuple[MixtureComponent, ...], AfterValidator(_non_empty)]

    def probabilities(self) -> list[float]:
        """The normalised weights."""
        total = math.fsum(c.weight for c in self.components)
        return [c.weight / total for c in self.components]

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        parts = [c.model.sampler(rng) for c in self.components]
        return MixtureSampler(rng, [c.weight for c in self.components], parts, self.shift)

    def _base_mean(self) -> float:
        return math.fsum(
            p * c.model.mean() for p, c in zip(self.probabilities(), self.components, strict=True)
        )

    def _describe_base(self) -> str:
        parts = [
            f"{100 * p:.3g}% {c.model.describe()}"
            for p, c in zip(self.probabilities(), self.components, strict=True)
        ]
        return "(" + " + ".join(parts) + ")" if self.shift else " + ".join(parts)


EmpiricalMeasure = Literal["ttft", "inter_chunk", "stt_final", "stt_partial"]


class Empirical(_DelayBase):
    """Resampling (with replacement) of measured delays, e.g. latencies logged from a real service.

    The delays are either listed (``samples``) or taken from a trace (``trace`` + ``measure``): a
    simulated run, a live run or an imported KAME log, so that what was measured once can drive
    later simulations without copying numbers around. A relative ``trace`` path is resolved against
    the current directory when the spec is validated (scenario files store the absolute path).
    """

    kind: Literal["empirical"] = "empirical"
    samples: Annotated[tuple[Seconds, ...], AfterValidator(_non_empty)] | None = None
    measure: EmpiricalMeasure | None = Field(None, description="which latency of the trace to resample")
    trace: Path | None = Field(None, description="run directory or .arrows whose latencies are resampled")

    @field_validator("trace", mode="after")
    @classmethod
    def _readable_trace(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        try:
            value = value.expanduser().resolve()
        except (RuntimeError, ValueError, OSError) as exc:  # "~nobody/x", a NUL byte, a link loop
            raise _error("cannot use trace path {path}: {reason}", path=str(value), reason=str(exc)) from None
        measure = info.data.get("measure")
        if measure is None:
            return value  # reported by _one_source (missing) or by measure's own check (invalid)
        try:
            found = trace_samples(value, measure)
        except ValueError as exc:
            raise _error("{reason}", reason=str(exc)) from None
        if not found:
            event = TRACE_MEASURES[measure]
            raise _error(
                "trace {path} has no {measure} latencies (no {event} rows with delay_s)",
                path=str(value),
                measure=measure,
                event=event,
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Empirical:
        if (self.samples is None) == (self.trace is None):
            raise _error("give exactly one of samples or trace")
        if self.trace is not None and self.measure is None:
            raise _error("trace needs measure (ttft, inter_chunk, stt_final or stt_partial)")
        if self.trace is None and self.measure is not None:
            raise _error("measure needs trace")
        return self

    def values(self) -> tuple[float, ...]:
        """The delays resampled: the listed samples, or the trace's measured latencies."""
        if self.samples is not None:
            return self.samples
        assert self.trace is not None and self.measure is not None
        return trace_samples(self.trace, self.measure)

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        return BlockSampler(rng, empirical_fill(self.values()), self.shift)

    def _base_mean(self) -> float:
        values = self.values()
        return math.fsum(values) / len(values)

    def _describe_base(self) -> str:
        values = self.values()
        median = float(np.median(values))
        source = f", {self.measure} from {self.trace.name}" if self.trace is not None else ""
        return f"Empirical(n={len(values)}, median={_s(median)} s{source})"


class AR1LogNormal(_DelayBase):
    """LogN(median, sigma) marginals with AR(1)-correlated log-jitter (lag-1 correlation rho).

    Independent draws cannot represent congestion episodes, where one slow response predicts the
    next; ``rho`` sets how persistent they are, without changing the distribution of one delay.
    """

    kind: Literal["ar1"] = "ar1"
    median: PositiveSeconds
    sigma: Sigma
    rho: Correlation

    def sampler(self, rng: np.random.Generator) -> DelaySampler:
        return BlockSampler(rng, AR1LogNormalFill(self.median, self.sigma, self.rho), self.shift)

    def _base_mean(self) -> float:
        return self.median * math.exp(0.5 * self.sigma**2)

    def _describe_base(self) -> str:
        return f"AR1-LogN(median={_s(self.median)} s, sigma={_s(self.sigma)}, rho={_s(self.rho)})"


DelaySpec = Annotated[
    Constant | Uniform | TruncNormal | LogNormal | Gamma | Pareto | Mixture | Empirical | AR1LogNormal,
    Field(discriminator="kind"),
]
"""Any delay model, selected by its ``kind`` key."""


def _shorthand(value: Any) -> Any:
    """Bare number -> constant seconds; string -> the named preset; anything else unchanged."""
    if isinstance(value, bool):
        raise _error("expected seconds, a preset name or a table with 'kind', got a boolean")
    if isinstance(value, numbers.Real):
        return {"kind": "constant", "value": float(value)}
    if isinstance(value, str):
        spec = PRESET_SPECS.get(value)
        if spec is None:
            raise _error(
                "unknown delay preset '{name}'; known: {known}",
                name=value,
                known=", ".join(sorted(PRESET_SPECS)),
            )
        return spec
    return value


DelayField = Annotated[DelaySpec, BeforeValidator(_shorthand)]

"""A config field holding a delay: a table with ``kind``, a bare number (constant seconds) or a
preset name, e.g. ``ttft: DelayField = "gpt-4.1-ttft"``."""

# The ``kind`` tags of DelaySpec: pydantic puts them in error locations, users never write them as keys.
DELAY_KINDS = frozenset(
    typing.get_args(m.model_fields["kind"].annotation)[0]
    for m in typing.get_args(typing.get_args(DelaySpec)[0])
)


MixtureComponent.model_rebuild()
Mixture.model_rebuild()

_ADAPTER: TypeAdapter[Any] = TypeAdapter(DelayField)


def parse_delay(value: Any) -> DelaySpec:
    """Validate anything a :data:`DelayField` accepts (raises pydantic ``ValidationError``)."""
    return _ADAPTER.validate_python(value)
