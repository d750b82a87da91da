"""The `circuit` command group (commands register themselves on it: `acdc.cli`), with the
options of the group itself: `--version`, and shell completion (`--install-completion`,
`--show-completion`)."""

from __future__ import annotations

from typing import Annotated

import typer

from acdc.cli.boundary import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors,
    name="circuit",
    help="Automated circuit discovery on transformer language models: ACDC, attribution, "
         "exact patching, mask optimization and node importance methods, and the tools to "
         "judge, compare and export their circuits.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no 80-column box
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
zoo_app = typer.Typer(help="Train and evaluate the project's own small models.",
                      no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


def _show_version(value: bool) -> None:
    if value:
        from acdc import __version__

        typer.echo(f"circuit {__version__}")
        raise typer.Exit()


@app.callback()
def group(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_show_version,
        help="Print the version and exit.")] = False) -> None:
    """Automated circuit discovery on transformer language models."""
