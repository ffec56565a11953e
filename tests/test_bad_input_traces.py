"""Bad traces, results tables, check specs and CLI values: one line naming the file and the field,
exit code 2, before anything runs or is written (issue 9, part 3)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cli_helpers import invoke, one_line_error
from conftest import DEMO_SCENARIO

from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.llm import serve as serve_module
from kame_sim.llm.serve import ServeLlmConfig, serving
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace
from kame_sim.trace.schema import SCHEMA_VERSION, TRACE_FILENAME, trace_schema
from kame_sim.trace.validate import check_columns, check_rows


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """A real demo run's trace table (with its metadata): the thing each bad trace is made from."""
    run = run_scenario(load_scenario(DEMO_SCENARIO), tmp_path_factory.mktemp("demo") / "run")
    return read_trace(run.run_dir).table


def write_trace(folder: Path, table: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with pa.ipc.new_stream(str(folder / TRACE_FILENAME), table.schema) as writer:
        writer.write_table(table)
    return folder


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, values).replace_schema_metadata(table.schema.metadata)


def _with_meta(table: pa.Table, key: str, value: str) -> pa.Table:
    meta = dict(table.schema.metadata)
    meta[key.encode()] = value.encode()
    return table.replace_schema_metadata(meta)


# Each entry: how to break a good trace, and the field the error must name.
BAD_TRACES: dict[str, tuple[Callable[[pa.Table], pa.Table], str]] = {
    "missing column": (
        lambda t: t.drop_columns(["t_sim"]).replace_schema_metadata(t.schema.metadata),
        "t_sim",
    ),
    "unknown column": (
        lambda t: t.append_column("bogus", pa.array([1] * len(t))).replace_schema_metadata(t.schema.metadata),
        "bogus",
    ),
    "event as numbers": (lambda t: _set_column(t, "event", pa.array(range(len(t)), pa.int32())), "event"),
    "t_sim as text": (lambda t: _set_column(t, "t_sim", pc.cast(t["t_sim"], pa.string())), "t_sim"),
    "frame widened": (lambda t: _set_column(t, "frame", pc.cast(t["frame"], pa.int64())), "frame"),
    "a row without an event": (
        lambda t: _set_column(t, "event", pa.array([None, *t["event"].to_pylist()[1:]], pa.string())),
        "event",
    ),
    "scenario not JSON": (lambda t: _with_meta(t, "kame_sim.scenario", "{not json"), "kame_sim.scenario"),
    "scenario not an object": (lambda t: _with_meta(t, "kame_sim.scenario", "[1, 2]"), "kame_sim.scenario"),
    "frame length not a number": (
        lambda t: _with_meta(t, "kame_sim.frame_seconds", "fast"),
        "kame_sim.frame_seconds",
    ),
    "frame length zero": (lambda t: _with_meta(t, "kame_sim.frame_seconds", "0"), "kame_sim.frame_seconds"),
}


@pytest.mark.parametrize("case", list(BAD_TRACES))
def test_a_trace_with_the_right_version_but_wrong_columns_is_one_line(
    case: str, good_trace: pa.Table, tmp_path: Path
):
    break_it, field = BAD_TRACES[case]
    run = write_trace(tmp_path / "run", break_it(good_trace))
    for command in (("trace", "show", run), ("report", run)):
        line = one_line_error(invoke(*command))
        assert f"{TRACE_FILENAME}: {field}:" in line, line
    assert sorted(p.name for p in run.iterdir()) == [TRACE_FILENAME], "report wrote something"


def test_an_older_schema_version_may_lack_columns_but_not_mistype_them(good_trace: pa.Table, tmp_path: Path):
    """The check follows the schema's fields: a trace of an older readable version (whose columns
    are a subset of today's; the reader fills the rest with nulls) passes with a column missing,
    the current version does not; an unknown or mistyped column fails either way."""
    file = tmp_path / TRACE_FILENAME
    older = "0"  # any version other than the current one that the reader has let through
    lacking = trace_schema().remove(trace_schema().get_field_index("queue_len"))
    check_columns(file, lacking, older)
    with pytest.raises(InputError) as info:
        check_columns(file, lacking, SCHEMA_VERSION)
    assert info.value.field == "queue_len" and "missing" in info.value.message
    mistyped = lacking.set(lacking.get_field_index("frame"), pa.field("frame", pa.float64()))
    with pytest.raises(InputError, match="column type is double") as info:
        check_columns(file, mistyped, older)
    assert info.value.field == "frame"
    with pytest.raises(InputError, match="not a column") as info:
        check_columns(file, lacking.append(pa.field("tick", pa.int64())), older)
    assert info.value.field == "tick"
    doubled = trace_schema().append(pa.field("seq", pa.int64()))
    with pytest.raises(InputError, match="more than once"):
        check_columns(file, doubled, SCHEMA_VERSION)
    # Rows of an old trace without the time column (filled with nulls) are refused on read.
    with pytest.raises(InputError) as info:
        i = good_trace.schema.get_field_index("t_sim")
        check_rows(file, good_trace.set_column(i, "t_sim", pa.nulls(len(good_trace), pa.float64())))
    assert info.value.field == "t_sim"
    # A version nobody wrote is refused by name.
    unknown = write_trace(tmp_path / "v9", _with_meta(good_trace, "kame_sim.schema_version", "99"))
    with pytest.raises(InputError, match="unsupported trace schema '99'"):
        read_trace(unknown)


# --- results tables ------------------------------------------------------------------------------


def _results(n: int = 3, **overrides: pa.Array) -> pa.Table:
    columns = {
        "run_id": pa.array([f"r{i}" for i in range(n)]),
        "status": pa.array(["ok"] * n),
        "error": pa.array([None] * n, pa.string()),
        "conversation_id": pa.array(["demo"] * n),
        "seed": pa.array(range(n), pa.int64()),
        "llm.ttft.median": pa.array([0.25 * (i + 1) for i in range(n)]),
        "onset_median_s": pa.array([0.1 * i for i in range(n)]),
    }
    columns.update(overrides)
    return pa.table(columns)


BAD_RESULTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "not parquet": (lambda p: p.write_bytes(b"PAR1 garbage, not a table"), "results.parquet", ""),
    "empty file": (lambda p: p.write_bytes(b""), "results.parquet", ""),
    "no status": (
        lambda p: pq.write_table(_results().drop_columns(["status"]), p),
        "results.parquet",
        "status",
    ),
    "seed as text": (
        lambda p: pq.write_table(_results(seed=pa.array(["a", "b", "c"])), p),
        "results.parquet",
        "seed",
    ),
    "metric as text": (
        lambda p: pq.write_table(_results(onset_median_s=pa.array(["x", "y", "z"])), p),
        "results.parquet",
        "onset_median_s",
    ),
    "resolved sweep not JSON": (
        lambda p: (pq.write_table(_results(), p), (p.parent / "sweep.resolved.json").write_text("{oops")),
        "sweep.resolved.json",
        "",
    ),
    "parameters not names": (
        lambda p: (
            pq.write_table(_results(), p),
            (p.parent / "sweep.resolved.json").write_text('{"parameters": [1, 2]}'),
        ),
        "sweep.resolved.json",
        "parameters",
    ),
}


@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_report_on_a_broken_results_table_is_one_line_and_writes_nothing(case: str, tmp_path: Path):
    make, file, field = BAD_RESULTS[case]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    make(sweep / "results.parquet")
    before = sorted(p.name for p in sweep.iterdir())
    line = one_line_error(invoke("report", sweep))
    assert f"{file}:" in line and (not field or f"{file}: {field}:" in line), line
    assert sorted(p.name for p in sweep.iterdir()) == before, "report created something"


def test_a_parameter_name_cannot_put_a_picture_outside_the_report(tmp_path: Path):
    sweep = tmp_path / "a" / "b" / "sweep"
    sweep.mkdir(parents=True)
    hostile = "x/../../../../escaped"
    pq.write_table(
        _results(**{hostile: pa.array([0.25, 0.5, 1.0])}).drop_columns(["llm.ttft.median"]),
        sweep / "results.parquet",
    )
    (sweep / "sweep.resolved.json").write_text(json.dumps({"parameters": [hostile]}))
    result = invoke("report", sweep)
    assert result.exit_code == 0, result.output
    outside = [p for p in tmp_path.rglob("*.png") if sweep / "report" not in p.parents]
    assert outside == [], outside
    assert len(list((sweep / "report").glob("curves-*.png"))) == 1


# --- check specs ----------------------------------------------------------------------------------


def write_check(tmp_path: Path, asserts: str) -> Path:
    path = tmp_path / "check.toml"
    path.write_text(f'name = "gate"\nbase = "{DEMO_SCENARIO}"\n{asserts}', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("asserts", "field", "words"),
    [
        (
            '[[assert]]\nmetric = "skipped_tokn_rate"\nvalue = 0.05\n',
            "assert[0].metric",
            "skipped_token_rate",
        ),
        (
            '[[assert]]\nmetric = "n_turns"\nvalue = 1\n[[assert]]\nmetric = "nope"\nvalue = 1\n',
            "assert[1].metric",
            "unknown metric",
        ),
        ('[[assert]]\nmetric = "skipped_token_rate"\nvalue = nan\n', "assert[0].value", "finite"),
        ('[[assert]]\nmetric = "skipped_token_rate"\nvalue = inf\n', "assert[0].value", "finite"),
    ],
)
def test_check_refuses_bad_assertions_before_running(tmp_path: Path, asserts: str, field: str, words: str):
    out = tmp_path / "out"
    line = one_line_error(invoke("check", write_check(tmp_path, asserts), "--out", out, "--workers", 1))
    assert f"check.toml: {field}:" in line and words in line, line
    assert not out.exists(), "the sweep ran before the spec was checked"


@pytest.mark.parametrize("option", ["--markdown", "--junit"])
def test_check_refuses_output_files_it_cannot_or_must_not_write_before_running(tmp_path: Path, option: str):
    check = write_check(tmp_path, '[[assert]]\nmetric = "n_turns"\nop = ">="\nvalue = 0\n')
    out = tmp_path / "out"
    folder = tmp_path / "a-folder"
    folder.mkdir()
    line = one_line_error(invoke("check", check, "--out", out, "--workers", 1, option, folder))
    assert f"a-folder: {option}: is a folder" in line
    under_a_file = tmp_path / "notes.txt" / "summary"
    (tmp_path / "notes.txt").write_text("mine")
    line = one_line_error(invoke("check", check, "--out", out, "--workers", 1, option, under_a_file))
    assert "is a file, not a folder" in line
    foreign = tmp_path / "README.md"
    foreign.write_text("# my notes\n")
    line = one_line_error(invoke("check", check, "--out", out, "--workers", 1, option, foreign))
    assert "was not written by kame-sim" in line and foreign.read_text() == "# my notes\n"
    assert not out.exists()

    mine = tmp_path / "result"
    assert invoke("check", check, "--out", out, "--workers", 1, option, mine).exit_code == 0
    mine.write_text(mine.read_text().replace("gate", "old gate"))
    again = invoke("check", check, "--out", out, "--workers", 1, option, mine)
    assert again.exit_code == 0, again.output  # a file kame-sim check wrote is replaced
    assert "kame-sim check" in mine.read_text() and "old gate" not in mine.read_text()


# --- CLI option values ----------------------------------------------------------------------------


def test_trace_show_refuses_a_negative_row_count(good_trace: pa.Table, tmp_path: Path):
    run = write_trace(tmp_path / "run", good_trace)
    line = one_line_error(invoke("trace", "show", run, "--events", -5))
    assert "--events" in line and "-5" in line
    assert invoke("trace", "show", run, "--events", 0).exit_code == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "-1"], "--port"),
        (["--port", "65536"], "--port"),
        (["--stall-seconds", "inf"], "--stall-seconds"),
    ],
)
def test_serve_llm_refuses_bad_options_in_one_line(
    args: list[str], words: str, monkeypatch: pytest.MonkeyPatch
):
    async def must_not_serve(*a: object, **k: object) -> None:
        raise AssertionError("serve-llm started with a bad option")

    monkeypatch.setattr(serve_module, "serve", must_not_serve)  # a regression fails, never hangs
    line = one_line_error(invoke("serve-llm", *args))
    assert words in line, line


@pytest.mark.parametrize(
    ("args", "words"), [(["--port", "eighty"], "'--port'"), (["--no-such-option"], "--no-such-option")]
)
def test_serve_llm_option_parse_errors_exit_2_naming_the_option(args: list[str], words: str):
    """What click itself rejects (not a number, an unknown option) is its usage box: exit 2, the
    option named, nothing served (one-line formatting of click's own errors is not done yet)."""
    result = invoke("serve-llm", *args)
    assert result.exit_code == 2 and words in result.output, result.output


def test_serve_llm_on_a_port_it_cannot_listen_on_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(invoke("serve-llm", "--port", port))
    assert f"127.0.0.1:{port}" in line and "--port" in line


# --- serve-llm request bodies ---------------------------------------------------------------------

GOOD_MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "user: hi there"}]


def _body(**fields: object) -> bytes:
    body: dict[str, object] = {"model": "gpt-4.1", "messages": GOOD_MESSAGES, "stream": True}
    body.update(fields)
    return json.dumps(body).encode()


BAD_BODIES: dict[str, tuple[bytes, str | None]] = {
    "stream_options text": (_body(stream_options="x"), "stream_options"),
    "stream_options.include_usage text": (_body(stream_options={"include_usage": "yes"}), "stream_options"),
    "stream_options without stream": (_body(stream=False, stream_options={"include_usage": True}), None),
    "stream text": (_body(stream="yes"), "stream"),
    "model number": (_body(model=5), "model"),
    "messages object": (_body(messages={"role": "user"}), "messages"),
    "messages empty": (_body(messages=[]), "messages"),
    "message text": (_body(messages=["hello"]), "messages.0"),
    "role unknown": (_body(messages=[{"role": "robot", "content": "x"}]), "messages.0.role"),
    "content number": (_body(messages=[{"role": "user", "content": 7}]), "messages.0.content"),
    "content part without type": (
        _body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages.0.content",
    ),
    "max_tokens negative": (_body(max_tokens=-1), "max_tokens"),
    "max_tokens text": (_body(max_tokens="10"), "max_tokens"),
    "max_tokens true": (_body(max_tokens=True), "max_tokens"),
    "temperature too hot": (_body(temperature=9), "temperature"),
    "temperature NaN": (_body().replace(b'"stream": true', b'"stream": true, "temperature": NaN'), None),
    "n zero": (_body(n=0), "n"),
    "stop number": (_body(stop=3), "stop"),
    "body a list": (b"[1, 2]", None),
    "body not JSON": (b"{nope", None),
    "body not UTF-8": (b'{"model": "\xff"}', None),
}


def _post(base_url: str, raw: bytes) -> tuple[int, bytes]:
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(
            "POST", f"{url.path}/chat/completions", body=raw, headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_serve_llm_answers_every_malformed_request_with_a_400_naming_the_field():
    config = ServeLlmConfig(ttft=0.0, inter_chunk=0.0, fault_schedule=("http_429",))
    with serving(config) as server:
        for case, (raw, param) in BAD_BODIES.items():
            status, payload = _post(server.base_url, raw)
            assert status == 400, (case, status, payload[:300])
            error = json.loads(payload)["error"]
            assert error["type"] == "invalid_request_error", case
            assert isinstance(error["message"], str) and "Traceback" not in error["message"], case
            if param is not None:
                assert error["param"] is not None and error["param"].startswith(param), (case, error)
        # Refused requests are not requests: the first valid one still gets the scheduled fault.
        assert server.stats.requests == 0
        status, _ = _post(server.base_url, _body())
        assert status == 429
        status, payload = _post(server.base_url, _body(stream=False, max_tokens=5, temperature=0.5))
        assert status == 200 and json.loads(payload)["choices"][0]["message"]["content"] == "hi there"
