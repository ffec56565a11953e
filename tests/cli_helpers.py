"""Calling the CLI in tests, and the one-line-error rule every bad input must meet.

Shared by the CLI, bad-input, export, schedule, fork, search and user-file tests (each had its own
copy). Imported as ``from cli_helpers import ...`` (tests/ is on the path, as for conftest).
"""

from __future__ import annotations

from typer.testing import CliRunner

from kame_sim.cli import app

runner = CliRunner()


def invoke(*args: object):
    """``kame-sim ARGS...`` in-process (every argument turned into a string)."""
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *names: str) -> str:
    """The single ``error:`` line of an exit-2 result; it must mention every one of ``names``."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]
