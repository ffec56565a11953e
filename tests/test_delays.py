"""Delay models: distributions match their analytic values, streams are reproducible, bad specs fail."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from kame_sim.delays import (
    MAX_DELAY,
    PRESETS,
    AR1LogNormal,
    Constant,
    DelayField,
    DelaySampler,
    Empirical,
    Gamma,
    LogNormal,
    Mixture,
    Pareto,
    TruncNormal,
    Uniform,
    component_rng,
    parse_delay,
    preset_spec,
)
from kame_sim.delays.samplers import BLOCK, TruncNormalFill

N = 20_000
DOCS = Path(__file__).resolve().parents[1] / "docs" / "delays.md"


def draws(spec, n: int = N, seed: int = 1, component: str = "test") -> np.ndarray:
    sampler = spec.sampler(component_rng(seed, component))
    return np.array([sampler.draw() for _ in range(n)])


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


# --------------------------------------------------------------------------- distributions


def test_constant_is_exact_and_uses_no_randomness() -> None:
    rng = component_rng(0, "x")
    sampler = Constant(value=0.5, shift=0.1).sampler(rng)
    assert {sampler.draw() for _ in range(10)} == {0.6}
    assert rng.random() == component_rng(0, "x").random()  # generator untouched


def test_uniform_bounds_mean_and_quantile() -> None:
    x = draws(Uniform(low=2.0, high=5.0))
    assert x.min() >= 2.0 and x.max() <= 5.0
    assert abs(x.mean() - 3.5) < 0.03
    assert abs(np.quantile(x, 0.25) - 2.75) < 0.05


def test_lognormal_median_mean_and_shape() -> None:
    spec = LogNormal(median=0.73, sigma=0.32)
    x = draws(spec)
    assert abs(np.median(x) - 0.73) < 0.01
    assert abs(x.mean() - spec.mean()) < 0.01
    assert abs(np.log(x).std() - 0.32) < 0.01
    assert abs(np.quantile(x, 0.95) - 0.73 * math.exp(0.32 * 1.6449)) < 0.03


def test_gamma_mean_and_variance() -> None:
    x = draws(Gamma(shape=2.0, scale=0.05))
    assert abs(x.mean() - 0.1) < 0.002
    assert abs(x.var() - 2.0 * 0.05**2) < 0.0003


def test_pareto_is_type_one() -> None:
    spec = Pareto(scale=0.1, alpha=3.0)
    x = draws(spec)
    assert x.min() >= 0.1
    assert x.min() < 0.1001  # support starts at scale, not at 0 (Lomax) or 2*scale
    assert abs((x > 0.2).mean() - 0.5**3) < 0.01  # P(X > x) = (scale / x) ** alpha
    assert abs(x.mean() - spec.mean()) < 0.003
    assert spec.mean() == pytest.approx(0.15)
    assert Pareto(scale=1.0, alpha=1.0).mean() == math.inf


def test_pareto_heavy_tail_draws_stay_finite() -> None:
    # median 0.001 * 2^10 ~ 1 s (a valid spec), but 2000 draws of U^-10 reach far past MAX_DELAY
    x = draws(Pareto(scale=0.001, alpha=0.1), n=2000)
    assert np.isfinite(x).all() and x.max() == MAX_DELAY


@pytest.mark.parametrize(
    ("mean", "std", "low", "high", "method"),
    [
        (0.3, 0.1, 0.0, math.inf, "normal"),
        (0.0, 1.0, 0.0, math.inf, "normal"),  # half-normal
        (1.0, 1.0, 0.0, 2.0, "uniform"),
        (0.2, 0.1, 0.6, math.inf, "exponential"),  # 4 std into the right tail
        (5.0, 1.0, 0.0, 1.0, "exponential"),  # 4 std into the left tail (mirrored)
        (0.0, 1.0, 3.0, 3.01, "uniform"),
    ],
)
def test_truncnormal_bounds_and_mean(mean: float, std: float, low: float, high: float, method: str) -> None:
    spec = TruncNormal(mean=mean, std=std, low=low, high=high)
    assert TruncNormalFill(mean, std, low, high).method == method
    x = draws(spec)
    assert x.min() >= low and x.max() <= high
    width = min(std, high - low)
    assert abs(x.mean() - spec.mean()) < 0.03 * width
    # the CDF at the analytic median of the truncated law is 1/2
    a, b = (low - mean) / std, (high - mean) / std
    fa, fb = normal_cdf(a), normal_cdf(b)
    if fb - fa > 1e-3:  # the far-tail cases lose precision in this check, not in the sampler
        z_mid = np.quantile((x - mean) / std, 0.5)
        assert abs((normal_cdf(z_mid) - fa) / (fb - fa) - 0.5) < 0.02


def test_truncnormal_mean_formula_matches_half_normal() -> None:
    assert TruncNormal(mean=0.0, std=1.0).mean() == pytest.approx(math.sqrt(2 / math.pi))


def test_mixture_weights_are_normalised_and_spike_rate() -> None:
    spec = Mixture(components=[{"weight": 3, "model": 0.0}, {"weight": 7, "model": 1.0}])
    x = draws(spec)
    assert set(np.unique(x)) == {0.0, 1.0}
    assert abs(x.mean() - 0.7) < 0.015
    assert spec.mean() == pytest.approx(0.7)
    assert spec.probabilities() == pytest.approx([0.3, 0.7])


def test_gpt41_ttft_has_its_slow_mode() -> None:
    spec = preset_spec("gpt-4.1-ttft")
    x = draws(spec, n=40_000)
    spikes = (x >= 2.0) & (x <= 5.0)
    body_above_2 = 0.985 * (1 - normal_cdf(math.log(2.0 / 0.73) / 0.32))
    assert abs(spikes.mean() - (0.015 + body_above_2)) < 0.003
    assert abs(np.median(x) - 0.73) < 0.02
    assert abs(x.mean() - spec.mean()) < 0.02


def test_empirical_resamples_given_values() -> None:
    samples = (0.1, 0.2, 0.2, 0.9)
    x = draws(Empirical(samples=samples))
    assert set(np.unique(x)) <= set(samples)
    assert abs((x == 0.2).mean() - 0.5) < 0.015
    assert abs(x.mean() - 0.35) < 0.01
    assert Empirical(samples=samples).mean() == pytest.approx(0.35)


@pytest.mark.parametrize("rho", [0.8, -0.5, 0.0])
def test_ar1_correlation_and_marginal(rho: float) -> None:
    spec = AR1LogNormal(median=0.25, sigma=0.3, rho=rho)
    logs = np.log(draws(spec))
    lag1 = np.corrcoef(logs[:-1], logs[1:])[0, 1]
    assert abs(lag1 - rho) < 0.05
    assert abs(math.exp(np.median(logs)) - 0.25) < 0.01
    assert abs(logs.std() - 0.3) < 0.02


def test_ar1_state_carries_across_blocks() -> None:
    # The correlation must not reset where one pre-drawn block ends and the next begins.
    spec = AR1LogNormal(median=1.0, sigma=1.0, rho=0.95)
    logs = np.log(draws(spec, n=BLOCK * 200))
    seams = np.arange(BLOCK, len(logs), BLOCK)
    across = np.corrcoef(logs[seams - 1], logs[seams])[0, 1]
    assert across > 0.85


def test_shift_adds_to_every_draw_and_the_mean() -> None:
    spec = LogNormal(median=0.2, sigma=0.1, shift=0.05)
    x = draws(spec)
    assert x.min() > 0.05
    assert abs(x.mean() - spec.mean()) < 0.003
    assert spec.mean() == pytest.approx(0.05 + 0.2 * math.exp(0.005))
    assert spec.describe() == "LogN(median=0.2 s, sigma=0.1) + 0.05 s"


ALL_KINDS = [
    Constant(value=0.3),
    Uniform(low=0.1, high=0.2),
    TruncNormal(mean=0.3, std=0.2),
    LogNormal(median=0.5, sigma=0.5),
    Gamma(shape=3.0, scale=0.1),
    Pareto(scale=0.1, alpha=4.0),
    Mixture(components=[{"weight": 1, "model": "deepgram-final"}, {"weight": 1, "model": 2.0}]),
    Empirical(samples=[0.1, 0.4]),
    AR1LogNormal(median=0.5, sigma=0.2, rho=0.5),
]


@pytest.mark.parametrize("spec", ALL_KINDS, ids=lambda s: s.kind)
def test_every_kind_draws_python_floats_near_its_mean(spec) -> None:
    sampler = spec.sampler(component_rng(3, "any"))
    assert isinstance(sampler, DelaySampler)
    first = sampler.draw()
    assert type(first) is float and math.isfinite(first) and first >= 0.0
    x = draws(spec)
    assert abs(x.mean() - spec.mean()) < 0.02 * spec.mean() + 1e-9
    assert isinstance(spec.describe(), str) and spec.describe()


# --------------------------------------------------------------------------- seeded streams


def test_same_seed_and_component_give_the_same_sequence() -> None:
    spec = preset_spec("gpt-4.1-ttft")
    assert np.array_equal(draws(spec, 1000, 7, "llm.ttft"), draws(spec, 1000, 7, "llm.ttft"))
    assert not np.array_equal(draws(spec, 1000, 7, "llm.ttft"), draws(spec, 1000, 7, "llm.gap"))
    assert not np.array_equal(draws(spec, 1000, 7, "llm.ttft"), draws(spec, 1000, 8, "llm.ttft"))


def test_streams_are_stable_across_processes() -> None:
    # Pinned values: a change here means every recorded run's draws changed (e.g. someone used
    # Python's per-process-salted hash() instead of crc32 for the component name).
    assert component_rng(0, "stt.final").random() == 0.4538984839700604
    assert component_rng(42, "llm.ttft").random() == 0.36208995102002584


def test_component_streams_are_independent() -> None:
    alone = draws(LogNormal(median=0.25, sigma=0.1), 500, 5, "stt.final")
    stt = LogNormal(median=0.25, sigma=0.1).sampler(component_rng(5, "stt.final"))
    llm = preset_spec("claude-sonnet-ttft").sampler(component_rng(5, "llm.ttft"))
    interleaved = []
    for i in range(500):
        for _ in range(i % 7):  # a different LLM consumes a different number of draws
            llm.draw()
        interleaved.append(stt.draw())
    assert np.array_equal(alone, np.array(interleaved))


def test_component_rng_rejects_bad_seeds() -> None:
    with pytest.raises(ValueError):
        component_rng(-1, "x")
    with pytest.raises(ValueError):
        component_rng(1, "")


# --------------------------------------------------------------------------- validation


def error_message(data) -> str:
    with pytest.raises(ValidationError) as info:
        parse_delay(data)
    return info.value.errors()[0]["msg"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "lognormal", "median": math.nan, "sigma": 0.2}, "must be a finite number > 0, got nan"),
        ({"kind": "lognormal", "median": 0.5, "sigma": 0.0}, "must be a finite number > 0, got 0.0"),
        ({"kind": "lognormal", "median": 0.5, "sigma": -1}, "must be a finite number > 0, got -1.0"),
        ({"kind": "constant", "value": -0.1}, "must be a finite number >= 0, got -0.1"),
        ({"kind": "constant", "value": math.inf}, "must be a finite number >= 0, got inf"),
        ({"kind": "constant", "value": True}, "must be a number, got a boolean"),
        ({"kind": "uniform", "low": 3, "high": 2}, "low (3.0) must be <= high (2.0)"),
        (
            {"kind": "truncnormal", "mean": 0.3, "std": 0.1, "low": 1, "high": 1},
            "low (1.0) must be < high (1.0)",
        ),
        ({"kind": "truncnormal", "mean": math.nan, "std": 0.1}, "must be a finite number, got nan"),
        (
            {"kind": "truncnormal", "mean": 0.3, "std": 0.1, "high": math.nan},
            "must be a number > 0 or inf, got nan",
        ),
        ({"kind": "truncnormal", "mean": 0, "std": 1, "low": 30}, "[low, high] is too many std away"),
        ({"kind": "gamma", "shape": 0, "scale": 1}, "must be a finite number > 0, got 0.0"),
        ({"kind": "pareto", "scale": 1, "alpha": -2}, "must be a finite number > 0, got -2.0"),
        ({"kind": "ar1", "median": 0.2, "sigma": 0.3, "rho": 1.0}, "must be a number in (-1, 1), got 1.0"),
        (
            {"kind": "lognormal", "median": 0.5, "sigma": 0.2, "shift": -1},
            "must be a finite number >= 0, got -1.0",
        ),
        ({"kind": "lognormal", "median": 0.5, "sigma": 0.2, "jitter": 1}, "Extra inputs are not permitted"),
        ({"kind": "empirical", "samples": []}, "must not be empty"),
        ({"kind": "empirical", "samples": [0.1, math.inf]}, "must be a finite number >= 0, got inf"),
        ({"kind": "mixture", "components": []}, "must not be empty"),
        (
            {"kind": "mixture", "components": [{"weight": 0, "model": 1}]},
            "must be a finite number > 0, got 0.0",
        ),
        ("no-such-preset", "unknown delay preset 'no-such-preset'; known: "),
        (True, "expected seconds, a preset name or a table with 'kind', got a boolean"),
    ],
)
def test_invalid_specs_are_rejected_with_short_messages(data, expected: str) -> None:
    assert error_message(data).startswith(expected)


def test_unknown_kind_names_the_known_kinds() -> None:
    message = error_message({"kind": "weibull", "scale": 1})
    assert "'weibull'" in message and "'lognormal'" in message


def test_unknown_preset_lists_known_names() -> None:
    message = error_message("gpt-5-ttft")
    assert "deepgram-final" in message and "gpt-4.1-ttft" in message
    with pytest.raises(ValueError, match="known: "):
        preset_spec("gpt-5-ttft")


def test_specs_are_frozen() -> None:
    spec = LogNormal(median=0.5, sigma=0.2)
    with pytest.raises(ValidationError):
        spec.sigma = 0.3
    assert hash(spec) == hash(LogNormal(median=0.5, sigma=0.2))


# --------------------------------------------------------------------------- shorthand and config use


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    ttft: DelayField = "gpt-4.1-ttft"
    gap: DelayField = 0.02


def test_shorthand_number_and_preset() -> None:
    assert parse_delay(0.5) == Constant(value=0.5)
    assert parse_delay(2) == Constant(value=2.0)
    assert parse_delay(np.float32(0.25)) == Constant(value=0.25)
    assert parse_delay("deepgram-final") == LogNormal(median=0.25, sigma=0.11)
    settings = _Settings()
    assert settings.ttft == PRESETS["gpt-4.1-ttft"].spec
    assert settings.gap == Constant(value=0.02)
    assert _Settings(ttft={"kind": "uniform", "low": 0, "high": 1}).ttft == Uniform(low=0.0, high=1.0)


def test_unknown_key_in_config_field_is_an_error() -> None:
    with pytest.raises(ValidationError) as info:
        _Settings(ttft={"kind": "constant", "value": 1, "median": 2})
    assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name: str) -> None:
    spec = PRESETS[name].spec
    # model_dump_json writes inf as null; json.dumps(model_dump(mode="json")) writes Infinity
    assert parse_delay(json.loads(spec.model_dump_json())) == spec
    assert parse_delay(json.loads(json.dumps(spec.model_dump(mode="json")))) == spec


def test_truncnormal_unbounded_high_round_trips() -> None:
    spec = TruncNormal(mean=0.3, std=0.1)
    assert json.loads(spec.model_dump_json())["high"] is None
    assert parse_delay(json.loads(spec.model_dump_json())) == spec


def test_presets_are_cited_documented_and_sane() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for name, preset in PRESETS.items():
        assert preset.source and preset.description
        assert f"`{name}`" in docs, f"preset {name} missing from docs/delays.md"
        mean = preset.spec.mean()
        assert 0.0 <= mean < 5.0


def test_derived_presets_follow_the_stated_rule() -> None:
    # entries without a published fit: sigma = ln(p95/p50) / 1.645
    assert preset_spec("gpt-4o-ttft") == LogNormal(
        median=0.639, sigma=round(math.log(1144 / 639) / 1.6449, 3)
    )
    whisper = preset_spec("whisper-tiny-localagreement")
    assert whisper.median == 2.1 and whisper.median * math.exp(1.2816 * whisper.sigma) == pytest.approx(
        2.7, 0.01
    )
    assert preset_spec("gpt-4.1-inter-chunk").mean() == pytest.approx(1 / 89, rel=1e-3)
