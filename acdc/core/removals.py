"""One edge removed from the full model, for many edges at once: the exact effect of each edge.

Removing edge s -> r from the full graph (every other edge kept) changes what r reads, by
`-(live_s - ablated_s)` (`acdc.core.patching`), and so r's node (a head, an MLP, or the
logits directly). Every other receiver keeps all of its edges, so everything downstream of
that node reads the ordinary residual stream, in which only that node's output differs: the
rest of the pass is the ordinary forward pass from there, with the node's new output. This
is what an ACDC search measures when it tests an edge of the full graph, and what the MIB
benchmark's exact edge patching measures, one pass per edge.

`SingleRemovals` computes it for several edges into one receiver per pass, each candidate a
row of a leading dimension:

- the receiver's new input for each removed edge (one subtraction; with post-sublayer norms,
  the norm of the sender's layer applied to its head sum without the sender), its node's new
  output (for a head: the one q/k/v input that changed, its attention, its `z @ W_O`);
- the layer's attention output and MLP with that change, then every later layer as one
  batched forward pass over the candidates;
- positions: only those from the first one at which some sender's clean and ablated outputs
  differ to the last metric position can change (`changing_positions`, causal attention); keys
  and values before them are the clean run's. The last layer reads its queries, and the
  unembedding its input, at the metric positions only.

In a positional graph (`acdc.core.graph`) an edge at group g changes its receiver's input (or,
a direct edge, the head's q/k/v) at the tokens of g only; the candidates of one pass are the
edges into one receiver at one group.

Nothing is written to the patched model: it stays the full model, and a `CircuitMeter` can
measure circuits with it afterwards. A direct edge `a1.h2<q>->a1.h2` is one candidate: the
head's query becomes its ablated query.

The arithmetic is `acdc.core.forward`'s; the tests hold the results to the ACDC engine's
scores of a search that keeps every edge and to a slow hooked reference, on every model
family and ablation.

>>> patched = record(loaded_model, task, graph, "corrupt").patched  # doctest: +SKIP
>>> removals = SingleRemovals(patched)  # doctest: +SKIP
>>> logits = removals.logits(graph.edges[:3])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from acdc.core import forward
from acdc.core.forward import norm
from acdc.core.graph import Edge, Graph
from acdc.core.patching import QKV_INDEX, PatchedModel

# Candidates per pass: as many as keep the largest intermediate tensor of one pass (an MLP's
# hidden layer, or the logits) under this many numbers.
CANDIDATE_NUMBERS = 2**25


def changing_positions(delta: torch.Tensor, metric_positions: torch.Tensor,
                       causal: bool = True) -> tuple[int, int]:
    """The positions that removing edges can change, as a range: from the first where some
    sender's clean and ablated outputs differ (`delta`: before it every input is the same in
    every circuit; greater-than's prompts differ from position 8 of 13) to the last metric
    position (attention is causal: later positions reach no metric position). Every metric
    position is in the range, even one before any difference.

    Under bidirectional attention every position reads every other: a later position's keys
    and values reach the metric positions, and an earlier position whose clean and ablated
    outputs agree can still change in a circuit (its queries read the later keys). The range
    is then the whole sequence."""
    if not causal:
        return 0, delta.shape[2] - 1
    first, last = int(metric_positions.min()), int(metric_positions.max())
    for position in range(first):  # one position at a time: no full-size temporary
        if bool((delta[:, :, position] != 0).any()):
            return position, last
    return first, last


def receiver_groups(graph: Graph) -> list[list[Edge]]:
    """The edges in groups `SingleRemovals.logits` takes: the residual edges into each
    receiver (graph order; in a positional graph, into each receiver at each group), and each
    direct edge alone."""
    groups: dict[tuple[str, int | None], list[Edge]] = {}
    singles: list[list[Edge]] = []
    for edge in graph.edges:
        if edge.kind == "direct":
            singles.append([edge])
        else:
            groups.setdefault((edge.receiver.name, edge.group), []).append(edge)
    return [*groups.values(), *singles]


class SingleRemovals:
    """The logits of the full model with one edge removed, for several edges per pass."""

    def __init__(self, patched: PatchedModel):
        pm = self.pm = patched
        w = self.w = patched.w
        self.graph = patched.graph
        self.n_layers, self.n_heads = self.graph.n_layers, self.graph.n_heads
        self.has_mlp = self.graph.shape.has_mlp
        if patched.clean_qkv is None:
            raise ValueError("the patched model's clean q/k/v were handed over already")
        self.qkv = patched.clean_qkv  # [3, heads, batch, pos, d_head] per layer
        self.first, self.last = changing_positions(pm.delta, pm.pos_index, w.causal)
        window = self.window = slice(self.first, self.last + 1)
        self.delta = pm.delta[:, :, window]  # live - ablated of every sender over the window
        self.ablated = None if pm.ablated is None else pm.ablated[:, :, window]
        self.pos_batch = pm.pos_batch
        self.pos_local = pm.pos_index - self.first  # metric positions within the window
        device = self.delta.device
        self.window_positions = torch.arange(self.first, self.last + 1, device=device)
        self.key_positions = torch.arange(self.last + 1, device=device)
        self.masks = [mask[window, :self.last + 1] for mask in pm.attention_masks]
        self.hidden = {lw.window: forward.hidden_keys(pm.pos_index, self.last + 1, w.causal,
                                                      lw.window)
                       if w.causal or lw.window is not None else None for lw in w.layers}
        # The clean residual stream over the window: the input of each layer's heads, its
        # value after the attention, each layer's sum of head outputs (b_O not included)
        # and the input of the logits.
        self.resid_pre: list[torch.Tensor] = []
        self.resid_mid: list[torch.Tensor] = []
        self.head_sums: list[torch.Tensor] = []
        x = self._output(0)
        for layer, lw in enumerate(w.layers):
            self.resid_pre.append(x)
            heads = slice(self.graph.sender_of_head(layer, 0),
                          self.graph.sender_of_head(layer, 0) + self.n_heads)
            head_sum = self.delta[heads].sum(0)
            if self.ablated is not None:
                head_sum = head_sum + self.ablated[heads].sum(0)
            self.head_sums.append(head_sum)
            x = x + forward.attention_out(w, lw, head_sum)
            self.resid_mid.append(x)
            if self.has_mlp:
                x = self._plus_mlp(lw, x, self._output(self.graph.sender_of_mlp(layer)))
        self.final = x[self.pos_batch, self.pos_local]  # [n_positions, d_model]
        d_model = self.delta.shape[-1]
        d_mlp = max((lw.W_in.shape[-1] for lw in w.layers if lw.W_in is not None), default=0)
        batch, width = self.delta.shape[1:3]
        per_candidate = max(batch * width * max(d_mlp, 3 * d_model),
                            len(self.pos_batch) * w.W_U.shape[-1])
        self.width = max(1, CANDIDATE_NUMBERS // per_candidate)
        if pm.groups is not None:  # each token's position group: over the window, at the
            # metric positions, and every position a key or value is read from
            self.token_groups = {"all": pm.groups[:, window], "metric": pm.metric_groups,
                                 "keys": pm.groups[:, :self.last + 1]}

    # ------------------------------------------------------------------ the interface

    def logits(self, edges: Sequence[Edge]) -> torch.Tensor:
        """The logits at the metric positions `[k, n_positions, d_vocab]` of the full model
        with `edges[i]` alone removed, for each i: residual edges into one receiver, or one
        direct edge."""
        edges = list(edges)
        if not edges:
            raise ValueError("no edges to remove")
        receiver = edges[0].receiver
        if any(e.receiver != receiver or e.kind != edges[0].kind or e.group != edges[0].group
               for e in edges):
            raise ValueError("edges removed in one pass go into one receiver (at one group)")
        if edges[0].kind == "direct":
            if len(edges) != 1:
                raise ValueError("a direct edge is removed alone")
            return self._direct(edges[0])
        if receiver.kind == "logits":
            return forward.unembed(self.w, self.final - self._removed(edges, at_metric=True))
        if receiver.kind == "mlp":
            return self._mlp_receiver(edges)
        return self._head_receiver(edges)

    # ------------------------------------------------------------------ receivers

    def _removed(self, edges: Sequence[Edge], at_metric: bool) -> torch.Tensor:
        """What each candidate's receiver input loses: [k, batch, window, d] (at the metric
        positions: [k, n_positions, d]). With post-sublayer norms a head sender's layer term
        is the norm of its head sum without it, minus the norm of the whole sum."""
        senders = [e.sender.index for e in edges if e.sender is not None]
        index = torch.tensor(senders, device=self.delta.device)
        delta = self.delta.index_select(0, index)
        if at_metric:
            delta = delta[:, self.pos_batch, self.pos_local]
        group = edges[0].group
        if group is not None:  # at the tokens of the edges' group only
            at = self._at_group(group, "metric" if at_metric else "all")
            return self._removed_blind(senders, delta, at_metric) * at
        return self._removed_blind(senders, delta, at_metric)

    def _at_group(self, group: int, where: str) -> torch.Tensor:
        """1 at the tokens of a position group, 0 elsewhere, [..., 1] over the tokens of
        `where` ("all": the window, "metric", "keys": positions 0 to the last)."""
        return (self.token_groups[where] == group).to(self.delta.dtype)[..., None]

    def _removed_blind(self, senders: list[int], delta: torch.Tensor, at_metric: bool
                       ) -> torch.Tensor:
        """What each sender's removal takes from the receiver's input at every token."""
        if not self.w.post_norm:
            return delta
        removed = delta.clone()
        for i, sender in enumerate(senders):
            s = self.graph.senders[sender]
            if s.kind != "head":
                continue
            lw = self.w.layers[s.layer]
            head_sum = self.head_sums[s.layer]
            if at_metric:
                head_sum = head_sum[self.pos_batch, self.pos_local]
            removed[i] = (forward.attention_out(self.w, lw, head_sum)
                          - forward.attention_out(self.w, lw, head_sum - delta[i]))
        return removed

    def _mlp_receiver(self, edges: Sequence[Edge]) -> torch.Tensor:
        layer = edges[0].receiver.layer
        lw = self.w.layers[layer]
        last = layer == self.n_layers - 1
        read = self.resid_pre[layer] if self.w.parallel else self.resid_mid[layer]
        mid = self.resid_mid[layer]
        if last:
            read, mid = self._at_metric(read), self._at_metric(mid)
        x = read - self._removed(edges, at_metric=last)
        after = self._plus_mlp(lw, mid, forward.mlp(self.w, lw, x))
        return forward.unembed(self.w, after) if last else self._forward_from(layer + 1, after)

    def _head_receiver(self, edges: Sequence[Edge]) -> torch.Tensor:
        r = edges[0].receiver
        assert r.head is not None  # a head input
        layer, last = r.layer, r.layer == self.n_layers - 1
        lw = self.w.layers[layer]
        inputs = (QKV_INDEX[r.qkv],) if r.qkv is not None else (0, 1, 2)
        # A last-layer query is read at the metric positions only.
        at_metric = last and inputs == (0,)
        read = self.resid_pre[layer]
        x = (self._at_metric(read) if at_metric else read) - self._removed(edges, at_metric)
        x = norm(x, lw.ln1_w, lw.ln1_b, self.w.normalization, self.w.eps)
        clean = self.qkv[layer][:, r.head]
        new = {i: forward.head_qkv(lw, x, i, r.head) for i in inputs}
        new = {i: value if i == 0 else self._keys(value, clean[i]) for i, value in new.items()}
        return self._after_head(layer, r.head, new, at_metric)

    def _direct(self, edge: Edge) -> torch.Tensor:
        r = edge.receiver
        assert r.head is not None and self.pm.ablated_qkv is not None  # a direct edge
        i = QKV_INDEX[edge.qkv]
        ablated = self.pm.ablated_qkv[r.layer][i, r.head][None]  # [1, batch, pos, d_head]
        at_metric = r.layer == self.n_layers - 1 and i == 0
        if i == 0:
            where, tokens = (("metric", (slice(None), self.pos_batch, self.pm.pos_index))
                             if at_metric else ("all", (slice(None), slice(None), self.window)))
        else:  # keys and values from the first position on
            where, tokens = "keys", (slice(None), slice(None), slice(0, self.last + 1))
        value = ablated[tokens]
        if edge.group is not None:  # ablated at the tokens of its group only
            clean = self.qkv[r.layer][i, r.head][None]
            value = torch.where(self._at_group(edge.group, where) > 0, value, clean[tokens])
        return self._after_head(r.layer, r.head, {i: value}, at_metric)

    # ------------------------------------------------------------------ a head's change

    def _after_head(self, layer: int, head: int, new: dict[int, torch.Tensor],
                    q_at_metric: bool) -> torch.Tensor:
        """The logits after head `head` of `layer` reads the new q/k/v in `new` (index ->
        a query [k, batch, window, d_head], or `[k, n_positions, d_head]` when `q_at_metric`;
        a key or value [k, batch, last + 1, d_head]), every other input its clean one."""
        w, lw = self.w, self.w.layers[layer]
        last = layer == self.n_layers - 1
        clean = self.qkv[layer][:, head]  # [3, batch, pos, d_head]
        k, v = (new[i] if i in new else clean[i][None, :, :self.last + 1] for i in (1, 2))
        q = new.get(0)
        k = forward.rotate(w, lw, k, self.key_positions)
        if last:
            if q is None:
                q = clean[0][None, self.pos_batch, self.pm.pos_index]
            elif not q_at_metric:
                q = q[:, self.pos_batch, self.pos_local]
            q = forward.rotate(w, lw, q, self.pm.pos_index)
            z = forward.attend_at(q, k, v, w.attn_scale, self.pos_batch, self.hidden[lw.window],
                                  w.attn_soft_cap)  # [k, n_positions, d_head]
        else:
            if q is None:
                q = clean[0][None, :, self.window]
            q = forward.rotate(w, lw, q, self.window_positions)
            z = forward.attend(q, k, v, w.attn_scale, self.masks[layer], w.attn_soft_cap)
        out = forward.head_output(lw, z, head)  # [k, batch, window, d] or [k, n_positions, d]
        sender = self.graph.sender_of_head(layer, head)
        pre, head_sum = self.resid_pre[layer], self.head_sums[layer]
        clean_out = self._output(sender)
        if last:
            pre, head_sum, clean_out = (self._at_metric(t) for t in (pre, head_sum, clean_out))
        if w.post_norm:
            mid = pre + forward.attention_out(w, lw, head_sum + (out - clean_out))
        else:
            mid = (self._at_metric(self.resid_mid[layer]) if last else self.resid_mid[layer]) + (
                out - clean_out)
        if self.has_mlp:
            read = pre if w.parallel else mid
            if w.parallel:  # the MLP read the block's input: its output is the clean one
                mlp_out = self._output(self.graph.sender_of_mlp(layer))
                mlp_out = self._at_metric(mlp_out) if last else mlp_out
            else:
                mlp_out = forward.mlp(w, lw, read)
            mid = self._plus_mlp(lw, mid, mlp_out)
        return forward.unembed(w, mid) if last else self._forward_from(layer + 1, mid)

    def _keys(self, value: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """A new key or value over the window [k, batch, window, d_head], preceded by the
        clean ones before it (those positions never change): [k, batch, last + 1, d_head]."""
        if self.first == 0:
            return value
        before = clean[None, :, :self.first].expand(value.shape[0], -1, -1, -1)
        return torch.cat((before, value), dim=2)

    # ------------------------------------------------------------------ the rest of the pass

    def _forward_from(self, start: int, x: torch.Tensor) -> torch.Tensor:
        """The logits at the metric positions from the residual `x` [k, batch, window, d]
        entering layer `start`: the ordinary forward pass, batched over the candidates."""
        for layer in range(start, self.n_layers):
            x = self._layer(layer, x)
        return forward.unembed(self.w, x if x.dim() == 3 else self._at_metric(x))

    def _layer(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """One layer of the ordinary forward pass over the window for k candidates
        [k, batch, window, d]; the last layer returns its output at the metric positions
        only [k, n_positions, d]."""
        w, lw = self.w, self.w.layers[layer]
        k, batch, width, _ = x.shape
        h = norm(x, lw.ln1_w, lw.ln1_b, w.normalization, w.eps)
        # [heads, k * batch, window, d_head] each
        q, keys, values = forward.qkv_wide(lw, h).flatten(2, 3)
        clean = self.qkv[layer]
        keys, values = (self._prefixed(t, clean[i], k) for i, t in ((1, keys), (2, values)))
        keys = forward.rotate(w, lw, keys, self.key_positions)
        if layer == self.n_layers - 1:
            heads = self.n_heads
            q = q.view(heads, k, batch, width, -1)[:, :, self.pos_batch, self.pos_local]
            q = forward.rotate(w, lw, q, self.pm.pos_index)
            shape = (heads, k, batch, self.last + 1, -1)
            z = forward.attend_at(q, keys.view(shape), values.view(shape), w.attn_scale,
                                  self.pos_batch, self.hidden[lw.window], w.attn_soft_cap)
            x = self._at_metric(x)  # [k, n_positions, d]
        else:
            q = forward.rotate(w, lw, q, self.window_positions)
            z = forward.attend(q, keys, values, w.attn_scale, self.masks[layer], w.attn_soft_cap)
            z = z.view(self.n_heads, k, batch, width, -1)
        out = forward.heads_sum(lw, z)  # [k, batch, window, d] or [k, n_positions, d]
        mid = forward.attention_out(w, lw, out)
        mid = mid + x if w.post_norm else mid.add_(x)  # heads + b_O is a new tensor
        if not self.has_mlp:
            return mid
        return self._plus_mlp(lw, mid, forward.mlp(w, lw, x if w.parallel else mid))

    def _prefixed(self, value: torch.Tensor, clean: torch.Tensor, k: int) -> torch.Tensor:
        """Keys or values [heads, k * batch, window, d_head] preceded by the clean run's
        before the window (`clean` [heads, batch, pos, d_head])."""
        if self.first == 0:
            return value
        heads, _, width, d_head = value.shape
        before = clean[:, None, :, :self.first].expand(heads, k, -1, -1, -1)
        return torch.cat((before.reshape(heads, -1, self.first, d_head), value), dim=2)

    # ------------------------------------------------------------------ helpers

    def _output(self, sender: int) -> torch.Tensor:
        """A sender's clean output over the window [batch, window, d] (made when needed: a copy
        of every sender's would double the recordings' memory)."""
        delta = self.delta[sender]
        return delta if self.ablated is None else delta + self.ablated[sender]

    def _plus_mlp(self, lw, x: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        """The residual after the MLP: x + its output (+ b_out)."""
        bias = forward.mlp_bias(self.w, lw)
        after = x + mlp_out
        return after if bias is None else after.add_(bias)

    def _at_metric(self, x: torch.Tensor) -> torch.Tensor:
        """[..., batch, window, d] at the metric positions: [..., n_positions, d]."""
        return x[..., self.pos_batch, self.pos_local, :]
