"""What a recipe's training data is: the `ZooData` protocol, and the pieces its kinds share.

A data kind knows its vocabulary (hence its tokenizer), computes a training loss on a freshly
drawn batch, and evaluates a checkpoint on data it never trains on. Every draw comes from the
`random.Random` that `train_model` seeds, in a fixed order, so the same seed gives the same
batches and, with deterministic kernels, bit-identical weights. The kinds:

- `demo_ioi.IoiWords`: the demo's own word-level IOI task;
- `generated.GeneratedIoi`, `generated.GeneratedGreaterThan`: the bundled task generators'
  prompts (`acdc.core.generators`), with held-out splits;
- `repeated_spans.RepeatedSpans`: random tokens with repeated spans, for induction heads.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

import torch

from acdc.core.forward import full_forward
from acdc.core.generators.registry import generate_prompts
from acdc.core.loading import LoadedModel
from acdc.core.tokenizer import Tokenizer
from acdc.core.weights import Weights
from acdc.errors import AcdcError


class ZooData(Protocol):
    """What a recipe's data provides to `train_model` and `evaluate_model`."""

    def vocabulary(self) -> list[str]: ...

    def build_tokenizer(self): ...

    def training_loss(self, model, tokenizer, batch_size: int,
                      rng: random.Random) -> torch.Tensor: ...

    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]: ...


def answer_logits(forward: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor,
                  last: torch.Tensor) -> torch.Tensor:
    """Logits [batch, d_vocab] at each row's last real position (padding is on the right), of
    `forward` (a model in training, or a loaded model's `logits`)."""
    logits = forward(tokens)
    return logits[torch.arange(tokens.shape[0]), last]


def attention_patterns(weights: Weights, tokens: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [batch, pos, d_vocab], patterns [layer, batch, head, query, key]) of `tokens`.

    `acdc.core.forward.full_forward` on a model's weights, so that reading attention needs no
    hook names; the logits equal TransformerLens' (a test checks it).
    """
    return full_forward(weights, tokens)


def generate(kind: str, params: dict[str, Any], tokenizer, n: int, seed: int) -> list[dict]:
    """Prompts of the bundled generator `kind` with `params`, `n` of them from `seed`."""
    wrapped = Tokenizer(tokenizer, f"zoo {kind} tokenizer")
    return generate_prompts(kind, {**params, "n": n, "seed": seed}, wrapped,
                            tokenizer.get_vocab_size(with_added_tokens=True), f"zoo {kind}")


def collect(draw: Callable[[int], list[dict]], keep: Callable[[dict], bool], n: int,
            first_seed: int) -> list[dict]:
    """The first `n` prompts that pass `keep`, drawing batches with seeds first_seed, +1, ..."""
    out: list[dict] = []
    seed = first_seed
    while len(out) < n:
        out += [p for p in draw(seed) if keep(p)]
        seed += 1
        if seed - first_seed > 1000:
            raise AcdcError("zoo: the held-out filter keeps almost no generated prompts")
    return out[:n]
