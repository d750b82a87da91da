"""Tasks: the prompts ACDC runs on, read from YAML, validated, then tokenised.

A task is read in two phases, because text can only be tokenised once the model (and so its
tokenizer) is known, and the model may itself be named by the task file:

1. `read_task(ref)` reads and validates a YAML file into a `TaskSpec`: every key, type and
   value is checked, prompts are kept as written (text or token ids). `TaskSpec.with_overrides`
   applies command-line values (metric, threshold, ablation, seed, model) with the same checks.
2. `resolve_task(spec, tokenizer, d_vocab, n_ctx)` tokenises every prompt into a `Task`: lists
   of token ids for the clean and corrupt runs, the metric positions of each prompt and the
   answer / wrong-answer token ids. Everything that needs token counts is checked here: clean
   and corrupt lengths, single-token answers, ids inside the vocabulary, prompt lengths within
   the context, positions inside their prompt, what the metric needs.

Both phases find every problem before any computation and raise `TaskError` with one line that
names the file, the prompt (`prompts[3]`) and the fix. The schema is documented field by field
in `tasks/README.md`. Bundled tasks live in `tasks/<name>.yaml` at the repository root.

Prompts reach a `TaskSpec` through `parse_prompts`, which turns a list of plain dictionaries
(as YAML gives them) into `RawPrompt` values; a generator of prompts (IOI, greater-than, ...)
produces such dictionaries and goes through the same checks.

>>> spec = TaskSpec.from_dict({"threshold": 0.1, "prompts": [{"clean": [1, 2], "corrupt": [1, 3]}]})
>>> task = resolve_task(spec, tokenizer=None, d_vocab=10, n_ctx=8)
>>> task.clean, task.corrupt, task.positions
([[1, 2]], [[1, 3]], [[1]])
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from acdc.errors import TaskError
from acdc.metrics import METRICS, NEEDS_ANSWER_AND_WRONG

if TYPE_CHECKING:
    from acdc.models import Tokenizer

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
"""Where bundled tasks live: `tasks/<name>.yaml` next to the `acdc` package."""

ABLATIONS: tuple[str, ...] = ("corrupt", "zero")
POSITION_KEYWORDS: tuple[str, ...] = ("last", "all")
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
    "prompts",
)
REQUIRED_KEYS: tuple[str, ...] = ("threshold", "prompts")
PROMPT_KEYS: tuple[str, ...] = ("clean", "corrupt", "answer", "wrong", "positions")
OVERRIDABLE: tuple[str, ...] = ("metric", "threshold", "ablation", "seed", "model")
SHOWN_TOKENS = 12  # tokens shown in an error message before "..."

Text = str | tuple[int, ...]  # a prompt as written: text, or token ids
Token = str | int  # an answer as written: text of one token, or its id
Positions = Literal["last", "all"] | tuple[int, ...]


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class RawPrompt:
    """One prompt as written in the task file, validated for types but not tokenised.

    `corrupt` is None only when the file gives none (allowed with zero ablation). `answers` and
    `wrong` are None when absent, else a non-empty tuple. `positions` is None when the prompt
    takes the task's default.
    """

    index: int
    clean: Text
    corrupt: Text | None = None
    answers: tuple[Token, ...] | None = None
    wrong: tuple[Token, ...] | None = None
    positions: Positions | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"clean": _plain(self.clean)}
        if self.corrupt is not None:
            out["corrupt"] = _plain(self.corrupt)
        if self.answers is not None:
            out["answer"] = _plain_tokens(self.answers)
        if self.wrong is not None:
            out["wrong"] = _plain_tokens(self.wrong)
        if self.positions is not None:
            out["positions"] = _plain(self.positions)
        return out


@dataclass(frozen=True)
class TaskSpec:
    """A task file, validated but not yet tokenised. See `tasks/README.md` for each field."""

    name: str
    description: str
    source: str  # the file it came from, used in every message
    model: str | None  # default model: a name, or an absolute path when the file gave a path
    metric: str
    threshold: float
    ablation: str  # "corrupt" | "zero"
    seed: int
    prepend_bos: bool
    positions: Positions  # default for prompts without their own
    prompts: tuple[RawPrompt, ...] = field(repr=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<task>", base_dir: Path | None = None) -> TaskSpec:
        """Validate a parsed task file. `base_dir` resolves a relative `model:` path."""
        return _spec_from_dict(data, source, base_dir)

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
                changes[key] = _check_metric(value, where)
            elif key == "threshold":
                changes[key] = _check_threshold(value, where)
            elif key == "ablation":
                changes[key] = _check_ablation(value, where)
            elif key == "seed":
                changes[key] = _check_seed(value, where)
            else:
                changes[key] = _check_str(value, where, "a model directory or name")
        spec = replace(self, **changes)
        _check_spec_needs(spec)
        return spec

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
            "positions": _plain(self.positions),
            "prompts": [p.to_dict() for p in self.prompts],
        }


@dataclass(frozen=True)
class Task:
    """A task ready for the engine: token ids for every prompt.

    Prompts may differ in length from one another (the engine right-pads), but each prompt's
    clean and corrupt ids have the same length. `positions[i]` are the metric positions of
    prompt i: indices into `clean[i]`, sorted, unique, within the prompt (the BOS, when
    prepended, is position 0). `answers` and `wrong_answers` are None when no prompt gives any;
    otherwise every prompt has at least one id.
    """

    name: str
    description: str
    source: str
    model: str | None
    metric: str
    threshold: float
    ablation: str
    seed: int
    clean: list[list[int]]
    corrupt: list[list[int]]
    positions: list[list[int]]
    answers: list[list[int]] | None
    wrong_answers: list[list[int]] | None

    @property
    def n_prompts(self) -> int:
        return len(self.clean)


# --------------------------------------------------------------------------- reading


def read_task(ref: str | Path) -> TaskSpec:
    """Read and validate a task: a YAML file path, or the name of a bundled task.

    Bundled names may use '-' for '_' (`greater-than` reads `tasks/greater_than.yaml`).
    """
    path = _find_task_file(str(ref))
    source = str(ref) if Path(str(ref)).is_file() else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TaskError(f"{source}: not a text file; a task is a YAML file") from None
    except OSError as error:
        raise TaskError(f"{source}: cannot read ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TaskError(f"{source}: not valid YAML ({_yaml_problem(error)})") from None
    return _spec_from_dict(data, source, path.resolve().parent)


def list_tasks() -> list[TaskSpec]:
    """The bundled tasks, sorted by file name (tasks/README.md is not a task)."""
    if not TASKS_DIR.is_dir():
        return []
    files = sorted(p for p in TASKS_DIR.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [read_task(str(p)) for p in files]


def bundled_task_names() -> list[str]:
    if not TASKS_DIR.is_dir():
        return []
    return sorted(p.stem for p in TASKS_DIR.iterdir() if p.suffix in (".yaml", ".yml"))


def _find_task_file(ref: str) -> Path:
    path = Path(ref)
    if path.is_file():
        return path
    if path.is_dir():
        raise TaskError(f"{ref}: is a directory; give a task YAML file or a bundled task name")
    looks_like_path = ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref
    if not looks_like_path:
        for suffix in (".yaml", ".yml"):
            bundled = TASKS_DIR / f"{ref.replace('-', '_')}{suffix}"
            if bundled.is_file():
                return bundled
    names = bundled_task_names()
    if looks_like_path:
        raise TaskError(
            f"{ref}: no such task file; give an existing YAML file or a bundled task"
            f" name ({_or_none(names)})"
        )
    raise TaskError(
        f"unknown task {ref!r}{_did_you_mean(ref.replace('-', '_'), names)}: give a"
        f" YAML file path or a bundled task name ({_or_none(names)})"
    )


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


# --------------------------------------------------------------------------- validation


def _spec_from_dict(data: Any, source: str, base_dir: Path | None) -> TaskSpec:
    if data is None:
        raise TaskError(
            f"{source}: the file is empty; a task needs at least threshold: and prompts:"
        )
    if not isinstance(data, Mapping):
        raise TaskError(
            f"{source}: expected a mapping of task keys (name:, threshold:, prompts:,"
            f" ...), got {_kind(data)}"
        )
    _check_keys(data, TOP_LEVEL_KEYS, source, "key")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise TaskError(f"{source}: missing required key '{key}'; see tasks/README.md")

    def where(key: str) -> str:
        return f"{source}: {key}"

    name = _check_str(data.get("name", _default_name(source)), where("name"), "a task name")
    description = _check_str(
        data.get("description", ""), where("description"), "one line of text", allow_empty=True
    )
    model = data.get("model")
    if model is not None:
        model = _resolve_model(
            _check_str(model, where("model"), "a model directory or name"), base_dir
        )
    prepend_bos = data.get("prepend_bos", False)
    if not isinstance(prepend_bos, bool):
        raise TaskError(f"{where('prepend_bos')}: expected true or false, got {_show(prepend_bos)}")
    positions = _check_positions(data.get("positions", "last"), where("positions"))
    spec = TaskSpec(
        name=name,
        description=" ".join(description.split()),
        source=source,
        model=model,
        metric=_check_metric(data.get("metric", "kl"), where("metric")),
        threshold=_check_threshold(data["threshold"], where("threshold")),
        ablation=_check_ablation(data.get("ablation", "corrupt"), where("ablation")),
        seed=_check_seed(data.get("seed", 0), where("seed")),
        prepend_bos=prepend_bos,
        positions=positions,
        prompts=parse_prompts(data["prompts"], source),
    )
    _check_spec_needs(spec)
    return spec


def parse_prompts(raw: Any, source: str, key: str = "prompts") -> tuple[RawPrompt, ...]:
    """Validate a list of prompt mappings (from YAML or a generator) into `RawPrompt`s."""
    if not isinstance(raw, list):
        raise TaskError(
            f"{source}: {key}: expected a list of prompts (each with clean: and"
            f" corrupt:), got {_kind(raw)}"
        )
    if not raw:
        raise TaskError(f"{source}: {key}: the list is empty; give at least one prompt")
    return tuple(_parse_prompt(item, i, f"{source}: {key}[{i}]") for i, item in enumerate(raw))


def _parse_prompt(item: Any, index: int, where: str) -> RawPrompt:
    if not isinstance(item, Mapping):
        raise TaskError(f"{where}: expected a mapping with clean: and corrupt:, got {_kind(item)}")
    _check_keys(item, PROMPT_KEYS, where, "prompt key")
    if "clean" not in item:
        raise TaskError(
            f"{where}: missing required key 'clean'; give the prompt as text or token ids"
        )
    clean = _check_text(item["clean"], f"{where}: clean")
    corrupt = _check_text(item["corrupt"], f"{where}: corrupt") if "corrupt" in item else None
    answers = _check_tokens(item["answer"], f"{where}: answer") if "answer" in item else None
    wrong = _check_tokens(item["wrong"], f"{where}: wrong") if "wrong" in item else None
    positions = (
        _check_positions(item["positions"], f"{where}: positions") if "positions" in item else None
    )
    return RawPrompt(index, clean, corrupt, answers, wrong, positions)


def _check_spec_needs(spec: TaskSpec) -> None:
    """What the ablation and the metric need from every prompt (checks without tokenising)."""
    for prompt in spec.prompts:
        where = f"{spec.source}: prompts[{prompt.index}]"
        if prompt.corrupt is None and spec.ablation == "corrupt":
            raise TaskError(
                f"{where}: no corrupt prompt, which ablation 'corrupt' needs; add"
                f" corrupt: or use ablation zero"
            )
        if spec.metric in NEEDS_ANSWER_AND_WRONG:
            for key, value in (("answer", prompt.answers), ("wrong", prompt.wrong)):
                if value is None:
                    raise TaskError(
                        f"{where}: metric {spec.metric} needs answer: and wrong: on"
                        f" every prompt, this one has no {key}:; add it or use metric kl"
                    )
    for key, attribute in (("answer", "answers"), ("wrong", "wrong")):
        given = [p.index for p in spec.prompts if getattr(p, attribute) is not None]
        if given and len(given) < len(spec.prompts):
            missing = next(p.index for p in spec.prompts if getattr(p, attribute) is None)
            raise TaskError(
                f"{spec.source}: prompts[{missing}]: has no {key}: but prompts[{given[0]}]"
                f" has one; give every prompt a {key}: or none"
            )


def _check_keys(data: Mapping, valid: Sequence[str], where: str, what: str) -> None:
    for key in data:
        if key not in valid:
            shown = key if isinstance(key, str) else repr(key)
            hint = _did_you_mean(str(key), valid)
            raise TaskError(
                f"{where}: unknown {what} '{shown}'{hint}; valid keys: {', '.join(valid)}"
            )


def _check_str(value: Any, where: str, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TaskError(f"{where}: expected {what} (a string), got {_show(value)}")
    if not allow_empty and not value.strip():
        raise TaskError(f"{where}: is empty; give {what}")
    return value


def _check_metric(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in METRICS:
        hint = _did_you_mean(str(value), METRICS) if isinstance(value, str) else ""
        raise TaskError(
            f"{where}: unknown metric {_show(value)}{hint}; use one of: {', '.join(METRICS)}"
        )
    return value


def _check_ablation(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in ABLATIONS:
        hint = _did_you_mean(str(value), ABLATIONS) if isinstance(value, str) else ""
        raise TaskError(
            f"{where}: unknown ablation {_show(value)}{hint}; use one of: {', '.join(ABLATIONS)}"
        )
    return value


def _check_threshold(value: Any, where: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):  # PyYAML reads `1e-2` (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None:
        raise TaskError(f"{where}: expected a number such as 0.01, got {_show(value)}")
    if not math.isfinite(number) or number < 0:
        raise TaskError(f"{where}: must be a finite number >= 0, got {_show(value)}")
    return number


def _check_seed(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskError(f"{where}: expected a whole number such as 0, got {_show(value)}")
    if value < 0:
        raise TaskError(f"{where}: must be >= 0, got {value}")
    return value


def _check_text(value: Any, where: str) -> Text:
    if isinstance(value, str):
        if not value:
            raise TaskError(f"{where}: is empty; give the prompt as text or a list of token ids")
        return value
    if isinstance(value, list):
        if not value:
            raise TaskError(
                f"{where}: is an empty list; give the prompt as text or a list of token ids"
            )
        for j, token in enumerate(value):
            if isinstance(token, bool) or not isinstance(token, int):
                raise TaskError(
                    f"{where}[{j}]: token ids must be whole numbers, got {_show(token)};"
                    f" give either text or a list of ids"
                )
        return tuple(value)
    raise TaskError(f"{where}: expected text (a string) or a list of token ids, got {_show(value)}")


def _check_tokens(value: Any, where: str) -> tuple[Token, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise TaskError(f"{where}: is an empty list; give one token (text or id) or a list of them")
    for j, token in enumerate(items):
        at = f"{where}[{j}]" if isinstance(value, list) else where
        if isinstance(token, bool) or not isinstance(token, (str, int)):
            raise TaskError(f'{at}: expected one token as text (" Mary") or id, got {_show(token)}')
        if isinstance(token, str) and not token:
            raise TaskError(f"{at}: is empty; give one token as text or id")
    return tuple(items)


def _check_positions(value: Any, where: str) -> Positions:
    if isinstance(value, str):
        if value not in POSITION_KEYWORDS:
            raise TaskError(
                f"{where}: unknown value {value!r}{_did_you_mean(value, POSITION_KEYWORDS)};"
                f" use last, all, or a list of positions such as [3, -1]"
            )
        return value  # type: ignore[return-value]
    if isinstance(value, list):
        if not value:
            raise TaskError(f"{where}: is an empty list; give at least one position, last, or all")
        for j, position in enumerate(value):
            if isinstance(position, bool) or not isinstance(position, int):
                raise TaskError(
                    f"{where}[{j}]: positions are whole numbers (negative counts from"
                    f" the end), got {_show(position)}"
                )
        return tuple(value)
    raise TaskError(
        f"{where}: expected last, all, or a list of positions such as [3, -1], got {_show(value)}"
    )


def _resolve_model(model: str, base_dir: Path | None) -> str:
    path = Path(model).expanduser()
    if base_dir is not None and not path.is_absolute() and (base_dir / path).exists():
        return str((base_dir / path).resolve())
    return model


def _default_name(source: str) -> str:
    return Path(source).stem if source.endswith((".yaml", ".yml")) else "task"


# --------------------------------------------------------------------------- tokenising


def resolve_task(spec: TaskSpec, tokenizer: Tokenizer | None, d_vocab: int, n_ctx: int) -> Task:
    """Tokenise a `TaskSpec` for a model with this tokenizer (or None) and shape.

    Raises `TaskError` for the first problem found, naming the prompt and the fix.
    """
    _check_spec_needs(spec)
    bos: list[int] = []
    if spec.prepend_bos:
        if tokenizer is None:
            raise TaskError(
                f"{spec.source}: prepend_bos is true but the model has no tokenizer to"
                f" give a BOS id; set prepend_bos: false and write the BOS id into each prompt"
            )
        if tokenizer.bos_id is None:
            raise TaskError(
                f"{spec.source}: prepend_bos is true but the tokenizer"
                f" ({tokenizer.source}) has no BOS token; set prepend_bos: false"
            )
        bos = [tokenizer.bos_id]
    resolver = _Resolver(spec, tokenizer, d_vocab, n_ctx, bos)
    clean, corrupt, positions, answers, wrong = [], [], [], [], []
    for prompt in spec.prompts:
        c, k, p, a, w = resolver.prompt(prompt)
        clean.append(c)
        corrupt.append(k)
        positions.append(p)
        answers.append(a)
        wrong.append(w)
    return Task(
        name=spec.name,
        description=spec.description,
        source=spec.source,
        model=spec.model,
        metric=spec.metric,
        threshold=spec.threshold,
        ablation=spec.ablation,
        seed=spec.seed,
        clean=clean,
        corrupt=corrupt,
        positions=positions,
        answers=None if answers[0] is None else answers,
        wrong_answers=None if wrong[0] is None else wrong,
    )


@dataclass
class _Resolver:
    spec: TaskSpec
    tokenizer: Tokenizer | None
    d_vocab: int
    n_ctx: int
    bos: list[int]

    def prompt(self, prompt: RawPrompt):
        where = f"{self.spec.source}: prompts[{prompt.index}]"
        clean = self.ids(prompt.clean, f"{where}: clean")
        if prompt.corrupt is None:
            corrupt = list(clean)
        else:
            corrupt = self.ids(prompt.corrupt, f"{where}: corrupt")
            if len(clean) != len(corrupt):
                raise TaskError(
                    f"{where}: clean has {len(clean)} tokens {self.show(clean)}, corrupt"
                    f" has {len(corrupt)} {self.show(corrupt)}; make them tokenise to the"
                    f" same length"
                )
        length = len(self.bos) + len(clean)
        if length > self.n_ctx:
            bos = " with BOS" if self.bos else ""
            raise TaskError(
                f"{where}: {length} tokens{bos}, longer than the model's context of"
                f" {self.n_ctx}; shorten the prompt"
            )
        positions = self.positions(prompt, len(clean), where, clean)
        answers = (
            None if prompt.answers is None else self.answer_ids(prompt.answers, f"{where}: answer")
        )
        wrong = None if prompt.wrong is None else self.answer_ids(prompt.wrong, f"{where}: wrong")
        if self.spec.metric == "nll" and answers is None and positions[-1] == len(clean) - 1:
            raise TaskError(
                f"{where}: metric nll reads the last position, whose next token is not"
                f" in the prompt; add answer: (the expected next token) or positions"
                f" that exclude the last"
            )
        offset = len(self.bos)
        return (
            self.bos + clean,
            self.bos + corrupt,
            [p + offset for p in positions],
            answers,
            wrong,
        )

    def ids(self, text: Text, where: str) -> list[int]:
        if isinstance(text, str):
            ids = self.encode(text, where)
            if not ids:
                raise TaskError(
                    f"{where}: {text!r} tokenises to no tokens; give a non-empty prompt"
                )
            self.check_tokenizer_vocab(ids, where)
        else:
            ids = list(text)
        self.check_vocab(ids, where)
        return ids

    def encode(self, text: str, where: str) -> list[int]:
        if self.tokenizer is None:
            raise TaskError(
                f"{where}: {_clip(repr(text))} is text but the model has no tokenizer;"
                f" give token ids or a model with tokenizer.json"
            )
        return list(self.tokenizer.encode(text))

    def check_vocab(self, ids: list[int], where: str) -> None:
        for j, token in enumerate(ids):
            if not 0 <= token < self.d_vocab:
                at = f"{where}[{j}]" if len(ids) > 1 else where
                raise TaskError(
                    f"{at}: token id {token} is outside the model's vocabulary"
                    f" [0, {self.d_vocab}); use ids from 0 to {self.d_vocab - 1}"
                )

    def check_tokenizer_vocab(self, ids: list[int], where: str) -> None:
        for j, token in enumerate(ids):
            if not 0 <= token < self.d_vocab:
                raise TaskError(
                    f"{where}: token {j} ({self.show([token])[1:-1]}) has id {token},"
                    f" outside the model's vocabulary [0, {self.d_vocab}); the tokenizer"
                    f" ({self.tokenizer.source}) does not match the model"
                )

    def answer_ids(self, tokens: tuple[Token, ...], where: str) -> list[int]:
        out = []
        for j, token in enumerate(tokens):
            at = f"{where}[{j}]" if len(tokens) > 1 else where
            if isinstance(token, str):
                ids = self.encode(token, at)
                if len(ids) != 1:
                    raise TaskError(
                        f"{at}: {token!r} is {len(ids)} tokens {self.show(ids)}; an answer"
                        f" must be exactly one token (try another word, or its id)"
                    )
                self.check_tokenizer_vocab(ids, at)
            else:
                ids = [token]
            self.check_vocab(ids, at)
            out.extend(ids)
        return out

    def positions(self, prompt: RawPrompt, length: int, where: str, clean: list[int]) -> list[int]:
        chosen = self.spec.positions if prompt.positions is None else prompt.positions
        if chosen == "last":
            return [length - 1]
        if chosen == "all":
            return list(range(length))
        out = set()
        for position in chosen:
            if not -length <= position < length:
                key = (
                    "positions"
                    if prompt.positions is not None
                    else "positions (the task's default)"
                )
                raise TaskError(
                    f"{where}: {key}: position {position} is outside the prompt of"
                    f" {length} tokens {self.show(clean)}; use 0..{length - 1} or"
                    f" -{length}..-1"
                )
            out.add(position % length)
        return sorted(out)

    def show(self, ids: list[int]) -> str:
        shown = ids[:SHOWN_TOKENS]
        items: list[Any] = list(shown)
        if self.tokenizer is not None and all(0 <= i < self.tokenizer.vocab_size for i in shown):
            items = list(self.tokenizer.token_strings(shown))
        text = ", ".join(repr(i) for i in items)
        return f"[{text}, ...]" if len(ids) > SHOWN_TOKENS else f"[{text}]"


# --------------------------------------------------------------------------- helpers


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _or_none(names: list[str]) -> str:
    return ", ".join(names) if names else "none bundled"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return _clip(repr(value))
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    return _kind(value)


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _plain_tokens(tokens: tuple[Token, ...]) -> Any:
    return tokens[0] if len(tokens) == 1 else list(tokens)
