"""Every edge's attribution score from a few differentiable forward passes.

The score of an edge u -> v is the first-order estimate of the metric's change when that edge
alone carries its ablated value (`../shared/EVALUATION.md`, section 5):

    score(u -> v) = (a_u(ablated) - a_u(clean)) . dm/dx_v

summed over prompts, positions and d_model, where a_u is u's output and x_v v's input in the
patched forward of `acdc.core.patching` (`x_v = bias + sum_s ablated_s + mask[v, s] * delta_s`,
so the score is minus the derivative of m with respect to the edge's mask at 1). A direct edge
`a1.h2<q> -> a1.h2` scores `(q(ablated) - q(clean)) . dm/dq` for that head's query.

No mask per edge is made: the gradient with respect to one receiver's input scores every edge
into it at once (a dot product with every sender's delta, one matrix product per layer). The
pass itself is the ordinary forward (with every edge present the patched forward is the
model), differentiated once:

- a head's q/k/v input is its own copy of the residual, normalised on its own; its gradient is
  the norm's vector-Jacobian product (`forward.norm_vjp`) of `dm/dq_h @ W_Q[h]^T` at the
  shared residual, so no per-head copies of the forward pass are made (head granularity: the
  sum of the q, k and v terms, one receiver feeding all three);
- an MLP's input and the input of `logits` (the final residual at the metric positions) are
  tensors of their own in the pass, whose gradients autograd keeps.

Plain EAP differentiates at the clean run (alpha = 1). EAP-IG (inputs) averages the gradients
over the points `alpha = k / m`, k = 0 .. m - 1, of the straight line from the ablated to the
clean input embedding (the input sender's ablated value: the corrupted prompts' embedding,
zero, or its mean), the deltas staying those of the clean run; this is the authors' left
Riemann sum, which starts at the ablated run and never evaluates the clean one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from acdc.core import forward
from acdc.core.graph import Graph
from acdc.core.models import Weights
from acdc.core.patching import PatchedModel

Metric = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EdgeSlots:
    """Where each receiver's scores go in the graph's edge order: per layer, the head inputs'
    edges `[receivers, senders]` (rows q heads, k heads, v heads; one row per head at head
    granularity), the MLP's `[senders]` and the direct edges `[3, heads]`; the logits'
    `[senders]`."""

    heads: tuple[torch.Tensor, ...]
    mlps: tuple[torch.Tensor, ...]
    direct: tuple[torch.Tensor, ...]
    logits: torch.Tensor

    @classmethod
    def of(cls, graph: Graph, device: torch.device) -> EdgeSlots:
        index = {(e.receiver.name, e.sender.index if e.sender else None): e.index
                 for e in graph.edges}
        n_heads = graph.n_heads
        qkvs = ("q", "k", "v") if graph.granularity == "qkv" else (None,)
        heads, mlps, direct = [], [], []
        for layer in range(graph.n_layers):
            n = graph.senders_before(layer)
            rows = [[index[(graph_receiver(layer, h, qkv), s)] for s in range(n)]
                    for qkv in qkvs for h in range(n_heads)]
            heads.append(torch.tensor(rows, device=device))
            if graph.shape.has_mlp:
                mlps.append(torch.tensor([index[(f"m{layer}", s)] for s in range(n + n_heads)],
                                         device=device))
            if graph.granularity == "qkv":
                direct.append(torch.tensor(
                    [[index[(graph_receiver(layer, h, qkv), None)] for h in range(n_heads)]
                     for qkv in ("q", "k", "v")], device=device))
        logits = torch.tensor([index[("logits", s)] for s in range(len(graph.senders))],
                              device=device)
        return cls(tuple(heads), tuple(mlps), tuple(direct), logits)


def graph_receiver(layer: int, head: int, qkv: str | None) -> str:
    return f"a{layer}.h{head}" + (f"<{qkv}>" if qkv else "")


@dataclass
class _Pass:
    """What one differentiated forward pass leaves: per layer the residual the heads read
    (before their norm) and the gradients of the q/k/v and of the MLP's input; the gradient
    of the input of `logits` at the metric positions; the metric's value."""

    residuals: list[torch.Tensor]
    qkv_grads: list[torch.Tensor]
    mlp_grads: list[torch.Tensor]
    logits_grad: torch.Tensor
    metric: float


def _differentiate(w: Weights, embedding: torch.Tensor, pos_batch: torch.Tensor,
                   pos_index: torch.Tensor, metric: Metric) -> _Pass:
    """The ordinary forward pass from the input sender's output `embedding` [batch, pos, d],
    then one backward pass of the metric."""
    with torch.enable_grad():
        x = embedding.detach().requires_grad_(True)
        mask = forward.causal_mask(x.shape[1], x.dtype, x.device)
        residuals, qkvs, mlp_inputs = [], [], []
        for lw in w.layers:
            residuals.append(x)
            h = forward.norm(x, lw.ln1_w, lw.ln1_b, w.normalization, w.eps)
            qkv = forward.qkv(lw, h[None, None])  # [3, heads, batch, pos, d_head]
            qkv.retain_grad()
            qkvs.append(qkv)
            z = forward.attend(qkv[0], qkv[1], qkv[2], w.attn_scale, mask)
            x = x + forward.head_outputs(lw, z).sum(0) + lw.b_O
            if not w.attn_only:
                mlp_in = x.view_as(x)  # the MLP's own input: its gradient is the MLP's alone
                mlp_in.retain_grad()
                mlp_inputs.append(mlp_in)
                out = forward.mlp(w, lw, mlp_in)
                x = x + (out if lw.b_out is None else out + lw.b_out)
        final = x[pos_batch, pos_index]
        final.retain_grad()
        value = metric(forward.unembed(w, final))
        value.backward()
    return _Pass([r.detach() for r in residuals], [q.grad for q in qkvs],
                 [m.grad for m in mlp_inputs], final.grad, float(value.detach()))


def edge_scores(patched: PatchedModel, clean_embedding: torch.Tensor, metric: Metric,
                alphas: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Every edge's score `[n_edges]` (float64, in the graph's edge order), with the gradient
    averaged over the passes at `alphas` (1.0 alone: EAP at the clean run).

    `patched` holds the clean and ablated runs (its masks all present); `clean_embedding` is
    the clean prompts' input embedding (the input sender's clean output, computed afresh so
    that the pass at alpha 1 is exactly the clean run)."""
    graph, w = patched.graph, patched.w
    device = clean_embedding.device
    slots = EdgeSlots.of(graph, device)
    scores = torch.zeros(len(graph.edges), dtype=torch.float64, device=device)
    delta = patched.delta  # clean - ablated output of every sender [senders, batch, pos, d]
    ablated_input = patched.ablated[0] if patched.ablated is not None else None
    split = graph.granularity == "qkv"
    weight = 1.0 / len(alphas)
    for alpha in alphas:
        if alpha == 1.0:
            embedding = clean_embedding
        elif ablated_input is None:
            embedding = alpha * delta[0]
        else:
            embedding = ablated_input + alpha * delta[0]
        run = _differentiate(w, embedding, patched.pos_batch, patched.pos_index, metric)
        with torch.no_grad():
            _layer_scores(patched, run, slots, scores, weight, split)
            at_metric = delta[:, patched.pos_batch, patched.pos_index]
            receiver = run.logits_grad.reshape(-1)
            scores.index_add_(0, slots.logits,
                              -weight * (at_metric.reshape(len(at_metric), -1) @ receiver).double())
        del run
    return scores


def _layer_scores(patched: PatchedModel, run: _Pass, slots: EdgeSlots, scores: torch.Tensor,
                  weight: float, split: bool) -> None:
    graph, w = patched.graph, patched.w
    delta = patched.delta
    batch, n_pos, d_model = delta.shape[1:]
    tokens = batch * n_pos
    for layer, lw in enumerate(w.layers):
        n = graph.senders_before(layer)
        senders = delta[:n].reshape(n, -1)
        grads = run.qkv_grads[layer]  # [3, heads, batch, pos, d_head]
        heads = grads.shape[1]
        into = torch.stack([g.reshape(heads, tokens, -1) @ W.transpose(-1, -2)
                            for g, (W, _) in zip(grads, forward.projections(lw))])
        if not split:  # one receiver per head feeds its q, k and v
            into = into.sum(0, keepdim=True)
        residual = run.residuals[layer].reshape(tokens, d_model)
        into = forward.norm_vjp(residual, into, lw.ln1_w, w.normalization, w.eps)
        contribution = into.reshape(-1, tokens * d_model) @ senders.T  # [receivers, senders]
        rows = slots.heads[layer]
        scores.index_put_((rows,), -weight * contribution.double(), accumulate=True)
        if split:  # direct edges: the head's q/k/v moved to its ablated value
            clean = patched.clean_qkv[layer] if patched.clean_qkv is not None else None
            if clean is None:
                raise RuntimeError("the patched model's clean q/k/v were handed over")
            change = (patched.ablated_qkv[layer] - clean) * grads
            scores.index_put_((slots.direct[layer],), weight * change.sum((2, 3, 4)).double(),
                              accumulate=True)
        if run.mlp_grads:
            m = n + graph.n_heads
            receiver = run.mlp_grads[layer].reshape(-1)
            scores.index_add_(0, slots.mlps[layer],
                              -weight * (delta[:m].reshape(m, -1) @ receiver).double())

