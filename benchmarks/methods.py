"""The method table: every discovery method on every bundled task and both tracr programs.

Run from the repository root (one process; writes `OUT/methods.json`, `OUT/methods.md` and one
plot per task of every method's faithfulness curve, `DOCS/methods-TASK.svg`):

    python benchmarks/methods.py --out benchmarks/results --docs docs

For each task, at its defaults (prompts, ablation, granularity), every registered method:
ACDC (the task's metric and threshold; its ranking is the rank scores of a sweep over the
task's grid, the largest threshold that keeps an edge), subnetwork probing, HISP, EAP, EAP-IG
(5 steps), edge pruning and exact patching. The ranking methods use the task's own measure
(logit_diff for demo and ioi, prob_diff for greater-than, nll for induction, the L2 distance
for tracr), since a gradient of KL (and of L2) at the clean run is zero; HISP and EAP cannot
run where that leaves them no metric (the tracr tasks), and say so. Edge pruning aims at the
size of the reference circuit; subnetwork probing and HISP rank heads and MLPs.

The reference is the ground truth for tracr (the compiled circuits) and otherwise the ACDC
circuit at the task's default threshold (the bundled models are trained, their circuits not
known: ACDC's own AUC there is high by construction). Per method and task:

- edge AUC and node AUC: the pessimistic ROC area of every cut of its ranking
  (`acdc.evaluation.roc.ranking_roc`, as `circuit compare RUN --reference X` computes it);
- CPR and CMD of the task's measure over the MIB circuit sizes (`CircuitEvaluator.curve`: the
  top edges by |score|, residual edges counted as MIB counts, pruned);
- cost in forward-pass equivalents: the method's time over the median time of one plain
  forward pass of the model on the task's clean prompts (`LoadedModel.logits`).

`--quick` shortens the mask-learning methods' schedules (for a smoke test, not the table);
`--methods` runs some of the rows (the table names those left out); `--into FILE` adds the rows
run now to an earlier `methods.json` (the same tasks), so that the slow mask-learning rows can
be run apart, a task at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; before torch loads
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from acdc.core.loading import load_model  # noqa: E402
from acdc.core.selection import Selection, kept_nodes  # noqa: E402
from acdc.core.settings import CommonSettings  # noqa: E402
from acdc.core.tasks.reading import list_tasks  # noqa: E402
from acdc.core.tasks.resolving import resolve_task  # noqa: E402
from acdc.errors import GraphError  # noqa: E402
from acdc.evaluation.canonical import CANONICAL_NAMES, load_canonical  # noqa: E402
from acdc.evaluation.faithfulness import CircuitEvaluator  # noqa: E402
from acdc.evaluation.measures import ranking_from_scores  # noqa: E402
from acdc.evaluation.rank_scores import encode_score, rank_scores  # noqa: E402
from acdc.evaluation.roc import ranking_roc  # noqa: E402
from acdc.methods.base import make_settings, run_method  # noqa: E402
from acdc.methods.registry import METHODS  # noqa: E402
from acdc.run import cpu_threads  # noqa: E402
from acdc.sweeps.grid import default_grid  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
TASKS = ("demo", "ioi", "greater-than", "induction", "tracr-reverse", "tracr-proportion")
TASK_MEASURE = {"demo": "logit_diff", "ioi": "logit_diff", "greater-than": "prob_diff",
                "induction": "nll", "tracr-reverse": "l2", "tracr-proportion": "l2"}
ROWS = ("acdc", "sp", "hisp", "eap", "eap-ig", "edge-pruning", "exact")
NAMES = {"acdc": "ACDC", "sp": "SP", "hisp": "HISP", "eap": "EAP", "eap-ig": "EAP-IG",
         "edge-pruning": "edge pruning", "exact": "exact"}
# The ACDC paper's Table 2 as recomputed from the authors' ROC data (trained GPT-2 small for
# IOI and greater-than, the compiled tracr models), edge AUC / node AUC; corrupt ablation for
# IOI and greater-than with KL, zero ablation for tracr with the task's loss (L2).
PUBLISHED = {
    ("acdc", "ioi"): "0.869 / 0.880", ("sp", "ioi"): "0.823 / 0.842",
    ("hisp", "ioi"): "0.789 / 0.668",
    ("acdc", "greater-than"): "0.853 / 0.890", ("sp", "greater-than"): "0.806 / 0.827",
    ("hisp", "greater-than"): "0.693 / 0.642",
    ("acdc", "tracr-reverse"): "1.000 / 1.000", ("sp", "tracr-reverse"): "0.801 / 1.000",
    ("hisp", "tracr-reverse"): "0.577 / 0.750",
    ("acdc", "tracr-proportion"): "1.000 / 1.000", ("sp", "tracr-proportion"): "0.829 / 1.000",
    ("hisp", "tracr-proportion"): "0.679 / 0.909",
}


def forward_seconds(loaded, task) -> float:
    """The median time of one plain forward pass on the task's clean prompts."""
    width = max(len(p) for p in task.clean)
    tokens = torch.tensor([p + [p[-1]] * (width - len(p)) for p in task.clean])
    with torch.inference_mode():
        loaded.logits(tokens)  # warm-up
        times = []
        for _ in range(7):
            start = time.perf_counter()
            loaded.logits(tokens)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def options_for(name: str, spec, reference_size: int, quick: bool) -> dict[str, Any]:
    """A method's options on a task: the task file's defaults, a size for edge pruning."""
    if name == "acdc":
        return {}
    if name == "edge-pruning":
        steps = {"steps": 200} if quick else {}
        return {"top_n": reference_size, **steps}
    if name == "sp":
        return {"steps": 300} if quick else {}
    if name == "eap-ig":
        return {"ig_steps": 5}
    return {}


def bench_task(spec, quick: bool, names: list[str]) -> dict:
    loaded = load_model(spec.model)
    task = resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    torch.set_num_threads(cpu_threads(loaded.shape, "cpu") or DEFAULT_THREADS)
    measure = TASK_MEASURE[spec.name]
    forward_s = forward_seconds(loaded, task)
    acdc_common = CommonSettings(task.metric, task.ablation)  # type: ignore[arg-type]
    acdc_settings = make_settings(METHODS["acdc"], spec, {})
    acdc = run_method(METHODS["acdc"], loaded, task, acdc_common, acdc_settings, seed=task.seed)
    graph = acdc.graph
    if spec.name in CANONICAL_NAMES:
        reference, source = list(load_canonical(spec.name, graph)), f"canonical {spec.name}"
    else:
        reference, source = list(acdc.kept), "ACDC at the default threshold"
    reference_size = sum(1 for e in graph.edges if e.kind == "residual" and reference[e.index])
    evaluator = CircuitEvaluator(loaded, task, graph, task.ablation, metrics=[measure])
    rows: dict[str, dict] = {}
    for name in names:
        method = METHODS[name]
        metric = task.metric if name in ("acdc", "edge-pruning", "sp") else measure
        common = CommonSettings(metric, task.ablation)  # type: ignore[arg-type]
        try:
            settings = make_settings(method, spec, options_for(name, spec, reference_size,
                                                               quick))
            if method.check is not None:
                method.check(settings, common)
        except Exception as error:  # a method that cannot run on this task: say why
            rows[name] = {"skipped": str(error)}
            continue
        start = time.perf_counter()
        if name == "acdc":  # the sweep's rank scores are ACDC's ranking
            grid = default_grid(spec.name, task.metric, task.threshold).thresholds
            kept = [run_method(method, loaded, task, common,
                               make_settings(method, spec, {"threshold": t}), graph=graph,
                               seed=task.seed).kept for t in grid]
            scores = rank_scores(list(grid), kept)
            circuit = acdc
        else:
            selection = Selection(top_n=reference_size) if method.ranks else None
            circuit = run_method(method, loaded, task, common, settings, selection, graph=graph,
                                 seed=task.seed)
            scores = list(circuit.scores)
        seconds = time.perf_counter() - start
        node_scores = circuit.node_scores
        ranking = ({"node_scores": node_scores} if node_scores is not None
                   else {"edge_scores": scores})
        edge_auc, node_auc = (auc_or_none(graph, reference, level, ranking)
                              for level in ("edge", "node"))
        if node_scores is not None:
            curve = evaluator.curve(node_scores=node_scores)
        else:
            curve = evaluator.curve(ranking_from_scores(scores))
        rows[name] = {
            "metric": metric, "seconds": seconds, "fpe": seconds / forward_s,
            "edge_auc": edge_auc, "node_auc": node_auc,
            "cpr": curve.cpr[measure], "cmd": curve.cmd[measure],
            "curve": {"fractions": curve.fractions, "f": curve.faithfulness(measure)},
            "circuit_residual_edges": circuit.n_residual_kept,
            "circuit_nodes": len(kept_nodes(graph, circuit.kept)),
            **({"rank_scores": [encode_score(s) for s in scores]} if name == "acdc" else {}),
        }
        print(f"  {spec.name} {name}: {seconds:.1f} s, edge AUC {_f(edge_auc)}",
              file=sys.stderr)
    return {"task": spec.name, "model": Path(spec.model).name, "measure": measure,
            "ablation": task.ablation, "edges": len(graph.edges),
            "residual_edges": sum(1 for e in graph.edges if e.kind == "residual"),
            "reference": source, "reference_residual_edges": reference_size,
            "forward_s": forward_s, "methods": rows}


def auc_or_none(graph, reference, level: str, ranking: dict) -> float | None:
    """A ranking's ROC area against the reference; None where the reference keeps every node
    (or none) of the graph, which leaves that level's ROC undefined."""
    try:
        return ranking_roc(graph, reference, level, **ranking).auc
    except GraphError:
        return None


def plot(row: dict, path: Path) -> None:
    """Every method's faithfulness curve (the task's measure) on one task."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "circuit"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    styles = ("o-", "s--", "^-.", "v:", "D-", "P--", "X-.")
    for name, style in zip(ROWS, styles, strict=True):
        m = row["methods"].get(name, {})
        if "curve" not in m:
            continue
        points = [(x, f) for x, f in zip(m["curve"]["fractions"], m["curve"]["f"], strict=True)
                  if f is not None]
        if points:
            label = f"{NAMES[name]} (CPR {_f(m['cpr'])}, CMD {_f(m['cmd'])})"
            ax.plot(*zip(*points, strict=True), style, markersize=4, markerfacecolor="none",
                    label=label)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"fraction of the {row['residual_edges']} residual edges (top by |score|, "
                  f"pruned)")
    ax.set_ylabel(f"f ({row['measure']})")
    ax.set_title(f"{row['task']}: faithfulness by circuit size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


def markdown(report: dict) -> str:
    tasks = report["tasks"]
    head = "| method | " + " | ".join(f"{t['task']}" for t in tasks) + " |"
    rule = "|---|" + "---|" * len(tasks)
    lines = [f"Benchmark: `python benchmarks/methods.py` ({report['machine']}, torch "
             f"{report['torch']}, {report['date']}{', quick schedules' if report['quick'] else ''}"
             f"). Each task at its defaults; references: "
             + "; ".join(f"{t['task']}: {t['reference']} ({t['reference_residual_edges']} of "
                         f"{t['residual_edges']} residual edges)" for t in tasks) + ".", "",
             "**Edge AUC / node AUC** (pessimistic ROC area of every cut of each method's "
             "ranking against the reference):", "", head, rule]
    def rows(cell) -> list[str]:
        """One row per method: `cell` of each task's result, "-" where it did not run."""
        return [f"| {NAMES[name]} | " + " | ".join(
            "-" if "skipped" in m or not m else cell(m)
            for m in (t["methods"].get(name, {}) for t in tasks)) + " |"
            for name in report["methods"]]

    lines += rows(lambda m: f"{_f(m['edge_auc'])} / {_f(m['node_auc'])}")
    lines += ["", "**CPR / CMD** of each task's measure (faithfulness curve of the ranking at the "
              "MIB circuit sizes, pruned):", "", head, rule]
    lines += rows(lambda m: f"{_f(m['cpr'])} / {_f(m['cmd'])}")
    lines += ["", "**Cost** in forward-pass equivalents (the method alone, model loaded and task "
              "tokenised; ACDC: its sweep):", "", head, rule]
    lines += rows(lambda m: f"{m['fpe']:.0f}")
    skipped = [f"{NAMES[name]} on {t['task']}: {m['skipped']}" for t in tasks
               for name, m in t["methods"].items() if "skipped" in m]
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    if report.get("added"):
        lines += ["", "Rows added by later runs (`--into`): "
                  + ", ".join(NAMES[name] for name in report["added"])
                  + "; each run's cost is in its own forward passes, timed in that run."]
    left_out = [NAMES[name] for name in ROWS if name not in report["methods"]]
    if left_out:
        lines += ["", "Left out of this run (`--methods`): " + ", ".join(left_out) + "."]
    lines += ["", "**Published** (the ACDC paper's Table 2, edge AUC / node AUC, recomputed from "
              "the authors' ROC data; GPT-2 small for IOI and greater-than with KL and corrupt "
              "ablation, the compiled tracr models with L2 and zero ablation):", "",
              "| method | ioi | greater-than | tracr-reverse | tracr-proportion |",
              "|---|---|---|---|---|"]
    for name in ("acdc", "sp", "hisp"):
        lines.append(f"| {NAMES[name]} | " + " | ".join(
            PUBLISHED.get((name, t), "-") for t in ("ioi", "greater-than", "tracr-reverse",
                                                   "tracr-proportion")) + " |")
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def merged(earlier: dict, now: dict) -> dict:
    """`earlier` with the method rows of `now` added to its tasks (a task `earlier` lacks is
    added whole); the method list in table order."""
    tasks = {row["task"]: row for row in earlier["tasks"]}
    for row in now["tasks"]:
        if row["task"] in tasks:
            tasks[row["task"]]["methods"].update(row["methods"])
        else:
            tasks[row["task"]] = row
    methods = set(earlier["methods"]) | set(now["methods"])
    added = set(earlier.get("added", [])) | set(now["methods"])
    return {**earlier, "quick": earlier["quick"] or now["quick"],
            "methods": [name for name in ROWS if name in methods],
            "added": [name for name in ROWS if name in added],
            "tasks": list(tasks.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs",
                        help="where the per-task plots go (methods-TASK.svg)")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--methods", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--render", type=Path, default=None,
                        help="a methods.json: write its table (OUT/methods.md) and run nothing")
    parser.add_argument("--into", type=Path, default=None,
                        help="an earlier methods.json: add the rows run now to it")
    parser.add_argument("--quick", action="store_true",
                        help="short schedules for the mask-learning methods (a smoke test)")
    args = parser.parse_args()
    if args.render is not None:
        text = markdown(json.loads(args.render.read_text()))
        (args.out / "methods.md").write_text(text)
        print(text)
        return
    report: dict[str, Any] = {"machine": platform.machine(), "torch": torch.__version__,
                              "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
                              "methods": [name for name in ROWS if name in args.methods],
                              "tasks": []}
    specs = {spec.name: spec for spec in list_tasks()}
    for name in args.tasks:
        spec = specs[name]
        print(f"{name} ...", file=sys.stderr)
        row = bench_task(spec, args.quick, report["methods"])
        report["tasks"].append(row)
        plot(row, args.docs / f"methods-{name}.svg")
    if args.into is not None:
        report = merged(json.loads(args.into.read_text()), report)
        for row in report["tasks"]:
            plot(row, args.docs / f"methods-{row['task']}.svg")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "methods.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "methods.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
