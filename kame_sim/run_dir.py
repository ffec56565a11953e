"""The output folder of a run: where it goes and what may be removed from it.

Owned here so that the simulator's runner and the importers (which write traces too) share one
rule for refusing to clobber a trace, without the importers depending on the simulator.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kame_sim.errors import InputError
from kame_sim.paths import make_output_dir
from kame_sim.trace.schema import TRACE_FILENAME


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing trace unless asked to."""
    if (run_dir / TRACE_FILENAME).exists():
        if not overwrite:
            raise InputError(run_dir, None, "already holds a trace; pass --overwrite or choose --out")
        shutil.rmtree(run_dir)
    make_output_dir(run_dir, "run directory")
