"""Named delay presets built from published measurements (see /work/shared/delay-presets.md).

Each preset keeps its citation next to its numbers so a scenario that says
``final_delay = "deepgram-final"`` can be traced back to where the numbers came from, and so the
numbers live here rather than as magic constants scattered over the code. Where a source gives
a log-normal fit it is used as is; where it gives only percentiles, a log-normal is fitted to the
median and one upper percentile (:func:`lognormal_from_quantiles`) and the source string says so.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from kame_sim.delays.models import Constant, DelaySpec, LogNormal, Mixture, Uniform
from kame_sim.delays.registry import PRESET_SPECS

Z90 = 1.2816
"""Standard-normal 90th percentile."""
Z95 = 1.6449
"""Standard-normal 95th percentile."""


class Preset(NamedTuple):
    """A named spec, where its numbers come from, and what it models."""

    spec: DelaySpec
    source: str
    description: str


def lognormal_from_quantiles(p50: float, upper: float, z: float = Z95) -> LogNormal:
    """LogN whose median is ``p50`` and whose quantile at standard score ``z`` is ``upper``.

    For a log-normal, ln(q) = ln(median) + sigma z, so sigma = ln(upper / p50) / z.
    Rounded to 3 decimals so the value shown in docs is the value used.
    """
    return LogNormal(median=p50, sigma=round(math.log(upper / p50) / z, 3))


def _token_gap(tokens_per_second: float) -> Uniform:
    """Per-token gap U(0.9/r, 1.1/r): mean exactly 1/r s, with ±10 % jitter."""
    return Uniform(low=round(0.9 / tokens_per_second, 5), high=round(1.1 / tokens_per_second, 5))


_STT_BENCH = "pipecat-ai/stt-benchmark (1000 samples, end of speech -> final transcript)"
_MODELSTATS = "modelstats.ai TTFT (one datacenter, 24 h, ~288 pings)"
_AA = "Artificial Analysis (median output speed)"
_DERIVED = "log-normal derived here from p50 and p95: sigma = ln(p95/p50)/1.645"


def _stt_derived(service: str, p50_ms: int, p95_ms: int, p99_ms: int) -> tuple[LogNormal, str]:
    spec = lognormal_from_quantiles(p50_ms / 1000, p95_ms / 1000)
    return spec, f"{_STT_BENCH}: {service} p50 {p50_ms} ms, p95 {p95_ms} ms, p99 {p99_ms} ms; {_DERIVED}"


def _ttft_derived(model: str, p50_ms: int, p95_ms: int, p99_ms: int) -> tuple[LogNormal, str]:
    spec = lognormal_from_quantiles(p50_ms / 1000, p95_ms / 1000)
    return spec, f"{_MODELSTATS}: {model} p50 {p50_ms} ms, p95 {p95_ms} ms, p99 {p99_ms} ms; {_DERIVED}"


def _build() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}

    def add(name: str, spec: DelaySpec, source: str, description: str) -> None:
        presets[name] = Preset(spec, source, description)

    # ---- streaming STT: end of user speech -> final transcript
    add(
        "deepgram-final",
        LogNormal(median=0.25, sigma=0.11),
        f"{_STT_BENCH}: Deepgram p50 247 ms, p95 298 ms, p99 326 ms; published log-normal fit",
        "Deepgram streaming STT, end of speech to final transcript",
    )
    add(
        "assemblyai-final",
        LogNormal(median=0.26, sigma=0.21),
        f"{_STT_BENCH}: AssemblyAI p50 256 ms, p95 362 ms, p99 417 ms; published log-normal fit",
        "AssemblyAI streaming STT, end of speech to final transcript",
    )
    add(
        "google-final",
        LogNormal(median=0.9, sigma=0.2),
        f"{_STT_BENCH}: Google p50 878 ms, p95 1155 ms, p99 1570 ms; published log-normal fit",
        "Google streaming STT (the recogniser KAME uses), end of speech to final transcript",
    )
    add(
        "soniox-final", *_stt_derived("Soniox", 249, 281, 310), "Soniox streaming STT, end of speech to final"
    )
    add(
        "openai-final",
        *_stt_derived("OpenAI", 637, 965, 1655),
        "OpenAI streaming STT, end of speech to final",
    )
    add(
        "aws-final",
        *_stt_derived("AWS", 1136, 1527, 1897),
        "AWS Transcribe streaming, end of speech to final",
    )
    add(
        "kyutai-stt-1b",
        Constant(value=0.5),
        "kyutai-labs/delayed-streams-modeling README: kyutai/stt-1b-en_fr has a fixed 0.5 s delay",
        "Kyutai stt-1b-en_fr: text lags audio by a fixed 0.5 s",
    )
    add(
        "kyutai-stt-2.6b",
        Constant(value=2.5),
        "kyutai-labs/delayed-streams-modeling README: kyutai/stt-2.6b-en has a fixed 2.5 s delay",
        "Kyutai stt-2.6b-en: text lags audio by a fixed 2.5 s",
    )
    add(
        "whisper-streaming-gpu",
        Constant(value=3.3),
        "arXiv 2307.14743 (whisper_streaming, LocalAgreement-2 on GPU): 3.3 s reported latency; "
        "no spread published, so a constant",
        "whisper_streaming (Whisper large, LocalAgreement-2) on a GPU",
    )
    add(
        "whisper-tiny-localagreement",
        lognormal_from_quantiles(2.1, 2.7, Z90),
        "measured here: LocalAgreement-2, Whisper tiny.en, 2 CPU cores, 1 s chunks: commit lag "
        "median 2.1 s, p90 2.7 s; log-normal fit sigma = ln(2.7/2.1)/1.2816",
        "Whisper tiny.en with LocalAgreement-2 on a small CPU, commit lag",
    )

    # ---- LLM time to first token
    add(
        "gpt-4.1-ttft",
        Mixture(
            components=(
                {"weight": 0.985, "model": LogNormal(median=0.73, sigma=0.32)},
                {"weight": 0.015, "model": Uniform(low=2.0, high=5.0)},
            )
        ),
        f"{_MODELSTATS}: GPT-4.1 p50 726 ms, p95 1220 ms, p99 1946 ms; log-normal body plus a 1.5 % slow "
        "mode, the shape suggested for OpenAI TTFT in delay-presets.md",
        "GPT-4.1 time to first token, with rare multi-second stalls",
    )
    add(
        "gpt-4.1-mini-ttft",
        *_ttft_derived("GPT-4.1 mini", 661, 1087, 2169),
        "GPT-4.1 mini time to first token (single log-normal: p99 under-estimated)",
    )
    add(
        "gpt-4o-ttft",
        *_ttft_derived("GPT-4o", 639, 1144, 4517),
        "GPT-4o time to first token (single log-normal: the 4.5 s p99 is not reproduced)",
    )
    add(
        "gpt-4o-mini-ttft",
        *_ttft_derived("GPT-4o-mini", 536, 844, 4461),
        "GPT-4o mini time to first token (single log-normal: the 4.5 s p99 is not reproduced)",
    )
    add(
        "claude-sonnet-ttft",
        LogNormal(median=0.94, sigma=0.7),
        f"{_MODELSTATS}: Claude Sonnet 4.6 p50 941 ms, p95 2939 ms, p99 4787 ms; one log-normal "
        "with sigma 0.7 fits Claude (delay-presets.md; p50/p95 alone give 0.69)",
        "Claude Sonnet time to first token",
    )
    add(
        "claude-haiku-ttft",
        *_ttft_derived("Claude Haiku 4.5", 541, 1591, 4117),
        "Claude Haiku 4.5 time to first token",
    )

    # ---- LLM streaming: gap between consecutive tokens
    add(
        "gpt-4.1-inter-chunk",
        _token_gap(89),
        f"{_AA}: GPT-4.1 89 tok/s; U(0.9/89 s, 1.1/89 s), mean 1/89 s",
        "GPT-4.1 gap between streamed tokens",
    )
    add(
        "gpt-4o-inter-chunk",
        _token_gap(81),
        f"{_AA}: GPT-4o 81 tok/s; U(0.9/81 s, 1.1/81 s), mean 1/81 s",
        "GPT-4o gap between streamed tokens",
    )
    add(
        "gpt-4.1-mini-inter-chunk",
        _token_gap(77),
        f"{_AA}: GPT-4.1 mini 77 tok/s; U(0.9/77 s, 1.1/77 s), mean 1/77 s",
        "GPT-4.1 mini gap between streamed tokens",
    )
    add(
        "claude-sonnet-inter-chunk",
        Uniform(low=round(1 / 95, 5), high=round(1 / 64, 5)),
        f"{_AA}: Claude 3.5 Sonnet 64–95 tok/s; U(1/95 s, 1/64 s)",
        "Claude Sonnet gap between streamed tokens",
    )

    # ---- no delay at all
    add("instant", Constant(value=0.0), "none (a reference point)", "no delay: the ideal back-end")
    return presets


PRESETS: dict[str, Preset] = _build()
"""Preset name -> (spec, source citation, description)."""
PRESET_SPECS.update({name: preset.spec for name, preset in PRESETS.items()})


def preset_spec(name: str) -> DelaySpec:
    """The spec of preset ``name``; ValueError listing the known names if there is none."""
    try:
        return PRESETS[name].spec
    except KeyError:
        raise ValueError(f"unknown delay preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
