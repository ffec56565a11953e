"""``kame-sim search SPEC.toml`` in one call: check the spec, run the study, write the outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kame_sim.search.report import SearchOutputs, write_outputs
from kame_sim.search.runner import Evaluator, SearchProgress, SearchResult, run_study
from kame_sim.search.spec import load_search


@dataclass(frozen=True)
class SearchRun:
    """A finished search: the study's result and the files written from it."""

    result: SearchResult
    outputs: SearchOutputs


def run_search(
    spec_path: Path,
    out_dir: Path | None = None,
    resume: bool = False,
    progress: SearchProgress | None = None,
    workers: int = 1,
    cli_set: dict[str, Any] | None = None,
    evaluate: Evaluator | None = None,
) -> SearchRun:
    """Load and check ``spec_path`` (bad input raises :class:`~kame_sim.errors.InputError` before
    anything runs), run or resume the study (:func:`~.runner.run_study`; ``evaluate`` replaces the
    simulation, for tests) and write ``trials.parquet``, ``best/``, ``summary.txt``, ``report/``."""
    plan = load_search(Path(spec_path), cli_set)
    result = run_study(plan, out_dir, resume, progress, evaluate, workers)
    return SearchRun(result, write_outputs(result))
