"""The output folder of a run: where it goes and what may be removed from it.

Owned here so that the simulator's runner and the importers (which write traces too) share one
rule for refusing to clobber a trace, without the importers depending on the simulator. The rule
(README, CLI reference): an existing trace needs ``--overwrite``; ``--overwrite`` removes only the
files an earlier kame-sim run listed in the folder's manifest (:mod:`kame_sim.output_dir`); a file
the run would write that kame-sim did not write is refused, never replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kame_sim.errors import InputError
from kame_sim.output_dir import OutputDir
from kame_sim.trace.schema import TRACE_FILENAME

RESOLVED_SCENARIO = "scenario.resolved.json"


def check_run_dir(run_dir: Path, overwrite: bool, files: Sequence[str] = (TRACE_FILENAME,)) -> OutputDir:
    """Check the folder before anything runs (writes nothing): refuse to clobber a trace unless
    asked to, and refuse files of the same names that kame-sim did not write."""
    if (run_dir / TRACE_FILENAME).exists() and not overwrite:
        raise InputError(run_dir, None, "already holds a trace; pass --overwrite or choose --out")
    out = OutputDir(run_dir, "run directory")
    out.check(files)
    return out


def prepare_run_dir(run_dir: Path, overwrite: bool, files: Sequence[str] = (TRACE_FILENAME,)) -> OutputDir:
    """:func:`check_run_dir`, then remove what an earlier kame-sim run wrote there (and only that).

    The caller :meth:`~kame_sim.output_dir.OutputDir.record`\\ s each file before writing it.
    """
    out = check_run_dir(run_dir, overwrite, files)
    out.remove_previous()
    return out
