"""--from/--to of compare's and fork's pictures: only that part is drawn; bad times are one line."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from conftest import DEMO_SCENARIO
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.compare import check_t_range, plot_comparison
from kame_sim.config import load_scenario
from kame_sim.errors import InputError
from kame_sim.runner import run_scenario
from kame_sim.trace import read_trace

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    a = run_scenario(load_scenario(DEMO_SCENARIO), base / "a").run_dir
    b = run_scenario(load_scenario(DEMO_SCENARIO, {"policy.kind": "multiplexer"}), base / "b").run_dir
    return a, b


def test_a_window_draws_one_pair_of_panels(two_runs, tmp_path):
    a, b = (read_trace(p) for p in two_runs)
    full = mpimg.imread(plot_comparison(a, b, tmp_path / "full.png"))
    part = mpimg.imread(plot_comparison(a, b, tmp_path / "part.png", t_range=(14.0, 30.0), mark_at=18.5))
    # the demo is 38 s: two windows of 20 s (four panels) against one of 16 s (two panels)
    assert part.shape[0] < 0.7 * full.shape[0]
    assert part.shape[1] < full.shape[1]  # 16 s at the same scale is narrower than 20 s


@given(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
       st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_any_window_is_accepted_or_one_line(start, end):
    def fine(x):
        return x is None or (math.isfinite(x) and 0 <= x <= 1e7)

    ok = fine(start) and fine(end) and (start is None or end is None or end > start)
    if ok:
        assert check_t_range(start, end) == (start, end)
    else:
        with pytest.raises(InputError) as info:
            check_t_range(start, end)
        assert info.value.field in ("--from", "--to") and "\n" not in info.value.one_line()


@pytest.mark.parametrize("argv", [["--from", "nan"], ["--from", "-1"], ["--from", "5", "--to", "3"]])
def test_compare_refuses_a_bad_window_before_drawing(two_runs, tmp_path, argv):
    a, b = two_runs
    out = tmp_path / "cmp.png"
    result = runner.invoke(app, ["compare", str(a), str(b), "--out", str(out), *argv])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_compare_draws_the_window(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "cmp.png"
    result = runner.invoke(app, ["compare", str(a), str(b), "--out", str(out), "--from", "14", "--to", "30"])
    assert result.exit_code == 0, result.output
    assert out.exists()
