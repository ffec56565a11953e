"""Text tokenizer for oracle text: a SentencePiece model with KAME's special ids.

KAME tokenizes each streamed LLM chunk with the front-end checkpoint's SentencePiece model
(``sp.encode(text)``, one call per chunk) and plays the ids one per 80 ms frame, so the number of
tokens per chunk sets the oracle's timing. When no checkpoint tokenizer is given the simulator
uses the small English model bundled in ``kame_sim/assets`` (built by scripts/build_tokenizer.py),
which keeps the same special ids: unk 0, bos 1, eos 2, text padding 3; the oracle START token is
``text_card`` (= vocabulary size), one past the last piece, exactly as in Moshi.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import sentencepiece as spm

from kame_sim.errors import InputError

BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "tokenizer_en_1k.model"
#: Tokenizers loaded in this process, by (path, sha256 of the model file's bytes). A sweep worker
#: loads the same model for every run; parsing it and listing its pieces cost more than a
#: behavioural run's front-end. Keyed by content, a changed file is a new entry, never a stale hit.
_LOADED: dict[tuple[Path, str], TextTokenizer] = {}
_LOADED_MAX = 16
#: Memoised chunk encodings per tokenizer, at most (a cache, so clearing it changes no result).
ENCODE_CACHE_MAX = 100_000


class TextTokenizer:
    """SentencePiece wrapper with KAME's special ids (pad 3, START = text_card = vocab size)."""

    PAD_ID = 3

    def __init__(self, sp: spm.SentencePieceProcessor, path: Path, model_bytes: bytes) -> None:
        """Use :meth:`load`; this only wires an already validated processor."""
        self._sp = sp
        self._path = path
        self._sha256 = hashlib.sha256(model_bytes).hexdigest()
        self._vocab_size = int(sp.get_piece_size())
        # The simulator asks for the same pieces and chunks over and over (every frame, every
        # replay), so both lookups are precomputed / memoised instead of crossing into C++.
        self._pieces = [sp.id_to_piece(i).replace("▁", " ") for i in range(self._vocab_size)]
        self._encode_cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def load(cls, path: Path | str | None = None) -> TextTokenizer:
        """Load a SentencePiece model file; ``None`` loads the bundled English 1k model.

        Raises :class:`~kame_sim.errors.InputError` naming the file when it is missing, is not a
        SentencePiece model, or uses id 3 for a real piece (it would collide with KAME's text
        padding, which the front-end must never receive from the oracle as content).
        """
        p = BUNDLED_MODEL if path is None else Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise InputError(
                p, "tokenizer", f"cannot read SentencePiece model: {exc.strerror or exc}"
            ) from exc
        key = (p, hashlib.sha256(data).hexdigest())
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = cls._parse(p, data)
            if len(_LOADED) >= _LOADED_MAX:
                _LOADED.clear()
            _LOADED[key] = loaded
        return loaded

    @classmethod
    def _parse(cls, p: Path, data: bytes) -> TextTokenizer:
        """A tokenizer from a model file's bytes, checked (see :meth:`load`)."""
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(data)
        except Exception as exc:  # sentencepiece raises RuntimeError/OSError depending on version
            raise InputError(p, "tokenizer", f"not a valid SentencePiece model ({str(exc).strip()})") from exc
        size = int(sp.get_piece_size())
        if size <= cls.PAD_ID:
            raise InputError(p, "tokenizer", f"vocabulary of {size} pieces has no id {cls.PAD_ID}")
        if not (sp.is_control(cls.PAD_ID) or sp.is_unused(cls.PAD_ID)):
            raise InputError(
                p,
                "tokenizer",
                f"id {cls.PAD_ID} is the normal piece {sp.id_to_piece(cls.PAD_ID)!r}; KAME needs it "
                "to be the text padding (a control or unused piece) so encode never produces it",
            )
        return cls(sp, p, data)

    def encode(self, text: str) -> list[int]:
        """``sp.encode(text)`` exactly as KAME does per streamed chunk (no bos/eos), memoised.

        Note that SentencePiece treats every call as a fresh sentence, so a chunk starting
        without a space still gets a word-initial piece, as in KAME.
        """
        ids = self._encode_cache.get(text)
        if ids is None:
            ids = tuple(self._sp.encode(text))
            if len(self._encode_cache) >= ENCODE_CACHE_MAX:
                self._encode_cache.clear()
            self._encode_cache[text] = ids
        return list(ids)

    def decode(self, ids: list[int]) -> str:
        """Inverse of :meth:`encode` for normal text (used by tests and trace viewers)."""
        return self._sp.decode(list(ids))

    def piece(self, token_id: int) -> str:
        """The text piece of an id with "▁" replaced by a space, as KAME's server sends it out.

        Byte-fallback and control ids give their raw piece names (``<0xE2>``, ``<pad>``).
        """
        if not 0 <= token_id < self._vocab_size:
            # -1 (zero token), -2 (ungenerated) and START have no piece; a silent wrap-around of a
            # negative index would print the wrong text.
            raise IndexError(f"token id {token_id} has no piece (vocabulary size {self._vocab_size})")
        return self._pieces[token_id]

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def text_card(self) -> int:
        """Number of text ids; the oracle/text embeddings have ``text_card + 1`` rows."""
        return self._vocab_size

    @property
    def start_id(self) -> int:
        """The START token written at the anchor of every oracle reset (== text_card)."""
        return self._vocab_size

    @property
    def path(self) -> Path:
        return self._path

    def sha256(self) -> str:
        """Hash of the model file, recorded in trace metadata so replays can check the tokenizer."""
        return self._sha256
