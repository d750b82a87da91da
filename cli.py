"""The `circuit` command (console script `circuit = "cli:main"`): the commands live in the
`acdc.cli` package; this file is the entry point."""

from acdc.cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
