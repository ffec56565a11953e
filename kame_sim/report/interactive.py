"""The interactive timeline (``timeline.html``): the PNG's lanes in the browser, with zoom, pan and
hover for token ids and times.

Drawn with Bokeh, whose JavaScript goes into the page (``inline``) or, for the many timelines of a
sweep report, into one shared file next to them (:func:`write_bokeh_js`): either way the page
loads nothing from the network. The data comes from :func:`kame_sim.report.timeline.extract_timeline`
(and the oracle-following of :mod:`kame_sim.report.follow`), so the page says what the PNG says.

Bokeh is imported lazily: nothing else in kame-sim needs it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from kame_sim.report.timeline import (
    C_ADOPT,
    C_ALERT,
    C_FINAL,
    C_FLUSH,
    C_FRONT,
    C_FRONT_EDGE,
    C_IGNORED,
    C_PAD,
    C_PARTIAL,
    C_PUT_WAIT,
    C_RESET,
    C_START,
    C_STREAM,
    C_UTTER,
    C_UTTER_EDGE,
    C_WAIT,
    TimelineData,
    end_color,
    extract_timeline,
    gen_color,
    oracle_line,
    pack_streams,
)
from kame_sim.trace.reader import TraceData

TIMELINE_HTML = "timeline.html"
FIRST_VIEW_S = 15.0  # the page opens on the first 15 s
LABELS_BELOW_S = 25.0  # word and text labels are drawn while the visible span is at most this
_S_PER_CHAR = FIRST_VIEW_S / 1300 * 5.6  # seconds one 8 pt character takes in the first view

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0;
       background: #fafafa; }
main { margin: 0 auto; padding: 1em 1.5em 2em; background: #fff; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
p.sub { color: #555; margin: 0 0 .6em; }
.key { font-size: .85em; color: #444; margin: .4em 0 .8em; line-height: 1.9; }
.key span.sw { display: inline-block; width: 1.6em; height: .9em; vertical-align: middle;
               border: 1px solid #888; margin: 0 .3em 0 1em; }
.key span.sw:first-child { margin-left: 0; }
a { color: #08519c; }
"""


def _require_bokeh() -> None:
    try:
        import bokeh  # noqa: F401
    except ImportError as exc:  # pragma: no cover - bokeh is a dependency of kame-sim
        raise RuntimeError(
            "the interactive timeline needs Bokeh (pip install bokeh); it is one of kame-sim's "
            "dependencies, so reinstall with scripts/setup.sh"
        ) from exc


def bokeh_js() -> str:
    """BokehJS (the parts the timeline uses), to inline or to write once for many pages."""
    _require_bokeh()
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    bundle = bundle_for_objs_and_resources([figure()], INLINE)
    return "\n".join(bundle.js_raw)


def write_bokeh_js(directory: Path) -> Path:
    """Write BokehJS into ``directory`` as ``bokeh-<version>.min.js`` (once) and return its path."""
    import bokeh

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bokeh-{bokeh.__version__}.min.js"
    if not path.exists():
        path.write_text(bokeh_js(), encoding="utf-8")
    return path


def _script(js: str) -> str:
    return "<script>\n" + js.replace("</script", "<\\/script") + "\n</script>"


class _Rows:
    """Rows of the plot, top to bottom (y = -index), with their labels for the y axis."""

    def __init__(self) -> None:
        self.labels: list[str] = []

    def add(self, label: str, n: int = 1) -> list[float]:
        ys = [-float(len(self.labels) + i) for i in range(n)]
        self.labels.extend([label] + [""] * (n - 1))
        return ys


def _fmt(t: float | None) -> str:
    return "—" if t is None else f"{t:.3f} s"


def build_figure(data: TimelineData) -> Any:
    """The Bokeh figure of one run's timeline (see the module docstring)."""
    _require_bokeh()
    from bokeh.core.properties import field
    from bokeh.models import (
        ColumnDataSource,
        CustomJS,
        FixedTicker,
        HoverTool,
        Range1d,
    )
    from bokeh.plotting import figure

    d = data
    fs = d.frame_s
    t_end = d.t_end + fs
    rows = _Rows()
    y_user = rows.add("user words")[0]
    y_partial = rows.add("STT partials")[0]
    y_final = rows.add("STT finals")[0]
    stream_rows, n_stream, _ = pack_streams(d.streams, 1.25, 0.02)
    y_streams = rows.add("LLM streams", n_stream)
    gens = d.generations
    gen_spans = [(g.start_t, (g.tokens[-1].t if g.tokens else g.start_t) + fs) for g in gens]
    # a line's label runs past its fed span: pack by the label's width at the first view's scale
    label_ends = [
        max(b, a + len("".join(oracle_line(d, g)[:2])) * _S_PER_CHAR)
        for g, (a, b) in zip(gens, gen_spans, strict=True)
    ]
    gen_rows, n_gen = _pack_spans([(a, e) for (a, _), e in zip(gen_spans, label_ends, strict=True)], 0.2)
    y_gens = rows.add("oracle text per stream", max(1, n_gen))
    y_fed = rows.add("oracle fed per frame")[0]
    y_ftok = rows.add("front-end tokens")[0]
    y_fword = rows.add("front-end words")[0]
    h = 0.36  # half height of a box

    p = figure(
        height=int(len(rows.labels) * 30 + 90),
        sizing_mode="stretch_width",
        x_range=Range1d(0, min(t_end, FIRST_VIEW_S), bounds=(-1.0, t_end + 1.0)),
        y_range=Range1d(-len(rows.labels) + 0.4, 0.6),
        tools="xpan,xwheel_zoom,xbox_zoom,reset,save",
        active_scroll="xwheel_zoom",
        active_drag="xpan",
        x_axis_label="simulated time (s)",
        output_backend="canvas",
    )
    p.toolbar.logo = None
    p.yaxis.ticker = FixedTicker(ticks=[-float(i) for i, lab in enumerate(rows.labels) if lab])
    p.yaxis.major_label_overrides = {-float(i): lab for i, lab in enumerate(rows.labels) if lab}
    p.ygrid.grid_line_color = None
    p.xgrid.grid_line_color = "#e6e6e6"
    text_renderers = []

    def hover(renderer: Any, tips: list[tuple[str, str]]) -> None:
        p.add_tools(HoverTool(renderers=[renderer], tooltips=tips, attachment="below"))

    def boxes(
        rows_: list[dict[str, Any]], tips: list[tuple[str, str]], text: str | None = None, **kw: Any
    ) -> None:
        if not rows_:
            return
        cols = {k: [r[k] for r in rows_] for k in rows_[0]}
        src = ColumnDataSource(cols)
        r = p.quad(left="left", right="right", top="top", bottom="bottom", source=src, **kw)
        hover(r, tips)
        if text:
            cols_t = dict(cols)
            src_t = ColumnDataSource(cols_t)
            tr = p.text(
                x="left",
                y="y",
                text=text,
                source=src_t,
                text_font_size="8pt",
                text_baseline="middle",
                x_offset=2,
                text_color=field("text_color") if "text_color" in cols else "#222",
            )
            text_renderers.append(tr)

    # user words
    boxes(
        [
            {
                "left": w.start,
                "right": w.end,
                "top": y_user + h,
                "bottom": y_user - h,
                "y": y_user,
                "word": w.text,
                "utterance": w.group,
                "span": f"{w.start:.3f}–{w.end:.3f} s",
                "fill": C_UTTER[w.group % len(C_UTTER)],
                "line": C_UTTER_EDGE[w.group % len(C_UTTER)],
            }
            for w in d.user_words
        ],
        [("user word", "@word"), ("utterance", "@utterance"), ("spoken", "@span")],
        text="word",
        fill_color="fill",
        line_color="line",
    )

    # STT
    for final, y, color in ((False, y_partial, C_PARTIAL), (True, y_final, C_FINAL)):
        res = [s for s in d.stt if s.final == final]
        if not res:
            continue
        src = ColumnDataSource(
            {
                "t": [s.t for s in res],
                "speech": [s.speech_t if s.speech_t is not None else s.t for s in res],
                "y": [y] * len(res),
                "text": [s.text for s in res],
                "latency": [_fmt(s.t - s.speech_t) if s.speech_t is not None else "—" for s in res],
                "arrival": [_fmt(s.t) for s in res],
                "speech_t": [_fmt(s.speech_t) for s in res],
            }
        )
        p.segment(
            x0="speech", x1="t", y0="y", y1="y", source=src, line_color=color, line_width=1.2, alpha=0.6
        )
        r = p.scatter(
            x="t",
            y="y",
            source=src,
            marker="diamond" if final else "dash",
            size=10,
            color=color,
            angle=0 if final else 1.5708,
        )
        hover(
            r,
            [
                ("STT " + ("final" if final else "partial"), "@text"),
                ("arrived", "@arrival"),
                ("speech time", "@speech_t"),
                ("latency", "@latency"),
            ],
        )
        if final:
            tr = p.text(
                x="t",
                y="y",
                text="text",
                source=src,
                text_font_size="8pt",
                text_baseline="middle",
                x_offset=8,
                text_color=C_FINAL,
            )
            text_renderers.append(tr)

    # LLM streams: waiting (light), streaming (dark; grey if ignored), end cap coloured by outcome
    gen_of_stream = d.generation_of_stream()
    stream_boxes = []
    for s, sub in zip(d.streams, stream_rows, strict=True):
        y = y_streams[sub]
        first = s.first_chunk if s.first_chunk is not None else s.end
        text = "".join(c for _, c in s.chunks)
        common = {
            "y": y,
            "top": y + h,
            "bottom": y - h,
            "id": f"#{s.stream_id}",
            "reason": s.reason or "—",
            "start": _fmt(s.start),
            "ttft": _fmt(s.ttft),
            "adopted": _fmt(s.adopted) if s.adopted is not None else ("ignored" if s.ignored else "—"),
            "end": _fmt(s.end),
            "ending": s.ending,
            "error": s.detail if s.status == "error" else "—",
            "chunks": len(s.chunks),
            "text": (text[:300] + "…") if len(text) > 300 else text or "—",
            "text_color": gen_color(gen_of_stream.get(s.stream_id)),
            "cap": end_color(s),
            "end_x": s.end,
        }
        stream_boxes.append({**common, "left": s.start, "right": max(first, s.start + 1e-3), "fill": C_WAIT})
        if s.first_chunk is not None:
            fill = C_IGNORED if s.ignored else C_STREAM
            stream_boxes.append(
                {**common, "left": s.first_chunk, "right": max(s.end, s.first_chunk + 1e-3), "fill": fill}
            )
    stream_tips = [
        ("stream", "@id (@reason)"),
        ("started", "@start"),
        ("time to first token", "@ttft"),
        ("adopted", "@adopted"),
        ("ended", "@end: @ending"),
        ("error", "@error"),
        ("chunks", "@chunks"),
        ("text", "@text"),
    ]
    if stream_boxes:
        src = ColumnDataSource({k: [b[k] for b in stream_boxes] for k in stream_boxes[0]})
        r = p.quad(
            left="left",
            right="right",
            top="top",
            bottom="bottom",
            source=src,
            fill_color="fill",
            line_color=C_STREAM,
            line_width=0.6,
        )
        hover(r, stream_tips)
        starts = [b for b in stream_boxes if b["fill"] == C_WAIT]
        src_l = ColumnDataSource({k: [b[k] for b in starts] for k in starts[0]})
        tr = p.text(
            x="left",
            y="y",
            text="id",
            source=src_l,
            text_font_size="8pt",
            text_baseline="middle",
            x_offset=2,
            text_color=field("text_color"),
            text_font_style="bold",
        )
        text_renderers.append(tr)
        caps = [b for b in starts if b["ending"] != "done"]
        if caps:
            src_c = ColumnDataSource({k: [b[k] for b in caps] for k in caps[0]})
            rc = p.segment(
                x0="end_x",
                x1="end_x",
                y0="bottom",
                y1="top",
                source=src_c,
                line_color=field("cap"),
                line_width=4,
            )
            hover(rc, stream_tips)
    chunk_pts = [
        {"t": t, "y": y_streams[sub] + h * 0.5, "text": c, "id": f"#{s.stream_id}", "at": _fmt(t)}
        for s, sub in zip(d.streams, stream_rows, strict=True)
        for t, c in s.chunks
    ]
    if chunk_pts:
        src = ColumnDataSource({k: [c[k] for c in chunk_pts] for k in chunk_pts[0]})
        r = p.scatter(x="t", y="y", source=src, marker="dash", angle=1.5708, size=7, color="white")
        hover(r, [("chunk of", "@id"), ("text", "@text"), ("arrived", "@at")])
    adopted = [
        (s.adopted, y_streams[sub], s.stream_id)
        for s, sub in zip(d.streams, stream_rows, strict=True)
        if s.adopted is not None
    ]
    if adopted:
        src = ColumnDataSource(
            {
                "t": [a[0] for a in adopted],
                "y": [a[1] + h for a in adopted],
                "id": [f"#{a[2]}" for a in adopted],
                "at": [_fmt(a[0]) for a in adopted],
            }
        )
        r = p.scatter(x="t", y="y", source=src, marker="star", size=11, color=C_ADOPT)
        hover(r, [("adopted", "@id"), ("at", "@at")])
    waits = [
        (a, b, y_streams[sub]) for s, sub in zip(d.streams, stream_rows, strict=True) for a, b in s.put_waits
    ]
    if waits:
        p.quad(
            left=[w[0] for w in waits],
            right=[w[1] for w in waits],
            top=[w[2] + h for w in waits],
            bottom=[w[2] for w in waits],
            fill_color=C_PUT_WAIT,
            line_color=None,
        )

    # oracle: one line per generation (fed text in its colour; hover: the full text), fed frames
    line_rows = []
    for g, sub, (a, b) in zip(gens, gen_rows, gen_spans, strict=True):
        label, fed, rest = oracle_line(d, g, unfed_chars=10_000)
        y = y_gens[sub]
        line_rows.append(
            {
                "left": a,
                "right": b,
                "top": y + h,
                "bottom": y - h,
                "y": y,
                "label": f"{label}{fed}",
                "fed": fed or "—",
                "rest": rest.strip() or "—",
                "id": label.strip(),
                "start": _fmt(g.start_t),
                "n": len(g.tokens),
                "fill": gen_color(g.number, "light"),
                "line": gen_color(g.number),
                "text_color": gen_color(g.number),
            }
        )
    boxes(
        line_rows,
        [
            ("oracle of", "@id (START at @start)"),
            ("fed", "@fed"),
            ("tokens fed", "@n"),
            ("never fed", "@rest"),
        ],
        text="label",
        fill_color="fill",
        line_color="line",
        fill_alpha=0.35,
    )
    gen_of_chunk = {c: g.number for g in gens for c in g.chunks}
    pieces = {t.token_id: t.piece for t in d.frontend_tokens if t.token_id is not None}
    chunk_pos: dict[int, int] = {}
    fed_rows = []
    for f in d.oracle_frames:
        if f.kind == "pad":
            continue
        if f.kind == "start":
            fill, what, stream = C_START, "START", "—"
        else:
            gen = gen_of_chunk.get(f.chunk) if f.chunk is not None else None
            fill = gen_color(gen, "dark" if (f.chunk or 0) % 2 == 0 else "mid")
            if f.chunk is not None:
                c = d.oracle_chunks[f.chunk]
                k = chunk_pos[f.chunk] = chunk_pos.get(f.chunk, 0) + 1
                what = f"token {k}/{c.n_tokens} of chunk '{c.text.strip()}'"
                stream = f"#{c.stream_id}"
            else:
                what, stream = "text", "—"
            if f.token_id in pieces:
                what += f" (piece '{pieces[f.token_id]}')"
        fed_rows.append(
            {
                "left": f.t,
                "right": f.t + fs,
                "top": y_fed + h,
                "bottom": y_fed - h,
                "frame": f.frame,
                "at": _fmt(f.t),
                "token": f.token_id,
                "index": f.oracle_index,
                "what": what,
                "stream": stream,
                "fill": fill,
            }
        )
    boxes(
        fed_rows,
        [
            ("oracle fed", "@what"),
            ("frame", "@frame at @at"),
            ("token id", "@token"),
            ("oracle index", "@index"),
            ("stream", "@stream"),
        ],
        fill_color="fill",
        line_color=None,
    )
    if d.oracle_frames:  # padding as one light band
        p.quad(
            left=[d.oracle_frames[0].t],
            right=[d.oracle_frames[-1].t + fs],
            top=[y_fed + h * 0.6],
            bottom=[y_fed - h * 0.6],
            fill_color=C_PAD,
            line_color=None,
            level="underlay",
        )
    if d.resets:
        src = ColumnDataSource(
            {
                "t": [r.t for r in d.resets],
                "id": [f"#{r.stream_id}" for r in d.resets],
                "at": [_fmt(r.t) for r in d.resets],
                "frame": [r.frame for r in d.resets],
            }
        )
        p.segment(
            x0="t",
            x1="t",
            y0=y_streams[-1] - h,
            y1=y_fword - h,
            source=src,
            line_color=C_RESET,
            line_dash="dashed",
            line_alpha=0.6,
        )
        r = p.scatter(x="t", y=y_fed + h, source=src, marker="inverted_triangle", size=8, color=C_RESET)
        hover(r, [("reset to", "@id"), ("applied", "frame @frame at @at")])
    alerts = (
        [(q.t, y_fed, "queue full: put dropped", C_ALERT, "x") for q in d.drops]
        + [(q.t, y_fed, f"flush: {q.detail} items", C_FLUSH, "square") for q in d.flushes]
        + [
            (c.applied_t, y_fed, f"{c.n_skipped} tokens late, skipped", C_ALERT, "triangle")
            for c in d.oracle_chunks
            if c.n_skipped
        ]
        + [
            (e.t, y_streams[0], "start refused (rate limit)", C_ALERT, "x")
            for e in d.decisions
            if e.kind == "rate_limited"
        ]
    )
    if alerts:
        src = ColumnDataSource(
            {
                "t": [a[0] for a in alerts],
                "y": [a[1] for a in alerts],
                "what": [a[2] for a in alerts],
                "c": [a[3] for a in alerts],
                "m": [a[4] for a in alerts],
                "at": [_fmt(a[0]) for a in alerts],
            }
        )
        r = p.scatter(x="t", y="y", source=src, marker=field("m"), color=field("c"), size=9, line_width=2)
        hover(r, [("", "@what"), ("at", "@at")])

    # front-end tokens (one box per text token) and words, coloured by what they followed
    tok_rows = []
    toks = d.frontend_tokens
    for i, t in enumerate(toks):
        nxt = toks[i + 1].t if i + 1 < len(toks) and toks[i + 1].burst == t.burst else t.t + fs
        if t.follows:
            source = (
                f"oracle {'#' + str(t.stream_id) if t.stream_id is not None else ''} index {t.oracle_index}"
            )
            source += f" (fed at frame {t.fed_frame})"
        else:
            source = "own guess"
        tok_rows.append(
            {
                "left": t.t,
                "right": max(nxt, t.t + fs),
                "top": y_ftok + h,
                "bottom": y_ftok - h,
                "y": y_ftok,
                "piece": t.piece,
                "token": t.token_id,
                "frame": t.frame,
                "at": _fmt(t.t),
                "source": source,
                "fill": gen_color(t.generation, "light") if t.follows else C_FRONT,
                "line": gen_color(t.generation) if t.follows else C_FRONT_EDGE,
            }
        )
    boxes(
        tok_rows,
        [("front-end token", "'@piece' (id @token)"), ("frame", "@frame at @at"), ("follows", "@source")],
        text="piece",
        fill_color="fill",
        line_color="line",
    )
    word_rows = []
    for w in d.frontend_words:
        src_text = {
            "oracle": f"oracle #{w.stream_id}",
            "guess": "own guess",
            "mixed": f"partly own guess, partly oracle #{w.stream_id}",
        }.get(w.source or "", "—")
        word_rows.append(
            {
                "left": w.start,
                "right": w.end,
                "top": y_fword + h,
                "bottom": y_fword - h,
                "y": y_fword,
                "word": w.text,
                "source": src_text,
                "span": f"{w.start:.3f}–{w.end:.3f} s",
                "ids": " ".join(str(t.token_id) for t in w.tokens),
                "fill": C_FRONT if w.source == "guess" else gen_color(w.generation, "light"),
                "line": C_FRONT_EDGE if w.source != "oracle" else gen_color(w.generation),
            }
        )
    boxes(
        word_rows,
        [("front-end word", "@word"), ("follows", "@source"), ("token ids", "@ids"), ("spoken", "@span")],
        text="word",
        fill_color="fill",
        line_color="line",
    )
    if d.switches:
        src = ColumnDataSource(
            {
                "t": [s.t for s in d.switches],
                "y": [y_ftok + h + 0.1] * len(d.switches),
                "c": [gen_color(s.generation) for s in d.switches],
                "m": ["triangle" if s.kind == "guess→oracle" else "diamond" for s in d.switches],
                "what": [f"{s.kind} #{s.stream_id}" for s in d.switches],
                "at": [_fmt(s.t) for s in d.switches],
            }
        )
        r = p.scatter(x="t", y="y", source=src, marker=field("m"), color=field("c"), size=11)
        hover(r, [("switch", "@what"), ("at", "@at")])
    if d.late_frames:
        p.segment(
            x0=d.late_frames,
            x1=d.late_frames,
            y0=y_ftok + h,
            y1=y_fword - h,
            line_color=C_ALERT,
            line_alpha=0.5,
        )

    # labels only when zoomed in far enough to read them
    toggle = CustomJS(
        args={"xr": p.x_range, "labels": text_renderers, "limit": LABELS_BELOW_S},
        code="const show = (xr.end - xr.start) <= limit; for (const r of labels) { r.visible = show; }",
    )
    p.x_range.js_on_change("start", toggle)
    p.x_range.js_on_change("end", toggle)
    for tr in text_renderers:
        tr.visible = min(t_end, FIRST_VIEW_S) <= LABELS_BELOW_S
    return p


def _pack_spans(spans: list[tuple[float, float]], gap: float) -> tuple[list[int], int]:
    ends: list[float] = []
    rows = []
    for a, b in spans:
        for i, e in enumerate(ends):
            if a >= e + gap:
                ends[i] = b
                rows.append(i)
                break
        else:
            ends.append(b)
            rows.append(len(ends) - 1)
    return rows, len(ends)


def _key_html() -> str:
    items = [
        (C_WAIT, "LLM waiting"),
        (C_STREAM, "LLM streaming"),
        (C_START, "oracle START"),
        (gen_color(0), "oracle tokens of one stream (one colour per stream)"),
        (gen_color(0, "light"), "front-end token / word following that stream's oracle"),
        (C_FRONT, "front-end's own guess"),
    ]
    spans = "".join(f'<span class="sw" style="background:{c}"></span>{html.escape(t)}' for c, t in items)
    return (
        f'<div class="key">{spans}<br>▲ switch from the guess to an oracle · ◆ switch to a newer oracle · '
        "end caps: red superseded, purple adoption, orange limit, black error · ★ adopted · "
        "dashed purple: reset applied</div>"
    )


def write_interactive_timeline(
    trace: TraceData,
    path: Path,
    *,
    js_src: str | None = None,
    links: list[tuple[str, str]] | None = None,
) -> Path:
    """Write the interactive timeline of ``trace`` to ``path`` (HTML) and return ``path``.

    With ``js_src`` (a URL relative to the page, e.g. from :func:`write_bokeh_js`) the page loads
    BokehJS from there; without it BokehJS is inlined and the page is a single file. ``links``
    (label, relative URL) are shown under the title (e.g. back to the report).
    """
    _require_bokeh()
    from bokeh.embed import components

    data = extract_timeline(trace)
    fig = build_figure(data)
    script, div = components(fig)
    title = f"kame-sim timeline — {data.conversation_id} · seed {data.seed}"
    facts = [
        f"policy {data.policy}",
        f"front-end {data.frontend}",
        f"time coupling {data.time_coupling}",
        f"{data.t_end:.1f} s simulated",
    ]
    if data.run_name:
        facts.insert(0, f"run {data.run_name}")
    if not trace.complete:
        facts.append("PARTIAL trace (no run_end)")
    nav = " · ".join(f'<a href="{html.escape(u)}">{html.escape(lbl)}</a>' for lbl, u in links or [])
    js = f'<script src="{html.escape(js_src)}"></script>' if js_src else _script(bokeh_js())
    doc = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n{js}\n</head>\n<body>\n<main>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="sub">{html.escape(" · ".join(facts))}'
        + (f" — {nav}" if nav else "")
        + '</p>\n<p class="sub">Scroll to zoom, drag to pan, hover for token ids and times; labels '
        f"appear once at most {LABELS_BELOW_S:g} s are in view.</p>\n"
        + _key_html()
        + f"\n{div}\n{script}\n</main>\n</body>\n</html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
