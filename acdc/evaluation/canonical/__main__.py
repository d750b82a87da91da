"""Generate the canonical circuit files: `python -m acdc.evaluation.canonical [--check]`.

Writes `<name>.txt` for every canonical circuit into this package's directory (or `--out DIR`),
printing each circuit's edge count against the authors'. With `--check`, writes nothing and
exits 1 when a shipped file differs from what the rules generate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acdc.evaluation.canonical import CANONICAL, CANONICAL_NAMES, canonical_text

HERE = Path(__file__).resolve().parent


def stale_files(directory: Path = HERE) -> list[str]:
    """The canonical circuits whose file in `directory` is missing or differs from the rules."""
    stale = []
    for name in CANONICAL_NAMES:
        path = directory / f"{name}.txt"
        if not path.is_file() or path.read_text(encoding="utf-8") != canonical_text(name):
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acdc.evaluation.canonical",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from the rules")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"{args.out / (name + '.txt')}: differs from the rules; regenerate it with "
                  f"`python -m acdc.evaluation.canonical`", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in CANONICAL_NAMES:
        text = canonical_text(name)
        path = args.out / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        n_edges = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        count = CANONICAL[name].authors_count
        print(f"wrote {path}: {n_edges} edges"
              + (f" (the authors' count: {count})" if count is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
