"""The judging commands against careless and hostile input: every bad input is one line on
stderr (exit 1, or 2 for usage), within seconds, and changes no file, run or device.

Covered here: usage errors of every command, outputs that must not be written (devices,
FIFOs, symbolic links, a command's own inputs, a run's files), files that are small but
expensive (YAML alias bombs, a MIB cfg of a huge graph, huge sparse edge lists, deep nesting),
thread counts beyond the machine, default output directories taken in the same second,
failed commands that must leave no directory behind, and the readers of `acdc.core.files`
themselves (including hypothesis-drawn bytes). The report and the sweep have their own tests
(test_report.py, test_sweep.py).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from cli_helpers import error_line, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import TINY_CONFIG, write_task

from acdc.core import files
from acdc.core.configs import available_cores
from acdc.core.files import FileError, parse_json, parse_yaml, read_json, read_yaml
from acdc.core.graph import GraphShape, build_graph
from acdc.core.models import build_model, save_checkpoint

SECONDS = 5.0  # what any refusal may take (milliseconds in practice)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(build_model(TINY_CONFIG, seed=0), directory, config=TINY_CONFIG)
    return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, checkpoint) -> Path:
    """A finished run of the tiny task (circuit.json, run.yaml, decisions.jsonl, drawings)."""
    root = tmp_path_factory.mktemp("hardening")
    task = write_task(root / "tiny.yaml", model=str(checkpoint))
    out = root / "run"
    result = invoke("discover", "--task", task, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(tmp_path, run_dir) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def refused(args, code: int = 1) -> str:
    """Run `circuit ARGS`, check it is refused in one line with `code`, fast; the line."""
    start = time.perf_counter()
    result = invoke(*args)
    seconds = time.perf_counter() - start
    assert result.exit_code == code, (args, result.output)
    line = error_line(result)
    assert len(result.stderr.strip().splitlines()) == 1 or code == 1, result.stderr
    assert seconds < SECONDS, (args, seconds)
    return line


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.is_symlink()}


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args", [
    ["discover", "--task", "demo", "--threshold", "abc"],
    ["discover", "--bogus"],
    ["discover"],
    ["no-such-command"],
    ["discover", "--task", "demo", "--ablation", "median"],
    ["evaluate"],
    ["export", "x", "-f", "xml"],
    ["export", "x", "-f", "mib", "--d-model", "99999999999999999999999"],
    ["graph"],
    ["render"],
    ["compare"],
    ["report"],
    ["sweep", "--task", "demo", "--jobs", "0"],
    ["zoo", "train"],
    ["evaluate", "x", "--threads", "100000"],
    ["discover", "--task", "demo", "--threads", "-1"],
])
def test_usage_errors_are_one_line(args):
    result = invoke(*args)
    assert result.exit_code == 2, (args, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert lines[0].endswith("--help`"), lines[0]
    assert "Usage:" not in result.output and "Traceback" not in result.output


def test_threads_beyond_the_cores_are_refused_before_anything_runs(tmp_path, checkpoint):
    task = write_task(tmp_path / "tiny.yaml", model=str(checkpoint))
    too_many = available_cores() + 1
    line = refused(["discover", "--task", task, "--threads", too_many, "--out", tmp_path / "o"],
                   code=2)
    assert f"give at most {available_cores()}" in line
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- outputs


def _special_outputs(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "target.txt"
    target.write_text("keep me\n")
    link = tmp_path / "link.out"
    link.symlink_to(target)
    return {"device": Path("/dev/null"), "fifo": fifo, "symlink": link, "directory": tmp_path}


@pytest.mark.parametrize("kind", ["device", "fifo", "symlink", "directory"])
@pytest.mark.parametrize("command", ["evaluate", "export", "render"])
def test_outputs_onto_devices_links_and_directories_are_refused(tmp_path, run_copy, kind,
                                                                command):
    out = _special_outputs(tmp_path)[kind]
    before = snapshot(run_copy)
    args = {"evaluate": ["evaluate", run_copy, "--quiet"],
            "export": ["export", run_copy, "-f", "csv"],
            "render": ["render", run_copy / "circuit.json", "-f", "dot"]}[command]
    line = refused([*args, "--out", out])
    assert f"--out {out}" in line
    assert snapshot(run_copy) == before
    assert Path("/dev/null").is_char_device()
    assert (tmp_path / "link.out").is_symlink()
    assert (tmp_path / "target.txt").read_text() == "keep me\n"
    assert stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode)


@pytest.mark.parametrize("name", ["circuit.json", "run.yaml", "decisions.jsonl"])
@pytest.mark.parametrize("command", ["evaluate", "export", "render"])
def test_a_runs_own_files_are_never_overwritten(run_copy, name, command):
    before = snapshot(run_copy)
    args = {"evaluate": ["evaluate", run_copy, "--quiet"],
            "export": ["export", run_copy, "-f", "csv"],
            "render": ["render", run_copy / "circuit.json", "-f", "dot"]}[command]
    line = refused([*args, "--out", run_copy / name])
    assert "input" in line or "a run's" in line
    assert snapshot(run_copy) == before


def test_a_sweep_record_elsewhere_is_not_overwritten(tmp_path, run_copy):
    other = tmp_path / "sweep.json"
    other.write_text("{}\n")
    line = refused(["export", run_copy, "-f", "csv", "--out", other])
    assert "would overwrite a run's sweep.json" in line
    assert other.read_text() == "{}\n"


def test_compare_output_directory_that_is_a_file_or_link(tmp_path, run_copy):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    refused(["compare", run_copy, run_copy, "--out", a_file])
    link = tmp_path / "dir-link"
    link.symlink_to(tmp_path)
    line = refused(["compare", run_copy, run_copy, "--out", link])
    assert "symbolic link" in line
    assert a_file.read_text() == "x" and link.is_symlink()


def test_two_compares_in_the_same_second_write_two_directories(tmp_path, run_copy,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *args: "20260101-000000")
    first, second = (invoke("compare", run_copy, run_copy, "--no-render") for _ in range(2))
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "compare-20260101-000000", "compare-20260101-000000-2"]


def test_a_failed_command_leaves_no_directory_behind(tmp_path, checkpoint):
    task = write_task(tmp_path / "bad.yaml", model=str(checkpoint),
                      prompts=[{"clean": [1, 2, 3], "corrupt": [1, 2]}])  # lengths differ
    refused(["discover", "--task", task, "--out", tmp_path / "new" / "run", "--quiet"])
    assert not (tmp_path / "new").exists()


def test_evaluate_on_a_full_disk_keeps_the_old_file(run_copy, monkeypatch):
    result = invoke("evaluate", run_copy, "--quiet")
    assert result.exit_code == 0, result.output
    before = (run_copy / "evaluation.json").read_bytes()

    def full_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full_replace)
    line = refused(["evaluate", run_copy, "--quiet"])
    assert "no space left on the device" in line
    assert (run_copy / "evaluation.json").read_bytes() == before
    assert not [p for p in run_copy.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("command", ["export", "render", "compare"])
def test_a_full_disk_leaves_no_half_file(tmp_path, run_copy, monkeypatch, command):
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    out = tmp_path / "out"
    args = {"export": ["export", run_copy, "-f", "csv", "--out", out / "c.csv"],
            "render": ["render", run_copy / "circuit.json", "-f", "dot", "--out", out / "c.dot"],
            "compare": ["compare", run_copy, run_copy, "--out", out, "--no-render"]}[command]
    line = refused(args)
    assert "no space left on the device" in line
    assert not out.exists()  # nothing half-written, no empty directory


# --------------------------------------------------------------------------- small but costly


def _alias_bomb() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text + "model: *i\ntask_file: *i\n"


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_run_yaml_alias_bomb_is_one_line(run_copy, command):
    (run_copy / "run.yaml").write_text(_alias_bomb())
    args = ["evaluate", run_copy, "--quiet"] if command == "evaluate" else [
        "export", run_copy, "-f", "mib"]
    line = refused(args)
    assert "run.yaml: holds more than" in line


def test_a_mib_cfg_of_a_huge_graph_builds_nothing(tmp_path):
    mib = tmp_path / "huge.json"
    mib.write_text(json.dumps({"cfg": {"n_layers": 60, "n_heads": 60, "d_model": 8},
                               "nodes": {}, "edges": {"input->logits": {"score": 0,
                                                                        "in_graph": True}}}))
    line = refused(["export", mib, "-f", "csv"])
    assert "has 1 edges" in line and "60-layer 60-head" in line


def test_a_huge_edge_list_is_refused_by_its_size(tmp_path, run_copy):
    edge_list = tmp_path / "edges.txt"
    with open(edge_list, "wb") as stream:  # sparse: 210 MB on paper, nothing on disk
        stream.truncate(210 << 20)
    line = refused(["compare", run_copy, "--reference", edge_list, "--out", tmp_path / "c"])
    assert "larger than the" in line and str(edge_list) in line
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a": ' + "9" * 100_000 + "}",
                                  "\xff\xfe", '{"format": "circuit/1"'])
def test_damaged_circuit_files_are_one_line(tmp_path, text):
    path = tmp_path / "circuit.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe" else
                     b"\xff\xfe")
    for args in (["evaluate", path, "--quiet"], ["export", path, "-f", "csv"],
                 ["render", path, "-f", "dot"], ["compare", path, path]):
        refused(args)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_devices_are_not_read(path):
    for args in (["evaluate", path, "--quiet"], ["export", path, "-f", "csv"],
                 ["render", path]):
        assert "not a regular file" in refused(args)


# --------------------------------------------------------------------------- readers


def test_yaml_reader_refuses_repeated_keys_bombs_and_deep_nesting(tmp_path):
    for text, says in (("a: 1\na: 2\n", "the key 'a' is given twice"),
                       (_alias_bomb(), "holds more than"),
                       ("&a [*a]", "holds more than"),
                       ("[" * 100_000, "nest"),
                       ("- " * 100_000 + "x", "nest"),
                       ("a: " + "1" * 5000, "more than 4300 digits")):
        with pytest.raises(FileError, match=says):
            parse_yaml(text, "f.yaml", "a test file")
    assert parse_yaml("a: [1, {b: 2}]\n", "f.yaml", "x") == {"a": [1, {"b": 2}]}
    assert parse_yaml("", "f.yaml", "x") is None


def test_file_readers_check_the_file_before_reading(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as stream:
        stream.truncate(2 << 20)
    with pytest.raises(FileError, match="larger than the 1 MiB"):
        read_json(big, "x", limit=1 << 20)
    with pytest.raises(FileError, match="is a directory"):
        read_yaml(tmp_path, "x")
    with pytest.raises(FileError, match="no such file"):
        read_yaml(tmp_path / "missing.yaml", "x")
    for text in ("[" * 100_000, "9" * 100_000, "{"):
        with pytest.raises(FileError, match="not valid JSON"):
            parse_json(text, "f.json", "x")


FUZZ = settings(max_examples=150, deadline=3000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300) | st.text(alphabet="[]{}&*!:-, ab\n\t'\"#|>?@%01.eE", max_size=300))
def test_any_bytes_give_a_value_or_one_file_error(data):
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for parse in (parse_yaml, parse_json):
        try:
            parse(text, "fuzz", "a fuzzed file")
        except FileError as error:
            assert "\n" not in str(error)


@FUZZ
@given(st.dictionaries(st.sampled_from(["cfg", "nodes", "edges", "x"]),
                       st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=5),
                                 st.dictionaries(st.sampled_from(
                                     ["n_layers", "n_heads", "parallel_attn_mlp", "d_model",
                                      "input->logits", "input->a0.h0<q>"]),
                                     st.one_of(st.integers(-2, 400), st.booleans(),
                                               st.dictionaries(st.sampled_from(
                                                   ["score", "in_graph"]),
                                                   st.one_of(st.booleans(), st.floats(),
                                                             st.text(max_size=2))))),
                                 ), max_size=4))
def test_any_mib_dictionary_gives_a_circuit_or_one_error(data):
    from acdc.core.circuit import Circuit
    from acdc.errors import AcdcError

    start = time.perf_counter()
    try:
        Circuit.from_json({**data, "cfg": data.get("cfg"), "nodes": {}, "edges": data.get("edges")}
                          if "cfg" in data else data, "fuzz.json")
    except AcdcError as error:
        assert "\n" not in str(error)
    assert time.perf_counter() - start < SECONDS


def test_edge_list_errors_show_at_most_a_few_names(tmp_path):
    from acdc.evaluation.edge_list import read_edge_list

    graph = build_graph(GraphShape(1, 1, True))
    path = tmp_path / "edges.txt"
    path.write_text("nope\n" * 100_000)
    with pytest.raises(Exception, match="100000 name"):
        read_edge_list(path, graph)


@pytest.mark.parametrize("command", ["evaluate", "export", "render"])
def test_an_interrupted_write_keeps_the_old_file(run_copy, monkeypatch, command):
    args, written = {"evaluate": (["evaluate", run_copy, "--quiet"], "evaluation.json"),
                     "export": (["export", run_copy, "-f", "csv"], "circuit.csv"),
                     "render": (["render", run_copy / "circuit.json", "-f", "dot"],
                                "circuit.dot")}[command]
    assert invoke(*args).exit_code == 0
    before = (run_copy / written).read_bytes()

    def interrupted(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", interrupted)
    result = invoke(*args)
    assert result.exit_code != 0
    assert (run_copy / written).read_bytes() == before
    assert not [p for p in run_copy.iterdir() if p.name.endswith(".tmp")]
