"""Circuits that know where (`--positions labels|all`): the positional graph, the patched forward
with per-group masks, ACDC (both engines), EAP / EAP-IG and exact patching at positions against
the slow hooked references (`reference_acdc.py`, `reference_attribution.py` with `groups=`), a
hand-set model whose one head works at one labelled position, and the plumbing (circuit files,
resume, the command line).

The tiny tasks label two random tokens of every prompt X and Y and its last token END (so the
groups are X, Y, END and `other`), or give every prompt the same length for `all` (a group per
token index). Their metric positions are random (the last always among them), so some groups
hold metric positions and others not.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass

import pytest
import reference_acdc as ref
import reference_attribution as ra
import torch
from cli_helpers import error_line, invoke
from conftest import TinyTask, make_model, make_task
from test_engine_matches_reference import TIE, compare, threshold_at, windowed

from acdc.core.architecture import model_shape
from acdc.core.circuit import Circuit
from acdc.core.graph import GraphShape, build_graph, count_edges
from acdc.core.loading import LoadedModel
from acdc.core.models import build_model, extract_weights
from acdc.core.patching import PatchedModel, task_tensors
from acdc.core.positions import (
    group_names,
    group_of,
    inert_groups,
    metric_groups,
    positional_shape,
    positions_digest,
)
from acdc.core.selection import Selection, prune
from acdc.core.settings import CommonSettings
from acdc.core.tasks.values import Task
from acdc.errors import AcdcError, GraphError, TaskError

pytestmark = pytest.mark.hooked_transformer

NEEDS_ANSWERS = ("logit_diff", "prob_diff", "nll")


# --------------------------------------------------------------------------- tasks


def labelled(tiny: TinyTask, seed: int = 1) -> list[dict[str, int]]:
    """X and Y on two random tokens of each prompt (neither its first nor its last), END on
    its last."""
    rng = random.Random(seed)
    out = []
    for prompt in tiny.clean:
        x, y = rng.sample(range(1, len(prompt) - 1), 2)
        out.append({"X": x, "Y": y, "END": len(prompt) - 1})
    return out


def tiny_task(mode: str, seed: int = 7, window: bool = False, model: str = "") -> TinyTask:
    """A random task; prompts of one length for `all` and for bidirectional models."""
    length = {"min_len": 7, "max_len": 7} if mode == "all" or model.startswith("bidir") else {}
    tiny = make_task(seed, **length)
    return windowed(tiny) if window else tiny


def engine_task(tiny: TinyTask, metric: str, ablation: str, threshold: float = 0.0,
                labels: list[dict[str, int]] | None = None) -> Task:
    answers = metric in NEEDS_ANSWERS
    wrong = metric in ("logit_diff", "prob_diff")
    return Task(name="tiny", description="random tokens", source="tests", model=None,
                metric=metric, threshold=threshold, ablation=ablation, seed=0,
                clean=tiny.clean, corrupt=tiny.corrupt, positions=tiny.positions,
                answers=tiny.answers if answers else None,
                wrong_answers=tiny.wrong_answers if wrong else None,
                labels=labels if labels is not None else labelled(tiny))


def reference_groups(task: Task, mode: str) -> tuple[list[list[str]], list[str]]:
    """Each prompt's tokens' group names, and the groups in order, as the references take
    them."""
    names = group_names(task, mode)
    return [[names[g] for g in row] for row in group_of(task, names, mode)], list(names)


def loaded(model) -> LoadedModel:
    return LoadedModel("tiny", extract_weights(model), None, model_shape(model.cfg))


# --------------------------------------------------------------------------- the graph


@pytest.mark.parametrize("shape", [
    GraphShape(2, 3, False), GraphShape(3, 2, True), GraphShape(2, 2, True, "head"),
    GraphShape(2, 2, True, parallel_attn_mlp=True)], ids=str)
@pytest.mark.parametrize("groups", [("IO", "S1", "S1+1", "S2", "END", "other"), ("0",)])
def test_positional_graph_is_the_blind_one_once_per_group(shape, groups):
    blind = build_graph(shape)
    positional = build_graph(dataclasses.replace(shape, positions="labels", groups=groups))
    n = len(groups)
    assert len(positional.edges) == n * len(blind.edges) == count_edges(positional.shape)["edges"]
    counts, blind_counts = count_edges(positional.shape), count_edges(shape)
    assert counts["residual"] == n * blind_counts["residual"]
    assert counts["by_receiver"] == {k: n * v for k, v in blind_counts["by_receiver"].items()}
    assert (counts["nodes"], counts["senders"]) == (blind_counts["nodes"], blind_counts["senders"])
    for edge in positional.edges:
        base = blind.edges[edge.index // n]
        assert edge.group == edge.index % n
        assert edge.name == f"{base.name}@{groups[edge.group]}"
        assert edge.endpoints == base.endpoints and edge.kind == base.kind
    # ACDC visits each blind group of edges once per position group, in the groups' order
    order = [(node, [e.name for e in edges]) for node, edges in positional.acdc_order()]
    expected = [(node, [f"{e.name}@{g}" for e in edges])
                for node, edges in blind.acdc_order() for g in groups]
    assert order == expected


def test_positional_shape_errors():
    with pytest.raises(GraphError, match="named twice"):
        build_graph(GraphShape(1, 1, False, positions="labels", groups=("A", "A")))
    with pytest.raises(GraphError, match="not a name"):
        build_graph(GraphShape(1, 1, False, positions="labels", groups=("A@1",)))
    with pytest.raises(GraphError, match="no position groups"):
        build_graph(GraphShape(1, 1, False, groups=("A",)))
    graph = build_graph(GraphShape(1, 1, False, positions="labels", groups=("END", "other")))
    with pytest.raises(GraphError, match="@END"):
        graph.edge("input->a0.h0<q>")


def test_groups_of_a_task():
    tiny = TinyTask([[1, 2, 3, 4], [5, 6, 7]], [[1, 9, 3, 4], [5, 6, 8]], [[3], [1, 2]],
                    [[1], [2]], [[3], [4]])
    task = engine_task(tiny, "kl", "corrupt", labels=[{"S": 1, "END": 3}, {"S": 0, "END": 2}])
    assert group_names(task, "labels") == ("S", "END", "other")
    assert group_of(task, ("S", "END", "other"), "labels") == [[2, 0, 2, 1], [0, 2, 1]]
    assert metric_groups(task, ("S", "END", "other"), "labels") == {1, 2}
    # prompt 0 differs first at position 1, prompt 1 at 2; their last metric positions 3 and 2
    assert inert_groups(task, ("S", "END", "other"), "labels", "corrupt", True) == set()
    assert inert_groups(task, ("S", "END", "other"), "labels", "zero", True) == set()
    no_labels = dataclasses.replace(task, labels=None)
    with pytest.raises(TaskError, match="labels no positions.*--positions all"):
        group_names(no_labels, "labels")
    with pytest.raises(TaskError, match="3 to 4 tokens.*--positions labels"):
        group_names(task, "all")
    with pytest.raises(TaskError, match="its position groups are S, END, other"):
        group_of(task, ("A", "other"), "labels")
    same = engine_task(TinyTask([[1, 2, 3, 4]], [[1, 2, 9, 4]], [[2]], [[1]], [[3]]), "kl",
                       "corrupt", labels=[{"S": 1}])
    names = group_names(same, "all")
    assert names == ("0", "1", "2", "3")
    # before the first difference (positions 0, 1) and after the last metric position (3)
    assert inert_groups(same, names, "all", "corrupt", True) == {0, 1, 3}
    assert inert_groups(same, names, "all", "mean", True) == {3}
    assert inert_groups(same, names, "all", "corrupt", False) == set()
    assert positions_digest(task, ("S", "END", "other"), "labels") != positions_digest(
        engine_task(tiny, "kl", "corrupt", labels=[{"S": 2, "END": 3}, {"S": 0, "END": 2}]),
        ("S", "END", "other"), "labels")


# --------------------------------------------------------------------------- patched forward


@pytest.mark.parametrize("name", ["attn2", "mlp3", "gemma2", "llama2", "bidir_mlp3"])
@pytest.mark.parametrize("ablation", ["corrupt", "zero", "mean-positional"])
def test_a_circuit_kept_at_every_group_is_the_blind_circuit(tiny_models, name, ablation):
    """Every edge kept or removed at all groups alike: the blind circuit's logits; every edge
    kept: the clean run; none: the ablated run."""
    model = tiny_models[name]
    tiny = tiny_task("all" if name.startswith("bidir") else "labels")
    task = engine_task(tiny, "kl", ablation)
    w = extract_weights(model)
    blind = build_graph(model_shape(model.cfg).graph_shape())
    shape = positional_shape(blind.shape, task, "labels")
    graph = build_graph(shape)
    models = []
    for g in (blind, graph):
        t = task_tensors(task, "cpu", w.causal, g.shape)
        models.append(PatchedModel(w, g, t.clean, t.corrupt, t.pos_batch, t.pos_index, ablation,
                                   t.lengths, groups=t.groups))
    plain, positional = models
    assert torch.equal(plain.clean_logits, positional.clean_logits)
    generator = torch.Generator().manual_seed(0)
    for fraction in (0.0, 0.3, 0.8):
        kept = torch.rand(len(blind.edges), generator=generator) < fraction
        expected = plain.circuit_logits(kept)
        got = positional.circuit_logits(kept.repeat_interleave(graph.n_groups))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["attn2", "mlp3", "neox2", "gemma2", "bidir_attn2"])
@pytest.mark.parametrize("granularity", ["qkv", "head"])
def test_pruning_at_positions_drops_only_edges_without_effect(tiny_models, name, granularity):
    """Sound pruning: the kept edges `prune` drops change nothing (the pruned circuit's logits
    at the metric positions are the unpruned one's), and what it keeps is on a path."""
    model = tiny_models[name]
    mode = "all" if name.startswith("bidir") else "labels"
    task = engine_task(tiny_task(mode), "kl", "corrupt")
    shape = positional_shape(model_shape(model.cfg).graph_shape(granularity), task, mode)
    graph = build_graph(shape)
    w = extract_weights(model)
    t = task_tensors(task, "cpu", w.causal, shape)
    patched = PatchedModel(w, graph, t.clean, t.corrupt, t.pos_batch, t.pos_index, "corrupt",
                           t.lengths, groups=t.groups)
    sinks = metric_groups(task, shape.groups, mode)
    generator = torch.Generator().manual_seed(1)
    dropped = 0
    for fraction in (0.1, 0.3, 0.6):
        kept = (torch.rand(len(graph.edges), generator=generator) < fraction).tolist()
        pruned = prune(graph, kept, sinks)
        assert all(k or not p for k, p in zip(kept, pruned, strict=True))
        dropped += sum(kept) - sum(pruned)
        before = patched.circuit_logits(torch.tensor(kept))
        after = patched.circuit_logits(torch.tensor(pruned))
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
        assert prune(graph, pruned, sinks) == pruned
    assert dropped > 0  # the test prunes something


def test_pruning_joins_groups_through_keys_and_values():
    """A query edge at g reaches the head at g only; a key (or value) edge at g reaches the
    head at every group."""
    graph = build_graph(GraphShape(1, 1, False, positions="labels", groups=("A", "B")))

    def pruned(names: list[str]) -> list[str]:
        kept = [e.name in names for e in graph.edges]
        return [e.name for e in graph.edges if prune(graph, kept)[e.index]]

    through_q = ["input->a0.h0<q>@A", "a0.h0<q>->a0.h0@A", "a0.h0->logits@B"]
    assert pruned(through_q) == []
    through_k = ["input->a0.h0<k>@A", "a0.h0<k>->a0.h0@A", "a0.h0->logits@B"]
    assert pruned(through_k) == through_k
    # logits read only at B (the metric's group): an edge into logits at A leads nowhere
    kept = [e.name in through_k + ["input->logits@A"] for e in graph.edges]
    assert not prune(graph, kept, sinks={1})[graph.edge_index["input->logits@A"]]


# --------------------------------------------------------------------------- ACDC


@dataclass(frozen=True)
class Case:
    model: str
    mode: str = "labels"
    metric: str = "kl"
    ablation: str = "corrupt"
    granularity: str = "qkv"
    use_abs: bool = False
    reverse_head_order: bool = False
    candidates: int = 0
    low_rank: bool = False
    window: bool = False  # clean and corrupt share a prefix; no metric at the last positions
    quantiles: tuple[float, ...] = (0.5,)

    def __str__(self) -> str:
        flags = [self.model, self.mode, self.metric, self.ablation, self.granularity]
        flags += ["abs"] * self.use_abs + ["reverse"] * self.reverse_head_order
        flags += [f"candidates{self.candidates}"] * bool(self.candidates)
        flags += ["lowrank"] * self.low_rank + ["window"] * self.window
        return "-".join(flags)


CASES = [
    Case("attn2", quantiles=(0.3, 0.7)),
    Case("attn2", "all", ablation="zero"),
    Case("attn2", "labels", "logit_diff", candidates=4, low_rank=True, window=True),
    Case("mlp3", "labels", "logit_diff", candidates=5, low_rank=True, quantiles=(0.3, 0.7)),
    Case("mlp3", "all", ablation="mean-positional", granularity="head"),
    Case("mlp3", "labels", "nll", window=True),
    Case("nonorm2", "labels", "l2", "zero", "head", use_abs=True),
    Case("nonorm2", "all", "prob_diff", "mean", reverse_head_order=True),
    Case("one_head", candidates=8, low_rank=True),
    Case("bidir_attn2", "all"),
    Case("bidir_mlp3", "labels", "logit_diff", "zero", "head", candidates=3),
    Case("neox2", quantiles=(0.3, 0.7)),
    Case("gptj2", "all", "logit_diff", "zero", "head"),
    Case("llama2", "labels", "nll", "mean-positional", candidates=5, low_rank=True),
    Case("gemma2"),
    Case("gemma2", "all", "logit_diff", "zero", "head"),
    Case("neo2", "labels", "kl", "mean", window=True),
]


def run_case(case: Case, tiny_models, monkeypatch):
    from acdc.methods.acdc import propagation
    from acdc.methods.acdc.search import AcdcSettings, run_acdc

    if case.low_rank:
        monkeypatch.setattr(propagation, "LOW_RANK_MIN_WORK", 0)
        monkeypatch.setattr(propagation, "THIN_PRODUCT_COST", 0)
    model = tiny_models[case.model]
    tiny = tiny_task(case.mode, window=case.window, model=case.model)
    task = engine_task(tiny, case.metric, case.ablation)
    groups, names = reference_groups(task, case.mode)
    options = dict(metric=case.metric, ablation=case.ablation, granularity=case.granularity,
                   use_abs=case.use_abs, reverse_head_order=case.reverse_head_order,
                   groups=groups, group_names=names)
    calibration = ref.reference_acdc(model, *tiny.args(),
                                     threshold=0.0 if case.use_abs else -math.inf, **options)
    scores = sorted(abs(s) if case.use_abs else s for _, s in calibration.values()
                    if s is not None)
    common = CommonSettings(case.metric, case.ablation, case.granularity, case.mode)
    for quantile in case.quantiles:
        threshold = threshold_at(scores, quantile)
        results = {}
        for engine in ("incremental", "full"):
            settings = AcdcSettings(threshold, abs=case.use_abs,
                                    reverse_head_order=case.reverse_head_order, engine=engine,
                                    candidates=case.candidates if engine == "incremental" else 0)
            circuit = run_acdc(loaded(model), task, common, settings)
            assert not circuit.partial
            results[engine] = {e.name: (circuit.kept[e.index], circuit.scores[e.index])
                               for e in circuit.graph.edges}
        reference = ref.reference_acdc(
            model, *tiny.args(), threshold=threshold, **options,
            follow={name: kept for name, (kept, _) in results["incremental"].items()},
            follow_tolerance=TIE * max(1.0, abs(threshold)))
        yield threshold, results, reference


@pytest.mark.parametrize("case", CASES, ids=str)
def test_acdc_at_positions_matches_the_reference(tiny_models, case, monkeypatch):
    """Both engines make the positional reference's decision on every edge (scores to 1e-4),
    removing untested exactly the edges the reference removes untested."""
    for threshold, results, reference in run_case(case, tiny_models, monkeypatch):
        n_kept = sum(kept for kept, _ in reference.values())
        untested = sum(score is None for _, score in reference.values())
        for engine, result in results.items():
            assert set(result) == set(reference), "the engine's graph is not the reference's"
            problems, ties = compare(case, threshold, result, reference)  # type: ignore[arg-type]
            summary = (f"{case} {engine} threshold={threshold:.6g}: reference keeps "
                       f"{n_kept}/{len(reference)} ({untested} untested), {ties} ties")
            assert not problems, summary + "\n" + "\n".join(problems[:25])
        assert 0 < n_kept < len(reference) - untested  # some kept, some removed by a test
        assert untested > 0  # the dead-node rules removed some edges untested


# --------------------------------------------------------------------------- attribution


@pytest.mark.parametrize("name,mode,metric,ablation,granularity,ig", [
    ("attn2", "labels", "logit_diff", "corrupt", "qkv", False),
    ("mlp3", "all", "kl", "mean", "qkv", True),
    ("nonorm2", "labels", "nll", "zero", "head", True),
    ("llama2", "all", "prob_diff", "mean-positional", "qkv", True),
    ("neox2", "labels", "logit_diff", "corrupt", "head", False),
    ("gemma2", "labels", "logit_diff", "corrupt", "qkv", False),
    ("mlp3", "labels", "logit_diff", "corrupt", "qkv", True),
    ("llama2", "all", "kl", "corrupt", "head", True),
    ("gemma2", "labels", "kl", "corrupt", "qkv", True),
])
def test_attribution_at_positions(name, mode, metric, ablation, granularity, ig):
    """EAP (EAP-IG) at positions equals the autograd references (one mask per positional
    edge; the receivers' gradients summed over each group's tokens), and summing a positional
    edge's scores over its groups gives the blind score."""
    from acdc.methods.attribution import EAP, EAP_IG, EapIgSettings, EapSettings
    from acdc.methods.base import run_method

    model = make_model(name).to(torch.float64)
    task = engine_task(tiny_task(mode, seed=9), metric, ablation)
    settings = EapIgSettings(ig_steps=3) if ig else EapSettings()
    method = EAP_IG if ig else EAP
    circuits = {positions: run_method(method, loaded(model), task,
                                      CommonSettings(metric, ablation, granularity, positions),
                                      settings, Selection(top_n=10))
                for positions in ("none", mode)}
    positional, blind = circuits[mode], circuits["none"]
    n = positional.graph.n_groups
    summed = torch.tensor(positional.scores, dtype=torch.float64).view(-1, n).sum(1)
    torch.testing.assert_close(summed, torch.tensor(blind.scores, dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)
    assert positional.blind_scores() == pytest.approx(blind.scores, rel=1e-9, abs=1e-12)
    groups, names = reference_groups(task, mode)
    problem = ra.Problem(model, task.clean, task.corrupt, task.positions, task.answers,
                         task.wrong_answers, metric, ablation, granularity, groups, names)
    references = [problem.scores_by_masks(settings.alphas)]
    if not model.cfg.use_normalization_before_and_after:
        references.append(problem.scores_by_gradients(settings.alphas))
    engine = {e.name: positional.scores[e.index] for e in positional.graph.edges}
    scale = max(abs(s) for s in engine.values())
    for reference in references:
        assert set(reference) == set(engine)
        worst = max(abs(engine[k] - reference[k]) for k in reference)
        assert worst <= 1e-9 * scale, worst


@pytest.mark.parametrize("name,mode,metric,ablation,granularity", [
    ("attn2", "labels", "kl", "corrupt", "qkv"),
    ("mlp3", "all", "logit_diff", "mean", "qkv"),
    ("gemma2", "labels", "kl", "zero", "qkv"),
    ("llama2", "labels", "nll", "corrupt", "head"),
])
def test_exact_patching_at_positions(name, mode, metric, ablation, granularity):
    """An edge's exact score at a group is the hooked reference's metric change when that
    edge alone is removed at that group's tokens."""
    from acdc.methods.base import run_method
    from acdc.methods.exact import EXACT

    model = make_model(name).to(torch.float64)
    tiny = tiny_task(mode, seed=9)
    task = engine_task(tiny, metric, ablation)
    circuit = run_method(EXACT, loaded(model), task,
                         CommonSettings(metric, ablation, granularity, mode), None,
                         Selection(top_n=10))
    groups, _ = reference_groups(task, mode)
    args = (model, *tiny.args())
    full = ref.circuit_metric(*args, set(), metric, ablation, granularity, groups)
    edges = circuit.graph.edges
    for i in random.Random(0).sample(range(len(edges)), 25):
        expected = ref.circuit_metric(*args, {edges[i].name}, metric, ablation, granularity,
                                      groups) - full
        assert circuit.scores[i] == pytest.approx(expected, rel=1e-7, abs=1e-10), edges[i].name


# --------------------------------------------------------------------------- one head, one place


SELECT_A, SELECT_B, START = 10, 11, 12  # the selector tokens, the first token
HAND_VOCAB, HAND_CTX = 16, 8


def selector_model():
    """A one-layer attention-only model whose head a0.h0 copies, at the last token, the token
    at position 1 or 2 as the last token selects (SELECT_A: position 1, SELECT_B: 2): its
    query reads the selector, its keys the position, its values the token, and its output
    goes to the logits. Head a0.h1 does nothing. Token and position embeddings are one-hot in
    separate dimensions; no norms."""
    d_model = HAND_VOCAB + HAND_CTX
    config = {"n_layers": 1, "d_model": d_model, "n_heads": 2, "d_head": HAND_VOCAB,
              "attn_only": True, "normalization_type": None, "d_vocab": HAND_VOCAB,
              "n_ctx": HAND_CTX}
    model = build_model(config, seed=0)
    big = 20.0
    state = {name: torch.zeros_like(value) for name, value in model.state_dict().items()
             if not name.endswith(("IGNORE", "mask"))}
    state["embed.W_E"][:, :HAND_VOCAB] = torch.eye(HAND_VOCAB)
    state["pos_embed.W_pos"][:, HAND_VOCAB:] = torch.eye(HAND_CTX)
    attn = "blocks.0.attn."
    state[attn + "W_Q"][0, SELECT_A, 0] = state[attn + "W_Q"][0, SELECT_B, 1] = big
    state[attn + "W_K"][0, HAND_VOCAB + 1, 0] = state[attn + "W_K"][0, HAND_VOCAB + 2, 1] = big
    state[attn + "W_V"][0, :HAND_VOCAB] = torch.eye(HAND_VOCAB)
    state[attn + "W_O"][0, :, :HAND_VOCAB] = torch.eye(HAND_VOCAB)
    state["unembed.W_U"][:HAND_VOCAB] = torch.eye(HAND_VOCAB)
    model.load_state_dict(state, strict=False)
    return model


def selector_task(n: int = 12) -> Task:
    """[START, a, b, d, SELECT_A] -> a; corrupted: [START, a, b, d', SELECT_B] (which says b):
    the answer comes from the head's query at the last token. d is a distractor token that
    differs too, and is read by nothing."""
    rng = random.Random(3)
    clean, corrupt, answers, wrong, labels = [], [], [], [], []
    for _ in range(n):
        a, b, d, e = rng.sample(range(10), 4)
        clean.append([START, a, b, d, SELECT_A])
        corrupt.append([START, a, b, e, SELECT_B])
        answers.append([a])
        wrong.append([b])
        labels.append({"A": 1, "B": 2, "D": 3, "END": 4})
    return Task(name="selector", description="", source="tests", model=None,
                metric="logit_diff", threshold=0.1, ablation="corrupt", seed=0, clean=clean,
                corrupt=corrupt, positions=[[4]] * n, answers=answers, wrong_answers=wrong,
                labels=labels)


def test_a_head_that_works_at_one_position_is_found_there():
    """ACDC and EAP at positions keep a0.h0's query and output edges at END and nothing of it
    elsewhere; the blind run keeps the same edges for every position. Both circuits are
    faithful, at the same number of edges."""
    from acdc.methods.acdc.search import AcdcSettings, run_acdc
    from acdc.methods.attribution import EAP
    from acdc.methods.base import run_method

    model, task = loaded(selector_model()), selector_task()
    found = {}
    for positions in ("none", "labels"):
        circuit = run_acdc(model, task, CommonSettings("logit_diff", positions=positions),
                           AcdcSettings(threshold=0.1))
        found[positions] = circuit
    blind, positional = found["none"], found["labels"]
    path = ["input->a0.h0<q>", "a0.h0<q>->a0.h0", "a0.h0->logits"]
    assert [e.name for e in blind.kept_edges()] == path
    assert [e.name for e in positional.kept_edges()] == [f"{name}@END" for name in path]
    assert positional.metric_circuit == pytest.approx(positional.metric_full, abs=0.05)
    assert blind.metric_circuit == pytest.approx(blind.metric_full, abs=0.05)
    # EAP ranks the same three edges, at END, first
    eap = run_method(EAP, model, task, CommonSettings("logit_diff", positions="labels"),
                     selection=Selection(top_n=2))
    top = sorted(eap.graph.edges, key=lambda e: -abs(eap.scores[e.index] or 0))[:2]
    assert {e.name for e in top} == {"input->a0.h0<q>@END", "a0.h0->logits@END"}
    assert [e.name for e in eap.kept_edges()] == [f"{name}@END" for name in path]


# --------------------------------------------------------------------------- files and runs


def test_positional_circuit_file_round_trip():
    graph = build_graph(GraphShape(2, 2, True, positions="labels",
                                   groups=("IO", "END", "other")))
    kept = tuple(i % 4 == 0 for i in range(len(graph.edges)))
    circuit = Circuit(graph, kept, tuple(float(i) for i in range(len(kept))),
                      {"model": "m", "task": "t", "method": "eap", "metric": "kl",
                       "ablation": "corrupt", "granularity": "qkv", "positions": "labels",
                       "positions_sha256": "0" * 64},
                      {"metric_circuit": 0.1, "metric_full": 0.0, "runtime_s": 1.0,
                       "partial": False})
    data = json.loads(json.dumps(circuit.to_json()))
    assert data["groups"] == ["IO", "END", "other"] and data["positions"] == "labels"
    assert data["edges"][1]["name"] == "input->a0.h0<q>@END"
    back = Circuit.from_json(data)
    assert (back.graph.shape, back.kept, back.scores) == (graph.shape, kept, circuit.scores)
    assert back.settings["positions_sha256"] == "0" * 64
    assert back.blind_kept() == tuple(any(kept[i:i + 3]) for i in range(0, len(kept), 3))
    for change, message in (({"groups": ["IO", "IO", "x"]}, "named twice"),
                            ({"groups": ["IO", "END"]}, "at 2 position groups has"),
                            ({"groups": None}, "needs groups"),
                            ({"positions": "some"}, "not one of none, labels, all")):
        with pytest.raises(GraphError, match=message):
            Circuit.from_json({**data, **change})
    blind = build_graph(GraphShape(2, 2, True))
    plain = Circuit(blind, (False,) * len(blind.edges), (None,) * len(blind.edges),
                    circuit.settings | {"positions": "none"}, circuit.results).to_json()
    assert "groups" not in plain
    with pytest.raises(GraphError, match="has groups but positions none"):
        Circuit.from_json({**plain, "groups": ["A"]})


DEMO_LABELS = ["IO", "S1", "S1+1", "S2", "END", "other"]


@pytest.mark.slow
def test_discover_at_positions_end_to_end(tmp_path):
    """`circuit discover --positions labels` on the bundled demo task: the run's files record
    the mode, the groups and the digest; a resume continues it and refuses another mode; a
    method that scores nodes and a task without labels are refused in one line."""
    out = tmp_path / "run"
    result = invoke("discover", "--task", "demo", "--positions", "labels", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "circuit.json").read_text())
    assert data["positions"] == "labels" and data["groups"] == DEMO_LABELS
    assert len(data["positions_sha256"]) == 64
    header = json.loads((out / "decisions.jsonl").read_text().splitlines()[0])
    assert header["positions"] == "labels"
    assert "--positions labels" in (out / "run.yaml").read_text()
    lines = (out / "decisions.jsonl").read_text().splitlines()
    (out / "decisions.jsonl").write_text("\n".join(lines[:200]) + "\n")
    refused = invoke("discover", "--resume", out, "--positions", "none")
    assert refused.exit_code == 2 and "--positions none (the run used labels)" in refused.output
    resumed = invoke("discover", "--resume", out, "-q")
    assert resumed.exit_code == 0, resumed.output
    again = json.loads((out / "circuit.json").read_text())
    assert [e["kept"] for e in again["edges"]] == [e["kept"] for e in data["edges"]]
    # (evaluate and export at positions: test_positions_judging.py)
    refused = invoke("export", out, "--format", "mib", "--out", tmp_path / "m.json")
    assert refused.exit_code == 1 and "MIB's graph has no positions" in error_line(refused)
    hisp = invoke("discover", "--task", "demo", "--positions", "labels", "--method", "hisp",
                  "--metric", "logit_diff", "--top-n", "3", "--out", tmp_path / "hisp")
    assert hisp.exit_code == 1
    assert "method hisp does not work at positions" in error_line(hisp)
    induction = invoke("discover", "--task", "induction", "--positions", "labels", "--out",
                       tmp_path / "induction")
    assert induction.exit_code == 1
    assert "labels no positions" in error_line(induction)


def test_graph_counts_positions(tmp_path):
    from test_cli import TINY_CONFIG, config_dir

    directory = config_dir(tmp_path, TINY_CONFIG)
    blind = invoke("graph", "--model", directory)
    positional = invoke("graph", "--model", directory, "--positions", "6")
    assert blind.exit_code == positional.exit_code == 0
    edges = count_edges(GraphShape(2, 2, True))["edges"]
    assert f"edges: {6 * edges:,} =" in positional.output
    assert f"({edges:,} blind edges at 6 position groups)" in positional.output
    assert "positions" not in blind.output.split("memory estimate")[1]
    assert "+ positions" in positional.output


def test_methods_that_cannot_work_at_positions_refuse():
    from acdc.methods.base import check_positions
    from acdc.methods.registry import METHODS

    assert {name for name, m in METHODS.items() if m.positions} == {"acdc", "eap", "eap-ig",
                                                                      "exact"}
    with pytest.raises(AcdcError, match="hisp does not work at positions .it scores heads"):
        check_positions(METHODS["hisp"], CommonSettings(positions="all"))
    check_positions(METHODS["hisp"], CommonSettings())


def test_positions_are_recorded_only_when_not_none():
    from acdc.core.settings import settings_record
    from acdc.methods.acdc.settings import AcdcSettings
    from acdc.run import RunSettings

    assert "positions" not in settings_record(CommonSettings())
    assert settings_record(CommonSettings(positions="labels"))["positions"] == "labels"
    with pytest.raises(AcdcError, match="unknown positions 'some'"):
        CommonSettings(positions="some").validate()  # type: ignore[arg-type]
    for positions in ("none", "labels"):
        run = RunSettings("t", "t.yaml", "m", "acdc", AcdcSettings(0.1), CommonSettings(
            positions=positions), seed=0)  # type: ignore[arg-type]
        record = run.record()
        assert ("positions" in record) == (positions != "none")
        back = RunSettings.from_record(record, "log")
        assert back.common == run.common
        assert ("--positions" in run.repeat_command()) == (positions != "none")
        assert run.conflicts({"positions": positions}) == []
        other = "all" if positions == "none" else "none"
        assert run.conflicts({"positions": other}) == [
            f"--positions {other} (the run used {positions})"]
