"""The bundled tokenizer keeps KAME's id contract: pad 3 never encoded, START == text_card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kame_sim.errors import InputError
from kame_sim.tokenizer import BUNDLED_MODEL, TextTokenizer

ROOT = Path(__file__).resolve().parents[1]
DEMO_TEXT = ROOT / "scenarios" / "data" / "demo" / "text" / "demo.json"
DEMO_ORACLE = ROOT / "scenarios" / "data" / "demo" / "oracle_raw" / "demo.json"

VARIED = [
    "Sure, I can book a table for four at 7:30 pm on Friday.",
    "Your reference number is K29; the total is £18.40 (paid at the station).",
    "I’d prefer a three-star guesthouse — ideally with free Wi-Fi!",
    "café, naïve, Zürich, São Paulo, Ελληνικά, 日本語, emoji 😀, ™ …",
    "01223 456789 / CB2 1RF / 100% / #hashtag @user {json: [1, 2]} ~`^|\\",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines",
    "",
    " ",
    "a",
    "UPPER CASE SHOUTING",
]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.load()


def test_bundled_model_loads(tok: TextTokenizer) -> None:
    assert tok.path == BUNDLED_MODEL
    assert tok.vocab_size == 1024
    assert BUNDLED_MODEL.stat().st_size < 1_000_000


def test_special_ids(tok: TextTokenizer) -> None:
    assert TextTokenizer.PAD_ID == 3
    assert tok.start_id == tok.text_card == tok.vocab_size


@pytest.mark.parametrize("text", VARIED)
def test_encode_never_yields_pad_or_out_of_range(tok: TextTokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert TextTokenizer.PAD_ID not in ids
    assert all(0 <= i < tok.vocab_size for i in ids)
    # byte fallback: nothing is lost to <unk>
    assert 0 not in ids


def test_encode_is_cached_and_returns_fresh_lists(tok: TextTokenizer) -> None:
    a = tok.encode("hello there")
    a.append(999)
    assert tok.encode("hello there") != a
    assert tok.encode("hello there") == tok._sp.encode("hello there")


@pytest.mark.parametrize(
    "text",
    [
        "hello i am looking for a cheap restaurant in the city centre",
        "Great, I've booked your table for four on Friday at 8 pm. The reference number is K29.",
        "Sorry, seven thirty on Friday is fully booked. Would eight o’clock work for you instead?",
        "café naïve 😀",
    ],
)
def test_round_trip(tok: TextTokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_piece_word_initial_starts_with_space(tok: TextTokenizer) -> None:
    ids = tok.encode("hello world")
    assert tok.piece(ids[0]).startswith(" ")
    assert "".join(tok.piece(i) for i in ids) == " hello world"
    with pytest.raises(IndexError):
        tok.piece(tok.start_id)
    with pytest.raises(IndexError):
        tok.piece(-1)


def test_pad_piece_is_control(tok: TextTokenizer) -> None:
    assert tok._sp.is_control(3)
    assert tok.piece(3) == "<pad>"


def test_missing_file_gives_input_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.model"
    with pytest.raises(InputError) as ei:
        TextTokenizer.load(path)
    assert ei.value.source == str(path)
    assert ei.value.field == "tokenizer"
    assert "nope.model" in str(ei.value)


@pytest.mark.parametrize("content", [b"", b"not a model", None])
def test_corrupt_file_gives_input_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.model"
    # None: a truncated copy of the real model
    path.write_bytes(BUNDLED_MODEL.read_bytes()[:1000] if content is None else content)
    with pytest.raises(InputError) as ei:
        TextTokenizer.load(path)
    assert "bad.model" in str(ei.value)


def test_directory_gives_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        TextTokenizer.load(tmp_path)


def test_sha256_stable(tok: TextTokenizer) -> None:
    expected = hashlib.sha256(BUNDLED_MODEL.read_bytes()).hexdigest()
    assert tok.sha256() == expected
    assert TextTokenizer.load(BUNDLED_MODEL).sha256() == expected
    assert TextTokenizer.load(str(BUNDLED_MODEL)).sha256() == expected


def _demo_utterances() -> list[str]:
    rows = json.loads(DEMO_TEXT.read_text())
    out: list[list[str]] = []
    prev = None
    for r in rows:
        if r["speaker"] != prev:
            out.append([])
            prev = r["speaker"]
        out[-1].append(r["word"])
    return [" ".join(u) for u in out]


def test_tokens_per_word_on_demo_transcript(tok: TextTokenizer) -> None:
    utts = _demo_utterances()
    n_words = sum(len(u.split()) for u in utts)
    n_tokens = sum(len(tok.encode(u)) for u in utts)
    assert 1.0 <= n_tokens / n_words <= 2.5


def test_tokens_per_word_on_demo_oracle(tok: TextTokenizer) -> None:
    preds = [e["prediction"] for e in json.loads(DEMO_ORACLE.read_text(encoding="utf-8"))]
    n_words = sum(len(p.split()) for p in preds)
    n_tokens = sum(len(tok.encode(p)) for p in preds)
    assert 1.0 <= n_tokens / n_words <= 2.5
