"""A sweep's settings, its directory and what is left to do in it.

`prepare_sweep` resolves the settings every run of the sweep shares (those of `circuit
discover` but the threshold), the grid and the directory; `prepare_resume` reads them back from
the directory's `sweep.json`, every value checked (its grid by the rules of `--thresholds`).
Neither writes anything: every mistake in the input is reported before a file or a directory is
made. `open_sweep` then creates and locks the directory, writes `sweep.json` for a new sweep and
plans every threshold:

- `tau-<t>/circuit.json` complete (not partial) and `evaluation.json` beside it: done, not rerun;
- a complete circuit without its evaluation: only evaluated;
- a decision log (`decisions.jsonl`), finished or not: resumed from it (a finished log just
  rewrites the outputs), after checking that its settings are the sweep's;
- nothing yet: a new run (its directory is made by the worker that runs it).

Starting a sweep in a directory that holds one (a second `circuit sweep` with the same `--out`)
continues it when the settings agree; a sweep of another task there is refused, naming both
tasks, and any other difference is a `SweepConflict` naming the options. Without `--out` a new
directory `runs/<task>-sweep-<time>/` is made, never one that exists (a sweep started in the same
second gets `-2`, `-3`, ...). A sweep never writes through a symbolic link, over a device or into
a run directory, and `SweepPlan.discard` takes back what a failed sweep made.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from acdc.core.circuit import load_circuit
from acdc.core.files import (
    MAX_GRAPH_FILE_BYTES,
    check_output_dir,
    make_directories,
    read_json,
    read_yaml,
    remove_if_empty,
    unique_directory,
    write_json_atomic,
)
from acdc.core.generators.params import MAX_SEED
from acdc.core.settings import ABLATIONS, METRICS, recorded_fields
from acdc.core.tasks.reading import read_task
from acdc.core.tasks.spec import TaskSpec
from acdc.errors import AcdcError, short_repr
from acdc.evaluation.evaluate import EVALUATION_JSON
from acdc.methods.registry import get_method
from acdc.run import (
    CIRCUIT_JSON,
    DTYPES,
    RUN_YAML,
    UNLESS_DEFAULT_VALUES,
    RunLock,
    RunSettings,
    resolve_settings,
    same_path,
)
from acdc.sweeps.grid import (
    RUN_PREFIX,
    Grid,
    default_grid,
    parse_grid,
    recorded_grid,
    run_dir_name,
)

SWEEP_JSON = "sweep.json"
PLOT_FILES: tuple[str, ...] = ("sweep.svg", "sweep.png")
FORMAT = "circuit-sweep/1"
SWEEP_METHOD = "acdc"  # a sweep varies ACDC's threshold
Action = Literal["new", "resume", "evaluate"]
# Settings a run records that must agree between the runs of a sweep and the sweep (all but
# the threshold); checked against circuit files and decision logs found in the directory.
CIRCUIT_KEYS: tuple[str, ...] = ("task", "model", "method", "abs", "reverse_head_order",
                                 "metric", "ablation", "granularity", "positions")
MAX_TEXT_CHARS = 4096  # a task name, a path, a model name in sweep.json
DEVICE = re.compile(r"[a-z][a-z_]{0,15}(:[0-9]{1,4})?")  # cpu, cuda, cuda:1, mps ...
DEFAULT_ROOT = Path("runs")
DAMAGED = "the file is damaged: start a new sweep with --out"


class SweepConflict(AcdcError):
    """Options given for a sweep contradict the sweep already in its directory."""


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep runs: `run` holds the settings every run shares (its threshold is the
    grid's first), `grid` the thresholds."""

    run: RunSettings
    spec: TaskSpec
    grid: Grid

    def at(self, threshold: float) -> tuple[RunSettings, TaskSpec]:
        """The settings and task of the run at `threshold`."""
        own = replace(self.run.settings, threshold=threshold)
        return replace(self.run, settings=own), self.spec.with_overrides(threshold=threshold)

    def record(self) -> dict[str, Any]:
        """The header of sweep.json: every run's settings but the threshold, then the grid."""
        record = {key: value for key, value in self.run.record().items() if key != "threshold"}
        return {"format": FORMAT, **record, "grid": self.grid.spec,
                "grid_source": self.grid.source, "thresholds": list(self.grid.thresholds)}


@dataclass(frozen=True)
class ThresholdJob:
    """One threshold to run (or only evaluate), as a worker anywhere receives it.
    `payload` holds the run directory's files that a worker without the directory needs
    (a Ray worker on another machine: the decision log to resume, or the circuit)."""

    threshold: float
    out_dir: Path
    settings: RunSettings
    spec: TaskSpec
    action: Action
    command: tuple[str, ...] | None = None
    typed: Mapping[str, str | None] | None = None
    payload: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepRequest:
    """A sweep checked and ready to open; nothing of it is written yet. `out_dir` None: a new
    directory `runs/<task>-sweep-<time>/`, made when the sweep opens."""

    settings: SweepSettings
    out_dir: Path | None
    typed: Mapping[str, str | None] | None
    command: tuple[str, ...] | None
    given_grid: bool
    resuming: bool

    def left(self) -> int:
        """The thresholds without both a circuit and its evaluation yet (what `open_sweep`
        will plan, but for a partial circuit: a quick count, for choosing workers)."""
        if self.out_dir is None:
            return len(self.settings.grid.thresholds)
        return sum(not ((directory / CIRCUIT_JSON).is_file()
                        and (directory / EVALUATION_JSON).is_file())
                   for directory in (self.out_dir / run_dir_name(t)
                                     for t in self.settings.grid.thresholds))


@dataclass
class SweepPlan:
    """A sweep ready to run: its settings, directory (locked), the thresholds already done and
    the jobs left. `made` are the directories opening it created, `created` whether it wrote
    sweep.json (a new sweep)."""

    settings: SweepSettings
    out_dir: Path
    lock: RunLock
    jobs: list[ThresholdJob]
    done: list[float]
    resumed: bool
    command: tuple[str, ...] | None = None
    made: tuple[Path, ...] = ()
    created: bool = False
    run_dirs_before: frozenset[str] = frozenset()
    discarded: bool = False  # a failure took back everything this sweep had made

    def close(self) -> None:
        """Release the sweep's directory (also released when the process ends)."""
        self.lock.release()

    def discard(self) -> bool:
        """After a failure or an interrupt: remove the threshold directories this invocation
        made that are still empty and, when nothing of a new sweep is left (no threshold has a
        file), its sweep.json and the directories it made. True when nothing is left."""
        kept = False
        for threshold in self.settings.grid.thresholds:
            name = run_dir_name(threshold)
            directory = self.out_dir / name
            if name not in self.run_dirs_before:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only if empty
            kept = kept or directory.is_dir()
        if kept or not self.created:
            return False
        for name in (SWEEP_JSON, *PLOT_FILES):
            with contextlib.suppress(FileNotFoundError):
                (self.out_dir / name).unlink()
        remove_if_empty(list(self.made))
        return True


# --------------------------------------------------------------------------- preparing


def prepare_sweep(task: str, *, thresholds: str | None = None, model: str | None = None,
                  metric: str | None = None, ablation: str | None = None,
                  granularity: str = "qkv", positions: str = "none", abs: bool = False,
                  reverse_head_order: bool = False, seed: int | None = None, device: str = "cpu",
                  dtype: str = "float32", candidates: int = 0, out: Path | None = None,
                  command: tuple[str, ...] | None = None) -> SweepRequest:
    """A sweep of `task` (a bundled name or a YAML file) over `thresholds` (a grid spec, see
    `acdc.sweeps.grid`; None: the paper's grid for the task, else the default), with the
    options of `circuit discover`, checked against the sweep already in `out` if there is one
    (it is continued when the settings agree). Nothing is written."""
    options: dict[str, Any] = {"abs": abs, "reverse_head_order": reverse_head_order}
    if candidates:
        options["candidates"] = candidates
    grid = parse_grid(thresholds) if thresholds is not None else None
    spec, run = resolve_settings(task, model=model, metric=metric, ablation=ablation,
                                 granularity=granularity, positions=positions, seed=seed,
                                 device=device, dtype=dtype,
                                 threshold=grid.thresholds[0] if grid else None, **options)
    if grid is None:
        grid = default_grid(spec.name, run.common.metric, run.settings.threshold)
        spec, run = spec.with_overrides(threshold=grid.thresholds[0]), replace(
            run, settings=replace(run.settings, threshold=grid.thresholds[0]))
    settings = SweepSettings(run, spec, grid)
    given_grid = thresholds is not None
    if out is not None:
        check_directory(Path(out), settings, given_grid, resuming=False)
    return SweepRequest(settings, None if out is None else Path(out),
                        typed={"task": task, "model": model}, command=command,
                        given_grid=given_grid, resuming=False)


def prepare_resume(out_dir: Path, given: Mapping[str, Any] | None = None, candidates: int = 0,
                   command: tuple[str, ...] | None = None) -> SweepRequest:
    """The sweep in `out_dir`, with the settings of its sweep.json (each value checked).
    `given` holds options given again (recorded keys -> values, `thresholds` a grid spec);
    they must agree with it. Nothing is written."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, "--resume")
    run, grid = read_sweep_settings(out_dir, candidates)
    given = dict(given or {})
    conflicts = _grid_conflict(given.pop("thresholds", None), grid)
    conflicts += run.conflicts(given)
    if conflicts:
        verb = "contradicts" if len(conflicts) == 1 else "contradict"
        raise SweepConflict(f"{'; '.join(conflicts)} {verb} the sweep in {out_dir} "
                            f"({SWEEP_JSON}); leave them out, or start a new sweep with --out")
    spec = read_task(run.task_file).with_overrides(
        metric=run.common.metric, ablation=run.common.ablation, seed=run.seed, model=run.model,
        threshold=grid.thresholds[0])
    settings = SweepSettings(run, spec, grid)
    check_directory(out_dir, settings, given_grid=False, resuming=True)
    return SweepRequest(settings, out_dir, typed=None, command=command, given_grid=False,
                        resuming=True)


def start_sweep(task: str, **options: Any) -> SweepPlan:
    """`prepare_sweep`, then `open_sweep`: a new sweep (or the same sweep continued in `out`),
    its directory made and locked."""
    return open_sweep(prepare_sweep(task, **options))


def resume_sweep(out_dir: Path, given: Mapping[str, Any] | None = None, candidates: int = 0,
                 command: tuple[str, ...] | None = None) -> SweepPlan:
    """`prepare_resume`, then `open_sweep`."""
    return open_sweep(prepare_resume(out_dir, given, candidates, command))


# --------------------------------------------------------------------------- sweep.json


def read_header(out_dir: Path) -> dict[str, Any]:
    """`out_dir/sweep.json` as written by `circuit sweep` (read through the bounded JSON
    reader); one-line errors for anything else. Its values are checked by
    `read_sweep_settings`."""
    path = Path(out_dir) / SWEEP_JSON
    if not Path(out_dir).is_dir():
        raise AcdcError(f"{out_dir}: no such sweep directory")
    if not os.path.lexists(path):
        raise AcdcError(f"{out_dir}: has no {SWEEP_JSON}, so there is no sweep to resume (it is "
                        f"written by `circuit sweep`)")
    if path.is_symlink():
        raise AcdcError(f"{path}: is a symbolic link; a sweep's record is a file it writes "
                        f"itself: start a new sweep with --out")
    data = read_json(path, "a sweep's record, written by `circuit sweep`", MAX_GRAPH_FILE_BYTES)
    if not isinstance(data, dict):
        raise AcdcError(f"{path}: holds {short_repr(data)}, not the mapping `circuit sweep` writes")
    if data.get("format") != FORMAT:
        raise AcdcError(f"{path}: format is {short_repr(data.get('format'))}, expected {FORMAT!r} "
                        f"(written by `circuit sweep`)")
    return data


def read_sweep_settings(out_dir: Path, candidates: int = 0) -> tuple[RunSettings, Grid]:
    """The settings and grid of the sweep in `out_dir`, every value of its sweep.json checked
    (types, ranges, choices; the grid as `--thresholds` is): a damaged file is one line naming
    it and the key."""
    header = read_header(out_dir)
    source = str(Path(out_dir) / SWEEP_JSON)
    _check_header(header, source)
    grid = recorded_grid(header.get("thresholds"), header.get("grid"),
                         header.get("grid_source"), source)
    tuning = {"candidates": candidates} if candidates else None
    run = RunSettings.from_record({**header, "threshold": grid.thresholds[0]}, source, tuning)
    return run, grid


def _check_header(header: Mapping[str, Any], source: str) -> None:
    """Every setting of a sweep.json header checked, so that `RunSettings.from_record` and
    everything after it meet only values a sweep writes."""
    method = header.get("method")
    if method != SWEEP_METHOD:
        raise AcdcError(f"{source}: method is {short_repr(method)}, but a sweep runs "
                        f"{SWEEP_METHOD}; {DAMAGED}")
    kinds: dict[str, Any] = {
        "task": str, "task_file": str, "model": str, "seed": int, "device": str,
        "metric": tuple(METRICS), "ablation": tuple(ABLATIONS), "granularity": ("qkv", "head"),
        "dtype": tuple(DTYPES)}
    for own in recorded_fields(get_method(SWEEP_METHOD).settings_type):
        if own.name != "threshold":
            kinds[own.name] = {"bool": bool, "int": int, "float": float}.get(str(own.type), str)
    for key, kind in kinds.items():
        if key not in header:
            raise AcdcError(f"{source}: has no {key!r}; {DAMAGED}")
        value = header[key]
        if isinstance(kind, tuple):
            if not isinstance(value, str) or value not in kind:
                raise AcdcError(f"{source}: {key} is {short_repr(value)}, not one of "
                                f"{', '.join(kind)}; {DAMAGED}")
            continue
        expected = {bool: "true or false", int: "a whole number", str: "text",
                    float: "a finite number"}[kind]
        wrong = isinstance(value, bool) != (kind is bool) or not isinstance(
            value, (int, float) if kind is float else kind) or (
            kind is float and not math.isfinite(value))
        if wrong or (kind is str and not (0 < len(value) <= MAX_TEXT_CHARS
                                          and "\0" not in value)):
            raise AcdcError(f"{source}: {key} is {short_repr(value)}, expected {expected}; "
                            f"{DAMAGED}")
    if not 0 <= header["seed"] <= MAX_SEED:
        raise AcdcError(f"{source}: seed is {short_repr(header['seed'])}, expected 0 to "
                        f"{MAX_SEED}; {DAMAGED}")
    if not DEVICE.fullmatch(header["device"]):
        raise AcdcError(f"{source}: device is {short_repr(header['device'])}, expected cpu, "
                        f"cuda or cuda:N; {DAMAGED}")


def _grid_conflict(spec: str | None, grid: Grid) -> list[str]:
    if spec is None:
        return []
    given = parse_grid(spec)
    if given.thresholds == grid.thresholds:
        return []
    return [f"--thresholds {spec} (the sweep has {_describe_grid(grid)})"]


def _describe_grid(grid: Grid) -> str:
    values = ", ".join(f"{t:g}" for t in grid.thresholds)
    shown = values if len(grid.thresholds) <= 5 else (
        f"{len(grid.thresholds)} thresholds from {grid.thresholds[0]:g} to "
        f"{grid.thresholds[-1]:g}")
    return shown + (f" ({grid.spec})" if grid.spec else "")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "task"


# --------------------------------------------------------------------------- the directory


def check_directory(out_dir: Path, settings: SweepSettings, given_grid: bool,
                    resuming: bool) -> None:
    """Whether a sweep with `settings` may run in `out_dir` (read only): not a link, a file or a
    run directory; its sweep.json this sweep's (or none, and no threshold directories either);
    the sweep's own outputs (sweep.json, the plots, tau-<t>) not links, devices or of the
    wrong kind."""
    option = "--resume" if resuming else "--out"
    check_output_dir(out_dir, option)
    if not out_dir.is_dir():
        return
    for name in (CIRCUIT_JSON, "decisions.jsonl"):
        if os.path.lexists(out_dir / name):
            raise AcdcError(f"{option} {out_dir}: is a run directory (it has {name}), not a "
                            f"sweep directory; choose another {option}")
    for name in (SWEEP_JSON, *PLOT_FILES):
        _check_entry(out_dir / name, option, directory=False)
    for threshold in settings.grid.thresholds:
        _check_entry(out_dir / run_dir_name(threshold), option, directory=True)
    existing = os.path.lexists(out_dir / SWEEP_JSON)
    if existing and not resuming:
        _check_same_sweep(out_dir, settings, given_grid)
    elif not existing:
        strays = sorted(p.name for p in out_dir.iterdir()
                        if p.is_dir() and p.name.startswith(RUN_PREFIX))
        if strays:
            raise AcdcError(f"{option} {out_dir}: holds {', '.join(strays[:3])} but no "
                            f"{SWEEP_JSON}: not a sweep written by `circuit sweep`; choose "
                            f"another {option}")


def _check_entry(path: Path, option: str, directory: bool) -> None:
    """A sweep's own output `path`: absent, or a real directory (`directory`) or regular file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise AcdcError(f"{option} {path.parent}: cannot read {path.name} "
                        f"({error.strerror or error})") from None
    if stat.S_ISLNK(mode):
        kind = "a symbolic link"
    elif directory and not stat.S_ISDIR(mode):
        kind = "not a directory"
    elif not directory and not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a device, a pipe " \
                                                        "or a socket)"
    else:
        return
    raise AcdcError(f"{option} {path.parent}: {path.name} there is {kind}, where the sweep writes "
                    f"its own {'run directory' if directory else 'file'}; move it away or choose "
                    f"another {option}")


def open_sweep(request: SweepRequest) -> SweepPlan:
    """Make and lock the sweep's directory, write sweep.json for a new sweep (or check the one
    there again), plan every threshold. A failure here removes the directories it made."""
    settings = request.settings
    if request.out_dir is None:  # a new one: a sweep started in the same second gets -2, -3 ...
        out_dir, made = unique_directory(
            DEFAULT_ROOT / f"{_safe(settings.spec.name)}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    else:
        out_dir, made = request.out_dir, make_directories(request.out_dir)
    try:
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise AcdcError(f"--out {out_dir}: cannot write in this directory (permission "
                            f"denied); choose another --out")
        lock = RunLock(out_dir)
        try:
            # again, under the lock: another command may have written here since
            check_directory(out_dir, settings, request.given_grid, request.resuming)
            existing = (out_dir / SWEEP_JSON).is_file()
            before = frozenset(p.name for p in out_dir.iterdir()
                               if p.name.startswith(RUN_PREFIX))
            jobs, done = [], []
            for threshold in settings.grid.thresholds:
                job = _plan(settings, out_dir, threshold, request.typed, request.command)
                if job is None:
                    done.append(threshold)
                else:
                    jobs.append(job)
            if not existing:
                write_json_atomic(out_dir / SWEEP_JSON,
                                  {**settings.record(), "finished": False, "runs": []})
        except BaseException:
            lock.release()
            raise
    except BaseException:
        remove_if_empty(made)
        raise
    return SweepPlan(settings, out_dir, lock, jobs, done, resumed=existing,
                     command=request.command, made=tuple(made), created=not existing,
                     run_dirs_before=before)


def _check_same_sweep(out_dir: Path, settings: SweepSettings, given_grid: bool) -> None:
    """A second `circuit sweep` with the same --out continues the sweep there, if it is the
    same sweep."""
    run, grid = read_sweep_settings(out_dir)
    header = run.record()
    mine = settings.record()
    if header["task"] != mine["task"] or not (
            header["task_file"] == mine["task_file"]
            or same_path(header["task_file"], mine["task_file"])):
        raise AcdcError(f"--out {out_dir}: holds a sweep of task {header['task']} "
                        f"({header['task_file']}), not of task {mine['task']} "
                        f"({mine['task_file']}); choose another --out")
    conflicts = []
    # settings recorded only when not at their default (positions) count when either has them
    for key in (*mine, *(k for k in UNLESS_DEFAULT_VALUES if k in header and k not in mine)):
        if key in ("format", "task", "task_file", "grid", "grid_source", "thresholds"):
            continue
        value = mine.get(key, UNLESS_DEFAULT_VALUES.get(key))
        theirs = header.get(key, UNLESS_DEFAULT_VALUES.get(key))
        if key == "model" and same_path(theirs, value):
            continue
        if theirs != value:
            flag = "--" + key.replace("_", "-")
            conflicts.append(f"{flag} {value} (the sweep there used {theirs})")
    if grid.thresholds != settings.grid.thresholds:
        what = f"--thresholds {settings.grid.spec}" if given_grid else (
            f"the default grid {settings.grid.spec}")
        conflicts.append(f"{what} (the sweep there has {_describe_grid(grid)})")
    if conflicts:
        raise SweepConflict(f"--out {out_dir}: holds a sweep with other settings: "
                            f"{'; '.join(conflicts)}; continue it with `circuit sweep --resume "
                            f"{out_dir}`, or choose another --out")


def _plan(settings: SweepSettings, out_dir: Path, threshold: float,
          typed: Mapping[str, str | None] | None,
          command: tuple[str, ...] | None) -> ThresholdJob | None:
    """What threshold `threshold` still needs; None when it is done."""
    run, spec = settings.at(threshold)
    directory = out_dir / run_dir_name(threshold)
    job = ThresholdJob(threshold, directory, run, spec, "new", command, typed)
    circuit_path = directory / CIRCUIT_JSON
    if circuit_path.is_file():
        circuit = load_circuit(circuit_path)
        _check_circuit(circuit.settings, run, circuit_path)
        _check_run_yaml(directory / RUN_YAML, run)
        if not circuit.partial:
            if (directory / EVALUATION_JSON).is_file():
                return None
            return replace(job, action="evaluate")
    method = get_method(run.method)
    journal = method.journal
    if journal is not None and (directory / journal.file_name).is_file():
        state = journal.read(directory)
        source = str(directory / journal.file_name)
        logged = RunSettings.from_record(state.header, source)
        recorded = {**UNLESS_DEFAULT_VALUES, **run.record()}  # a blind run records no positions
        conflicts = logged.conflicts({key: recorded[key] for key in recorded
                                      if key not in ("task_file", "model")})
        if not (same_path(logged.task_file, run.task_file) or logged.task_file == run.task_file):
            conflicts.append(f"task file {run.task_file} (the run used {logged.task_file})")
        if not (same_path(logged.model, run.model) or logged.model == run.model):
            conflicts.append(f"model {run.model} (the run used {logged.model})")
        if conflicts:
            raise AcdcError(f"{source}: a run with other settings than this sweep's: "
                            f"{'; '.join(conflicts)}; move it away, or choose another --out")
        return replace(job, action="resume")
    return job


def _check_run_yaml(path: Path, run: RunSettings) -> None:
    """The settings a circuit file does not hold (seed, dtype), from the run's run.yaml."""
    if not path.is_file():
        return
    data = read_yaml(path, "a run's settings, written by `circuit discover`")
    if not isinstance(data, dict):
        raise AcdcError(f"{path}: holds {short_repr(data)}, not the settings `circuit discover` "
                        f"writes; move the run away, or choose another --out")
    mine = run.record()
    differ = [key for key in ("seed", "dtype") if key in data and data[key] != mine[key]]
    if differ:
        shown = "; ".join(f"{key} {short_repr(data[key])} (this sweep: {mine[key]})"
                          for key in differ)
        raise AcdcError(f"{path}: not a run of this sweep: {shown}; move it away, or choose "
                        f"another --out")


def _check_circuit(recorded: Mapping[str, Any], run: RunSettings, path: Path) -> None:
    """A circuit found in the sweep's directory must be a run of this sweep at its threshold."""
    mine = {**UNLESS_DEFAULT_VALUES, **run.record()}
    recorded = {**UNLESS_DEFAULT_VALUES, **recorded}  # a blind circuit records no positions
    differ = [key for key in ("threshold", *CIRCUIT_KEYS) if key in recorded and not (
        recorded[key] == mine[key] or (key == "model" and same_path(recorded[key], mine[key])))]
    if differ:
        shown = "; ".join(f"{key} {short_repr(recorded[key])} (this sweep: {mine[key]})"
                          for key in differ)
        raise AcdcError(f"{path}: not a run of this sweep: {shown}; move it away, or choose "
                        f"another --out")
