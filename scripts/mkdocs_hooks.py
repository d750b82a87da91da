"""MkDocs hooks (`hooks:` in mkdocs.yml): the "Commands" page, generated from the command line.

`docs/cli.md` in the repository is a stub for readers without the built site; at every build
its content is replaced by `acdc.cli.reference.command_reference()`, which walks the `circuit`
command group as click builds it (the discovery methods' options included), so the page always
says what `--help` says.
"""

from __future__ import annotations

from typing import Any

CLI_PAGE = "cli.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != CLI_PAGE:
        return markdown
    from acdc.cli.reference import command_reference

    return command_reference()
