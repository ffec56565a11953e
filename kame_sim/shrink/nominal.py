"""Nominal delays: the one value per kind of event that "nothing unusual happened" means.

Shrinking moves every event it can back to its nominal delay, and an event is *away from nominal*
when its scheduled delay differs from it. The nominal delay of a kind is the **median** of the
scenario's delay model for it (``stt.partial_delay``, ``stt.final_delay``, ``llm.ttft``,
``llm.inter_chunk``): in closed form where the model has one (constant, uniform, log-normal,
Pareto; plus the model's ``shift``), otherwise the median of a fixed sample of
:data:`SAMPLE_SIZE` draws from a generator seeded with :data:`SAMPLE_SEED` — deterministic, and
independent of the run's seed. Values are rounded to the simulation's 1 µs tick.
"""

from __future__ import annotations

import math

import numpy as np

from kame_sim.clock import to_seconds, to_ticks
from kame_sim.config import Scenario
from kame_sim.delays import Constant, DelaySpec, LogNormal, Pareto, Uniform

SAMPLE_SIZE = 20_001
SAMPLE_SEED = 20_241_212


def model_median(spec: DelaySpec) -> float:
    """The median of a delay model, in seconds (see the module docstring for how)."""
    if isinstance(spec, Constant):
        base = spec.value
    elif isinstance(spec, Uniform):
        base = (min(spec.low, spec.high) + max(spec.low, spec.high)) / 2.0
    elif isinstance(spec, LogNormal):
        base = spec.median
    elif isinstance(spec, Pareto):
        base = spec.scale * 2.0 ** (1.0 / spec.alpha)
    else:
        sampler = spec.sampler(np.random.default_rng(SAMPLE_SEED))
        draws = np.fromiter((sampler.draw() for _ in range(SAMPLE_SIZE)), dtype=float, count=SAMPLE_SIZE)
        return _tick(float(np.median(draws)))
    return _tick(base + spec.shift)


def _tick(seconds: float) -> float:
    return to_seconds(to_ticks(seconds)) if math.isfinite(seconds) else seconds


def nominal_delays(scenario: Scenario, stt: bool = True, llm: bool = True) -> dict[str, float]:
    """Kind -> nominal seconds for the kinds a schedule can set in ``scenario`` (``stt``/``llm``:
    whether its STT / LLM take scheduled delays)."""
    out: dict[str, float] = {}
    if stt:
        out["stt_partial"] = model_median(scenario.stt.partial_delay)
        out["stt_final"] = model_median(scenario.stt.final_delay)
    if llm:
        out["ttft"] = model_median(scenario.llm.ttft)
        out["chunk_gap"] = model_median(scenario.llm.inter_chunk)
    return out
