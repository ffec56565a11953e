"""Reports for people: the timeline picture, robustness curves, a self-contained HTML page and a
Perfetto (Chrome trace-event) export. Everything here reads traces or precomputed arrays only; it
never runs a simulation, so a report can be rebuilt from an archived trace at any time.
"""

from kame_sim.report.curves import plot_robustness_curves
from kame_sim.report.html import Link, ReportSection, report_for_trace, write_html_report
from kame_sim.report.interactive import write_interactive_timeline
from kame_sim.report.perfetto import export_perfetto
from kame_sim.report.timeline import TimelineData, extract_timeline, plot_timeline

__all__ = [
    "Link",
    "ReportSection",
    "TimelineData",
    "export_perfetto",
    "extract_timeline",
    "plot_robustness_curves",
    "plot_timeline",
    "report_for_trace",
    "write_html_report",
    "write_interactive_timeline",
]
