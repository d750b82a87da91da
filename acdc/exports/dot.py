"""Drawing a circuit: DOT source, and SVG or PNG through Graphviz.

`to_dot` draws a circuit with layers as ranks: `input` at the bottom, `logits` at the top,
each layer's q/k/v inputs on one rank, its heads on the rank above and its MLP above those.
At `qkv` granularity a head's query, key and value inputs are small circles labelled q, k, v;
residual edges into them and the direct edge from them into the head are coloured by input
(q blue, k green, v red, each with its own line style); edges into MLPs and `logits` are
black. At `head` granularity residual edges go straight into the head, in grey. Only kept
edges are drawn unless `all_edges` is set (removed edges are then light grey and dotted).

In a scored circuit each kept edge's pen width grows with its |score| (`score_width`, on by
default): from `MIN_WIDTH` for 0 to `MAX_WIDTH` for the largest |score| drawn, by the square
root of |score| / max |score|, so that a circuit whose scores span orders of magnitude still
shows its weaker edges. Edges without a score keep the default width. A width set this way
overrides Graphviz's `bold` style, so v edges, bold otherwise, are drawn dotted. The title names
the model as the user did: a model name as given, a checkpoint directory by its last part
(`model_label`).

`render` turns DOT into SVG or PNG with the Graphviz `dot` binary when it is on PATH; without
it the DOT is written and exactly one warning names the install command. Where Graphviz's
spline router fails on some edge (`run_dot`), the drawing is made with straight edges.

A node circuit (HISP's: a set of heads and MLPs, the circuit every edge among them) is drawn
as its nodes, each with its score, and one arrow per pair of nodes the circuit joins
(`node_circuit_dot`); `all_edges` draws its edges as for any circuit.

A circuit at positions (`--positions`, `acdc.core.graph`) is drawn as a grid
(`positional_dot`): one column per position group that keeps an edge, in the groups' order,
and the layers as rows, the same rows in every column. A node is drawn once in the column of
each group where it has a kept edge, and every edge in the column of its group: a residual
edge at g joins the sender and the receiver at g, a direct edge at g the head's q/k/v input at
g and the head at g. Information moves between positions only inside attention, so the grid's
one link across columns is a head's: a dashed grey arrow from the head at g, where it keeps a
key or value edge (at head granularity, any edge into it), to the head at each group g2 where
it keeps an outgoing edge, since its queries at g2 read the keys and values at g (the link
pruning follows, `Graph.connected`). A position-blind circuit's drawing does not change.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from acdc.core.circuit import DRAWINGS, Circuit
from acdc.core.files import atomic_path, check_output, write_text_atomic
from acdc.core.graph import Edge, Graph, head_name
from acdc.errors import GraphError, RunWarning

RENDER_FORMATS: tuple[str, ...] = ("svg", "png", "dot")
INSTALL_HINT = "apt-get install -y graphviz"
QKV_COLORS = {"q": "#1f77b4", "k": "#2ca02c", "v": "#d62728"}
QKV_STYLES = {"q": "solid", "k": "dashed", "v": "bold"}
# With score widths `bold` means nothing (an explicit width wins), so v is dotted instead.
QKV_STYLES_SCORED = {"q": "solid", "k": "dashed", "v": "dotted"}
MIN_WIDTH, MAX_WIDTH = 0.6, 5.0
# What Graphviz writes when its spline router fails on an edge (`run_dot`).
ROUTING_FAILED = re.compile(rb"triangulation failed|Pshortestpath|routesplines|lost \S+ \S+ edge")


class RenderWarning(RunWarning):
    """Rendering fell back to writing DOT only (no Graphviz `dot` on PATH)."""


# --------------------------------------------------------------------------- DOT


def node_id(name: str) -> str:
    """The DOT identifier of a graph node (`a1.h0<q>` -> `a1_h0_q`)."""
    return name.replace(".", "_").replace("<", "_").replace(">", "")


def _digraph():
    """An empty drawing with the house look: bottom to top, Helvetica, small arrows."""
    import graphviz

    dot = graphviz.Digraph("circuit")
    dot.attr(rankdir="BT", newrank="true", nodesep="0.25", ranksep="0.45", fontname="Helvetica")
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", arrowsize="0.6")
    return dot


def _edge_attrs(circuit: Circuit, edge: Edge, name: str, styles: dict[str, str],
                widths: dict[int, float]) -> dict[str, str]:
    """An edge's look: grey and dotted when removed, else coloured by the q/k/v input it
    feeds (grey into a head at head granularity, black elsewhere), wide by its score."""
    qkv = edge.qkv if edge.kind == "direct" else edge.receiver.qkv
    attrs = {"tooltip": f"{name} (score {_fmt_score(circuit.scores[edge.index])})"}
    if not circuit.kept[edge.index]:
        attrs.update(color="#cccccc", style="dotted")
    elif qkv is not None:
        attrs.update(color=QKV_COLORS[qkv], style=styles[qkv])
    elif edge.receiver.kind == "head":
        attrs.update(color="#666666")
    else:
        attrs.update(color="black")
    if edge.index in widths:
        attrs["penwidth"] = f"{widths[edge.index]:g}"
    return attrs


def _fmt_score(score: float | None) -> str:
    return "untested" if score is None else f"{score:.4g}"


def model_label(model: object) -> str:
    """A model as the user named it, short: a name as given (`gpt2`, `EleutherAI/pythia-70m`),
    a directory by its last part (`/home/me/models/demo` -> `demo`).

    >>> model_label("/work/models/demo"), model_label("gpt2"), model_label("./ckpt/")
    ('demo', 'gpt2', 'ckpt')
    """
    text = str(model)
    path = Path(text).expanduser()
    if path.is_absolute() or text.startswith((".", "~")) or (len(path.parts) > 1 and path.is_dir()):
        return path.resolve().name or text
    return text


def circuit_title(circuit: Circuit) -> str:
    """`task on model, method metric threshold t` (or `top-n N`, `edges-fraction F`; for a
    circuit at positions `, positions labels`) from the circuit's settings (a MIB file's
    circuit: `MIB circuit file, L layers x H heads`)."""
    settings = circuit.settings
    if "task" not in settings and "model" not in settings:
        graph = circuit.graph
        what = "MIB circuit file" if settings.get("method") == "mib" else "circuit"
        return f"{what}, {graph.n_layers} layers x {graph.n_heads} heads"
    title = f"{settings.get('task')} on {model_label(settings.get('model'))}, "
    if settings.get("method", "acdc") != "acdc":
        title += f"{settings['method']} "
    title += f"{settings.get('metric')}"
    for key in ("threshold", "top_n", "edges_fraction"):  # ACDC's, or a ranking's rule
        value = settings.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            title += f" {key.replace('_', '-')} {value:g}"
    if circuit.graph.positional:
        title += f", positions {circuit.graph.shape.positions}"
    if circuit.partial:
        title += " (partial run)"
    return title


def score_widths(circuit: Circuit, edges: Sequence[Edge]) -> dict[int, float]:
    """Pen widths of the kept `edges` that have a score, by edge index: `MIN_WIDTH` +
    (`MAX_WIDTH` - `MIN_WIDTH`) * sqrt(|score| / max |score|). Empty when no such edge has a
    nonzero score (nothing to scale by).

    >>> from acdc.core.graph import GraphShape, build_graph
    >>> graph = build_graph(GraphShape(1, 1, False))
    >>> scores = [0.0] * len(graph.edges); scores[0], scores[1] = 4.0, -1.0
    >>> widths = score_widths(Circuit(graph, (True,) * len(scores), tuple(scores)), graph.edges)
    >>> widths[0], widths[1], widths[2]
    (5.0, 2.8, 0.6)
    """
    scored = {e.index: abs(s) for e in edges
              if circuit.kept[e.index] and (s := circuit.scores[e.index]) is not None
              and math.isfinite(s)}
    top = max(scored.values(), default=0.0)
    if top <= 0:
        return {}
    return {index: round(MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * math.sqrt(value / top), 3)
            for index, value in scored.items()}


def to_dot(circuit: Circuit, all_edges: bool = False, title: str | None = None,
           score_width: bool = True) -> str:
    """DOT source of a circuit (kept edges only unless `all_edges`); with `score_width` (and
    scores to scale by) each kept edge's width follows its |score|.

    >>> from acdc.core.graph import GraphShape, build_graph
    >>> graph = build_graph(GraphShape(1, 1, False))
    >>> kept = (True,) * len(graph.edges)
    >>> 'color="#1f77b4"' in to_dot(Circuit(graph, kept, (None,) * len(kept)))
    True
    """

    if circuit.graph.positional:
        return positional_dot(circuit, all_edges, title, score_width)
    if circuit.level == "node" and not all_edges:
        return node_circuit_dot(circuit, title, score_width)
    graph = circuit.graph
    drawn = [e for e in graph.edges if all_edges or circuit.kept[e.index]]
    nodes: set[str] = set()
    for edge in drawn:
        nodes.update(edge.endpoints)
    widths = score_widths(circuit, drawn) if score_width else {}
    styles = QKV_STYLES_SCORED if widths else QKV_STYLES
    dot = _digraph()
    legend = (f"edges into q: blue solid, k: green dashed, v: red {styles['v']}; MLP/logits "
              f"inputs: black")
    if graph.granularity == "head":
        legend = "edges into heads: grey; into MLPs and logits: black"
    if widths:
        top = max(abs(circuit.scores[i]) for i in widths)  # type: ignore[arg-type]
        legend += f"\nwidth: |score| (widest {top:.3g})"
    if all_edges:
        legend += "; removed edges: light grey dotted"
    kept_count = sum(circuit.kept)
    label = f"{title}\n" if title else ""
    label += f"{kept_count} of {len(graph.edges)} edges kept\n{legend}"
    dot.attr(label=label, labelloc="t", fontsize="12")

    add_nodes(dot, graph, nodes)

    for edge in drawn:
        source, target = edge.endpoints
        dot.edge(node_id(source), node_id(target),
                 **_edge_attrs(circuit, edge, edge.name, styles, widths))
    return dot.source


def node_circuit_dot(circuit: Circuit, title: str | None = None,
                     score_width: bool = True) -> str:
    """DOT source of a node circuit (HISP): its heads and MLPs with their scores (border
    width by |score| with `score_width`), `input` and `logits`, and one grey arrow per pair of
    nodes joined by kept edges (a head's q/k/v inputs drawn as the head; every edge among the
    nodes is in the circuit, so drawing each would only hide the nodes)."""
    import graphviz

    from acdc.core.selection import kept_nodes, node_of, scored_nodes

    graph = circuit.graph
    units = kept_nodes(graph, circuit.kept)
    node_scores = circuit.node_scores or {}
    pairs: dict[tuple[str, str], int] = {}
    for edge in circuit.kept_edges():
        source, target = (node_of(name) for name in edge.endpoints)
        if source != target:
            pairs[(source, target)] = pairs.get((source, target), 0) + 1
    nodes = set(units) | {name for pair in pairs for name in pair}
    scored = {n: abs(s) for n in units if (s := node_scores.get(n)) is not None
              and math.isfinite(s)}
    top = max(scored.values(), default=0.0)
    extra: dict[str, dict[str, str]] = {}
    for name in units:
        score = node_scores.get(name)
        attrs = {"label": f"{name}\n{_fmt_score(score)}",
                 "tooltip": f"{name} (score {_fmt_score(score)})"}
        if score_width and top > 0 and name in scored:
            width = MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * math.sqrt(scored[name] / top)
            attrs["penwidth"] = f"{width:.3g}"
        extra[name] = attrs
    dot = graphviz.Digraph("circuit")
    dot.attr(rankdir="BT", newrank="true", nodesep="0.25", ranksep="0.45", fontname="Helvetica")
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", arrowsize="0.6", color="#888888")
    label = f"{title}\n" if title else ""
    label += (f"node circuit: {len(units)} of {len(scored_nodes(graph))} heads and MLPs, every "
              f"edge among them ({circuit.size()})\none arrow per pair of nodes joined by "
              f"edges")
    if score_width and top > 0:
        label += f"; border width: |score| (widest {top:.3g})"
    dot.attr(label=label, labelloc="t", fontsize="12")
    add_nodes(dot, graph, nodes, extra)
    for (source, target), count in pairs.items():
        dot.edge(node_id(source), node_id(target),
                 tooltip=f"{source} -> {target} ({count} edge{'s' if count > 1 else ''})")
    return dot.source


def column_id(name: str, group: int) -> str:
    """The DOT identifier of a node's copy in the column of position group `group`."""
    return f"{node_id(name)}__{group}"


def attention_links(circuit: Circuit) -> list[tuple[str, int, int]]:
    """(head, g, g2) for every head that keeps a key or value edge at g (at head granularity,
    any edge into it) and an outgoing edge at g2 != g: its queries at g2 read what it keeps
    at g. In the groups' order."""
    reads: dict[str, set[int]] = {}
    writes: dict[str, set[int]] = {}
    for edge in circuit.kept_edges():
        assert edge.group is not None  # a positional edge
        receiver = edge.receiver
        if receiver.kind == "head" and receiver.head is not None and (
                edge.qkv in ("k", "v") or (edge.kind == "residual" and receiver.qkv is None)):
            reads.setdefault(head_name(receiver.layer, receiver.head), set()).add(edge.group)
        if edge.sender is not None and edge.sender.kind == "head":
            writes.setdefault(edge.sender.name, set()).add(edge.group)
    return [(head, g, g2) for head in sorted(reads, key=_head_order)
            for g in sorted(reads[head]) for g2 in sorted(writes.get(head, ())) if g2 != g]


def _head_order(name: str) -> tuple[int, int]:
    layer, head = name[1:].split(".h")
    return int(layer), int(head)


def positional_dot(circuit: Circuit, all_edges: bool = False, title: str | None = None,
                   score_width: bool = True) -> str:
    """DOT source of a circuit at positions: a grid of position groups (columns) by layers
    (rows); see the module docstring.

    >>> from acdc.core.graph import GraphShape, build_graph
    >>> graph = build_graph(GraphShape(1, 1, False, positions="labels", groups=("S", "END")))
    >>> kept = tuple(e.name in ("input->a0.h0<k>@S", "a0.h0<k>->a0.h0@S", "a0.h0->logits@END")
    ...              for e in graph.edges)
    >>> source = positional_dot(Circuit(graph, kept, (None,) * len(kept)))
    >>> "input__0 -> a0_h0_k__0" in source, "a0_h0__1 -> logits__1" in source
    (True, True)
    >>> "a0_h0__0 -> a0_h0__1" in source  # the head at END reads its key at S
    True
    """
    import graphviz

    graph = circuit.graph
    groups = graph.groups
    drawn = [e for e in graph.edges if all_edges or circuit.kept[e.index]]
    at: dict[int, set[str]] = {}
    for edge in drawn:
        assert edge.group is not None  # a positional edge
        at.setdefault(edge.group, set()).update(edge.endpoints)
    columns = sorted(at)
    links = attention_links(circuit)
    widths = score_widths(circuit, drawn) if score_width else {}
    styles = QKV_STYLES_SCORED if widths else QKV_STYLES
    dot = _digraph()
    label = f"{title}\n" if title else ""
    label += (f"{sum(circuit.kept)} of {len(graph.edges)} edges kept at "
              f"{len(groups)} position groups")
    empty = [_dot_text(groups[g]) for g in range(len(groups)) if g not in at]
    if empty:
        label += f" (none at {names_line(empty)})"
    label += ("\ncolumns: position groups, each edge in its group's column; dashed grey arrow: "
              "a head's queries at its end\nread the head's keys and values at its start")
    if graph.granularity == "head":
        label += "\nedges into heads: grey; into MLPs and logits: black"
    else:
        label += (f"\nedges into q: blue solid, k: green dashed, v: red {styles['v']}; "
                  f"MLP/logits inputs: black")
    if widths:
        top = max(abs(circuit.scores[i]) for i in widths)  # type: ignore[arg-type]
        label += f"\nwidth: |score| (widest {top:.3g})"
    if all_edges:
        label += "; removed edges: light grey dotted"
    dot.attr(label=label, labelloc="t", fontsize="12")

    rows: dict[str, list[str]] = {}
    for g in columns:
        with dot.subgraph(name=f"cluster_{g}") as column:
            column.attr(label=graphviz.escape(groups[g]), labelloc="b", style="rounded",
                        color="#bbbbbb", fontsize="12")
            anchor = f"column__{g}"
            column.node(anchor, label="", shape="point", style="invis", width="0")
            rows.setdefault("input", []).append(anchor)
            for row, name, attrs in _grid_nodes(graph, at[g]):
                column.node(column_id(name, g), **attrs,
                            tooltip=f"{name} at {_dot_text(groups[g])}")
                rows.setdefault(row, []).append(column_id(name, g))
    order = ["input", *(f"{layer}_{part}" for layer in range(graph.n_layers)
                        for part in ("qkv", "heads", "mlp")), "logits"]
    for row in (row for row in order if row in rows):
        ids = rows[row]
        with dot.subgraph(name=f"row_{row}") as sub:
            sub.attr(rank={"input": "min", "logits": "max"}.get(row, "same"))
            for ident in ids:
                sub.node(ident)
    for left, right in zip(columns, columns[1:], strict=False):  # columns in the groups' order
        dot.edge(f"column__{left}", f"column__{right}", style="invis")

    for edge in drawn:
        assert edge.group is not None
        source, target = edge.endpoints
        dot.edge(column_id(source, edge.group), column_id(target, edge.group),
                 **_edge_attrs(circuit, edge, _dot_text(edge.name), styles, widths))
    for head, g, g2 in links:
        dot.edge(column_id(head, g), column_id(head, g2), style="dashed", color="#999999",
                 constraint="false", arrowhead="empty",
                 tooltip=f"{head}: queries at {_dot_text(groups[g2])} read keys/values at "
                         f"{_dot_text(groups[g])}")
    return dot.source


MAX_NAMES = 12  # names written out in one line (`names_line`)


def names_line(names: Sequence[str]) -> str:
    """Names for one line: all of them, or the first ones and the last around an ellipsis.

    >>> names_line([str(i) for i in range(40)])
    '0, 1, 2, 3, 4, 5, 6, 7, 8, 9, …, 39'
    """
    if len(names) <= MAX_NAMES:
        return ", ".join(names)
    return ", ".join([*names[:MAX_NAMES - 2], "…", names[-1]])


def _dot_text(text: str) -> str:
    """A name from a file inside DOT label text: backslashes doubled (DOT reads `\\N`, `\\l`;
    the `graphviz` package quotes the rest). A whole label that is a name goes through
    `graphviz.escape`, which also keeps a name in `<...>` from being read as HTML."""
    return text.replace("\\", "\\\\")


def _grid_nodes(graph: Graph, names: set[str]) -> list[tuple[str, str, dict[str, str]]]:
    """(row, node, attributes) of the named nodes of one column, the rows of `add_nodes`."""
    out: list[tuple[str, str, dict[str, str]]] = []
    if "input" in names:
        out.append(("input", "input", {"label": "input", "shape": "ellipse", "style": "filled",
                                       "fillcolor": "#dddddd"}))
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            for qkv in ("q", "k", "v") if graph.granularity == "qkv" else ():
                name = f"{head_name(layer, head)}<{qkv}>"
                if name in names:
                    out.append((f"{layer}_qkv", name, {
                        "label": qkv, "shape": "circle", "width": "0.25", "fixedsize": "true",
                        "fontsize": "9", "style": "filled", "fillcolor": QKV_COLORS[qkv],
                        "fontcolor": "white", "color": QKV_COLORS[qkv]}))
        for head in range(graph.n_heads):
            name = head_name(layer, head)
            if name in names:
                out.append((f"{layer}_heads", name, {"label": name, "shape": "box",
                                                     "style": "rounded,filled",
                                                     "fillcolor": "#cfe2f3"}))
        name = f"m{layer}"
        if graph.shape.has_mlp and name in names:
            out.append((f"{layer}_mlp", name, {"label": name, "shape": "box", "style": "filled",
                                               "fillcolor": "#fce5cd"}))
    if "logits" in names:
        out.append(("logits", "logits", {"label": "logits", "shape": "ellipse",
                                         "style": "filled", "fillcolor": "#dddddd"}))
    return out


def add_nodes(dot, graph: Graph, nodes: set[str],
              extra: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Add the named nodes to the `graphviz.Digraph` `dot`, laid out by layer: `input` at the
    bottom, per layer a rank of q/k/v inputs, a rank of heads and the MLP, `logits` at the top.
    Edges refer to the nodes by `node_id(name)`. `extra` adds or overrides attributes of some
    nodes (by name)."""

    def add_node(sub, name: str, **attrs: str) -> None:
        if name in nodes:
            attrs.update((extra or {}).get(name, {}))
            sub.node(node_id(name), label=attrs.pop("label", name),
                     tooltip=attrs.pop("tooltip", name), **attrs)

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
        return write_text_atomic(path, dot_source)
    binary = shutil.which("dot")
    if binary is None:
        dot_path = write_text_atomic(check_output(path.with_suffix(".dot"), ""), dot_source)
        warnings.warn(
            f"Graphviz `dot` not found, wrote {dot_path} instead of {path}; for {format.upper()} "
            f"install it with `{INSTALL_HINT}`",
            RenderWarning,
            stacklevel=2,
        )
        return dot_path
    with atomic_path(path) as temporary:
        try:
            done = run_dot(binary, [f"-T{format}", "-o", str(temporary)], dot_source)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise GraphError(f"{binary} failed to render {path} ({error})") from None
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            reason = message[0] if message else f"exit code {done.returncode}"
            raise GraphError(f"{binary} failed to render {path} ({reason})")
    return path


def circuit_svg(circuit: Circuit) -> str | None:
    """The circuit drawn as SVG text (Graphviz `dot`), or None without Graphviz: what a
    `Circuit` shows in Jupyter."""
    binary = shutil.which("dot")
    if binary is None:
        return None
    source = to_dot(circuit, title=circuit_title(circuit))
    done = run_dot(binary, ["-Tsvg"], source)
    return done.stdout.decode() if done.returncode == 0 else None


def run_dot(binary: str, arguments: list[str], source: str) -> subprocess.CompletedProcess:
    """Run Graphviz `dot` on `source`. Where its spline router fails (Graphviz 2.43 does, now
    and then, on edges between clusters: an error, or edges lost with a message), the drawing
    is made again with straight edges (`splines=line`), which always route."""
    done = subprocess.run([binary, *arguments], input=source.encode(), capture_output=True,
                          timeout=600)
    if done.returncode != 0 or ROUTING_FAILED.search(done.stderr):
        again = subprocess.run([binary, "-Gsplines=line", *arguments], input=source.encode(),
                               capture_output=True, timeout=600)
        if again.returncode == 0:
            return again
    return done


DRAWINGS["svg"] = circuit_svg
