"""Tokenising a `TaskSpec` for a model into a `Task`.

`resolve_task` generates a generator's prompts (they need the tokenizer), then tokenises every
prompt and checks everything that needs token counts: clean and corrupt lengths, single-token
answers, ids inside the vocabulary, prompt lengths within the context, positions inside their
prompt, what the metric needs, corrupt prompts that differ from their clean ones. Text far
longer than the context is refused before it is tokenised (`check_prompt_lengths` does the same
before the model loads). Words the tokenizer does not know are one `RunWarning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from acdc.core.generators.registry import generate_prompts
from acdc.core.tasks.checks import clip
from acdc.core.tasks.labels import resolve_labels
from acdc.core.tasks.prompts import parse_prompts
from acdc.core.tasks.show import show_tokens
from acdc.core.tasks.spec import TaskSpec, check_spec_needs
from acdc.core.tasks.values import RawPrompt, Task, Text, Token
from acdc.errors import RunWarning, TaskError

if TYPE_CHECKING:
    from acdc.core.tokenizer import Tokenizer

MAX_CHARS_PER_TOKEN = 64  # text longer than this per token of the context cannot fit in it
MAX_ANSWER_CHARS = 256  # longer than any single token of any tokenizer


def resolve_task(spec: TaskSpec, tokenizer: Tokenizer | None, d_vocab: int, n_ctx: int) -> Task:
    """Tokenise a `TaskSpec` for a model with this tokenizer (or None) and shape.

    A task with a generator has its prompts generated here (they need the tokenizer); messages
    about them name `generated prompts[i]`. Raises `TaskError` for the first problem found,
    naming the prompt and the fix. Issues at most one `RunWarning` for words of the prompts
    that the tokenizer does not know (they become its unknown token) and one for prompts whose
    corrupt tokens equal their clean ones (with corrupt ablation, when some prompts differ).
    """
    key = "prompts"
    if spec.generator is not None:
        key = "generated prompts"
        raw = generate_prompts(spec.generator["kind"], spec.generator, tokenizer, d_vocab,
                               spec.source)
        spec = replace(spec, prompts=parse_prompts(raw, spec.source, key))
    check_spec_needs(spec, key)
    bos: list[int] = []
    if spec.prepend_bos:
        if tokenizer is None:
            raise TaskError(
                f"{spec.source}: prepend_bos is true but the model has no tokenizer to"
                f" give a BOS id; set prepend_bos: false and write the BOS id into each prompt"
            )
        if tokenizer.bos_id is None:
            raise TaskError(
                f"{spec.source}: prepend_bos is true but the tokenizer"
                f" ({tokenizer.source}) has no BOS token; set prepend_bos: false"
            )
        bos = [tokenizer.bos_id]
    resolver = _Resolver(spec, tokenizer, d_vocab, n_ctx, bos, key)
    clean, corrupt, positions, answers, wrong, labels = [], [], [], [], [], []
    for prompt in spec.prompts:
        c, k, p, a, w, n = resolver.prompt(prompt)
        clean.append(c)
        corrupt.append(k)
        positions.append(p)
        answers.append(a)
        wrong.append(w)
        labels.append(n)
    if spec.ablation == "corrupt":
        _check_corrupt_differs(spec, key, clean, corrupt)
    resolver.warn_unknown_words()
    return Task(
        name=spec.name,
        description=spec.description,
        source=spec.source,
        model=spec.model,
        metric=spec.metric,
        threshold=spec.threshold,
        ablation=spec.ablation,
        seed=spec.seed,
        clean=clean,
        corrupt=corrupt,
        positions=positions,
        answers=None if answers[0] is None else answers,
        wrong_answers=None if wrong[0] is None else wrong,
        labels=_in_one_order(labels),
    )


def _in_one_order(labels: list[dict[str, int] | None]) -> list[dict[str, int]] | None:
    """Every prompt's labels in the first prompt's order (the sets are equal: checked)."""
    if labels[0] is None:
        return None
    order = list(labels[0])
    return [{name: found[name] for name in order} for found in labels if found is not None]


def _check_corrupt_differs(spec: TaskSpec, key: str, clean: list[list[int]],
                           corrupt: list[list[int]]) -> None:
    """With corrupt ablation, a prompt whose corrupt tokens equal its clean ones gives every
    edge the same value in both runs: removing an edge changes nothing there. On every prompt
    that is an error (ACDC would remove every edge), on some a warning. (Whole prompts are
    compared: on a causal model tokens after the last metric position are not seen either, but
    on a bidirectional one they are.)"""
    same = [i for i, (c, k) in enumerate(zip(clean, corrupt, strict=True)) if c == k]
    if not same:
        return
    first = f"{key}[{same[0]}]"
    if len(same) == len(clean):
        where = first if len(same) == 1 else f"{key}: on every prompt ({len(same)} of {len(same)})"
        raise TaskError(
            f"{spec.source}: {where}: corrupt is the same tokens as clean, so ablating an edge"
            f" with the corrupt run changes nothing and every edge would be removed; make each"
            f" corrupt prompt differ from its clean one, or use ablation zero"
        )
    warnings.warn(
        f"{spec.source}: {key}: on {len(same)} of {len(clean)} prompts (first {first}) corrupt"
        f" is the same tokens as clean, so ablating an edge changes nothing there and only"
        f" dilutes the metric; make their corrupt prompts differ or remove them",
        RunWarning, stacklevel=3,
    )


def check_prompt_lengths(spec: TaskSpec, n_ctx: int) -> None:
    """Refuse, before the model loads, written prompts whose text cannot fit the model's
    context (`resolve_task` checks the same, and the token counts, once it can tokenise)."""
    bos = 1 if spec.prepend_bos else 0
    for prompt in spec.prompts:
        where = f"{spec.source}: prompts[{prompt.index}]"
        for name, text in (("clean", prompt.clean), ("corrupt", prompt.corrupt)):
            if isinstance(text, str):
                _check_text_length(text, f"{where}: {name}", n_ctx, bos)


def _check_text_length(text: str, where: str, n_ctx: int, n_bos: int) -> None:
    if len(text) > max(n_ctx - n_bos, 1) * MAX_CHARS_PER_TOKEN:
        raise TaskError(
            f"{where}: {len(text):,} characters, far more than the model's context of"
            f" {n_ctx} tokens holds (text longer than {MAX_CHARS_PER_TOKEN}"
            f" characters per token is refused before tokenising); shorten the prompt"
        )


@dataclass
class _Resolver:
    spec: TaskSpec
    tokenizer: Tokenizer | None
    d_vocab: int
    n_ctx: int
    bos: list[int]
    key: str = "prompts"
    unk: int | None = field(init=False)
    unknown_prompts: set[int] = field(init=False, default_factory=set)
    unknown_tokens: int = field(init=False, default=0)
    first_unknown: tuple[str, str] | None = field(init=False, default=None)  # (word, where)
    answer_cache: dict[str, int] = field(init=False, default_factory=dict)  # checked answers

    def __post_init__(self) -> None:
        self.unk = self.tokenizer.unk_id if self.tokenizer is not None else None

    def prompt(self, prompt: RawPrompt):
        where = f"{self.spec.source}: {self.key}[{prompt.index}]"
        clean = self.ids(prompt.clean, f"{where}: clean", prompt.index)
        if prompt.corrupt is None:
            corrupt = list(clean)
        else:
            corrupt = self.ids(prompt.corrupt, f"{where}: corrupt", prompt.index)
            if len(clean) != len(corrupt):
                raise TaskError(
                    f"{where}: clean has {len(clean)} tokens {self.show(clean)}, corrupt"
                    f" has {len(corrupt)} {self.show(corrupt)}; make them tokenise to the"
                    f" same length"
                )
        length = len(self.bos) + len(clean)
        if length > self.n_ctx:
            bos = " with BOS" if self.bos else ""
            fix = "the prompt" if self.key == "prompts" else "the generator's seq_len or templates"
            raise TaskError(
                f"{where}: {length} tokens{bos}, longer than the model's context of"
                f" {self.n_ctx}; shorten {fix}"
            )
        positions = self.positions(prompt, len(clean), where, clean)
        labels = self.labels(prompt, clean, where)
        answers = (
            None if prompt.answers is None else self.answer_ids(prompt.answers, f"{where}: answer")
        )
        wrong = None if prompt.wrong is None else self.answer_ids(prompt.wrong, f"{where}: wrong")
        if self.spec.metric == "nll" and answers is None and positions[-1] == len(clean) - 1:
            raise TaskError(
                f"{where}: metric nll reads the last position, whose next token is not"
                f" in the prompt; add answer: (the expected next token) or positions"
                f" that exclude the last"
            )
        offset = len(self.bos)
        return (
            self.bos + clean,
            self.bos + corrupt,
            [p + offset for p in positions],
            answers,
            wrong,
            None if labels is None else {name: p + offset for name, p in labels.items()},
        )

    def ids(self, text: Text, where: str, index: int) -> list[int]:
        if isinstance(text, str):
            _check_text_length(text, where, self.n_ctx, len(self.bos))
            ids = self.encode(text, where)
            if not ids:
                raise TaskError(
                    f"{where}: {clip(repr(text)) if len(text) > 50 else repr(text)} tokenises"
                    f" to no tokens; give a non-empty prompt"
                )
            self.check_tokenizer_vocab(ids, where)
            if self.unk is not None and self.unk in ids:
                self.note_unknown(text, where, index)
        else:
            ids = list(text)
        self.check_vocab(ids, where)
        return ids

    def unknown_words(self, text: str) -> list[str]:
        """The words of `text` that became the unknown token (not the token's own text)."""
        assert self.tokenizer is not None
        return self.tokenizer.unknown_words(text)

    def note_unknown(self, text: str, where: str, index: int) -> None:
        words = self.unknown_words(text)
        if not words:
            return  # the unknown token written as itself
        self.unknown_prompts.add(index)
        self.unknown_tokens += len(words)
        if self.first_unknown is None:
            self.first_unknown = (words[0], where.removeprefix(f"{self.spec.source}: "))

    def warn_unknown_words(self) -> None:
        """One warning for every prompt word the tokenizer does not know."""
        if self.first_unknown is None:
            return
        assert self.tokenizer is not None
        word, where = self.first_unknown
        n, total, tokens = len(self.unknown_prompts), len(self.spec.prompts), self.unknown_tokens
        warnings.warn(
            f"{self.spec.source}: the tokenizer ({self.tokenizer.source}) does not know"
            f" {clip(repr(word))} ({where}): {n} of {total} prompts ha{'s' if n == 1 else 've'}"
            f" words it does not know, {tokens} token{'s' if tokens > 1 else ''} in all,"
            f" each read as the unknown token {self.unknown_text()}, which the model cannot"
            f" tell apart; check the spelling or use words in its vocabulary",
            RunWarning, stacklevel=3,
        )

    def unknown_text(self) -> str:
        assert self.tokenizer is not None and self.unk is not None
        return repr(self.tokenizer.token_strings([self.unk])[0])

    def encode(self, text: str, where: str) -> list[int]:
        if self.tokenizer is None:
            raise TaskError(
                f"{where}: {clip(repr(text))} is text but the model has no tokenizer;"
                f" give token ids or a model with tokenizer.json"
            )
        return list(self.tokenizer.encode(text))

    def check_vocab(self, ids: list[int], where: str) -> None:
        for j, token in enumerate(ids):
            if not 0 <= token < self.d_vocab:
                at = f"{where}[{j}]" if len(ids) > 1 else where
                raise TaskError(
                    f"{at}: token id {token} is outside the model's vocabulary"
                    f" [0, {self.d_vocab}); use ids from 0 to {self.d_vocab - 1}"
                )

    def check_tokenizer_vocab(self, ids: list[int], where: str) -> None:
        for j, token in enumerate(ids):
            if not 0 <= token < self.d_vocab:
                assert self.tokenizer is not None  # the ids are the tokenizer's
                raise TaskError(
                    f"{where}: token {j} ({self.show([token])[1:-1]}) has id {token},"
                    f" outside the model's vocabulary [0, {self.d_vocab}); the tokenizer"
                    f" ({self.tokenizer.source}) does not match the model"
                )

    def answer_ids(self, tokens: tuple[Token, ...], where: str) -> list[int]:
        out = []
        for j, token in enumerate(tokens):
            at = f"{where}[{j}]" if len(tokens) > 1 else where
            if isinstance(token, str):
                if len(token) > MAX_ANSWER_CHARS:
                    raise TaskError(
                        f"{at}: {len(token):,} characters, longer than any token; an answer"
                        f" must be exactly one token (a word, or its id)"
                    )
                if token in self.answer_cache:  # the same answers recur across prompts
                    out.append(self.answer_cache[token])
                    continue
                ids = self.encode(token, at)
                if len(ids) != 1:
                    raise TaskError(
                        f"{at}: {token!r} is {len(ids)} tokens {self.show(ids)}; an answer"
                        f" must be exactly one token (try another word, or its id)"
                    )
                if ids[0] == self.unk and self.unknown_words(token):
                    assert self.tokenizer is not None
                    raise TaskError(
                        f"{at}: {token!r} is not in the vocabulary of the tokenizer"
                        f" ({self.tokenizer.source}): it becomes the unknown token"
                        f" {self.unknown_text()}, so the metric would read that token; use a"
                        f" word the tokenizer knows (or the id {self.unk} to mean the unknown"
                        f" token itself)"
                    )
                self.check_tokenizer_vocab(ids, at)
                self.check_vocab(ids, at)
                self.answer_cache[token] = ids[0]
            else:
                ids = [token]
                self.check_vocab(ids, at)
            out.extend(ids)
        return out

    def positions(self, prompt: RawPrompt, length: int, where: str, clean: list[int]) -> list[int]:
        chosen = self.spec.positions if prompt.positions is None else prompt.positions
        if chosen == "last":
            return [length - 1]
        if chosen == "all":
            return list(range(length))
        out = set()
        for position in chosen:
            if not -length <= position < length:
                key = (
                    "positions"
                    if prompt.positions is not None
                    else "positions (the task's default)"
                )
                raise TaskError(
                    f"{where}: {key}: position {position} is outside the prompt of"
                    f" {length} tokens {self.show(clean)}; use 0..{length - 1} or"
                    f" -{length}..-1"
                )
            out.add(position % length)
        return sorted(out)

    def show(self, ids: list[int]) -> str:
        return show_tokens(self.tokenizer, ids)

    def labels(self, prompt: RawPrompt, ids: list[int], where: str) -> dict[str, int] | None:
        """The prompt's labels (its own or the task's default) at their positions in `ids`."""
        chosen = self.spec.labels if prompt.labels is None else prompt.labels
        if chosen is None:
            return None
        key = "labels" if prompt.labels is not None else "labels (the task's default)"
        return resolve_labels(chosen, prompt.clean, ids, f"{where}: {key}", self.tokenizer,
                              self.show)
