"""Ways out for a circuit: MIB circuit files both ways, GraphML, CSV, edge widths, titles.

The MIB checks run on a GPT-2-shaped graph (32,491 residual edges) built from its shape alone;
the command-line checks on a tiny checkpoint and a token-id task written into tmp_path.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
from pathlib import Path

import networkx as nx
import pytest
import yaml
from cli_helpers import error_line, invoke

from acdc.core.circuit import Circuit, from_mib, load_circuit
from acdc.core.graph import GraphShape, build_graph
from acdc.core.mib import mib_edge_count, mib_edge_counts, to_mib
from acdc.core.models import build_model, save_checkpoint
from acdc.errors import GraphError
from acdc.exports.dot import MAX_WIDTH, MIN_WIDTH, circuit_title, model_label, to_dot
from acdc.exports.formats import CSV_COLUMNS, circuit_to_networkx, to_csv, to_graphml

HAS_DOT = shutil.which("dot") is not None
TINY_CONFIG = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32,
               "act_fn": "gelu", "normalization_type": "LN", "d_vocab": 20, "n_ctx": 12}
PROMPTS = [
    {"clean": [1, 2, 3, 4, 5, 6], "corrupt": [1, 2, 9, 4, 5, 7]},
    {"clean": [3, 8, 2, 2, 9, 1], "corrupt": [3, 8, 5, 2, 9, 4]},
    {"clean": [7, 7, 1, 0, 4, 3, 2], "corrupt": [7, 7, 6, 0, 4, 11, 2]},
]




def random_circuit(shape: GraphShape, seed: int = 0, p: float = 0.05,
                   settings: dict | None = None) -> Circuit:
    """Each edge kept with probability p; scores in [-1, 1], a few of them None."""
    graph = build_graph(shape)
    rng = random.Random(seed)
    kept = tuple(rng.random() < p for _ in graph.edges)
    scores = tuple(None if rng.random() < 0.1 else rng.uniform(-1, 1) for _ in graph.edges)
    return Circuit(graph, kept, scores, settings or {})


# --------------------------------------------------------------------------- MIB


@pytest.fixture(scope="module")
def gpt2_circuit() -> Circuit:
    return random_circuit(GraphShape(12, 12, True), seed=1, p=0.002)  # about 65 edges


def test_mib_file_has_the_residual_edges_only(gpt2_circuit):
    data = to_mib(gpt2_circuit, d_model=768)
    assert data["cfg"] == {"n_layers": 12, "n_heads": 12, "parallel_attn_mlp": False,
                           "d_model": 768}
    graph = gpt2_circuit.graph
    residual = [e for e in graph.edges if e.kind == "residual"]
    assert len(data["edges"]) == len(residual) == mib_edge_count(12, 12) == 32_491
    assert list(data["edges"]) == [e.name for e in residual]
    assert not any(e.kind == "direct" and e.name in data["edges"] for e in graph.edges)
    assert len(data["nodes"]) == 1 + 12 * 13 + 1 and "a3.h4<q>" not in data["nodes"]
    for edge in residual:
        entry = data["edges"][edge.name]
        assert entry["in_graph"] is gpt2_circuit.kept[edge.index]
        score = gpt2_circuit.scores[edge.index]
        assert entry["score"] == (0.0 if score is None else score)
    json.dumps(data, allow_nan=False)  # strict JSON


def test_mib_node_flags_are_the_nodes_touching_kept_edges(gpt2_circuit):
    data = to_mib(gpt2_circuit, d_model=768)
    touched = {name.split("<")[0] for e in gpt2_circuit.kept_edges() if e.kind == "residual"
               for name in e.endpoints}
    assert data["nodes"]["logits"]["in_graph"] is True  # always, as EAP-IG writes it
    for name, entry in data["nodes"].items():
        if name != "logits":
            assert entry["in_graph"] is (name in touched), name


def test_mib_round_trip(tmp_path, gpt2_circuit):
    path = tmp_path / "circuit.mib.json"
    path.write_text(json.dumps(to_mib(gpt2_circuit, d_model=768)))
    back = load_circuit(path)  # the reader behind circuit.json's, so every command takes it
    graph = back.graph
    assert graph.shape == gpt2_circuit.graph.shape
    fed = set()
    for edge in graph.edges:
        if edge.kind == "residual":
            assert back.kept[edge.index] == gpt2_circuit.kept[edge.index], edge.name
            score = gpt2_circuit.scores[edge.index]
            assert back.scores[edge.index] == (0.0 if score is None else score)
            if back.kept[edge.index]:
                fed.add(edge.receiver.name)
    direct = [e for e in graph.edges if e.kind == "direct"]
    assert len(direct) == 432
    for edge in direct:  # kept exactly for the q/k/v inputs a kept residual edge feeds
        assert back.kept[edge.index] is (edge.receiver.name in fed), edge.name
        assert back.scores[edge.index] is None
    assert 0 < sum(back.kept[e.index] for e in direct) < 432
    assert back.settings["mib_cfg"]["d_model"] == 768
    assert circuit_title(back) == "MIB circuit file, 12 layers x 12 heads"
    # and written again, the same file
    assert to_mib(back, d_model=768) == json.loads(path.read_text())


def test_mib_parallel_blocks_round_trip():
    """Pythia-70m's shape: an MLP reads what its layer's heads read, in both graphs."""
    shape = GraphShape(6, 8, True, parallel_attn_mlp=True)
    circuit = random_circuit(shape, seed=5, p=0.05)
    data = to_mib(circuit, d_model=512)
    assert data["cfg"]["parallel_attn_mlp"] is True
    assert len(data["edges"]) == mib_edge_count(6, 8, parallel_attn_mlp=True)
    assert len(data["edges"]) == mib_edge_count(6, 8) - 6 * 8  # no a{l}.h*->m{l} edges
    back = from_mib(json.loads(json.dumps(data)))
    assert back.graph.shape == shape
    residual = [e.index for e in back.graph.edges if e.kind == "residual"]
    assert [back.kept[i] for i in residual] == [circuit.kept[i] for i in residual]


def test_mib_head_granularity_is_written_as_q_k_and_v_edges():
    circuit = random_circuit(GraphShape(2, 2, True, "head"), seed=2, p=0.4)
    data = to_mib(circuit, d_model=16)
    assert len(data["edges"]) == mib_edge_count(2, 2)
    for edge in circuit.graph.edges:
        if edge.receiver.kind == "head":
            names = [f"{edge.sender.name}->{edge.receiver.name}<{q}>" for q in "qkv"]
            assert all(data["edges"][n]["in_graph"] is circuit.kept[edge.index] for n in names)
    back = from_mib(data)
    assert back.graph.granularity == "qkv"
    assert mib_edge_counts(circuit) == (sum(e["in_graph"] for e in data["edges"].values()),
                                        len(data["edges"]))
    assert mib_edge_counts(back) == mib_edge_counts(circuit)


def test_mib_refuses_what_it_cannot_hold():
    attention_only = random_circuit(GraphShape(2, 2, False))
    with pytest.raises(GraphError, match="attention-only"):
        to_mib(attention_only, d_model=16)
    data = to_mib(random_circuit(GraphShape(2, 2, True)), d_model=16)
    with pytest.raises(GraphError, match="parallel_attn_mlp is 'yes'"):
        from_mib({**data, "cfg": {**data["cfg"], "parallel_attn_mlp": "yes"}})
    with pytest.raises(GraphError, match=r"4 edge name.*parallel blocks.*'a0.h0->m0'"):
        from_mib({**data, "cfg": {**data["cfg"], "parallel_attn_mlp": True}})
    edges = dict(data["edges"])
    edges["a0.h0<q>->a0.h0"] = {"score": 0.0, "in_graph": True}
    edges["a9.h9->logits"] = {"score": 0.0, "in_graph": True}
    with pytest.raises(GraphError, match=r"2 edge name\(s\).*'a0.h0<q>->a0.h0'.*direct q/k/v"):
        from_mib({**data, "edges": edges})
    edges = dict(data["edges"])
    del edges["m1->logits"]
    with pytest.raises(GraphError, match="missing 'm1->logits'"):
        from_mib({**data, "edges": edges})
    edges = dict(data["edges"])
    edges["m1->logits"] = {"score": "high", "in_graph": True}
    with pytest.raises(GraphError, match="score 'high'"):
        from_mib({**data, "edges": edges})
    with pytest.raises(GraphError, match="n_layers"):
        from_mib({**data, "cfg": {**data["cfg"], "n_layers": "two"}})


# --------------------------------------------------------------------------- GraphML and CSV


def test_graphml_has_every_edge_with_kept_and_score(tmp_path):
    circuit = random_circuit(GraphShape(2, 2, True), seed=3, p=0.3,
                             settings={"model": "m", "task": "t", "threshold": 0.1})
    path = tmp_path / "c.graphml"
    path.write_text(to_graphml(circuit))
    dag = nx.read_graphml(path)
    graph = circuit.graph
    assert dag.number_of_edges() == len(graph.edges)
    assert dag.graph["threshold"] == 0.1 and dag.graph["n_edges_kept"] == circuit.n_edges_kept
    for edge in graph.edges:
        data = dag.edges[edge.endpoints]
        assert data["name"] == edge.name and data["kind"] == edge.kind
        assert data["kept"] is circuit.kept[edge.index]
        score = circuit.scores[edge.index]
        assert data.get("score") == score  # absent where the edge has no score
    nodes = set(circuit.nodes())
    assert {n for n, d in dag.nodes(data=True) if d["in_circuit"]} == nodes
    assert dag.nodes["a1.h0<k>"]["kind"] == "k input" and dag.nodes["a1.h0"]["head"] == 0


def test_csv_is_one_row_per_edge_in_graph_order():
    circuit = random_circuit(GraphShape(2, 2, True), seed=4, p=0.3)
    rows = list(csv.DictReader(io.StringIO(to_csv(circuit))))
    graph = circuit.graph
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["name"] for r in rows] == [e.name for e in graph.edges]
    for row, edge in zip(rows, graph.edges, strict=True):
        assert (row["source"], row["target"]) == edge.endpoints
        assert row["kind"] == edge.kind
        assert row["kept"] == ("true" if circuit.kept[edge.index] else "false")
        score = circuit.scores[edge.index]
        assert row["score"] == ("" if score is None else repr(score))
        if score is not None:
            assert float(row["score"]) == score  # exactly


def test_networkx_graph_is_the_circuits_graph():
    circuit = random_circuit(GraphShape(1, 2, True))
    dag = circuit_to_networkx(circuit)
    assert dag.number_of_nodes() == len(circuit.graph.node_names())
    assert nx.is_directed_acyclic_graph(dag)


# --------------------------------------------------------------------------- drawings


def widths(source: str) -> dict[str, float]:
    """Edge pen widths of a DOT source, by the edge's name in its tooltip."""
    found = {}
    for line in source.splitlines():
        name = re.search(r'tooltip="(\S+) \(score', line)
        width = re.search(r"penwidth=([\d.]+)", line)
        if name and width:
            found[name.group(1)] = float(width.group(1))
    return found


def test_edge_widths_follow_the_absolute_score():
    graph = build_graph(GraphShape(1, 1, True))
    names = ["input->a0.h0<q>", "a0.h0<q>->a0.h0", "a0.h0->logits", "m0->logits",
             "input->m0", "a0.h0->m0"]
    values = {"input->a0.h0<q>": 0.25, "a0.h0<q>->a0.h0": -1.0, "a0.h0->logits": 0.0,
              "m0->logits": 0.5, "input->m0": None, "a0.h0->m0": 0.01}
    kept = tuple(e.name in names for e in graph.edges)
    scores = tuple(values.get(e.name, 9.0) for e in graph.edges)  # 9: removed, not drawn
    circuit = Circuit(graph, kept, scores)
    found = widths(to_dot(circuit))
    assert found["a0.h0<q>->a0.h0"] == MAX_WIDTH  # the largest |score| drawn, sign ignored
    assert found["a0.h0->logits"] == MIN_WIDTH
    assert found["input->a0.h0<q>"] == pytest.approx(MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * 0.5,
                                                     abs=1e-3)
    assert found["m0->logits"] > found["input->a0.h0<q>"] > found["a0.h0->m0"] > MIN_WIDTH
    assert "input->m0" not in found  # no score: the default width
    assert "width: |score| (widest 1)" in to_dot(circuit)
    assert widths(to_dot(circuit, score_width=False)) == {}
    unscored = Circuit(graph, kept, (None,) * len(kept))
    assert widths(to_dot(unscored)) == {}


def test_v_edges_are_dotted_when_widths_follow_scores():
    graph = build_graph(GraphShape(1, 1, False))
    kept = (True,) * len(graph.edges)
    scored = to_dot(Circuit(graph, kept, (0.5,) * len(kept)))
    plain = to_dot(Circuit(graph, kept, (None,) * len(kept)))

    def v_edges(source: str) -> list[str]:
        return [line for line in source.splitlines() if " -> " in line and "#d62728" in line]

    assert v_edges(scored) and all("style=dotted" in line for line in v_edges(scored))
    assert v_edges(plain) and all("style=bold" in line for line in v_edges(plain))
    assert "v: red dotted" in scored and "v: red bold" in plain


def test_the_title_names_the_model_as_the_user_did(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    assert model_label(str(tmp_path / "models" / "tiny")) == "tiny"
    assert model_label("gpt2") == "gpt2"
    assert model_label("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"  # a hub name
    graph = build_graph(GraphShape(1, 1, False))
    settings = {"task": "ioi", "model": str(tmp_path / "models" / "tiny"), "method": "acdc",
                "metric": "kl", "threshold": 0.01}
    circuit = Circuit(graph, (True,) * len(graph.edges), (None,) * len(graph.edges), settings)
    assert circuit_title(circuit) == "ioi on tiny, kl threshold 0.01"


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("export-run")
    checkpoint = directory / "model"
    save_checkpoint(build_model(TINY_CONFIG, seed=0), checkpoint, config=TINY_CONFIG)
    task = directory / "tiny.yaml"
    task.write_text(yaml.safe_dump({"name": "tiny", "metric": "kl", "threshold": 0.001,
                                    "model": str(checkpoint), "prompts": PROMPTS}))
    result = invoke("discover", "--task", task, "--out", directory / "run", "--quiet",
                    "--no-render")
    assert result.exit_code == 0, result.output
    return directory / "run"


def test_export_mib_reads_d_model_from_the_runs_model(run_dir, tmp_path):
    out = tmp_path / "tiny.mib.json"
    result = invoke("export", run_dir, "--format", "mib", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    circuit = load_circuit(run_dir / "circuit.json")
    assert data["cfg"]["d_model"] == TINY_CONFIG["d_model"]
    assert data == to_mib(circuit, TINY_CONFIG["d_model"])
    assert f"wrote {out}" in result.stdout
    # the message counts what the file holds, as the EAP-IG library counts it (residual edges)
    n_in_graph = sum(entry["in_graph"] for entry in data["edges"].values())
    assert n_in_graph == circuit.n_residual_kept < circuit.n_edges_kept
    assert f"({n_in_graph} of {len(data['edges'])} edges in_graph" in result.stdout
    result = invoke("export", run_dir / "circuit.json", "-f", "mib", "--out", out, "--d-model", 99)
    assert result.exit_code == 0 and json.loads(out.read_text())["cfg"]["d_model"] == 99


def test_export_default_outputs_beside_the_circuit(run_dir):
    for format, name in (("mib", "circuit.mib.json"), ("graphml", "circuit.graphml"),
                         ("csv", "circuit.csv")):
        result = invoke("export", run_dir, "-f", format)
        assert result.exit_code == 0, result.output
        assert (run_dir / name).is_file()
    rows = list(csv.reader((run_dir / "circuit.csv").open()))
    assert len(rows) == 1 + len(load_circuit(run_dir / "circuit.json").graph.edges)
    result = invoke("export", run_dir / "circuit.mib.json", "-f", "mib")  # onto itself
    assert result.exit_code == 1 and "is this command's input" in error_line(result)


def test_export_without_a_reachable_model_says_to_pass_d_model(run_dir, tmp_path):
    data = json.loads((run_dir / "circuit.json").read_text())
    data["model"] = str(tmp_path / "gone")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    result = invoke("export", bare, "-f", "mib")
    assert result.exit_code == 1 and "--d-model" in error_line(result)
    assert invoke("export", bare, "-f", "mib", "--d-model", 16).exit_code == 0


def test_export_bad_input_is_one_line(run_dir, tmp_path):
    result = invoke("export", tmp_path, "-f", "mib")  # a directory without a circuit
    assert result.exit_code == 1 and "has no circuit.json" in error_line(result)
    result = invoke("export", tmp_path / "nothing", "-f", "csv")
    assert result.exit_code == 1 and "no such run directory" in error_line(result)
    sweep = tmp_path / "sweep"
    (sweep / "tau-0.01").mkdir(parents=True)
    result = invoke("export", sweep, "-f", "csv")
    assert result.exit_code == 1 and "sweep directory" in error_line(result)
    result = invoke("export", run_dir, "-f", "xml")  # unknown format: a usage error
    assert result.exit_code == 2 and "'xml' is not one of" in result.output
    not_json = tmp_path / "x.json"
    not_json.write_text("{}")
    result = invoke("export", not_json, "-f", "csv")
    assert result.exit_code == 1 and "MIB circuit file" in error_line(result)


def test_evaluate_and_compare_read_mib_files(run_dir, tmp_path):
    """A MIB file read back computes what the circuit did (corrupt ablation: a removed direct
    edge and a query fed by removed edges alike give the corrupted run's query)."""
    mib = tmp_path / "tiny.mib.json"
    assert invoke("export", run_dir, "-f", "mib", "--out", mib).exit_code == 0
    shutil.copy(run_dir / "run.yaml", tmp_path / "run.yaml")  # the run's task and model
    original = tmp_path / "original.json"
    result = invoke("evaluate", run_dir, "--metric", "kl", "--out", original, "--quiet")
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", mib, "--metric", "kl", "--quiet")
    assert result.exit_code == 0, result.output
    from_file = json.loads((tmp_path / "tiny.mib.evaluation.json").read_text())  # not over
    expected = json.loads(original.read_text())  # the run's own evaluation.json
    assert from_file["metrics"]["kl"]["circuit"]["mean"] == pytest.approx(
        expected["metrics"]["kl"]["circuit"]["mean"], rel=1e-5, abs=1e-7)
    result = invoke("compare", run_dir, mib, "--out", tmp_path / "cmp", "--no-render")
    assert result.exit_code == 0, result.output
    both = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["edges"]
    circuit = load_circuit(run_dir / "circuit.json")
    # the residual edges are the run's; a direct edge ACDC kept (tested before the edges into
    # its input went) follows its input in the file, computing the same
    names = both["names"]
    assert all("<" in name.split("->")[0] for name in names["only_a"] + names["only_b"])
    assert both["both"] + both["only_a"] == circuit.n_edges_kept
    result = invoke("compare", run_dir, "--reference", mib, "--out", tmp_path / "cmp2",
                    "--no-render")
    assert result.exit_code == 0, result.output


def test_discover_draws_widths_unless_told_not_to(run_dir, tmp_path):
    task = run_dir.parent / "tiny.yaml"
    for flags, expected in (((), True), (("--no-score-width",), False)):
        out = tmp_path / f"run{len(flags)}"
        result = invoke("discover", "--task", task, "--out", out, "--quiet", "--no-render",
                        *flags)
        assert result.exit_code == 0, result.output
        assert ("penwidth" in (out / "circuit.dot").read_text()) is expected


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` missing (apt-get install -y graphviz)")
def test_render_draws_widths_unless_told_not_to(run_dir, tmp_path):
    def stroke_widths(path: Path) -> set[str]:
        return set(re.findall(r'stroke-width="([\d.]+)"', path.read_text()))

    result = invoke("render", run_dir / "circuit.json", "--out", tmp_path / "w.svg")
    assert result.exit_code == 0, result.output
    assert len(stroke_widths(tmp_path / "w.svg")) > 3
    result = invoke("render", run_dir / "circuit.json", "--out", tmp_path / "p.svg",
                    "--no-score-width")
    assert result.exit_code == 0, result.output
    assert stroke_widths(tmp_path / "p.svg") <= {"2"}  # bold v edges only
