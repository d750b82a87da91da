"""Labelled token positions: names such as IO, S1, S2 and END for positions of a prompt.

Position-aware circuits (auto-circuit's token-specific edges, the IOI paper's head classes)
speak of positions by role: the indirect object IO, the subject's first and second mention S1
and S2, the token after S1 (S1+1), the last token END; the greater-than analyses read the
year's YY and END. A task names them with `labels:`, a mapping of label -> locator, on a prompt
or at the top of the file as the default of every prompt without its own. A locator is:

- a token position (`3`, `-1`): a token of the prompt as written, from 0, negative from the
  end; with `prepend_bos: true` the BOS is not counted (as for `positions`);
- a word of the clean text (`Mary`): it must occur exactly once, as a whole word;
- a word and which occurrence (`[John, 2]`: the second; `[John, -1]`: the last).

A word labels the last token of its text (the one that has read the whole word, and where
the word's token is when it is one token); the corrupt prompt has the same number of tokens,
so a label names the same position in both runs.

Checked when the file is read (`check_labels`, `check_label_sets`): names (a letter or `_`,
then letters, digits and `_`, optionally `+N` or `-N` as in `S1+1`; `other` is reserved for
the unlabelled positions), locators, words only in text prompts, and every prompt with the
same set of labels. Checked when tokenised (`resolve_labels`): positions inside the prompt,
words found once (or at the occurrence asked for) and ending at a token boundary, no two
labels on one position. Each problem is one `TaskError` line naming the file, the prompt and
the fix.

>>> labels = check_labels({"IO": "Mary", "S2": ["John", 2], "END": -1}, "x.yaml: labels")
>>> labels
(('IO', 'Mary'), ('S2', ('John', 2)), ('END', -1))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from acdc.core.generators.tokens import token_ending_at
from acdc.core.tasks.checks import clip, show
from acdc.errors import TaskError, kind_of

if TYPE_CHECKING:
    from acdc.core.tasks.values import Labels, Locator, RawPrompt, Text
    from acdc.core.tokenizer import Tokenizer

LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[+-][0-9]+)?")
"""A label's name: an identifier, optionally with a token offset written into it (`S1+1`)."""
OTHER = "other"
"""The name of every unlabelled position, together; no label may take it."""
MAX_LABEL_CHARS = 40
MAX_WORD_CHARS = 256  # a labelled word or phrase: far longer than any word

FORMS = "a token position such as 3 or -1, a word of the clean text, or [word, occurrence]"


# --------------------------------------------------------------------------- reading


def check_labels(value: Any, where: str) -> Labels:
    """A `labels:` mapping as written, checked for names and locator types.

    Returns the labels in the order written, each locator as an int, a word, or (word,
    occurrence). `where` names the key (`x.yaml: prompts[3]: labels`).
    """
    if not isinstance(value, Mapping):
        raise TaskError(
            f"{where}: expected a mapping of label: position (IO: Mary, END: -1), got"
            f" {kind_of(value)}"
        )
    if not value:
        raise TaskError(f"{where}: is empty; give at least one label (END: -1) or leave it out")
    out: list[tuple[str, Locator]] = []
    for name, locator in value.items():
        checked = check_label_name(name, where)
        out.append((checked, _check_locator(locator, f"{where}: {checked}")))
    return tuple(out)


def check_label_name(name: Any, where: str) -> str:
    """A label name: an identifier, optionally `+N`/`-N` (`S1+1`), not `other`."""
    if not isinstance(name, str):
        raise TaskError(
            f"{where}: label {show(name)} is not a name; write a name such as IO, S1, S1+1 or"
            f" END"
        )
    if len(name) > MAX_LABEL_CHARS or not LABEL_NAME.fullmatch(name):
        raise TaskError(
            f"{where}: {clip(repr(name))} is not a label name; use a letter or _, then letters,"
            f" digits or _, optionally +N or -N (IO, S1, S1+1, END), at most {MAX_LABEL_CHARS}"
            f" characters"
        )
    if name.casefold() == OTHER:
        raise TaskError(
            f"{where}: {name!r} is reserved: it names every unlabelled position together;"
            f" give the label another name"
        )
    return name


def _check_locator(value: Any, where: str) -> Locator:
    if isinstance(value, bool):
        raise TaskError(f"{where}: expected {FORMS}, got {show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return _check_word(value, where)
    if isinstance(value, list):
        if len(value) != 2:
            raise TaskError(
                f"{where}: expected [word, occurrence] (two items, as [John, 2]), got"
                f" {len(value)} items"
            )
        word, occurrence = value
        if not isinstance(word, str):
            raise TaskError(f"{where}[0]: expected a word of the clean text, got {show(word)}")
        if isinstance(occurrence, bool) or not isinstance(occurrence, int) or occurrence == 0:
            raise TaskError(
                f"{where}[1]: expected which occurrence of {clip(repr(word))}: 1 for the first,"
                f" 2 for the second, -1 for the last; got {show(occurrence)}"
            )
        return (_check_word(word, f"{where}[0]"), occurrence)
    raise TaskError(f"{where}: expected {FORMS}, got {show(value)}")


def _check_word(word: str, where: str) -> str:
    if not word.strip():
        raise TaskError(f"{where}: the word is empty; write a word of the clean text")
    if len(word) > MAX_WORD_CHARS:
        raise TaskError(
            f"{where}: {len(word):,} characters, longer than any word ({MAX_WORD_CHARS}); label"
            f" a word, or give a token position"
        )
    return word


def check_label_sets(prompts: Sequence[RawPrompt], default: Labels | None, source: str,
                     key: str) -> None:
    """Every prompt has the same set of labels (its own, or the task's default), and words
    locate labels only in text prompts. The first prompt that differs from the first is
    named."""
    if default is None and all(p.labels is None for p in prompts):
        return
    first = prompts[0]
    names = _names(first.labels if first.labels is not None else default)
    for prompt in prompts:
        labels = prompt.labels if prompt.labels is not None else default
        where = f"{source}: {key}[{prompt.index}]"
        theirs = _names(labels)
        if theirs != names:
            raise TaskError(f"{where}: {_difference(theirs, names, key, first.index)}")
        if labels is not None and not isinstance(prompt.clean, str):
            for name, locator in labels:
                if not isinstance(locator, int):
                    at = "labels" if prompt.labels is not None else "labels (the task's default)"
                    raise TaskError(
                        f"{where}: {at}: {name}: {_word_of(locator)} is a word, but this prompt"
                        f" is token ids; give a token position such as 3 or -1"
                    )


def _names(labels: Labels | None) -> frozenset[str] | None:
    return None if labels is None else frozenset(name for name, _ in labels)


def _difference(theirs: frozenset[str] | None, names: frozenset[str] | None, key: str,
                first: int) -> str:
    fix = "give every prompt the same labels, or one labels: at the top for all"
    if theirs is None:
        return f"has no labels but {key}[{first}] has {_list(names)}; {fix}"
    if names is None:
        return f"has labels {_list(theirs)} but {key}[{first}] has none; {fix}"
    parts = []
    if names - theirs:
        parts.append(f"missing {_list(names - theirs)}")
    if theirs - names:
        parts.append(f"{_list(theirs - names)} not in {key}[{first}]")
    return f"labels {_list(theirs)} differ from {key}[{first}]'s ({'; '.join(parts)}); {fix}"


def _list(names: frozenset[str] | None) -> str:
    return ", ".join(sorted(names or ()))


def _word_of(locator: Locator) -> str:
    word = locator if isinstance(locator, str) else locator[0]  # type: ignore[index]
    return clip(repr(word))


# --------------------------------------------------------------------------- tokenising


def resolve_labels(
    labels: Labels,
    clean: Text,
    ids: list[int],
    where: str,
    tokenizer: Tokenizer | None,
    show_tokens: Callable[[list[int]], str],
) -> dict[str, int]:
    """Each label's position in `ids`, the written tokens of the clean prompt (no BOS).

    `where` names the key (`x.yaml: prompts[3]: labels`); `show_tokens` shows tokens in a
    message. Raises `TaskError` for a position outside the prompt, a word not found, found
    more than once without an occurrence, or ending inside a token, and two labels on one
    position.
    """
    out: dict[str, int] = {}
    taken: dict[int, str] = {}
    length = len(ids)
    for name, locator in labels:
        at = f"{where}: {name}"
        if isinstance(locator, int):
            if not -length <= locator < length:
                raise TaskError(
                    f"{at}: position {locator} is outside the prompt of {length} tokens"
                    f" {show_tokens(ids)}; use 0..{length - 1} or -{length}..-1"
                )
            position = locator % length
        else:
            assert isinstance(clean, str) and tokenizer is not None  # checked when read
            position = _word_position(locator, clean, ids, at, tokenizer, show_tokens)
        if position in taken:
            raise TaskError(
                f"{where}: {taken[position]} and {name} both name position {position}"
                f" {show_tokens(ids[position:position + 1])}; give each label its own position"
            )
        taken[position] = name
        out[name] = position
    return out


def _word_position(locator: str | tuple[str, int], text: str, ids: list[int], at: str,
                   tokenizer: Tokenizer, show_tokens: Callable[[list[int]], str]) -> int:
    word, occurrence = (locator, None) if isinstance(locator, str) else locator
    ends = word_ends(text, word)
    shown = clip(repr(word))
    if not ends:
        raise TaskError(
            f"{at}: {shown} is not a word of the clean prompt {clip(repr(text))}; write it as"
            f" it appears there (case and punctuation count), or give a token position"
        )
    if occurrence is None:
        if len(ends) > 1:
            raise TaskError(
                f"{at}: {shown} occurs {len(ends)} times in the clean prompt; say which, as"
                f" [{word}, 1] .. [{word}, {len(ends)}] (or -1 for the last)"
            )
        end = ends[0]
    else:
        if not -len(ends) <= occurrence <= len(ends):
            times = "once" if len(ends) == 1 else f"{len(ends)} times"
            raise TaskError(
                f"{at}: occurrence {occurrence} of {shown}, which occurs {times} in the clean"
                f" prompt; use 1..{len(ends)} or -{len(ends)}..-1"
            )
        end = ends[occurrence - 1 if occurrence > 0 else occurrence]
    position = token_ending_at(tokenizer, text, end, ids)
    if position is None:
        raise TaskError(
            f"{at}: {shown} ends inside a token of the clean prompt {show_tokens(ids)} (the"
            f" tokenizer joins it with the text after it); label a word that ends where a"
            f" token ends, or give a token position"
        )
    return position


def word_ends(text: str, word: str) -> list[int]:
    """Where each occurrence of `word` in `text` ends (character offsets), as a whole word:
    a word that begins or ends with a letter, digit or `_` does not match inside another.

    >>> word_ends("John and Johnny met John.", "John")
    [4, 24]
    """
    head = r"(?<!\w)" if re.match(r"\w", word[0]) else ""
    tail = r"(?!\w)" if re.match(r"\w", word[-1]) else ""
    return [m.end() for m in re.finditer(head + re.escape(word) + tail, text)]
