"""ROC plots: hand-written SVG always, PNG through matplotlib when it is installed.

A plot has one panel per level (edges, nodes); each panel the diagonal, and per series (a
sweep, or a single circuit) its points and, for a sweep, the pessimistic staircase through the
points on its curve (`acdc.evaluation.roc`): the line stays at a point's TPR until the next
point's FPR. Points on the curve are filled, dominated ones hollow; each point's tooltip (SVG)
gives its threshold. The AUC of every sweep is written in its colour in the panel.

The SVG needs nothing but the standard library; `roc_png` returns None when matplotlib is
missing (it is not a dependency of the project).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from acdc.core.files import atomic_path
from acdc.evaluation.roc import RocPoint

COLORS = ("#1f77b4", "#e66100", "#5d3a9b", "#2ca02c", "#d62728", "#8c564b")
PANEL = 330          # panel width and height in SVG pixels
PLOT = 240           # the square plotting area inside a panel
LEFT, TOP = 60, 50   # the plotting area's offset inside its panel
TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MAX_LABEL = 48


@dataclass(frozen=True)
class RocSeries:
    """One series of a panel: a sweep (points, curve and AUC) or a single circuit (one point,
    no curve)."""

    label: str
    points: tuple[RocPoint, ...]
    front: tuple[RocPoint, ...] = ()
    auc: float | None = None


Panel = tuple[str, Sequence[RocSeries]]


def staircase(front: Sequence[RocPoint]) -> list[tuple[float, float]]:
    """The corners of the pessimistic step line through `front` (sorted by FPR), from (0, 0)
    to FPR 1."""
    corners = [(0.0, 0.0)]
    for p in front:
        x, y = corners[-1]
        if p.fpr != x:
            corners.append((p.fpr, y))
        if p.tpr != y:
            corners.append((p.fpr, p.tpr))
    if corners[-1][0] != 1.0:
        corners.append((1.0, corners[-1][1]))
    return corners


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else "…" + label[-(MAX_LABEL - 1):]


def _fmt_threshold(point: RocPoint) -> str:
    return "corner" if point.threshold is None else f"threshold {point.threshold:g}"


def roc_svg(panels: Sequence[Panel], title: str) -> str:
    """An SVG document with one ROC panel per (panel title, series) pair."""
    width = PANEL * len(panels)
    height = PANEL + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" '
           f'font-weight="bold">{escape(title)}</text>']
    for k, (panel_title, series) in enumerate(panels):
        out += _panel_svg(k * PANEL, panel_title, series)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _panel_svg(x0: float, title: str, series: Sequence[RocSeries]) -> list[str]:
    left, top = x0 + LEFT, TOP

    def px(x: float) -> float:
        return round(left + x * PLOT, 2)

    def py(y: float) -> float:
        return round(top + (1 - y) * PLOT, 2)

    out = [f'<text x="{left + PLOT / 2}" y="{top - 10}" text-anchor="middle" '
           f'font-size="13">{escape(title)}</text>']
    for t in TICKS:
        out.append(f'<line x1="{px(t)}" y1="{py(0)}" x2="{px(t)}" y2="{py(1)}" stroke="#eeeeee"/>')
        out.append(f'<line x1="{px(0)}" y1="{py(t)}" x2="{px(1)}" y2="{py(t)}" stroke="#eeeeee"/>')
        out.append(f'<text x="{px(t)}" y="{py(0) + 15}" text-anchor="middle" '
                   f'font-size="10">{t:g}</text>')
        out.append(f'<text x="{px(0) - 6}" y="{py(t) + 3}" text-anchor="end" '
                   f'font-size="10">{t:g}</text>')
    out += [f'<rect x="{px(0)}" y="{py(1)}" width="{PLOT}" height="{PLOT}" fill="none" '
            f'stroke="#444444"/>',
            f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="#aaaaaa" '
            f'stroke-dasharray="4 3"/>',
            f'<text x="{px(0.5)}" y="{py(0) + 32}" text-anchor="middle" '
            f'font-size="11">false-positive rate</text>',
            f'<text x="{px(0) - 36}" y="{py(0.5)}" text-anchor="middle" font-size="11" '
            f'transform="rotate(-90 {px(0) - 36} {py(0.5)})">true-positive rate</text>']
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if s.front:
            path = " ".join(f"{px(x)},{py(y)}" for x, y in staircase(s.front))
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="2"/>')
        on_front = set(s.front)
        for p in s.points:
            fill = color if (p in on_front or not s.front) else "white"
            out.append(f'<circle cx="{px(p.fpr)}" cy="{py(p.tpr)}" r="3.5" fill="{fill}" '
                       f'stroke="{color}" stroke-width="1.5"><title>{escape(s.label)}: '
                       f'{_fmt_threshold(p)}, FPR {p.fpr:.4g}, TPR {p.tpr:.4g}</title></circle>')
        text = _short(s.label) + (f": AUC {s.auc:.3f}" if s.auc is not None else "")
        y = py(0) - 8 - 14 * (len(series) - 1 - i)
        out.append(f'<text x="{px(1) - 5}" y="{y}" text-anchor="end" font-size="10" '
                   f'fill="{color}">{escape(text)}</text>')
    return out


def roc_png(panels: Sequence[Panel], title: str, path: str | Path) -> Path | None:
    """The same plot as a PNG through matplotlib; None (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (panel_title, series) in zip(axes[0], panels, strict=True):
        ax.plot([0, 1], [0, 1], color="#aaaaaa", linestyle="--", linewidth=1)
        for i, s in enumerate(series):
            color = COLORS[i % len(COLORS)]
            label: str | None = _short(s.label) + (f" (AUC {s.auc:.3f})" if s.auc is not None
                                                   else "")
            if s.front:
                xs, ys = zip(*staircase(s.front), strict=True)
                ax.plot(xs, ys, color=color, linewidth=2, label=label)
                label = None
            on_front = set(s.front)
            for p in s.points:
                filled = p in on_front or not s.front
                ax.plot([p.fpr], [p.tpr], "o", color=color, markersize=5, label=label,
                        markerfacecolor=color if filled else "white")
                label = None
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="false-positive rate",
               ylabel="true-positive rate", title=panel_title, aspect="equal")
        ax.grid(color="#eeeeee")
        ax.legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    return path
