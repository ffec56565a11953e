"""Usage errors (missing arguments, unknown options and commands, badly typed values) are one line.

Typer's default is a usage line, a hint and a framed box over several lines; kame-sim's rule for
bad input is one ``error:`` line, exit code 2. Checked for every command, by class of mistake.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from kame_sim.cli import app

runner = CliRunner()


def _commands(group, path=()):  # every leaf command path, e.g. ("trace", "show")
    for name, cmd in group.commands.items():
        if getattr(cmd, "commands", None):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name)


COMMANDS = sorted(_commands(get_command(app)))


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: kame-sim"), lines[0]
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_unknown_option_is_one_line(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--no-such-option-xyz"], prog_name="kame-sim")
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "--no-such-option-xyz" in line and f"kame-sim {' '.join(command)}" in line


@pytest.mark.parametrize("argv", [["nosuch"], ["trace", "nosuch"], ["import", "nosuch"]])
def test_unknown_command_is_one_line(argv: list[str]) -> None:
    result = runner.invoke(app, argv, prog_name="kame-sim")
    assert result.exit_code == 2
    assert "nosuch" in _one_error_line(result)


@pytest.mark.parametrize("argv", [["run"], ["trace", "show"], ["sweep"], ["validate"]])
def test_missing_argument_is_one_line(argv: list[str]) -> None:
    result = runner.invoke(app, argv, prog_name="kame-sim")
    assert result.exit_code == 2
    assert "Missing" in _one_error_line(result)


@pytest.mark.parametrize(
    "argv", [["sweep", "x.toml", "--workers", "abc"], ["run", "x.toml", "--seed", "1.5"]]
)
def test_badly_typed_option_is_one_line(argv: list[str]) -> None:
    result = runner.invoke(app, argv, prog_name="kame-sim")
    assert result.exit_code == 2
    assert argv[2] in _one_error_line(result)


def test_help_and_version_still_exit_0() -> None:
    assert runner.invoke(app, ["--help"]).exit_code == 0
    assert runner.invoke(app, ["run", "--help"]).exit_code == 0
    assert runner.invoke(app, ["--version"]).exit_code == 0


def test_console_script_prints_one_line() -> None:
    # the installed entry point goes through the same group (not only CliRunner)
    proc = subprocess.run([sys.executable, "-m", "kame_sim.cli", "run", "--bogus"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        line for line in proc.stderr.splitlines() if line.startswith("error: ")
    ] and len(proc.stderr.strip().splitlines()) == 1
