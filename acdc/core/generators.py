"""Built-in prompt generators: the IOI, greater-than and induction data of the ACDC paper.

A task file may give `generator:` instead of `prompts:`. The generator mapping holds every
parameter of the data (kind, number of prompts, seed, templates, word lists, ranges), so a
copy of a bundled task with edited lists is a new task. Generation needs the model's
tokenizer, because what a "name" or a "year" is depends on it: the generators keep only the
words that are single tokens for the tokenizer in use (for a byte-level BPE such as GPT-2's
that is the word with its leading space, `" John"`; for a word-level tokenizer a word that
becomes the unknown token does not count), and fail with one line naming the list when too
few remain.

`generate_prompts` returns plain prompt dictionaries in the task-file schema (`clean`,
`corrupt`, `answer`, `wrong`, `positions`); `acdc.core.tasks.resolve_task` then checks and
tokenises them exactly like hand-written prompts. The same function serves the model zoo
for training data. Output is a function of the parameters (the seed included) and the
tokenizer alone.

- `ioi` (Wang et al. 2022): "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to"
  -> " A". Both name orders (ABBA as written, BABA with the first two names swapped); the
  corrupt prompt fills the three name slots with three other, distinct names (ABC).
- `greater-than` (Hanna et al. 2023): "The [NOUN] lasted from the year [CC][YY] to the year
  [CC]" -> a two-digit year above YY; the corrupt prompt has "01" for YY. Answers are the
  two-digit tokens above YY, wrong answers those at or below it (for `prob_diff`).
- `induction`: random token ids holding repeated spans; the metric positions are the tokens
  whose next token follows from an earlier occurrence; the corrupt batch is the clean batch
  with its sequences permuted so that none keeps its own.

`tasks/README.md` documents every parameter and rule.

>>> prompts = generate_prompts("induction", {"n": 3, "seq_len": 16, "repeats": 1},
...                            tokenizer=None, d_vocab=100, source="demo")
>>> len(prompts), len(prompts[0]["clean"]), all(p["clean"] != p["corrupt"] for p in prompts)
(3, 16, True)
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acdc.errors import TaskError, did_you_mean, kind_of

if TYPE_CHECKING:
    from acdc.core.tokenizer import Tokenizer

Check = Callable[[Any, str], Any]
Build = Callable[[dict[str, Any], "Tokenizer | None", int, str], list[dict[str, Any]]]

IOI_MIN_NAMES = 5  # A and B, and three other names for the ABC corruption
ORDERS: tuple[str, ...] = ("ABBA", "BABA")

# Sizes nobody can run, refused when the file is read, before any work (tasks/README.md).
MAX_PROMPTS = 10_000  # prompts of a task, written or generated (ACDC's tasks: 50 to a few 100)
MAX_SEED = 2**32 - 1  # seeds of a task and of a generator
MAX_SEQ_LEN = 65_536  # tokens of an induction sequence (the paper: 300)
MAX_TOKENS = 1_000_000  # n x seq_len of an induction task: beyond what a run can hold
MAX_ITEMS = 1_000  # words or templates in one list (the bundled lists: at most 120)
MAX_WORD_CHARS = 100
MAX_TEMPLATE_CHARS = 1_000
MAX_IDS = 1_000_000  # token ids in `exclude`: more than any vocabulary has


# --------------------------------------------------------------------------- data

# Word lists and templates from the ACDC authors' repository (acdc/ioi/ioi_dataset.py,
# acdc/greaterthan/utils.py), written in this project's template notation.

IOI_NAMES: tuple[str, ...] = (
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda",
    "Daniel", "David", "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon",
    "Jason", "Justin", "Sarah", "William", "Jonathan", "Stephanie", "Brian", "Nicole",
    "Nicholas", "Anthony", "Heather", "Eric", "Elizabeth", "Adam", "Megan", "Melissa", "Kevin",
    "Steven", "Thomas", "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren", "Amber",
    "Brittany", "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle",
    "Tiffany", "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob",
    "Stephen", "Patrick", "Sean", "Erin", "Jamie", "Kelly", "Samantha", "Nathan", "Sara",
    "Dustin", "Paul", "Angela", "Tyler", "Scott", "Katherine", "Andrea", "Gregory", "Erica",
    "Mary", "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen", "Jose", "Alexander",
    "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia",
    "Cody", "Allison", "Bradley", "Samuel",
)
IOI_PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
)
IOI_OBJECTS: tuple[str, ...] = (
    "ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack",
)
IOI_TEMPLATES: tuple[str, ...] = (
    "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [A] and [B] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [A] and [B] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [A] and [B] were thinking about going to the [PLACE]. [B] wanted to give a"
    " [OBJECT] to",
    "Then, [A] and [B] had a long argument, and afterwards [B] said to",
    "After [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [A] and [B] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [A] and [B] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [A] and [B] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [A] and [B] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [A] and [B] had a long argument. Afterwards [B] said to",
    "The [PLACE] [A] and [B] went to had a [OBJECT]. [B] gave it to",
    "Friends [A] and [B] found a [OBJECT] at the [PLACE]. [B] gave it to",
)

GT_NOUNS: tuple[str, ...] = (
    "abduction", "accord", "affair", "agreement", "appraisal", "assaults", "assessment",
    "attack", "attempts", "campaign", "captivity", "case", "challenge", "chaos", "clash",
    "collaboration", "coma", "competition", "confrontation", "consequence", "conspiracy",
    "construction", "consultation", "contact", "contract", "convention", "cooperation",
    "custody", "deal", "decline", "decrease", "demonstrations", "development", "disagreement",
    "disorder", "dispute", "domination", "dynasty", "effect", "effort", "employment",
    "endeavor", "engagement", "epidemic", "evaluation", "exchange", "existence", "expansion",
    "expedition", "experiments", "fall", "fame", "flights", "friendship", "growth", "hardship",
    "hostility", "illness", "impact", "imprisonment", "improvement", "incarceration",
    "increase", "insurgency", "invasion", "investigation", "journey", "kingdom", "marriage",
    "modernization", "negotiation", "notoriety", "obstruction", "operation", "order",
    "outbreak", "outcome", "overhaul", "patrols", "pilgrimage", "plague", "plan", "practice",
    "process", "program", "progress", "project", "pursuit", "quest", "raids", "reforms",
    "reign", "relationship", "retaliation", "riot", "rise", "rivalry", "romance", "rule",
    "sanctions", "shift", "siege", "slump", "stature", "stint", "strikes", "study", "test",
    "testing", "tests", "therapy", "tour", "tradition", "treaty", "trial", "trip",
    "unemployment", "voyage", "warfare", "work",
)
GT_TEMPLATES: tuple[str, ...] = ("The [NOUN] lasted from the year [CC][YY] to the year [CC]",)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Param:
    """One generator parameter: its default (as YAML would give it) and its check."""

    default: Any
    check: Check


@dataclass(frozen=True)
class Generator:
    """A kind of generated task: its parameters in documented order, and its builder.

    `gives_answers`: whether every prompt has `answer` and `wrong` (what `logit_diff` and
    `prob_diff` need).
    """

    kind: str
    description: str
    params: Mapping[str, Param]
    build: Build
    gives_answers: bool
    check_together: Callable[[dict[str, Any], str], None] | None = None

    def defaults(self) -> dict[str, Any]:
        """Every parameter with its default value, `kind` first: a complete YAML mapping."""
        return {"kind": self.kind, **{k: copy.deepcopy(p.default) for k, p in self.params.items()}}


def check_generator(data: Any, source: str) -> dict[str, Any]:
    """Validate a task file's `generator:` mapping; return it complete, defaults filled in.

    >>> check_generator({"kind": "ioi", "n": 10}, "x.yaml")["orders"]
    ['ABBA', 'BABA']
    """
    where = f"{source}: generator"
    if not isinstance(data, Mapping):
        raise TaskError(
            f"{where}: expected a mapping with kind: and the generator's parameters, got"
            f" {kind_of(data)}"
        )
    if "kind" not in data:
        raise TaskError(f"{where}: missing key 'kind'; use one of: {', '.join(GENERATORS)}")
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in GENERATORS:
        hint = did_you_mean(kind, GENERATORS) if isinstance(kind, str) else ""
        raise TaskError(
            f"{where}: kind: unknown generator {_show(kind)}{hint}; use one of:"
            f" {', '.join(GENERATORS)}"
        )
    generator = GENERATORS[kind]
    valid = ["kind", *generator.params]
    for key in data:
        if key not in valid:
            shown = key if isinstance(key, str) else repr(key)
            raise TaskError(
                f"{where}: unknown key '{shown}' for kind {kind}{did_you_mean(str(key), valid)};"
                f" valid keys: {', '.join(valid)}"
            )
    params: dict[str, Any] = {"kind": kind}
    for key, param in generator.params.items():
        value = data[key] if key in data else copy.deepcopy(param.default)
        params[key] = param.check(value, f"{where}: {key}")
    if generator.check_together is not None:
        generator.check_together(params, where)
    return params


def generate_prompts(
    kind: str, params: Mapping[str, Any], tokenizer: Tokenizer | None, d_vocab: int, source: str
) -> list[dict[str, Any]]:
    """Prompts of a built-in kind as task-file dictionaries, deterministic given the seed.

    `params` is a `generator:` mapping (with or without `kind`; missing keys take their
    defaults). Text kinds (ioi, greater-than) need the tokenizer; induction writes token ids
    in [0, d_vocab) and uses the tokenizer, when given, only to leave out its special tokens.
    Raises `TaskError` naming `source` and the parameter at fault.

    >>> p = generate_prompts("induction", {"n": 2, "seq_len": 8, "repeats": 1,
    ...                      "span_length": [2, 2]}, None, 50, "demo")[0]
    >>> sorted(p), all(p["clean"][q + 1] == p["clean"][p["clean"].index(p["clean"][q]) + 1]
    ...                for q in p["positions"])
    (['clean', 'corrupt', 'positions'], True)
    """
    data = dict(params)
    if data.setdefault("kind", kind) != kind:
        raise TaskError(
            f"{source}: generator: kind {_show(data['kind'])} does not match the requested"
            f" generator {kind!r}"
        )
    checked = check_generator(data, source)
    return GENERATORS[kind].build(checked, tokenizer, d_vocab, f"{source}: generator")


# --------------------------------------------------------------------------- checks


def _whole(minimum: int, maximum: int | None = None, why: str = "") -> Check:
    """A whole number in [minimum, maximum]; `why` says what the maximum stands for."""

    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TaskError(f"{where}: expected a whole number, got {_show(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum:,}" if maximum is not None else f">= {minimum}"
            reason = f" ({why})" if why and maximum is not None and value > maximum else ""
            raise TaskError(f"{where}: must be {bound}{reason}, got {_show(value)}")
        return value

    return check


def _optional_whole(minimum: int) -> Check:
    whole = _whole(minimum)

    def check(value: Any, where: str) -> int | None:
        return None if value is None else whole(value, where)

    return check


def _list_of(item: Check, min_items: int, what: str, unique: bool = True,
             max_items: int = MAX_ITEMS) -> Check:
    def check(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise TaskError(f"{where}: expected a list of {what}, got {_show(value)}")
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


def _word(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TaskError(f"{where}: expected a word (a string), got {_show(value)}")
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


def _range(minimum: int, maximum: int) -> Check:
    whole = _whole(minimum, maximum)

    def check(value: Any, where: str) -> list[int]:
        if not isinstance(value, list) or len(value) != 2:
            raise TaskError(
                f"{where}: expected [first, last] (two whole numbers), got {_show(value)}"
            )
        first, last = (whole(v, f"{where}[{i}]") for i, v in enumerate(value))
        if first > last:
            raise TaskError(f"{where}: first {first} is greater than last {last}")
        return [first, last]

    return check


def _order(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in ORDERS:
        raise TaskError(f"{where}: unknown order {_show(value)}; use ABBA or BABA")
    return value


_SLOT = re.compile(r"\[([^\[\]]*)\]")


def _template(value: Any, where: str, slots: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TaskError(f"{where}: expected a template (a string), got {_show(value)}")
    if not value.strip():
        raise TaskError(f"{where}: is empty; give a template")
    if len(value) > MAX_TEMPLATE_CHARS:
        raise TaskError(
            f"{where}: {len(value):,} characters; a template has at most"
            f" {MAX_TEMPLATE_CHARS:,} (one prompt's text)"
        )
    for slot in _SLOT.findall(value):
        if slot not in slots:
            raise TaskError(
                f"{where}: unknown slot [{slot}]{did_you_mean(slot, slots)}; the slots are"
                f" {', '.join(f'[{s}]' for s in slots)}"
            )
    return value


def _ioi_template(value: Any, where: str) -> str:
    text = _template(value, where, ("A", "B", "PLACE", "OBJECT"))
    if text.rstrip().endswith("[A]"):
        raise TaskError(
            f"{where}: ends with [A]; end the template just before the indirect object, which"
            f" is the answer (\"... gave a [OBJECT] to\")"
        )
    names = [s for s in _SLOT.findall(text) if s in ("A", "B")]
    if names != ["A", "B", "B"]:
        raise TaskError(
            f"{where}: has name slots {' '.join(f'[{s}]' for s in names) or 'none'}; write"
            f" [A] (the indirect object) and [B] (the subject), then [B] again, as in"
            f" \"When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to\""
        )
    return text


def _gt_template(value: Any, where: str) -> str:
    text = _template(value, where, ("NOUN", "CC", "YY"))
    slots = _SLOT.findall(text)
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


# --------------------------------------------------------------------------- tokens


class _Vocab:
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


def _vocab(tokenizer: Tokenizer | None, where: str, kind: str) -> _Vocab:
    if tokenizer is None:
        raise TaskError(
            f"{where}: the {kind} generator writes text, but the model has no tokenizer; use a"
            f" model with tokenizer.json"
        )
    return _Vocab(tokenizer)


def _keep(
    vocab: _Vocab, where: str, key: str, words: list[str], forms: tuple[str, ...],
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


def _check_known_words(vocab: _Vocab, text: str, where: str) -> None:
    """A template filled with words must not contain words the tokenizer does not know."""
    if vocab.unk is None or vocab.unk not in vocab.ids(text):
        return
    unknown = [w for w in re.findall(r"\w+|[^\w\s]", text) if not vocab.known(" " + w)]
    raise TaskError(
        f"{where}: the tokenizer ({vocab.tokenizer.source}) does not know"
        f" {', '.join(repr(w) for w in unknown) or 'part'} in {text!r}; change the words or"
        f" remove the template"
    )


def _check_same_length(vocab: _Vocab, clean: str, corrupt: str, where: str) -> None:
    c, k = vocab.ids(clean), vocab.ids(corrupt)
    if len(c) != len(k):
        raise TaskError(
            f"{where}: clean {clean!r} has {len(c)} tokens, corrupt {corrupt!r} has {len(k)}"
            f" (the tokenizer joins a slot with its neighbours); change the template"
        )


# --------------------------------------------------------------------------- ioi


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
    queue = iter(names)

    def slot(match: re.Match) -> str:
        key = match.group(1)
        return next(queue) if key in ("A", "B") else words[key]

    return _SLOT.sub(slot, template)


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
    vocab = _vocab(tokenizer, where, "ioi")
    templates: list[str] = params["templates"]
    names = _keep(vocab, where, "names", params["names"], _name_forms(templates),
                  IOI_MIN_NAMES, "names")
    uses = "".join(templates)
    places = _keep(vocab, where, "places", params["places"], (" {}",),
                   1 if "[PLACE]" in uses else 0, "places", single=False)
    objects = _keep(vocab, where, "objects", params["objects"], (" {}",),
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
        clean = fill_ioi(templates[t], ioi_names(io, s, order), words)
        corrupt = fill_ioi(templates[t], others, words)
        at = f"{where}: templates[{t}]"
        if t not in checked:
            _check_known_words(vocab, clean, at)
            checked.add(t)
        _check_same_length(vocab, clean, corrupt, at)
        prompts.append({"clean": clean, "corrupt": corrupt, "answer": f" {io}", "wrong": f" {s}"})
    return prompts


# --------------------------------------------------------------------------- greater-than


def _two_digit(k: int) -> str:
    return f"{k:02d}"


def _greater_than(params: dict[str, Any], tokenizer: Tokenizer | None, d_vocab: int, where: str):
    vocab = _vocab(tokenizer, where, "greater-than")
    assert tokenizer is not None  # `_vocab` refuses None
    not_single = [_two_digit(k) for k in range(100) if vocab.single(_two_digit(k)) is None]
    if not_single:
        raise TaskError(
            f"{where}: the tokenizer ({tokenizer.source}) must have each two-digit year '00'.."
            f"'99' as one token (they are the answers), but {len(not_single)} are not, for"
            f" example {vocab.show(not_single[0])}; use a tokenizer with two-digit tokens"
        )
    nouns = _keep(vocab, where, "nouns", params["nouns"], (" {}",), 1, "nouns")
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

        def fill(y: str, t: int = t, noun: str = noun, cc: int = cc) -> str:
            return (templates[t].replace("[NOUN]", noun).replace("[YY]", y)
                    .replace("[CC]", str(cc)))

        clean, corrupt = fill(_two_digit(yy)), fill(corrupt_yy)
        at = f"{where}: templates[{t}]"
        if t not in checked:
            _check_known_words(vocab, clean, at)
            checked.add(t)
        _check_same_length(vocab, clean, corrupt, at)
        prompts.append({
            "clean": clean,
            "corrupt": corrupt,
            "answer": [_two_digit(k) for k in range(yy + 1, 100)],
            "wrong": [_two_digit(k) for k in range(yy + 1)],
        })
    return prompts


# --------------------------------------------------------------------------- induction


def predictable_positions(tokens: list[int]) -> list[int]:
    """Positions whose next token follows by induction from an earlier occurrence.

    Position p (with p + 1 inside the sequence) qualifies when its token occurred before and
    every earlier occurrence q < p was followed by the same token as p is:
    tokens[q + 1] == tokens[p + 1]. In a repeated span [A][B][C] ... [A][B][C] these are the
    second copy's positions but its last (unless the tokens after both copies agree by chance).

    >>> predictable_positions([5, 6, 7, 9, 5, 6, 7, 8])
    [4, 5]
    """
    follower: dict[int, int | None] = {}  # token -> the token after all its occurrences so far
    out = []
    for p in range(len(tokens) - 1):
        token, after = tokens[p], tokens[p + 1]
        if token in follower and follower[token] == after:
            out.append(p)
        follower[token] = after if follower.get(token, after) == after else None
    return out


def _induction_sequence(params: dict[str, Any], allowed: list[int], rng: random.Random):
    """Random tokens holding `repeats` spans, each written twice (first copy before second)."""
    low, high = params["span_length"]
    lengths = [rng.randint(low, high) for _ in range(params["repeats"])]
    order = [r for r in range(len(lengths)) for _ in range(2)]
    rng.shuffle(order)  # each span's first appearance in `order` is its first copy
    spans = [rng.sample(allowed, length) for length in lengths]  # distinct tokens per span
    gaps = [0] * (len(order) + 1)
    for _ in range(params["seq_len"] - 2 * sum(lengths)):
        gaps[rng.randrange(len(gaps))] += 1
    tokens: list[int] = []
    for k, r in enumerate(order):
        tokens.extend(rng.choice(allowed) for _ in range(gaps[k]))
        tokens.extend(spans[r])
    tokens.extend(rng.choice(allowed) for _ in range(gaps[-1]))
    return tokens


def _induction(params: dict[str, Any], tokenizer: Tokenizer | None, d_vocab: int, where: str):
    top = params["token_max"]
    if top is None:
        top = min(d_vocab, tokenizer.vocab_size if tokenizer is not None else d_vocab) - 1
    elif top >= d_vocab:
        raise TaskError(
            f"{where}: token_max: {top} is outside the model's vocabulary [0, {d_vocab}); use"
            f" at most {d_vocab - 1}, or null for the whole vocabulary"
        )
    special = set(params["exclude"])
    if tokenizer is not None:
        special |= {i for i in (tokenizer.bos_id, tokenizer.unk_id) if i is not None}
    allowed = [i for i in range(params["token_min"], top + 1) if i not in special]
    need = 2 * params["span_length"][1]
    if len(allowed) < need:
        raise TaskError(
            f"{where}: token_min..token_max leaves {len(allowed)} token ids after leaving out"
            f" special tokens and exclude, at least {need} needed (twice the longest span);"
            f" widen the range"
        )
    rng = random.Random(params["seed"])
    clean, positions = [], []
    for i in range(params["n"]):
        for _ in range(100):
            tokens = _induction_sequence(params, allowed, rng)
            found = predictable_positions(tokens)
            if found:
                break
        else:
            raise TaskError(
                f"{where}: sequence {i} has no predictable position after 100 draws; widen"
                f" token_min..token_max"
            )
        clean.append(tokens)
        positions.append(found)
    permutation = derangement(params["n"], rng)
    return [
        {"clean": clean[i], "corrupt": list(clean[permutation[i]]), "positions": positions[i]}
        for i in range(params["n"])
    ]


def derangement(n: int, rng: random.Random) -> list[int]:
    """A uniformly random permutation of range(n) with no fixed point (n >= 2).

    >>> p = derangement(5, random.Random(0)); sorted(p), any(p[i] == i for i in range(5))
    ([0, 1, 2, 3, 4], False)
    """
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    while True:
        permutation = list(range(n))
        rng.shuffle(permutation)
        if all(permutation[i] != i for i in range(n)):
            return permutation


def _induction_together(params: dict[str, Any], where: str) -> None:
    if params["n"] * params["seq_len"] > MAX_TOKENS:
        raise TaskError(
            f"{where}: n x seq_len is {params['n']:,} x {params['seq_len']:,} ="
            f" {params['n'] * params['seq_len']:,} tokens, more than the {MAX_TOKENS:,} a run"
            f" can hold; lower n or seq_len"
        )
    longest = params["span_length"][1]
    if 2 * longest * params["repeats"] > params["seq_len"]:
        raise TaskError(
            f"{where}: seq_len: {params['seq_len']} tokens cannot hold repeats:"
            f" {params['repeats']} spans of up to {longest} tokens written twice"
            f" ({2 * longest * params['repeats']} tokens); raise seq_len or lower repeats or"
            f" span_length"
        )
    top = params["token_max"]
    if top is not None and top < params["token_min"]:
        raise TaskError(f"{where}: token_max: {top} is below token_min {params['token_min']}")


# --------------------------------------------------------------------------- the registry


def _common(n: int, minimum_n: int = 1) -> dict[str, Param]:
    return {"n": Param(n, _whole(minimum_n, MAX_PROMPTS, "more prompts than any run can use")),
            "seed": Param(0, _whole(0, MAX_SEED, "2**32 - 1"))}


GENERATORS: dict[str, Generator] = {
    "ioi": Generator(
        kind="ioi",
        description="indirect object identification (Wang et al.), ABC corruption",
        params={
            **_common(100),
            "orders": Param(list(ORDERS), _list_of(_order, 1, "orders")),
            "templates": Param(
                list(IOI_TEMPLATES), _list_of(_ioi_template, 1, "templates")
            ),
            "names": Param(list(IOI_NAMES), _list_of(_word, IOI_MIN_NAMES, "names")),
            "places": Param(list(IOI_PLACES), _list_of(_word, 1, "places")),
            "objects": Param(list(IOI_OBJECTS), _list_of(_word, 1, "objects")),
        },
        build=_ioi,
        gives_answers=True,
    ),
    "greater-than": Generator(
        kind="greater-than",
        description="year comparison (Hanna et al.), YY corrupted to 01",
        params={
            **_common(100),
            "templates": Param(list(GT_TEMPLATES), _list_of(_gt_template, 1, "templates")),
            "nouns": Param(list(GT_NOUNS), _list_of(_word, 1, "nouns")),
            "centuries": Param(
                list(range(11, 18)), _list_of(_whole(10, 99), 1, "centuries")
            ),
            "yy_range": Param([2, 98], _range(0, 98)),
            "corrupt_yy": Param(1, _whole(0, 99)),
        },
        build=_greater_than,
        gives_answers=True,
    ),
    "induction": Generator(
        kind="induction",
        description="random tokens with repeated spans, corrupted by shuffling the batch",
        params={
            **_common(40, minimum_n=2),
            "seq_len": Param(48, _whole(4, MAX_SEQ_LEN, "longer than any model's context")),
            "repeats": Param(2, _whole(1)),
            "span_length": Param([2, 8], _range(2, 10_000)),
            "token_min": Param(0, _whole(0)),
            "token_max": Param(None, _optional_whole(0)),
            "exclude": Param([], _list_of(_whole(0), 0, "token ids", max_items=MAX_IDS)),
        },
        build=_induction,
        gives_answers=False,
        check_together=_induction_together,
    ),
}


# --------------------------------------------------------------------------- messages




def _show(value: Any) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = " ".join(repr(value).split())
        return text if len(text) <= 60 else text[:57] + "..."
    return kind_of(value)
