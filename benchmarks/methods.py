"""ACDC, EAP and EAP-IG side by side on the bundled tasks: time, faithfulness curve, ROC AUC.

Run from the repository root (one process; writes `OUT/methods.json`, `OUT/methods.md` and one
plot per task, `DOCS/methods-TASK.svg`):

    python benchmarks/methods.py --out benchmarks/results --docs docs

For every bundled task whose model is present, at the task's defaults (prompts, ablation,
granularity):

- ACDC with the task's metric and threshold (the circuit `circuit discover --task X` finds),
  then a sweep of ACDC over `--thresholds` (default 1e-4:1e-1:13, as `circuit sweep
  --thresholds`), whose rank scores (the largest threshold keeping an edge) are ACDC's ranking;
- EAP and EAP-IG (5 steps) with the task's own measure as the metric (logit_diff for demo and
  ioi, prob_diff for greater-than, nll for induction; plain EAP has no gradient for kl), each
  edge ranked by |score|.

Per method: the run time (the method alone, the model loaded and the task tokenised; for ACDC
the run at the default threshold, and the sweep's time beside it), the faithfulness curve of
its ranking (f for KL and for the task's measure at the MIB fractions, pruned, CPR and CMD;
`CircuitEvaluator.curve`), and the pessimistic ROC AUC of the ranking against the ACDC circuit
at the task's default threshold: every cut of the ranking (`acdc.evaluation.roc.ranking_roc`,
as `circuit compare RUN --reference X` computes it: the top-k edges, unpruned, cut between
different |scores|), plus (0, 0) and (1, 1) (ACDC's own AUC is of its sweep ranking against its
own circuit, so high by construction). And f of each method's circuit of the ACDC circuit's
size (top-n, pruned).

Ties: a sweep's rank scores take 13 values, and the many edges tied at the top (kept at every
threshold, +inf) are taken in graph order, so ACDC's top-k at small fractions is often an
arbitrary part of its circuit that pruning empties (f = 0 there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import cast

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; before torch loads
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from acdc.core.loading import load_model  # noqa: E402
from acdc.core.selection import Selection  # noqa: E402
from acdc.core.settings import Ablation, CommonSettings  # noqa: E402
from acdc.core.tasks.reading import list_tasks  # noqa: E402
from acdc.core.tasks.resolving import resolve_task  # noqa: E402
from acdc.evaluation.faithfulness import CircuitEvaluator  # noqa: E402
from acdc.evaluation.measures import FaithfulnessCurve, ranking_from_scores, ranking_scores  # noqa: E402
from acdc.evaluation.rank_scores import encode_score, rank_scores  # noqa: E402
from acdc.evaluation.roc import ranking_roc  # noqa: E402
from acdc.methods.acdc.search import AcdcSettings, run_acdc  # noqa: E402
from acdc.methods.attribution import EAP, EAP_IG, EapIgSettings, EapSettings  # noqa: E402
from acdc.methods.base import run_method  # noqa: E402
from acdc.run import cpu_threads  # noqa: E402
from acdc.sweeps.grid import parse_grid  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
TASK_MEASURE = {"demo": "logit_diff", "ioi": "logit_diff", "greater-than": "prob_diff",
                "induction": "nll"}
METHODS = ("ACDC", "EAP", "EAP-IG")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def ranking_auc(graph, ranking, reference, n_edges: int) -> dict:
    """The pessimistic ROC of every cut of `ranking` (`acdc.evaluation.roc.ranking_roc`)."""
    scores, _ = ranking_scores(ranking, n_edges)
    return ranking_roc(graph, reference, "edge", edge_scores=scores).to_json()


def curve_json(curve: FaithfulnessCurve, metrics: list[str]) -> dict:
    return {"fractions": curve.fractions,
            "f": {name: curve.faithfulness(name) for name in metrics},
            "n_edges_kept": [p.n_edges_kept for p in curve.points],
            "cpr": {name: curve.cpr[name] for name in metrics},
            "cmd": {name: curve.cmd[name] for name in metrics}}


def bench_task(spec, thresholds: tuple[float, ...]) -> dict:
    loaded = load_model(spec.model)
    task = resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    torch.set_num_threads(cpu_threads(loaded.shape, "cpu") or DEFAULT_THREADS)
    measure = TASK_MEASURE[spec.name]
    ablation = cast(Ablation, task.ablation)
    metrics = list(dict.fromkeys(["kl", measure]))

    acdc, acdc_s = timed(lambda: run_acdc(loaded, task, CommonSettings(task.metric, ablation),
                                          AcdcSettings(task.threshold)))
    graph, reference, n_edges = acdc.graph, list(acdc.kept), len(acdc.graph.edges)

    def sweep():
        return [run_acdc(loaded, task, CommonSettings(task.metric, ablation),
                         AcdcSettings(t), graph=graph).kept for t in thresholds]

    sweep_kept, sweep_s = timed(sweep)
    acdc_scores = rank_scores(thresholds, sweep_kept)

    common = CommonSettings(measure, ablation)
    size = Selection(top_n=acdc.n_residual_kept)
    eap, eap_s = timed(lambda: run_method(EAP, loaded, task, common, EapSettings(), size,
                                          graph=graph))
    ig, ig_s = timed(lambda: run_method(EAP_IG, loaded, task, common, EapIgSettings(ig_steps=5),
                                        size, graph=graph))

    evaluator = CircuitEvaluator(loaded, task, graph, task.ablation, metrics=metrics)
    rankings = {"ACDC": list(enumerate(acdc_scores)), "EAP": ranking_from_scores(eap.scores),
                "EAP-IG": ranking_from_scores(ig.scores)}
    seconds = {"ACDC": acdc_s, "EAP": eap_s, "EAP-IG": ig_s}
    circuits = {"ACDC": acdc, "EAP": eap, "EAP-IG": ig}
    rows = {}
    for name in METHODS:
        curve = evaluator.curve(rankings[name])
        at_size = evaluator.evaluate(circuits[name].kept)
        rows[name] = {"seconds": seconds[name], **curve_json(curve, metrics),
                      "at_acdc_size": {"n_edges_kept": circuits[name].n_edges_kept,
                                       **{m: at_size.metrics[m].faithfulness for m in metrics}},
                      "roc": ranking_auc(graph, rankings[name], reference, n_edges)}
    rows["ACDC"]["rank_scores"] = [encode_score(s) for s in acdc_scores]
    rows["ACDC"]["sweep_seconds"] = sweep_s
    return {"task": spec.name, "model": Path(spec.model).name, "edges": n_edges,
            "acdc_metric": task.metric, "threshold": task.threshold, "measure": measure,
            "reference_edges": acdc.n_edges_kept, "thresholds": list(thresholds),
            "methods": rows}


def plot(row: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "circuit"
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(["kl", row["measure"]]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), dpi=100,
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, style in zip(METHODS, ("o-", "s-", "^-"), strict=True):
            m = row["methods"][name]
            points = [(x, f) for x, f in zip(m["fractions"], m["f"][metric], strict=True)
                      if f is not None]
            label = (f"{name} (CPR {m['cpr'][metric]:.2f}, CMD {m['cmd'][metric]:.2f})"
                     if m["cpr"][metric] is not None else name)
            ax.plot(*zip(*points, strict=True), style, markersize=4, label=label)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel(f"fraction of the {row['edges']} edges (top by |score|, pruned)")
        ax.set_ylabel(f"f ({metric})")
        ax.set_title(f"{row['task']}: f for {metric}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


def markdown(report: dict) -> str:
    lines = [f"Benchmark: `python benchmarks/methods.py` ({report['machine']}, torch "
             f"{report['torch']}, {report['date']}). ACDC: the task's metric (kl) and threshold; "
             f"its curve and AUC use the rank scores of a sweep over {report['grid']} "
             "(13 thresholds). EAP and EAP-IG (5 steps): the task's measure as the metric. "
             "Time: the method alone (model loaded, task tokenised). CPR/CMD: the faithfulness "
             "curve at the MIB fractions (pruned). AUC: pessimistic ROC AUC of every cut of the "
             "ranking (top-k edges) against the ACDC circuit at the default threshold.",
             "f at ACDC's size: the method's circuit of as many edges as ACDC's at the default "
             "threshold (top-n by |score|, then pruned: edges left), f for KL / the task's "
             "measure.",
             "", "| task | method | metric | time | CPR kl | CMD kl | CPR task | CMD task | AUC | "
             "f at ACDC's size |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["tasks"]:
        measure = row["measure"]
        for name in METHODS:
            m = row["methods"][name]
            metric = row["acdc_metric"] if name == "ACDC" else measure
            time_s = f"{m['seconds']:.2f} s"
            if name == "ACDC":
                time_s += f" (sweep {m['sweep_seconds']:.1f} s)"
            lines.append(
                f"| {row['task']} ({row['reference_edges']} of {row['edges']} edges; task: "
                f"{measure}) | {name} | {metric} | {time_s} | {_f(m['cpr']['kl'])} | "
                f"{_f(m['cmd']['kl'])} | {_f(m['cpr'][measure])} | {_f(m['cmd'][measure])} | "
                f"{_f(m['roc']['auc'])} | {_size(m['at_acdc_size'], measure)} |")
    return "\n".join(lines) + "\n"


def _size(at: dict, measure: str) -> str:
    return f"{_f(at['kl'])} / {_f(at[measure])} ({at['n_edges_kept']} edges)"


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--thresholds", default="1e-4:1e-1:13", help="ACDC's sweep grid")
    args = parser.parse_args()
    grid = parse_grid(args.thresholds)
    report = {"machine": platform.machine(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "grid": args.thresholds, "tasks": []}
    for spec in list_tasks():
        if spec.name not in TASK_MEASURE or spec.model is None or not Path(spec.model).is_dir():
            continue
        row = bench_task(spec, grid.thresholds)
        report["tasks"].append(row)
        plot(row, args.docs / f"methods-{spec.name}.svg")
        print(f"{spec.name}: done", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "methods.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "methods.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
