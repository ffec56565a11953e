"""Reports: timeline PNG, robustness curves, HTML report and Perfetto export, on a real demo run and
on a tiny hand-built trace that has what the demo lacks (overlapping streams, drops, late tokens,
a rate-limited start, a partial trace)."""

from __future__ import annotations

import json
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import DEMO_SCENARIO
from matplotlib.image import imread

from kame_sim.config import load_scenario
from kame_sim.report import (
    ReportSection,
    export_perfetto,
    extract_timeline,
    plot_robustness_curves,
    plot_timeline,
    report_for_trace,
    write_html_report,
)
from kame_sim.runner import run_scenario
from kame_sim.trace.reader import TraceData, read_trace
from kame_sim.trace.schema import trace_schema

FRAME = 0.08

# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real demo run, shared by the tests of this module (the run is the slow part)."""
    return run_scenario(load_scenario(DEMO_SCENARIO), tmp_path_factory.mktemp("demo") / "run").run_dir


@pytest.fixture(scope="module")
def demo_report(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return report_for_trace(demo_run, tmp_path_factory.mktemp("report"))


def _tiny_rows() -> list[dict]:
    """A 2-second run by hand. Streams 1 and 2 overlap (as in an imported log), stream 3 is still
    open when the trace stops (no run_end: partial)."""
    ev: list[tuple[float, int, dict]] = []  # (t, order within t, row)

    def add(event: str, t: float, order: int = 0, **cols) -> None:
        ev.append((t, order, {"event": event, "t_sim": t, **cols}))

    add("run_start", 0.0, detail="behavioural")
    add("user_word", 0.10, utterance=0, text="hello", t_ref=0.40)
    add("user_word", 0.45, utterance=0, text="<b>there</b>", t_ref=0.80)
    add("stt_partial", 0.55, utterance=0, text="hello", t_ref=0.40, delay_s=0.15)
    add("stt_final", 1.00, utterance=0, text="hello <b>there</b>", t_ref=0.80, delay_s=0.20)
    add("llm_start", 0.50, stream_id=1, word_count=1, detail="first")
    add("llm_start", 0.90, stream_id=2, word_count=2, detail="words")
    add("llm_first_chunk", 1.10, stream_id=1, delay_s=0.6)
    add("oracle_enqueue", 1.10, 1, stream_id=1, queue_len=1, detail="reset")
    add("llm_chunk", 1.10, 2, stream_id=1, text="Hi", delay_s=0.0)
    add("oracle_enqueue", 1.10, 3, stream_id=1, text="Hi", queue_len=2, detail="append")
    add("llm_chunk", 1.115, stream_id=1, text="you", delay_s=0.015)
    add("oracle_enqueue", 1.115, 1, stream_id=1, text="you", queue_len=3, detail="append")
    t13 = 14 * FRAME  # frame 13's step time
    add("oracle_reset_applied", t13, -3, frame=13, stream_id=1, t_ref=1.10)
    add(
        "oracle_append_applied",
        t13,
        -2,
        frame=13,
        stream_id=1,
        text="Hi",
        oracle_index=1,
        n_tokens=1,
        n_skipped=0,
        t_ref=1.10,
    )
    add(
        "oracle_append_applied",
        t13,
        -1,
        frame=13,
        stream_id=1,
        text="you",
        oracle_index=2,
        n_tokens=1,
        n_skipped=0,
        t_ref=1.115,
    )
    add("llm_done", 1.20, stream_id=1, word_count=2)
    add("llm_rate_limited", 1.50, detail="words")
    add("oracle_drop", 1.60, stream_id=2, queue_len=64, detail="append")
    add("llm_cancel", 1.70, stream_id=2, detail="superseded")
    add("llm_start", 1.70, 1, stream_id=3, word_count=2, detail="final")
    add("llm_first_chunk", 1.80, stream_id=3, delay_s=0.1)
    add("llm_chunk", 1.80, 1, stream_id=3, text="<b>Sorry</b>", delay_s=0.0)
    t22 = 23 * FRAME
    add("oracle_reset_applied", t22, -2, frame=22, stream_id=3, t_ref=1.80)
    add(
        "oracle_append_applied",
        t22,
        -1,
        frame=22,
        stream_id=3,
        text="<b>Sorry</b>",
        oracle_index=1,
        n_tokens=2,
        n_skipped=1,
        t_ref=1.80,
    )
    fed = {13: 0, 14: 1, 15: 2, 22: 0, 23: 2}
    said = {16: " Hi", 18: " you", 19: "r", 20: ".", 23: " Oh"}
    for k in range(24):
        t = (k + 1) * FRAME
        add("frame", t, 0, frame=k, t_ref=t, detail="late" if k == 20 else None)
        add(
            "oracle_token_fed",
            t,
            1,
            frame=k,
            token_id=3 if k not in fed else 100 + fed[k],
            oracle_index=fed.get(k),
            n_skipped=0,
        )
        add("frontend_token", t, 2, frame=k, token_id=200 + k if k in said else 3, text=said.get(k))
    ev.sort(key=lambda e: (e[0], e[1]))
    return [{"seq": i, **row} for i, (_, _, row) in enumerate(ev)]


@pytest.fixture
def tiny(tmp_path: Path) -> TraceData:
    """The hand-built trace, written to disk as a real Arrow IPC stream and read back."""
    meta = {
        "kame_sim.conversation_id": "tiny",
        "kame_sim.seed": "5",
        "kame_sim.frontend": "behavioural",
        "kame_sim.frame_seconds": str(FRAME),
        "kame_sim.time_coupling": "budget",
        "kame_sim.scenario": json.dumps({"run": {"name": "tiny"}}),
    }
    schema = trace_schema(meta)
    table = pa.Table.from_pylist(_tiny_rows(), schema=schema)
    path = tmp_path / "tiny" / "trace.arrows"
    path.parent.mkdir()
    with pa.ipc.new_stream(str(path), schema) as writer:
        writer.write_table(table)
    return read_trace(path.parent)


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def assert_png(path: Path, min_w: int = 300, min_h: int = 200) -> np.ndarray:
    """The file decodes as an image of a useful size that is not blank."""
    img = imread(path)
    assert img.ndim == 3 and img.shape[1] >= min_w and img.shape[0] >= min_h, img.shape
    assert float(np.var(img[..., :3])) > 0.001, "blank image"
    return img


def nesting_violations(events: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of X events on one (pid, tid) that overlap partially (viewers need proper nesting)."""
    bad = []
    by_track: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            by_track[(e["pid"], e["tid"])].append(e)
    for track in by_track.values():
        stack: list[dict] = []
        for e in sorted(track, key=lambda e: (e["ts"], -e["dur"])):
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            if stack and e["ts"] + e["dur"] > stack[-1]["ts"] + stack[-1]["dur"]:
                bad.append((stack[-1], e))
            stack.append(e)
    return bad


def check_perfetto(path: Path, n_streams: int) -> dict:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["displayTimeUnit"] == "ms"
    events = doc["traceEvents"]
    for e in events:
        for key in ("name", "ph", "ts", "pid", "tid"):
            assert key in e, (key, e)
        assert e["ts"] >= 0, e
        if e["ph"] == "X":
            assert "dur" in e and e["dur"] >= 0, e
        if e["ph"] == "C":
            assert all(isinstance(v, int | float) for v in e["args"].values())
    assert nesting_violations(events) == []
    streams = [e for e in events if e["ph"] == "X" and e.get("cat") == "llm_stream"]
    assert len(streams) == n_streams
    return doc


def thread_names(doc: dict) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"] or "")
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"] or "")


def parse_html(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def llm_start_rows(trace: TraceData) -> int:
    return sum(1 for e in trace.table.column("event").to_pylist() if e == "llm_start")


# --------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------


def test_demo_report_files_images_and_links(demo_run: Path, demo_report: Path):
    out = demo_report.parent
    refs = parse_html(demo_report)
    assert "table" in refs.tags and "h1" in refs.tags
    assert refs.imgs == ["timeline.png"]
    for ref in refs.imgs + [h for h in refs.hrefs if not h.startswith("#")]:
        assert (out / ref).is_file(), ref
    assert "trace.perfetto.json" in refs.hrefs
    img = assert_png(out / "timeline.png", min_w=1000, min_h=500)
    assert img.shape[1] > img.shape[0]  # a wide picture: time runs left to right
    check_perfetto(out / "trace.perfetto.json", llm_start_rows(read_trace(demo_run)))
    text = demo_report.read_text(encoding="utf-8")
    assert "demo" in text and "median response onset" in text and "http" not in text.split("<main>")[0]


def test_demo_perfetto_tracks_and_nesting(demo_report: Path):
    doc = json.loads((demo_report.parent / "trace.perfetto.json").read_text(encoding="utf-8"))
    names = set(thread_names(doc).values())
    assert {
        "user speech",
        "STT results",
        "LLM slot",
        "oracle queue",
        "oracle fed",
        "front-end words",
    } <= names
    events = doc["traceEvents"]
    assert any(e["ph"] == "C" and e["name"] == "oracle queue length" for e in events)
    words = [
        e for e in events if e["ph"] == "X" and e.get("cat") == "user" and not e["name"].startswith("utter")
    ]
    assert [w["name"] for w in words][:3] == ["hello", "i", "am"]
    assert words[0]["ts"] == 500_000  # simulated microseconds: "hello" starts at 0.5 s


def test_tiny_trace_extraction(tiny: TraceData):
    d = extract_timeline(tiny)
    assert not d.complete and d.conversation_id == "tiny"
    status = {s.stream_id: s.status for s in d.streams}
    assert status == {1: "done", 2: "cancelled", 3: "open"}
    open_stream = d.streams[-1]
    assert open_stream.end == pytest.approx(d.t_end)
    assert [w.text for w in d.frontend_words] == ["Hi", "your.", "Oh"]
    assert d.frontend_words[0].end == pytest.approx(d.frontend_words[1].start)  # lasts until the next word
    fed = {c.text: (c.fed_start, c.fed_end) for c in d.oracle_chunks}
    assert fed["Hi"] == pytest.approx((15 * FRAME, 16 * FRAME))
    assert fed["you"] == pytest.approx((16 * FRAME, 17 * FRAME))
    assert fed["<b>Sorry</b>"] == pytest.approx((24 * FRAME, 25 * FRAME))  # its first token came too late
    kinds = [f.kind for f in d.oracle_frames]
    assert kinds.count("start") == 2 and kinds.count("text") == 3
    assert [q.kind for q in d.drops] == ["drop"] and d.rate_limited == [1.5]
    assert d.late_frames == [pytest.approx(21 * FRAME)]


def test_tiny_timeline_png_and_window(tiny: TraceData, tmp_path: Path):
    assert_png(plot_timeline(tiny, tmp_path / "tiny.png"))
    assert_png(plot_timeline(tiny, tmp_path / "win.png", t_range=(0.5, 1.5)))
    with pytest.raises(ValueError):
        plot_timeline(tiny, tmp_path / "bad.png", t_range=(2.0, 1.0))


def test_long_windows_are_split_into_rows(tiny: TraceData, tmp_path: Path):
    one = imread(plot_timeline(tiny, tmp_path / "one.png"))
    rows = imread(plot_timeline(tiny, tmp_path / "rows.png", row_seconds=0.5))
    assert rows.shape[0] > 2 * one.shape[0]  # four stacked rows
    # rows have a fixed span: 0.8 s rows over 2.0 s are three rows of 0.8 s (the last one partly
    # empty), as wide as 0.8 s rows over a 1.6 s window
    three = imread(plot_timeline(tiny, tmp_path / "three.png", row_seconds=0.8))
    two = imread(plot_timeline(tiny, tmp_path / "two.png", t_range=(0.0, 1.6), row_seconds=0.8))
    assert three.shape[1] == two.shape[1] and three.shape[0] > two.shape[0]
    with pytest.raises(ValueError):
        plot_timeline(tiny, tmp_path / "bad.png", row_seconds=0)


def test_tiny_perfetto_puts_overlapping_streams_on_separate_slots(tiny: TraceData, tmp_path: Path):
    doc = check_perfetto(export_perfetto(tiny, tmp_path / "t.json"), llm_start_rows(tiny))
    events = doc["traceEvents"]
    names = thread_names(doc)
    streams = {e["args"]["stream_id"]: e for e in events if e.get("cat") == "llm_stream"}
    assert names[streams[1]["tid"]] == "LLM slot" and names[streams[2]["tid"]] == "LLM slot 2"
    assert streams[2]["name"] == "stream #2 [cancelled (superseded)]"
    assert streams[2]["args"]["cancel_reason"] == "superseded" and streams[3]["args"]["status"] == "open"
    s1 = streams[1]
    chunks = [e for e in events if e["ph"] == "i" and e["name"].startswith("chunk") and e["tid"] == s1["tid"]]
    assert len(chunks) == 3  # two of stream 1, one of stream 3 (same slot, later)
    for c in chunks[:2]:
        assert s1["ts"] <= c["ts"] <= s1["ts"] + s1["dur"]
    assert any(e["name"] == "DROP append" for e in events)
    assert any(e["name"] == "start refused (rate limit)" for e in events)
    assert any(e["name"] == "late frame" for e in events)
    assert any(e["ph"] == "X" and e["name"] == "your." for e in events)


def test_nesting_checker_catches_partial_overlap():
    ok = [
        {"ph": "X", "ts": 0, "dur": 10, "pid": 1, "tid": 1},
        {"ph": "X", "ts": 2, "dur": 3, "pid": 1, "tid": 1},
        {"ph": "X", "ts": 10, "dur": 5, "pid": 1, "tid": 1},  # touching is fine
    ]
    assert nesting_violations(ok) == []
    bad = [*ok, {"ph": "X", "ts": 4, "dur": 3, "pid": 1, "tid": 1}]
    assert len(nesting_violations(bad)) == 1


def test_tiny_report_partial_and_embedded(tiny: TraceData, tmp_path: Path):
    index = report_for_trace(tiny.path, tmp_path / "rep", embed_images=True)
    refs = parse_html(index)
    assert refs.imgs and all(src.startswith("data:image/png;base64,") for src in refs.imgs)
    text = index.read_text(encoding="utf-8")
    assert "PARTIAL" in text
    assert "<b>Sorry</b>" not in text and "&lt;b&gt;Sorry&lt;/b&gt;" in text  # LLM text is escaped


def test_write_html_report_escapes_copies_and_dedupes(tmp_path: Path):
    pics = []
    for sub in ("a", "b"):
        p = tmp_path / sub / "plot.png"
        p.parent.mkdir()
        plot_robustness_curves([("m", {"x": [1, 2], "mean": [1, 2], "low": [0, 1], "high": [2, 3]})], p, "x")
        pics.append(p)
    out = tmp_path / "out"
    sections = [
        ReportSection(
            "<script>alert(1)</script>",
            "Plain **bold** and `code` and [ok](img/plot.png) but [no](javascript:alert(1)).\n\n"
            "- one\n- <i>two</i>",
            rows=[{"name": "<img src=x>", "value": 1.23456}, {"name": "b", "other": None}],
            images=pics,
        ),
    ]
    index = write_html_report(out, "T & <T>", sections)
    text = index.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<img src=x>" not in text and "<i>two</i>" not in text
    assert 'href="javascript' not in text and "<strong>bold</strong>" in text and "<code>code</code>" in text
    assert "1.235" in text and "—" in text
    refs = parse_html(index)
    assert sorted(refs.imgs) == ["img/plot-2.png", "img/plot.png"]
    for src in refs.imgs:
        assert (out / src).is_file()
    assert (out / "img" / "plot.png").read_bytes() == pics[0].read_bytes()
    with pytest.raises(FileNotFoundError):
        write_html_report(out, "t", [ReportSection("h", images=[tmp_path / "missing.png"])])


def test_robustness_curves_png(tmp_path: Path):
    x = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    mean = 0.3 + 0.1 * x
    curves = [
        ("response onset (s)", {"x": x, "mean": mean, "low": mean - 0.05, "high": mean + 0.05}),
        (
            "oracle share",
            {"x": x, "mean": 1 / (1 + x), "low": np.full(5, np.nan), "high": np.full(5, np.nan)},
        ),
        ("cancels", {"x": x, "mean": x, "low": x - 1, "high": x + 1}),
        ("drops", {"x": x, "mean": x * 0, "low": x * 0, "high": x * 0 + 1}),
    ]
    assert_png(plot_robustness_curves(curves, tmp_path / "c.png", "TTFT median (s)", log_x=True), 800, 400)
    with pytest.raises(ValueError, match="differ in length"):
        plot_robustness_curves([("m", {"x": x, "mean": x[:3], "low": x, "high": x})], tmp_path / "d.png", "x")
    with pytest.raises(ValueError, match="x > 0"):
        plot_robustness_curves(
            [("m", {"x": x - 1, "mean": x, "low": x, "high": x})], tmp_path / "e.png", "x", True
        )
    with pytest.raises(ValueError, match="missing"):
        plot_robustness_curves([("m", {"x": x})], tmp_path / "f.png", "x")


def test_comparison_png_categorical_and_numeric(tmp_path: Path):
    from kame_sim.report.curves import plot_comparison

    def curve(mean: list[float]) -> dict:
        m = np.asarray(mean)
        return {"x": np.arange(len(m), dtype=float), "mean": m, "low": m - 0.05, "high": m + 0.05}

    panels = [
        (
            "coverage\nshare · ↑ higher is better",
            {"poll": curve([0.7, 0.6, 0.25]), "multiplexer": curve([0.7, 0.7, 0.7])},
        ),
        ("onset", {"poll": curve([0.27, 0.27, np.nan]), "multiplexer": curve([0.27, 0.27, 0.27])}),
    ]
    cats = ["GPT-4.1", "heavy tail\n+ 10 % stalls", "slow"]
    notes = [["Δ +0.00", "Δ +0.10 [+0.05, +0.15]", "Δ +0.45"], ["", "", ""]]
    img = assert_png(
        plot_comparison(panels, tmp_path / "c.png", "llm.ttft", categories=cats, notes=notes), 800, 300
    )
    assert img.shape[1] > img.shape[0]
    x = np.array([0.5, 1.0, 4.0])
    numeric = [
        (
            "m",
            {
                "a": {"x": x, "mean": x, "low": x - 1, "high": x + 1},
                "b": {"x": x, "mean": -x, "low": -x, "high": -x},
            },
        )
    ]
    assert_png(plot_comparison(numeric, tmp_path / "n.png", "median", log_x=True, series_label="policy"))
    with pytest.raises(ValueError, match="category indices"):
        plot_comparison([("m", {"a": {"x": [0, 5], "mean": [1, 2], "low": [1, 2], "high": [1, 2]}})],
                        tmp_path / "e.png", "x", categories=["one", "two"])  # fmt: skip
    with pytest.raises(ValueError, match="no curves"):
        plot_comparison([], tmp_path / "f.png", "x")
