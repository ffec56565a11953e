"""The README's example queries run as written, on pyarrow, DuckDB and Polars; the cross-run
queries over an export (README "Many runs as one table") are executed from the README itself."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import DEMO_SCENARIO, REPO

from kame_sim.config import load_scenario
from kame_sim.export import export_parquet
from kame_sim.runner import run_scenario
from kame_sim.sweep import run_sweep

EXPORT_QUERY_MARKER = "<!-- ci: export query -->"


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "run"
    return run_scenario(load_scenario(DEMO_SCENARIO), out).trace_path


def test_pyarrow_share_of_frames_with_an_oracle_token(trace_file: Path):
    t = pa.ipc.open_stream(trace_file).read_all()
    fed = t.filter(pc.equal(t["event"], "oracle_token_fed"))
    share = pc.mean(pc.cast(pc.is_valid(fed["oracle_index"]), pa.float64())).as_py()
    assert 0.0 < share < 1.0
    assert t.schema.metadata[b"kame_sim.schema_version"] == b"2"


def test_duckdb_stream_table(trace_file: Path):
    import duckdb

    trace = pa.ipc.open_stream(trace_file).read_all()  # noqa: F841 - DuckDB finds it by name
    streams = duckdb.sql(
        """
        SELECT stream_id,
               min(t_sim) FILTER (WHERE event = 'llm_start')        AS started,
               max(delay_s) FILTER (WHERE event = 'llm_first_chunk') AS ttft,
               bool_or(event = 'llm_cancel')                         AS cancelled
        FROM trace WHERE stream_id IS NOT NULL
        GROUP BY stream_id ORDER BY stream_id
        """
    ).fetchall()
    assert [s[0] for s in streams] == list(range(1, len(streams) + 1))
    assert any(s[3] for s in streams) and all(s[2] is None or s[2] > 0 for s in streams)


def test_polars_oracle_queue_wait(trace_file: Path):
    import polars as pl

    df = pl.read_ipc_stream(trace_file)
    wait = df.filter(pl.col("event") == "oracle_append_applied").select(
        (pl.col("t_sim") - pl.col("t_ref")).alias("queue_wait_s")
    )
    assert wait.height > 0
    assert wait["queue_wait_s"].min() >= 0.0 and wait["queue_wait_s"].max() <= 0.08 + 1e-9


def readme_export_queries() -> dict[str, str]:
    """The first ```python block after each export-query marker, keyed by the library it imports."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks: dict[str, str] = {}
    for part in text.split(EXPORT_QUERY_MARKER)[1:]:
        match = re.search(r"```python\n(.*?)```", part, re.S)
        assert match is not None, "an export-query marker without a python block after it"
        code = match.group(1)
        library = re.search(r"^import (\w+)", code, re.M)
        assert library is not None
        blocks[library.group(1)] = code
    return blocks


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """The README's two commands: the TTFT sweep, then its export (in a fresh working directory)."""
    root = tmp_path_factory.mktemp("export")
    sweep = run_sweep(REPO / "scenarios" / "sweeps" / "ttft.toml", root / "traces/sweeps/ttft", workers=1)
    assert sweep.ok
    export_parquet([root / "traces/sweeps/ttft"], root / "traces/export/ttft")
    return root


def run_readme_query(library: str, export_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    code = readme_export_queries()[library]
    monkeypatch.chdir(export_dir)
    namespace: dict = {}
    exec(compile(code, f"README.md ({library} export query)", "exec"), namespace)
    return namespace


def test_the_readme_has_one_export_query_per_library():
    assert sorted(readme_export_queries()) == ["duckdb", "pandas", "polars"]


def test_readme_duckdb_export_query(export_dir: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("duckdb")
    rows = run_readme_query("duckdb", export_dir, monkeypatch)["by_ttft"].fetchall()
    assert [r[1] for r in rows] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert all(r[0] == "poll" and r[2] == 4 for r in rows)
    ttft, oracle = [r[3] for r in rows], [r[4] for r in rows]
    assert ttft == sorted(ttft) and oracle[0] > oracle[-1]


def test_readme_polars_export_query(export_dir: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("polars")
    df = run_readme_query("polars", export_dir, monkeypatch)["per_point"]
    assert df["llm.ttft.median"].to_list() == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert df["spoke"][0] > df["spoke"][-1] and df["cancelled"][0] < df["cancelled"][-1]


def test_readme_pandas_export_query(export_dir: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("pandas")
    wait = run_readme_query("pandas", export_dir, monkeypatch)["wait"]
    medians = wait.groupby("llm.ttft.median").start_to_oracle_s.median()
    assert list(medians.index) == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert medians.iloc[0] < medians.iloc[-1] and (wait.start_to_oracle_s > 0).all()
