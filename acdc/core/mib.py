"""The MIB circuit file: the circuit track's JSON (EAP-IG's `Graph.to_json`), both ways.

The MIB benchmark (Mueller et al. 2025, its circuit track) exchanges circuits as one JSON object:

- `cfg`: `n_layers`, `n_heads`, `parallel_attn_mlp`, `d_model`;
- `nodes`: `{name: {"in_graph": bool}}` over `input`, every head `a{l}.h{h}`, every MLP `m{l}`
  and `logits`;
- `edges`: `{"a0.h1->a2.h3<q>": {"score": float, "in_graph": bool}}` over the residual edges
  only. MIB's graph has no direct q/k/v -> head edges: a head always reads its own query, key
  and value inputs there.

The names are this project's (`acdc.core.graph`), so a residual edge maps one to one. What the
two graphs do not share:

- Direct edges. Writing drops them. Reading keeps a head's direct q, k or v edge exactly when
  a kept residual edge feeds that input, the rule by which every ranking method's circuit is
  chosen (`acdc.core.selection`): a circuit chosen by `--top-n` and written as a MIB file reads
  back as the same circuit, with the same counts. An input that no kept edge feeds carries its
  ablated value either way under corrupt and zero ablation (the direct edge removed gives the
  corrupted run's query; the query of an input whose every edge is ablated is the same), so a
  circuit read back computes what the circuit written did there; under mean ablation the mean
  of the queries and the query of the mean input differ.
- Scores. MIB needs a number. An edge without a score (ACDC: removed untested because its node
  was dead) is written with score 0, and read back as 0. An infinite or NaN score cannot be
  written (strict JSON has none): the export is refused, naming the edge.
- Granularity. MIB's heads have q, k and v inputs. A `head`-granularity circuit is written with
  each edge into a head as three edges (q, k and v) that share its score and kept flag; it reads
  back as a `qkv` circuit.
- MLPs. MIB's graph always has an MLP per layer, so a circuit of an attention-only model
  cannot be written. Parallel blocks (`parallel_attn_mlp`: MLP l reads what the heads of layer
  l read, not their outputs) are the same graph in both projects, and carried both ways.
- Node flags. A node is `in_graph` when it touches a kept residual edge (its q/k/v inputs
  count as the head); `logits` is always in the graph, as EAP-IG writes it. Reading ignores
  the node flags: the edges say which nodes a circuit uses.
- Node circuits. A circuit chosen as a set of heads and MLPs (HISP: every edge among them)
  writes each scored head's and MLP's `score` in its node entry, as EAP-IG's node-level
  graphs do; its nodes `in_graph` are exactly the set (each touches its edge from `input`).
  A file whose head or MLP entries carry a numeric `score` reads back as a node circuit with
  those scores (its edges, as always, from the edge flags).

`d_model` is not part of a circuit; the caller supplies it (`circuit export` reads it from the
run's model configuration).

>>> from acdc.core.circuit import Circuit, from_mib
>>> from acdc.core.graph import GraphShape, build_graph
>>> graph = build_graph(GraphShape(1, 1, True))
>>> kept = tuple(e.name in ("input->a0.h0<q>", "a0.h0->logits") for e in graph.edges)
>>> data = to_mib(Circuit(graph, kept, (0.5,) * len(kept)), d_model=8)
>>> data["edges"]["input->a0.h0<q>"], data["nodes"]["a0.h0"]
({'score': 0.5, 'in_graph': True}, {'in_graph': True})
>>> from_mib(data).kept[graph.edge_index["a0.h0<q>->a0.h0"]]  # the direct edge of a kept head
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from acdc.core.graph import Edge, Graph, GraphShape, build_graph, count_edges
from acdc.core.selection import with_direct_edges
from acdc.errors import GraphError

if TYPE_CHECKING:
    from acdc.core.circuit import Circuit

CFG_KEYS: tuple[str, ...] = ("n_layers", "n_heads", "parallel_attn_mlp", "d_model")
SHOWN = 3  # unknown or missing edge names named in an error


def mib_edge_count(n_layers: int, n_heads: int, parallel_attn_mlp: bool = False) -> int:
    """The residual edges of MIB's graph of a model shape (32,491 for GPT-2 small).

    >>> mib_edge_count(12, 12)
    32491
    """
    shape = GraphShape(n_layers, n_heads, True, parallel_attn_mlp=parallel_attn_mlp)
    return count_edges(shape)["residual"]


def _mib_edges(edge: Edge, graph: Graph) -> list[str]:
    """The MIB edge names of one residual edge: itself, or at head granularity the three
    edges into the head's q, k and v inputs."""
    if edge.receiver.kind == "head" and edge.receiver.qkv is None:
        assert edge.sender is not None
        return [f"{edge.sender.name}->{edge.receiver.name}<{qkv}>" for qkv in ("q", "k", "v")]
    return [edge.name]


def _node_of(name: str) -> str:
    """The MIB node of a graph node: a head's q/k/v input is the head."""
    return name.split("<", 1)[0]


def mib_edge_counts(circuit: Circuit) -> tuple[int, int]:
    """(in_graph, all) edges of the circuit's MIB file, as the library counts them
    (`count_included_edges`): residual edges only, an edge into a head of a `head`-granularity
    circuit three times (its q, k and v edges)."""
    kept = total = 0
    for edge in circuit.graph.edges:
        if edge.kind == "direct":
            continue
        copies = len(_mib_edges(edge, circuit.graph))
        total += copies
        kept += copies if circuit.kept[edge.index] else 0
    return kept, total


def to_mib(circuit: Circuit, d_model: int) -> dict[str, Any]:
    """The MIB circuit file of `circuit` as a dictionary (see the module docstring)."""
    graph = circuit.graph
    if not graph.shape.has_mlp:
        raise GraphError("MIB's graph has an MLP in every layer, so a circuit of an attention-only "
                         "model cannot be written as a MIB file")
    if graph.positional:
        raise GraphError(f"a circuit at positions ({graph.shape.positions}) cannot be written as "
                         f"a MIB file: MIB's graph has no positions (export it as csv or "
                         f"graphml)")
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
        raise GraphError(f"d_model is {d_model!r}; it must be a positive whole number")
    touched: set[str] = set()
    edges: dict[str, dict[str, Any]] = {}
    for edge in graph.edges:
        if edge.kind == "direct":
            continue
        kept = circuit.kept[edge.index]
        if kept:
            touched.update(_node_of(name) for name in edge.endpoints)
        score = circuit.scores[edge.index]
        if score is not None and not math.isfinite(score):
            raise GraphError(f"edge {edge.name!r} has score {score}; a MIB file holds finite "
                             f"numbers only (export it as csv or graphml, which keep it)")
        value = 0.0 if score is None else float(score)
        for name in _mib_edges(edge, graph):
            edges[name] = {"score": value, "in_graph": bool(kept)}
    node_scores = circuit.node_scores or {}
    nodes: dict[str, dict[str, Any]] = {}
    for name in graph.node_names():
        if "<" in name:
            continue
        nodes[name] = {"in_graph": name in touched or name == "logits"}
        score = node_scores.get(name)
        if score is not None:
            if not math.isfinite(score):
                raise GraphError(f"node {name!r} has score {score}; a MIB file holds finite "
                                 f"numbers only")
            nodes[name]["score"] = float(score)
    return {"cfg": {"n_layers": graph.n_layers, "n_heads": graph.n_heads,
                    "parallel_attn_mlp": graph.shape.parallel_attn_mlp, "d_model": d_model},
            "nodes": nodes, "edges": edges}


def read_mib(data: Mapping[str, Any], source: str = "MIB file"
             ) -> tuple[Graph, tuple[bool, ...], tuple[float | None, ...], dict[str, Any],
                        dict[str, float | None] | None]:
    """The graph, kept flags, scores, settings and node scores (None: an edge circuit) of a
    `qkv` circuit from a MIB circuit file's dictionary, checked against the graph its `cfg`
    describes (sequential or parallel blocks): every residual edge must be there, and nothing
    else. `acdc.core.circuit.from_mib` makes the `Circuit`."""
    cfg = data.get("cfg")
    if not isinstance(cfg, Mapping):
        raise GraphError(f"{source}: a MIB circuit file needs a 'cfg' object")
    for key in ("n_layers", "n_heads"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GraphError(f"{source}: cfg {key} is {value!r}; it must be a positive whole "
                             f"number")
    parallel = cfg.get("parallel_attn_mlp", False)
    if not isinstance(parallel, bool):
        raise GraphError(f"{source}: cfg parallel_attn_mlp is {parallel!r}; it must be true or "
                         f"false")
    shape = GraphShape(int(cfg["n_layers"]), int(cfg["n_heads"]), True, "qkv", parallel)
    entries = data.get("edges")
    if not isinstance(entries, Mapping):
        raise GraphError(f"{source}: a MIB circuit file needs an 'edges' object")
    # The closed-form count first: a cfg far larger than the file's edges builds no graph (a
    # near miss does, so that the unknown or missing edges can be named).
    n_residual = count_edges(shape)["residual"]
    if n_residual > 2 * len(entries) + 1000:
        blocks = "parallel blocks" if parallel else "MLPs"
        raise GraphError(f"{source}: has {len(entries):,} edges, but the {shape.n_layers}-layer "
                         f"{shape.n_heads}-head MIB graph with {blocks} its cfg describes has "
                         f"{n_residual:,}")
    graph = build_graph(shape)
    residual = [e for e in graph.edges if e.kind == "residual"]
    names = {e.name for e in residual}
    unknown = [name for name in entries if name not in names]
    if unknown:
        direct = " (direct q/k/v edges are not part of a MIB file)" if any(
            name in graph.edge_index for name in unknown) else ""
        blocks = "parallel blocks" if parallel else "MLPs"
        raise GraphError(f"{source}: {len(unknown)} edge name(s) not in the residual edges of a "
                         f"{graph.n_layers}-layer {graph.n_heads}-head graph with {blocks}: "
                         f"{', '.join(map(repr, unknown[:SHOWN]))}{direct}")
    missing = [e.name for e in residual if e.name not in entries]
    if missing:
        raise GraphError(f"{source}: has {len(entries)} edges, a {graph.n_layers}-layer "
                         f"{graph.n_heads}-head MIB graph has {len(residual)}; missing "
                         f"{', '.join(map(repr, missing[:SHOWN]))}")
    kept = [False] * len(graph.edges)
    scores: list[float | None] = [None] * len(graph.edges)
    for edge in residual:
        entry = entries[edge.name]
        if not isinstance(entry, Mapping) or not isinstance(entry.get("in_graph"), bool):
            raise GraphError(f"{source}: edge {edge.name!r} needs 'in_graph': true or false")
        score = entry.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise GraphError(f"{source}: edge {edge.name!r} has score {score!r}; use a number")
        scores[edge.index] = float(score)
        kept[edge.index] = entry["in_graph"]
    settings = {"method": "mib", "granularity": "qkv",
                "mib_cfg": {key: cfg.get(key) for key in CFG_KEYS}}
    return graph, tuple(with_direct_edges(graph, kept)), tuple(scores), settings, _node_scores(
        data.get("nodes"), graph, source)


def _node_scores(nodes: Any, graph: Graph, source: str) -> dict[str, float | None] | None:
    """The heads' and MLPs' `score` entries of a node-level file (None when none has one)."""
    if not isinstance(nodes, Mapping):
        return None
    units = [s.name for s in graph.senders if s.kind != "input"]
    scores: dict[str, float | None] = {}
    for name in units:
        entry = nodes.get(name)
        score = entry.get("score") if isinstance(entry, Mapping) else None
        if score is None:
            continue
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(
                score):
            raise GraphError(f"{source}: node {name!r} has score {score!r}; use a number")
        scores[name] = float(score)
    return scores or None
