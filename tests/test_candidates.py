"""Candidate planning and walking: the decisions of a walk are those of a sequential run."""

import random

import pytest

from acdc.methods.acdc import candidates


def sequential(n_edges: int, metric_of, current: float, threshold: float
               ) -> list[tuple[int, float, bool]]:
    """ACDC over one receiver's edges, one test at a time."""
    removed, steps = set(), []
    for j in range(n_edges):
        new = metric_of(frozenset(removed | {j}))
        score = new - current
        if score < threshold:
            removed.add(j)
            current = new
        steps.append((j, score, score < threshold))
    return steps


def metric_oracle(seed: int, n_edges: int):
    """A deterministic metric of the removed set, with some edges that matter."""
    rng = random.Random(seed)
    weight = [rng.choice([0.0, 0.001, 0.5, 2.0]) for _ in range(n_edges)]
    pair = [rng.random() for _ in range(n_edges)]
    return lambda removed: sum(weight[j] for j in removed) + 0.1 * sum(
        pair[i] * pair[j] for i in removed for j in removed if i < j)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("width", [1, 2, 3, 8, 32])
def test_walks_make_the_sequential_decisions(seed, width):
    n_edges = random.Random(seed).randint(1, 12)
    metric_of = metric_oracle(seed, n_edges)
    threshold = 0.01
    expected = sequential(n_edges, metric_of, 0.0, threshold)

    done, current, removed_so_far, evaluations, got = 0, 0.0, frozenset(), 0, []
    while done < n_edges:
        plan = candidates.plan(n_edges - done, width, keep_rate=(seed % 5) / 5)
        assert len(plan) == min(width, 2 ** (n_edges - done) - 1)
        assert plan[0] == candidates.Candidate(0, 0)
        rows = candidates.coefficients(plan)
        metrics = []
        for row in rows:  # what the engine evaluates: the committed circuit minus the row's edges
            metrics.append(metric_of(removed_so_far | {done + j for j, c in enumerate(row) if c}))
        steps, last = candidates.walk(plan, metrics, current, lambda s: s < threshold)
        evaluations += 1
        assert steps and [s.edge for s in steps] == list(range(len(steps)))
        for step in steps:
            got.append((done + step.edge, step.score, step.remove))
            if step.remove:
                removed_so_far |= {done + step.edge}
            current = step.metric
        if last is None:
            assert not any(s.remove for s in steps)
        else:  # the committed candidate removes exactly what the walk removed
            assert {j for j, c in enumerate(rows[last]) if c} == {s.edge for s in steps if s.remove}
        done += len(steps)
    assert [(j, keep) for j, _, keep in got] == [(j, keep) for j, _, keep in expected]
    assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in expected])
    if width == 1:
        assert evaluations == n_edges


def test_plan_follows_the_keep_rate():
    chain = candidates.plan(10, 4, keep_rate=0.0)  # always removed: all earlier ones removed
    assert chain == [candidates.Candidate(j, (1 << j) - 1) for j in range(4)]
    kept = candidates.plan(10, 4, keep_rate=1.0)  # always kept: nothing earlier removed
    assert kept == [candidates.Candidate(j, 0) for j in range(4)]
    tree = candidates.plan(10, 7, keep_rate=0.5)  # a full binary tree of depth 3
    assert sorted(c.edge for c in tree) == [0, 1, 1, 2, 2, 2, 2]
