"""Tokenised prompts shown to a person: in error messages, and with their labels.

A label names a position by the token it lands on, which a person can only check by seeing the
tokenisation: `render_prompt` writes a prompt's tokens separated by `|`, each labelled one
followed by its label in parentheses, as

    <|endoftext|>|When| Mary(IO)| and| John(S1)| went(S1+1)| to| the| store|,| John(S2)|...| to(END)

Tokens are shown as the tokenizer decodes each alone (so a byte-level BPE's leading space is
a space; a special token such as the BOS, which decodes to nothing, as its own string), or as
ids when there is no tokenizer. A token holding `|`, a line break or another control character
is shown as its Python repr, so that every bare `|` separates two tokens. `show_tokens` is the
short form error messages use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from acdc.errors import TaskError

if TYPE_CHECKING:
    from acdc.core.tasks.values import Task
    from acdc.core.tokenizer import Tokenizer

SHOWN_TOKENS = 12  # tokens shown in an error message before "..."


def show_tokens(tokenizer: Tokenizer | None, ids: list[int]) -> str:
    """The first tokens of `ids` for an error message: their strings, or ids without a
    tokenizer (or when an id is outside its vocabulary).

    >>> show_tokens(None, list(range(20)))
    '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...]'
    """
    shown = ids[:SHOWN_TOKENS]
    items: list[Any] = list(shown)
    if tokenizer is not None and all(0 <= i < tokenizer.vocab_size for i in shown):
        items = list(tokenizer.token_strings(shown))
    text = ", ".join(repr(i) for i in items)
    return f"[{text}, ...]" if len(ids) > SHOWN_TOKENS else f"[{text}]"


def render_prompt(task: Task, index: int, tokenizer: Tokenizer | None = None,
                  run: Literal["clean", "corrupt"] = "clean") -> str:
    """Prompt `index` of a tokenised task, its tokens separated by `|`, each labelled token
    followed by `(LABEL)`. `run` picks the clean or the corrupt tokens (the labels name the
    same positions in both).

    >>> from acdc.core.tasks.values import Task
    >>> task = Task("t", "", "t", None, "kl", None, "corrupt", 0, [[5, 6, 7]], [[5, 8, 7]],
    ...             [[2]], None, None, labels=[{"S": 1, "END": 2}])
    >>> render_prompt(task, 0), render_prompt(task, 0, run="corrupt")
    ('5|6(S)|7(END)', '5|8(S)|7(END)')
    """
    if not 0 <= index < task.n_prompts:
        raise TaskError(
            f"{task.source}: no prompt {index}: the task has {task.n_prompts}; use 0 to"
            f" {task.n_prompts - 1}"
        )
    ids = (task.clean if run == "clean" else task.corrupt)[index]
    at = {position: name for name, position in (task.labels[index] if task.labels else {}).items()}
    pieces = []
    for position, token in enumerate(ids):
        text = token_text(tokenizer, token)
        pieces.append(f"{text}({at[position]})" if position in at else text)
    return "|".join(pieces)


def render_prompts(task: Task, tokenizer: Tokenizer | None = None, limit: int | None = 5,
                   run: Literal["clean", "corrupt"] = "clean") -> list[str]:
    """The first `limit` prompts (all with None), one line each: `[i] ` and `render_prompt`."""
    count = task.n_prompts if limit is None else min(limit, task.n_prompts)
    return [f"[{i}] {render_prompt(task, i, tokenizer, run)}" for i in range(count)]


def token_text(tokenizer: Tokenizer | None, token: int) -> str:
    """One token as `render_prompt` shows it: its decoded text, or its id."""
    if tokenizer is None or not 0 <= token < tokenizer.vocab_size:
        return str(token)
    text = tokenizer.decode([token]) or tokenizer.token_strings([token])[0]
    if not text or "|" in text or any(not c.isprintable() for c in text):
        return repr(text)
    return text
