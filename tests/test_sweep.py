"""`circuit sweep`: grids, the layout, decisions equal to independent runs, resuming, workers.

Models are the tiny checkpoint of `test_cli.py`; the Ray test starts a local Ray instance and is
marked slow.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
from test_cli import TINY_CONFIG, error_line, invoke, write_task
from test_resume import assert_same_circuit, interrupt_at

from acdc.core.models import build_model, save_checkpoint
from acdc.evaluation.rank_scores import decode_score, encode_score, rank_scores
from acdc.evaluation.sources import load_sweep
from acdc.sweep import GridError, RunOptions, default_grid, parse_grid, run_dir_name
from acdc.sweep.plan import ThresholdJob, start_sweep

GRID = "1e-4:1e-2:3"  # on the tiny model: from nearly everything kept to a small circuit
THRESHOLDS = (0.0001, 0.001, 0.01)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("sweep")
    save_checkpoint(build_model(TINY_CONFIG, seed=0), directory / "model", config=TINY_CONFIG)
    return write_task(directory / "tiny.yaml", model=str(directory / "model"))


@pytest.fixture(scope="module")
def independent(task, tmp_path_factory) -> dict[float, Path]:
    """threshold -> the directory of an independent `circuit discover` run."""
    runs = {}
    for threshold in THRESHOLDS:
        out = tmp_path_factory.mktemp("discover")
        result = invoke("discover", "--task", task, "--threshold", threshold, "--out", out,
                        "--quiet", "--no-render")
        assert result.exit_code == 0, result.output
        runs[threshold] = out
    return runs


@pytest.fixture(scope="module")
def swept(task, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("swept") / "sweep"
    result = sweep(task, out)
    assert result.exit_code == 0, result.output
    return out


def sweep(task: Path, out: Path, *args: str):
    return invoke("sweep", "--task", task, "--thresholds", GRID, "--out", out, "--quiet",
                  "--no-render", *args)


def circuit_without_runtime(directory: Path) -> dict:
    data = json.loads((directory / "circuit.json").read_text())
    data.pop("runtime_s")
    return data


def assert_same_runs(sweep_dir: Path, independent: dict[float, Path],
                     resumed: dict[float, int] | None = None) -> None:
    """Every threshold's run equals the independent run: the decision log byte for byte (every
    decision, score and metric in order) and circuit.json but for the runtime. A run resumed
    after `resumed[threshold]` decisions is held to what a resumed `discover` guarantees."""
    for threshold, reference in independent.items():
        directory = sweep_dir / run_dir_name(threshold)
        if threshold in (resumed or {}):
            assert_same_circuit(directory, reference, replayed=resumed[threshold])
            continue
        assert (directory / "decisions.jsonl").read_bytes() == (
            reference / "decisions.jsonl").read_bytes(), threshold
        assert circuit_without_runtime(directory) == circuit_without_runtime(reference)


# --------------------------------------------------------------------------- grids


def test_log_grids_lists_and_names():
    assert parse_grid("1e-4:1e-1:13").thresholds[:4] == (0.0001, 0.000178, 0.000316, 0.000562)
    assert parse_grid("1e-4:1e-1:13").thresholds[-1] == 0.1
    assert parse_grid("0.1, 0,0.01").thresholds == (0.0, 0.01, 0.1)
    assert parse_grid("0.05:0.05:1").thresholds == (0.05,)
    for threshold in (*parse_grid("1e-6:1:31").thresholds, 0.0, 0.123456789, 1e-12):
        name = run_dir_name(threshold)
        assert float(name.removeprefix("tau-")) == threshold  # what compare reads back
    assert [run_dir_name(t) for t in (1e-4, 1e-5, 0.01, 0.000178)] == [
        "tau-0.0001", "tau-1e-05", "tau-0.01", "tau-0.000178"]


def test_paper_grids_by_task_and_metric():
    assert default_grid("ioi", "kl").thresholds == parse_grid("1e-6:1:31").thresholds
    assert len(default_grid("greater-than", "kl").thresholds) == 11
    assert default_grid("greater-than", "prob_diff").spec == "1e-3:1e-1:21"
    assert default_grid("induction", "nll").spec == "1e-4:1:21"
    assert default_grid("tracr-reverse", "l2").spec == "1e-5:1e-1:21"
    assert default_grid("ioi", "logit_diff").spec == "1e-4:1e-1:13"  # no paper grid
    assert default_grid("demo", "kl").source == "the default grid"


@pytest.mark.parametrize("spec, says", [
    ("", "the grid is empty"),
    (" , ", "the grid is empty"),
    ("1e-4:1e-1:0", "the grid is empty (N = 0)"),
    ("0:1e-1:5", "LO is 0, but a log grid needs thresholds > 0"),
    ("-1e-3:1e-1:5", "LO is -0.001, but a log grid needs thresholds > 0"),
    ("1e-4:-1:5", "HI is -1"),
    ("1e-4:1e-1", "three parts"),
    ("1e-4:1e-1:2.5", "N must be a whole number"),
    ("a:1e-1:3", "LO 'a' is not a number"),
    ("1e-1:1e-4:3", "larger than HI"),
    ("0.1,,0.2", "an empty item"),
    ("0.1,x", "'x' is not a number"),
    ("0.1,-0.2", "negative"),
    ("0.1,0.1", "given twice"),
    ("nan,0.1", "not a finite number"),
    ("1e-4:1.0001e-4:50", "too dense"),
])
def test_bad_grids_are_one_line_errors(spec, says):
    with pytest.raises(GridError) as caught:
        parse_grid(spec)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_rank_scores_and_their_json():
    kept = [[True, True, False, False], [True, False, True, False], [True, True, False, False]]
    assert rank_scores([0.001, 0.01, 0.1], kept) == [math.inf, 0.1, 0.01, None]
    assert [encode_score(s) for s in (math.inf, 0.1, None)] == ["inf", 0.1, None]
    assert [decode_score(v) for v in ("inf", 0.1, None, 2)] == [math.inf, 0.1, None, 2.0]
    with pytest.raises(ValueError):
        decode_score("Infinity")


# --------------------------------------------------------------------------- a sweep


def test_sweep_runs_are_the_independent_runs(swept, independent):
    assert_same_runs(swept, independent)


def test_sweep_layout_and_sweep_json(swept, independent, task):
    data = json.loads((swept / "sweep.json").read_text())
    assert data["format"] == "circuit-sweep/1" and data["finished"] is True
    assert data["task"] == "tiny" and data["task_file"] == str(task)
    assert data["thresholds"] == list(THRESHOLDS) and data["grid"] == GRID
    assert "threshold" not in data  # the header has every setting but the threshold
    runs = data["runs"]
    assert [r["threshold"] for r in runs] == list(THRESHOLDS)
    kept = []
    for run in runs:
        circuit = json.loads((swept / run["dir"] / "circuit.json").read_text())
        evaluation = json.loads((swept / run["dir"] / "evaluation.json").read_text())
        assert run["status"] == "finished"
        assert run["n_edges_kept"] == circuit["n_edges_kept"]
        assert run["faithfulness"]["kl"] == evaluation["metrics"]["kl"]["faithfulness"]
        assert set(run["faithfulness"]) == set(evaluation["metrics"])  # every metric
        # the circuit's own metric, evaluated, is the run's metric_circuit
        assert evaluation["run_metric"]["agrees"]
        assert run["metrics"]["kl"]["circuit"] == pytest.approx(circuit["metric_circuit"],
                                                                abs=1e-6)
        kept.append([e["kept"] for e in circuit["edges"]])
    sizes = [r["n_edges_kept"] for r in runs]
    assert sizes[0] > sizes[-1] > 0  # the grid spans circuit sizes
    # rank scores: the largest threshold keeping each edge, "inf" when every one does
    expected = rank_scores(list(THRESHOLDS), kept)
    scores = data["rank_scores"]
    assert [s["edge"] for s in scores] == [e["name"] for e in circuit["edges"]]
    assert [decode_score(s["score"]) for s in scores] == expected
    assert "inf" in [s["score"] for s in scores] and None in [s["score"] for s in scores]
    assert (swept / "sweep.svg").is_file() and (swept / "sweep.png").is_file()
    # circuit compare reads the layout, thresholds from the names
    assert [run.threshold for run in load_sweep(swept).runs] == list(THRESHOLDS)


def test_sweep_runs_are_ordinary_resumable_run_directories(swept, independent, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(swept / run_dir_name(0.001), run_dir)
    result = invoke("discover", "--resume", run_dir, "--no-render", "--quiet")
    assert result.exit_code == 0, result.output
    assert circuit_without_runtime(run_dir) == circuit_without_runtime(independent[0.001])
    repeat = json.loads(json.dumps(__import__("yaml").safe_load(
        (swept / run_dir_name(0.001) / "run.yaml").read_text())))["repeat"]
    assert "--threshold 0.001" in repeat and f"--out {swept / 'tau-0.001'}" in repeat


def test_zero_ablation_head_granularity_sweep_equals_independent_runs(task, tmp_path):
    options = ("--ablation", "zero", "--granularity", "head", "--metric", "l2")
    reference = {}
    for threshold in (0.01, 0.1):
        out = tmp_path / f"discover-{threshold}"
        assert invoke("discover", "--task", task, "--threshold", threshold, "--out", out,
                      "--quiet", "--no-render", *options).exit_code == 0
        reference[threshold] = out
    result = invoke("sweep", "--task", task, "--thresholds", "0.01,0.1", "--out",
                    tmp_path / "sweep", "--quiet", "--no-render", *options)
    assert result.exit_code == 0, result.output
    assert_same_runs(tmp_path / "sweep", reference)


# --------------------------------------------------------------------------- resuming


def test_interrupted_sweep_resumes_without_rerunning_finished_thresholds(task, independent,
                                                                         tmp_path):
    out = tmp_path / "sweep"
    first = json.loads((independent[0.0001] / "circuit.json").read_text())
    with interrupt_at(first["n_edges_total"] + 5):  # 5 decisions into the second threshold
        result = sweep(task, out)
    assert result.exit_code == 130, result.output
    assert "resume with `circuit sweep --resume" in result.stderr
    data = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in data["runs"]] == ["finished", "unfinished", "unfinished"]
    assert data["finished"] is False and data["rank_scores"] is None
    assert json.loads((out / "tau-0.001" / "circuit.json").read_text())["partial"] is True
    finished = (out / "tau-0.0001" / "circuit.json").stat().st_mtime_ns
    result = invoke("sweep", "--resume", out, "--no-render")
    assert result.exit_code == 0, result.output
    assert "resuming the sweep" in result.stderr and "1 of 3 thresholds finished" in result.stderr
    assert "2 to run" in result.stderr
    assert (out / "tau-0.0001" / "circuit.json").stat().st_mtime_ns == finished  # not rerun
    assert_same_runs(out, independent, resumed={0.001: 5})  # it continued its log
    assert json.loads((out / "sweep.json").read_text())["finished"] is True
    # the same command again continues (here: nothing left) instead of starting over
    result = sweep(task, out)
    assert result.exit_code == 0 and (out / "tau-0.0001" / "circuit.json").stat(
    ).st_mtime_ns == finished


def test_a_missing_evaluation_is_made_without_rerunning(task, swept, tmp_path):
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(swept, out)
    (out / "tau-0.01" / "evaluation.json").unlink()
    log = (out / "tau-0.01" / "decisions.jsonl").read_bytes()
    result = invoke("sweep", "--resume", out, "--no-render")
    assert result.exit_code == 0, result.output
    assert (out / "tau-0.01" / "evaluation.json").is_file()
    assert (out / "tau-0.01" / "decisions.jsonl").read_bytes() == log


def test_sweep_directory_of_another_task_or_other_settings(task, swept, tmp_path, checkpoint):
    other = write_task(tmp_path / "other.yaml", name="other", model=str(checkpoint))
    result = invoke("sweep", "--task", other, "--thresholds", GRID, "--out", swept)
    assert result.exit_code == 1
    line = error_line(result)
    assert "holds a sweep of task tiny" in line and "not of task other" in line
    result = sweep(task, swept, "--metric", "l2")
    assert result.exit_code == 2 and "--metric l2 (the sweep there used kl)" in result.output
    result = invoke("sweep", "--task", task, "--thresholds", "0.1,0.2", "--out", swept)
    assert result.exit_code == 2 and "--thresholds 0.1,0.2" in result.output
    result = invoke("sweep", "--resume", swept, "--ablation", "zero")
    assert result.exit_code == 2 and "--ablation zero" in result.output


def test_bad_input_is_one_line(task, tmp_path, checkpoint):
    for spec, says in (("", "the grid is empty"), ("0:1:3", "needs thresholds > 0"),
                       ("1e-3:1e-1", "three parts")):
        result = invoke("sweep", "--task", task, "--thresholds", spec, "--out", tmp_path / "x")
        assert result.exit_code == 2 and says in result.output, result.output
    result = invoke("sweep", "--resume", tmp_path / "nothing")
    assert result.exit_code == 1 and "no such sweep directory" in error_line(result)
    run = tmp_path / "run"
    assert invoke("discover", "--task", task, "--out", run, "--quiet",
                  "--no-render").exit_code == 0
    result = invoke("sweep", "--task", task, "--out", run)
    assert result.exit_code == 1 and "is a run directory" in error_line(result)
    result = invoke("sweep", "--resume", run)
    assert result.exit_code == 1 and "has no sweep.json" in error_line(result)
    result = invoke("sweep", "--task", task, "--jobs", "2", "--ray", "auto")
    assert result.exit_code == 2 and "leave out --jobs" in result.output
    result = invoke("sweep", "--task", task, "--jobs", "0")
    assert result.exit_code == 2


@pytest.fixture(scope="module")
def checkpoint(task) -> Path:
    return task.parent / "model"


# --------------------------------------------------------------------------- workers


class _DiesInWorker(ThresholdJob):
    """A job whose unpickling kills the worker process that receives it (SIGKILL-like)."""

    def __reduce__(self):
        return (os._exit, (9,))


def test_worker_processes_and_a_killed_worker(task, independent, tmp_path):
    """--jobs 2 gives the local sweep's circuits; a worker that dies loses only its own
    threshold (the others finish, on a replacement worker too), and the resume reruns it."""
    from acdc.sweep.backends import run_in_processes
    from acdc.sweep.driver import run_sweep

    out = tmp_path / "sweep"
    plan = start_sweep(str(task), thresholds=GRID, out=out)
    try:
        jobs = list(plan.jobs)
        doomed = jobs[1]
        jobs[1] = _DiesInWorker(**{f: getattr(doomed, f) for f in doomed.__dataclass_fields__})
        done = []
        failures = run_in_processes(jobs, RunOptions(render_svg=False), 2,
                                    lambda job, outcome: done.append(outcome.threshold))
    finally:
        plan.close()
    assert sorted(done) == [0.0001, 0.01]
    assert [f.threshold for f in failures] == [0.001]
    assert "exit code 9" in failures[0].message
    plan = start_sweep(str(task), thresholds=GRID, out=out)  # the same command again resumes
    try:
        assert [job.threshold for job in plan.jobs] == [0.001]
        outcome = run_sweep(plan, RunOptions(render_svg=False), jobs=2)
    finally:
        plan.close()
    assert outcome.finished and not outcome.failures
    assert_same_runs(out, independent)


@pytest.mark.slow
def test_jobs_option_end_to_end(task, independent, tmp_path):
    result = sweep(task, tmp_path / "sweep", "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert_same_runs(tmp_path / "sweep", independent)


# --------------------------------------------------------------------------- Ray


def test_ray_missing_or_unreachable_is_one_line(task, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    result = sweep(task, tmp_path / "a", "--ray", "auto")
    assert result.exit_code == 1
    assert error_line(result) == "error: --ray: Ray is not installed: pip install 'circuit[ray]'"


def test_ray_address_that_does_not_answer(task, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'circuit[ray]')")
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = sweep(task, tmp_path / "a", "--ray", f"127.0.0.1:{port}")
    assert result.exit_code == 1
    line = error_line(result)
    assert f"nothing answers at 127.0.0.1:{port}" in line and "ray start --head" in line
    result = sweep(task, tmp_path / "b", "--ray", "no-port")
    assert result.exit_code == 1 and "HOST:PORT" in error_line(result)


@pytest.mark.slow
def test_ray_sweep_gives_the_local_circuits(task, swept, independent, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'circuit[ray]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    try:
        out = tmp_path / "sweep"
        result = sweep(task, out, "--ray", "auto")
        assert result.exit_code == 0, result.output
        assert_same_runs(out, independent)
        local = json.loads((swept / "sweep.json").read_text())
        distributed = json.loads((out / "sweep.json").read_text())
        assert distributed["rank_scores"] == local["rank_scores"]
        for a, b in zip(local["runs"], distributed["runs"], strict=True):
            assert a["faithfulness"] == b["faithfulness"]
        repeat = __import__("yaml").safe_load((out / "tau-0.001" / "run.yaml").read_text())
        assert f"--out {out / 'tau-0.001'}" in repeat["repeat"]  # not the worker's directory
    finally:
        ray.shutdown()
