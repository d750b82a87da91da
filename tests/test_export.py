"""circuit.json round trip, DOT drawing, rendering with and without Graphviz."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import pytest

from acdc.core.circuit import Circuit, circuit_nodes, load_circuit, write_circuit
from acdc.core.graph import GraphShape, build_graph
from acdc.errors import AcdcError, GraphError
from acdc.exports import dot as export

HAS_DOT = shutil.which("dot") is not None


def drawn_edges(source: str) -> list[str]:
    return re.findall(r"^\t(\w+ -> \w+) \[", source, re.M)


def make_result(shape: GraphShape, kept_names: set[str], partial: bool = False) -> Circuit:
    """A circuit by hand: `kept_names` kept, every other edge tested except the last."""
    graph = build_graph(shape)
    n = len(graph.edges)
    kept = tuple(e.name in kept_names for e in graph.edges)
    scores = tuple(-0.5 + i / (n - 1) for i in range(n - 1)) + (None,)
    settings = {"model": "models/tiny", "task": "tiny", "method": "acdc", "threshold": 0.05,
                "abs": False, "reverse_head_order": False, "metric": "kl",
                "ablation": "corrupt", "granularity": shape.granularity}
    results = {"n_edges_decided": n, "metric_circuit": 0.0123, "metric_full": 0.0,
               "metric_noise": 1e-8, "runtime_s": 1.5, "partial": partial}
    return Circuit(graph, kept, scores, settings, results)


QKV_KEPT = {"input->a0.h1<q>", "a0.h1<q>->a0.h1", "a0.h1->a1.h0<k>", "a1.h0<k>->a1.h0",
            "a0.h0->a1.h0<v>", "a1.h0<v>->a1.h0", "a1.h0->logits", "m1->logits", "input->m0"}


@pytest.fixture
def qkv_result() -> Circuit:
    return make_result(GraphShape(2, 2, True), QKV_KEPT)


def test_to_json_has_every_key_and_every_edge_in_graph_order(qkv_result):
    data = qkv_result.to_json()
    for key in ("format", "model", "task", "method", "threshold", "metric", "ablation",
                "granularity", "n_edges_total", "n_edges_kept", "nodes", "edges",
                "metric_circuit", "metric_full", "runtime_s", "partial", "n_layers", "n_heads",
                "has_mlp"):
        assert key in data, key
    assert data["format"] == "circuit/1" and data["method"] == "acdc"
    assert data["n_edges_total"] == len(qkv_result.graph.edges) == len(data["edges"])
    assert [e["name"] for e in data["edges"]] == [e.name for e in qkv_result.graph.edges]
    assert data["n_edges_kept"] == len(QKV_KEPT) == sum(e["kept"] for e in data["edges"])
    assert data["edges"][-1]["score"] is None  # never tested
    assert isinstance(data["edges"][0]["score"], float)
    assert data["nodes"] == ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "m1", "a0.h1<q>",
                             "a1.h0<k>", "a1.h0<v>", "logits"]
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN anywhere


def test_nodes_are_those_touching_kept_edges():
    graph = build_graph(GraphShape(2, 2, False))
    kept = [e.name in {"a0.h1->logits"} for e in graph.edges]
    assert circuit_nodes(graph, kept) == ["a0.h1", "logits"]
    assert circuit_nodes(graph, [False] * len(kept)) == []


def test_json_round_trip(tmp_path, qkv_result):
    path = write_circuit(qkv_result, tmp_path / "circuit.json")
    circuit = load_circuit(path)
    assert circuit == qkv_result
    assert circuit.scores[-1] is None
    assert circuit.settings["threshold"] == 0.05 and circuit.metric_circuit == 0.0123
    assert qkv_result.to_json() == json.loads(path.read_text())
    assert list(json.loads(path.read_text()))[:4] == ["format", "model", "task", "method"]


def test_circuit_1_files_written_before_stay_readable(tmp_path):
    """A circuit.json in the layout the first release wrote (keys in its order)."""
    graph = build_graph(GraphShape(1, 1, False))
    data = {"format": "circuit/1", "model": "m", "task": "t", "method": "acdc",
            "threshold": 0.1, "metric": "kl", "ablation": "corrupt", "granularity": "qkv",
            "abs": False, "reverse_head_order": False, "n_layers": 1, "n_heads": 1,
            "has_mlp": False, "n_edges_total": len(graph.edges), "n_edges_kept": 1,
            "n_edges_decided": len(graph.edges), "nodes": ["a0.h0", "logits"],
            "edges": [{"name": e.name, "kept": e.name == "a0.h0->logits", "score": 0.5}
                      for e in graph.edges],
            "metric_circuit": 0.2, "metric_full": 0.0, "metric_noise": 1e-8, "runtime_s": 0.1,
            "partial": False}
    (tmp_path / "old.json").write_text(json.dumps(data))
    circuit = load_circuit(tmp_path / "old.json")
    assert [e.name for e in circuit.kept_edges()] == ["a0.h0->logits"]
    assert circuit.settings["threshold"] == 0.1 and circuit.results["metric_noise"] == 1e-8
    assert circuit.to_json() == data


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="circuit/0"), "format"),
        (lambda d: d.pop("edges"), "missing key"),
        (lambda d: d["edges"].pop(), "edges"),
        (lambda d: d["edges"][3].update(name="a9.h9->logits"), "expected"),
        (lambda d: d["edges"][3].update(kept="yes"), "kept"),
        (lambda d: d.update(granularity="neuron"), "granularity"),
        (lambda d: d.update(n_layers=2.0), "n_layers is 2.0; it must be a whole number >= 1"),
        (lambda d: d.update(n_heads=float("inf")), "n_heads is inf; it must be a whole number"),
        (lambda d: d.update(has_mlp="no"), "has_mlp is 'no'; it must be true or false"),
        (lambda d: d.update(metric_circuit="low"), "metric_circuit is 'low'; it must be a number"),
        (lambda d: d.update(partial=0), "partial is 0; it must be true or false"),
        # an edit to a size nobody can run: refused from the counts, no graph is built
        (lambda d: d.update(n_layers=10**6, n_heads=10**4), "graph has 150,"),
        (lambda d: d.update(n_layers=2**70), "-layer 2-head qkv graph has"),
    ],
)
def test_bad_circuit_files_are_one_line_graph_errors(tmp_path, qkv_result, mutate, message):
    data = qkv_result.to_json()
    mutate(data)
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GraphError, match=message) as info:
        load_circuit(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_unreadable_circuit_files(tmp_path):
    with pytest.raises(AcdcError, match="no such file"):
        load_circuit(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AcdcError, match="not valid JSON"):
        load_circuit(bad)
    bad.write_text("[1, 2]")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AcdcError, match="nested too deeply"):
        load_circuit(tmp_path / "deep.json")
    (tmp_path / "long.json").write_text('{"n_layers": ' + "9" * 5000 + "}")
    with pytest.raises(AcdcError, match="a whole number of more than 4300 digits"):
        load_circuit(tmp_path / "long.json")
    with pytest.raises(GraphError, match="not a circuit file"):
        load_circuit(bad)


def test_dot_tells_q_k_v_apart_and_ranks_layers(qkv_result):
    circuit = qkv_result
    source = export.to_dot(circuit, title="t on m")
    for qkv in "qkv":
        assert f'color="{export.QKV_COLORS[qkv]}"' in source
        assert f"label={qkv} " in source  # the q/k/v input node of a head
    assert "rankdir=BT" in source and "rank=same" in source
    assert "rank=min" in source and "rank=max" in source
    # direct edge: q input node feeds the head
    assert "a0_h1_q -> a0_h1" in source
    assert "a0_h1 -> a1_h0_k" in source
    # only kept edges by default
    assert len(drawn_edges(source)) == len(QKV_KEPT)
    assert "a0_h0 -> logits" not in source


def test_dot_all_edges_draws_removed_edges_grey(qkv_result):
    circuit = qkv_result
    source = export.to_dot(circuit, all_edges=True)
    assert len(drawn_edges(source)) == len(qkv_result.graph.edges)
    assert "dotted" in source


def test_dot_at_head_granularity_has_no_qkv_nodes():
    graph = build_graph(GraphShape(2, 2, False, "head"))
    result = make_result(GraphShape(2, 2, False, "head"), {"a0.h0->a1.h1", "a1.h1->logits"})
    source = export.to_dot(result)
    assert "a0_h0 -> a1_h1" in source and "a1_h1 -> logits" in source
    assert "<q>" not in source and export.QKV_COLORS["q"] not in source
    assert len(graph.edges) == 2 * 1 + 2 * 3 + 5  # heads of layer 1 read input + 2 heads


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` missing (apt-get install -y graphviz)")
@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_render_with_dot(tmp_path, qkv_result, fmt, magic):
    source = export.to_dot(qkv_result)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = export.render(source, tmp_path / f"circuit.{fmt}", fmt)
    assert path == tmp_path / f"circuit.{fmt}"
    assert magic in path.read_bytes()[:400]


def test_render_without_dot_writes_dot_and_warns_once(tmp_path, qkv_result, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    source = export.to_dot(qkv_result)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export.render(source, tmp_path / "circuit.svg", "svg")
    assert path == tmp_path / "circuit.dot" and path.read_text() == source
    assert not (tmp_path / "circuit.svg").exists()
    assert len(caught) == 1 and issubclass(caught[0].category, export.RenderWarning)
    assert "apt-get install -y graphviz" in str(caught[0].message)


def test_render_dot_format_needs_no_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = export.render("digraph { a -> b }", tmp_path / "x.dot", "dot")
    assert path.read_text() == "digraph { a -> b }"
    with pytest.raises(GraphError, match="unknown format"):
        export.render("digraph {}", tmp_path / "x.pdf", "pdf")
