"""The plain edge-list file: a circuit as the names of its edges, one a line.

The format is what a person writes by hand or copies from a paper: one edge name per line in
the graph's naming (`a0.h1->a2.h3<q>`, `a2.h3<q>->a2.h3`, `m0->logits`), `#` starts a comment
(a whole line or the rest of one), blank lines and surrounding spaces are ignored, and an edge
listed twice counts once. The file says nothing about the graph; it is read against one, and
every name must be an edge of that graph.

>>> from acdc.core.graph import GraphShape, build_graph
>>> graph = build_graph(GraphShape(1, 1, False))
>>> text = "# a tiny circuit\\ninput->a0.h0<v>\\na0.h0<v>->a0.h0  # direct\\n"
>>> kept = parse_edge_list(text, graph)
>>> [e.name for e in graph.edges if kept[e.index]]
['input->a0.h0<v>', 'a0.h0<v>->a0.h0']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from acdc.core.files import read_text
from acdc.core.graph import Graph, GraphShape
from acdc.errors import GraphError, did_you_mean

SHOWN_UNKNOWN = 3  # unknown names named in the error message
BYTES_PER_EDGE = 200  # an edge list's size limit per edge of the graph: names and comments


def parse_edge_list(text: str, graph: Graph, source: str = "edge list") -> tuple[bool, ...]:
    """The kept flags (in graph order) of the edges named in `text`.

    Raises `GraphError` naming the first few unknown names (with the closest edge name when
    one is close) and their line numbers.
    """
    index = graph.edge_index
    kept = [False] * len(graph.edges)
    unknown: list[tuple[int, str]] = []
    n_unknown = 0
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        position = index.get(name)
        if position is None:
            n_unknown += 1
            if len(unknown) < SHOWN_UNKNOWN:
                unknown.append((number, name[:200]))
        else:
            kept[position] = True
    if unknown:
        shown = "; ".join(f"line {number}: {name!r}{did_you_mean(name, index)}"
                          for number, name in unknown)
        more = f" and {n_unknown - SHOWN_UNKNOWN} more" if n_unknown > SHOWN_UNKNOWN else ""
        raise GraphError(f"{source}: {n_unknown} name(s) are not edges of the "
                         f"{describe_shape(graph)} graph: {shown}{more}")
    return tuple(kept)


def read_edge_list(path: str | Path, graph: Graph) -> tuple[bool, ...]:
    """`parse_edge_list` of a file."""
    path = Path(path)
    limit = max(1 << 20, BYTES_PER_EDGE * len(graph.edges))
    text = read_text(path, "an edge list has one edge name a line", limit)
    return parse_edge_list(text, graph, str(path))


def format_edge_list(names: Iterable[str], header: Sequence[str] = ()) -> str:
    """An edge-list file: `header` lines as `# ` comments, then one name a line."""
    lines = [f"# {line}".rstrip() for line in header]
    lines += list(names)
    return "\n".join(lines) + "\n"


def describe_shape(graph: Graph | GraphShape) -> str:
    """`12-layer 12-head (MLPs, q/k/v split)`: a graph shape in words, for messages (a
    positional one adds `at 6 position groups (labels)`)."""
    shape = graph.shape if isinstance(graph, Graph) else graph
    mlps = "MLPs" if shape.has_mlp else "attention-only"
    split = "q/k/v split" if shape.granularity == "qkv" else "one receiver per head"
    at = (f" at {shape.n_groups} position groups ({shape.positions})"
          if shape.positions != "none" else "")
    return f"{shape.n_layers}-layer {shape.n_heads}-head ({mlps}, {split}){at}"
