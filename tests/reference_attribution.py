"""A slow, plain reference for the attribution methods (EAP, EAP-IG), with TransformerLens
hooks and autograd, sharing no code with `acdc/methods/attribution/`.

Two independent ways to the same scores:

- `scores_by_masks`: every edge gets its own mask (a scalar tensor with `requires_grad`); a
  hooked forward pass patches each receiver's input to
  `input - sum over its edges of (1 - mask) * (live sender output - ablated sender output)`
  (and a head's q/k/v to `ablated + mask * (live - ablated)` for a direct edge), exactly the
  patched forward of ACDC (`reference_acdc.py`) with fractional masks. EAP's score is minus
  the metric's derivative with respect to the mask, at every mask 1. `masked_metric` evaluates
  the metric at any masks (finite differences).
- `scores_by_gradients`: the authors' construction. Backward hooks read the gradient of the
  metric with respect to every receiver's input (each head's own q/k/v input copy,
  `hook_q_input[:, :, h]`, the MLP's `hook_mlp_in`, the last `hook_resid_post`) and of every
  head's q/k/v (direct edges); the score is (ablated - clean sender output) . gradient. EAP-IG
  averages the gradients over passes whose input embedding is
  `ablated + alpha * (clean - ablated)`, alpha = k/m for k = 0 .. m - 1.

With norms after each sublayer (Gemma 2) a head's delta reaches a receiver through its
layer's norm of the summed heads (`reference_acdc.py`), which the receiver's gradient alone
does not score: there `scores_by_masks` is the reference. Its EAP-IG passes keep the clean
run's deltas (`fixed`), as the method defines them.

Positions: with `groups` (each prompt's tokens' group names) and `group_names`, every edge is
replicated per group (`edge@group`); an edge's mask scales its correction at the tokens of its
group only, and its gradient score is the product summed over those tokens.

Ablated values come from `reference_acdc.ablation_run` (corrupt, zero, mean,
mean-positional). Metrics are recomputed here in float64 torch, one (prompt, position) pair at
a time.
"""

from __future__ import annotations

import reference_acdc as ref
import torch


def metric_tensor(metric: str, logits: torch.Tensor, clean_logits: torch.Tensor,
                  clean: list[list[int]], positions: list[list[int]],
                  answers: list[list[int]] | None, wrong: list[list[int]] | None) -> torch.Tensor:
    """The metric (lower is better) as a differentiable float64 scalar."""
    values = []
    for i, prompt_positions in enumerate(positions):
        for p in prompt_positions:
            patched = logits[i, p].double()
            logp = torch.log_softmax(patched, -1)
            reference = clean_logits[i, p].double()
            if metric == "kl":
                ref_logp = torch.log_softmax(reference, -1)
                values.append((ref_logp.exp() * (ref_logp - logp)).sum())
            elif metric == "logit_diff":
                values.append(-(patched[answers[i]].mean() - patched[wrong[i]].mean()))
            elif metric == "prob_diff":
                probs = logp.exp()
                values.append(-(probs[answers[i]].sum() - probs[wrong[i]].sum()))
            elif metric == "nll":
                target = clean[i][p + 1] if p + 1 < len(clean[i]) else answers[i][0]
                values.append(-logp[target])
            elif metric == "l2":
                values.append((patched - reference).norm())
            else:
                raise ValueError(metric)
    return torch.stack(values).mean()


def _head_receiver(layer: int, head: int, qkv: str, granularity: str) -> str:
    return f"a{layer}.h{head}<{qkv}>" if granularity == "qkv" else f"a{layer}.h{head}"


def _hooked_pass(model, tokens, ablated: ref.Ablation, granularity: str,
                 masks: dict[str, torch.Tensor] | None, input_value: torch.Tensor | None,
                 grads: dict[str, torch.Tensor] | None, fixed: ref.Ablation | None = None,
                 nodes: dict[str, torch.Tensor] | None = None,
                 groups: list[list[str]] | None = None):
    """One hooked forward pass: receivers patched by `masks` (edge name -> scalar; missing:
    1), the input sender's output replaced by `input_value`, and the gradients of receiver
    inputs and q/k/v stored into `grads` when the metric is differentiated. `fixed`: the
    sender outputs whose difference from the ablated ones a mask scales (default: this
    pass's own). `nodes`: node masks (head or MLP name -> scalar): that sender's output in the
    residual stream becomes `ablated + z * (live - ablated)`, for every receiver alike."""
    nodes = nodes or {}
    model = ref.ungrouped(model)
    shape = ref.shape_of(model)
    post_norm = bool(model.cfg.use_normalization_before_and_after)
    rotary = model.cfg.positional_embedding_type == "rotary"
    head_sums: dict[int, torch.Tensor] = {}
    masks = masks or {}
    live: dict[str, torch.Tensor] = {}
    by_receiver: dict[str, list[tuple[str, torch.Tensor, object]]] = {}
    direct: dict[tuple[int, int, str], list[tuple[torch.Tensor, object]]] = {}
    for name, mask in masks.items():
        name, group = name.split("@") if "@" in name else (name, None)
        # 1.0, or 1 at the tokens of the edge's group
        at = ref._at(groups, group, tokens, model.cfg.dtype)
        sender, receiver = name.split("->")
        if "<" in sender:
            layer, head = ref._layer_head(receiver)
            direct.setdefault((layer, head, sender[-2]), []).append((mask, at))
        else:
            by_receiver.setdefault(receiver, []).append((sender, mask, at))

    def capture(x: torch.Tensor, key: str) -> torch.Tensor:
        if grads is not None and x.requires_grad:
            x.register_hook(lambda g: grads.__setitem__(key, g))
        return x

    def delta(sender: str) -> torch.Tensor:
        return (live if fixed is None else fixed.senders)[sender] - ablated.senders[sender]

    def correction(receiver: str):
        total = 0
        by_layer: dict[int, dict[str, torch.Tensor]] = {}
        for sender, mask, at in by_receiver.get(receiver, []):
            if post_norm and sender.startswith("a"):
                by_layer.setdefault(ref._layer_head(sender)[0], {}).setdefault(
                    sender, []).append((mask, at))
            else:
                total = total + (1 - mask) * at * delta(sender)
        for layer, heads in by_layer.items():
            patched_sum = model.blocks[layer].attn.b_O + sum(
                live[h] - sum((1 - m) * at for m, at in heads[h]) * delta(h) if h in heads
                else live[h] for h in (f"a{layer}.h{i}" for i in range(shape.n_heads)))
            post = model.blocks[layer].ln1_post
            total = total + (post(head_sums[layer]) - post(patched_sum))
        return total

    def embed_hook(x, hook):
        live["embed"] = x
        if rotary:  # the embedding is the whole input sender
            if input_value is None:
                live["input"] = x
            else:  # x - x: still a function of the weights, so receivers have gradients
                live["input"] = input_value + (x - x.detach())
            return live["input"]
        return x

    def pos_hook(x, hook):
        if input_value is None:
            live["input"] = live["embed"] + x
            return x
        live["input"] = input_value
        return input_value - live["embed"]

    def node_masked(x, name: str) -> torch.Tensor:
        if name not in nodes:
            return x
        return ablated.senders[name] + nodes[name] * (x - ablated.senders[name])

    def result_hook(x, hook, layer):
        x = torch.stack([node_masked(x[:, :, h], f"a{layer}.h{h}")
                         for h in range(shape.n_heads)], dim=2)
        for h in range(shape.n_heads):
            live[f"a{layer}.h{h}"] = x[:, :, h]
        head_sums[layer] = x.sum(2) + model.blocks[layer].attn.b_O
        return x

    def mlp_out_hook(x, hook, layer):
        bias = 0 if post_norm else model.blocks[layer].mlp.b_out
        live[f"m{layer}"] = node_masked(x - bias, f"m{layer}")
        return live[f"m{layer}"] + bias

    def head_input_hook(x, hook, layer, qkv):
        copies = []
        for h in range(shape.n_heads):
            receiver = _head_receiver(layer, h, qkv, granularity)
            copies.append(capture(x[:, :, h] - correction(receiver), f"{layer}.{h}.{qkv}.in"))
        return torch.stack(copies, dim=2)

    def qkv_hook(x, hook, layer, qkv):
        heads = []
        for h in range(shape.n_heads):
            value = x[:, :, h]
            for mask, at in direct.get((layer, h, qkv), []):
                base = ablated.qkv[(layer, h, qkv)]
                if fixed is None and not isinstance(at, torch.Tensor):
                    value = base + mask * (value - base)
                elif fixed is None:
                    value = value - at * (1 - mask) * (value - base)
                else:
                    value = value - at * (1 - mask) * (fixed.qkv[(layer, h, qkv)] - base)
            heads.append(capture(value, f"{layer}.{h}.{qkv}"))
        return torch.stack(heads, dim=2)

    def mlp_in_hook(x, hook, layer):
        return capture(x - correction(f"m{layer}"), f"m{layer}")

    def resid_post_hook(x, hook):
        return capture(x - correction("logits"), "logits")

    hooks = [("hook_embed", embed_hook)]
    if not rotary:
        hooks.append(("hook_pos_embed", pos_hook))
    for layer in range(shape.n_layers):
        block = f"blocks.{layer}"
        hooks.append((f"{block}.attn.hook_result", ref._bind(result_hook, layer=layer)))
        for qkv in ref.QKV:
            hooks.append((f"{block}.hook_{qkv}_input",
                          ref._bind(head_input_hook, layer=layer, qkv=qkv)))
            hooks.append((f"{block}.attn.hook_{qkv}", ref._bind(qkv_hook, layer=layer, qkv=qkv)))
        if shape.has_mlp:
            hooks.append((f"{block}.hook_mlp_in", ref._bind(mlp_in_hook, layer=layer)))
            hooks.append((f"{block}.hook_mlp_out", ref._bind(mlp_out_hook, layer=layer)))
    hooks.append((f"blocks.{shape.n_layers - 1}.hook_resid_post", resid_post_hook))
    with ref.hook_flags(model):
        return model.run_with_hooks(tokens, fwd_hooks=hooks)


class Problem:
    """A model, a task and an ablation, with the clean and ablated runs recorded."""

    def __init__(self, model, clean, corrupt, positions, answers, wrong, metric: str,
                 ablation: str = "corrupt", granularity: str = "qkv",
                 groups: list[list[str]] | None = None, group_names: list[str] | None = None):
        self.model, self.metric, self.granularity = model, metric, granularity
        self.groups = groups
        self.clean, self.positions, self.answers, self.wrong = clean, positions, answers, wrong
        self.tokens = ref.pad(clean)
        self.ablated = ref.ablation_run(model, self.tokens, ref.pad(corrupt), ablation,
                                        [len(c) for c in clean])
        with torch.no_grad():
            self.clean_logits = model(self.tokens)
        self.live = ref._run(model, self.tokens, set(), None, "qkv")[1]  # the clean run
        in_order = ref.edge_groups(ref.shape_of(model), granularity)
        if group_names is not None:
            in_order = ref.positional_groups(in_order, group_names)
        self.edges = [e for g in in_order for e in g.edges]

    def value(self, logits: torch.Tensor) -> torch.Tensor:
        return metric_tensor(self.metric, logits, self.clean_logits, self.clean, self.positions,
                             self.answers, self.wrong)

    def masked_metric(self, masks: dict[str, torch.Tensor | float],
                      nodes: dict[str, torch.Tensor | float] | None = None) -> torch.Tensor:
        """The metric with each named edge's mask at the given value (others at 1) and each
        named node's mask (`input`, heads, MLPs; others at 1)."""
        dtype = self.clean_logits.dtype
        masks = {k: torch.as_tensor(v, dtype=dtype) for k, v in masks.items()}
        nodes = {k: torch.as_tensor(v, dtype=dtype) for k, v in (nodes or {}).items()}
        value = None
        if "input" in nodes:
            ablated_input = self.ablated.senders["input"]
            value = ablated_input + nodes["input"] * (self.live.senders["input"] - ablated_input)
        logits = _hooked_pass(self.model, self.tokens, self.ablated, self.granularity, masks,
                              value, None, nodes=nodes, groups=self.groups)
        return self.value(logits)

    def scores_by_masks(self, alphas=(1.0,)) -> dict[str, float]:
        """Minus d metric / d mask at every mask 1, one mask per edge, averaged over the passes
        whose input is `ablated + alpha * (clean - ablated)` (the masks scaling the clean
        run's deltas): EAP at alpha 1 alone, EAP-IG otherwise."""
        dtype = self.clean_logits.dtype
        clean_input = self.live.senders["input"]
        ablated_input = self.ablated.senders["input"]
        scores = {e.name: 0.0 for e in self.edges}
        for alpha in alphas:
            masks = {e.name: torch.ones((), dtype=dtype, requires_grad=True) for e in self.edges}
            value = None if alpha == 1.0 else ablated_input + alpha * (clean_input - ablated_input)
            logits = _hooked_pass(self.model, self.tokens, self.ablated, self.granularity, masks,
                                  value, None, fixed=self.live, groups=self.groups)
            self.value(logits).backward()
            for name, mask in masks.items():
                scores[name] -= float(mask.grad) / len(alphas)
        self.model.zero_grad(set_to_none=True)
        ref.ungrouped(self.model).zero_grad(set_to_none=True)
        return scores

    def scores_by_gradients(self, alphas=(1.0,)) -> dict[str, float]:
        """(ablated - clean) . gradient at the receiver, averaged over the passes at alphas."""
        clean_input = self.live.senders["input"]
        ablated_input = self.ablated.senders["input"]
        scores = {e.name: 0.0 for e in self.edges}
        for alpha in alphas:
            grads: dict[str, torch.Tensor] = {}
            value = None if alpha == 1.0 else ablated_input + alpha * (clean_input - ablated_input)
            logits = _hooked_pass(self.model, self.tokens, self.ablated, self.granularity, {},
                                  value, grads)
            self.value(logits).backward()
            for e in self.edges:
                if e.sender is None:  # direct edge: the head's q/k/v to its ablated value
                    key = (e.layer, e.head, e.qkv)
                    change = self.ablated.qkv[key] - self.live.qkv[key]
                    grad = grads[f"{e.layer}.{e.head}.{e.qkv}"]
                else:
                    change = self.ablated.senders[e.sender] - self.live.senders[e.sender]
                    if e.receiver == "logits":
                        grad = grads["logits"]
                    elif e.receiver.startswith("m"):
                        grad = grads[e.receiver]
                    else:
                        qkvs = (e.qkv,) if self.granularity == "qkv" else ref.QKV
                        grad = sum(grads[f"{e.layer}.{e.head}.{q}.in"] for q in qkvs)
                at = ref._at(self.groups, e.group, self.tokens, change.dtype)
                scores[e.name] += float((at * change * grad).sum()) / len(alphas)
        self.model.zero_grad(set_to_none=True)
        return scores
