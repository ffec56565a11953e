"""Parameter sweeps and the CI robustness gate.

- :mod:`.spec`: sweep files (base scenario, grid or random design over dotted scenario keys,
  seeds, conversations), validated up front into a plan of runs with stable ids.
- :mod:`.runner`: :func:`run_sweep` runs the plan in worker processes (or on Ray), resumably,
  and gathers ``results.parquet``.
- :mod:`.check`: :func:`run_check` runs a small sweep and judges thresholds on aggregated
  metrics, writing JUnit XML and a Markdown summary for CI.
"""

from kame_sim.sweep.check import AssertionOutcome, CheckResult, load_check, run_check
from kame_sim.sweep.runner import ProgressCallback, SweepResult, execute_plan, run_sweep
from kame_sim.sweep.spec import PlannedRun, SweepPlan, SweepSpec, load_sweep, plan_sweep

__all__ = [
    "AssertionOutcome",
    "CheckResult",
    "PlannedRun",
    "ProgressCallback",
    "SweepPlan",
    "SweepResult",
    "SweepSpec",
    "execute_plan",
    "load_check",
    "load_sweep",
    "plan_sweep",
    "run_check",
    "run_sweep",
]
