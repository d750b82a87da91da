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
from acdc.errors import AcdcError
from acdc.evaluation.rank_scores import decode_score, encode_score, rank_scores
from acdc.evaluation.sources import load_sweep
from acdc.sweeps import GridError, RunOptions, default_grid, parse_grid, run_dir_name
from acdc.sweeps.plan import ThresholdJob, start_sweep

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
    # a paper grid that does not reach the task's own threshold is not taken
    assert default_grid("greater-than", "kl", 1e-5).spec == "1e-6:1e-4:11"
    wide = default_grid("greater-than", "kl", 0.1)
    assert wide.spec == "1e-4:1e-1:13" and "does not reach the task's threshold 0.1" in wide.source


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
    # the interrupted threshold says so, not "kept N of N edges" as if it had finished
    partial = json.loads((out / "tau-0.001" / "circuit.json").read_text())
    assert (f"interrupted: 1 of 3 thresholds finished (tau 0.001 after "
            f"{partial['n_edges_decided']} of {first['n_edges_total']} edges decided: partial); "
            f"resume with") in result.stderr
    assert "tau 0.001: kept" not in result.stderr
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


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root`: a file's bytes, None for a directory or a link."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() and not p.is_symlink()
            else None for p in sorted(root.rglob("*"))}


def test_threads_beyond_the_cores_are_refused_before_anything_is_written(task, tmp_path):
    result = sweep(task, tmp_path / "sweep", "--threads", "100000")
    assert result.exit_code == 2  # a usage error, found when the options are parsed
    assert "--threads" in error_line(result) and "give at most" in error_line(result)
    assert list(tmp_path.iterdir()) == []
    from acdc.sweeps import open_sweep, prepare_sweep, run_sweep  # the library checks it too

    plan = open_sweep(prepare_sweep(str(task), thresholds=GRID, out=tmp_path / "lib"))
    try:
        with pytest.raises(AcdcError, match="--threads 100000: this process may use"):
            run_sweep(plan, RunOptions(threads=100000))
    finally:
        plan.close()
    assert plan.discarded and list(tmp_path.iterdir()) == []  # what it made is taken back


def test_jobs_are_bounded_by_the_cores_and_the_memory(task, monkeypatch):
    from acdc.core.shapes import load_shape
    from acdc.sweeps import capacity
    from acdc.sweeps.plan import prepare_sweep

    settings = prepare_sweep(str(task), thresholds=GRID).settings
    need = capacity.worker_memory(settings, load_shape(settings.run.model))
    assert need > capacity.RUNTIME_BYTES
    monkeypatch.setattr(capacity, "available_memory", lambda: 100 * need)
    monkeypatch.setattr(capacity, "available_cores", lambda: 2)
    workers = capacity.choose_workers(10000, 3, 0, settings)
    assert workers.n == 2
    assert workers.note.startswith("--jobs 10000: running 2 worker processes: 2 CPU cores here "
                                   "(1 thread a worker); memory for 100")
    workers = capacity.choose_workers(4, 3, 2, settings)  # --threads 2: one worker fits
    assert workers.n == 1 and "one threshold at a time in this process" in workers.note
    monkeypatch.setattr(capacity, "available_cores", lambda: 64)
    monkeypatch.setattr(capacity, "available_memory", lambda: int(2.5 * need))
    workers = capacity.choose_workers(10000, 3, 0, settings)
    assert workers.n == 2 and "memory for 2 (about" in workers.note
    assert capacity.choose_workers(2, 3, 0, settings) == capacity.Workers(2)  # fits: no line
    assert capacity.choose_workers(8, 2, 0, settings) == capacity.Workers(2)  # 2 thresholds
    more = prepare_sweep(str(write_task(task.parent / "more.yaml", model=str(
        task.parent / "model"), prompts=[{"clean": list(range(12)), "corrupt": list(range(12))}]
        * 50)), thresholds=GRID).settings
    assert capacity.worker_memory(more, load_shape(settings.run.model)) > need


def test_jobs_beyond_the_machine_run_what_fits_and_say_so(task, independent, tmp_path,
                                                          monkeypatch):
    from acdc.sweeps import capacity

    monkeypatch.setattr(capacity, "available_cores", lambda: 1)
    result = sweep(task, tmp_path / "sweep", "--jobs", "10000")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: --jobs 10000: running one threshold at a time in "
                                    "this process: 1 CPU core here")
    assert_same_runs(tmp_path / "sweep", independent)


@pytest.mark.parametrize("change, says", [
    (lambda d: d["thresholds"].__setitem__(1, math.nan),
     "thresholds[1] is nan, expected a finite number > 0 (a log grid)"),
    (lambda d: d.update(grid="0.1", thresholds=[1e-400] * 1676 + [i / 1000 for i in range(323)]),
     "1,999 thresholds, more than the 1000 a sweep runs"),
    (lambda d: d.update(grid="0,0.1", thresholds=[1e-400, 0.0, 0.1]),
     "thresholds[0] and thresholds[1] are both 0.0 (tau-0.0)"),
    (lambda d: d.update(thresholds=[-0.001, 0.001, 0.01]), "thresholds[0] is -0.001"),
    (lambda d: d.update(thresholds=[0.0001, 0.002, 0.01]), "are not those of its grid"),
    (lambda d: d.update(thresholds=[0.01, 0.001, 0.0001]), "in increasing order"),
    (lambda d: d.update(thresholds="0.001"), "thresholds is '0.001', expected a list"),
    (lambda d: d.update(grid=7), "grid is 7, expected the grid's spec"),
    (lambda d: d.update(seed="0"), "seed is '0', expected a whole number"),
    (lambda d: d.update(seed=2**40), "seed is 1099511627776, expected 0 to 4294967295"),
    (lambda d: d.update(abs="yes"), "abs is 'yes', expected true or false"),
    (lambda d: d.update(metric="kl2"), "metric is 'kl2', not one of kl"),
    (lambda d: d.update(method="eap"), "method is 'eap', but a sweep runs acdc"),
    (lambda d: d.update(model="x" * 100_000), "model is 'xxxxxxxx"),
    (lambda d: d.update(task_file="a\0b"), "task_file is 'a\\x00b', expected text"),
    (lambda d: d.pop("dtype"), "has no 'dtype'"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON (lists or objects nested too deeply)"),
    ('{"format": "circuit-sweep/1", "seed": ' + "1" * 100_000 + "}",
     "not valid JSON (a whole number of more than"),
    ("[1, 2]", "holds a list, not the mapping `circuit sweep` writes"),
])
def test_a_damaged_sweep_json_is_one_line_naming_it(swept, tmp_path, change, says):
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(swept, out)
    if isinstance(change, str):
        (out / "sweep.json").write_text(change)
    else:
        data = json.loads((out / "sweep.json").read_text())
        change(data)
        (out / "sweep.json").write_text(json.dumps(data))
    before = tree(out)
    result = invoke("sweep", "--resume", out, "--no-render", "--quiet")
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert line.startswith(f"error: {out / 'sweep.json'}: ") and says in line, line
    assert len(line) < 400 and "--threshold:" not in line
    assert tree(out) == before


@pytest.mark.parametrize("change, says", [
    (lambda d: [1, 2], "the file is a list, expected the mapping"),
    (lambda d: {**d, "metrics": "kl"}, "metrics is 'kl', expected a mapping"),
    (lambda d: {**d, "metrics": ["kl", "nll"]}, "metrics is a list, expected a mapping"),
    (lambda d: {**d, "metrics": {**d["metrics"], "kl": {**d["metrics"]["kl"],
                                                        "faithfulness": "NaN-ish"}}},
     "metrics.kl.faithfulness is 'NaN-ish', expected a finite number or null"),
    (lambda d: {**d, "metrics": {**d["metrics"], "kl": {**d["metrics"]["kl"],
                                                        "circuit": {"mean": [1]}}}},
     "metrics.kl.circuit.mean is a list, expected a finite number or null"),
    (lambda d: {**d, "metrics": {"kl2": d["metrics"]["kl"]}}, "a metric's name is 'kl2'"),
    (lambda d: {**d, "format": "evaluation/0"}, "format is 'evaluation/0'"),
])
def test_a_damaged_evaluation_json_is_one_line_naming_it(swept, tmp_path, change, says):
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(swept, out)
    path = out / "tau-0.001" / "evaluation.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    before = tree(out)
    result = invoke("sweep", "--resume", out, "--no-render", "--quiet")
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert line.startswith(f"error: {path}: ") and says in line, line
    assert "delete it and resume the sweep" in line
    assert tree(out) == before


def test_a_run_with_another_seed_is_not_taken_as_the_sweeps(swept, tmp_path):
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(swept, out)
    data = json.loads((out / "sweep.json").read_text())
    (out / "sweep.json").write_text(json.dumps({**data, "seed": 7}))
    result = invoke("sweep", "--resume", out, "--no-render", "--quiet")
    assert result.exit_code == 1
    assert "run.yaml: not a run of this sweep: seed 0 (this sweep: 7)" in error_line(result)


def test_a_failed_sweep_leaves_nothing_behind(task, tmp_path, monkeypatch):
    import shutil

    model = tmp_path / "broken-model"
    shutil.copytree(task.parent / "model", model)
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # loads only when a worker starts
    broken = write_task(tmp_path / "broken.yaml", model=str(model))
    for args in (("--out", tmp_path / "sweep"), ()):
        monkeypatch.chdir(tmp_path)  # the default directory runs/... is made here
        result = invoke("sweep", "--task", broken, "--thresholds", GRID, "--quiet",
                        "--no-render", *args)
        assert result.exit_code == 1
        assert "threshold 0.0001:" in error_line(result)
        assert not (tmp_path / "sweep").exists() and not (tmp_path / "runs").exists()


def test_sweeps_started_in_the_same_second_get_their_own_directories(task, tmp_path,
                                                                     monkeypatch):
    from acdc.sweeps import plan as planning

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(planning.time, "strftime", lambda _: "20260101-000000")
    first = planning.start_sweep(str(task), thresholds=GRID)
    try:
        second = planning.start_sweep(str(task), thresholds=GRID)
        second.close()
    finally:
        first.close()
    assert first.out_dir == Path("runs/tiny-sweep-20260101-000000")
    assert second.out_dir == Path("runs/tiny-sweep-20260101-000000-2")
    assert (second.out_dir / "sweep.json").is_file()


def test_outputs_are_never_written_through_links_or_over_devices(task, swept, tmp_path):
    import shutil

    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    result = sweep(task, link)
    assert result.exit_code == 1 and "--out " + str(link) + ": is a symbolic link" in (
        error_line(result))
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    for out, says in ((a_file, "is a file, not a directory"),
                      (Path("/dev/null"), "is a file, not a directory")):
        result = sweep(task, out)
        assert result.exit_code == 1 and says in error_line(result), result.output
    assert a_file.read_text() == "mine" and list(target.iterdir()) == []
    out = tmp_path / "sweep"
    shutil.copytree(swept, out)
    elsewhere = tmp_path / "elsewhere.svg"
    elsewhere.write_text("not the sweep's")
    (out / "sweep.svg").unlink()
    (out / "sweep.svg").symlink_to(elsewhere)
    before = tree(out)
    for args in (("--resume", out), ("--task", task, "--thresholds", GRID, "--out", out)):
        result = invoke("sweep", *args, "--quiet", "--no-render")
        assert result.exit_code == 1
        assert "sweep.svg there is a symbolic link" in error_line(result)
    assert tree(out) == before
    (out / "sweep.svg").unlink()
    shutil.rmtree(out / "tau-0.01")
    (out / "tau-0.01").symlink_to(target, target_is_directory=True)
    before = tree(out)
    result = invoke("sweep", "--resume", out, "--quiet", "--no-render")
    assert result.exit_code == 1 and "tau-0.01 there is a symbolic link" in error_line(result)
    assert tree(out) == before
    assert list(target.iterdir()) == [] and elsewhere.read_text() == "not the sweep's"


def test_one_path_for_the_task_file_in_every_file_of_a_sweep(task, tmp_path):
    link = tmp_path / "link.yaml"
    link.symlink_to(task)
    out = tmp_path / "sweep"
    result = invoke("sweep", "--task", link, "--thresholds", "0.01", "--out", out, "--quiet",
                    "--no-render")
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "sweep.json").read_text())["task_file"]
    run_yaml = __import__("yaml").safe_load((out / "tau-0.01" / "run.yaml").read_text())
    evaluation = json.loads((out / "tau-0.01" / "evaluation.json").read_text())
    assert recorded == run_yaml["task_file"] == evaluation["task_file"] == str(task.resolve())


# --------------------------------------------------------------------------- workers


class _DiesInWorker(ThresholdJob):
    """A job whose unpickling kills the worker process that receives it (SIGKILL-like)."""

    def __reduce__(self):
        return (os._exit, (9,))


def test_worker_processes_and_a_killed_worker(task, independent, tmp_path):
    """--jobs 2 gives the local sweep's circuits; a worker that dies loses only its own
    threshold (the others finish, on a replacement worker too), and the resume reruns it."""
    from acdc.sweeps.backends import run_in_processes
    from acdc.sweeps.driver import run_sweep

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
    assert list(tmp_path.iterdir()) == []  # checked before anything is written


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
    result = sweep(task, tmp_path / "c", "--ray", "auto", "--ray-timeout", "0")
    assert result.exit_code == 2 and "--ray-timeout" in error_line(result)
    assert list(tmp_path.iterdir()) == []
    result = sweep(task, tmp_path / "d", "--ray-timeout", "5")
    assert result.exit_code == 2 and "only with --ray ADDRESS" in result.output


def test_ray_address_of_a_web_server_is_refused_at_once(task, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'circuit[ray]')")
    import http.server
    import threading
    import time

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        began = time.monotonic()
        result = sweep(task, tmp_path / "a", "--ray", f"127.0.0.1:{server.server_port}")
        took = time.monotonic() - began
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    assert "but not Ray (it answers like a web server)" in error_line(result)
    assert took < 5, took  # not Ray's 20 tries
    assert list(tmp_path.iterdir()) == []


def _silent_grpc_server():
    """A server that answers an HTTP/2 preface as gRPC servers do, then says nothing."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # SETTINGS
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener, held


@pytest.mark.slow
def test_ray_that_does_not_answer_times_out_in_one_line_and_keeps_its_log_quiet(task, tmp_path,
                                                                                capfd):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'circuit[ray]')")
    import time

    listener, held = _silent_grpc_server()
    port = listener.getsockname()[1]
    try:
        began = time.monotonic()
        result = sweep(task, tmp_path / "a", "--ray", f"127.0.0.1:{port}", "--ray-timeout", "2")
        took = time.monotonic() - began
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert result.exit_code == 1
    assert (f"--ray 127.0.0.1:{port}: no Ray cluster answered within 2 s (--ray-timeout)"
            in error_line(result))
    assert took < 2 + 5, took  # the timeout, Ray's import and one second's grace
    assert list(tmp_path.iterdir()) == []
    assert "gcs_client" not in capfd.readouterr().err  # Ray's core logs to file descriptor 2


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
