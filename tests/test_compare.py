"""``kame-sim compare``: two runs side by side, two sweeps with a paired bootstrap per design point.

The statistics are checked on synthetic sweeps with known truth (an injected regression must be
found; with none, the interval must exclude 0 about 5 % of the time), the plumbing on real demo runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DEMO_SCENARIO
from typer.testing import CliRunner

from kame_sim.cli import app
from kame_sim.compare import compare_runs, compare_sweeps, is_sweep, load_results, plot_comparison
from kame_sim.errors import InputError
from kame_sim.metrics.paired import Sample, expanded_level, paired_difference, t_quantile
from kame_sim.sweep.runner import run_sweep
from kame_sim.trace import read_trace


def synthetic_pair(
    tmp_path: Path,
    points: int,
    conversations: int,
    seeds_a: list[int],
    seeds_b: list[int],
    shift: dict[int, float] | None = None,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Two results tables of one design: value = conversation effect + (conversation, seed) effect +
    run noise, so runs of the same conversation and seed share most of their noise; B adds
    ``shift[point]`` (the injected regression)."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    conv = rng.normal(0.0, 1.0, size=(points, conversations))
    seed_effect = rng.normal(0.0, 1.0, size=(points, conversations, max(seeds_a + seeds_b) + 1))
    out = []
    for name, seeds, extra in (("a", seeds_a, False), ("b", seeds_b, True)):
        rows: dict[str, list] = {
            k: [] for k in ("run_id", "status", "error", "conversation_id", "seed", "x", "m")
        }
        for p in range(points):
            for c in range(conversations):
                for s in seeds:
                    value = conv[p, c] + seed_effect[p, c, s] + rng.normal(0.0, 0.3)
                    rows["run_id"].append(f"{name}-{p}-{c}-{s}")
                    rows["status"].append("ok")
                    rows["error"].append(None)
                    rows["conversation_id"].append(f"conv{c}")
                    rows["seed"].append(s)
                    rows["x"].append(float(p))
                    rows["m"].append(value + (shift.get(p, 0.0) if extra else 0.0))
        directory = tmp_path / name
        directory.mkdir()
        pq.write_table(pa.table(rows), directory / "results.parquet")
        (directory / "sweep.resolved.json").write_text(json.dumps({"parameters": ["x"]}))
        out.append(directory)
    return out[0], out[1]


def flagged(a: Path, b: Path, n_boot: int = 400) -> tuple[np.ndarray, list[str]]:
    table = compare_sweeps(load_results(a), load_results(b), ["m"], n_boot=n_boot)
    return np.asarray(table.column("significant").to_pylist()), table.column("ci_method").to_pylist()


def test_t_quantiles_and_the_expanded_level():
    for df, exact in [(1, 12.706), (2, 4.303), (3, 3.182), (7, 2.365), (19, 2.093), (60, 2.000)]:
        assert t_quantile(0.975, df) == pytest.approx(exact, rel=2e-3)
    assert expanded_level(0.95, 1) == 0.95
    assert 0.95 < expanded_level(0.95, 30) < expanded_level(0.95, 8) < expanded_level(0.95, 3) < 1.0


@pytest.mark.parametrize(
    ("conversations", "seeds_b", "method"),
    [
        (12, [0, 1, 2], "paired (cluster)"),  # the same seeds: runs paired by (conversation, seed)
        (12, [3, 4, 5], "cluster-paired"),  # different seed sets: paired by conversation only
        (1, list(range(20)), "paired (runs)"),  # one conversation: pairs resampled
        (1, list(range(20, 40)), "unpaired (runs)"),  # one conversation, different seeds
    ],
)
def test_without_a_change_the_ci_excludes_zero_at_about_the_nominal_rate(
    tmp_path: Path, conversations: int, seeds_b: list[int], method: str
):
    seeds_a = [0, 1, 2] if conversations > 1 else list(range(20))
    a, b = synthetic_pair(tmp_path, 300, conversations, seeds_a, seeds_b, seed=conversations + len(seeds_b))
    flags, methods = flagged(a, b)
    assert set(methods) == {method}
    # nominal 5 %: 300 independent points, so ±2.5 % is about two standard errors
    assert 0.02 <= flags.mean() <= 0.09, flags.mean()


def test_an_injected_regression_is_found(tmp_path: Path):
    shifted = {p: 0.5 for p in range(50)}
    a, b = synthetic_pair(tmp_path, 150, 12, [0, 1, 2], [0, 1, 2], shift=shifted, seed=5)
    table = compare_sweeps(load_results(a), load_results(b), ["m"], n_boot=400)
    flags = np.asarray(table.column("significant").to_pylist())
    delta = np.asarray(table.column("delta").to_pylist())
    assert flags[:50].all()  # every shifted point found
    assert delta[:50] == pytest.approx(np.full(50, 0.5), abs=0.25)
    assert flags[50:].mean() <= 0.09  # the others at about the nominal rate
    row = table.to_pylist()[0]
    assert row["n_a"] == row["n_b"] == row["n_pairs"] == 36 and row["point"] == "x=0.0"
    assert row["delta_low"] < row["delta"] < row["delta_high"]


def test_paired_difference_edge_cases():
    rng = np.random.default_rng(0)
    one = paired_difference(Sample.of([1.0], ["c"], [0]), Sample.of([2.0], ["c"], [0]), rng)
    assert one.delta == 1.0 and one.low is None and one.method == "none" and not one.significant
    empty = paired_difference(Sample.of([], [], []), Sample.of([2.0, np.nan], ["c", "c"], [0, 1]), rng)
    assert empty.delta is None and empty.mean_b == 2.0 and empty.n_b == 1
    five = [1.0, 2.0, 4.0, 3.0, 5.0]
    same = paired_difference(Sample.of(five, ["c"] * 5, range(5)), Sample.of(five, ["c"] * 5, range(5)), rng)
    assert (same.delta, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    # four pairs all of one sign: no interval rather than a spurious "significant"
    four = paired_difference(
        Sample.of(five[:4], ["c"] * 4, range(4)), Sample.of(five[1:], ["c"] * 4, range(4)), rng
    )
    assert four.method == "none" and four.low is None and four.delta == pytest.approx(1.0)
    # pairs from fewer than 5 conversations are resampled as pairs
    few = paired_difference(
        Sample.of(five * 2, ["c", "d"] * 5, range(10)),
        Sample.of([v + 1 for v in five * 2], ["c", "d"] * 5, range(10)),
        rng,
    )
    assert few.method == "paired (runs)" and few.n_clusters == 2 and few.significant
    # unmatched runs are left out of a paired comparison, and counted
    part = paired_difference(
        Sample.of([1.0, 2.0, 9.0], ["c", "c", "c"], [0, 1, 2]), Sample.of([1.5, 2.5], ["c", "c"], [0, 1]), rng
    )
    assert part.n_pairs == 2 and part.n_unpaired == 1 and part.delta == pytest.approx(0.5)
    assert part.mean_a == pytest.approx(1.5)


@pytest.fixture(scope="module")
def demo_sweeps(tmp_path_factory) -> dict[str, Path]:
    """Three small demo sweeps: A, A again (same seeds), and A with other seeds."""
    root = tmp_path_factory.mktemp("sweeps")
    out = {}
    for name, seeds in (("a", "5"), ("again", "5"), ("other", "[5, 6, 7, 8, 9]")):
        spec = root / f"{name}.toml"
        spec.write_text(
            f'base = "{DEMO_SCENARIO}"\nseeds = {seeds}\n[set]\n'
            '"llm.ttft" = { kind = "lognormal", median = 0.73, sigma = 0.32 }\n'
            '[parameters]\n"llm.ttft.median" = [0.73, 2.0]\n',
            encoding="utf-8",
        )
        out[name] = run_sweep(spec, root / name, workers=1).out_dir
    return out


def test_two_sweeps_of_identical_settings(demo_sweeps):
    a, again, other = (load_results(demo_sweeps[k]) for k in ("a", "again", "other"))
    assert a.parameters == ["llm.ttft.median"]
    same = compare_sweeps(a, again).to_pylist()
    assert {r["point"] for r in same} == {"llm.ttft.median=0.73", "llm.ttft.median=2.0"}
    defined = [r for r in same if r["delta"] is not None]
    assert defined and all(r["delta"] == 0.0 and not r["significant"] for r in defined)
    full = [r for r in defined if r["n_pairs"] == 5]  # a metric defined in every run
    assert {r["metric"] for r in full} >= {"onset_median_s", "fdb_turn_taking_tor", "reply_f1_mean"}
    assert all(r["ci_method"] == "paired (runs)" and r["delta_low"] == r["delta_high"] == 0.0 for r in full)
    assert all(r["ci_method"] == "none" for r in defined if r["n_pairs"] < 5)
    seeds = compare_sweeps(a, other, ["onset_median_s", "oracle_lag_median_s"]).to_pylist()
    assert {r["ci_method"] for r in seeds} == {"unpaired (runs)"} and all(r["n_pairs"] == 0 for r in seeds)


def test_compare_command_on_sweeps(demo_sweeps, tmp_path: Path):
    out = tmp_path / "cmp.csv"
    result = CliRunner().invoke(
        app,
        ["compare", str(demo_sweeps["a"]), str(demo_sweeps["other"] / "results.parquet"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "llm.ttft.median=0.73" in result.output and "differences have a 95% CI" in result.output
    header = out.read_text().splitlines()[0]
    assert '"delta_low"' in header and '"llm.ttft.median"' in header
    bad = CliRunner().invoke(app, ["compare", str(demo_sweeps["a"]), str(DEMO_SCENARIO)])
    assert bad.exit_code == 2 and "not one of each" in bad.output
    unknown = CliRunner().invoke(
        app, ["compare", str(demo_sweeps["a"]), str(demo_sweeps["a"]), "--metric", "nope"]
    )
    assert unknown.exit_code == 2 and "nope" in unknown.output


def test_sweeps_must_vary_the_same_parameters(tmp_path: Path):
    a, b = synthetic_pair(tmp_path, 2, 2, [0], [0])
    (b / "sweep.resolved.json").write_text(json.dumps({"parameters": []}))
    with pytest.raises(InputError, match="different parameters"):
        compare_sweeps(load_results(a), load_results(b))
    # without sweep.resolved.json, the non-metric columns are the parameters
    (a / "sweep.resolved.json").unlink()
    assert load_results(a).parameters == ["x", "m"]  # "m" is no metric kame-sim knows
    assert is_sweep(a) and is_sweep(a / "results.parquet") and not is_sweep(tmp_path)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    runner = CliRunner()
    out = {}
    for name, extra in (("a", []), ("slow", ["--set", "llm.ttft=2.0"])):
        result = runner.invoke(app, ["run", str(DEMO_SCENARIO), "--out", str(root / name), "--quiet", *extra])
        assert result.exit_code == 0, result.output
        out[name] = root / name
    return out


def test_compare_two_runs(demo_runs):
    same = compare_runs(demo_runs["a"], demo_runs["a"])
    assert same.references and same.same_conversation and not same.notes
    assert not [m for m in same.metrics if m.changed()] and not same.turns
    diff = compare_runs(demo_runs["a"], demo_runs["slow"])
    by_name = {m.name: m for m in diff.metrics}
    ttft = by_name["ttft_median_s"]
    assert ttft.changed() and ttft.b == pytest.approx(2.0) and ttft.delta == pytest.approx(2.0 - ttft.a)
    assert "fdb_turn_taking_tor" in by_name and "reply_f1_mean" in by_name
    assert not by_name["n_turns"].changed()
    # the slower LLM changes what is said, not when: every turn's words/agreement, never its onset
    assert [t.utterance for t in diff.turns] == [0, 1, 2, 3]
    assert all("onset_s" not in t.changed and "reply_f1" in t.changed for t in diff.turns)
    assert all(t.a.onset_s == t.b.onset_s for t in diff.turns)


def test_compare_command_on_runs_writes_both_timelines(demo_runs, tmp_path: Path):
    png = tmp_path / "cmp.png"
    result = CliRunner().invoke(
        app, ["compare", str(demo_runs["a"]), str(demo_runs["slow"]), "--out", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert "ttft_median_s" in result.output and "turns whose response changed" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one timeline above the other: twice the panels of a single run's picture, on one x axis
    from matplotlib.image import imread

    from kame_sim.report.timeline import plot_timeline

    single = imread(plot_timeline(read_trace(demo_runs["a"]), tmp_path / "single.png"))
    both = imread(png)
    assert both.shape[1] == single.shape[1] and both.shape[0] > 1.6 * single.shape[0]
    direct = plot_comparison(read_trace(demo_runs["a"]), read_trace(demo_runs["a"]), tmp_path / "d.png")
    assert direct.is_file()
    result = CliRunner().invoke(app, ["compare", str(demo_runs["a"]), str(demo_runs["a"])])
    assert result.exit_code == 0 and "no turn's onset, response or agreement changed" in result.output
