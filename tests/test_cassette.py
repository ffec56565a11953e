"""Cassettes: plans survive the file exactly, replays are keyed by request, record -> replay is identical."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest
from test_openai_llm import KEY_ENV, REQUEST, fast_config, live_scenario

from kame_sim.errors import InputError
from kame_sim.llm.cassette import (
    SCHEMA,
    CassetteLlm,
    canonical_request,
    plan_batch,
    read_cassette,
    request_key,
)
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.openai_backend import kame_messages
from kame_sim.llm.plan import LlmChunk, LlmPlan
from kame_sim.llm.serve import serving
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace

PLANS = [
    LlmPlan([LlmChunk(0.1234567890123, "héllo"), LlmChunk(0.2, " wörld ")], source="openai"),
    LlmPlan([], error="connect error: Connection refused", error_at=0.0042, source="openai"),
    LlmPlan([LlmChunk(0.3, "cut")], error="stream cut: peer closed", error_at=0.31, source="openai"),
    LlmPlan([], source="openai"),  # an empty reply
]


class Scripted:
    """Returns the given plans in order and counts the calls."""

    def __init__(self, plans: list[LlmPlan]) -> None:
        self.plans = plans
        self.calls = 0

    def plan(self, request: LlmRequest) -> LlmPlan:
        self.calls += 1
        return self.plans[(self.calls - 1) % len(self.plans)]


def request(text: str, sid: int = 1) -> LlmRequest:
    return LlmRequest(float(sid), f"user: {text} ", text, sid)


def test_the_key_is_the_sha256_of_model_and_messages():
    messages = kame_messages(REQUEST)
    expected = hashlib.sha256(
        json.dumps(
            {"messages": messages, "model": "gpt-4.1"},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
    ).hexdigest()
    assert request_key("gpt-4.1", messages) == expected
    assert request_key("gpt-4o", messages) != expected
    assert json.loads(canonical_request("gpt-4.1", messages))["messages"] == messages


def test_plans_round_trip_bit_for_bit(tmp_path: Path):
    path = tmp_path / "c.arrows"
    recorder = CassetteLlm(Scripted(PLANS), path, "record")
    for i in range(len(PLANS)):
        assert recorder.plan(request(f"q{i}")) == PLANS[i]
    table, _ = read_cassette(path)
    assert table.schema.equals(SCHEMA) and table.schema.metadata == SCHEMA.metadata
    assert table.num_rows == 2 + 1 + 1 + 1
    assert table.column("request")[0].as_py() == canonical_request("gpt-4.1", kame_messages(request("q0")))
    assert table.column("request")[1].as_py() is None
    player = CassetteLlm(None, path, "replay")
    for i, original in enumerate(PLANS):
        replayed = player.plan(request(f"q{i}"))
        assert (replayed.chunks, replayed.error, replayed.error_at) == (
            original.chunks,
            original.error,
            original.error_at,
        )
        assert replayed.source == "cassette"
    assert player.hits == 4 and player.misses == 0


def test_repeated_requests_replay_their_recordings_in_order(tmp_path: Path):
    path = tmp_path / "c.arrows"
    first, second = LlmPlan([LlmChunk(0.1, "a")]), LlmPlan([LlmChunk(0.2, "b")])
    recorder = CassetteLlm(Scripted([first, second]), path, "record")
    recorder.plan(request("same"))
    recorder.plan(request("same"))
    player = CassetteLlm(None, path, "replay")
    assert [player.plan(request("same")).chunks[0].text for _ in range(3)] == ["a", "b", "b"]


def test_misses_error_or_go_live_and_auto_records_them(tmp_path: Path):
    path = tmp_path / "c.arrows"
    CassetteLlm(Scripted([PLANS[0]]), path, "record").plan(request("known"))
    size = path.stat().st_size

    missing = CassetteLlm(None, path, "replay", "error").plan(request("unknown"))
    key = request_key("gpt-4.1", kame_messages(request("unknown")))
    assert missing.chunks == [] and missing.error == f"cassette miss: {key[:16]}" and missing.error_at == 0.0

    live = Scripted([PLANS[2]])
    assert CassetteLlm(live, path, "replay", "live").plan(request("unknown")) == PLANS[2]
    assert live.calls == 1 and path.stat().st_size == size  # replay never records

    auto_inner = Scripted([PLANS[2]])
    auto = CassetteLlm(auto_inner, path, "auto")
    auto.plan(request("known"))
    auto.plan(request("unknown"))
    assert auto_inner.calls == 1 and auto.hits == 1 and auto.misses == 1
    assert path.stat().st_size > size
    again = CassetteLlm(Scripted([PLANS[3]]), path, "auto")
    assert again.plan(request("unknown")).chunks == PLANS[2].chunks and again.hits == 1


def test_record_starts_afresh(tmp_path: Path):
    path = tmp_path / "c.arrows"
    CassetteLlm(Scripted(PLANS), path, "record").plan(request("old"))
    CassetteLlm(Scripted(PLANS), path, "record").plan(request("new"))
    assert CassetteLlm(None, path, "replay").plan(request("old")).error.startswith("cassette miss")


def test_a_torn_tail_is_cut_and_appends_stay_readable(tmp_path: Path):
    path = tmp_path / "c.arrows"
    CassetteLlm(Scripted(PLANS), path, "record").plan(request("a"))
    whole = path.read_bytes()
    extra = plan_batch(1, "k" * 64, "{}", PLANS[0]).serialize().to_pybytes()
    path.write_bytes(whole + extra[: len(extra) // 2])  # a crash mid-write
    auto = CassetteLlm(Scripted([PLANS[2]]), path, "auto")
    auto.plan(request("b"))
    reader = pa.ipc.open_stream(str(path))
    assert reader.read_all().num_rows == 2 + 1
    player = CassetteLlm(None, path, "replay")
    assert player.plan(request("a")).chunks == PLANS[0].chunks
    assert player.plan(request("b")).error == PLANS[2].error


def test_a_stream_closed_by_another_writer_can_still_be_appended(tmp_path: Path):
    path = tmp_path / "c.arrows"
    key = request_key("gpt-4.1", kame_messages(request("a")))
    with pa.ipc.new_stream(str(path), SCHEMA) as writer:  # ends with an end-of-stream marker
        writer.write_batch(plan_batch(0, key, "{}", PLANS[0]))
    CassetteLlm(Scripted([PLANS[1]]), path, "auto").plan(request("b"))
    player = CassetteLlm(None, path, "replay")
    assert player.plan(request("a")).chunks == PLANS[0].chunks
    assert player.plan(request("b")).error == PLANS[1].error


def test_bad_cassettes_are_input_errors(tmp_path: Path):
    with pytest.raises(InputError, match="cassette not found"):
        CassetteLlm(None, tmp_path / "none.arrows", "replay")
    other = tmp_path / "other.arrows"
    with pa.ipc.new_stream(str(other), pa.schema([("x", pa.int64())])) as writer:
        writer.write_batch(pa.record_batch([pa.array([1])], names=["x"]))
    with pytest.raises(InputError, match="not a kame-sim cassette"):
        CassetteLlm(None, other, "replay")
    junk = tmp_path / "junk.arrows"
    junk.write_bytes(b"hello, not arrow")
    with pytest.raises(InputError, match=r"llm\.cassette"):
        CassetteLlm(None, junk, "replay")


# -- whole runs -------------------------------------------------------------------------------------


def simulated_columns(path: Path) -> pa.Table:
    """The trace without its measured wall-time columns and its metadata."""
    table = read_trace(path).table
    return table.drop_columns(["wall_s", "step_wall_s"]).replace_schema_metadata(None)


def test_record_then_replay_with_the_server_gone_is_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(KEY_ENV, "sk-cassette-test")
    cassette = tmp_path / "demo.cassette.arrows"
    config = fast_config(content="echo", fault_schedule=("ok", "ok", "drop"))
    with serving(config) as server:
        recorded = run_scenario(
            live_scenario(
                server.base_url, 8.0, **{"llm.cassette": str(cassette), "llm.cassette_mode": "record"}
            ),
            run_dir=tmp_path / "record",
        )
        url = server.base_url
    monkeypatch.delenv(KEY_ENV)  # a pure replay needs neither the key nor the server
    replayed = run_scenario(
        live_scenario(url, 8.0, **{"llm.cassette": str(cassette), "llm.cassette_mode": "replay"}),
        run_dir=tmp_path / "replay",
    )
    a, b = simulated_columns(recorded.trace_path), simulated_columns(replayed.trace_path)
    assert a.num_rows > 100
    assert a.equals(b)
    events = a.column("event").to_pylist()
    assert "llm_error" in events and events.count("llm_chunk") > 5  # the drop was recorded too


def test_replay_misses_in_a_longer_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, "sk-cassette-test")
    cassette = tmp_path / "short.arrows"
    with serving(fast_config(content="echo")) as server:
        run_scenario(
            live_scenario(
                server.base_url, 3.0, **{"llm.cassette": str(cassette), "llm.cassette_mode": "auto"}
            ),
            run_dir=tmp_path / "short",
        )
        recorded_requests = server.stats.requests
        size = cassette.stat().st_size
        replay = {"llm.cassette": str(cassette), "llm.cassette_mode": "replay"}
        missed = run_scenario(live_scenario(server.base_url, 8.0, **replay), run_dir=tmp_path / "miss")
        assert server.stats.requests == recorded_requests  # on_miss = "error" never asks the server
        live = run_scenario(
            live_scenario(server.base_url, 8.0, **replay, **{"llm.on_miss": "live"}),
            run_dir=tmp_path / "live",
        )
        assert server.stats.requests > recorded_requests
    assert cassette.stat().st_size == size
    miss_rows = read_trace(missed.trace_path).table.to_pylist()
    misses = [r for r in miss_rows if r["event"] == "llm_error"]
    assert misses and all(r["detail"].startswith("cassette miss: ") for r in misses)
    assert all(r["t_sim"] > 3.0 - 1e-9 for r in misses)
    live_rows = read_trace(live.trace_path).table.to_pylist()
    assert not [r for r in live_rows if r["event"] == "llm_error"]
    late_chunks = [r for r in live_rows if r["event"] == "llm_chunk" and r["t_sim"] > 3.5]
    assert late_chunks


def test_a_cassette_around_the_simulated_back_end_replays_identically(tmp_path: Path):
    from conftest import DEMO_SCENARIO

    from kame_sim.config import load_scenario

    cassette = str(tmp_path / "sim.arrows")
    base = {"run.max_seconds": 12.0, "llm.cassette": cassette}
    plain = run_scenario(load_scenario(DEMO_SCENARIO, {"run.max_seconds": 12.0}), run_dir=tmp_path / "plain")
    first = run_scenario(load_scenario(DEMO_SCENARIO, base), run_dir=tmp_path / "first")
    again = run_scenario(
        load_scenario(DEMO_SCENARIO, {**base, "llm.cassette_mode": "replay"}), run_dir=tmp_path / "again"
    )
    a = simulated_columns(plain.trace_path)
    assert a.equals(simulated_columns(first.trace_path))
    assert a.equals(simulated_columns(again.trace_path))


# -- overlapping and cut streams (the multiplexer), version 1 files, the warm-up ---------------------


class Handed:
    """A live-like stream with fixed chunks; closing it before its end cuts it at ``cut``."""

    def __init__(self, chunks: list[LlmChunk], cut: float = 0.15) -> None:
        self._chunks, self._cut = chunks, cut
        self.error: str | None = None
        self.error_at: float | None = None
        self.cut_at: float | None = None
        self.ended = False

    def chunks(self):
        yield from self._chunks
        self.ended = True

    def close(self) -> None:
        if not self.ended:
            self.cut_at = self._cut

    def received(self) -> LlmPlan:
        arrived = [c for c in self._chunks if self.cut_at is None or c.at <= self.cut_at]
        return LlmPlan(arrived, self.error, self.error_at, "openai", self.cut_at)


class Streaming:
    """A streaming back-end handing out the given streams in order."""

    def __init__(self, streams: list[Handed]) -> None:
        self.streams = streams

    def plan(self, request: LlmRequest) -> LlmPlan:
        raise AssertionError("opened, not planned")

    def open(self, request: LlmRequest) -> Handed:
        return self.streams.pop(0)


def test_overlapping_recordings_of_one_request_replay_in_start_order(tmp_path: Path):
    path = tmp_path / "c.arrows"
    first = Handed([LlmChunk(0.1, "first")])
    second = Handed([LlmChunk(0.1, "second")])
    recorder = CassetteLlm(Streaming([first, second]), path, "record")
    a, b = recorder.open(request("same")), recorder.open(request("same"))
    assert [c.text for c in b.chunks()] == ["second"]  # the later stream ends (is recorded) first
    assert [c.text for c in a.chunks()] == ["first"]
    table, _ = read_cassette(path)
    assert table.column("text").to_pylist() == ["second", "first"]  # file order: the order they ended
    assert table.column("plan_index").to_pylist() == [1, 0]  # reserved at the start
    player = CassetteLlm(None, path, "replay")
    assert [player.plan(request("same")).chunks[0].text for _ in range(2)] == ["first", "second"]


def test_a_cancelled_stream_is_recorded_cut_and_replays_without_an_end(tmp_path: Path):
    path = tmp_path / "c.arrows"
    live = Handed([LlmChunk(0.1, "so"), LlmChunk(0.2, " far")], cut=0.15)
    recorder = CassetteLlm(Streaming([live]), path, "record")
    stream = recorder.open(request("q"))
    assert next(stream.chunks()).text == "so"
    stream.close()
    stream.close()  # recorded once
    table, _ = read_cassette(path)
    assert table.num_rows == 1 and table.column("cut_at").to_pylist() == [0.15]
    replayed = CassetteLlm(None, path, "replay").open(request("q"))
    assert [c.text for c in replayed.chunks()] == ["so"]
    assert replayed.error is None and replayed.cut_at == 0.15  # no llm_done, no invented fault


def test_a_version_1_cassette_replays_and_is_upgraded_before_an_append(tmp_path: Path):
    from kame_sim.llm.cassette import SCHEMA_V1

    path = tmp_path / "v1.arrows"
    key = request_key("gpt-4.1", kame_messages(request("old")))
    batch = plan_batch(0, key, "{}", PLANS[0])
    v1 = pa.RecordBatch.from_arrays(batch.columns[:-1], schema=SCHEMA_V1)
    with pa.ipc.new_stream(str(path), SCHEMA_V1) as writer:
        writer.write_batch(v1)
    assert CassetteLlm(None, path, "replay").plan(request("old")).chunks == PLANS[0].chunks
    CassetteLlm(Scripted([PLANS[2]]), path, "auto").plan(request("new"))
    table, _ = read_cassette(path)
    assert table.schema.metadata == SCHEMA.metadata and table.num_rows == 3
    player = CassetteLlm(None, path, "replay")
    assert player.plan(request("old")).chunks == PLANS[0].chunks
    assert player.plan(request("new")).error == PLANS[2].error


def test_the_warm_up_is_recorded_and_replayed(tmp_path: Path):
    from kame_sim.llm.plan import NOTHING_SENT

    class Warm(Scripted):
        def warmup_plan(self) -> LlmPlan:
            return LlmPlan([LlmChunk(0.25, "OK")], source="openai")

        def warmup(self) -> str:
            return "not used: the cassette records the plan"

    path = tmp_path / "c.arrows"
    assert CassetteLlm(Warm([]), path, "record").warmup() == "ok in 0.250 s"
    assert CassetteLlm(None, path, "replay").warmup() == "ok in 0.250 s"
    simulated = tmp_path / "sim.arrows"
    assert CassetteLlm(Scripted([]), simulated, "record").warmup() == NOTHING_SENT
    assert CassetteLlm(None, simulated, "replay").warmup() == NOTHING_SENT
    other = tmp_path / "other.arrows"
    CassetteLlm(Scripted(PLANS), other, "record").plan(request("a"))
    assert CassetteLlm(None, other, "replay").warmup().startswith("cassette miss: ")
