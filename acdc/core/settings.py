"""What every discovery method is told: the metric, the ablation and the graph's granularity.

`CommonSettings` holds the choices every method shares (metric, ablation, granularity and
whether circuits know positions); each method adds its own frozen
settings dataclass (ACDC: threshold, the absolute-value rule, head order). A field of such a
dataclass is *recorded* (written to the run's log header, `run.yaml`, `circuit.json` and the
repeat command, and checked on resume) unless its metadata says `recorded: False`: knobs that
change speed but never results (ACDC's engine and candidate width). `settings_record` is the
one function that turns settings into those key/value pairs, so a setting is never written out
by hand twice.

This module imports nothing heavy (no torch), so task files can be checked quickly.

>>> settings_record(CommonSettings(metric="logit_diff"))
{'metric': 'logit_diff', 'ablation': 'corrupt', 'granularity': 'qkv'}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from acdc.core.graph import GRANULARITIES, POSITION_MODES
from acdc.errors import AcdcError

METRICS: dict[str, str] = {
    "kl": "KL(clean model || circuit) of the next-token distribution at the metric positions",
    "logit_diff": "minus the logit difference answer - wrong answer (mean over each list)",
    "prob_diff": "minus the probability difference P(answers) - P(wrong answers)",
    "nll": "negative log-probability of the clean next token (of the answer at a prompt's end)",
    "l2": "Euclidean distance between the circuit's and the clean model's logits",
}
METRIC_INPUTS: dict[str, str] = {
    "kl": "clean logits",
    "logit_diff": "answer, wrong",
    "prob_diff": "answer, wrong",
    "nll": "next token",
    "l2": "clean logits",
}
"""What each metric reads besides the circuit's logits: the clean model's logits at the metric
positions, the task's answer and wrong-answer tokens, or the clean prompt's next token. Every
metric is lower-is-better."""
NEEDS_ANSWER_AND_WRONG = frozenset({"logit_diff", "prob_diff"})
ZERO_GRADIENT: dict[str, str] = {
    "kl": "KL to the clean run has zero gradient at the clean run itself",
    "l2": "the distance to the clean run's logits has zero gradient at the clean run itself",
}
"""Metrics whose gradient vanishes at the clean run: a method differentiating there (EAP,
HISP) would score everything 0 with them."""
ABLATIONS: tuple[str, ...] = ("corrupt", "zero", "mean", "mean-positional")
UNRECORDED = {"recorded": False}  # field metadata: a knob that never changes a result
# field metadata: recorded only when not at its default, so that files written without the
# setting (before it existed) and with its default are the same
UNLESS_DEFAULT = {"unless_default": True}

Ablation = Literal["corrupt", "zero", "mean", "mean-positional"]
Granularity = Literal["qkv", "head"]
PositionMode = Literal["none", "labels", "all"]


@dataclass(frozen=True)
class CommonSettings:
    """The metric every method minimises (lower is better), what a removed edge carries
    (`corrupt`: the corrupted run's value; `zero`: nothing; `mean`: the sender's output
    averaged over every token of the corrupted prompts; `mean-positional`: averaged per
    position; see `acdc.core.patching`), the graph's granularity and its positions (`none`:
    every edge stands for every token; `labels`, `all`: every edge once per position group,
    `acdc.core.positions`; recorded only when not `none`)."""

    metric: str = "kl"
    ablation: Ablation = "corrupt"
    granularity: Granularity = "qkv"
    positions: PositionMode = dataclasses.field(default="none", metadata=UNLESS_DEFAULT)

    def validate(self) -> None:
        for name, value, options in (("metric", self.metric, METRICS),
                                     ("ablation", self.ablation, ABLATIONS),
                                     ("granularity", self.granularity, GRANULARITIES),
                                     ("positions", self.positions, POSITION_MODES)):
            if value not in options:
                raise AcdcError(f"unknown {name} {value!r}: use one of {', '.join(options)}")


def option(default: Any, help: str, *, recorded: bool = True, from_task: str | None = None,
           flag: str | None = None) -> Any:
    """A field of a settings dataclass (a method's own, or the selection rule), declared once:
    `default`, the `help` the command line shows, whether a run `recorded`s it (False: a knob
    that changes speed, never a result), the task key whose value is its default
    (`from_task`), the command-line `flag` (default `--name-with-dashes`). The command line,
    run.yaml, the resume check and the repeat command all read it from here."""
    return dataclasses.field(default=default, metadata={
        "help": help, "recorded": recorded, "from_task": from_task, "flag": flag})


def option_flag(item: dataclasses.Field) -> str:
    """The command-line flag of a settings field."""
    return item.metadata.get("flag") or "--" + item.name.replace("_", "-")


def recorded_fields(settings_type: type) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that a run records, in declaration order."""
    return [f for f in dataclasses.fields(settings_type) if f.metadata.get("recorded", True)]


def settings_record(*settings: Any) -> dict[str, Any]:
    """The recorded fields of one or more settings dataclasses, as {name: value} (a field
    recorded only when not at its default is left out at its default)."""
    record: dict[str, Any] = {}
    for item in settings:
        for f in recorded_fields(type(item)):
            value = getattr(item, f.name)
            if f.metadata.get("unless_default") and value == f.default:
                continue
            record[f.name] = value
    return record
