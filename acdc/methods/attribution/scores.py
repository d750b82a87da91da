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
from acdc.methods.attribution.gradients import differentiate, edge_scores

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
    clean = None
    if settings.alphas == (1.0,):  # EAP: the differentiated clean pass is the clean run
        embedding = forward.embed(weights, tensors.clean)
        clean = differentiate(weights, graph, embedding, tensors.pos_batch, tensors.pos_index,
                              lambda logits: build_metric(common.metric, logits, targets),
                              record=True)
    with torch.no_grad():  # not inference mode: the gradient passes read these tensors
        patched = PatchedModel(weights, graph, tensors.clean, tensors.corrupt, tensors.pos_batch,
                               tensors.pos_index, common.ablation, tensors.lengths,
                               clean.recorded if clean is not None else None, tensors.groups)
        metric = build_metric(common.metric, patched.clean_logits, targets)
    scores = edge_scores(patched, metric, settings.alphas, clean)
    del clean
    patched.take_clean_qkv()  # not needed any more
    if settings.per_prompt:
        scores = scores / task.n_prompts
    return scores.tolist(), CircuitMeter(patched, metric)
