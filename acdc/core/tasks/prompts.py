"""A list of prompt mappings (from a task file or a generator) into `RawPrompt` values.

Every key and type is checked, and the total size of all prompts is counted as they are read
(`Budget`), so that a file that is small on disk but huge once parsed (YAML aliases repeat one
list any number of times) is refused before the work its size would cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acdc.core.generators.params import MAX_PROMPTS
from acdc.core.tasks.checks import check_keys, check_positions, check_text, check_tokens
from acdc.core.tasks.labels import check_labels
from acdc.core.tasks.values import RawPrompt
from acdc.errors import TaskError, kind_of

PROMPT_KEYS: tuple[str, ...] = ("clean", "corrupt", "answer", "wrong", "positions", "labels")
MAX_TASK_ITEMS = 10_000_000  # text characters, token ids, answers, positions, labels: all prompts


def parse_prompts(raw: Any, source: str, key: str = "prompts") -> tuple[RawPrompt, ...]:
    """Validate a list of prompt mappings (from YAML or a generator) into `RawPrompt`s."""
    if not isinstance(raw, list):
        raise TaskError(
            f"{source}: {key}: expected a list of prompts (each with clean: and"
            f" corrupt:), got {kind_of(raw)}"
        )
    if not raw:
        raise TaskError(f"{source}: {key}: the list is empty; give at least one prompt")
    if len(raw) > MAX_PROMPTS:
        raise TaskError(
            f"{source}: {key}: {len(raw):,} prompts, more than the {MAX_PROMPTS:,} a run can"
            f" use (ACDC's tasks have 50 to a few hundred); use fewer prompts"
        )
    budget = Budget(f"{source}: {key}")
    return tuple(
        parse_prompt(item, i, f"{source}: {key}[{i}]", budget) for i, item in enumerate(raw)
    )


class Budget:
    """Counts what the prompts hold (characters, ids, answers, positions) as they are checked,
    so that a file that is small on disk but large once parsed (YAML aliases repeat one list
    any number of times) is refused before the work its size would cost."""

    def __init__(self, where: str):
        self.where = where
        self.used = 0

    def spend(self, value: Any, at: str) -> None:
        self.used += len(value) if isinstance(value, (str, list, Mapping)) else 1
        if self.used > MAX_TASK_ITEMS:
            raise TaskError(
                f"{self.where}: more than {MAX_TASK_ITEMS:,} characters, token ids, answers and"
                f" positions in all (reached at {at}); no run can use that much data: use"
                f" fewer or shorter prompts"
            )


def parse_prompt(item: Any, index: int, where: str, budget: Budget) -> RawPrompt:
    """One prompt mapping, every key and type checked; `where` names it in messages."""
    if not isinstance(item, Mapping):
        raise TaskError(f"{where}: expected a mapping with clean: and corrupt:, "
                        f"got {kind_of(item)}")
    check_keys(item, PROMPT_KEYS, where, "prompt key")
    if "clean" not in item:
        raise TaskError(
            f"{where}: missing required key 'clean'; give the prompt as text or token ids"
        )
    for key in PROMPT_KEYS:
        if key in item:
            budget.spend(item[key], f"{where.rsplit(': ', 1)[-1]}: {key}")
    clean = check_text(item["clean"], f"{where}: clean")
    corrupt = check_text(item["corrupt"], f"{where}: corrupt") if "corrupt" in item else None
    answers = check_tokens(item["answer"], f"{where}: answer") if "answer" in item else None
    wrong = check_tokens(item["wrong"], f"{where}: wrong") if "wrong" in item else None
    positions = (
        check_positions(item["positions"], f"{where}: positions") if "positions" in item else None
    )
    labels = check_labels(item["labels"], f"{where}: labels") if "labels" in item else None
    return RawPrompt(index, clean, corrupt, answers, wrong, positions, labels)
