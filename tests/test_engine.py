"""The engine itself: the incremental engine against the full-recompute one on a larger model,
interruption, replay, and configuration errors. (Decisions against the slow reference:
tests/test_engine_matches_reference.py.)"""

import math
import random

import pytest
import torch
from conftest import make_task, randomize

from acdc.core.architecture import model_shape
from acdc.core.loading import LoadedModel
from acdc.core.models import build_model, extract_weights
from acdc.core.settings import CommonSettings
from acdc.core.tasks.values import Task
from acdc.errors import AcdcError
from acdc.methods.acdc.search import AcdcSettings, run_acdc

# The slow hooked references and tiny random models need TransformerLens 3.x (see conftest).
pytestmark = pytest.mark.hooked_transformer

CONFIG = {"n_layers": 4, "d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 64, "d_vocab": 60,
          "n_ctx": 20, "act_fn": "gelu", "normalization_type": "LN"}


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    model = build_model(CONFIG, seed=7)
    randomize(model, seed=7, gain=1.2)
    return LoadedModel("mid", extract_weights(model), None, model_shape(model.cfg))


def task_of(seed: int, metric: str = "kl") -> Task:
    t = make_task(seed, n_prompts=6, min_len=12, max_len=16, d_vocab=60)
    return Task(name="t", description="", source="test", model=None, metric=metric,
                threshold=0.0, ablation="corrupt", seed=0, clean=t.clean, corrupt=t.corrupt,
                positions=t.positions, answers=t.answers, wrong_answers=t.wrong_answers)


def scores_of_tested(a, b) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Both circuits' scores of the edges both tested (asserting they tested the same ones)."""
    tested = [i for i, score in enumerate(b.scores) if score is not None]
    assert tested == [i for i, score in enumerate(a.scores) if score is not None]
    pick = lambda c: torch.tensor([c.scores[i] for i in tested], dtype=torch.float64)  # noqa: E731
    return pick(a), pick(b), tested


@pytest.mark.parametrize("granularity, ablation, metric, threshold", [
    ("qkv", "corrupt", "kl", 0.02),
    ("qkv", "zero", "kl", 0.05),
    ("head", "corrupt", "logit_diff", 0.05),
    ("qkv", "corrupt", "nll", 0.01),
])
def test_incremental_engine_equals_full_recompute(loaded, granularity, ablation, metric, threshold):
    """Position pruning and forward propagation change nothing: same decisions, same scores."""
    task = task_of(3, metric)
    common = CommonSettings(metric, ablation, granularity)
    results = {
        engine: run_acdc(loaded, task, common, AcdcSettings(threshold, engine=engine))
        for engine in ("incremental", "full")
    }
    fast, full = results["incremental"], results["full"]
    assert 0 < fast.n_edges_kept < 0.5 * len(fast.graph.edges)  # a sparse circuit, not trivial
    assert fast.kept == full.kept
    fast_scores, full_scores, tested = scores_of_tested(fast, full)
    assert torch.allclose(fast_scores, full_scores, atol=1e-5)
    assert math.isclose(fast.metric_circuit, full.metric_circuit, rel_tol=1e-5, abs_tol=1e-6)
    # the metric the search tracked by incremental updates is the final circuit's, fresh
    assert fast.results["metric_noise"] < 1e-5 * max(1.0, abs(fast.metric_circuit))


# 4-layer models of the families: Gemma 2 (post-sublayer norms, soft caps, local/global, one
# key/value head; its inputs are re-summed per test) and GPT-NeoX (partial rotary, parallel)
FAMILY_CONFIGS = {
    "gemma2": {**CONFIG, "normalization_type": "RMS", "act_fn": "gelu_pytorch_tanh",
               "gated_mlp": True, "n_key_value_heads": 1, "positional_embedding_type": "rotary",
               "rotary_dim": 8, "use_normalization_before_and_after": True,
               "attn_scores_soft_cap": 5.0, "output_logits_soft_cap": 8.0,
               "use_local_attn": True, "window_size": 4,
               "attn_types": ["local", "global", "local", "global"]},
    "neox": {**CONFIG, "positional_embedding_type": "rotary", "rotary_dim": 4,
             "parallel_attn_mlp": True},
}


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
@pytest.mark.parametrize("granularity, ablation, candidates", [("qkv", "corrupt", 0),
                                                               ("head", "zero", 4)])
def test_incremental_engine_equals_full_recompute_on_the_families(family, granularity, ablation,
                                                                  candidates):
    model = build_model(FAMILY_CONFIGS[family], seed=7)
    randomize(model, seed=7, gain=1.2)
    loaded = LoadedModel(family, extract_weights(model), None, model_shape(model.cfg))
    task = task_of(3, "kl")
    common = CommonSettings("kl", ablation, granularity)
    fast = run_acdc(loaded, task, common, AcdcSettings(0.01, candidates=candidates))
    full = run_acdc(loaded, task, common, AcdcSettings(0.01, engine="full"))
    assert 0 < fast.n_edges_kept < len(fast.graph.edges)
    assert fast.kept == full.kept
    fast_scores, full_scores, _ = scores_of_tested(fast, full)
    assert torch.allclose(fast_scores, full_scores, atol=1e-5)
    assert fast.results["metric_noise"] < 1e-5 * max(1.0, abs(fast.metric_circuit))


@pytest.mark.parametrize("budget", [256 * 2**20, 50_000])
def test_post_norm_layer_terms_shared_and_evicted(budget, monkeypatch):
    """Post-sublayer norms: the committed layer terms are kept per (layer, positions, heads
    kept), and a term's tentative change is made once per evaluation for every receiver with
    that key (both taken, counted); with a budget of about two terms, the least recently used
    are dropped (counted). The full engine's decisions and scores either way."""
    from acdc.methods.acdc import propagation

    monkeypatch.setattr(propagation, "LAYER_TERM_CACHE_BYTES", budget)
    counts = {"shared": 0, "kept": 0, "dropped": 0, "making": 0}
    term_change = propagation.IncrementalPatcher._term_change
    layer_term = propagation.IncrementalPatcher._layer_term
    drop = propagation.IncrementalPatcher._drop_layer_term

    def counted_change(self, rid, layer, all_positions, t):
        counts["shared"] += self._layer_key(rid, layer, all_positions) in t.term_changes
        return term_change(self, rid, layer, all_positions, t)

    def counted_term(self, rid, layer, all_positions):
        counts["kept"] += self._layer_key(rid, layer, all_positions) in self.layer_terms
        counts["making"] = 1
        try:
            return layer_term(self, rid, layer, all_positions)
        finally:
            counts["making"] = 0

    def counted_drop(self, key):
        counts["dropped"] += counts["making"]  # for room, not because a head changed
        return drop(self, key)

    monkeypatch.setattr(propagation.IncrementalPatcher, "_term_change", counted_change)
    monkeypatch.setattr(propagation.IncrementalPatcher, "_layer_term", counted_term)
    monkeypatch.setattr(propagation.IncrementalPatcher, "_drop_layer_term", counted_drop)
    model = build_model(FAMILY_CONFIGS["gemma2"], seed=7)
    randomize(model, seed=7, gain=1.2)
    loaded = LoadedModel("gemma2", extract_weights(model), None, model_shape(model.cfg))
    task = task_of(3, "kl")
    common = CommonSettings("kl", "corrupt", "qkv")
    fast = run_acdc(loaded, task, common, AcdcSettings(0.001))  # dense: many keys shared
    full = run_acdc(loaded, task, common, AcdcSettings(0.001, engine="full"))
    assert counts["shared"] > 0 and counts["kept"] > 0
    assert (counts["dropped"] > 0) == (budget < 2**20)
    assert 0 < fast.n_edges_kept < len(fast.graph.edges)
    assert fast.kept == full.kept
    fast_scores, full_scores, _ = scores_of_tested(fast, full)
    assert torch.allclose(fast_scores, full_scores, atol=1e-5)


@pytest.mark.parametrize("normalization", ["LN", "LNPre", "RMS", None])
@pytest.mark.parametrize("candidates", [1, 6])
def test_low_rank_unembedding_and_candidates_change_nothing(normalization, candidates, monkeypatch):
    """The unembedding updated by d_head-wide products (forced on, for a model too small to
    choose it) and several removals per evaluation: the full engine's decisions and scores."""
    from acdc.methods.acdc import propagation

    monkeypatch.setattr(propagation, "LOW_RANK_MIN_WORK", 0)
    monkeypatch.setattr(propagation, "THIN_PRODUCT_COST", 0)  # low rank wherever it applies
    monkeypatch.setattr(propagation, "REFRESH_EVERY", 3)  # recomputed from scratch mid-stage too
    config = dict(CONFIG, normalization_type=normalization, n_layers=3)
    model = build_model(config, seed=11)
    randomize(model, seed=11, gain=1.2)
    loaded = LoadedModel("norms", extract_weights(model), None, model_shape(model.cfg))
    task = task_of(5)
    fast = run_acdc(loaded, task, CommonSettings(), AcdcSettings(0.02, candidates=candidates))
    full = run_acdc(loaded, task, CommonSettings(), AcdcSettings(0.02, engine="full"))
    assert 0 < fast.n_edges_kept < 0.8 * len(fast.graph.edges)
    assert fast.kept == full.kept
    fast_scores, full_scores, _ = scores_of_tested(fast, full)
    # rounding grows with the logits' scale (without a norm, this model's reach 750 and its
    # scores 66: the incremental and full passes then differ by 2e-3)
    scale = max(1.0, float(full_scores.abs().max()))
    assert torch.allclose(fast_scores, full_scores, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("granularity, candidates, threshold", [("qkv", 1, 0.02),
                                                                ("qkv", 5, 0.02),
                                                                ("head", 1, 0.005)])
def test_stacked_sums_of_changes_change_nothing(loaded, granularity, candidates, threshold,
                                                monkeypatch):
    """Receivers' inputs summed as one product over the stacked changes (forced for every
    receiver with two changed senders or more) and plainly, one change at a time (the product
    turned off): the full engine's decisions and scores either way, and the product is taken."""
    from acdc.methods.acdc import propagation

    taken = []
    stacked_sum = propagation.IncrementalPatcher._stacked_sum

    def counted(self, *args):
        total = stacked_sum(self, *args)
        taken.append(total is not None)
        return total

    monkeypatch.setattr(propagation.IncrementalPatcher, "_stacked_sum", counted)
    task = task_of(4)
    common = CommonSettings("kl", "corrupt", granularity)
    full = run_acdc(loaded, task, common, AcdcSettings(threshold, engine="full"))
    for minimum, span in ((2, 10**6), (10**6, 1)):
        monkeypatch.setattr(propagation, "STACKED_SUM_MIN", minimum)
        monkeypatch.setattr(propagation, "STACKED_SUM_SPAN", span)
        taken.clear()
        fast = run_acdc(loaded, task, common, AcdcSettings(threshold, candidates=candidates))
        assert any(taken) == (minimum == 2)
        assert 0 < fast.n_edges_kept < 0.8 * len(fast.graph.edges)
        assert fast.kept == full.kept
        fast_scores, full_scores, _ = scores_of_tested(fast, full)
        assert torch.allclose(fast_scores, full_scores, atol=1e-5)


def test_every_edge_kept_and_every_edge_removed(loaded):
    task = task_of(4)
    everything = run_acdc(loaded, task, CommonSettings(), AcdcSettings(threshold=-1e9))
    assert everything.n_edges_kept == len(everything.graph.edges)
    assert everything.metric_circuit < 1e-6
    assert everything.results["metric_noise"] < 1e-6
    nothing = run_acdc(loaded, task, CommonSettings(), AcdcSettings(threshold=1e9))
    assert nothing.n_edges_kept == 0


def test_bidirectional_every_edge_kept_is_the_model_and_removed_is_the_corrupted_run():
    """On a bidirectional model (prompts of one length): the full circuit's metric is the
    model's own (0), the empty circuit's is the corrupted run's, computed by TransformerLens."""
    from acdc.core.metrics import build_metric, metric_targets

    model = build_model({**CONFIG, "attention_dir": "bidirectional"}, seed=13)
    randomize(model, seed=13, gain=1.2)
    loaded = LoadedModel("bidirectional", extract_weights(model), None, model_shape(model.cfg))
    t = make_task(6, n_prompts=6, min_len=12, max_len=12, d_vocab=60)
    task = Task(name="t", description="", source="test", model=None, metric="kl", threshold=0.0,
                ablation="corrupt", seed=0, clean=t.clean, corrupt=t.corrupt,
                positions=t.positions, answers=None, wrong_answers=None)
    everything = run_acdc(loaded, task, CommonSettings(), AcdcSettings(threshold=-1e9))
    assert everything.n_edges_kept == len(everything.graph.edges)
    assert everything.metric_circuit < 1e-6
    nothing = run_acdc(loaded, task, CommonSettings(), AcdcSettings(threshold=1e9))
    assert nothing.n_edges_kept == 0
    with torch.inference_mode():
        clean, corrupt = model(torch.tensor(t.clean)), model(torch.tensor(t.corrupt))
    rows = torch.tensor([b for b, pos in enumerate(t.positions) for _ in pos])
    cols = torch.tensor([p for pos in t.positions for p in pos])
    metric = build_metric("kl", clean[rows, cols], metric_targets(t.clean, t.positions, None, None))
    corrupted = float(metric(corrupt[rows, cols]))
    assert corrupted > 0.1
    assert math.isclose(nothing.metric_circuit, corrupted, rel_tol=1e-4)


@pytest.mark.parametrize("engine, candidates",
                         [("incremental", 1), ("incremental", 6), ("full", 0)])
def test_interrupt_then_replay_gives_the_uninterrupted_circuit(loaded, engine, candidates):
    """Also in the middle of a walk over several candidates (its later decisions are lost)."""
    task = task_of(5)
    config = CommonSettings(), AcdcSettings(threshold=0.02, engine=engine, candidates=candidates)
    log = []
    whole = run_acdc(loaded, task, *config, on_progress=lambda p: log.append(p.decision))
    stop = random.Random(1).randrange(1, len(log))

    def interrupt(progress):
        if progress.decided == stop:
            raise KeyboardInterrupt

    partial = run_acdc(loaded, task, *config, on_progress=interrupt)
    assert partial.partial and partial.results["n_edges_decided"] == stop
    removed = {e.name for e in partial.graph.edges if not partial.kept[e.index]}
    assert removed <= {d.edge for d in log[:stop] if not d.kept}  # undecided edges stay
    resumed = run_acdc(loaded, task, *config, replay=log[:stop])
    assert not resumed.partial
    assert resumed.kept == whole.kept
    resumed_scores, whole_scores, _ = scores_of_tested(resumed, whole)
    assert torch.allclose(resumed_scores, whole_scores, atol=1e-6)


def test_replay_of_another_run_is_refused(loaded):
    task = task_of(6)
    log = []
    run_acdc(loaded, task, CommonSettings(), AcdcSettings(threshold=0.02),
             on_progress=lambda p: log.append(p.decision))
    with pytest.raises(AcdcError, match="cannot resume"):
        run_acdc(loaded, task, CommonSettings(), AcdcSettings(0.02, reverse_head_order=True),
                 replay=log[:10])


@pytest.mark.parametrize("field, value, message", [
    ("metric", "accuracy", "unknown metric 'accuracy'"),
    ("ablation", "resample", "unknown ablation 'resample'"),
    ("granularity", "neuron", "unknown granularity 'neuron'"),
    ("threshold", float("nan"), "threshold must be a finite number"),
])
def test_bad_configuration_is_a_user_error(loaded, field, value, message):
    common = CommonSettings(**{field: value} if field != "threshold" else {})
    settings = AcdcSettings(**{"threshold": value if field == "threshold" else 0.01})
    with pytest.raises(AcdcError, match=message):
        run_acdc(loaded, task_of(7), common, settings)
