"""The induction model's data: random tokens in which spans repeat at varying distances.

Induction heads form when predicting a token needs its earlier occurrence at a distance that
varies: with one fixed copy distance a model learns a positional shortcut instead. A training
batch therefore mixes rows holding one random block written twice in a row (block length, so
copy distance, drawn per row) with the bundled `induction` generator's sequences, which hold
several short spans repeated at random offsets. Evaluation reads accuracy at the predictable
positions and, per head, previous-token and induction scores from the attention patterns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from acdc.core.loading import LoadedModel
from acdc.zoo.data import attention_patterns, generate
from acdc.zoo.tokenizer import BOS, UNK, build_tokenizer


@dataclass(frozen=True)
class RepeatedSpans:
    """Random tokens holding repeated spans at widely varying distances.

    The vocabulary is `<bos>`, `<unk>` and `n_tokens` plain tokens "t2", "t3", ...; a training
    batch mixes block copies (`_copied`, a `copied_fraction` of it) with `<bos>` +
    `train_params` sequences of the bundled `induction` generator, with next-token loss at
    every position (the predictable ones carry the signal).
    Evaluation draws fresh sequences with `eval_params` (the bundled task's shape): accuracy
    and loss at the predictable positions, and per head the previous-token score (mean
    attention to the previous token) and the induction score (on a random block repeated
    twice, mean attention from the second copy to the token after the same token's first
    occurrence).
    """

    n_tokens: int
    train_params: dict[str, Any]
    eval_params: dict[str, Any]
    repeat_length: int = 24  # block length of the induction-score sequences
    copied_fraction: float = 0.75  # share of each training batch that is a block copy
    copy_seq_len: int = 63  # tokens after <bos> of a block-copy training row
    copy_length: tuple[int, int] = (3, 31)  # [shortest, longest] copied block

    def vocabulary(self) -> list[str]:
        return [BOS, UNK, *(f"t{i}" for i in range(2, 2 + self.n_tokens))]

    def build_tokenizer(self):
        return build_tokenizer(self.vocabulary(), specials=(BOS, UNK))

    def _sequences(self, tokenizer, params: dict[str, Any], n: int, seed: int):
        prompts = generate("induction", params, tokenizer, n, seed)
        bos = tokenizer.token_to_id(BOS)
        tokens = torch.tensor([[bos, *p["clean"]] for p in prompts])
        return tokens, [[q + 1 for q in p["positions"]] for p in prompts]

    def _copied(self, tokenizer, n: int, rng: random.Random) -> torch.Tensor:
        """`n` rows of `<bos>` + `copy_seq_len` uniform random tokens in which one block of
        random length L (`copy_length`) is written twice in a row at a random offset, so the
        distance between the copies (L) varies from row to row."""
        length = self.copy_seq_len
        rows = []
        for _ in range(n):
            row = [rng.randrange(2, 2 + self.n_tokens) for _ in range(length)]
            span = rng.randint(self.copy_length[0], min(self.copy_length[1], length // 2))
            start = rng.randint(0, length - 2 * span)
            row[start + span:start + 2 * span] = row[start:start + span]
            rows.append([tokenizer.token_to_id(BOS), *row])
        return torch.tensor(rows)

    def training_loss(self, model, tokenizer, batch_size: int, rng: random.Random) -> torch.Tensor:
        """Next-token loss at every position of a batch that mixes block copies at random
        distances (`copied_fraction` of it) with the generator's several repeated spans."""
        copied = round(self.copied_fraction * batch_size)
        spans, _ = self._sequences(tokenizer, self.train_params, batch_size - copied,
                                   rng.randrange(2**31))
        losses = []
        for tokens in (self._copied(tokenizer, copied, rng), spans):
            if len(tokens):
                logits = model(tokens, return_type="logits")
                losses.append((F.cross_entropy(logits[:, :-1].flatten(0, 1),
                                               tokens[:, 1:].flatten(), reduction="sum"),
                               tokens[:, 1:].numel()))
        mean = sum(loss for loss, _ in losses) / sum(c for _, c in losses)
        assert isinstance(mean, torch.Tensor)  # a batch has at least one part
        return mean

    @torch.no_grad()
    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]:
        assert loaded.tokenizer is not None  # `evaluate_model` checks it
        tokenizer = loaded.tokenizer.backend
        tokens, positions = self._sequences(tokenizer, self.eval_params, n, 10**6)
        logits, patterns = attention_patterns(loaded.weights, tokens)
        nll = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
        hits = torch.zeros_like(nll, dtype=torch.bool)
        for i, ps in enumerate(positions):
            hits[i, ps] = True
        correct = logits[:, :-1].argmax(-1) == tokens[:, 1:]
        # previous-token score: attention to p - 1, over positions 2.. (position 1 has only BOS)
        query = torch.arange(2, tokens.shape[1])
        prev = patterns[:, :, :, query, query - 1].mean((1, 3))
        # induction score: [bos] R R, attention from the second copy to the first's next token
        g = torch.Generator().manual_seed(0)
        length = self.repeat_length
        block = torch.randint(2, 2 + self.n_tokens, (n, length), generator=g)
        repeated = torch.cat([torch.full((n, 1), tokenizer.token_to_id(BOS)), block, block], 1)
        _, rep_patterns = attention_patterns(loaded.weights, repeated)
        query = torch.arange(length + 1, 2 * length + 1)
        induction = rep_patterns[:, :, :, query, query - length + 1].mean((1, 3))
        names = [f"a{layer}.h{head}" for layer in range(prev.shape[0])
                 for head in range(prev.shape[1])]
        prev_scores = dict(zip(names, (round(float(s), 3) for s in prev.flatten()), strict=True))
        induction_scores = dict(zip(names, (round(float(s), 3) for s in induction.flatten()),
                                    strict=True))
        return {
            "prompts": n, "accuracy": float(correct[hits].float().mean()),
            "nll_predictable": float(nll[hits].mean()), "nll_other": float(nll[~hits].mean()),
            "best_previous_token_head": max(prev_scores, key=prev_scores.__getitem__),
            "best_induction_head": max(induction_scores, key=induction_scores.__getitem__),
            "previous_token_scores": prev_scores, "induction_scores": induction_scores,
        }
