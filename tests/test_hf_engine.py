"""The engine on tiny random Hugging Face models of every family, against Hugging Face's own
forward and the hooked reference.

Each family's model (`hf_families.py`) is written with `save_pretrained` and loaded through
`load_model`, as a user's directory is (no TransformerLens). Then:

- the patched forward with every edge kept gives the Hugging Face logits, and with every edge
  removed (corrupt ablation) the Hugging Face logits of the corrupted prompts, at every
  position (to 1e-4, float32; prompts longer than every sliding window): under TransformerLens
  3 and 4;
- removing one edge (into logits, an MLP, a head's q, k or v, a direct edge) changes the
  logits exactly as the hooked reference (`reference_acdc.py`) says, run on TransformerLens
  3's own model of the directory (`models.load_hooked`: its converter for the family);
- a whole `discover` run decides every edge as the reference does.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import hf_families
import pytest
import reference_acdc as ref
import torch
from conftest import TinyTask, make_task
from test_engine_matches_reference import TIE, Case, compare, make_engine_task, threshold_at

from acdc.core.graph import build_graph
from acdc.core.loading import LoadedModel, load_model
from acdc.core.patching import PatchedModel, Stage

# The hooked references run TransformerLens 3's HookedTransformer (see conftest).
HOOKED = pytest.mark.hooked_transformer
NAMES = sorted(hf_families.FAMILIES)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, tuple[LoadedModel, Any, Path]]:
    """name -> (the loaded model, the Hugging Face model, its directory)."""
    out = {}
    for name in NAMES:
        directory = hf_families.build(name, tmp_path_factory.mktemp(name))
        out[name] = (load_model(str(directory)), hf_families.make(name), directory)
    return out


def every_position(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch, n_pos = tokens.shape
    return (torch.arange(batch).repeat_interleave(n_pos), torch.arange(n_pos).repeat(batch))


def hf_logits(hf_model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(tokens).logits


@pytest.mark.parametrize("granularity", ["qkv", "head"])
@pytest.mark.parametrize("name", NAMES)
def test_patched_forward_gives_the_hugging_face_logits(families, name, granularity):
    loaded, hf_model, _ = families[name]
    clean, corrupt = hf_families.prompts(1), hf_families.prompts(2)
    graph = build_graph(loaded.shape.graph_shape(granularity))
    pos_batch, pos_index = every_position(clean)
    with torch.no_grad():
        patched = PatchedModel(loaded.weights, graph, clean, corrupt, pos_batch, pos_index,
                               "corrupt")
        kept = patched.clean_logits
        patched.set_edges(torch.zeros(len(graph.edges), dtype=torch.bool))
        removed = patched.logits_from(Stage(0))
    expected_clean = hf_logits(hf_model, clean).flatten(0, 1)
    expected_corrupt = hf_logits(hf_model, corrupt).flatten(0, 1)
    assert (kept - expected_clean).abs().max() < TOLERANCE
    assert (removed - expected_corrupt).abs().max() < TOLERANCE
    assert (expected_clean - expected_corrupt).abs().max() > 0.1  # the two runs differ


def sample_edges(graph, seed: int) -> list:
    """One edge of each kind: into logits, into an MLP (if any), into a head's q, k and v
    inputs of the last layer (whose rotary, window and key/value sharing matter), and a
    direct edge; plus a few at random."""
    rng = random.Random(seed)
    last = graph.n_layers - 1
    picks = []
    for wanted in ("logits", "mlp", "q", "k", "v", "direct"):
        pool = [e for e in graph.edges
                if (e.kind == "direct" if wanted == "direct" else e.kind == "residual" and (
                    e.receiver.kind == wanted or (e.receiver.kind == "head"
                                                  and e.receiver.qkv == wanted
                                                  and e.receiver.layer == last)))]
        if pool:
            picks.append(rng.choice(pool))
    return picks + rng.sample(graph.edges, 3)


@pytest.fixture(scope="module")
def hooked(families) -> dict[str, Any]:
    """name -> TransformerLens 3's HookedTransformer of the family's directory."""
    from acdc.core.models import load_hooked

    return {name: load_hooked(str(directory))[0] for name, (_, _, directory) in families.items()}


@HOOKED
@pytest.mark.parametrize("ablation", ["corrupt", "zero", "mean"])
@pytest.mark.parametrize("name", NAMES)
def test_a_removed_edge_changes_what_the_reference_says(families, hooked, name, ablation):
    loaded, _, _ = families[name]
    clean, corrupt = hf_families.prompts(1), hf_families.prompts(2)
    graph = build_graph(loaded.shape.graph_shape("qkv"))
    pos_batch, pos_index = every_position(clean)
    ablated = ref.ablation_run(hooked[name], clean, corrupt, ablation)
    with torch.no_grad():
        patched = PatchedModel(loaded.weights, graph, clean, corrupt, pos_batch, pos_index,
                               ablation)
        for edge in sample_edges(graph, seed=len(name)):
            patched.set_edge(edge, False)
            ours = patched.logits_from(Stage(0))
            patched.set_edge(edge, True)
            theirs = ref.patched_logits(hooked[name], clean, ablated, {edge.name}).flatten(0, 1)
            assert (ours - theirs).abs().max() < TOLERANCE, edge.name
            assert (theirs - patched.clean_logits).abs().max() > 1e-6, edge.name  # it matters


def family_task(name: str) -> TinyTask:
    """Random prompts of 10 to 13 tokens: longer than every local window."""
    return make_task(200 + len(name), n_prompts=4, min_len=10, max_len=13,
                     d_vocab=hf_families.VOCAB)


@HOOKED
@pytest.mark.parametrize(("granularity", "ablation"), [("head", "corrupt"), ("qkv", "zero"),
                                                       ("qkv", "mean-positional")])
@pytest.mark.parametrize("name", NAMES)
def test_discover_decides_every_edge_as_the_reference(families, hooked, name, granularity,
                                                      ablation):
    """An engine run that keeps every edge gives the scores, a threshold in a gap near their
    median, then the engine's run at that threshold and the reference's (following the
    engine's decisions within TIE) agree on every edge and score."""
    from acdc.core.settings import CommonSettings
    from acdc.methods.acdc.search import AcdcSettings, run_acdc

    loaded, _, _ = families[name]
    tiny = family_task(name)
    case = Case(name, "kl", ablation, granularity)
    common = CommonSettings(case.metric, case.ablation, case.granularity)

    def engine(threshold: float) -> dict[str, tuple[bool, float | None]]:
        result = run_acdc(loaded, make_engine_task(case, tiny, threshold), common,
                          AcdcSettings(threshold))
        assert not result.partial
        return {e.name: (result.kept[e.index], result.scores[e.index])
                for e in result.graph.edges}

    scores = sorted(s for _, s in engine(-1e9).values() if s is not None)
    threshold = threshold_at(scores, 0.5)
    ours = engine(threshold)
    reference = ref.reference_acdc(
        hooked[name], *tiny.args(), threshold=threshold, granularity=granularity,
        ablation=ablation,
        follow={n: kept for n, (kept, _) in ours.items()},
        follow_tolerance=TIE * max(1.0, abs(threshold)))
    problems, _ = compare(case, threshold, ours, reference)
    assert not problems, "\n".join(problems[:20])
    n_kept = sum(kept for kept, _ in reference.values())
    assert 0 < n_kept < len(reference)
