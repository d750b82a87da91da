"""What the built-in data asks of a tokenizer.

What counts as a name, a noun or a year depends on the tokenizer of the model in use: a word is
usable when it is exactly one token, and not the unknown token, in the form it takes in the
prompt. `Vocab` answers those questions for the generators, and the checks here refuse, with
one line naming the list or template, what a tokenizer cannot give: too few usable words,
template words it does not know, a clean and corrupt prompt of different token counts.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from acdc.errors import TaskError

if TYPE_CHECKING:
    from acdc.core.models import Tokenizer


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


def check_same_length(vocab: Vocab, clean: str, corrupt: str, where: str) -> None:
    c, k = vocab.ids(clean), vocab.ids(corrupt)
    if len(c) != len(k):
        raise TaskError(
            f"{where}: clean {clean!r} has {len(c)} tokens, corrupt {corrupt!r} has {len(k)}"
            f" (the tokenizer joins a slot with its neighbours); change the template"
        )
