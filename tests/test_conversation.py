"""Tests for kame_sim.conversation: loading, resampling, framing, hashing, validation, utterances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from kame_sim.conversation import (
    Conversation,
    Word,
    list_conversations,
    load_conversation,
    user_utterances,
)
from kame_sim.errors import InputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SPOKENWOZ = SHARED / "data" / "spokenwoz"
SPOKENWOZ_IDS = ("SNG0072", "SNG0480", "MUL1423")
needs_spokenwoz = pytest.mark.skipif(
    not (SPOKENWOZ / "audio").is_dir(),
    reason=f"shared SpokenWOZ samples not found at {SPOKENWOZ} (../shared relative to the repo root)",
)

RATE = 8000
WORDS = [
    {"speaker": "A", "word": "hello", "start": 0.10, "end": 0.40},
    {"speaker": "B", "word": "hi", "start": 0.50, "end": 0.70},
    {"speaker": "A", "word": "there", "start": 0.80, "end": 0.95},
]
ORACLE = [
    {
        "timestamp_ms": 500,
        "conversation_context": "A: hello",
        "prediction": "Hi, how can I help?",
        "total_word_count": 1,
        "trigger_word": "hello",
        "recent_words": "hello",
        "current_spoken_ratio": 1.0,
        "channel": 1,
        "hint": "hi",
    },
    {
        "timestamp_ms": 1000,
        "conversation_context": "A: hello\nB: hi",
        "prediction": "There you are.",
        "total_word_count": 2,
        "current_spoken_ratio": 0.5,
        "channel": 0,
        "hint": "",
    },
]


def stereo(seconds: float = 1.0, rate: int = RATE, freqs: tuple[float, float] = (440.0, 880.0)) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def make_dataset(
    root: Path,
    cid: str = "c1",
    *,
    audio: np.ndarray | None = None,
    rate: int = RATE,
    words: Any = WORDS,
    oracle: Any = ORACLE,
    subtype: str = "PCM_16",
    audio_format: str = "WAV",
) -> Path:
    """A dataset folder in the canonical layout; str/bytes values are written verbatim."""
    for sub in ("audio", "text", "oracle_raw"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sf.write(
        root / "audio" / f"{cid}.wav",
        stereo() if audio is None else audio,
        rate,
        subtype=subtype,
        format=audio_format,
    )
    for sub, value in (("text", words), ("oracle_raw", oracle)):
        path = root / sub / f"{cid}.json"
        if value is None:
            continue
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value if isinstance(value, str) else json.dumps(value))
    return root


# ---------------------------------------------------------------- real SpokenWOZ conversations


@needs_spokenwoz
def test_list_spokenwoz() -> None:
    assert list_conversations(SPOKENWOZ) == sorted(SPOKENWOZ_IDS)


@needs_spokenwoz
@pytest.mark.parametrize("cid", SPOKENWOZ_IDS)
def test_spokenwoz_loads(cid: str) -> None:
    conv = load_conversation(SPOKENWOZ, cid, require_oracle=True)
    info = sf.info(SPOKENWOZ / "audio" / f"{cid}.wav")
    assert info.samplerate == 8000
    assert conv.id == cid
    assert conv.sample_rate == 24000
    assert conv.audio.dtype == np.float32
    assert conv.audio.ndim == 2 and conv.audio.shape[0] == 2
    assert abs(conv.audio.shape[1] - info.frames * 3) <= 1
    assert abs(conv.duration_s - info.frames / 8000) <= 1 / 8000
    # Both channels carry speech.
    assert np.abs(conv.audio[0]).max() > 0.01 and np.abs(conv.audio[1]).max() > 0.01

    raw = json.loads((SPOKENWOZ / "text" / f"{cid}.json").read_text())
    assert len(conv.words) == len(raw)
    starts = [w.start for w in conv.words]
    assert starts == sorted(starts)
    assert {w.speaker for w in conv.words} == {"A", "B"}
    assert all(w.end <= conv.duration_s + 0.05 for w in conv.words)
    assert len(conv.words_of("A")) + len(conv.words_of("B")) == len(conv.words)

    assert len(conv.oracle_raw) > 10
    times = [p.timestamp_s for p in conv.oracle_raw]
    assert times == sorted(times)
    assert times[0] == pytest.approx(5.0)
    assert {p.channel for p in conv.oracle_raw} <= {0, 1}
    assert all(p.prediction for p in conv.oracle_raw)
    assert all(0.0 <= p.current_spoken_ratio <= 1.0 for p in conv.oracle_raw)
    assert len(conv.content_hash) == 64


@needs_spokenwoz
def test_spokenwoz_interleaved_turns_are_sorted() -> None:
    # SNG0480's file lists B's "for" (7.964 s) before A's "uh" (7.9 s): sorted per speaker only.
    conv = load_conversation(SPOKENWOZ, "SNG0480")
    texts = [(w.speaker, w.text) for w in conv.words]
    assert texts.index(("A", "uh")) < texts.index(("B", "for"))


# ---------------------------------------------------------------- synthetic datasets


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def test_resampling_preserves_frequency(tmp_path: Path) -> None:
    conv = load_conversation(make_dataset(tmp_path))
    assert conv.id == "c1"  # the only conversation is picked when no id is given
    assert conv.sample_rate == 24000
    assert conv.audio.shape == (2, 24000)
    assert dominant_hz(conv.audio[0], 24000) == pytest.approx(440.0, abs=1.0)
    assert dominant_hz(conv.audio[1], 24000) == pytest.approx(880.0, abs=1.0)
    mid = conv.audio[0, 2000:-2000]
    assert np.abs(mid).max() == pytest.approx(0.5, abs=0.01)
    assert conv.audio.flags.c_contiguous and not conv.audio.flags.writeable


def test_other_sample_rate(tmp_path: Path) -> None:
    conv = load_conversation(make_dataset(tmp_path), sample_rate=16000)
    assert conv.audio.shape == (2, 16000)
    assert dominant_hz(conv.audio[1], 16000) == pytest.approx(880.0, abs=1.0)


def test_frames_shape_and_content(tmp_path: Path) -> None:
    n = 1920 * 3 + 100  # three complete frames and a partial one
    ramp = np.stack([np.linspace(-1, 1, n), np.linspace(1, -1, n)], axis=1).astype(np.float32)
    words = [{"speaker": "A", "word": "ramp", "start": 0.1, "end": 0.5}]
    conv = load_conversation(
        make_dataset(tmp_path, audio=ramp, words=words, subtype="FLOAT"), sample_rate=RATE
    )
    np.testing.assert_array_equal(conv.audio, ramp.T)  # no resampling at the native rate
    assert conv.n_frames() == 3
    assert conv.n_frames(1000) == 5
    for ch in (0, 1):
        frames = conv.frames(ch)
        assert frames.shape == (3, 1920) and frames.dtype == np.float32
        np.testing.assert_array_equal(frames[1], ramp[1920:3840, ch])
        np.testing.assert_array_equal(frames.ravel(), ramp[: 3 * 1920, ch])
        assert np.shares_memory(frames, conv.audio)
        assert not frames.flags.writeable
    assert conv.frames(0, 1000).shape == (5, 1000)
    with pytest.raises(InputError, match="channel"):
        conv.frames(2)
    with pytest.raises(InputError, match="frame_samples"):
        conv.n_frames(0)


def test_words_and_oracle_parsed(tmp_path: Path) -> None:
    conv = load_conversation(make_dataset(tmp_path))
    assert conv.words == (
        Word("A", "hello", 0.10, 0.40),
        Word("B", "hi", 0.50, 0.70),
        Word("A", "there", 0.80, 0.95),
    )
    assert [w.text for w in conv.words_of("A")] == ["hello", "there"]
    assert conv.channel_of("A") == 0 and conv.channel_of("B") == 1
    first, second = conv.oracle_raw
    assert first.timestamp_s == 0.5 and first.channel == 1 and first.hint == "hi"
    assert first.trigger_word == "hello" and second.trigger_word == ""
    assert second.timestamp_s == 1.0 and second.current_spoken_ratio == 0.5
    assert second.total_word_count == 2 and second.conversation_context == "A: hello\nB: hi"
    with pytest.raises(InputError, match="unknown speaker 'C'"):
        conv.channel_of("C")
    with pytest.raises(InputError, match="unknown speaker 'C'"):
        conv.words_of("C")


def test_oracle_optional(tmp_path: Path) -> None:
    conv = load_conversation(make_dataset(tmp_path, oracle=None))
    assert conv.oracle_raw == ()
    with pytest.raises(InputError) as err:
        load_conversation(tmp_path, require_oracle=True)
    assert "c1.json" in str(err.value) and err.value.field == "oracle_raw"


def test_custom_speakers(tmp_path: Path) -> None:
    words = [{**w, "speaker": {"A": "user", "B": "agent"}[w["speaker"]]} for w in WORDS]
    conv = load_conversation(make_dataset(tmp_path, words=words), speakers=("user", "agent"))
    assert conv.speakers == ("user", "agent")
    assert conv.channel_of("agent") == 1
    assert [w.text for w in conv.words_of("user")] == ["hello", "there"]


def test_interleaved_speakers_sorted_and_empty_words_dropped(tmp_path: Path) -> None:
    words = [
        {"speaker": "B", "word": "hi", "start": 0.5, "end": 0.7},
        {"speaker": "B", "word": "  ", "start": 0.7, "end": 0.7},
        {"speaker": "A", "word": " hello ", "start": 0.1, "end": 0.4},
        {"speaker": "A", "word": "x", "start": 0.5, "end": 0.6},
    ]
    conv = load_conversation(make_dataset(tmp_path, words=words))
    assert [(w.speaker, w.text) for w in conv.words] == [("A", "hello"), ("B", "hi"), ("A", "x")]


def test_word_end_tolerance(tmp_path: Path) -> None:
    words = [{"speaker": "A", "word": "tail", "start": 0.9, "end": 1.04}]
    conv = load_conversation(make_dataset(tmp_path, words=words))
    assert conv.words[0].end == 1.04


def test_content_hash(tmp_path: Path) -> None:
    base = make_dataset(tmp_path / "a")
    h = load_conversation(base).content_hash
    assert load_conversation(base).content_hash == h
    assert load_conversation(make_dataset(tmp_path / "copy")).content_hash == h  # location-free
    assert load_conversation(base, sample_rate=16000).content_hash == h  # files, not decoded audio

    changed = {
        "audio": make_dataset(tmp_path / "b", audio=stereo(freqs=(441.0, 880.0))),
        "text": make_dataset(tmp_path / "c", words=[*WORDS[:2], {**WORDS[2], "word": "their"}]),
        "oracle": make_dataset(tmp_path / "d", oracle=[ORACLE[0], {**ORACLE[1], "prediction": "x"}]),
        "no oracle": make_dataset(tmp_path / "e", oracle=None),
        "empty oracle": make_dataset(tmp_path / "f", oracle=[]),
        "same json, other bytes": make_dataset(tmp_path / "g", words=json.dumps(WORDS, indent=2)),
    }
    hashes = {name: load_conversation(d).content_hash for name, d in changed.items()}
    assert all(v != h for v in hashes.values()), hashes
    assert len(set(hashes.values())) == len(hashes)


# ---------------------------------------------------------------- errors


def error_of(dataset: Path, cid: str | None = None, **kwargs: Any) -> InputError:
    with pytest.raises(InputError) as err:
        load_conversation(dataset, cid, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg
    return err.value


def assert_error(err: InputError, file_name: str, field: str, *fragments: str) -> None:
    msg = str(err)
    assert file_name in msg, msg
    assert err.field == field and field in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_missing_dataset_dir(tmp_path: Path) -> None:
    assert_error(error_of(tmp_path / "nope"), "nope", "dataset_dir", "no such directory")
    with pytest.raises(InputError, match="dataset_dir"):
        list_conversations(tmp_path / "nope")


def test_missing_files(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    assert_error(error_of(ds, "c2"), "c2.wav", "audio", "file not found", "c1")
    (ds / "text" / "c1.json").unlink()
    assert_error(error_of(ds, "c1"), "c1.json", "transcript", "file not found")
    assert_error(error_of(ds), str(ds), "conversation_id", "no conversation found")


def test_conversation_id_choice(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    make_dataset(ds, "c2")
    assert list_conversations(ds) == ["c1", "c2"]
    assert_error(error_of(ds), str(ds), "conversation_id", "c1, c2")
    assert load_conversation(ds, "c2").id == "c2"
    assert_error(error_of(ds, "../c1"), str(ds), "conversation_id")


def test_bad_arguments(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path)
    assert error_of(ds, sample_rate=0).field == "sample_rate"
    assert error_of(ds, speakers=("A", "A")).field == "speakers"


AUDIO_CASES = {
    "garbage": ("audio", "cannot read audio"),
    "flac": ("format", "FLAC"),
    "mono": ("channels", "got 1 channel"),
    "three": ("channels", "got 3 channels"),
    "empty": ("samples", "no samples"),
}


@pytest.mark.parametrize("case", AUDIO_CASES)
def test_bad_audio(tmp_path: Path, case: str) -> None:
    kwargs: dict[str, Any] = {
        "flac": {"audio_format": "FLAC"},
        "mono": {"audio": stereo()[:, :1]},
        "three": {"audio": np.zeros((800, 3), np.float32)},
        "empty": {"audio": np.zeros((0, 2), np.float32), "words": [{**WORDS[0], "start": 0, "end": 0}]},
    }.get(case, {})
    ds = make_dataset(tmp_path, **kwargs)
    if case == "garbage":
        (ds / "audio" / "c1.wav").write_bytes(b"RIFF\x00\x00not really a wav file at all")
    field, fragment = AUDIO_CASES[case]
    assert_error(error_of(ds, "c1"), "c1.wav", field, fragment)


def _w(i: int, **changes: Any) -> list[dict[str, Any]]:
    """WORDS with entry ``i`` changed (a value of ... deletes the key)."""
    words = [dict(w) for w in WORDS]
    for key, value in changes.items():
        if value is ...:
            del words[i][key]
        else:
            words[i][key] = value
    return words


TRANSCRIPT_CASES: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "invalid json": ('[{"speaker": "A",, }]', "json", ("not valid JSON", "line 1 column")),
    "not utf8": (b"\xff\xfe[]", "json", ("UTF-8",)),
    "not a list": ({"words": WORDS}, "(top level)", ("list",)),
    "empty list": ([], "(top level)", ("no (non-empty) words",)),
    "only empty words": ([{**WORDS[0], "word": ""}], "(top level)", ("no (non-empty) words",)),
    "entry not object": ([WORDS[0], "hi"], "[1]", ("expected an object",)),
    "missing speaker": (_w(1, speaker=...), "[1].speaker", ("missing",)),
    "missing word": (_w(1, word=...), "[1].word", ("missing",)),
    "missing start": (_w(2, start=...), "[2].start", ("missing",)),
    "missing end": (_w(0, end=...), "[0].end", ("missing",)),
    "word not str": (_w(1, word=5), "[1].word", ("expected a string",)),
    "speaker not str": (_w(1, speaker=None), "[1].speaker", ("expected a string", "null")),
    "start is str": (_w(1, start="0.5"), "[1].start", ("expected a number",)),
    "start is bool": (_w(1, start=True), "[1].start", ("expected a number",)),
    "unknown speaker": (_w(1, speaker="C"), "[1].speaker", ("unknown speaker 'C'",)),
    "negative start": (_w(0, start=-0.1), "[0].start", ("negative",)),
    "nan start": (json.dumps(_w(1, start=float("nan"))), "[1].start", ("finite",)),
    "inf end": (json.dumps(_w(1, end=float("inf"))), "[1].end", ("finite",)),
    "end before start": (_w(1, end=0.4), "[1].end", ("before start",)),
    "unsorted": (_w(2, start=0.05, end=0.08), "[2].start", ("not sorted", "[0]")),
    "past audio end": (_w(2, end=1.2), "[2].end", ("after the end of the audio",)),
}


@pytest.mark.parametrize("case", TRANSCRIPT_CASES)
def test_bad_transcript(tmp_path: Path, case: str) -> None:
    words, field, fragments = TRANSCRIPT_CASES[case]
    ds = make_dataset(tmp_path, words=words)
    assert_error(error_of(ds), "c1.json", field, *fragments)
    assert "text" in str(error_of(ds))  # the transcript, not the oracle_raw file of the same name


def _o(i: int, **changes: Any) -> list[dict[str, Any]]:
    entries = [dict(e) for e in ORACLE]
    for key, value in changes.items():
        if value is ...:
            del entries[i][key]
        else:
            entries[i][key] = value
    return entries


ORACLE_CASES: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "invalid json": ("[{", "json", ("not valid JSON",)),
    "not a list": ({"a": 1}, "(top level)", ("list",)),
    "entry not object": ([1], "[0]", ("expected an object",)),
    "missing prediction": (_o(1, prediction=...), "[1].prediction", ("missing",)),
    "missing timestamp": (_o(0, timestamp_ms=...), "[0].timestamp_ms", ("missing",)),
    "missing hint": (_o(0, hint=...), "[0].hint", ("missing",)),
    "prediction not str": (_o(1, prediction=3), "[1].prediction", ("expected a string",)),
    "channel not int": (_o(0, channel="1"), "[0].channel", ("expected an integer",)),
    "channel bool": (_o(0, channel=True), "[0].channel", ("expected an integer",)),
    "channel 2": (_o(0, channel=2), "[0].channel", ("must be 0 or 1",)),
    "negative timestamp": (_o(0, timestamp_ms=-5), "[0].timestamp_ms", ("negative",)),
    "unsorted": (_o(1, timestamp_ms=100), "[1].timestamp_ms", ("not sorted",)),
    "ratio above 1": (_o(1, current_spoken_ratio=1.5), "[1].current_spoken_ratio", ("between 0 and 1",)),
    "count float": (_o(1, total_word_count=2.5), "[1].total_word_count", ("expected an integer",)),
}


@pytest.mark.parametrize("case", ORACLE_CASES)
def test_bad_oracle_raw(tmp_path: Path, case: str) -> None:
    oracle, field, fragments = ORACLE_CASES[case]
    ds = make_dataset(tmp_path, oracle=oracle)
    err = error_of(ds)
    assert_error(err, "c1.json", field, *fragments)
    assert "oracle_raw" in str(err)


# ---------------------------------------------------------------- utterances


def words_at(*spans: tuple[float, float], speaker: str = "A") -> list[Word]:
    return [Word(speaker, f"w{i}", s, e) for i, (s, e) in enumerate(spans)]


def test_user_utterances_split_on_gap() -> None:
    words = words_at((0.0, 0.3), (0.4, 0.6), (1.4, 1.6), (1.7, 1.9), (5.0, 5.2))
    groups = user_utterances(words, 0.8)
    assert [[w.text for w in g] for g in groups] == [["w0", "w1"], ["w2", "w3"], ["w4"]]
    assert all(isinstance(g, tuple) for g in groups)
    assert len(user_utterances(words, 10.0)) == 1
    assert len(user_utterances(words, 0.05)) == 5


def test_user_utterances_gap_is_inclusive() -> None:
    words = words_at((0.0, 0.5), (1.0, 1.2))
    assert len(user_utterances(words, 0.5)) == 2
    assert len(user_utterances(words, 0.5001)) == 1
    # Decimal timestamps: 1.4 - 0.6 is 0.7999999999999999 in binary floating point.
    assert len(user_utterances(words_at((0.0, 0.6), (1.4, 1.5)), 0.8)) == 2


def test_user_utterances_nested_word() -> None:
    # "whale" nested inside "called" (as in MUL1423) must not open a pause before the next word.
    words = words_at((0.0, 2.0), (0.5, 0.7), (2.2, 2.5))
    assert len(user_utterances(words, 1.0)) == 1


def test_user_utterances_edge_cases() -> None:
    assert user_utterances([], 0.8) == []
    with pytest.raises(ValueError, match="gap"):
        user_utterances(words_at((0, 1)), 0.0)
    with pytest.raises(ValueError, match="one speaker"):
        user_utterances([*words_at((0, 1)), *words_at((3, 4), speaker="B")], 0.8)
    with pytest.raises(ValueError, match="sorted"):
        user_utterances(words_at((2, 3), (0, 1)), 0.8)


@needs_spokenwoz
def test_user_utterances_on_real_words() -> None:
    conv: Conversation = load_conversation(SPOKENWOZ, "MUL1423")
    user = conv.words_of("A")
    groups = user_utterances(user, 0.8)
    assert 1 < len(groups) < len(user)
    assert [w for g in groups for w in g] == list(user)
