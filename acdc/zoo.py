"""The project's own small models, trained reproducibly on the CPU by the project's own code.

A zoo entry is a `Recipe`: the `HookedTransformerConfig` keyword arguments of the model, the
data it is trained on (a `ZooData`: its vocabulary, a training loss on freshly drawn batches
and a held-out evaluation), and the optimiser settings. `train_model` builds the tokenizer in
code (a word-level vocabulary, no download), trains the model from a seeded initialisation and
writes a checkpoint in the project's format (`config.json`, `model.safetensors`,
`tokenizer.json`) that `acdc.core.models.load_model` reads. `evaluate_model` scores a checkpoint on
prompts it never saw in training.

The entries:

- `demo`: 2 layers with MLPs, a word-level IOI task with its own short word lists
  ("when mary and john went to the store , john gave a drink to" -> "mary"); a fixed set of
  name pairs never appears together in training.
- `ioi`: 3 layers with MLPs, trained on exactly the prompts of the bundled `tasks/ioi.yaml`
  generator (`acdc.core.generators`, its default templates, names, places and objects, both name
  orders); a fixed fifth of the name pairs is held out for evaluation.
- `greater-than`: 2 layers with MLPs, trained on the bundled greater-than generator's prompts
  ("the war lasted from the year 17 32 to the year 17" -> a two-digit year above 32, taught
  with a soft target spread evenly over those years); a fixed set of nouns and of years is held
  out. Its tokenizer splits digit runs into pairs, so " 1732" is the two tokens "17" "32".
- `induction`: 2 attention-only layers of 4 heads (like the paper's redwood_attn_2l, smaller),
  trained with next-token loss at every position on random tokens in which spans repeat at
  widely varying distances: three quarters of each batch are rows with one random block
  written twice in a row (block length, hence the distance between the copies, 3-31), the rest
  are the induction generator's sequences with three short spans each repeated at random
  offsets. A fixed copy distance teaches a positional shortcut instead of induction heads.
  Its evaluation reports every head's previous-token and induction score from its attention
  patterns.

Held-out splits depend on the recipe alone, not on the training seed. Training is
deterministic: the same recipe, seed and step count give bit-identical weights on the same
machine (CPU, a fixed thread count, deterministic algorithms).

>>> sorted(ZOO)
['demo', 'greater-than', 'induction', 'ioi']
>>> ZOO["induction"].config["attn_only"]
True
"""

from __future__ import annotations

import math
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from acdc.errors import AcdcError
from acdc.core.generators import GENERATORS, generate_prompts
from acdc.core.models import (
    CHECKPOINT_TOKENIZER,
    LoadedModel,
    Tokenizer,
    build_model,
    extract_weights,
    load_model,
    save_checkpoint,
)
from acdc.core.forward import full_forward

BOS, PAD, UNK = "<bos>", "<pad>", "<unk>"
SPECIAL_TOKENS = (BOS, PAD, UNK)
TRAIN_THREADS = 2
_WORD = re.compile(r"\w+|[^\w\s]+")  # what the Whitespace pre-tokenizer splits on
_SLOT = re.compile(r"\[[A-Z]+\]")


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer(vocabulary: list[str], digit_pairs: bool = False,
                    specials: tuple[str, ...] = SPECIAL_TOKENS):
    """A word-level `tokenizers.Tokenizer`: lowercase, split on whitespace and punctuation.

    The `specials` (by default `<bos>`, `<pad>` and `<unk>`) are special tokens; " mary" and
    "mary" both encode to the single token "mary". With `digit_pairs`, runs of digits are also
    split into pairs, so " 1732" is the two tokens "17" and "32".
    """
    from tokenizers import Regex
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    vocab = {word: i for i, word in enumerate(vocabulary)}
    tokenizer = RawTokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    if digit_pairs:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Whitespace(),
            pre_tokenizers.Split(Regex(r"\d\d"), behavior="isolated"),
        ])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer.add_special_tokens(list(specials))
    return tokenizer


def _words(*texts: str) -> list[str]:
    """The lowercase words (as the tokenizer splits them) of `texts`, slots like [A] removed."""
    out: list[str] = []
    for text in texts:
        for word in _WORD.findall(_SLOT.sub(" ", text).lower()):
            if word not in out:
                out.append(word)
    return out


def _vocabulary(specials: tuple[str, ...], *groups: list[str]) -> list[str]:
    words = list(specials)
    for group in groups:
        words += [w for w in group if w not in words]
    return words


def _encode_texts(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [batch, pos] with <bos> first and <pad> after, each row's last position)."""
    bos, pad = tokenizer.token_to_id(BOS), tokenizer.token_to_id(PAD)
    rows = [[bos, *e.ids] for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    return tokens, torch.tensor([len(r) - 1 for r in rows])


def _single_id(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) != 1:
        raise AcdcError(f"zoo: {text!r} is not one token for the zoo tokenizer")
    return ids[0]


def _answer_logits(model, tokens: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Logits [batch, d_vocab] at each row's last real position (padding is on the right)."""
    logits = model(tokens, return_type="logits")
    return logits[torch.arange(tokens.shape[0]), last]


# --------------------------------------------------------------------------- data protocol


class ZooData(Protocol):
    """What a recipe's data provides to `train_model` and `evaluate_model`."""

    def vocabulary(self) -> list[str]: ...

    def build_tokenizer(self): ...

    def training_loss(self, model, tokenizer, batch_size: int,
                      rng: random.Random) -> torch.Tensor: ...

    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- the demo IOI task


@dataclass(frozen=True)
class IoiWords:
    """Word lists and templates of the demo's word-level indirect-object task.

    Each template has the slots {A}, {B} (the two names introduced), {S} (the repeated one),
    {P} (a place) and {O} (an object); the prompt ends where the other name, the indirect
    object, is the next word.
    """

    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]
    templates: tuple[str, ...]
    held_out_pairs: int  # unordered name pairs kept out of training
    split_seed: int = 1234

    def vocabulary(self) -> list[str]:
        """Every word the task can produce, in a fixed order, special tokens first."""
        words: list[str] = list(SPECIAL_TOKENS)
        for word in (*self.names, *self.places, *self.objects,
                     *(w for t in self.templates for w in t.split())):
            if not word.startswith("{") and word not in words:
                words.append(word)
        return words

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
        return F.cross_entropy(_answer_logits(model, tokens, last), answers)

    @torch.no_grad()
    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]:
        """Top-1 accuracy (arg-max over the vocabulary) and mean logit difference IO - S."""
        tokenizer = loaded.tokenizer.backend
        prompts = sample_prompts(self, self.pair_split()[1], n, random.Random(0))
        correct, diffs = 0, []
        for start in range(0, len(prompts), 500):
            chunk = prompts[start:start + 500]
            tokens, last, answers = _encode_batch(tokenizer, chunk)
            logits = _answer_logits(loaded.model, tokens, last)
            wrong = torch.tensor([tokenizer.token_to_id(p.wrong) for p in chunk])
            rows = torch.arange(len(chunk))
            correct += int((logits.argmax(-1) == answers).sum())
            diffs.append(logits[rows, answers] - logits[rows, wrong])
        return {"prompts": len(prompts), "accuracy": correct / len(prompts),
                "logit_diff": float(torch.cat(diffs).mean())}


@dataclass(frozen=True)
class IoiPrompt:
    """One prompt: `text` ends just before `answer` (the indirect object); `wrong` is S."""

    text: str
    answer: str
    wrong: str
    template: int


def ioi_prompt(words: IoiWords, template: int, pair: tuple[str, str], s_first: bool,
               place: str, obj: str, order_swapped: bool = False) -> IoiPrompt:
    """Fill a template. `s_first`: the repeated name is the first one introduced (ABA)."""
    a, b = (pair[1], pair[0]) if order_swapped else pair
    s, io = (a, b) if s_first else (b, a)
    text = words.templates[template].format(A=a, B=b, S=s, P=place, O=obj)
    return IoiPrompt(text, io, s, template)


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
    clean = prompt.text.split()
    used = {w for w in clean if w in words.names}
    fresh = rng.sample([n for n in words.names if n not in used], 3)
    slots = [i for i, w in enumerate(clean) if w in words.names]
    corrupt = list(clean)
    for slot, name in zip(slots, fresh):
        corrupt[slot] = name
    return " ".join(corrupt)


def _encode_batch(tokenizer, prompts: list[IoiPrompt]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [batch, pos] with <bos> first and <pad> after, last positions, answer ids)."""
    bos, pad = tokenizer.token_to_id(BOS), tokenizer.token_to_id(PAD)
    rows = [[bos, *tokenizer.encode(p.text, add_special_tokens=False).ids] for p in prompts]
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    last = torch.tensor([len(r) - 1 for r in rows])
    answers = torch.tensor([tokenizer.token_to_id(p.answer) for p in prompts])
    return tokens, last, answers


# --------------------------------------------------------------------------- generated tasks


def _generate(kind: str, params: dict[str, Any], tokenizer, n: int, seed: int) -> list[dict]:
    """Prompts of the bundled generator `kind` with `params`, `n` of them from `seed`."""
    wrapped = Tokenizer(tokenizer, f"zoo {kind} tokenizer")
    return generate_prompts(kind, {**params, "n": n, "seed": seed}, wrapped,
                            tokenizer.get_vocab_size(with_added_tokens=True), f"zoo {kind}")


def _collect(draw: Callable[[int], list[dict]], keep: Callable[[dict], bool], n: int,
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


@dataclass(frozen=True)
class GeneratedIoi:
    """The bundled `ioi` generator's prompts (its default lists), name pairs split off.

    Training and evaluation use `acdc.core.generators.generate_prompts("ioi", ...)` with the
    generator's defaults, which are the lists written out in `tasks/ioi.yaml`, so the model is
    trained on exactly the task's distribution. A fixed `held_out` fraction of the unordered
    name pairs never appears as (IO, S) in training; evaluation uses only those pairs.
    """

    held_out: float = 0.2
    split_seed: int = 1234
    params: dict[str, Any] = field(default_factory=lambda: GENERATORS["ioi"].defaults())

    def vocabulary(self) -> list[str]:
        p = self.params
        return _vocabulary(SPECIAL_TOKENS, _words(*p["names"]), _words(*p["places"]),
                           _words(*p["objects"]), _words(*p["templates"]))

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
        return _collect(lambda s: _generate("ioi", self.params, tokenizer, n + n // 2, s),
                        lambda p: (self._pair(p) in pairs) == held_out, n, seed)

    def _tensors(self, tokenizer, prompts: list[dict]):
        tokens, last = _encode_texts(tokenizer, [p["clean"] for p in prompts])
        answers = torch.tensor([_single_id(tokenizer, p["answer"]) for p in prompts])
        wrong = torch.tensor([_single_id(tokenizer, p["wrong"]) for p in prompts])
        return tokens, last, answers, wrong

    def training_loss(self, model, tokenizer, batch_size: int, rng: random.Random) -> torch.Tensor:
        prompts = self._prompts(tokenizer, batch_size, rng.randrange(2**31), held_out=False)
        tokens, last, answers, _ = self._tensors(tokenizer, prompts)
        return F.cross_entropy(_answer_logits(model, tokens, last), answers)

    @torch.no_grad()
    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]:
        """On `n` held-out-pair prompts: `accuracy` (logit of IO > logit of S), `top1` (IO is
        the arg-max over the vocabulary) and the mean `logit_diff` IO - S."""
        tokenizer = loaded.tokenizer.backend
        prompts = self._prompts(tokenizer, n, 10**6, held_out=True)
        tokens, last, answers, wrong = self._tensors(tokenizer, prompts)
        logits = _answer_logits(loaded.model, tokens, last)
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
        return _vocabulary(SPECIAL_TOKENS, _words(*p["templates"]), _words(*p["nouns"]),
                           [f"{k:02d}" for k in range(100)])

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
        return _collect(lambda s: _generate("greater-than", params, tokenizer, n + n // 2, s),
                        lambda p: (self.year(p) in held_years) == held_out, n, seed)

    def _tensors(self, tokenizer, prompts: list[dict]):
        tokens, last = _encode_texts(tokenizer, [p["clean"] for p in prompts])
        later = torch.zeros(len(prompts), tokenizer.get_vocab_size(with_added_tokens=True))
        for i, p in enumerate(prompts):
            later[i, [_single_id(tokenizer, y) for y in p["answer"]]] = 1.0
        years = torch.zeros_like(later[0])
        years[[_single_id(tokenizer, f"{k:02d}") for k in range(100)]] = 1.0
        return tokens, last, later, years

    def training_loss(self, model, tokenizer, batch_size: int, rng: random.Random) -> torch.Tensor:
        prompts = self._prompts(tokenizer, batch_size, rng.randrange(2**31), held_out=False)
        tokens, last, later, _ = self._tensors(tokenizer, prompts)
        log_probs = _answer_logits(model, tokens, last).log_softmax(-1)
        return -((log_probs * later).sum(-1) / later.sum(-1)).mean()

    @torch.no_grad()
    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]:
        """On `n` prompts with held-out nouns and years: `prob_diff` (mean P(YY' > YY) -
        P(YY' <= YY) over the two-digit tokens), `accuracy` (the arg-max is a later year)."""
        tokenizer = loaded.tokenizer.backend
        prompts = self._prompts(tokenizer, n, 10**6, held_out=True)
        tokens, last, later, years = self._tensors(tokenizer, prompts)
        probs = _answer_logits(loaded.model, tokens, last).softmax(-1)
        diff = (probs * later).sum(-1) - (probs * (years - later)).sum(-1)
        top = probs.argmax(-1)
        return {"prompts": len(prompts), "accuracy": float(later[torch.arange(len(top)), top].mean()),
                "prob_diff": float(diff.mean()), "year_mass": float((probs * years).sum(-1).mean())}


def attention_patterns(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [batch, pos, d_vocab], patterns [layer, batch, head, query, key]) of `tokens`.

    A plain forward pass computed from `extract_weights`, so that reading attention needs no
    hook names; the logits equal the model's own (a test checks it).
    """
    return full_forward(extract_weights(model), tokens)


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
    copied_fraction: float = 0.75 # share of each training batch that is a block copy
    copy_seq_len: int = 63  # tokens after <bos> of a block-copy training row
    copy_length: tuple[int, int] = (3, 31)  # [shortest, longest] copied block

    def vocabulary(self) -> list[str]:
        return [BOS, UNK, *(f"t{i}" for i in range(2, 2 + self.n_tokens))]

    def build_tokenizer(self):
        return build_tokenizer(self.vocabulary(), specials=(BOS, UNK))

    def _sequences(self, tokenizer, params: dict[str, Any], n: int, seed: int):
        prompts = _generate("induction", params, tokenizer, n, seed)
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
                losses.append((F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(),
                                               reduction="sum"), tokens[:, 1:].numel()))
        return sum(l for l, _ in losses) / sum(c for _, c in losses)

    @torch.no_grad()
    def evaluate(self, loaded: LoadedModel, n: int) -> dict[str, Any]:
        tokenizer = loaded.tokenizer.backend
        tokens, positions = self._sequences(tokenizer, self.eval_params, n, 10**6)
        logits, patterns = attention_patterns(loaded.model, tokens)
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
        _, rep_patterns = attention_patterns(loaded.model, repeated)
        query = torch.arange(length + 1, 2 * length + 1)
        induction = rep_patterns[:, :, :, query, query - length + 1].mean((1, 3))
        names = [f"a{layer}.h{head}" for layer in range(prev.shape[0]) for head in range(prev.shape[1])]
        prev_scores = dict(zip(names, (round(float(s), 3) for s in prev.flatten())))
        induction_scores = dict(zip(names, (round(float(s), 3) for s in induction.flatten())))
        return {
            "prompts": n, "accuracy": float(correct[hits].float().mean()),
            "nll_predictable": float(nll[hits].mean()), "nll_other": float(nll[~hits].mean()),
            "best_previous_token_head": max(prev_scores, key=prev_scores.get),
            "best_induction_head": max(induction_scores, key=induction_scores.get),
            "previous_token_scores": prev_scores, "induction_scores": induction_scores,
        }


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """How to build and train one zoo model."""

    name: str
    description: str
    config: dict[str, Any]  # HookedTransformerConfig keyword arguments (d_vocab filled in)
    task: ZooData
    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    eval_prompts: int = 2000  # held-out prompts scored by `evaluate_model`
    log_every: int = 50


DEMO_WORDS = IoiWords(
    names=("mary", "john", "anna", "paul", "lisa", "james", "sarah", "david", "laura", "kevin",
           "emma", "thomas", "rachel", "peter", "susan", "george", "alice", "henry", "grace",
           "jacob", "emily", "samuel", "karen", "brian", "kate", "steven", "helen", "mark",
           "linda", "jason", "amy", "eric", "ruth", "adam", "claire", "daniel", "jessica",
           "andrew", "michael", "robert"),
    places=("store", "garden", "restaurant", "school", "hospital", "office", "house", "station"),
    objects=("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"),
    templates=(
        "when {A} and {B} went to the {P} , {S} gave a {O} to",
        "then , {A} and {B} went to the {P} . {S} gave a {O} to",
        "when {A} and {B} got a {O} at the {P} , {S} decided to give it to",
        "while {A} and {B} were working at the {P} , {S} gave a {O} to",
        "after {A} and {B} went to the {P} , {S} handed a {O} to",
        "{A} and {B} went to the {P} . {S} brought a {O} to",
        "friends {A} and {B} found a {O} at the {P} . {S} gave it to",
        "when {A} and {B} arrived at the {P} , {S} sent a {O} to",
        "the {P} was quiet when {A} and {B} came in . {S} passed a {O} to",
        "{A} and {B} were at the {P} . afterwards , {S} showed the {O} to",
    ),
    held_out_pairs=160,
)
IOI_DATA = GeneratedIoi()
GREATER_THAN_DATA = GeneratedGreaterThan()
INDUCTION_DATA = RepeatedSpans(
    n_tokens=126,
    train_params={"seq_len": 63, "repeats": 3, "span_length": [2, 10], "token_min": 0,
                  "token_max": None, "exclude": []},
    eval_params={**GENERATORS["induction"].defaults(), "kind": "induction"},
)


def _mlp_config(n_layers: int, d_vocab: int, n_ctx: int, model_name: str) -> dict[str, Any]:
    return {
        "n_layers": n_layers, "n_heads": 4, "d_model": 64, "d_head": 16, "d_mlp": 256,
        "act_fn": "gelu", "normalization_type": "LN", "n_ctx": n_ctx, "d_vocab": d_vocab,
        "positional_embedding_type": "standard", "original_architecture": "circuit-zoo",
        "model_name": model_name,
    }


ZOO: dict[str, Recipe] = {
    "demo": Recipe(
        name="demo",
        description="2-layer, 4-head transformer with MLPs trained on a word-level IOI task",
        config=_mlp_config(2, len(DEMO_WORDS.vocabulary()), 32, "circuit-demo"),
        task=DEMO_WORDS,
        steps=1000,
    ),
    "ioi": Recipe(
        name="ioi",
        description="3-layer, 4-head transformer with MLPs trained on the ioi task's prompts",
        config=_mlp_config(3, len(IOI_DATA.vocabulary()), 32, "circuit-ioi"),
        task=IOI_DATA,
        steps=2000,
    ),
    "greater-than": Recipe(
        name="greater-than",
        description="2-layer, 4-head transformer with MLPs trained on the greater-than prompts",
        config=_mlp_config(2, len(GREATER_THAN_DATA.vocabulary()), 16, "circuit-greater-than"),
        task=GREATER_THAN_DATA,
        steps=1500,
    ),
    "induction": Recipe(
        name="induction",
        description="2-layer, 4-head attention-only transformer trained on repeated random spans",
        config={
            "n_layers": 2, "n_heads": 4, "d_model": 128, "d_head": 32, "attn_only": True,
            "act_fn": "relu", "normalization_type": "LN", "n_ctx": 64,
            "d_vocab": len(INDUCTION_DATA.vocabulary()), "positional_embedding_type": "standard",
            "original_architecture": "circuit-zoo", "model_name": "circuit-induction",
        },
        task=INDUCTION_DATA,
        steps=2500,
        batch_size=64,
        lr=3e-3,
        eval_prompts=200,
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or an error that lists the zoo."""
    if name not in ZOO:
        raise AcdcError(f"unknown zoo model {name!r}: choose one of {', '.join(sorted(ZOO))}")
    return ZOO[name]


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainingProgress:
    """Reported every `Recipe.log_every` steps and after the last one."""

    step: int
    steps: int
    loss: float  # mean cross-entropy of the answer over the last `log_every` steps
    elapsed_s: float


ProgressCallback = Callable[[TrainingProgress], None]


@contextmanager
def _deterministic_cpu(seed: int) -> Iterator[None]:
    """Seeded, single-machine-reproducible torch state; restored on exit."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(rng_state)
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def _learning_rate(recipe: Recipe, step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = min(recipe.warmup_steps, max(steps // 10, 1))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item()))


def train_model(name: str, out_dir: str | Path, seed: int = 0, steps: int | None = None,
                on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train zoo model `name` on the CPU and write its checkpoint to `out_dir`.

    Returns a report: the recipe's name, seed, steps, batch size, final training loss,
    held-out accuracy (see `evaluate_model`), training time and the files written.

    >>> report = train_model("demo", "/tmp/demo", steps=10)  # doctest: +SKIP
    >>> report["steps"]  # doctest: +SKIP
    10
    """
    recipe = get_recipe(name)
    steps = recipe.steps if steps is None else steps
    if steps < 1:
        raise AcdcError(f"--steps must be at least 1, got {steps}")
    out_dir = Path(out_dir)
    data = recipe.task
    tokenizer = data.build_tokenizer()
    data_rng = random.Random(seed)
    start = time.perf_counter()
    with _deterministic_cpu(seed):
        model = build_model(recipe.config, seed=seed)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "W_pos" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "W_pos" not in n)]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": recipe.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=recipe.lr, betas=(0.9, 0.98),
        )
        window: list[float] = []
        final_loss = float("nan")
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, step, steps)
            loss = data.training_loss(model, tokenizer, recipe.batch_size, data_rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            window.append(loss.item())
            done = step + 1
            if done % recipe.log_every == 0 or done == steps:
                final_loss = sum(window) / len(window)
                window.clear()
                if on_progress is not None:
                    on_progress(TrainingProgress(done, steps, final_loss, time.perf_counter() - start))
        model.eval()
    train_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_file = Path(scratch) / CHECKPOINT_TOKENIZER
        tokenizer.save(str(tokenizer_file))
        save_checkpoint(model, out_dir, tokenizer_file=tokenizer_file, config=recipe.config)
    evaluation = evaluate_model(name, out_dir)
    heldout = {f"heldout_{k}": v for k, v in evaluation.items()
               if k not in ("model", "checkpoint", "n_params", "recipe_steps")
               and isinstance(v, (int, float, str))}
    return {
        "model": name, "seed": seed, "steps": steps, "batch_size": recipe.batch_size,
        "final_loss": final_loss, "train_seconds": round(train_s, 1), **heldout,
        "out_dir": str(out_dir),
        "files": {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()},
    }


# --------------------------------------------------------------------------- the demo task


def demo_task_prompts(name: str = "demo", n: int = 24, seed: int = 0) -> list[dict[str, str]]:
    """Clean/corrupt prompt pairs for `tasks/<name>.yaml`, from held-out name pairs only.

    Deterministic. One prompt per template in turn, alternating ABB/BAB name orders; the
    corruption is ABC (three fresh names), so clean and corrupt tokenise to the same length.
    """
    recipe = get_recipe(name)
    words = recipe.task
    _, held_out = words.pair_split()
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        prompt = ioi_prompt(words, i % len(words.templates), rng.choice(held_out), i % 2 == 0,
                            rng.choice(words.places), rng.choice(words.objects), rng.random() < 0.5)
        prompts.append({"clean": prompt.text, "corrupt": corrupt_prompt(words, prompt, rng),
                        "answer": " " + prompt.answer, "wrong": " " + prompt.wrong})
    return prompts


def demo_task_yaml(name: str = "demo", n: int = 24, seed: int = 0) -> str:
    """The text of `tasks/<name>.yaml` (written once and committed)."""
    lines = [
        f"name: {name}",
        "description: word-level indirect-object identification on the bundled 2-layer demo model",
        f"model: ../models/{name}",
        "metric: kl",
        "threshold: 0.03",
        "ablation: corrupt",
        "seed: 0",
        "prepend_bos: true",
        "positions: last",
        f"# generated by acdc.zoo.demo_task_yaml(n={n}, seed={seed}); name pairs held out of training",
        "prompts:",
    ]
    for p in demo_task_prompts(name, n, seed):
        lines += [f'  - clean: "{p["clean"]}"', f'    corrupt: "{p["corrupt"]}"',
                  f'    answer: "{p["answer"]}"', f'    wrong: "{p["wrong"]}"']
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_model(name: str, checkpoint_dir: str | Path, n: int | None = None) -> dict[str, Any]:
    """Score a checkpoint of zoo model `name` on `n` held-out prompts (default: the recipe's).

    Returns the model, checkpoint, parameter count and the data's own measures: for the IOI
    models `accuracy` and `logit_diff`, for greater-than `prob_diff` and `accuracy`, for
    induction `accuracy` at the predictable positions and every head's previous-token and
    induction scores.
    """
    recipe = get_recipe(name)
    loaded = load_model(str(checkpoint_dir))
    if loaded.tokenizer is None:
        raise AcdcError(f"{checkpoint_dir}: no {CHECKPOINT_TOKENIZER}; zoo checkpoints carry one")
    scores = recipe.task.evaluate(loaded, recipe.eval_prompts if n is None else n)
    return {"model": name, "checkpoint": str(checkpoint_dir), **scores,
            "n_params": loaded.shape.n_params, "recipe_steps": recipe.steps}
