"""Putting a finished report into its output folder without losing anything of the user's.

Why a staging folder: a report is built by several writers (pictures, Perfetto JSON, the page)
and can fail half-way; it goes to a folder the user chose, which may hold their own files or an
older report. So the report is built in a private temporary folder first; only when it is
complete are its files moved into the output folder, each listed in the folder's manifest
(:mod:`kame_sim.output_dir`). A name taken by a file kame-sim did not write is refused before
anything is moved; files of an earlier report that this one did not write again are removed;
everything else is left alone. A failed report creates nothing, not even an empty folder.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from kame_sim.output_dir import OutputDir


def publish_report(out_dir: Path, build: Callable[[Path], Path]) -> Path:
    """Run ``build(staging_dir) -> index path`` in a fresh folder, then move its files into
    ``out_dir``; return the published index path."""
    # an out_dir that is a file, or a broken manifest, fails here
    output = OutputDir(out_dir, "report directory")
    with tempfile.TemporaryDirectory(prefix="kame-sim-report-") as tmp:
        staging = Path(tmp) / "report"
        index = build(staging)
        names = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        output.check(names)
        try:
            for name in names:
                shutil.move(staging / name, output.record(name))
        except BaseException:
            output.rollback()
            raise
        output.commit(remove_stale=True)
        return output.root / index.relative_to(staging)
