"""The slow reference ACDC (`reference_acdc.py`) checked against the ACDC paper's invariants and
against computations done by hand from the model's weights."""

from __future__ import annotations

import pytest
import reference_acdc as ref
import torch
from conftest import FAMILIES

from acdc.core.graph import GraphShape, build_graph

# The slow hooked references and tiny random models need TransformerLens 3.x (see conftest).
pytestmark = pytest.mark.hooked_transformer

MODELS = ["attn2", "mlp3", "nonorm2", "one_head", *FAMILIES]
# the checks by hand below compute LayerNorm models (or none) with biases outside the norms
BY_HAND = ["attn2", "mlp3", "nonorm2", "one_head"]


def real_positions(prompts: list[list[int]]) -> list[tuple[int, int]]:
    return [(i, p) for i, prompt in enumerate(prompts) for p in range(len(prompt))]


def gather(logits: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    return torch.stack([logits[i, p] for i, p in pairs])


def kl(clean_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(clean || patched) per row, in float64."""
    clean_logp = torch.log_softmax(clean_logits.double(), -1)
    logp = torch.log_softmax(logits.double(), -1)
    return (clean_logp.exp() * (clean_logp - logp)).sum(-1)


# --------------------------------------------------------------------------- graph


@pytest.mark.parametrize(
    ("shape", "granularity", "expected"),
    [
        (ref.RefShape(12, 12, True), "qkv", 32923),
        (ref.RefShape(12, 12, True), "head", 11611),
        (ref.RefShape(2, 8, False), "qkv", 305),
        (ref.RefShape(4, 8, False), "qkv", 1377),
    ],
)
def test_edge_counts_match_the_paper(shape, granularity, expected):
    order = ref.edge_order(shape, granularity)
    assert len(order) == len(set(order)) == expected
    if granularity == "qkv":
        direct = [name for name in order if "<" in name.split("->")[0]]
        assert len(direct) == 3 * shape.n_layers * shape.n_heads


@pytest.mark.parametrize("granularity", ["qkv", "head"])
@pytest.mark.parametrize(
    "shape", [ref.RefShape(2, 4, False), ref.RefShape(3, 3, True), ref.RefShape(1, 1, False),
              ref.RefShape(12, 12, True)],
)
def test_edge_set_equals_the_graphs(shape, granularity):
    graph = build_graph(GraphShape(shape.n_layers, shape.n_heads, shape.has_mlp, granularity))
    order = ref.edge_order(shape, granularity)
    assert len(order) == len(set(order))
    assert set(order) == {e.name for e in graph.edges}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("granularity", ["qkv", "head"])
@pytest.mark.parametrize("shape", [ref.RefShape(2, 4, False), ref.RefShape(3, 3, True)])
def test_visiting_order_equals_the_graphs(shape, granularity, reverse):
    graph = build_graph(GraphShape(shape.n_layers, shape.n_heads, shape.has_mlp, granularity))
    expected = [e.name for _, edges in graph.acdc_order(reverse) for e in edges]
    assert ref.edge_order(shape, granularity, reverse) == expected


def test_visiting_order_by_hand():
    """ACDC's order spelled out for 2 layers x 2 heads with MLPs (first groups)."""
    order = ref.edge_order(ref.RefShape(2, 2, True), "qkv")
    assert order[:7] == ["m1->logits", "a1.h1->logits", "a1.h0->logits", "m0->logits",
                         "a0.h1->logits", "a0.h0->logits", "input->logits"]
    assert order[7:13] == ["a1.h1->m1", "a1.h0->m1", "m0->m1", "a0.h1->m1", "a0.h0->m1",
                           "input->m1"]
    assert order[13:19] == ["a1.h1<v>->a1.h1", "a1.h0<v>->a1.h0", "a1.h1<k>->a1.h1",
                            "a1.h0<k>->a1.h0", "a1.h1<q>->a1.h1", "a1.h0<q>->a1.h0"]
    assert order[19:23] == ["m0->a1.h1<v>", "a0.h1->a1.h1<v>", "a0.h0->a1.h1<v>",
                            "input->a1.h1<v>"]
    assert order[-1] == "input->a0.h0<q>"
    reversed_order = ref.edge_order(ref.RefShape(2, 2, True), "qkv", reverse_head_order=True)
    assert reversed_order[:7] == ["m1->logits", "a1.h0->logits", "a1.h1->logits", "m0->logits",
                                  "a0.h0->logits", "a0.h1->logits", "input->logits"]


# --------------------------------------------------------------------------- patched passes


@pytest.mark.parametrize("granularity", ["qkv", "head"])
@pytest.mark.parametrize("ablation", ["corrupt", "zero"])
@pytest.mark.parametrize("name", MODELS)
def test_all_edges_kept_is_the_model(tiny_models, tiny_tasks, name, ablation, granularity):
    model, task = tiny_models[name], tiny_tasks[name]
    clean = ref.pad(task.clean)
    ablated = ref.ablation_run(model, clean, ref.pad(task.corrupt), ablation)
    logits = ref.patched_logits(model, clean, ablated, set(), granularity)
    with torch.no_grad():
        expected = model(clean)
    pairs = real_positions(task.clean)
    assert kl(gather(expected, pairs), gather(logits, pairs)).max() < 1e-6
    metric = ref.circuit_metric(model, *task.args(), removed=set(), ablation=ablation,
                                granularity=granularity)
    assert abs(metric) < 1e-6


@pytest.mark.parametrize("granularity", ["qkv", "head"])
@pytest.mark.parametrize("name", MODELS)
def test_all_edges_removed_is_the_corrupt_run(tiny_models, tiny_tasks, name, granularity):
    model, task = tiny_models[name], tiny_tasks[name]
    clean, corrupt = ref.pad(task.clean), ref.pad(task.corrupt)
    ablated = ref.ablation_run(model, clean, corrupt, "corrupt")
    every_edge = set(ref.edge_order(ref.shape_of(model), granularity))
    logits = ref.patched_logits(model, clean, ablated, every_edge, granularity)
    with torch.no_grad():
        expected = model(corrupt)
        clean_logits = model(clean)
    pairs = real_positions(task.clean)
    assert torch.allclose(gather(logits, pairs), gather(expected, pairs), atol=1e-4)
    assert not torch.allclose(gather(clean_logits, pairs), gather(expected, pairs), atol=1e-2)


def _norm(x: torch.Tensor, w, b, kind: str | None, eps: float) -> torch.Tensor:
    """LayerNorm by hand (the fixtures use "LN" or no normalisation)."""
    if kind is None:
        return x
    assert kind == "LN"
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w + b


def _bias_residual(model, layers: int) -> torch.Tensor:
    """What the residual holds when every sender writes zero: b_O and b_out of `layers` layers."""
    total = torch.zeros(model.cfg.d_model)
    for layer in range(layers):
        block = model.blocks[layer]
        total = total + block.attn.b_O
        if not model.cfg.attn_only:
            total = total + block.mlp.b_out
    return total


@pytest.mark.parametrize("granularity", ["qkv", "head"])
@pytest.mark.parametrize("name", BY_HAND)
def test_all_edges_removed_zero_ablation_is_the_bias_only_output(tiny_models, tiny_tasks, name,
                                                                 granularity):
    model, task = tiny_models[name], tiny_tasks[name]
    cfg = model.cfg
    clean = ref.pad(task.clean)
    ablated = ref.ablation_run(model, clean, ref.pad(task.corrupt), "zero")
    every_edge = set(ref.edge_order(ref.shape_of(model), granularity))
    logits = ref.patched_logits(model, clean, ablated, every_edge, granularity)
    with torch.no_grad():
        resid = _bias_residual(model, cfg.n_layers)
        final = model.ln_final if cfg.normalization_type else None
        normed = _norm(resid, getattr(final, "w", None), getattr(final, "b", None),
                       cfg.normalization_type, cfg.eps)
        expected = normed @ model.unembed.W_U + model.unembed.b_U
    pairs = real_positions(task.clean)
    assert torch.allclose(gather(logits, pairs), expected.expand(len(pairs), -1), atol=1e-4)
    assert (expected - model.unembed.b_U).abs().max() > 1e-2  # the biases matter here


@pytest.mark.parametrize("name", BY_HAND)
def test_zero_ablation_qkv_come_from_the_bias_only_residual(tiny_models, tiny_tasks, name):
    model, task = tiny_models[name], tiny_tasks[name]
    cfg = model.cfg
    clean = ref.pad(task.clean)
    ablated = ref.ablation_run(model, clean, ref.pad(task.corrupt), "zero")
    assert all(out.abs().max() == 0 for out in ablated.senders.values())
    with torch.no_grad():
        for layer in range(cfg.n_layers):
            block = model.blocks[layer]
            ln1 = block.ln1 if cfg.normalization_type else None
            normed = _norm(_bias_residual(model, layer), getattr(ln1, "w", None),
                           getattr(ln1, "b", None), cfg.normalization_type, cfg.eps)
            for qkv in ref.QKV:
                W = getattr(block.attn, f"W_{qkv.upper()}")
                b = getattr(block.attn, f"b_{qkv.upper()}")
                for head in range(cfg.n_heads):
                    expected = normed @ W[head] + b[head]
                    got = ablated.qkv[(layer, head, qkv)]
                    assert torch.allclose(got, expected.expand_as(got), atol=1e-5)


@pytest.mark.parametrize("name", ["attn2", "mlp3"])
def test_one_removed_logits_edge_by_hand(tiny_models, tiny_tasks, name):
    """Removing `a{L-1}.h0->logits` swaps that head's clean output for its corrupt output in the
    input of ln_final, and nothing else."""
    model, task = tiny_models[name], tiny_tasks[name]
    last = model.cfg.n_layers - 1
    clean, corrupt = ref.pad(task.clean), ref.pad(task.corrupt)
    ablated = ref.ablation_run(model, clean, corrupt, "corrupt")
    logits = ref.patched_logits(model, clean, ablated, {f"a{last}.h0->logits"})
    with torch.no_grad():
        model.set_use_attn_result(True)
        try:
            _, clean_cache = model.run_with_cache(clean)
            _, corrupt_cache = model.run_with_cache(corrupt)
        finally:
            model.set_use_attn_result(False)
        resid = (clean_cache[f"blocks.{last}.hook_resid_post"]
                 - clean_cache[f"blocks.{last}.attn.hook_result"][:, :, 0]
                 + corrupt_cache[f"blocks.{last}.attn.hook_result"][:, :, 0])
        expected = model.unembed(model.ln_final(resid))
    assert torch.allclose(logits, expected, atol=1e-4)


# --------------------------------------------------------------------------- the algorithm


def test_one_head_model_by_hand(tiny_models, tiny_tasks):
    """1 layer, 1 head, 8 edges. With a huge threshold the two logits edges are removed after
    one test each; the head is then dead, so its direct edges are removed untested, and the
    q/k/v inputs (whose only outgoing edges are those direct edges) too."""
    model, task = tiny_models["one_head"], tiny_tasks["one_head"]
    clean, corrupt = ref.pad(task.clean), ref.pad(task.corrupt)
    result = ref.reference_acdc(model, *task.args(), threshold=1e9)
    assert list(result) == ["a0.h0->logits", "input->logits",
                            "a0.h0<v>->a0.h0", "a0.h0<k>->a0.h0", "a0.h0<q>->a0.h0",
                            "input->a0.h0<v>", "input->a0.h0<k>", "input->a0.h0<q>"]
    assert all(not kept for kept, _ in result.values())
    tested = {name: score for name, (_, score) in result.items() if score is not None}
    assert list(tested) == ["a0.h0->logits", "input->logits"]

    with torch.no_grad():
        model.set_use_attn_result(True)
        try:
            clean_logits, clean_cache = model.run_with_cache(clean)
            corrupt_logits, corrupt_cache = model.run_with_cache(corrupt)
        finally:
            model.set_use_attn_result(False)
        head = "blocks.0.attn.hook_result"
        resid = (clean_cache["blocks.0.hook_resid_post"] - clean_cache[head][:, :, 0]
                 + corrupt_cache[head][:, :, 0])
        head_removed = model.unembed(model.ln_final(resid))

    pairs = [(i, p) for i, ps in enumerate(task.positions) for p in ps]
    kl_head = kl(gather(clean_logits, pairs), gather(head_removed, pairs)).mean().item()
    kl_both = kl(gather(clean_logits, pairs), gather(corrupt_logits, pairs)).mean().item()
    assert tested["a0.h0->logits"] == pytest.approx(kl_head, abs=1e-6)
    assert tested["input->logits"] == pytest.approx(kl_both - kl_head, abs=1e-6)


def test_one_head_model_keeps_the_head(tiny_models, tiny_tasks):
    """With a threshold between the two logits edges' scores, the decisions follow the rule
    edge by edge, and every edge below a kept one is tested."""
    model, task = tiny_models["one_head"], tiny_tasks["one_head"]
    full = ref.reference_acdc(model, *task.args(), threshold=-1.0)  # keeps everything
    assert all(kept and score is not None for kept, score in full.values())
    assert all(score >= 0 for _, score in full.values())  # KL starts at its minimum, 0
    first = full["a0.h0->logits"][1]
    result = ref.reference_acdc(model, *task.args(), threshold=first * 1.01)
    assert result["a0.h0->logits"] == (False, pytest.approx(first))
    for name, (kept, score) in result.items():
        if score is not None:
            assert kept == (score >= first * 1.01), name


@pytest.mark.parametrize("name", ["attn2", "mlp3", "nonorm2"])
def test_larger_threshold_never_keeps_more_edges(tiny_models, tiny_tasks, name):
    model, task = tiny_models[name], tiny_tasks[name]
    counts = []
    for threshold in (0.002, 0.01, 0.03, 0.1):
        result = ref.reference_acdc(model, *task.args(), threshold=threshold)
        counts.append(sum(kept for kept, _ in result.values()))
    assert counts == sorted(counts, reverse=True), counts
    assert counts[0] > counts[-1]


@pytest.mark.parametrize(("metric", "threshold"),
                         [("logit_diff", 0.01), ("prob_diff", 0.01), ("nll", 0.01), ("l2", 1.0)])
def test_task_metrics_run_and_follow_the_rule(tiny_models, tiny_tasks, metric, threshold):
    model, task = tiny_models["attn2"], tiny_tasks["attn2"]
    result = ref.reference_acdc(model, *task.args(), threshold=threshold, metric=metric,
                                ablation="zero", use_abs=True)
    for name, (kept, score) in result.items():
        if score is not None:
            assert kept == (abs(score) >= threshold), name
    assert 0 < sum(kept for kept, _ in result.values()) < len(result)


def test_following_own_decisions_changes_nothing(tiny_models, tiny_tasks):
    model, task = tiny_models["nonorm2"], tiny_tasks["nonorm2"]
    own = ref.reference_acdc(model, *task.args(), threshold=0.01, granularity="head")
    follow = {name: kept for name, (kept, _) in own.items()}
    again = ref.reference_acdc(model, *task.args(), threshold=0.01, granularity="head",
                               follow=follow, follow_tolerance=1.0)
    assert again == own
