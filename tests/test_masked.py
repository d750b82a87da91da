"""The differentiable masked forward (`acdc.core.masked`) against the model, the patched
forward and a slow hooked reference, on tiny random models of every family.

- every mask 1 is the model's own forward (TransformerLens' logits at the metric positions);
- every mask 0 is the ablated run (the corrupted prompts' logits under corrupt ablation);
- masks of 0 and 1 are `PatchedModel`'s circuits, bit for bit or to rounding;
- fractional edge and node masks give the metric of `reference_attribution`'s hooked pass
  (each receiver's input patched by `(1 - z) * (live - ablated)` per edge, each node's output
  replaced in the residual stream), and the same gradient with respect to every mask as
  autograd through that reference; a few coordinates also against central differences.

Everything runs in float64, where the two sides agree to rounding.
"""

from __future__ import annotations

import pytest
import reference_acdc as ref
import reference_attribution as ra
import torch
from conftest import make_model, make_task

from acdc.core.graph import build_graph
from acdc.core.masked import MaskedForward, MaskLayout
from acdc.core.metrics import build_metric, metric_targets
from acdc.core.models import extract_weights, model_shape
from acdc.core.patching import PatchedModel, task_tensors

pytestmark = pytest.mark.hooked_transformer

CASES = [  # model, ablation, granularity, metric
    ("attn2", "corrupt", "qkv", "kl"),
    ("attn2", "zero", "head", "logit_diff"),
    ("mlp3", "mean", "qkv", "nll"),
    ("mlp3", "mean-positional", "head", "kl"),
    ("nonorm2", "zero", "qkv", "l2"),
    ("one_head", "corrupt", "qkv", "prob_diff"),
    ("bidir_mlp3", "zero", "qkv", "l2"),
    ("neox2", "corrupt", "qkv", "kl"),
    ("gptj2", "mean", "qkv", "logit_diff"),
    ("llama2", "zero", "qkv", "kl"),
    ("llama2", "corrupt", "head", "nll"),
    ("gemma2", "corrupt", "qkv", "kl"),
    ("gemma2", "zero", "qkv", "logit_diff"),
    ("gemma2", "mean-positional", "head", "kl"),
    ("neo2", "mean-positional", "qkv", "prob_diff"),
]
IDS = ["-".join(case) for case in CASES]

_models: dict[str, object] = {}


def model_of(name: str):
    if name not in _models:
        _models[name] = make_model(name).to(torch.float64, print_details=False)
    return _models[name]


class Setup:
    """A model, a task, the patched model and the masked forward of one case."""

    def __init__(self, name: str, ablation: str, granularity: str, metric: str):
        self.model = model_of(name)
        equal = name.startswith("bidir")
        self.tiny = make_task(300, **({"min_len": 8, "max_len": 8} if equal else {}))
        weights = extract_weights(self.model)
        self.graph = build_graph(model_shape(self.model.cfg).graph_shape(granularity))
        from acdc.core.tasks.values import Task

        task = Task(name="t", description="", source="tests", model=None, metric=metric,
                    threshold=0.0, ablation=ablation, seed=0, clean=self.tiny.clean,
                    corrupt=self.tiny.corrupt, positions=self.tiny.positions,
                    answers=self.tiny.answers, wrong_answers=self.tiny.wrong_answers)
        self.tensors = task_tensors(task, "cpu", weights.causal)
        with torch.no_grad():
            self.patched = PatchedModel(weights, self.graph, self.tensors.clean,
                                        self.tensors.corrupt, self.tensors.pos_batch,
                                        self.tensors.pos_index, ablation, self.tensors.lengths)
        self.masked = MaskedForward(self.patched)
        targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers)
        self.metric = build_metric(metric, self.patched.clean_logits, targets)
        self.problem = ra.Problem(self.model, *self.tiny.args(), metric, ablation, granularity)

    def at_positions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[self.tensors.pos_batch, self.tensors.pos_index]

    def random_masks(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        edges = torch.rand(len(self.graph.edges), generator=generator, dtype=torch.float64)
        nodes = torch.rand(len(self.graph.senders), generator=generator, dtype=torch.float64)
        return edges, nodes

    def reference_metric(self, edges: torch.Tensor, nodes: torch.Tensor | None = None):
        masks = {e.name: edges[e.index] for e in self.graph.edges}
        node_masks = ({s.name: nodes[s.index] for s in self.graph.senders}
                      if nodes is not None else None)
        return self.problem.masked_metric(masks, node_masks)


_setups: dict[tuple, Setup] = {}


def setup_of(case: tuple) -> Setup:
    if case not in _setups:
        _setups[case] = Setup(*case)
    return _setups[case]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_all_masks_one_is_the_model(case):
    s = setup_of(case)
    ones = torch.ones(len(s.graph.edges), dtype=torch.float64)
    with torch.no_grad():
        model_logits = s.at_positions(s.model(s.tensors.clean))
    torch.testing.assert_close(s.masked.logits(ones), model_logits, rtol=1e-9, atol=1e-9)
    nodes = torch.ones(len(s.graph.senders), dtype=torch.float64)
    torch.testing.assert_close(s.masked.logits(ones, nodes), model_logits, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_all_masks_zero_is_the_ablated_run(case):
    s = setup_of(case)
    zeros = torch.zeros(len(s.graph.edges), dtype=torch.float64)
    logits = s.masked.logits(zeros)
    with torch.no_grad():
        patched = s.patched.circuit_logits(torch.zeros(len(s.graph.edges), dtype=torch.bool))
    torch.testing.assert_close(logits, patched, rtol=1e-9, atol=1e-9)
    if case[1] == "corrupt":  # the corrupted prompts' own run
        with torch.no_grad():
            corrupted = s.at_positions(s.model(s.tensors.corrupt))
        torch.testing.assert_close(logits, corrupted, rtol=1e-9, atol=1e-9)
    # every node masked off: the same as every edge off
    nodes = torch.zeros(len(s.graph.senders), dtype=torch.float64)
    ones = torch.ones(len(s.graph.edges), dtype=torch.float64)
    only_direct = torch.tensor([e.kind == "residual" for e in s.graph.edges], dtype=torch.float64)
    torch.testing.assert_close(s.masked.logits(only_direct, nodes), logits, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(s.masked.logits(ones), logits)


@pytest.mark.parametrize("case", CASES[::2], ids=IDS[::2])
def test_binary_masks_are_the_patched_circuits(case):
    s = setup_of(case)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        kept = torch.rand(len(s.graph.edges), generator=generator) < 0.6
        with torch.no_grad():
            expected = s.patched.circuit_logits(kept).clone()
        torch.testing.assert_close(s.masked.logits(kept.double()), expected, rtol=1e-9,
                                   atol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fractional_masks_match_the_hooked_reference(case):
    s = setup_of(case)
    edges, nodes = s.random_masks(2)
    expected = s.reference_metric(edges)
    torch.testing.assert_close(s.metric(s.masked.logits(edges)), expected, rtol=1e-9, atol=1e-12)
    expected = s.reference_metric(edges, nodes)
    torch.testing.assert_close(s.metric(s.masked.logits(edges, nodes)), expected, rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mask_gradients_match_the_hooked_reference(case):
    s = setup_of(case)
    edges, nodes = s.random_masks(3)
    edges.requires_grad_(True)
    nodes.requires_grad_(True)
    s.metric(s.masked.logits(edges, nodes)).backward()
    ref_edges = [e.detach().clone().requires_grad_(True) for e in edges]
    ref_nodes = [n.detach().clone().requires_grad_(True) for n in nodes]
    value = s.problem.masked_metric({e.name: ref_edges[e.index] for e in s.graph.edges},
                                    {n.name: ref_nodes[n.index] for n in s.graph.senders})
    value.backward()
    s.model.zero_grad(set_to_none=True)
    ref.ungrouped(s.model).zero_grad(set_to_none=True)
    expected_edges = torch.stack([m.grad if m.grad is not None else torch.zeros(())
                                  for m in ref_edges])
    expected_nodes = torch.stack([m.grad if m.grad is not None else torch.zeros(())
                                  for m in ref_nodes])
    scale = expected_edges.abs().max()
    assert scale > 0
    torch.testing.assert_close(edges.grad, expected_edges, rtol=1e-7, atol=1e-10 * scale)
    torch.testing.assert_close(nodes.grad, expected_nodes, rtol=1e-7, atol=1e-10 * scale)


@pytest.mark.parametrize("case", [CASES[i] for i in (0, 2, 4, 7, 9, 11)],
                         ids=[IDS[i] for i in (0, 2, 4, 7, 9, 11)])
def test_mask_gradients_match_central_differences(case):
    s = setup_of(case)
    edges, nodes = s.random_masks(4)
    edges.requires_grad_(True)
    nodes.requires_grad_(True)
    s.metric(s.masked.logits(edges, nodes)).backward()
    assert edges.grad is not None and nodes.grad is not None
    h = 1e-6
    picks = torch.randperm(len(edges), generator=torch.Generator().manual_seed(5))[:8]
    with torch.no_grad():
        for i in picks.tolist():
            up, down = edges.detach().clone(), edges.detach().clone()
            up[i] += h
            down[i] -= h
            numeric = (s.metric(s.masked.logits(up, nodes)) -
                       s.metric(s.masked.logits(down, nodes))) / (2 * h)
            assert abs(float(numeric) - float(edges.grad[i])) < 1e-6 * (
                1 + abs(float(numeric))), s.graph.edges[i].name
        for i in range(len(nodes)):
            up, down = nodes.detach().clone(), nodes.detach().clone()
            up[i] += h
            down[i] -= h
            numeric = (s.metric(s.masked.logits(edges, up)) -
                       s.metric(s.masked.logits(edges, down))) / (2 * h)
            assert abs(float(numeric) - float(nodes.grad[i])) < 1e-6 * (1 + abs(float(numeric)))


def test_layout_matches_edge_names():
    """Every mask slice holds the edges the forward pass reads there."""
    for shape in (model_shape(model_of("mlp3").cfg).graph_shape("qkv"),
                  model_shape(model_of("neox2").cfg).graph_shape("head")):
        graph = build_graph(shape)
        layout = MaskLayout.of(graph)
        for layer, (start, stop) in enumerate(layout.heads):
            block = graph.edges[start:stop]
            assert all(e.receiver.layer == layer and e.receiver.kind == "head" for e in block)
        for layer, (start, stop) in enumerate(layout.mlps):
            assert {e.receiver.name for e in graph.edges[start:stop]} == {f"m{layer}"}
        start, stop = layout.logits
        assert [e.sender.index for e in graph.edges[start:stop]] == list(
            range(len(graph.senders)))


def test_successive_passes_reuse_buffers_without_mixing_gradients():
    """A pass reuses the previous pass's buffers once its backward has run: the gradients of
    each pass equal those of a fresh masked forward."""
    s = setup_of(CASES[7])  # neox2: MLPs and parallel blocks
    grads = []
    for seed in (5, 6):
        edges, nodes = s.random_masks(seed)
        edges.requires_grad_(True)
        s.metric(s.masked.logits(edges, nodes)).backward()
        grads.append(edges.grad)
    assert s.masked._last is not None and s.masked._last.finished
    for seed, grad in zip((5, 6), grads, strict=True):
        fresh = MaskedForward(s.patched)
        edges, nodes = s.random_masks(seed)
        edges.requires_grad_(True)
        s.metric(fresh.logits(edges, nodes)).backward()
        torch.testing.assert_close(edges.grad, grad, rtol=0, atol=0)
