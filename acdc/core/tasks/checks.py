"""The checks of single values of a task file: text, tokens, positions, names, numbers.

Each takes the value as YAML gave it and `where` (the file and key, as `x.yaml: prompts[3]:
answer`) and returns the value in its checked form, or raises `TaskError` with one line
naming `where` and the fix. `show` and `clip` put a value into a message without letting a
huge one through.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from acdc.core.generators.params import MAX_SEED
from acdc.core.tasks.values import Positions, Text, Token
from acdc.errors import TaskError, did_you_mean, kind_of

POSITION_KEYWORDS: tuple[str, ...] = ("last", "all")


def check_keys(data: Mapping, valid: Sequence[str], where: str, what: str) -> None:
    for key in data:
        if key not in valid:
            shown = clip(key if isinstance(key, str) else repr(key))
            hint = did_you_mean(str(key)[:100], valid)
            raise TaskError(
                f"{where}: unknown {what} '{shown}'{hint}; valid keys: {', '.join(valid)}"
            )


def check_str(value: Any, where: str, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TaskError(f"{where}: expected {what} (a string), got {show(value)}")
    if not allow_empty and not value.strip():
        raise TaskError(f"{where}: is empty; give {what}")
    return value


def check_choice(value: Any, where: str, what: str, options: Iterable[str]) -> str:
    """A value that must be one of `options` (a metric name, an ablation ...)."""
    options = list(options)
    if not isinstance(value, str) or value not in options:
        hint = did_you_mean(value, options) if isinstance(value, str) else ""
        raise TaskError(
            f"{where}: unknown {what} {show(value)}{hint}; use one of: {', '.join(options)}"
        )
    return value


def check_threshold(value: Any, where: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):  # PyYAML reads `1e-2` (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None:
        raise TaskError(f"{where}: expected a number such as 0.01, got {show(value)}")
    if not math.isfinite(number) or number < 0:
        raise TaskError(f"{where}: must be a finite number >= 0, got {show(value)}")
    return number


def check_seed(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskError(f"{where}: expected a whole number such as 0, got {show(value)}")
    if not 0 <= value <= MAX_SEED:
        raise TaskError(f"{where}: must be from 0 to {MAX_SEED} (2**32 - 1), got {show(value)}")
    return value


def check_text(value: Any, where: str) -> Text:
    if isinstance(value, str):
        if not value:
            raise TaskError(f"{where}: is empty; give the prompt as text or a list of token ids")
        return value
    if isinstance(value, list):
        if not value:
            raise TaskError(
                f"{where}: is an empty list; give the prompt as text or a list of token ids"
            )
        for j, token in enumerate(value):
            if isinstance(token, bool) or not isinstance(token, int):
                raise TaskError(
                    f"{where}[{j}]: token ids must be whole numbers, got {show(token)};"
                    f" give either text or a list of ids"
                )
        return tuple(value)
    raise TaskError(f"{where}: expected text (a string) or a list of token ids, got {show(value)}")


def check_tokens(value: Any, where: str) -> tuple[Token, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise TaskError(f"{where}: is an empty list; give one token (text or id) or a list of them")
    for j, token in enumerate(items):
        at = f"{where}[{j}]" if isinstance(value, list) else where
        if isinstance(token, bool) or not isinstance(token, (str, int)):
            raise TaskError(f'{at}: expected one token as text (" Mary") or id, got {show(token)}')
        if isinstance(token, str) and not token:
            raise TaskError(f"{at}: is empty; give one token as text or id")
    return tuple(items)


def check_positions(value: Any, where: str) -> Positions:
    if isinstance(value, str):
        if value not in POSITION_KEYWORDS:
            raise TaskError(
                f"{where}: unknown value {value!r}{did_you_mean(value, POSITION_KEYWORDS)};"
                f" use last, all, or a list of positions such as [3, -1]"
            )
        return value  # type: ignore[return-value]
    if isinstance(value, list):
        if not value:
            raise TaskError(f"{where}: is an empty list; give at least one position, last, or all")
        for j, position in enumerate(value):
            if isinstance(position, bool) or not isinstance(position, int):
                raise TaskError(
                    f"{where}[{j}]: positions are whole numbers (negative counts from"
                    f" the end), got {show(position)}"
                )
        return tuple(value)
    raise TaskError(
        f"{where}: expected last, all, or a list of positions such as [3, -1], got {show(value)}"
    )



def show(value: Any) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return clip(repr(value))
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    return kind_of(value)


def clip(text: str, limit: int = 60) -> str:
    short = " ".join(text[: 4 * limit].split())  # a huge text is never split whole
    return short if len(short) <= limit and len(text) <= 4 * limit else short[: limit - 3] + "..."

