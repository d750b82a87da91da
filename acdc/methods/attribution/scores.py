"""EAP and EAP-IG scores of every edge: the passes (`gradients.py` does the arithmetic)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from acdc.core import forward
from acdc.core.graph import Graph, build_graph
from acdc.core.metrics import build_metric, metric_targets
from acdc.core.patching import PatchedModel, task_tensors
from acdc.core.positions import positional_shape
from acdc.core.recordings import CircuitMeter
from acdc.core.settings import CommonSettings
from acdc.methods.attribution import EapSettings, check_metric, method_name
from acdc.methods.attribution.gradients import (
    Gradients,
    differentiate,
    edge_scores,
    record_run,
)

if TYPE_CHECKING:
    from acdc.core.loading import LoadedModel
    from acdc.core.tasks.values import Task


def edge_attribution(model: LoadedModel, task: Task, common: CommonSettings,
                     settings: EapSettings, graph: Graph | None = None
                     ) -> tuple[list[float], CircuitMeter]:
    """Every edge's EAP score (EAP-IG's with `EapIgSettings`), in graph order, and a meter of
    the task's recorded runs (to measure circuits without recording them again)."""
    common.validate()
    name = method_name(settings)
    check_metric(name, common.metric)
    if graph is None:
        graph = build_graph(positional_shape(model.shape.graph_shape(common.granularity), task,
                                             common.positions))
    weights = model.weights
    device = weights.W_E.device
    tensors = task_tensors(task, device, weights.causal, graph.shape)
    targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers, device)
    metric_of = lambda logits: build_metric(common.metric, logits, targets)  # noqa: E731
    made: dict[float, Gradients] = {}
    clean_run = ablated_run = None
    if settings.alphas == (1.0,):  # EAP: the differentiated clean pass is the clean run
        made[1.0] = differentiate(weights, graph, forward.embed(weights, tensors.clean),
                                  tensors.pos_batch, tensors.pos_index, metric_of, record=True)
        clean_run = made[1.0].recorded
    elif common.ablation == "corrupt" and 0.0 in settings.alphas:
        # EAP-IG: the pass at alpha = 0 starts from the corrupted prompts' embedding, so it is
        # the ablated run; the clean run comes first, for the metric
        clean_run, clean_logits = record_run(weights, graph, forward.embed(weights, tensors.clean),
                                             tensors.pos_batch, tensors.pos_index)
        metric = metric_of(clean_logits)
        made[0.0] = differentiate(weights, graph, forward.embed(weights, tensors.corrupt),
                                  tensors.pos_batch, tensors.pos_index, lambda _: metric,
                                  record=True)
        ablated_run, made[0.0].recorded = made[0.0].recorded, None
    with torch.no_grad():  # not inference mode: the gradient passes read these tensors
        patched = PatchedModel(weights, graph, tensors.clean, tensors.corrupt, tensors.pos_batch,
                               tensors.pos_index, common.ablation, tensors.lengths,
                               clean_run, tensors.groups, ablated_run)
        del clean_run, ablated_run
        metric = metric_of(patched.clean_logits)
    # takes the passes and the clean q/k/v over
    scores = edge_scores(patched, metric, settings.alphas, made)
    if settings.per_prompt:
        scores = scores / task.n_prompts
    return scores.tolist(), CircuitMeter(patched, metric)
