"""The values of judging a circuit, and their arithmetic: no model, no torch.

`Spread` (a metric's mean and its spread over prompts), `MetricEvaluation` and `Evaluation` (a
circuit, its complement, the full model and the empty circuit, for every metric), `CurvePoint`
and `FaithfulnessCurve` (f at each circuit size), the normalised faithfulness `normalised`, the
areas `cpr` and `cmd`, and rankings (`ranking_from_scores`, `ranking_scores`). They are what
`acdc.evaluation.faithfulness.CircuitEvaluator` computes and what `evaluation.json` holds, so
the report and the sweep read them back without loading torch. The definitions are in
`acdc.evaluation.faithfulness`'s docstring and the documentation's concepts pages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from acdc.core.settings import METRICS
from acdc.errors import GraphError

MIB_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Fractions of the graph's edges at which a faithfulness curve is evaluated (MIB)."""

HIGHER_IS_BETTER = frozenset({"logit_diff", "prob_diff"})
METRIC_SIGN: dict[str, float] = {name: -1.0 if name in HIGHER_IS_BETTER else 1.0
                                  for name in METRICS}
"""Reported value x METRIC_SIGN = the minimised value of `acdc.core.metrics` (circuit.json)."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Spread:
    """One metric of one circuit: the mean over metric positions, and per-prompt values
    (the mean over each prompt's positions) with their std (ddof 0), min and max."""

    mean: float
    std: float
    min: float
    max: float
    per_prompt: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "per_prompt": list(self.per_prompt)}


def normalised(value: float, full: float, empty: float) -> float | None:
    """(value - empty) / (full - empty); None when full = empty.

    >>> normalised(3.0, full=4.0, empty=0.0)
    0.75
    """
    span = full - empty
    if span == 0 or not math.isfinite(span):
        return None
    return (value - empty) / span


@dataclass(frozen=True)
class MetricEvaluation:
    """One metric, reported with its usual sign (see the module docstring), for the full model,
    the empty circuit, the circuit and its complement."""

    metric: str
    full: Spread
    empty: Spread
    circuit: Spread
    complement: Spread

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    @property
    def faithfulness(self) -> float | None:
        """f(C) from the means."""
        return normalised(self.circuit.mean, self.full.mean, self.empty.mean)

    @property
    def complement_faithfulness(self) -> float | None:
        """f of the complement: how much of the behaviour the edges outside C carry alone."""
        return normalised(self.complement.mean, self.full.mean, self.empty.mean)

    def minimised(self, value: float) -> float:
        """A reported value in the minimised convention of `acdc.core.metrics`."""
        return value * METRIC_SIGN[self.metric]

    def to_json(self) -> dict[str, Any]:
        return {"higher_is_better": self.higher_is_better, "description": METRICS[self.metric],
                "faithfulness": self.faithfulness,
                "complement_faithfulness": self.complement_faithfulness,
                **{name: getattr(self, name).to_json()
                   for name in ("full", "empty", "circuit", "complement")}}


@dataclass(frozen=True)
class Evaluation:
    """Every evaluated metric of one circuit (in the order of `acdc.core.settings.METRICS`)."""

    metrics: Mapping[str, MetricEvaluation]
    n_edges_total: int
    n_edges_kept: int
    n_prompts: int
    n_positions: int

    def to_json(self) -> dict[str, Any]:
        return {"n_edges_total": self.n_edges_total, "n_edges_kept": self.n_edges_kept,
                "n_prompts": self.n_prompts, "n_positions": self.n_positions,
                "metrics": {name: m.to_json() for name, m in self.metrics.items()}}

    def _repr_html_(self) -> str:
        """The table `circuit evaluate` prints, for Jupyter."""
        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.4g}"

        head = "".join(f"<th>{h}</th>" for h in ("metric", "full", "empty", "circuit", "f(C)",
                                                   "complement", "f(complement)"))
        rows = "".join(
            f"<tr><td>{name}{' (higher better)' if m.higher_is_better else ''}</td>"
            f"<td>{cell(m.full.mean)}</td><td>{cell(m.empty.mean)}</td>"
            f"<td>{cell(m.circuit.mean)}</td><td>{cell(m.faithfulness)}</td>"
            f"<td>{cell(m.complement.mean)}</td><td>{cell(m.complement_faithfulness)}</td></tr>"
            for name, m in self.metrics.items())
        return (f"<table><tr>{head}</tr>{rows}</table><p>{self.n_edges_kept} of "
                f"{self.n_edges_total} edges; means over {self.n_positions} metric positions of "
                f"{self.n_prompts} prompts; f = (m - empty) / (full - empty)</p>")


@dataclass(frozen=True)
class CurvePoint:
    """One circuit size of a faithfulness curve: the top `n_edges` of the ranking, of which
    `n_edges_kept` survive pruning; each metric's mean (reported sign) and f."""

    fraction: float
    n_edges: int
    n_edges_kept: int
    values: Mapping[str, float]
    faithfulness: Mapping[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "n_edges": self.n_edges,
                "n_edges_kept": self.n_edges_kept, "values": dict(self.values),
                "faithfulness": dict(self.faithfulness)}


@dataclass(frozen=True)
class FaithfulnessCurve:
    """f at each fraction of the edges (of the heads and MLPs, for a node ranking: `level`
    `node`; `n_edges_total`, `n_scored` and each point's `n_edges` then count those), and per
    metric the curve's CPR and CMD (None where some f is undefined)."""

    points: tuple[CurvePoint, ...]
    cpr: Mapping[str, float | None]
    cmd: Mapping[str, float | None]
    n_edges_total: int
    n_scored: int  # edges with a score; the others were ranked last
    pruned: bool
    level: str = "edge"

    @property
    def fractions(self) -> list[float]:
        return [p.fraction for p in self.points]

    def faithfulness(self, metric: str) -> list[float | None]:
        return [p.faithfulness[metric] for p in self.points]

    def to_json(self) -> dict[str, Any]:
        return {"fractions": self.fractions, "level": self.level,
                "n_edges_total": self.n_edges_total,
                "n_scored": self.n_scored, "pruned": self.pruned, "cpr": dict(self.cpr),
                "cmd": dict(self.cmd), "points": [p.to_json() for p in self.points]}


# --------------------------------------------------------------------------- areas


def _trapezoid(xs: Sequence[float], ys: Sequence[float]) -> float:
    return sum((x1 - x0) * (y0 + y1) / 2
               for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False))


def _check_curve(fractions: Sequence[float], f: Sequence[float | None]) -> bool:
    if len(fractions) != len(f) or len(fractions) < 2:
        raise ValueError(f"a curve needs at least two points and one f per fraction, got "
                         f"{len(fractions)} fractions and {len(f)} values")
    if any(b <= a for a, b in zip(fractions, fractions[1:], strict=False)):
        raise ValueError(f"fractions must increase, got {list(fractions)}")
    return all(v is not None and math.isfinite(v) for v in f)


def cpr(fractions: Sequence[float], f: Sequence[float | None]) -> float | None:
    """Area under f over the fractions (trapezoid rule); None if some f is undefined.

    >>> cpr([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    0.5
    """
    if not _check_curve(fractions, f):
        return None
    return _trapezoid(fractions, f)  # type: ignore[arg-type]


def cmd(fractions: Sequence[float], f: Sequence[float | None]) -> float | None:
    """Area of |1 - f| over the fractions (trapezoid rule on |1 - f| at the points); None if
    some f is undefined.

    >>> cmd([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    0.5
    """
    if not _check_curve(fractions, f):
        return None
    return _trapezoid(fractions, [abs(1 - v) for v in f])  # type: ignore[operator]


# --------------------------------------------------------------------------- rankings


Ranking = Sequence[tuple[int, "float | None"]]


def ranking_from_scores(scores: Sequence[float | None]) -> list[tuple[int, float | None]]:
    """A ranking from per-edge scores in graph order (a `Circuit`'s `scores`)."""
    return list(enumerate(scores))


def ranking_scores(ranking: Ranking, n_edges: int) -> tuple[list[float | None], int]:
    """A ranking as per-edge scores in graph order (edges it does not name: None, ranked last
    as unscored edges are), and how many edges have a score. An index out of range or named
    twice is one `GraphError` line."""
    scores: list[float | None] = [None] * n_edges
    seen: set[int] = set()
    n_scored = 0
    for position, (index, score) in enumerate(ranking):
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_edges:
            raise GraphError(f"ranking entry {position}: edge index {index!r} is not one of the "
                             f"graph's 0..{n_edges - 1}")
        if index in seen:
            raise GraphError(f"ranking entry {position}: edge {index} is ranked twice")
        seen.add(index)
        if score is not None and not math.isnan(score):
            scores[index] = float(score)
            n_scored += 1
    return scores, n_scored
