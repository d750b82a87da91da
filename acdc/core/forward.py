"""The block arithmetic of a transformer, over the weights `models.extract_weights` copies out.

Every computation the project makes with a model's weights is written here once: the token
and position embedding, LayerNorm / RMSNorm, the per-head query, key and value projections,
attention (causal, or bidirectional as in tracr's compiled models), the head outputs
`z @ W_O`, the MLP and the unembedding. The three callers differ only in what they feed these
functions:

- `full_forward`: the ordinary forward pass (the residual stream is a running sum), returning
  logits and every attention pattern; the zoo reads attention through it, with no hook names.
- `patching.PatchedModel`: every receiver reads its own mix of live and ablated sender
  outputs, so there are up to three residual copies per head (q, k, v) and a pass may start at
  any layer.
- `propagation.IncrementalPatcher`: the same patched forward, recomputing one head or MLP at a
  time, often at the metric positions only, with a leading dimension for candidate circuits.

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

from acdc.core.models import LayerWeights, Weights

Q, K, V = 0, 1, 2  # index of a head input in the q/k/v dimension


# --------------------------------------------------------------------------- residual stream


def embed(w: Weights, tokens: torch.Tensor) -> torch.Tensor:
    """The `input` sender: token plus position embedding, [batch, pos] -> [batch, pos, d_model]."""
    return w.W_E[tokens] + w.W_pos[:tokens.shape[-1]]


def causal_mask(n_pos: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """[n_pos, n_pos] additive mask: 0 on and below the diagonal, -inf above (future keys)."""
    full = torch.full((n_pos, n_pos), float("-inf"), dtype=dtype, device=device)
    return torch.triu(full, diagonal=1)


def attention_mask(w: Weights, n_pos: int, dtype: torch.dtype,
                   device: torch.device | str) -> torch.Tensor:
    """The model's additive [n_pos, n_pos] mask: `causal_mask`, or zeros when every query
    reads every key (`attention_dir: bidirectional`; adding 0 changes no score)."""
    if w.causal:
        return causal_mask(n_pos, dtype, device)
    return torch.zeros(n_pos, n_pos, dtype=dtype, device=device)


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


# --------------------------------------------------------------------------- attention


def projections(lw: LayerWeights) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """((W_Q, b_Q), (W_K, b_K), (W_V, b_V)) of a layer, indexed by `Q`, `K`, `V`."""
    return (lw.W_Q, lw.b_Q), (lw.W_K, lw.b_K), (lw.W_V, lw.b_V)


def qkv(lw: LayerWeights, x: torch.Tensor) -> torch.Tensor:
    """q, k, v of every head from normalised inputs: [3, n_heads, batch, pos, d_head].

    `x` is [3, n_heads, batch, pos, d_model] (each head input its own residual copy) or
    [1, n_heads or 1, batch, pos, d_model] (one copy serving q, k and v; with n_heads 1, every
    head too). One batched matmul per projection, heads as the batch.
    """
    batch, n_pos, d_model = x.shape[2:]
    out = []
    for i, (W, b) in enumerate(projections(lw)):
        xi = x[i if x.shape[0] == 3 else 0].reshape(-1, batch * n_pos, d_model)
        out.append((torch.matmul(xi, W) + b[:, None, :]).view(W.shape[0], batch, n_pos, -1))
    return torch.stack(out)


def head_qkv(lw: LayerWeights, x: torch.Tensor, i: int, head: int) -> torch.Tensor:
    """One head's query (i = Q), key (K) or value (V) from its normalised input x [..., d_model]."""
    W, b = projections(lw)[i]
    return x @ W[head] + b[head]


def attention_pattern(q: torch.Tensor, k: torch.Tensor, scale: float,
                      mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / scale + mask) over the keys: [..., queries, keys]. `mask` is the slice
    of `attention_mask` for these queries and keys."""
    return torch.softmax(q @ k.transpose(-1, -2) / scale + mask, dim=-1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           mask: torch.Tensor) -> torch.Tensor:
    """z, the attention-weighted values [..., queries, d_head], for q [..., queries, d_head] and
    k, v [..., keys, d_head] of the same prompts."""
    return attention_pattern(q, k, scale, mask) @ v


def attend_at(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
              prompt: torch.Tensor, future: torch.Tensor | None) -> torch.Tensor:
    """z at scattered query positions: q [..., n, d_head] holds n queries, query j from prompt
    `prompt[j]`; k, v [..., batch, keys, d_head] every prompt's keys; `future` [n, keys] is True
    for the keys after query j (None: bidirectional attention, every key is read). Returns
    [..., n, d_head].

    The incremental engine reads most nodes at the metric positions only; gathering each
    query's own prompt turns n single-row attentions into one batched product.
    """
    keys = k[..., prompt, :, :]  # [..., n, keys, d_head]: each query's prompt
    scores = (keys @ q[..., None])[..., 0] / scale  # [..., n, keys]
    if future is not None:
        scores = scores.masked_fill(future, float("-inf"))
    return (torch.softmax(scores, dim=-1)[..., None, :] @ v[..., prompt, :, :])[..., 0, :]


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
    not part of the sender). Gated (`act(x W_gate) * (x W_in) + b_in`) when the model has
    `W_gate`, else `act(x W_in + b_in)`."""
    # a layer with an MLP
    assert lw.W_in is not None and lw.b_in is not None and lw.W_out is not None
    x = norm(x, lw.ln2_w, lw.ln2_b, w.normalization, w.eps)
    if lw.W_gate is not None:
        hidden = w.act(x @ lw.W_gate) * (x @ lw.W_in) + lw.b_in
    else:
        hidden = w.act(x @ lw.W_in + lw.b_in)
    return hidden @ lw.W_out


def unembed(w: Weights, x: torch.Tensor) -> torch.Tensor:
    """Logits [..., d_vocab] from the final residual x [..., d_model]: final norm, W_U, b_U."""
    x = norm(x, w.ln_final_w, w.ln_final_b, w.normalization, w.eps)
    return x @ w.W_U + w.b_U


class Unembedding:
    """`unembed(w, x)` as `P / scale(x) + c`, with `P = (centred(x) * g) @ W_U`.

    Taking the final norm's weight g and bias out of the normalisation (the bias into `c`)
    makes `P` linear in x, so a change of x by `dz @ W_O` changes `P` by `dz @ factor(W_O)`:
    the incremental engine updates the logits with a d_head-wide product instead of a
    d_model-wide one.
    """

    def __init__(self, w: Weights):
        self.kind, self.eps = w.normalization, w.eps
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
            return projected + self.c
        inverse_scale = torch.rsqrt(centred.square().mean(-1, keepdim=True) + self.eps)
        return torch.addcmul(self.c, projected, inverse_scale)


# --------------------------------------------------------------------------- the plain forward


def full_forward(w: Weights, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ordinary forward pass of `tokens` [batch, pos]: (logits [batch, pos, d_vocab],
    attention patterns [n_layers, batch, n_heads, query, key]).

    The logits equal the model's own up to rounding (a test checks it against TransformerLens).
    """
    x = embed(w, tokens)
    mask = attention_mask(w, tokens.shape[-1], x.dtype, x.device)
    patterns = []
    for lw in w.layers:
        h = norm(x, lw.ln1_w, lw.ln1_b, w.normalization, w.eps)
        q, k, v = qkv(lw, h[None, None])  # one residual copy for every head and input
        pattern = attention_pattern(q, k, w.attn_scale, mask)  # [n_heads, batch, query, key]
        patterns.append(pattern)
        x = x + head_outputs(lw, pattern @ v).sum(0) + lw.b_O
        if not w.attn_only:
            out = mlp(w, lw, x)
            x = x + (out if lw.b_out is None else out + lw.b_out)
    return unembed(w, x), torch.stack(patterns).transpose(1, 2)
