#!/usr/bin/env python3
"""Regenerate the demo conversation under ``scenarios/data/demo/`` (audio, transcript, oracle).

Why this exists: the SpokenWOZ samples are CC BY-NC and may not ship in the repo, yet tests, docs
and CI need a conversation in the canonical KAME layout. This one is ours (MIT), short, and built
so that its word timings are exact: every word is synthesised on its own with espeak-ng, trimmed,
and placed on the timeline by this script at a whole-millisecond offset, so the transcript is the
ground truth of where the audio is (no forced alignment, no ASR errors).

Outputs (all deterministic for a given espeak-ng build; see docs/demo-conversation.md):

- ``audio/demo.wav``: stereo 16 kHz PCM-16; channel 0 = speaker A (user), channel 1 = B (agent).
- ``text/demo.json``: ``[{"speaker", "word", "start", "end"}]`` sorted by start, seconds (ms).
- ``oracle_raw/demo.json``: recorded back-end predictions on a 5 s grid in the SpokenWOZ
  ``oracle_raw`` format; the event fields are computed from the transcript with the same rules
  as kame_finetune's oracle generator, the ``prediction`` texts are hand-written below.

Usage::

    python scripts/make_demo_conversation.py            # synthesise (needs espeak-ng) + verify
    python scripts/make_demo_conversation.py --check    # verify committed files (no espeak-ng)

``--check`` also recomputes ``oracle_raw/demo.json`` from ``text/demo.json`` and fails if the
committed file differs, so the oracle can never drift from the transcript.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "scenarios" / "data" / "demo"
CONV_ID = "demo"

SAMPLE_RATE = 16_000
SAMPLES_PER_MS = SAMPLE_RATE // 1000
# Different voices so the two channels are easy to tell apart by ear.
VOICES = {"A": "en-us", "B": "en-us+f3"}
CHANNEL = {"A": 0, "B": 1}
SPEED_WPM = 190
LEAD_IN_MS = 500
TAIL_MS = 600
PAUSE_MS = 400  # the deliberate mid-utterance hesitation ("|" in a turn's text)
# Word trimming: keep everything above -40 dB relative to the word's own peak, plus a short margin
# so plosive onsets and fricative tails are not clipped.
TRIM_REL_DB = -35.0
TRIM_MARGIN_MS = 5
FADE_MS = 2
GAIN = 0.7  # peak level of each word after normalisation (same loudness for both voices)

# (speaker, gap before this turn in ms relative to the end of the previous turn, text).
# A negative gap is an overlap. "|" marks a mid-utterance pause of PAUSE_MS.
TURNS: list[tuple[str, int, str]] = [
    ("A", 0, "hello i am looking for a cheap restaurant in the city centre that serves italian food"),
    ("B", 550, "pizza express on regent street is cheap would you like a table there"),
    ("A", 450, "yes please a table for | four people on friday at seven thirty"),
    ("B", 600, "sorry seven thirty is fully booked would eight work for you"),
    ("A", -120, "eight is fine"),
    ("B", 380, "great your table for four is booked the reference is k two nine"),
    ("A", 500, "thank you that is all goodbye"),
    ("B", 420, "you are welcome enjoy your meal goodbye"),
]

# Hand-written back-end LLM guesses of the NEXT speaker's utterance, keyed by event timestamp.
# Some are right, some wrong (a wrong cuisine, a wrong time, a premature goodbye), because the
# simulator is meant to show the front-end correcting itself when a fresh oracle arrives.
# Where the ratio is > 0.5 the LLM was shown the hint, so those guesses lean on it.
PREDICTIONS: dict[int, str] = {
    # ratio 0.69, hint shown: right.
    5000: (
        "Pizza Express on Regent Street is cheap and serves Italian food. "
        "Would you like me to book a table for you there?"
    ),
    # ratio 0.31, no hint: right intent, wrong details (two people, tonight, seven).
    10000: "Yes please, that sounds perfect. Could you book a table for two people tonight at seven o’clock?",
    # ratio 0.17, no hint: asks for details the user is about to give; the agent says "sorry".
    15000: "Certainly. For how many people, and on which day and at what time would you like the booking?",
    # ratio 1.0, hint shown: right.
    20000: "Sorry, seven thirty on Friday is fully booked. Would eight o’clock work for you instead?",
    # ratio 0.67, hint shown: right, with digits the way an LLM writes them.
    25000: "Great, I’ve booked your table for four on Friday at 8 pm. The reference number is K29.",
    # ratio 0.77, hint shown: drifts (a taxi nobody asked for) before landing on the goodbye.
    30000: "Thank you. Could you also book me a taxi to get there by eight? Otherwise that is all, goodbye.",
}


@dataclass(frozen=True)
class Word:
    """One transcript word; times in seconds, exact to the millisecond."""

    speaker: str
    word: str
    start: float
    end: float


# --------------------------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------------------------


def espeak_version() -> str:
    """The espeak-ng version line, recorded in the docs because the audio depends on it."""
    out = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def synth_word(word: str, voice: str) -> np.ndarray:
    """Synthesise one word, resample to 16 kHz, trim silence, pad to whole milliseconds.

    Word-by-word synthesis loses sentence prosody, but it is what makes the timings exact: the
    trimmed clip is exactly the interval the transcript reports.
    """
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(SPEED_WPM), "--stdout", word],
        check=True,
        capture_output=True,
    ).stdout
    audio, sr = sf.read(io.BytesIO(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    peak = float(np.max(np.abs(audio)))
    if peak <= 0:
        raise RuntimeError(f"espeak-ng produced silence for {word!r}")
    thr = peak * 10 ** (TRIM_REL_DB / 20)
    loud = np.flatnonzero(np.abs(audio) > thr)
    margin = TRIM_MARGIN_MS * SAMPLES_PER_MS
    lo = max(0, int(loud[0]) - margin)
    hi = min(len(audio), int(loud[-1]) + 1 + margin)
    clip = audio[lo:hi] / peak * GAIN
    # Whole milliseconds, so start/end in the transcript are exact, not rounded.
    pad = (-len(clip)) % SAMPLES_PER_MS
    clip = np.concatenate([clip, np.zeros(pad, dtype=np.float32)])
    fade = FADE_MS * SAMPLES_PER_MS
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    clip[:fade] *= ramp
    clip[len(clip) - pad - fade : len(clip) - pad] *= ramp[::-1]
    return clip


def intra_gap_ms(k: int) -> int:
    """Gap after the k-th word of an utterance: 40-80 ms, varied but deterministic (no RNG)."""
    return 40 + (k * 23) % 41


def build_timeline() -> tuple[np.ndarray, list[Word]]:
    """Place every word of every turn; return the stereo int16 signal and the transcript."""
    cache: dict[tuple[str, str], np.ndarray] = {}
    placed: list[tuple[str, str, int, np.ndarray]] = []  # speaker, word, start ms, clip
    prev_end_ms = 0
    for turn_idx, (speaker, gap_ms, text) in enumerate(TURNS):
        t_ms = LEAD_IN_MS if turn_idx == 0 else prev_end_ms + gap_ms
        tokens = text.split()
        k = 0
        for i, tok in enumerate(tokens):
            if tok == "|":
                continue
            key = (VOICES[speaker], tok)
            if key not in cache:
                cache[key] = synth_word(tok, VOICES[speaker])
            clip = cache[key]
            placed.append((speaker, tok, t_ms, clip))
            end_ms = t_ms + len(clip) // SAMPLES_PER_MS
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            t_ms = end_ms + (PAUSE_MS if nxt == "|" else intra_gap_ms(k))
            k += 1
            prev_end_ms = end_ms
    total_ms = max(s + len(c) // SAMPLES_PER_MS for _, _, s, c in placed) + TAIL_MS
    stereo = np.zeros((total_ms * SAMPLES_PER_MS, 2), dtype=np.float32)
    words: list[Word] = []
    for speaker, tok, start_ms, clip in placed:
        a = start_ms * SAMPLES_PER_MS
        stereo[a : a + len(clip), CHANNEL[speaker]] += clip
        end_ms = start_ms + len(clip) // SAMPLES_PER_MS
        words.append(Word(speaker, tok, start_ms / 1000, end_ms / 1000))
    words.sort(key=lambda w: (w.start, w.end))
    pcm = np.clip(np.round(stereo * 32767), -32768, 32767).astype(np.int16)
    return pcm, words


# --------------------------------------------------------------------------------------------
# Oracle events (kame_finetune's rules, re-implemented from their description)
# --------------------------------------------------------------------------------------------


def oracle_requests(words: list[Word], interval_ms: int = 5000, window: int = 5) -> list[dict]:
    """The oracle_raw fields for each grid time, without the prediction text.

    Rules (as in kame_finetune's generator, which made the SpokenWOZ samples):
    - heard words at time t: those with end <= t (transcript order); events need >= 2 of them;
    - current speaker: speaker of the last heard word; the prediction is for the other one, whose
      channel is ``channel``;
    - current utterance: the trailing run of the current speaker's heard words, extended into the
      future with that speaker's following words until the speaker changes or two consecutive word
      ends are >= 1.0 s apart; ``current_spoken_ratio`` = heard / total of that utterance;
    - hint: the next speaker's words after the last heard word (first run of them), given only
      when the ratio is > 0.5; generation stops at the first time with no such words left.
    """
    events: list[dict] = []
    max_end = max(w.end for w in words)
    t_ms = interval_ms
    while t_ms / 1000 < max_end:
        t = t_ms / 1000
        heard = [w for w in words if w.end <= t]
        if len(heard) < 2:
            t_ms += interval_ms
            continue
        cur = heard[-1].speaker
        nxt = "B" if cur == "A" else "A"
        n_heard_utt = 0
        for w in reversed(heard):
            if w.speaker != cur:
                break
            n_heard_utt += 1
        last_idx = words.index(heard[-1])
        n_total = n_heard_utt
        for i in range(last_idx + 1, len(words)):
            if words[i].speaker != cur or words[i].end - words[i - 1].end >= 1.0:
                break
            n_total += 1
        ratio = n_heard_utt / n_total
        hint_words: list[str] = []
        for w in words:
            if w.end <= heard[-1].end:
                continue
            if w.speaker == nxt:
                hint_words.append(w.word)
            elif hint_words:
                break
        if not hint_words:
            break
        events.append(
            {
                "timestamp_ms": t_ms,
                "conversation_context": context_lines(heard),
                "prediction": None,
                "total_word_count": len(heard),
                "trigger_word": heard[-1].word,
                "recent_words": " ".join(w.word for w in heard[-window:]),
                "current_spoken_ratio": ratio,
                "channel": CHANNEL[nxt],
                "hint": " ".join(hint_words) if ratio > 0.5 else "",
            }
        )
        t_ms += interval_ms
    return events


def context_lines(heard: list[Word]) -> str:
    """``A: ...`` / ``B: ...`` lines, one per run of the same speaker."""
    lines: list[str] = []
    cur: str | None = None
    buf: list[str] = []
    for w in heard:
        if w.speaker != cur and buf:
            lines.append(f"{cur}: {' '.join(buf)}")
            buf = []
        cur = w.speaker
        buf.append(w.word)
    if buf:
        lines.append(f"{cur}: {' '.join(buf)}")
    return "\n".join(lines)


def build_oracle(words: list[Word], *, allow_missing: bool = False) -> list[dict]:
    """Attach the hand-written predictions; every grid event must have exactly one."""
    events = oracle_requests(words)
    stamps = [e["timestamp_ms"] for e in events]
    missing = [s for s in stamps if s not in PREDICTIONS]
    extra = sorted(set(PREDICTIONS) - set(stamps))
    if (missing and not allow_missing) or extra:
        raise SystemExit(f"PREDICTIONS out of step with the grid: missing {missing}, extra {extra}")
    for e in events:
        e["prediction"] = PREDICTIONS.get(e["timestamp_ms"], "")
    return events


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def transcript_json(words: list[Word]) -> str:
    """One word per line, like the SpokenWOZ sample files (easy to diff)."""
    rows = [
        json.dumps({"speaker": w.speaker, "word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)})
        for w in words
    ]
    return "[\n" + ",\n".join("    " + r for r in rows) + "\n]\n"


def oracle_json(events: list[dict]) -> str:
    return json.dumps(events, indent=2, ensure_ascii=False) + "\n"


def load_words(path: Path) -> list[Word]:
    return [
        Word(r["speaker"], r["word"], float(r["start"]), float(r["end"]))
        for r in json.loads(path.read_text())
    ]


def verify(out_dir: Path) -> None:
    """Check the committed files: format, channel assignment, and oracle consistency.

    The channel check is the listening test we cannot do on CI: in 5 ms frames, a channel may only
    carry energy inside its own speaker's word intervals, and every word must be audible on it.
    """
    wav_path = out_dir / "audio" / f"{CONV_ID}.wav"
    info = sf.info(str(wav_path))
    assert info.samplerate == SAMPLE_RATE, info
    assert info.channels == 2, info
    assert info.subtype == "PCM_16", info
    audio, _ = sf.read(str(wav_path), dtype="float32")
    words = load_words(out_dir / "text" / f"{CONV_ID}.json")
    assert words == sorted(words, key=lambda w: (w.start, w.end)), "transcript not sorted by start"
    frame = 5 * SAMPLES_PER_MS
    n_frames = len(audio) // frame
    for spk, ch in CHANNEL.items():
        energy = np.sqrt(np.mean(audio[: n_frames * frame, ch].reshape(n_frames, frame) ** 2, axis=1))
        inside = np.zeros(n_frames, dtype=bool)
        for w in words:
            if w.speaker != spk:
                continue
            a, b = round(w.start * 1000) // 5, -(-round(w.end * 1000) // 5)
            inside[a:b] = True
            seg = audio[round(w.start * SAMPLE_RATE) : round(w.end * SAMPLE_RATE), ch]
            assert np.max(np.abs(seg)) > 0.1, f"{spk} word {w.word!r} at {w.start}s is silent on ch{ch}"
        stray = np.flatnonzero((energy > 1e-4) & ~inside)
        assert stray.size == 0, f"ch{ch} has energy outside {spk}'s words at {stray[:5] * 0.005}s"
    committed = (out_dir / "oracle_raw" / f"{CONV_ID}.json").read_text(encoding="utf-8")
    assert committed == oracle_json(build_oracle(words)), "oracle_raw/demo.json is stale: regenerate"
    n_turns = len(TURNS)
    print(
        f"ok: {wav_path.relative_to(ROOT)} {len(audio) / SAMPLE_RATE:.2f} s, {len(words)} words, "
        f"{n_turns} turns, channels verified; oracle_raw consistent"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only verify the committed files")
    ap.add_argument("--show-events", action="store_true", help="print the oracle grid events")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    if args.check:
        verify(args.out)
        return 0
    print(espeak_version())
    pcm, words = build_timeline()
    events = build_oracle(words, allow_missing=args.show_events)
    if args.show_events:
        for e in events:
            print(json.dumps({k: v for k, v in e.items() if k != "prediction"}, indent=1))
        return 0
    for sub in ("audio", "text", "oracle_raw"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    sf.write(str(args.out / "audio" / f"{CONV_ID}.wav"), pcm, SAMPLE_RATE, subtype="PCM_16")
    (args.out / "text" / f"{CONV_ID}.json").write_text(transcript_json(words))
    (args.out / "oracle_raw" / f"{CONV_ID}.json").write_text(oracle_json(events), encoding="utf-8")
    verify(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
