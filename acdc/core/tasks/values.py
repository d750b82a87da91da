"""The values of a task: a prompt as written (`RawPrompt`) and the tokenised `Task`.

A `RawPrompt` is what one entry of `prompts:` says, its types checked but not tokenised; a
`Task` is what the engine runs: token ids for every prompt, metric positions and answer ids.
Both are frozen; `RawPrompt.to_dict` writes a prompt back in the task-file schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Text = str | tuple[int, ...]  # a prompt as written: text, or token ids
Token = str | int  # an answer as written: text of one token, or its id
Positions = Literal["last", "all"] | tuple[int, ...]
Locator = int | str | tuple[str, int]  # a label's place: a token position, a word, (word, nth)
Labels = tuple[tuple[str, Locator], ...]  # label name -> locator, in the order written


@dataclass(frozen=True)
class RawPrompt:
    """One prompt as written in the task file, validated for types but not tokenised.

    `corrupt` is None only when the file gives none (allowed with zero ablation). `answers` and
    `wrong` are None when absent, else a non-empty tuple. `positions` and `labels` are None
    when the prompt takes the task's default.
    """

    index: int
    clean: Text
    corrupt: Text | None = None
    answers: tuple[Token, ...] | None = None
    wrong: tuple[Token, ...] | None = None
    positions: Positions | None = None
    labels: Labels | None = None

    def to_dict(self) -> dict[str, Any]:
        """The prompt in the task-file schema (what `parse_prompts` reads back)."""
        out: dict[str, Any] = {"clean": plain(self.clean)}
        if self.corrupt is not None:
            out["corrupt"] = plain(self.corrupt)
        if self.answers is not None:
            out["answer"] = plain_tokens(self.answers)
        if self.wrong is not None:
            out["wrong"] = plain_tokens(self.wrong)
        if self.positions is not None:
            out["positions"] = plain(self.positions)
        if self.labels is not None:
            out["labels"] = plain_labels(self.labels)
        return out


@dataclass(frozen=True)
class Task:
    """A task ready for the engine: token ids for every prompt.

    Prompts may differ in length from one another (the engine right-pads), but each prompt's
    clean and corrupt ids have the same length. `positions[i]` are the metric positions of
    prompt i: indices into `clean[i]`, sorted, unique, within the prompt (the BOS, when
    prepended, is position 0). `answers` and `wrong_answers` are None when no prompt gives any;
    otherwise every prompt has at least one id.

    `labels` is None when the task labels no position. Otherwise `labels[i]` maps each label
    name to its position in prompt i: an index into `clean[i]` (and `corrupt[i]`, which has
    the same length), the BOS counted when prepended, as for `positions`. Every prompt has the
    same label names, in the same order (the first prompt's), each on its own position;
    positions differ between prompts of different lengths or templates. A position without a
    label belongs to the group `other` (`acdc.core.tasks.labels.OTHER`).
    """

    name: str
    description: str
    source: str
    model: str | None
    metric: str
    threshold: float | None
    ablation: str
    seed: int
    clean: list[list[int]]
    corrupt: list[list[int]]
    positions: list[list[int]]
    answers: list[list[int]] | None
    wrong_answers: list[list[int]] | None
    labels: list[dict[str, int]] | None = None

    @property
    def n_prompts(self) -> int:
        """How many prompts the task has."""
        return len(self.clean)

    @property
    def label_names(self) -> tuple[str, ...]:
        """The labels every prompt has, in order; empty when the task has none."""
        return tuple(self.labels[0]) if self.labels else ()


def plain(value: Any) -> Any:
    """A tuple as the list YAML writes."""
    return list(value) if isinstance(value, tuple) else value


def plain_labels(labels: Labels) -> dict[str, Any]:
    """Labels as a task file writes them: a mapping, [word, occurrence] as a list."""
    return {name: plain(locator) for name, locator in labels}


def plain_tokens(tokens: tuple[Token, ...]) -> Any:
    """Answers as a task file writes them: one token alone, several as a list."""
    return tokens[0] if len(tokens) == 1 else list(tokens)
