"""Circuits at positions compared: group by group, or read position-blind.

A positional circuit (`--positions labels|all`, `acdc.core.graph`) holds every edge once per
position group, blind edge e at group g being entry e x G + g. Two circuits, or a circuit and a
reference, compare edge by edge when their graphs are the same, position groups included:
then every positional edge is one item of the comparison, and *at* group g the circuit is the
blind-ordered flags `kept[g::G]` (`at_group`), a circuit of the blind graph to which every
position-blind measure applies (Jaccard, TPR/FPR, ROC).

When the groups differ (a circuit at positions against a position-blind one, or two circuits
at different groups: `labels` against `all`, or another task's labels), the positional ones
are read position-blind (`project`): a blind edge is kept when it is kept at some group, and
its score is the sum of its groups' scores (`Circuit.blind_kept`, `Circuit.blind_scores`).
`common_view` says which, in one line, so that every output can say it was projected.

>>> from acdc.core.graph import GraphShape, build_graph
>>> blind = build_graph(GraphShape(1, 1, False))
>>> graph = build_graph(GraphShape(1, 1, False, positions="labels", groups=("S", "other")))
>>> kept = tuple(e.name in ("a0.h0->logits@S", "input->logits@other") for e in graph.edges)
>>> [e.name for e in blind.edges if at_group(kept, graph, 0)[e.index]]
['a0.h0->logits']
>>> [e.name for e in blind.edges if project_kept(kept, graph)[e.index]]
['input->logits', 'a0.h0->logits']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from acdc.core.circuit import Circuit
from acdc.core.graph import Graph, GraphShape, build_graph
from acdc.errors import GraphError
from acdc.evaluation.edge_list import describe_shape
from acdc.exports.formats import blind_projection

MAX_SHOWN_GROUPS = 8  # group names shown in a message


def at_group(flags: Sequence[bool], graph: Graph, group: int) -> tuple[bool, ...]:
    """The flags of `graph`'s edges at position group `group`, in the blind graph's order."""
    n = graph.n_groups
    return tuple(flags[group::n])


def project_kept(flags: Sequence[bool], graph: Graph) -> tuple[bool, ...]:
    """Flags of a positional graph read blind: a blind edge is kept when some group keeps it
    (a blind graph's flags are returned as they are)."""
    n = graph.n_groups
    return tuple(any(flags[i:i + n]) for i in range(0, len(flags), n))


def project(circuit: Circuit) -> Circuit:
    """`circuit` over the blind graph of its model (`acdc.exports.formats.blind_projection`:
    `Circuit.blind_kept`, `Circuit.blind_scores`); a blind circuit is returned as it is."""
    return blind_projection(circuit) if circuit.graph.positional else circuit


def blind_graph(graph: Graph) -> Graph:
    """The blind graph of `graph`'s model (`graph` itself when it is blind)."""
    return graph if not graph.positional else _built(graph.shape.blind())


@lru_cache(maxsize=8)
def _built(shape: GraphShape) -> Graph:
    return build_graph(shape)


@dataclass(frozen=True)
class View:
    """How some circuits are compared: over `shape` (their common graph's), and, when some of
    them had to be read position-blind, which (`projected`, by name) and why (`note`)."""

    shape: GraphShape
    projected: tuple[str, ...] = ()
    note: str | None = None


def groups_words(shape: GraphShape) -> str:
    """`at positions labels (IO, S1, ..., other)` or `position-blind`, for messages."""
    if shape.positions == "none":
        return "position-blind"
    groups = list(shape.groups)
    shown = ", ".join(groups[:MAX_SHOWN_GROUPS])
    if len(groups) > MAX_SHOWN_GROUPS:
        shown += f", ... ({len(groups)} groups)"
    return f"at positions {shape.positions} ({shown})"


def common_view(named: Sequence[tuple[str, GraphShape]]) -> View:
    """The view in which circuits of the given (name, shape) pairs compare: their own graph
    when all shapes are equal, else the blind graph with every positional one projected.
    Circuits of different models' graphs (layers, heads, MLPs, granularity) are one
    `GraphError` line."""
    shapes = [shape for _, shape in named]
    if all(shape == shapes[0] for shape in shapes):
        return View(shapes[0])
    first_name, first = named[0]
    for name, shape in named[1:]:
        if shape.blind() != first.blind():
            a, b = describe_shape(first.blind()), describe_shape(shape.blind())
            raise GraphError(f"{first_name} is a circuit of the {a} graph, {name} of the {b} "
                             f"graph: only circuits of one graph can be compared")
    projected = tuple(name for name, shape in named if shape.positions != "none")
    words = "; ".join(f"{name} {groups_words(shape)}" for name, shape in named)
    note = (f"compared position-blind ({words}): {', '.join(projected)} projected, an edge "
            f"kept when kept at any position group")
    return View(first.blind(), projected, note)
