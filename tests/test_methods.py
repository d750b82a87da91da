"""The method seam holds: a new method is a few lines, and everything downstream takes it.

A toy `random` method (seeded random edge scores: a baseline) is written here as a new
contributor would write one, registered, and run through `circuit discover` (options from its
settings dataclass, the selection rule, the seed), then `evaluate`, `render`, `export` and
`compare` read its circuit like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import yaml
from cli_helpers import invoke
from test_cli import PROMPTS, TINY_CONFIG, write_task

from acdc.core.models import build_model, save_checkpoint
from acdc.methods import registry
from acdc.methods.base import Discovery, EdgeScores, Method, NodeScores, option

# --------------------------------------------------------------------------- the toy methods


@dataclass(frozen=True)
class RandomSettings:
    scale: float = option(1.0, help="random: the scores' scale")


def random_scores(job: Discovery) -> EdgeScores:
    generator = torch.Generator().manual_seed(job.seed)
    scores = torch.rand(len(job.graph.edges), generator=generator) * job.settings.scale
    return EdgeScores(scores.tolist())


def random_nodes(job: Discovery) -> NodeScores:
    generator = torch.Generator().manual_seed(job.seed)
    names = [s.name for s in job.graph.senders if s.kind != "input"]
    return NodeScores(dict(zip(names, torch.rand(len(names), generator=generator).tolist(),
                               strict=True)))


TOYS = (Method("random", "seeded random edge scores", random_scores,
               settings_type=RandomSettings),
        Method("random-nodes", "seeded random node scores", random_nodes, returns="nodes"))


@pytest.fixture(autouse=True)
def toys():
    for toy in TOYS:
        registry.register(toy)
    yield
    for toy in TOYS:
        registry.METHODS.pop(toy.name)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    save_checkpoint(build_model(TINY_CONFIG, seed=0), root / "model", config=TINY_CONFIG)
    # answers and wrong answers, so that the gradient methods can use a task metric
    prompts = [{**p, "answer": p["clean"][-1], "wrong": p["corrupt"][-1]} for p in PROMPTS]
    return write_task(root / "tiny.yaml", model=str(root / "model"), prompts=prompts)


# --------------------------------------------------------------------------- the tests


def test_a_toy_method_runs_end_to_end(tmp_path, task_file):
    out = tmp_path / "run"
    result = invoke("discover", "--task", task_file, "--method", "random", "--top-n", "7",
                    "--seed", "3", "--scale", "2", "--out", out, "--no-render")
    assert result.exit_code == 0, result.output
    assert "7 selected by --top-n 7" in result.stdout
    data = json.loads((out / "circuit.json").read_text())
    assert data["method"] == "random" and data["top_n"] == 7 and data["scale"] == 2.0
    assert "threshold" not in data and data["n_edges_selected"] == 7
    scores = [e["score"] for e in data["edges"]]
    assert max(scores) <= 2.0 and len(set(scores)) == len(scores)
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert "--method random --scale 2.0 --top-n 7" in run["repeat"]
    # the same seed gives the same circuit; the repeat command repeats it
    again = tmp_path / "again"
    assert invoke("discover", "--task", task_file, "--method", "random", "--top-n", "7",
                  "--seed", "3", "--scale", "2", "--out", again, "--no-render").exit_code == 0
    assert json.loads((again / "circuit.json").read_text())["edges"] == data["edges"]
    for args in (["evaluate", out, "--quiet"], ["render", out / "circuit.json", "-f", "dot"],
                 ["export", out, "-f", "csv"], ["compare", out, again, "--no-render",
                                                "--out", tmp_path / "cmp"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)


def test_a_node_method_keeps_every_edge_among_its_nodes(tmp_path, task_file):
    out = tmp_path / "nodes"
    result = invoke("discover", "--task", task_file, "--method", "random-nodes", "--top-n", "2",
                    "--out", out, "--no-render")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "circuit.json").read_text())
    kept_nodes = sorted(data["node_scores"], key=lambda n: -data["node_scores"][n])[:2]
    for edge in data["edges"]:
        ends = [end.split("<")[0] for end in edge["name"].split("->")]
        if edge["kept"]:
            assert all(end in ("input", "logits", *kept_nodes) for end in ends), edge
    assert data["n_nodes_selected"] == 2


def test_options_of_other_methods_and_missing_rules_are_refused(tmp_path, task_file):
    result = invoke("discover", "--task", task_file, "--method", "random", "--ig-steps", "3",
                    "--top-n", "3", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "--ig-steps is not an option of method random" in \
        result.stderr
    result = invoke("discover", "--task", task_file, "--scale", "3", "--out", tmp_path / "y")
    assert result.exit_code == 1 and "--scale is not an option of method acdc" in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_methods_are_listed_once(task_file):
    result = invoke("methods")
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == list(registry.METHODS)
    assert "random" in names and "--scale" in result.stdout


QUICK = {"acdc": [], "eap": ["--metric", "logit_diff", "--top-n", "8"],
         "eap-ig": ["--top-n", "8", "--ig-steps", "2"],
         "exact": ["--top-n", "8"], "hisp": ["--metric", "logit_diff", "--top-n", "3"],
         "edge-pruning": ["--top-n", "8", "--steps", "20"],
         "sp": ["--steps", "20"]}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_every_method_runs_end_to_end_with_the_same_outputs(tmp_path, task_file, name):
    """`circuit discover --method M` for every registered method: circuit.json and run.yaml as
    for any method, a repeat command that parses, and every judging command takes the
    circuit."""
    assert set(QUICK) == set(registry.METHODS) - {t.name for t in TOYS}
    out = tmp_path / name
    result = invoke("discover", "--task", task_file, "--method", name, *QUICK[name],
                    "--out", out, "--no-render", "--quiet")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "circuit.json").read_text())
    assert data["method"] == name and data["format"] == "circuit/1"
    assert len(data["edges"]) == data["n_edges_total"]
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert f"--method {name}" in run["repeat"]
    for args in (["evaluate", out, "--quiet"], ["render", out / "circuit.json", "-f", "dot"],
                 ["export", out, "-f", "csv"], ["compare", out, out, "--no-render",
                                                "--out", tmp_path / f"{name}-cmp"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
