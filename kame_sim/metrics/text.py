"""Word-level text comparison: normalisation, bag-of-words F1 and normalised Levenshtein distance.

Written here (no new dependency) because the inputs are short — a reply of at most a few dozen
words against an oracle of at most ~30 — so a plain dynamic programme costs microseconds, and the
exact definitions must be pinned down in one place (docs/metrics.md) for the numbers to mean
anything across sweeps.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[\w']+")
_RAW_WORD = re.compile(r"\S+")


def normalise_words(text: str) -> list[str]:
    """Lower-cased word tokens with punctuation removed (``"Food."`` → ``["food"]``).

    Why: the oracle text keeps the LLM's capitals and punctuation and the front-end's text pieces
    keep the tokenizer's, while what matters for self-correction is which words were said. Words
    are maximal runs of letters, digits, ``_`` and apostrophes, so ``"people,"`` → ``people``,
    ``"don't"`` stays one word and ``"twenty-four"`` becomes two on both sides alike.
    """
    return _WORD.findall(text.casefold())


def pieces_to_words(pieces: Sequence[str], frames: Sequence[int]) -> tuple[list[str], list[int]]:
    """Join text pieces into normalised words, each tagged with the frame of its first character.

    SentencePiece pieces carry their own leading space (``" W"``, ``"ould"`` → ``"Would"``), so the
    pieces are concatenated as they are and split on whitespace; a word belongs to the frame in
    which its first character was spoken, which is what decides whether it was said before or
    after an oracle arrived.
    """
    text = "".join(pieces)
    if not text:
        return [], []
    # Frame of every character: piece i covers len(pieces[i]) characters.
    starts = []
    pos = 0
    for piece in pieces:
        starts.append(pos)
        pos += len(piece)
    words: list[str] = []
    word_frames: list[int] = []
    piece_i = 0
    for match in _RAW_WORD.finditer(text):
        while piece_i + 1 < len(starts) and starts[piece_i + 1] <= match.start():
            piece_i += 1
        for word in normalise_words(match.group()):
            words.append(word)
            word_frames.append(int(frames[piece_i]))
    return words, word_frames


def word_f1(hypothesis: Sequence[str], reference: Sequence[str]) -> float | None:
    """Bag-of-words F1: ``2·|hyp ∩ ref| / (|hyp| + |ref|)`` with multiset intersection.

    None when either side is empty: with nothing said, or nothing to compare against, agreement
    is undefined rather than 0 (the "said nothing" case is counted by turn-over instead).
    """
    if not hypothesis or not reference:
        return None
    overlap = sum((Counter(hypothesis) & Counter(reference)).values())
    return 2.0 * overlap / (len(hypothesis) + len(reference))


def levenshtein(a: Sequence[str], b: Sequence[str]) -> int:
    """Word-level edit distance (insertions, deletions, substitutions each cost 1).

    Bit-parallel (Myers 1999, in Hyyrö's form for the edit distance): one column of the
    dynamic-programming table is a pair of bit vectors (Python ints of ``len(b)`` bits), so a
    word of ``a`` costs a few integer operations instead of ``len(b)`` Python steps. Exactly
    the classic table's result (the tests check it against the table on random word lists).
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if not m:
        return len(a)
    positions: dict[str, int] = {}  # each word of b -> the bits of the places it appears at
    for j, word in enumerate(b):
        positions[word] = positions.get(word, 0) | (1 << j)
    mask = (1 << m) - 1
    last = 1 << (m - 1)
    vp, vn, score = mask, 0, m  # vertical +1 / -1 deltas of the current column; D[m] of it
    for word in a:
        eq = positions.get(word, 0)
        xv = eq | vn
        xh = (((eq & vp) + vp) ^ vp) | eq
        hp = vn | (~(xh | vp) & mask)
        hn = vp & xh
        if hp & last:
            score += 1
        elif hn & last:
            score -= 1
        hp = ((hp << 1) | 1) & mask
        hn = (hn << 1) & mask
        vp = hn | (~(xv | hp) & mask)
        vn = hp & xv
    return score


def normalised_edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> float | None:
    """``levenshtein(hyp, ref) / max(|hyp|, |ref|)`` in [0, 1]; None when either side is empty."""
    if not hypothesis or not reference:
        return None
    return levenshtein(hypothesis, reference) / max(len(hypothesis), len(reference))
