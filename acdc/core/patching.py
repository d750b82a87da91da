"""The patched forward pass: a model whose receivers read a chosen subset of their senders.

Every receiver r reads

    input_r = bias_r + sum over senders s of  ablated_s + mask[r, s] * (live_s - ablated_s)

where `bias_r` is the sum of the `b_O` and `b_out` terms before r, `live_s` is sender s's output
in this pass and `ablated_s` its output in the corrupted run (or zero under zero ablation).
With every mask at 1 this is the ordinary forward pass; with every mask at 0 (corrupt
ablation) it is the corrupted run. We keep `delta_s = live_s - ablated_s` for every sender in one
tensor `[n_senders, batch, pos, d_model]`, so all of a layer's receiver inputs come from one
matrix product of that layer's mask `[receivers, senders]` with `delta`: no Python loop over
edges, everything on the model's device.

A pass can start at any stage (a layer's attention or its MLP, or the logits): ACDC only ever
changes edges into the stage it is working on and later ones, and every sender before that stage
still holds its clean output (its incoming edges are untouched), so `delta` up to there is
reused from the clean run. Logits are computed only at the metric positions.

Heads get one residual copy per q/k/v input (or one per head at head granularity); LayerNorm is
recomputed on each copy. While every mask holds the same value (the recorded clean and
corrupted runs) one copy per layer serves them all. Head outputs are `z @ W_O` per head (a
batched product, never TransformerLens' `use_attn_result` broadcast). The arithmetic itself
(norms, projections, attention, MLP, unembedding) is `forward.py`'s; this module decides what
each receiver reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from acdc.core import forward
from acdc.core.forward import norm
from acdc.core.graph import Edge, Graph
from acdc.core.models import Weights
from acdc.errors import TaskError

if TYPE_CHECKING:
    from acdc.core.tasks import Task

QKV_INDEX = {"q": 0, "k": 1, "v": 2, None: 0}


def every_layer(per_layer: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """A copy of `last_qkv` or `last_z` after a pass that computed every layer."""
    filled = [x for x in per_layer if x is not None]
    assert len(filled) == len(per_layer)
    return filled


@dataclass(frozen=True, order=True)
class Stage:
    """Where a pass starts: `part` 0 is a layer's attention, 1 its MLP; layer n_layers = logits."""

    layer: int
    part: int = 0


class PatchedModel:
    """A model, a clean and a corrupted batch, and one mask per edge of `graph`.

    `set_edge(edge, present)` changes the circuit; `logits_from(stage)` recomputes everything
    from `stage` on and returns the logits at the metric positions `[n_positions, d_vocab]`.
    """

    def __init__(self, weights: Weights, graph: Graph, clean_tokens: torch.Tensor,
                 corrupt_tokens: torch.Tensor, pos_batch: torch.Tensor, pos_index: torch.Tensor,
                 ablation: str = "corrupt"):
        self.w = weights
        self.graph = graph
        self.n_layers = graph.n_layers
        self.n_heads = graph.n_heads
        self.has_mlp = graph.shape.has_mlp
        self.n_inputs = 3 if graph.granularity == "qkv" else 1
        self.n_senders = len(graph.senders)
        self.pos_batch = pos_batch
        self.pos_index = pos_index
        dtype, device = weights.W_E.dtype, weights.W_E.device
        batch, n_pos = clean_tokens.shape
        d_model = weights.W_E.shape[1]
        self.attention_mask = forward.attention_mask(weights, n_pos, dtype, device)

        # Biases every receiver reads: b_O and b_out of every earlier sublayer.
        self.bias_heads, self.bias_mlp = [], []
        running = torch.zeros(d_model, dtype=dtype, device=device)
        for layer in weights.layers:
            self.bias_heads.append(running)
            running = running + layer.b_O
            self.bias_mlp.append(running)
            if layer.b_out is not None:
                running = running + layer.b_out
        self.bias_logits = running

        # Clean and ablated runs, computed by this same code with every edge present and
        # nothing ablated (input_r = bias_r + sum of live outputs: the ordinary forward).
        self._set_all_masks(1.0)
        self.ablated = None
        self.ablated_qkv = None
        self.last_qkv: list[torch.Tensor | None] = [None] * self.n_layers  # q/k/v of the last pass
        # Every head's attention output z (before W_O) at the metric positions, of the last
        # pass: [heads, n_positions, d_head] per layer (a head's output there is z @ W_O).
        self.last_z: list[torch.Tensor | None] = [None] * self.n_layers
        self._set_bases(batch, n_pos, d_model)
        if ablation == "corrupt":
            corrupt_out, corrupt_qkv = self._record_run(corrupt_tokens)
            self.ablated_z = every_layer(self.last_z)
        clean_out, clean_qkv = self._record_run(clean_tokens)
        # q/k/v of the clean run, taken over (and released) by the incremental engine
        self.clean_qkv: list[torch.Tensor] | None = clean_qkv
        self.clean_z = every_layer(self.last_z)
        self.clean_logits = self.logits_from(Stage(self.n_layers))
        if ablation == "corrupt":
            self.ablated, self.ablated_qkv = corrupt_out, corrupt_qkv
        else:  # zero: removed edges carry nothing; removed q/k/v come from a bias-only residual
            self.ablated = None
            self.ablated_z = [torch.zeros_like(z) for z in self.clean_z]
            self._set_all_masks(0.0)
            self.ablated_qkv = [forward.qkv(weights.layers[layer], self._head_inputs(layer))
                                for layer in range(self.n_layers)]
            self._set_all_masks(1.0)
        self._set_bases(batch, n_pos, d_model)
        self.delta = clean_out if self.ablated is None else clean_out.sub_(self.ablated)  # in place
        self._edge_slots = [self._slot(edge) for edge in graph.edges]
        self._mask_groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    # ------------------------------------------------------------------ circuit state

    def _set_all_masks(self, value: float) -> None:
        dtype, device = self.w.W_E.dtype, self.w.W_E.device
        g = self.graph
        self.head_masks = [
            torch.full((self.n_inputs, self.n_heads, g.senders_before(layer)), value, dtype=dtype,
                       device=device)
            for layer in range(self.n_layers)
        ]
        self.mlp_masks = [
            torch.full((g.senders_before(layer) + self.n_heads,), value, dtype=dtype, device=device)
            for layer in range(self.n_layers)
        ] if self.has_mlp else []
        self.logit_mask = torch.full((self.n_senders,), value, dtype=dtype, device=device)
        self.direct_masks = [
            torch.full((3, self.n_heads, 1, 1, 1), bool(value), device=device)
            for _ in range(self.n_layers)
        ]

    def _slot(self, edge: Edge) -> tuple[torch.Tensor, tuple[int, ...]]:
        r = edge.receiver
        if edge.kind == "direct":
            assert r.head is not None  # a direct edge goes into a head
            return self.direct_masks[r.layer], (QKV_INDEX[edge.qkv], r.head, 0, 0, 0)
        assert edge.sender is not None  # a residual edge
        s = edge.sender.index
        if r.kind == "logits":
            return self.logit_mask, (s,)
        if r.kind == "mlp":
            return self.mlp_masks[r.layer], (s,)
        assert r.head is not None  # a head input
        return self.head_masks[r.layer], (QKV_INDEX[r.qkv], r.head, s)

    def take_clean_qkv(self) -> list[torch.Tensor]:
        """Every layer's q/k/v of the clean run, handed over: the model keeps no reference
        (the incremental engine updates them in place as its committed state)."""
        qkv, self.clean_qkv = self.clean_qkv, None
        assert qkv is not None, "the clean q/k/v were handed over already"
        return qkv

    def take_last_qkv(self) -> list[torch.Tensor | None]:
        """Every layer's q/k/v of the last pass, handed over (the model keeps none)."""
        qkv, self.last_qkv = self.last_qkv, [None] * self.n_layers
        return qkv

    def set_edge(self, edge: Edge, present: bool) -> None:
        tensor, index = self._edge_slots[edge.index]
        tensor[index] = present

    def set_edges(self, kept: torch.Tensor) -> None:
        """Set every edge's mask at once (`kept`: bool, in graph order): one indexed write per
        mask tensor (about three per layer) instead of one `set_edge` per edge (32,923 on GPT-2
        small)."""
        if self._mask_groups is None:
            groups: dict[int, tuple[torch.Tensor, list[int], list[int]]] = {}
            for edge_index, (tensor, index) in enumerate(self._edge_slots):
                offset = sum(i * stride for i, stride in zip(index, tensor.stride(), strict=True))
                _, edges, offsets = groups.setdefault(id(tensor), (tensor, [], []))
                edges.append(edge_index)
                offsets.append(offset)
            device = self.w.W_E.device
            self._mask_groups = [(tensor, torch.tensor(edges, device=device),
                                  torch.tensor(offsets, device=device))
                                 for tensor, edges, offsets in groups.values()]
        flags = kept.to(self.w.W_E.device)
        for tensor, edge_ids, flat_ids in self._mask_groups:
            tensor.view(-1)[flat_ids] = flags[edge_ids].to(tensor.dtype)

    @staticmethod
    def stage_of(edge: Edge) -> Stage:
        """The first stage an edge's removal can change."""
        r = edge.receiver
        return Stage(r.layer, 1 if r.kind == "mlp" else 0)

    # ------------------------------------------------------------------ the forward pass

    def _set_bases(self, batch: int, n_pos: int, d_model: int) -> None:
        """Each receiver group's input with every edge removed: bias + sum of ablated outputs."""
        g = self.graph
        if self.ablated is None:
            self.base_heads = [b.expand(batch, n_pos, d_model) for b in self.bias_heads]
            self.base_mlp = [b.expand(batch, n_pos, d_model) for b in self.bias_mlp]
            self.base_logits = self.bias_logits.expand(len(self.pos_batch), d_model)
            return
        self.base_heads, self.base_mlp = [], []
        running = self.ablated[0].clone()  # sum of the senders so far, without a big temporary
        for layer in range(self.n_layers):
            first = g.senders_before(layer)
            self.base_heads.append(self.bias_heads[layer] + running)
            running += self.ablated[first:first + self.n_heads].sum(0)
            if self.has_mlp:
                self.base_mlp.append(self.bias_mlp[layer] + running)
                running += self.ablated[first + self.n_heads]
        self.base_logits = self.bias_logits + running[self.pos_batch, self.pos_index]

    def _record_run(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Ordinary forward pass on `tokens`: every sender's output and every head's q/k/v."""
        batch, n_pos = tokens.shape
        self.delta = torch.empty(self.n_senders, batch, n_pos, self.w.W_E.shape[1],
                                 dtype=self.w.W_E.dtype, device=self.w.W_E.device)
        self.delta[0] = forward.embed(self.w, tokens)
        qkvs = []
        for layer in range(self.n_layers):
            qkvs.append(self._attention(layer))
            if self.has_mlp:
                self._mlp(layer)
        return self.delta, qkvs

    def logits_from(self, stage: Stage) -> torch.Tensor:
        """Recompute every stage from `stage` on; logits at the metric positions."""
        for layer in range(stage.layer, self.n_layers):
            if not (layer == stage.layer and stage.part == 1):
                self.last_qkv[layer] = self._attention(layer)
            if self.has_mlp:
                self._mlp(layer)
        return self._logits()

    def _mix(self, mask: torch.Tensor, n_senders: int) -> torch.Tensor:
        """mask [..., n_senders] times delta[:n_senders] -> [..., batch, pos, d_model]."""
        delta = self.delta[:n_senders]
        flat = mask.reshape(-1, n_senders) @ delta.reshape(n_senders, -1)
        return flat.view(*mask.shape[:-1], *delta.shape[1:])

    def _head_inputs(self, layer: int) -> torch.Tensor:
        """Every head input's residual copy, normalised: [n_inputs, n_heads, batch, pos, d].
        Mixed and normalised once per distinct mask: one residual for all when every mask is
        the same ([1, 1, batch, pos, d]: the recorded runs, as in a plain forward pass), one per
        distinct mask when at most half are distinct (most inputs of a sparse circuit read no
        sender, so their copies are all the same)."""
        lw = self.w.layers[layer]
        n_senders = self.graph.senders_before(layer)
        masks = self.head_masks[layer]
        distinct, which = torch.unique(masks.reshape(-1, n_senders), dim=0, return_inverse=True)
        mixed = distinct if 2 * len(distinct) <= len(which) else masks
        x = norm(self.base_heads[layer] + self._mix(mixed, n_senders),
                 lw.ln1_w, lw.ln1_b, self.w.normalization, self.w.eps)
        if mixed is masks:
            return x
        if len(distinct) == 1:
            return x[None]  # [1, 1, batch, pos, d]: shared by every head input
        return x.index_select(0, which).view(*masks.shape[:2], *x.shape[1:])

    def _attention(self, layer: int) -> torch.Tensor:
        """Every head of `layer` from its patched inputs; returns the q/k/v it used."""
        lw = self.w.layers[layer]
        qkv = forward.qkv(lw, self._head_inputs(layer))
        if self.ablated_qkv is not None:
            qkv = torch.where(self.direct_masks[layer], qkv, self.ablated_qkv[layer])
        q, k, v = qkv
        # [heads, batch, pos, d_head]
        z = forward.attend(q, k, v, self.w.attn_scale, self.attention_mask)
        self.last_z[layer] = z[:, self.pos_batch, self.pos_index]
        out = forward.head_outputs(lw, z)
        heads = out.shape[0]
        first = self.graph.sender_of_head(layer, 0)
        if self.ablated is None:
            self.delta[first:first + heads] = out
        else:
            self.delta[first:first + heads] = out - self.ablated[first:first + heads]
        return qkv

    def _mlp(self, layer: int) -> None:
        lw = self.w.layers[layer]
        index = self.graph.sender_of_mlp(layer)
        x = self.base_mlp[layer] + self._mix(self.mlp_masks[layer], index)
        out = forward.mlp(self.w, lw, x)  # b_out is a bias, not part of the sender
        self.delta[index] = out if self.ablated is None else out - self.ablated[index]

    def _logits(self) -> torch.Tensor:
        delta = self.delta[:, self.pos_batch, self.pos_index]  # [senders, n_positions, d]
        x = self.base_logits + (self.logit_mask @ delta.reshape(self.n_senders, -1)).view(
            delta.shape[1:])
        return forward.unembed(self.w, x)


def task_tensors(task: Task, device: torch.device | str,
                 causal: bool = True) -> tuple[torch.Tensor, ...]:
    """Right-padded clean and corrupt tokens and the flattened metric positions (prompt index,
    position): the layout `PatchedModel` takes.

    Causal attention never reads the padding (it comes after every real token); bidirectional
    attention (`causal` False) would, so there the prompts must all have one length."""
    width = max(len(p) for p in task.clean)
    if not causal and any(len(p) != width for p in task.clean):
        lengths = sorted({len(p) for p in task.clean})
        raise TaskError(f"task {task.name}: prompts of {lengths[0]} to {lengths[-1]} tokens; a "
                        f"model with bidirectional attention would read the padding of the "
                        f"shorter ones, so give every prompt the same length")

    def pad(rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)

    pos_batch = torch.tensor([b for b, pos in enumerate(task.positions) for _ in pos],
                             dtype=torch.long)
    pos_index = torch.tensor([p for pos in task.positions for p in pos], dtype=torch.long)
    return tuple(t.to(device) for t in (pad(task.clean), pad(task.corrupt), pos_batch, pos_index))
