"""`circuit sweep`: ACDC at every threshold of a grid, locally or on Ray."""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from acdc.cli.app import app
from acdc.cli.boundary import err, one_line, user_errors
from acdc.cli.display import (
    Status,
    number,
    table,
)
from acdc.cli.options import (
    AblationOption,
    DeviceOption,
    Dtype,
    DtypeOption,
    Granularity,
    GranularityOption,
    MetricOption,
    ModelOption,
    NoRenderOption,
    Positions,
    PositionsOption,
    QuietOption,
    SeedOption,
    TaskOption,
    ThreadsOption,
    given_options,
    with_method_options,
)
from acdc.cli.signals import Interrupts


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
    granularity: GranularityOption = Granularity.qkv,
    positions: PositionsOption = Positions.none, seed: SeedOption = None,
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
    from acdc.sweeps import (
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
    if ray is None and "ray_timeout" in given_options(ctx, {"ray_timeout"}):
        raise typer.BadParameter("only with --ray ADDRESS", ctx=ctx, param_hint="--ray-timeout")
    given = given_options(ctx, {"task", "model", "metric", "ablation", "granularity",
                                 "positions", "seed", "device", "dtype", "thresholds", *options})
    candidates = given.pop("candidates", 0) or 0
    command = tuple(["circuit", *sys.argv[1:]]) if Path(sys.argv[0]).name == "circuit" else None
    status = Status(quiet)
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
        err(f"warning: {workers.note}")
    connection = connect_ray(ray, ray_timeout, verbose) if ray is not None else None
    try:
        plan = open_sweep(request)
        with contextlib.closing(plan), Interrupts() as interrupts:
            _announce_sweep(plan, status)
            counter = [len(plan.done)]
            partial: list[str] = []

            def on_threshold(job, outcome) -> None:
                for message in outcome.warnings:
                    err(f"warning: tau {job.threshold:g}: {one_line(message)}")
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
                    err(f"{interrupts.name} before any threshold wrote a file; nothing was "
                         f"written")
                else:
                    stopped = f" ({', '.join(partial)}: partial)" if partial else ""
                    err(f"{interrupts.name}: {counter[0]} of {total} thresholds finished"
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
        err(f"error: threshold {first.threshold:g} did not finish: {first.message}{more}; "
             f"resume with `circuit sweep --resume {shlex.quote(str(plan.out_dir))}`")
        raise typer.Exit(1)


def _same_dir(a: Path, b: Path) -> bool:
    from acdc.run import same_path

    return same_path(a, b)


def _announce_sweep(plan, status: Status) -> None:
    settings, grid = plan.settings, plan.settings.grid
    run = settings.run
    if plan.resumed:
        status.say(f"resuming the sweep in {plan.out_dir}: {len(plan.done)} of "
                   f"{len(grid.thresholds)} thresholds finished")
    own = ", ".join([*(key for key in ("abs", "reverse_head_order")
                       if getattr(run.settings, key, False)),
                     *([f"positions {run.common.positions}"]
                       if run.common.positions != "none" else [])])
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
                     *[number(r["faithfulness"][n]) for n in names], f"{r['runtime_s']:.2f}"))
    lines = table(rows, right=range(1, len(header)))
    total = record.get("n_edges_total")
    lines.append(f"edges and nodes kept of {total} edges and {record.get('n_nodes_total')} nodes; "
                 f"f = (m - empty) / (full - empty)" if total else "no threshold finished yet")
    return lines


