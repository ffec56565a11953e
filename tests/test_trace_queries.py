"""The README's example queries, executed from the README itself as written: the per-trace ones
(pyarrow, DuckDB, Polars; each must print something) and the cross-run ones over an export
(README "Many runs as one table")."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import DEMO_SCENARIO, REPO

from kame_sim.config import load_scenario
from kame_sim.export import export_parquet
from kame_sim.runner import run_scenario
from kame_sim.sweep.runner import run_sweep

EXPORT_QUERY_MARKER = "<!-- ci: export query -->"
TRACE_QUERY_MARKER = "<!-- ci: trace query -->"


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "run"
    return run_scenario(load_scenario(DEMO_SCENARIO), out).trace_path


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory, trace_file: Path) -> Path:
    """A working directory where the README's path, traces/demo-demo-seed0/trace.arrows, exists."""
    root = tmp_path_factory.mktemp("readme")
    (root / "traces" / "demo-demo-seed0").mkdir(parents=True)
    shutil.copy(trace_file, root / "traces" / "demo-demo-seed0" / "trace.arrows")
    return root


def run_readme_trace_query(
    library: str, trace_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[dict, str]:
    """Run the README's block for ``library`` as written; its namespace and what it printed."""
    code = readme_queries(TRACE_QUERY_MARKER)[library]
    monkeypatch.chdir(trace_dir)
    namespace: dict = {}
    exec(compile(code, f"README.md ({library} trace query)", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.strip(), f"the README's {library} query prints nothing"
    return namespace, printed


def test_the_readme_has_one_trace_query_per_library():
    assert sorted(readme_queries(TRACE_QUERY_MARKER)) == ["duckdb", "polars", "pyarrow"]


def test_pyarrow_share_of_frames_with_an_oracle_token(trace_dir, monkeypatch, capsys):
    namespace, printed = run_readme_trace_query("pyarrow", trace_dir, monkeypatch, capsys)
    share = float(printed.strip())
    assert 0.0 < share < 1.0
    assert namespace["t"].schema.metadata[b"kame_sim.schema_version"] == b"2"


def test_duckdb_stream_table(trace_dir, monkeypatch, capsys):
    import duckdb

    namespace, printed = run_readme_trace_query("duckdb", trace_dir, monkeypatch, capsys)
    assert "stream_id" in printed and "cancelled" in printed
    trace = namespace["trace"]  # noqa: F841 - DuckDB finds it by name
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


def test_polars_oracle_queue_wait(trace_dir, monkeypatch, capsys):
    namespace, printed = run_readme_trace_query("polars", trace_dir, monkeypatch, capsys)
    wait = namespace["wait"]
    assert wait.height > 0 and "queue_wait_s" in printed and "mean" in printed
    assert wait["queue_wait_s"].min() >= 0.0 and wait["queue_wait_s"].max() <= 0.08 + 1e-9


def readme_queries(marker: str) -> dict[str, str]:
    """The first ```python block after each ``marker``, keyed by the library it imports first."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks: dict[str, str] = {}
    for part in text.split(marker)[1:]:
        match = re.search(r"```python\n(.*?)```", part, re.S)
        assert match is not None, f"a {marker} without a python block after it"
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
    code = readme_queries(EXPORT_QUERY_MARKER)[library]
    monkeypatch.chdir(export_dir)
    namespace: dict = {}
    exec(compile(code, f"README.md ({library} export query)", "exec"), namespace)
    return namespace


def test_the_readme_has_one_export_query_per_library():
    assert sorted(readme_queries(EXPORT_QUERY_MARKER)) == ["duckdb", "pandas", "polars"]


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
