"""Node circuits (a set of heads and MLPs; the circuit is every edge among them) through every
command: `circuit discover --method hisp`, `evaluate` (node counts, a node ranking's curve),
`compare` (the ROC of a node or edge ranking), `export` (MIB node flags and scores, read back)
and `render`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from cli_helpers import invoke

from acdc.core.circuit import Circuit, load_circuit, write_circuit
from acdc.core.graph import GraphShape, build_graph
from acdc.core.mib import to_mib
from acdc.core.models import build_model, save_checkpoint
from acdc.core.selection import Selection, edges_among, kept_nodes, prune, select_nodes
from acdc.core.tasks.values import Task
from acdc.evaluation.faithfulness import CircuitEvaluator, edges_at
from acdc.evaluation.roc import ranking_roc
from acdc.evaluation.sources import load_reference

# The tiny random models come from TransformerLens 3.x's HookedTransformer (see conftest).
pytestmark = pytest.mark.hooked_transformer

HAS_DOT = shutil.which("dot") is not None
SHAPE = GraphShape(2, 2, True)
SCORES = {"a0.h0": 0.9, "a0.h1": 0.1, "m0": 0.5, "a1.h0": 0.05, "a1.h1": 0.7, "m1": 0.2}
REFERENCE = ["input->a0.h0<q>", "a0.h0<q>->a0.h0", "a0.h0->m0", "m0->a1.h1<v>",
             "a1.h1<v>->a1.h1", "a1.h1->logits"]


def node_circuit(top: int = 3) -> Circuit:
    graph = build_graph(SHAPE)
    nodes = select_nodes(graph, SCORES, Selection(top_n=top))
    kept = tuple(prune(graph, edges_among(graph, nodes)))
    settings = {"model": "models/tiny", "task": "tiny", "method": "hisp", "top_n": top,
                "metric": "logit_diff", "ablation": "corrupt", "granularity": "qkv"}
    results = {"n_nodes_selected": top, "metric_circuit": -0.5, "metric_full": -1.0,
               "runtime_s": 0.1, "partial": False}
    return Circuit(graph, kept, (None,) * len(kept), settings, results, dict(SCORES))


def test_a_node_circuit_is_every_edge_among_its_nodes():
    circuit = node_circuit()
    assert circuit.level == "node"
    assert kept_nodes(circuit.graph, circuit.kept) == {"a0.h0", "a1.h1", "m0"}
    kept = {e.name for e in circuit.kept_edges()}
    assert {"input->a0.h0<q>", "a0.h0<q>->a0.h0", "a0.h0->a1.h1<k>", "m0->logits",
            "input->logits"} <= kept
    assert not any("a0.h1" in name or "m1" in name for name in kept)


# --------------------------------------------------------------------------- compare


def test_compare_gives_the_roc_of_a_node_ranking(tmp_path):
    path = tmp_path / "hisp.json"
    write_circuit(node_circuit(), path)
    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(REFERENCE) + "\n")
    out = tmp_path / "out"
    result = invoke("compare", path, "--reference", ref, "--out", out, "--no-render")
    assert result.exit_code == 0, result.output
    graph = build_graph(SHAPE)
    reference = load_reference(str(ref), graph).kept
    expected = {level: ranking_roc(graph, reference, level, node_scores=SCORES).auc
                for level in ("edge", "node")}
    assert (f"A ROC AUC of its node ranking: edges {expected['edge']:.3f}, nodes "
            f"{expected['node']:.3f}") in result.stdout
    assert "(a node circuit: every edge among its nodes)" in result.stdout
    roc = json.loads((out / "roc.json").read_text())
    (entry,) = roc["rankings"]
    assert entry["ranked"] == "node" and entry["units"] == 6 and roc["sweeps"] == []
    assert entry["auc"] == pytest.approx(expected)
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["inputs"]["A"]["level"] == "node"
    assert comparison["scores"]["A"]["roc"] == "roc.json"
    # input, a0.h0, m0, a1.h1 and logits: the whole reference
    assert comparison["scores"]["A"]["node"]["tp"] == 5
    assert "node ranking" in (out / "roc.svg").read_text()


def test_compare_gives_the_roc_of_an_edge_ranking(tmp_path):
    graph = build_graph(SHAPE)
    scores = tuple(float((7 * e.index) % 11) - 5.0 for e in graph.edges)
    kept = tuple(s > 2 for s in scores)
    circuit = Circuit(graph, kept, scores, {"model": "m", "task": "t", "method": "exact",
                                            "metric": "kl", "ablation": "corrupt",
                                            "granularity": "qkv"},
                      {"metric_circuit": 0.1, "metric_full": 0.0, "runtime_s": 1.0,
                       "partial": False})
    (tmp_path / "run").mkdir()
    write_circuit(circuit, tmp_path / "run" / "circuit.json")
    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(REFERENCE) + "\n")
    result = invoke("compare", tmp_path / "run", "-r", ref, "--out", tmp_path / "out",
                    "--no-render")
    assert result.exit_code == 0, result.output
    reference = load_reference(str(ref), graph).kept
    roc = json.loads((tmp_path / "out" / "roc.json").read_text())
    (entry,) = roc["rankings"]
    assert entry["ranked"] == "edge"
    assert entry["auc"]["edge"] == pytest.approx(
        ranking_roc(graph, reference, "edge", edge_scores=scores).auc)
    assert entry["auc"]["node"] == pytest.approx(
        ranking_roc(graph, reference, "node", edge_scores=scores).auc)
    assert all(p["on_curve"] for p in entry["edge"]["points"])


# --------------------------------------------------------------------------- export, render


def test_mib_export_of_a_node_circuit_reads_back_as_one(tmp_path):
    circuit = node_circuit()
    data = to_mib(circuit, d_model=16)
    in_graph = {name for name, node in data["nodes"].items() if node["in_graph"]}
    assert in_graph == {"input", "a0.h0", "m0", "a1.h1", "logits"}
    assert {name: node["score"] for name, node in data["nodes"].items() if "score" in node} == \
        SCORES
    path = tmp_path / "circuit.mib.json"
    path.write_text(json.dumps(data))
    back = load_circuit(path)
    assert back.level == "node" and back.node_scores == SCORES
    assert back.kept == circuit.kept
    # an edge circuit's file carries no node scores and reads back as an edge circuit
    edge = Circuit(circuit.graph, circuit.kept, (0.0,) * len(circuit.kept))
    path.write_text(json.dumps(to_mib(edge, d_model=16)))
    assert load_circuit(path).level == "edge"


def test_cli_export_and_render_a_node_circuit(tmp_path):
    write_circuit(node_circuit(), tmp_path / "circuit.json")
    result = invoke("export", tmp_path / "circuit.json", "--format", "mib", "--d-model", "16")
    assert result.exit_code == 0, result.output
    assert "node circuit: 3 of 6 heads and MLPs" in result.stdout
    result = invoke("render", tmp_path / "circuit.json", "--format", "dot", "--out",
                    tmp_path / "c.dot")
    assert result.exit_code == 0, result.output
    source = (tmp_path / "c.dot").read_text()
    assert "node circuit: 3 of 6 heads and MLPs" in source
    assert 'label="a0.h0\n0.9"' in source and "a0_h1" not in source
    assert "<q>" not in source.replace("tooltip", "")  # no q/k/v inputs drawn
    arrows = [line for line in source.splitlines() if " -> " in line.split("[")[0]]
    assert len(arrows) == len({(a.split("<")[0], b.split("<")[0])
                                      for a, b in (e.endpoints
                                                   for e in node_circuit().kept_edges())
                                      if a.split("<")[0] != b.split("<")[0]})
    everything = invoke("render", tmp_path / "circuit.json", "--format", "dot", "--all-edges",
                        "--out", tmp_path / "all.dot")
    assert everything.exit_code == 0 and "a0_h0_q" in (tmp_path / "all.dot").read_text()


# --------------------------------------------------------------------------- evaluate

CONFIG = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32,
          "act_fn": "gelu", "normalization_type": "LN", "d_vocab": 20, "n_ctx": 12}
PROMPTS = [
    {"clean": [1, 2, 3, 4, 5, 6], "corrupt": [1, 2, 9, 4, 5, 7], "answer": [3], "wrong": [9]},
    {"clean": [3, 8, 2, 2, 9, 1], "corrupt": [3, 8, 5, 2, 9, 4], "answer": [2, 4], "wrong": [5]},
    {"clean": [7, 7, 1, 0, 4, 3, 2], "corrupt": [7, 7, 6, 0, 4, 11, 2], "answer": [1],
     "wrong": [6, 0]},
]


@pytest.fixture(scope="module")
def hisp_run(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hisp-run")
    save_checkpoint(build_model(CONFIG, seed=1), directory / "model", config=CONFIG)
    task = directory / "tiny.yaml"
    task.write_text(yaml.safe_dump({"name": "tiny", "metric": "logit_diff", "threshold": 0.01,
                                    "model": str(directory / "model"), "prompts": PROMPTS}))
    result = invoke("discover", "--task", task, "--method", "hisp", "--top-n", "3", "--out",
                    directory / "run", "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    return directory / "run"


def test_evaluate_a_node_circuit_with_its_curve(hisp_run):
    result = invoke("evaluate", hisp_run, "--curve", "--metric", "logit_diff")
    assert result.exit_code == 0, result.output
    assert "node circuit: 3 of 6 heads and MLPs" in result.stderr
    data = json.loads((hisp_run / "evaluation.json").read_text())
    assert data["level"] == "node" and data["n_nodes_kept"] == 3 and data["n_nodes_total"] == 6
    assert data["run_metric"]["agrees"] is True
    curve = data["curve"]
    assert curve["level"] == "node" and curve["n_edges_total"] == 6
    assert "node scores" in curve["ranking"]
    assert [p["n_edges"] for p in curve["points"]] == [edges_at(x, 6) for x in curve["fractions"]]


def test_a_node_curve_point_is_the_circuit_of_the_top_nodes(hisp_run):
    from acdc.core.loading import load_model
    from acdc.core.tasks.reading import read_task
    from acdc.core.tasks.resolving import resolve_task

    circuit = load_circuit(hisp_run / "circuit.json")
    loaded_model = load_model(str(hisp_run.parent / "model"))
    spec = read_task(str(hisp_run.parent / "tiny.yaml"))
    task: Task = resolve_task(spec, loaded_model.tokenizer, loaded_model.shape.d_vocab,
                              loaded_model.shape.n_ctx)
    evaluator = CircuitEvaluator(loaded_model, task, circuit.graph, "corrupt", ["logit_diff"])
    assert circuit.node_scores is not None
    curve = evaluator.curve(node_scores=circuit.node_scores, fractions=(0.5, 1.0))
    top = select_nodes(circuit.graph, circuit.node_scores, Selection(top_n=3))
    expected = evaluator.evaluate(prune(circuit.graph, edges_among(circuit.graph, top)))
    assert curve.points[0].faithfulness["logit_diff"] == pytest.approx(
        expected.metrics["logit_diff"].faithfulness)
    assert curve.points[1].faithfulness["logit_diff"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ranking of the edges or node scores"):
        evaluator.curve()
