"""What gets imported where: `kame-sim --help` without the settings models, sweep workers
without torch unless a run uses the real front-end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kame_sim.sweep.runner import RunTask, _worker_initargs

HEAVY = ("kame_sim.config", "kame_sim.delays", "kame_sim.runner", "pydantic", "pyarrow", "torch", "optuna")


def python(code: str) -> str:
    """The last stdout line of ``code`` run in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def _after_help(args: list[str]) -> list[str]:
    code = f"""
import json, sys
from kame_sim.cli import app
try:
    app({args!r})
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    return json.loads(python(code))


def test_help_imports_no_settings_models():
    assert _after_help(["--help"]) == []
    for command in ("run", "sweep", "search", "validate"):
        # typer itself imports pydantic to build a command's options; kame-sim adds nothing
        assert _after_help([command, "--help"]) in ([], ["pydantic"])


def _task(kind: str) -> RunTask:
    return RunTask("r", "/nowhere", {"frontend": {"kind": kind}}, {}, 0, "c")


def test_workers_share_the_cores_and_import_torch_only_for_the_real_front_end():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert _worker_initargs([_task("behavioural")], 2) == (max(1, cores // 2), False)
    assert _worker_initargs([_task("behavioural"), _task("kame")], 1) == (cores, True)
    assert _worker_initargs([_task("kame")], 10 * cores) == (1, True)
    prefix = "import os, sys\nfrom kame_sim.sweep.runner import _init_worker\n"
    init = "_init_worker(os.getppid(), 1, {})\n"  # the worker's parent: this test's process
    assert python(prefix + init.format(False) + "print('torch' in sys.modules)") == "False"
    assert python(prefix + init.format(True) + "import torch\nprint(torch.get_num_threads())") == "1"
