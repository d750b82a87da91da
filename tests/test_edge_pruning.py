"""Edge pruning (`acdc.methods.edge_pruning`): settings, the readout, recovery of known
circuits (a hand-set model; the bundled tracr models with the tasks' defaults), seeds,
interruption and node masks."""

from __future__ import annotations

import pytest
import torch
from conftest import KNOWN_CIRCUIT, known_circuit_model, known_circuit_task, make_model, make_task

from acdc.core.loading import LoadedModel
from acdc.core.models import extract_weights, model_shape
from acdc.core.settings import CommonSettings
from acdc.core.tasks.spec import TaskSpec
from acdc.core.tasks.values import Task
from acdc.errors import AcdcError
from acdc.methods.base import make_settings, run_method
from acdc.methods.edge_pruning import METHOD, EdgePruningSettings, readout
from acdc.methods.registry import get_method

# fast settings for the tiny models: a few hundred steps instead of thousands
FAST = dict(steps=1000, lr=0.1, reg_lr=0.001, sparsity_warmup=0.6, lr_warmup=0.1,
            quadratic_only=True)


def known():
    model = known_circuit_model()
    loaded = LoadedModel("known", extract_weights(model), None, model_shape(model.cfg))
    return loaded, known_circuit_task()


def tiny(name: str = "attn2"):
    model = make_model(name)
    t = make_task(11)
    task = Task(name="tiny", description="", source="tests", model=None, metric="kl",
                threshold=0.0, ablation="corrupt", seed=0, clean=t.clean, corrupt=t.corrupt,
                positions=t.positions, answers=t.answers, wrong_answers=t.wrong_answers)
    return LoadedModel(name, extract_weights(model), None, model_shape(model.cfg)), task


def kept_names(circuit) -> list[str]:
    return [e.name for e in circuit.graph.edges if circuit.kept[e.index]]


# --------------------------------------------------------------------------- settings


def test_registered_with_its_options():
    assert get_method("edge-pruning") is METHOD
    assert METHOD.returns == "kept" and "Bhaskar" in METHOD.citation
    spec = TaskSpec.from_dict({"threshold": 0.1, "prompts": [{"clean": [1], "corrupt": [2]}]})
    settings = make_settings(METHOD, spec, {"top_n": 5, "steps": 10, "lr": 0.1})
    assert (settings.top_n, settings.steps, settings.lr) == (5, 10, 0.1)
    assert settings.ramp_steps == 8 and settings.warmup_steps == 1  # 5/6 and 1/15 of 10


@pytest.mark.parametrize("options, message", [
    ({}, "give one of --top-n, --edges-fraction or --target-sparsity"),
    ({"top_n": 3, "edges_fraction": 0.1}, "(got top_n and edges_fraction)"),
    ({"top_n": -1}, "--top-n must be a whole number >= 0"),
    ({"edges_fraction": 1.5}, "--edges-fraction must be in [0, 1]"),
    ({"target_sparsity": 3}, "--target-sparsity must be in [0, 2]"),
    ({"top_n": 3, "steps": 0}, "--steps must be a whole number >= 1"),
    ({"top_n": 3, "sparsity_warmup": 200}, "--sparsity-warmup is a fraction of --steps"),
    ({"top_n": 3, "lr": 0}, "--lr must be a number > 0"),
    ({"top_n": 3, "node_target_sparsity": 0.5}, "--node-target-sparsity needs --node-masks"),
])
def test_bad_settings_are_one_line(options, message):
    with pytest.raises(AcdcError) as caught:
        EdgePruningSettings(**options).validate()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_selection_rules_are_not_options():
    spec = TaskSpec.from_dict({"threshold": 0.1, "prompts": [{"clean": [1], "corrupt": [2]}]})
    with pytest.raises(AcdcError, match="--threshold is not an option of method edge-pruning"):
        make_settings(METHOD, spec, {"top_n": 5, "threshold": 0.1})


def test_targets():
    assert EdgePruningSettings(top_n=10).target(77) == pytest.approx(1 - 10 / 77)
    assert EdgePruningSettings(edges_fraction=0.25).target(100) == pytest.approx(0.75)
    assert EdgePruningSettings(target_sparsity=1.02).target(100) == 1.02
    assert EdgePruningSettings(top_n=10).n_closed(77) == 67
    assert EdgePruningSettings(edges_fraction=0.25).n_closed(10) == 8  # round(2.5) = 2 kept
    assert EdgePruningSettings(target_sparsity=0.9).n_closed(77) is None
    with pytest.raises(AcdcError, match="more than the graph's 5 residual edges"):
        EdgePruningSettings(top_n=6).target(5)


# --------------------------------------------------------------------------- readout


def test_readout_closes_the_expected_number_of_gates():
    # 3 saturated open, 4 saturated closed: expected closed 4, so exactly the 3 stay
    log_alpha = torch.tensor([9.0, -9.0, 8.0, -12.0, -7.0, 7.5, -10.0])
    assert readout(log_alpha).tolist() == [True, False, True, False, False, True, False]
    # a gate half-open counts half: round(4 + p_closed(0)) = 4 closed, the smallest soft mask
    with_middle = torch.cat([log_alpha, torch.tensor([0.0])])
    assert readout(with_middle).sum() == 4  # p_closed(0) = 0.17 rounds away
    # an explicit count closes that many, smallest log-alpha first
    assert readout(log_alpha, n_closed=5).tolist() == [True, False, True, False, False,
                                                       False, False]
    assert not readout(log_alpha, n_closed=7).any()
    # soft masks below the threshold are closed too: log-alpha -5 gives 0.0025 < 0.005
    assert readout(torch.tensor([9.0, -5.0]), n_closed=0).tolist() == [True, False]


# --------------------------------------------------------------------------- runs


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_known_circuit(seed):
    """The hand-set model (conftest): only five edges carry anything under zero ablation."""
    loaded, task = known()
    circuit = run_method(METHOD, loaded, task, CommonSettings("kl", "zero"),
                         EdgePruningSettings(top_n=3, **FAST), seed=seed)
    assert kept_names(circuit) == list(KNOWN_CIRCUIT)
    assert circuit.results["metric_circuit"] == pytest.approx(circuit.results["metric_full"],
                                                              abs=1e-6)
    # the scores rank the circuit's residual edges first
    scores = {e.name: circuit.scores[e.index] for e in circuit.graph.edges
              if e.kind == "residual"}
    inside = [scores[name] for name in KNOWN_CIRCUIT if name in scores]
    outside = [score for name, score in scores.items() if name not in KNOWN_CIRCUIT]
    assert min(inside) > max(outside)


def test_deterministic_for_a_seed_and_partial_on_interrupt():
    loaded, task = tiny()
    common = CommonSettings("kl", "corrupt")
    settings = EdgePruningSettings(edges_fraction=0.1, steps=8, lr=0.5)
    first = run_method(METHOD, loaded, task, common, settings, seed=3)
    again = run_method(METHOD, loaded, task, common, settings, seed=3)
    other = run_method(METHOD, loaded, task, common, settings, seed=4)
    assert first.scores == again.scores and first.kept == again.kept
    assert first.scores != other.scores
    assert first.results["steps_done"] == 8 and first.results["partial"] is False
    assert all(s is None for e, s in zip(first.graph.edges, first.scores, strict=True)
               if e.kind == "direct")
    reports = []

    def stop(progress):
        reports.append(progress)
        raise KeyboardInterrupt

    partial = run_method(METHOD, loaded, task, common, settings, seed=3, on_progress=stop)
    assert partial.results["partial"] is True and partial.results["steps_done"] == 1
    assert reports[0].step == 1 and reports[0].steps == 8 and reports[0].method == "edge-pruning"
    assert reports[0].eta_s >= 0 and "step 1/8" in reports[0].describe()
    assert "metric_circuit" in partial.results


def test_node_masks():
    loaded, task = tiny("mlp3")
    settings = EdgePruningSettings(edges_fraction=0.2, steps=6, lr=0.5, node_masks=True,
                                   node_target_sparsity=0.5)
    circuit = run_method(METHOD, loaded, task, CommonSettings("kl", "corrupt"), settings)
    assert circuit.results["steps_done"] == 6
    # every kept edge's sender is a node whose mask reads out on; its score is at most the
    # edge's own log-alpha
    assert sum(circuit.kept) > 0
    for edge in circuit.graph.edges:
        if edge.kind == "residual":
            assert circuit.scores[edge.index] is not None


def ranking_auc(circuit, reference) -> float:
    """Edge ROC AUC of the circuit's scores: the top-n circuits for every n (direct edges
    following their inputs), against the reference."""
    from acdc.core.selection import Selection, select_edges
    from acdc.evaluation.roc import sweep_roc

    graph = circuit.graph
    n = sum(1 for e in graph.edges if e.kind == "residual")
    circuits = [(float(k), select_edges(graph, circuit.scores, Selection(top_n=k)))
                for k in range(n + 1)]
    return sweep_roc(graph, circuits, reference).auc


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tracr-proportion", "tracr-reverse"])
def test_recovers_the_tracr_circuits_with_the_tasks_defaults(name):
    """Zero ablation and the task's metric, as the paper; the task files' method_defaults;
    the size of the canonical circuit: exactly the canonical circuit, ranking AUC 1."""
    from acdc.core.loading import load_model
    from acdc.core.tasks.reading import read_task
    from acdc.core.tasks.resolving import resolve_task
    from acdc.evaluation.canonical import load_canonical

    spec = read_task(name)
    loaded = load_model(spec.model)
    task = resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    graph_shape = loaded.shape.graph_shape("qkv")
    from acdc.core.graph import build_graph

    reference = load_canonical(name, build_graph(graph_shape))
    size = sum(1 for e, k in zip(build_graph(graph_shape).edges, reference, strict=True)
               if k and e.kind == "residual")
    settings = make_settings(METHOD, spec, {"top_n": size})
    assert settings.steps == 8000 and settings.quadratic_only  # the task's defaults
    circuit = run_method(METHOD, loaded, task, CommonSettings(spec.metric, spec.ablation),
                         settings, seed=0)
    assert list(circuit.kept) == list(reference)
    assert ranking_auc(circuit, reference) == 1.0
    assert circuit.results["metric_circuit"] < 1e-6


def test_a_run_through_the_pipeline(tmp_path):
    """`acdc.run` with an options dict: the task's method_defaults, the options given, the
    files written (the circuit, run.yaml with every setting), scores and results."""
    import json

    import yaml

    from acdc import run as pipeline

    job = pipeline.start_run("tracr-proportion", method="edge-pruning", top_n=5, steps=30,
                             out=tmp_path / "out")
    assert job.settings.settings.lr == 0.03 and job.settings.settings.steps == 30
    outcome = pipeline.execute(job)
    pipeline.write_outputs(job, outcome, render_svg=False)
    job.close()
    data = yaml.safe_load((tmp_path / "out" / "run.yaml").read_text())
    assert data["method"] == "edge-pruning" and data["top_n"] == 5 and data["lr"] == 0.03
    assert data["quadratic_only"] is True and data["partial"] is False
    assert "--top-n 5" in data["repeat"]
    circuit = json.loads((tmp_path / "out" / "circuit.json").read_text())
    assert circuit["method"] == "edge-pruning"
    assert outcome.circuit.results["steps_done"] == 30
    assert all(0 < s < 1 for e, s in zip(outcome.circuit.graph.edges, outcome.circuit.scores,
                                          strict=True) if e.kind == "residual")
