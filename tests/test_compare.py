"""Comparing circuits, ROC against a reference, the canonical circuits, `circuit compare`.

ROC areas are checked against references computed another way (by hand, as the Mann-Whitney
statistic of a full ranking, as the integral of the pessimistic step function); TPR, FPR and
precision by hand on a 2-layer graph; the canonical circuits against an independent,
subtractive statement of the authors' construction. Circuits are made by hand and written
with `write_circuit`, so nothing here needs a model.
"""

from __future__ import annotations

import json
import random
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_helpers import invoke

from acdc.core.circuit import Circuit, write_circuit
from acdc.core.graph import GraphShape, build_graph
from acdc.errors import AcdcError, GraphError
from acdc.evaluation import canonical
from acdc.evaluation.canonical.__main__ import main as canonical_main
from acdc.evaluation.canonical.__main__ import stale_files
from acdc.evaluation.compare import compare_kept, confusion, kept_from_names, kept_nodes, node_names
from acdc.evaluation.edge_list import format_edge_list, parse_edge_list, read_edge_list
from acdc.evaluation.roc import RocPoint, pessimistic_auc, roc_front, sweep_roc
from acdc.evaluation.roc_plot import staircase
from acdc.evaluation.sources import load_input, load_reference, load_sweep

HAS_DOT = shutil.which("dot") is not None
TINY = GraphShape(2, 2, True)  # 58 edges; nodes input, a0.h0, a0.h1, m0, a1.h0, a1.h1, m1, logits
REFERENCE = ["input->a0.h0<q>", "a0.h0<q>->a0.h0", "a0.h0->m0", "m0->logits"]
FOUND = ["input->a0.h0<q>", "a0.h0<q>->a0.h0", "a0.h0->a1.h1<k>", "a1.h1<k>->a1.h1",
         "a1.h1->logits"]


def make_circuit(names, shape: GraphShape = TINY, threshold: float = 0.1,
                 partial: bool = False) -> Circuit:
    graph = build_graph(shape)
    kept = kept_from_names(graph, names)
    settings = {"model": "models/tiny", "task": "tiny", "method": "acdc", "threshold": threshold,
                "metric": "kl", "ablation": "corrupt", "granularity": shape.granularity}
    results = {"n_edges_decided": len(graph.edges), "metric_circuit": 0.01, "metric_full": 0.0,
               "runtime_s": 1.0, "partial": partial}
    return Circuit(graph, kept, (None,) * len(kept), settings, results)


def write_run(directory: Path, names, **kwargs) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_circuit(make_circuit(names, **kwargs), directory / "circuit.json")
    return directory



def error_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.exit_code == 1 and "Traceback" not in result.output
    return lines[0]


# --------------------------------------------------------------------------- ROC and AUC


def points(*pairs):
    return [RocPoint(x, y, float(i)) for i, (x, y) in enumerate(pairs)]


def test_staircase_area_by_hand():
    # (0.2, 0.4) is dominated by (0.1, 0.5); the area is 0.9*0.5 + 0.7*0.1 + 0.5*0.3 + 0*0.1.
    given = points((0.1, 0.5), (0.3, 0.6), (0.2, 0.4), (0.5, 0.9))
    front = roc_front(given)
    assert [(p.fpr, p.tpr) for p in front] == [(0, 0), (0.1, 0.5), (0.3, 0.6), (0.5, 0.9), (1, 1)]
    assert pessimistic_auc(given) == pytest.approx(0.67)


@pytest.mark.parametrize("pairs, auc", [
    ((), 0.0),                               # only the corners
    (((0.0, 1.0),), 1.0),                    # the reference exactly
    (((0.5, 0.5),), 0.25),                   # pessimistic: the trapezoid rule would say 0.5
    (((0.5, 0.5), (0.5, 0.5)), 0.25),        # a repeated point counts once
    (((0.0, 0.5), (0.0, 0.25)), 0.5),        # a point below another at the same FPR is dropped
    (((0.25, 1.0), (0.5, 1.0)), 0.75),       # (1, 1) and (0.5, 1) are dominated
    (((1.0, 0.0), (0.0, 0.0)), 0.0),         # every negative before any positive
])
def test_small_curves_by_hand(pairs, auc):
    assert pessimistic_auc(points(*pairs)) == pytest.approx(auc)


def step_integral(pts) -> float:
    """The area under x -> max TPR among the points (and (0, 0)) with FPR <= x, on [0, 1]."""
    xs = sorted({0.0, 1.0, *(p.fpr for p in pts)})
    area = 0.0
    for left, right in zip(xs, xs[1:], strict=False):
        height = max([0.0] + [p.tpr for p in pts if p.fpr <= left])
        area += (right - left) * height
    return area


def test_area_is_the_integral_of_the_pessimistic_step_function():
    rng = random.Random(0)
    for _ in range(200):
        pts = [RocPoint(rng.choice([rng.random(), round(rng.random(), 1)]),
                        rng.choice([rng.random(), round(rng.random(), 1)]), float(i))
               for i in range(rng.randint(0, 12))]
        assert pessimistic_auc(pts) == pytest.approx(step_integral(pts))
        front = roc_front(pts)
        assert all(a.fpr < b.fpr and a.tpr < b.tpr for a, b in zip(front, front[1:], strict=False))


def ranking_sweep(graph, scores, reference):
    """Circuits keeping the k best-scored edges, k = 0 .. all, with k as the threshold."""
    order = sorted(range(len(graph.edges)), key=lambda i: -scores[i])
    circuits = []
    for k in range(len(order) + 1):
        kept = [False] * len(order)
        for i in order[:k]:
            kept[i] = True
        circuits.append((float(k), kept))
    return sweep_roc(graph, circuits, reference)


def test_perfect_ranking_gives_1_and_reversed_gives_0():
    graph = build_graph(TINY)
    reference = kept_from_names(graph, REFERENCE)
    perfect = [1.0 + i if reference[i] else float(i) / 100 for i in range(len(graph.edges))]
    assert ranking_sweep(graph, perfect, reference).auc == pytest.approx(1.0)
    reversed_ = [-s for s in perfect]
    assert ranking_sweep(graph, reversed_, reference).auc == pytest.approx(0.0)


def test_full_ranking_area_is_the_mann_whitney_statistic():
    graph = build_graph(TINY)
    rng = random.Random(1)
    for _ in range(5):
        reference = [rng.random() < 0.3 for _ in graph.edges]
        scores = [rng.random() for _ in graph.edges]
        pos = [s for s, r in zip(scores, reference, strict=True) if r]
        neg = [s for s, r in zip(scores, reference, strict=True) if not r]
        wins = sum(p > n for p in pos for n in neg) / (len(pos) * len(neg))
        assert ranking_sweep(graph, scores, reference).auc == pytest.approx(wins)


def test_roc_points_and_errors():
    with pytest.raises(ValueError):
        RocPoint(1.5, 0.2)
    graph = build_graph(TINY)
    empty = [False] * len(graph.edges)
    with pytest.raises(GraphError, match="no edge"):
        sweep_roc(graph, [(0.1, empty)], empty)
    with pytest.raises(GraphError, match="every edge"):
        sweep_roc(graph, [(0.1, empty)], [True] * len(graph.edges))


def test_staircase_corners():
    front = roc_front(points((0.1, 0.5), (0.5, 0.9)))
    assert staircase(front) == [(0, 0), (0.1, 0), (0.1, 0.5), (0.5, 0.5), (0.5, 0.9), (1, 0.9),
                                (1, 1)]
    assert staircase(roc_front(points((0.0, 1.0)))) == [(0, 0), (0, 1), (1, 1)]


# --------------------------------------------------------------------------- TPR, FPR, nodes


def test_edge_and_node_rates_by_hand():
    graph = build_graph(TINY)
    found, reference = kept_from_names(graph, FOUND), kept_from_names(graph, REFERENCE)
    edge = confusion(graph, found, reference, "edge")
    assert (edge.tp, edge.fp, edge.fn, edge.tn) == (2, 3, 2, 51)
    assert (edge.tpr, edge.fpr, edge.precision) == (0.5, 3 / 54, 0.4)
    # nodes: found touches input, a0.h0, a1.h1, logits; the reference input, a0.h0, m0, logits
    node = confusion(graph, found, reference, "node")
    assert (node.tp, node.fp, node.fn, node.tn) == (3, 1, 1, 3)
    assert (node.tpr, node.fpr, node.precision) == (0.75, 0.25, 0.75)


def test_qkv_inputs_count_as_their_head():
    graph = build_graph(TINY)
    assert node_names(graph) == ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"]
    only_input = kept_from_names(graph, ["input->a1.h0<v>"])  # the head's own edge is not kept
    touched = kept_nodes(graph, only_input)
    assert [n for n, k in zip(node_names(graph), touched, strict=True) if k] == ["input", "a1.h0"]
    direct = kept_from_names(graph, ["a1.h0<k>->a1.h0"])
    assert sum(kept_nodes(graph, direct)) == 1


def test_two_circuits_compared():
    graph = build_graph(TINY)
    result = compare_kept(graph, kept_from_names(graph, FOUND), kept_from_names(graph, REFERENCE))
    assert result.edges.both == ("input->a0.h0<q>", "a0.h0<q>->a0.h0")
    assert set(result.edges.only_a) == set(FOUND[2:]) and set(result.edges.only_b) == set(
        REFERENCE[2:])
    assert result.edges.jaccard == pytest.approx(2 / 7)
    assert (result.nodes.only_a, result.nodes.only_b) == (("a1.h1",), ("m0",))
    assert result.nodes.jaccard == pytest.approx(3 / 5)
    empty = [False] * len(graph.edges)
    assert compare_kept(graph, empty, empty).edges.jaccard is None
    none = confusion(graph, empty, kept_from_names(graph, REFERENCE))
    assert none.precision is None and none.tpr == 0.0


# --------------------------------------------------------------------------- edge lists


def test_edge_list_parsing():
    graph = build_graph(TINY)
    text = ("# a reference\n\n  input->a0.h0<q>  \nm0->logits # the MLP's output\n"
            "m0->logits\n   # indented comment\n")
    kept = parse_edge_list(text, graph)
    assert [e.name for e in graph.edges if kept[e.index]] == ["input->a0.h0<q>", "m0->logits"]
    names = [e.name for e in graph.edges if kept[e.index]]
    assert parse_edge_list(format_edge_list(names, ["header", ""]), graph) == kept
    assert not any(parse_edge_list("# nothing\n\n", graph))


def test_edge_list_errors_name_the_first_unknown_edges(tmp_path):
    graph = build_graph(TINY)
    text = "m0->logits\na0.h0->logit\nfoo\na5.h0->logits\nbar\nbaz\n"
    with pytest.raises(GraphError) as error:
        parse_edge_list(text, graph, "ref.txt")
    message = str(error.value)
    assert message.startswith("ref.txt: 5 name(s) are not edges of the 2-layer 2-head (MLPs, q/k/v")
    assert "line 2: 'a0.h0->logit' (did you mean 'a0.h0->logits'?)" in message
    assert "line 3: 'foo'" in message and "and 2 more" in message and "baz" not in message
    with pytest.raises(AcdcError, match="no such file"):
        read_edge_list(tmp_path / "missing.txt", graph)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(AcdcError, match="not a text file"):
        read_edge_list(binary, graph)


# --------------------------------------------------------------------------- canonical circuits


def authors_ioi_subtractive(graph) -> set[str]:
    """The IOI construction stated the other way round: from the full graph drop every edge
    of a head outside the 26; of the 26 drop the embedding's edges into them, head -> head
    edges and head -> logits edges; then add the class pairs (senders of the input class:
    the embedding and every MLP; receivers of the output class: logits and every MLP)."""
    classes = canonical.IOI_CLASSES
    heads = {f"a{layer}.h{h}" for group in classes.values() for layer, h in group}

    def head(node: str) -> str | None:
        base = node.split("<")[0]
        return base if base.startswith("a") else None

    kept = set()
    for edge in graph.edges:
        source, target = edge.endpoints
        ends = [head(source), head(target)]
        if any(h is not None and h not in heads for h in ends):
            continue
        if edge.kind == "residual" and ends[1] is not None and (source == "input"
                                                                or ends[0] is not None):
            continue
        if ends[0] is not None and target == "logits":
            continue
        kept.add(edge.name)
    names = {e.name for e in graph.edges}
    mlps = [f"m{i}" for i in range(12)]
    pairs = [("INPUT", c, letters) for c, letters in canonical.IOI_FROM_INPUT.items()]
    pairs += list(canonical.IOI_HEAD_PAIRS)
    pairs += [(c, "OUTPUT", "") for c in canonical.IOI_MOVERS]
    for sender, receiver, letters in pairs:
        sources = (["input", *mlps] if sender == "INPUT"
                   else [f"a{layer}.h{h}" for layer, h in classes[sender]])
        targets = (["logits", *mlps] if receiver == "OUTPUT"
                   else [f"a{layer}.h{h}<{x}>" for layer, h in classes[receiver]
                         for x in letters])
        kept |= {f"{s}->{t}" for s in sources for t in targets} & names
    return kept


def test_canonical_files_have_the_authors_counts_and_are_up_to_date():
    graph = build_graph(canonical.GPT2_SMALL)
    assert len(graph.edges) == 32_923
    ioi = canonical.load_canonical("ioi-gpt2", graph)
    greater = canonical.load_canonical("greater-than-gpt2", graph)
    assert (sum(ioi), sum(greater)) == (1041, 262)
    assert stale_files() == []
    # 26 heads, 12 MLPs, input, logits; greater-than: 9 heads and all 12 MLPs (4-7 through the
    # MLP chain and the queries of the middle heads)
    assert (sum(kept_nodes(graph, ioi)), sum(kept_nodes(graph, greater))) == (40, 23)
    assert {e.name for e in graph.edges if ioi[e.index]} == authors_ioi_subtractive(graph)


@pytest.mark.parametrize("name, present, absent", [
    ("ioi-gpt2",
     ["a9.h9->logits", "a9.h9<q>->a9.h9", "a7.h3->a9.h9<q>", "input->a9.h9<k>",
      "a2.h2->a5.h5<k>", "a0.h1->a7.h3<v>", "m3->a9.h9<q>", "a5.h5->m7", "input->logits"],
     ["a7.h3->a9.h9<k>", "input->a9.h9<q>", "a2.h2->a5.h5<q>", "a1.h0->logits",
      "a5.h5->logits", "input->a1.h0<q>", "a0.h1->a5.h5<k>"]),
    ("greater-than-gpt2",
     ["a0.h1->m0", "m4->a5.h5<q>", "a9.h1->logits", "m7->m8", "m8->m9", "a0.h3->a5.h5<v>",
      "m2->a7.h10<k>", "a8.h11->m8", "a5.h5<k>->a5.h5"],
     ["a0.h3->m0", "m4->a5.h5<k>", "m3->m9", "input->logits", "a5.h5->a6.h1<q>",
      "m7->logits", "input->a5.h5<q>"]),
])
def test_canonical_edges(name, present, absent):
    graph = build_graph(canonical.GPT2_SMALL)
    kept = canonical.load_canonical(name, graph)
    for edge in present:
        assert kept[graph.edge(edge).index], edge
    for edge in absent:
        assert not kept[graph.edge(edge).index], edge


def test_canonical_header_shows_the_counting():
    text = canonical.canonical_file("ioi-gpt2").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("1041         edges in all (the authors' count: 1,041; equal)" in line
               for line in header)
    _, rules, _ = canonical.build_canonical("ioi-gpt2")
    assert any(not rule.in_summary for rule in rules)


def test_canonical_generator_writes_and_checks(tmp_path, capsys):
    assert canonical_main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "ioi-gpt2.txt").read_text() == canonical.canonical_text("ioi-gpt2")
    assert canonical_main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "ioi-gpt2.txt").write_text("m0->logits\n")
    assert canonical_main(["--check", "--out", str(tmp_path)]) == 1
    assert "ioi-gpt2.txt: differs" in capsys.readouterr().err


def test_canonical_errors():
    with pytest.raises(GraphError, match="not of the 2-layer"):
        canonical.load_canonical("ioi-gpt2", build_graph(TINY))
    with pytest.raises(GraphError, match="did you mean 'ioi-gpt2'"):
        canonical.canonical_spec("ioi-gtp2")


# --------------------------------------------------------------------------- inputs


def test_inputs_circuit_file_run_directory_and_sweep(tmp_path):
    run = write_run(tmp_path / "run", FOUND)
    assert load_input(run).kept == load_input(run / "circuit.json").kept
    sweep_dir = tmp_path / "sweep"
    write_run(sweep_dir / "tau-0.1", FOUND)
    write_run(sweep_dir / "tau-1e-2", FOUND + REFERENCE)
    sweep = load_input(sweep_dir)
    assert [r.threshold for r in sweep.runs] == [0.01, 0.1]
    with pytest.raises(GraphError, match="no such file"):
        load_input(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(GraphError, match="neither a run directory"):
        load_input(tmp_path / "plain")


def test_sweep_leaves_out_unfinished_runs_and_refuses_bad_ones(tmp_path):
    sweep_dir = tmp_path / "sweep"
    write_run(sweep_dir / "tau-0.1", FOUND)
    write_run(sweep_dir / "tau-0.2", FOUND, partial=True)
    (sweep_dir / "tau-0.3").mkdir()
    with pytest.warns(UserWarning, match=r"tau-0.2 \(partial run\), tau-0.3 \(no circuit.json\)"):
        assert [r.threshold for r in load_sweep(sweep_dir).runs] == [0.1]
    write_run(sweep_dir / "tau-1e-1", FOUND)
    with pytest.raises(GraphError, match="both threshold 0.1"):
        load_sweep(sweep_dir)
    other = tmp_path / "mixed"
    write_run(other / "tau-0.1", FOUND)
    write_run(other / "tau-0.2", ["a0.h0->logits"], shape=GraphShape(1, 2, False))
    with pytest.raises(GraphError, match="only circuits of one graph"):
        load_sweep(other)
    empty = tmp_path / "empty"
    (empty / "tau-0.1").mkdir(parents=True)
    with pytest.raises(GraphError, match=r"empty sweep.*\(tau-0.1 \(no circuit.json\)\)"):
        load_sweep(empty)


def test_references(tmp_path):
    graph = build_graph(TINY)
    edges = tmp_path / "ref.txt"
    edges.write_text("\n".join(REFERENCE) + "\n")
    run = write_run(tmp_path / "run", REFERENCE)
    want = kept_from_names(graph, REFERENCE)
    for spec in (edges, run, run / "circuit.json"):
        assert load_reference(str(spec), graph).kept == want
    gpt2 = build_graph(canonical.GPT2_SMALL)
    assert sum(load_reference("ioi-gpt2", gpt2).kept) == 1041
    with pytest.raises(GraphError, match="did you mean 'greater-than-gpt2'"):
        load_reference("greater-than-gtp2", graph)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(GraphError, match="has no edges"):
        load_reference(str(tmp_path / "empty.txt"), graph)
    other = write_run(tmp_path / "other", ["a0.h0->logits"], shape=GraphShape(1, 2, False))
    with pytest.raises(GraphError, match="only circuits of one graph"):
        load_reference(str(other), graph)


# --------------------------------------------------------------------------- circuit compare


def test_cli_two_circuits(tmp_path):
    a, b = write_run(tmp_path / "a", FOUND), write_run(tmp_path / "b", REFERENCE)
    out = tmp_path / "out"
    result = invoke("compare", a, b, "--out", out)
    assert result.exit_code == 0, result.output
    assert "edges: 2 in both, 3 only in A, 2 only in B; Jaccard 0.286" in result.stdout
    assert "nodes: 3 in both, 1 only in A, 1 only in B; Jaccard 0.600" in result.stdout
    data = json.loads((out / "comparison.json").read_text())
    assert data["format"] == "circuit-comparison/1"
    assert data["edges"]["names"]["only_b"] == ["a0.h0->m0", "m0->logits"]
    assert data["inputs"]["A"]["edges"] == 5 and data["inputs"]["B"]["nodes"] == 4
    assert data["totals"] == {"edges": 58, "nodes": 8}
    source = (out / "union.dot").read_text()
    assert source.count('color="#e66100"') == 3 and source.count('color="#5d3a9b"') == 2
    assert source.count("color=black") == 2 and "only in" in source
    assert (out / "union.svg").is_file() == HAS_DOT


def test_cli_circuits_against_a_reference(tmp_path):
    a, b = write_run(tmp_path / "a", FOUND), write_run(tmp_path / "b", REFERENCE)
    ref = tmp_path / "ref.txt"
    ref.write_text("# hand-made\n" + "\n".join(REFERENCE) + "\n")
    out = tmp_path / "out"
    result = invoke("compare", a, b, "--reference", ref, "--out", out, "--no-render")
    assert result.exit_code == 0, result.output
    assert f"reference {ref}: 4 of 58 edges, 4 of 8 nodes" in result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()
            if line[:2] in ("A ", "B ") and "edges," not in line}
    assert rows["A"] == ["0.5", "0.05556", "0.4", "0.75", "0.25", "0.75"]
    assert rows["B"] == ["1", "0", "1", "1", "0", "1"]
    scores = json.loads((out / "comparison.json").read_text())["scores"]
    assert scores["A"]["edge"] == {"tp": 2, "fp": 3, "fn": 2, "tn": 51, "tpr": 0.5,
                                   "fpr": 3 / 54, "precision": 0.4}
    assert not (out / "union.svg").exists() and (out / "union.dot").is_file()
    # one circuit and its reference: the union drawing is circuit vs reference
    result = invoke("compare", a, "-r", ref, "--out", tmp_path / "one", "--no-render")
    assert result.exit_code == 0, result.output
    assert f"only in reference {ref}" in (tmp_path / "one" / "union.dot").read_text()


def test_cli_sweep_roc(tmp_path):
    # The reference is REFERENCE; the sweep's circuits give the points (FPR, TPR):
    # t=1: REFERENCE[:2] -> (0, 0.5); t=0.5: REFERENCE + 6 negatives -> (6/54, 1);
    # t=0.1: FOUND -> (3/54, 0.5), dominated by t=1's point.
    graph = build_graph(TINY)
    negatives = [e.name for e in graph.edges if e.name not in REFERENCE][:6]
    sweep = tmp_path / "sweep"
    write_run(sweep / "tau-1", REFERENCE[:2], threshold=1.0)
    write_run(sweep / "tau-0.5", REFERENCE + negatives, threshold=0.5)
    write_run(sweep / "tau-0.1", FOUND, threshold=0.1)
    (sweep / "sweep.json").write_text("{}")
    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(REFERENCE) + "\n")
    out = tmp_path / "out"
    result = invoke("compare", sweep, "--reference", ref, "--out", out)
    assert result.exit_code == 0, result.output
    auc = 1 * 0.5 + (1 - 6 / 54) * 0.5
    assert f"A ROC AUC: edges {auc:.3f}" in result.stdout
    roc = json.loads((out / "roc.json").read_text())
    assert roc["format"] == "circuit-roc/1" and roc["reference"]["edges"] == 4
    (entry,) = roc["sweeps"]
    assert entry["auc"]["edge"] == pytest.approx(auc)
    assert [p["threshold"] for p in entry["edge"]["curve"]] == [1.0, 0.5]  # (1, 1) dominated
    assert [p["on_curve"] for p in entry["edge"]["points"]] == [False, True, True]
    assert [r["edges"] for r in entry["runs"]] == [5, 10, 2]
    # nodes: t=1 touches input, a0.h0 -> (0, 0.5); t=0.5 -> TPR 1; FOUND: a1.h1 is a negative
    assert entry["node"]["curve"][0] == {"threshold": 1.0, "fpr": 0.0, "tpr": 0.5}
    svg = ET.parse(out / "roc.svg").getroot()
    assert svg.tag.endswith("svg")
    assert len(svg.findall(".//{http://www.w3.org/2000/svg}polyline")) == 2
    assert f"AUC {auc:.3f}" in (out / "roc.svg").read_text()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "roc.png").exists()
    else:
        assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_are_one_line(tmp_path):
    a = write_run(tmp_path / "a", FOUND)
    other = write_run(tmp_path / "other", ["a0.h0->logits"], shape=GraphShape(1, 2, False))
    line = error_line(invoke("compare", a, other, "--out", tmp_path / "o1"))
    assert "1-layer 2-head" in line and "only circuits of one graph" in line
    bad = tmp_path / "bad.txt"
    bad.write_text("m0->logits\nm0->logit\na0.h0->a0.h1<q>\n")
    line = error_line(invoke("compare", a, "--reference", bad, "--out", tmp_path / "o2"))
    assert "'m0->logit' (did you mean 'm0->logits'?)" in line and "a0.h0->a0.h1<q>" in line
    empty = tmp_path / "sweep"
    empty.mkdir()
    (empty / "sweep.json").write_text("{}")
    line = error_line(invoke("compare", empty, "-r", bad, "--out", tmp_path / "o3"))
    assert "empty sweep" in line
    sweep = tmp_path / "sweep2"
    write_run(sweep / "tau-0.1", FOUND)
    assert "add --reference" in error_line(invoke("compare", sweep))
    assert "nothing to compare" in error_line(invoke("compare", a))
    line = error_line(invoke("compare", a, "--reference", "ioi-gpt2"))
    assert "GPT-2 small" in line
    assert "no such file" in error_line(invoke("compare", a, tmp_path / "nope"))
    assert not any((tmp_path / d).exists() for d in ("o1", "o2", "o3"))
