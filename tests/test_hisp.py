"""HISP: heads and MLPs ranked by their summed |gate gradient|, held to an autograd reference
(TransformerLens hooks, one prompt at a time) on tiny models of several families; the node
circuit it chooses, measured as the slow ACDC reference measures circuits."""

from __future__ import annotations

import json

import pytest
import reference_acdc as ref
import torch
from conftest import EQUAL_LENGTHS, MODEL_SEEDS, make_model, make_task, model_config
from reference_hisp import reference_hisp
from typer.testing import CliRunner

import cli
from acdc.core.loading import LoadedModel
from acdc.core.models import extract_weights, model_shape, save_checkpoint
from acdc.core.selection import Selection, edges_among, prune, scored_nodes
from acdc.core.settings import CommonSettings
from acdc.core.tasks.values import Task
from acdc.errors import AcdcError
from acdc.methods.base import run_method
from acdc.methods.hisp import HISP, HispSettings

# The hooked reference and the tiny random models need TransformerLens 3.x (see conftest).
pytestmark = pytest.mark.hooked_transformer

_models: dict[tuple[str, torch.dtype], object] = {}


def model_of(name: str, dtype: torch.dtype = torch.float64):
    if (name, dtype) not in _models:
        _models[(name, dtype)] = make_model(name).to(dtype, print_details=False)
    return _models[(name, dtype)]


def task_of(name: str, metric: str, ablation: str = "corrupt") -> Task:
    tiny = make_task(300 + MODEL_SEEDS[name],
                     **({"min_len": 8, "max_len": 8} if name in EQUAL_LENGTHS else {}))
    return Task(name="tiny", description="random tokens", source="tests", model=None,
                metric=metric, threshold=0.0, ablation=ablation, seed=0, clean=tiny.clean,
                corrupt=tiny.corrupt, positions=tiny.positions, answers=tiny.answers,
                wrong_answers=tiny.wrong_answers)


def run(name: str, metric: str, ablation: str = "corrupt", raw: bool = False, top_n: int = 3,
        dtype: torch.dtype = torch.float64, granularity: str = "qkv"):
    model = model_of(name, dtype)
    loaded = LoadedModel(name, extract_weights(model), None, model_shape(model.cfg))
    return run_method(HISP, loaded, task_of(name, metric, ablation),
                      CommonSettings(metric, ablation, granularity), HispSettings(raw_scores=raw),
                      Selection(top_n=top_n))


@pytest.mark.parametrize("name,metric,raw", [
    ("attn2", "logit_diff", False), ("mlp3", "logit_diff", True), ("mlp3", "nll", False),
    ("nonorm2", "prob_diff", False), ("bidir_mlp3", "logit_diff", False),
    ("neox2", "logit_diff", False), ("gptj2", "nll", True), ("llama2", "logit_diff", False),
    ("gemma2", "prob_diff", False), ("neo2", "logit_diff", True),
])
def test_scores_match_the_autograd_reference(name, metric, raw):
    circuit = run(name, metric, raw=raw)
    task = task_of(name, metric)
    expected = reference_hisp(model_of(name), task.clean, task.positions, task.answers,
                              task.wrong_answers, metric, normalise=not raw)
    assert circuit.node_scores is not None
    assert set(circuit.node_scores) == set(expected) == set(scored_nodes(circuit.graph))
    for unit, value in expected.items():
        got = circuit.node_scores[unit]
        assert got == pytest.approx(value, rel=1e-7, abs=1e-10), unit
    assert max(expected.values()) > 1e-3  # a case worth comparing


def test_float32_scores_match_the_reference():
    circuit = run("mlp3", "logit_diff", dtype=torch.float32)
    task = task_of("mlp3", "logit_diff")
    expected = reference_hisp(model_of("mlp3"), task.clean, task.positions, task.answers,
                              task.wrong_answers, "logit_diff")
    assert circuit.node_scores is not None
    for unit, value in expected.items():
        assert circuit.node_scores[unit] == pytest.approx(value, rel=1e-4, abs=1e-6), unit


def test_scores_do_not_depend_on_the_ablation():
    scores = [run("mlp3", "logit_diff", ablation).node_scores
              for ablation in ("corrupt", "zero", "mean")]
    assert scores[0] == scores[1] == scores[2]


def test_normalised_layers_have_unit_norm():
    raw = run("mlp3", "logit_diff", raw=True).node_scores
    normalised = run("mlp3", "logit_diff").node_scores
    assert raw is not None and normalised is not None
    for layer in range(3):
        names = [f"a{layer}.h{h}" for h in range(3)] + [f"m{layer}"]
        norm = sum(raw[n] ** 2 for n in names) ** 0.5
        for n in names:
            assert normalised[n] == pytest.approx(raw[n] / norm)


@pytest.mark.parametrize("granularity", ["qkv", "head"])
def test_the_circuit_is_every_edge_among_the_top_units(granularity):
    circuit = run("mlp3", "logit_diff", "zero", top_n=4, granularity=granularity)
    assert circuit.level == "node" and circuit.node_scores is not None
    graph = circuit.graph
    top = sorted(circuit.node_scores, key=lambda n: -circuit.node_scores[n])[:4]  # type: ignore
    assert circuit.kept == tuple(prune(graph, edges_among(graph, top)))
    assert circuit.results["n_nodes_selected"] == 4
    assert all(s is None for s in circuit.scores)
    task = task_of("mlp3", "logit_diff", "zero")
    removed = {e.name for e in graph.edges if not circuit.kept[e.index]}
    expected = ref.circuit_metric(model_of("mlp3"), task.clean, task.corrupt, task.positions,
                                  task.answers, task.wrong_answers, removed, "logit_diff", "zero",
                                  granularity)
    assert circuit.metric_circuit == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("metric", ["kl", "l2"])
def test_hisp_refuses_a_metric_with_zero_gradient_at_the_clean_run(metric):
    with pytest.raises(AcdcError, match="zero gradient at the clean run"):
        run("attn2", metric)


runner = CliRunner()


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hisp")
    save_checkpoint(model_of("mlp3", torch.float32), directory / "model",
                    config=model_config("mlp3"))
    task = task_of("mlp3", "logit_diff")
    prompts = [{"clean": c, "corrupt": k, "answer": a, "wrong": w, "positions": p}
               for c, k, a, w, p in zip(task.clean, task.corrupt, task.answers,
                                        task.wrong_answers, task.positions, strict=True)]
    path = directory / "task.yaml"
    path.write_text(json.dumps({"name": "tiny", "model": "model", "metric": "logit_diff",
                                "threshold": 0.01, "prompts": prompts}))
    return path


def test_cli_discover_hisp(task_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli.app, ["discover", "--task", str(task_file), "--method", "hisp",
                                     "--top-n", "5", "--out", str(out), "--no-render"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "circuit.json").read_text())
    assert data["method"] == "hisp" and data["top_n"] == 5 and data["n_nodes_selected"] == 5
    assert len(data["node_scores"]) == 12 and data["n_edges_kept"] > 0


def test_cli_refuses_kl(task_file, tmp_path):
    result = runner.invoke(cli.app, ["discover", "--task", str(task_file), "--method", "hisp",
                                     "--metric", "kl", "--top-n", "5", "--out",
                                     str(tmp_path / "x")])
    assert result.exit_code == 1, result.output
    assert "zero gradient at the clean run" in result.stderr.strip().splitlines()[-1]
