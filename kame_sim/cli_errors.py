"""Command-line usage errors as one line, like every other bad input.

Typer prints a usage error (a missing argument, an unknown option, a bad option value) as a usage
line, a hint line and a framed box; kame-sim's rule for bad input is one line naming what is wrong,
exit code 2, so that scripts and CI logs can grep it. The top-level group runs click in
non-standalone mode and renders the errors itself; everything else (exit codes, ``--help``,
``typer.Exit``) behaves as before.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup


def usage_error_line(error: typer.TyperException) -> str:
    """``error: kame-sim run: Missing parameter: scenario (see 'kame-sim run --help')``.

    Typer vendors click (its exceptions are not ``click``'s); ``TyperException`` is their public
    base. A usage error is one with exit code 2 (click's convention).
    """
    ctx = getattr(error, "ctx", None)
    where = ctx.command_path if ctx is not None else "kame-sim"
    format_message = getattr(error, "format_message", None)
    text = format_message() if callable(format_message) else str(error)
    message = " ".join(text.split())  # click's messages may span lines
    hint = f" (see '{where} --help')" if getattr(error, "exit_code", 1) == 2 else ""
    return f"error: {where}: {message}{hint}"


class OneLineErrorsGroup(TyperGroup):
    """The ``kame-sim`` group: click exceptions become one ``error:`` line on stderr."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except typer.TyperException as exc:
            typer.echo(usage_error_line(exc), err=True)
            sys.exit(getattr(exc, "exit_code", 1))
        sys.exit(rv if isinstance(rv, int) else 0)
