"""The bundled task generators' prompts as training data, with held-out splits.

The `ioi` and `greater-than` models are trained on exactly the distribution their bundled
task files draw from: `acdc.core.generators.registry.generate_prompts` with the generator's
defaults, the lists written out in `tasks/ioi.yaml` and `tasks/greater_than.yaml`. A batch is
drawn from the generator with a seed taken from `train_model`'s random stream, and prompts
touching the held-out part (IOI name pairs; greater-than nouns and years) are dropped until the
batch is full (`data.collect`). Evaluation draws from the held-out part only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from acdc.core.generators.registry import GENERATORS
from acdc.core.loading import LoadedModel
from acdc.zoo.data import answer_logits, collect, generate
from acdc.zoo.tokenizer import (
    SPECIAL_TOKENS,
    build_tokenizer,
    build_vocabulary,
    encode_texts,
    single_id,
    split_words,
)


@dataclass(frozen=True)
class GeneratedIoi:
    """The bundled `ioi` generator's prompts (its default lists), name pairs split off.

    Training and evaluation use `acdc.core.generators.registry.generate_prompts("ioi", ...)`
    with the generator's defaults, which are the lists written out in `tasks/ioi.yaml`, so the
    model is trained on exactly the task's distribution. A fixed `held_out` fraction of the
    unordered name pairs never appears as (IO, S) in training; evaluation uses only those pairs.
    """

    held_out: float = 0.2
    split_seed: int = 1234
    params: dict[str, Any] = field(default_factory=lambda: GENERATORS["ioi"].defaults())

    def vocabulary(self) -> list[str]:
        p = self.params
        return build_vocabulary(SPECIAL_TOKENS, split_words(*p["names"]), split_words(*p["places"]),
                                split_words(*p["objects"]), split_words(*p["templates"]))

    def build_tokenizer(self):
        return build_tokenizer(self.vocabulary())

    def held_out_pairs(self) -> frozenset[frozenset[str]]:
        names = [n.lower() for n in self.params["names"]]
        pairs = [frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1:]]
        random.Random(self.split_seed).shuffle(pairs)
        return frozenset(pairs[:round(self.held_out * len(pairs))])

    def _pair(self, prompt: dict) -> frozenset[str]:
        return frozenset((prompt["answer"].strip().lower(), prompt["wrong"].strip().lower()))

    def _prompts(self, tokenizer, n: int, seed: int, held_out: bool) -> list[dict]:
        pairs = self.held_out_pairs()
        return collect(lambda s: generate("ioi", self.params, tokenizer, n + n // 2, s),
                        lambda p: (self._pair(p) in pairs) == held_out, n, seed)

    def _tensors(self, tokenizer, prompts: list[dict]):
        tokens, last = encode_texts(tokenizer, [p["clean"] for p in prompts])
        answers = torch.tensor([single_id(tokenizer, p["answer"]) for p in prompts])
        wrong = torch.tensor([single_id(tokenizer, p["wrong"]) for p in prompts])
        return tokens, last, answers, wrong

    def training_loss(self, model, tokenizer, batch_size: int, rng: random.Random) -> torch.Tensor:
        prompts = self._prompts(tokenizer, batch_size, rng.randrange(2**31), held_out=False)
        tokens, last, answers, _ = self._tensors(tokenizer, prompts)
        return F.cross_entropy(answer_logits(model, tokens, last), answers)

    @torch.no_grad()
    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]:
        """On `n` held-out-pair prompts: `accuracy` (logit of IO > logit of S), `top1` (IO is
        the arg-max over the vocabulary) and the mean `logit_diff` IO - S."""
        assert loaded.tokenizer is not None  # `evaluate_model` checks it
        tokenizer = loaded.tokenizer.backend
        prompts = self._prompts(tokenizer, n, 10**6, held_out=True)
        tokens, last, answers, wrong = self._tensors(tokenizer, prompts)
        logits = answer_logits(loaded.logits, tokens, last)
        rows = torch.arange(len(prompts))
        diff = logits[rows, answers] - logits[rows, wrong]
        return {"prompts": len(prompts), "accuracy": float((diff > 0).float().mean()),
                "top1": float((logits.argmax(-1) == answers).float().mean()),
                "logit_diff": float(diff.mean())}


@dataclass(frozen=True)
class GeneratedGreaterThan:
    """The bundled `greater-than` generator's prompts, with nouns and years held out.

    `held_out_nouns` nouns and a `held_out_years` fraction of the (century, YY) years never
    appear in training; evaluation uses prompts with a held-out noun AND a held-out year. The
    training target at the last position is spread evenly over the years above YY.
    """

    held_out_nouns: int = 20
    held_out_years: float = 0.15
    split_seed: int = 1234
    params: dict[str, Any] = field(default_factory=lambda: GENERATORS["greater-than"].defaults())

    def vocabulary(self) -> list[str]:
        p = self.params
        return build_vocabulary(SPECIAL_TOKENS, split_words(*p["templates"]),
                                split_words(*p["nouns"]), [f"{k:02d}" for k in range(100)])

    def build_tokenizer(self):
        return build_tokenizer(self.vocabulary(), digit_pairs=True)

    def split(self) -> tuple[list[str], frozenset[str], frozenset[tuple[int, int]]]:
        """(training nouns, held-out nouns, held-out (century, YY) years)."""
        nouns = list(self.params["nouns"])
        random.Random(self.split_seed).shuffle(nouns)
        first, last = self.params["yy_range"]
        years = [(cc, yy) for cc in self.params["centuries"] for yy in range(first, last + 1)]
        random.Random(self.split_seed + 1).shuffle(years)
        held = nouns[:self.held_out_nouns]
        return ([n for n in self.params["nouns"] if n not in held], frozenset(held),
                frozenset(years[:round(self.held_out_years * len(years))]))

    @staticmethod
    def year(prompt: dict) -> tuple[int, int]:
        """(century, YY) of a generated prompt: YY from its wrong answers 00..YY."""
        return int(prompt["clean"].split()[-1]), len(prompt["wrong"]) - 1

    def _prompts(self, tokenizer, n: int, seed: int, held_out: bool) -> list[dict]:
        train_nouns, held_nouns, held_years = self.split()
        params = {**self.params, "nouns": sorted(held_nouns) if held_out else train_nouns}
        return collect(lambda s: generate("greater-than", params, tokenizer, n + n // 2, s),
                        lambda p: (self.year(p) in held_years) == held_out, n, seed)

    def _tensors(self, tokenizer, prompts: list[dict]):
        tokens, last = encode_texts(tokenizer, [p["clean"] for p in prompts])
        later = torch.zeros(len(prompts), tokenizer.get_vocab_size(with_added_tokens=True))
        for i, p in enumerate(prompts):
            later[i, [single_id(tokenizer, y) for y in p["answer"]]] = 1.0
        years = torch.zeros_like(later[0])
        years[[single_id(tokenizer, f"{k:02d}") for k in range(100)]] = 1.0
        return tokens, last, later, years

    def training_loss(self, model, tokenizer, batch_size: int, rng: random.Random) -> torch.Tensor:
        prompts = self._prompts(tokenizer, batch_size, rng.randrange(2**31), held_out=False)
        tokens, last, later, _ = self._tensors(tokenizer, prompts)
        log_probs = answer_logits(model, tokens, last).log_softmax(-1)
        return -((log_probs * later).sum(-1) / later.sum(-1)).mean()

    @torch.no_grad()
    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]:
        """On `n` prompts with held-out nouns and years: `prob_diff` (mean P(YY' > YY) -
        P(YY' <= YY) over the two-digit tokens), `accuracy` (the arg-max is a later year)."""
        assert loaded.tokenizer is not None  # `evaluate_model` checks it
        tokenizer = loaded.tokenizer.backend
        prompts = self._prompts(tokenizer, n, 10**6, held_out=True)
        tokens, last, later, years = self._tensors(tokenizer, prompts)
        probs = answer_logits(loaded.logits, tokens, last).softmax(-1)
        diff = (probs * later).sum(-1) - (probs * (years - later)).sum(-1)
        top = probs.argmax(-1)
        return {"prompts": len(prompts),
                "accuracy": float(later[torch.arange(len(top)), top].mean()),
                "prob_diff": float(diff.mean()),
                "year_mass": float((probs * years).sum(-1).mean())}
