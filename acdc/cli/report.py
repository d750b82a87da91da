"""`circuit report`: one self-contained HTML page of a run or a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acdc.cli.app import app
from acdc.cli.boundary import user_errors
from acdc.cli.options import NoScoreWidthOption


@app.command()
@user_errors
def report(
    target: Annotated[Path, typer.Argument(
        metavar="RUN_OR_SWEEP_DIR",
        help="A run directory (`circuit discover`), a sweep directory (tau-<threshold>/ run "
             "directories, sweep.json), or a circuit file.")],
    out: Annotated[Path | None, typer.Option(
        help="HTML file to write. Default: report.html in the directory (beside a circuit "
             "file: <name>.html).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Sweep: the threshold whose circuit is drawn and listed. Default: the middle one "
             "of the sweep's thresholds.")] = None,
    comparison: Annotated[list[Path] | None, typer.Option(
        metavar="DIR", help="A `circuit compare` output directory to include (comparison.json, "
                            "roc.json and their drawings); repeat for several. Default: those "
                            "found in the directory and its subdirectories.")] = None,
    no_score_width: NoScoreWidthOption = False,
) -> None:
    """Write one self-contained HTML page about a run or a sweep: settings, the circuit
    drawing, metrics, faithfulness, sweep and ROC plots, and a sortable table of edges."""
    from acdc.reports import write_report

    written = write_report(target, out, threshold=threshold, comparisons=comparison,
                           score_width=not no_score_width)
    typer.echo(f"wrote {written}")


