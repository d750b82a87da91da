"""Drawing two edge sets of one graph together: the union, shared edges black, the rest coloured.

`union_to_dot` draws every edge kept by A or by B with the layout of `acdc.exports.dot` (layers
as ranks, q/k/v inputs as small circles): edges in both are black, edges only in A orange and
solid, edges only in B purple and dashed (colour-blind safe, and told apart by line style in
grey print too). A legend with the three counts sits in the title; every edge's tooltip (SVG)
says its name and where it is. `circuit compare` draws A against B, or a circuit against its
reference (A = the circuit, B = the reference: orange edges are false positives, purple ones
false negatives). Render the DOT with `acdc.exports.dot.render`.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from acdc.core.graph import Graph
from acdc.exports.dot import add_nodes, node_id

BOTH_COLOR = "black"
ONLY_A_COLOR = "#e66100"
ONLY_B_COLOR = "#5d3a9b"
ONLY_A_STYLE = "solid"
ONLY_B_STYLE = "dashed"


def union_to_dot(graph: Graph, a: Sequence[bool], b: Sequence[bool], a_label: str = "A",
                 b_label: str = "B", title: str | None = None) -> str:
    """DOT source of the union of two edge sets of `graph` (kept flags in graph order).

    >>> from acdc.core.graph import GraphShape, build_graph
    >>> graph = build_graph(GraphShape(1, 1, False))
    >>> a = [e.name == "a0.h0->logits" for e in graph.edges]
    >>> 'color="#e66100"' in union_to_dot(graph, a, [False] * len(a))
    True
    """
    import graphviz

    drawn = [e for e in graph.edges if a[e.index] or b[e.index]]
    nodes: set[str] = set()
    for edge in drawn:
        nodes.update(edge.endpoints)
    n_both = sum(1 for e in drawn if a[e.index] and b[e.index])
    n_a = sum(1 for e in drawn if a[e.index] and not b[e.index])
    n_b = len(drawn) - n_both - n_a

    dot = graphviz.Digraph("union")
    dot.attr(rankdir="BT", newrank="true", nodesep="0.25", ranksep="0.45", fontname="Helvetica")
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", arrowsize="0.6")
    rows = [f"<tr><td colspan='2'><b>{escape(title)}</b></td></tr>"] if title else []
    rows += [
        _legend_row(BOTH_COLOR, "━━", f"in both: {_edges(n_both)}"),
        _legend_row(ONLY_A_COLOR, "━━", f"only in {a_label}: {_edges(n_a)}"),
        _legend_row(ONLY_B_COLOR, "╍╍", f"only in {b_label}: {_edges(n_b)}"),
        f"<tr><td colspan='2'>{len(drawn)} of {len(graph.edges)} edges in the union</td></tr>",
    ]
    dot.attr(label=f"<<table border='0' cellspacing='0' cellpadding='1'>{''.join(rows)}</table>>",
             labelloc="t", fontsize="12")
    add_nodes(dot, graph, nodes)
    for edge in drawn:
        source, target = edge.endpoints
        if a[edge.index] and b[edge.index]:
            color, style, where = BOTH_COLOR, "solid", "in both"
        elif a[edge.index]:
            color, style, where = ONLY_A_COLOR, ONLY_A_STYLE, f"only in {a_label}"
        else:
            color, style, where = ONLY_B_COLOR, ONLY_B_STYLE, f"only in {b_label}"
        dot.edge(node_id(source), node_id(target), color=color, style=style,
                 tooltip=f"{edge.name} ({where})")
    return dot.source


def _legend_row(color: str, line: str, text: str) -> str:
    return (f"<tr><td align='right'><font color='{color}'><b>{line}</b></font></td>"
            f"<td align='left'>{escape(text)}</td></tr>")


def _edges(n: int) -> str:
    return f"{n} edge" if n == 1 else f"{n} edges"
