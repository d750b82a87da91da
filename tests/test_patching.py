"""The patched forward against TransformerLens' own forward pass, on tiny random models."""

import pytest
import torch

from acdc.core.architecture import model_shape
from acdc.core.graph import build_graph
from acdc.core.models import build_model, extract_weights
from acdc.core.patching import PatchedModel, Stage

# Gated-MLP models among the configurations need TransformerLens 3.x (4.x's native gated MLP
# has no biases; see conftest).
pytestmark = pytest.mark.hooked_transformer

CONFIGS = {
    "attn-only": dict(n_layers=2, d_model=32, n_heads=4, d_head=8, n_ctx=16, d_vocab=50,
                      attn_only=True),
    "mlp-ln": dict(n_layers=3, d_model=32, n_heads=4, d_head=8, n_ctx=16, d_vocab=50, d_mlp=64),
    "no-norm-relu": dict(n_layers=2, d_model=24, n_heads=3, d_head=5, n_ctx=16, d_vocab=50,
                         d_mlp=48, normalization_type=None, act_fn="relu"),
    "rms-gated": dict(n_layers=2, d_model=32, n_heads=4, d_head=8, n_ctx=16, d_vocab=50, d_mlp=64,
                      normalization_type="RMS", gated_mlp=True, act_fn="silu"),
    "bidirectional": dict(n_layers=2, d_model=24, n_heads=3, d_head=8, n_ctx=16, d_vocab=50,
                          d_mlp=48, normalization_type=None, act_fn="relu",
                          attention_dir="bidirectional"),
}


def _model(config):
    model = build_model(config, seed=3)
    with torch.no_grad():  # random biases and norm weights too, so every term is exercised
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _patched(model, granularity, ablation, clean, corrupt):
    graph = build_graph(model_shape(model.cfg).graph_shape(granularity))
    batch, n_pos = clean.shape
    pos_batch = torch.arange(batch).repeat_interleave(n_pos)
    pos_index = torch.arange(n_pos).repeat(batch)
    return graph, PatchedModel(extract_weights(model), graph, clean, corrupt, pos_batch,
                               pos_index, ablation)


@pytest.fixture(params=list(CONFIGS))
def model(request):
    return _model(CONFIGS[request.param])


@pytest.mark.parametrize("granularity", ["qkv", "head"])
def test_every_edge_kept_is_the_model(model, granularity):
    torch.manual_seed(0)
    clean, corrupt = torch.randint(0, 50, (2, 4, 9))
    with torch.inference_mode():
        _, patched = _patched(model, granularity, "corrupt", clean, corrupt)
        expected = model(clean).flatten(0, 1)
        assert torch.allclose(patched.clean_logits, expected, atol=1e-5)
        assert torch.allclose(patched.logits_from(Stage(0)), expected, atol=1e-5)


@pytest.mark.parametrize("granularity", ["qkv", "head"])
def test_every_edge_removed_is_the_corrupted_run(model, granularity):
    torch.manual_seed(1)
    clean, corrupt = torch.randint(0, 50, (2, 4, 9))
    with torch.inference_mode():
        graph, patched = _patched(model, granularity, "corrupt", clean, corrupt)
        for edge in graph.edges:
            patched.set_edge(edge, False)
        assert torch.allclose(patched.logits_from(Stage(0)), model(corrupt).flatten(0, 1),
                              atol=1e-5)


def test_zero_ablation_of_everything_leaves_only_biases(model):
    """With every edge removed under zero ablation the logits read only the bias residual."""
    torch.manual_seed(2)
    clean, corrupt = torch.randint(0, 50, (2, 3, 7))
    with torch.inference_mode():
        graph, patched = _patched(model, "qkv", "zero", clean, corrupt)
        for edge in graph.edges:
            patched.set_edge(edge, False)
        logits = patched.logits_from(Stage(0))
        assert torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-5)
        residual = sum(b.attn.b_O + (0 if model.cfg.attn_only else b.mlp.b_out)
                       for b in model.blocks)
        if hasattr(model, "ln_final"):
            residual = model.ln_final(residual[None, None])[0, 0]
        expected = model.unembed(residual[None, None])[0, 0]
        assert torch.allclose(logits[0], expected, atol=1e-5)


def test_a_pass_from_a_later_stage_equals_a_full_pass():
    """Starting at an edge's stage reuses earlier senders' outputs. Visiting edges in ACDC order
    (only ever earlier stages), with some removed for good, must equal recomputing everything."""
    model = _model(CONFIGS["mlp-ln"])
    torch.manual_seed(3)
    clean, corrupt = torch.randint(0, 50, (2, 4, 9))
    names = ["input->logits", "m1->m2", "a2.h1<q>->a2.h1", "a0.h3->a2.h0<k>", "a1.h2->m1",
             "m0->a1.h0<v>"]
    with torch.inference_mode():
        graph, patched = _patched(model, "qkv", "corrupt", clean, corrupt)
        for i, name in enumerate(names):
            edge = graph.edge(name)
            patched.set_edge(edge, False)
            late = patched.logits_from(PatchedModel.stage_of(edge))
            full = patched.logits_from(Stage(0))
            assert torch.allclose(late, full, atol=1e-5), name
            assert not torch.allclose(full, patched.clean_logits, atol=1e-3), name
            patched.set_edge(edge, i % 2 == 0)  # keep every other edge removed


def test_memory_estimate_counts_the_caches_a_run_allocates():
    from acdc.methods.acdc.memory import estimate_memory
    from acdc.methods.acdc.propagation import IncrementalPatcher

    model = _model(CONFIGS["mlp-ln"])
    clean, corrupt = torch.randint(0, 50, (2, 4, 9))
    with torch.inference_mode():
        graph, patched = _patched(model, "qkv", "corrupt", clean, corrupt)
        incremental = IncrementalPatcher(patched)
    estimate = estimate_memory(model_shape(model.cfg), len(graph.senders), batch=4, seq_len=9)
    assert estimate["caches"] == 4 * (patched.delta.numel() + patched.ablated.numel())
    qkv = sum(t.numel() for t in incremental.qkv) + sum(t.numel() for t in patched.ablated_qkv)
    assert estimate["qkv"] == 4 * qkv


def test_memory_estimate_counts_the_ungrouped_key_value_weights():
    """The parameters as a run holds them: the model's, plus the per-query-head copies of the
    shared key/value projections that `extract_weights` makes."""
    from acdc.core.models import extract_weights
    from acdc.methods.acdc.memory import estimate_memory

    config = {**CONFIGS["mlp-ln"], "n_heads": 4, "n_key_value_heads": 2}
    model = _model(config)
    weights = extract_weights(model)
    assert weights.layers[0].W_K.shape[0] == 4
    grouped = sum(b.attn._W_K.numel() + b.attn._W_V.numel() for b in model.blocks)
    ungrouped = sum(lw.W_K.numel() + lw.W_V.numel() for lw in weights.layers)
    shape = model_shape(model.cfg)
    estimate = estimate_memory(shape, 1 + 5 * shape.n_layers, batch=1, seq_len=1)
    assert estimate["n_params"] - shape.n_params_loaded == ungrouped - grouped > 0


def test_changing_positions_span_first_difference_to_last_metric_position():
    """The window the incremental engine works in: from the first position where any sender's
    delta is non-zero (or an earlier metric position) to the last metric position."""
    from acdc.core.removals import changing_positions

    delta = torch.zeros(3, 2, 10, 4)  # senders, prompts, positions, d_model
    delta[2, 1, 6, 0] = 1e-30  # the smallest difference counts
    delta[1, 0, 8] = 1.0
    assert changing_positions(delta, torch.tensor([8, 7])) == (6, 8)
    # a metric position before any difference
    assert changing_positions(delta, torch.tensor([9, 2, 7])) == (2, 9)
    # nothing differs: from the first metric position on
    assert changing_positions(torch.zeros(3, 2, 10, 4), torch.tensor([5, 7])) == (5, 7)


def test_changing_positions_are_every_position_under_bidirectional_attention():
    """Later keys reach the metric positions and earlier queries read later keys: with
    bidirectional attention no position is left out, whatever delta and the positions say."""
    from acdc.core.removals import changing_positions

    delta = torch.zeros(3, 2, 10, 4)
    delta[1, 0, 8] = 1.0
    assert changing_positions(delta, torch.tensor([8, 7]), causal=False) == (0, 9)


def test_bidirectional_attention_refuses_prompts_of_different_lengths():
    """The padding of a shorter prompt would be read by every query of a bidirectional model."""
    from acdc.core.patching import task_tensors
    from acdc.core.tasks.values import Task
    from acdc.errors import TaskError

    task = Task(name="ragged", description="", source="test", model=None, metric="kl",
                threshold=0.1, ablation="corrupt", seed=0, clean=[[1, 2, 3], [1, 2]],
                corrupt=[[3, 2, 1], [2, 1]], positions=[[2], [1]], answers=None,
                wrong_answers=None)
    clean = task_tensors(task, "cpu").clean  # causal: right-padded
    assert clean.tolist() == [[1, 2, 3], [1, 2, 0]]
    with pytest.raises(TaskError, match="prompts of 2 to 3 tokens.*bidirectional"):
        task_tensors(task, "cpu", causal=False)


def test_set_edges_sets_what_set_edge_sets(tiny_models, tiny_tasks):
    """A whole circuit written at once equals one set_edge call per edge."""
    import random

    model = tiny_models["mlp3"]
    weights = extract_weights(model)
    graph = build_graph(model_shape(model.cfg).graph_shape())
    tiny = tiny_tasks["mlp3"]
    width = max(len(c) for c in tiny.clean)
    clean, corrupt = (torch.tensor([r + [0] * (width - len(r)) for r in rows])
                      for rows in (tiny.clean, tiny.corrupt))
    pos_batch = torch.tensor([b for b, pos in enumerate(tiny.positions) for _ in pos])
    pos_index = torch.tensor([p for pos in tiny.positions for p in pos])
    with torch.inference_mode():
        patched = PatchedModel(weights, graph, clean, corrupt, pos_batch, pos_index)
    rng = random.Random(5)
    kept = torch.tensor([rng.random() < 0.5 for _ in graph.edges])

    def masks():
        return [t.clone() for t in (*patched.head_masks, *patched.mlp_masks, patched.logit_mask,
                                    *patched.direct_masks)]

    with torch.inference_mode():
        patched.set_edges(kept)
        at_once = masks()
        patched.set_edges(~kept)
        for edge in graph.edges:
            patched.set_edge(edge, bool(kept[edge.index]))
    assert all(torch.equal(a, b) for a, b in zip(at_once, masks(), strict=True))


@pytest.mark.parametrize("ablation", ["mean", "mean-positional"])
def test_every_edge_removed_is_the_mean_of_the_corrupted_run(model, ablation):
    """With every edge removed, `logits` reads every sender's mean, so its input is the mean
    of the corrupted run's final residual over the real tokens (the biases are the same
    everywhere): over all of them, or per position. Prompts of lengths 9, 6 and 4: the
    padding after each must not enter the mean."""
    torch.manual_seed(2)
    clean, corrupt = torch.randint(1, 50, (2, 3, 9))
    lengths = torch.tensor([9, 6, 4])
    for b, n in enumerate(lengths.tolist()):
        clean[b, n:] = corrupt[b, n:] = 0
    graph = build_graph(model_shape(model.cfg).graph_shape("qkv"))
    pos_batch = torch.tensor([0, 1, 2, 0])
    pos_index = torch.tensor([8, 5, 3, 2])
    with torch.inference_mode():
        patched = PatchedModel(extract_weights(model), graph, clean, corrupt, pos_batch,
                               pos_index, ablation, lengths)
        for edge in graph.edges:
            patched.set_edge(edge, False)
        logits = patched.logits_from(Stage(0))
        _, cache = model.run_with_cache(corrupt)
        resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]  # [batch, pos, d]
        real = [[resid[b, p] for b in range(3) if p < lengths[b]] for p in range(9)]
        final = getattr(model, "ln_final", lambda x: x)  # no final norm without normalisation
        if ablation == "mean":
            mean = sum(sum(r) for r in real) / int(lengths.sum())
            expected = model.unembed(final(mean[None, None]))[0, 0].expand(4, -1)
        else:
            means = torch.stack([sum(r) / len(r) for r in real])  # [pos, d]
            expected = model.unembed(final(means[None]))[0][pos_index]
    assert torch.allclose(logits, expected, atol=1e-4), (logits - expected).abs().max()


def test_memory_estimate_counts_the_layer_terms_of_post_norm_models():
    """Post-sublayer norms: the engine's bounded cache of per-layer head sums and their terms
    is counted (both the sum and the term: 2 numbers per receiver, layer, token and dimension),
    and an evaluation's bounded term changes (1 number each)."""
    from dataclasses import replace

    from acdc.methods.acdc.memory import (
        LAYER_TERM_CACHE_BYTES,
        TERM_CHANGE_BYTES,
        estimate_memory,
    )

    shape = model_shape(_model(CONFIGS["mlp-ln"]).cfg)
    senders = 1 + 5 * shape.n_layers
    plain = estimate_memory(shape, senders, batch=4, seq_len=9)
    post = estimate_memory(replace(shape, post_norm=True), senders, batch=4, seq_len=9)
    receivers = shape.n_layers * (3 * shape.n_heads + 1) + 1
    terms = receivers * shape.n_layers * 4 * 9 * shape.d_model * 4
    expected = min(LAYER_TERM_CACHE_BYTES, 2 * terms) + min(TERM_CHANGE_BYTES, terms)
    assert post["inputs"] - plain["inputs"] == expected > 0
    assert post["total"] - plain["total"] == post["inputs"] - plain["inputs"]


def test_only_the_latest_evaluation_can_be_committed():
    """The engine writes each evaluation's changes over the last one's (its stacks are kept):
    committing an earlier evaluation is refused, the latest one's commits and matches a fresh
    evaluation of the same circuit."""
    from acdc.methods.acdc.propagation import IncrementalPatcher

    model = _model(CONFIGS["mlp-ln"])
    clean, corrupt = torch.randint(0, 50, (2, 4, 9))
    with torch.inference_mode():
        graph, patched = _patched(model, "qkv", "corrupt", clean, corrupt)
        incremental = IncrementalPatcher(patched)
        node, edges = next((n, e) for n, e in graph.acdc_order() if n != "logits"
                           and e[0].kind == "residual" and len(e) > 2)
        incremental.enter(edges[0])
        _, first = incremental.evaluate([edges[0]])
        logits, second = incremental.evaluate([edges[1]])
        with pytest.raises(RuntimeError, match="earlier evaluation"):
            incremental.commit(first)
        incremental.commit(second)
        incremental.remove(edges[1])
        again, _ = incremental.evaluate([edges[2]])
        patched.set_edge(edges[2], False)
        assert torch.allclose(again[0], patched.logits_from(Stage(0)), atol=1e-5), node
