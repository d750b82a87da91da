"""Exact edge patching: every edge's score is the metric change of removing it alone.

Held to the ACDC engine's scores of a search that keeps every edge (so that each edge is
tested in the full graph) on every tiny model family, ablation and granularity, and to the
slow hooked reference (`reference_acdc.circuit_metric` with one edge removed).
"""

from __future__ import annotations

import json

import pytest
import reference_acdc as ref
import torch
from conftest import EQUAL_LENGTHS, MODEL_CONFIGS, MODEL_SEEDS, TinyTask, make_model, make_task
from test_engine_matches_reference import windowed
from typer.testing import CliRunner

import cli
from acdc.core import removals
from acdc.core.loading import LoadedModel
from acdc.core.models import extract_weights, model_shape
from acdc.core.selection import Selection, select_edges
from acdc.core.settings import CommonSettings
from acdc.core.tasks.values import Task
from acdc.methods.acdc.search import AcdcSettings, run_acdc
from acdc.methods.base import run_method
from acdc.methods.exact import EXACT

# The slow hooked reference and the tiny random models need TransformerLens 3.x (see conftest).
pytestmark = pytest.mark.hooked_transformer

ATOL, RTOL = 1e-5, 1e-4  # float32 against float32 (the engine tests allow 1e-4)
KEEP_EVERY_EDGE = -1e30  # an ACDC threshold no change falls below: every edge tested, kept

_models: dict[str, object] = {}


def model_of(name: str):
    if name not in _models:
        _models[name] = make_model(name)
    return _models[name]


def tiny_of(name: str, window: bool = False) -> TinyTask:
    tiny = make_task(100 + MODEL_SEEDS[name],
                     **({"min_len": 8, "max_len": 8} if name in EQUAL_LENGTHS else {}))
    return windowed(tiny) if window else tiny


def task_of(tiny: TinyTask, metric: str, ablation: str) -> Task:
    return Task(name="tiny", description="random tokens", source="tests", model=None,
                metric=metric, threshold=0.0, ablation=ablation, seed=0, clean=tiny.clean,
                corrupt=tiny.corrupt, positions=tiny.positions, answers=tiny.answers,
                wrong_answers=tiny.wrong_answers)


def loaded(name: str) -> LoadedModel:
    model = model_of(name)
    return LoadedModel(name, extract_weights(model), None, model_shape(model.cfg))


CASES = [(name, metric, ablation, granularity, window)
         for name in MODEL_CONFIGS
         for metric, ablation, granularity, window in (
             ("kl", "corrupt", "qkv", False),
             ("logit_diff", "zero", "head", False),
             ("nll", "mean-positional", "qkv", False),
         )] + [
    ("mlp3", "logit_diff", "corrupt", "qkv", True),
    ("attn2", "kl", "corrupt", "head", True),
    ("llama2", "prob_diff", "mean", "qkv", True),
    ("gemma2", "kl", "corrupt", "qkv", True),
    ("neox2", "l2", "zero", "qkv", False),
]


@pytest.mark.parametrize("name,metric,ablation,granularity,window", CASES,
                         ids=lambda v: str(v))
def test_exact_scores_are_the_acdc_engines_tests_of_the_full_graph(name, metric, ablation,
                                                                  granularity, window):
    task = task_of(tiny_of(name, window), metric, ablation)
    common = CommonSettings(metric, ablation, granularity)
    circuit = run_method(EXACT, loaded(name), task, common, selection=Selection(top_n=5))
    acdc = run_acdc(loaded(name), task, common, AcdcSettings(KEEP_EVERY_EDGE))
    assert all(acdc.kept) and all(s is not None for s in acdc.scores)
    assert all(s is not None for s in circuit.scores)
    torch.testing.assert_close(torch.tensor(circuit.scores, dtype=torch.float64),
                               torch.tensor(acdc.scores, dtype=torch.float64),
                               atol=ATOL, rtol=RTOL)
    assert max(abs(s) for s in circuit.scores) > 1e-3  # a case worth comparing


@pytest.mark.parametrize("name,metric,ablation,granularity,window", [
    ("mlp3", "logit_diff", "corrupt", "qkv", False),
    ("attn2", "kl", "zero", "qkv", False),
    ("llama2", "nll", "mean", "qkv", True),
    ("gemma2", "logit_diff", "corrupt", "head", False),
    ("neox2", "kl", "mean-positional", "qkv", False),
])
def test_exact_scores_are_the_slow_references_single_removals(name, metric, ablation,
                                                              granularity, window):
    tiny = tiny_of(name, window)
    task = task_of(tiny, metric, ablation)
    common = CommonSettings(metric, ablation, granularity)
    circuit = run_method(EXACT, loaded(name), task, common, selection=Selection(top_n=5))
    model = model_of(name)
    answers = tiny.answers if metric != "kl" else None

    def reference(removed: set[str]) -> float:
        return ref.circuit_metric(model, tiny.clean, tiny.corrupt, tiny.positions, answers,
                                  tiny.wrong_answers, removed, metric, ablation, granularity)

    full = reference(set())
    edges = circuit.graph.edges
    # every direct edge, and every third residual edge (each reference test is a hooked pass)
    sample = [e for e in edges if e.kind == "direct" or e.index % 3 == 0]
    assert any(e.kind == "direct" for e in sample) == (granularity == "qkv")
    for edge in sample:
        expected = reference({edge.name}) - full
        got = circuit.scores[edge.index]
        assert got is not None and abs(got - expected) <= 1e-4 + 1e-4 * abs(expected), (
            f"{edge.name}: exact {got!r}, reference {expected!r}")


def test_candidates_per_pass_change_nothing(monkeypatch):
    """One edge per pass (the smallest budget) gives the scores of many per pass."""
    task = task_of(tiny_of("mlp3", window=True), "logit_diff", "corrupt")
    common = CommonSettings("logit_diff", "corrupt")
    many = run_method(EXACT, loaded("mlp3"), task, common, selection=Selection(top_n=5))
    monkeypatch.setattr(removals, "CANDIDATE_NUMBERS", 1)
    one = run_method(EXACT, loaded("mlp3"), task, common, selection=Selection(top_n=5))
    assert one.results["removal_passes"] == len(one.graph.edges)
    # one pass per receiver's residual edges, and one per direct edge
    assert many.results["removal_passes"] == len(removals.receiver_groups(many.graph)) < 60
    torch.testing.assert_close(torch.tensor(one.scores), torch.tensor(many.scores),
                               atol=1e-6, rtol=1e-5)


def test_circuit_is_the_top_edges_by_magnitude_and_measured():
    task = task_of(tiny_of("mlp3"), "logit_diff", "corrupt")
    common = CommonSettings("logit_diff", "corrupt")
    circuit = run_method(EXACT, loaded("mlp3"), task, common, selection=Selection(top_n=12))
    graph = circuit.graph
    chosen = select_edges(graph, list(circuit.scores), Selection(top_n=12))
    residual = sorted((e for e in graph.edges if e.kind == "residual"),
                      key=lambda e: -abs(circuit.scores[e.index]))
    assert {e.index for e in residual[:12]} == {e.index for e in graph.edges
                                               if chosen[e.index] and e.kind == "residual"}
    assert circuit.results["n_edges_selected"] == 12
    assert set(e.index for e in circuit.kept_edges()) <= {i for i, k in enumerate(chosen) if k}
    tiny = tiny_of("mlp3")
    removed = {e.name for e in graph.edges if not circuit.kept[e.index]}
    expected = ref.circuit_metric(model_of("mlp3"), tiny.clean, tiny.corrupt, tiny.positions,
                                  tiny.answers, tiny.wrong_answers, removed, "logit_diff",
                                  "corrupt")
    assert abs(circuit.metric_circuit - expected) < 1e-4
    # the sign: removing an edge the model's logit difference relies on raises the metric
    assert max(circuit.scores) > 0  # type: ignore[type-var]


def test_progress_reports_every_pass():
    task = task_of(tiny_of("attn2"), "kl", "corrupt")
    reports = []
    circuit = run_method(EXACT, loaded("attn2"), task, CommonSettings(),
                         selection=Selection(top_n=5), on_progress=reports.append)
    assert len(reports) == circuit.results["removal_passes"]
    assert reports[-1].decided == reports[-1].total == len(circuit.graph.edges)
    assert [r.decided for r in reports] == sorted(r.decided for r in reports)


runner = CliRunner()


def test_cli_discover_exact(tmp_path):
    from conftest import model_config

    from acdc.core.models import save_checkpoint

    config = model_config("mlp3")
    save_checkpoint(model_of("mlp3"), tmp_path / "model", config=config)
    tiny = tiny_of("mlp3")
    prompts = [{"clean": c, "corrupt": k, "answer": a, "wrong": w, "positions": p}
               for c, k, a, w, p in zip(tiny.clean, tiny.corrupt, tiny.answers,
                                        tiny.wrong_answers, tiny.positions, strict=True)]
    task_file = tmp_path / "task.yaml"
    task_file.write_text(json.dumps({"name": "tiny", "model": "model", "metric": "logit_diff",
                                     "threshold": 0.01, "prompts": prompts}))
    out = tmp_path / "run"
    result = runner.invoke(cli.app, ["discover", "--task", str(task_file), "--method", "exact",
                                     "--top-n", "20", "--out", str(out), "--no-render"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "circuit.json").read_text())
    assert data["method"] == "exact" and data["top_n"] == 20
    assert all(isinstance(e["score"], float) for e in data["edges"])
    assert data["n_edges_selected"] == 20
