"""``kame-sim metrics``: every per-run and per-turn metric of some runs, as tables, JSON or CSV.

The numbers are :func:`kame_sim.metrics.compute_metrics` of each trace (``RunMetrics.as_row()``
and ``TurnMetrics.as_row()`` plus the turn's three texts), exactly what a sweep writes to
``metrics.json``; definitions in docs/metrics.md. The reply-agreement metrics need the real
speaker's replies: they are rebuilt from the conversation the trace names (its path in the
resolved scenario, checked against the trace's ``kame_sim.conversation_hash``); when that data is
gone or changed, ``reply_f1`` stays null and a note says why.

A partial trace (no ``run_end`` row, or a torn last batch) is not refused: its metrics are
computed from the rows it holds, ``complete`` is 0 (``truncated`` 1 for a torn batch) and a
warning says so. A file that is not a trace at all is an :class:`InputError`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from kame_sim import __version__
from kame_sim.config import scenario_from_dict
from kame_sim.errors import InputError
from kame_sim.export.sources import RunSource, run_identity
from kame_sim.metrics import compute_metrics, reference_replies_from_conversation
from kame_sim.trace.reader import TraceData, read_trace

#: Identifier columns in front of the metrics (CSV and the JSON record's top level).
ID_COLUMNS = ("run_id", "trace", "conversation_id", "seed", "policy", "truncated")
TEXT_FIELDS = ("response_text", "oracle_text", "reference_text")


@dataclass
class RunRecord:
    """One run's identity, run metrics and turn metrics (plain JSON-able values)."""

    run_id: str
    trace: str
    conversation_id: str
    seed: int | None
    policy: str
    truncated: bool
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    turns: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "trace": self.trace,
            "conversation_id": self.conversation_id,
            "seed": self.seed,
            "policy": self.policy,
            "truncated": self.truncated,
            "parameters": self.parameters,
            "metrics": self.metrics,
            "turns": self.turns,
        }


class _References:
    """Reference replies per conversation, loaded once per (path, id, hash)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str | None, str | None], dict[int, str] | str] = {}

    def get(self, trace: TraceData) -> dict[int, str] | str:
        """The replies, or a one-line reason why there are none."""
        scenario = trace.scenario
        conv = scenario.get("conversation") or {}
        path, cid = conv.get("path"), conv.get("id")
        expected = trace.metadata.get("kame_sim.conversation_hash")
        if not path or trace.metadata.get("kame_sim.source") == "kame-logs":
            return "the trace names no conversation"
        key = (str(path), cid, expected)
        if key not in self._cache:
            self._cache[key] = self._load(scenario, path, expected)
        return self._cache[key]

    @staticmethod
    def _load(scenario: dict[str, Any], path: str, expected: str | None) -> dict[int, str] | str:
        from kame_sim.runner import load_run_conversation

        try:
            conversation = load_run_conversation(scenario_from_dict(scenario))
        except (InputError, OSError) as exc:
            return f"its conversation could not be loaded ({path}: {exc})"
        if expected is not None and conversation.content_hash != expected:
            return f"its conversation changed since the run ({path}: content hash differs)"
        return reference_replies_from_conversation(conversation, scenario)


def _plain(value: Any) -> Any:
    """numpy scalars → Python numbers, NaN → None (JSON and CSV want plain values)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN: undefined is null, as everywhere else
        return None
    return value


def run_records(sources: Iterable[RunSource], references: bool = True) -> list[RunRecord]:
    """Compute the metrics of every source (in order); notes carry warnings for stderr."""
    refs = _References()
    out: list[RunRecord] = []
    for source in sources:
        trace = read_trace(source.trace)
        ident = run_identity(trace)
        notes: list[str] = []
        if trace.truncated:
            notes.append(
                f"warning: {trace.path}: the last record batch is torn; metrics use the complete ones"
            )
        if not trace.complete:
            end = float(pc.max(trace.table["t_sim"]).as_py() or 0.0) if len(trace.table) else 0.0
            notes.append(
                f"warning: {trace.path}: partial trace (no run_end row; its rows end at t = {end:.2f} s): "
                "metrics cover what it holds (complete = 0)"
            )
        replies: dict[int, str] | None = None
        if references:
            got = refs.get(trace)
            if isinstance(got, str):
                notes.append(f"note: {trace.path}: no reference replies, reply_f1 is null: {got}")
            else:
                replies = got
        run, turns = compute_metrics(trace, replies)
        turn_rows = []
        for t in turns:
            row: dict[str, Any] = {k: _plain(v) for k, v in t.as_row().items()}
            for name in TEXT_FIELDS:
                row[name] = getattr(t, name)
            turn_rows.append(row)
        out.append(
            RunRecord(
                run_id=ident.run_id,
                trace=str(trace.path),
                conversation_id=ident.conversation_id,
                seed=ident.seed,
                policy=ident.policy,
                truncated=trace.truncated,
                parameters=ident.parameters,
                metrics={k: _plain(v) for k, v in run.as_row().items()},
                turns=turn_rows,
                notes=notes,
            )
        )
    return out


# -- JSON and CSV --------------------------------------------------------------------------------


def to_json(records: list[RunRecord]) -> str:
    """``{"kame_sim_version": ..., "runs": [{run_id, ..., parameters, metrics, turns}]}``."""
    data = {"kame_sim_version": __version__, "runs": [r.as_json() for r in records]}
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def _cell(value: Any) -> str:
    """CSV cell: empty for null, repr for numbers (exact round trip), JSON for tables and flags."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, sort_keys=True)


def _ordered_keys(dicts: Iterable[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    return keys


def to_csv(records: list[RunRecord], per_turn: bool = False) -> str:
    """One row per run (or per user turn): identifiers, swept parameters, then the metrics."""
    params = _ordered_keys(r.parameters for r in records)
    values = (
        _ordered_keys(t for r in records for t in r.turns)
        if per_turn
        else _ordered_keys(r.metrics for r in records)
    )
    header = [*ID_COLUMNS, *params, *values]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        ids = [r.run_id, r.trace, r.conversation_id, r.seed, r.policy, int(r.truncated)]
        front = [*ids, *(r.parameters.get(p) for p in params)]
        rows = r.turns if per_turn else [r.metrics]
        for row in rows:
            writer.writerow([_cell(v) for v in (*front, *(row.get(k) for k in values))])
    return buffer.getvalue()


# -- rich tables ---------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _transposed(console: Any, title: str, row_names: list[str], columns: list[tuple[str, list[Any]]]) -> None:
    """Print a table whose rows are fields and whose columns are runs (or turns), split so that
    it fits the console: a wide run list becomes several tables, never squashed columns."""
    from rich.table import Table

    label_width = max([len(n) for n in row_names] + [5]) + 3
    widest = max([len(h) for h, _ in columns] + [len(_shown(v)) for _, vs in columns for v in vs] + [6])
    per_table = max(1, (console.width - label_width) // (min(widest, 24) + 3))
    for start in range(0, len(columns), per_table):
        part = columns[start : start + per_table]
        shown_title = title if len(columns) <= per_table else f"{title} ({start + 1}–{start + len(part)})"
        table = Table(title=shown_title, header_style="bold", title_justify="left")
        table.add_column("", style="bold", no_wrap=True)
        for header, _ in part:
            table.add_column(header, justify="right", overflow="fold")
        for i, name in enumerate(row_names):
            table.add_row(name, *(_shown(values[i]) for _, values in part))
        console.print(table)


def render(records: list[RunRecord], console: Any) -> None:
    """Per-run metrics (one column per run), then each run's per-turn metrics (one column per turn)."""
    params = _ordered_keys(r.parameters for r in records)
    metric_names = _ordered_keys(r.metrics for r in records)
    names = ["conversation_id", "seed", "policy", *params, *metric_names]
    columns = [
        (
            r.run_id,
            [
                r.conversation_id,
                r.seed,
                r.policy,
                *(r.parameters.get(p) for p in params),
                *(r.metrics.get(m) for m in metric_names),
            ],
        )
        for r in records
    ]
    _transposed(console, "per-run metrics", names, columns)
    for r in records:
        if not r.turns:
            console.print(f"[bold]{r.run_id}[/]: no user turns")
            continue
        turn_names = [k for k in r.turns[0] if k not in TEXT_FIELDS and k != "utterance"]
        turn_columns = [(f"turn {t['utterance']}", [t.get(k) for k in turn_names]) for t in r.turns]
        _transposed(console, f"per-turn metrics · {r.run_id}", turn_names, turn_columns)


def write_output(text: str, out: Path | None, stdout: Any) -> None:
    """To ``out`` (written whole, then renamed) or to ``stdout``."""
    if out is None:
        stdout.write(text)
        stdout.flush()
        return
    import os

    if out.is_dir():
        raise InputError(out, "--out", "is a directory; give a file name")
    if not out.parent.is_dir():
        raise InputError(out, "--out", "its directory does not exist")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
