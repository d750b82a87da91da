"""Circuit evaluation: faithfulness, complement and curves (`acdc.evaluation`).

The evaluator's metrics are checked against the slow hooked reference (`reference_acdc.py`:
one TransformerLens forward pass with hooks per circuit, no code shared with the engine) on the
tiny random models; the areas and the pruning against hand-made answers; `circuit evaluate`
end to end with typer's CliRunner on tiny checkpoints and on the bundled demo task.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import error_line, invoke
from reference_acdc import circuit_metric

from acdc.core import patching
from acdc.core.architecture import model_shape
from acdc.core.graph import GraphShape, build_graph
from acdc.core.loading import LoadedModel
from acdc.core.models import build_model, extract_weights, save_checkpoint
from acdc.core.selection import prune as prune_circuit
from acdc.core.tasks.values import Task
from acdc.errors import AcdcError, GraphError
from acdc.evaluation.faithfulness import CircuitEvaluator, edges_at
from acdc.evaluation.measures import (
    METRIC_SIGN,
    MIB_FRACTIONS,
    cmd,
    cpr,
    normalised,
    ranking_from_scores,
    ranking_scores,
)

# The slow hooked references and tiny random models need TransformerLens 3.x (see conftest).
pytestmark = pytest.mark.hooked_transformer



def as_task(tiny, name: str = "t") -> Task:
    return Task(name=name, description="", source="test", model=None, metric="kl",
                threshold=0.01, ablation="corrupt", seed=0, clean=tiny.clean,
                corrupt=tiny.corrupt, positions=tiny.positions, answers=tiny.answers,
                wrong_answers=tiny.wrong_answers)


def loaded(models, name: str) -> LoadedModel:
    model = models[name]
    return LoadedModel(name, extract_weights(model), None, model_shape(model.cfg))


def random_kept(graph, seed: int, p: float = 0.5) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < p for _ in graph.edges]


def reference(model, tiny, kept, graph, metric: str, ablation: str) -> float:
    """The reference's metric (minimised) of the circuit that keeps `kept`."""
    removed = {e.name for e in graph.edges if not kept[e.index]}
    return circuit_metric(model, *tiny.args(), removed, metric=metric, ablation=ablation,
                          granularity=graph.granularity)


# --------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("name, ablation, granularity", [
    ("attn2", "corrupt", "qkv"), ("attn2", "zero", "head"), ("mlp3", "corrupt", "qkv"),
    ("mlp3", "zero", "qkv"), ("nonorm2", "corrupt", "head"), ("one_head", "zero", "qkv"),
])
def test_full_empty_circuit_and_complement_match_the_reference(tiny_models, tiny_tasks, name,
                                                                ablation, granularity):
    model, tiny = tiny_models[name], tiny_tasks[name]
    graph = build_graph(model_shape(model.cfg).graph_shape(granularity))
    evaluator = CircuitEvaluator(loaded(tiny_models, name), as_task(tiny), graph, ablation)
    assert evaluator.metrics == ["kl", "logit_diff", "prob_diff", "nll", "l2"]
    kept = random_kept(graph, seed=len(name))
    complement = [not k for k in kept]
    result = evaluator.evaluate(kept)
    assert result.n_edges_kept == sum(kept) and result.n_prompts == len(tiny.clean)
    for metric, m in result.metrics.items():
        sign = METRIC_SIGN[metric]
        for circuit, spread in (([True] * len(kept), m.full), ([False] * len(kept), m.empty),
                                (kept, m.circuit), (complement, m.complement)):
            expected = reference(model, tiny, circuit, graph, metric, ablation)
            assert spread.mean * sign == pytest.approx(expected, rel=1e-4, abs=2e-5), metric
        f = (m.circuit.mean - m.empty.mean) / (m.full.mean - m.empty.mean)
        assert m.faithfulness == pytest.approx(f)
    assert evaluator.passes == 2  # the circuit and its complement; full and empty are free


@pytest.mark.parametrize("grouped", [True, False], ids=["one-product-per-copy", "copy-per-head"])
@pytest.mark.parametrize("name, granularity, ablation", [
    ("mlp3", "qkv", "corrupt"), ("nonorm2", "qkv", "zero"), ("attn2", "head", "corrupt"),
    ("llama2", "qkv", "corrupt"), ("gemma2", "qkv", "mean"), ("neox2", "qkv", "corrupt"),
])
def test_head_inputs_that_share_a_residual_copy_match_the_reference(
        tiny_models, tiny_tasks, name, granularity, ablation, grouped, monkeypatch):
    """Sparse circuits and their complements, where many head inputs of a layer read the same
    residual copy but not all do: both ways a patched pass projects such copies (one product
    per distinct copy for large batches, a copy per head for small ones)."""
    monkeypatch.setattr(patching, "GROUPED_PROJECTION_MIN", 0 if grouped else 2 ** 62)
    model, tiny = tiny_models[name], tiny_tasks[name]
    graph = build_graph(model_shape(model.cfg).graph_shape(granularity))
    evaluator = CircuitEvaluator(loaded(tiny_models, name), as_task(tiny), graph, ablation,
                                 metrics=["kl"])
    shared = 0  # layers whose inputs read more than one copy, but at most half as many
    for seed in range(3):
        kept = random_kept(graph, seed, p=0.15)
        result = evaluator.evaluate(kept)
        for masks in evaluator.patched.head_masks:
            rows = masks.reshape(-1, masks.shape[-1])
            distinct = len(torch.unique(rows, dim=0))
            shared += 1 < distinct <= len(rows) // 2
        for circuit, spread in ((kept, result.metrics["kl"].circuit),
                                ([not k for k in kept], result.metrics["kl"].complement)):
            expected = reference(model, tiny, circuit, graph, "kl", ablation)
            assert spread.mean == pytest.approx(expected, rel=1e-4, abs=2e-5)
    assert shared  # the case this test is for occurred


def test_reported_signs_make_task_metrics_positive_for_the_model(tiny_models, tiny_tasks):
    model, tiny = tiny_models["mlp3"], tiny_tasks["mlp3"]
    graph = build_graph(model_shape(model.cfg).graph_shape())
    evaluator = CircuitEvaluator(loaded(tiny_models, "mlp3"), as_task(tiny), graph, "corrupt")
    full = evaluator.full
    expected = reference(model, tiny, [True] * len(graph.edges), graph, "logit_diff", "corrupt")
    assert full["logit_diff"].mean == pytest.approx(-expected, rel=1e-5)  # reported = -minimised
    assert abs(full["kl"].mean) < 1e-5 and full["l2"].mean == 0
    result = evaluator.evaluate(random_kept(graph, 3))
    assert result.metrics["logit_diff"].higher_is_better
    assert not result.metrics["kl"].higher_is_better


def test_full_circuit_is_1_and_empty_circuit_is_0(tiny_models, tiny_tasks):
    model = tiny_models["attn2"]
    graph = build_graph(model_shape(model.cfg).graph_shape())
    evaluator = CircuitEvaluator(loaded(tiny_models, "attn2"), as_task(tiny_tasks["attn2"]),
                                 graph, "corrupt")
    n = len(graph.edges)
    full = evaluator.evaluate([True] * n)
    empty = evaluator.evaluate([False] * n)
    for name in evaluator.metrics:
        assert full.metrics[name].faithfulness == 1.0
        assert full.metrics[name].complement_faithfulness == 0.0
        assert empty.metrics[name].faithfulness == 0.0
        assert empty.metrics[name].complement_faithfulness == 1.0
    assert evaluator.passes == 0  # the recordings answer both


def test_per_prompt_spread_matches_the_reference_prompt_by_prompt(tiny_models, tiny_tasks):
    model, tiny = tiny_models["nonorm2"], tiny_tasks["nonorm2"]
    graph = build_graph(model_shape(model.cfg).graph_shape())
    evaluator = CircuitEvaluator(loaded(tiny_models, "nonorm2"), as_task(tiny), graph,
                                 "corrupt", metrics=["logit_diff", "kl"])
    kept = random_kept(graph, 11)
    spread = evaluator.evaluate(kept).metrics["logit_diff"].circuit
    removed = {e.name for e in graph.edges if not kept[e.index]}
    per_prompt = []
    for i in range(len(tiny.clean)):
        one = [tiny.clean[i:i + 1], tiny.corrupt[i:i + 1], tiny.positions[i:i + 1],
               tiny.answers[i:i + 1], tiny.wrong_answers[i:i + 1]]
        per_prompt.append(-circuit_metric(model, *one, removed, metric="logit_diff"))
    assert spread.per_prompt == pytest.approx(per_prompt, rel=1e-4, abs=1e-5)
    values = torch.tensor(per_prompt, dtype=torch.float64)
    assert spread.std == pytest.approx(float(values.std(correction=0)), rel=1e-4)
    assert (spread.min, spread.max) == pytest.approx((min(per_prompt), max(per_prompt)), rel=1e-4)
    # the mean is over positions (as the search's metric), not over prompts
    weights = torch.tensor([len(p) for p in tiny.positions], dtype=torch.float64)
    assert spread.mean == pytest.approx(float((values * weights).sum() / weights.sum()), rel=1e-4)


def test_unsupported_and_unknown_metrics_and_a_foreign_graph(tiny_models, tiny_tasks):
    model, tiny = tiny_models["attn2"], tiny_tasks["attn2"]
    graph = build_graph(model_shape(model.cfg).graph_shape())
    no_answers = Task(name="plain", description="", source="test", model=None, metric="kl",
                      threshold=0.1, ablation="corrupt", seed=0, clean=tiny.clean,
                      corrupt=tiny.corrupt, positions=[[0] for _ in tiny.clean], answers=None,
                      wrong_answers=None)
    evaluator = CircuitEvaluator(loaded(tiny_models, "attn2"), no_answers, graph, "corrupt")
    assert evaluator.metrics == ["kl", "nll", "l2"]  # position 0 has a next token
    with pytest.raises(AcdcError, match="logit_diff needs an answer and a wrong answer"):
        CircuitEvaluator(loaded(tiny_models, "attn2"), no_answers, graph, "corrupt",
                         metrics=["logit_diff"])
    with pytest.raises(AcdcError, match="unknown metric 'accuracy'"):
        CircuitEvaluator(loaded(tiny_models, "attn2"), no_answers, graph, "corrupt",
                         metrics=["accuracy"])
    other = build_graph(GraphShape(3, 4, False))
    with pytest.raises(GraphError, match="is not the graph of model attn2"):
        CircuitEvaluator(loaded(tiny_models, "attn2"), as_task(tiny), other, "corrupt")


# --------------------------------------------------------------------------- areas and rankings


def test_cpr_and_cmd_of_hand_made_curves():
    xs = list(MIB_FRACTIONS)
    assert cpr(xs, [1.0] * 10) == pytest.approx(0.999) and cmd(xs, [1.0] * 10) == 0
    # f = x: the trapezoid rule is exact on a straight line
    assert cpr(xs, xs) == pytest.approx((1 - 0.001 ** 2) / 2)
    assert cmd(xs, xs) == pytest.approx(0.999 - (1 - 0.001 ** 2) / 2)
    # f above 1 counts towards CPR and, as |1 - f|, towards CMD
    assert cpr([0.0, 1.0], [2.0, 2.0]) == pytest.approx(2.0)
    assert cmd([0.0, 1.0], [2.0, 0.0]) == pytest.approx(1.0)
    assert cpr([0.0, 0.5, 1.0], [0.0, 0.0, 1.0]) == pytest.approx(0.25)
    assert cpr([0.0, 1.0], [None, 1.0]) is None and cmd([0.0, 1.0], [1.0, None]) is None
    with pytest.raises(ValueError):
        cpr([0.5, 0.1], [1.0, 1.0])
    assert normalised(1.0, full=2.0, empty=2.0) is None


def test_rankings_become_scores_unscored_and_unnamed_edges_last():
    ranking = [(0, 0.1), (1, None), (2, -0.5), (3, 0.5), (4, float("nan")), (5, float("inf"))]
    scores, n_scored = ranking_scores(ranking, 7)
    assert scores == [0.1, None, -0.5, 0.5, None, float("inf"), None] and n_scored == 4
    assert ranking_scores(ranking_from_scores([None, 0.2, -0.3]), 3) == ([None, 0.2, -0.3], 2)
    with pytest.raises(GraphError, match="ranked twice"):
        ranking_scores([(0, 1.0), (0, 2.0)], 3)
    with pytest.raises(GraphError, match="not one of the graph's 0..2"):
        ranking_scores([(3, 1.0)], 3)
    assert [edges_at(f, 32491) for f in (0.001, 0.002, 0.5, 1.0)] == [32, 64, 16245, 32491]
    assert edges_at(0.001, 58) == 0


def test_pruning_keeps_only_paths_from_input_to_logits():
    graph = build_graph(GraphShape(2, 1, True, "head"))
    path = ["input->a0.h0", "a0.h0->a1.h0", "a1.h0->logits"]
    dangling = ["m0->logits",  # m0 reads nothing
                "input->m1", "a0.h0->m1"]  # m1 writes to nothing
    kept = [e.name in path + dangling for e in graph.edges]
    assert [e.name for e in graph.edges if prune_circuit(graph, kept)[e.index]] == path
    # q/k/v granularity: a head input is a node; without its direct edge it leads nowhere
    graph = build_graph(GraphShape(1, 1, False, "qkv"))
    names = ["input->a0.h0<q>", "input->a0.h0<k>", "a0.h0<k>->a0.h0", "a0.h0->logits",
             "input->logits"]
    kept = [e.name in names for e in graph.edges]
    pruned = {e.name for e in graph.edges if prune_circuit(graph, kept)[e.index]}
    assert pruned == set(names) - {"input->a0.h0<q>"}
    assert not any(prune_circuit(graph, [e.name == "a0.h0<q>->a0.h0" for e in graph.edges]))
    full = [True] * len(graph.edges)
    assert prune_circuit(graph, full) == full


def test_curve_points_are_pruned_top_k_circuits(tiny_models, tiny_tasks):
    model, tiny = tiny_models["mlp3"], tiny_tasks["mlp3"]
    graph = build_graph(model_shape(model.cfg).graph_shape())
    evaluator = CircuitEvaluator(loaded(tiny_models, "mlp3"), as_task(tiny), graph, "corrupt",
                                 metrics=["kl", "logit_diff"])
    rng = random.Random(2)
    scores = [rng.gauss(0, 1) if rng.random() < 0.8 else None for _ in graph.edges]
    curve = evaluator.curve(ranking_from_scores(scores))
    assert curve.fractions == list(MIB_FRACTIONS)
    assert curve.n_scored == sum(s is not None for s in scores)
    assert curve.points[-1].faithfulness == {"kl": 1.0, "logit_diff": 1.0}
    residual = [e for e in graph.edges if e.kind == "residual"]
    assert curve.n_edges_total == len(residual)
    assert curve.points[0].n_edges == edges_at(0.001, len(residual))
    assert evaluator.passes <= len(MIB_FRACTIONS) - 1
    point = curve.points[7]  # 20 % of the residual edges
    # plainly: the top residual edges by |score| (unscored last, ties in graph order), each
    # direct edge kept when its q/k/v input is fed, then pruned
    size = {e.index: -1.0 if scores[e.index] is None else abs(scores[e.index]) for e in residual}
    top_residual = sorted(size, key=lambda i: -size[i])[:point.n_edges]
    top = [e.index in top_residual for e in graph.edges]
    fed = {graph.edges[i].receiver.name for i in top_residual}
    for edge in graph.edges:
        if edge.kind == "direct":
            top[edge.index] = edge.receiver.name in fed
    kept = prune_circuit(graph, top)
    assert point.n_edges_kept == sum(kept[e.index] for e in residual) <= point.n_edges
    expected = reference(model, tiny, kept, graph, "kl", "corrupt")
    assert point.values["kl"] == pytest.approx(expected, rel=1e-4, abs=2e-5)
    assert curve.cpr["kl"] == pytest.approx(cpr(curve.fractions, curve.faithfulness("kl")))
    unpruned = evaluator.curve(ranking_from_scores(scores), prune=False)
    assert unpruned.points[7].n_edges_kept == point.n_edges


def test_plot_without_matplotlib_warns_and_writes_nothing(tmp_path, monkeypatch):
    from acdc.errors import RunWarning
    from acdc.evaluation.measures import CurvePoint, FaithfulnessCurve
    from acdc.evaluation.plots import plot_curve

    points = tuple(CurvePoint(x, 1, 1, {"kl": 0.0}, {"kl": x}) for x in (0.1, 1.0))
    curve = FaithfulnessCurve(points, {"kl": 0.5}, {"kl": 0.5}, 10, 10, True)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.warns(RunWarning, match="pip install matplotlib"):
        assert plot_curve(curve, tmp_path / "c") == []
    assert list(tmp_path.iterdir()) == []


def test_coinciding_curves_are_drawn_apart_and_named(tmp_path):
    """KL and NLL often give the same f at every size: the later line must not hide the
    earlier one (its own line style and a larger hollow marker) and the legend says so."""
    from acdc.evaluation.faithfulness import CurvePoint, FaithfulnessCurve
    from acdc.evaluation.plots import curve_series, plot_curve

    f = {"kl": [0.2, 0.9], "nll": [0.2 + 1e-5, 0.9], "logit_diff": [0.1, 0.7]}
    points = tuple(CurvePoint(x, 1, 1, {}, {m: v[i] for m, v in f.items()})
                   for i, x in enumerate((0.1, 1.0)))
    curve = FaithfulnessCurve(points, dict.fromkeys(f, 0.5), dict.fromkeys(f, 0.5), 10, 10, True)
    series = {s["name"]: s for s in curve_series(curve)}
    assert series["nll"]["label"].endswith("; on the kl line)")
    assert "on the" not in series["kl"]["label"] + series["logit_diff"]["label"]
    looks = {(s["linestyle"], s["marker"]) for s in series.values()}
    assert len(looks) == 3
    assert series["nll"]["markersize"] > series["kl"]["markersize"]
    pytest.importorskip("matplotlib")
    svg, _ = plot_curve(curve, tmp_path / "c")
    assert "on the kl line" in svg.read_text()


# --------------------------------------------------------------------------- the CLI


TINY_CONFIG = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32,
               "act_fn": "gelu", "normalization_type": "LN", "d_vocab": 20, "n_ctx": 12}
PROMPTS = [
    {"clean": [1, 2, 3, 4, 5, 6], "corrupt": [1, 2, 9, 4, 5, 7], "answer": [3], "wrong": [9]},
    {"clean": [3, 8, 2, 2, 9, 1], "corrupt": [3, 8, 5, 2, 9, 4], "answer": [2, 4], "wrong": [5]},
    {"clean": [7, 7, 1, 0, 4, 3, 2], "corrupt": [7, 7, 6, 0, 4, 11, 2], "answer": [1],
     "wrong": [6, 0]},
]




@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("eval-ckpt") / "model"
    model = build_model(TINY_CONFIG, seed=1)
    save_checkpoint(model, directory, config=TINY_CONFIG)
    return directory


def write_task(path: Path, **fields) -> Path:
    data = {"name": "tiny", "metric": "kl", "threshold": 0.002, "prompts": PROMPTS, **fields}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, checkpoint) -> Path:
    """A finished `circuit discover` run with a task metric, zero ablation, head granularity
    and a seed: every default the evaluation must take from the run."""
    directory = tmp_path_factory.mktemp("eval-run")
    task = write_task(directory / "tiny.yaml", model=str(checkpoint))
    result = invoke("discover", "--task", task, "--out", directory / "run", "--metric",
                    "logit_diff", "--ablation", "zero", "--granularity", "head", "--seed", "3",
                    "--threshold", "0.05", "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    return directory / "run"


def test_evaluate_takes_every_default_from_the_run(run_dir):
    result = invoke("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    data = json.loads((run_dir / "evaluation.json").read_text())
    circuit = json.loads((run_dir / "circuit.json").read_text())
    assert data["format"] == "evaluation/1" and data["ablation"] == "zero"
    assert data["granularity"] == "head" and data["seed"] == 3 and data["task"] == "tiny"
    assert list(data["metrics"]) == ["kl", "logit_diff", "prob_diff", "nll", "l2"]
    # the run's own metric, reported positive, is metric_circuit negated
    logit_diff = data["metrics"]["logit_diff"]
    assert logit_diff["higher_is_better"] is True
    assert -logit_diff["circuit"]["mean"] == pytest.approx(circuit["metric_circuit"], abs=1e-5)
    assert -logit_diff["full"]["mean"] == pytest.approx(circuit["metric_full"], abs=1e-5)
    check = data["run_metric"]
    assert check["metric"] == "logit_diff" and check["agrees"] is True
    assert data["n_edges_kept"] == circuit["n_edges_kept"]
    spread = logit_diff["circuit"]
    assert len(spread["per_prompt"]) == 3 and spread["min"] <= spread["mean"] <= spread["max"]
    assert data["cost"] == {**data["cost"], "recorded_runs": 1}  # zero ablation: clean only
    assert data["curve"] is None
    lines = result.stdout.splitlines()
    assert lines[0].split()[:7] == ["METRIC", "FULL", "EMPTY", "CIRCUIT", "F(C)", "COMPLEMENT",
                                    "F(COMPL)"]
    assert [line.split()[0] for line in lines[1:6]] == ["kl", "logit_diff", "prob_diff", "nll",
                                                        "l2"]
    assert "warning" not in result.stderr


def test_evaluate_a_circuit_file_with_options(run_dir, tmp_path):
    out = tmp_path / "sub" / "e.json"
    result = invoke("evaluate", run_dir / "circuit.json", "--metric", "kl,l2", "--metric",
                    "kl", "--ablation", "corrupt", "--out", out, "--curve", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data = json.loads(out.read_text())
    assert list(data["metrics"]) == ["kl", "l2"] and data["ablation"] == "corrupt"
    assert data["run_metric"] is None  # logit_diff was not evaluated
    curve = data["curve"]
    assert curve["fractions"] == list(MIB_FRACTIONS) and len(curve["points"]) == 10
    assert set(curve["cpr"]) == {"kl", "l2"} and curve["points"][-1]["faithfulness"]["kl"] == 1
    assert "ACDC scores" in curve["ranking"]
    assert "<svg" in (tmp_path / "sub" / "e-curve.svg").read_text()
    assert (tmp_path / "sub" / "e-curve.png").read_bytes().startswith(b"\x89PNG")
    assert "curve kl: CPR " in result.stdout
    assert data["cost"]["patched_passes"] <= 2 + 9


def test_evaluate_a_bare_circuit_file_needs_its_task(run_dir, tmp_path, checkpoint):
    bare = tmp_path / "bare.json"
    bare.write_text((run_dir / "circuit.json").read_text())  # no run.yaml beside it
    result = invoke("evaluate", bare)
    assert result.exit_code == 1 and "tiny" in error_line(result)  # not a bundled task name
    task = write_task(tmp_path / "tiny.yaml", model=str(checkpoint))
    result = invoke("evaluate", bare, "--task", task, "--quiet")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert data["ablation"] == "zero"  # from the circuit file
    assert data["run_metric"]["metric"] == "logit_diff"


def test_evaluate_errors(run_dir, tmp_path, checkpoint):
    other = tmp_path / "other"
    save_checkpoint(build_model({**TINY_CONFIG, "n_layers": 3}, seed=0), other,
                    config={**TINY_CONFIG, "n_layers": 3})
    result = invoke("evaluate", run_dir, "--model", other)
    assert result.exit_code == 1
    line = error_line(result)
    assert "2 layers" in line and "3 layers" in line and "--model" in line
    result = invoke("evaluate", tmp_path / "missing")
    assert result.exit_code == 1 and "no such run directory" in error_line(result)
    result = invoke("evaluate", tmp_path)
    assert result.exit_code == 1 and "has no circuit.json" in error_line(result)
    result = invoke("evaluate", run_dir, "--metric", "accuracy")
    assert result.exit_code == 1 and "accuracy" in error_line(result)
    plain = write_task(tmp_path / "plain.yaml", model=str(checkpoint),
                       prompts=[{k: p[k] for k in ("clean", "corrupt")} for p in PROMPTS])
    result = invoke("evaluate", run_dir, "--task", plain, "--metric", "prob_diff")
    assert result.exit_code == 1 and "prob_diff needs an answer" in error_line(result)
    result = invoke("evaluate", run_dir, "--task", plain, "--quiet")  # kl and l2 only
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", run_dir, "--ablation", "resample")
    assert result.exit_code == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = invoke("evaluate", broken)
    assert result.exit_code == 1 and "not valid JSON" in error_line(result)
    result = invoke("evaluate", run_dir, "--out", tmp_path)
    assert result.exit_code == 1 and "is a directory" in error_line(result)


def test_evaluate_warns_when_the_task_changed_since_the_run(run_dir, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("circuit.json", "run.yaml"):
        (copy / name).write_text((run_dir / name).read_text())
    record = yaml.safe_load((copy / "run.yaml").read_text())
    edited = yaml.safe_load(Path(record["task_file"]).read_text())
    edited["prompts"] = edited["prompts"][:2]
    record["task_file"] = str(write_task(tmp_path / "edited.yaml", **edited))
    (copy / "run.yaml").write_text(yaml.safe_dump(record))
    result = invoke("evaluate", copy, "--quiet")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "metric_circuit" in warnings[0]
    assert json.loads((copy / "evaluation.json").read_text())["run_metric"]["agrees"] is False


def test_evaluate_the_bundled_demo_run(tmp_path):
    out = tmp_path / "demo"
    result = invoke("discover", "--task", "demo", "--out", out, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", out, "--curve")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "evaluation.json").read_text())
    circuit = json.loads((out / "circuit.json").read_text())
    assert data["run_metric"]["agrees"] is True
    assert data["metrics"]["kl"]["circuit"]["mean"] == pytest.approx(circuit["metric_circuit"],
                                                                     rel=1e-5)
    assert 0.5 < data["metrics"]["kl"]["faithfulness"] <= 1
    assert data["metrics"]["logit_diff"]["full"]["mean"] > 0
    assert data["cost"]["patched_passes"] <= 2 + 10


def test_evaluate_needs_a_metric(run_dir):
    result = invoke("evaluate", run_dir, "--metric", " , ")
    assert result.exit_code == 1 and "--metric: give one or more of kl" in error_line(result)
