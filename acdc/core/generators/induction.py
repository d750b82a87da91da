"""The `induction` generator: random tokens holding repeated spans.

A sequence is random token ids with `repeats` spans written twice, each span's first copy
before its second, at random places. The metric positions are computed from the sequence
alone (`predictable_positions`): the tokens whose next token follows from an earlier
occurrence without ambiguity. The corrupt batch is the clean batch permuted with no fixed
point (`derangement`), so each corrupt sequence is another prompt's clean one. Token ids are
written directly, so no tokenizer is needed; one, when given, only names the special tokens
to leave out.

Its prompts carry no labels. Induction acts at every predictable position of every repeated
span, and how many spans there are, where they fall and how long they are varies from one
sequence to the next; a fixed set of single labelled positions shared by every prompt would
pick one of them arbitrarily. (Every sequence has `seq_len` tokens, so a task-level `labels:`
default by index applies, for a position-aware analysis that wants one.)
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from acdc.core.generators.params import (
    MAX_IDS,
    MAX_SEQ_LEN,
    MAX_TOKENS,
    Generator,
    Param,
    common_params,
    list_of,
    optional_whole,
    whole,
    whole_range,
)
from acdc.errors import TaskError

if TYPE_CHECKING:
    from acdc.core.tokenizer import Tokenizer


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


INDUCTION = Generator(
    kind="induction",
    description="random tokens with repeated spans, corrupted by shuffling the batch",
    params={
        **common_params(40, minimum_n=2),
        "seq_len": Param(48, whole(4, MAX_SEQ_LEN, "longer than any model's context")),
        "repeats": Param(2, whole(1)),
        "span_length": Param([2, 8], whole_range(2, 10_000)),
        "token_min": Param(0, whole(0)),
        "token_max": Param(None, optional_whole(0)),
        "exclude": Param([], list_of(whole(0), 0, "token ids", max_items=MAX_IDS)),
    },
    build=_induction,
    gives_answers=False,
    check_together=_induction_together,
)
