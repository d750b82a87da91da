"""Incremental edge tests: recompute only what removing one edge can change.

When ACDC tests edge w -> v, only v's node and the nodes reachable from it along kept edges
can change, and every one of those has already been decided (ACDC works from the output
back), so in a real run the set is small. `IncrementalPatcher` keeps the committed state of the
current circuit (every sender's output, every head's q/k/v, the input of the receiver under
test and of `logits`) and evaluates a removal by pushing the change forward through the kept
edges only:

- the receiver under test gets `input - delta_w` (no re-summing of its senders);
- a changed sender reaches exactly the receivers that keep an edge from it; their nodes
  (heads, MLPs) are recomputed in forward order, a head only for the q/k/v inputs that changed;
- positions: `logits` reads only the metric positions, so a node whose output feeds only
  `logits` and query inputs of such nodes is computed only there ("metric positions"); keys
  and values are read at every position, so their senders are computed everywhere.

Nothing is written to the committed state until `commit()`; a kept edge costs no undo.
The result is exactly the patched forward of `patching.PatchedModel` (the tests hold the two
to the same decisions and to the slow reference).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import torch

from acdc.graph import Edge, Graph
from acdc.patching import QKV_INDEX, PatchedModel, Stage, norm

INPUT_CACHE_BYTES = 256 * 2**20  # committed receiver inputs kept between tests


@dataclass
class _Tentative:
    """What a removal would change: new sender deltas and new head q/k/v, at their positions."""

    edge: Edge
    delta: dict[int, torch.Tensor] = field(default_factory=dict)  # sender -> new delta
    qkv: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # head sender -> {i: new}
    receiver_input: torch.Tensor | None = None  # new input of the receiver under test
    logits_input: torch.Tensor | None = None  # new input of logits [n_positions, d]
    changes: dict[tuple[int, bool], torch.Tensor] = field(default_factory=dict)  # new - old


class IncrementalPatcher:
    """The committed circuit state plus tentative, forward-propagated edge removals."""

    def __init__(self, patched: PatchedModel):
        self.pm = patched
        self.graph: Graph = patched.graph
        self.w = patched.w
        self.delta = patched.delta  # committed, shared with pm (pm is not run again until the end)
        self.qkv = patched.clean_qkv  # committed q/k/v [3, H, B, P, dh] per layer (taken over)
        self.pos_batch, self.pos_index = patched.pos_batch, patched.pos_index
        self.n_pos = patched.delta.shape[2]
        self.split = self.graph.granularity == "qkv"

        g = self.graph
        self.receiver_id = {r: i for i, r in enumerate(g.receivers)}
        self.logits_id = self.receiver_id[g.receivers[-1]]
        self.owner: list[int | None] = []  # sender index of the node each receiver feeds
        for r in g.receivers:
            if r.kind == "head":
                self.owner.append(g.sender_of_head(r.layer, r.head))
            elif r.kind == "mlp":
                self.owner.append(g.sender_of_mlp(r.layer))
            else:
                self.owner.append(None)
        self.kept_in: list[set[int]] = [set() for _ in g.receivers]
        self.kept_out: list[set[int]] = [set() for _ in g.senders]
        for edge in g.edges:
            if edge.kind == "residual":
                rid = self.receiver_id[edge.receiver]
                self.kept_in[rid].add(edge.sender.index)
                self.kept_out[edge.sender.index].add(rid)
        self.direct_kept = {(s.index, i): True for s in g.senders if s.kind == "head" for i in range(3)}
        self._index_cache: dict[int, torch.Tensor] = {}  # receiver -> kept senders, on device
        self.future = (torch.arange(self.n_pos, device=self.delta.device)[None, :]
                       > self.pos_index[:, None])  # keys after each metric position
        self.needs_all = [True] * len(g.senders)
        self.stage: tuple[int, int] | None = None
        # Committed input of receivers, at the positions they are read, kept up to date on
        # every commit so that a test re-sums nothing; bounded, recomputed when evicted.
        self.inputs: dict[int, torch.Tensor] = {}
        self.input_bytes = 0

    def resync(self) -> None:
        """Rebuild the committed state from the masks with one full patched pass (after
        decisions were replayed from a log without computing them)."""
        self.pm.logits_from(Stage(0))
        self.qkv = [t.clone() for t in self.pm.last_qkv]
        self._clear_inputs()
        self.stage = None

    # ------------------------------------------------------------------ bookkeeping

    def enter(self, edge: Edge) -> None:
        """Start testing a group of edges into `edge.receiver`: refresh the position needs when
        the stage changes (they are final for every node after it; cached inputs computed at
        other positions are dropped)."""
        r = edge.receiver
        stage = (r.layer, 1 if r.kind == "mlp" else 0)
        if stage != self.stage:
            self.stage = stage
            self._update_needs()
            self._clear_inputs()

    def _clear_inputs(self) -> None:
        self.inputs.clear()
        self.input_bytes = 0

    def _update_needs(self) -> None:
        """Which senders' outputs are read at every position (else only at metric positions)."""
        needs = self.needs_all
        for s in reversed(range(len(self.graph.senders))):
            needs[s] = any(self._receiver_all_positions(rid) for rid in self.kept_out[s])

    def _receiver_all_positions(self, rid: int) -> bool:
        owner = self.owner[rid]
        if owner is None:
            return False
        r = self.graph.receivers[rid]
        if r.kind == "head" and r.qkv != "q":  # keys and values (and head-granularity inputs)
            return True
        return self.needs_all[owner]

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, edge: Edge) -> tuple[torch.Tensor, _Tentative]:
        """Logits at the metric positions with `edge` removed, and the change to commit."""
        t = _Tentative(edge)
        queue: list[int] = []
        affected: dict[int, set[int]] = {}  # node -> changed input receivers
        if edge.kind == "direct":
            owner = self.graph.sender_of_head(edge.receiver.layer, edge.receiver.head)
            affected[owner] = {self.receiver_id[edge.receiver]}
            queue.append(owner)
        else:
            rid = self.receiver_id[edge.receiver]
            old = self._committed_delta(edge.sender.index, self._receiver_all_positions(rid))
            if rid == self.logits_id:
                t.logits_input = self._committed_input(rid) - old
            else:
                t.receiver_input = self._committed_input(rid) - old
                affected[self.owner[rid]] = {rid}
                queue.append(self.owner[rid])
        seen = set(queue)
        while queue:
            node = heapq.heappop(queue)
            self._recompute(node, affected[node], t)
            for rid in self.kept_out[node]:
                owner = self.owner[rid]
                if owner is None:
                    continue
                affected.setdefault(owner, set()).add(rid)
                if owner not in seen:
                    seen.add(owner)
                    heapq.heappush(queue, owner)
        if t.logits_input is None:
            t.logits_input = self._input(self.logits_id, False, t)
        return self._logits(t.logits_input), t

    def _recompute(self, node: int, changed_inputs: set[int], t: _Tentative) -> None:
        sender = self.graph.senders[node]
        all_positions = self.needs_all[node]
        if sender.kind == "mlp":
            (rid,) = changed_inputs
            x = self._input_for(rid, all_positions, t)
            out = self._mlp(sender.layer, x)
        else:
            out = self._head(node, sender.layer, sender.head, changed_inputs, all_positions, t)
        ablated = self.pm.ablated
        if ablated is not None:
            out = out - (ablated[node] if all_positions else ablated[node][self.pos_batch, self.pos_index])
        t.delta[node] = out

    def _input_for(self, rid: int, all_positions: bool, t: _Tentative) -> torch.Tensor:
        if t.edge.kind == "residual" and rid == self.receiver_id[t.edge.receiver]:
            return t.receiver_input
        return self._input(rid, all_positions, t)

    def _head(self, node: int, layer: int, head: int, changed_inputs: set[int], all_positions: bool,
              t: _Tentative) -> torch.Tensor:
        lw = self.w.layers[layer]
        committed = self.qkv[layer][:, head]  # [3, B, P, dh]
        new: dict[int, torch.Tensor] = {}
        direct_removed = t.edge.kind == "direct" and node == self.owner[self.receiver_id[t.edge.receiver]]
        for rid in changed_inputs:
            r = self.graph.receivers[rid]
            inputs = (QKV_INDEX[r.qkv],) if self.split else (0, 1, 2)
            if direct_removed:  # the tested direct edge: its q/k/v becomes the ablated one
                i = QKV_INDEX[t.edge.qkv]
                new[i] = self.pm.ablated_qkv[layer][i, head]
                continue
            if not all(self.direct_kept[(node, i)] for i in inputs):
                continue  # a removed direct edge: this input is not read
            x = self._input_for(rid, all_positions or inputs != (0,), t)
            x = norm(x, lw.ln1_w, lw.ln1_b, self.w.normalization, self.w.eps)
            for i, (W, b) in zip(inputs, self._projections(lw, inputs)):
                value = x @ W[head] + b[head]
                if i == 0 and not all_positions and value.dim() == 3:
                    value = value[self.pos_batch, self.pos_index]
                new[i] = value
        t.qkv[node] = new
        q = new.get(0)
        if q is None:
            q = committed[0] if all_positions else committed[0][self.pos_batch, self.pos_index]
        elif not all_positions and q.dim() == 3:
            q = q[self.pos_batch, self.pos_index]
        k = new.get(1, committed[1])
        v = new.get(2, committed[2])
        return self._attend(q, k, v, all_positions) @ lw.W_O[head]

    @staticmethod
    def _projections(lw, inputs: tuple[int, ...]):
        table = ((lw.W_Q, lw.b_Q), (lw.W_K, lw.b_K), (lw.W_V, lw.b_V))
        return [table[i] for i in inputs]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, all_positions: bool) -> torch.Tensor:
        scale = self.w.attn_scale
        if all_positions:  # q, k, v: [B, P, dh]
            scores = q @ k.transpose(-1, -2) / scale + self.pm.causal_mask
            return torch.softmax(scores, dim=-1) @ v
        keys = k[self.pos_batch]  # [K, P, dh]
        scores = (keys @ q[:, :, None])[..., 0] / scale  # [K, P]
        scores = scores.masked_fill(self.future, float("-inf"))
        return (torch.softmax(scores, dim=-1)[:, None, :] @ v[self.pos_batch])[:, 0]

    def _mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        lw = self.w.layers[layer]
        x = norm(x, lw.ln2_w, lw.ln2_b, self.w.normalization, self.w.eps)
        if lw.W_gate is not None:
            hidden = self.w.act(x @ lw.W_gate) * (x @ lw.W_in) + lw.b_in
        else:
            hidden = self.w.act(x @ lw.W_in + lw.b_in)
        return hidden @ lw.W_out

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = norm(x, self.w.ln_final_w, self.w.ln_final_b, self.w.normalization, self.w.eps)
        return x @ self.w.W_U + self.w.b_U

    # ------------------------------------------------------------------ inputs and deltas

    def _committed_delta(self, sender: int, all_positions: bool) -> torch.Tensor:
        if all_positions:
            return self.delta[sender]
        return self.delta[sender][self.pos_batch, self.pos_index]

    def _at_metric(self, value: torch.Tensor, sender: int) -> torch.Tensor:
        return value[self.pos_batch, self.pos_index] if self.needs_all[sender] else value

    def _base(self, rid: int, all_positions: bool) -> torch.Tensor:
        r = self.graph.receivers[rid]
        if r.kind == "logits":
            return self.pm.base_logits
        base = self.pm.base_heads[r.layer] if r.kind == "head" else self.pm.base_mlp[r.layer]
        if all_positions:
            return base
        return base[self.pos_batch, self.pos_index] if base.dim() == 3 else base.expand(len(self.pos_batch), -1)

    def _kept_index(self, rid: int) -> torch.Tensor | None:
        """The kept senders of a receiver as a device tensor, cached until an edge goes."""
        if rid not in self._index_cache:
            kept = sorted(self.kept_in[rid])
            self._index_cache[rid] = torch.tensor(kept, device=self.delta.device) if kept else None
        return self._index_cache[rid]

    def _committed_input(self, rid: int) -> torch.Tensor:
        """A receiver's input in the committed circuit: base + its kept senders' deltas."""
        x = self.inputs.get(rid)
        if x is not None:
            return x
        all_positions = self._receiver_all_positions(rid)
        x = self._base(rid, all_positions)
        index = self._kept_index(rid)
        if index is not None:
            if all_positions:
                x = x + self.delta.index_select(0, index).sum(0)
            else:
                x = x + self.delta[index[:, None], self.pos_batch[None], self.pos_index[None]].sum(0)
        size = x.numel() * x.element_size()
        if self.input_bytes + size <= INPUT_CACHE_BYTES:
            self.inputs[rid] = x
            self.input_bytes += size
        return x

    def _input(self, rid: int, all_positions: bool, t: _Tentative | None) -> torch.Tensor:
        """A receiver's input with the tentative change of the senders that changed."""
        x = self._committed_input(rid)
        if t is not None:
            changed = self.kept_in[rid] & t.delta.keys()
            if changed:
                x = x.clone()  # the cached input stays as it is; sum into a fresh copy in place
                for s in changed:
                    x.add_(self._change(t, s, all_positions))
        return x

    def _change(self, t: _Tentative, sender: int, all_positions: bool) -> torch.Tensor:
        """A changed sender's new - committed delta, at the positions a receiver reads (once
        per sender and positions: many receivers read the same change)."""
        key = (sender, all_positions)
        if key not in t.changes:
            new = t.delta[sender] if all_positions else self._at_metric(t.delta[sender], sender)
            t.changes[key] = new - self._committed_delta(sender, all_positions)
        return t.changes[key]

    # ------------------------------------------------------------------ committing

    def commit(self, t: _Tentative) -> None:
        """Make a tested removal's activations permanent (`remove` does the bookkeeping)."""
        for s in t.delta:  # cached inputs first: they need the old deltas
            for rid in self.kept_out[s]:
                if rid in self.inputs:
                    self.inputs[rid] = self.inputs[rid] + self._change(t, s, self._receiver_all_positions(rid))
        for s, value in t.delta.items():
            if self.needs_all[s]:
                self.delta[s] = value
            else:
                self.delta[s][self.pos_batch, self.pos_index] = value
        for s, new in t.qkv.items():
            sender = self.graph.senders[s]
            for i, value in new.items():
                target = self.qkv[sender.layer][i, sender.head]
                if value.dim() == 2:
                    target[self.pos_batch, self.pos_index] = value
                else:
                    target.copy_(value)

    def remove(self, edge: Edge) -> None:
        """Drop an edge from the bookkeeping (and the masks) without any computation."""
        self.pm.set_edge(edge, False)
        if edge.kind == "direct":
            owner = self.graph.sender_of_head(edge.receiver.layer, edge.receiver.head)
            self.direct_kept[(owner, QKV_INDEX[edge.qkv])] = False
        else:
            rid = self.receiver_id[edge.receiver]
            if rid in self.inputs:
                self.inputs[rid] = self.inputs[rid] - self._committed_delta(
                    edge.sender.index, self._receiver_all_positions(rid))
            self.kept_in[rid].discard(edge.sender.index)
            self.kept_out[edge.sender.index].discard(rid)
            self._index_cache.pop(rid, None)
