"""``kame-sim search`` end to end on the demo (4 trials x 1 seed, real simulation), and bad input
as one line with exit code 2 before anything is written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
from cli_helpers import one_line_error
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.config import load_scenario
from kame_sim.output_dir import MANIFEST
from kame_sim.trace import read_trace
from tests.conftest import REPO

runner = CliRunner()
BUNDLED = REPO / "scenarios" / "search" / "worst-within-envelope.toml"


def small_spec(tmp_path: Path, trials: int = 4) -> Path:
    """The bundled search, cut to ``trials`` trials of one seed (a few seconds)."""
    text = BUNDLED.read_text(encoding="utf-8")
    text = text.replace('base = "../demo.toml"', f'base = "{REPO / "scenarios" / "demo.toml"}"')
    text = text.replace('path = "../data/demo"', f'path = "{REPO / "scenarios" / "data" / "demo"}"')
    text = re.sub(r"(?m)^seeds = \d+", "seeds = 1", text)
    text = re.sub(r"(?m)^trials = \d+", f"trials = {trials}", text)
    text = re.sub(r"(?m)^startup_trials = \d+", "startup_trials = 2", text)
    assert f"\ntrials = {trials}\n" in text and "\nseeds = 1 " in text
    path = tmp_path / "search.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_search_on_the_demo_writes_every_output(tmp_path: Path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["search", str(small_spec(tmp_path)), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = result.output
    assert "search worst-within-envelope: 4 trials (4 run now, 0 resumed)" in summary
    assert "best: " in summary and "base scenario" in summary
    assert (out / "summary.txt").read_text(encoding="utf-8").strip() == summary.strip()

    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert [r["number"] for r in rows] == [0, 1, 2, 3]
    assert all(0.25 <= r["llm.ttft.median"] <= 1.5 and 0.05 <= r["llm.ttft.sigma"] <= 1.2 for r in rows)
    # every trial folder is a sweep folder whose run the objective was computed from
    for row in rows:
        runs = pq.read_table(out / row["folder"] / "results.parquet").to_pylist()
        assert len(runs) == 1 and runs[0]["status"] == "ok"
        assert runs[0]["reply_f1_mean"] == row["objective"]
        assert runs[0]["llm.ttft.median"] == row["llm.ttft.median"]
        assert (runs[0]["ttft_median_s"] <= 1.5) == row["feasible"]
    best = sorted((out / "best").glob("*.toml"))
    assert 1 <= len(best) <= 3
    first = best[0]
    assert first.name.startswith("1-trial")
    number = int(first.name.split("-")[1].removeprefix("trial"))
    winner = next(r for r in rows if r["number"] == number)
    assert winner["objective"] == min(r["objective"] for r in rows if r["feasible"])
    # the best file is a runnable scenario with the winner's parameters
    scenario = load_scenario(first)
    assert scenario.llm.ttft.median == winner["llm.ttft.median"]  # type: ignore[union-attr]
    assert scenario.llm.ttft.sigma == winner["llm.ttft.sigma"]  # type: ignore[union-attr]
    run = runner.invoke(app, ["run", str(first), "--out", str(tmp_path / "rerun"), "--quiet"])
    assert run.exit_code == 0, run.output
    assert read_trace(tmp_path / "rerun").complete
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert 'src="search.png"' in html and "Trials" in html
    assert (out / "report" / "search.png").stat().st_size > 10_000
    listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    assert {"study.journal", "trials.parquet", "summary.txt", "search.resolved.json"} <= set(listed)

    # again without --resume: refused before anything runs, nothing changed
    before = (out / "trials.parquet").read_bytes()
    again = runner.invoke(app, ["search", str(small_spec(tmp_path)), "--out", str(out), "--quiet"])
    assert again.exit_code == 2 and "--resume continues it" in again.output
    assert (out / "trials.parquet").read_bytes() == before


def test_bad_specs_fail_in_one_line_and_write_nothing(tmp_path: Path):
    good = small_spec(tmp_path).read_text(encoding="utf-8")
    cases = {
        "metric": (good.replace('metric = "reply_f1_mean"', 'metric = "reply_f1"'), "objective.metric"),
        "bounds": (
            good.replace("low = 0.05, high = 1.2", "low = 1.2, high = 0.05"),
            "space.llm.ttft.sigma",
        ),
        "key": (
            good.replace('"llm.ttft.sigma"', '"llm.ttft.sigmaa"'),
            "space.llm.ttft.sigmaa",
        ),
        "trials": (good.replace("trials = 4", "trials = 0"), "search.trials"),
        "hostile": (good.replace('name = "worst-within-envelope"', 'name = "../../x"'), "name"),
    }
    for label, (text, field) in cases.items():
        assert text != good, label
        path = tmp_path / f"{label}.toml"
        path.write_text(text, encoding="utf-8")
        out = tmp_path / f"out-{label}"
        line = one_line_error(runner.invoke(app, ["search", str(path), "--out", str(out), "--quiet"]))
        assert line.startswith("error: ") and f": {field}: " in line, (label, line)
        assert not out.exists(), label
    # --set is checked like the file
    bad_set = runner.invoke(
        app,
        ["search", str(small_spec(tmp_path)), "--out", str(tmp_path / "o"), "--set", "llm.nope=1", "--quiet"],
    )
    assert "llm.nope" in one_line_error(bad_set)
    # a file kame-sim did not write is never overwritten
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "trials.parquet").write_text("my notes", encoding="utf-8")
    refused = runner.invoke(app, ["search", str(small_spec(tmp_path)), "--out", str(mine), "--quiet"])
    assert refused.exit_code == 2 and "not written by kame-sim" in refused.output
    assert (mine / "trials.parquet").read_text(encoding="utf-8") == "my notes"
