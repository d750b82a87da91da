"""Choosing a circuit from scores, once for every method: selection, pruning, node circuits.

A method that ranks (EAP, EAP-IG, exact patching, edge pruning's log-alphas, HISP's and SP's
node scores) returns scores; this module turns them into a circuit, the same way for all of
them and for the faithfulness curves:

- **Selection** (`Selection`): exactly one rule, `top_n` (the n edges with the largest
  |score|), `edges_fraction` (that fraction of the edges, truncated as MIB does) or
  `threshold` (every edge with |score| >= it). Edges are counted as the MIB benchmark counts
  them: the residual edges only. A head's direct q/k/v edges (`a1.h2<q>->a1.h2`, this graph's
  own) are not ranked: each follows its input, kept exactly when some kept residual edge feeds
  that q, k or v input. So `--top-n 50` keeps 50 residual edges before pruning, as EAP-IG's
  `apply_topn(50)` does, and a circuit written as a MIB file and read back is the same circuit.
  Ties in |score| go to the edge earlier in the graph's order; unscored edges (None, NaN) are
  never chosen by a threshold and come last in a ranking.
- **Pruning** (`prune`): only the kept edges on a path from `input` to `logits` through kept
  edges remain (`Graph.connected`): the others change nothing, since what they carry never
  reaches the logits or carries nothing from the input. In a positional graph a path moves
  through (node, group) pairs: residual and direct query edges stay in their group, a direct
  key or value edge (at head granularity, any edge into a head) reaches the head at every
  group; `logits` is read at the groups holding a metric position (`sinks`).
- **Node circuits**: a set of nodes (`input`, heads `a1.h2`, MLPs `m3`, `logits`; a head's
  q/k/v inputs count as the head) is the circuit of every edge among them (`edges_among`), as
  subnetwork probing and HISP define it; `select_nodes` ranks nodes as `select_edges` ranks
  edges (`input` and `logits` always belong).

Examples:
    >>> from acdc.core.graph import GraphShape, build_graph
    >>> graph = build_graph(GraphShape(1, 1, False))
    >>> top = ("input->a0.h0<v>", "a0.h0->logits")
    >>> scores = [1.0 if e.name in top else 0.1 for e in graph.edges]
    >>> kept = prune(graph, select_edges(graph, scores, Selection(top_n=2)))
    >>> [e.name for e in graph.edges if kept[e.index]]
    ['input->a0.h0<v>', 'a0.h0<v>->a0.h0', 'a0.h0->logits']
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from acdc.core.graph import Edge, Graph
from acdc.core.settings import option
from acdc.errors import AcdcError

RULES: tuple[str, ...] = ("top_n", "edges_fraction", "threshold")
ALWAYS_NODES = frozenset({"input", "logits"})


@dataclass(frozen=True)
class Selection:
    """One rule choosing a circuit from scores: `top_n`, `edges_fraction` or `threshold` (see
    the module docstring). For node scores `top_n` counts nodes and `edges_fraction` is the
    fraction of the scored nodes."""

    top_n: int | None = option(
        None, help="Ranking methods: keep the N residual edges (or nodes) with the largest "
                   "|score| (counted as MIB counts; direct q/k/v edges follow their inputs), "
                   "then prune.")
    edges_fraction: float | None = option(
        None, help="Ranking methods: keep this fraction of the residual edges (or nodes), "
                   "largest |score| first, then prune.")
    threshold: float | None = option(
        None, help="ACDC: tau, an edge is removed when removing it raises the metric by less "
                   "than this. Ranking methods: keep the edges whose |score| is at least this. "
                   "Default: the task's.")

    def validate(self) -> None:
        given = [rule for rule in RULES if getattr(self, rule) is not None]
        if len(given) != 1:
            flags = ", ".join("--" + rule.replace("_", "-") for rule in RULES)
            raise AcdcError(f"give exactly one of {flags} (got "
                            f"{' and '.join(given) if given else 'none'})")
        top_n, fraction, threshold = self.top_n, self.edges_fraction, self.threshold
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int)
                                  or top_n < 0):
            raise AcdcError(f"--top-n must be a whole number >= 0, got {top_n!r}")
        if fraction is not None and (isinstance(fraction, bool)
                                     or not isinstance(fraction, (int, float))
                                     or not 0 <= fraction <= 1):
            raise AcdcError(f"--edges-fraction must be in [0, 1], got {fraction!r}")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold) or threshold < 0):
            raise AcdcError(f"--threshold must be a finite number >= 0, got {threshold!r}")

    @property
    def rule(self) -> str:
        return next(rule for rule in RULES if getattr(self, rule) is not None)

    def describe(self) -> str:
        """The rule as the command line gives it: `--top-n 50`."""
        value = getattr(self, self.rule)
        return f"--{self.rule.replace('_', '-')} {value:g}"

    def count(self, n_items: int) -> int | None:
        """How many items the rule asks for out of `n_items` (None for a threshold)."""
        if self.top_n is not None:
            return min(self.top_n, n_items)
        if self.edges_fraction is not None:
            return edges_at(self.edges_fraction, n_items)
        return None


def edges_at(fraction: float, n_edges: int) -> int:
    """The number of edges at `fraction` of `n_edges` as the MIB benchmark takes it:
    `int(fraction * n_edges)`, truncated (its evaluation code does so at every circuit size).

    Examples:
        >>> edges_at(0.001, 32491), edges_at(0.002, 32491), edges_at(1.0, 32491)
        (32, 64, 32491)
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"a fraction of the edges must lie in [0, 1], got {fraction}")
    return min(n_edges, int(fraction * n_edges))


def size_key(score: float | None) -> float:
    """|score| for ranking; unscored (None or NaN) below every score."""
    if score is None or math.isnan(score):
        return -1.0
    return abs(score)


def ranked(indices: Iterable[int], scores: Sequence[float | None]) -> list[int]:
    """`indices` by |score|, largest first; ties in their given order (a stable sort)."""
    return sorted(indices, key=lambda i: -size_key(scores[i]))


def choose(indices: Sequence[int], scores: Sequence[float | None],
           selection: Selection) -> list[int]:
    """The members of `indices` the rule picks from `scores` (indexed like the graph)."""
    selection.validate()
    if selection.threshold is not None:
        return [i for i in indices if size_key(scores[i]) >= selection.threshold
                and size_key(scores[i]) >= 0]
    count = selection.count(len(indices))
    assert count is not None
    return ranked(indices, scores)[:count]


def residual_edges(graph: Graph) -> list[Edge]:
    """The edges MIB counts: every edge but the direct q/k/v -> head edges."""
    return [edge for edge in graph.edges if edge.kind == "residual"]


def with_direct_edges(graph: Graph, kept: Sequence[bool]) -> list[bool]:
    """`kept` with each direct edge `a1.h2<q>->a1.h2` set exactly when a kept residual edge
    feeds `a1.h2<q>` (the direct edges follow the residual ones; in a positional graph, at
    the direct edge's group)."""
    fed = {(edge.receiver.name, edge.group) for edge in graph.edges
           if edge.kind == "residual" and kept[edge.index]}
    return [(edge.receiver.name, edge.group) in fed if edge.kind == "direct"
            else bool(kept[edge.index]) for edge in graph.edges]


def select_edges(graph: Graph, scores: Sequence[float | None],
                 selection: Selection) -> list[bool]:
    """The edges the rule keeps before pruning: residual edges chosen by |score| (counted as
    MIB counts), each direct edge following its input."""
    if len(scores) != len(graph.edges):
        raise ValueError(f"{len(scores)} scores for a graph of {len(graph.edges)} edges")
    chosen = set(choose([e.index for e in residual_edges(graph)], scores, selection))
    return with_direct_edges(graph, [i in chosen for i in range(len(graph.edges))])


def prune(graph: Graph, kept: Sequence[bool], sinks: Collection[int] | None = None
          ) -> list[bool]:
    """The kept edges on a path from `input` to `logits` through kept edges (`sinks`: in a
    positional graph, the groups where `logits` is read; None: every group)."""
    if len(kept) != len(graph.edges):
        raise ValueError(f"{len(kept)} kept flags for a graph of {len(graph.edges)} edges")
    return graph.connected(kept, sinks)


def n_residual(graph: Graph, kept: Sequence[bool]) -> int:
    """Kept residual edges: a circuit's size as MIB counts it."""
    return sum(1 for edge in graph.edges if edge.kind == "residual" and kept[edge.index])


# --------------------------------------------------------------------------- nodes


def node_of(name: str) -> str:
    """The node a graph node name belongs to: a head's q/k/v input is the head."""
    return name.split("<", 1)[0]


def scored_nodes(graph: Graph) -> list[str]:
    """The nodes a node circuit chooses among: every head and MLP (`input` and `logits` are
    always in)."""
    return [sender.name for sender in graph.senders if sender.kind != "input"]


def edges_among(graph: Graph, nodes: Collection[str]) -> list[bool]:
    """Every edge whose two ends belong to `nodes` (with `input` and `logits`; a head's q/k/v
    inputs and its direct edges belong to the head)."""
    members = set(nodes) | ALWAYS_NODES
    return [node_of(source) in members and node_of(target) in members
            for source, target in (edge.endpoints for edge in graph.edges)]


def select_nodes(graph: Graph, scores: Mapping[str, float | None],
                 selection: Selection) -> frozenset[str]:
    """The heads and MLPs the rule keeps from per-node scores (`top_n` nodes,
    `edges_fraction` of them, or |score| >= `threshold`); unknown names are an error."""
    names = scored_nodes(graph)
    unknown = sorted(set(scores) - set(names))
    if unknown:
        raise AcdcError(f"node scores for {', '.join(map(repr, unknown[:3]))}, which are not "
                        f"heads or MLPs of this graph")
    values = [scores.get(name) for name in names]
    return frozenset(names[i] for i in choose(range(len(names)), values, selection))


def kept_nodes(graph: Graph, kept: Sequence[bool]) -> frozenset[str]:
    """The heads and MLPs a circuit of edges uses (touching a kept edge; q/k/v count as the
    head)."""
    touched: set[str] = set()
    for edge in graph.edges:
        if kept[edge.index]:
            touched.update(node_of(name) for name in edge.endpoints)
    return frozenset(touched - ALWAYS_NODES)
