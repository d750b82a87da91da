"""`circuit discover`: run a discovery method on a task and write the run's files."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer

from acdc.cli.app import app
from acdc.cli.boundary import err, user_errors
from acdc.cli.display import (
    ProgressDisplay,
    Status,
)
from acdc.cli.options import (
    AblationOption,
    DeviceOption,
    Dtype,
    DtypeOption,
    Granularity,
    GranularityOption,
    MaxMemoryOption,
    MethodOption,
    MetricOption,
    ModelOption,
    NoRenderOption,
    NoScoreWidthOption,
    OutOption,
    Positions,
    PositionsOption,
    QuietOption,
    ResumeOption,
    SeedOption,
    TaskOption,
    ThreadsOption,
    given_options,
    method_options,
    with_method_options,
)
from acdc.cli.signals import Interrupts


@app.command()
@user_errors
@with_method_options()
def discover(
    ctx: typer.Context, task: TaskOption = None, model: ModelOption = None,
    method: MethodOption = "acdc", metric: MetricOption = None,
    ablation: AblationOption = None, granularity: GranularityOption = Granularity.qkv,
    positions: PositionsOption = Positions.none,
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

    given = given_options(ctx, {"task", "model", "method", "metric", "ablation", "granularity",
                                 "positions", "seed", "device", "dtype", "out", *options})
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
    _announce(job, Status(quiet))
    with contextlib.closing(job), Interrupts() as interrupts, \
            ProgressDisplay(quiet, job.method.name) as display:
        def on_progress(progress: Any) -> None:
            display.update(progress)
            interrupts.checkpoint()  # a signal received since the last decision stops it here

        try:
            outcome = pipeline.execute(job, on_progress, threads, max_memory)
        except KeyboardInterrupt:
            err(_interrupted_early(job, interrupts))
            raise typer.Exit(interrupts.exit_code) from None
        written = pipeline.write_outputs(job, outcome, render_svg=not no_render,
                                         score_width=not no_score_width)
    _summarize(job, outcome.circuit, written, interrupts)



def _announce(job, status: Status) -> None:
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
    where = ("" if settings.common.positions == "none"
             else f", positions {settings.common.positions}")
    status.say(f"task {spec.name}: {prompts}, method {settings.method}"
               f"{f' ({own})' if own else ''}, "
               f"metric {settings.common.metric}, ablation {settings.common.ablation}{where}")
    status.say(f"loading model {settings.model} ...")


def _settings_of(settings: Any) -> dict[str, Any]:
    from acdc.core.settings import settings_record

    return settings_record(settings)




def _interrupted_early(job, interrupts: Interrupts) -> str:
    """What a signal before the first decision left: a journal to resume, or nothing."""
    from acdc.run import resume_hint

    journal = job.method.journal
    if journal is not None and (job.out_dir / journal.file_name).is_file():
        return f"{interrupts.name} before the first decision; {resume_hint(job.out_dir)}"
    return f"{interrupts.name} before the search started; nothing was written"


def _summarize(job, circuit, written: list[Path], interrupts: Interrupts) -> None:
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
        err(f"{interrupts.name}: {decided} of {total} edges decided; undecided edges are kept "
             f"and the files are marked partial; {resume_hint(job.out_dir)}")
        raise typer.Exit(interrupts.exit_code)


