"""The block arithmetic of a transformer, over a model's `weights.Weights`.

Every computation the project makes with a model's weights is written here once: the token
and position embedding, LayerNorm / RMSNorm, the per-head query, key and value projections,
rotary positions, attention (causal, local windows, or bidirectional as in tracr's compiled
models; soft-capped scores), the head outputs `z @ W_O`, the norms after a sublayer (Gemma 2),
the MLP and the unembedding (soft-capped logits). The three callers differ only in what they
feed these functions:

- `full_forward`: the ordinary forward pass (the residual stream is a running sum), returning
  logits and every attention pattern; the zoo reads attention through it, with no hook names.
- `patching.PatchedModel`: every receiver reads its own mix of live and ablated sender
  outputs, so there are up to three residual copies per head (q, k, v) and a pass may start at
  any layer.
- `propagation.IncrementalPatcher`: the same patched forward, recomputing one head or MLP at a
  time, often at the metric positions only, with a leading dimension for candidate circuits.
- `removals.SingleRemovals`: the ordinary forward pass after one node's change, for many
  candidates at once (`qkv_wide` and `heads_sum`: one wide matrix product each, for many rows).

The engine calls these functions thousands of times per run on small tensors, so each keeps
the exact operations the engine was tuned and verified with: fused `F.layer_norm` /
`F.rms_norm`, batched `matmul` / `bmm` over heads, no extra copies. Changing an operation here
(even to an equivalent einsum) changes scores in their last bits; the tests hold the three
callers to one another and to TransformerLens.

Layouts: heads lead (`[n_heads, batch, pos, d_head]`), as `W_Q` `[n_heads, d_model, d_head]`
and `W_O` `[n_heads, d_head, d_model]` do; batched callers put further dimensions (q/k/v
input, candidates) in front. Biases that are not part of a sender's output (`b_O`, `b_out`)
are left to the caller, which adds them to the residual stream.

>>> import torch
>>> from acdc.core.models import build_model, extract_weights
>>> model = build_model({"n_layers": 1, "d_model": 16, "n_heads": 2, "d_head": 8,
...                      "n_ctx": 8, "d_vocab": 20, "attn_only": True})
>>> logits, patterns = full_forward(extract_weights(model), torch.tensor([[1, 2, 3]]))
>>> tuple(logits.shape), tuple(patterns.shape)
((1, 3, 20), (1, 1, 2, 3, 3))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from acdc.core.weights import LayerWeights, Weights

Q, K, V = 0, 1, 2  # index of a head input in the q/k/v dimension


# --------------------------------------------------------------------------- residual stream


def embed(w: Weights, tokens: torch.Tensor) -> torch.Tensor:
    """The `input` sender: token plus position embedding, [batch, pos] -> [batch, pos, d_model]
    (token embedding alone with rotary positions, which enter at the attention)."""
    if w.W_pos is None:
        return w.W_E[tokens]
    return w.W_E[tokens] + w.W_pos[:tokens.shape[-1]]


def causal_mask(n_pos: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """[n_pos, n_pos] additive mask: 0 on and below the diagonal, -inf above (future keys)."""
    full = torch.full((n_pos, n_pos), float("-inf"), dtype=dtype, device=device)
    return torch.triu(full, diagonal=1)


def attention_mask(w: Weights, n_pos: int, dtype: torch.dtype, device: torch.device | str,
                   window: int | None = None) -> torch.Tensor:
    """The model's additive [n_pos, n_pos] mask: `causal_mask`, or zeros when every query
    reads every key (`attention_dir: bidirectional`; adding 0 changes no score). A local
    layer's `window` also hides the keys `window` or more positions before the query."""
    mask = (causal_mask(n_pos, dtype, device) if w.causal
            else torch.zeros(n_pos, n_pos, dtype=dtype, device=device))
    if window is not None:
        mask = mask.masked_fill(hidden_keys(torch.arange(n_pos, device=device), n_pos,
                                            w.causal, window), float("-inf"))
    return mask


def hidden_keys(queries: torch.Tensor, n_keys: int, causal: bool,
                window: int | None) -> torch.Tensor:
    """[n_queries, n_keys] bool, True for the keys a query at position `queries[j]` does not
    read: later ones (causal attention), and those `window` or more positions back (a local
    layer)."""
    keys = torch.arange(n_keys, device=queries.device)[None, :]
    hidden = keys > queries[:, None] if causal else torch.zeros(
        len(queries), n_keys, dtype=torch.bool, device=queries.device)
    if window is not None:
        hidden = hidden | (keys <= queries[:, None] - window)
    return hidden


def norm(x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, kind: str | None,
         eps: float) -> torch.Tensor:
    """LayerNorm / RMSNorm over the last dimension, as TransformerLens defines them (fused
    kernels: the engine calls this thousands of times on small tensors). `kind` is the
    model's `normalization`; the `*Pre` kinds have no weight or bias."""
    if kind is None:
        return x
    shape = x.shape[-1:]
    if kind in ("LN", "LNPre"):
        return F.layer_norm(x, shape, w if kind == "LN" else None, b if kind == "LN" else None, eps)
    return F.rms_norm(x, shape, w if kind == "RMS" else None, eps)


def norm_scale(x: torch.Tensor, kind: str | None, eps: float, out: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """How `norm` scales x: (1 / scale [..., 1], x_hat [..., d]) with
    `norm(x) = x_hat * w + b`: x_hat is x (centred, for LayerNorm) divided by its RMS. None
    without normalisation. (The attribution methods differentiate through a norm with these.)
    `out`: where to write x_hat."""
    if kind is None:
        return None
    if kind in ("LN", "LNPre"):
        x = x - x.mean(-1, keepdim=True)
    inverse = torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return inverse, torch.mul(x, inverse, out=out)


def rms_inverse(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / RMS of x over the last dimension, `[..., 1]`: RMSNorm's scale (`norm` with kind
    "RMS" is `x * rms_inverse(x) * w`, the same to rounding) from one reduction over x, where
    the fused kernel makes a squared copy of x first."""
    return torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()
                       .div_(x.shape[-1]).add_(eps))


# --------------------------------------------------------------------------- attention


def projections(lw: LayerWeights) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """((W_Q, b_Q), (W_K, b_K), (W_V, b_V)) of a layer, indexed by `Q`, `K`, `V`."""
    return (lw.W_Q, lw.b_Q), (lw.W_K, lw.b_K), (lw.W_V, lw.b_V)


def qkv(lw: LayerWeights, x: torch.Tensor, parts: tuple[int, ...] = (Q, K, V)) -> torch.Tensor:
    """q, k, v (those of `parts`) of every head from normalised inputs:
    [len(parts), n_heads, *tokens, d_head].

    `x` is [len(parts), n_heads, *tokens, d_model] (each head input its own residual copy) or
    [1, n_heads or 1, *tokens, d_model] (one copy serving every part; with n_heads 1, every
    head too). One batched matmul per projection, heads as the batch.
    """
    tokens, d_model = x.shape[2:-1], x.shape[-1]
    out = []
    for i, part in enumerate(parts):
        W, b = projections(lw)[part]
        xi = x[i if x.shape[0] > 1 else 0].reshape(-1, tokens.numel(), d_model)
        out.append((torch.matmul(xi, W) + b[:, None, :]).view(W.shape[0], *tokens, -1))
    return torch.stack(out)


def folded_projections(w: Weights, lw: LayerWeights, parts: tuple[int, ...], shared: bool,
                       inputs_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The `parts` of a layer's q/k/v projections with its first norm's weight and bias folded
    in: for x_hat the normalised input without them (`normalise_`), x_hat @ W + b is
    norm(x) @ W_Q + b_Q, and likewise for k and v. One set per head input: weights
    [inputs, d_model, width] (`inputs_first`; else [d_model, inputs, width]) and biases
    [inputs, width]. Inputs: the heads of each part in turn, width d_head; `shared` (one input
    per head feeding all its parts): the heads, width len(parts) * d_head."""
    chosen = [projections(lw)[part] for part in parts]
    blocks = [W if inputs_first else W.transpose(0, 1) for W, _ in chosen]
    W = torch.cat(blocks, -1 if shared else (0 if inputs_first else 1))
    b = torch.cat([b for _, b in chosen], -1 if shared else 0)
    if w.normalization in ("LN", "RMS") and lw.ln1_w is not None:
        if lw.ln1_b is not None:
            b = b + torch.tensordot(lw.ln1_b, W, dims=([0], [1 if inputs_first else 0]))
        W.mul_(lw.ln1_w[:, None] if inputs_first else lw.ln1_w[:, None, None])
    return W, b


def normalise_(x: torch.Tensor, kind: str | None, eps: float) -> None:
    """A norm without its weight and bias (`folded_projections` holds them), in place on x
    [..., d_model]: centred (LayerNorm) and scaled by `rms_inverse`."""
    if kind is None:
        return
    if kind in ("LN", "LNPre"):
        x.sub_(x.mean(-1, keepdim=True))
    x.mul_(rms_inverse(x, eps))


def qkv_wide(lw: LayerWeights, x: torch.Tensor) -> torch.Tensor:
    """q, k, v of every head from one normalised input x [..., d_model] read by all of them:
    [3, n_heads, ..., d_head], from one matrix product with the three projections side by
    side (for many rows, faster than `qkv`'s product per head; the same values to rounding)."""
    lead, d_model = x.shape[:-1], x.shape[-1]
    weights = torch.stack([W for W, _ in projections(lw)])  # [3, heads, d_model, d_head]
    n_heads, d_head = weights.shape[1], weights.shape[-1]
    wide = weights.permute(2, 0, 1, 3).reshape(d_model, -1)
    bias = torch.stack([b for _, b in projections(lw)]).reshape(-1)
    out = torch.addmm(bias, x.reshape(-1, d_model), wide)  # [rows, 3 * heads * d_head]
    return out.view(-1, 3, n_heads, d_head).permute(1, 2, 0, 3).reshape(
        3, n_heads, *lead, d_head)


def heads_sum(lw: LayerWeights, z: torch.Tensor) -> torch.Tensor:
    """The sum of every head's output `z @ W_O` (no `b_O`): z [n_heads, ..., d_head] ->
    [..., d_model], one matrix product over heads and d_head together."""
    n_heads, lead, d_head = z.shape[0], z.shape[1:-1], z.shape[-1]
    flat = z.reshape(n_heads, -1, d_head).permute(1, 0, 2).reshape(-1, n_heads * d_head)
    return (flat @ lw.W_O.reshape(n_heads * d_head, -1)).view(*lead, -1)


def stacked_projections(lw: LayerWeights, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The q, k and v projections of every head as one batched product's weights and biases:
    `shared` False, one per head input ([3 * n_heads, d_model, d_head] and
    [3 * n_heads, 1, d_head], q heads then k heads then v heads); `shared` True, one input per
    head feeding its q, k and v ([n_heads, d_model, 3 * d_head] and [n_heads, 1, 3 * d_head])."""
    W = torch.stack([W for W, _ in projections(lw)])  # [3, heads, d_model, d_head]
    b = torch.stack([b for _, b in projections(lw)])  # [3, heads, d_head]
    if shared:
        return W.permute(1, 2, 0, 3).flatten(2), b.permute(1, 0, 2).flatten(1)[:, None]
    return W.flatten(0, 1), b.flatten(0, 1)[:, None]


def stacked_qkv(weights: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`qkv` with `stacked_projections`: x [inputs, n_heads, batch, pos, d_model] (inputs 3, or
    1 with `shared` weights) -> [3, n_heads, batch, pos, d_head], one batched product."""
    W, b = weights
    inputs, heads, batch, n_pos, d_model = x.shape
    out = torch.baddbmm(b, x.reshape(inputs * heads, batch * n_pos, d_model), W)
    if inputs == 3:
        return out.view(3, heads, batch, n_pos, -1)
    return out.view(heads, batch, n_pos, 3, -1).permute(3, 0, 1, 2, 4)


def head_qkv(lw: LayerWeights, x: torch.Tensor, i: int, head: int) -> torch.Tensor:
    """One head's query (i = Q), key (K) or value (V) from its normalised input x [..., d_model]."""
    W, b = projections(lw)[i]
    return x @ W[head] + b[head]


def normed_head_qkv(w: Weights, lw: LayerWeights, x: torch.Tensor, inputs: tuple[int, ...],
                    head: int) -> list[torch.Tensor]:
    """`head_qkv` of `norm(x)` (the layer's first norm) for each of `inputs` (Q, K, V), from
    the un-normalised input x [..., d_model]. With RMSNorm the norm's weight is folded into
    the head's d_model x d_head projection and its scale multiplies the d_head-wide product:
    of the d_model-wide passes over x only the scale's reduction is left (the same values to
    rounding)."""
    if w.normalization not in ("RMS", "RMSPre"):
        x = norm(x, lw.ln1_w, lw.ln1_b, w.normalization, w.eps)
        return [head_qkv(lw, x, i, head) for i in inputs]
    inverse = rms_inverse(x, w.eps)
    out = []
    for i in inputs:
        W, b = projections(lw)[i]
        W = W[head] if w.normalization == "RMSPre" or lw.ln1_w is None else (
            lw.ln1_w[:, None] * W[head])
        out.append(torch.addcmul(b[head], x @ W, inverse))
    return out


def rotate(w: Weights, lw: LayerWeights, x: torch.Tensor, positions: torch.Tensor
           ) -> torch.Tensor:
    """Rotary positions: queries or keys x [..., n, d_head] at `positions` [n] (absolute
    positions in their prompts), rotated on their first `rotary_dim` dimensions, in pairs of
    (i, i + rotary_dim / 2) (NeoX layout) or adjacent pairs (GPT-J layout). Identity without
    rotary positions.

    The engine keeps q and k unrotated (TransformerLens' `hook_q`, `hook_k`) and rotates them
    where attention reads them, so that an ablated query (a removed direct edge, a mean over
    positions) is rotated at the position that reads it."""
    if lw.rotary_sin is None or lw.rotary_cos is None:
        return x
    dim = w.rotary_dim
    part, rest = x[..., :dim], x[..., dim:]
    if w.rotary_adjacent:
        pairs = part.unflatten(-1, (-1, 2))
        flipped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    else:
        half = dim // 2
        flipped = torch.cat((-part[..., half:], part[..., :half]), dim=-1)
    rotated = part * lw.rotary_cos[positions] + flipped * lw.rotary_sin[positions]
    return torch.cat((rotated, rest), dim=-1) if rest.shape[-1] else rotated


def soft_cap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """`cap * tanh(x / cap)` (Gemma 2's attention scores and logits); identity for cap 0."""
    return cap * torch.tanh(x / cap) if cap > 0 else x


def attention_pattern(q: torch.Tensor, k: torch.Tensor, scale: float, mask: torch.Tensor,
                      cap: float = 0.0) -> torch.Tensor:
    """softmax(cap(q k^T / scale) + mask) over the keys: [..., queries, keys]. `mask` is the
    slice of `attention_mask` for these queries and keys; q and k are rotated already."""
    return torch.softmax(soft_cap(q @ k.transpose(-1, -2) / scale, cap) + mask, dim=-1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           mask: torch.Tensor, cap: float = 0.0) -> torch.Tensor:
    """z, the attention-weighted values [..., queries, d_head], for q [..., queries, d_head] and
    k, v [..., keys, d_head] of the same prompts (q and k rotated already)."""
    return attention_pattern(q, k, scale, mask, cap) @ v


def attend_at(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
              prompt: torch.Tensor, hidden: torch.Tensor | None, cap: float = 0.0
              ) -> torch.Tensor:
    """z at scattered query positions: q [..., n, d_head] holds n queries, query j from prompt
    `prompt[j]`; k, v [..., batch, keys, d_head] every prompt's keys; `hidden` [n, keys] is True
    for the keys query j does not read (`hidden_keys`; None: every key is read). q and k are
    rotated already. Returns [..., n, d_head].

    The incremental engine reads most nodes at the metric positions only; gathering each
    query's own prompt turns n single-row attentions into one batched product.
    """
    keys = k[..., prompt, :, :]  # [..., n, keys, d_head]: each query's prompt
    scores = soft_cap((keys @ q[..., None])[..., 0] / scale, cap)  # [..., n, keys]
    if hidden is not None:
        scores = scores.masked_fill(hidden, float("-inf"))
    return (torch.softmax(scores, dim=-1)[..., None, :] @ v[..., prompt, :, :])[..., 0, :]


def attention_out(w: Weights, lw: LayerWeights, heads: torch.Tensor) -> torch.Tensor:
    """What a layer's attention adds to the residual stream, from the sum of its heads'
    outputs [..., d_model]: `heads + b_O`, normalised first with post-attention norms."""
    if w.post_norm:
        return norm(heads + lw.b_O, lw.ln1_post_w, lw.ln1_post_b, w.normalization, w.eps)
    return heads + lw.b_O


def head_outputs(lw: LayerWeights, z: torch.Tensor) -> torch.Tensor:
    """Every head's output `z @ W_O` (no `b_O`): z [n_heads, batch, pos, d_head] ->
    [n_heads, batch, pos, d_model], one bmm with heads as the batch."""
    heads, batch, n_pos, d_head = z.shape
    return torch.bmm(z.reshape(heads, batch * n_pos, d_head), lw.W_O).view(heads, batch, n_pos, -1)


def head_output(lw: LayerWeights, z: torch.Tensor, head: int) -> torch.Tensor:
    """One head's output `z @ W_O[head]` (no `b_O`): [..., d_head] -> [..., d_model]."""
    return z @ lw.W_O[head]


# --------------------------------------------------------------------------- MLP, unembedding


def mlp(w: Weights, lw: LayerWeights, x: torch.Tensor) -> torch.Tensor:
    """The MLP's output from its un-normalised input x [..., d_model], without `b_out` (a bias,
    not part of the sender; `mlp_bias`). Gated (`act(x W_gate) * (x W_in) + b_in`) when the
    model has `W_gate`, else `act(x W_in + b_in)`. With post-MLP norms the output is
    `norm(... + b_out)`, all of what the MLP adds to the residual stream."""
    # a layer with an MLP
    assert lw.W_in is not None and lw.b_in is not None and lw.W_out is not None
    x = norm(x, lw.ln2_w, lw.ln2_b, w.normalization, w.eps)
    if lw.W_gate is not None:
        hidden = w.act(x @ lw.W_gate) * (x @ lw.W_in) + lw.b_in
    else:
        hidden = w.act(x @ lw.W_in + lw.b_in)
    if w.post_norm:
        out = hidden @ lw.W_out
        if lw.b_out is not None:
            out = out + lw.b_out
        return norm(out, lw.ln2_post_w, lw.ln2_post_b, w.normalization, w.eps)
    return hidden @ lw.W_out


def mlp_bias(w: Weights, lw: LayerWeights) -> torch.Tensor | None:
    """The MLP's bias `b_out` as a term of the residual stream apart from the MLP's output
    (None: no bias, or one inside the post-MLP norm)."""
    return None if w.post_norm else lw.b_out


def attention_bias(w: Weights, lw: LayerWeights) -> torch.Tensor | None:
    """The attention's `b_O` as a term of the residual stream apart from its heads (None with
    post-attention norms: it is inside the norm, `attention_out`)."""
    return None if w.post_norm else lw.b_O


def unembed(w: Weights, x: torch.Tensor) -> torch.Tensor:
    """Logits [..., d_vocab] from the final residual x [..., d_model]: final norm, W_U, b_U."""
    x = norm(x, w.ln_final_w, w.ln_final_b, w.normalization, w.eps)
    return soft_cap(x @ w.W_U + w.b_U, w.logit_soft_cap)


class Unembedding:
    """`unembed(w, x)` as `P / scale(x) + c`, with `P = (centred(x) * g) @ W_U`.

    Taking the final norm's weight g and bias out of the normalisation (the bias into `c`)
    makes `P` linear in x, so a change of x by `dz @ W_O` changes `P` by `dz @ factor(W_O)`:
    the incremental engine updates the logits with a d_head-wide product instead of a
    d_model-wide one.
    """

    def __init__(self, w: Weights):
        self.kind, self.eps, self.cap = w.normalization, w.eps, w.logit_soft_cap
        self.centre = self.kind in ("LN", "LNPre")
        self.gain = w.ln_final_w if self.kind in ("LN", "RMS") else None
        self.W_U = w.W_U
        if self.kind == "LN" and w.ln_final_b is not None:  # the final norm has a bias
            self.c = w.ln_final_b @ w.W_U + w.b_U
        else:
            self.c = w.b_U

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.centre else x

    def project_centred(self, centred: torch.Tensor) -> torch.Tensor:
        return (centred if self.gain is None else centred * self.gain) @ self.W_U

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_centred(self.centred(x))

    def factor(self, W_O: torch.Tensor) -> torch.Tensor:
        """[d_head, d_vocab]: what one unit of z adds to P."""
        return self.project(W_O)

    def logits(self, projected: torch.Tensor, centred: torch.Tensor) -> torch.Tensor:
        """The logits from P and the centred input x (the scale's only use of x)."""
        if self.kind is None:
            return soft_cap(projected + self.c, self.cap)
        inverse_scale = torch.rsqrt(centred.square().mean(-1, keepdim=True) + self.eps)
        logits = torch.addcmul(self.c, projected, inverse_scale)
        if self.cap > 0:  # `soft_cap` in place: vocabulary-wide, no new tensor
            logits.div_(self.cap).tanh_().mul_(self.cap)
        return logits


# --------------------------------------------------------------------------- the plain forward


def full_forward(w: Weights, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ordinary forward pass of `tokens` [batch, pos]: (logits [batch, pos, d_vocab],
    attention patterns [n_layers, batch, n_heads, query, key]).

    The logits equal the model's own up to rounding (a test checks it against TransformerLens).
    """
    x = embed(w, tokens)
    n_pos = tokens.shape[-1]
    positions = torch.arange(n_pos, device=x.device)
    patterns = []
    for lw in w.layers:
        mask = attention_mask(w, n_pos, x.dtype, x.device, lw.window)
        h = norm(x, lw.ln1_w, lw.ln1_b, w.normalization, w.eps)
        q, k, v = qkv(lw, h[None, None])  # one residual copy for every head and input
        q, k = rotate(w, lw, q, positions), rotate(w, lw, k, positions)
        # [n_heads, batch, query, key]
        pattern = attention_pattern(q, k, w.attn_scale, mask, w.attn_soft_cap)
        patterns.append(pattern)
        attention = attention_out(w, lw, head_outputs(lw, pattern @ v).sum(0))
        if not w.attn_only:
            out = mlp(w, lw, x if w.parallel else x + attention)
            bias = mlp_bias(w, lw)
            x = x + attention + (out if bias is None else out + bias)
        else:
            x = x + attention
    return unembed(w, x), torch.stack(patterns).transpose(1, 2)
