"""What a run leaves on disk: `circuit.json`, `circuit.dot`/`.svg`, and `run.yaml`.

`circuit.json` (format "circuit/1") is the result of a run: run metadata, the graph's shape
(so that the graph can be rebuilt without the model), the circuit's nodes, and EVERY edge of
the graph in graph order with whether it was kept and its score (the metric change measured
when it was tested, null when it was never tested). `load_circuit` reads it back and checks
it against the rebuilt graph, so a file from another graph shape or a hand-edited edge list
is refused in one line.

`to_dot` draws a circuit with layers as ranks: `input` at the bottom, `logits` at the top,
each layer's q/k/v inputs on one rank, its heads on the rank above and its MLP above those.
At `qkv` granularity a head's query, key and value inputs are small circles labelled q, k, v;
residual edges into them and the direct edge from them into the head are coloured by input
(q blue, k green, v red, each with its own line style); edges into MLPs and `logits` are
black. At `head` granularity residual edges go straight into the head, in grey. Only kept
edges are drawn unless `all_edges` is set (removed edges are then light grey and dashed).

`render` turns DOT into SVG or PNG with the Graphviz `dot` binary when it is on PATH; without
it the DOT is written and exactly one warning names the install command.

`run.yaml` holds the fully resolved configuration and package versions of a run.

>>> from acdc.core.graph import GraphShape, build_graph
>>> graph = build_graph(GraphShape(1, 2, False))
>>> kept = [e.name == "a0.h1->logits" for e in graph.edges]
>>> circuit_nodes(graph, kept)
['a0.h1', 'logits']
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from acdc.errors import GraphError
from acdc.core.graph import GRANULARITIES, Graph, GraphShape, build_graph, head_name

FORMAT = "circuit/1"
RENDER_FORMATS: tuple[str, ...] = ("svg", "png", "dot")
INSTALL_HINT = "apt-get install -y graphviz"
QKV_COLORS = {"q": "#1f77b4", "k": "#2ca02c", "v": "#d62728"}
QKV_STYLES = {"q": "solid", "k": "dashed", "v": "bold"}
REQUIRED_KEYS = (
    "format", "model", "task", "method", "threshold", "metric", "ablation", "granularity",
    "n_layers", "n_heads", "has_mlp", "n_edges_total", "n_edges_kept", "nodes", "edges",
    "metric_circuit", "metric_full", "runtime_s", "partial",
)


class RenderWarning(UserWarning):
    """Rendering fell back to writing DOT only (no Graphviz `dot` on PATH)."""


# --------------------------------------------------------------------------- circuits


@dataclass
class Circuit:
    """A circuit as stored in `circuit.json`: the graph, which edges are kept, their scores
    (None when never tested) and the run's metadata (every other key of the file)."""

    graph: Graph
    kept: list[bool]
    scores: list[float | None]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_edges_kept(self) -> int:
        return sum(self.kept)


def circuit_nodes(graph: Graph, kept: list[bool]) -> list[str]:
    """Every node touching a kept edge, in `graph.node_names()` order."""
    touched: set[str] = set()
    for edge in graph.edges:
        if kept[edge.index]:
            touched.update(edge.endpoints)
    return [name for name in graph.node_names() if name in touched]


def _score(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def to_json(result, model_name: str, task_name: str,
            runtime_s: float | None = None) -> dict[str, Any]:
    """The `circuit.json` dictionary of an engine `CircuitResult`.

    `runtime_s` defaults to the engine's own measure of the run.
    """
    graph = result.graph
    config = result.config
    kept = [bool(k) for k in result.kept.tolist()]
    scores = [_score(s) for s in result.scores.tolist()]
    decided = result.decided.tolist()
    data: dict[str, Any] = {
        "format": FORMAT,
        "model": model_name,
        "task": task_name,
        "method": "acdc",
        "threshold": float(config.threshold),
        "metric": config.metric,
        "ablation": config.ablation,
        "granularity": graph.granularity,
        "abs": bool(config.use_abs),
        "reverse_head_order": bool(config.reverse_head_order),
        "n_layers": graph.n_layers,
        "n_heads": graph.n_heads,
        "has_mlp": graph.shape.has_mlp,
        "n_edges_total": len(graph.edges),
        "n_edges_kept": sum(kept),
        "n_edges_decided": int(sum(decided)),
        "nodes": circuit_nodes(graph, kept),
        "edges": [
            {"name": e.name, "kept": kept[e.index], "score": scores[e.index]} for e in graph.edges
        ],
        "metric_circuit": float(result.metric_circuit),
        "metric_full": float(result.metric_full),
        "metric_noise": float(result.metric_noise),
        "runtime_s": float(result.runtime_s if runtime_s is None else runtime_s),
        "partial": bool(result.partial),
    }
    return data


def from_json(data: Any, source: str = "circuit.json") -> Circuit:
    """A `Circuit` from a `circuit.json` dictionary, checked against the rebuilt graph."""
    if not isinstance(data, dict):
        raise GraphError(f"{source}: not a circuit file (expected a JSON object)")
    if data.get("format") != FORMAT:
        raise GraphError(
            f"{source}: format is {data.get('format')!r}, expected {FORMAT!r} "
            f"(write it with `circuit discover`)"
        )
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise GraphError(f"{source}: missing key(s) {', '.join(missing)}")
    granularity = data["granularity"]
    if granularity not in GRANULARITIES:
        raise GraphError(f"{source}: granularity {granularity!r} is not one of "
                         f"{', '.join(GRANULARITIES)}")
    try:
        shape = GraphShape(int(data["n_layers"]), int(data["n_heads"]), bool(data["has_mlp"]),
                           granularity)
    except (TypeError, ValueError):
        raise GraphError(f"{source}: n_layers and n_heads must be integers") from None
    graph = build_graph(shape)
    edges = data["edges"]
    if not isinstance(edges, list) or len(edges) != len(graph.edges):
        got = len(edges) if isinstance(edges, list) else type(edges).__name__
        raise GraphError(f"{source}: has {got} edges, a {shape.n_layers}-layer "
                         f"{shape.n_heads}-head {granularity} graph has {len(graph.edges)}")
    kept: list[bool] = []
    scores: list[float | None] = []
    for i, (entry, edge) in enumerate(zip(edges, graph.edges)):
        if not isinstance(entry, dict) or entry.get("name") != edge.name:
            name = entry.get("name") if isinstance(entry, dict) else entry
            raise GraphError(f"{source}: edge {i} is {name!r}, expected {edge.name!r} (edges must "
                             f"be every edge of the graph, in graph order)")
        if not isinstance(entry.get("kept"), bool):
            raise GraphError(f"{source}: edge {edge.name!r} needs 'kept': true or false")
        score = entry.get("score")
        if score is not None and not isinstance(score, (int, float)):
            raise GraphError(f"{source}: edge {edge.name!r} has score {score!r}; use a number "
                             f"or null")
        kept.append(entry["kept"])
        scores.append(None if score is None else float(score))
    meta = {k: v for k, v in data.items() if k not in ("edges", "nodes")}
    return Circuit(graph, kept, scores, meta)


def load_circuit(path: str | Path) -> Circuit:
    """Read a `circuit.json` written by `circuit discover`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise GraphError(f"{path}: no such file") from None
    except OSError as error:
        raise GraphError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise GraphError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    return from_json(data, str(path))


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


# --------------------------------------------------------------------------- DOT


def _node_id(name: str) -> str:
    return name.replace(".", "_").replace("<", "_").replace(">", "")


def _fmt_score(score: float | None) -> str:
    return "untested" if score is None else f"{score:.4g}"


def to_dot(circuit: Circuit, all_edges: bool = False, title: str | None = None) -> str:
    """DOT source of a circuit (kept edges only unless `all_edges`).

    >>> from acdc.core.graph import GraphShape, build_graph
    >>> graph = build_graph(GraphShape(1, 1, False))
    >>> kept = [True] * len(graph.edges)
    >>> 'color="#1f77b4"' in to_dot(Circuit(graph, kept, [None] * len(kept)))
    True
    """
    import graphviz

    graph = circuit.graph
    drawn = [e for e in graph.edges if all_edges or circuit.kept[e.index]]
    nodes = set()
    for edge in drawn:
        nodes.update(edge.endpoints)
    dot = graphviz.Digraph("circuit")
    dot.attr(rankdir="BT", newrank="true", nodesep="0.25", ranksep="0.45", fontname="Helvetica")
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", arrowsize="0.6")
    legend = "edges into q: blue solid, k: green dashed, v: red bold; MLP/logits inputs: black"
    if graph.granularity == "head":
        legend = "edges into heads: grey; into MLPs and logits: black"
    if all_edges:
        legend += "; removed edges: light grey dotted"
    kept_count = sum(circuit.kept)
    label = f"{title}\n" if title else ""
    label += f"{kept_count} of {len(graph.edges)} edges kept\n{legend}"
    dot.attr(label=label, labelloc="t", fontsize="12")

    def add_node(sub, name: str, **attrs: str) -> None:
        if name in nodes:
            sub.node(_node_id(name), label=attrs.pop("label", name), tooltip=name, **attrs)

    with dot.subgraph(name="rank_input") as sub:
        sub.attr(rank="min")
        add_node(sub, "input", shape="ellipse", style="filled", fillcolor="#dddddd")
    for layer in range(graph.n_layers):
        if graph.granularity == "qkv":
            with dot.subgraph(name=f"rank_{layer}_qkv") as sub:
                sub.attr(rank="same")
                for head in range(graph.n_heads):
                    for qkv in ("q", "k", "v"):
                        name = f"{head_name(layer, head)}<{qkv}>"
                        add_node(sub, name, label=qkv, shape="circle", width="0.25",
                                 fixedsize="true", fontsize="9", style="filled",
                                 fillcolor=QKV_COLORS[qkv], fontcolor="white",
                                 color=QKV_COLORS[qkv])
        with dot.subgraph(name=f"rank_{layer}_heads") as sub:
            sub.attr(rank="same")
            for head in range(graph.n_heads):
                add_node(sub, head_name(layer, head), shape="box", style="rounded,filled",
                         fillcolor="#cfe2f3")
        if graph.shape.has_mlp:
            with dot.subgraph(name=f"rank_{layer}_mlp") as sub:
                sub.attr(rank="same")
                add_node(sub, f"m{layer}", shape="box", style="filled", fillcolor="#fce5cd")
    with dot.subgraph(name="rank_logits") as sub:
        sub.attr(rank="max")
        add_node(sub, "logits", shape="ellipse", style="filled", fillcolor="#dddddd")

    for edge in drawn:
        source, target = edge.endpoints
        qkv = edge.qkv if edge.kind == "direct" else edge.receiver.qkv
        attrs = {"tooltip": f"{edge.name} (score {_fmt_score(circuit.scores[edge.index])})"}
        if not circuit.kept[edge.index]:
            attrs.update(color="#cccccc", style="dotted")
        elif qkv is not None:
            attrs.update(color=QKV_COLORS[qkv], style=QKV_STYLES[qkv])
        elif edge.receiver.kind == "head":
            attrs.update(color="#666666")
        else:
            attrs.update(color="black")
        dot.edge(_node_id(source), _node_id(target), **attrs)
    return dot.source


def render(dot_source: str, path: str | Path, format: str = "svg") -> Path:
    """Write `dot_source` to `path` as `format` ("svg", "png" or "dot").

    Uses the Graphviz `dot` binary when it is on PATH. Without it, writes the DOT next to
    `path` (suffix `.dot`), issues one `RenderWarning` naming the install command and
    returns the DOT file's path.
    """
    if format not in RENDER_FORMATS:
        raise GraphError(f"unknown format {format!r}: use one of {', '.join(RENDER_FORMATS)}")
    path = Path(path)
    if format == "dot":
        path.write_text(dot_source)
        return path
    binary = shutil.which("dot")
    if binary is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(dot_source)
        warnings.warn(
            f"Graphviz `dot` not found, wrote {dot_path} instead of {path}; for {format.upper()} "
            f"install it with `{INSTALL_HINT}`",
            RenderWarning,
            stacklevel=2,
        )
        return dot_path
    try:
        done = subprocess.run([binary, f"-T{format}", "-o", str(path)], input=dot_source.encode(),
                              capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GraphError(f"{binary} failed to render {path} ({error})") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        reason = message[0] if message else f"exit code {done.returncode}"
        raise GraphError(f"{binary} failed to render {path} ({reason})")
    return path


# --------------------------------------------------------------------------- run.yaml


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on (read from metadata, nothing imported)."""
    versions = {}
    for key, dist in (("circuit", "circuit"), ("torch", "torch"),
                      ("transformer_lens", "transformer-lens"), ("transformers", "transformers")):
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def run_config(*, task: str, task_file: str | None, model: str, threshold: float, metric: str,
               ablation: str, granularity: str, use_abs: bool, reverse_head_order: bool,
               seed: int | None, device: str, dtype: str, n_prompts: int | None,
               command: list[str] | None = None, partial: bool = False) -> dict[str, Any]:
    """The fully resolved configuration of a run, as written to `run.yaml`.

    `command` is the command line as typed (the `repeat` command line when not known).
    """
    repeat = repeat_command(task_file or task, model, threshold, metric, ablation, granularity,
                            use_abs, reverse_head_order, seed, device, dtype)
    return {
        "task": task,
        "task_file": task_file,
        "model": model,
        "threshold": float(threshold),
        "metric": metric,
        "ablation": ablation,
        "granularity": granularity,
        "abs": bool(use_abs),
        "reverse_head_order": bool(reverse_head_order),
        "seed": seed,
        "device": device,
        "dtype": dtype,
        "n_prompts": n_prompts,
        "partial": bool(partial),
        "command": " ".join(shlex.quote(a) for a in command) if command is not None else repeat,
        "repeat": repeat,
        "versions": package_versions(),
    }


def repeat_command(task: str, model: str, threshold: float, metric: str, ablation: str,
                   granularity: str, use_abs: bool, reverse_head_order: bool, seed: int | None,
                   device: str, dtype: str) -> str:
    """A `circuit discover` command line with every setting spelled out."""
    args = ["circuit", "discover", "--task", task, "--model", model, "--threshold",
            repr(float(threshold)), "--metric", metric, "--ablation", ablation,
            "--granularity", granularity]
    if use_abs:
        args.append("--abs")
    if reverse_head_order:
        args.append("--reverse-head-order")
    if seed is not None:
        args += ["--seed", str(seed)]
    args += ["--device", device, "--dtype", dtype]
    return " ".join(shlex.quote(a) for a in args)


def write_run_yaml(config: dict[str, Any], path: str | Path) -> Path:
    import yaml

    path = Path(path)
    header = "# Resolved configuration of a `circuit discover` run; `repeat` runs it again.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return path
