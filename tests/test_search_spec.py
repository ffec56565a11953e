"""Search files: every kind of bad input is one InputError naming the file and the key, before
anything runs; the statistics and constraint arithmetic behave as documented."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kame_sim.errors import InputError
from kame_sim.search.objective import evaluate_rows, statistic, violation
from kame_sim.search.runner import decode, distributions
from kame_sim.search.spec import (
    ConstraintSpec,
    Interval,
    ObjectiveSpec,
    load_search,
    parse_search,
    probe_points,
)
from tests.conftest import DEMO_SCENARIO

GOOD = f"""
base = "{DEMO_SCENARIO}"
seeds = 2
[set]
"llm.ttft" = {{ kind = "lognormal", median = 0.73, sigma = 0.32 }}
[objective]
metric = "reply_f1_mean"
stat = "mean"
direction = "minimize"
[search]
trials = 5
[space]
"llm.ttft.median" = {{ low = 0.25, high = 1.5, log = true }}
"policy.kind" = {{ choices = ["poll", "multiplexer"] }}
"llm.words_per_chunk" = {{ low = 1, high = 8, step = 1 }}
"stt.final_delay" = {{ choices = [{{ kind = "lognormal", median = 0.25, sigma = 0.11 }}, "deepgram-final"] }}
[[constraint]]
metric = "ttft_median_s"
stat = "median"
op = "<="
value = 1.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> InputError:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_search(path)
    line = info.value.one_line()
    assert "\n" not in line and line.startswith(str(path)), line
    return info.value


def test_a_good_spec_loads_with_every_kind_of_dimension(tmp_path: Path):
    plan = load_search(write(tmp_path, GOOD))
    space = distributions(plan.spec)
    assert type(space["llm.words_per_chunk"]).__name__ == "IntDistribution"
    assert type(space["llm.ttft.median"]).__name__ == "FloatDistribution"
    # a table choice is shown to Optuna as a label and decoded back to the table
    labels = space["stt.final_delay"].choices
    assert labels == ("lognormal+median=0.25+sigma=0.11", "deepgram-final")
    values = decode(
        plan.spec,
        {"llm.ttft.median": 1, "policy.kind": "poll", "llm.words_per_chunk": 3, "stt.final_delay": labels[0]},
    )
    assert values["stt.final_delay"] == {"kind": "lognormal", "median": 0.25, "sigma": 0.11}
    assert values["llm.ttft.median"] == 1.0 and isinstance(values["llm.ttft.median"], float)
    assert plan.runs_per_trial == 2


def test_choices_equal_in_python_are_kept_apart(tmp_path: Path):
    """1, 1.0 and true are three TOML values but one Python key: each gets its own label, and
    each label decodes to its own value (not the first of the equal ones)."""
    text = GOOD.replace(
        '"policy.kind" = { choices = ["poll", "multiplexer"] }',
        '"llm.time_scale" = { choices = [1, 1.0, 2] }',
    )
    assert text != GOOD
    spec = load_search(write(tmp_path, text)).spec
    space = distributions(spec)
    labels = space["llm.time_scale"].choices
    assert len(set(labels)) == 3
    others = {"llm.ttft.median": 1.0, "llm.words_per_chunk": 1, "stt.final_delay": "deepgram-final"}
    decoded = [decode(spec, {**others, "llm.time_scale": label})["llm.time_scale"] for label in labels]
    assert [type(v) for v in decoded] == [int, float, int] and decoded == [1, 1.0, 2]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (("[search]\ntrials = 5", "[search]\ntrials = 0"), "search.trials", "greater than or equal to 1"),
        (('sampler = "x"', None), "search.sampler", ""),
        (("low = 0.25, high = 1.5", "low = 2.0, high = 1.5"), "space.llm.ttft.median", "must not exceed"),
        (
            ("low = 0.25, high = 1.5, log = true", "low = 0, high = 1.5, log = true"),
            "space.llm.ttft.median",
            "low > 0",
        ),
        (('["poll", "multiplexer"]', "[]"), "space.policy.kind.choices", "at least 1"),
        (('["poll", "multiplexer"]', '["poll", "poll"]'), "space.policy.kind.choices", "distinct"),
        (("high = 8, step = 1", "high = 8, step = 0"), "space.llm.words_per_chunk", "step must be > 0"),
        (('"reply_f1_mean"', '"reply_f1_maen"'), "objective.metric", "did you mean reply_f1_mean"),
        (('metric = "ttft_median_s"', 'metric = "ttft_median"'), "constraint[0].metric", "ttft_median_s"),
        (('stat = "median"', 'stat = "p101"'), "constraint[0].stat", "not a statistic"),
        (('op = "<="', 'op = "<"'), "constraint[0].op", ""),
        (
            (
                "value = 1.5\n",
                'value = 1.5\n[[constraint]]\nmetric = "ttft_median_s"\nstat = "median"\n'
                'op = "<="\nvalue = 1.5\n',
            ),
            "constraint[1]",
            "repeats constraint[0]",
        ),
        (('direction = "minimize"', 'direction = "down"'), "objective.direction", ""),
        (('"policy.kind"', '"policy.knd"'), "space.policy.knd", "not a scenario key"),
        (
            ("low = 1, high = 8", "low = -3, high = 8"),
            "space.llm.words_per_chunk",
            "greater than or equal to 1",
        ),
        (("seeds = 2", "seeds = 0"), "seeds", "1.."),
        (("[search]", "[search]\nwhat = 1"), "search.what", "unknown key"),
        (
            ("[search]", '[search]\nsampler = "random"\nstartup_trials = 3'),
            "search.startup_trials",
            "only for",
        ),
        (("[space]", '[space]\n"run.seed" = { low = 1, high = 3 }'), "space.run.seed", "use seeds"),
        (
            ("[space]", '[space]\n"llm.ttft" = { choices = ["gpt-4.1-ttft"] }'),
            "space.llm.ttft",
            "also given in [set]",
        ),
        (("[space]", '[space]\n"llm.ttft.sigma" = 0.3'), "space.llm.ttft.sigma", "{low, high}"),
        (
            ("[space]", '[space]\n"llm.ttft.sigma" = { low = 0.1, hi = 0.3 }'),
            "space.llm.ttft.sigma.high",
            "required",
        ),
    ],
)
def test_bad_specs_are_one_line_naming_the_key(tmp_path: Path, change, field, words):
    old, new = change
    text = GOOD.replace(old, new) if new is not None else GOOD.replace("[search]", f"[search]\n{old}")
    assert text != GOOD
    error = error_of(tmp_path, text)
    assert error.field == field, error.one_line()
    assert words in error.message, error.one_line()


def test_set_on_the_command_line_may_not_change_a_searched_key(tmp_path: Path):
    with pytest.raises(InputError) as info:
        load_search(write(tmp_path, GOOD), {"llm.ttft.median": 1.0})
    assert info.value.field == "--set llm.ttft.median" and "(space.llm.ttft.median)" in info.value.message
    assert load_search(write(tmp_path, GOOD), {"llm.max_reply_words": 12}).cli_set == {
        "llm.max_reply_words": 12
    }


def test_missing_base_and_missing_sections(tmp_path: Path):
    assert error_of(tmp_path, GOOD.replace(str(DEMO_SCENARIO), "nope.toml")).field == "base"
    no_objective = GOOD.replace(
        '[objective]\nmetric = "reply_f1_mean"\nstat = "mean"\ndirection = "minimize"\n', ""
    )
    assert error_of(tmp_path, no_objective).field == "objective"
    assert error_of(tmp_path, "not toml [").message.startswith("not valid TOML")


def test_every_bound_and_choice_is_built_before_anything_runs(tmp_path: Path):
    """A bound only the scenario refuses (a negative delay at the low end) fails at load time."""
    text = GOOD.replace("low = 0.25, high = 1.5, log = true", "low = -1.0, high = 1.5")
    assert error_of(tmp_path, text).field == "space.llm.ttft.median"
    spec = parse_search(tomllib.loads(GOOD), Path("x.toml"))
    points = probe_points(spec)
    assert {p["policy.kind"] for p in points} == {"poll", "multiplexer"}
    assert {p["llm.words_per_chunk"] for p in points} == {1, 8}
    assert len(points) == 1 + 1 + 1 + 1 + 1  # the first corner, then one more value per dimension


def test_statistics_skip_undefined_values():
    values = [3.0, None, 1.0, float("nan"), 2.0]
    assert statistic(values, "mean") == 2.0
    assert statistic(values, "median") == 2.0 == statistic(values, "p50")
    assert statistic(values, "min") == 1.0 and statistic(values, "max") == 3.0
    assert statistic(values, "p100") == 3.0 and statistic(values, "p0") == 1.0
    assert statistic([None, None], "mean") is None


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6), st.integers(-1000, 1000)), max_size=12),
    q=st.floats(0, 100),
)
def test_percentiles_lie_between_min_and_max(values, q):
    """Any pNN of the defined values lies within [min, max]; p0/p100 are min/max; no values: None."""
    stat = f"p{q:.6f}".rstrip("0").rstrip(".")
    defined = [v for v in values if v is not None]
    if not defined:
        assert statistic(values, stat) is None and statistic(values, "mean") is None
        return
    low, high = statistic(values, "min"), statistic(values, "max")
    assert low == min(defined) and high == max(defined)
    assert low - 1e-6 <= statistic(values, stat) <= high + 1e-6
    assert statistic(values, "p0") == low and statistic(values, "p100") == high


def test_violation_sign_and_undefined_measurements():
    below = ConstraintSpec(metric="ttft_median_s", stat="median", op="<=", value=1.5)
    above = ConstraintSpec(metric="n_responded", op=">=", value=3)
    assert violation(below, 1.0) == -0.5 and violation(below, 2.0) == 0.5
    assert violation(above, 4) == -1 and violation(above, 2) == 1
    assert violation(below, None) == math.inf
    value = evaluate_rows(
        [{"ttft_median_s": 1.0}, {"ttft_median_s": 2.2}],
        ObjectiveSpec(metric="reply_f1_mean", direction="minimize"),
        [below],
        n_failed=1,
    )
    assert value.constraints == {"ttft_median_s.median<=1.5": 1.6} and not value.feasible
    assert value.n_runs == 3 and value.objective is None


numbers = st.one_of(
    st.integers(-10, 10),
    st.floats(-10, 10),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.booleans(),
    st.text(max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    low=numbers,
    high=numbers,
    log=st.one_of(st.booleans(), st.integers(0, 1)),
    step=st.one_of(st.none(), numbers),
)
def test_any_interval_is_valid_or_one_clear_error(low, high, log, step):
    """Whatever a user writes as a {low, high, log, step} table: a valid dimension whose probe
    values lie inside it, or an InputError at space.KEY -- never a crash or a silent fix."""
    table = {"low": low, "high": high, "log": log, **({} if step is None else {"step": step})}
    data = tomllib.loads(GOOD.split("[space]")[0].replace(str(DEMO_SCENARIO), "demo.toml"))
    data["space"] = {"llm": {"ttft": {"median": table}}}
    try:
        spec = parse_search(data, Path("s.toml"))
    except InputError as exc:
        assert exc.field is not None and exc.field.startswith("space.llm.ttft.median"), exc.one_line()
        return
    dim = spec.space["llm.ttft.median"]
    assert isinstance(dim, Interval)
    assert all(dim.low <= v <= dim.high for v in dim.bounds())
    assert math.isfinite(dim.low) and math.isfinite(dim.high) and dim.low <= dim.high
