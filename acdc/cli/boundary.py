"""The command line's error boundary: one line for every error, never a traceback.

`OneLineErrors` (the command group's class) turns usage errors (an unknown option, a bad
value, a missing argument) into one line `error: ...; see `circuit CMD --help`` with exit code
2; `user_errors` (around every command) turns an `AcdcError` into one line `error: ...` with
exit code 1 and shows the library's `RunWarning`s as one line `warning: ...` each.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from acdc.errors import AcdcError

# click's exception classes, as the installed typer has them (typer vendors its own click).
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """The `circuit` command group, with every usage error (an unknown option, a bad value, a
    missing argument) reported as one line `error: ...; see `circuit CMD --help``, exit 2,
    in the form of every other error, instead of click's three-line Usage/Try/Error box."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
        except _UsageError as error:
            context = getattr(error, "ctx", None)
            command = context.command_path if context is not None else "circuit"
            message = one_line(error.format_message())  # type: ignore[attr-defined]
            err(f"error: {message.replace('Value error, ', '').rstrip('.')}; see `{command} "
                 f"--help`")
            code = error.exit_code  # type: ignore[attr-defined]
        except _ClickException as error:
            err(f"error: {one_line(error.format_message())}")  # type: ignore[attr-defined]
            code = error.exit_code  # type: ignore[attr-defined]
        except typer.Abort:
            err("error: aborted")
            code = 1
        else:
            code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code



F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERRUPTED = 130


def err(message: str) -> None:
    typer.echo(message, err=True)


def user_errors(command: F) -> F:
    """Report `AcdcError` as one line `error: ...` with exit code 1; Ctrl-C as exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    return command(*args, **kwargs)
                finally:
                    _report_warnings(caught)
        except AcdcError as error:
            err(f"error: {one_line(str(error))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err("interrupted before the search started; nothing was written")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _report_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Show our own warnings (`RunWarning`s) as one line each; drop library chatter."""
    from acdc.errors import RunWarning

    seen: set[str] = set()
    for item in caught:
        if issubclass(item.category, RunWarning):
            text = one_line(str(item.message))
            if text not in seen:
                seen.add(text)
                err(f"warning: {text}")


def one_line(text: str) -> str:
    return " ".join(text.split())

