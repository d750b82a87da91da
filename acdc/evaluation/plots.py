"""Plots of evaluation results, as SVG and PNG files (matplotlib, drawn off-screen).

matplotlib is imported only when a plot is drawn; without it, `plot_curve` warns once
(`RunWarning`) and writes nothing, and the numbers stay in `evaluation.json`. SVGs are written
without a date and with a fixed id salt, so the same curve gives the same file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acdc.core.files import atomic_path
from acdc.errors import RunWarning

if TYPE_CHECKING:
    from acdc.evaluation.measures import FaithfulnessCurve

FORMATS: tuple[str, ...] = ("svg", "png")


def _pyplot():
    """matplotlib's pyplot on the off-screen Agg backend, or None (with a warning)."""
    try:
        import matplotlib
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install matplotlib): the curve is in the "
                      "JSON file but not plotted", RunWarning, stacklevel=3)
        return None
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "circuit"
    import matplotlib.pyplot as plt

    return plt


# One look per series, in the order the metrics are drawn: line style and marker both differ,
# markers hollow and growing, so a series drawn over another stays visible around it.
STYLES: tuple[tuple[Any, str], ...] = (("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"),
                                       ((0, (5, 1, 1, 1)), "v"), ((0, (1, 3)), "P"))
# Two series closer than this everywhere (f units) lie on one line at any plotted size.
COINCIDE = 1e-3


def curve_series(curve: FaithfulnessCurve) -> list[dict[str, Any]]:
    """What `plot_curve` draws, one entry per metric with an f: its points, its legend label
    (CPR and CMD; "on the X line" when its points coincide with an earlier metric X's, as KL's
    and NLL's do when the model is nearly certain of the tokens NLL scores), its line style
    and marker."""
    series: list[dict[str, Any]] = []
    for name in curve.cpr:
        points = [(x, f) for x, f in zip(curve.fractions, curve.faithfulness(name), strict=True)
                  if f is not None]
        if not points:
            continue
        area = (f"CPR {curve.cpr[name]:.3g}, CMD {curve.cmd[name]:.3g}"
                if curve.cpr[name] is not None else "f undefined at some sizes")
        same = next((earlier["name"] for earlier in series
                     if _coincide(earlier["points"], points)), None)
        if same is not None:
            area += f"; on the {same} line"
        linestyle, marker = STYLES[len(series) % len(STYLES)]
        series.append({"name": name, "points": points, "label": f"{name} ({area})",
                       "linestyle": linestyle, "marker": marker,
                       "markersize": 4 + 2 * len(series)})
    return series


def _coincide(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    return len(a) == len(b) and all(xa == xb and abs(fa - fb) < COINCIDE
                                    for (xa, fa), (xb, fb) in zip(a, b, strict=True))


def plot_curve(curve: FaithfulnessCurve, stem: Path, title: str = "",
               ranking: str = "") -> list[Path]:
    """f against the fraction of edges (log x), one line per metric with its CPR and CMD in
    the legend, and f = 1 dashed; written to `stem`.svg and `stem`.png. Returns the files.
    Each metric has its own line style and hollow marker (`curve_series`), so metrics whose
    curves coincide stay visible, and the legend says which line they lie on."""
    plt = _pyplot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(7.2, 4.5), dpi=120)
    try:
        for item in curve_series(curve):
            ax.plot(*zip(*item["points"], strict=True), linestyle=item["linestyle"],
                    marker=item["marker"], markersize=item["markersize"],
                    markerfacecolor="none", label=item["label"])
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        units = "edges" if curve.level == "edge" else "heads and MLPs"
        ax.set_xlabel(f"fraction of the {curve.n_edges_total:,} {units} (top by |score|"
                      f"{', pruned' if curve.pruned else ''})")
        ax.set_ylabel("normalised faithfulness f")
        heading = title + (f"\nranking: {ranking}" if ranking else "")
        if heading:
            ax.set_title(heading, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        return save_figure(fig, stem)
    finally:
        plt.close(fig)


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """`stem.svg` and `stem.png` of a figure, each written atomically."""
    written = []
    for suffix in FORMATS:
        path = stem.with_name(f"{stem.name}.{suffix}")
        with atomic_path(path) as temporary:
            fig.savefig(temporary, format=suffix, metadata=_metadata(suffix))
        written.append(path)
    return written


def _metadata(suffix: str) -> dict[str, str | None]:
    if suffix == "svg":
        return {"Date": None, "Creator": "circuit"}
    return {"Software": "circuit"}
