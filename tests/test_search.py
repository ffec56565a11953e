"""The search loop on synthetic objectives: a planted weakness is found within the budget, the
constraints keep the best inside the envelope, a resumed study equals an uninterrupted one, and
two studies with the same seed are identical.

The synthetic evaluator stands in for the simulation (it turns a trial's parameters into metric
rows directly), so each study takes a fraction of a second; the spec itself is a real search file
over real scenario keys, checked against the demo scenario like any other.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from kame_sim.errors import InputError
from kame_sim.search import TrialRuns, load_search, run_search, run_study
from kame_sim.search.report import BEST_DIR, TRIALS_FILE
from kame_sim.search.runner import best_trials, is_feasible
from tests.conftest import DEMO_SCENARIO

# The planted weakness: reply quality collapses near (median 0.9 s, sigma 0.6), nowhere else.
PLANTED = {"llm.ttft.median": 0.9, "llm.ttft.sigma": 0.6}
SPACE = """
[space]
"llm.ttft.median" = { low = 0.25, high = 1.5 }
"llm.ttft.sigma" = { low = 0.05, high = 1.2 }
"""


def spec_file(
    tmp_path: Path, body: str, name: str = "s.toml", trials: int = 30, sampler: str = "tpe"
) -> Path:
    text = f"""
base = "{DEMO_SCENARIO}"
[set]
"llm.ttft" = {{ kind = "lognormal", median = 0.73, sigma = 0.32 }}
[search]
trials = {trials}
sampler = "{sampler}"
seed = 3
{body}
"""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


OBJECTIVE = """
[objective]
metric = "reply_f1_mean"
direction = "minimize"
"""


def bowl(params: dict[str, Any]) -> float:
    """A narrow bowl: 0 at the planted point, 1 far from it (scaled by each range's width)."""
    dm = (params.get("llm.ttft.median", 0.73) - PLANTED["llm.ttft.median"]) / 1.25
    ds = (params.get("llm.ttft.sigma", 0.32) - PLANTED["llm.ttft.sigma"]) / 1.15
    return 1.0 - math.exp(-(dm * dm + ds * ds) / (2 * 0.08**2))


class Synthetic:
    """An evaluator: each 'run' gives the bowl's value and the TTFT median as its metrics."""

    def __init__(self, seeds: int = 1, interrupt_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.seeds = seeds
        self.interrupt_at = interrupt_at

    def __call__(self, label: str, params: dict[str, Any]) -> TrialRuns:
        self.calls.append(label)
        if self.interrupt_at is not None and label == f"trials/{self.interrupt_at:04d}":
            raise KeyboardInterrupt
        rows = [
            {
                "reply_f1_mean": bowl(params) + 0.001 * seed,
                "ttft_median_s": params.get("llm.ttft.median", 0.73),
            }
            for seed in range(self.seeds)
        ]
        return TrialRuns(rows, [], label)


def best_params(result) -> dict[str, Any]:
    return best_trials(result.study, 1)[0].params


@pytest.mark.parametrize(("sampler", "trials"), [("tpe", 40), ("cmaes", 40)])
def test_a_planted_weakness_is_found_within_the_budget(tmp_path: Path, sampler: str, trials: int):
    plan = load_search(spec_file(tmp_path, OBJECTIVE + SPACE, trials=trials, sampler=sampler))
    result = run_study(plan, tmp_path / "out", evaluate=Synthetic(), baseline=False)
    found = best_params(result)
    # within 0.1 of each range's width of the planted point: inside the bowl, not at a corner
    assert abs(found["llm.ttft.median"] - 0.9) <= 0.125, found
    assert abs(found["llm.ttft.sigma"] - 0.6) <= 0.115, found
    assert best_trials(result.study, 1)[0].value < 0.5
    assert len(result.trials()) == trials


def test_random_search_is_worse_than_tpe_on_the_same_budget(tmp_path: Path):
    """The model-based sampler earns its keep: with the same 40 trials it gets nearer the bowl's
    floor than random draws (a TPE that ignored its history would not)."""
    values = {}
    for sampler in ("tpe", "random"):
        plan = load_search(
            spec_file(tmp_path, OBJECTIVE + SPACE, f"{sampler}.toml", trials=40, sampler=sampler)
        )
        result = run_study(plan, tmp_path / sampler, evaluate=Synthetic(), baseline=False)
        values[sampler] = best_trials(result.study, 1)[0].value
    assert values["tpe"] < values["random"], values


CONSTRAINED = (
    """
[objective]
metric = "reply_f1_mean"
direction = "maximize"
[[constraint]]
metric = "ttft_median_s"
stat = "median"
op = "<="
value = 1.0
"""
    + SPACE
)


def far_from_bowl(label: str, params: dict[str, Any]) -> TrialRuns:
    """Maximising the bowl's value pulls to the far corner (median 1.5): outside the envelope."""
    median = params.get("llm.ttft.median", 0.73)
    return TrialRuns([{"reply_f1_mean": median, "ttft_median_s": median}], [], label)


def test_constraints_keep_the_best_inside_the_envelope(tmp_path: Path):
    plan = load_search(spec_file(tmp_path, CONSTRAINED, trials=25))
    run = run_search(plan.spec_path, tmp_path / "out", evaluate=far_from_bowl)
    trials = run.result.trials()
    infeasible = [t for t in trials if not is_feasible(t)]
    assert infeasible, "the sampler never tried outside the envelope: the test proves nothing"
    best = best_trials(run.result.study, 3)
    assert all(t.params["llm.ttft.median"] <= 1.0 for t in best)
    # the worst case *within* the envelope: close to its edge, not the unconstrained 1.5
    assert best[0].params["llm.ttft.median"] > 0.85
    table = pq.read_table(tmp_path / "out" / TRIALS_FILE).to_pylist()
    assert [r["feasible"] for r in table] == [is_feasible(t) for t in trials]
    assert all(r["ttft_median_s.median<=1"] > 1.0 for r in table if not r["feasible"])
    # best/ holds the 3 best feasible trials (one file each: one conversation x one seed), no other
    files = sorted((tmp_path / "out" / BEST_DIR).glob("*.toml"))
    assert [f.name.split("-")[1] for f in files] == [f"trial{t.number:04d}" for t in best]
    bad = {f"trial{t.number:04d}" for t in infeasible}
    assert not any(f.name.split("-")[1] in bad for f in files)


def test_no_feasible_trial_means_no_best(tmp_path: Path):
    body = CONSTRAINED.replace("value = 1.0", "value = 0.1")  # below the space's lowest median
    run = run_search(spec_file(tmp_path, body, trials=4), tmp_path / "out", evaluate=far_from_bowl)
    assert not list((tmp_path / "out" / BEST_DIR).glob("*"))
    assert "best: none (no feasible trial)" in run.outputs.summary


def _table(path: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(path / TRIALS_FILE).to_pylist()
    for row in rows:
        row.pop("wall_s")
    return rows


def test_resume_gives_the_trials_of_an_uninterrupted_study(tmp_path: Path):
    whole = spec_file(tmp_path, OBJECTIVE + SPACE, "whole.toml", trials=14)
    run_search(whole, tmp_path / "whole", evaluate=Synthetic())
    first = spec_file(tmp_path, OBJECTIVE + SPACE, "part.toml", trials=6)
    run_search(first, tmp_path / "part", evaluate=Synthetic())
    again = Synthetic()
    more = spec_file(tmp_path, OBJECTIVE + SPACE, "part.toml", trials=14)  # the budget may grow
    run = run_search(more, tmp_path / "part", resume=True, evaluate=again)
    assert run.result.resumed == 6 and run.result.executed == 8
    assert again.calls == ["base", *(f"trials/{n:04d}" for n in range(6, 14))]
    assert _table(tmp_path / "part") == _table(tmp_path / "whole")


def test_an_interrupted_trial_is_not_counted_and_the_study_resumes(tmp_path: Path):
    spec = spec_file(tmp_path, OBJECTIVE + SPACE, trials=6)
    with pytest.raises(KeyboardInterrupt):
        run_search(spec, tmp_path / "out", evaluate=Synthetic(interrupt_at=3))
    run = run_search(spec, tmp_path / "out", resume=True, evaluate=Synthetic())
    states = [t.state.name for t in run.result.trials()]
    assert states == ["COMPLETE"] * 3 + ["FAIL"] + ["COMPLETE"] * 3  # 6 counted, the cut-off one not
    assert 3 not in {t.number for t in best_trials(run.result.study, 10)}


def test_same_seed_same_trials(tmp_path: Path):
    spec = spec_file(tmp_path, CONSTRAINED, trials=12)
    run_search(spec, tmp_path / "a", evaluate=far_from_bowl)
    run_search(spec, tmp_path / "b", evaluate=far_from_bowl)
    assert _table(tmp_path / "a") == _table(tmp_path / "b")
    other = spec.read_text().replace("seed = 3", "seed = 4")
    (tmp_path / "other.toml").write_text(other, encoding="utf-8")
    run_search(tmp_path / "other.toml", tmp_path / "c", evaluate=far_from_bowl)
    assert _table(tmp_path / "c") != _table(tmp_path / "a")  # the seed does matter


def test_an_existing_study_needs_resume_and_the_same_spec(tmp_path: Path):
    spec = spec_file(tmp_path, OBJECTIVE + SPACE, trials=3)
    run_search(spec, tmp_path / "out", evaluate=Synthetic())
    with pytest.raises(InputError, match="--resume continues it"):
        run_search(spec, tmp_path / "out", evaluate=Synthetic())
    changed = spec_file(tmp_path, OBJECTIVE + SPACE.replace("high = 1.5", "high = 1.4"), trials=3)
    with pytest.raises(InputError, match="another search spec"):
        run_search(changed, tmp_path / "out", resume=True, evaluate=Synthetic())


def test_a_trial_whose_metric_is_undefined_fails_and_is_never_best(tmp_path: Path):
    def sometimes_undefined(label: str, params: dict[str, Any]) -> TrialRuns:
        value = None if params.get("llm.ttft.median", 1.0) < 0.8 else 1.0 - params["llm.ttft.median"] / 2
        return TrialRuns([{"reply_f1_mean": value}], [], label)

    plan = load_search(spec_file(tmp_path, OBJECTIVE + SPACE, trials=12))
    result = run_study(plan, tmp_path / "out", evaluate=sometimes_undefined, baseline=False)
    failed = [t for t in result.trials() if t.state.name == "FAIL"]
    assert failed and all(t.params["llm.ttft.median"] < 0.8 for t in failed)
    assert all(
        t.user_attrs["kame_sim.error"] == "the objective metric is undefined in every run" for t in failed
    )
    assert all(t.params["llm.ttft.median"] >= 0.8 for t in best_trials(result.study, 12))
