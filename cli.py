"""The `circuit` command line: parse options, call the `acdc` library, print.

Commands: `discover` (find a task's circuit with a discovery method, through `acdc.run`:
circuit.json, circuit.dot/.svg, run.yaml, and ACDC's decision log that `discover --resume DIR`
continues from), `graph` (node and edge counts and a memory estimate from a model's config
alone), `tasks` (the bundled tasks), `metrics` (what each metric reads and means), `render`
(re-draw a saved circuit), `export` (a circuit as a MIB circuit file, GraphML or CSV), `report`
(one self-contained HTML page of a run or a sweep), `evaluate` (a circuit's faithfulness and its
complement: evaluation.json, curves), `sweep` (ACDC at every threshold of a grid, sharing the
model and recordings: a run directory per threshold, sweep.json, plots; local worker processes
or Ray), `compare` (two circuits, or circuits and sweeps against a reference: Jaccard, TPR/FPR,
ROC) and `zoo train|eval` (the project's own small models). The library does the work;
commands parse, call and print.

Exit codes: 0 success; 1 a user error (`AcdcError`: bad task file, missing model, unknown
metric ...), reported as one line `error: ...` on stderr with no traceback; 2 a usage error
(unknown option, bad choice), as typer reports it; 130 a run interrupted with Ctrl-C (the
partial circuit is still written, and `--resume` continues it).

The library and torch are imported inside the commands, so `circuit --help` is fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import io
import math
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from acdc.core.settings import option_flag
from acdc.errors import AcdcError

# click's exception classes, as the installed typer has them (typer vendors its own click).
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """The `circuit` command group, with every usage error (an unknown option, a bad value, a
    missing argument) reported as one line `error: ...; see `circuit CMD --help``, exit 2,
    in the form of every other error, instead of click's three-line Usage/Try/Error box."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
        except _UsageError as error:
            context = getattr(error, "ctx", None)
            command = context.command_path if context is not None else "circuit"
            message = _one_line(error.format_message())  # type: ignore[attr-defined]
            _err(f"error: {message.replace('Value error, ', '').rstrip('.')}; see `{command} "
                 f"--help`")
            code = error.exit_code  # type: ignore[attr-defined]
        except _ClickException as error:
            _err(f"error: {_one_line(error.format_message())}")  # type: ignore[attr-defined]
            code = error.exit_code  # type: ignore[attr-defined]
        except typer.Abort:
            _err("error: aborted")
            code = 1
        else:
            code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=OneLineErrors,
    name="circuit",
    help="Automated circuit discovery (ACDC) on TransformerLens models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no 80-column box, flags without a metavar
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
zoo_app = typer.Typer(help="Train and evaluate the project's own small models.",
                      no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERRUPTED = 130


class Granularity(str, Enum):
    qkv = "qkv"
    head = "head"


class Ablation(str, Enum):
    corrupt = "corrupt"
    zero = "zero"
    mean = "mean"
    mean_positional = "mean-positional"


class Dtype(str, Enum):
    float32 = "float32"
    float64 = "float64"
    float16 = "float16"
    bfloat16 = "bfloat16"


class RenderFormat(str, Enum):
    svg = "svg"
    png = "png"
    dot = "dot"


GRANULARITY_HELP = ("Graph granularity: qkv splits each head into q, k and v receivers (plus "
                    "direct q/k/v edges); head has one receiver per head.")


def _err(message: str) -> None:
    typer.echo(message, err=True)


def user_errors(command: F) -> F:
    """Report `AcdcError` as one line `error: ...` with exit code 1; Ctrl-C as exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    return command(*args, **kwargs)
                finally:
                    _report_warnings(caught)
        except AcdcError as error:
            _err(f"error: {_one_line(str(error))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _err("interrupted before the search started; nothing was written")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _report_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Show our own warnings (`RunWarning`s) as one line each; drop library chatter."""
    from acdc.errors import RunWarning

    seen: set[str] = set()
    for item in caught:
        if issubclass(item.category, RunWarning):
            text = _one_line(str(item.message))
            if text not in seen:
                seen.add(text)
                _err(f"warning: {text}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- discover

TaskOption = Annotated[str | None, typer.Option(
    "--task", "-t", help="Bundled task name (see `circuit tasks`) or a task YAML file. Required "
                         "unless --resume is given.")]
ModelOption = Annotated[str | None, typer.Option(
    help="Checkpoint directory, local Hugging Face directory or TransformerLens model name. "
         "Default: the task's model.")]
MethodOption = Annotated[str, typer.Option(
    help="Discovery method; `circuit methods` lists them.")]
MetricOption = Annotated[str | None, typer.Option(
    help="kl, logit_diff, prob_diff, nll or l2. Default: the task's (kl).")]
AblationOption = Annotated[Ablation | None, typer.Option(
    help="What a removed edge carries: the corrupted run's value, zero, or the sender's "
         "output averaged over the corrupted prompts' tokens (mean) or per position "
         "(mean-positional). Default: the task's.")]
GranularityOption = Annotated[Granularity, typer.Option(help=GRANULARITY_HELP)]
SeedOption = Annotated[int | None, typer.Option(help="Random seed. Default: the task's.")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
DtypeOption = Annotated[Dtype, typer.Option(
    help="Model precision (float32 on CPU; lower precision only on GPUs).")]
def _threads_option(value: int) -> int:
    """--threads checked when parsed (a usage error), before anything is loaded or written."""
    from acdc.core.configs import check_threads

    try:
        return check_threads(value)
    except AcdcError as error:
        raise typer.BadParameter(str(error).removeprefix(f"--threads {value}: ")) from None


ThreadsOption = Annotated[int, typer.Option(
    min=0, callback=_threads_option,
    help="CPU threads, at most the cores this process may use; 0 (default): 1 for small "
         "models, where threads only add overhead, else PyTorch's default.")]
MaxMemoryOption = Annotated[float | None, typer.Option(
    min=0, metavar="GIB", help="Refuse a run whose memory estimate exceeds this many GiB. "
                               "Default: the memory available now.")]
OutOption = Annotated[Path | None, typer.Option(
    help="Output directory. Default: runs/<task>-<YYYYmmdd-HHMMSS>/.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary.")]
NoRenderOption = Annotated[bool, typer.Option(
    "--no-render", help="Write circuit.dot but not circuit.svg.")]
NoScoreWidthOption = Annotated[bool, typer.Option(
    "--no-score-width", help="Draw every edge at one width (by default a scored circuit's "
                             "edges are as wide as their |score|).")]
ResumeOption = Annotated[Path | None, typer.Option(
    metavar="DIR", help="Continue the interrupted run in DIR: its settings and decisions come "
                        "from DIR/decisions.jsonl, and the outputs are written into DIR.")]


def method_options(methods: Sequence[str] | None = None
                   ) -> list[tuple[dataclasses.Field, list[str]]]:
    """Every option a method (or the selection rule) declares, once by name, with the methods
    that take it: the fields of the registered methods' settings dataclasses and of
    `Selection` (`acdc.core.settings.option`); only those of `methods` when given."""
    from acdc.core.selection import Selection
    from acdc.methods.registry import METHODS

    found: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    owners: list[tuple[str, type]] = [("the ranking methods", Selection)] if methods is None \
        else []
    owners += [(name, method.settings_type) for name, method in METHODS.items()
               if methods is None or name in methods]
    for owner, settings_type in owners:
        for item in dataclasses.fields(settings_type):
            if item.name in found:
                found[item.name][1].append(owner)
            else:
                found[item.name] = (item, [owner])
    return list(found.values())


def with_method_options(methods: Sequence[str] | None = None,
                        exclude: Sequence[str] = ()) -> Callable[[F], F]:
    """Add the options of every method (or of `methods`; `method_options`) but `exclude` to a
    command's parameters: typed as their fields, None when not given (flags: False); the
    command receives them in `**options`. The options are read from the registry when the
    command line is built, so a method registered later (a plug-in, a test's toy) has its own."""
    def decorate(command: F) -> F:
        return _WithMethodOptions(command, methods, exclude)  # type: ignore[return-value]

    return decorate


class _WithMethodOptions:
    """A command whose signature (what typer builds its options from) is its own parameters
    followed by the methods' options, computed whenever it is asked for."""

    def __init__(self, command: Callable[..., Any], methods: Sequence[str] | None,
                 exclude: Sequence[str]):
        functools.update_wrapper(self, command)
        self.command, self.methods, self.exclude = command, methods, set(exclude)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.command(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        signature = inspect.signature(self.command, eval_str=True)
        taken = set(signature.parameters) | self.exclude
        added = []
        for item, owners in method_options(self.methods):
            if item.name in taken:
                continue
            kind = _option_type(item)
            help_text = item.metadata.get("help", "")
            if "the ranking methods" not in owners and len(owners) < 4:
                help_text += f" [{', '.join(owners)}]"
            flag = option_flag(item)
            if kind is bool:
                annotation: Any = Annotated[bool, typer.Option(flag, help=help_text)]
                default: Any = False
            else:
                annotation = Annotated[kind | None, typer.Option(flag, help=help_text)]
                default = None
            added.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY,
                                           default=default, annotation=annotation))
        params = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        return signature.replace(parameters=params + added)


def _option_type(item: dataclasses.Field) -> type:
    """The command-line type of a settings field: bool, int, float, else str (a choice the
    settings' own `validate` checks)."""
    text = str(item.type).replace(" ", "")
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text in (name, f"{name}|None"):
            return kind
    return str


@app.command()
@user_errors
@with_method_options()
def discover(
    ctx: typer.Context, task: TaskOption = None, model: ModelOption = None,
    method: MethodOption = "acdc", metric: MetricOption = None,
    ablation: AblationOption = None, granularity: GranularityOption = Granularity.qkv,
    seed: SeedOption = None, device: DeviceOption = "cpu", dtype: DtypeOption = Dtype.float32,
    threads: ThreadsOption = 0, max_memory: MaxMemoryOption = None, out: OutOption = None,
    quiet: QuietOption = False, no_render: NoRenderOption = False,
    no_score_width: NoScoreWidthOption = False, resume: ResumeOption = None, **options: Any,
) -> None:
    """Find the circuit of a task with a discovery method (`circuit methods` lists them; ACDC
    by default) and write circuit.json, circuit.dot/.svg, run.yaml and, for ACDC,
    decisions.jsonl (the log that `--resume` continues from). Each method's own options are
    listed below with the methods that take them."""
    from acdc import run as pipeline

    given = _given_options(ctx, {"task", "model", "method", "metric", "ablation", "granularity",
                                 "seed", "device", "dtype", "out", *options})
    unrecorded = {item.name for item, _ in method_options()
                  if not item.metadata.get("recorded", True)}
    tuning = {key: given.pop(key) for key in list(given) if key in unrecorded}
    command = tuple(["circuit", *sys.argv[1:]]) if Path(sys.argv[0]).name == "circuit" else None
    if resume is not None:
        try:
            job = pipeline.resume_run(resume, given, tuning, command)
        except pipeline.ResumeConflict as conflict:
            raise typer.BadParameter(str(conflict), ctx=ctx, param_hint="--resume") from None
    elif task is None:
        raise typer.BadParameter("required unless --resume DIR is given", ctx=ctx,
                                 param_hint="'--task' / '-t'")
    else:
        given.pop("task")
        job = pipeline.start_run(task, command=command, **given, **tuning)
    _announce(job, _Status(quiet))
    with contextlib.closing(job), _Interrupts() as interrupts, \
            _ProgressDisplay(quiet, job.method.name) as display:
        def on_progress(progress: Any) -> None:
            display.update(progress)
            interrupts.checkpoint()  # a signal received since the last decision stops it here

        try:
            outcome = pipeline.execute(job, on_progress, threads, max_memory)
        except KeyboardInterrupt:
            _err(_interrupted_early(job, interrupts))
            raise typer.Exit(interrupts.exit_code) from None
        written = pipeline.write_outputs(job, outcome, render_svg=not no_render,
                                         score_width=not no_score_width)
    _summarize(job, outcome.circuit, written, interrupts)


def _given_options(ctx: typer.Context, names: set[str]) -> dict[str, Any]:
    """The options typed on the command line (not defaults), by setting name (`abs_` is
    `abs`), enums as their values."""
    given = {}
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = ctx.params[name]
        given[name.rstrip("_")] = value.value if isinstance(value, Enum) else value
    return given


def _announce(job, status: _Status) -> None:
    spec, settings = job.spec, job.settings
    if job.resume_from is not None:
        state = job.resume_from
        done, total = state.n_decided, state.n_edges
        status.say(f"resuming {job.out_dir}: all {total} edges already decided, rewriting the "
                   f"outputs" if done == total else
                   f"resuming {job.out_dir}: {done} of {total} edges decided in "
                   f"{job.method.journal.file_name}")
    own = ", ".join(f"{key} {value:g}" if isinstance(value, (int, float))
                    and not isinstance(value, bool) else key
                    for key, value in _settings_of(settings.settings).items()
                    if value is not False and value is not None)
    if settings.selection is not None:
        own += ("; " if own else "") + settings.selection.describe()
    prompts = f"{spec.n_prompts} prompt" + ("" if spec.n_prompts == 1 else "s")
    status.say(f"task {spec.name}: {prompts}, method {settings.method}"
               f"{f' ({own})' if own else ''}, "
               f"metric {settings.common.metric}, ablation {settings.common.ablation}")
    status.say(f"loading model {settings.model} ...")


def _settings_of(settings: Any) -> dict[str, Any]:
    from acdc.core.settings import settings_record

    return settings_record(settings)


class _Interrupts:
    """Ctrl-C (SIGINT) and SIGTERM (a batch scheduler's preemption) alike. Before a search's
    first decision they stop the command at once; after it, they take effect at the next
    decision, once it is logged, so that the log and the partial outputs hold the same
    decisions. A second signal while outputs are written waits for them to be complete."""

    NAMES: dict[int, str] = {signal.SIGINT: "interrupted",
                             signal.SIGTERM: "terminated (SIGTERM)"}

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferring = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        for signum in self.NAMES:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        if not self.deferring:
            raise KeyboardInterrupt

    def checkpoint(self) -> None:
        """A decision was logged: from now on signals wait for the next one."""
        self.deferring = True
        if self.received is not None:
            raise KeyboardInterrupt

    @property
    def name(self) -> str:
        return self.NAMES.get(self.received or signal.SIGINT, "interrupted")

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)


def _interrupted_early(job, interrupts: _Interrupts) -> str:
    """What a signal before the first decision left: a journal to resume, or nothing."""
    from acdc.run import resume_hint

    journal = job.method.journal
    if journal is not None and (job.out_dir / journal.file_name).is_file():
        return f"{interrupts.name} before the first decision; {resume_hint(job.out_dir)}"
    return f"{interrupts.name} before the search started; nothing was written"


def _summarize(job, circuit, written: list[Path], interrupts: _Interrupts) -> None:
    from acdc.run import resume_hint

    noise = circuit.results.get("metric_noise", 0.0)
    shown = lambda value: "0" if abs(value) <= noise else f"{value:.4g}"  # noqa: E731
    selected = circuit.results.get("n_edges_selected")
    pruned = (f"; {selected:,} selected by {job.settings.selection.describe()}, "
              f"{selected - circuit.n_residual_kept:,} of them pruned: on no path from input to "
              f"logits" if isinstance(selected, int) and job.settings.selection is not None
              else "")
    typer.echo(("partial: " if circuit.partial else "") +
               f"kept {circuit.size()}{pruned}; metric {job.settings.common.metric} of circuit "
               f"{shown(circuit.metric_circuit)} (full model {shown(circuit.metric_full)}); "
               f"{circuit.results['runtime_s']:.1f} s")
    typer.echo("wrote " + ", ".join(str(p) for p in written))
    if circuit.partial:
        kept, total = circuit.n_edges_kept, len(circuit.graph.edges)
        decided = circuit.results.get("n_edges_decided", kept)
        _err(f"{interrupts.name}: {decided} of {total} edges decided; undecided edges are kept "
             f"and the files are marked partial; {resume_hint(job.out_dir)}")
        raise typer.Exit(interrupts.exit_code)


class _Status:
    """Plain status lines on stderr, silenced by --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            _err(message)


class _ProgressDisplay:
    """The engine's progress: a live rich bar when stderr is a terminal; otherwise a plain line
    at every tenth of the edges; nothing with --quiet."""

    def __init__(self, quiet: bool, method: str = "acdc"):
        self.quiet = quiet
        self.method = method
        self.started = False
        self.bar: Any = None  # a rich Progress while shown (rich is imported when needed)
        self.task_id = None
        self.next_report = 0.1

    def __enter__(self) -> _ProgressDisplay:
        return self

    def _start(self) -> None:
        """The bar, at the first report (a method that reports no progress shows none)."""
        self.started = True
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn(f"[bold]{self.method}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("kept {task.fields[kept]}"), TextColumn("metric {task.fields[metric]}"),
                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                TextColumn("[dim]{task.fields[edge]}"),
                console=console, transient=False,
            )
            self.bar.__enter__()
            self.task_id = self.bar.add_task("acdc", total=None, kept="-", metric="-", edge="",
                                             eta="-")

    def update(self, progress) -> None:
        if self.quiet:
            return
        if not self.started:
            self._start()
        if self.bar is not None:
            self.bar.update(self.task_id, completed=progress.decided, total=progress.total,
                            kept=progress.kept, metric=f"{progress.metric:.4g}", edge=progress.edge,
                            eta=_duration(getattr(progress, "eta_s", None)))
            return
        if progress.total and progress.decided >= self.next_report * progress.total:
            while self.next_report * progress.total <= progress.decided:
                self.next_report += 0.1
            _err(f"{progress.decided}/{progress.total} edges decided, {progress.kept} kept, "
                 f"metric {progress.metric:.4g}, {progress.elapsed_s:.1f} s, ETA "
                 f"{_duration(getattr(progress, 'eta_s', None))}")

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _duration(seconds: float | None) -> str:
    """`1:02:03`, `2:03`, or `-` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --------------------------------------------------------------------------- sweep


@app.command()
@user_errors
@with_method_options(methods=["acdc"], exclude=["threshold", "engine"])
def sweep(
    ctx: typer.Context, task: TaskOption = None,
    thresholds: Annotated[str | None, typer.Option(
        metavar="LO:HI:N|T1,T2,...",
        help="The thresholds: N log-spaced from LO to HI (1e-4:1e-1:13), or a list "
             "(0.001,0.01,0.1); at most 1000. Default: the ACDC paper's grid for the task (ioi, "
             "greater-than, induction, tracr), else 1e-4:1e-1:13.")] = None,
    jobs: Annotated[int, typer.Option(
        min=1, help="Local worker processes running thresholds side by side; at most as many "
                    "as this machine's CPU cores and memory hold (the command says when it "
                    "runs fewer).")] = 1,
    ray: Annotated[str | None, typer.Option(
        metavar="ADDRESS", help="Run each threshold as a task on the Ray cluster at ADDRESS "
                                "(HOST:PORT), `auto` (the cluster this machine belongs to) or "
                                "`local` (start one here); needs pip install 'circuit[ray]'.")
    ] = None,
    ray_timeout: Annotated[float, typer.Option(
        min=1.0, max=3600.0, metavar="SECONDS",
        help="How long to wait for the Ray cluster to answer (1 to 3600).")] = 20.0,
    model: ModelOption = None, metric: MetricOption = None, ablation: AblationOption = None,
    granularity: GranularityOption = Granularity.qkv, seed: SeedOption = None,
    device: DeviceOption = "cpu", dtype: DtypeOption = Dtype.float32, threads: ThreadsOption = 0,
    out: Annotated[Path | None, typer.Option(
        help="Sweep directory. Default: a new runs/<task>-sweep-<YYYYmmdd-HHMMSS>/. A directory "
             "that holds this same sweep is continued.")] = None,
    quiet: QuietOption = False, no_render: NoRenderOption = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show Ray's own log lines (kept out of the terminal by default).")
    ] = False,
    resume: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Continue the sweep in DIR with the settings of DIR/sweep.json: "
                            "finished thresholds are kept, unfinished runs resume from their "
                            "decision logs.")] = None,
    **options: Any,
) -> None:
    """Run ACDC at every threshold of a grid: one run directory per threshold (DIR/tau-<t>/,
    each evaluated as `circuit evaluate` does), DIR/sweep.json (edges, nodes, every metric and
    f(C) per threshold; every edge's rank score) and plots (DIR/sweep.svg, .png). Every input
    is checked, and a Ray cluster connected, before anything is written."""
    from acdc.sweep import (
        GridError,
        RunOptions,
        SweepConflict,
        choose_workers,
        connect_ray,
        open_sweep,
        prepare_resume,
        prepare_sweep,
        run_sweep,
    )

    if ray is not None and jobs > 1:
        raise typer.BadParameter("with --ray the cluster runs the thresholds; leave out --jobs",
                                 ctx=ctx, param_hint="--jobs")
    if ray is None and "ray_timeout" in _given_options(ctx, {"ray_timeout"}):
        raise typer.BadParameter("only with --ray ADDRESS", ctx=ctx, param_hint="--ray-timeout")
    given = _given_options(ctx, {"task", "model", "metric", "ablation", "granularity", "seed",
                                 "device", "dtype", "thresholds", *options})
    candidates = given.pop("candidates", 0) or 0
    command = tuple(["circuit", *sys.argv[1:]]) if Path(sys.argv[0]).name == "circuit" else None
    status = _Status(quiet)
    try:
        if resume is not None:
            if out is not None and not _same_dir(out, resume):
                raise typer.BadParameter(f"--out {out} is not the sweep's directory {resume}",
                                         ctx=ctx, param_hint="--out")
            request = prepare_resume(resume, given, candidates, command)
        elif task is None:
            raise typer.BadParameter("required unless --resume DIR is given", ctx=ctx,
                                     param_hint="'--task' / '-t'")
        else:
            given.pop("task")
            request = prepare_sweep(task, **given, candidates=candidates, out=out,
                                    command=command)
    except GridError as error:
        raise typer.BadParameter(str(error).removeprefix("--thresholds "), ctx=ctx,
                                 param_hint="--thresholds") from None
    except SweepConflict as conflict:
        raise typer.BadParameter(str(conflict), ctx=ctx,
                                 param_hint="--resume" if resume else "--out") from None
    total = len(request.settings.grid.thresholds)
    workers = (choose_workers(jobs, request.left(), threads, request.settings) if ray is None
               else None)
    if workers is not None and workers.note is not None:
        _err(f"warning: {workers.note}")
    connection = connect_ray(ray, ray_timeout, verbose) if ray is not None else None
    try:
        plan = open_sweep(request)
        with contextlib.closing(plan), _Interrupts() as interrupts:
            _announce_sweep(plan, status)
            counter = [len(plan.done)]
            partial: list[str] = []

            def on_threshold(job, outcome) -> None:
                for message in outcome.warnings:
                    _err(f"warning: tau {job.threshold:g}: {_one_line(message)}")
                if outcome.status != "finished":
                    decided = outcome.n_edges_decided
                    partial.append(f"tau {job.threshold:g} after "
                                   f"{'?' if decided is None else decided} of "
                                   f"{outcome.n_edges_total} edges decided")
                    status.say(f"tau {job.threshold:g}: {interrupts.name} after "
                               f"{'?' if decided is None else decided} of "
                               f"{outcome.n_edges_total} edges decided; its files are marked "
                               f"partial (undecided edges kept)")
                    return
                counter[0] += 1
                status.say(f"tau {job.threshold:g}: kept {outcome.n_edges_kept} of "
                           f"{outcome.n_edges_total} edges, {outcome.seconds:.1f} s "
                           f"[{counter[0]}/{total}]")

            try:
                result = run_sweep(plan, RunOptions(threads, not no_render),
                                   jobs=workers or 1, ray=connection, on_threshold=on_threshold)
            except KeyboardInterrupt:
                if plan.discarded:
                    _err(f"{interrupts.name} before any threshold wrote a file; nothing was "
                         f"written")
                else:
                    stopped = f" ({', '.join(partial)}: partial)" if partial else ""
                    _err(f"{interrupts.name}: {counter[0]} of {total} thresholds finished"
                         f"{stopped}; resume with `circuit sweep --resume "
                         f"{shlex.quote(str(plan.out_dir))}`")
                raise typer.Exit(interrupts.exit_code) from None
    finally:
        if connection is not None:
            connection.close()
    for line in _sweep_table(result.record):
        typer.echo(line)
    typer.echo("wrote " + ", ".join(str(p) for p in result.written) +
               f" and {total} run directories {plan.out_dir / 'tau-*'}")
    if result.failures:
        first = result.failures[0]
        more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        _err(f"error: threshold {first.threshold:g} did not finish: {first.message}{more}; "
             f"resume with `circuit sweep --resume {shlex.quote(str(plan.out_dir))}`")
        raise typer.Exit(1)


def _same_dir(a: Path, b: Path) -> bool:
    from acdc.run import same_path

    return same_path(a, b)


def _announce_sweep(plan, status: _Status) -> None:
    settings, grid = plan.settings, plan.settings.grid
    run = settings.run
    if plan.resumed:
        status.say(f"resuming the sweep in {plan.out_dir}: {len(plan.done)} of "
                   f"{len(grid.thresholds)} thresholds finished")
    own = ", ".join(key for key in ("abs", "reverse_head_order")
                    if getattr(run.settings, key, False))
    status.say(f"sweep of task {settings.spec.name} ({settings.spec.n_prompts} prompts): "
               f"{len(grid.thresholds)} thresholds from {grid.thresholds[0]:g} to "
               f"{grid.thresholds[-1]:g} ({grid.source}{': ' + grid.spec if grid.spec else ''}), "
               f"metric {run.common.metric}, ablation {run.common.ablation}"
               f"{', ' + own if own else ''}; {len(plan.jobs)} to run")
    if plan.jobs:
        status.say(f"loading model {run.model} ...")


def _sweep_table(record: dict[str, Any]) -> list[str]:
    """One row per threshold: edges, nodes, f(C) per metric, the search's runtime."""
    runs = record["runs"]
    names = next((list(r["faithfulness"]) for r in runs if r["status"] == "finished"), [])
    header = ("TAU", "EDGES", "NODES", *[f"F({n})" for n in names], "SEARCH S")
    rows = [header]
    for r in runs:
        if r["status"] != "finished":
            rows.append((f"{r['threshold']:g}", "-", "-", *["-"] * len(names), "unfinished"))
            continue
        rows.append((f"{r['threshold']:g}", str(r["n_edges_kept"]), str(r["n_nodes_kept"]),
                     *[_num(r["faithfulness"][n]) for n in names], f"{r['runtime_s']:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    total = record.get("n_edges_total")
    lines.append(f"edges and nodes kept of {total} edges and {record.get('n_nodes_total')} nodes; "
                 f"f = (m - empty) / (full - empty)" if total else "no threshold finished yet")
    return lines


# --------------------------------------------------------------------------- graph


@app.command()
@user_errors
def graph(
    model: Annotated[
        str,
        typer.Option(
            help="Checkpoint directory (config.json is enough), local Hugging Face directory or "
                 "TransformerLens model name."
        ),
    ],
    granularity: Annotated[Granularity, typer.Option(help=GRANULARITY_HELP)] = Granularity.qkv,
    batch: Annotated[
        int,
        typer.Option(min=1, help="Prompts per run, for the memory estimate."),
    ] = 50,
    seq_len: Annotated[
        int,
        typer.Option(min=1, help="Tokens per prompt, for the memory estimate."),
    ] = 32,
) -> None:
    """Node and edge counts of a model's graph and a memory estimate for a run; reads no weights.

    A checkpoint or a local Hugging Face directory is read from its config.json alone (Hugging
    Face families: GPT-2, GPT-NeoX/Pythia, GPT-J, Llama, Mistral, Qwen2, Gemma, Gemma 2, OPT,
    GPT-Neo), without torch. In a parallel block (GPT-NeoX, GPT-J) an MLP does not read its
    own layer's heads; under grouped-query attention every query head keeps its own q, k and
    v input, so the counts are those of the MIB graph.

    The memory estimate (fp32, corrupt ablation) adds up what a run allocates: parameters;
    2 x senders x batch x seq_len x d_model (every sender's output delta and ablated value);
    2 x 3 x layers x query heads x batch x seq_len x d_head (committed and ablated q/k/v); cached
    receiver inputs (at most 256 MiB); the unembedding (head-to-vocabulary factors of at most
    256 MiB, logits at one position per prompt); and the largest per-layer
    temporaries. The Python runtime and libraries (about 0.5-1 GB) come on top.
    """
    from acdc.core.graph import count_edges
    from acdc.core.shapes import load_shape
    from acdc.methods.acdc.memory import estimate_memory

    chosen = Granularity(granularity).value
    shape = load_shape(model)
    counts = count_edges(shape.graph_shape(chosen))
    estimate = estimate_memory(shape, counts["senders"], batch, seq_len)
    heads = f"{shape.n_heads} heads"
    if shape.n_key_value_heads:
        heads = f"{shape.n_heads} query heads, {shape.n_key_value_heads} key/value heads"
    mlp = "attention only"
    if shape.has_mlp:
        mlp = f"{'gated ' if shape.mlp_kind == 'gated' else ''}d_mlp {shape.d_mlp}"
    family = f" ({shape.architecture})" if shape.architecture else ""
    typer.echo(f"model {model}{family}: {shape.n_layers} layers, {heads}, d_model "
               f"{shape.d_model}, d_head {shape.d_head}, {mlp}, vocab {shape.d_vocab}, "
               f"n_ctx {shape.n_ctx}")
    if shape.features:
        typer.echo(f"architecture: {'; '.join(shape.features)}")
    total = shape.n_params_total
    rest = ("the embeddings, unembedding, biases and norms" if shape.n_params_all is not None
            else "the embeddings and unembedding")
    zoo = "" if shape.architecture else " (the count `circuit zoo eval` gives)"
    typer.echo(f"parameters: about {_count(total)} in all ({_bytes(4 * total)} in fp32): "
               f"{_count(shape.n_params)} in the blocks' weight matrices{zoo} and "
               f"{_count(total - shape.n_params)} in {rest}")
    typer.echo(f"graph ({chosen}): {counts['nodes']} nodes ({counts['senders']} senders: "
               f"1 input, "
               f"{counts['heads']} heads, {counts['mlps']} MLPs; {counts['receivers']} receivers)")
    if shape.parallel_attn_mlp and shape.has_mlp:
        typer.echo("parallel blocks: an MLP reads what its layer's heads read, not those heads")
    typer.echo(f"edges: {counts['edges']:,} = {counts['residual']:,} residual + "
               f"{counts['direct']:,} direct")
    for kind, n in counts["by_receiver"].items():
        typer.echo(f"  into {kind}: {n:,}")
    typer.echo(f"memory estimate for a run (batch {batch}, {seq_len} tokens, fp32): about "
               f"{_bytes(estimate['total'])} = parameters {_bytes(estimate['params'])} + sender "
               f"caches {_bytes(estimate['caches'])} + q/k/v caches {_bytes(estimate['qkv'])} + "
               f"receiver inputs {_bytes(estimate['inputs'])} + unembedding "
               f"{_bytes(estimate['unembedding'])} + temporaries "
               f"{_bytes(estimate['temporaries'])}, plus the Python runtime")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _count(n: int) -> str:
    if n >= 1e12:
        return f"{n / 1e12:.2f}T"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


# --------------------------------------------------------------------------- tasks


@app.command()
@user_errors
def tasks() -> None:
    """List the bundled tasks: name, metric, threshold, default model, description."""
    from acdc.core.tasks.reading import list_tasks

    specs = list_tasks()
    if not specs:
        typer.echo("no bundled tasks found")
        return
    rows = [(s.name, s.metric, f"{s.threshold:g}", _short_model(s.model), s.description)
            for s in specs]
    header = ("NAME", "METRIC", "THRESHOLD", "MODEL", "DESCRIPTION")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
                   + "  " + row[4])


@app.command()
@user_errors
def metrics() -> None:
    """List the metrics a run can minimise: name, what it reads besides the circuit's logits
    (the clean model's logits, the task's answers, or the next token), direction, meaning."""
    from acdc.core.settings import METRIC_INPUTS, METRICS

    rows = [(name, METRIC_INPUTS[name], "lower is better", text) for name, text in METRICS.items()]
    header = ("NAME", "READS", "DIRECTION", "DESCRIPTION")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
                   + "  " + row[3])


@app.command()
@user_errors
def methods() -> None:
    """List the discovery methods: name, what a method returns (a circuit, or edge or node
    scores that --top-n, --edges-fraction or --threshold cut), its options, what it is."""
    import dataclasses as dc

    from acdc.core.settings import option_flag
    from acdc.methods.registry import METHODS

    returns = {"kept": "circuit", "edges": "edge scores", "nodes": "node scores"}
    rows = [(name, returns[m.returns],
             " ".join(option_flag(f) for f in dc.fields(m.settings_type)) or "-", m.description)
            for name, m in METHODS.items()]
    header = ("NAME", "RETURNS", "OPTIONS", "DESCRIPTION")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
                   + "  " + row[3])


def _short_model(model: str | None) -> str:
    if model is None:
        return "-"
    path = Path(model)
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else model
    except ValueError:
        return model


# --------------------------------------------------------------------------- render


@app.command()
@user_errors
def render(
    circuit_json: Annotated[
        Path,
        typer.Argument(help="A circuit.json written by `circuit discover`."),
    ],
    format: Annotated[
        RenderFormat,
        typer.Option("--format", "-f", help="Output format; svg and png need Graphviz `dot`."),
    ] = RenderFormat.svg,
    out: Annotated[
        Path | None,
        typer.Option(help="Output file. Default: next to the JSON, with the format's suffix."),
    ] = None,
    all_edges: Annotated[
        bool,
        typer.Option("--all-edges", help="Draw removed edges too (light grey, dotted)."),
    ] = False,
    no_score_width: NoScoreWidthOption = False,
) -> None:
    """Re-draw a saved circuit (circuit.json or a MIB circuit file) as SVG, PNG or DOT
    (without the model)."""
    from acdc.core.circuit import load_circuit
    from acdc.core.files import check_output, new_directories
    from acdc.export.dot import circuit_title, to_dot
    from acdc.export.dot import render as render_dot

    file_format = RenderFormat(format).value
    circuit = load_circuit(circuit_json)
    source = to_dot(circuit, all_edges=all_edges, title=circuit_title(circuit),
                    score_width=not no_score_width)
    target = out if out is not None else circuit_json.with_suffix(f".{file_format}")
    check_output(target, "--out" if out is not None else "", [circuit_json])
    with new_directories(target.parent):
        written = render_dot(source, target, file_format)
    typer.echo(f"wrote {written} ({_node_words(circuit)}{circuit.size()} kept)")


# --------------------------------------------------------------------------- export


MAX_D_MODEL = 1 << 20  # far above any model's residual width (GPT-3: 12,288)


class ExportFormat(str, Enum):
    mib = "mib"
    graphml = "graphml"
    csv = "csv"


@app.command()
@user_errors
def export(
    target: Annotated[Path, typer.Argument(
        metavar="RUN_DIR_OR_CIRCUIT_JSON",
        help="A run directory written by `circuit discover`, a circuit.json or a MIB circuit "
             "file.")],
    format: Annotated[ExportFormat, typer.Option(
        "--format", "-f", help="mib: the MIB circuit track's JSON (residual edges, score and "
                               "in_graph); graphml: the graph with kept flags and scores "
                               "(networkx); csv: one row per edge.")],
    out: Annotated[Path | None, typer.Option(
        help="File to write. Default: beside the circuit, <stem>.mib.json, .graphml or "
             ".csv.")] = None,
    d_model: Annotated[int | None, typer.Option(
        min=1, max=MAX_D_MODEL,
        help="mib: the model's d_model. Default: from the run's model configuration (run.yaml "
             "beside the circuit, else the circuit's model).")] = None,
) -> None:
    """Export a circuit for other tools: a MIB circuit file, GraphML or CSV."""
    from acdc.export.formats import export_circuit

    written, circuit = export_circuit(target, ExportFormat(format).value, out, d_model)
    if ExportFormat(format) is ExportFormat.mib:  # counted as the file (and MIB) counts them
        from acdc.core.mib import mib_edge_counts

        kept, total = mib_edge_counts(circuit)
        size = f"{kept} of {total} edges in_graph: MIB counts the residual edges only"
    else:
        size = f"{circuit.size()} kept"
    typer.echo(f"wrote {written} ({_node_words(circuit)}{size})")


def _node_words(circuit) -> str:
    """`node circuit: 3 of 6 heads and MLPs, ` for a node circuit, else nothing."""
    if circuit.level != "node":
        return ""
    from acdc.core.selection import kept_nodes, scored_nodes

    graph = circuit.graph
    return (f"node circuit: {len(kept_nodes(graph, circuit.kept))} of "
            f"{len(scored_nodes(graph))} heads and MLPs, ")


# --------------------------------------------------------------------------- report


@app.command()
@user_errors
def report(
    target: Annotated[Path, typer.Argument(
        metavar="RUN_OR_SWEEP_DIR",
        help="A run directory (`circuit discover`), a sweep directory (tau-<threshold>/ run "
             "directories, sweep.json), or a circuit file.")],
    out: Annotated[Path | None, typer.Option(
        help="HTML file to write. Default: report.html in the directory (beside a circuit "
             "file: <name>.html).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Sweep: the threshold whose circuit is drawn and listed. Default: the middle one "
             "of the sweep's thresholds.")] = None,
    comparison: Annotated[list[Path] | None, typer.Option(
        metavar="DIR", help="A `circuit compare` output directory to include (comparison.json, "
                            "roc.json and their drawings); repeat for several. Default: those "
                            "found in the directory and its subdirectories.")] = None,
    no_score_width: NoScoreWidthOption = False,
) -> None:
    """Write one self-contained HTML page about a run or a sweep: settings, the circuit
    drawing, metrics, faithfulness, sweep and ROC plots, and a sortable table of edges."""
    from acdc.report import write_report

    written = write_report(target, out, threshold=threshold, comparisons=comparison,
                           score_width=not no_score_width)
    typer.echo(f"wrote {written}")


# --------------------------------------------------------------------------- compare


@app.command()
@user_errors
def compare(
    a: Annotated[Path, typer.Argument(
        metavar="A", help="A circuit.json, a run directory, or a sweep directory (tau-<threshold>/ "
                          "run directories).")],
    b: Annotated[Path | None, typer.Argument(
        metavar="[B]", help="A second circuit, run directory or sweep directory.")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", "-r", metavar="REF",
        help="The circuit to score against: a circuit.json, an edge-list file (one edge a line, "
             "# comments) or a canonical circuit: ioi-gpt2, greater-than-gpt2, tracr-reverse, "
             "tracr-proportion.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output directory. Default: runs/compare-<YYYYmmdd-HHMMSS>/.")] = None,
    no_render: NoRenderOption = False,
) -> None:
    """Compare two circuits (edges and nodes in both / only in one, Jaccard, a drawing of the
    union), score circuits against a reference (TPR, FPR, precision at edge and node level),
    and draw the ROC curve and AUC of a sweep, or of a circuit's ranking (its edge or node
    scores, every cut), against the reference."""
    from acdc.evaluation.summary import summarize, write_outputs

    summary = summarize([a] if b is None else [a, b], reference)
    for line in _comparison_lines(summary):
        typer.echo(line)
    written = write_outputs(summary, out, render_svg=not no_render)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _comparison_lines(summary) -> list[str]:
    from acdc.evaluation.sources import Sweep
    from acdc.evaluation.summary import RankingScores, SweepScores, describe
    from acdc.export.dot import circuit_title

    lines = []
    for item in summary.items:
        info = describe(item)
        if isinstance(item.value, Sweep):
            thresholds = info["thresholds"]
            lines.append(f"{item.key} {item.name}: sweep of {len(thresholds)} threshold(s), "
                         f"{min(thresholds):g} to {max(thresholds):g}")
        else:
            level = (" (a node circuit: every edge among its nodes)" if info["level"] == "node"
                     else "")
            lines.append(f"{item.key} {item.name}: {info['edges']} edges, {info['nodes']} nodes"
                         f"{level} ({circuit_title(item.value)})")
    if summary.pair is not None:
        for level, part in (("edges", summary.pair.edges), ("nodes", summary.pair.nodes)):
            jaccard = "-" if part.jaccard is None else f"{part.jaccard:.3f}"
            lines.append(f"{level}: {len(part.both)} in both, {len(part.only_a)} only in A, "
                         f"{len(part.only_b)} only in B; Jaccard {jaccard}")
    if summary.reference is None:
        return lines
    data = summary.comparison_json()
    ref, totals = data["reference"], data["totals"]
    lines.append(f"reference {ref['name']}: {ref['edges']} of {totals['edges']} edges, "
                 f"{ref['nodes']} of {totals['nodes']} nodes")
    header = ("", "edge TPR", "edge FPR", "edge prec", "node TPR", "node FPR", "node prec")
    rows = []
    for item, scores in zip(summary.items, summary.scores, strict=True):
        if isinstance(scores, SweepScores):
            node_auc = "undefined" if scores.node is None else f"{scores.node.auc:.3f}"
            lines.append(f"{item.key} ROC AUC: edges {scores.edge.auc:.3f}, nodes {node_auc} "
                         f"(pessimistic staircase)")
            for run, run_scores in zip(item.value.runs, scores.runs, strict=True):
                rows.append((f"{item.key} tau {run.threshold:g}", *_score_cells(run_scores)))
        elif isinstance(scores, RankingScores):
            node_auc = "undefined" if scores.node is None else f"{scores.node.auc:.3f}"
            lines.append(f"{item.key} ROC AUC of its {scores.ranked} ranking: edges "
                         f"{scores.edge.auc:.3f}, nodes {node_auc} (every cut, pessimistic "
                         f"staircase)")
            rows.append((item.key, *_score_cells(scores.circuit)))
        else:
            rows.append((item.key, *_score_cells(scores)))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _score_cells(scores) -> tuple[str, ...]:
    return tuple(_rate(getattr(getattr(scores, level), what))
                 for level in ("edge", "node") for what in ("tpr", "fpr", "precision"))


# --------------------------------------------------------------------------- evaluate


@app.command()
@user_errors
def evaluate(
    target: Annotated[Path, typer.Argument(
        metavar="RUN_DIR_OR_CIRCUIT_JSON",
        help="A run directory written by `circuit discover`, or a circuit.json.")],
    task: Annotated[str | None, typer.Option(
        "--task", "-t", help="Bundled task name or task YAML file to evaluate on. Default: the "
                             "run's (run.yaml), else the circuit file's task.")] = None,
    model: Annotated[str | None, typer.Option(
        help="Checkpoint directory, local Hugging Face directory or TransformerLens model name. "
             "Default: the run's.")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        help="Metric to evaluate: kl, logit_diff, prob_diff, nll or l2; repeat it or separate "
             "by commas for several. Default: every metric the task supports.")] = None,
    ablation: Annotated[Ablation | None, typer.Option(
        help="What an ablated edge carries: the corrupted run's value, or zero. Default: the "
             "run's.")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of a generated task. Default: the run's (the task's own with --task).")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu, cuda or cuda:N. Default: the run's, else cpu.")] = None,
    dtype: Annotated[Dtype | None, typer.Option(
        help="Model precision. Default: the run's, else float32.")] = None,
    curve: Annotated[bool, typer.Option(
        "--curve", help="Also evaluate the faithfulness curve of the edges ranked by |score| at "
                        "the MIB fractions of the edges (a node circuit: of its heads and MLPs, "
                        "every edge among the top ones; CPR, CMD; plotted as SVG and PNG).")
    ] = False,
    ranking: Annotated[Path | None, typer.Option(
        metavar="SWEEP_DIR",
        help="Rank the curve's edges by a sweep's rank scores (the largest threshold whose "
             "circuit keeps an edge) instead of the circuit's scores; implies --curve.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="JSON file to write. Default: evaluation.json beside the circuit.")] = None,
    threads: ThreadsOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Evaluate a circuit: the metrics of the full model, the empty circuit, the circuit and
    its complement, and the normalised faithfulness f(C), for every metric the task supports;
    writes evaluation.json beside the circuit."""
    from acdc.evaluation.evaluate import (
        node_counts,
        prepare_evaluation,
        run_evaluation,
        write_evaluation,
    )

    metrics = ([m.strip() for item in metric for m in item.split(",") if m.strip()]
               if metric else None)
    job = prepare_evaluation(
        target, task=task, model=model, metrics=metrics,
        ablation=ablation.value if ablation is not None else None, seed=seed, device=device,
        dtype=dtype.value if dtype is not None else None, out=out, curve=curve,
        ranking=ranking)
    status = _Status(quiet)
    circuit = job.circuit
    nodes = node_counts(circuit)
    kind = "node circuit: " if circuit.level == "node" else ""
    status.say(f"circuit {job.circuit_path}: {kind}{nodes['n_nodes_kept']} of "
               f"{nodes['n_nodes_total']} heads and MLPs, {circuit.n_edges_kept} of "
               f"{len(circuit.graph.edges)} edges; task {job.spec.name} ({job.spec.n_prompts} "
               f"prompts), ablation {job.ablation}")
    status.say(f"loading model {job.model} ...")
    outcome = run_evaluation(job, threads=threads)
    for line in _evaluation_table(outcome.evaluation):
        typer.echo(line)
    if outcome.curve is not None:
        for name in outcome.curve.cpr:
            area, gap = outcome.curve.cpr[name], outcome.curve.cmd[name]
            typer.echo(f"curve {name}: CPR {_num(area)}, CMD {_num(gap)}")
    written = write_evaluation(job, outcome)
    typer.echo(f"{outcome.patched_passes} patched passes after {outcome.recorded_runs} recorded "
               f"runs, {outcome.seconds:.2f} s; wrote " + ", ".join(str(p) for p in written))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _evaluation_table(evaluation) -> list[str]:
    """One row per metric: full, empty, circuit, f(C), complement, f(complement)."""
    header = ("METRIC", "FULL", "EMPTY", "CIRCUIT", "F(C)", "COMPLEMENT", "F(COMPL)")
    rows = [header]
    for name, m in evaluation.metrics.items():
        rows.append((name + (" (higher better)" if m.higher_is_better else ""),
                     _num(m.full.mean), _num(m.empty.mean), _num(m.circuit.mean),
                     _num(m.faithfulness), _num(m.complement.mean),
                     _num(m.complement_faithfulness)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.append(f"means over {evaluation.n_positions} metric positions of "
                 f"{evaluation.n_prompts} prompts (per-prompt spread in the JSON); "
                 f"f = (m - empty) / (full - empty)")
    return lines


# --------------------------------------------------------------------------- zoo


@zoo_app.command("train")
@user_errors
def zoo_train(
    name: Annotated[str, typer.Argument(help="Zoo model name (demo).")],
    out: Annotated[
        Path | None,
        typer.Option(help="Checkpoint directory to write. Default: models/<name>."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    steps: Annotated[
        int | None,
        typer.Option(help="Training steps. Default: the recipe's."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the report.")] = False,
) -> None:
    """Train a zoo model on the CPU; write config.json, model.safetensors and tokenizer.json."""
    from acdc.zoo import train_model

    out_dir = out if out is not None else Path("models") / name

    def on_progress(p) -> None:
        if not quiet:
            _err(f"step {p.step}/{p.steps}  loss {p.loss:.4f}  {p.elapsed_s:.1f} s")

    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens chatter
        report = train_model(name, out_dir, seed=seed, steps=steps, on_progress=on_progress)
    _print_report(report)


@zoo_app.command("eval")
@user_errors
def zoo_eval(
    name: Annotated[str, typer.Argument(help="Zoo model name (demo).")],
    model: Annotated[
        Path | None,
        typer.Option(help="Checkpoint directory. Default: the bundled models/<name>."),
    ] = None,
) -> None:
    """Evaluate a zoo checkpoint on its held-out prompts (top-1 accuracy, logit difference)."""
    from acdc.core.bundled import model_dir
    from acdc.zoo import evaluate_model

    directory = model if model is not None else model_dir(name)
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens chatter
        report = evaluate_model(name, directory)
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    for key, value in report.items():
        if isinstance(value, float) and not math.isnan(value):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} ({v:,} B)" if isinstance(v, int) else f"{k} {v}"
                              for k, v in value.items())
        typer.echo(f"{key}: {value}")


# --------------------------------------------------------------------------- entry point


def main() -> None:
    """Console-script entry point (`circuit = "cli:main"`)."""
    # OpenMP threads that spin while waiting make the engine's many small operations far
    # slower when another process shares the cores; waiting passively costs about nothing.
    # Must be set before torch is imported (the commands import it lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


if __name__ == "__main__":
    main()
