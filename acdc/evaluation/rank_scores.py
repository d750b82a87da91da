"""A threshold sweep as an edge ranking: each edge's rank score.

ACDC returns a circuit, not a ranking; a sweep over thresholds turns it into one (the
auto-circuit library's convention, which the ROC and faithfulness curves of a sweep use, in
`circuit evaluate --ranking`, `sweep.json` and `circuit report`): an edge's rank score
is the largest threshold at which it is still kept, +inf when it is kept at every threshold of
the sweep, and None when no threshold keeps it (it ranks last). Ranked by score, the edges
kept at large thresholds come first: the circuit ACDC holds on to hardest.

Circuits of different thresholds need not be nested (an edge can be kept at 0.01 and removed
at 0.001, where other edges stayed and took its place); the score is still the largest
threshold that keeps it.

In JSON (`sweep.json`), +inf is written as the string `"inf"` (JSON has no infinity) and
None as `null`; `decode_score` reads both back.

>>> rank_scores([0.001, 0.01, 0.1], [[True, True, False], [True, False, False], [True, True, True]])
[inf, 0.01, None]
>>> [encode_score(s) for s in (float("inf"), 0.01, None)]
['inf', 0.01, None]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from acdc.core.graph import Graph
from acdc.errors import GraphError

INF = "inf"


def rank_scores(thresholds: Sequence[float],
                kept: Sequence[Sequence[bool]]) -> list[float | None]:
    """Per edge: the largest threshold whose circuit keeps it, +inf if every one does, None if
    none does. `kept[i]` are the kept flags (graph order) of the run at `thresholds[i]`."""
    if len(thresholds) != len(kept) or not thresholds:
        raise ValueError(f"{len(thresholds)} thresholds and {len(kept)} circuits; need one "
                         f"circuit per threshold, at least one")
    n_edges = len(kept[0])
    scores: list[float | None] = []
    for edge in range(n_edges):
        keeping = [t for t, flags in zip(thresholds, kept, strict=True) if flags[edge]]
        if len(keeping) == len(thresholds):
            scores.append(math.inf)
        else:
            scores.append(max(keeping) if keeping else None)
    return scores


def encode_score(score: float | None) -> float | str | None:
    """A rank score for strict JSON: +inf as "inf"."""
    if score is not None and math.isinf(score):
        return INF
    return score


def decode_score(value: object) -> float | None:
    """A rank score read from JSON: "inf", a number, or null."""
    if value is None:
        return None
    if value == INF:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a rank score is a number, \"inf\" or null, not {value!r}")
    return float(value)


def sweep_ranking(path: str | Path) -> tuple[Graph, list[tuple[int, float | None]]]:
    """The ranking a sweep directory gives (its finished `tau-*` runs, read as `circuit compare`
    and `circuit report` read them, `acdc.evaluation.sources.load_sweep`): the graph and
    (edge index, rank score) for every edge, for `CircuitEvaluator.curve`."""
    from acdc.evaluation.sources import load_sweep

    sweep = load_sweep(path)
    if not sweep.runs:  # load_sweep refuses an empty sweep; kept for the type checker
        raise GraphError(f"{path}: empty sweep")
    scores = rank_scores([run.threshold for run in sweep.runs],
                         [run.circuit.kept for run in sweep.runs])
    return sweep.graph, list(enumerate(scores))
