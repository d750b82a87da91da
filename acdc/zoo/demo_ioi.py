"""The demo model's data: a word-level indirect-object task with its own short word lists.

"when mary and john went to the store , john gave a drink to" -> "mary". The templates are
written in the notation of the bundled `ioi` generator (`acdc.core.generators`): [A] is the
indirect object, [B] the subject, named again at the end; both name orders are used (ABBA,
BABA). Filling a template and the ABC corruption are the generator's own functions
(`fill_ioi`, `ioi_names`, `abc_names`); what is the demo's own is how prompts are drawn. Its
sampler draws (template, name pair, name order, place, object, pair order) for every prompt
from `train_model`'s random stream, a different sequence of draws from the generator's, and
that sequence is what makes the bundled `models/demo` reproducible from its seed, so it stays.

Name pairs are split once (`split_seed`): `held_out_pairs` unordered pairs never appear in
training; evaluation and the bundled `tasks/demo.yaml` use only those.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from acdc.core.generators.ioi import abc_names, fill_ioi, ioi_names
from acdc.core.loading import LoadedModel
from acdc.zoo.data import answer_logits
from acdc.zoo.tokenizer import (
    SPECIAL_TOKENS,
    build_tokenizer,
    build_vocabulary,
    encode_texts,
    split_words,
)


@dataclass(frozen=True)
class IoiWords:
    """Word lists and templates of the demo's word-level indirect-object task.

    Each template has the slots [A], [B], [B] (indirect object, subject, subject again, in the
    generator's notation), [PLACE] and [OBJECT]; it ends where the indirect object is the next
    word.
    """

    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]
    templates: tuple[str, ...]
    held_out_pairs: int  # unordered name pairs kept out of training
    split_seed: int = 1234

    def vocabulary(self) -> list[str]:
        """Every word the task can produce, in a fixed order, special tokens first."""
        return build_vocabulary(SPECIAL_TOKENS, list(self.names), list(self.places),
                                list(self.objects), split_words(*self.templates))

    def build_tokenizer(self):
        return build_tokenizer(self.vocabulary())

    def pair_split(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(training pairs, held-out pairs): unordered name pairs, fixed by `split_seed`."""
        pairs = [(a, b) for i, a in enumerate(self.names) for b in self.names[i + 1:]]
        random.Random(self.split_seed).shuffle(pairs)
        return pairs[self.held_out_pairs:], pairs[:self.held_out_pairs]

    def training_loss(self, model, tokenizer, batch_size: int, rng: random.Random) -> torch.Tensor:
        batch = sample_prompts(self, self.pair_split()[0], batch_size, rng)
        tokens, last, answers = _encode_batch(tokenizer, batch)
        return F.cross_entropy(answer_logits(model, tokens, last), answers)

    @torch.no_grad()
    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]:
        """Top-1 accuracy (arg-max over the vocabulary) and mean logit difference IO - S."""
        assert loaded.tokenizer is not None  # `evaluate_model` checks it
        tokenizer = loaded.tokenizer.backend
        prompts = sample_prompts(self, self.pair_split()[1], n, random.Random(0))
        correct, diffs = 0, []
        for start in range(0, len(prompts), 500):
            chunk = prompts[start:start + 500]
            tokens, last, answers = _encode_batch(tokenizer, chunk)
            logits = answer_logits(loaded.logits, tokens, last)
            wrong = torch.tensor([tokenizer.token_to_id(p.wrong) for p in chunk])
            rows = torch.arange(len(chunk))
            correct += int((logits.argmax(-1) == answers).sum())
            diffs.append(logits[rows, answers] - logits[rows, wrong])
        return {"prompts": len(prompts), "accuracy": correct / len(prompts),
                "logit_diff": float(torch.cat(diffs).mean())}


@dataclass(frozen=True)
class IoiPrompt:
    """One prompt: `text` ends just before `answer` (the indirect object); `wrong` is S.
    `template`, `place` and `obj` are what `corrupt_prompt` fills again with other names."""

    text: str
    answer: str
    wrong: str
    template: int
    place: str
    obj: str


def ioi_prompt(words: IoiWords, template: int, pair: tuple[str, str], s_first: bool,
               place: str, obj: str, order_swapped: bool = False) -> IoiPrompt:
    """Fill a template. `s_first`: the repeated name is the first one introduced (BABA)."""
    a, b = (pair[1], pair[0]) if order_swapped else pair
    s, io = (a, b) if s_first else (b, a)
    text = fill_ioi(words.templates[template], ioi_names(io, s, "BABA" if s_first else "ABBA"),
                    {"PLACE": place, "OBJECT": obj})
    return IoiPrompt(text, io, s, template, place, obj)


def sample_prompts(words: IoiWords, pairs: list[tuple[str, str]], n: int,
                   rng: random.Random) -> list[IoiPrompt]:
    """`n` prompts drawn uniformly over templates, pairs, name orders, places and objects."""
    return [
        ioi_prompt(words, rng.randrange(len(words.templates)), rng.choice(pairs),
                   rng.random() < 0.5, rng.choice(words.places), rng.choice(words.objects),
                   rng.random() < 0.5)
        for _ in range(n)
    ]


def corrupt_prompt(words: IoiWords, prompt: IoiPrompt, rng: random.Random) -> str:
    """ABC corruption: the three name slots get three new, different names."""
    others = abc_names(words.names, prompt.answer, prompt.wrong, rng)
    return fill_ioi(words.templates[prompt.template], others,
                    {"PLACE": prompt.place, "OBJECT": prompt.obj})


def _encode_batch(tokenizer, prompts: list[IoiPrompt]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [batch, pos] with <bos> first and <pad> after, last positions, answer ids)."""
    tokens, last = encode_texts(tokenizer, [p.text for p in prompts])
    answers = torch.tensor([tokenizer.token_to_id(p.answer) for p in prompts])
    return tokens, last, answers


DEMO_WORDS = IoiWords(
    names=("mary", "john", "anna", "paul", "lisa", "james", "sarah", "david", "laura", "kevin",
           "emma", "thomas", "rachel", "peter", "susan", "george", "alice", "henry", "grace",
           "jacob", "emily", "samuel", "karen", "brian", "kate", "steven", "helen", "mark",
           "linda", "jason", "amy", "eric", "ruth", "adam", "claire", "daniel", "jessica",
           "andrew", "michael", "robert"),
    places=("store", "garden", "restaurant", "school", "hospital", "office", "house", "station"),
    objects=("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"),
    templates=(
        "when [A] and [B] went to the [PLACE] , [B] gave a [OBJECT] to",
        "then , [A] and [B] went to the [PLACE] . [B] gave a [OBJECT] to",
        "when [A] and [B] got a [OBJECT] at the [PLACE] , [B] decided to give it to",
        "while [A] and [B] were working at the [PLACE] , [B] gave a [OBJECT] to",
        "after [A] and [B] went to the [PLACE] , [B] handed a [OBJECT] to",
        "[A] and [B] went to the [PLACE] . [B] brought a [OBJECT] to",
        "friends [A] and [B] found a [OBJECT] at the [PLACE] . [B] gave it to",
        "when [A] and [B] arrived at the [PLACE] , [B] sent a [OBJECT] to",
        "the [PLACE] was quiet when [A] and [B] came in . [B] passed a [OBJECT] to",
        "[A] and [B] were at the [PLACE] . afterwards , [B] showed the [OBJECT] to",
    ),
    held_out_pairs=160,
)
