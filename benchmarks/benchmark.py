"""Benchmark of the ACDC engine: speed against the slow reference, and the cost of one edge test.

Run from the repository root (one process; writes `OUT/benchmark.json` and `OUT/benchmark.md`):

    python benchmarks/benchmark.py --out benchmarks/results

1. Every bundled task whose model is present, at the task's default settings: the engine's wall
   time, the slow reference's (tests/reference_acdc.py: one hooked forward pass per edge test),
   the speedup, the cost per edge test in forward-pass equivalents (FPE: run time / median time
   of one plain, unhooked TransformerLens forward pass on the same clean batch / edges tested),
   edges tested and kept, and whether every decision matched the reference. Both sides are
   timed as the best of a few whole runs (ACDC_RUNS and REFERENCE_RUNS, every run in the JSON):
   on this shared machine one run of either can take up to 1.6x its best.
2. A GPT-2-small-shaped model (12 x 12, d_model 768, vocabulary 50,257, random weights) on an
   IOI-shaped batch: the cost of the edge tests a run makes when the circuit is sparse as in
   real runs (a random circuit of about 1% of the edges, closed as ACDC leaves it: every node
   on a path to the logits), timed at every receiver such a run tests and by receiver layer,
   and the FPE of the whole run projected from those costs; then a whole run at batch
   `--gpt2-run-batch` (100 by default; 0 skips it).

Threads: each bundled task runs with the threads `circuit discover` would use (1 for small
models), for the engine, the reference and the plain forward pass alike; the GPT-2-shaped part
uses PyTorch's default. Peak memory is the process's peak resident set size after each part
(it only grows, and includes the plain forward passes measured for FPE).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; before torch loads
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the slow reference lives with the tests

from acdc.core.graph import build_graph  # noqa: E402
from acdc.core.metrics import MetricTargets, build_metric  # noqa: E402
from acdc.core.models import build_model, extract_weights, load_model, model_shape  # noqa: E402
from acdc.core.patching import PatchedModel, Stage  # noqa: E402
from acdc.core.settings import CommonSettings  # noqa: E402
from acdc.core.tasks import list_tasks, resolve_task  # noqa: E402
from acdc.methods.acdc.propagation import IncrementalPatcher  # noqa: E402
from acdc.methods.acdc.search import AcdcSettings, run_acdc  # noqa: E402
from acdc.run import cpu_threads  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
ACDC_RUNS = 3  # whole runs per bundled task, the best one reported (each under a second)
REFERENCE_RUNS = 2  # ... of the slow reference (up to 20 s each)
GPT2_CONFIG = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
                   n_ctx=1024, act_fn="gelu_new", normalization_type="LN")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn, repeats: int) -> float:
    return statistics.median(time_once(fn) for _ in range(repeats))


def runtime(circuit) -> float:
    return circuit.results["runtime_s"]


def n_tested(circuit) -> int:
    return sum(score is not None for score in circuit.scores)


def padded(rows: list[list[int]], device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)


# --------------------------------------------------------------------------- bundled tasks


def bench_task(spec, device: str, with_reference: bool) -> dict:
    from reference_acdc import reference_acdc

    loaded = load_model(spec.model, device=device)
    task = resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    threads = cpu_threads(loaded.shape, device) or DEFAULT_THREADS  # as `circuit discover` does
    torch.set_num_threads(threads)
    clean = padded(task.clean, device)
    with torch.inference_mode():
        forward_s = median_time(lambda: loaded.model(clean), 7)
    common = CommonSettings(task.metric, task.ablation)
    results = [run_acdc(loaded, task, common, AcdcSettings(task.threshold))
               for _ in range(ACDC_RUNS)]
    result = min(results, key=runtime)
    row = {
        "task": spec.name, "model": Path(spec.model).name, "prompts": len(task.clean),
        "threads": threads, "metric": task.metric, "threshold": task.threshold,
        "edges": len(result.graph.edges), "tested": n_tested(result), "kept": result.n_edges_kept,
        "forward_s": forward_s, "acdc_s": runtime(result),
        "acdc_runs_s": [runtime(r) for r in results],
        "fpe_per_test": runtime(result) / forward_s / max(n_tested(result), 1),
    }
    if with_reference:
        runs = []
        for _ in range(REFERENCE_RUNS):
            start = time.perf_counter()
            reference = reference_acdc(
                loaded.model, task.clean, task.corrupt, task.positions, task.answers,
                task.wrong_answers, task.threshold, metric=task.metric, ablation=task.ablation,
            )
            runs.append(time.perf_counter() - start)
        row["reference_s"], row["reference_runs_s"] = min(runs), runs
        row["speedup"] = row["reference_s"] / runtime(result)
        mismatched = [e.name for e in result.graph.edges
                      if reference[e.name][0] != result.kept[e.index]]
        row["decisions_match"] = not mismatched
        row["mismatched_edges"] = mismatched[:10]
    row["peak_rss_mb"] = peak_rss_mb()
    return row


# --------------------------------------------------------------------------- GPT-2 shape


def sparse_circuit(graph, rng: random.Random, node_fraction: float, edge_keep: float) -> set[str]:
    """A random circuit shaped like the ones ACDC leaves: a few nodes, edges among them, and
    every node on a path to the logits (ACDC removes the inputs of a node with no outgoing
    edge untested, so a kept edge never ends at a dead node)."""
    nodes = {s.name for s in graph.senders if s.kind == "input" or rng.random() < node_fraction}
    kept = set()
    for edge in graph.edges:
        target = edge.receiver.name.split("<")[0]
        if edge.kind == "direct":
            if target in nodes:
                kept.add(edge.name)
        elif (edge.sender.name in nodes and (target in nodes or target == "logits")
              and rng.random() < edge_keep):
            kept.add(edge.name)
    by_name = {e.name: e for e in graph.edges}
    while True:  # drop edges into nodes whose output nothing reads, until none is left
        sources = {by_name[name].endpoints[0] for name in kept}
        dead = {name for name in kept if by_name[name].endpoints[1] not in sources | {"logits"}}
        if not dead:
            return kept
        kept -= dead


def bench_gpt2_edge_cost(batch: int, seq: int, tests_per_receiver: int, seed: int = 0) -> dict:
    """Time the edge tests a whole run with a sparse circuit makes: walk the ACDC order with
    the decisions of a random sparse circuit and, at every live receiver (one whose node keeps
    an outgoing edge: ACDC tests only those), time a few of its edge tests; weight each
    receiver by its number of incoming edges (every one is tested in a real run)."""
    torch.set_num_threads(DEFAULT_THREADS)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = build_model(GPT2_CONFIG, seed=seed)
    clean = torch.randint(0, 50257, (batch, seq))
    corrupt = torch.randint(0, 50257, (batch, seq))
    graph = build_graph(model_shape(model.cfg).graph_shape("qkv"))
    with torch.inference_mode():
        forward_s = median_time(lambda: model(clean), 3)
        start = time.perf_counter()
        patched = PatchedModel(extract_weights(model), graph, clean, corrupt,
                               torch.arange(batch), torch.full((batch,), seq - 1), "corrupt")
        record_s = time.perf_counter() - start
        metric = build_metric("kl", patched.clean_logits, MetricTargets.empty())
        incremental = IncrementalPatcher(patched)
        circuit = sparse_circuit(graph, rng, node_fraction=0.15, edge_keep=0.5)
        sources = {graph.edge(name).endpoints[0] for name in circuit}
        receivers, forwards, layer_forward_s, synced_layer = [], [], forward_s, None
        for node, edges in graph.acdc_order():
            layer = edges[0].receiver.layer
            live = node == "logits" or node in sources
            if live and edges[0].kind == "residual":
                if layer != synced_layer:  # activations of the circuit decided so far
                    incremental.resync()
                    synced_layer = layer
                    # A plain forward pass next to every layer's tests: the machine's speed
                    # drifts, and each ratio should compare timings taken side by side.
                    layer_forward_s = median_time(lambda: model(clean), 1)
                    forwards.append(layer_forward_s)
                incremental.enter(edges[0])

                def one_test(edge):
                    logits, _ = incremental.evaluate([edge])
                    return float(metric(logits))

                sample = edges[:tests_per_receiver]
                tests = iter(sample * 3)
                test_s = median_time(lambda tests=tests: one_test(next(tests)), len(sample))
                receivers.append({"receiver": node, "layer": layer, "edges": len(edges),
                                  "test_s": test_s, "fpe": test_s / layer_forward_s})
            # then decide the group as the circuit says (bookkeeping only: timing needs the
            # circuit's shape, and the next layer starts from a fresh pass)
            for edge in edges:
                if edge.name not in circuit:
                    incremental.remove(edge)
        # a run ends with a full patched pass of the final circuit (its metric, checked)
        setup_s = record_s + median_time(lambda: patched.logits_from(Stage(0)), 1)
    rows = []
    for layer in sorted({r["layer"] for r in receivers}, reverse=True):
        mine = [r for r in receivers if r["layer"] == layer]
        tested = sum(r["edges"] for r in mine)
        rows.append({"layer": layer, "receivers": len(mine), "tested": tested,
                     "test_ms": sum(r["edges"] * r["test_s"] for r in mine) / tested * 1000,
                     "fpe": sum(r["edges"] * r["fpe"] for r in mine) / tested})
    forward_s = statistics.median(forwards)
    tested = sum(r["edges"] for r in receivers)
    total_fpe = sum(r["edges"] * r["fpe"] for r in receivers) + setup_s / forward_s
    return {
        "batch": batch, "seq": seq, "forward_s": forward_s, "setup_s": setup_s,
        "setup_fpe": setup_s / forward_s, "layers": rows, "receivers": receivers,
        "circuit_edges": len(circuit), "graph_edges": len(graph.edges), "tested_edges": tested,
        "projected_run_s": total_fpe * forward_s,
        "projected_fpe_per_test": total_fpe / tested,
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_gpt2_run(batch: int, seq: int, threshold: float, seed: int = 0) -> dict:
    from acdc.core.models import LoadedModel

    torch.set_num_threads(DEFAULT_THREADS)
    from acdc.core.tasks import Task

    torch.manual_seed(seed)
    model = build_model(GPT2_CONFIG, seed=seed)
    clean = torch.randint(0, 50257, (batch, seq)).tolist()
    corrupt = torch.randint(0, 50257, (batch, seq)).tolist()
    task = Task(name="gpt2-shape", description="", source="benchmark", model=None, metric="kl",
                threshold=threshold, ablation="corrupt", seed=seed, clean=clean, corrupt=corrupt,
                positions=[[seq - 1]] * batch, answers=None, wrong_answers=None)
    tokens = torch.tensor(clean)
    forward = lambda: [time_once(lambda: model(tokens)) for _ in range(3)]  # noqa: E731
    with torch.inference_mode():
        forwards = forward()
        loaded = LoadedModel("gpt2-shape", model, None, model_shape(model.cfg))
        result = run_acdc(loaded, task, CommonSettings(), AcdcSettings(threshold=threshold))
        forwards += forward()  # before and after: the machine's speed drifts over a 4-minute run
    forward_s = statistics.median(forwards)
    return {"batch": batch, "seq": seq, "threshold": threshold, "forward_s": forward_s,
            "threads": DEFAULT_THREADS,
            "run_s": runtime(result), "tested": n_tested(result), "kept": result.n_edges_kept,
            "fpe_per_test": runtime(result) / forward_s / max(n_tested(result), 1),
            "peak_rss_mb": peak_rss_mb()}


# --------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = [f"Benchmark: `{report['command']}` ({report['machine']}, torch {report['torch']}, "
             f"{report['threads']} threads, {report['date']})", ""]
    if report["tasks"]:
        lines += ["| task | model | prompts | threads | edges | tested | kept | forward | ACDC | "
                  "reference | speedup | FPE/test | same decisions | peak RSS |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in report["tasks"]:
            ref = f"{r['reference_s']:.1f} s" if "reference_s" in r else "-"
            speed = f"{r['speedup']:.0f}x" if "speedup" in r else "-"
            same = {True: "yes", False: "NO"}.get(r.get("decisions_match"), "-")
            lines.append(f"| {r['task']} | {r['model']} | {r['prompts']} | {r['threads']} | "
                         f"{r['edges']} | {r['tested']} | {r['kept']} | "
                         f"{r['forward_s'] * 1000:.1f} ms | {r['acdc_s']:.2f} s | {ref} | "
                         f"{speed} | {r['fpe_per_test']:.3f} | {same} | "
                         f"{r['peak_rss_mb']:.0f} MB |")
        lines += ["", f"ACDC: best of {ACDC_RUNS} whole runs; reference: best of {REFERENCE_RUNS} "
                  "(every run's time is in benchmark.json).", ""]
    g = report.get("gpt2_edge_cost")
    if g:
        lines += [f"GPT-2-small shape, batch {g['batch']} x {g['seq']} tokens, random weights; "
                  f"plain forward {g['forward_s']:.2f} s (median, measured next to each layer's "
                  f"tests); random sparse circuit of {g['circuit_edges']} of {g['graph_edges']} "
                  f"edges, every node on a path to the logits; {g['tested_edges']} edges into its "
                  f"live receivers (the edges a run tests); setup (clean + corrupted caches, the "
                  f"final full patched pass) {g['setup_fpe']:.1f} FPE.", "",
                  "| receiver layer | live receivers | edges tested | one edge test | FPE |",
                  "|---|---|---|---|---|"]
        for r in g["layers"]:
            name = "logits" if r["layer"] == GPT2_CONFIG["n_layers"] else r["layer"]
            lines.append(f"| {name} | {r['receivers']} | {r['tested']} | {r['test_ms']:.1f} ms | "
                         f"{r['fpe']:.4f} |")
        lines += ["", f"Projected whole run: {g['projected_run_s'] / 60:.1f} min, "
                  f"{g['projected_fpe_per_test']:.4f} FPE per edge test (setup included); "
                  f"peak RSS {g['peak_rss_mb']:.0f} MB.", ""]
    r = report.get("gpt2_run")
    if r:
        lines += [f"Whole GPT-2-shape run, batch {r['batch']} x {r['seq']}, "
                  f"threshold {r['threshold']}: "
                  f"{r['run_s']:.0f} s, {r['tested']} edges tested, {r['kept']} kept, "
                  f"{r['fpe_per_test']:.4f} FPE per test; peak RSS {r['peak_rss_mb']:.0f} MB.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results", help="folder for benchmark.json/.md")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", nargs="*", help="bundled task names (default: all with a model)")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow reference")
    parser.add_argument("--gpt2-batch", type=int, default=100)
    parser.add_argument("--gpt2-seq", type=int, default=15)
    parser.add_argument("--gpt2-tests", type=int, default=3,
                        help="edge tests timed per live receiver")
    parser.add_argument("--no-gpt2", action="store_true")
    parser.add_argument("--gpt2-run-batch", type=int, default=100,
                        help="a whole run at this batch (0: none; about 5 minutes at 100)")
    parser.add_argument("--gpt2-run-threshold", type=float, default=0.001)
    args = parser.parse_args()

    report = {"command": "python " + " ".join(sys.argv), "machine": platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d"), "tasks": []}
    for spec in list_tasks():
        if args.tasks and spec.name not in args.tasks:
            continue
        if not spec.model or not (Path(spec.model) / "config.json").is_file():
            continue
        print(f"task {spec.name} ...", flush=True)
        report["tasks"].append(bench_task(spec, args.device, not args.no_reference))
        print(json.dumps(report["tasks"][-1]), flush=True)
    if not args.no_gpt2:
        print("GPT-2 shape, edge test costs ...", flush=True)
        report["gpt2_edge_cost"] = bench_gpt2_edge_cost(args.gpt2_batch, args.gpt2_seq,
                                                        args.gpt2_tests)
        print(json.dumps(report["gpt2_edge_cost"]), flush=True)
    if args.gpt2_run_batch:
        print("GPT-2 shape, whole run ...", flush=True)
        report["gpt2_run"] = bench_gpt2_run(args.gpt2_run_batch, args.gpt2_seq,
                                            args.gpt2_run_threshold)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "benchmark.md").write_text(markdown(report) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
