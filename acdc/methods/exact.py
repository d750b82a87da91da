"""Exact edge patching: every edge scored by removing it alone from the full model.

An edge's score is the change of the run's metric when that edge alone carries its ablated
value and every other edge is kept (in a positional graph: that edge at its group's tokens):

    score(e) = metric(full model without e) - metric(full model)

which is the MIB benchmark's `exact` baseline (edge activation patching), and what ACDC
measures when it tests an edge of the full graph (its first test of every edge, were it to
keep every edge). Metrics are "lower is better", so a positive score means removing the edge
hurts, the sign of EAP's scores, of which this is the exact counterpart. Direct q/k/v edges
(`a1.h2<q>->a1.h2`: the head's whole query ablated) are scored too; as with EAP they follow
their inputs in a circuit (`acdc.core.selection`). Every ablation works.

MIB computes it with one forward pass per edge. Here the edges into one receiver are removed
together, one candidate each, through `acdc.core.removals`: only the receiver's node and what
lies after it are recomputed, over the positions a removal can change, the last layer and the
unembedding at the metric positions only.

The circuit is chosen from the scores by the pipeline's selection rule (`--top-n`,
`--edges-fraction`, `--threshold`), by |score| as for EAP.

>>> circuit = run_method(EXACT, loaded_model, task, CommonSettings(metric="logit_diff"),
...                      selection=Selection(top_n=50))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from acdc.methods.base import Discovery, EdgeScores, Method


@dataclass(frozen=True)
class Progress:
    """Reported after every pass: `decided` edges scored of `total`, the last one `edge`.
    Every edge is scored on the full model, whose metric `metric` is, with `kept` (all) of
    its edges."""

    decided: int
    total: int
    kept: int
    metric: float
    edge: str
    elapsed_s: float
    eta_s: float | None


def discover(job: Discovery) -> EdgeScores:
    """Every edge's exact score (graph order), and a meter over the recorded runs."""
    import torch  # once a run starts

    from acdc.core.metrics import build_metric, metric_targets
    from acdc.core.patching import task_tensors
    from acdc.core.recordings import CircuitMeter, record
    from acdc.core.removals import SingleRemovals, receiver_groups

    start = time.perf_counter()
    graph, task, common = job.graph, job.task, job.common
    patched = (record(job.model, task, graph, common.ablation).patched
               if job.recordings is None else job.recordings.fresh())
    device = patched.w.W_E.device
    with torch.inference_mode():
        if job.recordings is not None:
            job.recordings.check(graph, task_tensors(task, device, patched.w.causal,
                                                     graph.shape), common.ablation)
        targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers,
                                 device)
        metric = build_metric(common.metric, patched.clean_logits, targets)
        metric_full = float(metric(patched.clean_logits))
        removals = SingleRemovals(patched)
        scores = [math.nan] * len(graph.edges)
        done, passes = 0, 0
        scoring = time.perf_counter()
        for group in receiver_groups(graph):
            for i in range(0, len(group), removals.width):
                chunk = group[i:i + removals.width]
                values = metric(removals.logits(chunk)).tolist()
                passes += 1
                for edge, value in zip(chunk, values, strict=True):
                    scores[edge.index] = value - metric_full
                done += len(chunk)
                if job.on_progress is not None:
                    elapsed = time.perf_counter() - scoring
                    job.on_progress(Progress(
                        decided=done, total=len(graph.edges), kept=len(graph.edges),
                        metric=metric_full, edge=chunk[-1].name,
                        elapsed_s=time.perf_counter() - start,
                        eta_s=elapsed / done * (len(graph.edges) - done)))
    return EdgeScores(scores, {"scoring_s": time.perf_counter() - scoring,
                               "removal_passes": passes}, CircuitMeter(patched, metric))


EXACT = Method(
    name="exact",
    description="exact edge patching (MIB's exact baseline): every edge scored by the metric "
                "change when it alone is removed from the full model; the circuit is the top "
                "edges by |score|",
    run=discover,
    positions=True,
    citation="Mueller, Geiger, Wiegreffe et al. MIB: A Mechanistic Interpretability Benchmark. "
             "ICML 2025. arXiv:2504.13151 (the exact edge-patching baseline); Conmy et al. "
             "2023, arXiv:2304.14997 (ACDC's test of an edge in the full graph)",
)
