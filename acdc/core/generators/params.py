"""What a generator is, its limits, and the checks of its parameters.

A generator kind is a `Generator`: its parameters (`Param`: a default as YAML would give it,
and a check), a builder that turns the checked parameters and a tokenizer into prompt
mappings, and the labels its prompts carry. The checks here are shared by every kind: whole
numbers within bounds, lists of unique items, words, ranges and templates with `[SLOT]`s.
Each raises `TaskError` with one line naming the parameter (`x.yaml: generator: names[3]`)
and the fix. The limits are sizes no run can use, refused when the file is read, before any
work (tasks/README.md, "Limits").
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acdc.errors import TaskError, did_you_mean, kind_of

if TYPE_CHECKING:
    from acdc.core.tokenizer import Tokenizer

Check = Callable[[Any, str], Any]
Build = Callable[[dict[str, Any], "Tokenizer | None", int, str], list[dict[str, Any]]]

# Sizes nobody can run, refused when the file is read, before any work (tasks/README.md).
MAX_PROMPTS = 10_000  # prompts of a task, written or generated (ACDC's tasks: 50 to a few 100)
MAX_SEED = 2**32 - 1  # seeds of a task and of a generator
MAX_SEQ_LEN = 65_536  # tokens of an induction sequence (the paper: 300)
MAX_TOKENS = 1_000_000  # n x seq_len of an induction task: beyond what a run can hold
MAX_ITEMS = 1_000  # words or templates in one list (the bundled lists: at most 120)
MAX_WORD_CHARS = 100
MAX_TEMPLATE_CHARS = 1_000
MAX_IDS = 1_000_000  # token ids in `exclude`: more than any vocabulary has


@dataclass(frozen=True)
class Param:
    """One generator parameter: its default (as YAML would give it) and its check."""

    default: Any
    check: Check


@dataclass(frozen=True)
class Generator:
    """A kind of generated task: its parameters in documented order, and its builder.

    `gives_answers`: whether every prompt has `answer` and `wrong` (what `logit_diff` and
    `prob_diff` need). `labels`: the labels every prompt carries, in order (none: a task's
    top-level `labels:` then applies to the generated prompts).
    """

    kind: str
    description: str
    params: Mapping[str, Param]
    build: Build
    gives_answers: bool
    check_together: Callable[[dict[str, Any], str], None] | None = None
    labels: tuple[str, ...] = ()

    def defaults(self) -> dict[str, Any]:
        """Every parameter with its default value, `kind` first: a complete YAML mapping."""
        return {"kind": self.kind, **{k: copy.deepcopy(p.default) for k, p in self.params.items()}}


def common_params(n: int, minimum_n: int = 1) -> dict[str, Param]:
    """The parameters every kind has: the number of prompts (default `n`) and the seed."""
    return {"n": Param(n, whole(minimum_n, MAX_PROMPTS, "more prompts than any run can use")),
            "seed": Param(0, whole(0, MAX_SEED, "2**32 - 1"))}


def whole(minimum: int, maximum: int | None = None, why: str = "") -> Check:
    """A whole number in [minimum, maximum]; `why` says what the maximum stands for."""

    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TaskError(f"{where}: expected a whole number, got {show(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum:,}" if maximum is not None else f">= {minimum}"
            reason = f" ({why})" if why and maximum is not None and value > maximum else ""
            raise TaskError(f"{where}: must be {bound}{reason}, got {show(value)}")
        return value

    return check


def optional_whole(minimum: int) -> Check:
    """A whole number >= minimum, or null."""
    number = whole(minimum)

    def check(value: Any, where: str) -> int | None:
        return None if value is None else number(value, where)

    return check


def list_of(item: Check, min_items: int, what: str, unique: bool = True,
            max_items: int = MAX_ITEMS) -> Check:
    """A list of `item`s, at least `min_items` and at most `max_items`, each once (`unique`)."""

    def check(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise TaskError(f"{where}: expected a list of {what}, got {show(value)}")
        if len(value) < min_items:
            raise TaskError(
                f"{where}: has {len(value)} {what}, needs at least {min_items}"
            )
        if len(value) > max_items:
            raise TaskError(
                f"{where}: has {len(value):,} {what}, more than the {max_items:,} a generator"
                f" takes; shorten the list"
            )
        out = [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if unique:
            seen: dict[Any, int] = {}
            for i, v in enumerate(out):
                if v in seen:
                    raise TaskError(
                        f"{where}[{i}]: {v!r} is already {where.rsplit(': ', 1)[-1]}"
                        f"[{seen[v]}]; list each once"
                    )
                seen[v] = i
        return out

    return check


def word(value: Any, where: str) -> str:
    """A word of a list (a name, a place, a noun): text without spaces around it."""
    if not isinstance(value, str):
        raise TaskError(f"{where}: expected a word (a string), got {show(value)}")
    if len(value) > MAX_WORD_CHARS:
        raise TaskError(
            f"{where}: {len(value):,} characters; a word has at most {MAX_WORD_CHARS}"
        )
    if not value.strip() or value != value.strip():
        raise TaskError(
            f"{where}: {value!r} is empty or has spaces around it; write the word alone (the"
            f" generator adds the space before it)"
        )
    return value


def whole_range(minimum: int, maximum: int) -> Check:
    """[first, last]: two whole numbers in [minimum, maximum], first <= last."""
    number = whole(minimum, maximum)

    def check(value: Any, where: str) -> list[int]:
        if not isinstance(value, list) or len(value) != 2:
            raise TaskError(
                f"{where}: expected [first, last] (two whole numbers), got {show(value)}"
            )
        first, last = (number(v, f"{where}[{i}]") for i, v in enumerate(value))
        if first > last:
            raise TaskError(f"{where}: first {first} is greater than last {last}")
        return [first, last]

    return check


SLOT = re.compile(r"\[([^\[\]]*)\]")
"""A template's slot: `[NAME]`."""


def check_template(value: Any, where: str, slots: tuple[str, ...]) -> str:
    """A template: text of bounded length whose `[SLOT]`s are all among `slots`."""
    if not isinstance(value, str):
        raise TaskError(f"{where}: expected a template (a string), got {show(value)}")
    if not value.strip():
        raise TaskError(f"{where}: is empty; give a template")
    if len(value) > MAX_TEMPLATE_CHARS:
        raise TaskError(
            f"{where}: {len(value):,} characters; a template has at most"
            f" {MAX_TEMPLATE_CHARS:,} (one prompt's text)"
        )
    for slot in SLOT.findall(value):
        if slot not in slots:
            raise TaskError(
                f"{where}: unknown slot [{slot}]{did_you_mean(slot, slots)}; the slots are"
                f" {', '.join(f'[{s}]' for s in slots)}"
            )
    return value


def show(value: Any) -> str:
    """A value as a message shows it: short text or its kind."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = " ".join(repr(value).split())
        return text if len(text) <= 60 else text[:57] + "..."
    return kind_of(value)
