"""Adversarial search: the worst (or best) scenario within an envelope, found with Optuna.

- :mod:`.spec`: search files (base scenario, objective, search space, constraints, budget),
  checked up front; each trial is planned as a one-point sweep.
- :mod:`.objective`: a trial's runs -> the objective value and the constraint violations.
- :mod:`.runner`: :func:`run_study`, the resumable ask/tell loop over a journal-file study.
- :mod:`.report`: ``trials.parquet``, the best scenarios as runnable files, the report.
- :mod:`.command`: :func:`run_search`, all of it for ``kame-sim search``.

Importing this package imports Optuna; the CLI imports it only when ``search`` runs.
"""

from kame_sim.search.command import SearchRun, run_search
from kame_sim.search.runner import SearchResult, TrialRuns, run_study
from kame_sim.search.spec import SearchPlan, SearchSpec, load_search

__all__ = [
    "SearchPlan",
    "SearchResult",
    "SearchRun",
    "SearchSpec",
    "TrialRuns",
    "load_search",
    "run_search",
    "run_study",
]
