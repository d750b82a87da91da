"""Incremental edge tests: recompute only what removing edges can change.

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
  and values are read at every position, so their senders are computed everywhere;
- the unembedding: a head's output is `z @ W_O`, so when only heads change, the logits'
  change has rank d_head per head. The committed logits are kept before normalisation's
  scale (`P = (centred(x) * w) @ W_U`, w the final norm's weight), and a test adds
  `dz @ ((centred(W_O) * w) @ W_U)` to them: a d_head-wide product instead of a
  d_model-wide one (on GPT-2 small 12x less work for the largest product of a test).

One evaluation can hold k *candidates*: removals of several edges into the same receiver
(`candidates.py` says which). Every tentative tensor then has a leading dimension k; the
committed state has none, and broadcasting does the rest.

Positional graphs (`acdc.core.graph`): a receiver reads a sender at the tokens of the groups
where their edge is kept. The engine keeps, per receiver and sender, the set of kept groups
(all of them: the blind sum; none: the sender is not read) and turns a partial set into a 0/1
weight over the tokens it computes (`_weight`); a tested edge at group g subtracts its sender's
delta at the tokens of g only, and a direct edge at g swaps the head's q/k/v for the ablated
one at those tokens only (where a direct edge is gone at some groups, the head reads the
ablated q/k/v there). Changes then propagate as in the blind graph, each receiver weighting
a changed sender by its kept groups.

Nothing is written to the committed state until `commit()`; a kept edge costs no undo.
The result is exactly the patched forward of `patching.PatchedModel` (the tests hold the two
to the same decisions and to the slow reference); both compute with `acdc.core.forward`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import torch

from acdc.core import forward
from acdc.core.forward import Unembedding, norm
from acdc.core.graph import Edge, Graph
from acdc.core.patching import QKV_INDEX, PatchedModel, Stage, every_layer
from acdc.core.removals import changing_positions
from acdc.methods.acdc.memory import (
    FACTOR_CACHE_BYTES,
    INPUT_CACHE_BYTES,
    LAYER_TERM_CACHE_BYTES,
    TERM_CHANGE_BYTES,
)

LOW_RANK_MIN_WORK = 2**24  # below this many multiply-adds the plain unembedding is as cheap
REFRESH_EVERY = 32  # low-rank updates of the committed logits before they are recomputed
STACKED_SUM_MIN = 3  # changed senders of one receiver from which they are summed as a product
STACKED_SUM_SPAN = 2  # ... while their rows of the stack span at most this many rows per sender
THIN_PRODUCT_COST = 2  # a d_head-wide product's cost per multiply-add, against the plain one's


@dataclass
class _Tentative:
    """What a set of candidate removals would change, each tensor with a leading candidate
    dimension: new sender deltas and head q/k/v at the positions they are read."""

    edges: list[Edge]  # the window: edges into one receiver
    coefficients: torch.Tensor  # [k, window]: 1 where a candidate removes the edge
    delta: dict[int, torch.Tensor] = field(default_factory=dict)  # sender -> new delta
    qkv: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # head sender -> {i: new}
    z: dict[int, torch.Tensor] = field(default_factory=dict)  # head sender -> new z [k, n, d_head]
    receiver_input: torch.Tensor | None = None  # new input of the receiver under test
    logits_input: torch.Tensor | None = None  # new input of logits [k, n_positions, d]
    projected: torch.Tensor | None = None  # new logits before the scale [k, n_positions, d_vocab]
    low_rank: bool = False  # `projected` was updated from the committed one, not computed afresh
    changes: dict[tuple[int, bool], torch.Tensor] = field(default_factory=dict)  # new - old
    # The changes, per kind of positions (every position: True), as rows of one tensor
    # [k, rows, elements] (`_stacked_sum`), their rows by sender, and how many senders can change.
    stacks: dict[bool, torch.Tensor] = field(default_factory=dict)
    rows: dict[tuple[int, bool], int] = field(default_factory=dict)
    used: dict[bool, int] = field(default_factory=dict)
    reach: int = 0
    # post-sublayer norms: per `_layer_key`, a layer term's tentative change (`_term_change`)
    term_changes: dict[tuple, torch.Tensor] = field(default_factory=dict)
    term_change_bytes: int = 0
    generation: int = 0  # the evaluation that made it (the stacks are reused by the next one)

    @property
    def width(self) -> int:
        return self.coefficients.shape[0]


def _sender_index(edge: Edge) -> int:
    """The sender of a residual edge (the edges tested together are residual ones)."""
    assert edge.sender is not None
    return edge.sender.index


class IncrementalPatcher:
    """The committed circuit state plus tentative, forward-propagated edge removals."""

    def __init__(self, patched: PatchedModel):
        self.pm = patched
        self.graph: Graph = patched.graph
        self.w = patched.w
        self.first, self.last = changing_positions(patched.delta, patched.pos_index, self.w.causal)
        self.window = slice(self.first, self.last + 1)
        # Committed sender deltas over the window (a view: shared with pm, which is not run
        # again until the end); "every position" below means every position of the window.
        self.delta = patched.delta[:, :, self.window]
        self.dtype, self.device = self.delta.dtype, self.delta.device
        self.ablated = None if patched.ablated is None else patched.ablated[:, :, self.window]
        self.qkv = patched.take_clean_qkv()  # committed q/k/v [3, H, B, P, dh] per layer
        self.z = [z.clone() for z in patched.clean_z]  # committed z at metric positions per layer
        self.pos_batch = patched.pos_batch
        self.pos_index = patched.pos_index - self.first  # metric positions within the window
        self.grid_index = patched.pos_index  # ... and in the whole sequence
        self.split = self.graph.granularity == "qkv"

        g = self.graph
        self.receiver_id = {r: i for i, r in enumerate(g.receivers)}
        self.logits_id = self.receiver_id[g.receivers[-1]]
        self.owner: list[int | None] = []  # sender index of the node each receiver feeds
        for r in g.receivers:
            if r.kind == "head":
                assert r.head is not None  # a head input
                self.owner.append(g.sender_of_head(r.layer, r.head))
            elif r.kind == "mlp":
                self.owner.append(g.sender_of_mlp(r.layer))
            else:
                self.owner.append(None)
        self.kept_in: list[set[int]] = [set() for _ in g.receivers]
        self.kept_out: list[set[int]] = [set() for _ in g.senders]
        for edge in g.edges:
            if edge.kind == "residual":
                assert edge.sender is not None  # a residual edge has one
                rid = self.receiver_id[edge.receiver]
                self.kept_in[rid].add(edge.sender.index)
                self.kept_out[edge.sender.index].add(rid)
        # Positional graphs: the groups (a bit each) of every kept residual (receiver, sender)
        # pair (absent: every group) and of every head's direct q/k/v edges; 0/1 weights over
        # the tokens computed, per set of groups and kind of tokens (`_group_weight`).
        self.positional = g.positional
        self.all_groups = (1 << g.n_groups) - 1
        self.kept_groups: dict[tuple[int, int], int] = {}
        self.direct_kept = {(s.index, i): self.all_groups for s in g.senders
                            if s.kind == "head" for i in range(3)}
        self._group_weights: dict[tuple[int, str], torch.Tensor] = {}
        self._kept_weights: dict[tuple[int, bool], torch.Tensor | None] = {}
        if self.positional:
            assert patched.groups is not None  # a positional model has them
            self.token_groups = {"all": patched.groups[:, self.window],
                                 "metric": patched.metric_groups,
                                 "keys": patched.groups[:, :self.last + 1]}
        # receiver -> kept senders, on device (None: it keeps none)
        self._index_cache: dict[int, torch.Tensor | None] = {}
        # keys each metric position does not read, per local window (None: every key)
        self.hidden: dict[int | None, torch.Tensor | None] = {}
        for lw in self.w.layers:
            if lw.window not in self.hidden:
                self.hidden[lw.window] = (
                    forward.hidden_keys(self.grid_index, self.last + 1, self.w.causal,
                                        lw.window)
                    if self.w.causal or lw.window is not None else None)
        self.window_positions = torch.arange(self.first, self.last + 1, device=self.device)
        self.key_positions = torch.arange(self.last + 1, device=self.device)
        self.needs_all = [True] * len(g.senders)
        # The changes' stacks, kept from one evaluation to the next: a fresh allocation of this
        # size would take fresh pages from the system, written for the first time, every test.
        self.stacks: dict[bool, torch.Tensor] = {}
        self.generation = 0
        self.stage: tuple[int, int] | None = None
        # Committed input of receivers, at the positions they are read, kept up to date on
        # every commit so that a test re-sums nothing; bounded, recomputed when evicted.
        self.inputs: dict[int, torch.Tensor] = {}
        self.input_bytes = 0
        # Post-sublayer norms: per `_layer_key` (layer, positions, heads kept) the committed sum
        # of the layer's heads a receiver reads and its normalised term (`_layer_term`), least
        # recently used first; bounded apart.
        self.layer_terms: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.layer_term_bytes = 0
        # The low-rank unembedding pays off when the plain one is a large product; half
        # precision would accumulate rounding in P over many commits, so it is float32+ only.
        self.unembedding = Unembedding(self.w)
        d_model, d_vocab = self.w.W_U.shape
        # With post-sublayer norms (Gemma 2) a head reaches a receiver through its layer's norm
        # of the summed heads (`_post_norm_input`): a committed input is summed again rather
        # than updated by differences, and the logits are not linear in a head's z.
        self.post_norm = self.w.post_norm
        # each layer's ablated head sum over the window and at the metric positions
        self.ablated_head_sums = [(heads[:, self.window], heads[:, self.window][
            self.pos_batch, self.pos_index]) for heads in patched.ablated_head_sums or ()]
        self.low_rank = (len(self.pos_batch) * d_model * d_vocab >= LOW_RANK_MIN_WORK
                         and self.delta.dtype in (torch.float32, torch.float64)
                         and not self.post_norm)
        self.projected: torch.Tensor | None = None  # committed P [n_positions, d_vocab]
        self.updates = 0  # low-rank commits since P was computed from scratch
        self.factors: dict[int, torch.Tensor] = {}  # head sender -> factor, heads feeding logits
        self.factor_bytes = 0

    def resync(self) -> None:
        """Rebuild the committed state from the masks with one full patched pass (after
        decisions were replayed from a log without computing them)."""
        self.pm.logits_from(Stage(0))
        self.qkv = every_layer(self.pm.take_last_qkv())
        self.z = [z.clone() for z in every_layer(self.pm.last_z)]
        self._clear_inputs()
        self.stage = None

    def release(self) -> None:
        """Drop every cache and the committed q/k/v and logits once the search is over (the
        patched model's masks and deltas stay: they are the circuit)."""
        self._clear_inputs()
        self.factors.clear()
        self.factor_bytes = 0
        self.stacks.clear()
        self.qkv, self.z, self.projected = [], [], None
        self.pm.take_last_qkv()

    def rounding_noise(self, metric_circuit: float, tracked: float) -> float:
        """The final circuit's metric from a fresh patched pass against the one tracked by
        incremental updates (other arithmetic, same circuit): about 1e-7 in float32."""
        return abs(metric_circuit - tracked)

    # ------------------------------------------------------------------ bookkeeping

    def enter(self, edge: Edge) -> None:
        """Start testing a group of edges into `edge.receiver`: refresh the position needs when
        the stage changes (they are final for every node after it; cached inputs computed at
        other positions are dropped) and recompute the committed logits from scratch (rounding
        from low-rank updates outlives neither a stage nor REFRESH_EVERY commits)."""
        r = edge.receiver
        stage = (r.layer, 1 if r.kind == "mlp" else 0)
        if stage != self.stage:
            self.stage = stage
            self._update_needs()
            self._clear_inputs()
            if self.low_rank:
                self.projected = self.unembedding.project(self._committed_input(self.logits_id))
                self.updates = 0

    def _clear_inputs(self) -> None:
        self.inputs.clear()
        self.input_bytes = 0
        self.layer_terms.clear()
        self.layer_term_bytes = 0
        self._kept_weights.clear()  # a layer's receivers' at a time (positional graphs)

    def _forget_input(self, rid: int) -> None:
        x = self.inputs.pop(rid)
        self.input_bytes -= x.numel() * x.element_size()

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

    def evaluate(self, edges: list[Edge], coefficients: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, _Tentative]:
        """Logits at the metric positions `[k, n_positions, d_vocab]` of k candidate circuits,
        and the changes to commit. Candidate i removes `edges[j]` where `coefficients[i, j]`
        is 1 (default: one candidate removing every edge given). The edges go into one
        receiver; a direct edge is tested alone."""
        if coefficients is None:
            coefficients = torch.ones(1, len(edges), dtype=self.delta.dtype,
                                      device=self.delta.device)
        self.generation += 1
        t = _Tentative(edges, coefficients, generation=self.generation)
        edge = edges[0]
        queue: list[int] = []
        affected: dict[int, set[int]] = {}  # node -> changed input receivers
        owner: int | None
        if edge.kind == "direct":
            assert edge.receiver.head is not None  # a direct edge goes into a head
            owner = self.graph.sender_of_head(edge.receiver.layer, edge.receiver.head)
            affected[owner] = {self.receiver_id[edge.receiver]}
            queue.append(owner)
        else:
            rid = self.receiver_id[edge.receiver]
            all_positions = self._receiver_all_positions(rid)
            if self.post_norm:
                dropped = dict(zip((_sender_index(e) for e in edges), coefficients.T,
                                   strict=False))
                new_input = self._post_norm_input(rid, all_positions, None, dropped,
                                                  edges[0].group)
            else:
                new_input = (self._committed_input(rid)
                             - self._removed(edges, coefficients, all_positions))
            if rid == self.logits_id:
                t.logits_input = new_input
            else:
                t.receiver_input = new_input
                owner = self.owner[rid]
                assert owner is not None  # every receiver but logits feeds a node
                affected[owner] = {rid}
                queue.append(owner)
        seen = set(queue)
        t.reach = self._reach(queue)
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
            x = self._input(self.logits_id, False, t)
            # a 2-d x: nothing reached it
            t.logits_input = x if x.dim() == 3 else x.expand(t.width, *x.shape)
        return self._logits(t), t

    def _reach(self, start: list[int]) -> int:
        """How many nodes a change of `start` can reach along kept edges (itself included)."""
        seen, todo = set(start), list(start)
        while todo:
            for rid in self.kept_out[todo.pop()]:
                owner = self.owner[rid]
                if owner is not None and owner not in seen:
                    seen.add(owner)
                    todo.append(owner)
        return len(seen)

    def _removed(self, edges: list[Edge], coefficients: torch.Tensor, all_positions: bool
                 ) -> torch.Tensor:
        """What each candidate subtracts from the receiver's input: [k, ...] ."""
        senders = [_sender_index(e) for e in edges[:coefficients.shape[1]]]
        index = torch.tensor(senders, device=self.delta.device)
        if all_positions:
            deltas = self.delta.index_select(0, index)
        else:
            deltas = self.delta[index[:, None], self.pos_batch[None], self.pos_index[None]]
        flat = coefficients @ deltas.reshape(len(index), -1)
        removed = flat.view(coefficients.shape[0], *deltas.shape[1:])
        group = edges[0].group
        if group is not None:  # at the tokens of the edges' group only
            removed = removed * self._group_weight(1 << group, "all" if all_positions
                                                   else "metric")
        return removed

    def _recompute(self, node: int, changed_inputs: set[int], t: _Tentative) -> None:
        sender = self.graph.senders[node]
        all_positions = self.needs_all[node]
        if sender.kind == "mlp":
            (rid,) = changed_inputs
            x = self._input_for(rid, all_positions, t)
            out = forward.mlp(self.w, self.w.layers[sender.layer], x)
        else:
            assert sender.head is not None  # a head
            out = self._head(node, sender.layer, sender.head, changed_inputs, all_positions, t)
        if self.ablated is not None:
            ablated = self.ablated[node]
            out = out.sub_(ablated if all_positions  # out: a fresh [k, ...] tensor
                           else ablated[self.pos_batch, self.pos_index])
        t.delta[node] = out

    def _input_for(self, rid: int, all_positions: bool, t: _Tentative) -> torch.Tensor:
        if t.receiver_input is not None and rid == self.receiver_id[t.edges[0].receiver]:
            return t.receiver_input
        return self._input(rid, all_positions, t)

    def _head(self, node: int, layer: int, head: int, changed_inputs: set[int], all_positions: bool,
              t: _Tentative) -> torch.Tensor:
        lw = self.w.layers[layer]
        committed = self.qkv[layer][:, head]  # [3, B, P, dh]
        new: dict[int, torch.Tensor] = {}
        edge = t.edges[0]
        direct_removed = (edge.kind == "direct"
                          and node == self.owner[self.receiver_id[edge.receiver]])
        for rid in changed_inputs:
            r = self.graph.receivers[rid]
            inputs = (QKV_INDEX[r.qkv],) if self.split else (0, 1, 2)
            if direct_removed:  # the tested direct edge: its q/k/v becomes the ablated one
                assert self.pm.ablated_qkv is not None  # set up with the patched model
                i = QKV_INDEX[edge.qkv]
                ablated = self.pm.ablated_qkv[layer][i, head][None]
                span = self.window if i == 0 else slice(0, self.last + 1)
                new[i] = ablated[..., span, :]
                if edge.group is not None:  # ... at the tokens of its group only
                    weight = self._group_weight(1 << edge.group, "all" if i == 0 else "keys")
                    new[i] = torch.where(weight > 0, new[i], committed[i][None, :, span])
                continue
            if not all(self.direct_kept[(node, i)] for i in inputs):
                continue  # a removed direct edge: this input is not read
            everywhere = all_positions or inputs != (0,)
            x = self._input_for(rid, everywhere, t)
            for i, value in zip(inputs, forward.normed_head_qkv(self.w, lw, x, inputs, head),
                                strict=True):
                if i == 0 and everywhere and not all_positions:
                    value = value[..., self.pos_batch, self.pos_index, :]
                elif i > 0:  # keys and values are read from the first position on
                    value = self._from_start(value, committed[i])
                kept = self.direct_kept[(node, i)]
                if kept != self.all_groups:  # the ablated q/k/v where the direct edge is gone
                    value = self._direct_ablated(layer, head, i, kept, value,
                                                 i == 0 and not all_positions)
                new[i] = value
        t.qkv[node] = new
        q = new.get(0)
        if q is None:
            q = committed[0]
            q = q[:, self.window] if all_positions else q[self.pos_batch, self.grid_index]
        elif not all_positions and q.dim() == 4:  # the ablated q, at every position
            q = q[..., self.pos_batch, self.pos_index, :]
        k = new.get(1, committed[1][:, :self.last + 1])
        v = new.get(2, committed[2][:, :self.last + 1])
        z = self._attend(layer, q, k, v, all_positions)
        if not new:  # every changed input is one whose direct edge is gone: nothing changes
            z = z.expand(t.width, *z.shape)
        t.z[node] = z[..., self.pos_batch, self.pos_index, :] if all_positions else z
        return forward.head_output(lw, z, head)

    def _direct_ablated(self, layer: int, head: int, i: int, kept: int, value: torch.Tensor,
                        at_metric: bool) -> torch.Tensor:
        """A head's new q (i = 0, over the window or `at_metric`), k or v (from the first
        position) with the ablated one at the tokens of the groups where its direct edge is
        gone (`kept`: the groups where it is kept)."""
        assert self.pm.ablated_qkv is not None  # set up with the patched model
        ablated = self.pm.ablated_qkv[layer][i, head]
        if i > 0:
            where, ablated = "keys", ablated[:, :self.last + 1]
        elif at_metric:
            where, ablated = "metric", ablated[self.pos_batch, self.grid_index]
        else:
            where, ablated = "all", ablated[:, self.window]
        return torch.where(self._group_weight(kept, where) > 0, value, ablated)

    def _from_start(self, value: torch.Tensor, committed: torch.Tensor) -> torch.Tensor:
        """A key or value over the window, preceded by its committed (never changing) values."""
        if self.first == 0:
            return value
        before = committed[:, :self.first].expand(*value.shape[:-3], -1, -1, -1)
        return torch.cat((before, value), dim=-2)

    def _attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                all_positions: bool) -> torch.Tensor:
        """z over the window (all_positions) or at the metric positions only."""
        w, lw = self.w, self.w.layers[layer]
        k = forward.rotate(w, lw, k, self.key_positions)
        if all_positions:  # q [..., B, window, dh]; k, v [..., B, keys up to the window's end, dh]
            q = forward.rotate(w, lw, q, self.window_positions)
            mask = self.pm.attention_masks[layer][self.window, :self.last + 1]
            return forward.attend(q, k, v, w.attn_scale, mask, w.attn_soft_cap)
        q = forward.rotate(w, lw, q, self.grid_index)
        return forward.attend_at(q, k, v, w.attn_scale, self.pos_batch, self.hidden[lw.window],
                                 w.attn_soft_cap)

    # ------------------------------------------------------------------ the unembedding

    def _logits(self, t: _Tentative) -> torch.Tensor:
        assert t.logits_input is not None  # set by `evaluate`
        centred = self.unembedding.centred(t.logits_input)
        terms = self._low_rank_terms(t) if self.low_rank else None
        if terms is None:
            t.projected = self.unembedding.project_centred(centred)
        else:
            assert self.projected is not None  # else there would be no terms
            projected = self.projected.expand(t.width, *self.projected.shape)
            for i, (dz, factor) in enumerate(terms):
                factor = factor.expand(t.width, *factor.shape)
                if i == 0:
                    projected = torch.baddbmm(projected, dz, factor)
                else:
                    projected.baddbmm_(dz, factor)
            t.projected, t.low_rank = projected, True
        return self.unembedding.logits(t.projected, centred)

    def _low_rank_terms(self, t: _Tentative) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The logits input's change as (dz [k, n, d_head], factor) terms, one per changed
        head; None when a non-head sender changed or when the plain product is cheaper.

        Costs, in multiply-adds per vocabulary entry: plain rows x d_model; low-rank rows x
        d_head per head, plus d_model x d_head for a factor used once (a head under test for
        its edge to the logits, or one the cache has no room for), both times
        THIN_PRODUCT_COST (measured on GPT-2 at 100 positions, these thin products run at about
        half the plain one's speed). A factor cached for later tests is not charged: heads
        that keep an edge to the logits change again and again."""
        if self.projected is None:  # no stage entered yet
            return None
        edge = t.edges[0]
        senders = self.graph.senders
        under_test = edge.kind == "residual" and edge.receiver.kind == "logits"
        if under_test:  # removing edges into logits
            window = [_sender_index(e) for e in t.edges[:t.coefficients.shape[1]]]
            if any(senders[s].kind != "head" for s in window):
                return None
            changes = [(s, -t.coefficients[:, j, None, None] * self._committed_dz(s))
                       for j, s in enumerate(window)]
            if edge.group is not None:
                weight = self._group_weight(1 << edge.group, "metric")
                changes = [(s, change * weight) for s, change in changes]
        else:
            changed = self.kept_in[self.logits_id] & t.delta.keys()
            if any(senders[s].kind != "head" for s in changed):
                return None
            changes = [(s, self._weighted(t.z[s] - self._committed_z(s), self.logits_id, s,
                                          False)) for s in sorted(changed)]
        d_model, d_vocab = self.w.W_U.shape
        rows = t.width * len(self.pos_batch)
        d_head = self.w.layers[0].W_O.shape[1]
        factor_bytes = d_head * d_vocab * self.w.W_U.element_size()
        room = (FACTOR_CACHE_BYTES - self.factor_bytes) // factor_bytes
        single_use = 0
        for s, _ in changes:
            if s not in self.factors:
                if under_test or room <= 0:
                    single_use += 1
                room -= 1
        work = THIN_PRODUCT_COST * (single_use * d_model + len(changes) * rows) * d_head
        if work >= rows * d_model:
            return None
        return [(dz, self._factor(s, cache=not under_test)) for s, dz in changes]

    def _committed_z(self, sender: int) -> torch.Tensor:
        s = self.graph.senders[sender]
        return self.z[s.layer][s.head]

    def _committed_dz(self, sender: int) -> torch.Tensor:
        """z - ablated z: a head sender's delta at the metric positions is this @ W_O."""
        s = self.graph.senders[sender]
        return self.z[s.layer][s.head] - self.pm.ablated_z[s.layer][s.head]

    def _factor(self, sender: int, cache: bool) -> torch.Tensor:
        """A head's factor, cached (if asked and there is room) while the head keeps an edge
        to the logits."""
        factor = self.factors.get(sender)
        if factor is None:
            s = self.graph.senders[sender]
            factor = self.unembedding.factor(self.w.layers[s.layer].W_O[s.head])
            size = factor.numel() * factor.element_size()
            keeps_edge = sender in self.kept_in[self.logits_id]
            if cache and keeps_edge and self.factor_bytes + size <= FACTOR_CACHE_BYTES:
                self.factors[sender] = factor
                self.factor_bytes += size
        return factor

    # ------------------------------------------------------------------ inputs and deltas

    def _committed_delta(self, sender: int, all_positions: bool) -> torch.Tensor:
        if all_positions:
            return self.delta[sender]
        return self.delta[sender][self.pos_batch, self.pos_index]

    def _group_weight(self, groups: int, where: str) -> torch.Tensor:
        """1 at the tokens of `groups` (a bit per group), 0 elsewhere (padding included):
        [batch, window, 1] (`where` "all"), [n_positions, 1] ("metric") or
        [batch, last + 1, 1] ("keys": every position a key is read from)."""
        key = (groups, where)
        weight = self._group_weights.get(key)
        if weight is None:
            members = [g for g in range(self.graph.n_groups) if groups >> g & 1]
            tokens = self.token_groups[where]
            wanted = torch.tensor(members, dtype=tokens.dtype, device=tokens.device)
            weight = torch.isin(tokens, wanted).to(self.dtype)[..., None]
            self._group_weights[key] = weight
        return weight

    def _weight(self, rid: int, sender: int, all_positions: bool) -> torch.Tensor | None:
        """Where receiver `rid` reads `sender` (`_group_weight`); None: at every token."""
        kept = self.kept_groups.get((rid, sender), self.all_groups)
        if kept == self.all_groups:
            return None
        return self._group_weight(kept, "all" if all_positions else "metric")

    def _weighted(self, value: torch.Tensor, rid: int, sender: int, all_positions: bool
                  ) -> torch.Tensor:
        """A sender's delta (or change) as receiver `rid` reads it."""
        weight = self._weight(rid, sender, all_positions) if self.positional else None
        return value if weight is None else value * weight

    def _senders_weights(self, rid: int, all_positions: bool) -> torch.Tensor | None:
        """The weights of a receiver's kept senders (`_kept_index` order), stacked
        [senders, ..., 1]; None when it reads each of them at every token."""
        if not self.positional:
            return None
        key = (rid, all_positions)
        if key not in self._kept_weights:
            senders = sorted(self.kept_in[rid])
            weights = [self._weight(rid, s, all_positions) for s in senders]
            if all(w is None for w in weights):
                self._kept_weights[key] = None
            else:
                where = "all" if all_positions else "metric"
                ones = torch.ones_like(self._group_weight(self.all_groups, where))
                self._kept_weights[key] = torch.stack([ones if w is None else w
                                                       for w in weights])
        return self._kept_weights[key]

    def _at_metric(self, value: torch.Tensor, sender: int) -> torch.Tensor:
        return value[..., self.pos_batch, self.pos_index, :] if self.needs_all[sender] else value

    def _base(self, rid: int, all_positions: bool) -> torch.Tensor:
        r = self.graph.receivers[rid]
        if r.kind == "logits":
            return self.pm.base_logits
        base = self.pm.base_heads[r.layer] if r.kind == "head" else self.pm.base_mlp[r.layer]
        return base[:, self.window] if all_positions else base[self.pos_batch, self.grid_index]

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
        if self.post_norm:
            x = self._post_norm_sum(rid, all_positions)
        elif index is not None:
            if all_positions:
                deltas = self.delta.index_select(0, index)
            else:
                deltas = self.delta[index[:, None], self.pos_batch[None], self.pos_index[None]]
            weights = self._senders_weights(rid, all_positions)
            x = x + (deltas if weights is None else deltas * weights).sum(0)
        size = x.numel() * x.element_size()
        if self.input_bytes + size <= INPUT_CACHE_BYTES:
            self.inputs[rid] = x
            self.input_bytes += size
        return x

    def _input(self, rid: int, all_positions: bool, t: _Tentative | None) -> torch.Tensor:
        """A receiver's input with the tentative change of the senders that changed
        ([k, ...] then; the committed input, without the candidate dimension, if none did)."""
        if self.post_norm:
            return self._post_norm_input(rid, all_positions, t)
        x = self._committed_input(rid)
        if t is not None:
            changed = sorted(self.kept_in[rid] & t.delta.keys())
            if len(changed) >= STACKED_SUM_MIN and not self.positional:
                stacked = self._stacked_sum(t, changed, all_positions, x)
                if stacked is not None:
                    return stacked
            if changed:
                # a fresh tensor: sum in place
                x = x + self._weighted(self._change(t, changed[0], all_positions), rid,
                                       changed[0], all_positions)
                for s in changed[1:]:
                    x.add_(self._weighted(self._change(t, s, all_positions), rid, s,
                                          all_positions))
        return x

    def _post_norm_sum(self, rid: int, all_positions: bool) -> torch.Tensor:
        """A receiver's committed input under post-sublayer norms, summed afresh: its base, its
        kept non-head senders' deltas, and per earlier layer `norm(b_O + ablated heads + its
        kept heads' deltas)`."""
        x = self._base(rid, all_positions)
        for s in sorted(self.kept_in[rid]):
            if self.graph.senders[s].kind != "head":
                x = x + self._weighted(self._committed_delta(s, all_positions), rid, s,
                                       all_positions)
        n_read = self._senders_read(rid)
        for layer in range(len(self.w.layers)):
            if self.graph.sender_of_head(layer, 0) + self.graph.n_heads > n_read:
                break
            x = x + self._layer_term(rid, layer, all_positions)[1]
        return x

    def _layer_key(self, rid: int, layer: int, all_positions: bool) -> tuple:
        """What a receiver's sum of a layer's heads depends on: the layer, the positions and the
        heads it keeps, with the groups where it keeps them. Receivers with the same key read
        the same sum (in a sparse circuit most do), so its term is made and kept once."""
        first = self.graph.sender_of_head(layer, 0)
        kept = self.kept_in[rid]
        return (layer, all_positions,
                tuple((s, self.kept_groups.get((rid, s), self.all_groups))
                      for s in range(first, first + self.graph.n_heads) if s in kept))

    def _layer_term(self, rid: int, layer: int, all_positions: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The committed sum of a layer's heads as a receiver reads it (`_head_sum`) plus `b_O`,
        and what it adds to the receiver's input, its norm (`forward.attention_out`): kept (per
        `_layer_key`, the least recently used dropped first when the budget is full) until one
        of those heads changes (`_forget_layer_terms`)."""
        key = self._layer_key(rid, layer, all_positions)
        cached = self.layer_terms.pop(key, None)
        if cached is not None:
            self.layer_terms[key] = cached  # the most recently used last
            return cached
        lw = self.w.layers[layer]
        total = self._head_sum(rid, layer, all_positions) + lw.b_O
        term = norm(total, lw.ln1_post_w, lw.ln1_post_b, self.w.normalization, self.w.eps)
        size = 2 * term.numel() * term.element_size()
        if total.shape == term.shape and size <= LAYER_TERM_CACHE_BYTES:
            while self.layer_term_bytes + size > LAYER_TERM_CACHE_BYTES:
                self._drop_layer_term(next(iter(self.layer_terms)))
            self.layer_terms[key] = (total, term)
            self.layer_term_bytes += size
        return total, term

    def _drop_layer_term(self, key: tuple) -> None:
        total, term = self.layer_terms.pop(key)
        self.layer_term_bytes -= total.numel() * total.element_size()
        self.layer_term_bytes -= term.numel() * term.element_size()

    def _forget_layer_terms(self, sender: int) -> None:
        """Drop the kept terms whose sum holds `sender` (a head whose committed delta
        changes)."""
        sent = self.graph.senders[sender]
        if sent.kind != "head":
            return
        for key in [key for key in self.layer_terms
                    if key[0] == sent.layer and any(s == sender for s, _ in key[2])]:
            self._drop_layer_term(key)

    def _head_sum(self, rid: int, layer: int, all_positions: bool) -> torch.Tensor:
        """The sum a receiver reads of a layer's heads (post-sublayer norms): the ablated
        outputs plus the deltas of the heads it keeps, committed."""
        total = self._ablated_heads(layer, all_positions)
        first = self.graph.sender_of_head(layer, 0)
        for s in sorted(self.kept_in[rid] & set(range(first, first + self.graph.n_heads))):
            total = total + self._weighted(self._committed_delta(s, all_positions), rid, s,
                                           all_positions)
        return total

    def _post_norm_input(self, rid: int, all_positions: bool, t: _Tentative | None,
                         dropped: dict[int, torch.Tensor] | None = None,
                         dropped_group: int | None = None) -> torch.Tensor:
        """A receiver's input under post-sublayer norms with the tentative changes of `t` (or,
        for the receiver under test, its edges dropped: `dropped` maps their senders to the
        candidates' coefficients [k]; at the tokens of `dropped_group` only, when given). A
        non-head sender's change adds; a layer whose heads changed replaces its term,
        `norm(S + change) - norm(S)` with S the committed sum this receiver reads. [k, ...]
        when anything changed, else the committed input."""
        x = self._committed_input(rid)
        dropped = dropped or {}
        head_changes: dict[int, torch.Tensor] = {}
        changed_layers: set[int] = set()
        terms: list[torch.Tensor] = []  # what x adds
        for s in sorted(self.kept_in[rid]):
            sender = self.graph.senders[s]
            if s in dropped:  # the receiver under test: nothing tentative yet
                committed = self._committed_delta(s, all_positions)
                change = -dropped[s].view(-1, *([1] * committed.dim())) * committed
                if dropped_group is not None:
                    change = change * self._group_weight(1 << dropped_group, "all"
                                                         if all_positions else "metric")
            elif t is not None and s in t.delta:
                if sender.kind == "head":  # `_term_change`, shared by receivers
                    changed_layers.add(sender.layer)
                    continue
                change = self._weighted(self._change(t, s, all_positions), rid, s,
                                        all_positions)
            else:
                continue
            if sender.kind == "head":
                layer = sender.layer
                head_changes[layer] = (change if layer not in head_changes
                                       else head_changes[layer] + change)
            else:
                terms.append(change)
        for layer, change in sorted(head_changes.items()):
            terms.append(self._normalised_change(rid, layer, all_positions, change))
        for layer in sorted(changed_layers):
            assert t is not None  # a layer changes tentatively only with changes
            terms.append(self._term_change(rid, layer, all_positions, t))
        for i, term in enumerate(terms):  # into one fresh tensor
            x = x + term if i == 0 or term.shape != x.shape else x.add_(term)
        return x

    def _term_change(self, rid: int, layer: int, all_positions: bool, t: _Tentative
                     ) -> torch.Tensor:
        """`_normalised_change` by the tentative change of the heads of a layer a receiver
        keeps: once per evaluation and `_layer_key` (the receivers with one key read one)."""
        key = self._layer_key(rid, layer, all_positions)
        cached = t.term_changes.get(key)
        if cached is not None:
            return cached
        change = None
        for s, _ in key[2]:
            if s in t.delta:
                part = self._weighted(self._change(t, s, all_positions), rid, s, all_positions)
                change = part if change is None else change + part
        assert change is not None  # a head of the layer changed
        difference = self._normalised_change(rid, layer, all_positions, change)
        size = difference.numel() * difference.element_size()
        if t.term_change_bytes + size <= TERM_CHANGE_BYTES:
            t.term_changes[key] = difference
            t.term_change_bytes += size
        return difference

    def _normalised_change(self, rid: int, layer: int, all_positions: bool,
                           change: torch.Tensor) -> torch.Tensor:
        """`norm(S + change) - norm(S)` for S the committed sum (with `b_O`) of a layer's heads
        as a receiver reads it: with RMSNorm, in place over one fresh tensor
        (`forward.rms_inverse`)."""
        lw, kind = self.w.layers[layer], self.w.normalization
        biased, term = self._layer_term(rid, layer, all_positions)
        if kind not in ("RMS", "RMSPre"):
            return norm(biased + change, lw.ln1_post_w, lw.ln1_post_b, kind, self.w.eps) - term
        x = biased + change
        x.mul_(forward.rms_inverse(x, self.w.eps))
        if kind == "RMS" and lw.ln1_post_w is not None:
            x.mul_(lw.ln1_post_w)
        return x.sub_(term)

    def _senders_read(self, rid: int) -> int:
        """How many senders (a prefix of the graph's order) a receiver reads."""
        r = self.graph.receivers[rid]
        if r.kind == "logits":
            return len(self.graph.senders)
        if r.kind == "mlp":
            return self.graph.senders_of_mlp(r.layer)
        return self.graph.senders_before(r.layer)

    def _ablated_heads(self, layer: int, all_positions: bool) -> torch.Tensor:
        """The sum of a layer's ablated head outputs at the receiver's positions (zero for
        zero ablation)."""
        if not self.ablated_head_sums:
            return torch.zeros((), dtype=self.dtype, device=self.device)
        everywhere, at_metric = self.ablated_head_sums[layer]
        return everywhere if all_positions else at_metric

    def _change(self, t: _Tentative, sender: int, all_positions: bool) -> torch.Tensor:
        """A changed sender's new - committed delta, at the positions a receiver reads (once
        per sender and positions: many receivers read the same change), written as the next
        row of `t.stacks[all_positions]`."""
        key = (sender, all_positions)
        if key not in t.changes:
            new = t.delta[sender] if all_positions else self._at_metric(t.delta[sender], sender)
            committed = self._committed_delta(sender, all_positions)
            stack = t.stacks.get(all_positions)
            if stack is None:
                stack = self._stack(t, all_positions, committed.numel(), new)
            row = t.used.get(all_positions, 0)
            if new.shape != (t.width, *committed.shape) or row >= stack.shape[1]:
                t.changes[key] = new - committed  # not expected: summed plainly
            else:
                change = stack[:, row].view(t.width, *committed.shape)
                torch.sub(new, committed, out=change)
                t.changes[key], t.rows[key], t.used[all_positions] = change, row, row + 1
        return t.changes[key]

    def _stack(self, t: _Tentative, all_positions: bool, elements: int, like: torch.Tensor
               ) -> torch.Tensor:
        """`t`'s stack of changes at these positions: [k, rows, elements], at least `t.reach`
        rows; the engine's kept one when it is large enough, else a new one kept instead."""
        kept = self.stacks.get(all_positions)
        rows = max(t.reach, 1)
        if (kept is None or kept.shape[1] < rows or kept.shape[2] != elements
                or kept.shape[0] < t.width or kept.dtype != like.dtype):
            kept = like.new_empty(t.width, rows, elements)
            self.stacks[all_positions] = kept
        t.stacks[all_positions] = kept[:t.width]
        return t.stacks[all_positions]

    def _stacked_sum(self, t: _Tentative, changed: list[int], all_positions: bool,
                     committed: torch.Tensor) -> torch.Tensor | None:
        """`committed` plus the changes of `changed` as one product over the rows of the stack
        that hold them (a receiver reading many changed senders: one pass over their rows
        instead of a pass over the sum per sender); None when the rows between them hold too
        many other senders' changes for that to pay."""
        rows = []
        for s in changed:
            self._change(t, s, all_positions)
            row = t.rows.get((s, all_positions))
            if row is None:
                return None
            rows.append(row)
        low, high = min(rows), max(rows)
        if high - low + 1 > STACKED_SUM_SPAN * len(rows):
            return None
        picked = torch.zeros(high - low + 1, dtype=committed.dtype)
        picked[[r - low for r in rows]] = 1
        picked = picked.to(committed.device).view(1, 1, -1).expand(t.width, 1, -1)
        total = torch.baddbmm(committed.reshape(1, 1, -1), picked,
                              t.stacks[all_positions][:, low:high + 1])
        return total.view(t.width, *committed.shape)

    # ------------------------------------------------------------------ committing

    def commit(self, t: _Tentative, candidate: int = 0) -> None:
        """Make one candidate's activations permanent (`remove` does the bookkeeping of the
        edges it removed). Only the latest evaluation's changes can be committed: the next
        one writes over their stacks."""
        if t.generation != self.generation:
            raise RuntimeError("an earlier evaluation's changes cannot be committed after a later "
                               "evaluation")
        for s in t.delta:  # cached inputs first: they need the old deltas
            if self.post_norm:
                self._forget_layer_terms(s)
            for rid in self.kept_out[s]:
                if rid in self.inputs and self.post_norm:  # not additive: summed again later
                    self._forget_input(rid)
                elif rid in self.inputs:
                    all_positions = self._receiver_all_positions(rid)
                    change = self._weighted(self._change(t, s, all_positions)[candidate], rid,
                                            s, all_positions)
                    self.inputs[rid] = self.inputs[rid] + change
        for s, value in t.delta.items():
            if self.needs_all[s]:
                self.delta[s] = value[candidate]
            else:
                self.delta[s][self.pos_batch, self.pos_index] = value[candidate]
        for s, new in t.qkv.items():
            sender = self.graph.senders[s]
            for i, value in new.items():
                value = value[candidate if value.shape[0] > 1 else 0]
                target = self.qkv[sender.layer][i, sender.head]
                if value.dim() == 2:
                    target[self.pos_batch, self.grid_index] = value
                else:  # q over the window; keys and values from 0, where the start never changes
                    target[:, self.window] = value[:, self.first:] if i else value
        for s, z in t.z.items():
            sender = self.graph.senders[s]
            self.z[sender.layer][sender.head] = z[candidate]
        if self.low_rank:
            self.updates = self.updates + 1 if t.low_rank else 0
            if self.updates >= REFRESH_EVERY:  # from the candidate's logits input: exact again
                assert t.logits_input is not None  # set by `evaluate`
                self.projected = self.unembedding.project(t.logits_input[candidate])
                self.updates = 0
            else:
                assert t.projected is not None  # set by `evaluate` (`_logits`)
                self.projected = t.projected[candidate]

    def remove(self, edge: Edge) -> None:
        """Drop an edge from the bookkeeping (and the masks) without any computation."""
        self.pm.set_edge(edge, False)
        bit = 1 << (edge.group or 0)
        if edge.kind == "direct":
            assert edge.receiver.head is not None  # a direct edge goes into a head
            owner = self.graph.sender_of_head(edge.receiver.layer, edge.receiver.head)
            self.direct_kept[(owner, QKV_INDEX[edge.qkv])] &= ~bit
        else:
            assert edge.sender is not None  # a residual edge
            rid, sender = self.receiver_id[edge.receiver], edge.sender.index
            all_positions = self._receiver_all_positions(rid)
            if rid in self.inputs and self.post_norm:
                self._forget_input(rid)
            elif rid in self.inputs:
                removed = self._committed_delta(sender, all_positions)
                if edge.group is not None:
                    removed = removed * self._group_weight(bit, "all" if all_positions
                                                           else "metric")
                self.inputs[rid] = self.inputs[rid] - removed
            kept = self.kept_groups.get((rid, sender), self.all_groups) & ~bit
            self.kept_groups[(rid, sender)] = kept
            self._kept_weights.pop((rid, True), None)
            self._kept_weights.pop((rid, False), None)
            if kept:
                return
            self.kept_in[rid].discard(sender)
            self.kept_out[sender].discard(rid)
            self._index_cache.pop(rid, None)
            if rid == self.logits_id and sender in self.factors:
                factor = self.factors.pop(sender)
                self.factor_bytes -= factor.numel() * factor.element_size()
