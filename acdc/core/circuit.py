"""The `Circuit` value: what every discovery method returns, and its versioned JSON file.

A circuit is a graph (`acdc.core.graph`), one kept flag and one score per edge (in the graph's
edge order), and two mappings of metadata: `settings`, what the run was asked to do (model,
task, method and the method's settings, metric, ablation, granularity), and `results`, what it
measured (the metric of the circuit and of the full model, runtime, whether it was
interrupted, and whatever else the method reports). A score is the method's number for the
edge (ACDC: the metric change measured when the edge was tested), None when the edge was never
scored. Flags and scores are plain tuples, so reading and drawing a circuit needs no torch.

`circuit.json` holds the format tag, the settings, the graph's shape (so that the graph is
rebuilt without the model), edge counts, the circuit's nodes, EVERY edge of the graph in graph
order with its kept flag and score, then the results. `from_json` dispatches on the format tag
(`circuit/1` is the only one so far; a later format adds a reader and keeps this one) and
checks the file against the rebuilt graph, so a file from another graph shape or a hand-edited
edge list is refused in one line. A MIB circuit file (the benchmark's format, which has no tag:
`cfg`, `nodes` and `edges` objects) is read by `acdc.core.mib`.

A positional circuit (`--positions labels|all`, `acdc.core.graph`) is the same value over the
positional graph: `edges` lists every edge at every group in graph order (`a0.h1->a2.h3<q>@S2`;
blind edge e at group g is entry e x G + g), with its kept flag and score. The file adds the
mode (`positions`: `labels` or `all`, with the settings), the groups in order (`groups`, with
the graph's shape: `["IO", "S1", "S1+1", "S2", "END", "other"]`, or `["0", ..., "P-1"]`) and
`positions_sha256`, the digest of the task's assignment of every prompt's tokens to the groups
(`acdc.core.positions.positions_digest`): a command that applies the circuit to a task must
recompute it on that task and refuse a task whose tokens fall into other groups. A blind
circuit's file has none of these keys. Position-blind consumers read such a circuit's blind
edge e as kept when any of its groups is (`Circuit.blind_kept`) and its score as the sum
over its groups (`Circuit.blind_scores`).

Examples:
    >>> from acdc.core.graph import GraphShape, build_graph
    >>> graph = build_graph(GraphShape(1, 2, False))
    >>> kept = tuple(e.name == "a0.h1->logits" for e in graph.edges)
    >>> Circuit(graph, kept, (None,) * len(kept)).nodes()
    ['a0.h1', 'logits']
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acdc.core.files import MAX_GRAPH_FILE_BYTES, read_json, write_text_atomic
from acdc.core.graph import (
    GRANULARITIES,
    POSITION_MODES,
    Edge,
    Graph,
    GraphShape,
    PositionMode,
    build_graph,
    check_groups,
    count_edges,
)
from acdc.core.mib import read_mib
from acdc.errors import GraphError, short_repr

FORMAT = "circuit/1"
MAX_GROUPS = 100_000  # position groups a file may name (a group per token of a long prompt)
DRAWINGS: dict[str, Callable[[Circuit], str | None]] = {}
"""How a circuit draws itself, by format: installed by the drawing layer (`acdc.exports.dot`
puts `svg` there when imported), so that this value needs no drawing code."""
# Results written with the edge counts, before the node and edge lists (circuit/1's layout).
COUNT_RESULTS: tuple[str, ...] = ("n_edges_decided",)
SHAPE_KEYS: tuple[str, ...] = ("n_layers", "n_heads", "has_mlp", "parallel_attn_mlp")
V1_RESULT_KEYS: tuple[str, ...] = ("n_edges_decided", "n_edges_selected", "n_nodes_selected",
                                   "metric_circuit", "metric_full", "metric_noise", "runtime_s",
                                   "partial")
# What every circuit file holds; a method's own settings (ACDC's threshold) are optional.
V1_REQUIRED: tuple[str, ...] = (
    "format", "model", "task", "method", "metric", "ablation", "granularity",
    "n_layers", "n_heads", "has_mlp", "n_edges_total", "n_edges_kept", "nodes", "edges",
    "metric_circuit", "metric_full", "runtime_s", "partial",
)


@dataclass(frozen=True)
class Circuit:
    """A circuit: `kept[i]` and `scores[i]` belong to `graph.edges[i]`."""

    graph: Graph
    kept: tuple[bool, ...]
    scores: tuple[float | None, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    results: Mapping[str, Any] = field(default_factory=dict)
    # A node circuit's scores (heads and MLPs by name: HISP, subnetwork probing); None for an
    # edge circuit.
    node_scores: Mapping[str, float | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.graph.edges)
        if len(self.kept) != n or len(self.scores) != n:
            raise ValueError(f"a circuit of this graph needs {n} kept flags and scores, got "
                             f"{len(self.kept)} and {len(self.scores)}")

    @property
    def n_edges_kept(self) -> int:
        """Kept edges, direct q/k/v -> head edges included (the ACDC paper's count)."""
        return sum(self.kept)

    @property
    def n_residual_kept(self) -> int:
        """Kept residual edges: the circuit's size as the MIB benchmark counts it."""
        return sum(1 for e in self.graph.edges if e.kind == "residual" and self.kept[e.index])

    def __repr__(self) -> str:
        settings = self.settings
        what = ", ".join(f"{key} {settings[key]}" for key in ("task", "model", "method")
                         if key in settings)
        return f"Circuit({what + ': ' if what else ''}{self.size()} kept)"

    def _repr_svg_(self) -> str | None:
        """The circuit's drawing, for Jupyter: drawn by the function `acdc.exports.dot`
        installs (`DRAWINGS`), when Graphviz is installed; None otherwise (Jupyter then shows
        the text)."""
        draw = DRAWINGS.get("svg")
        return draw(self) if draw is not None else None

    def size(self) -> str:
        """The circuit's size in words, the same in every command: kept residual edges (MIB's
        count) and, where the graph has direct q/k/v edges, the count with them (the ACDC
        paper's), e.g. `50 of 32,491 residual edges (74 of 32,923 with direct q/k/v edges)`."""
        return size_words(self.graph, self.kept)

    @property
    def level(self) -> str:
        """`node` for a circuit chosen as a set of nodes, else `edge`."""
        return "node" if self.node_scores is not None else "edge"

    @property
    def metric_circuit(self) -> float:
        return float(self.results["metric_circuit"])

    @property
    def metric_full(self) -> float:
        return float(self.results["metric_full"])

    @property
    def partial(self) -> bool:
        return bool(self.results.get("partial", False))

    def kept_edges(self) -> list[Edge]:
        return [e for e in self.graph.edges if self.kept[e.index]]

    def blind_kept(self) -> tuple[bool, ...]:
        """Per edge of the blind graph: kept at some group (a blind circuit's own flags)."""
        n = self.graph.n_groups
        return tuple(any(self.kept[i:i + n]) for i in range(0, len(self.kept), n))

    def blind_scores(self) -> tuple[float | None, ...]:
        """Per edge of the blind graph: the sum of its groups' scores (None where no group was
        scored); a blind circuit's own scores. For EAP this is the blind score."""
        n = self.graph.n_groups
        out: list[float | None] = []
        for i in range(0, len(self.scores), n):
            scored = [s for s in self.scores[i:i + n] if s is not None]
            out.append(sum(scored) if scored else None)
        return tuple(out)

    def nodes(self) -> list[str]:
        """Every node touching a kept edge, in `graph.node_names()` order."""
        return circuit_nodes(self.graph, self.kept)

    def to_json(self) -> dict[str, Any]:
        """The `circuit.json` dictionary (strict JSON: untested scores are null)."""
        graph = self.graph
        results = dict(self.results)
        counts = {key: results.pop(key) for key in COUNT_RESULTS if key in results}
        return {
            "format": FORMAT,
            **self.settings,
            "n_layers": graph.n_layers,
            "n_heads": graph.n_heads,
            "has_mlp": graph.shape.has_mlp,
            # written only for parallel blocks, so files of sequential models are unchanged
            **({"parallel_attn_mlp": True} if graph.shape.parallel_attn_mlp else {}),
            # and the position groups only for positional graphs
            **({"positions": graph.shape.positions, "groups": list(graph.groups)}
               if graph.positional else {}),
            "n_edges_total": len(graph.edges),
            "n_edges_kept": self.n_edges_kept,
            **counts,
            "nodes": self.nodes(),
            "edges": [{"name": e.name, "kept": self.kept[e.index], "score": self.scores[e.index]}
                      for e in graph.edges],
            **({"node_scores": dict(self.node_scores)} if self.node_scores is not None else {}),
            **results,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "circuit.json") -> Circuit:
        """A circuit from a `circuit.json` dictionary, checked against the rebuilt graph."""
        if not isinstance(data, dict):
            raise GraphError(f"{source}: not a circuit file (expected a JSON object)")
        tag = data.get("format")
        if tag is None and {"cfg", "nodes", "edges"} <= data.keys():
            tag = "mib"  # MIB's files carry no tag
        reader = READERS.get(tag) if isinstance(tag, str) else None
        if reader is None:
            raise GraphError(f"{source}: format is {short_repr(data.get('format'))}, expected "
                             f"{FORMAT!r} (written by `circuit discover`) or a MIB circuit file "
                             f"(cfg, nodes and edges)")
        return reader(data, source)


def circuit_nodes(graph: Graph, kept: Sequence[bool]) -> list[str]:
    """Every node touching a kept edge, in `graph.node_names()` order."""
    touched: set[str] = set()
    for edge in graph.edges:
        if kept[edge.index]:
            touched.update(edge.endpoints)
    return [name for name in graph.node_names() if name in touched]


def size_words(graph: Graph, kept: Sequence[bool]) -> str:
    """See `Circuit.size`."""
    residual = [e for e in graph.edges if e.kind == "residual"]
    n_residual = sum(1 for e in residual if kept[e.index])
    if len(residual) == len(graph.edges):
        return f"{n_residual:,} of {len(graph.edges):,} edges"
    return (f"{n_residual:,} of {len(residual):,} residual edges ({sum(map(bool, kept)):,} of "
            f"{len(graph.edges):,} with direct q/k/v edges)")


def score_or_none(value: float) -> float | None:
    """A score for the file: NaN (never tested) becomes None."""
    value = float(value)
    return None if math.isnan(value) else value


def _read_v1(data: dict[str, Any], source: str) -> Circuit:
    missing = [key for key in V1_REQUIRED if key not in data]
    if missing:
        raise GraphError(f"{source}: missing key(s) {', '.join(missing)}")
    granularity = data["granularity"]
    if not isinstance(granularity, str) or granularity not in GRANULARITIES:
        raise GraphError(f"{source}: granularity {short_repr(granularity)} is not one of "
                         f"{', '.join(GRANULARITIES)}")
    for key in ("n_layers", "n_heads"):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GraphError(f"{source}: {key} is {short_repr(value)}; it must be a whole "
                             f"number >= 1")
    for key in ("has_mlp", "parallel_attn_mlp"):
        if not isinstance(data.get(key, False), bool):
            raise GraphError(f"{source}: {key} is {short_repr(data[key])}; it must be true or "
                             f"false")
    for key in V1_RESULT_KEYS:
        value = data.get(key)
        wanted = (bool if key == "partial" else int if key.startswith("n_edges_")
                  else (int, float))
        if key in data and value is not None and (
                not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool))):
            raise GraphError(f"{source}: {key} is {short_repr(value)}; it must be "
                             f"{'true or false' if wanted is bool else 'a number'}")
    positions, groups = _read_groups(data, source)
    shape = GraphShape(data["n_layers"], data["n_heads"], data["has_mlp"],
                       data["granularity"], data.get("parallel_attn_mlp", False), positions,
                       groups)
    edges = data["edges"]
    n_edges = count_edges(shape)["edges"]  # closed form: a wrong shape builds no graph
    if not isinstance(edges, list) or len(edges) != n_edges:
        got = len(edges) if isinstance(edges, list) else short_repr(edges)
        at = f" at {len(groups)} position groups" if groups else ""
        raise GraphError(f"{source}: has {got} edges, a {shape.n_layers}-layer "
                         f"{shape.n_heads}-head {granularity} graph{at} has {n_edges:,}")
    graph = build_graph(shape)
    kept: list[bool] = []
    scores: list[float | None] = []
    for i, (entry, edge) in enumerate(zip(edges, graph.edges, strict=True)):
        if not isinstance(entry, dict) or entry.get("name") != edge.name:
            name = entry.get("name") if isinstance(entry, dict) else entry
            raise GraphError(f"{source}: edge {i} is {short_repr(name)}, expected {edge.name!r} "
                             f"(edges must be every edge of the graph, in graph order)")
        if not isinstance(entry.get("kept"), bool):
            raise GraphError(f"{source}: edge {edge.name!r} needs 'kept': true or false")
        score = entry.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise GraphError(f"{source}: edge {edge.name!r} has score {short_repr(score)}; use a "
                             f"number or null")
        kept.append(entry["kept"])
        scores.append(None if score is None else float(score))
    node_scores = _read_node_scores(data.get("node_scores"), graph, source)
    derived = {"format", *SHAPE_KEYS, "n_edges_total", "n_edges_kept", "nodes", "edges",
               "node_scores", "groups"}
    settings = {k: v for k, v in data.items() if k not in derived and k not in V1_RESULT_KEYS}
    results = {k: data[k] for k in V1_RESULT_KEYS if k in data}
    return Circuit(graph, tuple(kept), tuple(scores), settings, results, node_scores)


def _read_groups(data: dict[str, Any], source: str) -> tuple[PositionMode, tuple[str, ...]]:
    """A circuit file's `positions` and `groups` (a blind circuit has neither)."""
    positions = data.get("positions", "none")
    if not isinstance(positions, str) or positions not in POSITION_MODES:
        raise GraphError(f"{source}: positions is {short_repr(positions)}, not one of "
                         f"{', '.join(POSITION_MODES)}")
    groups = data.get("groups")
    if positions == "none":
        if groups is not None:
            raise GraphError(f"{source}: has groups but positions none; a position-blind "
                             f"circuit has no groups")
        return "none", ()
    if (not isinstance(groups, list) or not groups
            or not all(isinstance(g, str) for g in groups)):
        raise GraphError(f"{source}: positions {positions} needs groups, a list of the "
                         f"position groups' names, got {short_repr(groups)}")
    if len(groups) > MAX_GROUPS:
        raise GraphError(f"{source}: {len(groups):,} position groups, more than the "
                         f"{MAX_GROUPS:,} any task has")
    mode: PositionMode = positions  # type: ignore[assignment]  # one of POSITION_MODES
    try:
        check_groups(GraphShape(1, 1, False, positions=mode, groups=tuple(groups)))
    except GraphError as error:
        raise GraphError(f"{source}: {error}") from None
    return mode, tuple(groups)


def _read_node_scores(value: Any, graph: Graph, source: str
                      ) -> dict[str, float | None] | None:
    """A node circuit's `node_scores`: heads and MLPs of the graph, numbers or null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise GraphError(f"{source}: node_scores is {short_repr(value)}; it must be an object "
                         f"of node names and scores")
    names = {s.name for s in graph.senders if s.kind != "input"}
    scores: dict[str, float | None] = {}
    for name, score in value.items():
        if name not in names:
            raise GraphError(f"{source}: node_scores names {short_repr(name)}, not a head or "
                             f"MLP of the graph")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise GraphError(f"{source}: node {name!r} has score {short_repr(score)}; use a "
                             f"number or null")
        scores[name] = None if score is None else float(score)
    return scores


def from_mib(data: Mapping[str, Any], source: str = "MIB file") -> Circuit:
    """A circuit from a MIB circuit file's dictionary (`acdc.core.mib`)."""
    graph, kept, scores, settings, node_scores = read_mib(data, source)
    return Circuit(graph, kept, scores, settings, {}, node_scores)


READERS: dict[str, Callable[[dict[str, Any], str], Circuit]] = {FORMAT: _read_v1,
                                                                "mib": from_mib}


CIRCUIT_FILE = "circuit.json"  # what `circuit discover` writes into a run directory


def circuit_path(target: str | Path) -> Path:
    """The circuit file a command's argument names: the `circuit.json` of a run directory, or
    the file itself (a circuit.json or a MIB file; `load_circuit` refuses anything that is not
    a regular file). One line when there is none."""
    target = Path(target)
    if target.is_dir():
        path = target / CIRCUIT_FILE
        if path.is_file():
            return path
        try:
            sweep = any(sub.name.startswith("tau-") and sub.is_dir() for sub in target.iterdir())
        except OSError:
            sweep = False
        if sweep:
            raise GraphError(f"{target}: is a sweep directory, not a run; give one of its runs, "
                             f"e.g. {target / 'tau-<threshold>'}")
        raise GraphError(f"{target}: has no {CIRCUIT_FILE}; give a run directory written by "
                         f"`circuit discover`, a circuit.json or a MIB circuit file")
    if not target.exists() and not target.is_symlink():
        raise GraphError(f"{target}: no such run directory or circuit file")
    return target


def load_circuit(path: str | Path) -> Circuit:
    """Read a `circuit.json` written by `circuit discover`, or a MIB circuit file (through
    the bounded reader of `acdc.core.files`)."""
    data = read_json(path, "a circuit is a JSON file (circuit.json or a MIB circuit file)",
                     MAX_GRAPH_FILE_BYTES)
    return Circuit.from_json(data, str(path))


def write_circuit(circuit: Circuit, path: str | Path) -> Path:
    """Write `circuit.json` (atomically: a failure leaves no half-written file)."""
    return write_text_atomic(path, json.dumps(circuit.to_json(), indent=1) + "\n")
