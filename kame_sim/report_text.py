"""Rendering a trace summary for people: a rich table that reads at a glance."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from kame_sim.metrics.summary import TraceSummary


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f} s"


def render_summary(summary: TraceSummary, console: Console, title: str) -> None:
    """Print the counts table and the per-turn response onsets."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    status = "complete" if summary.complete else "PARTIAL (no run_end row)"
    rows = [
        ("conversation / seed", f"{summary.conversation_id} / {summary.seed}"),
        ("trace", status),
        ("simulated time", f"{summary.simulated_seconds:.2f} s"),
        ("frames (late)", f"{summary.frames} ({summary.late_frames})"),
        ("user words", str(summary.user_words)),
        ("STT partials / finals", f"{summary.stt_partials} / {summary.stt_finals}"),
        ("LLM streams started", str(summary.llm_started)),
        ("  cancelled / completed", f"{summary.llm_cancelled} / {summary.llm_completed}"),
        ("  refused by rate limit", str(summary.llm_rate_limited)),
        (
            "  median time to first token",
            "—" if summary.ttft_median is None else f"{summary.ttft_median:.3f} s",
        ),
        ("oracle items enqueued / dropped", f"{summary.oracle_enqueued} / {summary.oracle_dropped}"),
        ("oracle resets applied", str(summary.oracle_resets_applied)),
        (
            "oracle tokens fed / skipped (late)",
            f"{summary.oracle_tokens_fed} / {summary.oracle_tokens_skipped}",
        ),
        ("front-end text tokens", str(summary.frontend_tokens)),
        ("median response onset", _s(summary.onset_median)),
    ]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    if summary.turns:
        turns = Table(title="response onset per user turn", header_style="bold")
        for col in ("turn", "user speaks", "onset"):
            turns.add_column(col, justify="right")
        for t in summary.turns:
            turns.add_row(str(t.utterance), f"{t.start:6.2f}–{t.end:6.2f} s", _s(t.onset))
        console.print(turns)
