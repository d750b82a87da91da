"""Comparing edge sets of one graph: two circuits with each other, a circuit with a reference.

Two circuits are compared by the edges (and nodes) they share and those only one of them
keeps; Jaccard is |A ∩ B| / |A ∪ B|. Against a reference circuit, every edge of the full graph
is a positive (in the reference) or a negative, so a circuit has a true-positive rate
TP / (TP + FN), a false-positive rate FP / (FP + TN) and a precision TP / (TP + FP)
(the ACDC paper's ROC, Conmy et al. 2023, section 4).

Nodes follow the ACDC paper's node-level ROC: a node is present when it touches a present
edge, and a head's q/k/v inputs count as the head itself, so the nodes are `input`, the heads,
the MLPs and `logits` (158 for GPT-2 small). `Circuit.nodes()` lists q/k/v inputs separately;
the comparison does not.

Circuits at positions (one graph, the same position groups) compare edge by edge at every
group: each positional edge (`a0.h1->a2.h3<q>@S2`) is one item. Besides the totals, every group
g gets its own part (`groups`): the edges at g, compared as two blind circuits
(`acdc.evaluation.projection.at_group`), and whether the two circuits agree there (keep the
same edges at g). A node is a node of the model at any group: it is in a circuit when it
touches a kept edge at some group (per group, at that group).

>>> from acdc.core.graph import GraphShape, build_graph
>>> graph = build_graph(GraphShape(1, 1, False))
>>> a = kept_from_names(graph, ["input->a0.h0<v>", "a0.h0<v>->a0.h0", "a0.h0->logits"])
>>> b = kept_from_names(graph, ["a0.h0->logits", "input->logits"])
>>> compare_kept(graph, a, b).edges.jaccard
0.25
>>> confusion(graph, a, b).tpr, confusion(graph, a, b, "node").tpr
(0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from acdc.core.circuit import Circuit
from acdc.core.graph import Graph
from acdc.errors import GraphError
from acdc.evaluation.edge_list import describe_shape
from acdc.evaluation.projection import at_group, blind_graph

Level = Literal["edge", "node"]
LEVELS: tuple[Level, ...] = ("edge", "node")


@dataclass(frozen=True)
class SetComparison:
    """Two sets of names over one universe, each part in the graph's order."""

    both: tuple[str, ...]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]

    @property
    def jaccard(self) -> float | None:
        """|A ∩ B| / |A ∪ B|; None when both sets are empty."""
        union = len(self.both) + len(self.only_a) + len(self.only_b)
        return len(self.both) / union if union else None

    def to_json(self) -> dict[str, Any]:
        return {"both": len(self.both), "only_a": len(self.only_a), "only_b": len(self.only_b),
                "jaccard": self.jaccard, "names": {"both": list(self.both),
                                                   "only_a": list(self.only_a),
                                                   "only_b": list(self.only_b)}}


@dataclass(frozen=True)
class CircuitComparison:
    """Two circuits of one graph, edge by edge and node by node; at positions, also the
    edges at each position group (`groups`, in the graph's group order; empty when blind)."""

    edges: SetComparison
    nodes: SetComparison
    groups: Mapping[str, SetComparison] = field(default_factory=dict)

    @property
    def agree(self) -> tuple[str, ...]:
        """The position groups at which both circuits keep the same edges."""
        return tuple(g for g, part in self.groups.items() if not part.only_a and not part.only_b)

    def to_json(self) -> dict[str, Any]:
        data = {"edges": self.edges.to_json(), "nodes": self.nodes.to_json()}
        if self.groups:
            data["groups"] = {g: {"both": len(part.both), "only_a": len(part.only_a),
                                  "only_b": len(part.only_b), "jaccard": part.jaccard,
                                  "agree": not part.only_a and not part.only_b}
                              for g, part in self.groups.items()}
        return data


@dataclass(frozen=True)
class Confusion:
    """A circuit against a reference over every edge (or node) of the graph."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def tpr(self) -> float | None:
        """TP / (TP + FN); None when the reference is empty."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float | None:
        """FP / (FP + TN); None when the reference is the whole graph."""
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP); None when the circuit is empty."""
        return _ratio(self.tp, self.tp + self.fp)

    def to_json(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "tpr": self.tpr,
                "fpr": self.fpr, "precision": self.precision}


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def node_of(name: str) -> str:
    """The node a graph endpoint counts as: a head's q/k/v input is the head."""
    return name.split("<", 1)[0]


def node_names(graph: Graph) -> list[str]:
    """Every node with q/k/v inputs counted as their head: `input`, heads and MLPs in forward
    order, `logits`."""
    return [name for name in graph.node_names() if "<" not in name]


def kept_nodes(graph: Graph, kept: Sequence[bool]) -> tuple[bool, ...]:
    """Per node of `node_names(graph)`: does it touch a kept edge?"""
    touched: set[str] = set()
    for edge in graph.edges:
        if kept[edge.index]:
            touched.update(node_of(end) for end in edge.endpoints)
    return tuple(name in touched for name in node_names(graph))


def kept_from_names(graph: Graph, names: Iterable[str]) -> tuple[bool, ...]:
    """Kept flags (graph order) of the named edges; unknown names raise `GraphError`."""
    kept = [False] * len(graph.edges)
    for name in names:
        kept[graph.edge(name).index] = True
    return tuple(kept)


def level_flags(graph: Graph, kept: Sequence[bool],
                level: Level) -> tuple[list[str], Sequence[bool]]:
    """The universe of `level` (edge or node names, in graph order) and the flags over it."""
    if level == "edge":
        return [e.name for e in graph.edges], kept
    if level == "node":
        return node_names(graph), kept_nodes(graph, kept)
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def compare_sets(universe: Sequence[str], a: Sequence[bool], b: Sequence[bool]) -> SetComparison:
    both = tuple(n for n, x, y in zip(universe, a, b, strict=True) if x and y)
    only_a = tuple(n for n, x, y in zip(universe, a, b, strict=True) if x and not y)
    only_b = tuple(n for n, x, y in zip(universe, a, b, strict=True) if y and not x)
    return SetComparison(both, only_a, only_b)


def compare_kept(graph: Graph, a: Sequence[bool], b: Sequence[bool]) -> CircuitComparison:
    """Edges and nodes kept by both / only `a` / only `b` (flags in graph order); at
    positions, also the edges at each group."""
    parts = []
    for level in LEVELS:
        universe, a_flags = level_flags(graph, a, level)
        parts.append(compare_sets(universe, a_flags, level_flags(graph, b, level)[1]))
    groups = {}
    for g, name in enumerate(graph.groups if graph.positional else ()):
        universe = [e.name for e in graph.edges[g::graph.n_groups]]
        groups[name] = compare_sets(universe, at_group(a, graph, g), at_group(b, graph, g))
    return CircuitComparison(parts[0], parts[1], groups)


def compare_circuits(a: Circuit, b: Circuit, a_name: str = "A",
                     b_name: str = "B") -> CircuitComparison:
    """`compare_kept` of two circuits, which must be of one graph shape."""
    check_same_graph(a.graph, b.graph, a_name, b_name)
    return compare_kept(a.graph, a.kept, b.kept)


def confusion(graph: Graph, kept: Sequence[bool], reference: Sequence[bool],
              level: Level = "edge") -> Confusion:
    """TP, FP, FN, TN of `kept` against `reference` over every edge (or node) of `graph`."""
    _, found = level_flags(graph, kept, level)
    _, truth = level_flags(graph, reference, level)
    tp = fp = fn = tn = 0
    for x, y in zip(found, truth, strict=True):
        if x and y:
            tp += 1
        elif x:
            fp += 1
        elif y:
            fn += 1
        else:
            tn += 1
    return Confusion(tp, fp, fn, tn)


def group_confusions(graph: Graph, kept: Sequence[bool], reference: Sequence[bool],
                     level: Level = "edge") -> dict[str, Confusion]:
    """Per position group of a positional `graph` (empty for a blind one): `confusion` of the
    edges at that group (at node level, the nodes touching a kept edge at that group)."""
    if not graph.positional:
        return {}
    blind = blind_graph(graph)
    return {name: confusion(blind, at_group(kept, graph, g), at_group(reference, graph, g),
                            level)
            for g, name in enumerate(graph.groups)}


def check_same_graph(a: Graph, b: Graph, a_name: str, b_name: str) -> None:
    """Raise `GraphError` when two graphs differ in shape (their edges are then different)."""
    if a.shape != b.shape:
        raise GraphError(f"{a_name} is a circuit of the {describe_shape(a)} graph, {b_name} of the "
                         f"{describe_shape(b)} graph: only circuits of one graph can be compared")
