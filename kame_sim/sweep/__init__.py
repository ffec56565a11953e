"""Parameter sweeps and the CI robustness gate.

- :mod:`.spec`: sweep files (base scenario, grid or random design over dotted scenario keys,
  seeds, conversations), validated up front into a plan of runs with stable ids.
- :mod:`.batching`: which runs may share a lockstep batch.
- :mod:`.runner`: :func:`~kame_sim.sweep.runner.run_sweep` runs the plan in worker processes (or on
  Ray), resumably, and gathers ``results.parquet``.
- :mod:`.check`: :func:`~kame_sim.sweep.check.run_check` runs a small sweep and judges thresholds
  on aggregated metrics, writing JUnit XML and a Markdown summary for CI.

Import from the submodules. The package itself imports nothing: a sweep's spawned worker imports
:mod:`.runner` (and through it this package) before its first run, and re-exporting the CI gate
here made every worker load the comparison and report modules as well (about 0.2 s per worker).
"""
