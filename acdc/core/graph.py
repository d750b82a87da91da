"""The computational graph ACDC searches: senders, receivers and the edges between them.

A transformer is read as a DAG whose edges carry residual-stream contributions (Conmy et al.
2023; the documentation's "The graph"). Senders write to the residual stream: `input` (token plus
positional embedding), every attention head `a{l}.h{h}` (its own `z @ W_O`, without `b_O`) and
every MLP `m{l}` (without `b_out`). Receivers read it: the query, key and value input of every
head (`a{l}.h{h}<q>` ...), every MLP input `m{l}` and `logits`. With `granularity="head"` a
head has one receiver, the head itself, that feeds its q, k and v alike.

A head reads every sender of earlier layers; an MLP also reads the heads of its own layer,
except in a *parallel* block (`parallel_attn_mlp`: GPT-NeoX/Pythia, GPT-J), where attention and
MLP both read the residual stream as it enters the layer, so the MLP of layer l reads exactly
what the heads of layer l read. Under grouped-query (or multi-query) attention several query
heads share one key/value projection; the graph still has one k and one v input per *query*
head, as the MIB graph does: `a2.h3<k>` is the residual that query head 3's key projection
reads (the projection's weights are shared with the other query heads of its group, the input
is that head's own copy), so edge counts do not depend on the number of key/value heads.

Besides the residual edges, the q/k/v-split graph has one *direct* edge per head and input
(`a2.h3<q>->a2.h3`): removing it replaces the head's whole query (key, value) by its ablated
value.

A `Graph` is two ordered tables (nodes and edges) and nothing else; which edges are in a
circuit and their scores live in tensors indexed by `Edge.index`. Senders are numbered in
forward order (`input`, then per layer the heads and then the MLP), which makes "every sender
before layer l" a prefix of that numbering; the engine relies on this.

Position-aware graphs (`GraphShape.positions` "labels" or "all") replicate every edge, residual
and direct, once per position *group*: `a0.h1->a2.h3<q>@S2` carries a0.h1's output into
a2.h3's query input at the positions of group S2 only (auto-circuit's token-specific edges).
The groups are the task's labels in the task's order, then `other` (every unlabelled real token;
padding belongs to no group), or one group per token index `0..P-1`, named by the index
(`acdc.core.positions` makes them from a task). What an edge at group g means:

- a residual edge `s->r@g`: at the positions of g, r reads s's live output when the edge is in
  the circuit and its ablated output when it is not; at other positions that edge has no say
  (the edges of the other groups decide there);
- a direct edge `a1.h2<q>->a1.h2@g`: the head's query at the positions of g is the live one or
  the ablated one (likewise k and v).

Information moves between positions only inside attention: a key or value edge at g changes
what later queries read from the positions of g, a query edge at g changes what g attends to.
The positional graph is the position-blind one with each edge followed by its copies:
`edges[e * G + g]` is blind edge e at group g (G groups), so summing a positional score over
its G consecutive entries gives the blind edge's. A positional graph has exactly
`count_edges(blind) x G` edges. Nodes are the blind graph's; an edge's `endpoints` are its
blind edge's (the group is the edge's `group`, an index into `groups`).

>>> g = build_graph(GraphShape(n_layers=2, n_heads=8, has_mlp=False))
>>> len(g.edges)
305
>>> p = build_graph(GraphShape(2, 8, False, positions="labels", groups=("IO", "END", "other")))
>>> len(p.edges), p.edges[3].name
(915, 'input->a0.h1<q>@IO')
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from acdc.errors import GraphError

Granularity = Literal["qkv", "head"]
GRANULARITIES: tuple[str, ...] = ("qkv", "head")
QKV = ("q", "k", "v")
PositionMode = Literal["none", "labels", "all"]
POSITION_MODES: tuple[str, ...] = ("none", "labels", "all")


@dataclass(frozen=True)
class GraphShape:
    """What the graph depends on: a model's layer and (query) head counts, whether it has
    MLPs and whether its blocks are parallel (the MLP reads the residual the heads read), and
    the position groups every edge is replicated over (`positions` "none" and no `groups`: the
    position-blind graph)."""

    n_layers: int
    n_heads: int
    has_mlp: bool
    granularity: Granularity = "qkv"
    parallel_attn_mlp: bool = False
    positions: PositionMode = "none"
    groups: tuple[str, ...] = ()

    @property
    def n_groups(self) -> int:
        """How many copies of each edge the graph has (1 for a position-blind graph)."""
        return len(self.groups) if self.positions != "none" else 1

    def blind(self) -> GraphShape:
        """The position-blind shape of the same model."""
        return GraphShape(self.n_layers, self.n_heads, self.has_mlp, self.granularity,
                          self.parallel_attn_mlp)


@dataclass(frozen=True)
class Sender:
    """A residual writer: `input`, a head or an MLP. `index` is its forward-order number."""

    name: str
    kind: Literal["input", "head", "mlp"]
    layer: int  # -1 for input
    head: int | None
    index: int


@dataclass(frozen=True)
class Receiver:
    """A residual reader: a head input (`qkv` is "q"/"k"/"v", or None at head granularity),
    an MLP input, or `logits`."""

    name: str
    kind: Literal["head", "mlp", "logits"]
    layer: int  # n_layers for logits
    head: int | None
    qkv: str | None


@dataclass(frozen=True)
class Edge:
    """One edge. Residual edges go sender -> receiver; direct edges go from a head's q/k/v
    input to the head itself (`sender` is then None and `qkv` names the input). In a
    positional graph `group` is the index of the edge's position group (None: blind)."""

    name: str
    index: int
    kind: Literal["residual", "direct"]
    receiver: Receiver
    sender: Sender | None
    qkv: str | None  # for direct edges
    group: int | None = None

    @property
    def endpoints(self) -> tuple[str, str]:
        """The (source, target) node names; a direct edge goes q/k/v input -> head."""
        if self.sender is None:
            assert self.receiver.head is not None  # a direct edge goes into a head
            return self.receiver.name, head_name(self.receiver.layer, self.receiver.head)
        return self.sender.name, self.receiver.name


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


def receiver_name(layer: int, head: int, qkv: str | None) -> str:
    return head_name(layer, head) + (f"<{qkv}>" if qkv else "")


@dataclass(frozen=True)
class Graph:
    """Ordered sender, receiver and edge tables of one model shape.

    Edges are stored in forward order: for each receiver in forward order (per layer: head
    inputs, then the MLP; `logits` last), its residual edges by sender index, then the direct
    edges of that layer. `acdc_order` gives the order in which ACDC visits them.
    """

    shape: GraphShape
    senders: tuple[Sender, ...]
    receivers: tuple[Receiver, ...]
    edges: tuple[Edge, ...]

    @property
    def n_layers(self) -> int:
        return self.shape.n_layers

    @property
    def n_heads(self) -> int:
        return self.shape.n_heads

    @property
    def granularity(self) -> Granularity:
        return self.shape.granularity

    @property
    def positional(self) -> bool:
        """Whether every edge is replicated per position group."""
        return self.shape.positions != "none"

    @property
    def groups(self) -> tuple[str, ...]:
        return self.shape.groups

    @property
    def n_groups(self) -> int:
        return self.shape.n_groups

    @cached_property
    def edge_index(self) -> dict[str, int]:
        return {e.name: e.index for e in self.edges}

    def edge(self, name: str) -> Edge:
        try:
            return self.edges[self.edge_index[name]]
        except KeyError:
            at = f"@{self.groups[0]}" if self.positional else ""
            raise GraphError(
                f"unknown edge {name!r}: edges look like 'a0.h1->a2.h3<q>{at}', "
                f"'m0->logits{at}', 'a2.h3<q>->a2.h3{at}'"
            ) from None

    def senders_before(self, layer: int) -> int:
        """Number of senders every head of `layer` reads (input and all earlier layers)."""
        return 1 + layer * (self.n_heads + int(self.shape.has_mlp))

    def sender_of_head(self, layer: int, head: int) -> int:
        return self.senders_before(layer) + head

    def sender_of_mlp(self, layer: int) -> int:
        return self.senders_before(layer) + self.n_heads

    def senders_of_mlp(self, layer: int) -> int:
        """Number of senders the MLP of `layer` reads: those its heads read, and in a
        sequential block the heads of `layer` too."""
        return self.senders_before(layer) + (0 if self.shape.parallel_attn_mlp else self.n_heads)

    def node_names(self) -> list[str]:
        """Every node: senders, then receivers that are not also senders (`logits`, q/k/v)."""
        names = [s.name for s in self.senders]
        seen = set(names)
        names += [r.name for r in self.receivers if r.name not in seen]
        return names

    def to_networkx(self, kept: Sequence[bool] | None = None):
        """A `networkx.DiGraph` of the graph (or of the kept edges only), edge names as data."""
        import networkx as nx

        dag = nx.DiGraph()
        for node in self.node_names():
            dag.add_node(node)
        for edge in self.edges:
            if kept is not None and not kept[edge.index]:
                continue
            dag.add_edge(*edge.endpoints, name=edge.name, kind=edge.kind)
        return dag

    def connected(self, kept: Sequence[bool], sinks: Collection[int] | None = None
                  ) -> list[bool]:
        """The kept edges that lie on a path from `input` to `logits` through kept edges (the
        others change nothing: what they carry never reaches the logits, or they carry
        nothing from the input). A direct edge `a1.h2<q>->a1.h2` is one step of such a path,
        from the head's q input to the head: without it, edges into `a1.h2<q>` lead nowhere.

        In a positional graph a path moves through (node, group) pairs (`_positional_steps`):
        a residual edge at g from the sender at g to the receiver at g, a direct query edge at
        g to the head at g, and a direct key or value edge at g (at head granularity, any edge
        into the head at g) to the head at every group, since later queries of every group
        read those keys and values. This is sound (no edge that can change the logits is
        dropped); it keeps some that cannot (a key read by no later query). `sinks` are the
        groups where `logits` is read (those holding a metric position; None: every group).

        >>> g = build_graph(GraphShape(1, 1, False))
        >>> kept = [e.name in ("input->a0.h0<q>", "a0.h0->logits") for e in g.edges]
        >>> [e.name for e in g.edges if g.connected(kept)[e.index]]
        []
        >>> kept[g.edge_index["a0.h0<q>->a0.h0"]] = True
        >>> [e.name for e in g.edges if g.connected(kept)[e.index]]
        ['input->a0.h0<q>', 'a0.h0<q>->a0.h0', 'a0.h0->logits']
        """
        if self.positional:
            return self._connected_positional(kept, sinks)
        out_of: dict[str, list[Edge]] = {}
        into: dict[str, list[Edge]] = {}
        for edge in self.edges:
            if kept[edge.index]:
                source, target = edge.endpoints
                out_of.setdefault(source, []).append(edge)
                into.setdefault(target, []).append(edge)

        def reached(start: str, step: dict[str, list[Edge]], end: int) -> set[str]:
            seen, stack = {start}, [start]
            while stack:
                for edge in step.get(stack.pop(), []):
                    node = edge.endpoints[end]
                    if node not in seen:
                        seen.add(node)
                        stack.append(node)
            return seen

        from_input = reached("input", out_of, 1)
        to_logits = reached("logits", into, 0)
        return [bool(kept[e.index]) and e.endpoints[0] in from_input and e.endpoints[1] in to_logits
                for e in self.edges]

    def _positional_steps(self, edge: Edge) -> tuple[tuple[str, int], list[tuple[str, int]]]:
        """The (node, group) an edge leaves and those it reaches (see `connected`). A head's
        input at head granularity is the state `a1.h2#in`, apart from the head's output."""
        assert edge.group is not None  # a positional edge
        g, every = edge.group, range(self.n_groups)
        source, target = edge.endpoints
        if edge.kind == "direct":
            if edge.qkv == "q":
                return (source, g), [(target, g)]
            return (source, g), [(target, other) for other in every]
        if edge.receiver.kind == "head" and edge.receiver.qkv is None:
            return (source, g), [(target, other) for other in every]
        return (source, g), [(target, g)]

    def _connected_positional(self, kept: Sequence[bool], sinks: Collection[int] | None
                              ) -> list[bool]:
        forward: dict[tuple[str, int], set[tuple[str, int]]] = {}
        backward: dict[tuple[str, int], set[tuple[str, int]]] = {}
        steps: dict[int, tuple[tuple[str, int], list[tuple[str, int]]]] = {}
        for edge in self.edges:
            if kept[edge.index]:
                source, targets = steps[edge.index] = self._positional_steps(edge)
                for target in targets:
                    forward.setdefault(source, set()).add(target)
                    backward.setdefault(target, set()).add(source)

        def reached(starts: list[tuple[str, int]],
                    step: dict[tuple[str, int], set[tuple[str, int]]]) -> set[tuple[str, int]]:
            seen, stack = set(starts), list(starts)
            while stack:
                for state in step.get(stack.pop(), ()):
                    if state not in seen:
                        seen.add(state)
                        stack.append(state)
            return seen

        every = range(self.n_groups)
        from_input = reached([("input", g) for g in every], forward)
        to_logits = reached([("logits", g) for g in (every if sinks is None else sinks)],
                            backward)
        out = [False] * len(self.edges)
        for index, (source, targets) in steps.items():
            out[index] = source in from_input and any(t in to_logits for t in targets)
        return out

    def acdc_order(self, reverse_head_order: bool = False) -> list[tuple[str, list[Edge]]]:
        """Groups of edges in the order ACDC visits them, as (node, incoming edges) pairs.

        The node is the one whose liveness decides whether its edges are tested at all:
        the receiver itself, or for direct edges the head they point into. Receivers go from
        the last layer to the first; within a layer `logits`, the MLP, the direct edges of
        every head's v, k and q, then the residual edges into every v, k and q input. Heads
        go from the highest index down (or upwards with `reverse_head_order`); a receiver's
        senders from the latest layer back, MLP before heads, `input` last.

        In a positional graph each of these groups is visited once per position group, in the
        groups' order (a task's labels, then `other`), all of its edges at that group: a
        receiver's edges at IO, then at S1, ... (a direct edge likewise, one group at a time).
        """
        blind = self._blind_order([e for e in self.edges if not e.group], reverse_head_order)
        if not self.positional:
            return blind
        n = self.n_groups
        return [(node, [self.edges[e.index + g] for e in edges])
                for node, edges in blind for g in range(n)]

    def _blind_order(self, edges: list[Edge], reverse_head_order: bool
                     ) -> list[tuple[str, list[Edge]]]:
        heads = list(range(self.n_heads))
        if not reverse_head_order:
            heads.reverse()
        by_receiver: dict[str, list[Edge]] = {}
        direct: dict[tuple[int, int | None, str | None], Edge] = {}
        for edge in edges:
            if edge.kind == "direct":
                direct[(edge.receiver.layer, edge.receiver.head, edge.qkv)] = edge
            else:
                by_receiver.setdefault(edge.receiver.name, []).append(edge)

        def sender_key(edge: Edge) -> tuple[int, int, int]:
            s = edge.sender
            assert s is not None  # only residual edges are sorted
            if s.kind == "input":
                return (1, 0, 0)
            if s.kind == "mlp":
                in_layer = -1
            else:
                assert s.head is not None  # a head sender
                in_layer = heads.index(s.head)
            return (0, -s.layer, in_layer)

        groups: list[tuple[str, list[Edge]]] = []
        for layer in reversed(range(self.n_layers)):
            if layer == self.n_layers - 1:
                groups.append(("logits", sorted(by_receiver["logits"], key=sender_key)))
            if self.shape.has_mlp:
                name = mlp_name(layer)
                groups.append((name, sorted(by_receiver[name], key=sender_key)))
            if self.granularity == "qkv":
                for qkv in ("v", "k", "q"):
                    for head in heads:
                        groups.append((head_name(layer, head), [direct[(layer, head, qkv)]]))
                for qkv in ("v", "k", "q"):
                    for head in heads:
                        name = receiver_name(layer, head, qkv)
                        groups.append((name, sorted(by_receiver[name], key=sender_key)))
            else:
                for head in heads:
                    name = head_name(layer, head)
                    groups.append((name, sorted(by_receiver[name], key=sender_key)))
        return groups


MAX_EDGES = 20_000_000  # about 10 GB of Python objects: beyond any model a CPU run can hold


def count_edges(shape: GraphShape) -> dict[str, Any]:
    """Node and edge counts of a shape's graph, edges split by kind and by receiver type,
    computed without building it (so a size nobody can run is refused before it is built).

    >>> count_edges(GraphShape(12, 12, True))["edges"]
    32923
    >>> count_edges(GraphShape(6, 8, True, parallel_attn_mlp=True))["residual"]  # Pythia-70m
    3580

    A positional graph has every edge once per group (nodes are the blind graph's):

    >>> groups = ("IO", "S1", "S1+1", "S2", "END", "other")
    >>> count_edges(GraphShape(12, 12, True, positions="labels", groups=groups))["edges"]
    197538
    """
    layers, heads, mlp = shape.n_layers, shape.n_heads, int(shape.has_mlp)
    per_layer = heads + mlp
    # sum over layers l of the senders one head input reads, 1 + l * per_layer
    read_by_heads = layers + per_layer * layers * (layers - 1) // 2
    by_receiver: dict[str, int] = {}
    if shape.granularity == "qkv":
        for qkv in QKV:
            by_receiver[f"head {qkv} inputs"] = heads * read_by_heads
    else:
        by_receiver["heads"] = heads * read_by_heads
    if mlp:  # an MLP reads what its layer's heads read, and in a sequential block those heads
        by_receiver["MLPs"] = read_by_heads + (0 if shape.parallel_attn_mlp else layers * heads)
    n_senders = 1 + layers * per_layer
    by_receiver["logits"] = n_senders
    direct = 3 * layers * heads if shape.granularity == "qkv" else 0
    residual = sum(by_receiver.values())
    if direct:
        by_receiver["heads (direct q/k/v)"] = direct
    n_receivers = layers * (heads * (3 if shape.granularity == "qkv" else 1) + mlp) + 1
    qkv_nodes = 3 * layers * heads if shape.granularity == "qkv" else 0
    n = shape.n_groups
    if shape.positions != "none":
        by_receiver = {kind: count * n for kind, count in by_receiver.items()}
        residual, direct = residual * n, direct * n
    return {
        "nodes": n_senders + 1 + qkv_nodes,
        "senders": n_senders,
        "heads": layers * heads,
        "mlps": layers * mlp,
        "receivers": n_receivers,
        "edges": residual + direct,
        "residual": residual,
        "direct": direct,
        "by_receiver": by_receiver,
        "groups": n,
    }


def build_graph(shape: GraphShape) -> Graph:
    """The full graph of a model shape.

    >>> build_graph(GraphShape(12, 12, True)).edges.__len__()
    32923
    """
    if shape.granularity not in GRANULARITIES:
        raise GraphError(
            f"unknown granularity {shape.granularity!r}: use one of {', '.join(GRANULARITIES)}"
        )
    if shape.n_layers < 1 or shape.n_heads < 1:
        raise GraphError(f"a graph needs at least one layer and one head, got {shape}")
    check_groups(shape)
    n_edges = count_edges(shape)["edges"]
    if n_edges > MAX_EDGES:
        raise GraphError(f"a {shape.n_layers}-layer, {shape.n_heads}-head graph has {n_edges:,} "
                         f"edges, more than the {MAX_EDGES:,} a run can hold; use a smaller model")
    senders: list[Sender] = [Sender("input", "input", -1, None, 0)]
    for layer in range(shape.n_layers):
        for head in range(shape.n_heads):
            senders.append(Sender(head_name(layer, head), "head", layer, head, len(senders)))
        if shape.has_mlp:
            senders.append(Sender(mlp_name(layer), "mlp", layer, None, len(senders)))

    receivers: list[Receiver] = []
    edges: list[Edge] = []

    def add_residual(receiver: Receiver, n_senders: int) -> None:
        for sender in senders[:n_senders]:
            edges.append(
                Edge(f"{sender.name}->{receiver.name}", len(edges), "residual", receiver, sender,
                     None)
            )

    per_layer = shape.n_heads + int(shape.has_mlp)
    qkvs: tuple[str | None, ...] = QKV if shape.granularity == "qkv" else (None,)
    for layer in range(shape.n_layers):
        before = 1 + layer * per_layer
        layer_receivers = []
        for qkv in qkvs:
            for head in range(shape.n_heads):
                r = Receiver(receiver_name(layer, head, qkv), "head", layer, head, qkv)
                layer_receivers.append(r)
                add_residual(r, before)
        if shape.has_mlp:
            r = Receiver(mlp_name(layer), "mlp", layer, None, None)
            layer_receivers.append(r)
            add_residual(r, before + (0 if shape.parallel_attn_mlp else shape.n_heads))
        receivers += layer_receivers
        if shape.granularity == "qkv":
            for r in layer_receivers:
                if r.kind == "head":
                    assert r.head is not None  # a head receiver
                    name = f"{r.name}->{head_name(layer, r.head)}"
                    edges.append(Edge(name, len(edges), "direct", r, None, r.qkv))
    logits = Receiver("logits", "logits", shape.n_layers, None, None)
    receivers.append(logits)
    add_residual(logits, len(senders))
    if shape.positions != "none":
        n = len(shape.groups)
        edges = [Edge(f"{e.name}@{group}", e.index * n + g, e.kind, e.receiver, e.sender, e.qkv,
                      g) for e in edges for g, group in enumerate(shape.groups)]
    return Graph(shape, tuple(senders), tuple(receivers), tuple(edges))


def check_groups(shape: GraphShape) -> None:
    """A shape's position groups: none for a blind graph; else at least one, each a distinct
    name without `@` or whitespace (GraphError otherwise: a caller's or a file's mistake)."""
    if shape.positions not in POSITION_MODES:
        raise GraphError(f"unknown positions {shape.positions!r}: use one of "
                         f"{', '.join(POSITION_MODES)}")
    if shape.positions == "none":
        if shape.groups:
            raise GraphError("a position-blind graph has no position groups")
        return
    groups = shape.groups
    if not groups:
        raise GraphError(f"positions {shape.positions} needs at least one position group")
    bad = [g for g in groups if not isinstance(g, str) or not g or "@" in g
           or any(c.isspace() for c in g)]
    if bad:
        raise GraphError(f"position group {bad[0]!r} is not a name (no '@', no spaces)")
    if len(set(groups)) != len(groups):
        twice = next(g for g in groups if groups.count(g) > 1)
        raise GraphError(f"position group {twice!r} is named twice")
