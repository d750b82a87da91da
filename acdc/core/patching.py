"""The patched forward pass: a model whose receivers read a chosen subset of their senders.

Every receiver r reads

    input_r = bias_r + sum over senders s of  ablated_s + mask[r, s] * (live_s - ablated_s)

where `bias_r` is the sum of the `b_O` and `b_out` terms before r, `live_s` is sender s's output
in this pass and `ablated_s` what a removed edge carries instead (the ablation):

- `corrupt`: s's output in the corrupted run (same prompt, same position);
- `zero`: nothing (a removed direct q/k/v edge carries the q/k/v of a bias-only residual);
- `mean`: s's output in the corrupted run averaged over every real token of every corrupted
  prompt (one vector per sender, the same at every prompt and position);
- `mean-positional`: averaged per position, over the corrupted prompts long enough to have it.

Padding never enters a mean: prompts of different lengths are right-padded, and only each
prompt's own tokens are averaged (a position only some prompts reach is averaged over those).
A removed direct edge `a1.h2<q>->a1.h2` carries the head's query averaged the same way over the
corrupted run's queries (the mean of q, not q of the mean residual: like a sender's output, the
value the head reads is averaged). Means are taken over the corrupted prompts of the task
(for a mean over other text, make those the task's corrupted prompts).
With every mask at 1 this is the ordinary forward pass; with every mask at 0 (corrupt
ablation) it is the corrupted run. We keep `delta_s = live_s - ablated_s` for every sender in one
tensor `[n_senders, batch, pos, d_model]`, so all of a layer's receiver inputs come from one
matrix product of that layer's mask `[receivers, senders]` with `delta`: no Python loop over
edges, everything on the model's device.

A pass can start at any stage (a layer's attention or its MLP, or the logits): ACDC only ever
changes edges into the stage it is working on and later ones, and every sender before that stage
still holds its clean output (its incoming edges are untouched), so `delta` up to there is
reused from the clean run. Logits are computed only at the metric positions.

A circuit's logits (`circuit_logits`: an evaluation, a method's measured circuit) need nothing
of the last layer but what the logits read: its heads' queries, attention and outputs and its
MLP at the metric positions only (its keys and values still at every token). That pass leaves
the last layer's outputs at the other tokens as an earlier pass left them, so the next
`logits_from` that starts inside the last layer starts at its attention instead.

Heads get one residual copy per distinct q/k/v input mask (or per head's, at head granularity),
normalised on each copy, and each copy is projected once for all the heads that read it. While
every mask holds the same value (the recorded clean and corrupted runs) one copy per layer
serves them all, normalised and projected as in a plain forward pass; otherwise the copies are
centred and scaled in one reused buffer, with the norm's weight and bias folded into the
projections (the same values to float rounding). Head outputs are `z @ W_O` per head (a
batched product, never TransformerLens' `use_attn_result` broadcast). The arithmetic itself
(norms, projections, attention, MLP, unembedding) is `forward.py`'s; this module decides what
each receiver reads.

In a positional graph (`acdc.core.graph`) each mask has a group axis before the senders'
(`[..., groups + 1, senders]`, the last column for the padding, which belongs to no group and
is never read by a real token): the input of receiver r at a token of group g is

    bias_r + sum over senders s of  ablated_s + mask[r, g, s] * (live_s - ablated_s)

computed group by group over the tokens of each group (`TaskTensors.groups` says which token
belongs to which), and a direct edge's mask `[3, heads, groups + 1]` chooses the live or the
ablated q/k/v token by token. Where a receiver's masks are the same at every group (the
recorded runs) the position-blind product is used, so the recordings are the blind ones bit
for bit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from acdc.core import forward
from acdc.core.forward import norm
from acdc.core.graph import Edge, Graph, GraphShape
from acdc.core.weights import Weights
from acdc.errors import TaskError

if TYPE_CHECKING:
    from acdc.core.tasks.values import Task

QKV_INDEX = {"q": 0, "k": 1, "v": 2, None: 0}
# From this many elements in a residual copy, heads reading the same copy are projected with
# one product per copy instead of from a copy per head (`PatchedModel._head_qkv`).
GROUPED_PROJECTION_MIN = 2 ** 18
MEAN_ABLATIONS = ("mean", "mean-positional")


@dataclass(frozen=True)
class RecordedRun:
    """An ordinary forward pass as the patched model records one: every sender's output
    `[senders, batch, pos, d_model]`, every layer's q/k/v `[3, heads, batch, pos, d_head]` and
    attention output z at the metric positions `[heads, n_positions, d_head]`."""

    outputs: torch.Tensor
    qkv: tuple[torch.Tensor, ...]
    z: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class TaskTensors:
    """A task's prompts as tensors: right-padded clean and corrupt tokens `[batch, pos]`, the
    flattened metric positions (prompt and position of each) and every prompt's length; for a
    positional graph, each token's position group `[batch, pos]` (the padding: the number of
    groups), else None."""

    clean: torch.Tensor
    corrupt: torch.Tensor
    pos_batch: torch.Tensor
    pos_index: torch.Tensor
    lengths: torch.Tensor
    groups: torch.Tensor | None = None


def task_tensors(task: Task, device: torch.device | str, causal: bool = True,
                 shape: GraphShape | None = None) -> TaskTensors:
    """The tensors of `task` on `device`, padded with token 0 on the right. Causal attention
    never reads the padding (it comes after every real token); bidirectional attention
    (`causal` False) would, so there the prompts must all have one length. `shape`: the
    graph's, for its position groups (`acdc.core.positions`)."""
    width = max(len(p) for p in task.clean)
    if not causal and any(len(p) != width for p in task.clean):
        shortest = min(len(p) for p in task.clean)
        raise TaskError(f"task {task.name}: prompts of {shortest} to {width} tokens; a model "
                        f"with bidirectional attention would read the padding of the shorter "
                        f"ones, so give every prompt the same length")

    def pad(rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)

    pos_batch = torch.tensor([b for b, pos in enumerate(task.positions) for _ in pos],
                             dtype=torch.long)
    pos_index = torch.tensor([p for pos in task.positions for p in pos], dtype=torch.long)
    lengths = torch.tensor([len(p) for p in task.clean], dtype=torch.long)
    groups = None
    if shape is not None and shape.positions != "none":
        from acdc.core.positions import group_of

        rows = group_of(task, shape.groups, shape.positions)
        padding = len(shape.groups)
        groups = torch.tensor([r + [padding] * (width - len(r)) for r in rows],
                              dtype=torch.long).to(device)
    clean, corrupt, pos_batch, pos_index, lengths = (
        t.to(device) for t in (pad(task.clean), pad(task.corrupt), pos_batch, pos_index, lengths))
    return TaskTensors(clean, corrupt, pos_batch, pos_index, lengths, groups)


def token_mean(values: torch.Tensor, lengths: torch.Tensor, positional: bool) -> torch.Tensor:
    """`values` [..., batch, pos, d] averaged over the real tokens (position < the prompt's
    length): over every prompt and position, or per position (`positional`); returned
    expanded to the shape of `values` (a view: no copy per prompt)."""
    n_pos = values.shape[-2]
    real = (torch.arange(n_pos, device=values.device)[None, :] < lengths[:, None]).to(values.dtype)
    lead = values.shape[:-3]
    flat = values.reshape(-1, *values.shape[-3:])
    means = []
    for item in flat:  # one sender (or head) at a time: no copy of the whole tensor
        if positional:
            means.append(torch.einsum("bpd,bp->pd", item, real) / real.sum(0)[:, None])
        else:
            means.append(torch.einsum("bpd,bp->d", item, real)[None] / real.sum())
    mean = torch.stack(means).view(*lead, 1, -1, values.shape[-1])
    return mean.expand(values.shape)


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
                 ablation: str = "corrupt", lengths: torch.Tensor | None = None,
                 clean_run: RecordedRun | None = None, groups: torch.Tensor | None = None,
                 ablated_run: RecordedRun | None = None):
        """`lengths` are the prompts' lengths (the mean ablations leave out the padding after
        them); None: every prompt fills the batch's width. `clean_run`: the clean run as
        another ordinary forward pass recorded it (the attribution methods' differentiated
        pass), taken over instead of recording it again; `ablated_run` likewise the corrupted
        prompts' run (corrupt ablation only). `groups`: each token's position group
        `[batch, pos]` (`TaskTensors.groups`), for a positional graph."""
        self.w = weights
        self.graph = graph
        self.positional = graph.positional
        if self.positional and groups is None:
            raise ValueError("a positional graph needs the tokens' position groups")
        self.n_groups = graph.n_groups
        self.groups = groups
        if groups is not None:
            # each group's tokens, flat over [batch * pos] and over the metric positions (the
            # last group is the padding); None where a group has no token
            self.group_tokens = _members(groups.flatten(), self.n_groups + 1)
            self.metric_groups = groups[pos_batch, pos_index]
            self.group_metric = _members(self.metric_groups, self.n_groups + 1)
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
        self.attention_masks = [forward.attention_mask(weights, n_pos, dtype, device, lw.window)
                                for lw in weights.layers]
        self.positions = torch.arange(n_pos, device=device)
        self.post_norm = weights.post_norm
        self.head_senders = [slice(graph.sender_of_head(layer, 0),
                                   graph.sender_of_head(layer, 0) + self.n_heads)
                             for layer in range(self.n_layers)]

        # Biases every receiver reads: b_O and b_out of every earlier sublayer (none with
        # post-norms: they are inside the norms). A parallel block's MLP reads its block's
        # input, without the layer's b_O.
        self.bias_heads, self.bias_mlp = [], []
        running = torch.zeros(d_model, dtype=dtype, device=device)
        for lw in weights.layers:
            self.bias_heads.append(running)
            attention_bias = forward.attention_bias(weights, lw)
            after_heads = running if attention_bias is None else running + attention_bias
            self.bias_mlp.append(running if weights.parallel else after_heads)
            running = after_heads
            mlp_bias = forward.mlp_bias(weights, lw)
            if mlp_bias is not None:
                running = running + mlp_bias
        self.bias_logits = running

        # True after a pass that computed the last layer at the metric positions only
        self._last_at_metric = False
        self._pass_buffer: torch.Tensor | None = None  # `_buffer`
        self._metric_queries: list[tuple[torch.Tensor, torch.Tensor] | None] = (
            [None] * self.n_layers)

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
        if ablation not in ("corrupt", "zero", *MEAN_ABLATIONS):
            raise ValueError(f"unknown ablation {ablation!r}")
        self._full_z: list[torch.Tensor] | None = None  # every position's z, when recorded
        if ablated_run is not None and ablation != "corrupt":
            raise ValueError(f"a recorded ablated run is the corrupt ablation's, not {ablation}'s")
        if ablated_run is not None:
            corrupt_out, corrupt_qkv = ablated_run.outputs, list(ablated_run.qkv)
            self.ablated_z = list(ablated_run.z)
        elif ablation != "zero":
            if ablation in MEAN_ABLATIONS:
                self._full_z = []
            corrupt_out, corrupt_qkv = self._record_run(corrupt_tokens)
            self.ablated_z = every_layer(self.last_z)
            corrupt_z, self._full_z = self._full_z, None
        # q/k/v of the clean run, taken over (and released) by the incremental engine
        self.clean_qkv: list[torch.Tensor] | None
        if clean_run is None:
            clean_out, self.clean_qkv = self._record_run(clean_tokens)
            self.clean_z = every_layer(self.last_z)
        else:
            clean_out, self.clean_qkv, self.clean_z = (clean_run.outputs, list(clean_run.qkv),
                                                       list(clean_run.z))
            self.delta = clean_out
        self.clean_logits = self.logits_from(Stage(self.n_layers))
        if ablation == "corrupt":
            self.ablated, self.ablated_qkv = corrupt_out, corrupt_qkv
        elif ablation in MEAN_ABLATIONS:
            if lengths is None:
                lengths = torch.full((batch,), n_pos, dtype=torch.long, device=device)
            positional = ablation == "mean-positional"
            self.ablated = token_mean(corrupt_out, lengths, positional)
            self.ablated_qkv = [token_mean(qkv, lengths, positional) for qkv in corrupt_qkv]
            self.ablated_z = [token_mean(z, lengths, positional)[:, pos_batch, pos_index]
                              for z in corrupt_z or ()]
            del corrupt_out, corrupt_qkv, corrupt_z
        else:  # zero: removed edges carry nothing; removed q/k/v come from a bias-only residual
            self.ablated = None
            self.ablated_z = [torch.zeros_like(z) for z in self.clean_z]
            self._set_all_masks(0.0)
            self.ablated_qkv = [self._head_qkv(layer) for layer in range(self.n_layers)]
            self._pass_buffer = None
            self._set_all_masks(1.0)
        self._set_bases(batch, n_pos, d_model)
        self.delta = clean_out if self.ablated is None else clean_out.sub_(self.ablated)  # in place
        self._edge_slots = [self._slot(edge) for edge in graph.edges]
        self._mask_groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    # ------------------------------------------------------------------ circuit state

    def _set_all_masks(self, value: float) -> None:
        dtype, device = self.w.W_E.dtype, self.w.W_E.device
        g = self.graph
        # a positional graph's masks have a group axis (its groups and the padding)
        at = (self.n_groups + 1,) if self.positional else ()
        self.head_masks = [
            torch.full((self.n_inputs, self.n_heads, *at, g.senders_before(layer)), value,
                       dtype=dtype, device=device)
            for layer in range(self.n_layers)
        ]
        self.mlp_masks = [
            torch.full((*at, g.senders_of_mlp(layer)), value, dtype=dtype, device=device)
            for layer in range(self.n_layers)
        ] if self.has_mlp else []
        self.logit_mask = torch.full((*at, self.n_senders), value, dtype=dtype, device=device)
        direct = (self.n_groups + 1,) if self.positional else (1, 1, 1)
        self.direct_masks = [
            torch.full((3, self.n_heads, *direct), bool(value), device=device)
            for _ in range(self.n_layers)
        ]

    def _slot(self, edge: Edge) -> tuple[torch.Tensor, tuple[int, ...]]:
        r = edge.receiver
        at = () if edge.group is None else (edge.group,)
        if edge.kind == "direct":
            assert r.head is not None  # a direct edge goes into a head
            return self.direct_masks[r.layer], (QKV_INDEX[edge.qkv], r.head, *(at or (0, 0, 0)))
        assert edge.sender is not None  # a residual edge
        s = edge.sender.index
        if r.kind == "logits":
            return self.logit_mask, (*at, s)
        if r.kind == "mlp":
            return self.mlp_masks[r.layer], (*at, s)
        assert r.head is not None  # a head input
        return self.head_masks[r.layer], (QKV_INDEX[r.qkv], r.head, *at, s)

    def copy_for_circuits(self) -> PatchedModel:
        """An independent copy for measuring circuits (`circuit_logits`, `logits_from`): it
        shares every tensor a pass only reads (the recorded and ablated runs, the biases) and
        copies the ones a pass writes (the senders' outputs `delta`, the masks). It holds no
        clean q/k/v to hand over (`take_clean_qkv`: a search takes a full copy)."""
        new = copy.copy(self)
        with torch.inference_mode():
            new.delta = self.delta.clone()
            new.head_masks = [m.clone() for m in self.head_masks]
            new.mlp_masks = [m.clone() for m in self.mlp_masks]
            new.logit_mask = self.logit_mask.clone()
            new.direct_masks = [m.clone() for m in self.direct_masks]
        masks = {id(old): fresh for old, fresh in zip(
            (*self.head_masks, *self.mlp_masks, self.logit_mask, *self.direct_masks),
            (*new.head_masks, *new.mlp_masks, new.logit_mask, *new.direct_masks), strict=True)}
        new._edge_slots = [(masks[id(tensor)], index) for tensor, index in self._edge_slots]
        new._mask_groups = None if self._mask_groups is None else [
            (masks[id(tensor)], edges, offsets) for tensor, edges, offsets in self._mask_groups]
        new.clean_qkv, new._pass_buffer = None, None
        new.last_qkv, new.last_z = list(self.last_qkv), list(self.last_z)
        new._metric_queries = list(self._metric_queries)
        return new

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

    def circuit_logits(self, kept: torch.Tensor) -> torch.Tensor:
        """The logits at the metric positions of the circuit `kept` (bool, graph order): the
        clean run's when every edge is kept, the unembedding of the ablated inputs when none
        is (nothing upstream then reaches the logits), else one patched pass."""
        if bool(kept.all()):
            return self.clean_logits
        self.set_edges(kept)
        if not bool(kept.any()):
            return self.logits_from(Stage(self.n_layers))
        return self.logits_at_metric()

    def logits_at_metric(self) -> torch.Tensor:
        """`logits_from(Stage(0))`, the last layer computed only where the logits read it (the
        module docstring): the same logits, to float rounding."""
        last = self.n_layers - 1
        try:
            for layer in range(last):
                self.last_qkv[layer] = self._attention(layer)
                if self.has_mlp:
                    self._mlp(layer)
            self.last_qkv[last] = None  # its queries exist at the metric positions only
            self._attention_at_metric(last)
            if self.has_mlp:
                self._mlp_at_metric(last)
        finally:
            self._pass_buffer = None
        self._last_at_metric = True
        return self._logits()

    @staticmethod
    def stage_of(edge: Edge) -> Stage:
        """The first stage an edge's removal can change."""
        r = edge.receiver
        return Stage(r.layer, 1 if r.kind == "mlp" else 0)

    # ------------------------------------------------------------------ the forward pass

    def _set_bases(self, batch: int, n_pos: int, d_model: int) -> None:
        """Each receiver group's input with every edge removed: bias + sum of ablated outputs."""
        g = self.graph
        # post-sublayer norms: each layer's ablated head outputs summed once (see `_mix`)
        self.ablated_head_sums = ([self.ablated[heads].sum(0) for heads in self.head_senders]
                                  if self.post_norm and self.ablated is not None else None)
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
            if self.has_mlp and self.w.parallel:
                self.base_mlp.append(self.bias_mlp[layer] + running)
            if not self.post_norm:  # else the heads enter through their layer's norm (`_mix`)
                running += self.ablated[first:first + self.n_heads].sum(0)
            if self.has_mlp:
                if not self.w.parallel:
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
        try:
            for layer in range(self.n_layers):
                qkvs.append(self._attention(layer))
                if self.has_mlp:
                    self._mlp(layer)
        finally:
            self._pass_buffer = None
        return self.delta, qkvs

    def logits_from(self, stage: Stage) -> torch.Tensor:
        """Recompute every stage from `stage` on; logits at the metric positions."""
        last = self.n_layers - 1
        if self._last_at_metric and stage.layer == last:
            stage = Stage(last)  # the last layer's heads hold their outputs at the metric positions
        if stage.layer <= last:
            self._last_at_metric = False
        try:
            for layer in range(stage.layer, self.n_layers):
                if not (layer == stage.layer and stage.part == 1):
                    self.last_qkv[layer] = self._attention(layer)
                if self.has_mlp:
                    self._mlp(layer)
        finally:
            self._pass_buffer = None
        return self._logits()

    def _buffer(self, numel: int) -> torch.Tensor:
        """`numel` elements of a buffer kept for one pass (released at its end), for the
        layers' largest intermediate values: allocating that much anew at every layer costs
        more than the arithmetic that fills it, on a CPU."""
        buffer = self._pass_buffer
        if buffer is None or buffer.numel() < numel:
            buffer = self._pass_buffer = self.delta.new_empty(numel)
        return buffer[:numel]

    def _mix(self, mask: torch.Tensor, n_senders: int, at_metric: bool = False,
             into_buffer: bool = False) -> torch.Tensor:
        """mask [..., n_senders] times delta[:n_senders] -> [..., batch, pos, d_model] (at the
        metric positions only: [..., n_positions, d_model]). A positional mask
        [..., groups + 1, n_senders] mixes each group's tokens with its own row.

        With post-attention norms a layer's heads reach the residual stream through
        `norm(b_O + sum of their outputs)`: each receiver gets, per earlier layer, that norm of
        the sum it reads (ablated outputs plus its kept heads' deltas), recomputed for every
        mask. The other senders (input, MLPs: their norms are their own) add as usual."""
        delta = self.delta[:n_senders]
        if at_metric:
            delta = delta[:, self.pos_batch, self.pos_index]
        if not self.positional:
            return self._mix_rows(mask, delta, lambda layer: self._ablated_heads(layer, at_metric),
                                  into_buffer)
        first = mask[..., :1, :]
        if torch.equal(mask, first.expand_as(mask)):  # one row for every group
            return self._mix_rows(first[..., 0, :], delta,
                                  lambda layer: self._ablated_heads(layer, at_metric))
        lead, d_model = mask.shape[:-2], delta.shape[-1]
        flat = delta.reshape(n_senders, -1, d_model)  # [senders, tokens, d]
        out = delta.new_empty(*lead, flat.shape[1], d_model)
        for g, tokens in enumerate(self.group_metric if at_metric else self.group_tokens):
            if tokens is None:
                continue

            def heads(layer: int, tokens: torch.Tensor = tokens) -> torch.Tensor:
                ablated = self._ablated_heads(layer, at_metric)
                return ablated if ablated.dim() == 0 else ablated.reshape(-1, d_model)[tokens]

            out[..., tokens, :] = self._mix_rows(mask[..., g, :], flat[:, tokens], heads)
        return out.view(*lead, *delta.shape[1:])

    def _mix_rows(self, mask: torch.Tensor, delta: torch.Tensor, ablated_heads,
                  into_buffer: bool = False) -> torch.Tensor:
        """mask [..., n] times delta [n, *tokens, d] -> [..., *tokens, d] (see `_mix`);
        `ablated_heads(layer)` is a layer's ablated head sum at those tokens."""
        n_senders = delta.shape[0]
        if not self.post_norm:
            rows = mask.reshape(-1, n_senders)
            flat_delta = delta.reshape(n_senders, -1)
            if into_buffer:
                flat = torch.mm(rows, flat_delta, out=self._buffer(len(rows) * flat_delta.shape[1]
                                                                 ).view(len(rows), -1))
            else:
                flat = rows @ flat_delta
            return flat.view(*mask.shape[:-1], *delta.shape[1:])
        rows = mask.reshape(-1, n_senders)
        linear = rows.clone()
        total = None
        for layer in range(self.n_layers):
            senders = self.head_senders[layer]
            if senders.stop > n_senders:
                break
            linear[:, senders] = 0
            ablated = ablated_heads(layer)
            mixed = ablated + (rows[:, senders] @ delta[senders].flatten(1)).view(
                len(rows), *delta.shape[1:])
            lw = self.w.layers[layer]
            term = forward.attention_out(self.w, lw, mixed)
            total = term if total is None else total + term
        flat = (linear @ delta.reshape(n_senders, -1)).view(len(rows), *delta.shape[1:])
        if total is not None:
            flat = flat + total
        return flat.view(*mask.shape[:-1], *delta.shape[1:])

    def _ablated_heads(self, layer: int, at_metric: bool) -> torch.Tensor:
        """The sum of a layer's ablated head outputs (zero for zero ablation)."""
        if self.ablated_head_sums is None:
            return torch.zeros((), dtype=self.delta.dtype, device=self.delta.device)
        heads = self.ablated_head_sums[layer]
        return heads[self.pos_batch, self.pos_index] if at_metric else heads

    def _head_qkv(self, layer: int, masks: torch.Tensor | None = None, at_metric: bool = False,
                  parts: tuple[int, ...] = (0, 1, 2)) -> torch.Tensor:
        """The `parts` of q, k, v (0, 1, 2) of every head from its patched input:
        [len(parts), n_heads, batch, pos, d_head] (at the metric positions only:
        [len(parts), n_heads, n_positions, d_head]). `masks`: those parts' input masks
        [len(parts), n_heads, *row], or [1, n_heads, *row] when one input per head feeds all
        its parts (default: the layer's).

        Inputs are mixed once per distinct mask. While every mask is the same (the recorded
        runs) one residual copy is normalised and projected for every head, as in a plain
        forward pass. Otherwise the distinct copies are mixed into one buffer and normalised
        in place, the norm's weight and bias folded into the projections, and each copy is
        projected once for all the heads reading it: no copy per head, no new buffer per layer
        (most inputs of a sparse circuit, or of its complement, read the same copy)."""
        lw = self.w.layers[layer]
        n_senders = self.graph.senders_before(layer)
        masks = self.head_masks[layer] if masks is None else masks
        n_in, row = masks.shape[0], masks.shape[2:]
        flat = masks.reshape(-1, row.numel())
        distinct, which = torch.unique(flat, dim=0, return_inverse=True)
        base = self.base_heads[layer]
        if at_metric:
            base = base[self.pos_batch, self.pos_index]
        if len(distinct) == 1:
            x = norm(base + self._mix(distinct.view(1, *row), n_senders, at_metric),
                     lw.ln1_w, lw.ln1_b, self.w.normalization, self.w.eps)
            return forward.qkv(lw, x[None], parts)
        copies = distinct if 2 * len(distinct) <= len(which) else flat
        x = self._mix(copies.view(-1, *row), n_senders, at_metric, into_buffer=True)
        x += base
        forward.normalise_(x, self.w.normalization, self.w.eps)
        tokens, d_model = x.shape[1:-1], x.shape[-1]
        n_tokens = tokens.numel()
        grouped = copies is not flat and n_tokens * d_model >= GROUPED_PROJECTION_MIN
        W, b = forward.folded_projections(self.w, lw, parts, shared=n_in == 1,
                                          inputs_first=not grouped)
        if not grouped:  # one batched product over a copy per input
            if copies is not flat:
                x = x.view(-1, n_tokens, d_model).index_select(0, which)
            out = torch.baddbmm(b[:, None], x.view(len(which), n_tokens, d_model), W)
        else:  # one product per copy, for all the inputs reading it
            width = W.shape[-1]
            out = x.new_empty(len(which), n_tokens, width)
            order = torch.argsort(which, stable=True)
            start = 0
            for copy_index, count in enumerate(torch.bincount(which).tolist()):
                inputs = order[start:start + count]
                start += count
                wide = W.index_select(1, inputs).view(d_model, count * width)
                bias = b.index_select(0, inputs).view(1, count * width)
                projected = torch.addmm(bias, x[copy_index].view(n_tokens, d_model), wide)
                out[inputs] = projected.view(n_tokens, count, width).transpose(0, 1)
        if n_in == 1 and len(parts) > 1:  # [heads, tokens, parts * d_head]
            out = out.view(self.n_heads, n_tokens, len(parts), -1).permute(2, 0, 1, 3)
        return out.reshape(len(parts), self.n_heads, *tokens, -1)

    def _attention(self, layer: int) -> torch.Tensor:
        """Every head of `layer` from its patched inputs; returns the q/k/v it used."""
        lw = self.w.layers[layer]
        qkv = self._head_qkv(layer)
        if self.ablated_qkv is not None:
            direct = self.direct_masks[layer]
            if self.positional:  # [3, heads, groups + 1] -> each token's [3, heads, b, p, 1]
                assert self.groups is not None  # a positional model has them
                direct = direct[:, :, self.groups, None]
            qkv = torch.where(direct, qkv, self.ablated_qkv[layer])
        q, k, v = qkv
        q = forward.rotate(self.w, lw, q, self.positions)
        k = forward.rotate(self.w, lw, k, self.positions)
        # [heads, batch, pos, d_head]
        z = forward.attend(q, k, v, self.w.attn_scale, self.attention_masks[layer],
                           self.w.attn_soft_cap)
        self.last_z[layer] = z[:, self.pos_batch, self.pos_index]
        if self._full_z is not None:
            self._full_z.append(z)
        heads = self.head_senders[layer]
        out = self.delta[heads]
        if out.is_contiguous():  # written where it is kept: no new buffer per layer
            torch.bmm(z.reshape(z.shape[0], -1, z.shape[-1]), lw.W_O,
                      out=out.view(z.shape[0], -1, out.shape[-1]))
        else:
            out.copy_(forward.head_outputs(lw, z))
        if self.ablated is not None:
            out.sub_(self.ablated[heads])
        return qkv

    def _attention_at_metric(self, layer: int) -> None:
        """`_attention` for the queries at the metric positions only: their z (`last_z`) and
        the heads' outputs there (written into `delta` at those positions)."""
        lw, w = self.w.layers[layer], self.w
        masks = self.head_masks[layer]
        at_b, at_p = self.pos_batch, self.pos_index
        q_masks, kv_masks = (masks[:1], masks[1:]) if self.n_inputs == 3 else (masks, masks)
        q = self._head_qkv(layer, q_masks, at_metric=True, parts=(0,))[0]  # [heads, n_pos., d_h]
        k, v = self._head_qkv(layer, kv_masks, parts=(1, 2))  # [heads, batch, pos, d_head]
        batch = k.shape[1]
        if self.ablated_qkv is not None:
            direct, ablated = self.direct_masks[layer], self.ablated_qkv[layer]
            if self.positional:  # [3, heads, groups + 1] -> each token's
                assert self.groups is not None  # a positional model has them
                direct_q = direct[0][:, self.metric_groups, None]
                direct_kv = direct[1:, :, self.groups, None]
            else:
                direct_q, direct_kv = direct[0, :, 0], direct[1:]
            q = torch.where(direct_q, q, ablated[0][:, at_b, at_p])
            k = torch.where(direct_kv[0], k, ablated[1])
            v = torch.where(direct_kv[1], v, ablated[2])
        q = forward.rotate(w, lw, q, self.pos_index)
        k = forward.rotate(w, lw, k, self.positions)
        # each prompt's queries side by side ([heads, batch, most per prompt, d_head]), so that
        # attention is one batched product over the prompts, as in `_attention`
        slot, mask = self._queries_at_metric(layer)
        queries = q.new_zeros(q.shape[0], batch, mask.shape[1], q.shape[-1])
        queries[:, at_b, slot] = q
        z = forward.attend(queries, k, v, w.attn_scale, mask, w.attn_soft_cap)[:, at_b, slot]
        self.last_z[layer] = z
        out = torch.bmm(z, lw.W_O)  # [heads, n_positions, d_model]
        heads = self.head_senders[layer]
        if self.ablated is not None:
            out = out - self.ablated[heads][:, at_b, at_p]
        self.delta[heads, at_b, at_p] = out

    def _queries_at_metric(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each metric position's query sits among its prompt's (`slot` [n_positions])
        and the attention mask of those query rows [batch, most per prompt, keys] (rows no
        metric position fills read every key: they are dropped)."""
        cached = self._metric_queries[layer]
        if cached is None:
            batch = int(self.delta.shape[1])
            counts = torch.bincount(self.pos_batch, minlength=batch)
            first = torch.cumsum(counts, 0) - counts
            order = torch.argsort(self.pos_batch, stable=True)
            slot = torch.empty_like(self.pos_batch)
            slot[order] = torch.arange(len(order), device=order.device) - first[
                self.pos_batch[order]]
            full = self.attention_masks[layer]  # [queries, keys]
            mask = full.new_zeros(batch, int(counts.max()), full.shape[1])
            mask[self.pos_batch, slot] = full[self.pos_index]
            cached = self._metric_queries[layer] = (slot, mask)
        return cached

    def _mlp_at_metric(self, layer: int) -> None:
        """`_mlp` at the metric positions only (written into `delta` there)."""
        lw = self.w.layers[layer]
        index = self.graph.sender_of_mlp(layer)
        mask = self.mlp_masks[layer]
        at_b, at_p = self.pos_batch, self.pos_index
        x = self.base_mlp[layer][at_b, at_p] + self._mix(mask, mask.shape[-1], at_metric=True)
        out = forward.mlp(self.w, lw, x)
        self.delta[index, at_b, at_p] = (out if self.ablated is None
                                         else out - self.ablated[index][at_b, at_p])

    def _mlp(self, layer: int) -> None:
        lw = self.w.layers[layer]
        index = self.graph.sender_of_mlp(layer)
        mask = self.mlp_masks[layer]
        x = self.base_mlp[layer] + self._mix(mask, mask.shape[-1])
        out = forward.mlp(self.w, lw, x)  # b_out is a bias, not part of the sender
        self.delta[index] = out if self.ablated is None else out - self.ablated[index]

    def _logits(self) -> torch.Tensor:
        if self.post_norm or self.positional:
            x = self.base_logits + self._mix(self.logit_mask, self.n_senders, at_metric=True)
            return forward.unembed(self.w, x)
        delta = self.delta[:, self.pos_batch, self.pos_index]  # [senders, n_positions, d]
        x = self.base_logits + (self.logit_mask @ delta.reshape(self.n_senders, -1)).view(
            delta.shape[1:])
        return forward.unembed(self.w, x)


def _members(groups: torch.Tensor, n: int) -> list[torch.Tensor | None]:
    """For each of `n` groups, the indices of `groups` (a flat tensor) that hold it, or None."""
    out: list[torch.Tensor | None] = []
    for g in range(n):
        where = torch.nonzero(groups == g).flatten()
        out.append(where if len(where) else None)
    return out
