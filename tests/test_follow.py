"""Which front-end word followed which oracle (kame_sim/report/follow.py), on hand-built traces:
a word that follows the oracle, one that is the front-end's own guess, one that is both, and the
switch marks the timeline draws where the front-end corrected itself."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from kame_sim.report import extract_timeline, plot_timeline
from kame_sim.report.follow import FrontendToken, build_generations, follow, word_source
from kame_sim.trace.reader import TraceData, read_trace
from kame_sim.trace.schema import trace_schema

FRAME = 0.08
START = 1000


def _trace(
    tmp_path: Path,
    oracle: dict[int, list[tuple[int, str, list[int]]]],
    said: dict[int, tuple[int, str]],
    n_frames: int,
    errors: tuple[int, ...] = (),
) -> TraceData:
    """A trace by hand. ``oracle[frame]`` = the streams reset at that frame, each ``(stream id,
    chunk text, token ids)`` appended there and fed one per frame after START; ``said[frame]`` =
    (token id, piece) of the front-end."""
    rows: list[dict] = [{"event": "run_start", "t_sim": 0.0, "detail": "behavioural"}]
    fed: dict[int, tuple[int, int]] = {}  # frame -> (token id, oracle index)
    for frame, (sid, text, ids) in sorted((f, s) for f, streams in oracle.items() for s in streams):
        t = (frame + 1) * FRAME
        rows.append({"event": "llm_start", "t_sim": t - 0.5, "stream_id": sid, "detail": "final"})
        rows.append({"event": "llm_first_chunk", "t_sim": t - 0.1, "stream_id": sid, "delay_s": 0.4})
        rows.append({"event": "llm_chunk", "t_sim": t - 0.1, "stream_id": sid, "text": text})
        rows.append({"event": "oracle_reset_applied", "t_sim": t, "frame": frame, "stream_id": sid})
        rows.append(
            {
                "event": "oracle_append_applied",
                "t_sim": t,
                "frame": frame,
                "stream_id": sid,
                "text": text,
                "oracle_index": 1,
                "n_tokens": len(ids),
                "n_skipped": 0,
            }
        )
        end = "llm_error" if sid in errors else "llm_done"
        rows.append({"event": end, "t_sim": t, "stream_id": sid, "detail": "http 429: slow down"})
        fed[frame] = (START, 0)
        for i, tok in enumerate(ids):
            fed[frame + 1 + i] = (tok, i + 1)
    for k in range(n_frames):
        t = (k + 1) * FRAME
        tok, idx = fed.get(k, (3, None))
        rows.append({"event": "frame", "t_sim": t, "frame": k, "t_ref": t})
        rows.append(
            {"event": "oracle_token_fed", "t_sim": t, "frame": k, "token_id": tok, "oracle_index": idx}
        )
        out, piece = said.get(k, (3, None))
        rows.append({"event": "frontend_token", "t_sim": t, "frame": k, "token_id": out, "text": piece})
    rows.append({"event": "run_end", "t_sim": n_frames * FRAME, "detail": "ok"})
    rows.sort(key=lambda r: r["t_sim"])  # stable: each frame's rows keep their order
    rows = [{"seq": i, **r} for i, r in enumerate(rows)]
    meta = {
        "kame_sim.conversation_id": "hand",
        "kame_sim.seed": "0",
        "kame_sim.frontend": "behavioural",
        "kame_sim.frame_seconds": str(FRAME),
        "kame_sim.time_coupling": "virtual",
        "kame_sim.scenario": json.dumps({"run": {"name": "hand"}}),
    }
    schema = trace_schema(meta)
    path = tmp_path / "run" / "trace.arrows"
    path.parent.mkdir(parents=True)
    with pa.ipc.new_stream(str(path), schema) as writer:
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return read_trace(path.parent)


def test_words_are_coloured_by_the_oracle_they_followed(tmp_path: Path):
    # stream 1 is fed "Hi there friend" (101 102 103) from frame 10; the front-end says its own
    # " sure" (50), then " there" (102, fed at frame 12: it skips ahead to its position), then
    # " friend" with an id the oracle never had (90), then " friend" as the oracle has it (103)
    trace = _trace(
        tmp_path,
        oracle={10: [(1, "Hi there friend", [101, 102, 103])]},
        said={8: (50, " sure"), 13: (102, " there"), 16: (90, " pal"), 19: (103, " friend")},
        n_frames=24,
    )
    d = extract_timeline(trace)
    words = {w.text: w for w in d.frontend_words}
    assert [w.text for w in d.frontend_words] == ["sure", "there", "pal", "friend"]
    assert words["sure"].source == "guess" and words["sure"].stream_id is None  # before any oracle
    assert words["there"].source == "oracle" and words["there"].stream_id == 1
    assert words["there"].tokens[0].oracle_index == 2 and words["there"].tokens[0].fed_frame == 12
    assert words["pal"].source == "guess"
    assert words["friend"].source == "oracle" and words["friend"].tokens[0].oracle_index == 3
    # the switch marks: guess -> oracle #1 twice (at "there" and again at "friend")
    assert [(s.frame, s.kind, s.stream_id) for s in d.switches] == [
        (13, "guess→oracle", 1),
        (19, "guess→oracle", 1),
    ]
    assert [c.generation for c in d.oracle_chunks] == [0]
    assert plot_timeline(trace, tmp_path / "t.png").stat().st_size > 10_000


def test_a_token_fed_after_it_was_spoken_is_a_guess(tmp_path: Path):
    # stream 1 feeds 5, 9, 7 at frames 10, 11, 12: " the" (7) spoken at frame 11 is a guess (7 is
    # fed one frame later); a second " a" (5) at frame 13 cannot follow index 1 again, since the
    # front-end reads its oracle forwards
    trace = _trace(
        tmp_path,
        oracle={9: [(1, "a big the", [5, 9, 7])]},
        said={10: (5, " a"), 11: (7, " the"), 13: (5, " a")},
        n_frames=16,
    )
    d = extract_timeline(trace)
    got = [(w.text, w.source, w.stream_id) for w in d.frontend_words]
    assert got == [("a", "oracle", 1), ("the", "guess", None), ("a", "guess", None)]
    assert d.switches == []  # it went from the oracle to its guess: no mark


def test_following_a_newer_oracle_at_once_is_a_switch_to_it(tmp_path: Path):
    # stream 2 resets the oracle at frame 14; the front-end goes from stream 1's text straight to
    # stream 2's, in one burst: a switch from an older oracle to a newer one
    trace = _trace(
        tmp_path,
        oracle={9: [(1, "a the", [5, 7])], 14: [(2, "so", [8])]},
        said={10: (5, " a"), 16: (8, " so")},
        n_frames=20,
    )
    d = extract_timeline(trace)
    assert [(w.text, w.source, w.stream_id) for w in d.frontend_words] == [
        ("a", "oracle", 1),
        ("so", "oracle", 2),
    ]
    assert [(s.frame, s.kind, s.stream_id) for s in d.switches] == [(16, "oracle→newer", 2)]
    assert [g.stream_id for g in d.generations] == [1, 2]


def test_a_word_of_both_is_mixed_and_a_burst_boundary_is_no_switch(tmp_path: Path):
    # " me" (guess) + "ainly" (oracle continuation) are one word; after a silence of more than a
    # second (a new burst), following the oracle again is no switch
    trace = _trace(
        tmp_path,
        oracle={5: [(3, "Certainly", [20, 21, 22])]},
        said={9: (60, " me"), 10: (22, "ainly"), 30: (61, " ok")},
        n_frames=32,
    )
    d = extract_timeline(trace)
    mixed = d.frontend_words[0]
    assert mixed.text == "meainly" and mixed.source == "mixed" and mixed.stream_id == 3
    assert [t.follows for t in mixed.tokens] == [False, True]
    assert [s.frame for s in d.switches] == [10]
    assert d.frontend_words[1].source == "guess"


def test_an_errored_stream_is_written_on_its_oracle_line(tmp_path: Path):
    trace = _trace(
        tmp_path, oracle={5: [(4, "Sorry", [30])]}, said={8: (30, " Sorry")}, n_frames=12, errors=(4,)
    )
    d = extract_timeline(trace)
    assert d.streams[0].status == "error" and d.frontend_words[0].stream_id == 4
    assert plot_timeline(trace, tmp_path / "e.png").stat().st_size > 10_000


def _frames(spec: list[tuple[int, str, int | None, int | None, int | None]]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(frame=f, t=(f + 1) * FRAME, kind=k, oracle_index=i, token_id=tok, chunk=c)
        for f, k, i, tok, c in spec
    ]


def test_follow_tries_the_previous_oracle_only_just_after_a_reset():
    frames = _frames(
        [
            (0, "start", 0, START, None),
            (1, "text", 1, 11, 0),
            (2, "text", 2, 12, 0),
            (3, "text", 3, 13, 0),
            (10, "start", 0, START, None),
            (11, "text", 1, 21, 1),
        ]
    )
    gens = build_generations(frames, [1, 2], {0: 1, 10: 2}, [0, 10])
    assert [(g.stream_id, [t.token_id for t in g.tokens], g.chunks) for g in gens] == [
        (1, [11, 12, 13], [0]),
        (2, [21], [1]),
    ]

    def tok(frame: int, token_id: int, burst: int = 0) -> FrontendToken:
        return FrontendToken(frame, (frame + 1) * FRAME, token_id, " w", burst)

    # frame 12 is 0.16 s after the reset at frame 10: the old oracle's 12 still counts;
    # frame 20 is 0.8 s after: its 13 does not (the front-end has had time to see the new one)
    tokens = [tok(4, 11), tok(12, 12), tok(20, 13), tok(21, 21)]
    switches = follow(tokens, gens, lookback=0.5)
    assert [t.stream_id for t in tokens] == [1, 1, None, 2]
    assert [(s.kind, s.stream_id) for s in switches] == [("guess→oracle", 2)]
    assert word_source(tokens[:2]) == ("oracle", 0)
    assert word_source(tokens[1:3]) == ("mixed", 0)
    assert word_source(tokens[2:3]) == ("guess", None)
    assert word_source(tokens[1:2] + tokens[3:4]) == ("mixed", 1)  # two generations: mixed


@pytest.mark.parametrize("lookback", [0.0, 1.0])
def test_follow_lookback_bounds(lookback: float):
    frames = _frames([(0, "start", 0, START, None), (1, "text", 1, 11, 0), (5, "start", 0, START, None)])
    gens = build_generations(frames, [1], {0: 1, 5: 2})
    token = FrontendToken(8, 9 * FRAME, 11, " w")
    follow([token], gens, lookback=lookback)
    assert token.follows == (lookback >= 0.24)
