"""ROC of a threshold sweep against a reference circuit, as the ACDC paper computes it.

A sweep gives one circuit per threshold, and each circuit one point (FPR, TPR) against the
reference (`acdc.evaluation.compare.confusion`, at edge or node level). The curve is those
points plus the corners (0, 0) and (1, 1), with every point dominated by another dropped: q
dominates p when q's FPR is no larger and its TPR no smaller (and q is not p). What is left is
a staircase of points with FPR and TPR both increasing.

The area is the "pessimistic" one (`shared/EVALUATION.md`, section 3): sorted by FPR,

    AUC = sum_i (1 - x_i) * (y_i - y_{i-1}),    y before the first point = 0,

which is the area under the step function that stays at a point's TPR until the next point's
FPR: no credit is given for the segment between two points, as a sweep says nothing about the
circuits it did not find. Equivalently, the area under x -> the largest TPR among the points
with FPR <= x. A sweep that finds the reference exactly scores 1; one whose circuits hold every
negative before any positive scores 0.

>>> pessimistic_auc([RocPoint(0.1, 0.5), RocPoint(0.3, 0.6), RocPoint(0.2, 0.4),
...                  RocPoint(0.5, 0.9)])
0.67
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from acdc.core.graph import Graph
from acdc.errors import GraphError
from acdc.evaluation.compare import Level, confusion

CORNERS = ((0.0, 0.0), (1.0, 1.0))


@dataclass(frozen=True)
class RocPoint:
    """One point of a curve; `threshold` is None for the corners (0, 0) and (1, 1)."""

    fpr: float
    tpr: float
    threshold: float | None = None

    def __post_init__(self) -> None:
        for value in (self.fpr, self.tpr):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FPR and TPR are in [0, 1], got ({self.fpr}, {self.tpr})")


@dataclass(frozen=True)
class RocCurve:
    """The points of a sweep (in the order given), the curve (the non-dominated points with the
    corners, by FPR) and its pessimistic area."""

    points: tuple[RocPoint, ...]
    front: tuple[RocPoint, ...]
    auc: float

    def to_json(self) -> dict[str, Any]:
        on_front = {(p.fpr, p.tpr, p.threshold) for p in self.front}
        return {
            "auc": self.auc,
            "points": [{"threshold": p.threshold, "fpr": p.fpr, "tpr": p.tpr,
                        "on_curve": (p.fpr, p.tpr, p.threshold) in on_front}
                       for p in self.points],
            "curve": [{"threshold": p.threshold, "fpr": p.fpr, "tpr": p.tpr} for p in self.front],
        }


def roc_front(points: Sequence[RocPoint]) -> tuple[RocPoint, ...]:
    """The points and the corners (0, 0) and (1, 1), dominated ones dropped, sorted by FPR.

    Of several points at the same place the first given is kept (the corners come last).
    """
    candidates = list(points) + [RocPoint(x, y) for x, y in CORNERS]
    front: list[RocPoint] = []
    for i, p in enumerate(candidates):
        dominated = any(
            q.fpr <= p.fpr and q.tpr >= p.tpr and ((q.fpr, q.tpr) != (p.fpr, p.tpr) or j < i)
            for j, q in enumerate(candidates) if j != i
        )
        if not dominated:
            front.append(p)
    return tuple(sorted(front, key=lambda p: (p.fpr, p.tpr)))


def pessimistic_auc(points: Sequence[RocPoint]) -> float:
    """The staircase area sum (1 - x_i) * (y_i - y_{i-1}) over the curve of `points`."""
    area = 0.0
    previous = 0.0
    for p in roc_front(points):
        area += (1.0 - p.fpr) * (p.tpr - previous)
        previous = p.tpr
    return area


def roc_curve(points: Sequence[RocPoint]) -> RocCurve:
    """The curve and area of the given points (one per threshold)."""
    return RocCurve(tuple(points), roc_front(points), pessimistic_auc(points))


def sweep_roc(graph: Graph, circuits: Sequence[tuple[float, Sequence[bool]]],
              reference: Sequence[bool], level: Level = "edge") -> RocCurve:
    """The ROC of circuits of `graph`, given as (threshold, kept flags), against `reference`.

    Raises `GraphError` when the reference is empty or the whole graph at this level (TPR or
    FPR is then undefined).
    """
    points = []
    for threshold, kept in circuits:
        counts = confusion(graph, kept, reference, level)
        if counts.tpr is None or counts.fpr is None:
            what = "no" if counts.tpr is None else "every"
            raise GraphError(f"the reference has {what} {level} of the graph, so the {level} "
                             f"ROC is undefined")
        points.append(RocPoint(counts.fpr, counts.tpr, threshold))
    return roc_curve(points)
