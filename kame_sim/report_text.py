"""Rendering a trace summary for people: rich tables that read at a glance."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from kame_sim.metrics.summary import TraceSummary, stream_rows, summary_facts


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f} s"


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def render_summary(summary: TraceSummary, console: Console, title: str, streams: bool = False) -> None:
    """Print the counts table and the per-turn response onsets; with ``streams``, one row per LLM
    stream too (start, TTFT, adoption, overlapping streams, how it ended)."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in summary_facts(summary):
        table.add_row(what, str(value))
    console.print(table)
    if summary.turns:
        turns = Table(title="response onset per user turn", header_style="bold")
        for col in ("turn", "user speaks", "onset"):
            turns.add_column(col, justify="right")
        for t in summary.turns:
            turns.add_row(str(t.utterance), f"{t.start:6.2f}–{t.end:6.2f} s", _s(t.onset))
        console.print(turns)
    if streams and summary.streams:
        rows = stream_rows(summary, text_limit=40)
        st = Table(title="LLM streams", header_style="bold")
        columns = [c for c in rows[0] if c not in ("error", "text")]  # kept short: the HTML has them
        for col in columns:
            st.add_column(
                col, justify="left" if col in ("reason", "ended", "error", "live with", "text") else "right"
            )
        for row in rows:
            st.add_row(*(_cell(row.get(c)) for c in columns))
        console.print(st)
