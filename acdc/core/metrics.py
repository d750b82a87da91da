"""Metrics ACDC minimises: lower is better, read at the task's metric positions.

Every metric takes the circuit's logits at the metric positions, `[n_positions, d_vocab]`, and
returns a scalar tensor (no host copy: the engine decides when to read it). Positions are the
flattened (prompt, position) pairs of the task, and every metric is one flat mean over them.
Leading dimensions are kept: logits `[k, n_positions, d_vocab]` of k candidate circuits give
k metrics, one per circuit (the engine evaluates several removals at once).

- `kl`: KL(clean model || circuit) of the next-token distribution (the ACDC default; 0 for the
  full model).
- `logit_diff`: minus (mean logit of the answers - mean logit of the wrong answers).
- `prob_diff`: minus (total probability of the answers - of the wrong answers).
- `nll`: minus the log-probability of the clean prompt's next token (of the prompt's first
  answer at its last position).
- `l2`: Euclidean distance between the circuit's and the clean model's logits.

Task metrics are negated so that "lower is better" holds for all of them, as in the paper.

`position_metric` gives the same metric before the mean: one value per metric position
`[..., n_positions]` (the evaluation's per-prompt spread is built from these); `build_metric`
is its mean over the positions.

>>> metric = build_metric("kl", clean_logits=torch.zeros(2, 5), targets=MetricTargets.empty())
>>> float(metric(torch.zeros(2, 5)))
0.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from acdc.core.settings import METRICS, NEEDS_ANSWER_AND_WRONG
from acdc.errors import AcdcError

Metric = Callable[[torch.Tensor], torch.Tensor]

# Vocabulary-sized metrics run over a few positions at a time: each position's terms are its
# own, and a chunk this small (in elements) stays in cache through the metric's several
# passes, where the whole tensor would be read from memory once per pass.
CHUNK_ELEMENTS = 2**19


@dataclass(frozen=True)
class MetricTargets:
    """Per metric position: answer and wrong-answer token lists (padded, with masks) and the
    next-token target. Tensors have a leading `n_positions` dimension."""

    answers: torch.Tensor | None  # long [n_positions, n_answers]
    answer_mask: torch.Tensor | None  # bool, same shape
    wrong: torch.Tensor | None
    wrong_mask: torch.Tensor | None
    next_token: torch.Tensor | None  # long [n_positions], -1 where unknown

    @classmethod
    def empty(cls) -> MetricTargets:
        """No answers and no next tokens: enough for `kl` and `l2`."""
        return cls(None, None, None, None, None)


def _padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows])
    width = int(lengths.max())
    # One flat list: torch.tensor on nested lists is many times slower.
    ids = torch.tensor([i for r in rows for i in r + [0] * (width - len(r))], dtype=torch.long)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    return ids.view(len(rows), width), mask


def metric_targets(clean: list[list[int]], positions: list[list[int]],
                   answers: list[list[int]] | None, wrong: list[list[int]] | None,
                   device: torch.device | str = "cpu") -> MetricTargets:
    """Targets of every (prompt, position) pair, in the order of the flattened positions."""
    prompt_of = [b for b, pos in enumerate(positions) for _ in pos]
    answer_ids = answer_mask = wrong_ids = wrong_mask = None
    if answers is not None:
        answer_ids, answer_mask = (t[prompt_of].to(device) for t in _padded(answers))
    if wrong is not None:
        wrong_ids, wrong_mask = (t[prompt_of].to(device) for t in _padded(wrong))
    next_token = []
    for b, pos in enumerate(positions):
        for p in pos:
            if p + 1 < len(clean[b]):
                next_token.append(clean[b][p + 1])
            else:
                next_token.append(answers[b][0] if answers is not None and answers[b] else -1)
    return MetricTargets(answer_ids, answer_mask, wrong_ids, wrong_mask,
                         torch.tensor(next_token, dtype=torch.long, device=device))


def _pick(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """values[..., position, ids[position]] for every leading dimension of `values`."""
    return values.gather(-1, ids.expand(*values.shape[:-1], ids.shape[-1]))


def _masked_mean(values: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    picked = _pick(values, ids) * mask
    return picked.sum(-1) / mask.sum(-1)


def build_metric(name: str, clean_logits: torch.Tensor, targets: MetricTargets) -> Metric:
    """The metric `name` as a function of the circuit's logits at the metric positions: the
    mean over the positions of `position_metric`.

    Metrics are computed in float32 at least, whatever the model's dtype.
    """
    metric = _metric(name, _at_least_fp32(clean_logits.detach()), targets)
    return lambda logits: metric(_at_least_fp32(logits)).mean(-1)


def position_metric(name: str, clean_logits: torch.Tensor, targets: MetricTargets) -> Metric:
    """The metric `name` at every metric position, before the mean: logits
    `[..., n_positions, d_vocab]` give `[..., n_positions]` (lower is better, as `build_metric`).
    """
    metric = _metric(name, _at_least_fp32(clean_logits.detach()), targets)
    return lambda logits: metric(_at_least_fp32(logits))


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _metric(name: str, clean_logits: torch.Tensor, targets: MetricTargets) -> Metric:
    """The metric at every position, before the mean: `[..., n_positions]` from the logits."""
    if name not in METRICS:
        raise AcdcError(f"unknown metric {name!r}: use one of {', '.join(METRICS)}")
    if name == "kl":
        # KL = sum p log p - sum p z + logsumexp(z) for logits z: fewer vocabulary-sized
        # passes than log_softmax then KL; logits are shifted by the clean ones' maximum
        # first, keeping the terms small.
        clean_logprobs = clean_logits.log_softmax(-1)
        clean_probs = clean_logprobs.exp()
        shift = clean_logits.max(-1, keepdim=True).values
        negative_entropy = (clean_probs * clean_logprobs).sum(-1)

        def kl(logits: torch.Tensor, shift: torch.Tensor = shift,
               clean_probs: torch.Tensor = clean_probs,
               negative_entropy: torch.Tensor = negative_entropy) -> torch.Tensor:
            z = logits - shift
            lse = z.logsumexp(-1)
            # in place unless differentiated (logsumexp's backward reads z)
            product = z.mul(clean_probs) if z.requires_grad else z.mul_(clean_probs)
            # torch's sum adds in blocks (a matrix product here loses about 10x more precision)
            return negative_entropy - product.sum(-1) + lse

        return _by_positions(kl, shift, clean_probs, negative_entropy)
    if name == "l2":
        return lambda logits: (logits - clean_logits).norm(dim=-1)
    if name in NEEDS_ANSWER_AND_WRONG:
        if targets.answers is None or targets.wrong is None:
            raise AcdcError(f"metric {name} needs an answer and a wrong answer on every prompt")
        # the masks come with the token ids (`metric_targets`)
        assert targets.answer_mask is not None and targets.wrong_mask is not None
        a, am, w, wm = targets.answers, targets.answer_mask, targets.wrong, targets.wrong_mask
        if name == "logit_diff":
            return lambda logits: -(_masked_mean(logits, a, am) - _masked_mean(logits, w, wm))

        def prob_diff(logits: torch.Tensor, a: torch.Tensor = a, am: torch.Tensor = am,
                      w: torch.Tensor = w, wm: torch.Tensor = wm) -> torch.Tensor:
            probs = logits.softmax(-1)
            return -((_pick(probs, a) * am).sum(-1) - (_pick(probs, w) * wm).sum(-1))

        return _by_positions(prob_diff, a, am, w, wm)
    # nll
    if targets.next_token is None or bool((targets.next_token < 0).any()):
        raise AcdcError("metric nll needs an answer on every prompt whose last position is a "
                        "metric position")
    target = targets.next_token[:, None]
    return _by_positions(lambda logits, target=target: -_pick(logits.log_softmax(-1),
                                                               target)[..., 0], target)


def _by_positions(metric: Callable[..., torch.Tensor], *per_position: torch.Tensor) -> Metric:
    """`metric(logits, *per_position)` [..., n_positions] computed over chunks of positions of
    about CHUNK_ELEMENTS logits each (`per_position` tensors, leading dimension n_positions,
    sliced alike): the same values, with every pass over a chunk in cache. Differentiated
    logits go whole (autograd would keep every chunk anyway)."""

    def chunked(logits: torch.Tensor) -> torch.Tensor:
        n_positions = logits.shape[-2]
        per_row = logits[..., :1, :].numel()
        rows = max(1, CHUNK_ELEMENTS // max(per_row, 1))
        if rows >= n_positions or logits.requires_grad:
            return metric(logits, *per_position)
        return torch.cat([metric(logits[..., i:i + rows, :], *(t[i:i + rows] for t in per_position))
                          for i in range(0, n_positions, rows)], dim=-1)

    return chunked
