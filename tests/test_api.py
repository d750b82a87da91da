"""The notebook API (`import acdc`): one call per step, values returned, files only when asked;
and the example notebook executed end to end (examples/quickstart.ipynb)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import acdc
from acdc.core.circuit import load_circuit
from acdc.errors import AcdcError

ROOT = Path(__file__).resolve().parent.parent
HAS_DOT = shutil.which("dot") is not None


@pytest.fixture(scope="module")
def model():
    return acdc.load_model(ROOT / "models" / "demo")


def test_discover_evaluate_compare_in_memory(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written here unless asked
    circuit = acdc.discover(model, "demo", threshold=0.03)
    assert circuit.settings["method"] == "acdc" and circuit.n_residual_kept > 0
    assert "residual edges" in repr(circuit) and "task demo" in repr(circuit)
    result = acdc.evaluate(circuit, model, "demo")
    assert 0 < result.faithfulness("kl") <= 1.0 + 1e-6
    assert "<table>" in result._repr_html_()
    ranked = acdc.discover(model, "demo", method="eap-ig", metric="logit_diff", top_n=20)
    assert ranked.results["n_edges_selected"] == 20
    both = acdc.compare(circuit, ranked)
    assert both.pair is not None and "<table>" in both._repr_html_()
    assert list(tmp_path.iterdir()) == []


def test_evaluate_reuses_the_recordings_of_the_search(model, monkeypatch):
    """`evaluate` after `discover` or `sweep` on the same model and prompts records nothing
    (one evaluator over the search's recordings) and gives the values of an evaluation that
    records its own runs."""
    from acdc.core.patching import PatchedModel
    from acdc.evaluation import reuse

    circuit = acdc.discover(model, "demo", threshold=0.03)
    built = []
    init = PatchedModel.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(PatchedModel, "__init__", counting)
    reused = acdc.evaluate(circuit, model, "demo")
    assert acdc.evaluate(circuit, model, "demo", metrics=["kl"]).faithfulness("kl") == (
        reused.faithfulness("kl"))
    assert built == []
    reuse.forget()
    rebuilt = acdc.evaluate(circuit, model, "demo")
    assert len(built) == 1
    for name, m in rebuilt.evaluation.metrics.items():
        for part in ("full", "empty", "circuit", "complement"):
            a, b = getattr(reused.evaluation.metrics[name], part), getattr(m, part)
            assert a.mean == pytest.approx(b.mean, rel=1e-6, abs=1e-7), (name, part)
            assert a.per_prompt == pytest.approx(b.per_prompt, rel=1e-6, abs=1e-7)
    swept = acdc.sweep(model, "demo", [0.01, 0.1])
    built.clear()
    for found in swept.circuits.values():
        acdc.evaluate(found, model, "demo", ablation="corrupt")
    assert built == []
    acdc.evaluate(circuit, model, "demo", ablation="zero")  # other runs: recorded anew
    assert len(built) == 1
    reuse.forget()


def test_the_api_is_the_pipelines(model, tmp_path):
    """`acdc.discover` gives the circuit `circuit discover` writes, edge for edge."""
    from cli_helpers import invoke

    out = tmp_path / "run"
    assert invoke("discover", "--task", "demo", "--out", out, "--quiet").exit_code == 0
    written = load_circuit(out / "circuit.json")
    circuit = acdc.discover(model, "demo")
    assert circuit.kept == written.kept and circuit.scores == written.scores


def test_prompts_tasks_and_overrides(model):
    prompts = [{"clean": "then mary and john went to the store . john gave a drink to",
                "corrupt": "then mary and john went to the store . paul gave a drink to",
                "answer": " mary", "wrong": " john"}]
    circuit = acdc.discover(model, prompts, method="eap", metric="logit_diff", top_n=5)
    assert circuit.settings["metric"] == "logit_diff" and circuit.results["n_edges_selected"] == 5
    task = acdc.load_task("demo", model, metric="logit_diff")
    assert task.metric == "logit_diff"
    with pytest.raises(AcdcError, match="metric"):
        acdc.discover(model, task, metric="bogus")
    with pytest.raises(AcdcError, match="not an option of method acdc"):
        acdc.discover(model, "demo", top_n=3)


def test_sweep_export_and_files_only_when_asked(model, tmp_path):
    sweep = acdc.sweep(model, "demo", [0.01, 0.1])
    assert sorted(sweep.circuits) == [0.01, 0.1]
    kept = [c.n_edges_kept for c in sweep.circuits.values()]
    assert kept[0] >= kept[1]
    assert len(sweep.rank_scores) == len(sweep.circuits[0.01].graph.edges)
    text = acdc.export(sweep.circuits[0.1], "csv")
    assert text.startswith("name,source,target,kind,kept,score")
    path = tmp_path / "c.csv"
    assert acdc.export(sweep.circuits[0.1], "csv", path) == path.read_text()
    written = acdc.save(sweep.circuits[0.1], tmp_path / "run")
    assert (tmp_path / "run" / "circuit.json") in written
    with pytest.raises(AcdcError, match="holds a circuit.json already"):
        acdc.save(sweep.circuits[0.1], tmp_path / "run")
    assert json.loads((tmp_path / "run" / "circuit.json").read_text())["method"] == "acdc"


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` missing (apt-get install -y graphviz)")
def test_a_circuit_draws_itself(model):
    svg = acdc.discover(model, "demo")._repr_svg_()
    assert svg is not None and svg.lstrip().startswith(("<?xml", "<svg", "<!DOCTYPE"))


def test_importing_acdc_is_cheap():
    import subprocess
    import sys

    code = ("import sys, acdc; assert acdc.__version__; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.slow
def test_the_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "examples")}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if HAS_DOT:  # the circuits were drawn inline
        assert any("image/svg+xml" in o.get("data", {}) for o in outputs)
    assert any("text/html" in o.get("data", {}) for o in outputs)
