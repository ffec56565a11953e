"""The HTML reports opened in a real headless Chromium (tests/browser.py): no console error, every
picture loaded, the interactive timelines drawn. Where no Chromium is installed these tests FAIL
with the fix (scripts/setup.sh installs Debian's chromium as root): a report nobody can open
is a broken report, and a skipped test would hide it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from browser import ChromiumMissing, check_page, find_chromium
from conftest import DEMO_SCENARIO

from kame_sim.config import load_scenario
from kame_sim.report import report_for_trace
from kame_sim.report.sweep_report import report_for_sweep
from kame_sim.runner import run_scenario
from kame_sim.sweep.runner import run_sweep


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return find_chromium()
    except ChromiumMissing as exc:  # fail, never skip: say what to install
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario(load_scenario(DEMO_SCENARIO), tmp_path_factory.mktemp("demo") / "run").run_dir


@pytest.fixture(scope="module")
def run_report(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return report_for_trace(demo_run, tmp_path_factory.mktemp("report")).parent


def assert_clean(check, n_images: int) -> None:
    assert check.errors == [], check.errors
    assert len(check.images) == n_images, check.images
    assert check.broken_images == [], check.broken_images
    assert all(i["marked"] == "yes" and i["width"] > 300 for i in check.images), check.images


def test_run_report_opens_without_errors_and_its_picture_loads(chromium: str, run_report: Path):
    check = check_page(run_report / "index.html")
    assert_clean(check, n_images=1)
    assert check.images[0]["src"] == "timeline.png"
    assert 'href="timeline.html"' in check.dom  # the interactive timeline is linked


def test_interactive_timeline_draws_with_its_inlined_bokeh(chromium: str, run_report: Path):
    page = run_report / "timeline.html"
    assert "<script src=" not in page.read_text(encoding="utf-8")  # a single file: nothing to fetch
    check = check_page(page)
    assert check.errors == [], check.errors
    assert check.bokeh is not None and check.bokeh["documents"] == 1, check.bokeh
    assert check.bokeh["views"] >= 1 and check.bokeh["canvases"] >= 1, check.bokeh


def test_embedded_report_is_one_file(chromium: str, demo_run: Path, tmp_path: Path):
    out = tmp_path / "embedded"
    index = report_for_trace(demo_run, out, embed_images=True)
    (out / "timeline.png").unlink()  # the page must not need it
    check = check_page(index)
    assert_clean(check, n_images=1)
    assert check.images[0]["src"].startswith("data:image/png;base64,")


def test_the_checker_sees_a_missing_picture_and_a_script_error(
    chromium: str, run_report: Path, tmp_path: Path
):
    """The browser check itself: a report copied without its picture, and a page that throws."""
    copy = tmp_path / "copy"
    shutil.copytree(run_report, copy)
    (copy / "timeline.png").unlink()
    check = check_page(copy / "index.html")
    assert [i["marked"] for i in check.images] == ["failed"]
    assert any("failed to load" in e and "timeline.png" in e for e in check.errors), check.errors
    assert "picture not found: timeline.png" in check.dom  # what a person sees
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head></head><body><script>nope();</script></body></html>")
    assert any("nope is not defined" in e for e in check_page(bad).errors)


def test_sweep_report_and_its_linked_timelines_open_without_errors(chromium: str, tmp_path: Path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        f'base = "{DEMO_SCENARIO}"\nseeds = 1\n[set]\n'
        '"llm.ttft" = { kind = "lognormal", median = 0.73, sigma = 0.32 }\n'
        '[parameters]\n"llm.ttft.median" = [0.5, 2.0]\n',
        encoding="utf-8",
    )
    run_sweep(spec, tmp_path / "sweep", workers=1)
    index = report_for_sweep(tmp_path / "sweep", tmp_path / "report", timelines=1)
    check = check_page(index)
    assert_clean(check, n_images=1)
    pages = sorted((tmp_path / "report" / "runs").glob("*.html"))
    assert len(pages) == 2 and all(f'href="runs/{p.name}"' in check.dom for p in pages)
    timeline = check_page(pages[0])  # BokehJS from the report's shared js/ folder
    assert timeline.errors == [], timeline.errors
    assert timeline.bokeh is not None and timeline.bokeh["canvases"] >= 1, timeline.bokeh
