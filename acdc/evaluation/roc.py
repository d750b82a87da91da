"""ROC of a threshold sweep, or of a ranking, against a reference circuit, as the ACDC paper
computes it.

A sweep gives one circuit per threshold, and each circuit one point (FPR, TPR) against the
reference (`acdc.evaluation.compare.confusion`, at edge or node level). The curve is those
points plus the corners (0, 0) and (1, 1), with every point dominated by another dropped: q
dominates p when q's FPR is no larger and its TPR no smaller (and q is not p). What is left is
a staircase of points with FPR and TPR both increasing.

The area is the "pessimistic" one of the ACDC authors' code (Conmy et al. 2023): sorted by FPR,

    AUC = sum_i (1 - x_i) * (y_i - y_{i-1}),    y before the first point = 0,

which is the area under the step function that stays at a point's TPR until the next point's
FPR: no credit is given for the segment between two points, as a sweep says nothing about the
circuits it did not find. Equivalently, the area under x -> the largest TPR among the points
with FPR <= x. A sweep that finds the reference exactly scores 1; one whose circuits hold every
negative before any positive scores 0.

**Rankings.** A method that scores every edge (EAP, exact patching, an ACDC run's scores) or
every head and MLP (HISP) gives one circuit per cut of its ranking: the top k by |score|.
`ranking_roc` takes every cut at once: the edges (nodes) of each cut are counted
incrementally, each entering at its rank, so all 32,923 cuts of GPT-2 small's edges cost one
pass over the graph. An edge ranking counts residual edges, each direct q/k/v edge entering
with the first residual edge into its input (`acdc.core.selection`; at positions, into its
input at its group; the cuts are not pruned, as MIB's x-axis is not); a node ranking's cut k
is every edge among its top k heads and MLPs (`edges_among`: HISP's "units removed
cumulatively, least important first", read from the other end). Cuts fall only between
different |scores| (tied units are never split, so the order within a tie gets no credit);
unscored units come last, as one group. At node level a node counts when it touches a kept
edge, as for any circuit (`acdc.evaluation.compare`). Only the points on the curve are kept.

>>> pessimistic_auc([RocPoint(0.1, 0.5), RocPoint(0.3, 0.6), RocPoint(0.2, 0.4),
...                  RocPoint(0.5, 0.9)])
0.67
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from acdc.core.graph import Graph
from acdc.core.selection import ALWAYS_NODES, node_of, ranked, scored_nodes, size_key
from acdc.errors import GraphError
from acdc.evaluation.compare import Level, confusion, kept_nodes, node_names

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
    Sorted by FPR (then TPR from the highest, then the order given), a point is on the curve
    exactly when its TPR is above that of every point before it: O(n log n), so a ranking's
    32,923 cuts cost little.
    """
    candidates = list(points) + [RocPoint(x, y) for x, y in CORNERS]
    order = sorted(range(len(candidates)),
                   key=lambda i: (candidates[i].fpr, -candidates[i].tpr, i))
    front: list[RocPoint] = []
    best = -1.0
    for i in order:
        if candidates[i].tpr > best:
            front.append(candidates[i])
            best = candidates[i].tpr
    return tuple(front)


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


# --------------------------------------------------------------------------- rankings


def _cuts(units: Sequence[int], scores: Sequence[float | None]) -> tuple[list[int], list[int],
                                                                       list[float | None]]:
    """`units` ranked by |score| (largest first, ties in the given order), each unit's rank
    (1-based: the size of the first cut that holds it), and the cuts: the sizes at which the
    |score| changes (0 and len(units) included) with the smallest |score| each keeps."""
    order = ranked(units, scores)
    rank = {unit: position + 1 for position, unit in enumerate(order)}
    cuts: list[int] = [0]
    thresholds: list[float | None] = [None]
    for position, unit in enumerate(order):
        last = position + 1 == len(order)
        if last or size_key(scores[order[position + 1]]) != size_key(scores[unit]):
            score = scores[unit]
            cuts.append(position + 1)
            thresholds.append(None if score is None else abs(score))
    return cuts, [rank[u] for u in units], thresholds


def _curve(entries: Sequence[int], truth: Sequence[bool], cuts: Sequence[int],
           thresholds: Sequence[float | None], what: str, name: str) -> RocCurve:
    """The curve of the cuts, given when each item (edge or node) enters (the size of the
    first cut that holds it; never: a size past the last cut) and whether the reference
    holds it."""
    positives = sum(truth)
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        state = "no" if positives == 0 else "every"
        raise GraphError(f"the reference has {state} {what} of the graph, so the {what} ROC of "
                         f"{name} is undefined")
    size = max(cuts) + 2
    tp, fp = [0] * size, [0] * size
    for entry, positive in zip(entries, truth, strict=True):
        step = min(entry, size - 1)
        if positive:
            tp[step] += 1
        else:
            fp[step] += 1
    points = []
    true_positives = false_positives = 0
    previous = 0
    for cut, threshold in zip(cuts, thresholds, strict=True):
        for step in range(previous, cut + 1):
            true_positives += tp[step]
            false_positives += fp[step]
        previous = cut + 1
        points.append(RocPoint(false_positives / negatives, true_positives / positives,
                               threshold))
    curve = roc_curve(points)
    on_curve = set(curve.front)
    return RocCurve(tuple(p for p in points if p in on_curve), curve.front, curve.auc)


def _node_entries(graph: Graph, edge_entries: Sequence[int]) -> list[int]:
    """When each node of `node_names(graph)` enters: with the first kept edge touching it."""
    never = max(edge_entries, default=0) + 1
    first = dict.fromkeys(node_names(graph), never)
    for edge in graph.edges:
        for name in edge.endpoints:
            node = node_of(name)
            first[node] = min(first[node], edge_entries[edge.index])
    return list(first.values())


def ranking_roc(graph: Graph, reference: Sequence[bool], level: Level = "edge", *,
                edge_scores: Sequence[float | None] | None = None,
                node_scores: Mapping[str, float | None] | None = None,
                name: str = "the ranking") -> RocCurve:
    """The ROC at `level` (edge or node) of every cut of a ranking (see the module docstring)
    against `reference` (kept flags in graph order): `edge_scores` (per edge, graph order) or
    `node_scores` (per head and MLP by name).

    Raises `GraphError` when the reference has no or every edge (node): FPR or TPR is then
    undefined.
    """
    if (edge_scores is None) == (node_scores is None):
        raise ValueError("give edge_scores or node_scores")
    n_edges = len(graph.edges)
    if edge_scores is not None:
        if len(edge_scores) != n_edges:
            raise ValueError(f"{len(edge_scores)} scores for a graph of {n_edges} edges")
        residual = [e.index for e in graph.edges if e.kind == "residual"]
        cuts, ranks, thresholds = _cuts(residual, edge_scores)
        entries = [0] * n_edges
        first_into: dict[tuple[str, int | None], int] = {}
        for index, rank in zip(residual, ranks, strict=True):
            entries[index] = rank
            edge = graph.edges[index]
            receiver = (edge.receiver.name, edge.group)
            first_into[receiver] = min(first_into.get(receiver, rank), rank)
        for edge in graph.edges:
            if edge.kind == "direct":  # with the first kept residual edge into its input
                entries[edge.index] = first_into.get((edge.receiver.name, edge.group),
                                                     len(residual) + 1)
    else:
        assert node_scores is not None
        units = scored_nodes(graph)
        unknown = sorted(set(node_scores) - set(units))
        if unknown:
            raise GraphError(f"node scores for {', '.join(map(repr, unknown[:3]))}, which are "
                             f"not heads or MLPs of this graph")
        values = [node_scores.get(unit) for unit in units]
        cuts, ranks, thresholds = _cuts(range(len(units)), values)
        node_entry = {unit: rank for unit, rank in zip(units, ranks, strict=True)}
        node_entry.update(dict.fromkeys(ALWAYS_NODES, 0))
        entries = [max(node_entry[node_of(a)], node_entry[node_of(b)])
                   for a, b in (edge.endpoints for edge in graph.edges)]
    if level == "edge":
        return _curve(entries, list(reference), cuts, thresholds, "edge", name)
    if level == "node":
        return _curve(_node_entries(graph, entries), list(kept_nodes(graph, reference)), cuts,
                      thresholds, "node", name)
    raise ValueError(f"level must be edge or node, got {level!r}")
