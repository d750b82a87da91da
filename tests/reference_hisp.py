"""A slow, plain reference of HISP's unit scores: TransformerLens hooks and autograd.

Every head's `hook_result` (its `z @ W_O`, without b_O) is multiplied by a gate, and every
MLP's output without its bias `b_out` (with post-sublayer norms the whole normalised
`hook_mlp_out`, which holds the bias inside the norm) by another; all gates are 1. For each
prompt separately the model runs on that prompt alone, its metric (the mean over its metric
positions, float64) is differentiated with respect to the gates, and the absolute gradients
are summed over prompts. Optionally each layer's scores (heads and MLP) are divided by their
joint L2 norm (at least 1e-6). Shares no code with `acdc/methods/hisp`.
"""

from __future__ import annotations

import torch
from reference_acdc import ungrouped


def _metric(metric: str, logits: torch.Tensor, clean_logits: torch.Tensor, prompt: list[int],
            positions: list[int], answers: list[int] | None,
            wrong: list[int] | None) -> torch.Tensor:
    values = []
    for p in positions:
        z = logits[p].double()
        logp = torch.log_softmax(z, -1)
        if metric == "logit_diff":
            values.append(-(z[answers].mean() - z[wrong].mean()))
        elif metric == "prob_diff":
            probs = logp.exp()
            values.append(-(probs[answers].sum() - probs[wrong].sum()))
        elif metric == "nll":
            target = prompt[p + 1] if p + 1 < len(prompt) else answers[0]
            values.append(-logp[target])
        else:
            raise ValueError(f"the reference differentiates task metrics only, not {metric!r}")
    return torch.stack(values).mean()


def reference_hisp(model, clean: list[list[int]], positions: list[list[int]],
                   answers: list[list[int]] | None, wrong: list[list[int]] | None,
                   metric: str, normalise: bool = True) -> dict[str, float]:
    """{"a0.h1": score, "m0": score, ...} for every head and MLP."""
    model = ungrouped(model)
    cfg = model.cfg
    model.set_use_attn_result(True)
    post_norm = bool(getattr(cfg, "use_normalization_before_and_after", False))
    dtype = next(model.parameters()).dtype
    head_gates = [torch.ones(cfg.n_heads, dtype=dtype, requires_grad=True)
                  for _ in range(cfg.n_layers)]
    mlp_gates = [torch.ones((), dtype=dtype, requires_grad=True) for _ in range(cfg.n_layers)]

    def gate_heads(result, hook, layer):
        return result * head_gates[layer][None, None, :, None]

    def gate_mlp(out, hook, layer):
        if post_norm:
            return out * mlp_gates[layer]
        bias = model.blocks[layer].mlp.b_out
        return (out - bias) * mlp_gates[layer] + bias

    hooks = []
    for layer in range(cfg.n_layers):
        hooks.append((f"blocks.{layer}.attn.hook_result",
                      lambda r, hook, layer=layer: gate_heads(r, hook, layer)))
        if not cfg.attn_only:
            hooks.append((f"blocks.{layer}.hook_mlp_out",
                          lambda o, hook, layer=layer: gate_mlp(o, hook, layer)))
    gates = head_gates + ([] if cfg.attn_only else mlp_gates)
    totals = [torch.zeros_like(g) for g in gates]
    try:
        for i, prompt in enumerate(clean):
            tokens = torch.tensor([prompt])
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)[0]
            value = _metric(metric, logits, logits.detach(), prompt, positions[i],
                            answers[i] if answers is not None else None,
                            wrong[i] if wrong is not None else None)
            grads = torch.autograd.grad(value, gates)
            totals = [t + g.abs() for t, g in zip(totals, grads, strict=True)]
    finally:
        model.set_use_attn_result(False)
    scores: dict[str, float] = {}
    for layer in range(cfg.n_layers):
        values = [float(v) for v in totals[layer]]
        names = [f"a{layer}.h{h}" for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            values.append(float(totals[cfg.n_layers + layer]))
            names.append(f"m{layer}")
        if normalise:
            norm = max(sum(v * v for v in values) ** 0.5, 1e-6)
            values = [v / norm for v in values]
        scores.update(zip(names, values, strict=True))
    return scores
