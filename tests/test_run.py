"""The run pipeline's settings: one record for the log header, run.yaml, the repeat command and
the resume check; the method registry."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
import yaml
from test_cli import TINY_CONFIG, invoke, write_task

from acdc import run as pipeline
from acdc.core.models import build_model, save_checkpoint
from acdc.core.settings import CommonSettings
from acdc.errors import AcdcError
from acdc.methods.acdc.search import AcdcSettings
from acdc.methods.registry import METHODS, get_method

SETTINGS = pipeline.RunSettings(
    task="tiny", task_file="/tmp/tiny.yaml", model="models/tiny", method="acdc",
    settings=AcdcSettings(threshold=0.05, abs=True, reverse_head_order=True, candidates=4),
    common=CommonSettings("kl", "zero", "head"), seed=3)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    save_checkpoint(build_model(TINY_CONFIG, seed=0), directory / "model", config=TINY_CONFIG)
    return write_task(directory / "tiny.yaml", model=str(directory / "model"), threshold=0.01)


def test_record_holds_every_recorded_setting_once():
    record = SETTINGS.record()
    assert list(record) == ["task", "task_file", "model", "method", "threshold", "abs",
                            "reverse_head_order", "metric", "ablation", "granularity", "seed",
                            "device", "dtype"]
    assert "candidates" not in record and "engine" not in record  # never change a decision
    assert pipeline.RunSettings.from_record(record, "x", {"candidates": 4}) == SETTINGS


def test_repeat_command_spells_out_every_setting():
    repeat = shlex.split(SETTINGS.repeat_command())
    assert repeat[:4] == ["circuit", "discover", "--task", "/tmp/tiny.yaml"]
    assert "--abs" in repeat and "--reverse-head-order" in repeat
    for flag, value in (("--model", "models/tiny"), ("--threshold", "0.05"), ("--seed", "3"),
                        ("--ablation", "zero"), ("--granularity", "head"), ("--method", "acdc")):
        assert repeat[repeat.index(flag) + 1] == value
    plain = pipeline.RunSettings(**{**SETTINGS.__dict__, "settings": AcdcSettings(0.05)})
    assert "--abs" not in plain.repeat_command()


@pytest.mark.parametrize("key, value, message", [
    ("threshold", math.nan, "the header's threshold is nan"),
    ("threshold", "0.1", "the header's threshold is '0.1'"),
    ("abs", 1, "the header's abs is 1"),
    ("metric", "accuracy", "the header's metric is 'accuracy'"),
    ("seed", -1, "seed is -1"),
    ("method", "path-patching", "method 'path-patching' is not one of"),
])
def test_a_damaged_header_names_its_field(key, value, message):
    record = {**SETTINGS.record(), key: value}
    with pytest.raises(AcdcError, match=message) as caught:
        pipeline.RunSettings.from_record(record, "runs/x/decisions.jsonl")
    assert str(caught.value).startswith("runs/x/decisions.jsonl: ")
    without_metric = {k: v for k, v in SETTINGS.record().items() if k != "metric"}
    with pytest.raises(AcdcError, match="has no 'metric'"):
        pipeline.RunSettings.from_record(without_metric, "x")


def test_a_header_without_method_is_an_acdc_run():
    """Logs written before methods were named."""
    record = {k: v for k, v in SETTINGS.record().items() if k != "method"}
    assert pipeline.RunSettings.from_record(record, "x", {"candidates": 4}) == SETTINGS


def test_conflicts_name_the_options_that_disagree():
    assert SETTINGS.conflicts({"threshold": 0.05, "abs": True, "task": "tiny",
                               "model": "models/tiny"}) == []
    assert SETTINGS.conflicts({"threshold": 0.1, "metric": "nll"}) == [
        "--threshold 0.1 (the run used 0.05)", "--metric nll (the run used kl)"]
    assert SETTINGS.conflicts({"task": "/tmp/tiny.yaml"}) == []


def test_run_yaml_holds_the_resolved_configuration(tiny_task, tmp_path):
    job = pipeline.start_run(str(tiny_task), ablation="zero", granularity="head", seed=3,
                             threshold=0.05, abs=True, out=tmp_path / "out",
                             command=("circuit", "discover", "--task", "x"))
    outcome = pipeline.execute(job)
    pipeline.write_outputs(job, outcome, render_svg=False)
    job.close()
    data = yaml.safe_load((tmp_path / "out" / "run.yaml").read_text())
    assert data["threshold"] == 0.05 and data["ablation"] == "zero" and data["seed"] == 3
    assert data["abs"] is True and data["reverse_head_order"] is False
    assert data["n_prompts"] == 3 and data["partial"] is False and data["method"] == "acdc"
    assert data["command"] == "circuit discover --task x"
    assert data["repeat"] == job.settings.repeat_command(job.typed, job.out_dir)
    assert data["repeat"].startswith(f"circuit discover --task {tiny_task} --method acdc")
    assert "--model" not in data["repeat"]  # the task file names it
    assert data["repeat"].endswith(f"--out {tmp_path / 'out'}")
    assert set(data["versions"]) >= {"circuit", "torch", "transformer_lens", "python"}
    assert data["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    header = json.loads((tmp_path / "out" / "decisions.jsonl").read_text().splitlines()[0])
    assert {k: header[k] for k in job.settings.record()} == job.settings.record()
    circuit = json.loads((tmp_path / "out" / "circuit.json").read_text())
    assert {k: circuit[k] for k in ("model", "task", "method", "threshold", "abs", "metric",
                                    "ablation", "granularity")} == {
        k: data[k] for k in ("model", "task", "method", "threshold", "abs", "metric", "ablation",
                             "granularity")}


def test_resume_with_contradicting_options_is_refused_before_loading(tiny_task, tmp_path):
    out = tmp_path / "out"
    job = pipeline.start_run(str(tiny_task), out=out)
    pipeline.write_outputs(job, pipeline.execute(job), render_svg=False)
    with pytest.raises(AcdcError, match="another circuit command is running a search in this "
                                        "directory") as busy:
        pipeline.resume_run(out)  # the first run still holds the directory
    assert "--resume" not in str(busy.value)
    job.close()
    with pytest.raises(pipeline.ResumeConflict, match="--metric nll .the run used kl.; --out"):
        pipeline.resume_run(out, {"metric": "nll", "out": tmp_path / "elsewhere"})
    resumed = pipeline.resume_run(out, {"metric": "kl", "out": out})
    assert resumed.settings == job.settings
    resumed.close()


def test_method_registry():
    assert get_method("acdc") is METHODS["acdc"]
    with pytest.raises(AcdcError, match="unknown method 'acdd' .did you mean 'acdc'"):
        get_method("acdd")


def test_discover_method_option(tiny_task, tmp_path):
    result = invoke("discover", "--task", tiny_task, "--method", "acdc", "--out", tmp_path / "a",
                    "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    result = invoke("discover", "--task", tiny_task, "--method", "no-such-method", "--out",
                    tmp_path / "b")
    assert result.exit_code == 1 and "unknown method 'no-such-method'" in result.stderr
    assert not (tmp_path / "b").exists()  # refused before anything was written
    result = invoke("discover", "--task", tiny_task, "--method", "edge-pruning", "--out",
                    tmp_path / "c")
    assert result.exit_code == 1 and "edge-pruning aims at a circuit size" in result.stderr
    assert not (tmp_path / "c").exists()


def test_a_run_larger_than_the_memory_allowed_is_refused_before_it_starts(tiny_task, tmp_path):
    result = invoke("discover", "--task", tiny_task, "--out", tmp_path / "a", "--max-memory",
                    "0.00001")
    assert result.exit_code == 1
    assert "the run needs about" in result.stderr and "--max-memory" in result.stderr
    assert not (tmp_path / "a" / "decisions.jsonl").exists()
    result = invoke("discover", "--task", tiny_task, "--out", tmp_path / "b", "--max-memory", "1",
                    "--quiet", "--no-render")
    assert result.exit_code == 0, result.output


def test_a_prompt_too_long_for_the_context_is_refused_before_the_model_loads(tmp_path):
    """The model's context comes from its config.json: no weights are read (there are none)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY_CONFIG))  # config only: no weights
    task = write_task(tmp_path / "long.yaml", model=str(model),
                      prompts=[{"clean": "x " * 5000, "corrupt": "y " * 5000}])
    with pytest.raises(AcdcError, match=r"prompts\[0\]: clean: 10,000 characters, far more"):
        pipeline.start_run(str(task), out=tmp_path / "out")
