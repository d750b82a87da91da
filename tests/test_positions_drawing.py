"""The drawing of a circuit at positions: a grid of position groups (columns) by layers (rows).

The DOT is read back as a structure (which cluster holds which node, which row subgraph,
every edge's two ends) and checked against the circuit: each kept edge drawn once, in the
column of its group, between two nodes of that column; the dashed links between a head's
copies are exactly the steps across groups that pruning takes (`Graph._positional_steps`, a
separate reading of what a key or value edge reaches); one group gives the blind drawing's
edges. The SVG Graphviz makes is checked by its coordinates: every node inside its column's
box, the columns left to right in the groups' order, a node's copies on one row.
"""

from __future__ import annotations

import random
import re
import shutil
import xml.etree.ElementTree as ET

import pytest
from cli_helpers import invoke

from acdc.core.circuit import Circuit, load_circuit
from acdc.core.graph import GraphShape, build_graph
from acdc.errors import GraphError
from acdc.exports.dot import (
    attention_links,
    circuit_svg,
    circuit_title,
    column_id,
    render,
    to_dot,
)

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` missing "
                                                   "(apt-get install -y graphviz)")
GROUPS = ("IO", "S1", "S1+1", "S2", "END", "other")
SHAPES = [GraphShape(2, 2, True, positions="labels", groups=GROUPS),
          GraphShape(3, 2, False, "head", positions="labels", groups=GROUPS),
          GraphShape(2, 3, True, parallel_attn_mlp=True, positions="all",
                     groups=("0", "1", "2", "3"))]
EDGE = re.compile(r'^\t(\w+) -> (\w+) \[(.*)\]$')
NODE = re.compile(r'^\t\t(\w+)(?: \[(.*)\])?$')


def random_circuit(shape: GraphShape, seed: int, p: float = 0.08) -> Circuit:
    graph = build_graph(shape)
    rng = random.Random(seed)
    kept = tuple(rng.random() < p for _ in graph.edges)
    scores = tuple(None if rng.random() < 0.1 else rng.uniform(-1, 1) for _ in graph.edges)
    return Circuit(graph, kept, scores, {"task": "t", "model": "m", "metric": "kl",
                                         "threshold": 0.1})


def parse(source: str) -> tuple[dict[str, str], dict[str, list[str]], list[tuple[str, str, str]]]:
    """(cluster of each node, nodes of each row subgraph, edges as (tail, head, attributes))."""
    cluster: dict[str, str] = {}
    rows: dict[str, list[str]] = {}
    edges = []
    inside = None
    for line in source.splitlines():
        if line.startswith("\tsubgraph "):
            inside = line.split()[1]
        elif line == "\t}":
            inside = None
        elif (found := EDGE.match(line)) is not None:
            edges.append(found.groups())
        elif inside is not None and (found := NODE.match(line)) is not None:
            name = found.group(1)
            if inside.startswith("cluster_"):
                cluster[name] = inside
            elif inside.startswith("row_"):
                rows.setdefault(inside, []).append(name)
    return cluster, rows, edges


def tooltip(attributes: str) -> str:
    found = re.search(r'tooltip="([^"]*)"', attributes)
    assert found is not None, attributes
    return found.group(1)


@pytest.mark.parametrize("shape", SHAPES, ids=["qkv", "head", "parallel-all"])
@pytest.mark.parametrize("all_edges", [False, True])
def test_every_edge_is_drawn_in_its_groups_column(shape, all_edges):
    for seed in range(3):
        circuit = random_circuit(shape, seed)
        graph = circuit.graph
        source = to_dot(circuit, all_edges=all_edges)
        cluster, rows, edges = parse(source)
        drawn = [e for e in graph.edges if all_edges or circuit.kept[e.index]]
        by_name = {e.name: e for e in graph.edges}
        plain = [(t, h, a) for t, h, a in edges if "style=invis" not in a
                 and 'color="#999999"' not in a]
        assert len(plain) == len(drawn)
        for tail, head, attributes in plain:
            name = tooltip(attributes).split(" (score")[0]
            edge = by_name[name]
            source_name, target_name = edge.endpoints
            assert (tail, head) == (column_id(source_name, edge.group),
                                    column_id(target_name, edge.group))
            assert cluster[tail] == cluster[head] == f"cluster_{edge.group}"
            assert ("dotted" in attributes and "#cccccc" in attributes) == \
                (not circuit.kept[edge.index])
        # a column per group holding a drawn edge, in the groups' order; the others named
        columns = sorted({e.group for e in drawn})
        assert sorted(set(cluster.values()), key=lambda c: int(c.split("_")[1])) == \
            [f"cluster_{g}" for g in columns]
        chain = [(t, h) for t, h, a in edges if "style=invis" in a]
        assert chain == [(f"column__{a}", f"column__{b}")
                         for a, b in zip(columns, columns[1:], strict=False)]
        empty = [group for g, group in enumerate(graph.groups) if g not in columns]
        assert (f"(none at {', '.join(empty)})" in source) == bool(empty)
        # a node's copies share one row: layers are rows
        row_of = {name: row for row, names in rows.items() for name in names}
        for name in graph.node_names():
            copies = {row_of[column_id(name, g)] for g in columns
                      if column_id(name, g) in cluster}
            assert len(copies) <= 1, (name, copies)


def plain_links(circuit: Circuit) -> set[tuple[str, int, int]]:
    """The head-to-head steps across groups that pruning takes, from the graph's own reading
    of a kept edge (`_positional_steps`), to a group where the head keeps an outgoing edge."""
    graph = circuit.graph
    writes = {(e.sender.name, e.group) for e in circuit.kept_edges()
              if e.sender is not None and e.sender.kind == "head"}
    links = set()
    for edge in circuit.kept_edges():
        (_, g), targets = graph._positional_steps(edge)
        for node, g2 in targets:
            if g2 != g and (node, g2) in writes:
                links.add((node, g, g2))
    return links


@pytest.mark.parametrize("shape", SHAPES, ids=["qkv", "head", "parallel-all"])
def test_links_across_columns_are_the_steps_attention_takes(shape):
    found_any = False
    for seed in range(6):
        circuit = random_circuit(shape, seed, p=0.15)
        links = attention_links(circuit)
        assert set(links) == plain_links(circuit) and len(set(links)) == len(links)
        found_any |= bool(links)
        _, _, edges = parse(to_dot(circuit))
        dashed = {(t, h) for t, h, a in edges if 'color="#999999"' in a}
        assert dashed == {(column_id(head, g), column_id(head, g2)) for head, g, g2 in links}
        for _, _, a in edges:
            if 'color="#999999"' in a:
                assert "constraint=false" in a and "style=dashed" in a
    assert found_any


def test_a_key_read_at_another_group_is_a_link():
    graph = build_graph(GraphShape(1, 2, False, positions="labels", groups=("S", "END")))
    names = {"input->a0.h1<k>@S", "a0.h1<k>->a0.h1@S", "input->a0.h1<q>@END",
             "a0.h1<q>->a0.h1@END", "a0.h1->logits@END"}
    kept = tuple(e.name in names for e in graph.edges)
    circuit = Circuit(graph, kept, (None,) * len(kept))
    assert attention_links(circuit) == [("a0.h1", 0, 1)]
    source = to_dot(circuit)
    assert 'a0_h1__0 -> a0_h1__1' in source
    assert "a0.h1: queries at END read keys/values at S" in source
    # a query kept at S changes nothing at END: no link from it
    names = {"input->a0.h1<q>@S", "a0.h1<q>->a0.h1@S", "a0.h1->logits@END"}
    kept = tuple(e.name in names for e in graph.edges)
    assert attention_links(Circuit(graph, kept, (None,) * len(kept))) == []


def test_one_group_draws_the_blind_circuits_edges():
    for shape in (GraphShape(2, 2, True), GraphShape(2, 3, False, "head")):
        blind = random_circuit(shape, 4, p=0.2)
        one = build_graph(GraphShape(shape.n_layers, shape.n_heads, shape.has_mlp,
                                     shape.granularity, positions="all", groups=("0",)))
        circuit = Circuit(one, blind.kept, blind.scores)
        _, _, positional = parse(to_dot(circuit))
        blind_edges = [(t, h) for t, h, _ in
                       (EDGE.match(line).groups() for line in to_dot(blind).splitlines()
                        if EDGE.match(line))]
        assert sorted((t.removesuffix("__0"), h.removesuffix("__0"))
                      for t, h, a in positional) == sorted(blind_edges)


def test_blind_drawings_have_no_grid_and_no_positions_in_the_title():
    circuit = random_circuit(GraphShape(2, 2, True), 1)
    source = to_dot(circuit)
    assert "cluster_" not in source and "__" not in source
    assert circuit_title(circuit) == "t on m, kl threshold 0.1"
    positional = random_circuit(SHAPES[0], 1)
    assert circuit_title(positional) == "t on m, kl threshold 0.1, positions labels"


def test_group_names_are_label_text():
    """A group named with DOT's escapes and quotes is shown as written."""
    groups = ('a"b', "c\\N", "d\\l", 'e\\"f', "<b>g</b>")
    graph = build_graph(GraphShape(1, 1, False, positions="labels", groups=groups))
    circuit = Circuit(graph, (True,) * len(graph.edges), (None,) * len(graph.edges))
    source = to_dot(circuit)
    assert 'label="c\\\\N"' in source and 'label="a\\"b"' in source
    if HAS_DOT:
        svg = circuit_svg(circuit)
        assert svg is not None
        labels = [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]
        assert set(groups) <= set(labels)
        tips = {a.get("{http://www.w3.org/1999/xlink}title")
                for a in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}a")}
        # (Graphviz 2.43 reads `\\N` in a tooltip as `\N`, the node's name: names with a
        # backslash are left out of this check)
        plain = [group for group in groups if "\\" not in group]
        assert {f"input at {group}" for group in plain} <= tips
        assert {f"input->logits@{group} (score untested)" for group in plain} <= tips


SVG = "{http://www.w3.org/2000/svg}"


def box(element: ET.Element) -> tuple[float, float, float, float]:
    """The bounding box of a cluster's outline (path or polygon)."""
    shape = element.find(f"{SVG}path")
    text = shape.get("d") if shape is not None else element.find(f"{SVG}polygon").get("points")
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]
    xs, ys = numbers[::2], numbers[1::2]
    return min(xs), max(xs), min(ys), max(ys)


@needs_dot
@pytest.mark.parametrize("shape", SHAPES, ids=["qkv", "head", "parallel-all"])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_svg_is_a_grid(shape, seed, tmp_path):
    circuit = random_circuit(shape, seed, p=0.1)
    path = render(to_dot(circuit), tmp_path / "grid.svg", "svg")
    root = ET.parse(path).getroot()
    boxes, centres = {}, {}
    for group in root.iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        if group.get("class") == "cluster":
            boxes[int(title.text.split("_")[1])] = box(group)
        elif group.get("class") == "node":
            text = next(group.iter(f"{SVG}text"))
            centres[title.text] = (float(text.get("x")), float(text.get("y")))
    columns = sorted(boxes)
    assert [boxes[g][0] for g in columns] == sorted(boxes[g][0] for g in columns)
    for (_, right, _, _), (left, _, _, _) in zip([boxes[g] for g in columns],
                                                 [boxes[g] for g in columns[1:]], strict=False):
        assert right < left  # columns side by side, in the groups' order
    for name, (x, y) in centres.items():
        g = int(name.rsplit("__", 1)[1])
        x0, x1, y0, y1 = boxes[g]
        assert x0 < x < x1 and y0 < y < y1, name
    for name in circuit.graph.node_names():
        ys = {round(centres[column_id(name, g)][1], 1) for g in columns
              if column_id(name, g) in centres}
        assert len(ys) <= 1, (name, ys)
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == circuit.n_edges_kept + len(attention_links(circuit))


@pytest.mark.hooked_transformer
@needs_dot
def test_discover_render_and_jupyter_draw_the_grid(tmp_path):
    out = tmp_path / "run"
    done = invoke("discover", "--task", "demo", "--positions", "labels", "--method", "eap",
                  "--metric", "logit_diff", "--top-n", "12", "--out", out, "-q")
    assert done.exit_code == 0, done.output
    svg = (out / "circuit.svg").read_text()
    circuit = load_circuit(out / "circuit.json")
    kept_groups = {circuit.graph.groups[e.group] for e in circuit.kept_edges()}
    assert svg.count('class="cluster"') == len(kept_groups)
    assert "positions labels" in svg
    drawn = invoke("render", out / "circuit.json", "--format", "dot", "--out",
                   tmp_path / "again.dot")
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "again.dot").read_text() == (out / "circuit.dot").read_text()
    jupyter = circuit._repr_svg_()
    assert jupyter is not None and jupyter.count('class="cluster"') == len(kept_groups)


def test_a_failed_spline_route_is_drawn_with_straight_edges(tmp_path, monkeypatch):
    """Graphviz 2.43 fails now and then to route an edge between clusters; the drawing is then
    made again with `splines=line` (a stand-in `dot` fails as Graphviz does, unless asked for
    straight edges)."""
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncase "$*" in *-Gsplines=line*) ;; *) echo "libpath/shortest.c:'
                    '324: triangulation failed" >&2; exit 1;; esac\nout=""\nwhile [ $# -gt 0 ];'
                    ' do if [ "$1" = -o ]; then out="$2"; fi; shift; done\ncat >/dev/null\n'
                    'if [ -n "$out" ]; then echo "<svg>straight</svg>" > "$out"; else echo '
                    '"<svg>straight</svg>"; fi\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    circuit = random_circuit(SHAPES[0], 0)
    path = render(to_dot(circuit), tmp_path / "grid.svg", "svg")
    assert path.read_text() == "<svg>straight</svg>\n"
    assert circuit_svg(circuit) == "<svg>straight</svg>\n"
    fake.write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 1\n")
    with pytest.raises(GraphError, match="syntax error in line 1"):
        render(to_dot(circuit), tmp_path / "bad.svg", "svg")
