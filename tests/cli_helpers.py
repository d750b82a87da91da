"""The command line in-process for the tests: one runner, one reading of a user error."""

from __future__ import annotations

from typer.testing import CliRunner

import cli

runner = CliRunner()


def invoke(*args):
    """`circuit ARGS...` in this process (arguments may be paths or numbers)."""
    return runner.invoke(cli.app, [str(a) for a in args])


def error_line(result) -> str:
    """The one-line message of a user error: the last line on stderr, the only one starting
    with `error:` (status lines may come before it), and no traceback."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert errors == lines[-1:] and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit)
    return lines[-1]
