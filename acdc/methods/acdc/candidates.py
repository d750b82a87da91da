"""Several edge tests in one evaluation, with the same decisions as one at a time.

ACDC is sequential: whether edge j+1 is tested with edge j removed depends on edge j's
decision. When one evaluation of k circuits costs little more than one (a small model, or a
GPU that a single test leaves idle), we can evaluate ahead: a *candidate* is "edge j removed,
with this subset of the earlier edges of the window removed too". The candidates that a
run is most likely to need form a tree (after edge j, the run goes on with it removed, or
kept); we evaluate the k most likely ones together, then walk the tree with the real
decisions. Every decision the walk reaches was computed on exactly the circuit a sequential
run would have at that point, so the decisions are the same; the walk stops at the first
decision whose candidate was not evaluated, and the next evaluation starts from there.

With keep rate p, the k most likely candidates of a mostly-removing run (p small) are a chain
"all earlier ones removed"; with p near 1/2 they are a full binary tree.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """Edge `edge` of the window removed, with the earlier edges in `removed` (a bit mask over
    window positions) removed as well and the other earlier ones kept."""

    edge: int
    removed: int

    def removes(self, j: int) -> bool:
        return j == self.edge or bool(self.removed >> j & 1)


@dataclass(frozen=True)
class Step:
    """One decision of a walk."""

    edge: int  # window position
    score: float  # metric with the edge removed minus the metric before
    remove: bool
    metric: float  # the circuit's metric after the decision


def plan(n_edges: int, width: int, keep_rate: float) -> list[Candidate]:
    """The `width` candidates a run over `n_edges` edges most likely needs, most likely first.

    The first candidate is always the next edge on the current circuit, so a walk decides at
    least one edge. Ties are broken by window position, so a plan depends only on its inputs.
    """
    p = min(max(keep_rate, 0.0), 1.0)
    chosen: list[Candidate] = []
    heap = [(-1.0, 0, 0)]  # (-probability the run needs it, edge, removed)
    while heap and len(chosen) < width:
        minus_p, edge, removed = heapq.heappop(heap)
        chosen.append(Candidate(edge, removed))
        if edge + 1 < n_edges:
            heapq.heappush(heap, (minus_p * (1 - p), edge + 1, removed | 1 << edge))
            heapq.heappush(heap, (minus_p * p, edge + 1, removed))
    return chosen


def walk(candidates: list[Candidate], metrics: list[float], current: float,
         remove: Callable[[float], bool]) -> tuple[list[Step], int | None]:
    """Decide edges in window order from the candidates' metrics, as a sequential run would.

    Returns the decisions and the index of the candidate whose circuit is the one left after
    them (None when every decided edge was kept: the circuit did not change).
    """
    index = {c: i for i, c in enumerate(candidates)}
    steps: list[Step] = []
    edge, removed, last = 0, 0, None
    while (i := index.get(Candidate(edge, removed))) is not None:
        score = metrics[i] - current
        removes = remove(score)
        if removes:
            current = metrics[i]
            removed |= 1 << edge
            last = i
        steps.append(Step(edge, score, removes, current))
        edge += 1
    return steps, last


def coefficients(candidates: list[Candidate]) -> list[list[float]]:
    """Row per candidate, column per window edge up to the deepest: 1 where it is removed."""
    depth = max(c.edge for c in candidates) + 1
    return [[1.0 if c.removes(j) else 0.0 for j in range(depth)] for c in candidates]
