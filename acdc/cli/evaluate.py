"""`circuit evaluate`: a circuit's faithfulness and its complement."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acdc.cli.app import app
from acdc.cli.boundary import user_errors
from acdc.cli.display import (
    Status,
    number,
    table,
)
from acdc.cli.options import Ablation, Dtype, QuietOption, ThreadsOption


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
        help="What an ablated edge carries: the corrupted run's value, zero, or the corrupted "
             "prompts' mean (mean, mean-positional). Default: the run's.")] = None,
    seed: Annotated[int | None, typer.Option(
        help="The run seed recorded with the evaluation (default: the run's; the task's with "
             "--task). It changes no number: evaluating is deterministic, and a generated "
             "task's prompts come from its generator's own seed (generator: seed: in the task "
             "file).")] = None,
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
    from acdc.exports.formats import describe_groups

    metrics = ([m.strip() for item in metric for m in item.split(",") if m.strip()]
               if metric else None)
    job = prepare_evaluation(
        target, task=task, model=model, metrics=metrics,
        ablation=ablation.value if ablation is not None else None, seed=seed, device=device,
        dtype=dtype.value if dtype is not None else None, out=out, curve=curve,
        ranking=ranking)
    status = Status(quiet)
    circuit = job.circuit
    nodes = node_counts(circuit)
    kind = "node circuit: " if circuit.level == "node" else ""
    graph = circuit.graph
    where = f" at {describe_groups(graph)}" if graph.positional else ""
    status.say(f"circuit {job.circuit_path}: {kind}{nodes['n_nodes_kept']} of "
               f"{nodes['n_nodes_total']} heads and MLPs, {circuit.n_edges_kept} of "
               f"{len(graph.edges)} edges{where}; task {job.spec.name} ({job.spec.n_prompts} "
               f"prompts), ablation {job.ablation}")
    status.say(f"loading model {job.model} ...")
    outcome = run_evaluation(job, threads=threads)
    for line in _evaluation_table(outcome.evaluation):
        typer.echo(line)
    if outcome.curve is not None:
        for name in outcome.curve.cpr:
            area, gap = outcome.curve.cpr[name], outcome.curve.cmd[name]
            typer.echo(f"curve {name}: CPR {number(area)}, CMD {number(gap)}")
    written = write_evaluation(job, outcome)
    typer.echo(f"{outcome.patched_passes} patched passes after {outcome.recorded_runs} recorded "
               f"runs, {outcome.seconds:.2f} s; wrote " + ", ".join(str(p) for p in written))



def _evaluation_table(evaluation) -> list[str]:
    """One row per metric: full, empty, circuit, f(C), complement, f(complement)."""
    header = ("METRIC", "FULL", "EMPTY", "CIRCUIT", "F(C)", "COMPLEMENT", "F(COMPL)")
    rows = [header]
    for name, m in evaluation.metrics.items():
        rows.append((name + (" (higher better)" if m.higher_is_better else ""),
                     number(m.full.mean), number(m.empty.mean), number(m.circuit.mean),
                     number(m.faithfulness), number(m.complement.mean),
                     number(m.complement_faithfulness)))
    lines = table(rows, right=range(1, len(header)))
    lines.append(f"means over {evaluation.n_positions} metric positions of "
                 f"{evaluation.n_prompts} prompts (per-prompt spread in the JSON); "
                 f"f = (m - empty) / (full - empty)")
    return lines


