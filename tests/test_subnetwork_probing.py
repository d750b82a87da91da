"""Subnetwork probing (`acdc.methods.subnetwork_probing`): the regulariser, the node circuit
read from gates, recovery of a known circuit, seeds, readouts and interruption."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import known_circuit_model, known_circuit_task, make_model, make_task

from acdc.core.graph import GraphShape, build_graph
from acdc.core.loading import LoadedModel
from acdc.core.models import extract_weights, model_shape
from acdc.core.settings import CommonSettings
from acdc.core.tasks.spec import TaskSpec
from acdc.core.tasks.values import Task
from acdc.errors import AcdcError
from acdc.methods.base import make_settings, run_method
from acdc.methods.registry import get_method
from acdc.methods.subnetwork_probing import INIT, METHOD, Gates, SpSettings, _circuit, regulariser

# The hand-set model's node circuit: a0.h0 and a1.h0 through their values, and every edge
# among input, those two heads' value inputs and logits.
KNOWN_NODE_CIRCUIT = ["input->a0.h0<v>", "a0.h0<v>->a0.h0", "input->a1.h0<v>",
                      "a0.h0->a1.h0<v>", "a1.h0<v>->a1.h0", "input->logits", "a0.h0->logits",
                      "a1.h0->logits"]


def kept_names(circuit) -> list[str]:
    return [e.name for e in circuit.graph.edges if circuit.kept[e.index]]


def test_registered_and_options():
    assert get_method("sp") is METHOD and METHOD.returns == "kept"
    spec = TaskSpec.from_dict({"threshold": 0.1, "prompts": [{"clean": [1], "corrupt": [2]}]})
    settings = make_settings(METHOD, spec, {"lambda_l0": 0.5, "steps": 7})
    assert (settings.lambda_l0, settings.steps, settings.lr) == (0.5, 7, 1e-3)
    with pytest.raises(AcdcError, match="--lambda must be a number >= 0"):
        SpSettings(lambda_l0=-1).validate()
    with pytest.raises(AcdcError, match="unknown readout"):
        SpSettings(readout="mean").validate()  # type: ignore[arg-type]
    with pytest.raises(AcdcError, match="use --granularity qkv"):
        assert METHOD.check is not None
        METHOD.check(SpSettings(), CommonSettings(granularity="head"))


def test_regulariser_is_the_mean_over_hook_points():
    graph = build_graph(GraphShape(2, 3, True))
    gates = Gates.of(graph)
    assert len(gates.direct) == 2 * 3 * 3 and len(gates.mlps) == 2
    direct = torch.full((18,), INIT)
    mlps = torch.full((2,), INIT)
    assert math.isclose(float(regulariser(direct, mlps, gates)), 0.9611, abs_tol=1e-4)
    # one hook point (layer 0's queries) fully closed: 1/8 of the hook points at 0
    direct[:3] = -50
    assert math.isclose(float(regulariser(direct, mlps, gates)), 0.9611 * 7 / 8, abs_tol=1e-4)
    # an MLP weighs as much as a whole layer's queries
    mlps[0] = -50
    assert math.isclose(float(regulariser(direct, mlps, gates)), 0.9611 * 6 / 8, abs_tol=1e-4)


def test_circuit_from_gates():
    graph = build_graph(GraphShape(2, 1, True))
    gates = Gates.of(graph)  # direct: a0.h0 q, k, v, a1.h0 q, k, v; MLPs m0, m1
    alphas = [2.0, -1.0, -3.0, -1.0, -2.0, -4.0]
    on = [a >= 0 for a in alphas]
    kept, scores, nodes = _circuit(graph, gates, alphas, [1.0, -0.5], on, [True, False])
    names = {e.name for e in graph.edges if kept[e.index]}
    # a0.h0 lives through its query only; a1.h0 and m1 are closed; m0 is open
    assert names == {"input->a0.h0<q>", "a0.h0<q>->a0.h0", "input->m0", "a0.h0->m0",
                     "input->logits", "a0.h0->logits", "m0->logits"}
    logit = {name: math.log(p / (1 - p)) for name, p in nodes.items() if p is not None}
    assert logit == pytest.approx({"a0.h0": 2.0, "m0": 1.0, "a1.h0": -1.0, "m1": -0.5})
    by_name = {e.name: math.log(s / (1 - s)) for e in graph.edges
               if (s := scores[e.index]) is not None}
    assert by_name["a0.h0->m0"] == pytest.approx(1.0)
    assert by_name["input->a0.h0<k>"] == pytest.approx(-1.0)
    assert by_name["m0->a1.h0<v>"] == pytest.approx(-4.0)
    assert by_name["input->logits"] == pytest.approx(2.0)
    # score >= 1/2 is exactly the deterministic circuit
    assert all((s is not None and s >= 0.5) == kept[i] for i, s in enumerate(scores))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_a_known_node_circuit(seed):
    model = known_circuit_model()
    loaded = LoadedModel("known", extract_weights(model), None, model_shape(model.cfg))
    circuit = run_method(METHOD, loaded, known_circuit_task(), CommonSettings("kl", "zero"),
                         SpSettings(steps=500, lr=0.02, lambda_l0=1.0), seed=seed)
    assert kept_names(circuit) == KNOWN_NODE_CIRCUIT
    assert circuit.level == "node"
    assert circuit.results["heads_open"] == 2 and circuit.results["gates_open"] == 2
    assert circuit.results["metric_circuit"] == pytest.approx(circuit.results["metric_full"],
                                                              abs=1e-6)
    assert circuit.node_scores["a0.h0"] > 0.5 > circuit.node_scores["a1.h1"]


def test_seeds_readouts_and_interrupt():
    model = make_model("mlp3")
    t = make_task(12)
    task = Task(name="tiny", description="", source="tests", model=None, metric="kl",
                threshold=0.0, ablation="corrupt", seed=0, clean=t.clean, corrupt=t.corrupt,
                positions=t.positions, answers=t.answers, wrong_answers=t.wrong_answers)
    loaded = LoadedModel("mlp3", extract_weights(model), None, model_shape(model.cfg))
    common = CommonSettings("kl", "corrupt")
    settings = SpSettings(steps=5, lr=0.3, lambda_l0=1.0)
    first = run_method(METHOD, loaded, task, common, settings, seed=1)
    again = run_method(METHOD, loaded, task, common, settings, seed=1)
    assert first.scores == again.scores and first.kept == again.kept
    assert first.scores != run_method(METHOD, loaded, task, common, settings, seed=2).scores
    sampled = run_method(METHOD, loaded, task, common,
                         SpSettings(steps=5, lr=0.3, lambda_l0=1.0, readout="sample"), seed=1)
    assert sampled.scores == first.scores  # the same training; only the readout differs
    assert sampled.kept == run_method(METHOD, loaded, task, common, SpSettings(
        steps=5, lr=0.3, lambda_l0=1.0, readout="sample"), seed=1).kept

    def stop(progress):
        raise KeyboardInterrupt

    partial = run_method(METHOD, loaded, task, common, settings, seed=1, on_progress=stop)
    assert partial.results["partial"] is True and partial.results["steps_done"] == 1


def test_a_run_through_the_pipeline(tmp_path):
    from acdc import run as pipeline

    job = pipeline.start_run("tracr-reverse", method="sp", lambda_l0=0.5, steps=20,
                             out=tmp_path / "out")
    outcome = pipeline.execute(job)
    pipeline.write_outputs(job, outcome, render_svg=False)
    job.close()
    circuit = outcome.circuit
    assert circuit.level == "node" and circuit.settings["lambda_l0"] == 0.5
    assert set(circuit.node_scores) == {"a0.h0", "a1.h0", "a2.h0", "a3.h0", "m0", "m1", "m2",
                                        "m3"}
    assert (tmp_path / "out" / "circuit.json").is_file()
    with pytest.raises(AcdcError, match="is not an option of method sp"):
        pipeline.resolve_settings("tracr-reverse", method="sp", top_n=5)
