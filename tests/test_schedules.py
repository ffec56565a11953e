"""Delay schedules: a run replayed from its own schedule is the same run, under both policies; an
edited schedule changes what it covers and nothing else; bad files are one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest
from cli_helpers import invoke
from conftest import DEMO_SCENARIO

from kame_sim.config import load_scenario
from kame_sim.conversation import Word
from kame_sim.errors import InputError
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.plan import SimulatedLlm
from kame_sim.runner import run_scenario
from kame_sim.schedule import DelaySchedule, Fault, load_schedule, parse_schedule, schedule_from_trace
from kame_sim.stt.simulated import schedule_stt_events
from kame_sim.trace import WALL_COLUMNS, read_trace

POLICIES = ["poll", "multiplexer"]


def deterministic(path: Path) -> pa.Table:
    return read_trace(path).table.drop_columns(list(WALL_COLUMNS))


def entries(path: Path) -> list[dict]:
    return json.loads(path.read_text())["entries"]


class Counting:
    """A sampler returning 1/per, 2/per, 3/per, ... so a test sees which draw went where."""

    def __init__(self, per: int = 10) -> None:
        self.n = 0
        self.per = per

    def draw(self) -> float:
        self.n += 1
        return self.n / self.per


class Reply:
    def __init__(self, text: str) -> None:
        self.text = text

    def reply(self, request: LlmRequest) -> str:
        return self.text


# -- the hooks: a covered event consumes its draw, so nothing uncovered moves --------------------


def test_a_covered_stt_delay_replaces_its_draw_and_consumes_it():
    words = (Word("A", "i", 0.0, 0.3), Word("A", "want", 0.35, 0.6), Word("A", "yes", 1.6, 1.9))
    plain_p, plain_f = Counting(), Counting()
    plain = schedule_stt_events(words, 0.8, plain_p, plain_f)
    sched = DelaySchedule(stt_partial={(0, 1): 0.05}, stt_final={1: 0.5})
    p, f = Counting(), Counting()
    events = schedule_stt_events(words, 0.8, p, f, schedule=sched)
    assert (p.n, f.n) == (plain_p.n, plain_f.n) == (3, 2)
    # without the schedule, partial 1 of each utterance (0.2, 0.3) arrives after its final: dropped
    assert [(e.kind, e.utterance, e.delay) for e in plain] == [
        ("partial", 0, 0.1), ("final", 0, 0.1), ("final", 1, 0.2)
    ]  # fmt: skip
    # with it: a faster partial 1, a slower final 1; utterance 1's partial keeps its draw, 0.3
    assert [(e.kind, e.utterance, e.delay) for e in events] == [
        ("partial", 0, 0.1), ("partial", 0, 0.05), ("final", 0, 0.1), ("partial", 1, 0.3), ("final", 1, 0.5)
    ]  # fmt: skip


def test_a_covered_stream_consumes_its_draws_so_the_others_keep_theirs():
    def plans(schedule):
        llm = SimulatedLlm(Reply("a b c"), Counting(1), Counting(1), 1, schedule)
        out = [llm.plan(LlmRequest(0.0, "", "", sid)) for sid in (1, 2, 3)]
        return [([c.at for c in p.chunks], p.error, p.error_at) for p in out], llm

    plain, _ = plans(None)
    sched = DelaySchedule(ttft={2: 0.5}, chunk_gap={(2, 2): 0.25}, fault={3: Fault(4.0, "boom")})
    edited, llm = plans(sched)
    assert llm.ttft.n == 3 and llm.inter_chunk.n == 6  # the same draws as without the schedule
    assert edited[0] == plain[0] == ([1.0, 2.0, 4.0], None, None)
    assert plain[1] == ([2.0, 5.0, 9.0], None, None)
    assert edited[1] == ([0.5, 3.5, 3.75], None, None)  # TTFT and chunk 2's gap from the schedule
    assert edited[2] == (plain[2][0], "boom", 4.0)


# -- round trip on the demo, both policies --------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_a_run_replayed_from_its_own_schedule_is_the_same_trace(tmp_path: Path, policy: str):
    saved, extracted, again = tmp_path / "saved.json", tmp_path / "extracted.json", tmp_path / "again.json"
    kind = f"policy.kind={policy}"
    first = invoke(
        "run", DEMO_SCENARIO, "--set", kind, "--out", tmp_path / "a", "--quiet", "--save-schedule", saved
    )
    assert first.exit_code == 0, first.output
    assert invoke("schedule", tmp_path / "a", "--out", extracted).exit_code == 0
    assert saved.read_bytes() == extracted.read_bytes()  # saved from the run == extracted from its trace
    listed = entries(saved)
    kinds = {e["kind"] for e in listed}
    assert kinds == {"stt_partial", "stt_final", "ttft", "chunk_gap"}
    table = read_trace(tmp_path / "a").table.to_pylist()
    assert sum(r["event"] == "llm_first_chunk" for r in table) == sum(e["kind"] == "ttft" for e in listed)
    assert sum(r["event"] == "stt_final" for r in table) == sum(e["kind"] == "stt_final" for e in listed)

    replay = invoke(
        "run", DEMO_SCENARIO, "--set", kind, "--set", f"delays.schedule={saved}",
        "--out", tmp_path / "b", "--quiet", "--save-schedule", again,
    )  # fmt: skip
    assert replay.exit_code == 0, replay.output
    assert deterministic(tmp_path / "b").equals(deterministic(tmp_path / "a"))
    assert entries(again) == listed
    meta = read_trace(tmp_path / "b").metadata
    assert meta["kame_sim.schedule_sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert meta["kame_sim.schedule"] == str(saved)
    assert json.loads(meta["kame_sim.scenario"])["delays"] == {"schedule": str(saved)}
    assert "kame_sim.schedule_sha256" not in read_trace(tmp_path / "a").metadata
    assert "delays" not in json.loads(read_trace(tmp_path / "a").metadata["kame_sim.scenario"])


# -- a hand edit changes exactly what it covers ---------------------------------------------------


def _long_lived_stream(rows: list[dict]) -> tuple[int, float]:
    """A stream that spoke and was followed by no start for > 4 s: (id, time of its first chunk)."""
    starts = {r["stream_id"]: r["t_sim"] for r in rows if r["event"] == "llm_start"}
    first = {r["stream_id"]: r["t_sim"] for r in rows if r["event"] == "llm_first_chunk"}
    for sid in sorted(first):
        later = [t for s, t in starts.items() if s > sid]
        if later and min(later) - starts[sid] > 4.0:
            return sid, first[sid]
    raise AssertionError("the demo has no quiet stretch after a stream")


@pytest.mark.parametrize("policy", POLICIES)
def test_setting_one_streams_ttft_to_3_s_changes_that_stream_only(tmp_path: Path, policy: str):
    base = load_scenario(DEMO_SCENARIO, {"policy.kind": policy})
    original = run_scenario(base, tmp_path / "a")
    data = read_trace(original.run_dir)
    sid, first_at = _long_lived_stream(data.table.to_pylist())
    schedule = schedule_from_trace(data)
    assert schedule.ttft[sid] != 3.0
    schedule.ttft[sid] = 3.0
    edited = schedule.write(tmp_path / "edited.json")
    assert json.dumps({"kind": "ttft", "stream": sid, "seconds": 3.0}) in edited.read_text()

    scenario = load_scenario(DEMO_SCENARIO, {"policy.kind": policy, "delays.schedule": str(edited)})
    after = read_trace(run_scenario(scenario, tmp_path / "b").run_dir)
    rows = after.table.to_pylist()
    ttft = [r["delay_s"] for r in rows if r["event"] == "llm_first_chunk" and r["stream_id"] == sid]
    assert ttft == [3.0]
    start = next(r["t_sim"] for r in rows if r["event"] == "llm_start" and r["stream_id"] == sid)
    assert next(r["t_sim"] for r in rows if r["event"] == "llm_first_chunk" and r["stream_id"] == sid) == (
        pytest.approx(start + 3.0, abs=1e-9)
    )
    # Everything before the stream's first chunk (as it was) is as it was.
    keep = [r for r in data.table.drop_columns(list(WALL_COLUMNS)).to_pylist() if r["t_sim"] < first_at]
    assert after.table.drop_columns(list(WALL_COLUMNS)).to_pylist()[: len(keep)] == keep
    # Every other delay is as it was: only the entry that was edited differs.
    realised = schedule_from_trace(after)
    assert realised.ttft == schedule.ttft
    before = schedule_from_trace(data)
    assert realised.chunk_gap == before.chunk_gap
    assert (realised.stt_partial, realised.stt_final) == (before.stt_partial, before.stt_final)

    # ... and the edit had consequences: the oracle got the stream's text later.
    def fed(table_rows: list[dict]) -> list[tuple[int, int]]:
        return [(r["frame"], r["token_id"]) for r in table_rows if r["event"] == "oracle_token_fed"]

    assert fed(rows) != fed(data.table.to_pylist())

    # A schedule of that one entry is the same run: what it leaves out is drawn as without it.
    alone = tmp_path / "alone.json"
    alone.write_text(json.dumps([{"kind": "ttft", "stream": sid, "seconds": 3.0}]))
    scenario = load_scenario(DEMO_SCENARIO, {"policy.kind": policy, "delays.schedule": str(alone)})
    assert deterministic(run_scenario(scenario, tmp_path / "c").run_dir).equals(deterministic(tmp_path / "b"))


def test_a_scheduled_fault_fails_the_stream_and_is_extracted_again(tmp_path: Path):
    original = read_trace(run_scenario(load_scenario(DEMO_SCENARIO), tmp_path / "a").run_dir)
    sid, _ = _long_lived_stream(original.table.to_pylist())
    file = tmp_path / "fault.json"
    file.write_text(json.dumps([{"kind": "fault", "stream": sid, "seconds": 0.1, "detail": "error: 503"}]))
    scenario = load_scenario(DEMO_SCENARIO, {"delays.schedule": str(file)})
    after = read_trace(run_scenario(scenario, tmp_path / "b").run_dir)
    rows = after.table.to_pylist()
    start = next(r["t_sim"] for r in rows if r["event"] == "llm_start" and r["stream_id"] == sid)
    errors = [(r["t_sim"], r["detail"], r["word_count"]) for r in rows if r["event"] == "llm_error"]
    assert errors == [(pytest.approx(start + 0.1, abs=1e-9), "error: 503", 0)]  # TTFT was > 0.1 s
    assert not [r for r in rows if r["event"] == "llm_first_chunk" and r["stream_id"] == sid]
    assert schedule_from_trace(after).fault == {sid: Fault(0.1, "error: 503")}


# -- the file format ---------------------------------------------------------------------------


def test_hand_written_files_may_be_a_bare_list_and_carry_notes(tmp_path: Path):
    file = tmp_path / "s.json"
    file.write_text(
        '{"note": "stall stream 7", "entries": [\n'
        '  {"kind": "ttft", "stream": 7, "seconds": 2.5, "note": "a stall"},\n'
        '  {"kind": "stt_final", "utterance": 3, "seconds": 0.9},\n'
        '  {"kind": "chunk_gap", "stream": 7, "chunk": 1, "seconds": 1}\n]}'
    )
    schedule = load_schedule(file)
    assert (schedule.ttft, schedule.stt_final, schedule.chunk_gap) == ({7: 2.5}, {3: 0.9}, {(7, 1): 1.0})
    assert schedule.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    again = parse_schedule(schedule.to_json(), file)
    assert again.entries() == schedule.entries()
    assert parse_schedule("[]", file).entries() == []


BAD = [
    ("{not json", None, "not valid JSON"),
    ('[{"kind": "tfft", "stream": 1, "seconds": 1}]', "entries[0].kind", "unknown kind \"tfft\""),
    ('[{"kind": "ttft", "stream": 1, "seconds": 1}, {"kind": "ttft", "stream": 2, "seconds": -1}]',
     "entries[1].seconds", "must be >= 0"),
    ('[{"kind": "ttft", "stream": 1, "seconds": NaN}]', "entries[0].seconds", "must be a finite number"),
    ('[{"kind": "ttft", "stream": 1, "seconds": Infinity}]', "entries[0].seconds", "must be a finite number"),
    ('[{"kind": "ttft", "stream": 1, "seconds": 2e9}]', "entries[0].seconds", "<= 1e+09"),
    ('[{"kind": "ttft", "stream": 1, "seconds": "2.5"}]', "entries[0].seconds", "must be a number"),
    ('[{"kind": "ttft", "stream": 1.0, "seconds": 1}]', "entries[0].stream", "must be an integer"),
    ('[{"kind": "ttft", "stream": true, "seconds": 1}]', "entries[0].stream", "must be an integer"),
    ('[{"kind": "ttft", "stream": 0, "seconds": 1}]', "entries[0].stream", "must be >= 1"),
    ('[{"kind": "chunk_gap", "stream": 1, "seconds": 1}]', "entries[0]", "chunk_gap needs 'chunk'"),
    ('[{"kind": "ttft", "stream": 1, "secs": 1}]', "entries[0].secs", "unknown key for ttft"),
    ('[{"kind": "ttft", "stream": 1}]', "entries[0]", "ttft needs 'seconds'"),
    ('[{"kind": "stt_final", "utterance": 0, "seconds": 1}, {"kind": "stt_final", "utterance": 0,'
     ' "seconds": 2}]', "entries[1]", "repeats entries[0]"),
    ('[{"kind": "fault", "stream": 2, "seconds": 1, "detail": 5}]', "entries[0].detail", "non-empty string"),
    ('["ttft"]', "entries[0]", "must be an object"),
    ('{"entries": {}}', "entries", "must be a list"),
    ('{"kame_sim_schedule": 2, "entries": []}', "kame_sim_schedule", "unsupported version"),
    ('{"entrys": []}', "entrys", "unknown key"),
    ("3", None, "must be a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "field", "message"), BAD)
def test_a_bad_schedule_is_one_line_naming_file_and_entry_and_nothing_is_written(
    tmp_path: Path, text: str, field: str | None, message: str
):
    file = tmp_path / "bad.json"
    file.write_text(text)
    out = tmp_path / "run"
    result = invoke("run", DEMO_SCENARIO, "--set", f"delays.schedule={file}", "--out", out, "--quiet")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {file}: "), result.output
    if field is not None:
        assert lines[0].startswith(f"error: {file}: {field}: "), lines[0]
    assert message in lines[0]
    assert not out.exists()


def test_missing_file_wrong_back_end_and_bad_target_are_refused_before_anything_is_written(tmp_path: Path):
    out = tmp_path / "run"
    missing = invoke("run", DEMO_SCENARIO, "--set", "delays.schedule=nope.json", "--out", out, "--quiet")
    assert missing.exit_code == 2 and "nope.json: schedule file not found" in missing.output
    llm = tmp_path / "llm.json"
    llm.write_text('[{"kind": "ttft", "stream": 1, "seconds": 1}]')
    stt = tmp_path / "stt.json"
    stt.write_text('[{"kind": "stt_final", "utterance": 0, "seconds": 1}]')
    for file, key, value, why in (
        (llm, "llm.time_scale", 2.0, "llm.time_scale would scale"),
        (llm, "replay.oracle_from", "x", "replay.oracle_from replays the oracle"),
        (stt, "stt.kind", "whisper", "stt.kind = 'whisper' measures its own delays"),
    ):
        with pytest.raises(InputError) as caught:
            run_scenario(load_scenario(DEMO_SCENARIO, {"delays.schedule": str(file), key: value}), out)
        assert caught.value.field == "delays.schedule" and why in caught.value.message
    target = tmp_path / "no" / "s.json"
    nowhere = invoke("run", DEMO_SCENARIO, "--out", out, "--quiet", "--save-schedule", target)
    assert nowhere.exit_code == 2 and "--save-schedule: no such directory" in nowhere.output
    assert not out.exists()
    unknown = invoke("run", DEMO_SCENARIO, "--set", "delays.file=x", "--out", out, "--quiet")
    assert unknown.exit_code == 2 and "delays.file: unknown key" in unknown.output


def test_schedule_command_prints_without_out(tmp_path: Path):
    run_scenario(load_scenario(DEMO_SCENARIO, {"run.max_seconds": 8.0}), tmp_path / "a")
    result = invoke("schedule", tmp_path / "a")
    assert result.exit_code == 0, result.output
    printed = parse_schedule(result.output, Path("<stdout>"))
    assert printed.ttft and printed.stt_partial and printed.source["conversation_id"] == "demo"
