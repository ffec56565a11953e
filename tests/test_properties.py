"""Property-based tests (Hypothesis) of every loader of user input.

Whatever is fed to the scenario schema, the ``--set`` parser, the transcript and oracle_raw
parsers, the wav decoder or the delay-model parser, the outcome is a valid object or an
:class:`InputError` whose one-line message names the file and the field: never another
exception, never a line break in the message. Accepted values obey the rules the errors enforce
(no coercion of types, finite audio, sorted words of valid text), so a check that is lost is
caught as well as one that crashes.
"""

from __future__ import annotations

import io
import json
import math
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO_SCENARIO, REPO
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from kame_sim.config import (
    BehaviouralSettings,
    KameSettings,
    MultiplexerPolicySettings,
    PollPolicySettings,
    Scenario,
    load_scenario,
    parse_override,
    scenario_from_dict,
)
from kame_sim.conversation.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, decode_stereo_wav
from kame_sim.conversation.oracle_raw import parse_oracle_raw
from kame_sim.conversation.transcript import END_TOLERANCE_S, parse_transcript
from kame_sim.conversation.validate import text_problem
from kame_sim.delays import DelaySpec, parse_delay
from kame_sim.delays.models import DELAY_KINDS
from kame_sim.errors import InputError

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOURCE = "scenario.toml"

# --------------------------------------------------------------------------- JSON-ish values

HOSTILE_TEXT = [
    "",
    " ",
    "..",
    "../../x",
    "a/b",
    "7",
    "7.0",
    "true",
    "1e308",
    "nan",
    "\x00",
    "a\nb",
    "\x1b[2J",
    "[/x]",
    "x\ud800y",
    "\udcff",
    "gpt-4.1-ttft",
    "virtual",
    "A",
    "B",
    "kame",
]
texts = st.one_of(
    st.sampled_from(HOSTILE_TEXT), st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 2**64, 1920, 24000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e-300, 1e-7, 0.5, 1.0, 7.0, 3600.0, 3600.5, 1e308, math.inf, -math.inf, math.nan]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=6,
)
DELAY_KEYS = [
    "value",
    "low",
    "high",
    "mean",
    "std",
    "median",
    "sigma",
    "shape",
    "scale",
    "alpha",
    "rho",
    "shift",
    "samples",
    "components",
    "weight",
    "model",
    "trace",
    "measure",
]
delay_tables = st.builds(
    lambda kind, params: {"kind": kind, **params},
    st.sampled_from(sorted(DELAY_KINDS)),
    st.dictionaries(st.sampled_from(DELAY_KEYS), st.one_of(numbers, json_values), max_size=4),
)
any_value = st.one_of(json_values, delay_tables)


def section_fields() -> list[tuple[str, str, type[BaseModel]]]:
    """Every (section, key) of the scenario schema, the front-end's and the policy's for both kinds."""
    out: list[tuple[str, str, type[BaseModel]]] = []
    kinds: dict[str, list[type[BaseModel]]] = {
        "frontend": [BehaviouralSettings, KameSettings],
        "policy": [PollPolicySettings, MultiplexerPolicySettings],
    }
    for section, field in Scenario.model_fields.items():
        models = kinds.get(section, [field.annotation])
        for model in models:
            out.extend((section, key, model) for key in model.model_fields if key != "kind")
    return out


FIELDS = section_fields()


def base_section(model: type[BaseModel]) -> dict[str, Any]:
    """What a section needs besides the key under test (the kame front-end needs its checkpoint)."""
    if model is KameSettings:
        return {"kind": "kame", "checkpoint": "ckpt"}
    if model is MultiplexerPolicySettings:
        return {"kind": "multiplexer"}
    return {}


def assert_one_line(error: InputError, source: str) -> str:
    line = error.one_line()
    assert line.startswith((f"{source}: ", f"{source} (overridden by --set ")), line
    assert "\n" not in line and "\r" not in line and "\x1b" not in line, line
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in line), line
    line.encode("utf-8")
    return line


def assert_not_coerced(given_value: Any, got: Any) -> None:
    """What a scalar setting holds is what was given: strict types, no silent conversion."""
    if isinstance(got, bool):
        assert given_value is got
    elif isinstance(got, int):
        assert type(given_value) is int and given_value == got
    elif isinstance(got, float):
        assert isinstance(given_value, int | float) and not isinstance(given_value, bool)
        assert math.isfinite(got) and got == given_value
    elif isinstance(got, str):
        assert given_value == got
    elif isinstance(got, Path):
        assert isinstance(given_value, str) and "\x00" not in given_value
    elif got is None:
        assert given_value is None
    else:  # a delay model: from a number, a preset name or a table
        assert isinstance(got, BaseModel)
        assert not isinstance(given_value, bool)


# related keys: a frame is samples / rate, so a rate out of the frame range is reported at frame_samples
RELATED = {
    "conversation.sample_rate": ("conversation.frame_samples",),
    # [switch] needs both keys: one alone is an error naming the other
    "switch.at": ("switch.policy",),
    "switch.policy": ("switch.at",),
}


# values that a lax validator would quietly convert: each one is a wrong type for some field
COERCIBLE = [
    True,
    False,
    0,
    1,
    7,
    7.0,
    0.5,
    "7",
    "7.0",
    "0.5",
    "true",
    "1",
    "",
    None,
    [],
    {},
    [1],
    {"kind": "constant"},
]
field_values = st.one_of(st.sampled_from(COERCIBLE), scalars, any_value)


@pytest.mark.parametrize("target", FIELDS, ids=lambda t: f"{t[0]}.{t[1]}")
@settings(max_examples=25, deadline=None)
@given(value=field_values)
def test_scenario_keys_take_valid_values_or_name_the_key(target: tuple[str, str, type], value: Any):
    section, key, model = target
    data = {section: {**base_section(model), key: value}}
    dotted = f"{section}.{key}"
    try:
        scenario = scenario_from_dict(data, SOURCE)
    except InputError as exc:
        assert_one_line(exc, SOURCE)
        assert exc.field is not None
        assert (
            exc.field == dotted
            or exc.field.startswith((f"{dotted}.", f"{dotted}["))
            or exc.field in RELATED.get(dotted, ())
        ), (exc.field, dotted)
        return
    assert_not_coerced(value, getattr(getattr(scenario, section), key))
    json.loads(scenario.resolved_json())  # what goes into every trace's metadata


@PROPERTY
@given(st.dictionaries(texts, json_values, max_size=3), st.sampled_from(sorted(Scenario.model_fields)))
def test_unknown_keys_and_whole_sections(table: dict[str, Any], section: str):
    try:
        scenario_from_dict({section: table}, SOURCE)
    except InputError as exc:
        assert_one_line(exc, SOURCE)
        assert exc.field is not None and exc.field.split(".")[0].split("[")[0] == section, exc.field


# --------------------------------------------------------------------------- --set strings


DOTTED = [f"{s}.{k}" for s, k, _ in FIELDS] + [
    "llm.ttft.median",
    "frontend.kind",
    "run",
    "nope.x",
    "",
    ".",
    "a..b",
]
TOML_SNIPPETS = [
    "true",
    "7",
    "7.0",
    '"7"',
    "1e308",
    "nan",
    "inf",
    "-1",
    "[1, 2]",
    '{kind = "constant", value = 1}',
    '{kind = "lognormal", median = "0.5", sigma = 0.3}',
    "[" * 3000,
    '"\\u0000"',
    "x\udcffy",
    "[/x]",
    "9223372036854775808",
    '"../../x"',
    "{",
    "= =",
    '"a\\nb"',
]


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo.toml with its data path made absolute, in a temporary folder (never scenarios/)."""
    path = tmp_path_factory.mktemp("props") / "demo.toml"
    data = json.dumps(str(REPO / "scenarios" / "data" / "demo"))
    path.write_text(DEMO_SCENARIO.read_text(encoding="utf-8").replace('"data/demo"', data), encoding="utf-8")
    return path


@PROPERTY
@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda k, v: f"{k}={v}",
                st.sampled_from(DOTTED),
                st.one_of(st.sampled_from(TOML_SNIPPETS), texts),
            ),
            texts,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_random_set_strings(demo_copy: Path, assignments: list[str]):
    try:
        overrides = dict(parse_override(a) for a in assignments)
        scenario = load_scenario(demo_copy, overrides)
    except InputError as exc:
        line = exc.one_line()
        assert_one_line(exc, "<cli>" if line.startswith("<cli>") else str(demo_copy))
        assert exc.field, line
        return
    assert isinstance(scenario, Scenario)


# --------------------------------------------------------------------------- transcripts and oracle_raw


# characters no trace or terminal should receive (a lone surrogate, NUL, ESC, DEL, a C1 control)
BAD_TEXT = ["\ud800", "\udfff", "\x00", "\x1b", "\x7f", "\x85", "\x0b"]


@st.composite
def near_valid(
    draw: st.DrawFn, valid_entry: st.SearchStrategy[dict[str, Any]], keys: list[str], text_keys: list[str]
) -> Any:
    """A valid document, then a few mutations: one key of one entry set to anything, a text
    field given a bad character, a key dropped, an entry replaced. Most examples are then one
    mistake away from valid, which is where a missing check lets bad data through."""
    entries = draw(st.lists(valid_entry, min_size=1, max_size=5))
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(entries) - 1))
        action = draw(st.sampled_from(["set", "set", "text", "text", "drop", "replace"]))
        if not isinstance(entries[i], dict):
            continue
        if action == "set":
            entries[i][draw(st.sampled_from(keys))] = draw(
                st.one_of(texts, st.sampled_from(COERCIBLE), scalars, json_values)
            )
        elif action == "text":
            entries[i][draw(st.sampled_from(text_keys))] = "ok" + draw(st.sampled_from(BAD_TEXT)) + "ok"
        elif action == "drop":
            entries[i].pop(draw(st.sampled_from(keys)), None)
        else:
            entries[i] = draw(json_values)
    return entries


def _word(speaker: str, text: str, start: float, length: float) -> dict[str, Any]:
    return {"speaker": speaker, "word": text, "start": start, "end": start + length}


valid_words = st.builds(
    _word,
    st.sampled_from(["A", "B"]),
    st.sampled_from(["hello", "ok", " padded ", "caf\u00e9"]),
    st.floats(0, 20),
    st.floats(0, 2),
)


def as_json(value: Any) -> bytes:
    # ensure_ascii writes lone surrogates as \ud800 escapes and NaN/Infinity as bare words,
    # exactly the two things Python's json accepts and a careless loader passes on
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


transcripts = (
    near_valid(valid_words, ["speaker", "word", "start", "end"], ["word"])
    .map(
        lambda entries: sorted(
            entries,
            key=lambda e: e["start"] if isinstance(e, dict) and isinstance(e.get("start"), float) else 0,
        )
    )
    .map(as_json)
)
junk_documents = st.one_of(
    json_values.map(as_json),
    st.binary(max_size=40),
    st.sampled_from(
        [b"", b"[", b"\xff\xfe[]", b"[" * 5000 + b"]" * 5000, '[{"word": "caf\xe9"}]'.encode("latin-1")]
    ),
)


@PROPERTY
@given(
    st.one_of(transcripts, transcripts, transcripts, junk_documents),
    st.one_of(st.just(30.0), st.just(30.0), st.floats(min_value=0.0, max_value=60.0)),
)
def test_transcripts_give_valid_words_or_name_the_entry(data: bytes, duration: float):
    path = Path("text/x.json")
    try:
        words = parse_transcript(path, data, ("A", "B"), duration)
    except InputError as exc:
        assert_one_line(exc, str(path))
        assert exc.field
        return
    assert words and [w.start for w in words] == sorted(w.start for w in words)
    for w in words:
        assert w.speaker in ("A", "B") and w.text and w.text == w.text.strip()
        assert text_problem(w.text) is None
        assert 0 <= w.start <= w.end <= duration + END_TOLERANCE_S


ORACLE_KEYS = [
    "timestamp_ms",
    "prediction",
    "channel",
    "hint",
    "current_spoken_ratio",
    "total_word_count",
    "conversation_context",
    "trigger_word",
    "recent_words",
]
NUMERIC_KEYS = ("timestamp_ms", "channel", "current_spoken_ratio", "total_word_count")
valid_predictions = st.fixed_dictionaries(
    {
        "timestamp_ms": st.integers(0, 10_000),
        "prediction": st.sampled_from(["Sure.", "Line one.\nLine two."]),
        "channel": st.sampled_from([0, 1]),
        "hint": st.just("sure"),
        "current_spoken_ratio": st.floats(0, 1),
        "total_word_count": st.integers(0, 50),
        "conversation_context": st.just("A: hello"),
    },
    optional={"trigger_word": st.just("hello"), "recent_words": st.just("hello")},
)
oracle_entries = near_valid(
    valid_predictions, ORACLE_KEYS, [k for k in ORACLE_KEYS if k not in NUMERIC_KEYS]
).map(
    lambda entries: sorted(
        entries,
        key=lambda e: e["timestamp_ms"] if isinstance(e, dict) and type(e.get("timestamp_ms")) is int else 0,
    )
)


@PROPERTY
@given(st.one_of(oracle_entries.map(as_json), oracle_entries.map(as_json), junk_documents))
def test_oracle_raw_gives_valid_predictions_or_names_the_entry(data: bytes):
    path = Path("oracle_raw/x.json")
    try:
        predictions = parse_oracle_raw(path, data)
    except InputError as exc:
        assert_one_line(exc, str(path))
        assert exc.field
        return
    times = [p.timestamp_s for p in predictions]
    assert times == sorted(times) and all(math.isfinite(t) and t >= 0 for t in times)
    for p in predictions:
        assert p.channel in (0, 1) and 0 <= p.current_spoken_ratio <= 1
        for text in (p.prediction, p.hint, p.conversation_context, p.trigger_word, p.recent_words):
            assert text_problem(text, free_text=True) is None
            text.encode("utf-8")


# --------------------------------------------------------------------------- wav


@st.composite
def wav_bytes(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """A wav file (rate, channels, samples, sample format all drawn, maybe cut short) and the
    number of frames written into it."""
    # biased towards files that are fine but for one thing, where a missing check shows
    rate = draw(
        st.one_of(
            st.sampled_from([8000, 16000, 24000, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]),
            st.sampled_from([1, 100, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1]),
            st.integers(1, 10**6),
        )
    )
    channels = draw(st.sampled_from([2, 2, 2, 1, 3]))
    frames = draw(st.integers(0, 300))
    samples = draw(st.sampled_from(["zeros", "noise", "poison"]))
    x = np.zeros((frames, channels), np.float32)
    if samples != "zeros":
        x = np.random.default_rng(frames).uniform(-1, 1, (frames, channels)).astype(np.float32)
    if samples == "poison" and frames:
        x[draw(st.integers(0, frames - 1)), draw(st.integers(0, channels - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
    buf = io.BytesIO()
    subtype = draw(st.sampled_from(["FLOAT", "PCM_16", "DOUBLE"]))
    try:
        sf.write(buf, x, rate, subtype=subtype, format="WAV")
    except (sf.LibsndfileError, RuntimeError, ValueError):
        assume(False)
    blob = buf.getvalue()
    cut = draw(
        st.one_of(st.none(), st.integers(0, len(blob) - 1), st.integers(max(0, len(blob) - 8), len(blob) - 1))
    )
    return (blob, frames) if cut is None else (blob[:cut], frames)


@PROPERTY
@given(st.one_of(wav_bytes(), st.tuples(st.binary(max_size=64), st.none())))
def test_wavs_decode_to_finite_stereo_at_a_real_rate_or_name_the_file(wav: tuple[bytes, int | None]):
    data, frames = wav
    path = Path("audio/x.wav")
    try:
        samples, rate = decode_stereo_wav(path, data)
    except InputError as exc:
        assert_one_line(exc, str(path))
        assert exc.field
        return
    assert samples.ndim == 2 and samples.shape[1] == 2 and samples.shape[0] > 0
    assert np.isfinite(samples).all()
    assert MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE
    if frames is not None:  # all of it, or refused: a file cut short is not a shorter recording
        assert samples.shape[0] == frames


# --------------------------------------------------------------------------- delay models


@PROPERTY
@given(st.one_of(delay_tables, json_values, numbers))
def test_delay_specs_validate_or_raise_pydantic_errors_and_always_draw_finite(value: Any):
    try:
        spec = parse_delay(value)
    except ValidationError as exc:
        assert exc.errors()  # the report itself must be buildable (it is turned into one line)
        return
    assert isinstance(spec, typing.get_args(typing.get_args(DelaySpec)[0]))
    draws = [spec.sampler(np.random.default_rng(0)).draw() for _ in range(3)]
    assert all(math.isfinite(d) and d >= 0 for d in draws)
    assert not math.isnan(spec.mean())
    assert spec.describe()
