"""``kame-sim check --baseline``: regressions against a baseline sweep, judged per design point."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from conftest import DEMO_SCENARIO
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.compare import SweepResults
from kame_sim.errors import InputError
from kame_sim.sweep.check import BaselineCheck, judge_baseline, run_check
from kame_sim.sweep.runner import run_sweep
from kame_sim.sweep.spec import PlannedRun

SWEEP = f'''base = "{DEMO_SCENARIO}"
seeds = {{seeds}}
[set]
"llm.ttft" = {{{{ kind = "lognormal", median = 0.73, sigma = 0.32 }}}}
{{extra}}
[parameters]
"llm.ttft.median" = [0.73, 2.0]
'''

BASELINES = """
[[baseline]]
name = "response onset"
metric = "onset_median_s"
direction = "lower"
tolerance = 0.1

[[baseline]]
metric = "fdb_turn_taking_tor"
direction = "higher"
tolerance = 0.05
relative = true
"""


def sweep_text(seeds: str = "5", extra: str = "") -> str:
    return SWEEP.format(seeds=seeds, extra=extra)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    spec = root / "base.toml"
    spec.write_text(sweep_text(), encoding="utf-8")
    return run_sweep(spec, root / "sweep", workers=1).out_dir


def write_check(tmp_path: Path, sweep: str, tables: str = BASELINES, header: str = "") -> Path:
    path = tmp_path / "check.toml"
    path.write_text(f'name = "vs-baseline"\n{header}\n{sweep}\n{tables}', encoding="utf-8")
    return path


def test_an_injected_regression_fails_and_names_the_worst_runs(tmp_path: Path, baseline: Path):
    # the behavioural front-end waits 0.5 s longer before it takes the turn: onsets get later
    slower = '"frontend.kind" = "behavioural"\n"frontend.turn_take_pause" = 0.74'
    check = write_check(tmp_path, sweep_text(extra=slower))
    junit, md = tmp_path / "junit.xml", tmp_path / "summary.md"
    result = run_check(check, tmp_path / "out", workers=1, junit=junit, markdown=md, baseline=baseline)
    assert not result.passed
    onset = [o for o in result.baseline if o.metric == "onset_median_s"]
    assert [o.point for o in onset] == ["llm.ttft.median=0.73", "llm.ttft.median=2.0"]
    for o in onset:
        assert not o.passed and o.regression is not None and o.regression > 0.3
        assert o.ci_low is not None and o.ci_low > 0 and o.n_pairs == 5 and o.ci_method == "paired (runs)"
        assert len(o.worst_runs) == 3 and "seed" in o.worst_runs[0]
    worst_run = onset[0].worst_runs[0].split(" ")[0]
    assert worst_run in set(result.sweep.table.column("run_id").to_pylist())
    assert {o.name for o in result.failures} >= {"response onset"}
    text = md.read_text()
    assert text == result.markdown and "FAILED" in text and "### Against the baseline" in text
    assert "Worst runs:" in text and worst_run in text
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) == str(len(result.assertions) + len(result.baseline))
    failed = [c for c in cases if c.find("failure") is not None]
    assert any(f"worst run: {worst_run}" in (c.find("failure").text or "") for c in failed)
    # the CLI says the same and exits 1
    cli = CliRunner().invoke(
        app,
        ["check", str(check), "--out", str(tmp_path / "cli"), "--workers", "1", "--baseline", str(baseline)],
    )
    assert cli.exit_code == 1 and "Against the baseline" in cli.output


def test_no_regression_passes(tmp_path: Path, baseline: Path):
    same = run_check(write_check(tmp_path, sweep_text()), tmp_path / "same", workers=1, baseline=baseline)
    assert same.passed, same.markdown
    assert all(o.regression == 0.0 and o.passed for o in same.baseline)
    assert len(same.baseline) == 4  # two tables × two design points
    # other seeds of the same settings: nothing changed, nothing flagged
    other = write_check(tmp_path, sweep_text(seeds="[5, 6, 7, 8, 9]"))
    result = run_check(other, tmp_path / "other", workers=1, baseline=baseline / "results.parquet")
    assert result.passed, result.markdown
    assert {o.ci_method for o in result.baseline} == {"unpaired (runs)"}


def test_judge_mean_ignores_significance_and_the_file_can_name_the_baseline(tmp_path: Path, baseline: Path):
    tables = """
[[baseline]]
metric = "onset_median_s"
direction = "higher"   # pretend later is better: the same runs now "improved" past any tolerance
tolerance = 0.0
judge = "mean"
where = { "llm.ttft.median" = 2.0 }
"""
    header = f'baseline_results = "{baseline}"'
    result = run_check(
        write_check(tmp_path, sweep_text(seeds="[5, 6, 7, 8, 9]"), tables, header), tmp_path / "o"
    )
    (o,) = result.baseline
    assert o.point == "llm.ttft.median=2.0" and o.judge == "mean"
    # a mean-judged table fails on any regression beyond the tolerance, significant or not
    assert o.passed == (o.regression is not None and o.regression <= 0.0)


def test_baseline_input_errors(tmp_path: Path, baseline: Path):
    with pytest.raises(InputError, match="need a baseline"):
        run_check(write_check(tmp_path, sweep_text()), tmp_path / "o")
    plain = write_check(
        tmp_path, sweep_text(), tables='[[assert]]\nmetric = "turn_over_rate"\nop = ">="\nvalue = 0\n'
    )
    with pytest.raises(InputError, match="no \\[\\[baseline\\]\\] tables"):
        run_check(plain, tmp_path / "o", baseline=baseline)
    unknown = write_check(
        tmp_path, sweep_text(), tables='[[baseline]]\nmetric = "nope"\ndirection = "lower"\n'
    )
    with pytest.raises(InputError, match="nope"):
        run_check(unknown, tmp_path / "o", baseline=baseline)
    bad = write_check(tmp_path, sweep_text(), tables='[[baseline]]\nmetric = "x"\ndirection = "down"\n')
    with pytest.raises(InputError, match="direction"):
        run_check(bad, tmp_path / "o", baseline=baseline)
    negative = write_check(
        tmp_path, sweep_text(), tables='[[baseline]]\nmetric = "x"\ndirection = "lower"\ntolerance = -1\n'
    )
    with pytest.raises(InputError, match="tolerance"):
        run_check(negative, tmp_path / "o", baseline=baseline)
    with pytest.raises(InputError, match=r"results\.parquet"):
        run_check(write_check(tmp_path, sweep_text()), tmp_path / "o", baseline=tmp_path / "nowhere")
    cli = CliRunner().invoke(
        app, ["check", str(write_check(tmp_path, sweep_text())), "--out", str(tmp_path / "o")]
    )
    assert cli.exit_code == 2 and len(cli.output.strip().splitlines()) == 1


def synthetic(points: int, shift: float, seed: int) -> tuple[pa.Table, pa.Table, SimpleNamespace]:
    """A baseline and a current sweep of ``points`` design points × 8 conversations × 3 seeds that
    share their (conversation, seed) effects; the current one is worse by ``shift``."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.0, 1.0, size=(points, 8, 3))
    tables, runs = [], []
    for side, extra in (("base", 0.0), ("cur", shift)):
        rows: dict[str, list] = {
            k: [] for k in ("run_id", "status", "error", "conversation_id", "seed", "x", "m")
        }
        for p in range(points):
            for c in range(8):
                for s in range(3):
                    run_id = f"{side}-{p}-{c}-{s}"
                    rows["run_id"].append(run_id)
                    rows["status"].append("ok")
                    rows["error"].append(None)
                    rows["conversation_id"].append(f"c{c}")
                    rows["seed"].append(s)
                    rows["x"].append(float(p))
                    rows["m"].append(effect[p, c, s] + rng.normal(0.0, 0.3) + extra)
                    if side == "cur":
                        runs.append(PlannedRun(run_id, p, {"x": float(p)}, s, f"c{c}", {}))
        tables.append(pa.table(rows))
    return tables[0], tables[1], SimpleNamespace(parameter_keys=["x"], runs=runs)


def test_seed_noise_alone_fails_a_point_at_most_at_about_the_one_sided_rate():
    base, cur, plan = synthetic(300, 0.0, seed=1)
    check = BaselineCheck(metric="m", direction="lower", tolerance=0.0)
    outcomes = judge_baseline(check, cur, plan, SweepResults(Path("base"), base, ["x"]))
    assert len(outcomes) == 300 and {o.ci_method for o in outcomes} == {"paired (cluster)"}
    rate = np.mean([not o.passed for o in outcomes])
    assert 0.005 <= rate <= 0.06, rate  # one-sided: nominal 2.5 %
    # a regression twice the tolerance is found at every point, and its worst runs are named
    base, cur, plan = synthetic(50, 0.4, seed=2)
    check = BaselineCheck(metric="m", direction="lower", tolerance=0.2)
    outcomes = judge_baseline(check, cur, plan, SweepResults(Path("base"), base, ["x"]))
    assert all(not o.passed for o in outcomes)
    assert all(o.worst_runs and o.worst_runs[0].startswith("cur-") for o in outcomes)
    # direction "higher": the same shift is an improvement
    up = BaselineCheck(metric="m", direction="higher", tolerance=0.0)
    assert all(
        o.passed and o.regression < 0
        for o in judge_baseline(up, cur, plan, SweepResults(Path("b"), base, ["x"]))
    )
