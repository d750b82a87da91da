"""Resumable runs: `decisions.jsonl` and `circuit discover --resume DIR`, end to end.

A run is interrupted at a chosen decision by making the log's `append` raise KeyboardInterrupt
there (as Ctrl-C would, in the progress callback), then resumed; the resumed circuit must be
the uninterrupted run's, edge by edge. The model is the tiny checkpoint of `test_cli.py`.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import pytest
from test_cli import TINY_CONFIG, error_line, invoke, write_task

from acdc.core.models import build_model, save_checkpoint
from acdc.methods.acdc import runlog

THRESHOLD = 0.01  # on the tiny model: some edges kept, some removed, some nodes dead
GRANULARITIES = ("qkv", "head")


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("resume")
    save_checkpoint(build_model(TINY_CONFIG, seed=0), directory / "model", config=TINY_CONFIG)
    return write_task(directory / "tiny.yaml", model=str(directory / "model"),
                      threshold=THRESHOLD)


@pytest.fixture(scope="module")
def reference(task, tmp_path_factory) -> dict[str, Path]:
    """granularity -> the directory of an uninterrupted run."""
    runs = {}
    for granularity in GRANULARITIES:
        out = tmp_path_factory.mktemp(f"reference-{granularity}")
        result = discover(task, out, "--granularity", granularity)
        assert result.exit_code == 0, result.output
        runs[granularity] = out
    return runs


def discover(task: Path, out: Path, *args: str):
    return invoke("discover", "--task", task, "--out", out, "--quiet", "--no-render", *args)


def resume(out: Path, *args: str):
    return invoke("discover", "--resume", out, "--no-render", *args)


@contextlib.contextmanager
def interrupt_at(k: int):
    """Ctrl-C while decision k (counting from 0) is being logged: k decisions reach the log."""
    append = runlog.RunLog.append
    count = [0]

    def interrupting(self, decision):
        if count[0] == k:
            raise KeyboardInterrupt
        count[0] += 1
        append(self, decision)

    runlog.RunLog.append = interrupting
    try:
        yield
    finally:
        runlog.RunLog.append = append


def edges(out: Path) -> list[tuple[str, bool, float | None]]:
    data = json.loads((out / "circuit.json").read_text())
    return [(e["name"], e["kept"], e["score"]) for e in data["edges"]]


def assert_same_circuit(out: Path, reference: Path, replayed: int = 0) -> None:
    """Every edge kept or removed as in `reference`, tested or not as there, with the same score:
    bit for bit for the first `replayed` decisions of the log (they come from the log), and
    within float32 noise for the rest (a resumed run rebuilds the replayed circuit's
    activations in one pass, summing in another order than the uninterrupted run did)."""
    got, expected = edges(out), edges(reference)
    assert [(name, kept) for name, kept, _ in got] == [(name, kept) for name, kept, _ in expected]
    assert [score is None for _, _, score in got] == [score is None for _, _, score in expected]
    exact = {d["edge"] for d in log_lines(reference)[1:][:replayed]}
    for (name, _, score), (_, _, want) in zip(got, expected, strict=True):
        if score is None:
            continue
        if name in exact:
            assert score == want, name
        else:
            assert score == pytest.approx(want, rel=1e-4, abs=1e-6), name


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / runlog.LOG_NAME).read_text().splitlines()]


def interrupted_run(task: Path, out: Path, k: int, granularity: str = "qkv") -> None:
    with interrupt_at(k):
        result = discover(task, out, "--granularity", granularity)
    assert result.exit_code == 130, result.output
    assert len(log_lines(out)) == 1 + k


# --------------------------------------------------------------------------- the log


def test_log_records_the_configuration_and_every_decision(task, reference):
    out = reference["qkv"]
    header, *decisions = log_lines(out)
    assert header["format"] == "circuit-log/1"
    assert {key: header[key] for key in ("task", "threshold", "metric", "ablation", "granularity",
                                        "abs", "reverse_head_order", "seed", "device", "dtype")} \
        == {"task": "tiny", "threshold": THRESHOLD, "metric": "kl", "ablation": "corrupt",
            "granularity": "qkv", "abs": False, "reverse_head_order": False, "seed": 0,
            "device": "cpu", "dtype": "float32"}
    assert header["task_file"] == str(task.resolve()) and Path(header["model"]).is_dir()
    saved = edges(out)
    assert header["n_edges"] == len(saved) == len(decisions)
    assert {d["edge"] for d in decisions} == {name for name, _, _ in saved}
    by_name = {name: (kept, score) for name, kept, score in saved}
    assert all(by_name[d["edge"]] == (d["kept"], d["score"]) for d in decisions)
    assert any(d["score"] is None for d in decisions)  # dead nodes' edges, removed untested
    assert any(d["kept"] for d in decisions) and not all(d["kept"] for d in decisions)
    kept_after = [d["metric"] for d in decisions]
    assert kept_after[-1] == pytest.approx(json.loads(
        (out / "circuit.json").read_text())["metric_circuit"], abs=1e-6)


# --------------------------------------------------------------------------- interrupt, resume


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_resume_after_an_interrupt_gives_the_uninterrupted_circuit(task, reference, tmp_path,
                                                                    granularity):
    expected = edges(reference[granularity])
    total = len(expected)
    rng = random.Random(1234 + len(granularity))
    for k in (0, rng.randrange(1, total - 1), total - 1):
        out = tmp_path / f"k{k}"
        with interrupt_at(k):
            result = discover(task, out, "--granularity", granularity)
        assert result.exit_code == 130, result.output
        assert f"circuit discover --resume {out}" in result.stderr.strip().splitlines()[-1]
        partial = json.loads((out / "circuit.json").read_text())
        assert partial["partial"] is True
        assert len(log_lines(out)) == 1 + k

        result = resume(out, "--quiet")
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        assert_same_circuit(out, reference[granularity], replayed=k)
        data = json.loads((out / "circuit.json").read_text())
        assert data["partial"] is False and data["granularity"] == granularity
        header, *decisions = log_lines(out)
        assert header == log_lines(reference[granularity])[0] | {"task_sha256":
                                                                 header["task_sha256"]}
        assert [d["edge"] for d in decisions] == [d["edge"] for d in
                                                  log_lines(reference[granularity])[1:]]


def test_resume_writes_every_output_into_the_run_directory(task, reference, tmp_path):
    out = tmp_path / "run"
    interrupted_run(task, out, 17)
    result = invoke("discover", "--resume", out)
    assert result.exit_code == 0, result.output
    assert f"resuming {out}: 17 of 58 edges decided" in result.stderr
    assert "58/58 edges decided" in result.stderr
    assert (out / "circuit.dot").is_file() and (out / "run.yaml").is_file()
    assert "decisions.jsonl" in result.stdout.splitlines()[-1]


def test_resume_drops_a_truncated_last_line(task, reference, tmp_path):
    out = tmp_path / "run"
    interrupted_run(task, out, 20)
    with open(out / runlog.LOG_NAME, "a") as log:
        log.write('{"edge": "a0.h1->a1.h0<k>", "ke')  # a crash in the middle of a line
    result = resume(out)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "line 22" in warnings[0] and "dropped" in warnings[0]
    assert_same_circuit(out, reference["qkv"], replayed=20)
    assert len(log_lines(out)) == 1 + 58  # every line valid JSON again


def test_a_last_line_without_its_newline_is_kept(task, reference, tmp_path):
    out = tmp_path / "run"
    interrupted_run(task, out, 5)
    path = out / runlog.LOG_NAME
    path.write_text(path.read_text().rstrip("\n"))
    logged = runlog.read_log(out)
    assert logged.dropped is None and len(logged.decisions) == 5
    result = resume(out, "--quiet")
    assert result.exit_code == 0, result.output
    assert_same_circuit(out, reference["qkv"], replayed=5) and len(log_lines(out)) == 1 + 58


def test_damage_before_the_last_line_is_an_error_naming_it(task, tmp_path):
    out = tmp_path / "run"
    interrupted_run(task, out, 6)
    path = out / runlog.LOG_NAME
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:15]
    path.write_text("\n".join(lines) + "\n")
    result = resume(out)
    assert result.exit_code == 1
    assert "line 3" in error_line(result) and "decisions.jsonl" in error_line(result)


def test_resuming_a_finished_run_reproduces_it(task, reference, tmp_path):
    out = tmp_path / "run"
    result = discover(task, out)
    assert result.exit_code == 0, result.output
    log = (out / runlog.LOG_NAME).read_bytes()
    (out / "circuit.json").unlink()
    result = resume(out)
    assert result.exit_code == 0, result.output
    assert "all 58 edges already decided" in result.stderr
    assert_same_circuit(out, reference["qkv"], replayed=58)
    assert (out / runlog.LOG_NAME).read_bytes() == log


def test_interrupt_before_the_first_decision_leaves_a_resumable_run(task, reference, tmp_path,
                                                                    monkeypatch):
    import acdc.methods.acdc.search

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(acdc.methods.acdc.search, "run_acdc", interrupted)
        result = discover(task, out)
    assert result.exit_code == 130
    assert f"circuit discover --resume {out}" in result.stderr
    assert len(log_lines(out)) == 1
    result = resume(out, "--quiet")
    assert result.exit_code == 0, result.output
    assert_same_circuit(out, reference["qkv"])


def test_a_new_run_does_not_overwrite_an_unfinished_one(task, tmp_path):
    out = tmp_path / "run"
    interrupted_run(task, out, 3)
    result = discover(task, out)
    assert result.exit_code == 1
    assert "--resume" in error_line(result) and "3 of 58" in error_line(result)


# --------------------------------------------------------------------------- errors


def test_resume_without_a_log(tmp_path):
    result = resume(tmp_path)
    assert result.exit_code == 1 and "decisions.jsonl" in error_line(result)
    result = resume(tmp_path / "missing")
    assert result.exit_code == 1 and "missing" in error_line(result)
    (tmp_path / runlog.LOG_NAME).write_text("not json\n")
    result = resume(tmp_path)
    assert result.exit_code == 1 and "line 1" in error_line(result)


def usage_error(result) -> str:
    """The message of a usage error, unwrapped from its box."""
    return " ".join(result.output.replace("│", " ").split())


def edit_header(out: Path, **changes) -> None:
    path = out / runlog.LOG_NAME
    header, *rest = path.read_text().splitlines(keepends=True)
    path.write_text(json.dumps(json.loads(header) | changes) + "\n" + "".join(rest))


@pytest.mark.parametrize("changes, message", [
    ({"granularity": "head"}, "58 edges"),  # another graph
    ({"reverse_head_order": True}, "other settings"),  # another order of edges
])
def test_a_log_with_other_settings_is_an_error(task, tmp_path, changes, message):
    out = tmp_path / "run"
    interrupted_run(task, out, 10)
    edit_header(out, **changes)
    result = resume(out)
    assert result.exit_code == 1
    assert message in error_line(result) and "cannot resume" in error_line(result)


def test_an_edited_task_file_is_an_error(tmp_path, task):
    copy = write_task(tmp_path / "copy.yaml", model=str(task.parent / "model"),
                      threshold=THRESHOLD)
    out = tmp_path / "run"
    interrupted_run(copy, out, 4)
    write_task(copy, model=str(task.parent / "model"), threshold=THRESHOLD,
               prompts=[{"clean": [1, 2, 3], "corrupt": [1, 2, 4]}])
    result = resume(out)
    assert result.exit_code == 1
    assert "cannot resume" in error_line(result) and "copy.yaml" in error_line(result)


def test_options_contradicting_the_log_are_a_usage_error(task, tmp_path):
    out = tmp_path / "run"
    interrupted_run(task, out, 8)
    result = resume(out, "--granularity", "head")
    assert result.exit_code == 2
    assert "--granularity head (the run used qkv)" in usage_error(result)
    result = resume(out, "--threshold", "0.5", "--abs", "--out", tmp_path / "other")
    assert result.exit_code == 2
    message = usage_error(result)
    assert "--threshold 0.5 (the run used 0.01)" in message and "--abs" in message
    assert "--out" in message
    # options that agree with the log are fine, as are --quiet and --no-render
    result = resume(out, "--task", task, "--granularity", "qkv", "--threshold", str(THRESHOLD),
                    "--seed", "0", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
