"""The README's example queries run as written, on pyarrow, DuckDB and Polars."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import DEMO_SCENARIO

from kame_sim.config import load_scenario
from kame_sim.runner import run_scenario


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
