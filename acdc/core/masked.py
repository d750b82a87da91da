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
d_model]` as it is computed (`_Store`), and each receiver group's input is one matrix product of
its masks with a range of that buffer (`_Mix`). Neither keeps a copy: the backward pass of a
product reads the buffer and adds its gradient into a second buffer of the same shape, from
which each sender's gradient is taken once every receiver that reads it is done (autograd's
order, enforced by a scalar handle per block of senders). The head inputs (one residual copy
per q/k/v input of every head, each with its own norm) are what a pass costs: the first
`recompute` fraction of the layers (half by default) recomputes them in the backward pass
(`torch.utils.checkpoint`: one more product and norm per layer) instead of keeping the norms'
inputs, a residual stream per head input. A pass reuses the previous pass's buffers once that
pass's backward has run.

>>> masked = MaskedForward(patched)  # doctest: +SKIP
>>> z = torch.ones(len(patched.graph.edges), requires_grad=True)  # doctest: +SKIP
>>> metric(masked.logits(z)).backward()  # z.grad: d metric / d mask  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

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


RECOMPUTE = 0.5  # the fraction of layers whose head inputs are recomputed (see the docstring)


class _Deltas:
    """One pass's sender deltas `[senders, batch * pos * d_model]` and, in its backward pass,
    their gradients (allocated at the first product's backward). `finished` once every stored
    block's gradient has been read: the next pass may then reuse both buffers."""

    def __init__(self, n_senders: int, shape: tuple[int, int, int], dtype: torch.dtype,
                 device: torch.device, spare: _Deltas | None = None):
        self.shape = shape
        size = (n_senders, shape[0] * shape[1] * shape[2])
        self.spare_grads: torch.Tensor | None = None
        if spare is not None and spare.finished and tuple(spare.values.shape) == size:
            self.values: torch.Tensor = spare.values
            self.spare_grads = spare.grads
        else:
            self.values = torch.empty(size, dtype=dtype, device=device)
        self.grads: torch.Tensor | None = None
        self.pending = 0  # stored blocks whose gradient has not been read
        self.finished: bool = False

    def grad_rows(self, start: int, stop: int) -> torch.Tensor:
        if self.grads is None:
            if self.spare_grads is not None:
                self.grads, self.spare_grads = self.spare_grads.zero_(), None
            else:
                self.grads = torch.zeros_like(self.values)
        return self.grads[start:stop]


class _Store(torch.autograd.Function):
    """Copy a block of senders' deltas into the buffer; return a scalar handle that every
    product reading the block takes as an input, so that the block's gradient (summed in the
    buffer by those products) is read only after all of them."""

    @staticmethod
    def forward(ctx, delta: torch.Tensor, deltas: _Deltas,
                start: int) -> torch.Tensor:
        n = delta.shape[0]
        deltas.values[start:start + n] = delta.reshape(n, -1)
        deltas.pending += 1
        ctx.deltas, ctx.start, ctx.shape = deltas, start, delta.shape
        return delta.new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx, _: torch.Tensor):
        n = ctx.shape[0]
        deltas = ctx.deltas
        grad = deltas.grad_rows(ctx.start, ctx.start + n).reshape(ctx.shape).clone()
        deltas.pending -= 1
        deltas.finished = deltas.pending == 0
        return grad, None, None


class _Mix(torch.autograd.Function):
    """`base + mask [rows, m] @ deltas[start:stop]` (at the metric positions when `at` gives
    them: (prompt and position indices); `base` [features] or None, added to every row in the
    same product): the gradient of the mask reads the buffer, the gradient of the deltas is
    added into the gradient buffer. `handles` are the `_Store` handles of the blocks in the
    range (they carry no gradient; they order the backward pass)."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor, deltas: _Deltas, start: int, stop: int,
                at: tuple[torch.Tensor, torch.Tensor] | None, base: torch.Tensor | None,
                *handles: torch.Tensor) -> torch.Tensor:
        ctx.deltas, ctx.start, ctx.stop, ctx.at = deltas, start, stop, at
        ctx.n_handles = len(handles)
        ctx.save_for_backward(mask)
        values = _Mix.rows(deltas, start, stop, at)
        if base is None:
            return mask @ values
        return torch.addmm(base.reshape(1, -1), mask, values)

    @staticmethod
    def rows(deltas: _Deltas, start: int, stop: int,
             at: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        values = deltas.values[start:stop]
        if at is None:
            return values
        return values.view(stop - start, *deltas.shape)[:, at[0], at[1]].reshape(
            stop - start, -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        deltas, start, stop, at = ctx.deltas, ctx.start, ctx.stop, ctx.at
        grad_mask = None
        if ctx.needs_input_grad[0]:
            grad_mask = grad @ _Mix.rows(deltas, start, stop, at).T
        if any(ctx.needs_input_grad[6:]):
            rows = deltas.grad_rows(start, stop)
            if at is None:
                rows.addmm_(mask.T, grad)
            else:
                m = stop - start
                full = rows.view(m, *deltas.shape)
                full[:, at[0], at[1]] += (mask.T @ grad).view(m, len(at[0]), -1)
        zero = grad.new_zeros(())
        return (grad_mask, None, None, None, None, None, *[zero] * ctx.n_handles)


class MaskedForward:
    """The patched forward of a `PatchedModel`'s task and ablation, for float masks.

    `logits(edges, nodes)` returns the logits at the metric positions `[n_positions, d_vocab]`
    for edge masks `[n_edges]` (graph order) and node masks `[n_senders]` (None: all 1),
    differentiable in both. The `PatchedModel` can be dropped afterwards: only the ablated
    values, biases and clean logits are kept. A pass reuses the buffers of the previous one
    once that one's backward pass has run (so a graph kept with `retain_graph` must not be
    differentiated again after the next pass).
    """

    def __init__(self, patched: PatchedModel, recompute: float = RECOMPUTE):
        """`recompute`: the fraction of the layers (the first ones) whose head inputs are
        recomputed in the backward pass instead of kept."""
        self.w, self.graph = patched.w, patched.graph
        self.recomputed_layers = round(recompute * self.graph.n_layers)
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
        self._last: _Deltas | None = None  # the last pass's buffers, reused once it is done
        self.projections = [forward.stacked_projections(lw, shared=self.n_inputs == 1)
                            for lw in self.w.layers]

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
        deltas = _Deltas(self.n_senders, (batch, n_pos, d_model), self.dtype, self.device,
                         self._last)
        self._last = deltas
        deltas.values[0] = self.input_delta.reshape(-1)
        handles: list[tuple[int, int, torch.Tensor | None]] = [(0, 1, None)]

        def store(delta: torch.Tensor, start: int) -> None:
            handle = _Store.apply(delta, deltas, start) if delta.requires_grad else None
            if handle is None:
                deltas.values[start:start + delta.shape[0]] = delta.reshape(delta.shape[0], -1)
            handles.append((start, start + delta.shape[0], handle))

        def masks(span: tuple[int, int], n: int, *shape: int) -> torch.Tensor:
            m = edges[span[0]:span[1]].view(*shape, n)
            return m if scale is None else m * scale[:n]

        for layer in range(self.n_layers):
            lw = w.layers[layer]
            n = self.graph.senders_before(layer)
            m = masks(layout.heads[layer], n, self.n_inputs, self.n_heads)
            qkv = forward.stacked_qkv(self.projections[layer],
                                      self._head_inputs(layer, m, deltas, handles, n))
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
            store(out if self.ablated is None else out - self.ablated[heads], heads.start)
            if self.has_mlp:
                index = self.graph.sender_of_mlp(layer)
                n = self.graph.senders_of_mlp(layer)
                m = masks(layout.mlps[layer], n)
                x = self._mix(m, deltas, handles, n, base=self.base_mlp[layer])
                out = forward.mlp(w, lw, x)
                delta = out if self.ablated is None else out - self.ablated[index]
                store(delta[None], index)
        m = masks(layout.logits, self.n_senders)
        x = self._mix(m, deltas, handles, self.n_senders, at_metric=True, base=self.base_logits)
        deltas.finished = deltas.pending == 0  # nothing to differentiate: free to reuse
        return forward.unembed(w, x)

    def _head_inputs(self, layer: int, mask: torch.Tensor, deltas: _Deltas,
                     handles: list[tuple[int, int, torch.Tensor | None]], n: int
                     ) -> torch.Tensor:
        """Every head input's residual copy, normalised (`mask` [inputs, heads, n]):
        [inputs, heads, batch, pos, d_model]. Under autograd, recomputed in the backward pass
        instead of kept."""
        def compute(mask: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
            lw = self.w.layers[layer]
            x = self._mix(mask, deltas, handles, n, base=self.base_heads[layer])
            return forward.norm(x, lw.ln1_w, lw.ln1_b, self.w.normalization, self.w.eps)

        if not torch.is_grad_enabled() or layer >= self.recomputed_layers:
            return compute(mask)
        # the handles are passed so that the recomputation keeps them as inputs
        ready = [h for _, stop, h in handles if h is not None and stop <= n]
        return checkpoint(compute, mask, *ready, use_reentrant=False)

    def _mix(self, mask: torch.Tensor, deltas: _Deltas,
             handles: list[tuple[int, int, torch.Tensor | None]], n: int,
             at_metric: bool = False, base: torch.Tensor | None = None) -> torch.Tensor:
        """`base` plus mask [..., n] times the first n senders' deltas -> [..., batch, pos,
        d_model] (at the metric positions: [..., n_positions, d_model])."""
        at = (self.pos_batch, self.pos_index) if at_metric else None
        used = [(start, stop, h) for start, stop, h in handles if stop <= n]
        assert used[-1][1] == n, "a receiver reads a prefix of whole blocks of senders"
        ready = [h for _, _, h in used if h is not None]
        rows = mask.reshape(-1, n)
        linear = rows if not self.post_norm else rows * self.linear_senders[:n]
        flat = _Mix.apply(linear, deltas, 0, n, at, base, *ready)
        shape = ((len(self.pos_batch),) if at_metric else deltas.shape[:2]) + deltas.shape[2:]
        out = flat.view(len(rows), *shape)
        if self.post_norm:
            for layer, heads in enumerate(self.head_senders):
                if heads.stop > n:
                    break
                handle = next(h for start, _, h in used if start == heads.start)
                mixed = _Mix.apply(rows[:, heads], deltas, heads.start, heads.stop, at, None,
                                   *([handle] if handle is not None else [])).view(out.shape)
                if self.ablated_head_sums is not None:
                    ablated = self.ablated_head_sums[layer]
                    mixed = mixed + (ablated[self.pos_batch, self.pos_index] if at_metric
                                     else ablated)
                out = out + forward.attention_out(self.w, self.w.layers[layer], mixed)
        return out.view(*mask.shape[:-1], *shape)
