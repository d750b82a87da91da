"""MkDocs hooks (`hooks:` in mkdocs.yml): the "Commands" page, generated from the command line.

`cli.md` is not a file in docs/: it is made at every build by `acdc.cli.reference`, which walks
the `circuit` command group as click builds it (the discovery methods' options included), so
the page always says what `--help` says.
"""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files

CLI_PAGE = "cli.md"


def on_files(files: Files, config: Any) -> Files:
    from acdc.cli.reference import command_reference

    files.append(File.generated(config, CLI_PAGE, content=command_reference()))
    return files
