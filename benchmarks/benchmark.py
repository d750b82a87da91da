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
3. The attribution methods on the GPT-2-small-shaped model (`--attribution`, batch
   `--attribution-batch` x `--attribution-seq`, 50 x 16 by default): EAP and EAP-IG (5 steps)
   on logit difference, timed by phase (the clean and ablated runs, the scoring passes, the
   final circuit's patched pass) in FPE, and their peak memory against a plain forward with
   every activation cached (`run_with_cache`). Each of the three runs in a fresh process
   (`--attribution-part`), so that each peak resident set size is its own; the model's own
   resident size (measured right after it is built) is reported apart.

4. `--exact` (or `--exact-only`): exact edge patching (`circuit discover --method exact`) on the
   GPT-2-small-shaped model at batch `--attribution-batch` x `--attribution-seq` (50 x 16),
   logit difference: one pass (a chunk of candidates) timed for every kind of receiver of
   every layer (a head's q, k and v inputs, the MLP, the logits, the direct q/k/v edges),
   each receiver's passes priced from its layer and kind, plus the recordings and the final
   circuit's pass: the projected cost of a whole run, in FPE per edge (wall and CPU time, as
   part 3). `--exact-whole` also runs the whole method and reports its measured time.

5. `--hisp` (or `--hisp-only`): HISP on the GPT-2-small-shaped model at the same batch: the
   differentiated pass (every prompt's gate gradients, which also records the clean run), the
   ablated run, the final circuit's patched pass, and the whole run, in FPE (wall and CPU).

6. `--families llama gemma2`: part 2's edge-test costs on Llama's and Gemma 2's architectures
   at GPT-2 small's size (`LLAMA_CONFIG`, `GEMMA2_CONFIG`), the same batch and the same random
   circuit, tabled beside GPT-2's (FPE against each model's own plain forward).

5. `--edge-pruning` (or `--edge-pruning-only`): edge pruning on the GPT-2-small-shaped model,
   batch `--attribution-batch` x `--attribution-seq` (50 x 16), KL: the cost of one
   optimisation step (sampled masks, masked forward, backward, optimiser) in FPE, as the median
   of the steps after the first, and the run's peak memory against the plain forward with every
   activation cached (part 3's `forward`), each in a fresh process.

7. `--positions` (or `--positions-only`, writing positions.json/.md): circuits at positions.
   (a) Part 2's edge-test costs on the GPT-2-small shape with the graph at 6 position groups, as
   IOI's labels give them (IO, S1, S1+1, S2, END, other at positions 2, 4, 5, 10, 14 and the
   rest of 15 tokens), next to the blind graph's in the same process: the same random sparse
   circuit, each of its edges kept at a random half of the groups (at least one; into the
   logits at END, where the metric is), closed as ACDC leaves it at positions; every live
   receiver and group timed. (b) The bundled ioi task: circuits at positions against blind ones
   at the same number of residual edges: EAP-IG (5 steps) and exact patching rankings cut at
   the same top-n, and ACDC at a few thresholds, each circuit's faithfulness (logit difference,
   the clean model 1, the empty circuit 0) and KL.

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

from acdc.core.architecture import model_shape  # noqa: E402
from acdc.core.graph import build_graph  # noqa: E402
from acdc.core.loading import load_model  # noqa: E402
from acdc.core.metrics import MetricTargets, build_metric  # noqa: E402
from acdc.core.models import build_model, extract_weights, load_hooked  # noqa: E402
from acdc.core.patching import PatchedModel, Stage  # noqa: E402
from acdc.core.settings import CommonSettings  # noqa: E402
from acdc.core.tasks.reading import list_tasks  # noqa: E402
from acdc.core.tasks.resolving import resolve_task  # noqa: E402
from acdc.methods.acdc.propagation import IncrementalPatcher  # noqa: E402
from acdc.methods.acdc.search import AcdcSettings, run_acdc  # noqa: E402
from acdc.run import cpu_threads  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
ACDC_RUNS = 3  # whole runs per bundled task, the best one reported (each under a second)
REFERENCE_RUNS = 2  # ... of the slow reference (up to 20 s each)
GPT2_CONFIG = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
                   n_ctx=1024, act_fn="gelu_new", normalization_type="LN")
# Llama's architecture at GPT-2 small's size: RMSNorm, rotary positions, 12 query heads sharing
# 4 key/value heads, a SwiGLU MLP of 2048 (as many MLP parameters as GPT-2's 3072), no biases
LLAMA_CONFIG = dict(n_layers=12, d_model=768, n_heads=12, n_key_value_heads=4, d_head=64,
                    d_mlp=2048, d_vocab=50257, n_ctx=1024, act_fn="silu", gated_mlp=True,
                    normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=64)
# Gemma 2's architecture at the same size: as Llama with GeGLU, norms after attention and MLP
# (a receiver's input is not additive there), soft caps, local/global layers (Gemma 2's window
# of 4096: longer than the batch's prompts, so the local mask hides nothing here)
GEMMA2_CONFIG = dict(LLAMA_CONFIG, act_fn="gelu_pytorch_tanh",
                     use_normalization_before_and_after=True, attn_scores_soft_cap=50.0,
                     output_logits_soft_cap=30.0, use_local_attn=True, window_size=4096,
                     attn_types=["local", "global"] * 6)
FAMILY_SHAPES = {
    "llama": ("Llama (RMSNorm, rotary, 12 heads on 4 k/v heads, SwiGLU)", LLAMA_CONFIG),
    "gemma2": ("Gemma 2 (as Llama, GeGLU, post-norms, soft caps, local layers)", GEMMA2_CONFIG),
}


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
    # TransformerLens' model of the checkpoint: the unit of time (its plain forward pass) and
    # what the reference runs
    hooked = load_hooked(spec.model)[0].to(device, print_details=False)
    task = resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    threads = cpu_threads(loaded.shape, device) or DEFAULT_THREADS  # as `circuit discover` does
    torch.set_num_threads(threads)
    clean = padded(task.clean, device)
    with torch.inference_mode():
        forward_s = median_time(lambda: hooked(clean), 7)
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
                hooked, task.clean, task.corrupt, task.positions, task.answers,
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


def bench_gpt2_edge_cost(batch: int, seq: int, tests_per_receiver: int, seed: int = 0,
                         config: dict | None = None,
                         labels: dict[str, int] | None = None) -> dict:
    """Time the edge tests a whole run with a sparse circuit makes: walk the ACDC order with
    the decisions of a random sparse circuit and, at every live receiver (one whose node keeps
    an outgoing edge: ACDC tests only those), time a few of its edge tests; weight each
    receiver by its number of incoming edges (every one is tested in a real run). `config`:
    the model (default the GPT-2-small shape). `labels` (label -> position, the same in every
    prompt): the graph at positions, its groups the labels then `other` (part 7)."""
    torch.set_num_threads(DEFAULT_THREADS)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = build_model(config or GPT2_CONFIG, seed=seed)
    clean = torch.randint(0, 50257, (batch, seq))
    corrupt = torch.randint(0, 50257, (batch, seq))
    graph = build_graph(model_shape(model.cfg).graph_shape("qkv"))
    blind_graph, groups = graph, None
    if labels is not None:
        shape, groups = positional_benchmark_shape(graph.shape, labels, batch, seq)
        graph = build_graph(shape)
    with torch.inference_mode():
        forward_s = median_time(lambda: model(clean), 3)
        start = time.perf_counter()
        patched = PatchedModel(extract_weights(model), graph, clean, corrupt,
                               torch.arange(batch), torch.full((batch,), seq - 1), "corrupt",
                               groups=groups)
        record_s = time.perf_counter() - start
        metric = build_metric("kl", patched.clean_logits, MetricTargets.empty())
        incremental = IncrementalPatcher(patched)
        circuit = sparse_circuit(blind_graph, rng, node_fraction=0.15, edge_keep=0.5)
        if groups is not None:
            circuit = positional_circuit(graph, circuit, rng)
            live_at = positional_liveness(graph, circuit)
        sources = {graph.edge(name).endpoints[0] for name in circuit}
        receivers, forwards, layer_forward_s, synced_layer = [], [], forward_s, None
        for node, edges in graph.acdc_order():
            layer = edges[0].receiver.layer
            live = (node == "logits" or node in sources) if groups is None else live_at(
                node, edges[0])
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
                                  "group": None if groups is None
                                  else graph.groups[edges[0].group],
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
    from acdc.core.loading import LoadedModel

    torch.set_num_threads(DEFAULT_THREADS)
    from acdc.core.tasks.values import Task

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
        loaded = LoadedModel("gpt2-shape", extract_weights(model), None, model_shape(model.cfg))
        result = run_acdc(loaded, task, CommonSettings(), AcdcSettings(threshold=threshold))
        forwards += forward()  # before and after: the machine's speed drifts over a 4-minute run
    forward_s = statistics.median(forwards)
    return {"batch": batch, "seq": seq, "threshold": threshold, "forward_s": forward_s,
            "threads": DEFAULT_THREADS,
            "run_s": runtime(result), "tested": n_tested(result), "kept": result.n_edges_kept,
            "fpe_per_test": runtime(result) / forward_s / max(n_tested(result), 1),
            "peak_rss_mb": peak_rss_mb()}


IOI_LABELS = {"IO": 2, "S1": 4, "S1+1": 5, "S2": 10, "END": 14}  # in 15 tokens, as IOI's


def positional_benchmark_shape(shape, labels: dict[str, int], batch: int, seq: int):
    """The shape at the groups of `labels` (then `other`) and each token's group
    [batch, seq]."""
    from acdc.core.graph import GraphShape

    names = (*labels, "other")
    row = [len(labels)] * seq
    for g, position in enumerate(labels.values()):
        row[position] = g
    positional = GraphShape(shape.n_layers, shape.n_heads, shape.has_mlp, shape.granularity,
                            shape.parallel_attn_mlp, "labels", names)
    return positional, torch.tensor([row] * batch)


def positional_circuit(graph, blind: set[str], rng: random.Random, keep: float = 0.5
                       ) -> set[str]:
    """A blind circuit at positions: each edge at a random `keep` of the groups (at least one;
    an edge into the logits at the last group before `other`, where the metric is), then
    closed as ACDC leaves it: edges into a node dead at their group dropped until none is."""
    n = graph.n_groups
    end = n - 2  # END: the metric's group
    kept = set()
    for name in sorted(blind):
        if name.endswith("->logits"):
            chosen = [end]
        else:
            chosen = [g for g in range(n) if rng.random() < keep] or [rng.randrange(n)]
        kept.update(f"{name}@{graph.groups[g]}" for g in chosen)
    while True:
        live = positional_liveness(graph, kept)
        dead = {name for name in kept if not live(*_visited_as(graph.edge(name)))}
        if not dead:
            return kept
        kept -= dead


def _visited_as(edge) -> tuple[str, object]:
    """The (node, first edge) pair under which ACDC visits an edge (`Graph.acdc_order`)."""
    if edge.kind == "direct":
        return f"a{edge.receiver.layer}.h{edge.receiver.head}", edge
    return edge.receiver.name, edge


def positional_liveness(graph, kept: set[str]):
    """Whether ACDC at positions tests the edges it visits under (node, first edge): the
    dead-node rules of `acdc.methods.acdc.search` for the final circuit `kept` (the metric at
    the END group only; no inert group: random tokens differ from the first)."""
    out_at: dict[tuple[str, int], int] = {}
    out_any: dict[str, int] = {}
    for name in kept:
        edge = graph.edge(name)
        source = edge.sender.name if edge.sender is not None else edge.receiver.name
        out_at[(source, edge.group)] = out_at.get((source, edge.group), 0) + 1
        out_any[source] = out_any.get(source, 0) + 1
    end = graph.n_groups - 2

    def live(node: str, edge) -> bool:
        if edge.receiver.kind == "logits":
            return edge.group == end
        every = edge.receiver.kind == "head" and (
            edge.qkv in ("k", "v") or (edge.kind == "residual" and edge.receiver.qkv is None))
        return bool(out_any.get(node)) if every else bool(out_at.get((node, edge.group)))

    return live


def bench_positions_edge_cost(batch: int, seq: int, tests_per_receiver: int) -> dict:
    """Part 7 (a): edge-test costs at positions next to the blind ones."""
    blind = bench_gpt2_edge_cost(batch, seq, tests_per_receiver)
    positional = bench_gpt2_edge_cost(batch, seq, tests_per_receiver, labels=IOI_LABELS)
    return {"blind": blind, "positional": positional,
            "ratio": positional["projected_fpe_per_test"] / blind["projected_fpe_per_test"]}


def bench_positions(args) -> dict:
    """Part 7: (b), then (a) unless --no-gpt2."""
    print("positions: the ioi task, blind and at positions ...", flush=True)
    out = {"ioi": bench_positions_ioi(args.positions_budgets, args.positions_thresholds)}
    if not args.no_gpt2:
        print("positions: GPT-2 shape, edge test costs blind and at 6 groups ...", flush=True)
        out["edge_cost"] = bench_positions_edge_cost(args.gpt2_batch, args.gpt2_seq,
                                                     args.gpt2_tests)
    return out


def bench_positions_ioi(budgets: list[int], thresholds: list[float]) -> dict:
    """Part 7 (b): the bundled ioi task, circuits at positions against blind ones at the same
    number of residual edges."""
    from acdc.core.graph import build_graph as build
    from acdc.core.positions import metric_groups, positional_shape
    from acdc.core.recordings import CircuitMeter
    from acdc.core.selection import Selection, n_residual, prune, select_edges
    from acdc.methods.attribution import EapIgSettings
    from acdc.methods.attribution.scores import edge_attribution
    from acdc.methods.base import run_method
    from acdc.methods.exact import EXACT

    spec = next(s for s in list_tasks() if s.name == "ioi")
    loaded = load_model(spec.model)
    task = resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    torch.set_num_threads(cpu_threads(loaded.shape, "cpu") or DEFAULT_THREADS)
    blind_shape = loaded.shape.graph_shape("qkv")
    graphs = {"none": build(blind_shape),
              "labels": build(positional_shape(blind_shape, task, "labels"))}
    sinks = {"none": None, "labels": metric_groups(task, graphs["labels"].groups, "labels")}
    meters = {(mode, metric): CircuitMeter.of(loaded, task, graphs[mode], metric, "corrupt")
              for mode in graphs for metric in ("logit_diff", "kl")}

    def measure(mode: str, kept: list[bool]) -> dict:
        ld = meters[(mode, "logit_diff")]
        empty = ld.metric([False] * len(kept))
        return {"edges": n_residual(graphs[mode], kept),
                "faithfulness": (ld.metric(kept) - empty) / (ld.full - empty),
                "kl": meters[(mode, "kl")].metric(kept)}

    rows: dict[str, list] = {"eap-ig": [], "exact": [], "acdc": []}
    for mode, graph in graphs.items():
        common = CommonSettings("logit_diff", "corrupt", "qkv", mode)
        rankings = {
            "eap-ig": edge_attribution(loaded, task, common, EapIgSettings(ig_steps=5),
                                       graph)[0],
            "exact": list(run_method(EXACT, loaded, task, common, None, Selection(top_n=1),
                                     graph=graph).scores)}
        n_groups = graph.n_groups if mode != "none" else 1
        for method, scores in rankings.items():
            for n in budgets:
                # at positions also at the blind circuit's size in edges at a group: a blind
                # edge stands for one edge at every group
                for cut in sorted({n, n * n_groups}):
                    kept = prune(graph, select_edges(graph, scores, Selection(top_n=cut)),
                                 sinks[mode])
                    rows[method].append({"positions": mode, "top_n": cut, "budget": n,
                                         **measure(mode, kept)})
        for threshold in thresholds:
            circuit = run_acdc(loaded, task, CommonSettings("kl", "corrupt", "qkv", mode),
                               AcdcSettings(threshold), graph=graph)
            print(f"  acdc {mode} tau {threshold}: {circuit.n_residual_kept} edges", flush=True)
            rows["acdc"].append({"positions": mode, "threshold": threshold,
                                 **measure(mode, list(circuit.kept))})
    return {"task": "ioi", "prompts": task.n_prompts, "groups": list(graphs["labels"].groups),
            "edges": {mode: n_residual(g, [True] * len(g.edges)) for mode, g in graphs.items()},
            **rows}


# --------------------------------------------------------------------------- attribution


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def attribution_part(part: str, batch: int, seq: int, seed: int = 0) -> dict:
    """One part of the attribution benchmark, in this (fresh) process: `forward` (a plain
    forward with every activation cached), `eap` or `eap-ig`. Times are wall clock and CPU
    (process) time: on a shared machine the CPU time is the steadier measure of the work."""
    from acdc.core import forward
    from acdc.core.loading import LoadedModel
    from acdc.core.metrics import metric_targets
    from acdc.core.patching import task_tensors
    from acdc.core.selection import Selection, prune, select_edges
    from acdc.core.tasks.values import Task
    from acdc.methods.attribution import EAP, EAP_IG, EapIgSettings, EapSettings, gradients
    from acdc.methods.base import run_method

    torch.set_num_threads(DEFAULT_THREADS)
    torch.manual_seed(seed)
    model = build_model(GPT2_CONFIG, seed=seed)
    model_rss = current_rss_mb()
    clean = torch.randint(0, 50257, (batch, seq))
    corrupt = torch.randint(0, 50257, (batch, seq))
    answers = torch.randint(0, 50257, (batch, 2))
    task = Task(name="gpt2-shape", description="", source="benchmark", model=None,
                metric="logit_diff", threshold=0.0, ablation="corrupt", seed=seed,
                clean=clean.tolist(), corrupt=corrupt.tolist(), positions=[[seq - 1]] * batch,
                answers=answers[:, :1].tolist(), wrong_answers=answers[:, 1:].tolist())

    clocks = {"wall": time.perf_counter, "cpu": time.process_time}

    def plain_forward() -> dict[str, float]:
        with torch.inference_mode():
            times = [measure(lambda: model(clean)) for _ in range(3)]
        return {kind: statistics.median(t[kind] for t in times) for kind in clocks}

    def measure(fn) -> dict[str, float]:
        start = {kind: clock() for kind, clock in clocks.items()}
        fn()
        return {kind: clock() - start[kind] for kind, clock in clocks.items()}

    forward_before = plain_forward()
    row: dict = {"part": part, "batch": batch, "seq": seq, "threads": DEFAULT_THREADS,
                 "model_rss_mb": model_rss}
    if part == "forward":
        with torch.inference_mode():
            row["cache"] = measure(lambda: model.run_with_cache(clean))
        row["forward"] = forward_before
        row["peak_rss_mb"] = peak_rss_mb()
        return row
    settings = EapIgSettings(ig_steps=5) if part == "eap-ig" else EapSettings()
    method, selection = (EAP_IG if part == "eap-ig" else EAP), Selection(top_n=1000)
    common = CommonSettings("logit_diff", "corrupt")
    graph = build_graph(model_shape(model.cfg).graph_shape("qkv"))
    # The phases of an attribution run (`run_method`), timed one by one.
    weights = extract_weights(model)
    tensors = task_tensors(task, "cpu")
    targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers)
    phases: dict[str, dict[str, float]] = {}
    state: dict = {}

    def clean_pass() -> None:  # EAP: the differentiated clean pass, which records the run
        state["clean"] = gradients.differentiate(
            weights, graph, forward.embed(weights, tensors.clean), tensors.pos_batch,
            tensors.pos_index, lambda logits: build_metric("logit_diff", logits, targets),
            record=True)

    def record_clean() -> None:  # EAP-IG: the clean run (no gradient), for the metric
        state["clean_run"], logits = gradients.record_run(
            weights, graph, forward.embed(weights, tensors.clean), tensors.pos_batch,
            tensors.pos_index)
        state["metric"] = build_metric("logit_diff", logits, targets)

    def first_pass() -> None:  # EAP-IG at alpha = 0: the ablated run, which it records
        metric = state["metric"]
        state["first"] = gradients.differentiate(
            weights, graph, forward.embed(weights, tensors.corrupt), tensors.pos_batch,
            tensors.pos_index, lambda _: metric, record=True)

    def record() -> None:  # the patched model, from the recorded runs
        with torch.no_grad():
            clean_run = (state["clean"].recorded if "clean" in state
                         else state.pop("clean_run"))
            ablated_run = None
            if "first" in state:
                ablated_run, state["first"].recorded = state["first"].recorded, None
            state["patched"] = PatchedModel(weights, graph, tensors.clean, tensors.corrupt,
                                            tensors.pos_batch, tensors.pos_index, "corrupt",
                                            tensors.lengths, clean_run, None, ablated_run)
            state["metric"] = build_metric("logit_diff", state["patched"].clean_logits, targets)

    def add(name: str, value: dict[str, float]) -> None:
        phases[name] = {kind: phases.get(name, {}).get(kind, 0.0) + value[kind]
                        for kind in clocks}

    # The phases in a run's order (each EAP-IG pass scored, then dropped, as there).
    if part == "eap":
        add("passes", measure(clean_pass))
    else:
        add("runs", measure(record_clean))
        add("passes", measure(first_pass))
    add("runs", measure(record))
    made: list = []
    add("contraction", measure(lambda: made.append(
        gradients._Scorer(state["patched"], len(settings.alphas)))))
    scorer, patched = made.pop(), state["patched"]
    for alpha in settings.alphas:
        if part == "eap":
            run = state.pop("clean")
        elif alpha == 0.0:
            run = state.pop("first")
        else:
            embedding = patched.ablated[0] + alpha * patched.delta[0]
            box: list = []
            add("passes", measure(lambda e=embedding, box=box: box.append(
                gradients.differentiate(weights, graph, e, tensors.pos_batch, tensors.pos_index,
                                        lambda _: state["metric"]))))
            run = box.pop()
        add("contraction", measure(lambda run=run, scorer=scorer: scorer.add(
            run, 1.0 / len(settings.alphas))))
        del run
    done: list = []
    add("contraction", measure(lambda scorer=scorer: done.append(scorer.finish())))
    state["scores"] = done.pop()
    del scorer, patched

    def final() -> None:
        patched = state["patched"]
        kept = prune(graph, select_edges(graph, state["scores"].tolist(), selection))
        with torch.no_grad():  # the scorer took the clean q/k/v over
            float(state["metric"](patched.circuit_logits(torch.tensor(kept))))

    phases["final"] = measure(final)
    peak = peak_rss_mb()  # of the scoring and the final pass: what a run does
    state.clear()
    loaded = LoadedModel("gpt2-shape", extract_weights(model), None, model_shape(model.cfg))
    phases["whole"] = measure(lambda: run_method(method, loaded, task, common, settings,
                                                 selection, graph=graph))
    forward_after = plain_forward()
    unit = {kind: (forward_before[kind] + forward_after[kind]) / 2 for kind in clocks}
    scoring = {kind: sum(phases[p][kind] for p in ("passes", "runs", "contraction"))
               for kind in clocks}
    row.update({"forward": unit, "forward_runs": [forward_before, forward_after],
                "edges": len(graph.edges), "phases": phases, "scoring": scoring,
                "fpe": {name: {kind: value[kind] / unit[kind] for kind in clocks}
                        for name, value in {**phases, "scoring": scoring}.items()},
                "peak_rss_mb": peak})
    return row


def edge_pruning_part(batch: int, seq: int, steps: int, seed: int = 0) -> dict:
    """Edge pruning on the GPT-2 shape, in this (fresh) process: `steps` steps, each timed
    (wall and CPU) from the progress reports, which come after every step here (a step takes
    longer than their half-second spacing); the first step (allocations) is reported apart."""
    from acdc.core.loading import LoadedModel
    from acdc.core.tasks.values import Task
    from acdc.methods.base import run_method
    from acdc.methods.edge_pruning import METHOD, EdgePruningSettings

    torch.set_num_threads(DEFAULT_THREADS)
    torch.manual_seed(seed)
    model = build_model(GPT2_CONFIG, seed=seed)
    model_rss = current_rss_mb()
    clean = torch.randint(0, 50257, (batch, seq))
    corrupt = torch.randint(0, 50257, (batch, seq))
    task = Task(name="gpt2-shape", description="", source="benchmark", model=None,
                metric="kl", threshold=0.0, ablation="corrupt", seed=seed,
                clean=clean.tolist(), corrupt=corrupt.tolist(), positions=[[seq - 1]] * batch,
                answers=None, wrong_answers=None)
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}

    def plain_forward() -> dict[str, float]:
        runs = []
        with torch.inference_mode():
            for _ in range(3):
                start = {kind: clock() for kind, clock in clocks.items()}
                model(clean)
                runs.append({kind: clock() - start[kind] for kind, clock in clocks.items()})
        return {kind: statistics.median(r[kind] for r in runs) for kind in clocks}

    forward_before = plain_forward()
    stamps: list[dict[str, float]] = []
    start = {kind: clock() for kind, clock in clocks.items()}
    loaded = LoadedModel("gpt2-shape", extract_weights(model), None, model_shape(model.cfg))
    circuit = run_method(METHOD, loaded, task, CommonSettings("kl", "corrupt"),
                         EdgePruningSettings(edges_fraction=0.02, steps=steps), seed=seed,
                         on_progress=lambda _: stamps.append(
                             {kind: clock() for kind, clock in clocks.items()}))
    end = {kind: clock() for kind, clock in clocks.items()}
    peak = peak_rss_mb()
    forward_after = plain_forward()
    unit = {kind: (forward_before[kind] + forward_after[kind]) / 2 for kind in clocks}
    if len(stamps) != steps:
        raise RuntimeError(f"{len(stamps)} progress reports for {steps} steps")
    step_times = {kind: [b[kind] - a[kind] for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
                  for kind in clocks}
    step = {kind: statistics.median(step_times[kind]) for kind in clocks}
    setup = {kind: stamps[0][kind] - start[kind] - step[kind] for kind in clocks}
    finish = {kind: end[kind] - stamps[-1][kind] for kind in clocks}
    return {"part": "edge-pruning", "batch": batch, "seq": seq, "threads": DEFAULT_THREADS,
            "steps": steps, "edges": len(circuit.graph.edges), "model_rss_mb": model_rss,
            "forward": unit, "forward_runs": [forward_before, forward_after],
            "step_s": step, "step_runs_s": step_times, "setup_s": setup, "finish_s": finish,
            "fpe": {"step": {k: step[k] / unit[k] for k in clocks},
                    "setup": {k: setup[k] / unit[k] for k in clocks},
                    "finish": {k: finish[k] / unit[k] for k in clocks}},
            "peak_rss_mb": peak}


def bench_gpt2_edge_pruning(batch: int, seq: int, steps: int) -> dict:
    """The cached forward and an edge-pruning run, each in a fresh process."""
    import subprocess

    rows = {}
    for part, extra in (("forward", ["--attribution-part", "forward"]),
                        ("edge-pruning", ["--edge-pruning-part", "--edge-pruning-steps",
                                          str(steps)])):
        print(f"  {part} ...", flush=True)
        done = subprocess.run([sys.executable, __file__, *extra, "--attribution-batch",
                               str(batch), "--attribution-seq", str(seq)],
                              check=True, capture_output=True, text=True)
        rows[part] = json.loads(done.stdout.strip().splitlines()[-1])
    cache, row = rows["forward"], rows["edge-pruning"]
    row["memory_vs_cache"] = row["peak_rss_mb"] / cache["peak_rss_mb"]
    row["activations_vs_cache"] = ((row["peak_rss_mb"] - row["model_rss_mb"])
                                   / (cache["peak_rss_mb"] - cache["model_rss_mb"]))
    return rows


def bench_gpt2_attribution(batch: int, seq: int) -> dict:
    """The three parts, each in a fresh process (peak RSS only grows within a process)."""
    import subprocess

    rows = {}
    for part in ("forward", "eap", "eap-ig"):
        print(f"  {part} ...", flush=True)
        done = subprocess.run([sys.executable, __file__, "--attribution-part", part,
                               "--attribution-batch", str(batch), "--attribution-seq", str(seq)],
                              check=True, capture_output=True, text=True)
        rows[part] = json.loads(done.stdout.strip().splitlines()[-1])
    cache = rows["forward"]["peak_rss_mb"] - rows["forward"]["model_rss_mb"]
    for part in ("eap", "eap-ig"):
        row = rows[part]
        row["memory_vs_cache"] = row["peak_rss_mb"] / rows["forward"]["peak_rss_mb"]
        row["activations_vs_cache"] = (row["peak_rss_mb"] - row["model_rss_mb"]) / cache
    return rows


# --------------------------------------------------------------------------- exact patching


def bench_gpt2_exact(batch: int, seq: int, whole: bool, seed: int = 0) -> dict:
    """Exact edge patching's cost on the GPT-2-small shape (see the module docstring)."""
    from acdc.core.metrics import metric_targets
    from acdc.core.recordings import CircuitMeter, record
    from acdc.core.removals import SingleRemovals, receiver_groups
    from acdc.core.selection import Selection, prune, select_edges
    from acdc.core.tasks.values import Task
    from acdc.methods.base import run_method
    from acdc.methods.exact import EXACT

    torch.set_num_threads(DEFAULT_THREADS)
    torch.manual_seed(seed)
    model = build_model(GPT2_CONFIG, seed=seed)
    vocab = GPT2_CONFIG["d_vocab"]
    clean = torch.randint(0, vocab, (batch, seq))
    corrupt = torch.randint(0, vocab, (batch, seq))
    answers = torch.randint(0, vocab, (batch, 2))
    task = Task(name="gpt2-shape", description="", source="benchmark", model=None,
                metric="logit_diff", threshold=0.0, ablation="corrupt", seed=seed,
                clean=clean.tolist(), corrupt=corrupt.tolist(), positions=[[seq - 1]] * batch,
                answers=answers[:, :1].tolist(), wrong_answers=answers[:, 1:].tolist())
    from acdc.core.loading import LoadedModel

    loaded = LoadedModel("gpt2-shape", extract_weights(model), None, model_shape(model.cfg))
    graph = build_graph(model_shape(model.cfg).graph_shape("qkv"))
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}

    def measure(fn) -> dict[str, float]:
        start = {kind: clock() for kind, clock in clocks.items()}
        fn()
        return {kind: clock() - start[kind] for kind, clock in clocks.items()}

    def plain_forward() -> dict[str, float]:
        with torch.inference_mode():
            times = [measure(lambda: model(clean)) for _ in range(3)]
        return {kind: statistics.median(t[kind] for t in times) for kind in clocks}

    forward_before = plain_forward()
    state: dict = {}
    with torch.inference_mode():
        setup = measure(lambda: state.update(patched=record(loaded, task, graph, "corrupt")
                                             .patched))
        patched = state["patched"]
        targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers)
        from acdc.core.metrics import build_metric

        metric = build_metric("logit_diff", patched.clean_logits, targets)
        made = measure(lambda: state.update(removals=SingleRemovals(patched)))
        removals = state["removals"]
        width = removals.width
        groups = receiver_groups(graph)

        def kind_of(group) -> tuple[int, str]:
            edge = group[0]
            r = edge.receiver
            if edge.kind == "direct":
                return r.layer, f"direct {edge.qkv}"
            return r.layer, r.qkv or r.kind

        timed: dict[tuple[int, str], dict[str, float]] = {}
        for group in groups:
            key = kind_of(group)
            if key not in timed:
                chunk = group[:width]
                cost = measure(lambda chunk=chunk: metric(removals.logits(chunk)).tolist())
                timed[key] = {kind: value / len(chunk) for kind, value in cost.items()}
        by_layer: dict[int, dict] = {}
        total = {kind: setup[kind] + made[kind] for kind in clocks}
        for group in groups:
            layer, kind = kind_of(group)
            row = by_layer.setdefault(layer, {"edges": 0, **{k: 0.0 for k in clocks}})
            row["edges"] += len(group)
            for clock in clocks:
                row[clock] += timed[(layer, kind)][clock] * len(group)
                total[clock] += timed[(layer, kind)][clock] * len(group)
        ranking = torch.rand(len(graph.edges), generator=torch.Generator().manual_seed(seed))
        kept = prune(graph, select_edges(graph, ranking.tolist(), Selection(top_n=1000)))
        meter = CircuitMeter(patched, metric)
        final = measure(lambda: meter.metric(kept))
        for clock in clocks:
            total[clock] += final[clock]
    measured = None
    if whole:
        from acdc.core.settings import CommonSettings as Common

        measured = measure(lambda: run_method(EXACT, loaded, task, Common("logit_diff", "corrupt"),
                                           selection=Selection(top_n=1000), graph=graph))
    forward_after = plain_forward()
    unit = {kind: (forward_before[kind] + forward_after[kind]) / 2 for kind in clocks}
    n_edges = len(graph.edges)
    layers = [{"layer": layer, "edges": row["edges"],
               **{f"fpe_per_edge_{clock}": row[clock] / unit[clock] / row["edges"]
                  for clock in clocks}}
              for layer, row in sorted(by_layer.items(), reverse=True)]
    return {"batch": batch, "seq": seq, "threads": DEFAULT_THREADS, "edges": n_edges,
            "width": width, "forward": unit, "forward_runs": [forward_before, forward_after],
            "setup_fpe": {clock: (setup[clock] + made[clock]) / unit[clock] for clock in clocks},
            "final_fpe": {clock: final[clock] / unit[clock] for clock in clocks},
            "projected_s": total, "layers": layers,
            "fpe_per_edge": {clock: total[clock] / unit[clock] / n_edges for clock in clocks},
            "whole_s": measured,
            "whole_fpe_per_edge": None if measured is None else {
                clock: measured[clock] / unit[clock] / n_edges for clock in clocks},
            "peak_rss_mb": peak_rss_mb()}


# --------------------------------------------------------------------------- HISP


def bench_gpt2_hisp(batch: int, seq: int, seed: int = 0) -> dict:
    """HISP's cost on the GPT-2-small shape, by phase (see the module docstring)."""
    from acdc.core.loading import LoadedModel
    from acdc.core.metrics import build_metric, metric_targets
    from acdc.core.patching import task_tensors
    from acdc.core.recordings import CircuitMeter
    from acdc.core.selection import Selection, edges_among, prune, select_nodes
    from acdc.core.settings import CommonSettings as Common
    from acdc.core.tasks.values import Task
    from acdc.methods.base import run_method
    from acdc.methods.hisp import HISP
    from acdc.methods.hisp.scores import gate_gradients

    torch.set_num_threads(DEFAULT_THREADS)
    torch.manual_seed(seed)
    model = build_model(GPT2_CONFIG, seed=seed)
    vocab = GPT2_CONFIG["d_vocab"]
    clean = torch.randint(0, vocab, (batch, seq))
    corrupt = torch.randint(0, vocab, (batch, seq))
    answers = torch.randint(0, vocab, (batch, 2))
    task = Task(name="gpt2-shape", description="", source="benchmark", model=None,
                metric="logit_diff", threshold=0.0, ablation="corrupt", seed=seed,
                clean=clean.tolist(), corrupt=corrupt.tolist(), positions=[[seq - 1]] * batch,
                answers=answers[:, :1].tolist(), wrong_answers=answers[:, 1:].tolist())
    loaded = LoadedModel("gpt2-shape", extract_weights(model), None, model_shape(model.cfg))
    graph = build_graph(model_shape(model.cfg).graph_shape("qkv"))
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}

    def measure(fn) -> dict[str, float]:
        start = {kind: clock() for kind, clock in clocks.items()}
        fn()
        return {kind: clock() - start[kind] for kind, clock in clocks.items()}

    def plain_forward() -> dict[str, float]:
        with torch.inference_mode():
            times = [measure(lambda: model(clean)) for _ in range(3)]
        return {kind: statistics.median(t[kind] for t in times) for kind in clocks}

    forward_before = plain_forward()
    weights = extract_weights(model)
    tensors = task_tensors(task, "cpu")
    targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers)
    state: dict = {}
    def gradients() -> None:
        state["grads"], state["run"] = gate_gradients(weights, graph, tensors, targets,
                                                      "logit_diff", batch)
    phases = {"gradients": measure(gradients)}

    def ablated_run() -> None:
        with torch.no_grad():
            state["patched"] = PatchedModel(weights, graph, tensors.clean, tensors.corrupt,
                                            tensors.pos_batch, tensors.pos_index, "corrupt",
                                            tensors.lengths, state["run"])
    phases["ablated run"] = measure(ablated_run)
    patched = state["patched"]
    metric = build_metric("logit_diff", patched.clean_logits, targets)
    scores = dict(zip([s.name for s in graph.senders[1:]],
                      state["grads"].abs().sum(0).tolist(), strict=True))
    nodes = select_nodes(graph, scores, Selection(top_n=30))
    kept = prune(graph, edges_among(graph, nodes))
    state["meter"] = CircuitMeter(patched, metric)
    phases["final"] = measure(lambda: state["meter"].metric(kept))
    state.clear()
    del patched
    phases["whole"] = measure(lambda: run_method(HISP, loaded, task, Common("logit_diff"),
                                                 selection=Selection(top_n=30), graph=graph))
    forward_after = plain_forward()
    unit = {kind: (forward_before[kind] + forward_after[kind]) / 2 for kind in clocks}
    return {"batch": batch, "seq": seq, "threads": DEFAULT_THREADS, "forward": unit,
            "forward_runs": [forward_before, forward_after], "phases": phases,
            "fpe": {name: {kind: value[kind] / unit[kind] for kind in clocks}
                    for name, value in phases.items()},
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
    families = [(label, report[f"{family}_edge_cost"])
                for family, (label, _) in FAMILY_SHAPES.items() if f"{family}_edge_cost" in report]
    if g and families:
        lines += ["Model families at GPT-2 small's size, the same batch, the same kind of random "
                  "sparse circuit; FPE against each model's own plain forward:", "",
                  "| shape | plain forward | edges tested | FPE per edge test | against GPT-2 |",
                  "|---|---|---|---|---|"]
        for name, row in (("GPT-2 (LayerNorm, learned positions, GELU)", g), *families):
            lines.append(f"| {name} | {row['forward_s']:.2f} s | {row['tested_edges']} | "
                         f"{row['projected_fpe_per_test']:.4f} | "
                         f"{row['projected_fpe_per_test'] / g['projected_fpe_per_test']:.2f}x |")
        lines.append("")
    r = report.get("gpt2_run")
    if r:
        lines += [f"Whole GPT-2-shape run, batch {r['batch']} x {r['seq']}, "
                  f"threshold {r['threshold']}: "
                  f"{r['run_s']:.0f} s, {r['tested']} edges tested, {r['kept']} kept, "
                  f"{r['fpe_per_test']:.4f} FPE per test; peak RSS {r['peak_rss_mb']:.0f} MB.", ""]
    a = report.get("gpt2_attribution")
    if a:
        f = a["forward"]
        lines += [f"Attribution on the GPT-2-small shape, batch {f['batch']} x {f['seq']}, logit "
                  f"difference, corrupt ablation, {a['eap']['edges']} edges, {f['threads']} "
                  f"threads. FPE: time / one plain TransformerLens forward pass (median of 3 "
                  f"before and 3 after, in the same process), as wall / CPU time. A plain "
                  f"forward caching every activation (`run_with_cache`) peaks at "
                  f"{f['peak_rss_mb']:.0f} MB resident, {f['model_rss_mb']:.0f} MB of it the "
                  f"model and the libraries; each method runs in its own process.", "",
                  "| method | differentiated passes | clean/ablated runs | contraction "
                  "| scores total | final circuit pass | whole run | peak RSS "
                  "| vs cached forward | above the model, vs cached forward |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for part in ("eap", "eap-ig"):
            r = a[part]
            fpe = r["fpe"]

            def cell(key: str, fpe: dict = fpe) -> str:
                return f"{fpe[key]['wall']:.2f} / {fpe[key]['cpu']:.2f}"

            name = "EAP" if part == "eap" else "EAP-IG (5 steps)"
            lines.append(f"| {name} | {cell('passes')} | {cell('runs')} | {cell('contraction')} "
                         f"| **{cell('scoring')}** ({r['scoring']['wall']:.1f} s) "
                         f"| {cell('final')} | {cell('whole')} | {r['peak_rss_mb']:.0f} MB "
                         f"| {r['memory_vs_cache']:.2f}x | {r['activations_vs_cache']:.2f}x |")
        lines.append("")
    x = report.get("gpt2_exact")
    if x:
        f = x["fpe_per_edge"]
        lines += [f"Exact edge patching on the GPT-2-small shape, batch {x['batch']} x "
                  f"{x['seq']}, logit difference, corrupt ablation, {x['edges']} edges, "
                  f"{x['threads']} threads, {x['width']} candidates per pass; plain forward "
                  f"{x['forward']['wall']:.2f} s wall / {x['forward']['cpu']:.2f} s CPU. One pass "
                  f"per kind of receiver and layer timed, every receiver priced from it. FPE "
                  f"as wall / CPU time:", "",
                  "| receiver layer | edges | FPE per edge |", "|---|---|---|"]
        for row in x["layers"]:
            name = "logits" if row["layer"] == GPT2_CONFIG["n_layers"] else row["layer"]
            lines.append(f"| {name} | {row['edges']} | {row['fpe_per_edge_wall']:.4f} / "
                         f"{row['fpe_per_edge_cpu']:.4f} |")
        lines += ["", f"Projected whole run: **{f['wall']:.4f} / {f['cpu']:.4f} FPE per edge** "
                  f"({x['projected_s']['wall'] / 60:.1f} min wall), recordings "
                  f"{x['setup_fpe']['wall']:.1f} FPE, final circuit pass "
                  f"{x['final_fpe']['wall']:.1f} FPE; peak RSS {x['peak_rss_mb']:.0f} MB."]
        if x["whole_fpe_per_edge"] is not None:
            w = x["whole_fpe_per_edge"]
            lines.append(f"Whole run measured: {w['wall']:.4f} / {w['cpu']:.4f} FPE per edge "
                         f"({x['whole_s']['wall'] / 60:.1f} min wall).")
        lines.append("")
    h = report.get("gpt2_hisp")
    if h:
        fpe = h["fpe"]

        def cell(name: str) -> str:
            return f"{fpe[name]['wall']:.2f} / {fpe[name]['cpu']:.2f}"

        lines += [f"HISP on the GPT-2-small shape, batch {h['batch']} x {h['seq']}, logit "
                  f"difference, corrupt ablation, {h['threads']} threads; plain forward "
                  f"{h['forward']['wall']:.2f} s wall / {h['forward']['cpu']:.2f} s CPU. FPE as "
                  f"wall / CPU time:", "",
                  "| gate gradients (forward + backward, records the clean run) | ablated run "
                  "| final circuit pass | whole run | peak RSS |", "|---|---|---|---|---|",
                  f"| {cell('gradients')} | {cell('ablated run')} | {cell('final')} | "
                  f"**{cell('whole')}** | {h['peak_rss_mb']:.0f} MB |", ""]
    e = report.get("gpt2_edge_pruning")
    if e:
        f, r = e["forward"], e["edge-pruning"]
        fpe = r["fpe"]
        lines += [f"Edge pruning on the GPT-2-small shape, batch {r['batch']} x {r['seq']}, KL, "
                  f"corrupt ablation, {r['edges']} edges, {r['threads']} threads, {r['steps']} "
                  f"steps. FPE as above (wall / CPU); a step is the median of the steps after "
                  f"the first. A plain forward caching every activation peaks at "
                  f"{f['peak_rss_mb']:.0f} MB resident ({f['model_rss_mb']:.0f} MB the model "
                  f"and the libraries); each runs in its own process.", "",
                  "| one step | setup (runs, first step) | final circuit | peak RSS "
                  "| vs cached forward | above the model, vs cached forward |",
                  "|---|---|---|---|---|---|",
                  f"| **{fpe['step']['wall']:.2f} / {fpe['step']['cpu']:.2f}** "
                  f"({r['step_s']['wall']:.1f} s) "
                  f"| {fpe['setup']['wall']:.2f} / {fpe['setup']['cpu']:.2f} "
                  f"| {fpe['finish']['wall']:.2f} / {fpe['finish']['cpu']:.2f} "
                  f"| {r['peak_rss_mb']:.0f} MB | {r['memory_vs_cache']:.2f}x "
                  f"| {r['activations_vs_cache']:.2f}x |", ""]
    if report.get("positions"):
        lines += positions_markdown(report["positions"])
    return "\n".join(lines)


def positions_markdown(p: dict) -> list[str]:
    """Part 7's tables."""
    lines: list[str] = []
    cost = p.get("edge_cost")
    if cost:
        b, q = cost["blind"], cost["positional"]
        lines += [f"Edge tests at positions, GPT-2-small shape, batch {b['batch']} x {b['seq']}, "
                  f"random weights, the same random sparse circuit blind and at 6 groups (IOI's "
                  f"labels: each blind edge at a random half of the groups, closed as ACDC "
                  f"leaves it); both measured in one process, each against plain forwards timed "
                  f"next to its own tests (FPE: the ratio is what compares):", "",
                  "| graph | edges | circuit edges | edges tested (live receivers) | plain forward "
                  "| FPE per edge test (setup included) |", "|---|---|---|---|---|---|"]
        for name, row in (("blind", b), ("6 groups", q)):
            lines.append(f"| {name} | {row['graph_edges']} | {row['circuit_edges']} | "
                         f"{row['tested_edges']} | {row['forward_s']:.2f} s | "
                         f"{row['projected_fpe_per_test']:.4f} |")
        lines += ["", f"At positions one edge test costs **{cost['ratio']:.2f}x** the blind "
                  f"one.", "", "| receiver layer | blind: test | FPE | 6 groups: test | FPE |",
                  "|---|---|---|---|---|"]
        by_layer = {r["layer"]: r for r in q["layers"]}
        for r in b["layers"]:
            other = by_layer.get(r["layer"])
            name = "logits" if r["layer"] == GPT2_CONFIG["n_layers"] else r["layer"]
            right = (f"{other['test_ms']:.1f} ms | {other['fpe']:.4f}" if other else "- | -")
            lines.append(f"| {name} | {r['test_ms']:.1f} ms | {r['fpe']:.4f} | {right} |")
        lines.append("")
    ioi = p.get("ioi")
    if ioi:
        lines += [f"The bundled ioi task ({ioi['prompts']} prompts), blind ({ioi['edges']['none']} "
                  f"residual edges) and at positions ({', '.join(ioi['groups'])}: "
                  f"{ioi['edges']['labels']} residual edges), corrupt ablation. Faithfulness: "
                  f"logit difference of the circuit, the clean model 1 and the empty circuit 0; "
                  f"KL to the clean model. Rankings cut at the same top-n (then pruned: the "
                  f"edges column counts what is left); ACDC on KL at each threshold:", "",
                  "| method | cut | blind: edges (x 6 groups) | faithfulness | KL "
                  "| at positions, same cut: edges | faithfulness | KL "
                  "| at positions, top 6 x n: edges | faithfulness | KL |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        n_groups = len(ioi["groups"])

        def cells(r: dict) -> str:
            return f"{r['edges']} | {r['faithfulness']:.3f} | {r['kl']:.3f}"

        for method in ("eap-ig", "exact", "acdc"):
            key = "threshold" if method == "acdc" else "budget"
            at = [r for r in ioi[method] if r["positions"] == "labels"]
            for r in (r for r in ioi[method] if r["positions"] == "none"):
                same = next(q for q in at if q[key] == r[key]
                            and (method == "acdc" or q["top_n"] == r["top_n"]))
                cut = f"tau {r[key]:g}" if method == "acdc" else f"top {r[key]}"
                wide = ("- | - | -" if method == "acdc" else cells(next(
                    q for q in at if q["budget"] == r[key] and q["top_n"] == r[key] * n_groups)))
                lines.append(f"| {method} | {cut} | {r['edges']} ({r['edges'] * n_groups}) | "
                             f"{r['faithfulness']:.3f} | {r['kl']:.3f} | {cells(same)} | "
                             f"{wide} |")
        lines.append("")
    return lines


def write_report(out: Path, stem: str, report: dict) -> None:
    """`OUT/<stem>.json` and `OUT/<stem>.md`, and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(report) + "\n")
    print(markdown(report))


def report_header() -> dict:
    """What every results file records about its run: the command, machine, torch, threads."""
    return {"command": "python " + " ".join(sys.argv), "machine": platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d"), "tasks": []}


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
    parser.add_argument("--families", nargs="*", choices=sorted(FAMILY_SHAPES), default=[],
                        help="also time the edge tests on these architectures at GPT-2 small's "
                             "size (llama: GQA, rotary, SwiGLU, RMSNorm; gemma2: and post-norms, "
                             "soft caps, local layers), side by side with GPT-2's")
    parser.add_argument("--gpt2-run-batch", type=int, default=100,
                        help="a whole run at this batch (0: none; about 5 minutes at 100)")
    parser.add_argument("--gpt2-run-threshold", type=float, default=0.001)
    parser.add_argument("--attribution", action="store_true",
                        help="also time EAP and EAP-IG on the GPT-2 shape (three processes)")
    parser.add_argument("--attribution-only", action="store_true",
                        help="only the attribution part (writes attribution.json/.md)")
    parser.add_argument("--attribution-batch", type=int, default=50)
    parser.add_argument("--attribution-seq", type=int, default=16)
    parser.add_argument("--exact", action="store_true",
                        help="also time exact edge patching on the GPT-2 shape (batch and "
                             "length of --attribution-batch and --attribution-seq)")
    parser.add_argument("--exact-only", action="store_true",
                        help="only the exact-patching part (writes exact.json/.md)")
    parser.add_argument("--exact-whole", action="store_true",
                        help="with --exact: also run the whole method (about an hour on 2 CPU "
                             "cores) to check the projection")
    parser.add_argument("--hisp", action="store_true",
                        help="also time HISP on the GPT-2 shape (batch and length of "
                             "--attribution-batch and --attribution-seq)")
    parser.add_argument("--hisp-only", action="store_true",
                        help="only the HISP part (writes hisp.json/.md)")
    parser.add_argument("--positions", action="store_true",
                        help="also part 7: circuits at positions (edge-test cost at 6 groups, "
                             "the ioi task's circuits blind and at positions)")
    parser.add_argument("--positions-only", action="store_true",
                        help="only part 7 (writes positions.json/.md)")
    parser.add_argument("--positions-budgets", type=int, nargs="*",
                        default=[5, 10, 20, 40, 80, 160])
    parser.add_argument("--positions-thresholds", type=float, nargs="*",
                        default=[0.003, 0.01, 0.03, 0.1])
    parser.add_argument("--attribution-part", choices=("forward", "eap", "eap-ig"),
                        help=argparse.SUPPRESS)  # one part, in this process; prints JSON
    parser.add_argument("--edge-pruning", action="store_true",
                        help="also time edge pruning's steps on the GPT-2 shape (two processes)")
    parser.add_argument("--edge-pruning-only", action="store_true",
                        help="only the edge-pruning part (writes edge_pruning.json/.md)")
    parser.add_argument("--edge-pruning-steps", type=int, default=6)
    parser.add_argument("--edge-pruning-part", action="store_true",
                        help=argparse.SUPPRESS)  # the run, in this process; prints JSON
    args = parser.parse_args()
    if args.edge_pruning_part:
        print(json.dumps(edge_pruning_part(args.attribution_batch, args.attribution_seq,
                                           args.edge_pruning_steps)))
        return
    if args.edge_pruning_only:
        report = report_header()
        report["gpt2_edge_pruning"] = bench_gpt2_edge_pruning(
            args.attribution_batch, args.attribution_seq, args.edge_pruning_steps)
        write_report(Path(args.out), "edge_pruning", report)
        return
    if args.attribution_part:
        print(json.dumps(attribution_part(args.attribution_part, args.attribution_batch,
                                          args.attribution_seq)))
        return
    if args.positions_only:
        report = report_header()
        report["positions"] = bench_positions(args)
        write_report(Path(args.out), "positions", report)
        return
    if args.hisp_only:
        report = report_header()
        report["gpt2_hisp"] = bench_gpt2_hisp(args.attribution_batch, args.attribution_seq)
        write_report(Path(args.out), "hisp", report)
        return
    if args.exact_only:
        report = report_header()
        report["gpt2_exact"] = bench_gpt2_exact(args.attribution_batch, args.attribution_seq,
                                                args.exact_whole)
        write_report(Path(args.out), "exact", report)
        return
    if args.attribution_only:
        report = report_header()
        report["gpt2_attribution"] = bench_gpt2_attribution(args.attribution_batch,
                                                            args.attribution_seq)
        write_report(Path(args.out), "attribution", report)
        return

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
        for family in args.families:
            print(f"{family} shape, edge test costs ...", flush=True)
            report[f"{family}_edge_cost"] = bench_gpt2_edge_cost(
                args.gpt2_batch, args.gpt2_seq, args.gpt2_tests, config=FAMILY_SHAPES[family][1])
            print(json.dumps(report[f"{family}_edge_cost"]), flush=True)
    if args.gpt2_run_batch:
        print("GPT-2 shape, whole run ...", flush=True)
        report["gpt2_run"] = bench_gpt2_run(args.gpt2_run_batch, args.gpt2_seq,
                                            args.gpt2_run_threshold)
    if args.attribution:
        print("GPT-2 shape, attribution ...", flush=True)
        report["gpt2_attribution"] = bench_gpt2_attribution(args.attribution_batch,
                                                            args.attribution_seq)
    if args.hisp:
        print("GPT-2 shape, HISP ...", flush=True)
        report["gpt2_hisp"] = bench_gpt2_hisp(args.attribution_batch, args.attribution_seq)
    if args.positions:
        report["positions"] = bench_positions(args)
    if args.exact:
        print("GPT-2 shape, exact edge patching ...", flush=True)
        report["gpt2_exact"] = bench_gpt2_exact(args.attribution_batch, args.attribution_seq,
                                                args.exact_whole)
    if args.edge_pruning:
        print("GPT-2 shape, edge pruning ...", flush=True)
        report["gpt2_edge_pruning"] = bench_gpt2_edge_pruning(
            args.attribution_batch, args.attribution_seq, args.edge_pruning_steps)
    write_report(Path(args.out), "benchmark", report)


if __name__ == "__main__":
    main()
