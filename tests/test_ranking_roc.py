"""The ROC of a ranking (every cut of an edge or node ranking) against a reference: the
pessimistic area of the ACDC paper, unit cases by hand, and equality with a plain
recomputation of every cut (select, count, `roc_curve`)."""

from __future__ import annotations

import random

import pytest

from acdc.core.graph import GraphShape, build_graph
from acdc.core.selection import (
    Selection,
    edges_among,
    select_edges,
    select_nodes,
    size_key,
    with_direct_edges,
)
from acdc.errors import GraphError
from acdc.evaluation.compare import confusion
from acdc.evaluation.roc import RocPoint, pessimistic_auc, ranking_roc, roc_curve, roc_front

SHAPES = [GraphShape(2, 2, True), GraphShape(3, 2, False, "head"), GraphShape(2, 3, True,
                                                                              parallel_attn_mlp=True)]


@pytest.mark.parametrize("pairs, auc", [
    # the unit cases the ACDC authors assert for their pessimistic AUC
    (((0, 0), (1, 1)), 0.0),
    (((0, 0), (0.5, 0.5), (1, 1)), 0.25),
    (((0, 0), (0.25, 0.25), (1, 1)), 0.1875),
    (((0, 0), (0.25, 0.25), (0.5, 0.5), (1, 1)), 0.3125),
    (((0, 0), (0.25, 0.25), (0.75, 0.5), (1, 1)), 0.25),
])
def test_the_authors_unit_cases(pairs, auc):
    assert pessimistic_auc([RocPoint(x, y) for x, y in pairs]) == pytest.approx(auc)


def test_front_keeps_the_first_of_equal_points_and_drops_dominated_ones():
    given = [RocPoint(0.5, 0.5, 1.0), RocPoint(0.5, 0.5, 2.0), RocPoint(0.5, 0.4, 3.0),
             RocPoint(0.6, 0.5, 4.0), RocPoint(0.2, 0.7, 5.0)]
    front = roc_front(given)
    assert [(p.fpr, p.tpr, p.threshold) for p in front] == [(0, 0, None), (0.2, 0.7, 5.0),
                                                            (1, 1, None)]
    given = [RocPoint(0.5, 0.5, 1.0), RocPoint(0.5, 0.5, 2.0)]
    assert [p.threshold for p in roc_front(given)] == [None, 1.0, None]


def plain_edge_curve(graph, scores, reference, level):
    """Every cut recomputed: top-n residual edges (direct edges following), counted."""
    residual = [e.index for e in graph.edges if e.kind == "residual"]
    keys = sorted({size_key(scores[i]) for i in residual}, reverse=True)
    sizes = [0] + [sum(1 for i in residual if size_key(scores[i]) >= key) for key in keys]
    points = []
    for n in sizes:
        counts = confusion(graph, select_edges(graph, scores, Selection(top_n=n)), reference,
                           level)
        assert counts.fpr is not None and counts.tpr is not None
        points.append(RocPoint(counts.fpr, counts.tpr))
    return roc_curve(points)


def plain_node_curve(graph, scores, reference, level):
    names = list(scores)
    keys = sorted({size_key(scores[n]) for n in names}, reverse=True)
    sizes = [0] + [sum(1 for n in names if size_key(scores[n]) >= key) for key in keys]
    points = []
    for n in sizes:
        kept = edges_among(graph, select_nodes(graph, scores, Selection(top_n=n)))
        counts = confusion(graph, kept, reference, level)
        assert counts.fpr is not None and counts.tpr is not None
        points.append(RocPoint(counts.fpr, counts.tpr))
    return roc_curve(points)


def reference_of(graph, rng):
    """A circuit-like reference: a few residual edges, their direct edges following."""
    flags = [e.kind == "residual" and rng.random() < 0.15 for e in graph.edges]
    return with_direct_edges(graph, flags)


def same_curve(a, b):
    assert a.auc == pytest.approx(b.auc, abs=1e-12)
    assert [(p.fpr, p.tpr) for p in a.front] == [(p.fpr, p.tpr) for p in b.front]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_edge_ranking_equals_every_cut_recomputed(shape):
    graph = build_graph(shape)
    rng = random.Random(3)
    for trial in range(6):
        reference = reference_of(graph, rng)
        # ties (rounded scores), negative scores and unscored edges
        scores = [None if rng.random() < 0.1 else round(rng.gauss(0, 1), 1 if trial % 2 else 6)
                  for _ in graph.edges]
        for level in ("edge", "node"):
            try:
                expected = plain_edge_curve(graph, scores, reference, level)
            except AssertionError:  # the reference touches every node
                with pytest.raises(GraphError, match="undefined"):
                    ranking_roc(graph, reference, level, edge_scores=scores)
                continue
            same_curve(ranking_roc(graph, reference, level, edge_scores=scores), expected)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_node_ranking_equals_every_cut_recomputed(shape):
    graph = build_graph(shape)
    rng = random.Random(4)
    units = [s.name for s in graph.senders if s.kind != "input"]
    for trial in range(6):
        reference = reference_of(graph, rng)
        scores = {n: round(rng.random(), 1 if trial % 2 else 6) for n in units}
        for level in ("edge", "node"):
            try:
                expected = plain_node_curve(graph, scores, reference, level)
            except AssertionError:
                continue
            same_curve(ranking_roc(graph, reference, level, node_scores=scores), expected)


def test_perfect_rankings_score_1():
    graph = build_graph(GraphShape(2, 2, True))
    members = {"a0.h1", "m1"}
    reference = edges_among(graph, members)
    node_scores = {s.name: (2.0 if s.name in members else 1.0 / (1 + s.index))
                   for s in graph.senders if s.kind != "input"}
    for level in ("edge", "node"):
        assert ranking_roc(graph, reference, level, node_scores=node_scores).auc == 1.0
    edge_scores = [2.0 if reference[e.index] else 0.5 for e in graph.edges]
    assert ranking_roc(graph, reference, "edge", edge_scores=edge_scores).auc == 1.0


def test_a_hand_made_edge_ranking():
    """Four residual edges into logits of a 1-layer, 1-head attention-only graph."""
    graph = build_graph(GraphShape(1, 1, False))
    names = [e.name for e in graph.edges]
    reference = [name == "a0.h0->logits" for name in names]
    # a0.h0->logits second of the residual edges: cuts at 1 (FPR 1/n) and 2 (TPR 1)
    order = ["input->logits", "a0.h0->logits", "input->a0.h0<q>", "input->a0.h0<k>",
             "input->a0.h0<v>"]
    scores = [float(len(order) - order.index(name)) if name in order else None
              for name in names]
    negatives = len(names) - 1
    curve = ranking_roc(graph, reference, "edge", edge_scores=scores)
    assert curve.auc == pytest.approx(1 - 1 / negatives)
    assert [(p.fpr, p.tpr) for p in curve.front][:2] == [(0.0, 0.0), (1 / negatives, 1.0)]


def test_ties_are_never_split():
    graph = build_graph(GraphShape(1, 1, False))
    reference = [e.name == "a0.h0->logits" for e in graph.edges]
    tied = [1.0 if e.kind == "residual" else None for e in graph.edges]
    # one cut: nothing, then everything (only the corners' area, 0)
    assert ranking_roc(graph, reference, "edge", edge_scores=tied).auc == 0.0


def test_gpt2_small_sized_rankings():
    """Every cut of GPT-2 small's 32,923 edges, at both levels, in one pass each."""
    graph = build_graph(GraphShape(12, 12, True))
    rng = random.Random(5)
    scores = [rng.random() for _ in graph.edges]
    reference = edges_among(graph, {"a9.h9", "a10.h0", "m9"})
    for level in ("edge", "node"):
        curve = ranking_roc(graph, reference, level, edge_scores=scores)
        assert 0 < curve.auc < 1 and len(curve.front) >= 3


def test_bad_input():
    graph = build_graph(GraphShape(1, 1, False))
    with pytest.raises(ValueError, match="give edge_scores or node_scores"):
        ranking_roc(graph, [True] * len(graph.edges))
    with pytest.raises(GraphError, match="not heads or MLPs"):
        ranking_roc(graph, [True] + [False] * (len(graph.edges) - 1),
                    node_scores={"m7": 1.0})
    with pytest.raises(GraphError, match="every edge"):
        ranking_roc(graph, [True] * len(graph.edges), edge_scores=[1.0] * len(graph.edges))
