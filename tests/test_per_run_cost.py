"""The cheaper per-run path gives what the old one gave: the in-memory trace is the file's trace,
``trace.arrow`` written from memory is the copy of the stream, one manifest write lists what
several did, the per-process memos (tokenizer, content hash) never serve a stale value, and the
bit-parallel edit distance is the dynamic-programming table's."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import DEMO_SCENARIO
from hypothesis import given, settings
from hypothesis import strategies as st

from kame_sim import runner
from kame_sim.config import load_scenario
from kame_sim.conversation import content_hash, hash_memo, load_conversation
from kame_sim.errors import InputError
from kame_sim.metrics.text import levenshtein
from kame_sim.output_dir import MANIFEST, OutputDir
from kame_sim.runner import run_scenario
from kame_sim.sweep.runner import metrics_row
from kame_sim.tokenizer import BUNDLED_MODEL, TextTokenizer
from kame_sim.trace import TraceWriter, read_trace, write_ipc_batches, write_ipc_file
from kame_sim.trace.schema import COLUMNS

DEMO_DATA = DEMO_SCENARIO.parent / "data" / "demo"


def _same_trace(a, b) -> None:
    """Equal tables (values, types, chunking), metadata and flags."""
    assert a.table.equals(b.table, check_metadata=True)
    assert [c.num_chunks for c in a.table.columns] == [c.num_chunks for c in b.table.columns]
    assert (a.metadata, a.complete, a.truncated) == (b.metadata, b.complete, b.truncated)


def test_a_runs_in_memory_trace_is_the_trace_read_back_and_gives_the_same_metrics(tmp_path: Path):
    scenario = load_scenario(DEMO_SCENARIO, {"run.seed": 7})
    result = run_scenario(scenario, tmp_path / "run")
    assert result.trace is not None and result.trace.complete
    from_stream = read_trace(result.run_dir)
    from_file = read_trace(result.run_dir / "trace.arrow")
    _same_trace(result.trace, from_stream)
    assert from_file.table.equals(from_stream.table) and from_file.metadata == from_stream.metadata
    # bit for bit: JSON of the rows (NaN and None spelled out) must match
    in_memory = json.dumps(metrics_row(result.trace, result.conversation), sort_keys=True)
    read_back = json.dumps(metrics_row(from_stream, result.conversation), sort_keys=True)
    assert in_memory == read_back


def _write_rows(writer: TraceWriter, n: int) -> None:
    for i in range(n):
        writer.row("frame", i * 0.08, frame=i, t_ref=i * 0.08, step_wall_s=0.001)
    writer.row("run_end", n * 0.08, frame=n, detail="ok")


def test_trace_arrow_from_kept_batches_equals_the_copy_of_the_stream(tmp_path: Path):
    stream = tmp_path / "trace.arrows"
    with TraceWriter(stream, {"kame_sim.seed": "1"}, batch_rows=64, keep_bytes=10**6) as writer:
        _write_rows(writer, 300)  # five batches of 64 and a last one of 45
    assert writer.batches is not None and len(writer.batches) == 1 + 5
    copied = read_trace(write_ipc_file(stream, tmp_path / "copied.arrow"))
    written = read_trace(write_ipc_batches(stream, writer.schema, writer.batches, tmp_path / "kept.arrow"))
    assert written.table.equals(copied.table, check_metadata=True)
    assert written.metadata == copied.metadata and written.table.num_rows == 301
    assert not (tmp_path / "kept.arrow.tmp").exists()
    on_disk = pa.ipc.open_stream(pa.OSFile(str(stream), "rb"))
    assert [b.num_rows for b in on_disk] == [b.num_rows for b in writer.batches]


def test_past_the_memory_cap_a_run_copies_the_stream_as_before(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(runner, "KEEP_BYTES", 1000)  # the demo's one batch is ~250 kB
    result = run_scenario(load_scenario(DEMO_SCENARIO), tmp_path / "run")
    assert result.trace is None
    stream, file = read_trace(result.run_dir), read_trace(result.run_dir / "trace.arrow")
    assert stream.complete and file.table.equals(stream.table)


def test_every_column_lands_in_its_own_place(tmp_path: Path):
    """Each row is one tuple in column order: a swapped pair would put a value in its neighbour."""
    values = {
        "frame": 11, "stream_id": 12, "utterance": 13, "text": "txt", "token_id": 14, "oracle_index": 15,
        "n_tokens": 16, "n_skipped": 17, "word_count": 18, "queue_len": 19, "delay_s": 0.5, "t_ref": 0.25,
        "detail": "det", "step_wall_s": 0.125, "request": "req",
    }  # fmt: skip
    with TraceWriter(tmp_path / "t.arrows", {}) as writer:
        writer.row("llm_start", 1.5, **values)
        writer.row("run_end", 2.0)
    row = read_trace(tmp_path / "t.arrows").table.to_pylist()[0]
    assert list(row) == list(COLUMNS)
    assert row["seq"] == 0 and row["event"] == "llm_start" and row["t_sim"] == 1.5
    assert {k: row[k] for k in values} == values
    assert 0 <= row["wall_s"] < 60
    assert writer.batches is None  # not asked to keep them


def test_kept_batches_stop_at_the_cap(tmp_path: Path):
    with TraceWriter(tmp_path / "t.arrows", {}, batch_rows=64, keep_bytes=20_000) as writer:
        _write_rows(writer, 64)
        assert writer.batches is not None and len(writer.batches) == 2  # the empty one, 64 rows
        _write_rows(writer, 300)
    assert writer.batches is None


def test_record_all_lists_every_name_once_in_order_with_one_write(tmp_path: Path, monkeypatch):
    out = OutputDir(tmp_path / "out")
    saves = []
    original = OutputDir._save
    monkeypatch.setattr(OutputDir, "_save", lambda self: (saves.append(1), original(self)))
    paths = out.record_all(["a.json", "sub/b.txt", "a.json"])
    root = tmp_path / "out"
    assert paths == [root / "a.json", root / "sub" / "b.txt", root / "a.json"]
    assert (tmp_path / "out" / "sub").is_dir() and len(saves) == 1
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["files"] == ["a.json", "sub/b.txt"]
    out.record_all(["a.json"])  # nothing new: no write
    assert len(saves) == 1


def test_record_all_checks_every_name_before_listing_any(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "theirs.txt").write_text("not kame-sim's")
    out = OutputDir(tmp_path / "out")
    with pytest.raises(InputError, match=r"theirs\.txt"):
        out.record_all(["ours.json", "theirs.txt"])
    assert not (tmp_path / "out" / MANIFEST).exists()  # "ours.json" was not listed either
    assert out.written == []


def test_tokenizer_memo_is_keyed_by_content(tmp_path: Path):
    first = TextTokenizer.load(None)
    assert TextTokenizer.load(BUNDLED_MODEL) is first  # same file, same bytes: reused
    copy = tmp_path / "tok.model"
    shutil.copyfile(BUNDLED_MODEL, copy)
    other = TextTokenizer.load(copy)
    assert other is not first and other.path == copy and other.sha256() == first.sha256()
    copy.write_bytes(b"not a model")  # same path, new bytes: parsed again, so refused
    with pytest.raises(InputError, match=r"tok\.model"):
        TextTokenizer.load(copy)


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "demo"
    shutil.copytree(DEMO_DATA, folder)
    old = 1_600_000_000 * 10**9  # 2020: mtimes long settled (ctimes are now: see the monkeypatch)
    for f in folder.rglob("*.*"):
        os.utime(f, ns=(old, old))
    hash_memo.clear()
    return folder


def _fresh_hash(folder: Path) -> str:
    def read(sub: str) -> bytes | None:
        path = folder / sub / "demo.json" if sub != "audio" else folder / "audio" / "demo.wav"
        return path.read_bytes() if path.exists() else None

    return content_hash(read("audio"), read("text"), read("oracle_raw"))  # type: ignore[arg-type]


def test_a_memoised_hash_is_dropped_when_a_file_changes_in_place(demo_copy: Path, monkeypatch):
    monkeypatch.setattr(hash_memo, "SETTLED_NS", 0)  # ctimes were set just now by the copy
    first = load_conversation(demo_copy).content_hash
    assert first == _fresh_hash(demo_copy) and len(hash_memo._memo) == 1
    assert load_conversation(demo_copy).content_hash == first  # served from the memo
    wav = demo_copy / "audio" / "demo.wav"
    stat = wav.stat()
    data = bytearray(wav.read_bytes())
    data[-1] ^= 1  # one sample's low bit: same size
    wav.write_bytes(bytes(data))
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back: only ctime tells
    changed = load_conversation(demo_copy).content_hash
    assert changed != first and changed == _fresh_hash(demo_copy)


def test_a_memoised_hash_sees_an_oracle_file_appear_or_vanish(demo_copy: Path, monkeypatch):
    monkeypatch.setattr(hash_memo, "SETTLED_NS", 0)
    with_oracle = load_conversation(demo_copy).content_hash
    (demo_copy / "oracle_raw" / "demo.json").rename(demo_copy / "elsewhere.json")
    without = load_conversation(demo_copy).content_hash
    assert without != with_oracle and without == _fresh_hash(demo_copy)


def test_files_changed_too_recently_are_never_memoised(demo_copy: Path):
    # the copy's ctimes are now, within SETTLED_NS: the hash is computed, and not kept
    assert load_conversation(demo_copy).content_hash == _fresh_hash(demo_copy)
    assert hash_memo._memo == {}


def _table_levenshtein(a: list[str], b: list[str]) -> int:
    """The classic dynamic-programming table (what ``levenshtein`` computed before)."""
    previous = list(range(len(b) + 1))
    for i, word_a in enumerate(a, 1):
        current = [i]
        for j, word_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word_a != word_b)))
        previous = current
    return previous[-1]


_words = st.lists(st.sampled_from(["a", "b", "c", "the", ""]), max_size=80)


@given(_words, _words)
@settings(max_examples=300, deadline=None)
def test_bit_parallel_edit_distance_is_the_tables(a: list[str], b: list[str]):
    assert levenshtein(a, b) == _table_levenshtein(a, b) == levenshtein(b, a)
