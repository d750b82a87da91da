"""The `circuit` command line: parse options, call the `acdc` library, print and write files.

Commands: `discover` (run ACDC on a task and write circuit.json, circuit.dot, circuit.svg,
run.yaml and decisions.jsonl, the decision log that `discover --resume DIR` continues from; see
`acdc/runlog.py`), `graph` (node and edge counts and a memory estimate from a model's config
alone), `tasks` (the bundled tasks), `render` (re-draw a saved circuit) and `zoo train|eval`
(the project's own small models).

Exit codes: 0 success; 1 a user error (`AcdcError`: bad task file, missing model, unknown
metric ...), reported as one line `error: ...` on stderr with no traceback; 2 a usage error
(unknown option, bad choice), as typer reports it; 130 a run interrupted with Ctrl-C (the
partial circuit is still written, and `--resume` continues it).

The library and torch are imported inside the commands, so `circuit --help` is fast.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from acdc.errors import AcdcError

app = typer.Typer(
    name="circuit",
    help="Automated circuit discovery (ACDC) on TransformerLens models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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
    """Show our own warnings (rendering fall-backs) as one line each; drop library chatter."""
    from acdc.export import RenderWarning

    seen: set[str] = set()
    for item in caught:
        if issubclass(item.category, RenderWarning):
            text = _one_line(str(item.message))
            if text not in seen:
                seen.add(text)
                _err(f"warning: {text}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- discover


@app.command()
@user_errors
def discover(
    ctx: typer.Context,
    task: Annotated[
        str | None,
        typer.Option(
            "--task", "-t",
            help="Bundled task name (see `circuit tasks`) or a task YAML file. Required unless "
                 "--resume is given."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint directory, local Hugging Face directory or TransformerLens model "
                 "name. Default: the task's model."
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="ACDC threshold tau: an edge is removed when removing it raises the metric by "
                 "less than this. Default: the task's."
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="kl, logit_diff, prob_diff, nll or l2. Default: the task's (kl)."),
    ] = None,
    ablation: Annotated[
        Ablation | None,
        typer.Option(
            help="What a removed edge carries: the corrupted run's value, or zero. Default: the "
                 "task's."
        ),
    ] = None,
    granularity: Annotated[Granularity, typer.Option(help=GRANULARITY_HELP)] = Granularity.qkv,
    use_abs: Annotated[
        bool,
        typer.Option(
            "--abs",
            help="Remove an edge when |metric change| < tau (the paper's default is the signed "
                 "rule)."
        ),
    ] = False,
    reverse_head_order: Annotated[
        bool,
        typer.Option(
            "--reverse-head-order",
            help="Visit heads from 0 upwards instead of from the highest index down."
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed. Default: the task's.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    dtype: Annotated[
        Dtype,
        typer.Option(help="Model precision (float32 on CPU; lower precision only on GPUs)."),
    ] = Dtype.float32,
    threads: Annotated[
        int,
        typer.Option(min=0, help="CPU threads; 0 (default): 1 for small models, where threads "
                                 "only add overhead, else PyTorch's default."),
    ] = 0,
    candidates: Annotated[
        int,
        typer.Option(min=0, help="Edge removals evaluated together, with the decisions of one at "
                                 "a time; 0 (default): by model and batch size (more on a GPU, "
                                 "which one test leaves idle)."),
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Output directory. Default: runs/<task>-<YYYYmmdd-HHMMSS>/."),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print only the final summary."),
    ] = False,
    no_render: Annotated[
        bool,
        typer.Option("--no-render", help="Write circuit.dot but not circuit.svg."),
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Continue the interrupted run in DIR: its settings and decisions come from "
                 "DIR/decisions.jsonl, and the outputs are written into DIR."
        ),
    ] = None,
) -> None:
    """Find the circuit of a task: run ACDC, write circuit.json, circuit.dot/.svg, run.yaml and
    decisions.jsonl (the log that `--resume` continues from)."""
    from acdc.methods.acdc import runlog
    from acdc.core.tasks import read_task

    granularity, dtype = Granularity(granularity).value, Dtype(dtype).value
    ablation = Ablation(ablation).value if ablation is not None else None
    command_line = ["circuit", *sys.argv[1:]] if Path(sys.argv[0]).name == "circuit" else None
    logged = None
    if resume is not None:
        logged = runlog.read_log(resume)
        given = {"task": task, "model": model, "threshold": threshold, "metric": metric,
                 "ablation": ablation, "granularity": granularity, "use_abs": use_abs,
                 "reverse_head_order": reverse_head_order, "seed": seed, "device": device,
                 "dtype": dtype, "out": out}
        _check_resume_options(ctx, logged, resume, given)
        if logged.dropped:
            _err(f"warning: {logged.dropped}")
        header = logged.header
        spec = read_task(header["task_file"] or header["task"]).with_overrides(
            metric=header["metric"], threshold=header["threshold"], ablation=header["ablation"],
            seed=header["seed"], model=header["model"])
        granularity, use_abs = header["granularity"], header["abs"]
        reverse_head_order, device, dtype = (header["reverse_head_order"], header["device"],
                                             header["dtype"])
        out = resume
    elif task is None:
        raise typer.BadParameter("required unless --resume DIR is given", ctx=ctx,
                                 param_hint="'--task' / '-t'")
    else:
        spec = read_task(task).with_overrides(metric=metric, threshold=threshold,
                                              ablation=ablation, seed=seed, model=model)
    if spec.model is None:
        raise AcdcError(f"{spec.source}: the task names no model; pass --model DIR|NAME")
    status = _Status(quiet)
    status.say(f"task {spec.name}: {spec.n_prompts} prompts, metric {spec.metric}, "
               f"threshold {spec.threshold:g}, ablation {spec.ablation}")

    import torch

    from acdc.methods.acdc.search import AcdcConfig, cpu_threads, precision_warning, run_acdc
    from acdc.core.graph import build_graph
    from acdc.core.models import load_model
    from acdc.core.tasks import resolve_task

    status.say(f"loading model {spec.model} ...")
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints "Moving model to ..."
        loaded = load_model(spec.model, device=device, dtype=dtype)
    resolved = resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    warning = precision_warning(loaded.model.cfg.dtype, device)
    if warning:
        _err(f"warning: {warning}")
    config = AcdcConfig(threshold=spec.threshold, metric=spec.metric, ablation=spec.ablation,
                        granularity=granularity, use_abs=use_abs,
                        reverse_head_order=reverse_head_order, candidates=candidates)
    n_edges = len(build_graph(loaded.shape.graph_shape(granularity)).edges)
    digest = runlog.task_digest(resolved)
    source = Path(spec.source)
    settings = {
        "task": spec.name, "task_file": str(source.resolve()) if source.is_file() else spec.source,
        "model": spec.model, "threshold": spec.threshold, "metric": spec.metric,
        "ablation": spec.ablation, "granularity": granularity, "abs": use_abs,
        "reverse_head_order": reverse_head_order, "seed": spec.seed, "device": device,
        "dtype": dtype,
    }
    torch.manual_seed(spec.seed)
    chosen = threads or cpu_threads(loaded.shape, device)
    if chosen:
        torch.set_num_threads(chosen)
    if logged is not None:
        out_dir = resume
        _check_resumed_run(logged, n_edges, digest)
        log = runlog.RunLog.reopen(logged)
        replay = logged.decisions
        done = len(replay)
        status.say(f"resuming {out_dir}: all {n_edges} edges already decided, rewriting the "
                   f"outputs" if done == n_edges else
                   f"resuming {out_dir}: {done} of {n_edges} edges decided in {runlog.LOG_NAME}")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = out if out is not None else Path("runs") / f"{_safe(spec.name)}-{stamp}"
        _prepare_out(out_dir)
        _refuse_unfinished_run(out_dir)
        log = runlog.RunLog.create(out_dir, runlog.make_header(settings, n_edges, digest))
        replay = []

    with log, _ProgressDisplay(quiet) as display:
        def record(progress) -> None:
            if not progress.replayed:
                log.append(progress.decision)  # first: the log matters more than the display
            display.update(progress)

        try:
            result = run_acdc(loaded, resolved, config, on_progress=record, replay=replay)
        except KeyboardInterrupt:  # before the search started: the log holds the header
            _err(f"interrupted before the first decision; {_resume_hint(out_dir)}")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    from acdc import export

    run = export.run_config(
        task=spec.name, task_file=settings["task_file"], model=spec.model,
        threshold=spec.threshold, metric=spec.metric, ablation=spec.ablation,
        granularity=granularity, use_abs=use_abs, reverse_head_order=reverse_head_order,
        seed=spec.seed, device=device, dtype=dtype, n_prompts=resolved.n_prompts,
        command=command_line, partial=result.partial,
    )
    written = _write_outputs(result, out_dir, model_name=spec.model, task_name=spec.name,
                             run=run, render_svg=not no_render)
    written.append(log.path)
    kept, total = result.n_edges_kept, len(result.graph.edges)
    summary = (f"kept {kept} of {total} edges ({100 * kept / total:.1f}%); metric {config.metric} "
               f"of circuit {result.metric_circuit:.4g} (full model {result.metric_full:.4g}); "
               f"{result.runtime_s:.1f} s")
    typer.echo(("partial: " if result.partial else "") + summary)
    if result.metric_noise * 10 > abs(spec.threshold):
        _err(f"warning: the metric's rounding noise in {dtype} is {result.metric_noise:.1e}, within "
             f"a factor 10 of the threshold {spec.threshold:g}: decisions near it are noise")
    typer.echo("wrote " + ", ".join(str(p) for p in written))
    if result.partial:
        decided = int(result.decided.sum())
        _err(f"interrupted: {decided} of {total} edges decided; undecided edges are kept and the "
             f"files are marked partial; {_resume_hint(out_dir)}")
        raise typer.Exit(EXIT_INTERRUPTED)


# Options of `discover` that a resumed run takes from its log: parameter -> header key.
RESUMED_OPTIONS = {"task": "task", "model": "model", "threshold": "threshold",
                   "metric": "metric", "ablation": "ablation", "granularity": "granularity",
                   "use_abs": "abs", "reverse_head_order": "reverse_head_order", "seed": "seed",
                   "device": "device", "dtype": "dtype", "out": None}


def _resume_hint(out_dir: Path) -> str:
    return f"resume with `circuit discover --resume {shlex.quote(str(out_dir))}`"


def _check_resume_options(ctx: typer.Context, logged, resume: Path,
                          given: dict[str, Any]) -> None:
    """A usage error naming every option given with --resume that contradicts the log."""
    header = logged.header
    conflicts = []
    for param, key in RESUMED_OPTIONS.items():
        source = ctx.get_parameter_source(param)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = given[param]
        option = "--abs" if param == "use_abs" else "--" + param.replace("_", "-")
        if param == "out":
            if not _same_path(value, resume):
                conflicts.append(f"{option} {value} (the run's directory is {resume})")
            continue
        logged_value = header[key]
        if param == "task":
            agrees = value == header["task"] or _same_path(value, header["task_file"])
        elif param == "model":
            agrees = value == logged_value or _same_path(value, logged_value)
        elif param == "threshold":
            agrees = float(value) == float(logged_value)
        else:
            agrees = value == logged_value
        if not agrees:
            if isinstance(value, bool):
                conflicts.append(f"{option} (the run was without it)")
            else:
                conflicts.append(f"{option} {value} (the run used {logged_value})")
    if conflicts:
        one = len(conflicts) == 1
        raise typer.BadParameter(
            f"{'; '.join(conflicts)} contradict{'s' if one else ''} the settings of the run "
            f"being resumed (from its {logged.path.name}): leave {'it' if one else 'them'} out, "
            f"or start a new run with --out", ctx=ctx, param_hint="--resume")


def _same_path(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    try:
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def _check_resumed_run(logged, n_edges: int, digest: str) -> None:
    """The model and task, re-resolved, must be those the log was written with."""
    from acdc.methods.acdc.runlog import RunLogError

    header = logged.header
    if header["n_edges"] != n_edges:
        raise RunLogError(
            f"cannot resume: {logged.path} was written for a graph of {header['n_edges']} edges, "
            f"model {header['model']} now gives {n_edges} at {header['granularity']} granularity "
            f"(the model changed since the run started)")
    if header["task_sha256"] != digest:
        raise RunLogError(
            f"cannot resume: the task {header['task_file'] or header['task']} no longer gives the "
            f"prompts the run in {logged.path.parent} started with (it was edited, or the model's "
            f"tokenizer changed); restore it, or start a new run")


def _refuse_unfinished_run(out_dir: Path) -> None:
    """Do not start a new run over the log of an unfinished one."""
    from acdc.methods.acdc import runlog

    if not (out_dir / runlog.LOG_NAME).is_file():
        return
    try:
        logged = runlog.read_log(out_dir)
    except runlog.RunLogError:
        return  # nothing that could be resumed
    if not logged.finished:
        raise AcdcError(
            f"--out {out_dir}: holds an unfinished run ({len(logged.decisions)} of "
            f"{logged.n_edges} edges decided); {_resume_hint(out_dir)}, or choose another --out")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "task"


def _prepare_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise AcdcError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        raise AcdcError(f"--out {out_dir}: cannot create directory ({reason})") from None


def _write_outputs(result, out_dir: Path, *, model_name: str, task_name: str, run: dict[str, Any],
                   render_svg: bool) -> list[Path]:
    from acdc import export

    data = export.to_json(result, model_name=model_name, task_name=task_name)
    written = [export.write_json(data, out_dir / "circuit.json")]
    circuit = export.from_json(data, str(out_dir / "circuit.json"))
    config = result.config
    title = f"{task_name} on {model_name}, {config.metric} threshold {config.threshold:g}"
    if result.partial:
        title += " (partial run)"
    source = export.to_dot(circuit, title=title)
    written.append(export.render(source, out_dir / "circuit.dot", "dot"))
    if render_svg:
        svg = export.render(source, out_dir / "circuit.svg", "svg")
        if svg not in written:
            written.append(svg)
    written.append(export.write_run_yaml(run, out_dir / "run.yaml"))
    return written


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

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.task_id = None
        self.next_report = 0.1

    def __enter__(self) -> _ProgressDisplay:
        if self.quiet:
            return self
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self.bar = Progress(
                TextColumn("[bold]ACDC"), BarColumn(), MofNCompleteColumn(),
                TextColumn("kept {task.fields[kept]}"), TextColumn("metric {task.fields[metric]}"),
                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                TextColumn("[dim]{task.fields[edge]}"),
                console=console, transient=False,
            )
            self.bar.__enter__()
            self.task_id = self.bar.add_task("acdc", total=None, kept="-", metric="-", edge="",
                                             eta="-")
        return self

    def update(self, progress) -> None:
        if self.quiet:
            return
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

    The memory estimate (fp32, corrupt ablation) adds up what a run allocates: parameters;
    2 x senders x batch x seq_len x d_model (every sender's output delta and ablated value);
    2 x 3 x layers x heads x batch x seq_len x d_head (committed and ablated q/k/v); cached
    receiver inputs (at most 256 MiB); the unembedding (head-to-vocabulary factors of at most
    256 MiB, logits at one position per prompt); and the largest per-layer
    temporaries. The Python runtime and libraries (about 0.5-1 GB) come on top.
    """
    from acdc.core.graph import build_graph
    from acdc.core.models import load_shape
    from acdc.methods.acdc.search import estimate_memory

    granularity = Granularity(granularity).value
    shape = load_shape(model)
    g = build_graph(shape.graph_shape(granularity))
    counts = graph_counts(g)
    estimate = estimate_memory(shape, len(g.senders), batch, seq_len)
    n_params = estimate["n_params"]
    typer.echo(f"model {model}: {shape.n_layers} layers, {shape.n_heads} heads, d_model "
               f"{shape.d_model}, d_head {shape.d_head}, "
               f"{'d_mlp ' + str(shape.d_mlp) if shape.has_mlp else 'attention only'}, "
               f"vocab {shape.d_vocab}, n_ctx {shape.n_ctx}")
    typer.echo(f"parameters: about {_count(n_params)} ({_bytes(4 * n_params)} in fp32)")
    typer.echo(f"graph ({granularity}): {counts['nodes']} nodes ({counts['senders']} senders: "
               f"1 input, "
               f"{counts['heads']} heads, {counts['mlps']} MLPs; {counts['receivers']} receivers)")
    typer.echo(f"edges: {counts['edges']:,} = {counts['residual']:,} residual + "
               f"{counts['direct']:,} direct")
    for kind, n in counts["by_receiver"].items():
        typer.echo(f"  into {kind}: {n:,}")
    typer.echo(f"memory estimate for a run (batch {batch}, {seq_len} tokens, fp32): about "
               f"{_bytes(estimate['total'])} = parameters {_bytes(estimate['params'])} + sender "
               f"caches {_bytes(estimate['caches'])} + q/k/v caches {_bytes(estimate['qkv'])} + "
               f"receiver inputs {_bytes(estimate['inputs'])} + unembedding "
               f"{_bytes(estimate['unembedding'])} + temporaries {_bytes(estimate['temporaries'])}, "
               f"plus the Python runtime")


def graph_counts(g) -> dict[str, Any]:
    """Node and edge counts of a graph, edges split by kind and by receiver type."""
    by_receiver: dict[str, int] = {}
    for edge in g.edges:
        if edge.kind == "direct":
            key = "heads (direct q/k/v)"
        elif edge.receiver.kind == "head":
            key = f"head {edge.receiver.qkv} inputs" if edge.receiver.qkv else "heads"
        elif edge.receiver.kind == "mlp":
            key = "MLPs"
        else:
            key = "logits"
        by_receiver[key] = by_receiver.get(key, 0) + 1
    return {
        "nodes": len(g.node_names()),
        "senders": len(g.senders),
        "heads": sum(s.kind == "head" for s in g.senders),
        "mlps": sum(s.kind == "mlp" for s in g.senders),
        "receivers": len(g.receivers),
        "edges": len(g.edges),
        "residual": sum(e.kind == "residual" for e in g.edges),
        "direct": sum(e.kind == "direct" for e in g.edges),
        "by_receiver": by_receiver,
    }


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _count(n: int) -> str:
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
    from acdc.core.tasks import list_tasks

    specs = list_tasks()
    if not specs:
        typer.echo("no bundled tasks found")
        return
    rows = [(s.name, s.metric, f"{s.threshold:g}", _short_model(s.model), s.description)
            for s in specs]
    header = ("NAME", "METRIC", "THRESHOLD", "MODEL", "DESCRIPTION")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])


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
) -> None:
    """Re-draw a saved circuit as SVG, PNG or DOT (without the model)."""
    from acdc import export

    format = RenderFormat(format).value
    circuit = export.load_circuit(circuit_json)
    meta = circuit.meta
    title = (f"{meta.get('task')} on {meta.get('model')}, {meta.get('metric')} threshold "
             f"{meta.get('threshold')}")
    if meta.get("partial"):
        title += " (partial run)"
    source = export.to_dot(circuit, all_edges=all_edges, title=title)
    target = out if out is not None else circuit_json.with_suffix(f".{format}")
    written = export.render(source, target, format)
    typer.echo(f"wrote {written} ({circuit.n_edges_kept} of {len(circuit.graph.edges)} edges kept)")


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
    # OpenMP threads that spin while waiting make the engine's many small operations up to
    # 100x slower when another process shares the cores; waiting passively costs ~nothing.
    # Must be set before torch is imported (the commands import it lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


if __name__ == "__main__":
    main()
