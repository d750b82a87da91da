"""Benchmark of `circuit evaluate`: faithfulness of the bundled tasks' circuits, and its cost.

Run from the repository root (one process; writes `OUT/evaluation.json` and `OUT/evaluation.md`):

    python benchmarks/evaluation.py --out benchmarks/results

1. Every bundled task whose model is present: ACDC at the task's defaults (as `circuit discover
   --task X` does), then the circuit's evaluation (every metric the task supports: f(C) and
   f of the complement) and its faithfulness curve over the ACDC scores (CPR, CMD). Costs are
   in forward-pass equivalents (FPE: seconds / the median time of one plain, unhooked
   TransformerLens forward pass on the same clean batch): the recordings (building the
   evaluator), the evaluation of the circuit with its complement, and the curve; then one
   circuit's metrics where the recordings and the evaluator are reused (the median of 9
   ratios to a plain forward pass run just before each, both under the same load: the
   circuit with its complement from an evaluator over recordings made before, as a search's:
   what an evaluation costs in the process that found the circuit, the Python API's
   `discover` then `evaluate`, or a sweep's point), and the time to make that evaluator; and
   `circuit evaluate RUN_DIR` in a fresh process, on the run directory `circuit discover
   --task X` writes (its wall time, and the seconds its evaluation.json counts after loading
   the model, in FPE).
2. A GPT-2-small-shaped model (random weights, 32,923 edges) on a batch of `--batch` x 15
   random tokens: the same three costs for a random circuit of 1% of the edges and a curve over
   random scores, and the time to write a whole circuit's masks at once against 32,923
   `set_edge` calls.

Threads: as `circuit evaluate` uses them (1 for small models, PyTorch's default otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; before torch loads
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from acdc.core.architecture import model_shape  # noqa: E402
from acdc.core.graph import build_graph  # noqa: E402
from acdc.core.loading import LoadedModel, load_model  # noqa: E402
from acdc.core.models import build_model, extract_weights, load_hooked  # noqa: E402
from acdc.core.patching import task_tensors  # noqa: E402
from acdc.core.recordings import record  # noqa: E402
from acdc.core.settings import CommonSettings  # noqa: E402
from acdc.core.tasks.reading import list_tasks  # noqa: E402
from acdc.core.tasks.resolving import resolve_task  # noqa: E402
from acdc.core.tasks.values import Task  # noqa: E402
from acdc.evaluation.faithfulness import CircuitEvaluator  # noqa: E402
from acdc.evaluation.measures import ranking_from_scores  # noqa: E402
from acdc.methods.acdc.search import AcdcSettings, run_acdc  # noqa: E402
from acdc.run import cpu_threads  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
GPT2_CONFIG = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
                   n_ctx=1024, act_fn="gelu_new", normalization_type="LN")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def forward_seconds(hooked, loaded: LoadedModel, task: Task, repeats: int) -> float:
    """The median time of TransformerLens' plain forward pass (`hooked`) on the clean batch."""
    forward = plain_forward(hooked, loaded, task)
    with torch.inference_mode():
        forward()  # warm-up
        return statistics.median(timed(forward)[1] for _ in range(repeats))


def plain_forward(hooked, loaded: LoadedModel, task: Task):
    """TransformerLens' plain forward pass (`hooked`) on the clean batch, as a call."""
    clean = task_tensors(task, loaded.device).clean
    return lambda: hooked(clean)


def costs(loaded: LoadedModel, task: Task, graph, ablation: str, kept, ranking,
          forward_s: float, forward, repeats: int = 9) -> tuple[dict, object, object]:
    evaluator, build_s = timed(lambda: CircuitEvaluator(loaded, task, graph, ablation))
    evaluation, evaluate_s = timed(lambda: evaluator.evaluate(kept))
    passes = evaluator.passes
    curve, curve_s = timed(lambda: evaluator.curve(ranking))
    reused_fpe, evaluator_s = reused_cost(loaded, task, graph, ablation, kept, evaluation,
                                          forward, repeats)
    row = {"forward_s": forward_s, "recordings_s": build_s, "evaluate_s": evaluate_s,
           "curve_s": curve_s, "evaluate_passes": passes,
           "curve_passes": evaluator.passes - passes,
           "recordings_fpe": build_s / forward_s, "evaluate_fpe": evaluate_s / forward_s,
           "curve_fpe": curve_s / forward_s,
           "evaluate_total_fpe": (build_s + evaluate_s) / forward_s,
           "curve_total_fpe": (build_s + curve_s) / forward_s,
           "reused_fpe": reused_fpe,
           "evaluator_s": evaluator_s, "evaluator_fpe": evaluator_s / forward_s}
    return row, evaluation, curve


def reused_cost(loaded: LoadedModel, task: Task, graph, ablation: str, kept, evaluation,
                forward, repeats: int) -> tuple[float, float]:
    """One circuit's metrics (circuit and complement, every metric) where the recordings and
    the evaluator are reused, in FPE: the median over `repeats` of its time over the time of a
    plain forward pass (`forward`) run just before it (pairs, so that both see the same load
    on a shared machine; the evaluator forgets the circuit in between). And the time to make
    that evaluator from recordings made before (a search's: `acdc.evaluation.reuse`), in
    seconds. Its values must be the rebuilt evaluator's."""
    recordings = record(loaded, task, graph, ablation)
    evaluator, evaluator_s = timed(lambda: CircuitEvaluator(loaded, task, graph, ablation,
                                                            recordings=recordings))
    ratios = []
    with torch.inference_mode():
        forward()  # warm-up
        for _ in range(repeats):
            evaluator._cache.clear()  # a new circuit each time, as for a sweep's points
            _, forward_s = timed(forward)
            reused, seconds = timed(lambda: evaluator.evaluate(kept))
            ratios.append(seconds / forward_s)
    for name, m in evaluation.metrics.items():
        for part in ("full", "empty", "circuit", "complement"):
            a, b = getattr(reused.metrics[name], part).mean, getattr(m, part).mean
            if abs(a - b) > 1e-5 * max(1.0, abs(b)):
                raise SystemExit(f"{name} of the {part}: {a} with the recordings reused, {b} "
                                 f"rebuilt")
    return statistics.median(ratios), evaluator_s


def standalone(spec, forward_s: float) -> dict:
    """`circuit evaluate RUN_DIR` in a fresh process on `circuit discover --task X`'s run
    directory: its wall time, and the evaluation's own seconds (after the model is loaded and
    the task tokenised) in FPE."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    with tempfile.TemporaryDirectory(prefix="circuit-eval-bench-") as work:
        run_dir = Path(work) / "run"
        command = [sys.executable, "-c", "import cli; cli.main()"]
        subprocess.run([*command, "discover", "--task", spec.name, "--out", str(run_dir),
                        "--quiet"], cwd=ROOT, env=env, check=True, capture_output=True)
        _, wall = timed(lambda: subprocess.run([*command, "evaluate", str(run_dir), "--quiet"],
                                               cwd=ROOT, env=env, check=True,
                                               capture_output=True))
        cost = json.loads((run_dir / "evaluation.json").read_text())["cost"]
    return {"standalone_wall_s": wall, "standalone_evaluate_s": cost["seconds"],
            "standalone_evaluate_fpe": cost["seconds"] / forward_s}


def bench_task(spec) -> dict:
    loaded = load_model(spec.model)
    task = resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    torch.set_num_threads(cpu_threads(loaded.shape, "cpu") or DEFAULT_THREADS)
    circuit = run_acdc(loaded, task, CommonSettings(task.metric, task.ablation),
                       AcdcSettings(task.threshold))
    hooked = load_hooked(spec.model)[0]
    forward_s = forward_seconds(hooked, loaded, task, 7)
    row, evaluation, curve = costs(loaded, task, circuit.graph, task.ablation, circuit.kept,
                                   ranking_from_scores(circuit.scores), forward_s,
                                   plain_forward(hooked, loaded, task))
    row.update(standalone(spec, forward_s))
    own = evaluation.metrics[task.metric]
    return {
        "task": spec.name, "model": Path(spec.model).name, "prompts": task.n_prompts,
        "metric": task.metric, "threshold": task.threshold, "edges": len(circuit.graph.edges),
        "kept": circuit.n_edges_kept, "metric_circuit": circuit.metric_circuit,
        "evaluated": own.minimised(own.circuit.mean),
        "metrics": {name: {"full": m.full.mean, "empty": m.empty.mean, "circuit": m.circuit.mean,
                           "circuit_std": m.circuit.std, "complement": m.complement.mean,
                           "f": m.faithfulness, "f_complement": m.complement_faithfulness}
                    for name, m in evaluation.metrics.items()},
        "cpr": dict(curve.cpr), "cmd": dict(curve.cmd), **row,
    }


def bench_gpt2(batch: int, seq: int, seed: int = 0) -> dict:
    torch.set_num_threads(DEFAULT_THREADS)
    model = build_model(GPT2_CONFIG, seed=seed)
    loaded = LoadedModel("gpt2-shape", extract_weights(model), None, model_shape(model.cfg))
    rng = random.Random(seed)
    clean = [[rng.randrange(50257) for _ in range(seq)] for _ in range(batch)]
    corrupt = [row[:5] + [rng.randrange(50257) for _ in range(seq - 5)] for row in clean]
    task = Task("gpt2-shape", "", "benchmark", None, "kl", 0.01, "corrupt", 0, clean, corrupt,
                [[seq - 1]] * batch, [[rng.randrange(50257)] for _ in range(batch)],
                [[rng.randrange(50257)] for _ in range(batch)])
    graph = build_graph(loaded.shape.graph_shape())
    kept = [rng.random() < 0.01 for _ in graph.edges]
    ranking = [(i, rng.random()) for i in range(len(graph.edges))]
    row, _, curve = costs(loaded, task, graph, "corrupt", kept, ranking,
                          forward_seconds(model, loaded, task, 3),
                          plain_forward(model, loaded, task), repeats=1)
    evaluator = CircuitEvaluator(loaded, task, graph, "corrupt", metrics=["kl"])
    flags = torch.tensor(kept)
    with torch.inference_mode():
        _, write_s = timed(lambda: evaluator.patched.set_edges(flags))
        _, loop_s = timed(lambda: [evaluator.patched.set_edge(edge, present)
                                   for edge, present in zip(graph.edges, kept, strict=True)])
    return {"batch": batch, "seq": seq, "edges": len(graph.edges), "kept": sum(kept),
            "threads": DEFAULT_THREADS, **row, "mask_write_s": write_s, "set_edge_loop_s": loop_s,
            "cpr_kl": curve.cpr["kl"]}


def markdown(report: dict) -> str:
    lines = [f"Benchmark: `python benchmarks/evaluation.py --out benchmarks/results` "
             f"({report['machine']}, torch {report['torch']}, {report['date']})", "",
             "| task | edges kept | metric | full | empty | circuit (std) | f(C) | complement | "
             "f(complement) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["tasks"]:
        for name, m in row["metrics"].items():
            lines.append(f"| {row['task']} | {row['kept']} of {row['edges']} | {name} | "
                         f"{m['full']:.4g} | {m['empty']:.4g} | {m['circuit']:.4g} "
                         f"({m['circuit_std']:.3g}) | {_f(m['f'])} | {m['complement']:.4g} | "
                         f"{_f(m['f_complement'])} |")
    lines += ["", "| task | run's metric: circuit.json / evaluated | CPR (run's metric) | CMD | "
              "forward | recordings | evaluate (2 passes) | curve | evaluate total | curve total | "
              "one circuit, recordings reused | `circuit evaluate RUN_DIR` |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["tasks"]:
        lines.append(
            f"| {row['task']} | {row['metric_circuit']:.6g} / {row['evaluated']:.6g} | "
            f"{_f(row['cpr'][row['metric']])} | {_f(row['cmd'][row['metric']])} | "
            f"{1000 * row['forward_s']:.1f} ms | {row['recordings_fpe']:.2f} FPE | "
            f"{row['evaluate_fpe']:.2f} FPE | {row['curve_fpe']:.2f} FPE ({row['curve_passes']} "
            f"passes) | {row['evaluate_total_fpe']:.2f} FPE | {row['curve_total_fpe']:.2f} FPE | "
            f"{row['reused_fpe']:.2f} FPE (evaluator {row['evaluator_fpe']:.2f} FPE) | "
            f"{row['standalone_wall_s']:.2f} s wall, "
            f"{row['standalone_evaluate_fpe']:.2f} FPE after loading |")
    lines += ["", "One circuit, recordings reused: the circuit and its complement for every "
              "metric from an evaluator over recordings made before (as a search's; the API's "
              "`evaluate` after `discover` or `sweep`, and a sweep's points, reuse one; the "
              "median of 9 ratios to a plain forward pass run just before each), and in "
              "brackets the time to make that evaluator once. "
              "`circuit evaluate RUN_DIR`: a fresh process on `circuit discover --task X`'s run "
              "directory (Python, torch, the model, the recordings, 2 patched passes); FPE: "
              "the seconds evaluation.json counts after the model is loaded."]
    g = report.get("gpt2")
    if g:
        lines += ["", f"GPT-2-small shape (random weights), batch {g['batch']} x {g['seq']}, "
                      f"{g['threads']} threads, a random circuit of {g['kept']} of {g['edges']} "
                      f"edges: plain forward {g['forward_s']:.2f} s; recordings "
                      f"{g['recordings_fpe']:.2f} FPE; circuit and complement "
                      f"{g['evaluate_fpe']:.2f} FPE ({g['evaluate_passes']} passes); whole "
                      f"evaluation {g['evaluate_total_fpe']:.2f} FPE; 10-point curve over random "
                      f"scores {g['curve_fpe']:.2f} FPE ({g['curve_passes']} passes), "
                      f"{g['curve_total_fpe']:.2f} FPE with the recordings; one circuit with "
                      f"the recordings reused {g['reused_fpe']:.2f} FPE (one pair). Writing a "
                      f"whole "
                      f"circuit's masks: {1000 * g['mask_write_s']:.2f} ms at once, "
                      f"{1000 * g['set_edge_loop_s']:.0f} ms as {g['edges']} set_edge calls."]
    return "\n".join(lines) + "\n"


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--batch", type=int, default=100, help="GPT-2-shape batch (0: skip)")
    args = parser.parse_args()
    report = {"machine": platform.machine(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "tasks": []}
    for spec in list_tasks():
        if spec.model is None or not Path(spec.model).is_dir():
            continue
        report["tasks"].append(bench_task(spec))
        print(f"{spec.name}: done", file=sys.stderr)
    if args.batch:
        report["gpt2"] = bench_gpt2(args.batch, 15)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "evaluation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
