"""The generator kinds by name: checking a task file's `generator:` mapping, generating.

`GENERATORS` maps each kind (`ioi`, `greater-than`, `induction`) to its `Generator`, in the
order the documentation lists them. `check_generator` validates a `generator:` mapping when a
task file is read, every parameter filled in with its default; `generate_prompts` makes the
prompts once the tokenizer is known.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from acdc.core.generators.greater_than import GREATER_THAN
from acdc.core.generators.induction import INDUCTION
from acdc.core.generators.ioi import IOI
from acdc.core.generators.params import Generator, show
from acdc.errors import TaskError, did_you_mean, kind_of

if TYPE_CHECKING:
    from acdc.core.tokenizer import Tokenizer

GENERATORS: dict[str, Generator] = {g.kind: g for g in (IOI, GREATER_THAN, INDUCTION)}


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
            f"{where}: kind: unknown generator {show(kind)}{hint}; use one of:"
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
            f"{source}: generator: kind {show(data['kind'])} does not match the requested"
            f" generator {kind!r}"
        )
    checked = check_generator(data, source)
    return GENERATORS[kind].build(checked, tokenizer, d_vocab, f"{source}: generator")
