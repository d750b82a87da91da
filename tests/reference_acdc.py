"""A slow, plain reference implementation of ACDC, written from the ACDC paper's
description alone (Conmy et al. 2023; the documentation's "The graph" and "Methods" pages).

It exists to hold the fast engine (`acdc/engine.py` + `acdc/patching.py`) to the method: it
shares no code with them, and every edge test is one full hooked TransformerLens forward pass
on the clean prompts. Nothing here is clever; everything is spelled out.

The graph (the paper's):

- senders: `input` (hook_embed + hook_pos_embed; hook_embed alone with rotary positions),
  every head `a{l}.h{h}` (its `hook_result`, which excludes b_O) and every MLP `m{l}`
  (hook_mlp_out minus b_out);
- receivers, all read before their LayerNorm: `a{l}.h{h}<q|k|v>` (the head's own residual copy
  `blocks.l.hook_q_input[:, :, h]` ...), or at head granularity `a{l}.h{h}` (one patched copy
  feeding q, k and v alike), `m{l}` (`blocks.l.hook_mlp_in`) and `logits`
  (`blocks.{L-1}.hook_resid_post`, the input of ln_final);
- direct edges `a{l}.h{h}<q>->a{l}.h{h}` (q/k/v granularity only): removing one replaces the
  head's q (`hook_q`, after W_Q and b_Q) by its ablated value.

A patched forward pass: the input of receiver r is its normal input in this very pass minus,
for every removed edge w -> r, (live output of w in this pass - ablated output of w). The
ablated outputs come from the "ablation run": the forward pass on the corrupt prompts
(corrupt ablation), or the clean forward pass with every sender output set to zero (zero
ablation, where the residual is then the bias-only residual and its q/k/v are the bias-only
q/k/v). Mean ablations take the corrupt run and average every sender's output and every
head's q/k/v over the real tokens of the corrupt prompts, one prompt and position at a time:
over all of them (`mean`) or per position over the prompts that reach it (`mean-positional`);
padding after a prompt's end never counts.

Model families (the paper's graph, carried over):

- parallel blocks (`parallel_attn_mlp`): `m{l}` reads the block's input, not its own layer's
  heads;
- grouped-query attention: every query head has its own k and v input, the shared key/value
  projection applied to that head's residual copy. The reference runs on the equivalent model
  with one key/value head per query head (`ungrouped`), whose hooks give those inputs;
- norms after each sublayer (`use_normalization_before_and_after`, Gemma 2): a layer's heads
  reach the residual as `ln1_post(b_O + sum of their results)`, so a receiver with removed
  edges from heads of layer L reads `ln1_post(b_O + the kept heads' live results + the removed
  heads' ablated results)` in place of the live `ln1_post(...)`; an MLP sender is its whole
  `hook_mlp_out` (b_out is inside the norm);
- rotary positions, local attention and soft-capping are TransformerLens' own forward: a
  removed direct edge replaces `hook_q` / `hook_k`, before the rotation.

Positions (auto-circuit's token-specific edges): given `groups` (per prompt, the name of the
position group of each of its tokens; its padding in none) and `group_names` (their order),
every edge exists once per group, named `edge@group`. Removing `s->r@g` subtracts
(live s - ablated s) from r's input at the tokens of group g only; removing a direct edge at g
replaces the head's q (k, v) by its ablated value at the tokens of g only. The visiting order
is the blind one with every group of edges repeated for each group name in order. A group of
edges (one receiver, one group) is removed untested when:

- its group is inert: with causal attention, each of its tokens lies after its prompt's last
  metric position or, under corrupt ablation, before the first token where the prompt's clean
  and corrupt tokens differ;
- it goes into `logits` at a group without a metric position;
- it goes into an MLP at g, or is a head's direct q edge at g, and no kept edge leaves that
  node at g;
- it is a head's direct k or v edge at g (or, at head granularity, goes into the head at g)
  and no kept edge leaves the head at any group;
- it goes into a head's q, k or v input at g and that input's direct edge at g is removed.

Usage: `reference_acdc(model, clean, corrupt, positions, answers, wrong_answers, threshold)`
returns `{"a1.h0->logits": (kept, score), ...}` for every edge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

QKV = ("q", "k", "v")


# --------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class RefEdge:
    """An edge: residual (`sender` set) or direct (`sender` None, `qkv` set)."""

    name: str
    receiver: str  # receiver name: "logits", "m1", "a1.h2<q>", or "a1.h2" (head granularity)
    sender: str | None  # residual edges only
    layer: int  # layer of the receiver (n_layers for logits)
    head: int | None
    qkv: str | None  # "q"/"k"/"v" for q/k/v receivers and direct edges
    group: str | None = None  # the position group of a positional edge


@dataclass(frozen=True)
class RefGroup:
    """Edges visited together, and the node whose liveness decides whether they are tested
    (and, for positional edges, their position group)."""

    node: str
    edges: tuple[RefEdge, ...]
    group: str | None = None


@dataclass(frozen=True)
class RefShape:
    n_layers: int
    n_heads: int
    has_mlp: bool
    parallel: bool = False


def shape_of(model) -> RefShape:
    cfg = model.cfg
    return RefShape(cfg.n_layers, cfg.n_heads, not cfg.attn_only, bool(cfg.parallel_attn_mlp))


_UNGROUPED: dict[int, tuple[object, object]] = {}  # id(model) -> (model, its ungrouped copy)


def ungrouped(model):
    """The same model with one key/value head per query head (each a copy of the key/value
    head it shares): its `hook_k_input` / `hook_v_input` hold one residual copy per query
    head. A model without grouped-query attention is returned as it is."""
    cfg = model.cfg
    if cfg.n_key_value_heads in (None, cfg.n_heads):
        return model
    known = _UNGROUPED.get(id(model))
    if known is not None and known[0] is model:
        return known[1]
    repeat = cfg.n_heads // cfg.n_key_value_heads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # HookedTransformer in TL 3.x
        copy = type(model)(dataclasses.replace(cfg, n_key_value_heads=None))
    state = {}
    for name, value in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("_W_K", "_W_V", "_b_K", "_b_V"):
            name = name[:-len(leaf)] + leaf[1:]
            value = value.repeat_interleave(repeat, dim=0)
        state[name] = value
    copy.load_state_dict(state, strict=False)
    copy.eval()
    _UNGROUPED[id(model)] = (model, copy)
    return copy


def _heads(shape: RefShape, reverse_head_order: bool) -> list[int]:
    """Heads in visiting order: highest index first, or 0 upwards when reversed."""
    heads = list(range(shape.n_heads))
    return heads if reverse_head_order else heads[::-1]


def _senders_read_by(shape: RefShape, layer: int, kind: str, reverse_head_order: bool) -> list[str]:
    """The senders a receiver at `layer` reads, in visiting order: latest layer first, within a
    layer the MLP before the heads, heads in head order, `input` last.

    `kind` is "head" (reads layers < layer), "mlp" (also reads the heads of its own layer) or
    "logits" (layer = n_layers, reads everything).
    """
    names: list[str] = []
    last = layer if kind == "mlp" and not shape.parallel else layer - 1
    for sender_layer in range(last, -1, -1):
        if shape.has_mlp and sender_layer < layer:
            names.append(f"m{sender_layer}")
        names += [f"a{sender_layer}.h{h}" for h in _heads(shape, reverse_head_order)]
    names.append("input")
    return names


def edge_groups(shape: RefShape, granularity: str = "qkv",
                reverse_head_order: bool = False) -> list[RefGroup]:
    """Every edge, grouped and ordered as ACDC visits them (the documentation's "Methods"
    page, ACDC, "Order").

    Layers from last to first. Within a layer: `logits` (last layer only), the MLP input, then
    (q/k/v granularity) the direct edges of every head's v, then k, then q, then the residual
    edges into every head's v input, then k, then q inputs; at head granularity the residual
    edges into every head.
    """
    groups: list[RefGroup] = []
    heads = _heads(shape, reverse_head_order)

    def residual_group(receiver: str, layer: int, kind: str, head=None, qkv=None) -> RefGroup:
        senders = _senders_read_by(shape, layer, kind, reverse_head_order)
        edges = tuple(RefEdge(f"{s}->{receiver}", receiver, s, layer, head, qkv) for s in senders)
        return RefGroup(receiver, edges)

    for layer in range(shape.n_layers - 1, -1, -1):
        if layer == shape.n_layers - 1:
            groups.append(residual_group("logits", shape.n_layers, "logits"))
        if shape.has_mlp:
            groups.append(residual_group(f"m{layer}", layer, "mlp"))
        if granularity == "qkv":
            for qkv in ("v", "k", "q"):
                for h in heads:
                    edge = RefEdge(f"a{layer}.h{h}<{qkv}>->a{layer}.h{h}", f"a{layer}.h{h}<{qkv}>",
                                   None, layer, h, qkv)
                    groups.append(RefGroup(f"a{layer}.h{h}", (edge,)))
            for qkv in ("v", "k", "q"):
                for h in heads:
                    groups.append(residual_group(f"a{layer}.h{h}<{qkv}>", layer, "head", h, qkv))
        elif granularity == "head":
            for h in heads:
                groups.append(residual_group(f"a{layer}.h{h}", layer, "head", h, None))
        else:
            raise ValueError(f"unknown granularity {granularity!r}")
    return groups


def positional_groups(groups: list[RefGroup], group_names: list[str]) -> list[RefGroup]:
    """Every group of edges once per position group, in the order of `group_names`."""
    out = []
    for group in groups:
        for name in group_names:
            edges = tuple(dataclasses.replace(e, name=f"{e.name}@{name}", group=name)
                          for e in group.edges)
            out.append(RefGroup(group.node, edges, name))
    return out


def edge_order(shape: RefShape, granularity: str = "qkv",
               reverse_head_order: bool = False) -> list[str]:
    """Edge names in visiting order."""
    return [e.name for g in edge_groups(shape, granularity, reverse_head_order) for e in g.edges]


def _outgoing(groups: list[RefGroup], node: str, at: str | None = None) -> list[str]:
    """Names of the edges leaving `node` (at position group `at` only, when given).

    A head or MLP sends residual edges; a q/k/v input receiver `a1.h2<q>` sends only its
    direct edge into the head.
    """
    out = []
    for group in groups:
        for edge in group.edges:
            if at is not None and edge.group != at:
                continue
            if edge.sender == node or (edge.sender is None and edge.receiver == node):
                out.append(edge.name)
    return out


# --------------------------------------------------------------------------- forward passes


@contextlib.contextmanager
def hook_flags(model) -> Iterator[None]:
    """Turn on the hooks the graph needs (split q/k/v inputs, per-head results, mlp_in) and
    restore the model's previous settings afterwards."""
    cfg = model.cfg
    before = (cfg.use_split_qkv_input, cfg.use_attn_result, cfg.use_hook_mlp_in)
    model.set_use_split_qkv_input(True)
    model.set_use_attn_result(True)
    if not cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    try:
        yield
    finally:
        model.set_use_split_qkv_input(before[0])
        model.set_use_attn_result(before[1])
        if not cfg.attn_only:
            model.set_use_hook_mlp_in(before[2])


def pad(prompts: list[list[int]], value: int = 0) -> torch.Tensor:
    """Right-pad token lists into one [batch, pos] tensor (causal attention ignores the pad;
    bidirectional models get prompts of one length)."""
    width = max(len(p) for p in prompts)
    return torch.tensor([list(p) + [value] * (width - len(p)) for p in prompts], dtype=torch.long)


@dataclass
class Ablation:
    """What a removed edge reads instead of its sender's live output."""

    senders: dict[str, torch.Tensor]  # sender name -> [batch, pos, d_model]
    qkv: dict[tuple[int, int, str], torch.Tensor]  # (layer, head, "q") -> [batch, pos, d_head]


def _at(groups: list[list[str]] | None, name: str | None, tokens: torch.Tensor,
        dtype: torch.dtype = torch.float32) -> torch.Tensor | float:
    """1.0 at the tokens of position group `name`, 0.0 elsewhere (padding included), as a
    [batch, pos, 1] tensor of `dtype`; the number 1.0 for a position-blind edge (`name`
    None)."""
    if name is None:
        return 1.0
    assert groups is not None, "positional edges need the tokens' groups"
    mask = torch.zeros(tokens.shape[0], tokens.shape[1], 1, dtype=dtype)
    for b, row in enumerate(groups):
        for p, group in enumerate(row):
            if group == name:
                mask[b, p, 0] = 1.0
    return mask


def _run(model, tokens: torch.Tensor, removed: set[str], ablation: Ablation | None,
         granularity: str, zero_senders: bool = False,
         groups: list[list[str]] | None = None) -> tuple[torch.Tensor, Ablation]:
    """One hooked forward pass; returns the logits and every sender's live output and q/k/v.

    `removed` names the removed edges (patched against `ablation`); a positional edge
    `x->y@g` is removed at the tokens of group g only (`groups`: each prompt's tokens' group
    names). With `zero_senders`, every sender's output is replaced by zero (this is the
    zero-ablation run).
    """
    model = ungrouped(model)
    shape = shape_of(model)
    live: dict[str, torch.Tensor] = {}
    live_qkv: dict[tuple[int, int, str], torch.Tensor] = {}
    removed_into: dict[str, list[tuple[str, str | None]]] = {}
    removed_direct: dict[tuple[int, int, str], list[str | None]] = {}
    for name in removed:
        name, group = name.split("@") if "@" in name else (name, None)
        sender, receiver = name.split("->")
        if "<" in sender:  # direct edge a1.h2<q>->a1.h2
            layer, head = _layer_head(receiver)
            removed_direct.setdefault((layer, head, sender[-2]), []).append(group)
        else:
            removed_into.setdefault(receiver, []).append((sender, group))

    post_norm = bool(model.cfg.use_normalization_before_and_after)
    head_sums: dict[int, torch.Tensor] = {}  # layer -> b_O + sum of its live head results

    def correction(receiver: str) -> torch.Tensor | int:
        total: torch.Tensor | int = 0
        by_layer: dict[int, list[tuple[str, str | None]]] = {}
        for sender, group in removed_into.get(receiver, []):
            if post_norm and sender.startswith("a"):
                by_layer.setdefault(_layer_head(sender)[0], []).append((sender, group))
            else:
                change = live[sender] - ablation.senders[sender]
                total = total + _at(groups, group, tokens, change.dtype) * change
        for layer, heads in by_layer.items():
            # the sum this receiver reads, written out (not live_sum - changes: a norm of
            # rounding noise, where every head is zero-ablated, is far from the norm of zero);
            # token by token, a head removed at a token reads its ablated result there
            def read(h: str, heads: list[tuple[str, str | None]] = heads) -> torch.Tensor:
                at = [g for s, g in heads if s == h]
                if not at:
                    return live[h]
                if None in at:
                    return ablation.senders[h]
                removed_at = sum(_at(groups, g, tokens) for g in at)
                return torch.where(removed_at > 0, ablation.senders[h], live[h])

            patched_sum = model.blocks[layer].attn.b_O + sum(
                read(h) for h in (f"a{layer}.h{i}" for i in range(shape.n_heads)))
            post = model.blocks[layer].ln1_post
            total = total + (post(head_sums[layer]) - post(patched_sum))
        return total

    def embed_hook(x, hook):
        live["embed"] = torch.zeros_like(x) if zero_senders else x
        live["input"] = live["embed"]  # with rotary positions, nothing else is added
        return live["embed"]

    def pos_embed_hook(x, hook):
        x = torch.zeros_like(x) if zero_senders else x
        live["input"] = live["embed"] + x
        return x

    def result_hook(x, hook, layer):
        if zero_senders:
            x = torch.zeros_like(x)
        for h in range(shape.n_heads):
            live[f"a{layer}.h{h}"] = x[:, :, h]
        head_sums[layer] = x.sum(2) + model.blocks[layer].attn.b_O
        return x

    def mlp_out_hook(x, hook, layer):
        b_out = 0 if post_norm else model.blocks[layer].mlp.b_out  # inside the post-MLP norm
        if zero_senders:
            x = torch.zeros_like(x) + b_out
        live[f"m{layer}"] = x - b_out
        return x

    def head_input_hook(x, hook, layer, qkv):
        x = x.clone()
        for h in range(shape.n_heads):
            receiver = f"a{layer}.h{h}<{qkv}>" if granularity == "qkv" else f"a{layer}.h{h}"
            x[:, :, h] = x[:, :, h] - correction(receiver)
        return x

    def qkv_hook(x, hook, layer, qkv):
        x = x.clone()
        for h in range(shape.n_heads):
            for group in removed_direct.get((layer, h, qkv), []):
                at = _at(groups, group, tokens)
                x[:, :, h] = torch.where(torch.as_tensor(at) > 0, ablation.qkv[(layer, h, qkv)],
                                         x[:, :, h])
            live_qkv[(layer, h, qkv)] = x[:, :, h]
        return x

    def mlp_in_hook(x, hook, layer):
        return x - correction(f"m{layer}")

    def resid_post_hook(x, hook):
        return x - correction("logits")

    hooks = [("hook_embed", embed_hook)]
    if model.cfg.positional_embedding_type != "rotary":
        hooks.append(("hook_pos_embed", pos_embed_hook))
    for layer in range(shape.n_layers):
        block = f"blocks.{layer}"
        hooks.append((f"{block}.attn.hook_result", _bind(result_hook, layer=layer)))
        for qkv in QKV:
            hooks.append((f"{block}.hook_{qkv}_input",
                          _bind(head_input_hook, layer=layer, qkv=qkv)))
            hooks.append((f"{block}.attn.hook_{qkv}", _bind(qkv_hook, layer=layer, qkv=qkv)))
        if shape.has_mlp:
            hooks.append((f"{block}.hook_mlp_in", _bind(mlp_in_hook, layer=layer)))
            hooks.append((f"{block}.hook_mlp_out", _bind(mlp_out_hook, layer=layer)))
    hooks.append((f"blocks.{shape.n_layers - 1}.hook_resid_post", resid_post_hook))

    with torch.no_grad(), hook_flags(model):
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits, Ablation(live, live_qkv)


def _bind(fn, **kwargs):
    return lambda x, hook: fn(x, hook, **kwargs)


def _layer_head(node: str) -> tuple[int, int]:
    layer, head = node[1:].split(".h")
    return int(layer), int(head)


def ablation_run(model, clean: torch.Tensor, corrupt: torch.Tensor, ablation: str,
                 lengths: list[int] | None = None) -> Ablation:
    """The senders' outputs and q/k/v that removed edges read. `lengths`: the prompts' real
    lengths (mean ablations average only those tokens; default: the whole width)."""
    with torch.no_grad():
        if ablation == "corrupt":
            return _run(model, corrupt, set(), None, "qkv")[1]
        if ablation == "zero":
            return _run(model, clean, set(), None, "qkv", zero_senders=True)[1]
        if ablation in ("mean", "mean-positional"):
            run = _run(model, corrupt, set(), None, "qkv")[1]
            if lengths is None:
                lengths = [corrupt.shape[1]] * corrupt.shape[0]
            positional = ablation == "mean-positional"
            return Ablation({k: _mean(v, lengths, positional) for k, v in run.senders.items()},
                            {k: _mean(v, lengths, positional) for k, v in run.qkv.items()})
    raise ValueError(f"unknown ablation {ablation!r}")


def _mean(values: torch.Tensor, lengths: list[int], positional: bool) -> torch.Tensor:
    """values [batch, pos, d] averaged over the real tokens, as a [batch, pos, d] tensor that
    holds the mean everywhere (`positional`: position p holds the mean over the prompts that
    are longer than p)."""
    batch, n_pos, _ = values.shape
    out = torch.zeros_like(values)
    if positional:
        for p in range(n_pos):
            rows = [values[b, p] for b in range(batch) if p < lengths[b]]
            out[:, p] = sum(rows) / len(rows)
        return out
    tokens = [values[b, p] for b in range(batch) for p in range(lengths[b])]
    out[:] = sum(tokens) / len(tokens)
    return out


def patched_logits(model, clean: torch.Tensor, ablated: Ablation, removed: set[str],
                   granularity: str = "qkv", groups: list[list[str]] | None = None
                   ) -> torch.Tensor:
    """Logits of the clean prompts with the edges in `removed` removed."""
    return _run(model, clean, removed, ablated, granularity, groups=groups)[0]


# --------------------------------------------------------------------------- metrics


METRICS = ("kl", "logit_diff", "prob_diff", "nll", "l2")


def metric_value(metric: str, logits: torch.Tensor, clean_logits: torch.Tensor,
                 clean: list[list[int]], positions: list[list[int]],
                 answers: list[list[int]] | None, wrong_answers: list[list[int]] | None) -> float:
    """The metric (lower is better), averaged over every (prompt, position) pair, in float64."""
    values = []
    for i, prompt_positions in enumerate(positions):
        for p in prompt_positions:
            patched = logits[i, p].double()
            reference = clean_logits[i, p].double()
            logp = torch.log_softmax(patched, -1)
            if metric == "kl":
                ref_logp = torch.log_softmax(reference, -1)
                values.append(float((ref_logp.exp() * (ref_logp - logp)).sum()))
            elif metric == "logit_diff":
                good = patched[answers[i]].mean()
                bad = patched[wrong_answers[i]].mean()
                values.append(float(-(good - bad)))
            elif metric == "prob_diff":
                probs = logp.exp()
                values.append(float(-(probs[answers[i]].sum() - probs[wrong_answers[i]].sum())))
            elif metric == "nll":
                target = clean[i][p + 1] if p + 1 < len(clean[i]) else answers[i][0]
                values.append(float(-logp[target]))
            elif metric == "l2":
                values.append(float((patched - reference).norm()))
            else:
                raise ValueError(f"unknown metric {metric!r}")
    return sum(values) / len(values)


# --------------------------------------------------------------------------- the algorithm


def reference_acdc(model, clean: list[list[int]], corrupt: list[list[int]],
                   positions: list[list[int]], answers: list[list[int]] | None,
                   wrong_answers: list[list[int]] | None, threshold: float, metric: str = "kl",
                   ablation: str = "corrupt", granularity: str = "qkv", use_abs: bool = False,
                   reverse_head_order: bool = False, follow: dict[str, bool] | None = None,
                   follow_tolerance: float = 0.0, groups: list[list[str]] | None = None,
                   group_names: list[str] | None = None) -> dict[str, tuple[bool, float | None]]:
    """ACDC, one full forward pass per tested edge. Returns {edge name: (kept, score)}; score
    is metric(H without the edge) - metric(H), or None for an edge removed untested because
    its node had no outgoing edges left.

    `follow` (edge name -> kept, e.g. another implementation's result) makes the run take that
    decision instead of its own wherever the two differ and the score is within
    `follow_tolerance` of the threshold; the returned `kept` is still this run's own decision.
    This keeps two implementations on the same path after a float-rounding tie, so that every
    later edge is still compared like for like.

    `groups` and `group_names` make the graph positional (module docstring): `groups[b][p]`
    is the group name of token p of prompt b.
    """
    model = ungrouped(model)
    shape = shape_of(model)
    clean_tokens, corrupt_tokens = pad(clean), pad(corrupt)
    groups_in_order = edge_groups(shape, granularity, reverse_head_order)
    if group_names is not None:
        groups_in_order = positional_groups(groups_in_order, group_names)
    ablated = ablation_run(model, clean_tokens, corrupt_tokens, ablation, [len(c) for c in clean])
    with torch.no_grad():
        clean_logits = model(clean_tokens)

    def evaluate(removed: set[str]) -> float:
        logits = patched_logits(model, clean_tokens, ablated, removed, granularity, groups)
        return metric_value(metric, logits, clean_logits, clean, positions, answers, wrong_answers)

    inert, read = set(), set()
    if group_names is not None:
        assert groups is not None
        read = {groups[b][p] for b, prompt_positions in enumerate(positions)
                for p in prompt_positions}
        if model.cfg.attention_dir == "causal":
            can_change = set()
            for b, row in enumerate(groups):
                first = 0
                if ablation == "corrupt":
                    differ = [p for p in range(len(clean[b])) if clean[b][p] != corrupt[b][p]]
                    first = differ[0] if differ else len(clean[b])
                for p in range(first, max(positions[b]) + 1):
                    can_change.add(row[p])
            inert = set(group_names) - can_change

    def dead(group: RefGroup) -> bool:
        """Whether the group's edges change nothing (module docstring)."""
        if group.group is None:
            return group.node != "logits" and all(
                e in removed for e in _outgoing(groups_in_order, group.node))
        if group.group in inert:
            return True
        first = group.edges[0]
        if group.node == "logits":
            return group.group not in read
        every_group = first.qkv in ("k", "v") if first.sender is None else (
            first.qkv is None and first.head is not None)
        at = None if every_group else group.group
        return all(e in removed for e in _outgoing(groups_in_order, group.node, at))

    removed: set[str] = set()
    current = evaluate(removed)
    result: dict[str, tuple[bool, float | None]] = {}
    for group in groups_in_order:
        if dead(group):
            for edge in group.edges:
                removed.add(edge.name)
                result[edge.name] = (False, None)
            continue
        for edge in group.edges:
            candidate = evaluate(removed | {edge.name})
            score = candidate - current
            remove = (abs(score) if use_abs else score) < threshold
            result[edge.name] = (not remove, score)
            if follow is not None and follow[edge.name] == remove:  # the two disagree
                if abs((abs(score) if use_abs else score) - threshold) <= follow_tolerance:
                    remove = not follow[edge.name]
            if remove:
                removed.add(edge.name)
                current = candidate
    return result


def circuit_metric(model, clean, corrupt, positions, answers, wrong_answers, removed: set[str],
                   metric: str = "kl", ablation: str = "corrupt", granularity: str = "qkv",
                   groups: list[list[str]] | None = None) -> float:
    """The metric of the circuit that lacks the edges in `removed`."""
    model = ungrouped(model)
    clean_tokens, corrupt_tokens = pad(clean), pad(corrupt)
    ablated = ablation_run(model, clean_tokens, corrupt_tokens, ablation, [len(c) for c in clean])
    with torch.no_grad():
        clean_logits = model(clean_tokens)
    logits = patched_logits(model, clean_tokens, ablated, removed, granularity, groups)
    return metric_value(metric, logits, clean_logits, clean, positions, answers, wrong_answers)
