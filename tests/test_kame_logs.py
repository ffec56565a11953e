"""Importing KAME's --log-dir files: row mapping, metadata and one-line errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from kame_sim.errors import InputError
from kame_sim.replay import default_import_dir, import_kame_logs
from kame_sim.trace import read_trace

BASE = 1_700_000_000_000


def write_log(log_dir: Path, name: str, lines: list[tuple[int, str]]) -> Path:
    """Write a file exactly as KAME's server appends it: ``f"{epoch_ms}: {text}\\n"`` per event."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / name
    path.write_text("".join(f"{ms}: {text}\n" for ms, text in lines), encoding="utf-8")
    return path


def _rows(table, event: str) -> list[dict]:
    return [r for r in table.to_pylist() if r["event"] == event]


def _session(log_dir: Path) -> None:
    write_log(log_dir, "asr_partial.txt", [(BASE, "hi"), (BASE + 400, "hi I need"), (BASE + 3000, "yes")])
    write_log(log_dir, "user_words.txt", [(BASE + 900, "hi I need a taxi"), (BASE + 3500, "yes please")])
    write_log(
        log_dir,
        "llm_stream_words.txt",
        [
            (BASE + 500, "[CANCELLED] Sure"),
            (BASE + 1000, "Sure, where to?"),
            (BASE + 3600, "[ERROR] Ok"),
        ],
    )
    write_log(
        log_dir,
        "oracle_stream.txt",
        [(BASE + 700, "[RESET]"), (BASE + 700, "Sure"), (BASE + 1300, "[RESET]"), (BASE + 1300, "Sure,")],
    )
    write_log(log_dir, "moshi_words.txt", [(BASE + 1600, "Sure"), (BASE + 1680, "where")])
    (log_dir / "conversation.txt").write_text("user: hi I need a taxi \nmoshi: Sure where ", encoding="utf-8")


def test_a_session_log_maps_to_trace_rows(tmp_path: Path):
    logs = tmp_path / "logs"
    _session(logs)
    path = import_kame_logs(logs, tmp_path / "out")
    data = read_trace(path)
    table = data.table
    assert data.complete and table.column("event")[0].as_py() == "run_start"
    times = table.column("t_sim").to_pylist()
    assert times == sorted(times) and table.column("seq").to_pylist() == list(range(len(table)))

    partials = _rows(table, "stt_partial")
    assert [(r["t_sim"], r["text"], r["utterance"]) for r in partials] == [
        (0.0, "hi", 0),
        (0.4, "hi I need", 0),
        (3.0, "yes", 1),
    ]
    finals = _rows(table, "stt_final")
    assert [(r["t_sim"], r["text"], r["utterance"]) for r in finals] == [
        (0.9, "hi I need a taxi", 0),
        (3.5, "yes please", 1),
    ]
    assert not _rows(table, "user_word")  # word timing is not in KAME's logs

    starts = _rows(table, "llm_start")
    assert [(r["t_sim"], r["stream_id"]) for r in starts] == [(0.5, 1), (1.0, 2), (3.6, 3)]
    (cancel,) = _rows(table, "llm_cancel")
    assert (cancel["t_sim"], cancel["stream_id"], cancel["text"], cancel["t_ref"]) == (1.0, 1, "Sure", 0.5)
    (done,) = _rows(table, "llm_done")
    assert (done["stream_id"], done["text"], done["word_count"]) == (2, "Sure, where to?", 3)
    (error,) = _rows(table, "llm_error")
    assert (error["stream_id"], error["text"]) == (3, "Ok")

    enq = _rows(table, "oracle_enqueue")
    assert [(r["t_sim"], r["detail"], r["text"], r["stream_id"]) for r in enq] == [
        (0.7, "reset", None, 1),
        (0.7, "append", "Sure", 1),
        (1.3, "reset", None, 2),
        (1.3, "append", "Sure,", 2),
    ]
    tokens = _rows(table, "frontend_token")
    assert [(r["frame"], r["text"], r["token_id"]) for r in tokens] == [
        (20, "Sure", None),
        (21, "where", None),
    ]

    meta = data.metadata
    assert meta["kame_sim.source"] == "kame-logs"
    assert len(meta["kame_sim.log_dir_hash"]) == 64
    assert meta["kame_sim.log_start_epoch_ms"] == str(BASE)
    assert meta["kame_sim.kame_conversation"].startswith("user: hi")
    assert data.scenario["policy"]["poll_interval"] == 0.5
    assert _rows(table, "run_end")[0]["t_sim"] == 3.6


def test_multiplexer_format_gives_chunk_rows(tmp_path: Path):
    logs = tmp_path / "logs"
    write_log(logs, "user_words.txt", [(BASE, "hello")])
    write_log(logs, "oracle_stream.txt", [(BASE + 100, "[RESET]"), (BASE + 100, "Hi"), (BASE + 150, "there")])
    write_log(
        logs,
        "llm_stream_words.txt",
        [(BASE + 100, "[RESET gen=3]"), (BASE + 100, "Hi"), (BASE + 150, "there")],
    )
    table = read_trace(import_kame_logs(logs, tmp_path / "out")).table
    assert [r["stream_id"] for r in _rows(table, "llm_first_chunk")] == [3]
    chunks = _rows(table, "llm_chunk")
    assert [(r["text"], r["stream_id"]) for r in chunks] == [("Hi", 3), ("there", 3)]
    assert chunks[0]["delay_s"] is None and chunks[1]["delay_s"] == pytest.approx(0.05)


def test_optional_files_may_be_missing_and_same_logs_hash_the_same(tmp_path: Path):
    logs = tmp_path / "logs"
    write_log(logs, "user_words.txt", [(BASE, "hello")])
    write_log(logs, "oracle_stream.txt", [(BASE + 10, "[RESET]")])
    first = read_trace(import_kame_logs(logs, tmp_path / "a"))
    second = read_trace(import_kame_logs(logs, tmp_path / "b"))
    assert first.metadata["kame_sim.log_dir_hash"] == second.metadata["kame_sim.log_dir_hash"]
    assert default_import_dir(logs) == Path("traces") / "kame-logs-logs"


def test_existing_output_needs_overwrite(tmp_path: Path):
    logs = tmp_path / "logs"
    write_log(logs, "user_words.txt", [(BASE, "hello")])
    write_log(logs, "oracle_stream.txt", [])
    import_kame_logs(logs, tmp_path / "out")
    with pytest.raises(InputError, match="--overwrite"):
        import_kame_logs(logs, tmp_path / "out")
    import_kame_logs(logs, tmp_path / "out", overwrite=True)


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        ("1000: a\nnot a line\n", "line 2", "expected 'epoch_ms: text'"),
        ("1000: a\n\n1001: b\n", "line 2", "expected 'epoch_ms: text'"),
        ("1000: a\n999: b\n", "line 2", "time goes backwards"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path: Path, content: str, where: str, message: str):
    logs = tmp_path / "logs"
    write_log(logs, "oracle_stream.txt", [])
    (logs / "user_words.txt").write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as info:
        import_kame_logs(logs, tmp_path / "out")
    line = info.value.one_line()
    assert "user_words.txt" in line and where in line and message in line and "\n" not in line
    assert not (tmp_path / "out").exists()


def test_a_missing_required_file_is_named(tmp_path: Path):
    logs = tmp_path / "logs"
    write_log(logs, "user_words.txt", [(BASE, "hello")])
    with pytest.raises(InputError, match=r"oracle_stream\.txt.*missing"):
        import_kame_logs(logs, tmp_path / "out")
    with pytest.raises(InputError, match="not a directory"):
        import_kame_logs(tmp_path / "nope", tmp_path / "out")


def test_cli_imports_logs_and_trace_show_reads_them(tmp_path: Path):
    from typer.testing import CliRunner

    from kame_sim.cli import app

    _session(tmp_path / "logs")
    runner = CliRunner()
    result = runner.invoke(
        app, ["import", "kame-logs", str(tmp_path / "logs"), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["trace", "show", str(tmp_path / "run")])
    assert shown.exit_code == 0 and "complete" in shown.output
    again = runner.invoke(
        app, ["import", "kame-logs", str(tmp_path / "logs"), "--out", str(tmp_path / "run")]
    )
    assert again.exit_code == 2 and "overwrite" in again.output
