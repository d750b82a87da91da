"""The report's drawings: re-drawn by the project's own code from checked values, then cleaned.

A report embeds no image file as it finds it: a file in a run or sweep directory can hold
anything, script included. Each drawing is made again from the data the tool wrote:

- the circuit by `acdc.exports.dot` through Graphviz, from the circuit itself;
- the faithfulness curve by `acdc.evaluation.plots.plot_curve`, from `evaluation.json`;
- the sweep's plot by `acdc.sweeps.results.plot_sweep`, from `sweep.json`;
- the ROC curve by `acdc.evaluation.roc_plot.roc_svg`, from `roc.json` (a sweep's or a
  ranking's curve; the single circuits' points from `comparison.json`).

Two drawings cannot be made again from what is on disk: the union drawing of `circuit compare`
(comparison.json does not list the reference's edges, nor whether the model's blocks are
parallel), and the circuit without Graphviz (then the run's own `circuit.svg` is all there is).
Those files, like every drawing above, go through the allow-list of `acdc.reports.svg` before
they reach the page. A `$` in a name from a file is escaped for matplotlib, which would read
`$...$` as a formula.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from acdc.core.circuit import Circuit
from acdc.core.files import MAX_RESULTS_BYTES, read_text
from acdc.reports.inputs import Comparison, Evaluation, Roc
from acdc.reports.svg import clean_svg

SVG_WHAT = "an SVG drawing"


def circuit_drawing(circuit: Circuit, title: str, score_width: bool, prefix: str) -> str | None:
    """The circuit drawn by Graphviz, cleaned; None when Graphviz is not installed."""
    from acdc.exports.dot import render, to_dot

    source = to_dot(circuit, title=title, score_width=score_width)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no Graphviz: the caller says so once
        written = render(source, Path(tmp) / "circuit.svg", "svg")
        if written.suffix != ".svg":
            return None
        return clean_svg(read_text(written, SVG_WHAT, MAX_RESULTS_BYTES), prefix,
                         "the circuit drawn by Graphviz")


def saved_drawing(path: Path, prefix: str) -> str:
    """A drawing file that cannot be made again (see the module docstring), cleaned; one
    `FileError` line when it cannot be read or is not an SVG document."""
    return clean_svg(read_text(path, SVG_WHAT, MAX_RESULTS_BYTES), prefix, str(path))


def curve_drawing(evaluation: Evaluation, prefix: str) -> str | None:
    """The faithfulness curve of an evaluation, as `circuit evaluate --curve` draws it."""
    from acdc.evaluation.plots import plot_curve

    curve = evaluation.curve
    if curve is None or len(curve.points) < 2:
        return None
    model = Path(evaluation.model).name if evaluation.model else "?"
    title = f"task {evaluation.task or '?'}, model {model}: faithfulness by circuit size"
    with tempfile.TemporaryDirectory() as tmp:
        written = plot_curve(curve, Path(tmp) / "plot", _as_text(title),
                             _as_text(evaluation.ranking))
        return _cleaned(written, prefix)


def sweep_drawing(record: dict[str, Any], prefix: str) -> str | None:
    """The sweep's plot, as `circuit sweep` draws it, from the checked `sweep.json` values."""
    from acdc.sweeps.driver import sweep_title
    from acdc.sweeps.results import plot_sweep

    if not any(run["status"] == "finished" for run in record["runs"]):
        return None
    named = {key: _as_text(value) if isinstance(value, str) else value
             for key, value in record.items()}
    with tempfile.TemporaryDirectory() as tmp:
        return _cleaned(plot_sweep(named, Path(tmp) / "plot", sweep_title(named)), prefix)


def roc_drawing(roc: Roc, comparison: Comparison | None, prefix: str) -> str | None:
    """The ROC plot of `circuit compare`: per level a series per sweep and per ranking (from
    `roc.json`), and a point per single circuit (a ranking's own circuit from `roc.json`, any
    other from `comparison.json`)."""
    from acdc.evaluation.roc import RocPoint
    from acdc.evaluation.roc_plot import RocSeries, roc_svg

    names = {item.key: item for item in comparison.inputs} if comparison else {}
    scores = {score.key: score for score in comparison.scores} if comparison else {}
    panels = []
    for level, panel_title in (("edge", "edges"), ("node", "nodes")):
        series = []
        for key in ("A", "B"):
            sweep = next((s for s in roc.sweeps if s.key == key), None)
            ranking = next((r for r in roc.rankings if r.key == key), None)
            if sweep is not None:
                found = sweep.levels.get(level)
                if found is not None:
                    points, front = found
                    series.append(RocSeries(sweep.name, tuple(RocPoint(*p) for p in points),
                                            tuple(RocPoint(*p) for p in front),
                                            sweep.auc.get(level)))
            elif ranking is not None:
                found = ranking.levels.get(level)
                if found is not None:
                    points, front = found
                    series.append(RocSeries(f"{ranking.name} ({ranking.ranked} ranking)",
                                            tuple(RocPoint(*p) for p in points),
                                            tuple(RocPoint(*p) for p in front),
                                            ranking.auc.get(level)))
                own = ranking.circuit.get(level)
                if own is not None:
                    item = names.get(key)
                    series.append(RocSeries(ranking.name, (RocPoint(
                        *own, item.threshold if item else None),)))
            elif key in scores:
                tpr, fpr, _ = getattr(scores[key], level)
                if tpr is not None and fpr is not None:
                    item = names.get(key)
                    series.append(RocSeries(item.name if item else key, (RocPoint(
                        fpr, tpr, item.threshold if item else None),)))
        if series:
            panels.append((panel_title, series))
    if not panels:
        return None
    svg = roc_svg(panels, f"ROC against {roc.reference or '?'}")
    return clean_svg(svg, prefix, "the ROC plot")


def _as_text(text: str) -> str:
    """`text` for matplotlib, which reads `$...$` as a formula (and fails on a bad one)."""
    return text.replace("$", r"\$")


def _cleaned(written: list[Path], prefix: str) -> str | None:
    svg = next((path for path in written if path.suffix == ".svg"), None)
    if svg is None:  # matplotlib missing: the plot function said so
        return None
    return clean_svg(read_text(svg, SVG_WHAT, MAX_RESULTS_BYTES), prefix, "a plot")
