"""The `circuit` command line: parse options, call the `acdc` library, print.

The package holds the command group (`app`), the error boundary (`boundary`: one line for every
error), the options shared by commands and every method's own (`options`), signals
(`signals`), status, progress and table formatting (`display`), and one module per command or
group of commands.

Commands: `discover` (find a task's circuit with a discovery method, through `acdc.run`:
circuit.json, circuit.dot/.svg, run.yaml, and ACDC's decision log that `discover --resume DIR`
continues from), `graph` (node and edge counts and a memory estimate from a model's config
alone), `tasks` (the bundled tasks), `metrics` (what each metric reads and means), `render`
(re-draw a saved circuit), `export` (a circuit as a MIB circuit file, GraphML or CSV), `report`
(one self-contained HTML page of a run or a sweep), `evaluate` (a circuit's faithfulness and its
complement: evaluation.json, curves), `sweep` (ACDC at every threshold of a grid, sharing the
model and recordings: a run directory per threshold, sweep.json, plots; local worker processes
or Ray), `compare` (two circuits, or circuits and sweeps against a reference: Jaccard, TPR/FPR,
ROC) and `zoo train|eval` (the project's own small models). The library does the work;
commands parse, call and print.

Exit codes: 0 success; 1 a user error (`AcdcError`: bad task file, missing model, unknown
metric ...), reported as one line `error: ...` on stderr with no traceback; 2 a usage error
(unknown option, bad choice), one line too; 130 a run interrupted with Ctrl-C (the
partial circuit is still written, and `--resume` continues it).

The library and torch are imported inside the commands, so `circuit --help` is fast.
"""

from __future__ import annotations

import os

from acdc.cli import (  # noqa: F401  (each registers its commands on `app`)
    compare,
    discover,
    evaluate,
    export,
    info,
    report,
    sweep,
    zoo,
)
from acdc.cli.app import app


def main() -> None:
    """Console-script entry point (`circuit = "cli:main"`)."""
    # OpenMP threads that spin while waiting make the engine's many small operations far
    # slower when another process shares the cores; waiting passively costs about nothing.
    # Must be set before torch is imported (the commands import it lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


__all__ = ["app", "main"]
