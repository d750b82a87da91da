"""Judging circuits at positions: `circuit evaluate` (and `acdc.evaluate`), `circuit export` and
`circuit sweep --positions`.

The evaluator's metrics of positional circuits are held to the slow hooked reference
(`reference_acdc.py` with `groups=`: one TransformerLens forward pass per circuit, a mask per
position group, no code shared with the engine) on several tiny model families, and to two
plain facts: a circuit that keeps every edge at all of its groups exactly when a blind circuit
keeps it is that blind circuit; an edge kept only at an inert group changes nothing. Exports
are read back (csv, networkx's GraphML reader, MIB's reader for the blind projection) and
compared edge by edge; the command lines run on the bundled demo task.
"""

from __future__ import annotations

import csv
import io
import json
import random
import warnings
from pathlib import Path

import networkx as nx
import pytest
import reference_acdc as ref
import torch
from cli_helpers import error_line, invoke
from test_positions import engine_task, loaded, reference_groups, tiny_task

from acdc.core.architecture import model_shape
from acdc.core.circuit import Circuit, from_mib, load_circuit, write_circuit
from acdc.core.graph import GraphShape, build_graph
from acdc.core.mib import to_mib
from acdc.core.positions import check_assignment, inert_groups, positional_shape, positions_digest
from acdc.core.selection import prune
from acdc.errors import AcdcError, GraphError, RunWarning, TaskError
from acdc.evaluation.faithfulness import CircuitEvaluator
from acdc.evaluation.measures import METRIC_SIGN, MIB_FRACTIONS, ranking_from_scores
from acdc.exports.formats import (
    POSITIONAL_CSV_COLUMNS,
    blind_projection,
    circuit_to_networkx,
    to_csv,
    to_graphml,
)

GROUPS = ("IO", "S1+1", "END", "other")


def positional_graph(model, task, mode: str, granularity: str = "qkv"):
    return build_graph(positional_shape(model_shape(model.cfg).graph_shape(granularity), task,
                                        mode))


class Reference:
    """The hooked reference's metrics (minimised, float64) of circuits on one task."""

    def __init__(self, model, task, mode: str, ablation: str, granularity: str):
        self.model, self.task, self.granularity = model, task, granularity
        self.groups = reference_groups(task, mode)[0] if mode != "none" else None
        clean, corrupt = ref.pad(task.clean), ref.pad(task.corrupt)
        self.clean_tokens = clean
        self.ablated = ref.ablation_run(ref.ungrouped(model), clean, corrupt, ablation,
                                        [len(c) for c in task.clean])
        with torch.no_grad():
            self.clean_logits = ref.ungrouped(model)(clean)

    def metrics(self, graph, kept, metrics) -> dict[str, float]:
        removed = {e.name for e in graph.edges if not kept[e.index]}
        logits = ref.patched_logits(self.model, self.clean_tokens, self.ablated, removed,
                                    self.granularity, self.groups)
        t = self.task
        return {name: ref.metric_value(name, logits, self.clean_logits, t.clean, t.positions,
                                       t.answers, t.wrong_answers) for name in metrics}


def random_kept(n: int, seed: int, p: float = 0.5) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < p for _ in range(n)]


# --------------------------------------------------------------------------- evaluation


@pytest.mark.hooked_transformer
@pytest.mark.parametrize("name, mode, ablation, granularity", [
    ("attn2", "labels", "corrupt", "qkv"), ("mlp3", "labels", "zero", "qkv"),
    ("neox2", "labels", "mean", "head"), ("gemma2", "labels", "corrupt", "qkv"),
    ("llama2", "all", "mean-positional", "qkv"), ("bidir_mlp3", "all", "corrupt", "qkv"),
    ("gptj2", "labels", "corrupt", "head"),
])
def test_evaluation_at_positions_matches_the_hooked_reference(tiny_models, name, mode, ablation,
                                                              granularity):
    """Full model, empty circuit, a random circuit at positions and its complement: every
    metric the evaluator reports is the hooked reference's, and f is read from them."""
    model = tiny_models[name]
    task = engine_task(tiny_task(mode, model=name), "logit_diff", ablation)
    graph = positional_graph(model, task, mode, granularity)
    evaluator = CircuitEvaluator(loaded(model), task, graph, ablation)
    assert evaluator.metrics == ["kl", "logit_diff", "prob_diff", "nll", "l2"]
    reference = Reference(model, task, mode, ablation, granularity)
    kept = random_kept(len(graph.edges), seed=len(name))
    result = evaluator.evaluate(kept)
    assert result.n_edges_total == len(graph.edges) and result.n_edges_kept == sum(kept)
    complement = [not k for k in kept]
    for circuit, part in (([True] * len(kept), "full"), ([False] * len(kept), "empty"),
                          (kept, "circuit"), (complement, "complement")):
        expected = reference.metrics(graph, circuit, evaluator.metrics)
        for metric, m in result.metrics.items():
            got = getattr(m, part).mean * METRIC_SIGN[metric]
            assert got == pytest.approx(expected[metric], rel=1e-4, abs=2e-5), (metric, part)
    for m in result.metrics.values():
        if m.faithfulness is not None:
            f = (m.circuit.mean - m.empty.mean) / (m.full.mean - m.empty.mean)
            assert m.faithfulness == pytest.approx(f)
    assert evaluator.passes == 2


@pytest.mark.hooked_transformer
@pytest.mark.parametrize("name, mode, ablation", [
    ("attn2", "labels", "corrupt"), ("mlp3", "labels", "mean"), ("neox2", "all", "zero"),
    ("gemma2", "labels", "corrupt"), ("llama2", "labels", "mean-positional"),
    ("bidir_attn2", "all", "corrupt"),
])
def test_a_circuit_kept_at_every_group_evaluates_as_the_blind_circuit(tiny_models, name, mode,
                                                                      ablation):
    model = tiny_models[name]
    task = engine_task(tiny_task(mode, model=name), "logit_diff", ablation)
    blind = build_graph(model_shape(model.cfg).graph_shape())
    graph = positional_graph(model, task, mode)
    plain = CircuitEvaluator(loaded(model), task, blind, ablation)
    positional = CircuitEvaluator(loaded(model), task, graph, ablation)
    for seed in (1, 2):
        kept = random_kept(len(blind.edges), seed, p=0.3 * seed)
        spread = [k for k in kept for _ in range(graph.n_groups)]
        a, b = plain.evaluate(kept), positional.evaluate(spread)
        for metric in plain.metrics:
            for part in ("full", "empty", "circuit", "complement"):
                assert getattr(b.metrics[metric], part).mean == pytest.approx(
                    getattr(a.metrics[metric], part).mean, rel=1e-5, abs=1e-5), (metric, part)
            if a.metrics[metric].faithfulness is not None:
                assert b.metrics[metric].faithfulness == pytest.approx(
                    a.metrics[metric].faithfulness, rel=1e-4, abs=1e-5)


@pytest.mark.hooked_transformer
@pytest.mark.parametrize("name", ["attn2", "mlp3", "llama2"])
def test_an_edge_kept_only_at_an_inert_group_changes_nothing(tiny_models, name):
    """Every prompt's clean and corrupted tokens agree at the first two tokens, so under corrupt
    ablation the groups 0 and 1 are inert: keeping any edges there changes no metric, while
    keeping the same edges at a live group does."""
    model = tiny_models[name]
    tiny = tiny_task("all", seed=3)
    for clean, corrupt in zip(tiny.clean, tiny.corrupt, strict=True):
        corrupt[:2] = clean[:2]
    task = engine_task(tiny, "logit_diff", "corrupt")
    graph = positional_graph(model, task, "all")
    names = list(graph.groups)
    inert = inert_groups(task, names, "all", "corrupt", causal=True)
    assert {0, 1} <= inert and 2 not in inert
    evaluator = CircuitEvaluator(loaded(model), task, graph, "corrupt")
    base = [k and e.group not in inert for k, e in
            zip(random_kept(len(graph.edges), 5, 0.4), graph.edges, strict=True)]
    at_inert = [k or (e.group in inert and random.Random(e.index).random() < 0.7)
                for k, e in zip(base, graph.edges, strict=True)]
    at_live = [k or (e.group == 2 and random.Random(e.index).random() < 0.7)
               for k, e in zip(base, graph.edges, strict=True)]
    assert sum(at_inert) > sum(base) and sum(at_live) > sum(base)
    before, inert_result = evaluator.evaluate(base), evaluator.evaluate(at_inert)
    live_result = evaluator.evaluate(at_live)
    for metric in evaluator.metrics:
        assert inert_result.metrics[metric].circuit.mean == pytest.approx(
            before.metrics[metric].circuit.mean, rel=1e-6, abs=1e-6)
    assert any(abs(live_result.metrics[m].circuit.mean - before.metrics[m].circuit.mean) > 1e-4
               for m in evaluator.metrics)


@pytest.mark.hooked_transformer
@pytest.mark.parametrize("name, mode", [("mlp3", "labels"), ("attn2", "all")])
def test_curves_at_positions_rank_positional_edges(tiny_models, name, mode):
    """A curve over a positional circuit's scores: k is a fraction of the positional residual
    edges, each point the top-k positional edges (direct edges following their input at their
    group), pruned with `logits` read at the metric positions' groups; its metric is the hooked
    reference's."""
    model = tiny_models[name]
    task = engine_task(tiny_task(mode, model=name), "logit_diff", "corrupt")
    graph = positional_graph(model, task, mode)
    evaluator = CircuitEvaluator(loaded(model), task, graph, "corrupt", metrics=["kl"])
    rng = random.Random(4)
    scores = [rng.gauss(0, 1) if rng.random() < 0.8 else None for _ in graph.edges]
    curve = evaluator.curve(ranking_from_scores(scores))
    residual = [e for e in graph.edges if e.kind == "residual"]
    assert curve.n_edges_total == len(residual) == graph.n_groups * sum(
        e.kind == "residual" for e in build_graph(graph.shape.blind()).edges)
    assert curve.fractions == list(MIB_FRACTIONS)
    groups = reference_groups(task, mode)[0]
    read_at = {graph.groups.index(groups[b][p]) for b, ps in enumerate(task.positions)
               for p in ps}
    reference = Reference(model, task, mode, "corrupt", "qkv")
    for point in (curve.points[5], curve.points[9]):
        size = {e.index: -1.0 if scores[e.index] is None else abs(scores[e.index])
                for e in residual}
        top_residual = sorted(size, key=lambda i: -size[i])[:point.n_edges]
        top = [e.index in top_residual for e in graph.edges]
        fed = {(graph.edges[i].receiver.name, graph.edges[i].group) for i in top_residual}
        for edge in graph.edges:
            if edge.kind == "direct":
                top[edge.index] = (edge.receiver.name, edge.group) in fed
        kept = prune(graph, top, read_at)
        assert not any(kept[e.index] for e in graph.edges
                       if e.receiver.kind == "logits" and e.group not in read_at)
        assert point.n_edges_kept == sum(kept[e.index] for e in residual) <= point.n_edges
        expected = reference.metrics(graph, kept, ["kl"])["kl"]
        assert point.values["kl"] == pytest.approx(expected, rel=1e-4, abs=2e-5)


@pytest.mark.hooked_transformer
def test_a_task_grouped_otherwise_is_refused(tiny_models):
    model = tiny_models["attn2"]
    tiny = tiny_task("labels")
    task = engine_task(tiny, "kl", "corrupt")
    graph = positional_graph(model, task, "labels")
    digest = positions_digest(task, graph.groups, "labels")
    check_assignment(task, graph.groups, "labels", digest, "c.json")
    moved = engine_task(tiny, "kl", "corrupt", labels=[
        {**labels, "X": labels["Y"], "Y": labels["X"]} for labels in task.labels or ()])
    with pytest.raises(TaskError, match=r"^c.json: task tiny puts its tokens into the position "
                                        r"groups \(X, Y, END, other\) otherwise.*evaluate it on "
                                        r"that task"):
        check_assignment(moved, graph.groups, "labels", digest, "c.json")
    renamed = engine_task(tiny, "kl", "corrupt", labels=[
        {"Z" if k == "X" else k: v for k, v in labels.items()} for labels in task.labels or ()])
    with pytest.raises(TaskError, match="its position groups are Z, Y, END, other, the "
                                        "circuit's X, Y, END, other"):
        check_assignment(renamed, graph.groups, "labels", digest, "c.json")
    with pytest.raises(TaskError, match="its position groups are Z"):
        CircuitEvaluator(loaded(model), renamed, graph, "corrupt")
    with pytest.warns(RunWarning, match="records no positions_sha256"):
        check_assignment(moved, graph.groups, "labels", None, "c.json")
    other = build_graph(positional_shape(model_shape(tiny_models["mlp3"].cfg).graph_shape(),
                                         task, "labels"))
    with pytest.raises(GraphError, match="is not the graph of model tiny"):
        CircuitEvaluator(loaded(model), task, other, "corrupt")


# --------------------------------------------------------------------------- exports


def positional_circuit(seed: int = 0, granularity: str = "qkv") -> Circuit:
    graph = build_graph(GraphShape(2, 2, True, granularity, positions="labels", groups=GROUPS))
    rng = random.Random(seed)
    kept = tuple(rng.random() < 0.2 for _ in graph.edges)
    scores = tuple(None if rng.random() < 0.1 else
                   rng.choice([rng.uniform(-1, 1), float("inf")]) if rng.random() < 0.02
                   else rng.uniform(-1, 1) for _ in graph.edges)
    settings = {"model": "m", "task": "t", "method": "eap", "metric": "kl",
                "ablation": "corrupt", "granularity": granularity, "positions": "labels",
                "positions_sha256": "ab" * 32}
    results = {"metric_circuit": 0.5, "metric_full": 0.0, "runtime_s": 1.0, "partial": False}
    return Circuit(graph, kept, scores, settings, results)


def test_csv_of_a_circuit_at_positions_has_a_row_per_edge_at_a_group():
    circuit = positional_circuit()
    graph = circuit.graph
    rows = list(csv.DictReader(io.StringIO(to_csv(circuit))))
    assert tuple(rows[0]) == POSITIONAL_CSV_COLUMNS
    assert len(rows) == len(graph.edges)
    for row, edge in zip(rows, graph.edges, strict=True):
        blind_name, group = edge.name.rsplit("@", 1)
        assert row["name"] == edge.name and row["position"] == group == GROUPS[edge.index % 4]
        assert (row["source"], row["target"]) == edge.endpoints
        assert row["kind"] == edge.kind
        assert row["kept"] == ("true" if circuit.kept[edge.index] else "false")
        score = circuit.scores[edge.index]
        assert row["score"] == ("" if score is None else repr(score))
        if score is not None:
            assert float(row["score"]) == score


@pytest.mark.parametrize("granularity", ["qkv", "head"])
def test_graphml_of_a_circuit_at_positions_round_trips(tmp_path, granularity):
    circuit = positional_circuit(1, granularity)
    graph = circuit.graph
    path = tmp_path / "c.graphml"
    path.write_text(to_graphml(circuit))
    dag = nx.read_graphml(path, force_multigraph=True)
    assert isinstance(dag, nx.MultiDiGraph)
    assert dag.number_of_edges() == len(graph.edges)
    assert dag.graph["groups"].split(" ") == list(GROUPS)
    assert dag.graph["positions"] == "labels" and dag.graph["positions_sha256"] == "ab" * 32
    read = {key: (u, v, data) for u, v, key, data in dag.edges(keys=True, data=True)}
    for edge in graph.edges:
        u, v, data = read[edge.name]
        assert (u, v) == edge.endpoints and data["name"] == edge.name
        assert data["position"] == GROUPS[edge.group] and data["kind"] == edge.kind
        assert data["kept"] is circuit.kept[edge.index]
        assert data.get("score") == circuit.scores[edge.index]  # absent where there is none
    # a node's positions: the groups at which some kept edge touches it
    for node in graph.node_names():
        at = [g for g in GROUPS if any(circuit.kept[e.index] and node in e.endpoints
                                       and e.name.endswith("@" + g) for e in graph.edges)]
        assert dag.nodes[node]["positions"] == " ".join(at)
        assert dag.nodes[node]["in_circuit"] is bool(at)
    blind = circuit_to_networkx(blind_projection(circuit))
    assert isinstance(blind, nx.DiGraph) and not blind.is_multigraph()


def test_blind_projection_and_its_mib_file():
    circuit = positional_circuit(2)
    graph = circuit.graph
    projection = blind_projection(circuit)
    blind = projection.graph
    assert blind.shape == graph.shape.blind()
    for edge in blind.edges:
        copies = [e for e in graph.edges if e.name.rsplit("@", 1)[0] == edge.name]
        assert len(copies) == len(GROUPS)
        assert projection.kept[edge.index] == any(circuit.kept[e.index] for e in copies)
        scored = [circuit.scores[e.index] for e in copies if circuit.scores[e.index] is not None]
        assert projection.scores[edge.index] == (sum(scored) if scored else None)
    assert "positions" not in projection.settings and "positions_sha256" not in projection.settings
    assert projection.settings["projected_from"] == "positions labels"
    back = Circuit.from_json(json.loads(json.dumps(projection.to_json())))
    assert back.kept == projection.kept and back.graph.shape == blind.shape
    with pytest.raises(GraphError, match="MIB's graph has no positions"):
        to_mib(circuit, 16)
    finite = Circuit(graph, circuit.kept, tuple(None if s is None or abs(s) == float("inf")
                                                else s for s in circuit.scores))
    mib = from_mib(to_mib(blind_projection(finite), 16))
    residual = [e.index for e in blind.edges if e.kind == "residual"]
    assert [mib.kept[i] for i in residual] == [projection.kept[i] for i in residual]
    with pytest.raises(AcdcError, match="position-blind already"):
        blind_projection(projection)


def test_export_at_positions_on_the_command_line(tmp_path):
    circuit = positional_circuit(3)
    finite = Circuit(circuit.graph, circuit.kept,
                     tuple(None if s is None or abs(s) == float("inf") else s
                           for s in circuit.scores), circuit.settings, circuit.results)
    path = write_circuit(finite, tmp_path / "circuit.json")
    written = invoke("export", path, "--format", "csv")
    assert written.exit_code == 0, written.output
    assert "at 4 position groups (labels: IO, S1+1, END, other)" in written.output
    assert (tmp_path / "circuit.csv").read_text() == to_csv(finite)
    graphml = invoke("export", path, "--format", "graphml")
    assert graphml.exit_code == 0 and (tmp_path / "circuit.graphml").is_file()
    refused = invoke("export", path, "--format", "mib", "--d-model", 16)
    assert refused.exit_code == 1
    assert error_line(refused) == (
        f"error: {path}: is a circuit at 4 position groups (labels: IO, S1+1, END, other), and "
        f"MIB's graph has no positions, so it is no MIB file: export it as csv or graphml (a row "
        f"or edge per position group), or pass --blind for a MIB file of its projection (an "
        f"edge kept at any group is kept, its score the sum over the groups)")
    mib = invoke("export", path, "--format", "mib", "--d-model", 16, "--blind")
    assert mib.exit_code == 0, mib.output
    assert "the blind projection of a circuit at positions labels" in mib.output
    back = load_circuit(tmp_path / "circuit.blind.mib.json")
    projection = blind_projection(finite)
    residual = [e.index for e in back.graph.edges if e.kind == "residual"]
    assert [back.kept[i] for i in residual] == [projection.kept[i] for i in residual]
    blind_csv = invoke("export", path, "--format", "csv", "--blind")
    assert blind_csv.exit_code == 0
    assert (tmp_path / "circuit.blind.csv").read_text() == to_csv(projection)
    again = invoke("export", tmp_path / "circuit.blind.mib.json", "--format", "csv", "--blind")
    assert again.exit_code == 1
    assert "is a position-blind circuit; --blind projects a circuit at positions" in error_line(
        again)


def test_export_at_positions_from_python(tmp_path):
    import acdc

    circuit = positional_circuit(4)
    assert acdc.export(circuit, "csv") == to_csv(circuit)
    with pytest.raises(AcdcError, match="or pass blind=True for a MIB file"):
        acdc.export(circuit, "mib", d_model=16)
    text = acdc.export(circuit, "graphml", tmp_path / "c.graphml", blind=True)
    assert text == to_graphml(blind_projection(circuit))
    assert (tmp_path / "c.graphml").read_text() == text


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("positions") / "run"
    result = invoke("discover", "--task", "demo", "--positions", "labels", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out


def demo_task_file(directory: Path, change) -> Path:
    """The bundled demo task with its model as an absolute path and `change` applied to its
    text."""
    from acdc.core.bundled import model_dir, tasks_dir

    text = (tasks_dir() / "demo.yaml").read_text().replace("model: ../models/demo",
                                                           f"model: {model_dir('demo')}")
    path = directory / "task.yaml"
    path.write_text(change(text))
    return path


@pytest.mark.slow
def test_evaluate_a_circuit_at_positions(demo_run, tmp_path):
    """`circuit evaluate` of a run at positions: its own metric as the run measured it, the
    groups in evaluation.json, a curve over its positional edges; a task whose labels moved or
    were renamed, or a task without labels, refused in one line."""
    result = invoke("evaluate", demo_run, "--curve")
    assert result.exit_code == 0, result.output
    assert "at 6 position groups (labels: IO, S1, S1+1, S2, END, other)" in result.output
    record = json.loads((demo_run / "evaluation.json").read_text())
    assert record["positions"] == "labels"
    assert record["groups"] == ["IO", "S1", "S1+1", "S2", "END", "other"]
    assert record["run_metric"]["agrees"], record["run_metric"]
    circuit = load_circuit(demo_run / "circuit.json")
    residual = sum(e.kind == "residual" for e in circuit.graph.edges)
    assert record["curve"]["n_edges_total"] == residual
    assert record["n_edges_total"] == len(circuit.graph.edges) == 6 * 134
    moved = demo_task_file(tmp_path, lambda text: text.replace("S1+1: and", "S1+1: -2"))
    refused = invoke("evaluate", demo_run, "--task", moved, "--out", tmp_path / "e.json")
    assert refused.exit_code == 1
    assert "positions_sha256 differs" in error_line(refused)
    assert "evaluate it on that task" in error_line(refused)
    renamed = demo_task_file(tmp_path, lambda text: text.replace("S1+1:", "NEXT:"))
    refused = invoke("evaluate", demo_run, "--task", renamed, "--out", tmp_path / "e.json")
    assert refused.exit_code == 1
    assert "its position groups are IO, S1, NEXT, S2, END, other" in error_line(refused)
    refused = invoke("evaluate", demo_run, "--task", "induction", "--out", tmp_path / "e.json")
    assert refused.exit_code == 1
    assert "but task induction labels no positions" in error_line(refused)
    assert not (tmp_path / "e.json").exists()


@pytest.mark.slow
def test_evaluate_at_positions_from_python(demo_run, tmp_path):
    import acdc
    from acdc.core.bundled import model_dir

    with warnings.catch_warnings():
        warnings.simplefilter("error", RunWarning)
        result = acdc.evaluate(demo_run, model_dir("demo"), "demo", metrics=["kl"])
    circuit = load_circuit(demo_run / "circuit.json")
    assert result.evaluation.metrics["kl"].circuit.mean == pytest.approx(
        circuit.metric_circuit, abs=1e-5)
    renamed = demo_task_file(tmp_path, lambda text: text.replace("S1+1:", "NEXT:"))
    with pytest.raises(TaskError, match="^the circuit: task demo: its position groups are IO, "
                                        "S1, NEXT, S2, END, other, the circuit's IO, S1, S1.1"):
        acdc.evaluate(circuit, model_dir("demo"), renamed)


@pytest.mark.slow
def test_sweep_at_positions(tmp_path):
    """`circuit sweep --positions labels`: every run at positions, evaluated at its groups;
    sweep.json records the mode, a resume or a second sweep there with another refuses."""
    out = tmp_path / "sweep"
    result = invoke("sweep", "--task", "demo", "--positions", "labels", "--thresholds",
                    "0.03,0.1", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "sweep.json").read_text())
    assert record["positions"] == "labels" and record["n_edges_total"] == 6 * 134
    for threshold in ("0.03", "0.1"):
        circuit = load_circuit(out / f"tau-{threshold}" / "circuit.json")
        assert circuit.graph.groups == ("IO", "S1", "S1+1", "S2", "END", "other")
        evaluation = json.loads((out / f"tau-{threshold}" / "evaluation.json").read_text())
        assert evaluation["positions"] == "labels" and evaluation["run_metric"]["agrees"]
    refused = invoke("sweep", "--resume", out, "--positions", "none")
    assert refused.exit_code == 2
    assert "--positions none (the run used labels)" in refused.output
    again = invoke("sweep", "--task", "demo", "--thresholds", "0.03,0.1", "--out", out)
    assert again.exit_code == 2
    assert "--positions none (the sweep there used labels)" in again.output
    assert "--threshold" not in again.output.replace("--thresholds", "")
    resumed = invoke("sweep", "--resume", out, "-q")
    assert resumed.exit_code == 0, resumed.output
    # a blind sweep whose threshold directory holds a run at positions refuses it
    blind = tmp_path / "blind"
    (blind / "tau-0.03").mkdir(parents=True)
    header = {k: v for k, v in record.items() if k not in ("positions", "rank_scores")}
    (blind / "sweep.json").write_text(json.dumps({**header, "finished": False, "runs": []}))
    log = (out / "tau-0.03" / "decisions.jsonl").read_bytes()
    (blind / "tau-0.03" / "decisions.jsonl").write_bytes(log)
    refused = invoke("sweep", "--resume", blind)
    assert refused.exit_code == 1
    assert "--positions none (the run used labels)" in error_line(refused)
    circuit_file = (out / "tau-0.03" / "circuit.json").read_bytes()
    (blind / "tau-0.03" / "circuit.json").write_bytes(circuit_file)
    refused = invoke("sweep", "--resume", blind)
    assert refused.exit_code == 1
    assert "positions 'labels' (this sweep: none)" in error_line(refused)


def test_a_sweep_at_positions_counts_the_group_masks_in_a_workers_memory():
    from acdc.core.shapes import load_shape
    from acdc.sweeps.capacity import worker_memory
    from acdc.sweeps.plan import prepare_sweep

    blind = prepare_sweep("demo", thresholds="0.1").settings
    positional = prepare_sweep("demo", thresholds="0.1", positions="labels").settings
    assert positional.run.common.positions == "labels"
    assert positional.record()["positions"] == "labels" and "positions" not in blind.record()
    shape = load_shape(blind.run.model)
    assert worker_memory(positional, shape) > worker_memory(blind, shape)
    with pytest.raises(AcdcError, match="labels no positions"):
        prepare_sweep("induction", thresholds="0.1", positions="labels")


@pytest.mark.slow
def test_sweep_at_positions_from_python():
    import acdc
    from acdc.core.bundled import model_dir

    result = acdc.sweep(model_dir("demo"), "demo", [0.03, 0.1], positions="labels")
    for circuit in result.circuits.values():
        assert circuit.graph.groups == ("IO", "S1", "S1+1", "S2", "END", "other")
        assert len(circuit.settings["positions_sha256"]) == 64
    assert len(result.rank_scores) == 6 * 134
    with pytest.raises(AcdcError, match="unknown positions 'some'"):
        acdc.sweep(model_dir("demo"), "demo", [0.1], positions="some")
