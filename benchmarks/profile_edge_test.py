"""Profile of ACDC edge tests on a GPT-2-small-shaped model (or a family's), for finding what
an edge test spends its time on; the figures to report come from `benchmark.py`.

    python benchmarks/profile_edge_test.py [--family llama|gemma2] [--layers logits 9 5 2]
    python benchmarks/profile_edge_test.py --family gemma2 --against main [--layers 8 4]

Walks the ACDC order with the decisions of `benchmark.py`'s random sparse circuit (the same
seed, batch and shape). By default, at the first live receiver of each layer asked for, it runs
a few edge tests under `torch.profiler` and prints the operators that took most of their time
(self CPU time) and the layer's time per test.

`--against REV` compares the engine with its own `propagation.py` at a git revision, in one
process: two patched models of the same circuit, and at every live receiver the same few tests
timed with each, alternately (the machine's speed drifts; each pair is timed side by side).
Prints each layer's time per test with both and their ratio, and the ratio of the whole run's
tests (each receiver weighted by its incoming edges, as `benchmark.py` projects a run; of the
layers asked for, with `--layers`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchmark import FAMILY_SHAPES, GPT2_CONFIG, sparse_circuit  # noqa: E402

from acdc.core.architecture import model_shape  # noqa: E402
from acdc.core.graph import build_graph  # noqa: E402
from acdc.core.metrics import MetricTargets, build_metric  # noqa: E402
from acdc.core.models import build_model, extract_weights  # noqa: E402
from acdc.core.patching import PatchedModel  # noqa: E402
from acdc.methods.acdc.propagation import IncrementalPatcher  # noqa: E402


def engine_at(revision: str) -> type:
    """`IncrementalPatcher` as `acdc/methods/acdc/propagation.py` was at a git revision."""
    source = subprocess.run(["git", "show", f"{revision}:acdc/methods/acdc/propagation.py"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(f"propagation_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:propagation.py", "exec"), module.__dict__)
    return module.IncrementalPatcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILY_SHAPES))
    parser.add_argument("--layers", nargs="*",
                        help="receiver layers (or logits) to profile (default: logits 10 8 4 1) "
                             "or, with --against, to time (default: every one)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seq", type=int, default=15)
    parser.add_argument("--tests", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--shapes", action="store_true",
                        help="group the operators by their input shapes")
    parser.add_argument("--against", metavar="REV",
                        help="time every live receiver's tests against the engine at REV")
    args = parser.parse_args()
    config = FAMILY_SHAPES[args.family][1] if args.family else GPT2_CONFIG
    rng = random.Random(0)
    torch.manual_seed(0)
    model = build_model(config, seed=0)
    clean = torch.randint(0, 50257, (args.batch, args.seq))
    corrupt = torch.randint(0, 50257, (args.batch, args.seq))
    graph = build_graph(model_shape(model.cfg).graph_shape("qkv"))
    layers = args.layers or (["logits", "10", "8", "4", "1"] if args.against is None else [])
    wanted = {a if a == "logits" else int(a) for a in layers}
    engines = [IncrementalPatcher] if args.against is None else [engine_at(args.against),
                                                                  IncrementalPatcher]
    with torch.inference_mode():
        start = time.perf_counter()
        model(clean)
        forward_s = time.perf_counter() - start
        weights = extract_weights(model)
        patchers, metric = [], None
        for engine in engines:
            patched = PatchedModel(weights, graph, clean, corrupt, torch.arange(args.batch),
                                   torch.full((args.batch,), args.seq - 1), "corrupt")
            metric = build_metric("kl", patched.clean_logits, MetricTargets.empty())
            patchers.append(engine(patched))
        assert metric is not None
        circuit = sparse_circuit(graph, rng, node_fraction=0.15, edge_keep=0.5)
        sources = {graph.edge(name).endpoints[0] for name in circuit}
        done, synced = set(), None
        timed: list[tuple[int, int, list[float]]] = []  # (layer, edges, seconds per engine)
        for node, edges in graph.acdc_order():
            layer = edges[0].receiver.layer
            key = "logits" if node == "logits" else layer
            live = node == "logits" or node in sources
            profiled = args.against is None and key in wanted and key not in done
            timing = args.against is not None and (not wanted or key in wanted)
            if live and edges[0].kind == "residual" and (profiled or timing):
                if synced != layer:
                    for incremental in patchers:
                        incremental.resync()
                    synced = layer
                for incremental in patchers:
                    incremental.enter(edges[0])
                    for edge in edges[:2]:  # warm up
                        float(metric(incremental.evaluate([edge])[0]))
                sample = edges[:args.tests]
                if profiled:
                    done.add(key)
                    with profile(activities=[ProfilerActivity.CPU],
                                 record_shapes=args.shapes) as prof:
                        start = time.perf_counter()
                        for edge in sample:
                            float(metric(patchers[0].evaluate([edge])[0]))
                        test_s = (time.perf_counter() - start) / len(sample)
                    print(f"{node} (layer {key}): {test_s * 1000:.1f} ms per test, "
                          f"{test_s / forward_s:.4f} FPE (forward {forward_s:.2f} s, one timing)")
                    print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by="self_cpu_time_total",
                                                    row_limit=args.rows))
                else:
                    seconds: list[list[float]] = [[] for _ in patchers]
                    for edge in sample:
                        for i, incremental in enumerate(patchers):
                            start = time.perf_counter()
                            float(metric(incremental.evaluate([edge])[0]))
                            seconds[i].append(time.perf_counter() - start)
                    timed.append((layer, len(edges), [statistics.median(s) for s in seconds]))
            for edge in edges:
                if edge.name not in circuit:
                    for incremental in patchers:
                        incremental.remove(edge)
    if args.against:
        print(f"edge tests, {args.family or 'gpt2'} shape, engine at {args.against} -> this "
              f"tree (median of {args.tests} tests per live receiver, alternately):")
        print("| receiver layer | edges tested | before | after | after / before |")
        print("|---|---|---|---|---|")
        for layer in sorted({t[0] for t in timed}, reverse=True):
            mine = [t for t in timed if t[0] == layer]
            n = sum(t[1] for t in mine)
            before, after = (sum(t[1] * t[2][i] for t in mine) / n for i in (0, 1))
            name = "logits" if layer == graph.n_layers else layer
            print(f"| {name} | {n} | {before * 1000:.1f} ms | {after * 1000:.1f} ms | "
                  f"{after / before:.2f} |")
        before, after = (sum(t[1] * t[2][i] for t in timed) for i in (0, 1))
        print(f"every live receiver's tests, weighted by its edges: {after / before:.2f}x "
              f"the time at {args.against}")


if __name__ == "__main__":
    main()
