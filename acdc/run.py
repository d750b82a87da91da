"""A discovery run from settings to files: start one, resume one, write its outputs.

`RunSettings` is the one frozen record of what a run does: the task (its name and the file it
came from), the model, the method and the method's own settings, the settings every method
shares (metric, ablation, granularity, positions), seed, device and dtype. Everything that writes or
checks settings derives from it: the journal's header (`record`), `run.yaml`, the command
that repeats the run (`repeat_command`) and the check of options given with `--resume`
(`conflicts`); `circuit.json` gets the same fields from `acdc.core.settings.settings_record`.

A run goes through three calls, each usable from Python as from the CLI:

1. `start_run(task, ...)` or `resume_run(out_dir, ...)`: read the task, resolve the settings,
   check the output directory (or read the journal of the run being resumed); nothing heavy is
   loaded yet, so every mistake in the input is reported at once.
2. `execute(run)`: load the model, tokenise the task, run the method; returns a `Circuit`.
3. `write_outputs(run, circuit)`: `circuit.json`, `circuit.dot`/`.svg`, `run.yaml`.

>>> run = start_run("demo", out=Path("runs/demo"))  # doctest: +SKIP
>>> circuit = execute(run)  # doctest: +SKIP
>>> write_outputs(run, circuit)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import platform
import shlex
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acdc.core.circuit import Circuit, write_circuit
from acdc.core.configs import available_memory, check_reachable, model_kind
from acdc.core.files import (
    check_output_dir,
    make_directories,
    remove_if_empty,
    unique_directory,
    write_text_atomic,
)
from acdc.core.graph import POSITION_MODES, build_graph
from acdc.core.positions import check_spec, positional_shape
from acdc.core.selection import RULES, Selection
from acdc.core.settings import ABLATIONS, METRICS, CommonSettings, recorded_fields, settings_record
from acdc.core.shapes import local_shape
from acdc.core.tasks.reading import read_task
from acdc.core.tasks.resolving import check_prompt_lengths
from acdc.core.tasks.spec import TaskSpec
from acdc.errors import AcdcError, RunWarning
from acdc.methods.base import (
    Discovery,
    Method,
    check_positions,
    finish,
    make_selection,
    make_settings,
)
from acdc.methods.registry import DEFAULT_METHOD, METHODS, get_method

if TYPE_CHECKING:
    from acdc.core.configs import ModelShape
    from acdc.core.loading import LoadedModel
    from acdc.core.recordings import Recordings
    from acdc.core.tasks.values import Task

DEVICES_HELP = "cpu, cuda or cuda:N"
# settings every method shares that a record leaves out at their default (`positions`)
UNLESS_DEFAULT_VALUES: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(CommonSettings)
    if f.metadata.get("unless_default")}
DTYPES: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16")
SMALL_MODEL_PARAMS = 20_000_000
RUN_YAML = "run.yaml"
CIRCUIT_JSON = "circuit.json"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RunSettings:
    """Everything a run is repeated with. `settings` is the method's own dataclass."""

    task: str  # the task's name
    task_file: str  # the file it was read from (absolute), or the bundled name
    model: str
    method: str
    settings: Any
    common: CommonSettings
    seed: int
    device: str = "cpu"
    dtype: str = "float32"
    selection: Selection | None = None  # a ranking method's rule (top_n, edges_fraction, ...)

    def record(self) -> dict[str, Any]:
        """The settings as key/value pairs, in the order every file writes them."""
        rule = ({key: value for key, value in settings_record(self.selection).items()
                 if value is not None} if self.selection is not None else {})
        return {"task": self.task, "task_file": self.task_file, "model": self.model,
                "method": self.method, **settings_record(self.settings), **rule,
                **settings_record(self.common), "seed": self.seed, "device": self.device,
                "dtype": self.dtype}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], source: str,
                    tuning: Mapping[str, Any] | None = None) -> RunSettings:
        """Settings from a journal header, every value checked (`source` names the file).
        `tuning` gives the method's unrecorded knobs (ACDC's candidates)."""
        method = _record_value(record, "method", source, str, DEFAULT_METHOD)
        if method not in METHODS:
            raise AcdcError(f"{source}: method {method!r} is not one of {', '.join(METHODS)}")
        chosen = get_method(method)
        settings_type = chosen.settings_type
        own = {f.name: _record_value(record, f.name, source, _kind(f.type)) for f in
               recorded_fields(settings_type)}
        selection = None
        if chosen.ranks:
            rules = {rule: _record_value(record, rule, source, _kind(kind))
                     for rule, kind in (("top_n", "int"), ("edges_fraction", "float"),
                                        ("threshold", "float")) if rule in record}
            selection = Selection(**rules)
            try:
                selection.validate()
            except AcdcError as error:
                raise AcdcError(f"{source}: {error}") from None
        common = CommonSettings(
            metric=_record_choice(record, "metric", source, METRICS),
            ablation=_record_choice(record, "ablation", source, ABLATIONS),  # type: ignore[arg-type]
            granularity=_record_choice(record, "granularity", source, ("qkv", "head")),  # type: ignore[arg-type]
            positions=_record_choice(record, "positions", source, POSITION_MODES, "none"),  # type: ignore[arg-type]
        )
        seed = _record_value(record, "seed", source, int)
        if seed < 0:
            raise AcdcError(f"{source}: seed is {seed}, expected a whole number >= 0")
        return cls(
            task=_record_value(record, "task", source, str),
            task_file=_record_value(record, "task_file", source, str, None) or record["task"],
            model=_record_value(record, "model", source, str),
            method=method,
            settings=settings_type(**own, **(tuning or {})),
            common=common,
            seed=seed,
            device=_record_value(record, "device", source, str),
            dtype=_record_choice(record, "dtype", source, DTYPES),
            selection=selection,
        )

    def repeat_command(self, typed: Mapping[str, str | None] | None = None,
                       out: Path | None = None) -> str:
        """A `circuit discover` command line, on one line, with every recorded setting spelled
        out. `typed` holds the task and model as the user gave them (a model None: the task
        file's); without it the task file and model are written as resolved."""
        record = self.record()
        if typed is not None:
            record["task_file"] = typed["task"]
            record["model"] = typed.get("model")
        args = ["circuit", "discover"]
        for key, value in record.items():
            if key == "task":
                continue  # the file says more than the name
            flag = "--task" if key == "task_file" else "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args += [flag] if value else []
            elif value is not None:
                args += [flag, repr(float(value)) if key == "threshold" else str(value)]
        if out is not None:
            args += ["--out", str(out)]
        return " ".join(shlex.quote(a) for a in args)

    def conflicts(self, given: Mapping[str, Any]) -> list[str]:
        """The options in `given` (recorded keys -> values from the command line) that
        contradict these settings, as `--option value (the run used x)` phrases."""
        record = self.record()
        found = []
        for key, value in given.items():
            flag = "--" + key.replace("_", "-")
            recorded: Any = record.get(key, UNLESS_DEFAULT_VALUES.get(key))
            if key == "task":
                agrees = value == self.task or same_path(value, self.task_file)
            elif key == "model":
                agrees = value == self.model or same_path(value, self.model)
            elif key == "threshold":
                agrees = float(value) == float(recorded)
            else:
                agrees = value == recorded
            if not agrees:
                found.append(f"{flag} (the run was without it)" if isinstance(value, bool) else
                             f"{flag} {value} (the run used {recorded})")
        return found


def _kind(annotation: Any) -> type | tuple[type, ...]:
    """The Python type(s) a recorded field's value must have, from its annotation."""
    text = str(annotation).replace(" ", "").removesuffix("|None")
    if text == "bool":
        return bool
    if text == "float":
        return (int, float)
    if text == "int":
        return int
    return str


def _record_value(record: Mapping[str, Any], key: str, source: str,
                  kind: type | tuple[type, ...], *default: Any) -> Any:
    if key not in record:
        if default:
            return default[0]
        raise AcdcError(f"{source}: the header has no {key!r}; it was not written by "
                        f"`circuit discover`")
    value = record[key]
    wrong_bool = isinstance(value, bool) and kind is not bool
    if wrong_bool or not isinstance(value, kind) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise AcdcError(f"{source}: the header's {key} is {value!r}, which no run writes; the "
                        f"log is damaged: start a new run")
    return value


def _record_choice(record: Mapping[str, Any], key: str, source: str, options,
                   *default: str) -> str:
    value = _record_value(record, key, source, str, *default)
    if value not in options:
        raise AcdcError(f"{source}: the header's {key} is {value!r}, not one of "
                        f"{', '.join(options)}; the log is damaged: start a new run")
    return value


def same_path(a: Any, b: Any) -> bool:
    """Whether two path-like values name the same file (False when either is None)."""
    if a is None or b is None:
        return False
    try:
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


# --------------------------------------------------------------------------- starting


class RunLock:
    """An exclusive OS lock on a run directory, held while a run or a resume writes there
    (released by `release` or when the process ends, however it ends)."""

    def __init__(self, out_dir: Path):
        import fcntl

        self.fd: int | None = os.open(out_dir, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release()
            raise AcdcError(f"{out_dir}: another circuit command is running a search in this "
                            f"directory right now; wait for it to finish (or stop it), or choose "
                            f"another --out") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


@dataclass(frozen=True)
class Run:
    """A run ready to execute: its settings, the task as read, where its files go, and the
    journal of the run being resumed (None for a new run). Holds the directory's lock."""

    settings: RunSettings
    spec: TaskSpec
    out_dir: Path
    method: Method
    lock: RunLock
    resume_from: Any = None  # the method's JournalState
    command: tuple[str, ...] | None = None  # the command line as typed, if known
    typed: Mapping[str, str | None] | None = None  # the task and model as given, if known
    created: tuple[Path, ...] = ()  # directories made for this run (removed by close if empty)

    def close(self) -> None:
        """Release the run directory (also released when the process ends) and remove the
        directories this run created if it wrote nothing into them (it failed early)."""
        self.lock.release()
        remove_if_empty(list(self.created))

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *_: object) -> None:
        """`with start_run(...) as run:` closes the run however the block ends."""
        self.close()


def start_run(task: str, *, method: str = DEFAULT_METHOD, model: str | None = None,
              metric: str | None = None, ablation: str | None = None, granularity: str = "qkv",
              positions: str = "none", seed: int | None = None, device: str = "cpu",
              dtype: str = "float32", out: Path | None = None,
              command: tuple[str, ...] | None = None, **options: Any) -> Run:
    """A new run of `task` (a bundled name or a YAML file). Values given as None take the task
    file's; `options` are the method's own (ACDC: threshold, abs, reverse_head_order,
    candidates). The output directory is checked and created here."""
    spec, settings = resolve_settings(task, method=method, model=model, metric=metric,
                                      ablation=ablation, granularity=granularity,
                                      positions=positions, seed=seed, device=device,
                                      dtype=dtype, **options)
    chosen = get_method(settings.method)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if out is None:
        out_dir, created = unique_directory(Path("runs") / f"{_safe(spec.name)}-{stamp}")
    else:
        out_dir, created = out, prepare_out_dir(out)
    try:
        lock = RunLock(out_dir)
    except AcdcError:
        remove_if_empty(created)
        raise
    with _released_on_error(lock, created):
        if chosen.journal is not None:
            chosen.journal.check_new_run(out_dir)
    return Run(settings, spec, out_dir, chosen, lock, command=command,
               typed={"task": task, "model": model}, created=tuple(created))


def resolve_settings(task: str, *, method: str = DEFAULT_METHOD, model: str | None = None,
                     metric: str | None = None, ablation: str | None = None,
                     granularity: str = "qkv", positions: str = "none", seed: int | None = None,
                     device: str = "cpu", dtype: str = "float32", **options: Any
                     ) -> tuple[TaskSpec, RunSettings]:
    """The task as read and the settings of a run of it (what `start_run` resolves before it
    touches the output directory)."""
    chosen = get_method(method)
    if dtype not in DTYPES:
        raise AcdcError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    options = dict(options)
    rules = {rule: options.pop(rule, None) for rule in RULES} if chosen.ranks else {}
    spec = read_task(task).with_overrides(
        metric=metric, threshold=options.get("threshold", rules.get("threshold")),
        ablation=ablation, seed=seed, model=model)
    if spec.model is None:
        raise AcdcError(f"{spec.source}: the task names no model; pass --model DIR|NAME")
    kind = model_kind(spec.model)
    if kind == "name":  # offline and not cached: say so before loading torch
        check_reachable(spec.model)
    else:  # a prompt too long for the context: say so before loading anything
        check_prompt_lengths(spec, local_shape(spec.model, kind).n_ctx)
    common = CommonSettings(metric=spec.metric, ablation=spec.ablation,  # type: ignore[arg-type]
                            granularity=granularity, positions=positions)  # type: ignore[arg-type]
    common.validate()
    own = make_settings(chosen, spec, options)
    if chosen.check is not None:
        chosen.check(own, common)
    check_positions(chosen, common)
    check_spec(spec, positions)
    settings = RunSettings(
        task=spec.name, task_file=task_file(spec),
        model=spec.model, method=chosen.name, settings=own, common=common, seed=spec.seed,
        device=device, dtype=dtype, selection=make_selection(chosen, spec, rules),
    )
    return spec, settings


def task_file(spec: TaskSpec) -> str:
    """The file a task was read from as every record names it: resolved (a bundled task's
    real path, not the package's link to it), or the task's source when it is not a file."""
    source = Path(spec.source)
    return str(source.resolve()) if source.is_file() else spec.source


class ResumeConflict(AcdcError):
    """Options given with `--resume` contradict the settings of the run being resumed."""

    def __init__(self, conflicts: list[str], journal: str):
        one = len(conflicts) == 1
        super().__init__(
            f"{'; '.join(conflicts)} contradict{'s' if one else ''} the settings of the run "
            f"being resumed (from its {journal}): leave {'it' if one else 'them'} out, or start "
            f"a new run with --out")
        self.conflicts = conflicts


def resume_run(out_dir: Path, given: Mapping[str, Any] | None = None,
               tuning: Mapping[str, Any] | None = None,
               command: tuple[str, ...] | None = None) -> Run:
    """The interrupted run in `out_dir`, with the settings its journal was started with.

    `given` holds options given again on the command line (recorded keys -> values, `out`
    the directory); they must agree with the journal, else `ResumeConflict` names them.
    `tuning` are the method's unrecorded knobs (ACDC's candidates)."""
    out_dir = Path(out_dir)
    method = _journal_method(out_dir)
    assert method.journal is not None
    lock = RunLock(out_dir)
    with _released_on_error(lock):
        state = method.journal.read(out_dir)
        source = str(out_dir / method.journal.file_name)
        settings = RunSettings.from_record(state.header, source, tuning)
        given = dict(given or {})
        out = given.pop("out", None)
        conflicts = settings.conflicts(given)
        if out is not None and not same_path(out, out_dir):
            conflicts.append(f"--out {out} (the run's directory is {out_dir})")
        if conflicts:
            raise ResumeConflict(conflicts, method.journal.file_name)
        if state.dropped:
            warnings.warn(state.dropped, RunWarning, stacklevel=2)
        spec = read_task(settings.task_file).with_overrides(
            metric=settings.common.metric, ablation=settings.common.ablation, seed=settings.seed,
            model=settings.model, threshold=getattr(settings.settings, "threshold", None))
    return Run(settings, spec, out_dir, method, lock, resume_from=state, command=command)


@contextlib.contextmanager
def _released_on_error(lock: RunLock, created: list[Path] | None = None) -> Iterator[None]:
    """Release the directory's lock (and remove the directories made for it, if empty) if
    preparing the run fails."""
    try:
        yield
    except BaseException:
        lock.release()
        remove_if_empty(created or [])
        raise


def _journal_method(out_dir: Path) -> Method:
    """The method whose journal `out_dir` holds."""
    resumable = [m for m in METHODS.values() if m.journal is not None]
    for method in resumable:
        if (out_dir / method.journal.file_name).is_file():  # type: ignore[union-attr]
            return method
    if not out_dir.is_dir():
        raise AcdcError(f"{out_dir}: no such run directory")
    names = " or ".join(m.journal.file_name for m in resumable)  # type: ignore[union-attr]
    raise AcdcError(f"{out_dir}: has no {names}, so there is no run to resume (it is written by "
                    f"`circuit discover`)")


def prepare_out_dir(out_dir: Path) -> list[Path]:
    """Create the output directory, or say in one line why it cannot be (a symbolic link, a
    file in the way, a symlink loop, no permission, a full disk); return the directories
    created (`acdc.core.files.remove_if_empty` removes them when the command fails)."""
    check_output_dir(out_dir)
    created = make_directories(out_dir)
    if not os.access(out_dir, os.W_OK | os.X_OK):
        remove_if_empty(created)
        raise AcdcError(f"--out {out_dir}: cannot write in this directory (permission denied); "
                        f"choose another --out")
    return created


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "task"


def resume_hint(out_dir: Path) -> str:
    return f"resume with `circuit discover --resume {shlex.quote(str(out_dir))}`"


# --------------------------------------------------------------------------- executing


@dataclass(frozen=True)
class Outcome:
    """A finished (or interrupted) run: its circuit and the number of prompts it ran on."""

    circuit: Circuit
    n_prompts: int


@dataclass(frozen=True)
class SharedInputs:
    """What several runs of one model on one task share (a sweep's runs, which differ only in
    the method's own settings): the loaded model, the tokenised task and the task's clean and
    corrupted runs recorded over the graph (`acdc.core.recordings`)."""

    model: LoadedModel
    task: Task
    recordings: Recordings


def load_shared(run: Run, threads: int = 0) -> SharedInputs:
    """Load the model, tokenise the task and record its runs, as `execute` would for `run`
    (with the same number of threads, so that the recordings are the same to the bit)."""
    from acdc.core.graph import build_graph
    from acdc.core.recordings import record

    loaded, task = _load_inputs(run)
    _set_threads(loaded.shape, run.settings.device, threads)
    common = run.settings.common
    graph = build_graph(positional_shape(loaded.shape.graph_shape(common.granularity), task,
                                         common.positions))
    return SharedInputs(loaded, task, record(loaded, task, graph, common.ablation))


def _load_inputs(run: Run) -> tuple[LoadedModel, Task]:
    from acdc.core.loading import load_model
    from acdc.core.tasks.resolving import resolve_task

    settings = run.settings
    loaded = load_model(settings.model, device=settings.device, dtype=settings.dtype)
    task = resolve_task(run.spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    return loaded, task


def _set_threads(shape: ModelShape, device: str, threads: int) -> None:
    import torch

    from acdc.core.configs import check_threads

    chosen = check_threads(threads) or cpu_threads(shape, device)
    if chosen:
        torch.set_num_threads(chosen)


def execute(run: Run, on_progress: Callable[[Any], None] | None = None,
            threads: int = 0, max_memory: float | None = None,
            shared: SharedInputs | None = None) -> Outcome:
    """Load the model, tokenise the task and run the method. `threads` 0: 1 thread for small
    models on a CPU (their operations are too small to split), else PyTorch's default.
    `shared` holds the model, task and recordings already loaded for this run's model, task,
    ablation and granularity (`load_shared`): nothing is loaded or recorded again.

    Before the method allocates anything, its memory estimate is checked against the memory
    available (or against `max_memory` GiB when given): a run that cannot fit is refused with
    the estimate instead of exhausting the machine."""
    import torch

    settings = run.settings
    if shared is None:
        loaded, task = _load_inputs(run)
    else:
        loaded, task = shared.model, shared.task
        if (loaded.name, str(loaded.dtype)) != (settings.model, f"torch.{settings.dtype}"):
            raise ValueError(f"shared inputs of model {loaded.name} ({loaded.dtype}) "
                             f"handed to a run of {settings.model} ({settings.dtype})")
    _check_memory(run, loaded.shape, task, max_memory)
    warning = precision_warning(loaded.dtype, settings.device)
    if warning:
        warnings.warn(warning, RunWarning, stacklevel=2)
    torch.manual_seed(settings.seed)
    _set_threads(loaded.shape, settings.device, threads)
    graph = (shared.recordings.graph if shared is not None
             else build_graph(positional_shape(
                 loaded.shape.graph_shape(settings.common.granularity), task,
                 settings.common.positions)))
    job = Discovery(model=loaded, task=task, graph=graph, common=settings.common,
                    settings=settings.settings, seed=settings.seed, selection=settings.selection,
                    record=settings.record(), out_dir=run.out_dir, resume_from=run.resume_from,
                    on_progress=on_progress,
                    recordings=None if shared is None else shared.recordings)
    started = time.perf_counter()
    return Outcome(finish(job, run.method, run.method.run(job), started), task.n_prompts)


def _check_memory(run: Run, shape: ModelShape, task: Any, max_memory: float | None) -> None:
    """Refuse a run whose method says it needs more memory than there is (or than allowed)."""
    if run.method.extra_memory is None:
        return
    needed = run.method.extra_memory(shape, run.settings.common, task)
    if max_memory is not None:
        limit, what = max_memory * 2**30, f"the --max-memory of {max_memory:g} GiB"
    else:
        free = available_memory()
        if free is None:
            return
        limit, what = free, f"the {free / 2**30:.1f} GiB of memory available"
    if needed > limit:
        raise AcdcError(
            f"the run needs about {needed / 2**30:.1f} GiB besides the model's weights "
            f"({task.n_prompts} prompts of up to {max(len(p) for p in task.clean)} tokens), more "
            f"than {what}; use fewer or shorter prompts, or pass --max-memory GIB to allow more")


def cpu_threads(shape: ModelShape, device: str) -> int | None:
    """Threads for a CPU run: 1 for small models (their operations are too small to split,
    and extra threads only add overhead), else None for PyTorch's default."""
    return 1 if device == "cpu" and shape.n_params < SMALL_MODEL_PARAMS else None


def precision_warning(dtype: Any, device: str) -> str | None:
    """A warning for half-precision runs, before they start."""
    import torch

    if dtype not in (torch.float16, torch.bfloat16):
        return None
    text = (f"{str(dtype).removeprefix('torch.')} rounds activations to about "
            f"{torch.finfo(dtype).eps:.0e}; metric changes near the rounding noise (measured and "
            f"reported at the end of the run) are meaningless; use float32 to compare runs")
    if device == "cpu":
        text += "; on a CPU half precision is also much slower than float32"
    return text


# --------------------------------------------------------------------------- outputs


def write_outputs(run: Run, outcome: Outcome, render_svg: bool = True,
                  score_width: bool = True) -> list[Path]:
    """Write `circuit.json`, `circuit.dot` (and `.svg`; edge widths by |score| unless
    `score_width` is False) and `run.yaml` into the run's directory; return every file the run
    wrote, its journal included."""
    from acdc.exports.dot import circuit_title, render, to_dot

    out_dir, circuit = run.out_dir, outcome.circuit
    written = [write_circuit(circuit, out_dir / CIRCUIT_JSON)]
    source = to_dot(circuit, title=circuit_title(circuit), score_width=score_width)
    written.append(render(source, out_dir / "circuit.dot", "dot"))
    if render_svg:
        svg = render(source, out_dir / "circuit.svg", "svg")
        if svg not in written:
            written.append(svg)
    written.append(write_run_yaml(run_yaml(run, outcome), out_dir / RUN_YAML))
    if run.method.journal is not None:
        written.append(out_dir / run.method.journal.file_name)
    return written


def run_yaml(run: Run, outcome: Outcome) -> dict[str, Any]:
    """The contents of `run.yaml`: the recorded settings, the number of prompts, whether the
    run was partial, the command as typed, the repeat command and package versions."""
    repeat = run.settings.repeat_command(run.typed, run.out_dir)
    command = run.command
    return {
        **run.settings.record(),
        "n_prompts": outcome.n_prompts,
        "partial": outcome.circuit.partial,
        "command": " ".join(shlex.quote(a) for a in command) if command is not None else repeat,
        "repeat": repeat,
        "versions": package_versions(),
    }


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on (read from metadata, nothing imported)."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    """`package_versions`, read once per process (a sweep writes a run.yaml per threshold)."""
    versions = {}
    for key, dist in (("circuit", "circuit"), ("torch", "torch"),
                      ("transformer_lens", "transformer-lens"), ("transformers", "transformers")):
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def write_run_yaml(config: Mapping[str, Any], path: Path) -> Path:
    import yaml

    header = "# Resolved configuration of a `circuit discover` run; `repeat` runs it again.\n"
    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False,
                          width=float("inf"))  # one line per command, ready to paste
    return write_text_atomic(path, header + text)
