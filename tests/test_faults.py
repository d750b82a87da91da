"""Faults a run must survive: a signal at a random point, a full disk, a second command on a
run directory that a live run holds.

The signal tests run `circuit discover` as a real subprocess on a tiny model with enough edges
(6,829, of which about 1,900 are tested) for the search to last a second or two, and send SIGTERM or
SIGINT once a random number of its decisions are logged (at most a third of them, so that the
signal always lands inside the search, however fast the machine). The log, the partial circuit.json
and the message must then describe the same decisions, and `--resume` must complete the run to
the circuit of an uninterrupted one. The full-disk tests use a small tmpfs where the test can
mount one (as root), else they simulate ENOSPC in the writes; they cover a sweep's outputs too
(sweep.json, the evaluations), as does an interrupt in the middle of writing sweep.json.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import randomize
from test_cli import PROMPTS, TINY_CONFIG, error_line, invoke, write_task
from test_resume import assert_same_circuit, edges, log_lines

import acdc.core.files
from acdc.core.models import build_model, save_checkpoint
from acdc.methods.acdc import runlog

# The slow hooked references and tiny random models need TransformerLens 3.x (see conftest).
pytestmark = pytest.mark.hooked_transformer

ROOT = Path(__file__).resolve().parent.parent
# 8 layers of 8 heads and MLPs, 6,829 edges, with conftest's larger random weights; at this
# threshold (far above the metric's float32 noise, so a resumed run decides every edge as an
# uninterrupted one) about 1,900 edges are tested, for 1-2 s.
FAULT_CONFIG = {"n_layers": 8, "d_model": 32, "n_heads": 8, "d_head": 4, "d_mlp": 64,
                "act_fn": "gelu", "normalization_type": "LN", "d_vocab": 20, "n_ctx": 12}
FAULT_THRESHOLD = 0.001
STARTUP_TIMEOUT_S = 120  # a loaded 2-core machine takes tens of seconds to import torch


@pytest.fixture(scope="module")
def fault_task(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("faults")
    model = build_model(FAULT_CONFIG, seed=0)
    randomize(model, seed=0)
    save_checkpoint(model, directory / "model", config=FAULT_CONFIG)
    path = directory / "task.yaml"
    path.write_text(yaml.safe_dump({"name": "faults", "threshold": FAULT_THRESHOLD,
                                    "model": str(directory / "model"), "prompts": PROMPTS}))
    return path


@pytest.fixture(scope="module")
def fault_reference(fault_task, tmp_path_factory) -> Path:
    """An uninterrupted run of the fault task (in-process)."""
    out = tmp_path_factory.mktemp("faults-reference") / "run"
    result = invoke("discover", "--task", fault_task, "--out", out, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    return out


def start_discover(task: Path, out: Path) -> subprocess.Popen:
    """`circuit discover` as its own process, as a user (or a batch scheduler) starts it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", "import cli; cli.main()", "discover", "--task", str(task), "--out",
         str(out), "--no-render", "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_decisions(process: subprocess.Popen, out: Path, n: int = 1) -> None:
    """Until the run's log holds `n` decisions (its search has started)."""
    log = out / runlog.LOG_NAME
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before its search: {process.communicate()}")
        with contextlib.suppress(FileNotFoundError):
            if log.read_text().count("\n") > n:  # the header, then one line per decision
                return
        time.sleep(0.01)
    process.kill()
    raise AssertionError("the run did not start its search in time")


# --------------------------------------------------------------------------- signals


@dataclass
class Interrupted:
    """A real run stopped by a signal at a random moment, as the fixture left it."""

    out: Path
    after: int  # decisions logged when the signal was sent
    returncode: int
    stderr: str
    refusals: list[Any] = field(default_factory=list)  # commands run while it was paused

    def why(self) -> str:
        return f"signal after {self.after} logged decisions; stderr: {self.stderr}"


@pytest.fixture(scope="module")
def interrupted(fault_task, fault_reference, tmp_path_factory
                ) -> dict[signal.Signals, Interrupted]:
    """Two `circuit discover` processes, run side by side: one is paused (SIGSTOP) after its
    first decision, while a resume and a new run on its directory are tried, then continued
    (SIGCONT) and sent SIGTERM once a random number of decisions are logged; the other is sent
    SIGINT likewise."""
    root = tmp_path_factory.mktemp("signals")
    rng = random.Random()  # random points; each is in the failure messages, to replay it
    n_decisions = len(log_lines(fault_reference)) - 1
    delays = {sig: rng.randint(2, n_decisions // 3) for sig in (signal.SIGTERM, signal.SIGINT)}
    outs = {sig: root / sig.name for sig in delays}
    processes = {sig: start_discover(fault_task, outs[sig]) for sig in delays}
    refusals: list[Any] = []

    def interrupt(sig: signal.Signals) -> None:
        process, out = processes[sig], outs[sig]
        wait_for_decisions(process, out)
        if sig == signal.SIGTERM:
            process.send_signal(signal.SIGSTOP)  # paused, as by Ctrl-Z: alive, holding the lock
            try:
                before = (out / runlog.LOG_NAME).read_text()
                for args in (("--resume", out), ("--task", fault_task, "--out", out)):
                    refusals.append(invoke("discover", *args, "--quiet", "--no-render"))
                refusals.append((out / runlog.LOG_NAME).read_text() == before)
            finally:
                process.send_signal(signal.SIGCONT)
        wait_for_decisions(process, out, delays[sig])
        process.send_signal(sig)

    with ThreadPoolExecutor(1) as pool:  # SIGINT's run aside; the CLI runs in the main thread
        other = pool.submit(interrupt, signal.SIGINT)
        interrupt(signal.SIGTERM)
        other.result()
    runs = {}
    for sig, process in processes.items():
        _, stderr = process.communicate(timeout=STARTUP_TIMEOUT_S)
        runs[sig] = Interrupted(outs[sig], delays[sig], process.returncode, stderr)
    runs[signal.SIGTERM].refusals = refusals
    return runs


@pytest.mark.slow
def test_a_second_command_is_refused_while_a_live_run_holds_the_directory(interrupted):
    run = interrupted[signal.SIGTERM]
    *results, log_unchanged = run.refusals
    for result in results:  # a resume, then a new run with the same --out
        assert result.exit_code == 1, result.output
        message = error_line(result)
        assert message == (f"error: {run.out}: another circuit command is running a search in "
                           f"this directory right now; wait for it to finish (or stop it), "
                           f"or choose another --out"), message
        assert "--resume" not in message  # no hint to resume a run that is alive
    assert log_unchanged and len(results) == 2


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_at_a_random_point_leaves_the_log_and_the_outputs_in_agreement(
        interrupted, fault_reference, sig):
    run = interrupted[sig]
    assert run.returncode == 128 + sig, run.why()
    name = "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted"
    *_, last = run.stderr.strip().splitlines()
    header, *decisions = log_lines(run.out)
    decided, total = len(decisions), len(edges(fault_reference))
    assert 0 < decided < total, run.why()
    assert last.startswith(f"{name}: {decided} of {total} edges decided; undecided edges are "
                           f"kept"), run.why()
    assert last.endswith(f"resume with `circuit discover --resume {run.out}`"), run.why()
    partial = json.loads((run.out / "circuit.json").read_text())
    assert partial["partial"] is True and partial["n_edges_decided"] == decided, run.why()
    logged = {d["edge"]: (d["kept"], d["score"]) for d in decisions}
    for edge in partial["edges"]:
        expected = logged.get(edge["name"], (True, None))  # undecided edges are kept
        assert (edge["kept"], edge["score"]) == expected, (edge, run.why())


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_resume_after_a_signal_gives_the_uninterrupted_circuit(interrupted, fault_reference,
                                                               sig):
    run = interrupted[sig]
    decided = len(log_lines(run.out)) - 1
    result = invoke("discover", "--resume", run.out, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    assert_same_circuit(run.out, fault_reference, replayed=decided)
    assert json.loads((run.out / "circuit.json").read_text())["partial"] is False


# --------------------------------------------------------------------------- a full disk


def _can_mount_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)],
                          capture_output=True)
    return done.returncode == 0


class Disk:
    """A directory whose disk can be filled and freed: a real 4 MiB tmpfs where one can be
    mounted, else ordinary storage where writes fail with ENOSPC once `fill` is called (the
    output writes of `acdc.core.files` write half their text first, as a real full disk lets
    them)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, real: bool) -> None:
        self.root, self.monkeypatch, self.real = root, monkeypatch, real
        self.ballast = root / "ballast"

    def fill(self, leave: int = 0) -> None:
        """Use the disk up, but for about `leave` bytes."""
        if self.real:
            with open(self.ballast, "ab", buffering=0) as stream:
                with contextlib.suppress(OSError):
                    while stream.write(b"\0" * 4096):
                        pass
            if leave:
                size = self.ballast.stat().st_size
                os.truncate(self.ballast, max(0, size - leave))
            return
        room = [leave]  # bytes left, shared by every write
        self.monkeypatch.setattr(acdc.core.files, "open", _full_open(room), raising=False)
        self.monkeypatch.setattr(runlog, "write_decision", _full_decision(room))

    def free(self) -> None:
        if self.real:
            self.ballast.unlink(missing_ok=True)
        else:
            self.monkeypatch.undo()

    def close(self) -> None:
        if self.real:
            subprocess.run(["umount", str(self.root)], check=False)


def _enospc(path: str = "") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _full_open(room: list[int]):
    class HalfWritten:
        """A stream on a disk with `room[0]` bytes left: what does not fit is cut off at
        the room left (at most half the text), then ENOSPC."""

        def __init__(self, stream) -> None:
            self.stream = stream

        def write(self, text: str) -> int:
            if len(text) <= room[0]:
                room[0] -= len(text)
                return self.stream.write(text)
            cut = min(len(text) // 2, room[0])
            self.stream.write(text[:cut])
            self.stream.flush()
            room[0] -= cut
            raise _enospc(self.stream.name)

        def __getattr__(self, name: str):
            return getattr(self.stream, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.stream.close()

    def full_open(file, mode="r", *args, **kwargs):
        stream = open(file, mode, *args, **kwargs)
        return HalfWritten(stream) if "w" in mode or "a" in mode else stream

    return full_open


def _full_decision(room: list[int]):
    write = runlog.write_decision

    def full_write(stream, decision) -> None:
        buffer = io.StringIO()
        write(buffer, decision)
        line = buffer.getvalue()
        if room[0] < len(line):  # the line that does not fit: half of it, then ENOSPC
            stream.write(line[: len(line) // 2])
            stream.flush()
            raise _enospc(getattr(stream, "name", ""))
        room[0] -= len(line)
        stream.write(line)

    return full_write


@pytest.fixture(params=["tmpfs", "simulated"])
def disk(request, tmp_path, monkeypatch) -> Iterator[Disk]:
    """Both kinds of full disk where a tmpfs can be mounted, the simulated one elsewhere."""
    root = tmp_path / "disk"
    root.mkdir()
    real = request.param == "tmpfs"
    if real and not _can_mount_tmpfs(root):
        pytest.skip("mounting a tmpfs needs root (the simulated full disk runs instead)")
    disk = Disk(root, monkeypatch, real)
    try:
        yield disk
    finally:
        disk.close()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_full_disk_when_outputs_are_written_gives_one_line_and_keeps_the_old_files(
        disk, fault_task, fault_reference):
    out = disk.root / "run"
    shutil.copytree(fault_reference, out)  # a finished run, its outputs in place
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    disk.fill()
    result = invoke("discover", "--resume", out, "--quiet", "--no-render")  # rewrites outputs
    assert result.exit_code == 1, result.output
    message = error_line(result)
    assert message.startswith(f"error: {out / 'circuit.json'}: cannot write (no space left on "
                              f"the device; free some space"), message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files, whole
    assert _leftovers(out) == []
    disk.free()
    result = invoke("discover", "--resume", out, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    assert_same_circuit(out, fault_reference, replayed=len(log_lines(out)) - 1)


def test_a_full_disk_at_the_start_leaves_no_log(disk, fault_task):
    out = disk.root / "run"
    disk.fill()
    result = invoke("discover", "--task", fault_task, "--out", out, "--quiet", "--no-render")
    assert result.exit_code == 1, result.output
    message = error_line(result)
    assert message.startswith(f"error: {out / runlog.LOG_NAME}: cannot write (no space left on "
                              f"the device"), message
    assert not out.exists()  # no truncated log to trip a later run, no empty directory


def test_a_full_disk_during_the_search_loses_no_decision(disk, fault_task, fault_reference):
    out = disk.root / "run"
    disk.fill(leave=8192)  # room for the log's header and some decisions, not all
    result = invoke("discover", "--task", fault_task, "--out", out, "--quiet", "--no-render")
    assert result.exit_code == 1, result.output
    message = error_line(result)
    assert message.startswith(f"error: {out / runlog.LOG_NAME}: cannot append to the run log "
                              f"(no space left on the device"), message
    assert not (out / "circuit.json").exists() and _leftovers(out) == []
    disk.free()
    result = invoke("discover", "--resume", out, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "is incomplete" in warnings[0]  # the half-written last line
    assert not result.stderr.replace(warnings[0], "").strip()
    assert_same_circuit(out, fault_reference)


# --------------------------------------------------------------------------- a sweep's outputs


@pytest.fixture(scope="module")
def sweep_task(tmp_path_factory) -> Path:
    """The CLI tests' tiny checkpoint and a task of it: a sweep of two thresholds in a second."""
    directory = tmp_path_factory.mktemp("sweep-faults")
    save_checkpoint(build_model(TINY_CONFIG, seed=0), directory / "model", config=TINY_CONFIG)
    return write_task(directory / "tiny.yaml", model=str(directory / "model"))


SWEEP_GRID = "0.001,0.01"


@pytest.fixture(scope="module")
def finished_sweep(sweep_task, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep-finished") / "sweep"
    result = invoke("sweep", "--task", sweep_task, "--thresholds", SWEEP_GRID, "--out", out,
                    "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _all_leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp"))


def test_a_full_disk_when_a_sweep_writes_gives_one_line_and_keeps_the_old_files(
        disk, finished_sweep):
    out = disk.root / "sweep"
    shutil.copytree(finished_sweep, out)
    (out / "tau-0.01" / "evaluation.json").unlink()  # the resume evaluates and rewrites
    before = _files(out)
    disk.fill()
    result = invoke("sweep", "--resume", out, "--quiet", "--no-render")
    assert result.exit_code == 1, result.output
    message = error_line(result)
    assert message.startswith(f"error: threshold 0.01: {out / 'tau-0.01' / 'evaluation.json'}: "
                              f"cannot write (no space left on the device"), message
    assert _files(out) == before and _all_leftovers(out) == []
    disk.free()
    result = invoke("sweep", "--resume", out, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "sweep.json").read_text())["finished"] is True
    assert (out / "tau-0.01" / "evaluation.json").is_file()


def test_a_full_disk_when_a_sweep_starts_leaves_nothing(disk, sweep_task):
    out = disk.root / "sweep"
    disk.fill()
    result = invoke("sweep", "--task", sweep_task, "--thresholds", SWEEP_GRID, "--out", out,
                    "--quiet", "--no-render")
    assert result.exit_code == 1, result.output
    message = error_line(result)
    assert "no space left on the device" in message, message
    assert not out.exists() and _all_leftovers(disk.root) == []


def test_a_sweep_interrupted_while_it_writes_sweep_json_keeps_the_whole_old_file(
        finished_sweep, tmp_path, monkeypatch):
    """Ctrl-C in the middle of writing sweep.json (half of the text out): the old file stays
    whole, no temporary file is left, and the resume finishes the sweep."""
    out = tmp_path / "sweep"
    shutil.copytree(finished_sweep, out)
    shutil.rmtree(out / "tau-0.01")  # as a sweep stopped before its second threshold left it
    data = json.loads((out / "sweep.json").read_text())
    data.update(finished=False, rank_scores=None)
    data["runs"][1] = {"threshold": 0.01, "dir": "tau-0.01", "status": "unfinished"}
    (out / "sweep.json").write_text(json.dumps(data, indent=1) + "\n")
    old = (out / "sweep.json").read_bytes()

    class Interrupted:
        def __init__(self, stream) -> None:
            self.stream = stream

        def write(self, text: str) -> int:
            self.stream.write(text[: len(text) // 2])
            self.stream.flush()
            raise KeyboardInterrupt

        def __getattr__(self, name: str):
            return getattr(self.stream, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.stream.close()

    def interrupting_open(file, mode="r", *args, **kwargs):
        stream = open(file, mode, *args, **kwargs)
        return Interrupted(stream) if "w" in mode and ".sweep.json." in str(file) else stream

    monkeypatch.setattr(acdc.core.files, "open", interrupting_open, raising=False)
    result = invoke("sweep", "--resume", out, "--quiet", "--no-render")
    monkeypatch.undo()
    assert result.exit_code == 130, result.output
    assert "resume with `circuit sweep --resume" in result.stderr
    assert (out / "sweep.json").read_bytes() == old and _all_leftovers(out) == []
    assert (out / "tau-0.01" / "evaluation.json").is_file()  # the threshold's files are whole
    result = invoke("sweep", "--resume", out, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "sweep.json").read_text())["finished"] is True
