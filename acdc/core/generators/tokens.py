"""What the built-in data asks of a tokenizer.

What counts as a name, a noun or a year depends on the tokenizer of the model in use: a word is
usable when it is exactly one token, and not the unknown token, in the form it takes in the
prompt. `Vocab` answers those questions for the generators, and the checks here refuse, with
one line naming the list or template, what a tokenizer cannot give: too few usable words,
template words it does not know, a clean and corrupt prompt of different token counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from acdc.errors import TaskError

if TYPE_CHECKING:
    from acdc.core.tokenizer import Tokenizer


class Vocab:
    """What the generators ask of a tokenizer: single tokens, unknown words, shown tokens."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.unk = tokenizer.unk_id

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def single(self, text: str) -> int | None:
        """The id of `text` when it is exactly one known token, else None."""
        ids = self.ids(text)
        return ids[0] if len(ids) == 1 and ids[0] != self.unk else None

    def known(self, text: str) -> bool:
        ids = self.ids(text)
        return bool(ids) and self.unk not in ids

    def show(self, text: str) -> str:
        ids = self.ids(text)
        strings = self.tokenizer.token_strings(ids)
        return f"{text!r} -> [{', '.join(repr(s) for s in strings)}]"


def vocab_for(tokenizer: Tokenizer | None, where: str, kind: str) -> Vocab:
    """The `Vocab` of a text generator's tokenizer; a model without one cannot have text."""
    if tokenizer is None:
        raise TaskError(
            f"{where}: the {kind} generator writes text, but the model has no tokenizer; use a"
            f" model with tokenizer.json"
        )
    return Vocab(tokenizer)


def keep(
    vocab: Vocab, where: str, key: str, words: list[str], forms: tuple[str, ...],
    need: int, what: str, single: bool = True,
) -> list[str]:
    """The words all of whose `forms` ("{}" with or without a leading space) are single known
    tokens (or, with single=False, tokenise without the unknown token)."""
    test = vocab.single if single else (lambda text: text if vocab.known(text) else None)
    kept: list[str] = []
    dropped: list[str] = []
    for word in words:
        bad = [form.format(word) for form in forms if test(form.format(word)) is None]
        (dropped if bad else kept).append(bad[0] if bad else word)
    if len(kept) < need:
        rule = "single tokens for" if single else "known to"
        shown = "; ".join(vocab.show(text) for text in dropped[:3])
        raise TaskError(
            f"{where}: {key}: only {len(kept)} of {len(words)} {what} are {rule} the"
            f" tokenizer ({vocab.tokenizer.source}), at least {need} needed; for example"
            f" {shown}; add {what} that are {rule} it"
        )
    return kept


def check_known_words(vocab: Vocab, text: str, where: str) -> None:
    """A template filled with words must not contain words the tokenizer does not know."""
    if vocab.unk is None or vocab.unk not in vocab.ids(text):
        return
    unknown = [w for w in re.findall(r"\w+|[^\w\s]", text) if not vocab.known(" " + w)]
    raise TaskError(
        f"{where}: the tokenizer ({vocab.tokenizer.source}) does not know"
        f" {', '.join(repr(w) for w in unknown) or 'part'} in {text!r}; change the words or"
        f" remove the template"
    )


def check_same_length(vocab: Vocab, clean: str, corrupt: str, where: str) -> list[int]:
    """The clean prompt's token ids, after checking that the corrupt one has as many."""
    c, k = vocab.ids(clean), vocab.ids(corrupt)
    if len(c) != len(k):
        raise TaskError(
            f"{where}: clean {clean!r} has {len(c)} tokens, corrupt {corrupt!r} has {len(k)}"
            f" (the tokenizer joins a slot with its neighbours); change the template"
        )
    return c


def token_ending_at(tokenizer: Tokenizer, text: str, end: int, ids: list[int]) -> int | None:
    """The index in `ids` (the tokens of `text`) of the token whose text ends at character
    `end`, or None when `end` falls inside a token (or before the first one).

    The tokens of `text[:end]` must begin the tokens of the whole text: then no token spans
    the cut, and the last of them is the one that ends there. This asks nothing of the
    tokenizer but `encode`, so it holds for every kind (byte-level BPE, word-level, Hugging
    Face), whether or not it reports character offsets.

    >>> from tokenizers import Tokenizer as Raw, models, pre_tokenizers
    >>> raw = Raw(models.WordLevel({"When": 0, "Mary": 1, "left": 2}, unk_token="When"))
    >>> raw.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> from acdc.core.tokenizer import Tokenizer
    >>> tok, text = Tokenizer(raw, "demo"), "When Mary left"
    >>> [token_ending_at(tok, text, end, [0, 1, 2]) for end in (9, 7)]  # "When Mary", "When Ma"
    [1, None]
    """
    head = tokenizer.encode(text[:end])
    if not head or list(ids[: len(head)]) != list(head):
        return None
    return len(head) - 1


def label_positions(vocab: Vocab, text: str, ids: list[int], ends: Mapping[str, int],
                    where: str) -> dict[str, int]:
    """The token position of each label of a generated prompt: the token whose text ends at
    character `ends[label]` of `text` (the end of the slot it labels). `where` names the
    template, which is at fault when a slot's word does not end at a token boundary."""
    out = {}
    for name, end in ends.items():
        position = token_ending_at(vocab.tokenizer, text, end, ids)
        if position is None:
            raise TaskError(
                f"{where}: in {text!r} the word labelled {name} ({text[:end].split()[-1]!r})"
                f" ends inside a token (the tokenizer joins it with the text after it), so no"
                f" position can carry the label; put a space or punctuation after the slot"
            )
        out[name] = position
    return out


def check_distinct(labels: Mapping[str, int], text: str, where: str) -> None:
    """No two labels of a generated prompt on one token (the template puts them too close)."""
    seen: dict[int, str] = {}
    for name, position in labels.items():
        if position in seen:
            raise TaskError(
                f"{where}: labels {seen[position]} and {name} fall on the same token"
                f" ({position}) of {text!r}; put a word between their slots"
            )
        seen[position] = name
