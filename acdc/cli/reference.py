"""The command line's reference as Markdown, read from the commands themselves.

The documentation's "Commands" page is this text: every command and group of `circuit`, with
its usage line, its description and every option and argument exactly as `--help` shows them
(types, choices, defaults). The options `discover` and `sweep` take from the method registry
(`acdc.cli.options.with_method_options`) are there too, because the text is made from the
command line as click builds it, not from a list kept by hand. At every documentation build
an MkDocs hook (`scripts/mkdocs_hooks.py`) replaces the stub `docs/cli.md` with
`command_reference()`, so the page cannot drift from the program; `python -m
acdc.cli.reference` prints it.

Examples:
    >>> text = command_reference()
    >>> "## circuit discover" in text and "--ig-steps" in text
    True
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import typer

from acdc.cli import app

_WIDTH = 100


def command_reference() -> str:
    """The Markdown page: an introduction, then one section per command in the order
    `circuit --help` lists them (a group's commands after the group)."""
    root = typer.main.get_command(app)
    parts = ["# Commands", "",
             "Generated from the command line itself when the documentation is built (every "
             "command's `--help`, the options of the discovery methods included), so it "
             "always matches the installed `circuit`. Every command also prints this with "
             "`--help` (`-h`).", ""]
    for path, command, context in _walk(root, root.context_class(root, info_name="circuit")):
        parts += _section(path, command, context)
    return "\n".join(parts).rstrip() + "\n"


def _walk(command: Any, context: Any) -> Iterator[tuple[str, Any, Any]]:
    """Every command under `command`, depth first, with its context (typer carries its own
    copy of click, so commands are recognised by what they do, not by click's classes)."""
    yield context.command_path, command, context
    for name in _subcommands(command, context):
        child = command.get_command(context, name)
        yield from _walk(child, child.context_class(child, info_name=name, parent=context))


def _subcommands(command: Any, context: Any) -> list[str]:
    if not hasattr(command, "list_commands"):
        return []
    return [name for name in command.list_commands(context)
            if (child := command.get_command(context, name)) is not None and not child.hidden]


def _section(path: str, command: Any, context: Any) -> list[str]:
    formatter = context.make_formatter()
    formatter.width = _WIDTH
    command.format_usage(context, formatter)
    usage = formatter.getvalue().strip()
    lines = [f"## {path}", "", "```text", usage, "```", ""]
    description = _text(command.help or command.short_help or "")
    if description:
        lines += [description, ""]
    names = _subcommands(command, context)
    if names:
        lines += ["Commands: " + ", ".join(f"[`{n}`](#{_slug(f'{path} {n}')})" for n in names)
                  + ".", ""]
    rows = [row for param in command.get_params(context)
            if (row := _parameter(param, context)) is not None]
    if rows:
        lines += ["| argument or option | meaning |", "|---|---|", *rows, ""]
    return lines


def _parameter(param: Any, context: Any) -> str | None:
    """One table row: the option's names and value as `--help` writes them, and its help with
    the default, choices and range `--help` adds."""
    record = param.get_help_record(context)
    if record is None:
        return None
    names, help_text = record
    return f"| `{names}` | {_cell(help_text)} |"


def _text(text: str) -> str:
    """A docstring or help text as Markdown: paragraphs kept, lines joined, HTML escaped
    (backticks stay code)."""
    paragraphs = [" ".join(line.strip() for line in block.splitlines())
                  for block in re.split(r"\n\s*\n", text.strip())]
    return "\n\n".join(_escape(p) for p in paragraphs if p)


def _cell(text: str) -> str:
    return _escape(" ".join(text.split())).replace("|", "\\|")


def _escape(text: str) -> str:
    """Escape what Markdown or HTML would read as markup, outside `code` spans."""
    pieces = re.split(r"(`[^`]*`)", text)
    return "".join(piece if piece.startswith("`") and piece.endswith("`") and len(piece) > 1
                   else html.escape(piece, quote=False).replace("*", "\\*")
                   for piece in pieces)


def _slug(heading: str) -> str:
    """The anchor MkDocs gives a heading (lower case, words joined by '-')."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())


def main(*_: Any) -> None:
    print(command_reference(), end="")


if __name__ == "__main__":
    main()
