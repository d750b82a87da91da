"""The `ioi` generator: indirect object identification (Wang et al. 2022).

"When Mary and John went to the store, John gave a drink to" -> " Mary". A template has [A]
(the indirect object, IO), then [B] (the subject, S), then [B] again; the name order ABBA keeps
that order, BABA swaps the first two names so that the subject comes first. The corrupt prompt
is the ABC corruption: the same template, place and object with the three name slots filled
by three further names, all different and none of them IO or S, so no name repeats.

`fill_ioi`, `ioi_names` and `abc_names` are public because the model zoo's demo data fills its
own templates the same way.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from acdc.core.generators.params import (
    SLOT,
    Generator,
    Param,
    check_template,
    common_params,
    list_of,
    show,
    word,
)
from acdc.core.generators.tokens import (
    Vocab,
    check_distinct,
    check_known_words,
    check_same_length,
    keep,
    label_positions,
    vocab_for,
)
from acdc.core.generators.words import IOI_NAMES, IOI_OBJECTS, IOI_PLACES, IOI_TEMPLATES
from acdc.errors import TaskError

if TYPE_CHECKING:
    from acdc.core.tokenizer import Tokenizer

IOI_MIN_NAMES = 5  # A and B, and three other names for the ABC corruption
ORDERS: tuple[str, ...] = ("ABBA", "BABA")
IOI_LABELS: tuple[str, ...] = ("IO", "S1", "S1+1", "S2", "END")


def _order(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in ORDERS:
        raise TaskError(f"{where}: unknown order {show(value)}; use ABBA or BABA")
    return value


def _ioi_template(value: Any, where: str) -> str:
    text = check_template(value, where, ("A", "B", "PLACE", "OBJECT"))
    if text.rstrip().endswith("[A]"):
        raise TaskError(
            f"{where}: ends with [A]; end the template just before the indirect object, which"
            f" is the answer (\"... gave a [OBJECT] to\")"
        )
    names = [s for s in SLOT.findall(text) if s in ("A", "B")]
    if names != ["A", "B", "B"]:
        raise TaskError(
            f"{where}: has name slots {' '.join(f'[{s}]' for s in names) or 'none'}; write"
            f" [A] (the indirect object) and [B] (the subject), then [B] again, as in"
            f" \"When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to\""
        )
    return text


def _name_forms(templates: list[str]) -> tuple[str, ...]:
    """How names appear: with a leading space (always, as the answer), and bare when some
    template has a name slot that does not follow a space."""
    forms = [" {}"]
    for template in templates:
        for match in re.finditer(r"\[(A|B)\]", template):
            start = match.start()
            if (start == 0 or template[start - 1] != " ") and "{}" not in forms:
                forms.append("{}")
    return tuple(forms)


def fill_ioi(template: str, names: tuple[str, str, str], words: Mapping[str, str]) -> str:
    """An IOI template with its three name slots filled in order of appearance with `names`,
    every other slot ([PLACE], [OBJECT]) from `words`.

    The clean prompt's names come from `ioi_names`, the corrupt prompt's from `abc_names`
    (the zoo's demo data fills its own templates with this function too).

    >>> fill_ioi("When [A] and [B] went to the [PLACE], [B] gave a drink to",
    ...          ioi_names("Mary", "John", "ABBA"), {"PLACE": "store"})
    'When Mary and John went to the store, John gave a drink to'
    """
    return fill_ioi_ends(template, names, words)[0]


def fill_ioi_ends(template: str, names: tuple[str, str, str],
                  words: Mapping[str, str]) -> tuple[str, list[int]]:
    """`fill_ioi`'s text, and where each name slot's name ends in it (character offsets), in
    order of appearance.

    >>> fill_ioi_ends("When [A] and [B] left, [B] said to", ("Mary", "John", "John"), {})
    ('When Mary and John left, John said to', [9, 18, 29])
    """
    queue = iter(names)
    pieces: list[str] = []
    ends: list[int] = []
    length = at = 0
    for match in SLOT.finditer(template):
        key = match.group(1)
        filled = next(queue) if key in ("A", "B") else words[key]
        pieces += [template[at:match.start()], filled]
        length += match.start() - at + len(filled)
        at = match.end()
        if key in ("A", "B"):
            ends.append(length)
    pieces.append(template[at:])
    return "".join(pieces), ends


def ioi_roles(order: str) -> tuple[str, str, str]:
    """The labels of the three name slots, in slot order: ABBA names IO first, BABA S1."""
    return ("IO", "S1", "S2") if order == "ABBA" else ("S1", "IO", "S2")


def ioi_names(io: str, s: str, order: str) -> tuple[str, str, str]:
    """The names of a clean prompt in slot order: ABBA (IO first) or BABA (S first); the
    subject S is repeated last and the indirect object IO is the answer."""
    return (io, s, s) if order == "ABBA" else (s, io, s)


def abc_names(names: Sequence[str], io: str, s: str, rng: random.Random) -> tuple[str, str, str]:
    """The ABC corruption's names: three different ones from `names`, neither IO nor S, drawn
    with one `rng.sample` over `names` in their order."""
    first, second, third = rng.sample([name for name in names if name not in (io, s)], 3)
    return first, second, third


def _ioi(params: dict[str, Any], tokenizer: Tokenizer | None, d_vocab: int, where: str):
    vocab = vocab_for(tokenizer, where, "ioi")
    templates: list[str] = params["templates"]
    names = keep(vocab, where, "names", params["names"], _name_forms(templates),
                  IOI_MIN_NAMES, "names")
    uses = "".join(templates)
    places = keep(vocab, where, "places", params["places"], (" {}",),
                   1 if "[PLACE]" in uses else 0, "places", single=False)
    objects = keep(vocab, where, "objects", params["objects"], (" {}",),
                    1 if "[OBJECT]" in uses else 0, "objects", single=False)
    checked: set[int] = set()
    rng = random.Random(params["seed"])
    prompts = []
    for i in range(params["n"]):
        t = rng.randrange(len(templates))
        order = params["orders"][i % len(params["orders"])]
        io, s = rng.sample(names, 2)
        others = abc_names(names, io, s, rng)
        words = {"PLACE": rng.choice(places) if places else "",
                 "OBJECT": rng.choice(objects) if objects else ""}
        clean, ends = fill_ioi_ends(templates[t], ioi_names(io, s, order), words)
        corrupt = fill_ioi(templates[t], others, words)
        at = f"{where}: templates[{t}]"
        if t not in checked:
            check_known_words(vocab, clean, at)
            checked.add(t)
        ids = check_same_length(vocab, clean, corrupt, at)
        prompts.append({"clean": clean, "corrupt": corrupt, "answer": f" {io}", "wrong": f" {s}",
                        "labels": _labels(vocab, clean, ids, ends, order, f"{at} ({order})")})
    return prompts


def _labels(vocab: Vocab, clean: str, ids: list[int], ends: list[int], order: str,
            where: str) -> dict[str, int]:
    """IO, S1, S1+1 (the token after S1), S2 and END (the last token): the positions of the
    IOI paper and of auto-circuit's token-specific IOI circuit."""
    names = label_positions(vocab, clean, ids, dict(zip(ioi_roles(order), ends, strict=True)),
                            where)
    labels = {"IO": names["IO"], "S1": names["S1"], "S1+1": names["S1"] + 1, "S2": names["S2"],
              "END": len(ids) - 1}
    check_distinct(labels, clean, where)
    return labels


IOI = Generator(
    kind="ioi",
    description="indirect object identification (Wang et al.), ABC corruption",
    params={
        **common_params(100),
        "orders": Param(list(ORDERS), list_of(_order, 1, "orders")),
        "templates": Param(list(IOI_TEMPLATES), list_of(_ioi_template, 1, "templates")),
        "names": Param(list(IOI_NAMES), list_of(word, IOI_MIN_NAMES, "names")),
        "places": Param(list(IOI_PLACES), list_of(word, 1, "places")),
        "objects": Param(list(IOI_OBJECTS), list_of(word, 1, "objects")),
    },
    build=_ioi,
    gives_answers=True,
    labels=IOI_LABELS,
)
