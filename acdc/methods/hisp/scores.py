"""HISP's unit scores: one differentiated forward pass, every prompt's gate gradients.

The pass is the ordinary forward (`acdc.core.forward`) with every head's and MLP's output kept
for the backward pass. Each prompt's metric (the mean over its metric positions) is summed and
differentiated once; for prompt i and unit u the gate gradient is the sum over positions and
d_model of `a_u[i] * grad[i]`, and a unit's score is the sum over prompts of its absolute
value. The pass also records the clean run as the patched model records one
(`RecordedRun`), so the run's recordings need only the ablated run besides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from acdc.core import forward
from acdc.core.graph import Graph
from acdc.core.metrics import build_metric, metric_targets, position_metric
from acdc.core.patching import PatchedModel, RecordedRun, TaskTensors, task_tensors
from acdc.core.recordings import CircuitMeter
from acdc.core.settings import CommonSettings
from acdc.core.weights import Weights

if TYPE_CHECKING:
    from acdc.core.loading import LoadedModel
    from acdc.core.metrics import MetricTargets
    from acdc.core.tasks.values import Task

NORM_FLOOR = 1e-6  # a layer whose scores' L2 norm is below this is divided by this instead


def unit_scores(model: LoadedModel, task: Task, common: CommonSettings, graph: Graph,
                normalise: bool = True) -> tuple[dict[str, float], CircuitMeter]:
    """Every head's and MLP's HISP score by name, and a meter of the task's recorded runs."""
    weights = model.weights
    device = weights.W_E.device
    tensors = task_tensors(task, device, weights.causal)
    targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers, device)
    per_prompt, recorded = gate_gradients(weights, graph, tensors, targets, common.metric,
                                          task.n_prompts)
    scores = per_prompt.abs().sum(0)  # [units]
    if normalise:
        scores = layer_normalised(scores, graph)
    with torch.no_grad():
        patched = PatchedModel(weights, graph, tensors.clean, tensors.corrupt, tensors.pos_batch,
                               tensors.pos_index, common.ablation, tensors.lengths, recorded)
        metric = build_metric(common.metric, patched.clean_logits, targets)
    patched.take_clean_qkv()  # not needed: circuits are measured by full patched passes
    names = [sender.name for sender in graph.senders[1:]]
    return dict(zip(names, scores.tolist(), strict=True)), CircuitMeter(patched, metric)


def gate_gradients(w: Weights, graph: Graph, tensors: TaskTensors, targets: MetricTargets,
                   metric: str, n_prompts: int) -> tuple[torch.Tensor, RecordedRun]:
    """d metric(prompt i) / d gate(u) for every prompt and unit `[n_prompts, units]` (units:
    the graph's senders after `input`, in graph order, float64), and the clean run recorded."""
    clean = tensors.clean
    batch, n_pos = clean.shape
    embedding = forward.embed(w, clean)
    outputs = torch.empty(len(graph.senders), batch, n_pos, embedding.shape[-1],
                          dtype=embedding.dtype, device=embedding.device)
    outputs[0] = embedding.detach()
    qkvs, zs, units = [], [], []
    positions = torch.arange(n_pos, device=clean.device)
    with torch.enable_grad():
        x = embedding.detach().requires_grad_(True)  # every later tensor keeps a gradient
        for layer, lw in enumerate(w.layers):
            h = forward.norm(x, lw.ln1_w, lw.ln1_b, w.normalization, w.eps)
            qkv = forward.qkv(lw, h[None, None])  # [3, heads, batch, pos, d_head]
            mask = forward.attention_mask(w, n_pos, x.dtype, x.device, lw.window)
            q, k = (forward.rotate(w, lw, qkv[i], positions) for i in (0, 1))
            z = forward.attend(q, k, qkv[2], w.attn_scale, mask, w.attn_soft_cap)
            heads = forward.head_outputs(lw, z)  # [heads, batch, pos, d]
            heads.retain_grad()
            units.append(heads)
            qkvs.append(qkv.detach())
            zs.append(z.detach()[:, tensors.pos_batch, tensors.pos_index])
            first = graph.sender_of_head(layer, 0)
            outputs[first:first + len(heads)] = heads.detach()
            block_input = x
            x = x + forward.attention_out(w, lw, heads.sum(0))
            if not w.attn_only:
                out = forward.mlp(w, lw, block_input if w.parallel else x)
                out.retain_grad()
                units.append(out)
                outputs[graph.sender_of_mlp(layer)] = out.detach()
                bias = forward.mlp_bias(w, lw)
                x = x + (out if bias is None else out + bias)
        logits = forward.unembed(w, x[tensors.pos_batch, tensors.pos_index])
        values = position_metric(metric, logits.detach(), targets)(logits)  # [n_positions]
        counts = torch.bincount(tensors.pos_batch, minlength=n_prompts).to(values.dtype)
        per_prompt = torch.zeros(n_prompts, dtype=values.dtype, device=values.device)
        per_prompt = per_prompt.index_add(0, tensors.pos_batch, values) / counts
        per_prompt.sum().backward()
    gradients = []
    for unit in units:
        grad = unit.grad
        if grad is None:
            raise RuntimeError("the metric does not depend on every unit")  # never: all do
        product = unit.detach().double() * grad.double()  # [(heads,) batch, pos, d]
        per_unit = product.sum((-1, -2))  # [heads, batch] or [batch]: one unit per prompt
        gradients.append(per_unit if per_unit.dim() == 2 else per_unit[None])
    recorded = RecordedRun(outputs, tuple(qkvs), tuple(zs))
    return torch.cat(gradients).T.contiguous(), recorded


def layer_normalised(scores: torch.Tensor, graph: Graph) -> torch.Tensor:
    """`scores` (units in graph order) with each layer's heads and MLP divided by their joint
    L2 norm (at least `NORM_FLOOR`)."""
    per_layer = graph.n_heads + int(graph.shape.has_mlp)
    layers = scores.view(graph.n_layers, per_layer)
    norms = layers.norm(dim=1, keepdim=True).clamp(min=NORM_FLOOR)
    return (layers / norms).reshape(-1)
