"""A circuit's metrics, cheaply: the patched pass that computes the last layer at the metric
positions only (`PatchedModel.circuit_logits`), held to the plain patched pass that computes
every layer at every token (`logits_from(Stage(0))`), and evaluators over shared recordings
held to evaluators that record their own runs, on the tiny random models (GPT-2-like, rotary,
parallel, grouped-query, Gemma-2-like post-norms and local attention, bidirectional)."""

from __future__ import annotations

import pytest
import torch
from conftest import MODEL_CONFIGS, make_task

from acdc.core.architecture import model_shape
from acdc.core.graph import build_graph
from acdc.core.loading import LoadedModel
from acdc.core.patching import PatchedModel, Stage, task_tensors
from acdc.core.positions import positional_shape
from acdc.core.recordings import record
from acdc.core.tasks.values import Task
from acdc.evaluation.faithfulness import CircuitEvaluator

pytestmark = pytest.mark.hooked_transformer

ABLATIONS = ("corrupt", "zero", "mean", "mean-positional")


def as_task(tiny, ablation: str = "corrupt", labels=None) -> Task:
    return Task(name="t", description="", source="test", model=None, metric="kl",
                threshold=0.01, ablation=ablation, seed=0, clean=tiny.clean,
                corrupt=tiny.corrupt, positions=tiny.positions, answers=tiny.answers,
                wrong_answers=tiny.wrong_answers, labels=labels)


def loaded(model) -> LoadedModel:
    return LoadedModel("tiny", model_weights(model), None, model_shape(model.cfg))


def model_weights(model):
    from acdc.core.models import extract_weights

    return extract_weights(model)


def patched(model, task: Task, graph, ablation: str) -> PatchedModel:
    w = model_weights(model)
    t = task_tensors(task, "cpu", w.causal, graph.shape)
    return PatchedModel(w, graph, t.clean, t.corrupt, t.pos_batch, t.pos_index, ablation,
                        t.lengths, groups=t.groups)


def circuits(n_edges: int, seed: int) -> list[torch.Tensor]:
    """Random circuits from sparse to dense, and one without the last layer's edges."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(n_edges, generator=generator) < p for p in (0.05, 0.3, 0.7, 0.95)]


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("granularity", ["qkv", "head"])
def test_circuit_logits_are_the_full_patched_pass(tiny_models, tiny_tasks, name, ablation,
                                                  granularity):
    model = tiny_models[name]
    task = as_task(tiny_tasks[name], ablation)
    graph = build_graph(model_shape(model.cfg).graph_shape(granularity))
    cheap, plain = patched(model, task, graph, ablation), patched(model, task, graph, ablation)
    with torch.inference_mode():
        for kept in circuits(len(graph.edges), seed=len(name)):
            got = cheap.circuit_logits(kept)
            plain.set_edges(kept)
            expected = plain.logits_from(Stage(0))
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            if kept.any() and not kept.all():  # else no pass: the recorded logits
                torch.testing.assert_close(cheap.last_z[-1], plain.last_z[-1], rtol=1e-5,
                                           atol=1e-5)


@pytest.mark.parametrize("name", ["attn2", "mlp3", "llama2", "gemma2", "bidir_mlp3"])
@pytest.mark.parametrize("ablation", ["corrupt", "zero", "mean-positional"])
def test_circuit_logits_at_positions_are_the_full_patched_pass(tiny_models, name, ablation):
    model = tiny_models[name]
    tiny = make_task(11, min_len=7, max_len=7)
    task = as_task(tiny, ablation)
    shape = positional_shape(model_shape(model.cfg).graph_shape(), task, "all")
    graph = build_graph(shape)
    cheap, plain = patched(model, task, graph, ablation), patched(model, task, graph, ablation)
    with torch.inference_mode():
        for kept in circuits(len(graph.edges), seed=3):
            got = cheap.circuit_logits(kept)
            plain.set_edges(kept)
            torch.testing.assert_close(got, plain.logits_from(Stage(0)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp3", "gemma2", "neox2"])
def test_a_pass_after_the_cheap_one_recomputes_the_last_layer(tiny_models, tiny_tasks, name):
    """After `circuit_logits` the last layer's outputs hold only the metric positions: a pass
    asked to start at the last MLP starts at the last layer's attention, and gets the logits
    of the full pass."""
    model = tiny_models[name]
    task = as_task(tiny_tasks[name])
    graph = build_graph(model_shape(model.cfg).graph_shape())
    cheap, plain = patched(model, task, graph, "corrupt"), patched(model, task, graph, "corrupt")
    first, second = circuits(len(graph.edges), seed=5)[1:3]
    last = graph.n_layers - 1
    with torch.inference_mode():
        cheap.circuit_logits(first)
        # change only edges into the last MLP and the logits, then start the pass there
        into_last = torch.tensor([e.receiver.layer >= last and e.receiver.kind != "head"
                                  for e in graph.edges])
        mixed = torch.where(into_last, second, first)
        cheap.set_edges(mixed)
        got = cheap.logits_from(Stage(last, 1))
        plain.set_edges(mixed)
        torch.testing.assert_close(got, plain.logits_from(Stage(0)), rtol=1e-5, atol=1e-5)
        # and a full pass after it leaves nothing stale either
        torch.testing.assert_close(cheap.logits_from(Stage(0)), plain.logits_from(Stage(0)),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["attn2", "mlp3", "llama2", "gemma2", "neo2"])
@pytest.mark.parametrize("ablation", ["corrupt", "mean"])
def test_an_evaluator_over_shared_recordings_is_a_rebuilt_one(tiny_models, tiny_tasks, name,
                                                               ablation):
    """The recordings a search used, reused by one evaluator after another: every metric of
    every circuit and complement equal to an evaluator that records its own runs."""
    model = tiny_models[name]
    task = as_task(tiny_tasks[name], ablation)
    model_ = loaded(model)
    graph = build_graph(model_ccfg_shape(model))
    shared = record(model_, task, graph, ablation)
    rebuilt = CircuitEvaluator(model_, task, graph, ablation)
    for kept in circuits(len(graph.edges), seed=9):
        reused = CircuitEvaluator(model_, task, graph, ablation, recordings=shared)
        before = rebuilt.passes
        got, expected = reused.evaluate(kept), rebuilt.evaluate(kept)
        assert reused.passes == rebuilt.passes - before
        for metric, m in expected.metrics.items():
            for part in ("full", "empty", "circuit", "complement"):
                a, b = getattr(got.metrics[metric], part), getattr(m, part)
                assert a.mean == pytest.approx(b.mean, rel=1e-5, abs=1e-6), (metric, part)
                assert a.per_prompt == pytest.approx(b.per_prompt, rel=1e-5, abs=1e-6)


def model_ccfg_shape(model):
    return model_shape(model.cfg).graph_shape()


@pytest.mark.parametrize("name", ["mlp3", "gemma2", "neox2"])
@pytest.mark.parametrize("ablation", ["corrupt", "zero", "mean-positional"])
def test_copies_for_circuits_leave_the_recordings_as_recorded(tiny_models, tiny_tasks, name,
                                                              ablation):
    """Passes on two copies for circuits change neither the other copy nor the recordings:
    a full copy made afterwards (what a search starts from) is the state recorded anew."""
    model = tiny_models[name]
    task = as_task(tiny_tasks[name], ablation)
    model_ = loaded(model)
    graph = build_graph(model_ccfg_shape(model))
    shared = record(model_, task, graph, ablation)
    a, b = shared.for_circuits(), shared.for_circuits()
    first, second = circuits(len(graph.edges), seed=2)[1:3]
    with torch.inference_mode():
        expected = b.circuit_logits(first).clone()
        a.circuit_logits(second)
        torch.testing.assert_close(b.circuit_logits(first), expected, rtol=0, atol=0)
        with pytest.raises(AssertionError, match="handed over"):
            a.take_clean_qkv()
        again = record(model_, task, graph, ablation).patched
        full = shared.fresh()
        for attribute in ("delta", "clean_logits", "logit_mask"):
            assert torch.equal(getattr(full, attribute), getattr(again, attribute)), attribute
        for attribute in ("head_masks", "mlp_masks", "direct_masks", "clean_qkv",
                          "ablated_qkv", "clean_z"):
            for x, y in zip(getattr(full, attribute), getattr(again, attribute), strict=True):
                assert torch.equal(x, y), attribute
        plain = record(model_, task, graph, ablation).patched
        plain.set_edges(first)
        torch.testing.assert_close(full.circuit_logits(first), plain.logits_from(Stage(0)),
                                   rtol=1e-5, atol=1e-5)
