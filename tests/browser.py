"""Open a page in a real headless Chromium and report what a person would see go wrong.

The page is copied next to itself (so its relative links still resolve) with a small script put at
the top of ``<head>``: it records every uncaught error, failed resource load (capture-phase
``error`` events: a missing picture or script) and ``console.error`` / ``console.warn``, and
after the load event (plus a settle time for Bokeh's rendering) writes what it found into the DOM
as JSON: the errors, each ``<img>`` (loaded or not, its natural size) and the Bokeh plots drawn
(root views, canvases inside their shadow roots). Chromium's ``--dump-dom`` prints that DOM;
``--enable-logging=stderr`` adds the console messages Chromium itself logged, so an uncaught error
thrown before the script ran is not missed either.

Chromium is Debian's ``chromium`` package (scripts/setup.sh installs it when running as root), or
the browser named by ``KAME_SIM_CHROMIUM``. :func:`find_chromium` raises with the fix when there
is none: a browser test must fail, not skip, where the browser is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_PROBE = """<script id="kame-browser-probe">
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { errors.push("failed to load: " + (t.src || t.href)); }
    else { errors.push("uncaught: " + (e.message || e)); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection: " + e.reason);
  });
  ["error", "warn"].forEach(function (level) {
    var orig = console[level];
    console[level] = function () {
      errors.push("console." + level + ": " + Array.prototype.join.call(arguments, " "));
      return orig.apply(console, arguments);
    };
  });
  function canvases(root) {
    var n = 0;
    root.querySelectorAll("*").forEach(function (el) {
      if (el.tagName === "CANVAS" && el.width > 0 && el.height > 0) { n += 1; }
      if (el.shadowRoot) { n += canvases(el.shadowRoot); }
    });
    return n;
  }
  window.addEventListener("load", function () {
    setTimeout(function () {
      var out = {errors: errors, images: [], bokeh: null};
      Array.prototype.forEach.call(document.images, function (img) {
        out.images.push({src: (img.getAttribute("src") || "").slice(0, 120),
                         loaded: img.complete && img.naturalWidth > 0,
                         marked: img.dataset.loaded || null,
                         width: img.naturalWidth, height: img.naturalHeight});
      });
      if (window.Bokeh) {
        out.bokeh = {documents: window.Bokeh.documents.length,
                     views: Object.keys(window.Bokeh.index || {}).length,
                     canvases: canvases(document)};
      }
      var pre = document.createElement("pre");
      pre.id = "kame-browser-result";
      pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);
    }, %(settle_ms)d);
  });
})();
</script>"""

_RESULT = re.compile(r'<pre id="kame-browser-result">(.*?)</pre>', re.S)
_CONSOLE = re.compile(r":CONSOLE[^\]]*\] \"(.*)\", source: (\S*)")


class ChromiumMissing(RuntimeError):
    pass


def find_chromium() -> str:
    """The Chromium to use: ``$KAME_SIM_CHROMIUM``, else the first of :data:`CANDIDATES` on PATH."""
    given = os.environ.get("KAME_SIM_CHROMIUM")
    if given:
        if shutil.which(given) is None:
            raise ChromiumMissing(f"KAME_SIM_CHROMIUM={given!r} is not an executable")
        return given
    for name in CANDIDATES:
        if shutil.which(name):
            return name
    raise ChromiumMissing(
        "no headless Chromium found (looked for " + ", ".join(CANDIDATES) + " on PATH). The browser "
        "test needs one: run `bash scripts/setup.sh` as root (it installs Debian's chromium package "
        "with apt-get), or `apt-get install chromium` yourself, or set KAME_SIM_CHROMIUM to a "
        "Chromium/Chrome executable."
    )


@dataclass
class PageCheck:
    """What the browser saw: errors (page and Chromium's console log), pictures, Bokeh plots."""

    errors: list[str]
    images: list[dict]
    bokeh: dict | None
    dom: str

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["loaded"] or i["marked"] == "failed"]


def check_page(page: Path, *, settle_ms: int = 1500, timeout: float = 120.0) -> PageCheck:
    """Open ``page`` (an HTML file) in headless Chromium and return what went wrong there."""
    page = Path(page).resolve()
    probe = page.with_name(f".browser-check-{page.name}")
    text = page.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", text)
    if head is None:
        raise ValueError(f"{page}: no <head>")
    probe.write_text(
        text[: head.end()] + _PROBE % {"settle_ms": settle_ms} + text[head.end() :], encoding="utf-8"
    )
    chromium = find_chromium()
    args = [
        chromium,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--allow-file-access-from-files",
        f"--virtual-time-budget={settle_ms + 5000}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        probe.as_uri(),
    ]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        probe.unlink(missing_ok=True)
    match = _RESULT.search(proc.stdout)
    if match is None:
        raise RuntimeError(
            f"{chromium} did not render {page.name} (exit {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
        )
    import html

    result = json.loads(html.unescape(match.group(1)))
    errors = list(result["errors"])
    for msg, _source in _CONSOLE.findall(proc.stderr):
        if msg.startswith("Uncaught") and not any(msg in e for e in errors):
            errors.append("console: " + msg)
    return PageCheck(errors, result["images"], result["bokeh"], proc.stdout)
