"""The CI gate: thresholds on aggregated sweep metrics, JUnit XML and the Markdown summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import DEMO_SCENARIO, REPO
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.errors import InputError
from kame_sim.sweep.check import load_check, run_check

ROBUSTNESS = REPO / "scenarios" / "checks" / "robustness.toml"

SWEEP = f'''base = "{DEMO_SCENARIO}"
seeds = 2
[set]
"llm.ttft" = {{ kind = "lognormal", median = 0.73, sigma = 0.32 }}
[parameters]
"llm.ttft.median" = [0.73, 2.0]
'''


def write_check(tmp_path: Path, asserts: str, sweep: str = SWEEP, name: str = "check.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'name = "gate"\n{sweep}\n{asserts}', encoding="utf-8")
    return path


def junit_cases(path: Path) -> tuple[ET.Element, list[ET.Element]]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    return suite, suite.findall("testcase")


def test_the_robustness_check_passes_on_the_demo(tmp_path: Path):
    junit, md = tmp_path / "report" / "junit.xml", tmp_path / "report" / "summary.md"
    result = run_check(ROBUSTNESS, tmp_path / "out", workers=2, junit=junit, markdown=md)
    assert result.passed, result.markdown
    assert not result.failures
    names = [o.name for o in result.assertions]
    assert "skipped-token rate <= 5 % with GPT-4.1-like TTFT" in names
    assert "median response onset <= 0.5 s" in names and names[-1] == "all runs completed"
    assert result.sweep.total == 8 and not result.sweep.failed
    onset = result.assertions[1]
    assert onset.measured is not None and onset.measured <= 0.5 and onset.n_runs == 8
    f1 = next(o for o in result.assertions if o.metric == "reply_f1_mean")
    assert f1.n_runs == 4  # the where filter kept the GPT-4.1-like point only
    assert f1.ci_low is not None and f1.ci_low <= f1.measured <= f1.ci_high

    suite, cases = junit_cases(junit)
    assert suite.get("tests") == str(len(result.assertions)) == str(len(cases))
    assert suite.get("failures") == "0"
    assert all(c.find("failure") is None for c in cases)
    text = md.read_text()
    assert text == result.markdown and "PASSED" in text
    assert "| assertion | measured | 95% CI | threshold | runs | result |" in text
    assert text.count("✅ pass") == len(result.assertions)


def test_tightening_a_threshold_fails_the_check(tmp_path: Path):
    text = ROBUSTNESS.read_text(encoding="utf-8").replace(
        'base = "../demo.toml"', f'base = "{DEMO_SCENARIO}"'
    )
    tight = text.replace("value = 0.5\n", "value = 0.1\n")  # median response onset <= 0.1 s
    assert tight != text
    check = tmp_path / "tight.toml"
    check.write_text(tight, encoding="utf-8")
    junit, md = tmp_path / "junit.xml", tmp_path / "summary.md"
    result = run_check(check, tmp_path / "out", workers=1, junit=junit, markdown=md)
    assert not result.passed
    assert [o.name for o in result.failures] == [
        "median response onset <= 0.5 s"
    ]  # name kept, value tightened
    failed = result.failures[0]
    assert failed.measured is not None and failed.measured > 0.1

    suite, cases = junit_cases(junit)
    assert suite.get("failures") == "1"
    failures = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["median response onset <= 0.5 s"]
    element = failures[0].find("failure")
    assert element is not None
    assert f"{failed.measured:.6g}" in element.get("message", "")
    assert "measured:" in (element.text or "") and "<= 0.1" in (element.text or "")
    summary = md.read_text()
    assert "FAILED" in summary and summary.count("❌ FAIL") == 1


def test_stats_ops_and_where_filters(tmp_path: Path):
    asserts = """
[[assert]]
metric = "oracle_coverage"
stat = "mean"
op = ">"
value = 0.0
where = { "llm.ttft.median" = 0.73, seed = 1 }

[[assert]]
name = "coverage falls with slow TTFT"
metric = "oracle_coverage"
stat = "max"
op = "<"
value = 0.01
where = { "llm.ttft.median" = 2.0 }

[[assert]]
metric = "onset_median_s"
stat = "min"
op = ">="
value = -10
"""
    junit = tmp_path / "j.xml"
    result = run_check(write_check(tmp_path, asserts), tmp_path / "out", workers=1, junit=junit)
    by_name = {o.name: o for o in result.assertions}
    first = by_name["mean(oracle_coverage) > 0 where llm.ttft.median = 0.73, seed = 1"]
    assert first.passed and first.n_runs == 1
    slow = by_name["coverage falls with slow TTFT"]
    assert not slow.passed and slow.n_runs == 2 and slow.measured > 0.01
    assert by_name["min(onset_median_s) >= -10"].passed
    assert not result.passed
    suite, _ = junit_cases(junit)
    assert suite.get("failures") == "1"


def test_failed_runs_and_unknown_metrics_fail_the_check(tmp_path: Path):
    sweep = f'base = "{DEMO_SCENARIO}"\n[parameters]\n"conversation.id" = ["demo", "ghost"]\n'
    asserts = '[[assert]]\nmetric = "skiped_token_rate"\nvalue = 1\n'
    with pytest.raises(InputError, match=r"unknown metric 'skiped_token_rate'.*skipped_token_rate"):
        run_check(write_check(tmp_path, asserts, sweep), tmp_path / "out", workers=1)  # before any run
    assert not (tmp_path / "out").exists()
    junit = tmp_path / "j.xml"
    asserts = '[[assert]]\nmetric = "n_turns"\nop = ">="\nvalue = 1\n'
    result = run_check(write_check(tmp_path, asserts, sweep), tmp_path / "out", workers=1, junit=junit)
    assert not result.passed
    metric, completion = result.assertions
    assert metric.passed and metric.n_runs == 1
    assert not completion.passed and "1 of 2 runs failed" in completion.message
    assert "ghost" in completion.message
    suite, _ = junit_cases(junit)
    assert suite.get("failures") == "1"

    allowed = write_check(
        tmp_path,
        '[[assert]]\nmetric = "n_turns"\nop = ">="\nvalue = 1\n',
        "allow_failed_runs = true\n" + sweep,
    )
    tolerant = run_check(allowed, tmp_path / "out", workers=1)
    assert tolerant.passed and tolerant.assertions[0].n_runs == 1


def test_check_can_reference_a_sweep_file(tmp_path: Path):
    (tmp_path / "sweep.toml").write_text(SWEEP, encoding="utf-8")
    check = tmp_path / "check.toml"
    check.write_text(
        'sweep = "sweep.toml"\n[[assert]]\nmetric = "queue_drop_rate"\nstat = "max"\nvalue = 0\n',
        encoding="utf-8",
    )
    spec = load_check(check)
    assert spec.name == "check" and len(spec.plan.runs) == 4
    assert run_check(check, tmp_path / "out", workers=1).passed


@pytest.mark.parametrize(
    ("asserts", "sweep", "field", "words"),
    [
        (
            '[[assert]]\nmetric = "m"\nvalue = 1\nwhere = { "llm.ttft.sigma" = 0.3 }\n',
            SWEEP,
            "assert[0].where.llm.ttft.sigma",
            "not a parameter",
        ),
        (
            '[[assert]]\nmetric = "m"\nvalue = 1\nwhere = { "llm.ttft.median" = 0.5 }\n',
            SWEEP,
            "assert[0].where.llm.ttft.median",
            "no run has 0.5",
        ),
        ('[[assert]]\nmetric = "m"\nvalue = 1\nstat = "p99"\n', SWEEP, "assert[0].stat", "mean"),
        ('[[assert]]\nmetric = "m"\nvalue = 1\nop = "=<"\n', SWEEP, "assert[0].op", "<="),
        ('[[assert]]\nmetric = "m"\n', SWEEP, "assert[0].value", "required"),
        ('[[assert]]\nmetric = "m"\nvalue = 1\nlimit = 2\n', SWEEP, "assert[0].limit", "unknown key"),
        ("", SWEEP, "assert", "required"),
        ('[[assert]]\nmetric = "m"\nvalue = 1\n', 'sweep = "x.toml"\n' + SWEEP, "base", "not both"),
        ('[[assert]]\nmetric = "m"\nvalue = 1\n', "seeds = 2\n", "base", "needs a sweep"),
        (
            '[[assert]]\nmetric = "m"\nvalue = 1\n',
            SWEEP.replace("0.73, 2.0", "0.73, -1.0"),
            "parameters.llm.ttft.median",
            "value -1.0",
        ),
    ],
)
def test_bad_checks_fail_before_running(tmp_path: Path, asserts: str, sweep: str, field: str, words: str):
    check = write_check(tmp_path, asserts, sweep)
    with pytest.raises(InputError) as info:
        run_check(check, tmp_path / "out", workers=1)
    assert info.value.source == str(check), info.value.one_line()
    assert info.value.field == field, info.value.one_line()
    assert words in info.value.one_line()
    assert not (tmp_path / "out").exists()


def test_where_matches_mixed_type_parameters(tmp_path: Path):
    """A parameter mixing a preset name and a number is stored as JSON text; filters still match."""
    sweep = (
        f'base = "{DEMO_SCENARIO}"\nseeds = 2\n[parameters]\n"stt.final_delay" = ["deepgram-final", 0.3]\n'
    )
    asserts = (
        '[[assert]]\nmetric = "n_turns"\nop = ">="\nvalue = 1\nwhere = { "stt.final_delay" = 0.3 }\n'
        '[[assert]]\nmetric = "n_turns"\nop = ">="\nvalue = 1\n'
        'where = { "stt.final_delay" = "deepgram-final" }\n'
    )
    result = run_check(write_check(tmp_path, asserts, sweep), tmp_path / "out", workers=1)
    assert result.passed
    assert [o.n_runs for o in result.assertions[:2]] == [2, 2]
    assert result.sweep.table.column("stt.final_delay").to_pylist() == ['"deepgram-final"'] * 2 + ["0.3"] * 2


ASSERT_ONSET = '[[assert]]\nmetric = "onset_median_s"\nstat = "median"\nop = "<="\nvalue = 5.0\n'


def test_check_batch_overrides_the_file_and_bad_values_stop_it(tmp_path: Path):
    spec = write_check(tmp_path, ASSERT_ONSET)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["check", str(spec), "--out", str(out), "--workers", "1",
                                      "--batch", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "sweep.resolved.json").read_text())["batch_size"] == 4
    bad = CliRunner().invoke(app, ["check", str(spec), "--out", str(tmp_path / "o2"), "--batch", "0"])
    assert bad.exit_code == 2 and "--batch" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()
