"""Runs as tables: ``kame-sim metrics`` (per-run and per-turn metrics as a table, JSON or CSV) and
``kame-sim export`` (every event of many runs as one hive-partitioned Parquet dataset).

- :mod:`.sources`: which traces a list of run directories, trace files and sweep directories means.
- :mod:`.metrics_table`: the metrics of each trace, rendered.
- :mod:`.dataset`: the Parquet export.
"""

from kame_sim.export.dataset import MANIFEST_FILE, ExportResult, export_parquet
from kame_sim.export.metrics_table import RunRecord, run_records, to_csv, to_json
from kame_sim.export.sources import FoundRuns, RunSource, find_runs, run_identity

__all__ = [
    "MANIFEST_FILE",
    "ExportResult",
    "FoundRuns",
    "RunRecord",
    "RunSource",
    "export_parquet",
    "find_runs",
    "run_identity",
    "run_records",
    "to_csv",
    "to_json",
]
