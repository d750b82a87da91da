"""Every edge's attribution score from a few differentiable forward passes.

The score of an edge u -> v is the first-order estimate of the metric's change when that edge
alone carries its ablated value (Syed et al. 2023; Hanna et al. 2024):

    score(u -> v) = (a_u(ablated) - a_u(clean)) . dm/dx_v

summed over prompts, positions and d_model, where a_u is u's output and x_v v's input in the
patched forward of `acdc.core.patching` (`x_v = bias + sum_s ablated_s + mask[v, s] * delta_s`,
so the score is minus the derivative of m with respect to the edge's mask at 1). A direct edge
`a1.h2<q> -> a1.h2` scores `(q(ablated) - q(clean)) . dm/dq` for that head's query.

No mask per edge is made: the gradient with respect to one receiver's input scores every edge
into it at once (a dot product with every sender's delta, one matrix product per layer). The
pass itself is the ordinary forward (with every edge present the patched forward is the
model), differentiated once:

- a head's q/k/v input is its own copy of the residual, normalised on its own: its gradient
  is `dm/dq_h @ W_Q[h]^T` pushed back through that copy's norm, taken at the shared residual,
  so no per-head copies of the forward pass are made (head granularity: the sum of the q, k
  and v terms, one receiver feeding all three). The norm's backward is folded into the
  products with the deltas instead of being applied to every receiver's gradient (see
  `_layer_scores`);
- an MLP's input and the input of `logits` (the final residual at the metric positions) are
  tensors of their own in the pass, whose gradients autograd keeps.

In a positional graph (`acdc.core.graph`) an edge at group g is the same product summed over
the tokens of g only: `score(u -> v @ g) = sum over tokens of g of (a_u(ablated) -
a_u(clean)) . dm/dx_v` (the derivative of the metric with respect to that edge's mask), so one
backward pass scores every group, and a blind edge's score is the sum of its groups' (the
padding, in no group, adds nothing: nothing real reads it). The products with the deltas are
taken group by group over each group's tokens.

Plain EAP differentiates at the clean run (alpha = 1); that pass also records the clean run
for the patched model (`PatchedModel(clean_run=...)`), which then only records the ablated
run: two forward passes and one backward in all. EAP-IG (inputs) averages the gradients
over the points `alpha = k / m`, k = 0 .. m - 1, of the straight line from the ablated to the
clean input embedding (the input sender's ablated value: the corrupted prompts' embedding,
zero, or its mean), the deltas staying those of the clean run; this is the authors' left
Riemann sum, which starts at the ablated run and never evaluates the clean one. With corrupt
ablation the pass at alpha = 0 is the corrupted prompts' run, so it records the ablated run
(`PatchedModel(ablated_run=...)`), and only the clean run is recorded apart.

The deltas are the same at every point, so a score is the delta against the gradient summed
over the passes: `_Scorer` sums each receiver's gradient (in its d_head-wide form, with the
norm's per-pass terms kept apart) and contracts the sums with the deltas once. With norms
after each sublayer a head's edge is scored through that norm at the pass's own point, so
there each pass is contracted as it comes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from acdc.core import forward
from acdc.core.graph import Graph
from acdc.core.patching import PatchedModel, RecordedRun
from acdc.core.weights import Weights

Metric = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EdgeSlots:
    """Where each receiver's scores go in the graph's edge order: per layer, the head inputs'
    edges `[receivers, senders]` (rows q heads, k heads, v heads; one row per head at head
    granularity), the MLP's `[senders]` and the direct edges `[3, heads]`; the logits'
    `[senders]`. A positional graph's slots have a last axis of groups."""

    heads: tuple[torch.Tensor, ...]
    mlps: tuple[torch.Tensor, ...]
    direct: tuple[torch.Tensor, ...]
    logits: torch.Tensor

    @classmethod
    def of(cls, graph: Graph, device: torch.device) -> EdgeSlots:
        index = {(e.receiver.name, e.sender.index if e.sender else None): e.index
                 for e in graph.edges if not e.group}
        heads, mlps, direct, logits = cls._slots(graph, index, device)
        if graph.positional:  # edge e at group g is entry e + g: the groups as a last axis
            offsets = torch.arange(graph.n_groups, device=device)
            heads, mlps, direct = (tuple(t[..., None] + offsets for t in slots)
                                   for slots in (heads, mlps, direct))
            logits = logits[..., None] + offsets
        return cls(heads, mlps, direct, logits)

    @staticmethod
    def _slots(graph: Graph, index: dict, device: torch.device
               ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...],
                          tuple[torch.Tensor, ...], torch.Tensor]:
        n_heads = graph.n_heads
        qkvs = ("q", "k", "v") if graph.granularity == "qkv" else (None,)
        heads, mlps, direct = [], [], []
        for layer in range(graph.n_layers):
            n = graph.senders_before(layer)
            rows = [[index[(graph_receiver(layer, h, qkv), s)] for s in range(n)]
                    for qkv in qkvs for h in range(n_heads)]
            heads.append(torch.tensor(rows, device=device))
            if graph.shape.has_mlp:
                mlps.append(torch.tensor([index[(f"m{layer}", s)]
                                          for s in range(graph.senders_of_mlp(layer))],
                                         device=device))
            if graph.granularity == "qkv":
                direct.append(torch.tensor(
                    [[index[(graph_receiver(layer, h, qkv), None)] for h in range(n_heads)]
                     for qkv in ("q", "k", "v")], device=device))
        logits = torch.tensor([index[("logits", s)] for s in range(len(graph.senders))],
                              device=device)
        return tuple(heads), tuple(mlps), tuple(direct), logits


def graph_receiver(layer: int, head: int, qkv: str | None) -> str:
    return f"a{layer}.h{head}" + (f"<{qkv}>" if qkv else "")


@dataclass
class Gradients:
    """What one differentiated forward pass leaves: per layer the residual the heads read
    (before their norm), the q/k/v and their gradients and the gradient of the MLP's input;
    the gradient of the input of `logits` at the metric positions; the metric's value; and,
    when asked, the pass recorded as the patched model records a run."""

    residuals: list[torch.Tensor]
    qkv: list[torch.Tensor]
    qkv_grads: list[torch.Tensor]
    mlp_grads: list[torch.Tensor]
    logits_grad: torch.Tensor
    metric: float
    recorded: RecordedRun | None = None
    head_sums: list[torch.Tensor] | None = None  # per layer b_O + its heads, with post-norms


@dataclass
class _Pass:
    """The tensors of one ordinary forward pass that its backward pass or its record needs."""

    residuals: list[torch.Tensor]
    qkvs: list[torch.Tensor]
    mlp_inputs: list[torch.Tensor]
    head_sums: list[torch.Tensor]
    final: torch.Tensor
    logits: torch.Tensor
    recorded: RecordedRun | None


def _forward(w: Weights, graph: Graph, embedding: torch.Tensor, pos_batch: torch.Tensor,
             pos_index: torch.Tensor, record: bool) -> _Pass:
    """The ordinary forward pass from `embedding`, keeping every receiver's input (whose
    gradient autograd keeps, when grad mode is on); `record`: also every sender's output and
    z, as `PatchedModel` records a run."""
    batch, n_pos, d_model = embedding.shape
    differentiable = torch.is_grad_enabled()
    outputs: torch.Tensor | None = None
    zs: list[torch.Tensor] | None = None
    if record:
        outputs = torch.empty(len(graph.senders), batch, n_pos, d_model, dtype=embedding.dtype,
                              device=embedding.device)
        outputs[0] = embedding
        zs = []
    # the embedding's own gradient is not needed: the first layer's q/k/v are the leaves
    # (with a parallel block its MLP reads the embedding itself)
    x = embedding.detach().requires_grad_(differentiable and w.parallel)
    positions = torch.arange(n_pos, device=x.device)
    residuals, qkvs, mlp_inputs, head_sums = [], [], [], []
    masks: dict[int | None, torch.Tensor] = {}  # by attention window
    for layer, lw in enumerate(w.layers):
        residuals.append(x)
        h = forward.norm(x, lw.ln1_w, lw.ln1_b, w.normalization, w.eps)
        # [3, heads, batch, pos, d_head], contiguous: its gradient takes its layout, and the
        # scorer's products over it then copy nothing
        qkv = forward.qkv_wide(lw, h).contiguous()
        if differentiable and not qkv.requires_grad:
            qkv.requires_grad_()
        elif differentiable:
            qkv.retain_grad()
        qkvs.append(qkv)
        if lw.window not in masks:
            masks[lw.window] = forward.attention_mask(w, n_pos, x.dtype, x.device, lw.window)
        q, k, v = qkv.unbind(0)
        q, k = (forward.rotate(w, lw, t, positions) for t in (q, k))
        z = forward.attend(q, k, v, w.attn_scale, masks[lw.window], w.attn_soft_cap)
        if outputs is not None and zs is not None:  # every head's output, to record
            heads = forward.head_outputs(lw, z)
            first = graph.sender_of_head(layer, 0)
            outputs[first:first + len(heads)] = heads.detach()
            zs.append(z.detach()[:, pos_batch, pos_index])
            head_sum = heads.sum(0)
        else:  # their sum alone: one product over heads and d_head together
            head_sum = forward.heads_sum(lw, z)
        block_input = x
        if w.post_norm:
            head_sums.append((head_sum + lw.b_O).detach())
            x = x + forward.attention_out(w, lw, head_sum)
        else:
            x = x + head_sum + lw.b_O
        if not w.attn_only:
            # the MLP's own input (its gradient is the MLP's alone): the block's input in
            # a parallel block, else the residual after the heads
            mlp_in = (block_input if w.parallel else x).view_as(x)
            if differentiable:
                mlp_in.retain_grad()
            mlp_inputs.append(mlp_in)
            out = forward.mlp(w, lw, mlp_in)
            if outputs is not None:
                outputs[graph.sender_of_mlp(layer)] = out.detach()
            bias = forward.mlp_bias(w, lw)
            x = x + (out if bias is None else out + bias)
    final = x[pos_batch, pos_index]
    if differentiable:
        final.retain_grad()
    recorded = None
    if outputs is not None and zs is not None:
        recorded = RecordedRun(outputs, tuple(q.detach() for q in qkvs), tuple(zs))
    return _Pass(residuals, qkvs, mlp_inputs, head_sums, final, forward.unembed(w, final),
                 recorded)


def record_run(w: Weights, graph: Graph, embedding: torch.Tensor, pos_batch: torch.Tensor,
               pos_index: torch.Tensor) -> tuple[RecordedRun, torch.Tensor]:
    """The ordinary forward pass from `embedding`, recorded as `PatchedModel` records a run
    (no gradient), and its logits at the metric positions."""
    with torch.no_grad():
        run = _forward(w, graph, embedding, pos_batch, pos_index, record=True)
    assert run.recorded is not None  # asked for
    return run.recorded, run.logits


def differentiate(w: Weights, graph: Graph, embedding: torch.Tensor, pos_batch: torch.Tensor,
                  pos_index: torch.Tensor, metric_of: Callable[[torch.Tensor], Metric],
                  record: bool = False) -> Gradients:
    """The ordinary forward pass from the input sender's output `embedding` [batch, pos, d],
    then one backward pass of the metric `metric_of(logits)` (given this pass's own logits at
    the metric positions, detached: the clean logits when this pass is the clean run).
    `record`: also keep every sender's output and z, as `PatchedModel` records a run."""
    with torch.enable_grad():
        run = _forward(w, graph, embedding, pos_batch, pos_index, record)
        value = metric_of(run.logits.detach())(run.logits)
        value.backward()
    qkvs, final = run.qkvs, run.final
    grads = [q.grad for q in qkvs]
    mlp_grads = [m.grad for m in run.mlp_inputs]
    if final.grad is None or any(g is None for g in [*grads, *mlp_grads]):
        raise RuntimeError("the metric does not depend on every receiver")  # never: all do
    return Gradients([r.detach() for r in run.residuals], [q.detach() for q in qkvs],
                     grads, mlp_grads,  # type: ignore[arg-type]
                     final.grad, float(value.detach()), run.recorded,
                     run.head_sums if w.post_norm else None)


def edge_scores(patched: PatchedModel, metric: Metric, alphas: Sequence[float] = (1.0,),
                made: dict[float, Gradients] | None = None) -> torch.Tensor:
    """Every edge's score `[n_edges]` (float64, in the graph's edge order), with the gradient
    averaged over the passes at `alphas` (1.0 alone: EAP at the clean run). `made`: passes
    already made, by alpha (EAP's clean pass; EAP-IG's first, which recorded the ablated run),
    taken out of the dict as they are used (so that each is freed once scored).

    `patched` holds the clean and ablated runs (its masks all present); its clean q/k/v are
    taken over (`PatchedModel.take_clean_qkv`)."""
    graph, w = patched.graph, patched.w
    scorer = _Scorer(patched, len(alphas))
    delta = patched.delta  # clean - ablated output of every sender [senders, batch, pos, d]
    ablated_input = patched.ablated[0] if patched.ablated is not None else None
    made = {} if made is None else made
    for alpha in alphas:
        run = made.pop(alpha, None)
        if run is None:
            if ablated_input is None:
                embedding = alpha * delta[0]
            else:
                embedding = ablated_input + alpha * delta[0]
            run = differentiate(w, graph, embedding, patched.pos_batch, patched.pos_index,
                                lambda _: metric)
        scorer.add(run, 1.0 / len(alphas))
        del run
    return scorer.finish()


class _Scorer:
    """Every edge's score from the passes' gradients, receiver by receiver: `add` sums them,
    `finish` contracts the sums with the deltas.

    Head input r reads the residual x through its norm, `h = x_hat * w + b` with
    `x_hat = centred(x) * inv` (`forward.norm_scale`), and feeds `q_r = h @ W_r + b_r`. With
    `gw = (dm/dq_r @ W_r^T) * w`, the gradient at x is, per token,

        g_r = inv * (gw - mean(gw) - x_hat * mean(gw * x_hat))    (RMSNorm: no mean(gw) term)

    `inv * gw` is made by pushing the scaled gradient `inv * dm/dq_r` back through `W_r * w`
    (a d_head-wide product per head); the two per-token scalars `c_r = mean(gw)` and
    `e_r = mean(gw * x_hat) = dm/dq_r . (q_r - b_r - b @ W_r) / d` come from the d_head-wide
    gradient and the pass's own q/k/v, and no receiver's gradient at x is ever computed
    apart. `inv * dm/dq_r` is linear in the gradient: summed over the passes, it is pushed
    back once. The norm's terms `inv * (c + x_hat e)` differ by pass (each has its own x_hat
    and inv); their contraction with a delta is `sum over tokens of inv * c * sum(delta) +
    inv * e * (x_hat . delta)`, so the per-token products of every pass's x_hat with every
    delta (one batched product for all layers) and per-token coefficients score them. Then
    one matrix product with the deltas `[senders, tokens * d_model]` scores every edge into
    the layer's head inputs, and into the previous layer's MLP (its gradient an extra row: the
    MLP of layer l - 1 reads senders before layer l only: all but itself, or in a parallel
    block those before layer l - 1).
    """

    # the sums since the last contraction (`_start`)
    corrections: list[list[torch.Tensor]]
    constant: list[torch.Tensor | None]
    logits_grad: torch.Tensor | None

    def __init__(self, patched: PatchedModel, passes: int = 1):
        """`passes`: how many passes are added before their scores are contracted (with
        post-norms, one: each pass's scores are contracted as it is added)."""
        self.pm, self.graph, self.w = patched, patched.graph, patched.w
        delta = patched.delta
        self.device, self.dtype = delta.device, delta.dtype
        self.slots = EdgeSlots.of(self.graph, self.device)
        self.scores = torch.zeros(len(self.graph.edges), dtype=torch.float64, device=self.device)
        self.positional = self.graph.positional
        if self.positional:  # each real group's tokens (flat) and metric positions
            n = self.graph.n_groups
            self.group_tokens = patched.group_tokens[:n]
            self.group_metric = patched.group_metric[:n]
            assert patched.groups is not None  # a positional model has them
            # [batch * pos, groups]: 1 where a token is in a group (padding in none)
            self.onehot = torch.nn.functional.one_hot(patched.groups.flatten(), n + 1)[
                :, :n].to(self.dtype)
        self.split = self.graph.granularity == "qkv"
        # Each head input's q/k/v moved to its ablated value [3, heads, batch, pos, d_head]
        # per layer (qkv granularity: the direct edges), in place of the clean q/k/v, which
        # nothing reads after.
        clean_qkv = patched.take_clean_qkv()
        self.changes: list[torch.Tensor] = []
        if self.split:
            if patched.ablated_qkv is None:
                raise RuntimeError("the patched model has no ablated q/k/v")
            self.changes = [a - c for a, c in zip(patched.ablated_qkv, clean_qkv, strict=True)]
        del clean_qkv
        batch, n_pos, self.d_model = delta.shape[1:]
        self.tokens = batch * n_pos
        self.n_heads = self.graph.n_heads
        self.n_rows = self.n_heads * (3 if self.split else 1)  # head receivers per layer
        kind = self.w.normalization
        self.kind = kind
        # Per layer: (W_r * w)^T as the pushing product wants it, b_r + b @ W_r, and W_r^T w.
        self.back: list[torch.Tensor] = []
        self.offsets: list[torch.Tensor] = []
        self.sums: list[torch.Tensor | None] = []
        for lw in self.w.layers:
            gain = lw.ln1_w if kind in ("LN", "RMS") else None
            W = torch.stack([W for W, _ in forward.projections(lw)])  # [3, heads, d, d_head]
            if gain is not None:
                W = W * gain[:, None]
            d_head = W.shape[-1]
            if self.split:
                self.back.append(W.transpose(-1, -2).reshape(self.n_rows, d_head, self.d_model))
            else:  # [heads, 3 d_head, d]: q, k and v pushed back as one product
                self.back.append(W.permute(1, 0, 3, 2).reshape(self.n_heads, 3 * d_head,
                                                               self.d_model))
            has_bias = kind == "LN" and lw.ln1_b is not None  # q = x_hat w @ W + (b_ln @ W + b)
            self.offsets.append(torch.stack([b + torch.einsum("d,hdk->hk", lw.ln1_b, Wi)
                                             if has_bias else b
                                             for Wi, b in forward.projections(lw)]))
            self.sums.append(W.sum(2) if kind in ("LN", "LNPre") else None)
        # Every pass's x_hat at every layer's head inputs [tokens, layers * passes + 1, d]
        # (the last row ones: LayerNorm's constant term), for the norm terms; the passes fill
        # the rest, rows of passes never added are never read.
        self.passes = 1 if self.w.post_norm else passes
        self.x_hats = None
        if kind is not None:
            self.x_hats = torch.empty(self.tokens, self.graph.n_layers * self.passes + 1,
                                      self.d_model, dtype=self.dtype, device=self.device)
            self.x_hats[:, -1] = 1.0
        # The sums, made once: per layer the head inputs' `inv * dm/dq_r` and the MLP's input
        # gradient.
        d_head = self.w.layers[0].W_Q.shape[-1]
        self.scaled = torch.empty(self.graph.n_layers, 3, self.n_heads, self.tokens, d_head,
                                  dtype=self.dtype, device=self.device)
        self.mlp_grads = (torch.empty(self.graph.n_layers, self.tokens, self.d_model,
                                      dtype=self.dtype, device=self.device)
                          if self.graph.shape.has_mlp else None)
        self._start()

    def add(self, run: Gradients, weight: float) -> None:
        """Add one pass's receiver gradients, weighted, to the sums that `finish` contracts
        with the deltas (with post-norms, where a head's edge is scored through the pass's
        own norm, its scores at once). The pass is used up: each layer's tensors are released
        from it once summed."""
        if self.added >= self.passes:
            raise RuntimeError(f"more passes added than the {self.passes} announced")
        released = torch.empty(0)
        with torch.no_grad():
            for layer in range(self.graph.n_layers):
                self._gather(run, layer, weight)
                if self.mlp_grads is not None:
                    total = self.mlp_grads[layer]
                    self._sum_into(total, run.mlp_grads[layer].view_as(total), weight)
                    run.mlp_grads[layer] = released
                run.residuals[layer] = run.qkv[layer] = run.qkv_grads[layer] = released
            if self.logits_grad is None:
                self.logits_grad = run.logits_grad * weight
            else:
                self.logits_grad.add_(run.logits_grad, alpha=weight)
        self.added += 1
        if run.head_sums is not None:
            self._contract(run.head_sums)

    def finish(self) -> torch.Tensor:
        """Every edge's score: the gradients added since the last contraction contracted."""
        if self.added:
            self._contract(None)
        return self.scores

    def _sum_into(self, total: torch.Tensor, value: torch.Tensor, weight: torch.Tensor | float
                  ) -> None:
        """`total += weight * value` (the first pass: `total = weight * value`)."""
        if self.added == 0:
            torch.mul(value, weight, out=total)
        elif isinstance(weight, float):
            total.add_(value, alpha=weight)
        else:
            total.addcmul_(value, weight)

    def _gather(self, run: Gradients, layer: int, weight: float) -> None:
        """Add a pass's head-input gradients of one layer, in the d_head-wide form of the class
        docstring: `inv * dm/dq_r` (linear in the gradient, so summed over passes) and each
        pass's per-token norm terms (with that pass's x_hat); the direct edges' scores."""
        tokens, d_model, rows = self.tokens, self.d_model, self.n_rows
        grads = run.qkv_grads[layer]  # [3, heads, batch, pos, d_head]
        d_head = grads.shape[-1]
        grads = grads.reshape(3, self.n_heads, tokens, d_head)
        scale = forward.norm_scale(run.residuals[layer].reshape(tokens, d_model), self.kind,
                                   self.w.eps, None if self.x_hats is None
                                   else self.x_hats[:, self._slot(layer, self.added)])
        self._sum_into(self.scaled[layer], grads, weight if scale is None else scale[0] * weight)
        if scale is not None:  # the norm's terms inv * (c + x_hat e), per token (`_layer`)
            inverse, x_hat = scale
            qkv = run.qkv[layer].reshape(3, self.n_heads, tokens, d_head)
            e = (torch.linalg.vecdot(grads, qkv)
                 - (grads @ self.offsets[layer][..., None])[..., 0]) / d_model
            terms: list[tuple[torch.Tensor, torch.Tensor | None]] = [(e, x_hat)]
            sums = self.sums[layer]
            if sums is not None:
                terms.append((grads @ sums[..., None] / d_model, None))
            for per_token, vector in terms:
                per_token = per_token.reshape(3, self.n_heads, tokens)
                if not self.split:
                    per_token = per_token.sum(0)
                per_token = per_token.reshape(rows, tokens) * (inverse.T * weight)
                if vector is None:  # the same vector (ones) in every pass: one sum
                    constant = self.constant[layer]
                    self.constant[layer] = (per_token if constant is None
                                            else constant.add_(per_token))
                else:  # x_hat, written into `x_hats` by `norm_scale`
                    self.corrections[layer].append(per_token)
        if self.split:  # direct edges: the head's q/k/v moved to its ablated value
            change = self.changes[layer]
            if self.positional:  # per token, then summed over each group's tokens
                per_token = torch.linalg.vecdot(change, run.qkv_grads[layer]).flatten(2)
                moved = per_token @ self.onehot  # [3, heads, groups]
            else:  # one dot product per head input
                flat = change.reshape(3 * self.n_heads, 1, -1)
                moved = torch.bmm(flat, run.qkv_grads[layer].reshape(3 * self.n_heads, -1, 1)
                                  ).view(3, self.n_heads)
            self.scores.index_put_((self.slots.direct[layer],), weight * moved.double(),
                                   accumulate=True)

    def _contract(self, head_sums: list[torch.Tensor] | None) -> None:
        """Score every residual edge from the gradients gathered so far (`head_sums`: the
        pass's post-norm inputs, with post-norms), then start the sums again."""
        with torch.no_grad():
            # each layer's receivers' gradients at the residual, + the previous layer's MLP
            # (made here: while the passes run, only their sums are held)
            self.pushed = torch.empty(self.n_rows + 1, self.tokens, self.d_model,
                                      dtype=self.dtype, device=self.device)
            along = None
            if self.x_hats is not None and head_sums is None:
                # every x_hat against every sender's delta, per token: [tokens, rows, senders]
                delta = self.pm.delta
                along = torch.bmm(self.x_hats, delta.reshape(len(delta), self.tokens, -1)
                                  .permute(1, 2, 0))
            previous_mlp = None
            for layer in range(self.graph.n_layers):
                self._layer(layer, previous_mlp, head_sums, along)
                previous_mlp = None if self.mlp_grads is None else self.mlp_grads[layer]
            delta, slots = self.pm.delta, self.slots
            if previous_mlp is not None:  # the last MLP
                m = self.graph.senders_of_mlp(self.graph.n_layers - 1)
                grad = previous_mlp.reshape(1, self.tokens, self.d_model)
                total = self._against_senders(grad, m, head_sums)[0]
                self._add(slots.mlps[-1], -total.double())
            assert self.logits_grad is not None  # a pass was added
            total = self._against_senders(self.logits_grad[None], len(delta), head_sums,
                                          at_metric=True)
            self._add(slots.logits, -total[0].double())
            del self.pushed
        self._start()

    def _start(self) -> None:
        """Empty sums: per layer the scaled head-input gradients, the norm terms with a vector
        per pass and those with the constant vector; the MLPs' and the logits' gradients."""
        layers = self.graph.n_layers
        self.corrections = [[] for _ in range(layers)]
        self.constant = [None] * layers
        self.added = 0  # passes added since the last contraction
        self.logits_grad = None

    def _add(self, slot: torch.Tensor, values: torch.Tensor) -> None:
        """Add scores into their edges' entries (a slot tensor of the values' shape)."""
        if self.positional or slot.dim() > 1:
            self.scores.index_put_((slot,), values, accumulate=True)
        else:
            self.scores.index_add_(0, slot, values)

    def _layer(self, layer: int, previous_mlp: torch.Tensor | None,
               head_sums: list[torch.Tensor] | None, along: torch.Tensor | None) -> None:
        """Score the edges into one layer's head inputs and the previous layer's MLP. The
        norm terms `inv * (c + x_hat e)` are subtracted from the pushed gradients with
        post-norms (their heads are scored through another norm), else from the scores:
        `sum over tokens of coefficient * (x_hat . delta)`, from `along` (`_contract`)."""
        graph, slots, scores = self.graph, self.slots, self.scores
        tokens, d_model, rows = self.tokens, self.d_model, self.n_rows
        n = graph.senders_before(layer)
        scaled = self.scaled[layer]
        d_head = scaled.shape[-1]
        if not self.split:  # [heads, tokens, 3 d_head]
            scaled = scaled.permute(1, 2, 0, 3).reshape(self.n_heads, tokens, 3 * d_head)
        pushed = self.pushed[:rows]
        torch.bmm(scaled.reshape(rows, tokens, -1), self.back[layer], out=pushed)
        coefficients = self.corrections[layer]
        columns = [self._slot(layer, k) for k in range(len(coefficients))]
        constant = self.constant[layer]
        if constant is not None:
            coefficients.append(constant)
            columns.append(-1)
        if coefficients and along is None:
            assert self.x_hats is not None  # a norm has terms
            for coefficient, column in zip(coefficients, columns, strict=True):
                pushed.addcmul_(coefficient[..., None], self.x_hats[:, column], value=-1)
        used = rows
        if previous_mlp is not None:
            self.pushed[rows] = previous_mlp.reshape(tokens, d_model)
            used += 1
        total = self._against_senders(self.pushed[:used], n, head_sums)  # [receivers, senders]
        if coefficients and along is not None:
            total[:rows] -= self._per_token(torch.stack(coefficients, -1),
                                            along[:, columns, :n])
        self.corrections[layer], self.constant[layer] = [], None
        scores.index_put_((slots.heads[layer],), -total[:rows].double(), accumulate=True)
        if previous_mlp is not None:
            read = graph.senders_of_mlp(layer - 1)
            self._add(slots.mlps[layer - 1], -total[rows, :read].double())

    def _slot(self, layer: int, k: int) -> int:
        """The row of `x_hats` holding the k-th pass's x_hat at `layer`'s head inputs."""
        return layer * self.passes + k

    def _per_token(self, coefficients: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
        """`sum over tokens and terms j of coefficients[r, t, j] * products[t, j, s]`: [r, s]
        (positional graphs: [r, s, groups], each group's tokens alone)."""
        r, n = len(coefficients), products.shape[-1]
        if not self.positional:
            return coefficients.reshape(r, -1) @ products.reshape(-1, n)
        out = coefficients.new_zeros(r, n, self.graph.n_groups)
        for g, tokens in enumerate(self.group_tokens):
            if tokens is not None:
                out[..., g] = coefficients[:, tokens].reshape(r, -1) @ products[tokens].reshape(
                    -1, n)
        return out

    def _against_senders(self, grads: torch.Tensor, n: int,
                         head_sums: list[torch.Tensor] | None, at_metric: bool = False
                         ) -> torch.Tensor:
        """[receivers, n]: each receiver's input gradient `grads` [receivers, tokens, d]
        (at the metric positions: [receivers, n_positions, d]) against the first n senders'
        deltas.

        With post-attention norms a head of layer L reaches a receiver through
        `norm_L(b_O + sum of L's heads)`: its delta is scored against the gradient pulled back
        through that norm at this pass's sum (a vector-Jacobian product per receiver and
        layer), every other sender's against the receiver's own gradient.

        Positional graphs: [receivers, n, groups], each group's products over its tokens."""
        delta = self.pm.delta[:n]
        if at_metric:
            delta = delta[:, self.pm.pos_batch, self.pm.pos_index]
        senders = delta.reshape(n, -1)
        rows = grads.reshape(len(grads), -1)
        total = self._products(rows, senders, at_metric)
        if head_sums is None:
            return total
        for layer, lw in enumerate(self.w.layers):
            first = self.graph.sender_of_head(layer, 0)
            if first + self.n_heads > n:
                break
            head_sum = head_sums[layer]
            if at_metric:
                head_sum = head_sum[self.pm.pos_batch, self.pm.pos_index]
            with torch.enable_grad():
                point = head_sum.expand(len(grads), *head_sum.shape).clone().requires_grad_(True)
                out = forward.norm(point, lw.ln1_post_w, lw.ln1_post_b, self.w.normalization,
                                   self.w.eps)
                (pulled,) = torch.autograd.grad(out, point, grads.view_as(point))
            heads = slice(first, first + self.n_heads)
            total[:, heads] = self._products(pulled.reshape(len(grads), -1), senders[heads],
                                             at_metric)
        return total

    def _products(self, rows: torch.Tensor, senders: torch.Tensor, at_metric: bool
                  ) -> torch.Tensor:
        """rows [r, tokens * d] against senders [n, tokens * d]: [r, n] (positional graphs:
        [r, n, groups], each group's tokens alone)."""
        if not self.positional:
            return rows @ senders.T
        r, n, d = len(rows), len(senders), self.d_model
        rows, senders = rows.view(r, -1, d), senders.view(n, -1, d)
        out = rows.new_zeros(r, n, self.graph.n_groups)
        for g, tokens in enumerate(self.group_metric if at_metric else self.group_tokens):
            if tokens is not None:
                out[..., g] = rows[:, tokens].reshape(r, -1) @ senders[:, tokens].reshape(n, -1).T
        return out

