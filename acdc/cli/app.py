"""The `circuit` command group (commands register themselves on it: `acdc.cli`)."""

from __future__ import annotations

import typer

from acdc.cli.boundary import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors,
    name="circuit",
    help="Automated circuit discovery (ACDC) on TransformerLens models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no 80-column box
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
zoo_app = typer.Typer(help="Train and evaluate the project's own small models.",
                      no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

