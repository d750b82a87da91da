"""The `circuit` command line, end to end and in-process (typer's CliRunner).

Models are tiny checkpoints written into tmp_path with `build_model` + `save_checkpoint`;
tasks are token-id YAML files next to them, so nothing needs a tokenizer or the network.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import error_line, invoke

import cli
from acdc.cli.display import ProgressDisplay
from acdc.core.models import build_model, save_checkpoint

HAS_DOT = shutil.which("dot") is not None
TINY_CONFIG = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32,
               "act_fn": "gelu", "normalization_type": "LN", "d_vocab": 20, "n_ctx": 12}
GPT2_CONFIG = {"n_layers": 12, "d_model": 768, "n_heads": 12, "d_head": 64, "d_mlp": 3072,
               "d_vocab": 50257, "n_ctx": 1024, "act_fn": "gelu_new", "normalization_type": "LN"}
PROMPTS = [
    {"clean": [1, 2, 3, 4, 5, 6], "corrupt": [1, 2, 9, 4, 5, 7]},
    {"clean": [3, 8, 2, 2, 9, 1], "corrupt": [3, 8, 5, 2, 9, 4]},
    {"clean": [7, 7, 1, 0, 4, 3, 2], "corrupt": [7, 7, 6, 0, 4, 11, 2]},
]




@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(build_model(TINY_CONFIG, seed=0), directory, config=TINY_CONFIG)
    return directory


def write_task(path: Path, **fields) -> Path:
    data = {"name": "tiny", "description": "token-id task for the CLI tests", "metric": "kl",
            "threshold": 0.001, "prompts": PROMPTS, **fields}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def task_file(tmp_path, checkpoint) -> Path:
    return write_task(tmp_path / "tiny.yaml", model=str(checkpoint))


def config_dir(tmp_path: Path, config: dict, name: str = "cfg") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


# --------------------------------------------------------------------------- basics


def test_help_does_not_import_torch():
    code = "import sys, cli; cli.app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(cli.__file__).parent)


def test_no_command_shows_usage_and_unknown_option_is_usage_error():
    assert "discover" in invoke("--help").stdout
    result = invoke("graph", "--no-such-option")
    assert result.exit_code == 2


# --------------------------------------------------------------------------- graph


@pytest.mark.parametrize(
    "config, granularity, edges",
    [
        ({"n_layers": 2, "d_model": 512, "n_heads": 8, "d_head": 64, "attn_only": True,
          "d_vocab": 50257, "n_ctx": 1024}, "qkv", "305"),
        ({"n_layers": 4, "d_model": 512, "n_heads": 8, "d_head": 64, "attn_only": True,
          "d_vocab": 50257, "n_ctx": 1024}, "qkv", "1,377"),
        (GPT2_CONFIG, "qkv", "32,923"),
        (GPT2_CONFIG, "head", "11,611"),
    ],
)
def test_graph_counts_from_config_alone(tmp_path, config, granularity, edges):
    directory = config_dir(tmp_path, config)
    result = invoke("graph", "--model", directory, "--granularity", granularity)
    assert result.exit_code == 0, result.output
    assert f"edges: {edges} = " in result.stdout
    assert "memory estimate" in result.stdout


def test_graph_breaks_edges_down_by_kind(tmp_path):
    result = invoke("graph", "--model", config_dir(tmp_path, GPT2_CONFIG))
    out = result.stdout
    assert "32,491 residual + 432 direct" in out
    assert "into MLPs: 1,014" in out and "into logits: 157" in out
    assert "into head q inputs: 10,440" in out
    assert "157 senders" in out


def test_graph_prints_a_memory_estimate(tmp_path):
    config = {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_head": 16, "attn_only": True,
              "d_vocab": 100, "n_ctx": 32}
    directory = config_dir(tmp_path, config)
    result = invoke("graph", "--model", directory, "--batch", "10", "--seq-len", "8")
    assert result.exit_code == 0 and "batch 10, 8 tokens" in result.stdout
    assert "sender caches 360.0 KiB" in result.stdout  # 2 x 9 senders x 10 x 8 x 64 x 4 bytes


def test_graph_errors(tmp_path):
    result = invoke("graph", "--model", tmp_path / "missing")
    assert result.exit_code == 1
    assert "missing" in error_line(result)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("graph", "--model", empty)
    assert result.exit_code == 1 and "config.json" in error_line(result)
    gpt2 = config_dir(tmp_path, GPT2_CONFIG)
    result = invoke("graph", "--model", gpt2, "--granularity", "neuron")
    assert result.exit_code == 2


# --------------------------------------------------------------------------- tasks


def test_tasks_lists_one_line_per_task(tmp_path, monkeypatch, checkpoint):
    import acdc.core.tasks.reading

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    write_task(bundled / "alpha.yaml", name="alpha", model=str(checkpoint), threshold=0.25)
    write_task(bundled / "beta.yaml", name="beta", metric="l2", description="the second one")
    (bundled / "README.md").write_text("# not a task\n")
    monkeypatch.setattr(acdc.core.tasks.reading, "TASKS_DIR", bundled)
    result = invoke("tasks")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3  # header + two tasks
    assert lines[1].split()[:3] == ["alpha", "kl", "0.25"] and str(checkpoint) in lines[1]
    assert lines[2].split()[:4] == ["beta", "l2", "0.001", "-"]
    assert lines[2].endswith("the second one")


def test_tasks_lists_the_bundled_demo():
    result = invoke("tasks")
    assert result.exit_code == 0, result.output
    assert any(line.split()[0] == "demo" for line in result.stdout.splitlines()[1:])


# --------------------------------------------------------------------------- metrics


def test_metrics_lists_each_metric_with_what_it_reads_and_its_direction():
    from acdc.core.settings import METRIC_INPUTS, METRICS

    result = invoke("metrics")
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.strip().splitlines()
    assert header.split() == ["NAME", "READS", "DIRECTION", "DESCRIPTION"]
    assert [line.split()[0] for line in lines] == list(METRICS) == list(METRIC_INPUTS)
    for line, (name, description) in zip(lines, METRICS.items(), strict=True):
        assert METRIC_INPUTS[name] in line and "lower is better" in line
        assert line.endswith(description)
    assert "answer, wrong" in lines[list(METRICS).index("logit_diff")]


def test_metrics_does_not_import_torch():
    code = ("import sys, cli; sys.argv = ['circuit', 'metrics']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(cli.__file__).parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "kl" in done.stdout


# --------------------------------------------------------------------------- discover: errors


def test_discover_bad_task_file(tmp_path, checkpoint):
    bad = write_task(tmp_path / "bad.yaml", model=str(checkpoint), colour="red")
    result = invoke("discover", "--task", bad)
    assert result.exit_code == 1
    assert "colour" in error_line(result)
    result = invoke("discover", "--task", tmp_path / "missing.yaml")
    assert result.exit_code == 1 and "missing.yaml" in error_line(result)
    (tmp_path / "broken.yaml").write_text("prompts: [\n")
    result = invoke("discover", "--task", tmp_path / "broken.yaml")
    assert result.exit_code == 1 and "YAML" in error_line(result)


def test_discover_missing_model(tmp_path, task_file):
    result = invoke("discover", "--task", task_file, "--model", tmp_path / "no-such-model")
    assert result.exit_code == 1 and "no-such-model" in error_line(result)
    no_model = write_task(tmp_path / "nomodel.yaml")
    result = invoke("discover", "--task", no_model)
    assert result.exit_code == 1 and "--model" in error_line(result)


def test_discover_config_only_checkpoint_needs_weights(tmp_path):
    directory = config_dir(tmp_path, TINY_CONFIG)
    result = invoke("discover", "--task", write_task(tmp_path / "t.yaml"), "--model", directory)
    assert result.exit_code == 1 and "model.safetensors" in error_line(result)


def test_discover_unknown_metric(task_file):
    result = invoke("discover", "--task", task_file, "--metric", "accuracy")
    assert result.exit_code == 1
    assert "accuracy" in error_line(result) and "kl" in error_line(result)


def test_discover_token_outside_vocabulary(tmp_path, checkpoint):
    prompts = [{"clean": [1, 2, 99], "corrupt": [1, 2, 3]}]
    task = write_task(tmp_path / "t.yaml", model=str(checkpoint), prompts=prompts)
    result = invoke("discover", "--task", task)
    assert result.exit_code == 1 and "99" in error_line(result)


def test_discover_usage_errors(task_file):
    assert invoke("discover", "--task", task_file, "--ablation", "median").exit_code == 2
    assert invoke("discover", "--task", task_file, "--threshold", "abc").exit_code == 2
    assert invoke("discover").exit_code == 2


# --------------------------------------------------------------------------- discover: runs


def test_discover_writes_every_output(tmp_path, task_file, checkpoint):
    out = tmp_path / "run"
    result = invoke("discover", "--task", task_file, "--out", out, "--seed", "7")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "circuit.json").read_text())
    assert data["format"] == "circuit/1" and data["method"] == "acdc" and data["partial"] is False
    assert data["task"] == "tiny" and data["threshold"] == 0.001 and data["granularity"] == "qkv"
    assert data["n_edges_total"] == len(data["edges"]) == 58  # 2 layers, 2 heads, MLPs
    assert data["n_edges_kept"] == sum(e["kept"] for e in data["edges"])
    assert all(e["score"] is None or isinstance(e["score"], float) for e in data["edges"])
    assert "digraph" in (out / "circuit.dot").read_text()
    if HAS_DOT:
        assert "<svg" in (out / "circuit.svg").read_text()
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["seed"] == 7 and run["n_prompts"] == 3 and run["model"] == str(checkpoint)
    assert run["task_file"] == str(task_file.resolve()) and run["threshold"] == 0.001
    assert set(run["versions"]) >= {"circuit", "torch", "transformer_lens", "python"}
    # stderr is not a terminal here: plain progress lines, no live bar, ending at the total
    progress = [line for line in result.stderr.splitlines() if "edges decided" in line]
    assert progress and progress[-1].startswith("58/58 edges decided")
    assert "\x1b[" not in result.stderr
    summary = result.stdout.strip().splitlines()
    residual = sum(e["kept"] for e in data["edges"] if "<" not in e["name"].split("->")[0])
    assert summary[0].startswith(
        f"kept {residual} of 46 residual edges ({data['n_edges_kept']} of "
        f"{data['n_edges_total']} with direct q/k/v edges)")
    assert "circuit.json" in summary[1] and "run.yaml" in summary[1]
    assert "decisions.jsonl" in summary[1]
    log = (out / "decisions.jsonl").read_text().splitlines()
    assert len(log) == 1 + 58 and json.loads(log[0])["format"] == "circuit-log/1"


def test_discover_is_repeatable_from_run_yaml(tmp_path, task_file):
    first = tmp_path / "first"
    result = invoke("discover", "--task", task_file, "--out", first, "--granularity", "head",
                    "--threshold", "0.002", "--ablation", "zero", "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    repeat = shlex.split(yaml.safe_load((first / "run.yaml").read_text())["repeat"])
    assert repeat[:2] == ["circuit", "discover"]
    second = tmp_path / "second"
    result = invoke(*repeat[1:], "--out", second, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    a, b = (json.loads((d / "circuit.json").read_text()) for d in (first, second))
    assert a["granularity"] == b["granularity"] == "head"
    assert a["ablation"] == b["ablation"] == "zero"
    assert [e["kept"] for e in a["edges"]] == [e["kept"] for e in b["edges"]]
    assert not (first / "circuit.svg").exists()


def test_discover_quiet_prints_only_the_summary(tmp_path, task_file):
    result = invoke("discover", "--task", task_file, "--out", tmp_path / "q", "--quiet",
                    "--no-render")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("kept ") and lines[1].startswith("wrote ")


def test_discover_default_out_dir(tmp_path, task_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("discover", "--task", task_file, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("tiny-") and len(run_dir.name) == len("tiny-YYYYmmdd-HHMMSS")
    assert (run_dir / "circuit.json").is_file()


def test_discover_interrupted_writes_partial_files(tmp_path, task_file, monkeypatch):
    calls = []

    def interrupt(self, progress):
        calls.append(progress)
        if len(calls) == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressDisplay, "update", interrupt)
    out = tmp_path / "partial"
    result = invoke("discover", "--task", task_file, "--out", out, "--no-render")
    assert result.exit_code == 130, result.output
    data = json.loads((out / "circuit.json").read_text())
    assert data["partial"] is True and data["n_edges_decided"] == 10
    assert data["n_edges_kept"] == sum(e["kept"] for e in data["edges"])
    assert yaml.safe_load((out / "run.yaml").read_text())["partial"] is True
    assert "partial" in (out / "circuit.dot").read_text()
    note = result.stderr.strip().splitlines()[-1]
    assert note.startswith("interrupted: 10 of ")
    assert note.endswith(f"resume with `circuit discover --resume {out}`")


def test_discover_without_dot_warns_once(tmp_path, task_file, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "nodot"
    result = invoke("discover", "--task", task_file, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "apt-get install -y graphviz" in warnings[0]
    assert (out / "circuit.dot").is_file() and not (out / "circuit.svg").exists()


# --------------------------------------------------------------------------- render


@pytest.fixture(scope="module")
def saved_circuit(tmp_path_factory, checkpoint) -> Path:
    directory = tmp_path_factory.mktemp("saved")
    task = write_task(directory / "tiny.yaml", model=str(checkpoint))
    result = invoke("discover", "--task", task, "--out", directory / "run", "--quiet",
                    "--no-render")
    assert result.exit_code == 0, result.output
    return directory / "run" / "circuit.json"


NO_DOT = "Graphviz `dot` is not installed (apt-get install -y graphviz)"


@pytest.mark.skipif(not HAS_DOT, reason=NO_DOT)
def test_render_svg_and_png(saved_circuit, tmp_path):
    result = invoke("render", saved_circuit, "--out", tmp_path / "c.svg")
    assert result.exit_code == 0, result.output
    assert "<svg" in (tmp_path / "c.svg").read_text()
    result = invoke("render", saved_circuit, "--format", "png", "--out", tmp_path / "c.png",
                    "--all-edges")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")


def test_render_dot_and_all_edges(saved_circuit, tmp_path):
    result = invoke("render", saved_circuit, "--format", "dot", "--out", tmp_path / "k.dot")
    assert result.exit_code == 0, result.output
    result = invoke("render", saved_circuit, "--format", "dot", "--out", tmp_path / "a.dot",
                    "--all-edges")
    assert result.exit_code == 0, result.output
    kept, every = ((tmp_path / f).read_text() for f in ("k.dot", "a.dot"))
    assert every.count(" -> ") > kept.count(" -> ")


def test_render_without_dot_falls_back_to_dot_with_one_warning(saved_circuit, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = invoke("render", saved_circuit, "--out", tmp_path / "c.svg")
    assert result.exit_code == 0, result.output
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning:")
    assert "apt-get install -y graphviz" in warnings[0]
    assert (tmp_path / "c.dot").read_text().startswith("digraph")


def test_render_bad_file(tmp_path, saved_circuit):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other/2"}))
    result = invoke("render", bad)
    assert result.exit_code == 1 and "circuit/1" in error_line(result)
    result = invoke("render", tmp_path / "missing.json")
    assert result.exit_code == 1 and "missing.json" in error_line(result)
    result = invoke("render", saved_circuit, "--format", "pdf")
    assert result.exit_code == 2


# --------------------------------------------------------------------------- zoo


def test_zoo_unknown_model_is_a_user_error(tmp_path):
    result = invoke("zoo", "train", "no-such-model", "--out", tmp_path / "z")
    assert result.exit_code == 1 and "demo" in error_line(result)
    result = invoke("zoo", "eval", "no-such-model")
    assert result.exit_code == 1


@pytest.mark.slow
def test_zoo_train_and_eval_a_few_steps(tmp_path, monkeypatch):
    import acdc.zoo

    recipe = acdc.zoo.ZOO["demo"]
    quick = type(recipe)(**{**recipe.__dict__, "eval_prompts": 50})
    monkeypatch.setitem(acdc.zoo.ZOO, "demo", quick)
    out = tmp_path / "demo"
    result = invoke("zoo", "train", "demo", "--out", out, "--steps", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert "heldout_accuracy:" in result.stdout
    result = invoke("zoo", "eval", "demo", "--model", out)
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.stdout


@pytest.mark.slow
def test_commands_that_need_no_model_import_neither_torch_nor_transformer_lens(tmp_path):
    """`benchmarks/startup.py` times them; here each runs in a fresh process and must not
    have imported torch, TransformerLens or transformers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "startup", Path(cli.__file__).parent / "benchmarks" / "startup.py")
    assert spec is not None and spec.loader is not None
    startup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(startup)
    run = tmp_path / "run"
    assert invoke("discover", "--task", "demo", "--out", run, "--quiet",
                  "--no-render").exit_code == 0
    for name, args in startup.commands(run, tmp_path):
        result = startup.time_command(args, 1, tmp_path)
        assert result["heavy_imports"] == "", (name, result["heavy_imports"])
