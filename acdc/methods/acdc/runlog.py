"""The decision log of a run, `decisions.jsonl`: what makes a long run resumable.

ACDC decides edges one at a time, in an order fixed by the graph and the settings, and each
decision depends only on the decisions before it. So a run is fully described by its settings
and its decisions in order: replaying them (`run_acdc(..., replay=decisions)`) rebuilds the
circuit at that point, and the search goes on exactly as if it had never stopped.

The log is JSON Lines, appended to and flushed after every decision, so a crash loses at most
the edge in flight:

- line 1, the header: `{"format": "circuit-log/1", ...}` with the run's recorded settings
  (`acdc.run.RunSettings.record`: task name and file, model, method, threshold, metric,
  ablation, granularity, abs, reverse head order, seed, device, dtype), the graph's edge count
  `n_edges` and `task_sha256`, a digest of the tokenised task (so a task file edited since is
  noticed; at positions it covers the tokens' position groups too);
- then one line per decided edge, in the order decided: `{"edge": "a1.h0->logits", "kept":
  false, "score": 0.0003, "metric": 0.012}` (`score` is null for an edge removed untested
  because its node was dead; `metric` is the circuit's metric after the decision).

A last line cut short by a crash is dropped on reading (with a warning the caller shows) and
cut off the file before appending; a damaged line anywhere else is an error naming the line.

>>> import io
>>> out = io.StringIO()
>>> write_decision(out, Decision("m1->logits", kept=True, score=0.25, metric=0.5))
>>> out.getvalue()
'{"edge": "m1->logits", "kept": true, "score": 0.25, "metric": 0.5}\\n'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from acdc.core.files import disk_error, write_text_atomic
from acdc.errors import AcdcError


@dataclass(frozen=True)
class Decision:
    """One edge decided: removed or kept, the metric change if it was tested (None when it was
    removed untested, its node being dead) and the circuit's metric afterwards. A run's
    decisions, in order, are enough to resume it (`run_acdc(..., replay=...)`)."""

    edge: str
    kept: bool
    score: float | None
    metric: float


LOG_FORMAT = "circuit-log/1"
LOG_NAME = "decisions.jsonl"
HEADER_KEYS: tuple[str, ...] = ("n_edges", "task_sha256")  # besides the run's settings


class RunLogError(AcdcError):
    """A run log is missing, unreadable or damaged, or does not fit the run resuming it."""


@dataclass(frozen=True)
class LoggedRun:
    """A log as read back: its header, its complete decisions, and what was dropped."""

    path: Path
    header: dict[str, Any]
    decisions: list[Decision]
    dropped: str | None  # why an incomplete last line was dropped; None when none was
    good_bytes: int  # length of the file up to the end of the last complete line

    @property
    def n_edges(self) -> int:
        return int(self.header["n_edges"])

    @property
    def n_decided(self) -> int:
        return len(self.decisions)

    @property
    def finished(self) -> bool:
        return len(self.decisions) >= self.n_edges


def task_digest(task, positions_sha256: str | None = None) -> str:
    """SHA-256 of a resolved task's token ids, metric positions and answers (and, for a run
    at positions, of its tokens' position groups: `positions_sha256`)."""
    data = [task.clean, task.corrupt, task.positions, task.answers, task.wrong_answers]
    if positions_sha256 is not None:
        data.append(positions_sha256)
    return hashlib.sha256(json.dumps(data, separators=(",", ":")).encode()).hexdigest()


def make_header(record: Mapping[str, Any], n_edges: int, task_sha256: str) -> dict[str, Any]:
    """The header line of a new log: the run's recorded settings, the graph's edge count and
    the task's digest."""
    return {"format": LOG_FORMAT, **record, "n_edges": int(n_edges), "task_sha256": task_sha256}


def write_decision(stream: IO[str], decision: Decision) -> None:
    line = {"edge": decision.edge, "kept": bool(decision.kept),
            "score": None if decision.score is None else float(decision.score),
            "metric": float(decision.metric)}
    stream.write(json.dumps(line) + "\n")


class RunLog:
    """A log open for appending: `append` writes and flushes one decision."""

    def __init__(self, path: Path, stream: IO[str]):
        self.path, self.stream = path, stream

    @classmethod
    def create(cls, directory: Path, header: dict[str, Any]) -> RunLog:
        """Start a new log in `directory` (replacing any there) with `header`. The header is
        written atomically: on a full disk no empty or truncated log is left behind."""
        path = Path(directory) / LOG_NAME
        write_text_atomic(path, json.dumps(header) + "\n")
        return cls(path, _open(path, "a"))

    @classmethod
    def reopen(cls, logged: LoggedRun) -> RunLog:
        """Append to a log read with `read_log`, first cutting off a dropped last line."""
        stream = _open(logged.path, "r+")
        log = cls(logged.path, stream)
        try:
            stream.seek(logged.good_bytes)
            stream.truncate()
        except OSError as error:
            raise disk_error(logged.path, error) from None
        if logged.good_bytes and not _ends_with_newline(logged.path, logged.good_bytes):
            log._write("\n")
        return log

    def append(self, decision: Decision) -> None:
        try:
            write_decision(self.stream, decision)
            self.stream.flush()
        except OSError as error:
            raise disk_error(self.path, error, "cannot append to the run log") from None

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as error:
            raise disk_error(self.path, error) from None

    def close(self) -> None:
        """Close the log; a failure to flush (a full disk) was already reported by `append`."""
        with contextlib.suppress(OSError):
            self.stream.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open(path: Path, mode: str) -> IO[str]:
    try:
        return open(path, mode, encoding="utf-8", newline="\n")
    except OSError as error:
        raise disk_error(path, error, "cannot write the run log") from None


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as stream:
        stream.seek(size - 1)
        return stream.read(1) == b"\n"


def read_log(directory: str | Path) -> LoggedRun:
    """Read `directory/decisions.jsonl`: the header and every complete decision.

    Raises `RunLogError` when the directory or log is missing or unreadable, the header is not
    a `circuit-log/1` header, or a line other than the last is damaged.
    """
    directory = Path(directory)
    path = directory / LOG_NAME
    if not directory.is_dir():
        raise RunLogError(f"{directory}: no such run directory")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunLogError(f"{directory}: has no {LOG_NAME}, so there is no run to resume (it is "
                          f"written by `circuit discover`)") from None
    except OSError as error:
        raise RunLogError(f"{path}: cannot read ({error.strerror or error})") from None
    # Every complete line ends with "\n"; `tail` is what follows the last one: empty, or a
    # line cut short (or complete but for its newline).
    *complete, tail = raw.split(b"\n")
    if not complete:  # the header line alone, without its newline
        complete, tail = [tail], b""
        good_bytes = len(complete[0])
    else:
        good_bytes = len(complete[0]) + 1
    header = _header(path, complete[0])
    decisions: list[Decision] = []
    dropped: str | None = None
    lines = [(line, True) for line in complete[1:]] + ([(tail, False)] if tail else [])
    for number, (line, terminated) in enumerate(lines, start=2):
        try:
            decisions.append(_decision(line))
        except ValueError as error:
            if number == len(lines) + 1:
                dropped = (f"{path} line {number} is incomplete or damaged ({error}); dropped it, "
                           f"so that edge is tested again")
                break
            raise RunLogError(f"{path} line {number}: {error}; the log is damaged before its "
                              f"last line, so the run cannot be resumed") from None
        good_bytes += len(line) + terminated
    if len(decisions) > header["n_edges"]:
        raise RunLogError(f"{path}: has {len(decisions)} decisions but its graph has "
                          f"{header['n_edges']} edges")
    return LoggedRun(path, header, decisions, dropped, good_bytes)


def _header(path: Path, line: bytes) -> dict[str, Any]:
    def bad(why: str) -> RunLogError:
        return RunLogError(f"{path} line 1: {why}; expected a {LOG_FORMAT} header written by "
                           f"`circuit discover`")

    try:
        header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not a JSON header line") from None
    if not isinstance(header, dict) or header.get("format") != LOG_FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise bad(f"format is {found!r}")
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise bad(f"missing key(s) {', '.join(missing)}")
    if not isinstance(header["n_edges"], int) or header["n_edges"] < 0:
        raise bad(f"n_edges is {header['n_edges']!r}")
    return header


def _decision(line: bytes) -> Decision:
    """One decision line; ValueError saying what is wrong with it."""
    try:
        data = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error.msg}") from None
    if not isinstance(data, dict) or set(data) != {"edge", "kept", "score", "metric"}:
        raise ValueError("expected an object with keys edge, kept, score, metric")
    edge, kept, score, metric = data["edge"], data["kept"], data["score"], data["metric"]
    if not isinstance(edge, str) or not edge:
        raise ValueError(f"edge is {edge!r}")
    if not isinstance(kept, bool):
        raise ValueError(f"kept is {kept!r}, not true or false")
    if score is not None and not _is_number(score):
        raise ValueError(f"score is {score!r}, not a number or null")
    if not _is_number(metric):
        raise ValueError(f"metric is {metric!r}, not a number")
    return Decision(edge, kept, None if score is None else float(score), float(metric))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class DecisionLog:
    """ACDC's journal (`acdc.methods.base.Journal`): `decisions.jsonl` in the run directory."""

    file_name = LOG_NAME

    def read(self, out_dir: Path) -> LoggedRun:
        return read_log(out_dir)

    def check_new_run(self, out_dir: Path) -> None:
        """Do not start a new run over the log of an unfinished one."""
        if not (out_dir / LOG_NAME).is_file():
            return
        try:
            logged = read_log(out_dir)
        except RunLogError:
            return  # nothing that could be resumed
        if not logged.finished:
            raise AcdcError(
                f"--out {out_dir}: holds an unfinished run ({logged.n_decided} of "
                f"{logged.n_edges} edges decided); resume it with `circuit discover --resume "
                f"{shlex.quote(str(out_dir))}`, or choose another --out")


def check_resumable(logged: LoggedRun, n_edges: int, digest: str) -> None:
    """The model and task, re-resolved, must be those the log was written with."""
    header = logged.header
    task = header.get("task_file") or header.get("task")
    if header["n_edges"] != n_edges:
        raise RunLogError(
            f"cannot resume: {logged.path} was written for a graph of {header['n_edges']} edges, "
            f"model {header.get('model')} now gives {n_edges} at {header.get('granularity')} "
            f"granularity (the model changed since the run started)")
    if header["task_sha256"] != digest:
        raise RunLogError(
            f"cannot resume: the task {task} no longer gives the prompts the run in "
            f"{logged.path.parent} started with (it was edited, or the model's tokenizer "
            f"changed); restore it, or start a new run")
