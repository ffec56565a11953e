"""The audio is decoded only where it is read: behavioural runs never decode it, the real
front-end and the whisper STT decode it before anything is written, traces do not change, and a
sweep computes its metrics from the run's own conversation."""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import soxr
from conftest import DEMO_SCENARIO

import kame_sim.runner
from kame_sim.config import load_scenario
from kame_sim.conversation import Conversation, load_conversation
from kame_sim.conversation.audio import decode_stereo_wav, resample, resampled_length
from kame_sim.errors import InputError
from kame_sim.runner import build_session_parts, load_run_conversation, run_scenario, trace_metadata
from kame_sim.sim import Session
from kame_sim.sweep.runner import RunTask, execute_run
from kame_sim.trace import WALL_COLUMNS, TraceWriter, read_trace

DEMO_DATA = DEMO_SCENARIO.parent / "data" / "demo"


class Decoded(Exception):
    """Raised by the patched decoders: something read the samples."""


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding or resampling any audio raises :class:`Decoded`."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise Decoded

    monkeypatch.setattr(sf, "read", refuse)
    monkeypatch.setattr(soxr, "resample", refuse)


RATES = [(8000, 24000), (16000, 24000), (44100, 24000), (48000, 24000), (22050, 16000), (24000, 8000)]
RATES += [(48000, 16000), (11025, 24000), (384000, 24000), (8000, 384000), (12345, 24000), (24000, 24000)]


@pytest.mark.parametrize(("rate_in", "rate_out"), RATES)
def test_resampled_length_is_what_soxr_gives(rate_in: int, rate_out: int):
    rng = np.random.default_rng(rate_in + rate_out)
    for frames in [*range(1, 40), *rng.integers(40, 200_000, 12).tolist()]:
        expected = math.floor(Fraction(frames * rate_out, rate_in) + Fraction(1, 2))
        assert resampled_length(frames, rate_in, rate_out) == expected
        got = resample(np.zeros((frames, 2), np.float32), rate_in, rate_out).shape[1]
        assert got == expected, (frames, got, expected)


def test_loading_reads_the_header_only_and_the_audio_on_first_read(no_decoding: None, monkeypatch):
    conv = load_conversation(DEMO_DATA)
    assert not conv.audio_loaded
    info = sf.info(str(DEMO_DATA / "audio" / "demo.wav"))
    assert conv.n_samples == resampled_length(info.frames, info.samplerate, 24000)
    assert conv.n_frames() == 481 and conv.duration_s == pytest.approx(info.duration, abs=1e-4)
    assert len(conv.content_hash) == 64 and "demo" in repr(conv)  # neither decodes
    with pytest.raises(Decoded):
        conv.load_audio()
    monkeypatch.undo()
    data = (DEMO_DATA / "audio" / "demo.wav").read_bytes()
    samples, rate = decode_stereo_wav(DEMO_DATA / "audio" / "demo.wav", data)
    eager = resample(samples, rate, 24000)
    audio = conv.audio
    assert conv.audio_loaded and audio is conv.audio  # decoded once, then kept
    assert audio.shape == (2, conv.n_samples) and not audio.flags.writeable
    np.testing.assert_array_equal(audio, eager)


def test_a_behavioural_run_and_its_sweep_metrics_never_decode(no_decoding: None, tmp_path: Path):
    result = run_scenario(load_scenario(DEMO_SCENARIO), tmp_path / "run")
    assert read_trace(result.run_dir).complete
    assert result.conversation is not None and not result.conversation.audio_loaded
    scenario = json.loads(load_scenario(DEMO_SCENARIO).resolved_json())
    outcome = execute_run(RunTask("r", str(tmp_path / "sweep" / "r"), scenario, {}, 0, "demo"))
    assert outcome.status == "ok", outcome.error
    assert outcome.metrics["reply_f1_mean"] is not None  # the references came from the conversation


def test_a_sweep_run_loads_its_conversation_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    loads: list[Path] = []

    def counting(path: Path, *args: object, **kwargs: object) -> Conversation:
        loads.append(path)
        return load_conversation(path, *args, **kwargs)

    monkeypatch.setattr(kame_sim.runner, "load_conversation", counting)
    scenario = json.loads(load_scenario(DEMO_SCENARIO).resolved_json())
    outcome = execute_run(RunTask("r", str(tmp_path / "r"), scenario, {}, 0, "demo"))
    assert outcome.status == "ok", outcome.error
    assert len(loads) == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"frontend": {"kind": "kame", "checkpoint": "no-such-checkpoint"}},
        {"stt.kind": "whisper", "stt.model_dir": "no-such-model"},
    ],
    ids=["kame", "whisper"],
)
def test_the_real_front_end_and_whisper_decode_before_anything_else(
    no_decoding: None, tmp_path: Path, overrides: dict
):
    # The samples are decoded first, before the model (or its checkpoint) is looked for.
    scenario = load_scenario(DEMO_SCENARIO, {**overrides, "run.output_dir": str(tmp_path / "out")})
    conversation = load_run_conversation(scenario)
    with pytest.raises(Decoded):
        build_session_parts(scenario, conversation)
    with pytest.raises(Decoded):
        run_scenario(scenario)
    assert not (tmp_path / "out").exists()


def test_bad_samples_fail_a_kame_run_before_its_run_directory(tmp_path: Path):
    data = tmp_path / "data"
    for sub in ("audio", "text", "oracle_raw"):
        (data / sub).mkdir(parents=True)
        for f in (DEMO_DATA / sub).iterdir():
            (data / sub / f.name).write_bytes(f.read_bytes())
    samples, rate = sf.read(DEMO_DATA / "audio" / "demo.wav", dtype="float32", always_2d=True)
    samples[rate * 2, 0] = np.nan
    sf.write(data / "audio" / "demo.wav", samples, rate, subtype="FLOAT", format="WAV")
    overrides = {"conversation.path": str(data), "run.output_dir": str(tmp_path / "out")}
    kame = load_scenario(DEMO_SCENARIO, {**overrides, "frontend": {"kind": "kame", "checkpoint": "x"}})
    with pytest.raises(InputError, match="finite") as err:
        run_scenario(kame)
    assert err.value.field == "samples" and "demo.wav" in str(err.value.source)
    assert not (tmp_path / "out").exists()
    # the behavioural front-end does not read the samples (documented): the same data runs
    assert read_trace(run_scenario(load_scenario(DEMO_SCENARIO, overrides)).run_dir).complete


def _trace_of(conversation: Conversation, tmp_path: Path, name: str) -> pa.Table:
    scenario = load_scenario(DEMO_SCENARIO, {"run.seed": 3})
    parts = build_session_parts(scenario, conversation)
    path = tmp_path / f"{name}.arrows"
    with TraceWriter(path, trace_metadata(scenario, conversation, parts.tokenizer)) as trace:
        Session(parts, trace).run()
    data = read_trace(path)
    assert data.complete
    return data.table.drop_columns(list(WALL_COLUMNS))


def test_traces_are_those_of_eagerly_decoded_audio(tmp_path: Path):
    lazy = load_run_conversation(load_scenario(DEMO_SCENARIO))
    wav = DEMO_DATA / "audio" / "demo.wav"
    samples, rate = decode_stereo_wav(wav, wav.read_bytes())
    eager = dataclasses.replace(lazy, audio=resample(samples, rate, lazy.sample_rate))  # as before the change
    assert eager.audio_loaded and eager.n_samples == eager.audio.shape[1]
    assert _trace_of(lazy, tmp_path, "lazy").equals(_trace_of(eager, tmp_path, "eager"))
    assert not lazy.audio_loaded
