"""The attribution methods (EAP, EAP-IG) against slow references, finite differences and the
exact per-edge patching effect, on tiny random models.

The references (`reference_attribution.py`) share no code with the engine: TransformerLens
hooks, one mask per edge differentiated by autograd, or the receivers' gradients read by hooks.
Scores are compared in float64, where both sides agree to rounding, against a tolerance of
1e-5 relative; one case runs the engine in float32 (the default precision of a run).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import reference_acdc as ref
import reference_attribution as ra
import torch
import yaml
from conftest import make_model, make_task, model_config, randomize
from typer.testing import CliRunner

import cli
from acdc.core import forward
from acdc.core.architecture import model_shape
from acdc.core.graph import build_graph
from acdc.core.loading import LoadedModel
from acdc.core.models import build_model, extract_weights, save_checkpoint
from acdc.core.patching import PatchedModel, task_tensors
from acdc.core.selection import Selection, select_edges
from acdc.core.settings import CommonSettings
from acdc.core.tasks.spec import TaskSpec
from acdc.core.tasks.values import Task
from acdc.errors import AcdcError
from acdc.methods.attribution import EAP, EAP_IG, EapIgSettings, EapSettings, gradients
from acdc.methods.base import make_selection, make_settings, run_method

# The slow hooked references and tiny random models need TransformerLens 3.x (see conftest).
pytestmark = pytest.mark.hooked_transformer

RTOL = 1e-5
# A gated RMSNorm model besides the conftest ones (LayerNorm, none; attention-only, MLPs)
RMS_CONFIG = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 24,
              "act_fn": "silu", "gated_mlp": True, "normalization_type": "RMS",
              "d_vocab": 50, "n_ctx": 16}

_models: dict[tuple[str, torch.dtype], object] = {}


def model_of(name: str, dtype: torch.dtype = torch.float64):
    if (name, dtype) not in _models:
        if name == "rms_gated":
            model = build_model(RMS_CONFIG, seed=5)
            randomize(model, 5)
        else:
            model = make_model(name)
        _models[(name, dtype)] = model.to(dtype, print_details=False)
    return _models[(name, dtype)]


def task_of(name: str, metric: str, ablation: str, seed: int = 0) -> Task:
    tiny = make_task(200 + seed)
    return Task(name=f"tiny-{name}", description="random tokens", source="tests", model=None,
                metric=metric, threshold=0.0, ablation=ablation, seed=0, clean=tiny.clean,
                corrupt=tiny.corrupt, positions=tiny.positions, answers=tiny.answers,
                wrong_answers=tiny.wrong_answers)


def engine_scores(name: str, metric: str, ablation: str, granularity: str,
                  settings: EapSettings, dtype: torch.dtype = torch.float64, top_n: int = 10):
    model = model_of(name, dtype)
    loaded = LoadedModel(name, extract_weights(model), None, model_shape(model.cfg))
    method = EAP_IG if isinstance(settings, EapIgSettings) else EAP
    circuit = run_method(method, loaded, task_of(name, metric, ablation), CommonSettings(
        metric, ablation, granularity), settings, Selection(top_n=top_n))
    return {e.name: circuit.scores[e.index] for e in circuit.graph.edges}, circuit


def reference_problem(name: str, metric: str, ablation: str, granularity: str) -> ra.Problem:
    task = task_of(name, metric, ablation)
    return ra.Problem(model_of(name), task.clean, task.corrupt, task.positions, task.answers,
                      task.wrong_answers, metric, ablation, granularity)


def assert_close(engine: dict, reference: dict, rtol: float = RTOL, scale_rtol: float = 1e-9):
    """Every edge's score within rtol of the reference's (plus a floor far below the largest
    score, for scores that are zero up to rounding)."""
    assert set(engine) == set(reference)
    scale = max(abs(v) for v in reference.values())
    assert scale > 0
    bad = [(name, engine[name], value) for name, value in reference.items()
           if abs(engine[name] - value) > rtol * abs(value) + scale_rtol * scale]
    assert not bad, f"{len(bad)} of {len(reference)} edges differ, e.g. {bad[:5]}"


@dataclass(frozen=True)
class Case:
    model: str
    metric: str = "logit_diff"
    ablation: str = "corrupt"
    granularity: str = "qkv"
    ig_steps: int = 0  # 0: EAP

    def __str__(self) -> str:
        method = f"ig{self.ig_steps}" if self.ig_steps else "eap"
        return "-".join((self.model, method, self.metric, self.ablation, self.granularity))


CASES = [
    Case("attn2"),
    Case("attn2", "nll", "zero", "head"),
    Case("attn2", "kl", ig_steps=5),
    Case("mlp3"),
    Case("mlp3", "prob_diff", granularity="head"),
    Case("mlp3", "kl", "zero", ig_steps=3),
    Case("mlp3", "l2", "mean", "head", ig_steps=4),
    Case("mlp3", "logit_diff", "mean-positional"),
    Case("nonorm2", "logit_diff", "zero"),
    Case("nonorm2", "kl", "mean-positional", "head", ig_steps=5),
    Case("one_head", "nll"),
    Case("one_head", "logit_diff", "mean", ig_steps=2),
    Case("rms_gated", "logit_diff"),
    Case("rms_gated", "kl", "corrupt", "head", ig_steps=5),
    # the model families (conftest.FAMILIES)
    Case("neox2"),
    Case("neox2", "kl", "mean", "head", ig_steps=3),
    Case("gptj2", "nll", "zero"),
    Case("llama2"),
    Case("llama2", "prob_diff", "mean-positional", "head", ig_steps=4),
    Case("neo2", "logit_diff", "zero", ig_steps=3),
    Case("gemma2"),
    Case("gemma2", "nll", "zero", "head"),
    Case("gemma2", "kl", "mean", ig_steps=3),
    # EAP-IG with corrupt ablation: the pass at alpha = 0 is the ablated run (recorded there,
    # not apart), and the passes' gradients are summed before one contraction
    Case("mlp3", ig_steps=5),
    Case("mlp3", "nll", "corrupt", "head", ig_steps=3),
    Case("llama2", "kl", ig_steps=5),
    Case("neox2", "logit_diff", "corrupt", "head", ig_steps=4),
    Case("gemma2", "logit_diff", "corrupt", "head", ig_steps=3),
    Case("gemma2", "kl", ig_steps=2),
]
# With norms after each sublayer the receiver's gradient alone does not score a head's edge
# (`reference_attribution.py`): the per-edge masks are the reference there.
POST_NORM = frozenset({"gemma2"})


@pytest.mark.parametrize("case", CASES, ids=str)
def test_scores_match_the_hooked_reference(case):
    settings = (EapIgSettings(ig_steps=case.ig_steps) if case.ig_steps
                else EapSettings())
    engine, _ = engine_scores(case.model, case.metric, case.ablation, case.granularity, settings)
    problem = reference_problem(case.model, case.metric, case.ablation, case.granularity)
    alphas = settings.alphas
    if case.model in POST_NORM:
        assert_close(engine, problem.scores_by_masks(alphas))
        return
    by_gradients = problem.scores_by_gradients(alphas)
    assert_close(engine, by_gradients)
    if not case.ig_steps:  # EAP: also minus the derivative of the metric by each edge's mask
        assert_close(engine, problem.scores_by_masks())
    elif case.ig_steps <= 3:  # the masks give EAP-IG too (the clean run's deltas held fixed)
        assert_close(engine, problem.scores_by_masks(alphas))


def test_float32_scores_match_the_reference():
    """The default precision: float32 scores within 1e-4 of the largest score."""
    engine, _ = engine_scores("mlp3", "logit_diff", "corrupt", "qkv", EapSettings(),
                              torch.float32)
    reference = reference_problem("mlp3", "logit_diff", "corrupt", "qkv").scores_by_masks()
    assert_close(engine, reference, rtol=0, scale_rtol=1e-4)


def test_float32_eap_ig_scores_match_the_reference():
    """EAP-IG in float32, its passes' gradients summed before one contraction: within 1e-4 of
    the largest score."""
    settings = EapIgSettings(ig_steps=5)
    engine, _ = engine_scores("mlp3", "logit_diff", "corrupt", "qkv", settings, torch.float32)
    reference = reference_problem("mlp3", "logit_diff", "corrupt", "qkv").scores_by_gradients(
        settings.alphas)
    assert_close(engine, reference, rtol=0, scale_rtol=1e-4)


@pytest.mark.parametrize("name", ["mlp3", "llama2", "neox2", "gemma2"])
def test_recorded_runs_give_the_patched_models_own(name):
    """EAP-IG's pass at alpha = 0 (from the corrupted prompts' embedding) records the ablated
    run and `record_run` the clean run: the patched model built from them holds what it
    records itself (to rounding); another ablation refuses a recorded ablated run."""
    model = model_of(name)
    weights = extract_weights(model)
    graph = build_graph(model_shape(model.cfg).graph_shape("qkv"))
    t = task_tensors(task_of(name, "logit_diff", "corrupt"), "cpu", weights.causal, graph.shape)
    clean_run, clean_logits = gradients.record_run(
        weights, graph, forward.embed(weights, t.clean), t.pos_batch, t.pos_index)
    first = gradients.differentiate(weights, graph, forward.embed(weights, t.corrupt),
                                    t.pos_batch, t.pos_index, lambda _: torch.sum, record=True)
    assert first.recorded is not None
    with torch.no_grad():
        own = PatchedModel(weights, graph, t.clean, t.corrupt, t.pos_batch, t.pos_index,
                           "corrupt", t.lengths)
        given = PatchedModel(weights, graph, t.clean, t.corrupt, t.pos_batch, t.pos_index,
                             "corrupt", t.lengths, clean_run, None, first.recorded)
    close = dict(rtol=1e-9, atol=1e-10)
    assert own.ablated is not None and given.ablated is not None
    torch.testing.assert_close(given.ablated, own.ablated, **close)
    torch.testing.assert_close(given.delta, own.delta, **close)
    for a, b in [*zip(given.ablated_qkv or [], own.ablated_qkv or [], strict=True),
                 *zip(given.clean_qkv or [], own.clean_qkv or [], strict=True),
                 *zip(given.ablated_z, own.ablated_z, strict=True),
                 *zip(given.clean_z, own.clean_z, strict=True)]:
        torch.testing.assert_close(a, b, **close)
    torch.testing.assert_close(given.clean_logits, own.clean_logits, **close)
    torch.testing.assert_close(clean_logits, own.clean_logits, **close)
    with pytest.raises(ValueError, match="corrupt ablation"):
        PatchedModel(weights, graph, t.clean, t.corrupt, t.pos_batch, t.pos_index, "zero",
                     t.lengths, None, None, first.recorded)


@pytest.mark.parametrize("name,granularity,ablation", [("attn2", "qkv", "corrupt"),
                                                       ("mlp3", "head", "mean"),
                                                       ("one_head", "qkv", "zero")])
def test_eap_score_is_the_derivative_of_the_metric(name, granularity, ablation):
    """Each edge's EAP score equals the finite difference of the metric when that edge's mask
    (and only it) moves from 1 by a small step (central difference, float64)."""
    engine, _ = engine_scores(name, "logit_diff", ablation, granularity, EapSettings())
    problem = reference_problem(name, "logit_diff", ablation, granularity)
    step = 1e-4
    finite = {}
    with torch.no_grad():
        for edge in problem.edges:
            down = problem.masked_metric({edge.name: 1 - step})
            up = problem.masked_metric({edge.name: 1 + step})
            finite[edge.name] = float(down - up) / (2 * step)  # removal moves the mask down
    assert_close(engine, finite, rtol=1e-6, scale_rtol=1e-8)


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out

    ra_, rb = torch.tensor(ranks(a)), torch.tensor(ranks(b))
    ra_, rb = ra_ - ra_.mean(), rb - rb.mean()
    return float((ra_ * rb).sum() / (ra_.norm() * rb.norm()))


@pytest.mark.parametrize("name,metric,ablation", [("attn2", "logit_diff", "corrupt"),
                                                  ("mlp3", "logit_diff", "corrupt"),
                                                  ("mlp3", "kl", "corrupt"),
                                                  ("nonorm2", "nll", "mean")])
def test_scores_beside_the_exact_patching_effect(name, metric, ablation, capsys):
    """The exact effect of removing each edge alone from the full graph (ACDC's score for an
    edge of the full graph, from the slow reference) next to EAP's and EAP-IG's estimates: the
    rank correlation is reported (printed), and only checked to be positive."""
    task = task_of(name, metric, ablation)
    model = model_of(name)
    base = ref.circuit_metric(model, task.clean, task.corrupt, task.positions, task.answers,
                              task.wrong_answers, set(), metric, ablation)
    ig, _ = engine_scores(name, metric, ablation, "qkv", EapIgSettings(ig_steps=5))
    exact = {}
    for edge in ig:
        exact[edge] = ref.circuit_metric(model, task.clean, task.corrupt, task.positions,
                                         task.answers, task.wrong_answers, {edge}, metric,
                                         ablation) - base
    names = sorted(exact)
    truth = [abs(exact[n]) for n in names]
    line = f"{name} {metric} {ablation}: {len(names)} edges; Spearman(|score|, |exact|)"
    rho_ig = spearman([abs(ig[n]) for n in names], truth)
    line += f" EAP-IG(5) {rho_ig:.3f}"
    assert rho_ig > 0
    if metric != "kl":
        eap, _ = engine_scores(name, metric, ablation, "qkv", EapSettings())
        rho = spearman([abs(eap[n]) for n in names], truth)
        signed = spearman([eap[n] for n in names], [exact[n] for n in names])
        line += f", EAP {rho:.3f} (signed scores: {signed:.3f})"
        assert rho > 0
    with capsys.disabled():
        print("\n" + line)


def test_eap_ig_converges_as_steps_grow():
    """The average over m points approaches the integral: the distance to m = 256 shrinks
    about as 1/m (left Riemann sum)."""
    limit, _ = engine_scores("mlp3", "kl", "corrupt", "qkv", EapIgSettings(ig_steps=256))
    scale = math.sqrt(sum(v * v for v in limit.values()))
    errors = []
    for steps in (2, 4, 8, 16, 32):
        scores, _ = engine_scores("mlp3", "kl", "corrupt", "qkv",
                                  EapIgSettings(ig_steps=steps))
        errors.append(math.sqrt(sum((scores[n] - limit[n]) ** 2 for n in limit)) / scale)
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.25 * errors[0] and errors[-1] < 0.05, errors


# --------------------------------------------------------------------------- settings, refusal


def spec(metric: str = "logit_diff", threshold: float = 0.02) -> TaskSpec:
    return TaskSpec.from_dict({"threshold": threshold, "metric": metric, "prompts": [
        {"clean": [1, 2], "corrupt": [1, 3], "answer": 4, "wrong": 5}]})


@pytest.mark.parametrize("metric", ["kl", "l2"])
def test_eap_refuses_a_metric_with_zero_gradient_at_the_clean_run(metric):
    with pytest.raises(AcdcError) as caught:
        EAP.check(EapSettings(), CommonSettings(metric))
    message = str(caught.value)
    assert "\n" not in message
    assert "zero gradient at the clean run" in message and "eap-ig" in message
    assert "logit_diff" in message  # what to use instead
    with pytest.raises(AcdcError, match="zero gradient"):
        engine_scores("attn2", metric, "corrupt", "qkv", EapSettings())
    # EAP-IG takes it, and its scores are not all zero
    EAP_IG.check(EapIgSettings(), CommonSettings(metric))
    scores, _ = engine_scores("attn2", metric, "corrupt", "qkv", EapIgSettings())
    assert max(abs(v) for v in scores.values()) > 1e-3


def test_settings_and_one_rule():
    assert make_selection(EAP, spec(), {}) == Selection(threshold=0.02)  # the task's
    assert make_selection(EAP, spec(), {"threshold": 0.5}) == Selection(threshold=0.5)
    assert make_selection(EAP, spec(), {"top_n": 7}) == Selection(top_n=7)
    assert make_settings(EAP_IG, spec(), {"ig_steps": 3}) == EapIgSettings(ig_steps=3)
    assert make_settings(EAP, spec(), {"per_prompt": True}) == EapSettings(per_prompt=True)
    for options, expected in (({"top_n": 3, "edges_fraction": 0.1}, "two rules"),
                              ({"top_n": -1}, "--top-n must be"),
                              ({"edges_fraction": 1.5}, "--edges-fraction must be")):
        with pytest.raises(AcdcError, match=expected):
            make_selection(EAP, spec(), options)
    for options, expected in (({"ig_steps": 3}, "--ig-steps is not an option of method eap"),
                              ({"abs": True}, "--abs is not an option")):
        with pytest.raises(AcdcError, match=expected):
            make_settings(EAP, spec(), options)
    with pytest.raises(AcdcError, match="--ig-steps must be"):
        make_settings(EAP_IG, spec(), {"ig_steps": 0})
    with pytest.raises(AcdcError, match="exactly one"):
        Selection().validate()


def test_per_prompt_scores_are_the_scores_over_the_prompts():
    plain, _ = engine_scores("mlp3", "logit_diff", "corrupt", "qkv", EapSettings())
    mean, _ = engine_scores("mlp3", "logit_diff", "corrupt", "qkv", EapSettings(per_prompt=True))
    n = len(task_of("mlp3", "logit_diff", "corrupt").clean)
    assert n > 1
    assert all(mean[name] == pytest.approx(plain[name] / n, rel=1e-12, abs=1e-15)
               for name in plain)


def test_selection_keeps_the_largest_residual_scores_and_direct_edges_follow():
    from acdc.core.graph import GraphShape, build_graph

    graph = build_graph(GraphShape(1, 1, False))
    by_name = {"input->a0.h0<q>": 0.1, "input->a0.h0<k>": -3.0, "input->a0.h0<v>": 2.0,
               "a0.h0->logits": -2.0, "input->logits": float("nan"),
               "a0.h0<q>->a0.h0": 9.0}  # a direct edge: never ranked
    scores = [by_name.get(e.name, 0.0) for e in graph.edges]
    chosen = lambda rule: {e.name for e in graph.edges  # noqa: E731
                           if select_edges(graph, scores, rule)[e.index]}
    assert chosen(Selection(top_n=2)) == {"input->a0.h0<k>", "a0.h0<k>->a0.h0",
                                          "input->a0.h0<v>", "a0.h0<v>->a0.h0"}
    # a tie in |score| goes to the edge earlier in the graph's order
    assert "a0.h0->logits" in chosen(Selection(top_n=3))
    assert chosen(Selection(threshold=0.1)) == chosen(Selection(top_n=4))
    assert "input->logits" not in chosen(Selection(threshold=0.0))  # NaN: never chosen


@pytest.mark.parametrize("granularity", ["qkv", "head"])
def test_circuit_is_connected_and_its_metric_is_the_reference_circuits(granularity):
    """The kept edges: among the top n by |score|, every one on a path from input to logits
    through kept edges (a direct edge is a step of such a path); the circuit's metric is the
    slow reference's for the same circuit."""
    import networkx as nx

    scores, circuit = engine_scores("mlp3", "logit_diff", "corrupt", granularity,
                                    EapSettings(), top_n=60)
    residual = {e.name for e in circuit.graph.edges if e.kind == "residual"}
    top = set(sorted(residual, key=lambda n: -abs(scores[n]))[:60])
    top |= {e.name for e in circuit.graph.edges  # the direct edges follow their inputs
            if e.kind == "direct" and any(t.endswith("->" + e.receiver.name) for t in top)}
    kept = {e.name for e in circuit.kept_edges()}
    assert kept and kept <= top
    dag = circuit.graph.to_networkx(circuit.kept)
    for edge in circuit.kept_edges():
        source, target = edge.endpoints
        assert nx.has_path(dag, "input", source) and nx.has_path(dag, target, "logits")
    for edge in circuit.graph.edges:  # nothing connected was dropped
        if edge.name in top and edge.name not in kept:
            source, target = edge.endpoints
            dag.add_edge(source, target)
            assert not (nx.has_path(dag, "input", source) and nx.has_path(dag, target, "logits"))
            dag.remove_edge(source, target)
    task = task_of("mlp3", "logit_diff", "corrupt")
    removed = {e.name for e in circuit.graph.edges if not circuit.kept[e.index]}
    expected = ref.circuit_metric(model_of("mlp3"), task.clean, task.corrupt, task.positions,
                                  task.answers, task.wrong_answers, removed, "logit_diff",
                                  "corrupt", granularity)
    assert circuit.metric_circuit == pytest.approx(expected, abs=1e-9)
    assert circuit.results["partial"] is False and circuit.settings["method"] == "eap"
    assert circuit.settings["top_n"] == 60 and "threshold" not in circuit.settings
    assert circuit.results["n_edges_selected"] == 60


# --------------------------------------------------------------------------- command line

runner = CliRunner()


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("eap")
    config = model_config("mlp3")
    save_checkpoint(build_model(config, seed=2), directory / "model", config=config)
    tiny = make_task(9)
    prompts = [{"clean": c, "corrupt": k, "answer": a, "wrong": w, "positions": p}
               for c, k, a, w, p in zip(tiny.clean, tiny.corrupt, tiny.answers,
                                        tiny.wrong_answers, tiny.positions, strict=True)]
    path = directory / "task.yaml"
    path.write_text(json.dumps({"name": "tiny", "model": "model", "metric": "logit_diff",
                                "threshold": 0.01, "prompts": prompts}))
    return path


def test_cli_discover_eap(task_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli.app, ["discover", "--task", str(task_file), "--method", "eap-ig",
                                     "--ig-steps", "3", "--top-n", "40", "--ablation",
                                     "mean-positional", "--out", str(out), "--no-render"])
    assert result.exit_code == 0, result.output
    assert "method eap-ig (ig_steps 3; --top-n 40)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["circuit.dot", "circuit.json", "run.yaml"]
    data = json.loads((out / "circuit.json").read_text())
    assert data["method"] == "eap-ig" and data["ig_steps"] == 3 and data["top_n"] == 40
    assert data["ablation"] == "mean-positional" and data["partial"] is False
    assert all(isinstance(e["score"], float) for e in data["edges"])
    assert 0 < data["n_edges_selected"] == 40 and data["n_edges_kept"] > 0
    repeat = yaml.safe_load((out / "run.yaml").read_text())["repeat"]
    assert "--method eap-ig --ig-steps 3 --top-n 40" in repeat
    render = runner.invoke(cli.app, ["render", str(out / "circuit.json"), "--format", "dot",
                                     "--out", str(tmp_path / "again.dot")])
    assert render.exit_code == 0, render.output


@pytest.mark.parametrize("args,expected", [
    (["--method", "eap", "--metric", "kl"], "zero gradient at the clean run"),
    (["--method", "eap", "--top-n", "5", "--threshold", "0.1"], "two rules"),
    (["--method", "eap", "--ig-steps", "4"], "--ig-steps is not an option of method eap"),
    (["--top-n", "5"], "--top-n is not an option of method acdc"),
])
def test_cli_refusals(task_file, tmp_path, args, expected):
    result = runner.invoke(cli.app, ["discover", "--task", str(task_file), "--out",
                                     str(tmp_path / "x"), *args])
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last
