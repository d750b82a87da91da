"""The bundled tracr models: ground truth that runs offline (ACDC paper, section 4).

`models/tracr-reverse` and `models/tracr-proportion` are compiled from RASP by
`scripts/build_tracr.py` (tracr and jax at build time only). Here: they load as every bundled
model does and compute their programs exactly; ACDC with zero ablation recovers the canonical
circuits (`acdc/evaluation/canonical/tracr-*.txt`) at the tasks' default thresholds and across
the paper's range of thresholds, so the ROC of those runs has area 1; `circuit discover` and
`circuit compare --reference` give the same from the command line.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from acdc.core.bundled import model_dir
from acdc.core.forward import full_forward
from acdc.core.loading import load_model
from acdc.core.models import load_hooked
from acdc.core.settings import CommonSettings
from acdc.core.tasks.reading import read_task
from acdc.core.tasks.resolving import resolve_task
from acdc.evaluation.canonical import canonical_spec, load_canonical
from acdc.evaluation.roc import sweep_roc
from acdc.methods.acdc.search import AcdcSettings, run_acdc

NAMES = ("tracr-reverse", "tracr-proportion")
# The paper recovers both circuits exactly from 1e-5 to 1e-2 (its sweep: 10^linspace(-5, -1, 21)).
THRESHOLDS = (1e-5, 1e-4, 1e-3, 1e-2)


@pytest.fixture(scope="module")
def bundled() -> dict:
    """name -> (model, resolved task, task spec)."""
    out = {}
    for name in NAMES:
        spec = read_task(name)
        model = load_model(spec.model)
        task = resolve_task(spec, model.tokenizer, model.shape.d_vocab, model.shape.n_ctx)
        out[name] = (model, task, spec)
    return out


def edge_names(circuit) -> set[str]:
    return {edge.name for edge in circuit.kept_edges()}


def canonical_names(name: str, graph) -> set[str]:
    kept = load_canonical(name, graph)
    return {edge.name for edge in graph.edges if kept[edge.index]}


# --------------------------------------------------------------------------- the models


def test_bundled_tracr_models_load(bundled):
    for name, (model, _, spec) in bundled.items():
        assert Path(spec.model).resolve() == model_dir(name).resolve()
        weights = model.weights
        assert not weights.causal  # attention_dir bidirectional
        assert weights.normalization is None and weights.act_fn == "relu"
        assert model.tokenizer is None  # token-id tasks
        assert (spec.metric, spec.ablation) == ("l2", "zero")
        assert model.shape.graph_shape() == canonical_spec(name).shape
    reverse, proportion = bundled["tracr-reverse"][0], bundled["tracr-proportion"][0]
    assert (reverse.shape.n_layers, reverse.shape.d_model,
            reverse.weights.W_U.shape[1]) == (4, 41, 3)
    assert (proportion.shape.n_layers, proportion.shape.d_model,
            proportion.weights.W_U.shape[1]) == (2, 14, 1)


def test_reverse_reverses_every_sequence(bundled):
    """BOS = 3, tokens 1, 2, 3 = ids 0, 1, 2; the output logits are one-hot on the answer."""
    model = bundled["tracr-reverse"][0]
    rows = [list(p) for p in itertools.permutations(range(3))]
    rows += [list(p) for p in itertools.product(range(3), repeat=2)]  # shorter, repeats
    for row in rows:
        tokens = torch.tensor([[3, *row]])
        with torch.inference_mode():
            logits = model.logits(tokens)[0, 1:]
        assert logits.argmax(-1).tolist() == row[::-1]
        assert torch.allclose(logits, torch.eye(3)[row[::-1]], atol=1e-4), (row, logits)


def test_proportion_is_the_running_fraction_of_x(bundled):
    """BOS = 0, w x y z = 2 3 4 5; the one output is the fraction of x up to each position."""
    model, task, _ = bundled["tracr-proportion"]
    every = [list(p) for p in itertools.product(range(2, 6), repeat=4)]
    tokens = torch.tensor([[0, *row] for row in every])
    with torch.inference_mode():
        logits, _ = full_forward(model.weights, tokens)
        hooked = load_hooked(model.name)[0](tokens)  # TransformerLens' own forward
    assert torch.equal(logits, hooked)
    is_x = (tokens[:, 1:] == 3).double()
    expected = is_x.cumsum(1) / torch.arange(1, 5)
    assert torch.allclose(logits[:, 1:, 0].double(), expected, atol=1e-5)
    # the task: 50 distinct strings after BOS, every corrupted row another prompt's clean row
    assert len(task.clean) == 50 == len({tuple(c) for c in task.clean})
    assert all(c != k and k in task.clean for c, k in zip(task.clean, task.corrupt, strict=True))
    assert all(p == [1, 2, 3, 4] for p in task.positions)


def test_model_cards_record_an_exact_conversion():
    for name in NAMES:
        card = (model_dir(name) / "README.md").read_text()
        rows = [line for line in card.splitlines() if line.startswith("| ")]
        transformer_lens = next(row for row in rows if "TransformerLens" in row)
        assert re.search(r"\| 0 \| 0 \|", transformer_lens), transformer_lens
        assert "scripts/build_tracr.py" in card


# --------------------------------------------------------------------------- ACDC finds them


@pytest.mark.parametrize("name", NAMES)
def test_discover_at_the_default_threshold_is_the_canonical_circuit(bundled, name):
    model, task, spec = bundled[name]
    circuit = run_acdc(model, task, CommonSettings(spec.metric, spec.ablation),
                       AcdcSettings(spec.threshold))
    assert edge_names(circuit) == canonical_names(name, circuit.graph)
    assert len(circuit.graph.edges) == {"tracr-reverse": 89, "tracr-proportion": 29}[name]


@pytest.mark.parametrize("name", NAMES)
def test_zero_ablation_recovers_the_circuit_at_every_threshold_auc_one(bundled, name):
    """A few thresholds of the paper's range stand in for `circuit sweep`: every run is the
    canonical circuit, so the edge and node ROC is the corner (0, 1) and its area is 1."""
    model, task, spec = bundled[name]
    runs = []
    for threshold in THRESHOLDS:
        circuit = run_acdc(model, task, CommonSettings("l2", "zero"), AcdcSettings(threshold))
        assert edge_names(circuit) == canonical_names(name, circuit.graph), threshold
        runs.append((threshold, circuit.kept))
    graph = circuit.graph
    reference = load_canonical(name, graph)
    for level in ("edge", "node"):
        roc = sweep_roc(graph, runs, reference, level)
        assert roc.auc == 1.0
        assert all((p.fpr, p.tpr) == (0.0, 1.0) for p in roc.points)


def test_corrupt_ablation_finds_a_smaller_circuit(bundled):
    """With corrupt ablation every prompt's corruption is another prompt of the same structure
    (a permutation of the same tokens, the same length), so what they share is not needed: a
    part of the canonical circuit, never more (the ACDC paper reports it: expected)."""
    for name in NAMES:
        model, task, spec = bundled[name]
        circuit = run_acdc(model, task, CommonSettings("l2", "corrupt"),
                           AcdcSettings(spec.threshold))
        kept, canonical = edge_names(circuit), canonical_names(name, circuit.graph)
        assert kept and kept < canonical


def test_bidirectional_engine_equals_full_recompute_on_tracr(bundled):
    """The incremental engine's decisions and scores equal the full recompute's on the real
    bidirectional models, with both ablations and at a threshold that keeps nearly everything."""
    for name in NAMES:
        model, task, _ = bundled[name]
        for ablation in ("zero", "corrupt"):
            common = CommonSettings("l2", ablation)
            fast = run_acdc(model, task, common, AcdcSettings(1e-12))
            full = run_acdc(model, task, common, AcdcSettings(1e-12, engine="full"))
            assert fast.kept == full.kept
            tested = [i for i, s in enumerate(full.scores) if s is not None]
            assert tested == [i for i, s in enumerate(fast.scores) if s is not None]
            assert all(abs(fast.scores[i] - full.scores[i]) < 1e-5 for i in tested)


# --------------------------------------------------------------------------- the CLI


def test_cli_discover_then_compare_against_the_canonical_circuit(tmp_path):
    from cli import app

    runner = CliRunner()
    sweep = tmp_path / "sweep"
    for threshold in ("1e-05", "0.001", "0.01"):
        out = sweep / f"tau-{threshold}"
        result = runner.invoke(app, ["discover", "--task", "tracr-proportion", "--quiet",
                                     "--threshold", threshold, "--out", str(out)])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["compare", str(sweep / "tau-0.001"), "--reference",
                                 "tracr-proportion", "--out", str(tmp_path / "one"), "--no-render"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^A\s+1\s+0\s+1\s+1\s+0\s+1\s*$", result.output, re.M), result.output
    result = runner.invoke(app, ["compare", str(sweep), "--reference", "tracr-proportion",
                                 "--out", str(tmp_path / "roc"), "--no-render"])
    assert result.exit_code == 0, result.output
    assert "ROC AUC: edges 1.000, nodes 1.000" in result.output, result.output
