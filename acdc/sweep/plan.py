"""A sweep's settings, its directory and what is left to do in it.

`start_sweep` resolves the settings every run of the sweep shares (those of `circuit discover`
but the threshold), the grid and the directory; `resume_sweep` reads them back from the
directory's `sweep.json`. Either checks the directory and plans every threshold:

- `tau-<t>/circuit.json` complete (not partial) and `evaluation.json` beside it: done, not rerun;
- a complete circuit without its evaluation: only evaluated;
- a decision log (`decisions.jsonl`), finished or not: resumed from it (a finished log just
  rewrites the outputs), after checking that its settings are the sweep's;
- nothing yet: a new run.

Starting a sweep in a directory that holds one (a second `circuit sweep` with the same `--out`)
continues it when the settings agree; a sweep of another task there is refused, naming both
tasks, and any other difference is a `SweepConflict` naming the options.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from acdc.core.circuit import load_circuit
from acdc.core.files import write_text_atomic
from acdc.core.tasks.reading import read_task
from acdc.core.tasks.spec import TaskSpec
from acdc.errors import AcdcError
from acdc.evaluation.evaluate import EVALUATION_JSON
from acdc.methods.registry import get_method
from acdc.run import (
    CIRCUIT_JSON,
    RunLock,
    RunSettings,
    prepare_out_dir,
    resolve_settings,
    same_path,
)
from acdc.sweep.grid import RUN_PREFIX, Grid, default_grid, parse_grid, run_dir_name

SWEEP_JSON = "sweep.json"
FORMAT = "circuit-sweep/1"
Action = Literal["new", "resume", "evaluate"]
# Settings a run records that must agree between the runs of a sweep and the sweep (all but
# the threshold); checked against circuit files and decision logs found in the directory.
CIRCUIT_KEYS: tuple[str, ...] = ("task", "model", "method", "abs", "reverse_head_order",
                                 "metric", "ablation", "granularity")


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


@dataclass
class SweepPlan:
    """A sweep ready to run: its settings, directory (locked), the thresholds already done and
    the jobs left."""

    settings: SweepSettings
    out_dir: Path
    lock: RunLock
    jobs: list[ThresholdJob]
    done: list[float]
    resumed: bool
    command: tuple[str, ...] | None = None

    def close(self) -> None:
        """Release the sweep's directory (also released when the process ends)."""
        self.lock.release()


# --------------------------------------------------------------------------- starting


def start_sweep(task: str, *, thresholds: str | None = None, model: str | None = None,
                metric: str | None = None, ablation: str | None = None,
                granularity: str = "qkv", abs: bool = False, reverse_head_order: bool = False,
                seed: int | None = None, device: str = "cpu", dtype: str = "float32",
                candidates: int = 0, out: Path | None = None,
                command: tuple[str, ...] | None = None) -> SweepPlan:
    """A sweep of `task` (a bundled name or a YAML file) over `thresholds` (a grid spec, see
    `acdc.sweep.grid`; None: the paper's grid for the task, else the default), with the
    options of `circuit discover`. Continues the sweep already in `out` if its settings agree."""
    options: dict[str, Any] = {"abs": abs, "reverse_head_order": reverse_head_order}
    if candidates:
        options["candidates"] = candidates
    grid = parse_grid(thresholds) if thresholds is not None else None
    spec, run = resolve_settings(task, model=model, metric=metric, ablation=ablation,
                                 granularity=granularity, seed=seed, device=device, dtype=dtype,
                                 threshold=grid.thresholds[0] if grid else None, **options)
    if grid is None:
        grid = default_grid(spec.name, run.common.metric)
        spec, run = spec.with_overrides(threshold=grid.thresholds[0]), replace(
            run, settings=replace(run.settings, threshold=grid.thresholds[0]))
    settings = SweepSettings(run, spec, grid)
    out_dir = out if out is not None else Path("runs") / (
        f"{_safe(spec.name)}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    return _open(settings, out_dir, typed={"task": task, "model": model}, command=command,
                 given_grid=thresholds is not None)


def resume_sweep(out_dir: Path, given: Mapping[str, Any] | None = None, candidates: int = 0,
                 command: tuple[str, ...] | None = None) -> SweepPlan:
    """The sweep in `out_dir`, with the settings of its sweep.json. `given` holds options given
    again (recorded keys -> values, `thresholds` a grid spec); they must agree with it."""
    out_dir = Path(out_dir)
    header = read_header(out_dir)
    source = str(out_dir / SWEEP_JSON)
    thresholds = header.get("thresholds")
    if (not isinstance(thresholds, list) or not thresholds or any(
            isinstance(t, bool) or not isinstance(t, (int, float)) for t in thresholds)):
        raise AcdcError(f"{source}: thresholds is {thresholds!r}, which no sweep writes; the "
                        f"file is damaged")
    tuning = {"candidates": candidates} if candidates else None
    run = RunSettings.from_record({**header, "threshold": float(thresholds[0])}, source, tuning)
    grid = Grid(tuple(float(t) for t in thresholds), str(header.get("grid", "")),
                str(header.get("grid_source", "")))
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
    return _open(SweepSettings(run, spec, grid), out_dir, typed=None, command=command,
                 given_grid=False, resuming=True)


def read_header(out_dir: Path) -> dict[str, Any]:
    """The settings part of `out_dir/sweep.json`; one-line errors for anything else."""
    path = Path(out_dir) / SWEEP_JSON
    if not Path(out_dir).is_dir():
        raise AcdcError(f"{out_dir}: no such sweep directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AcdcError(f"{out_dir}: has no {SWEEP_JSON}, so there is no sweep to resume (it is "
                        f"written by `circuit sweep`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "msg", None) or error
        raise AcdcError(f"{path}: cannot read ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise AcdcError(f"{path}: format is {found!r}, expected {FORMAT!r} (written by "
                        f"`circuit sweep`)")
    return data


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


def _open(settings: SweepSettings, out_dir: Path, *, typed: Mapping[str, str | None] | None,
          command: tuple[str, ...] | None, given_grid: bool,
          resuming: bool = False) -> SweepPlan:
    """Check and lock the directory, continue the sweep there or start one, plan every
    threshold."""
    prepare_out_dir(out_dir)
    for name in (CIRCUIT_JSON, "decisions.jsonl"):
        if (out_dir / name).is_file():
            raise AcdcError(f"--out {out_dir}: is a run directory (it has {name}), not a sweep "
                            f"directory; choose another --out")
    lock = RunLock(out_dir)
    try:
        existing = (out_dir / SWEEP_JSON).is_file()
        if existing and not resuming:
            _check_same_sweep(out_dir, settings, given_grid)
        elif not existing:
            strays = sorted(p.name for p in out_dir.iterdir()
                            if p.is_dir() and p.name.startswith(RUN_PREFIX))
            if strays:
                raise AcdcError(f"--out {out_dir}: holds {', '.join(strays[:3])} but no "
                                f"{SWEEP_JSON}: not a sweep written by `circuit sweep`; choose "
                                f"another --out")
            write_text_atomic(out_dir / SWEEP_JSON, json.dumps(
                {**settings.record(), "finished": False, "runs": []}, indent=1) + "\n")
        jobs, done = [], []
        for threshold in settings.grid.thresholds:
            job = _plan(settings, out_dir, threshold, typed, command)
            if job is None:
                done.append(threshold)
            else:
                jobs.append(job)
    except BaseException:
        lock.release()
        raise
    return SweepPlan(settings, out_dir, lock, jobs, done, resumed=existing, command=command)


def _check_same_sweep(out_dir: Path, settings: SweepSettings, given_grid: bool) -> None:
    """A second `circuit sweep` with the same --out continues the sweep there, if it is the
    same sweep."""
    header = read_header(out_dir)
    mine = settings.record()
    if header.get("task") != mine["task"] or not (
            header.get("task_file") == mine["task_file"]
            or same_path(header.get("task_file"), mine["task_file"])):
        raise AcdcError(f"--out {out_dir}: holds a sweep of task {header.get('task')} "
                        f"({header.get('task_file')}), not of task {mine['task']} "
                        f"({mine['task_file']}); choose another --out")
    conflicts = []
    for key, value in mine.items():
        if key in ("format", "task", "task_file", "grid", "grid_source", "thresholds"):
            continue
        theirs = header.get(key)
        if key == "model" and same_path(theirs, value):
            continue
        if theirs != value:
            flag = "--" + key.replace("_", "-")
            conflicts.append(f"{flag} {value} (the sweep there used {theirs})")
    if tuple(header.get("thresholds") or ()) != settings.grid.thresholds:
        old = Grid(tuple(header.get("thresholds") or ()), str(header.get("grid", "")), "")
        what = f"--thresholds {settings.grid.spec}" if given_grid else (
            f"the default grid {settings.grid.spec}")
        conflicts.append(f"{what} (the sweep there has {_describe_grid(old)})")
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
        recorded = run.record()
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
    prepare_out_dir(directory)
    return job


def _check_circuit(recorded: Mapping[str, Any], run: RunSettings, path: Path) -> None:
    """A circuit found in the sweep's directory must be a run of this sweep at its threshold."""
    mine = run.record()
    differ = [key for key in ("threshold", *CIRCUIT_KEYS) if key in recorded and not (
        recorded[key] == mine[key] or (key == "model" and same_path(recorded[key], mine[key])))]
    if differ:
        shown = "; ".join(f"{key} {recorded[key]} (this sweep: {mine[key]})" for key in differ)
        raise AcdcError(f"{path}: not a run of this sweep: {shown}; move it away, or choose "
                        f"another --out")
