"""A self-contained HTML report: headings, paragraphs, tables and images in one ``index.html``.

Reports get mailed around, attached to CI runs and opened from disk years later, so the page loads
nothing from the network: CSS is inline, images sit next to it in ``img/`` (or inside it as data
URIs with ``embed_images=True``), and every piece of text that came from a trace or a caller is
HTML-escaped (transcripts and LLM output are arbitrary text).
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kame_sim import __version__
from kame_sim.metrics.summary import TraceSummary, summarize
from kame_sim.report.perfetto import export_perfetto
from kame_sim.report.timeline import extract_timeline, plot_timeline
from kame_sim.trace.reader import read_trace

INDEX = "index.html"
TIMELINE_PNG = "timeline.png"
PERFETTO_JSON = "trace.perfetto.json"

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml", ".webp": "image/webp"}  # fmt: skip


@dataclass
class ReportSection:
    """One section of a report.

    ``body`` is Markdown-ish text (blank-line paragraphs, ``- `` bullet lists, ``**bold**``,
    ```code```, ``[label](relative/or/https/url)``), escaped before the markup is applied. Set
    ``body_is_html`` only for markup you built yourself: it is inserted verbatim. ``rows`` become a
    table (columns = the keys, in first-seen order); ``images`` are shown in order; ``links`` are
    ``(label, file)`` pairs to files that travel with the report (copied like images).
    """

    heading: str
    body: str = ""
    body_is_html: bool = False
    rows: list[dict[str, Any]] | None = None
    images: list[Path] = field(default_factory=list)
    links: list[tuple[str, Path]] = field(default_factory=list)


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0;
       background: #fafafa; }
main { max-width: 1400px; margin: 0 auto; padding: 1.5em 2em 3em; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 .6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin: 1.8em 0 .5em; color: #08306b; }
nav { font-size: .9em; margin-bottom: 1em; } nav a { margin-right: 1em; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9em;
            background: #f3f3f3; border-radius: 3px; }
code { padding: 0 .25em; } pre { padding: .8em; overflow-x: auto; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f4f8; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: .8em 0; overflow-x: auto; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e5e5; }
figcaption { font-size: .85em; color: #666; }
.links a { display: inline-block; margin-right: 1.2em; }
footer { margin-top: 3em; font-size: .8em; color: #888; }
"""

_SAFE_URL = re.compile(r"^(https?://|#|[^:]*$)", re.IGNORECASE)  # relative paths have no scheme


def _inline(escaped: str) -> str:
    """Apply inline markup to already-escaped text (so nothing here can inject markup)."""

    def link(m: re.Match[str]) -> str:
        label, url = m.group(1), m.group(2)
        return f'<a href="{url}">{label}</a>' if _SAFE_URL.match(html.unescape(url)) else m.group(0)

    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", link, s)


def markdownish(text: str) -> str:
    """Blank-line paragraphs and ``- `` lists with inline code/bold/links; everything escaped first.

    Within a block, lines before the first ``- `` item form a paragraph and lines after an item
    continue it, so wrapped source text stays one item.
    """
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        para: list[str] = []
        items: list[list[str]] = []
        for ln in (ln.strip() for ln in block.splitlines()):
            if not ln:
                continue
            if ln.startswith("- "):
                items.append([ln[2:]])
            elif items:
                items[-1].append(ln)
            else:
                para.append(ln)
        if para:
            out.append(f"<p>{_inline(html.escape(' '.join(para)))}</p>")
        if items:
            lis = "".join(f"<li>{_inline(html.escape(' '.join(item)))}</li>" for item in items)
            out.append(f"<ul>{lis}</ul>")
    return "\n".join(out)


def _cell(value: Any) -> tuple[str, bool]:
    """Text of a table cell and whether it is numeric (right-aligned)."""
    if value is None:
        return "—", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, float):
        return f"{value:.4g}", True
    return str(value), False


def _table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            text, num = _cell(row.get(c))
            cls = ' class="num"' if num else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Assets:
    """Places files next to index.html: as they are if already inside out_dir, else copied into
    ``sub/`` (a second, different file with the same name gets a numbered name)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir.resolve()
        self.copied: dict[Path, str] = {}

    def href(self, file: Path, sub: str) -> str:
        src = Path(file).resolve()
        if not src.is_file():
            raise FileNotFoundError(f"report file not found: {file}")
        if src.is_relative_to(self.out_dir):
            return src.relative_to(self.out_dir).as_posix()
        if src in self.copied:
            return self.copied[src]
        target_dir = self.out_dir / sub
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / src.name
        n = 2
        taken = set(self.copied.values())
        while target.relative_to(self.out_dir).as_posix() in taken:
            target = target_dir / f"{src.stem}-{n}{src.suffix}"
            n += 1
        shutil.copyfile(src, target)
        rel = target.relative_to(self.out_dir).as_posix()
        self.copied[src] = rel
        return rel


def _data_uri(file: Path) -> str:
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"report image not found: {file}")
    mime = _MIME.get(file.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(file.read_bytes()).decode('ascii')}"


def _anchor(i: int, heading: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
    return f"s{i}-{slug}" if slug else f"s{i}"


def write_html_report(
    out_dir: Path, title: str, sections: list[ReportSection], embed_images: bool = False
) -> Path:
    """Write ``out_dir/index.html`` and return its path.

    Images are referenced by relative path (copied into ``out_dir/img/`` when they live elsewhere)
    or, with ``embed_images``, inlined as base64 data URIs so the page is a single file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = _Assets(out_dir)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if len(sections) > 1:
        nav = "".join(
            f'<a href="#{_anchor(i, s.heading)}">{html.escape(s.heading)}</a>' for i, s in enumerate(sections)
        )
        parts.append(f"<nav>{nav}</nav>")
    for i, s in enumerate(sections):
        parts.append(f'<section id="{_anchor(i, s.heading)}"><h2>{html.escape(s.heading)}</h2>')
        if s.body:
            parts.append(s.body if s.body_is_html else markdownish(s.body))
        if s.rows:
            parts.append(_table(s.rows))
        for img in s.images:
            src = _data_uri(img) if embed_images else assets.href(img, "img")
            alt = html.escape(Path(img).name)
            img_tag = f'<img src="{html.escape(src)}" alt="{alt}">'
            if not embed_images:  # a click opens the picture at full size
                img_tag = f'<a href="{html.escape(src)}">{img_tag}</a>'
            parts.append(f"<figure>{img_tag}<figcaption>{alt}</figcaption></figure>")
        if s.links:
            links = "".join(
                f'<a href="{html.escape(assets.href(f, "files"))}">{html.escape(label)}</a>'
                for label, f in s.links
            )
            parts.append(f'<p class="links">{links}</p>')
        parts.append("</section>")
    doc = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(parts)
        + f"\n<footer>generated by kame-sim {html.escape(str(__version__))}</footer>\n"
        + "</main>\n</body>\n</html>\n"
    )
    index = out_dir / INDEX
    index.write_text(doc, encoding="utf-8")
    return index


# --------------------------------------------------------------------------------------------------
# The report for one trace (what `kame-sim report TRACE` writes)
# --------------------------------------------------------------------------------------------------


def _secs(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.2f} s" if signed else f"{v:.3f} s"


def summary_rows(summary: TraceSummary) -> list[dict[str, Any]]:
    """The run summary as what/value rows (the same facts as ``kame-sim trace show``)."""
    facts = [
        ("conversation / seed", f"{summary.conversation_id} / {summary.seed}"),
        ("trace", "complete" if summary.complete else "PARTIAL (no run_end row)"),
        ("simulated time", f"{summary.simulated_seconds:.2f} s"),
        ("frames (late)", f"{summary.frames} ({summary.late_frames})"),
        ("user words", summary.user_words),
        ("STT partials / finals", f"{summary.stt_partials} / {summary.stt_finals}"),
        ("LLM streams started", summary.llm_started),
        ("  cancelled / completed", f"{summary.llm_cancelled} / {summary.llm_completed}"),
        ("  refused by rate limit", summary.llm_rate_limited),
        ("  median time to first token", _secs(summary.ttft_median)),
        ("oracle items enqueued / dropped", f"{summary.oracle_enqueued} / {summary.oracle_dropped}"),
        ("oracle resets applied", summary.oracle_resets_applied),
        (
            "oracle tokens fed / skipped (late)",
            f"{summary.oracle_tokens_fed} / {summary.oracle_tokens_skipped}",
        ),
        ("front-end text tokens", summary.frontend_tokens),
        ("median response onset", _secs(summary.onset_median, signed=True)),
    ]
    return [{"what": w, "value": v} for w, v in facts]


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_TIMELINE_HELP = """\
Lanes, top to bottom, on one simulated-time axis:
- **user words**: the replayed user speech, one colour per utterance;
- **STT**: partial arrivals (ticks, the thin line reaching back to the speech they cover is the
  STT latency) and finals (diamonds, with their text);
- **LLM streams**: each stream from its start to done or cancel, light while waiting for the first
  token (▼), dark while streaming; red hatched = cancelled by a newer start, grey = no text;
- **oracle fed per frame**: what the front-end was fed at each 80 ms frame: START (purple), text
  tokens (green, alternating shades per chunk, the chunk's text above its first token), padding
  (grey); dashed lines mark applied resets;
- **front-end words**: the front-end's own text tokens joined into words."""


def report_for_trace(trace_path: Path, out_dir: Path, embed_images: bool = False) -> Path:
    """Write the HTML report for one trace into ``out_dir``; return the path of ``index.html``.

    ``out_dir`` gets ``index.html``, ``timeline.png`` and ``trace.perfetto.json``. A partial trace
    (a crashed run) is reported too, with a warning: that is exactly when one wants to look.
    """
    trace = read_trace(Path(trace_path))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timeline = plot_timeline(trace, out_dir / TIMELINE_PNG)
    perfetto = export_perfetto(trace, out_dir / PERFETTO_JSON)
    summary = summarize(trace)
    data = extract_timeline(trace)
    meta = trace.metadata

    run_text = (
        f"Conversation `{summary.conversation_id}`, seed `{summary.seed}`, front-end "
        f"`{meta.get('kame_sim.frontend', '?')}`, time coupling `{meta.get('kame_sim.time_coupling', '?')}`, "
        f"kame-sim {meta.get('kame_sim.version', '?')}. Trace: `{trace.path}`."
    )
    if not trace.complete:
        run_text += (
            "\n\n**This trace is PARTIAL** (no `run_end` row: the run crashed or was stopped"
            + (", and its last batch was torn" if trace.truncated else "")
            + "); everything below covers only what was recorded."
        )
    turns = [
        {
            "turn": t.utterance,
            "user speaks": f"{t.start:.2f}–{t.end:.2f} s",
            "onset": _secs(t.onset, signed=True),
        }
        for t in summary.turns
    ]
    streams = [
        {
            "stream": s.stream_id,
            "reason": s.reason,
            "user words": s.user_words,
            "start (s)": round(s.start, 3),
            "TTFT (s)": None if s.first_chunk is None else round(s.first_chunk - s.start, 3),
            "end (s)": round(s.end, 3),
            "status": s.status,
            "chunks": len(s.chunks),
            "text": _short(" ".join(text for _, text in s.chunks)),
        }
        for s in data.streams
    ]
    scenario = html.escape(json.dumps(trace.scenario, indent=2, sort_keys=True))
    sections = [
        ReportSection("Run", run_text, rows=summary_rows(summary)),
        ReportSection(
            "Response onset per user turn",
            "Start of the front-end's first speaking burst in the turn minus the end of the user's last "
            "word (negative: it started before the user finished; — : no response before the next turn).",
            rows=turns or None,
        ),
        ReportSection("Timeline", _TIMELINE_HELP, images=[timeline]),
        ReportSection("LLM streams", "", rows=streams or None),
        ReportSection(
            "Perfetto",
            "The same run as Chrome trace-event JSON: open it in ui.perfetto.dev (*Open trace file*) or "
            "chrome://tracing to zoom into single frames. Timestamps are **simulated** time.",
            links=[(PERFETTO_JSON, perfetto)],
        ),
        ReportSection(
            "Scenario (resolved)",
            f"<details><summary>show</summary><pre>{scenario}</pre></details>",
            body_is_html=True,
        ),
    ]
    title = f"kame-sim report — {summary.conversation_id} · seed {summary.seed}"
    return write_html_report(out_dir, title, sections, embed_images=embed_images)
