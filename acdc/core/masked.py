"""The patched forward pass with fractional masks, differentiable in the masks.

`PatchedModel` (`acdc.core.patching`) reads every receiver's input as

    input_r = bias_r + sum over senders s of  ablated_s + mask[r, s] * (live_s - ablated_s)

with masks 0 or 1. `MaskedForward` computes the same pass for float masks z in [0, 1], each
receiver reading `z * live + (1 - z) * ablated` from every sender, under autograd, so that a
metric of the logits can be differentiated with respect to every mask at once (edge pruning and
subnetwork probing learn masks this way). It takes its ablated values, biases and clean logits
from a `PatchedModel` (every ablation: corrupt, zero, mean, mean-positional) and the block
arithmetic from `acdc.core.forward`, so with masks of 0 and 1 it is the patched forward.

Three kinds of mask, all optional but the first:

- **edge masks**, one per edge of the graph in graph order: residual edges scale what a
  receiver reads from a sender; a direct edge `a1.h2<q>->a1.h2` mixes the head's query as
  `z * q_live + (1 - z) * q_ablated` (`q_ablated` the ablation's query, as in `PatchedModel`);
- **node masks**, one per sender (`input`, every head, every MLP: `graph.senders` order): the
  sender's output becomes `z_n * live + (1 - z_n) * ablated` for all its outgoing edges, which
  is the same as multiplying each of its edges' masks by z_n.

With norms after each sublayer (Gemma 2) a layer's heads reach the residual stream through
`norm(b_O + sum of their outputs)`, so a receiver's input is not linear in the masks of those
heads' edges: each receiver gets, per earlier layer, that norm of the ablated heads plus its
masked deltas, as `PatchedModel._mix` computes it.

Cost. Every sender's delta `live - ablated` is copied into one buffer `[senders, batch, pos,
d_model]` as it is computed, and each receiver group's input is one matrix product of its masks
with a prefix of that buffer (`_Mix`, an autograd function whose backward reads the buffer
instead of keeping a copy per product). What autograd keeps besides is what an ordinary forward
keeps, times the residual copies of the head inputs (one per q/k/v input of every head, each
with its own norm).

>>> masked = MaskedForward(patched)  # doctest: +SKIP
>>> z = torch.ones(len(patched.graph.edges), requires_grad=True)  # doctest: +SKIP
>>> metric(masked.logits(z)).backward()  # z.grad: d metric / d mask  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from acdc.core import forward
from acdc.core.graph import Graph
from acdc.core.patching import PatchedModel


@dataclass(frozen=True)
class MaskLayout:
    """Where each receiver group's masks lie in the graph's edge order, as (start, stop)
    slices: per layer the head inputs' residual edges (`[inputs, heads, senders]` when
    reshaped: q heads, then k heads, then v heads; one input per head at head granularity),
    the MLP's residual edges and the direct edges (`[3, heads]`; None at head granularity);
    the logits' residual edges."""

    heads: tuple[tuple[int, int], ...]
    mlps: tuple[tuple[int, int], ...]
    direct: tuple[tuple[int, int] | None, ...]
    logits: tuple[int, int]

    @classmethod
    def of(cls, graph: Graph) -> MaskLayout:
        """The layout of `graph`, checked edge by edge against the order it assumes."""
        by_receiver: dict[str, list[int]] = {}
        direct: dict[int, list[int]] = {}
        for edge in graph.edges:
            if edge.kind == "direct":
                direct.setdefault(edge.receiver.layer, []).append(edge.index)
            else:
                by_receiver.setdefault(edge.receiver.name, []).append(edge.index)

        def block(names: list[str], senders: int) -> tuple[int, int]:
            indices = [i for name in names for i in by_receiver[name]]
            start = indices[0]
            if indices != list(range(start, start + len(names) * senders)):
                raise ValueError(f"edges into {names[0]} ... are not in the order assumed")
            for name in names:
                for s, i in enumerate(by_receiver[name]):
                    edge = graph.edges[i]
                    if edge.sender is None or edge.sender.index != s:
                        raise ValueError(f"edge {edge.name} is not in sender order")
            return start, start + len(names) * senders

        qkvs: tuple[str | None, ...] = ("q", "k", "v") if graph.granularity == "qkv" else (None,)
        heads: list[tuple[int, int]] = []
        mlps: list[tuple[int, int]] = []
        directs: list[tuple[int, int] | None] = []
        for layer in range(graph.n_layers):
            receivers = [r for r in graph.receivers if r.kind == "head" and r.layer == layer]
            expected = [(qkv, head) for qkv in qkvs for head in range(graph.n_heads)]
            if [(r.qkv, r.head) for r in receivers] != expected:
                raise ValueError(f"head inputs of layer {layer} are not in the order assumed")
            names = [r.name for r in receivers]
            heads.append(block(names, graph.senders_before(layer)))
            if graph.shape.has_mlp:
                mlps.append(block([f"m{layer}"], graph.senders_of_mlp(layer)))
            if graph.granularity == "qkv":
                indices = direct[layer]
                expected = [(qkv, head) for qkv in ("q", "k", "v") for head in range(graph.n_heads)]
                found = [(graph.edges[i].qkv, graph.edges[i].receiver.head) for i in indices]
                if found != expected or indices != list(range(indices[0], indices[0] + len(found))):
                    raise ValueError(f"direct edges of layer {layer} are not in the order assumed")
                directs.append((indices[0], indices[0] + len(indices)))
            else:
                directs.append(None)
        logits = block(["logits"], len(graph.senders))
        return cls(tuple(heads), tuple(mlps), tuple(directs), logits)


class _Mix(torch.autograd.Function):
    """`mask [rows, n] @ values [n, features]`, where `values` is the concatenation of the
    `blocks` (the senders' deltas as the forward pass made them) held in a shared buffer.

    The gradient of the mask reads the buffer (no copy of `values` is kept per product); the
    gradient of `values` goes to each block. Nothing writes the first n rows of the buffer
    after the product, which is why the buffer is not saved (saving would version-check every
    later write to other rows)."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor, values: torch.Tensor,
                *blocks: torch.Tensor) -> torch.Tensor:
        ctx.values = values
        ctx.sizes = [len(block) for block in blocks]
        ctx.save_for_backward(mask)
        return mask @ values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        grad_mask = grad @ ctx.values.T if ctx.needs_input_grad[0] else None
        wanted = ctx.needs_input_grad[2:]
        grads: list[torch.Tensor | None] = [None] * len(wanted)
        if any(wanted):
            parts = (mask.T @ grad).split(ctx.sizes)
            grads = [part if want else None for part, want in zip(parts, wanted, strict=True)]
        return grad_mask, None, *grads


class MaskedForward:
    """The patched forward of a `PatchedModel`'s task and ablation, for float masks.

    `logits(edges, nodes)` returns the logits at the metric positions `[n_positions, d_vocab]`
    for edge masks `[n_edges]` (graph order) and node masks `[n_senders]` (None: all 1),
    differentiable in both. The `PatchedModel` can be dropped afterwards: only the ablated
    values, biases and clean logits are kept.
    """

    def __init__(self, patched: PatchedModel):
        self.w, self.graph = patched.w, patched.graph
        self.layout = MaskLayout.of(self.graph)
        self.n_layers, self.n_heads = self.graph.n_layers, self.graph.n_heads
        self.has_mlp, self.post_norm = patched.has_mlp, patched.post_norm
        self.n_inputs, self.n_senders = patched.n_inputs, patched.n_senders
        self.pos_batch, self.pos_index = patched.pos_batch, patched.pos_index
        self.positions, self.attention_masks = patched.positions, patched.attention_masks
        self.head_senders = patched.head_senders
        self.ablated = patched.ablated
        assert patched.ablated_qkv is not None  # set by PatchedModel's constructor
        self.ablated_qkv: list[torch.Tensor] = patched.ablated_qkv
        self.base_heads, self.base_mlp = patched.base_heads, patched.base_mlp
        self.base_logits = patched.base_logits
        self.ablated_head_sums = patched.ablated_head_sums
        self.input_delta = patched.delta[0].clone()  # the input's live - ablated (fixed)
        self.clean_logits = patched.clean_logits
        # the senders that add linearly to every receiver (with post-norms: all but the heads)
        linear = torch.ones(self.n_senders, dtype=self.input_delta.dtype,
                            device=self.input_delta.device)
        if self.post_norm:
            for heads in self.head_senders:
                linear[heads] = 0
        self.linear_senders = linear

    @property
    def dtype(self) -> torch.dtype:
        return self.input_delta.dtype

    @property
    def device(self) -> torch.device:
        return self.input_delta.device

    def logits(self, edges: torch.Tensor, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """The logits at the metric positions for edge masks `edges` [n_edges] and node masks
        `nodes` [n_senders] (None: every node at 1)."""
        if edges.shape != (len(self.graph.edges),):
            raise ValueError(f"edge masks of shape {tuple(edges.shape)} for a graph of "
                             f"{len(self.graph.edges)} edges")
        if nodes is not None and nodes.shape != (self.n_senders,):
            raise ValueError(f"node masks of shape {tuple(nodes.shape)} for "
                             f"{self.n_senders} senders")
        edges = edges.to(self.dtype)
        scale = None if nodes is None else nodes.to(self.dtype)
        layout, w = self.layout, self.w
        batch, n_pos, d_model = self.input_delta.shape
        values = torch.empty(self.n_senders, batch, n_pos, d_model, dtype=self.dtype,
                             device=self.device)
        values[0] = self.input_delta
        blocks: list[torch.Tensor] = [self.input_delta[None]]

        def masks(span: tuple[int, int], n: int, *shape: int) -> torch.Tensor:
            m = edges[span[0]:span[1]].view(*shape, n)
            return m if scale is None else m * scale[:n]

        for layer in range(self.n_layers):
            lw = w.layers[layer]
            n = self.graph.senders_before(layer)
            m = masks(layout.heads[layer], n, self.n_inputs, self.n_heads)
            x = self.base_heads[layer] + self._mix(m, values, blocks, n)
            x = forward.norm(x, lw.ln1_w, lw.ln1_b, w.normalization, w.eps)
            qkv = forward.qkv(lw, x)
            span = layout.direct[layer]
            ablated_qkv = self.ablated_qkv[layer]
            if span is not None:
                z = edges[span[0]:span[1]].view(3, self.n_heads, 1, 1, 1)
                qkv = ablated_qkv + z * (qkv - ablated_qkv)
            q, k, v = qkv
            q = forward.rotate(w, lw, q, self.positions)
            k = forward.rotate(w, lw, k, self.positions)
            z_heads = forward.attend(q, k, v, w.attn_scale, self.attention_masks[layer],
                                     w.attn_soft_cap)
            out = forward.head_outputs(lw, z_heads)
            heads = self.head_senders[layer]
            delta = out if self.ablated is None else out - self.ablated[heads]
            values[heads] = delta.detach()
            blocks.append(delta)
            if self.has_mlp:
                index = self.graph.sender_of_mlp(layer)
                n = self.graph.senders_of_mlp(layer)
                m = masks(layout.mlps[layer], n)
                x = self.base_mlp[layer] + self._mix(m, values, blocks, n)
                out = forward.mlp(w, lw, x)
                delta = out if self.ablated is None else out - self.ablated[index]
                values[index] = delta.detach()
                blocks.append(delta[None])
        m = masks(layout.logits, self.n_senders)
        x = self.base_logits + self._mix(m, values, blocks, self.n_senders, at_metric=True)
        return forward.unembed(w, x)

    def _mix(self, mask: torch.Tensor, values: torch.Tensor, blocks: list[torch.Tensor], n: int,
             at_metric: bool = False) -> torch.Tensor:
        """mask [..., n] times the first n senders' deltas -> [..., batch, pos, d_model] (at
        the metric positions: [..., n_positions, d_model])."""
        used = []
        total = 0
        for block in blocks:
            if total == n:
                break
            used.append(block)
            total += block.shape[0]
        assert total == n, "a receiver reads a prefix of whole blocks of senders"
        prefix = values[:n]
        if at_metric:
            prefix = prefix[:, self.pos_batch, self.pos_index]
            used = [block[:, self.pos_batch, self.pos_index] for block in used]
        rows = mask.reshape(-1, n)
        linear = rows if not self.post_norm else rows * self.linear_senders[:n]
        flat = _Mix.apply(linear, prefix.reshape(n, -1),
                          *(block.reshape(block.shape[0], -1) for block in used))
        out = flat.view(len(rows), *prefix.shape[1:])
        if self.post_norm:
            for term in self._post_norm_heads(rows, used, n, at_metric):
                out = out + term
        return out.view(*mask.shape[:-1], *prefix.shape[1:])

    def _post_norm_heads(self, rows: torch.Tensor, blocks: list[torch.Tensor], n: int,
                         at_metric: bool) -> list[torch.Tensor]:
        """With post-attention norms: per earlier layer, norm(b_O + ablated heads + each row's
        masked head deltas) (`PatchedModel._mix`)."""
        terms = []
        for layer, heads in enumerate(self.head_senders):
            if heads.stop > n:
                break
            block = blocks[1 + layer * (2 if self.has_mlp else 1)]
            mixed = (rows[:, heads] @ block.reshape(len(block), -1)).view(
                len(rows), *block.shape[1:])
            if self.ablated_head_sums is not None:
                ablated = self.ablated_head_sums[layer]
                mixed = mixed + (ablated[self.pos_batch, self.pos_index] if at_metric else ablated)
            terms.append(forward.attention_out(self.w, self.w.layers[layer], mixed))
        return terms
