"""`TaskSpec`: a whole task file, validated but not yet tokenised.

`TaskSpec.from_dict` checks the top-level keys and values and the prompts (through
`acdc.core.tasks.prompts`), or the `generator:` mapping (through `acdc.core.generators`), and
what the ablation and the metric need from every prompt (`check_spec_needs`, run again on
generated prompts when they are made). Command-line values and generator parameters replace
the file's through `with_overrides` and `with_generator`, with the same checks; `to_dict`
writes the resolved task back as YAML that `from_dict` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from acdc.core.generators.registry import GENERATORS, check_generator
from acdc.core.settings import ABLATIONS, METRICS, NEEDS_ANSWER_AND_WRONG
from acdc.core.tasks.checks import (
    check_choice,
    check_keys,
    check_positions,
    check_seed,
    check_str,
    check_threshold,
    show,
)
from acdc.core.tasks.labels import check_label_sets, check_labels
from acdc.core.tasks.prompts import parse_prompts
from acdc.core.tasks.values import Labels, Positions, RawPrompt, plain, plain_labels
from acdc.errors import TaskError, kind_of

TOP_LEVEL_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "model",
    "metric",
    "threshold",
    "ablation",
    "seed",
    "prepend_bos",
    "positions",
    "labels",
    "prompts",
    "generator",
    "method_defaults",
)
REQUIRED_KEYS: tuple[str, ...] = ()
OVERRIDABLE: tuple[str, ...] = ("metric", "threshold", "ablation", "seed", "model")


@dataclass(frozen=True)
class TaskSpec:
    """A task file, validated but not yet tokenised. See `tasks/README.md` for each field."""

    name: str
    description: str
    source: str  # the file it came from, used in every message
    model: str | None  # default model: a name, or an absolute path when the file gave a path
    metric: str
    threshold: float | None  # ACDC's default threshold (and a ranking method's score threshold)
    ablation: str  # "corrupt" | "zero"
    seed: int
    prepend_bos: bool
    positions: Positions  # default for prompts without their own
    prompts: tuple[RawPrompt, ...] = field(repr=False)  # empty when a generator makes them
    generator: dict[str, Any] | None = field(default=None, repr=False, hash=False)
    """The checked `generator:` mapping, every parameter filled in; None for written prompts."""
    labels: Labels | None = field(default=None, repr=False)
    """The labels of every prompt without its own (`acdc.core.tasks.labels`); None: none."""
    method_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False,
                                                             hash=False)
    """Per method name, option defaults for this task (`method_defaults:`; a method checks
    its own keys when a run starts)."""

    @property
    def n_prompts(self) -> int:
        """How many prompts the task has (a generator's `n`)."""
        return self.generator["n"] if self.generator is not None else len(self.prompts)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<task>", base_dir: Path | None = None) -> TaskSpec:
        """Validate a parsed task file. `base_dir` resolves a relative `model:` path."""
        return spec_from_dict(data, source, base_dir)

    def with_overrides(self, **values: Any) -> TaskSpec:
        """A copy with command-line values in place of the file's; None means "not given".

        >>> prompts = [{"clean": [1], "corrupt": [2]}]
        >>> spec = TaskSpec.from_dict({"threshold": 0.1, "prompts": prompts})
        >>> spec.with_overrides(threshold=0.5, metric=None).threshold
        0.5
        """
        unknown = sorted(set(values) - set(OVERRIDABLE))
        if unknown:
            raise TypeError(f"with_overrides: cannot override {unknown}; only {list(OVERRIDABLE)}")
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            where = f"--{key}"
            if key == "metric":
                changes[key] = check_choice(value, where, "metric", METRICS)
            elif key == "threshold":
                changes[key] = check_threshold(value, where)
            elif key == "ablation":
                changes[key] = check_choice(value, where, "ablation", ABLATIONS)
            elif key == "seed":
                changes[key] = check_seed(value, where)
            else:
                changes[key] = check_str(value, where, "a model directory or name")
        spec = replace(self, **changes)
        check_spec_needs(spec)
        return spec

    def with_generator(self, **params: Any) -> TaskSpec:
        """A copy with some generator parameters replaced (checked like the file's).

        >>> spec = TaskSpec.from_dict({"threshold": 0.1, "generator": {"kind": "induction"}})
        >>> spec.with_generator(n=4, seq_len=40).n_prompts
        4
        """
        if self.generator is None:
            raise TaskError(f"{self.source}: the task has written prompts, not a generator")
        checked = check_generator({**self.generator, **params}, self.source)
        return replace(self, generator=checked)

    def to_dict(self) -> dict[str, Any]:
        """The resolved task as a YAML-ready mapping that `TaskSpec.from_dict` reads back."""
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "metric": self.metric,
            "threshold": self.threshold,
            "ablation": self.ablation,
            "seed": self.seed,
            "prepend_bos": self.prepend_bos,
            "positions": plain(self.positions),
            **({"labels": plain_labels(self.labels)} if self.labels is not None else {}),
            **(
                {"generator": dict(self.generator)}
                if self.generator is not None
                else {"prompts": [p.to_dict() for p in self.prompts]}
            ),
        }


def spec_from_dict(data: Any, source: str, base_dir: Path | None) -> TaskSpec:
    if data is None:
        raise TaskError(
            f"{source}: the file is empty; a task needs at least prompts: (or generator:)"
        )
    if not isinstance(data, Mapping):
        raise TaskError(
            f"{source}: expected a mapping of task keys (name:, threshold:, prompts:,"
            f" ...), got {kind_of(data)}"
        )
    check_keys(data, TOP_LEVEL_KEYS, source, "key")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise TaskError(f"{source}: missing required key '{key}'; see tasks/README.md")
    if "prompts" not in data and "generator" not in data:
        raise TaskError(
            f"{source}: missing required key 'prompts' (or 'generator' for a built-in"
            f" generator); see tasks/README.md"
        )
    if "prompts" in data and "generator" in data:
        raise TaskError(
            f"{source}: has both prompts: and generator:; keep the written prompts or the"
            f" generator, not both"
        )
    generator = check_generator(data["generator"], source) if "generator" in data else None

    def where(key: str) -> str:
        return f"{source}: {key}"

    name = check_str(data.get("name", _default_name(source)), where("name"), "a task name")
    description = check_str(
        data.get("description", ""), where("description"), "one line of text", allow_empty=True
    )
    model = data.get("model")
    if model is not None:
        model = _resolve_model(
            check_str(model, where("model"), "a model directory or name"), base_dir
        )
    prepend_bos = data.get("prepend_bos", False)
    if not isinstance(prepend_bos, bool):
        raise TaskError(f"{where('prepend_bos')}: expected true or false, got {show(prepend_bos)}")
    positions = check_positions(data.get("positions", "last"), where("positions"))
    labels = check_labels(data["labels"], where("labels")) if "labels" in data else None
    if labels is not None and generator is not None and GENERATORS[generator["kind"]].labels:
        kind = generator["kind"]
        raise TaskError(
            f"{where('labels')}: the {kind} generator labels its prompts itself"
            f" ({', '.join(GENERATORS[kind].labels)}); remove labels:"
        )
    spec = TaskSpec(
        name=name,
        description=" ".join(description.split()),
        source=source,
        model=model,
        metric=check_choice(data.get("metric", "kl"), where("metric"), "metric", METRICS),
        threshold=(check_threshold(data["threshold"], where("threshold"))
                   if data.get("threshold") is not None else None),
        ablation=check_choice(data.get("ablation", "corrupt"), where("ablation"), "ablation",
                               ABLATIONS),
        seed=check_seed(data.get("seed", 0), where("seed")),
        prepend_bos=prepend_bos,
        positions=positions,
        prompts=parse_prompts(data["prompts"], source) if generator is None else (),
        generator=generator,
        labels=labels,
        method_defaults=_check_method_defaults(data.get("method_defaults", {}),
                                               where("method_defaults")),
    )
    check_spec_needs(spec)
    return spec


def _check_method_defaults(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """`method_defaults:` a mapping of method names to mappings of option names to plain
    values (numbers, true/false, text); which names a method takes, it checks itself."""
    if not isinstance(value, Mapping):
        raise TaskError(f"{where}: expected a mapping of method names to options (e.g. "
                        f"edge-pruning: {{lr: 0.03}}), got {kind_of(value)}")
    checked: dict[str, dict[str, Any]] = {}
    for method, options in value.items():
        method = check_str(method, f"{where}: key", "a method name")
        if not isinstance(options, Mapping):
            raise TaskError(f"{where}: {method}: expected a mapping of option names to values, "
                            f"got {kind_of(options)}")
        checked[method] = {}
        for key, item in options.items():
            key = check_str(key, f"{where}: {method}: key", "an option name")
            if item is not None and not isinstance(item, (bool, int, float, str)):
                raise TaskError(f"{where}: {method}: {key}: expected a number, true/false or "
                                f"text, got {kind_of(item)}")
            checked[method][key] = item
    return checked


def check_spec_needs(spec: TaskSpec, list_key: str = "prompts") -> None:
    """What the ablation and the metric need from every prompt, and the same labels on every
    prompt (checks without tokenising)."""
    if spec.generator is not None and not spec.prompts:
        kind = spec.generator["kind"]
        if spec.metric in NEEDS_ANSWER_AND_WRONG and not GENERATORS[kind].gives_answers:
            usable = ", ".join(m for m in METRICS if m not in NEEDS_ANSWER_AND_WRONG)
            raise TaskError(
                f"{spec.source}: metric {spec.metric} needs answer and wrong tokens, which the"
                f" {kind} generator does not give; use one of: {usable}"
            )
        return
    for prompt in spec.prompts:
        where = f"{spec.source}: {list_key}[{prompt.index}]"
        if prompt.corrupt is None and spec.ablation != "zero":
            raise TaskError(
                f"{where}: no corrupt prompt, which ablation '{spec.ablation}' needs; add"
                f" corrupt: or use ablation zero"
            )
        if spec.metric in NEEDS_ANSWER_AND_WRONG:
            for key, value in (("answer", prompt.answers), ("wrong", prompt.wrong)):
                if value is None:
                    raise TaskError(
                        f"{where}: metric {spec.metric} needs answer: and wrong: on"
                        f" every prompt, this one has no {key}:; add it or use metric kl"
                    )
    for name, attribute in (("answer", "answers"), ("wrong", "wrong")):
        given = [p.index for p in spec.prompts if getattr(p, attribute) is not None]
        if given and len(given) < len(spec.prompts):
            missing = next(p.index for p in spec.prompts if getattr(p, attribute) is None)
            raise TaskError(
                f"{spec.source}: {list_key}[{missing}]: has no {name}: but"
                f" {list_key}[{given[0]}]"
                f" has one; give every prompt a {name}: or none"
            )
    check_label_sets(spec.prompts, spec.labels, spec.source, list_key)


def _resolve_model(model: str, base_dir: Path | None) -> str:
    path = Path(model).expanduser()
    if base_dir is not None and not path.is_absolute() and (base_dir / path).exists():
        return str((base_dir / path).resolve())
    return model


def _default_name(source: str) -> str:
    return Path(source).stem if source.endswith((".yaml", ".yml")) else "task"
