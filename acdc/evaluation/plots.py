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


def plot_curve(curve: FaithfulnessCurve, stem: Path, title: str = "",
               ranking: str = "") -> list[Path]:
    """f against the fraction of edges (log x), one line per metric with its CPR and CMD in
    the legend, and f = 1 dashed; written to `stem`.svg and `stem`.png. Returns the files."""
    plt = _pyplot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(7.2, 4.5), dpi=120)
    try:
        xs = curve.fractions
        for name in curve.cpr:
            points = [(x, f) for x, f in zip(xs, curve.faithfulness(name), strict=True)
                      if f is not None]
            if not points:
                continue
            area = (f"CPR {curve.cpr[name]:.3g}, CMD {curve.cmd[name]:.3g}"
                    if curve.cpr[name] is not None else "f undefined at some sizes")
            ax.plot(*zip(*points, strict=True), marker="o", markersize=4, label=f"{name} ({area})")
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
