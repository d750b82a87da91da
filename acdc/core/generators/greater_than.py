"""The `greater-than` generator: year comparison (Hanna et al. 2023).

"The war lasted from the year 1732 to the year 17" -> a two-digit year above 32. The corrupt
prompt has "01" for YY. Answers are the two-digit tokens above YY, wrong answers those at or
below it, so that `prob_diff` reads P(later year) - P(earlier or same). A year CCYY is used only
when the tokenizer writes it as the two tokens " CC" and "YY", as GPT-2's does.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from acdc.core.generators.params import (
    SLOT,
    Generator,
    Param,
    check_template,
    common_params,
    list_of,
    whole,
    whole_range,
    word,
)
from acdc.core.generators.tokens import (
    check_distinct,
    check_known_words,
    check_same_length,
    keep,
    label_positions,
    vocab_for,
)
from acdc.core.generators.words import GT_NOUNS, GT_TEMPLATES
from acdc.errors import TaskError

if TYPE_CHECKING:
    from acdc.core.tokenizer import Tokenizer

GT_LABELS: tuple[str, ...] = ("YY", "END")
"""YY: the token of the year's last two digits (the one the corrupt prompt changes); END: the
last token, where the next year is predicted."""


def _gt_template(value: Any, where: str) -> str:
    text = check_template(value, where, ("NOUN", "CC", "YY"))
    slots = SLOT.findall(text)
    if (
        slots.count("NOUN") != 1
        or slots.count("YY") != 1
        or slots.count("CC") != 2
        or " [CC][YY]" not in text
        or not text.endswith(" [CC]")
    ):
        raise TaskError(
            f"{where}: needs one [NOUN], one ' [CC][YY]' (a year after a space) and must end"
            f" with ' [CC]', as in \"The [NOUN] lasted from the year [CC][YY] to the year [CC]\""
        )
    return text


def _two_digit(k: int) -> str:
    return f"{k:02d}"


def _greater_than(params: dict[str, Any], tokenizer: Tokenizer | None, d_vocab: int, where: str):
    vocab = vocab_for(tokenizer, where, "greater-than")
    assert tokenizer is not None  # `_vocab` refuses None
    not_single = [_two_digit(k) for k in range(100) if vocab.single(_two_digit(k)) is None]
    if not_single:
        raise TaskError(
            f"{where}: the tokenizer ({tokenizer.source}) must have each two-digit year '00'.."
            f"'99' as one token (they are the answers), but {len(not_single)} are not, for"
            f" example {vocab.show(not_single[0])}; use a tokenizer with two-digit tokens"
        )
    nouns = keep(vocab, where, "nouns", params["nouns"], (" {}",), 1, "nouns")
    corrupt_yy = _two_digit(params["corrupt_yy"])
    first, last = params["yy_range"]
    years, tried = [], []
    for cc in params["centuries"]:
        century = vocab.single(f" {cc}")
        for yy in range(first, last + 1):
            if _two_digit(yy) == corrupt_yy:
                continue
            tried.append(f" {cc}{_two_digit(yy)}")
            ok = century is not None and all(
                vocab.ids(f" {cc}{y}") == [century, vocab.single(y)] for y in
                (_two_digit(yy), corrupt_yy)
            )
            if ok:
                years.append((cc, yy))
    if not years:
        example = vocab.show(tried[0]) if tried else "no year in range"
        raise TaskError(
            f"{where}: centuries: no year tokenises as ' CC' + 'YY' (two single tokens, also"
            f" with YY = {corrupt_yy}) for the tokenizer ({tokenizer.source}), for example"
            f" {example}; change centuries or yy_range, or use another tokenizer"
        )
    templates = params["templates"]
    checked: set[int] = set()
    rng = random.Random(params["seed"])
    prompts = []
    for _ in range(params["n"]):
        t = rng.randrange(len(templates))
        noun = rng.choice(nouns)
        cc, yy = rng.choice(years)

        def fill(text: str, y: str, noun: str = noun, cc: int = cc) -> str:
            return text.replace("[NOUN]", noun).replace("[YY]", y).replace("[CC]", str(cc))

        template = templates[t]
        clean, corrupt = fill(template, _two_digit(yy)), fill(template, corrupt_yy)
        at = f"{where}: templates[{t}]"
        if t not in checked:
            check_known_words(vocab, clean, at)
            checked.add(t)
        ids = check_same_length(vocab, clean, corrupt, at)
        # The filled template up to the end of [YY] is the clean prompt up to the year's end.
        yy_end = len(fill(template[:template.index("[YY]") + len("[YY]")], _two_digit(yy)))
        labels = {**label_positions(vocab, clean, ids, {"YY": yy_end}, at), "END": len(ids) - 1}
        check_distinct(labels, clean, at)
        prompts.append({
            "clean": clean,
            "corrupt": corrupt,
            "answer": [_two_digit(k) for k in range(yy + 1, 100)],
            "wrong": [_two_digit(k) for k in range(yy + 1)],
            "labels": labels,
        })
    return prompts


GREATER_THAN = Generator(
    kind="greater-than",
    description="year comparison (Hanna et al.), YY corrupted to 01",
    params={
        **common_params(100),
        "templates": Param(list(GT_TEMPLATES), list_of(_gt_template, 1, "templates")),
        "nouns": Param(list(GT_NOUNS), list_of(word, 1, "nouns")),
        "centuries": Param(list(range(11, 18)), list_of(whole(10, 99), 1, "centuries")),
        "yy_range": Param([2, 98], whole_range(0, 98)),
        "corrupt_yy": Param(1, whole(0, 99)),
    },
    build=_greater_than,
    gives_answers=True,
    labels=GT_LABELS,
)
