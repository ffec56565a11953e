"""Runs as tables: trace.arrow (the IPC-file copy of the stream), sweep metadata in traces,
``kame-sim metrics`` (tables, JSON, CSV, bad input) and ``kame-sim export --parquet``."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from cli_helpers import invoke, one_line_error
from conftest import DEMO_SCENARIO, REPO

from kame_sim import sim
from kame_sim.config import load_scenario
from kame_sim.export import MANIFEST_FILE, export_parquet
from kame_sim.metrics import compute_metrics, reference_replies_from_conversation
from kame_sim.runner import load_run_conversation, run_scenario
from kame_sim.sweep.runner import run_sweep
from kame_sim.sweep.spec import run_id_of_folder
from kame_sim.trace import IPC_FILENAME, TRACE_FILENAME, read_trace, write_ipc_file

DEMO_DATA = REPO / "scenarios" / "data" / "demo"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    return run_scenario(load_scenario(DEMO_SCENARIO), tmp_path_factory.mktemp("run") / "demo").run_dir


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """2 policies x 2 TTFT medians x 2 seeds on the demo = 8 runs, two policy partitions."""
    root = tmp_path_factory.mktemp("sweep")
    spec = root / "small.toml"
    spec.write_text(
        f"""
name = "small"
base = "{DEMO_SCENARIO}"
seeds = 2
[[conversations]]
path = "{DEMO_DATA}"
id = "demo"
[set]
"llm.ttft" = {{ kind = "lognormal", median = 0.73, sigma = 0.32 }}
[parameters]
"policy.kind" = ["poll", "multiplexer"]
"llm.ttft.median" = [0.5, 2.0]
""",
        encoding="utf-8",
    )
    result = run_sweep(spec, root / "out", workers=1)
    assert result.ok and result.total == 8
    return root / "out"


def trace_rows(path: Path) -> int:
    return len(read_trace(path).table)


# -- trace.arrow ---------------------------------------------------------------------------------


def test_the_ipc_file_equals_the_stream_and_opens_everywhere(demo_run: Path):
    stream = pa.ipc.open_stream(demo_run / TRACE_FILENAME).read_all()
    whole = pa.ipc.open_file(demo_run / IPC_FILENAME).read_all()
    assert whole.equals(stream, check_metadata=True)
    assert whole.schema.field("t_sim").metadata == stream.schema.field("t_sim").metadata
    assert not list(demo_run.glob("*.tmp"))
    # read_trace takes either file and sees the same trace
    a, b = read_trace(demo_run / TRACE_FILENAME), read_trace(demo_run / IPC_FILENAME)
    assert a.table.equals(b.table) and a.metadata == b.metadata and b.complete and not b.truncated

    import duckdb
    import polars as pl

    assert pl.read_ipc(demo_run / IPC_FILENAME).height == len(stream)
    trace = pa.ipc.open_file(demo_run / IPC_FILENAME).read_all()  # noqa: F841 - DuckDB finds it by name
    assert duckdb.sql("SELECT count(*) FROM trace").fetchall()[0][0] == len(stream)
    pd = pytest.importorskip("pandas")
    frame = pd.read_feather(demo_run / IPC_FILENAME)
    assert len(frame) == len(stream) and list(frame.columns) == stream.column_names


def test_a_crashed_run_leaves_the_stream_and_no_ipc_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def crash(self):
        self.trace.row("run_start", 0.0)
        raise RuntimeError("boom")

    monkeypatch.setattr(sim.Session, "run", crash)
    with pytest.raises(RuntimeError, match="boom"):
        run_scenario(load_scenario(DEMO_SCENARIO), tmp_path / "run")
    assert (tmp_path / "run" / TRACE_FILENAME).is_file()
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["kame-sim.manifest.json", "scenario.resolved.json", TRACE_FILENAME]


def test_converting_a_torn_stream_fails_and_leaves_nothing(demo_run: Path, tmp_path: Path):
    raw = (demo_run / TRACE_FILENAME).read_bytes()
    (tmp_path / TRACE_FILENAME).write_bytes(raw[: len(raw) - 200])
    with pytest.raises((pa.ArrowInvalid, OSError)):
        write_ipc_file(tmp_path / TRACE_FILENAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRACE_FILENAME]


def test_sweep_traces_carry_their_run_id_and_parameters(sweep_dir: Path):
    resolved = json.loads((sweep_dir / "sweep.resolved.json").read_text())
    for planned in resolved["runs"]:
        for name in (TRACE_FILENAME, IPC_FILENAME):
            meta = read_trace(sweep_dir / "runs" / planned["folder"] / name).metadata
            assert meta["kame_sim.run_id"] == planned["run_id"]
            assert json.loads(meta["kame_sim.parameters"]) == planned["parameters"]


# -- kame-sim metrics ----------------------------------------------------------------------------


def test_metrics_json_round_trip_equals_compute_metrics(demo_run: Path, tmp_path: Path):
    out = tmp_path / "m.json"
    result = invoke("metrics", demo_run, "--json", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    (record,) = data["runs"]
    trace = read_trace(demo_run)
    conversation = load_run_conversation(load_scenario(DEMO_SCENARIO))
    run, turns = compute_metrics(trace, reference_replies_from_conversation(conversation, trace.scenario))
    assert record["metrics"] == run.as_row()
    assert record["metrics"]["reply_f1_mean"] is not None
    assert [{k: t[k] for k in turn.as_row()} for t, turn in zip(record["turns"], turns, strict=True)] == [
        turn.as_row() for turn in turns
    ]
    assert record["turns"][0]["response_text"] == turns[0].response_text
    assert (record["run_id"], record["conversation_id"], record["seed"], record["policy"]) == (
        "demo",
        "demo",
        0,
        "poll",
    )
    # stdout without --out is the same document
    assert json.loads(invoke("metrics", demo_run, "--json").stdout) == data


def _parse(cell: str):
    if cell == "":
        return None
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def test_metrics_csv_round_trip_per_run_and_per_turn(sweep_dir: Path, demo_run: Path):
    data = json.loads(invoke("metrics", sweep_dir, demo_run, "--json").stdout)
    runs = data["runs"]
    assert len(runs) == 9
    per_run = list(csv.DictReader(io.StringIO(invoke("metrics", sweep_dir, demo_run, "--csv").stdout)))
    assert [r["run_id"] for r in per_run] == [r["run_id"] for r in runs]
    for row, record in zip(per_run, runs, strict=True):
        for name, value in record["metrics"].items():
            assert _parse(row[name]) == value, name
        for key, value in record["parameters"].items():
            assert _parse(row[key]) == value
    assert per_run[-1]["policy.kind"] == "" and per_run[0]["policy.kind"] in ("poll", "multiplexer")
    turns = invoke("metrics", sweep_dir, demo_run, "--csv", "--per-turn").stdout
    per_turn = list(csv.DictReader(io.StringIO(turns)))
    expected = [(r["run_id"], t) for r in runs for t in r["turns"]]
    assert len(per_turn) == len(expected)
    for row, (run_id, turn) in zip(per_turn, expected, strict=True):
        assert row["run_id"] == run_id
        for name, value in turn.items():
            if isinstance(value, str):
                assert row[name] == value, name
            else:
                assert _parse(row[name]) == value, name


def test_metrics_of_a_sweep_equal_its_metrics_json(sweep_dir: Path):
    result = invoke("metrics", sweep_dir, "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    resolved = json.loads((sweep_dir / "sweep.resolved.json").read_text())["runs"]
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in resolved]
    for record, planned in zip(runs, resolved, strict=True):
        recorded = json.loads((sweep_dir / "runs" / planned["folder"] / "metrics.json").read_text())
        assert record["metrics"] == recorded["metrics"]
        assert record["parameters"] == recorded["parameters"]


def test_metrics_table_shows_every_metric(demo_run: Path):
    result = invoke("metrics", demo_run)
    assert result.exit_code == 0, result.output
    run, turns = compute_metrics(read_trace(demo_run))
    for name in [*run.as_row(), *turns[0].as_row()]:
        assert name in result.stdout or name == "utterance", name
    assert "per-turn metrics · demo" in result.stdout and "turn 3" in result.stdout


def test_a_partial_trace_is_computed_with_a_warning(demo_run: Path, tmp_path: Path):
    raw = (demo_run / TRACE_FILENAME).read_bytes()
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / TRACE_FILENAME).write_bytes(raw[: len(raw) * 2 // 3])
    result = invoke("metrics", tmp_path / "part", "--json")
    assert result.exit_code == 0, result.output
    assert "partial trace" in result.stderr and "torn" in result.stderr
    (record,) = json.loads(result.stdout)["runs"]
    assert record["metrics"]["complete"] == 0 and record["truncated"] is True


@pytest.mark.parametrize(
    ("make", "args", "words"),
    [
        (lambda d: d / "missing", (), "no such file or directory"),
        (lambda d: d, (), "not a run directory"),
        (lambda d: _write(d / "x.arrows", b"not arrow at all"), (), "not an Arrow IPC stream"),
        (lambda d: _write(d / "x.arrow", b"ARROW1\x00\x00junk"), (), "torn or damaged Arrow IPC file"),
        (lambda d: d, ("--json", "--csv"), "choose one of --json and --csv"),
        (lambda d: d, ("--per-turn",), "only for --csv"),
        (lambda d: d, ("--out", "m.txt"), "pass --json or --csv"),
    ],
)
def test_metrics_bad_input_is_one_line_exit_2(tmp_path: Path, demo_run: Path, make, args, words):
    target = make(tmp_path)
    if args and target == tmp_path:
        target = demo_run
    assert words in one_line_error(invoke("metrics", target, *args))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_empty_sweep_directory_is_refused(tmp_path: Path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "sweep.resolved.json").write_text('{"runs": []}')
    assert "holds no run with a trace" in one_line_error(invoke("metrics", tmp_path))
    assert "holds no finished run" in one_line_error(invoke("export", tmp_path, "--parquet", tmp_path / "d"))


# -- kame-sim export -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(sweep_dir: Path, demo_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "dataset"
    result = invoke("export", sweep_dir, demo_run, "--parquet", out)
    assert result.exit_code == 0, result.output
    assert "events of 9 run(s)" in result.stdout
    return out


def expected_rows(sweep_dir: Path, demo_run: Path) -> dict[str, int]:
    rows = {run_id_of_folder(p.name): trace_rows(p) for p in (sweep_dir / "runs").iterdir()}
    rows["demo"] = trace_rows(demo_run)
    return rows


def test_export_reads_back_in_duckdb_polars_and_pandas(exported: Path, sweep_dir: Path, demo_run: Path):
    import duckdb
    import polars as pl

    want = expected_rows(sweep_dir, demo_run)
    total = sum(want.values())
    glob = f"{exported}/**/*.parquet"
    per_run = dict(
        duckdb.sql(
            f"SELECT run_id, count(*) FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY run_id"
        ).fetchall()
    )
    assert per_run == want
    columns = [
        c[0]
        for c in duckdb.sql(
            f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchall()
    ]
    for name in (
        "run_id",
        "conversation_id",
        "seed",
        "policy",
        "policy.kind",
        "llm.ttft.median",
        "event",
        "t_sim",
    ):
        assert name in columns, name

    lf = pl.scan_parquet(glob, hive_partitioning=True)
    assert lf.select(pl.len()).collect().item() == total
    seeds = lf.group_by("run_id").agg(pl.col("seed").first(), pl.col("llm.ttft.median").first()).collect()
    demo = seeds.filter(pl.col("run_id") == "demo")
    assert demo["seed"].item() == 0 and demo["llm.ttft.median"].item() is None
    assert sorted(seeds.filter(pl.col("run_id") != "demo")["llm.ttft.median"].unique().to_list()) == [
        0.5,
        2.0,
    ]

    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(exported)
    assert len(df) == total
    assert set(df["policy"].astype(str)) == {"poll", "multiplexer"}
    assert set(df["conversation_id"].astype(str)) == {"demo"}
    assert (df.groupby("run_id", observed=True).size().to_dict()) == want


def test_export_rows_equal_the_traces(exported: Path, sweep_dir: Path):
    import pyarrow.dataset as ds

    folder = next((sweep_dir / "runs").iterdir())
    trace = read_trace(folder)
    run_id = trace.metadata["kame_sim.run_id"]
    assert folder.name.endswith("-" + run_id)
    table = ds.dataset(exported, format="parquet", partitioning="hive").to_table(
        filter=ds.field("run_id") == run_id
    )
    got = table.sort_by("seq").select(trace.table.column_names)
    assert got.equals(trace.table.select(trace.table.column_names).cast(got.schema))
    manifest = json.loads((exported / MANIFEST_FILE).read_text())
    assert manifest["rows"] == sum(r["rows"] for r in manifest["runs"]) and len(manifest["runs"]) == 9
    partitions = sorted(p.parent.relative_to(exported).as_posix() for p in exported.rglob("*.parquet"))
    assert partitions == ["conversation_id=demo/policy=multiplexer", "conversation_id=demo/policy=poll"]


def test_export_replaces_its_own_output_and_refuses_anything_else(
    sweep_dir: Path, demo_run: Path, tmp_path: Path
):
    out = tmp_path / "ds"
    assert invoke("export", demo_run, "--parquet", out).exit_code == 0
    assert invoke("export", sweep_dir, "--parquet", out).exit_code == 0  # an earlier export: replaced
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert len(manifest["runs"]) == 8 and "demo" not in {r["run_id"] for r in manifest["runs"]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left over

    (out / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert "notes.txt, which kame-sim export did not write" in one_line_error(
        invoke("export", sweep_dir, "--parquet", out)
    )
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("a,b\n")
    assert "not written by kame-sim export" in one_line_error(
        invoke("export", sweep_dir, "--parquet", foreign)
    )
    assert [p.name for p in foreign.iterdir()] == ["data.csv"]
    assert "is a file" in one_line_error(invoke("export", sweep_dir, "--parquet", foreign / "data.csv"))
    assert "not written by kame-sim export" in one_line_error(
        invoke("export", demo_run, "--parquet", sweep_dir)
    )


def test_export_refuses_partial_traces_and_clashing_run_ids(demo_run: Path, tmp_path: Path):
    raw = (demo_run / TRACE_FILENAME).read_bytes()
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / TRACE_FILENAME).write_bytes(raw[: len(raw) // 2])
    line = one_line_error(invoke("export", tmp_path / "part", "--parquet", tmp_path / "ds"))
    assert "partial trace" in line and "complete runs only" in line
    copy = tmp_path / "other" / "demo"
    shutil.copytree(demo_run, copy)
    line = one_line_error(invoke("export", demo_run, copy, "--parquet", tmp_path / "ds"))
    assert "'demo' is also the run id of" in line
    assert not (tmp_path / "ds").exists()
    assert "no such file" in one_line_error(invoke("export", tmp_path / "nope", "--parquet", tmp_path / "ds"))


def test_export_leaves_out_unfinished_sweep_runs_with_a_note(sweep_dir: Path, tmp_path: Path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    victim = sorted((copy / "runs").iterdir())[0]
    (victim / "metrics.json").unlink()
    result = invoke("export", copy, "--parquet", tmp_path / "ds")
    assert result.exit_code == 0, result.output
    assert "1 run(s) failed or did not finish: left out" in result.stderr
    assert len(json.loads((tmp_path / "ds" / MANIFEST_FILE).read_text())["runs"]) == 7
    assert export_parquet([copy / "runs" / victim.name], tmp_path / "one").runs == 1  # named explicitly: in
