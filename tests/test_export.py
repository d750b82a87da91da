"""circuit.json round trip, DOT drawing, rendering with and without Graphviz, run.yaml."""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings

import pytest
import torch
import yaml

from acdc import export
from acdc.methods.acdc.search import AcdcConfig, CircuitResult
from acdc.errors import GraphError
from acdc.core.graph import GraphShape, build_graph

HAS_DOT = shutil.which("dot") is not None


def drawn_edges(source: str) -> list[str]:
    return re.findall(r"^\t(\w+ -> \w+) \[", source, re.M)


def make_result(shape: GraphShape, kept_names: set[str], partial: bool = False) -> CircuitResult:
    """A CircuitResult by hand: `kept_names` kept, every other edge tested except the last."""
    graph = build_graph(shape)
    n = len(graph.edges)
    kept = torch.tensor([e.name in kept_names for e in graph.edges])
    scores = torch.linspace(-0.5, 0.5, n, dtype=torch.float64)
    scores[-1] = math.nan
    return CircuitResult(
        graph=graph,
        config=AcdcConfig(threshold=0.05, metric="kl", ablation="corrupt",
                          granularity=shape.granularity),
        kept=kept, scores=scores, decided=torch.ones(n, dtype=torch.bool),
        metric_full=0.0, metric_circuit=0.0123, metric_noise=1e-8, runtime_s=1.5, partial=partial,
    )


QKV_KEPT = {"input->a0.h1<q>", "a0.h1<q>->a0.h1", "a0.h1->a1.h0<k>", "a1.h0<k>->a1.h0",
            "a0.h0->a1.h0<v>", "a1.h0<v>->a1.h0", "a1.h0->logits", "m1->logits", "input->m0"}


@pytest.fixture
def qkv_result() -> CircuitResult:
    return make_result(GraphShape(2, 2, True), QKV_KEPT)


def test_to_json_has_every_key_and_every_edge_in_graph_order(qkv_result):
    data = export.to_json(qkv_result, model_name="models/tiny", task_name="tiny")
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
    assert export.circuit_nodes(graph, kept) == ["a0.h1", "logits"]
    assert export.circuit_nodes(graph, [False] * len(kept)) == []


def test_json_round_trip(tmp_path, qkv_result):
    data = export.to_json(qkv_result, model_name="m", task_name="t")
    path = export.write_json(data, tmp_path / "circuit.json")
    circuit = export.load_circuit(path)
    assert circuit.graph.edges == qkv_result.graph.edges
    assert circuit.kept == qkv_result.kept.tolist()
    expected = [None if math.isnan(s) else s for s in qkv_result.scores.tolist()]
    assert circuit.scores[:-1] == pytest.approx(expected[:-1])
    assert circuit.scores[-1] is None
    assert circuit.meta["threshold"] == 0.05 and circuit.meta["metric_circuit"] == 0.0123
    assert export.to_json(qkv_result, model_name="m", task_name="t") == json.loads(path.read_text())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="circuit/0"), "format"),
        (lambda d: d.pop("edges"), "missing key"),
        (lambda d: d["edges"].pop(), "edges"),
        (lambda d: d["edges"][3].update(name="a9.h9->logits"), "expected"),
        (lambda d: d["edges"][3].update(kept="yes"), "kept"),
        (lambda d: d.update(granularity="neuron"), "granularity"),
    ],
)
def test_bad_circuit_files_are_one_line_graph_errors(tmp_path, qkv_result, mutate, message):
    data = export.to_json(qkv_result, model_name="m", task_name="t")
    mutate(data)
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GraphError, match=message) as info:
        export.load_circuit(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_unreadable_circuit_files(tmp_path):
    with pytest.raises(GraphError, match="no such file"):
        export.load_circuit(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GraphError, match="not valid JSON"):
        export.load_circuit(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(GraphError, match="not a circuit file"):
        export.load_circuit(bad)


def test_dot_tells_q_k_v_apart_and_ranks_layers(qkv_result):
    circuit = export.from_json(export.to_json(qkv_result, "m", "t"))
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
    circuit = export.from_json(export.to_json(qkv_result, "m", "t"))
    source = export.to_dot(circuit, all_edges=True)
    assert len(drawn_edges(source)) == len(qkv_result.graph.edges)
    assert "dotted" in source


def test_dot_at_head_granularity_has_no_qkv_nodes():
    graph = build_graph(GraphShape(2, 2, False, "head"))
    result = make_result(GraphShape(2, 2, False, "head"), {"a0.h0->a1.h1", "a1.h1->logits"})
    source = export.to_dot(export.from_json(export.to_json(result, "m", "t")))
    assert "a0_h0 -> a1_h1" in source and "a1_h1 -> logits" in source
    assert "<q>" not in source and export.QKV_COLORS["q"] not in source
    assert len(graph.edges) == 2 * 1 + 2 * 3 + 5  # heads of layer 1 read input + 2 heads


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` missing (apt-get install -y graphviz)")
@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_render_with_dot(tmp_path, qkv_result, fmt, magic):
    source = export.to_dot(export.from_json(export.to_json(qkv_result, "m", "t")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = export.render(source, tmp_path / f"circuit.{fmt}", fmt)
    assert path == tmp_path / f"circuit.{fmt}"
    assert magic in path.read_bytes()[:400]


def test_render_without_dot_writes_dot_and_warns_once(tmp_path, qkv_result, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    source = export.to_dot(export.from_json(export.to_json(qkv_result, "m", "t")))
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


def test_run_yaml_holds_the_resolved_configuration(tmp_path):
    run = export.run_config(
        task="tiny", task_file="/tmp/tiny.yaml", model="models/tiny", threshold=0.05, metric="kl",
        ablation="zero", granularity="head", use_abs=True, reverse_head_order=True, seed=3,
        device="cpu", dtype="float32", n_prompts=4, command=["circuit", "discover", "--task", "x"],
    )
    path = export.write_run_yaml(run, tmp_path / "run.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["threshold"] == 0.05 and data["ablation"] == "zero" and data["seed"] == 3
    assert data["abs"] is True and data["reverse_head_order"] is True and data["n_prompts"] == 4
    assert data["command"] == "circuit discover --task x"
    assert data["repeat"].startswith("circuit discover --task /tmp/tiny.yaml --model models/tiny")
    assert "--abs" in data["repeat"] and "--reverse-head-order" in data["repeat"]
    assert set(data["versions"]) >= {"circuit", "torch", "transformer_lens", "python"}
    assert data["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
