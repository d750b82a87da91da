"""Options shared by several commands, and every method's own options, declared once.

The shared options are typed here once (`TaskOption`, `ModelOption`, ...). A method's own
options are the fields of its settings dataclass (`acdc.core.settings.option`); commands that
run methods take them all through `with_method_options`, read from the registry when the
command line is built.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from acdc.cli.boundary import F
from acdc.core.settings import option_flag
from acdc.errors import AcdcError


class Granularity(str, Enum):
    qkv = "qkv"
    head = "head"


class Ablation(str, Enum):
    corrupt = "corrupt"
    zero = "zero"
    mean = "mean"
    mean_positional = "mean-positional"


class Positions(str, Enum):
    none = "none"
    labels = "labels"
    all = "all"


class Dtype(str, Enum):
    float32 = "float32"
    float64 = "float64"
    float16 = "float16"
    bfloat16 = "bfloat16"


class RenderFormat(str, Enum):
    svg = "svg"
    png = "png"
    dot = "dot"


GRANULARITY_HELP = ("Graph granularity: qkv splits each head into q, k and v receivers (plus "
                    "direct q/k/v edges); head has one receiver per head.")



TaskOption = Annotated[str | None, typer.Option(
    "--task", "-t", help="Bundled task name (see `circuit tasks`) or a task YAML file. Required "
                         "unless --resume is given.")]
ModelOption = Annotated[str | None, typer.Option(
    help="Checkpoint directory, local Hugging Face directory or TransformerLens model name. "
         "Default: the task's model.")]
MethodOption = Annotated[str, typer.Option(
    help="Discovery method; `circuit methods` lists them.")]
MetricOption = Annotated[str | None, typer.Option(
    help="kl, logit_diff, prob_diff, nll or l2. Default: the task's (kl).")]
AblationOption = Annotated[Ablation | None, typer.Option(
    help="What a removed edge carries: the corrupted run's value, zero, or the sender's "
         "output averaged over the corrupted prompts' tokens (mean) or per position "
         "(mean-positional). Default: the task's.")]
GranularityOption = Annotated[Granularity, typer.Option(help=GRANULARITY_HELP)]
PositionsOption = Annotated[Positions, typer.Option(
    help="Circuits that know where: none (an edge stands for every token), labels (every "
         "edge once per label of the task, then `other` for the unlabelled tokens) or all "
         "(once per token index; prompts of one length). Methods that score nodes refuse it.")]
SeedOption = Annotated[int | None, typer.Option(help="Random seed. Default: the task's.")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
DtypeOption = Annotated[Dtype, typer.Option(
    help="Model precision (float32 on CPU; lower precision only on GPUs).")]
def threads_option(value: int) -> int:
    """--threads checked when parsed (a usage error), before anything is loaded or written."""
    from acdc.core.configs import check_threads

    try:
        return check_threads(value)
    except AcdcError as error:
        raise typer.BadParameter(str(error).removeprefix(f"--threads {value}: ")) from None


ThreadsOption = Annotated[int, typer.Option(
    min=0, callback=threads_option,
    help="CPU threads, at most the cores this process may use; 0 (default): 1 for small "
         "models, where threads only add overhead, else PyTorch's default.")]
MaxMemoryOption = Annotated[float | None, typer.Option(
    min=0, metavar="GIB", help="Refuse a run whose memory estimate exceeds this many GiB. "
                               "Default: the memory available now.")]
OutOption = Annotated[Path | None, typer.Option(
    help="Output directory. Default: runs/<task>-<YYYYmmdd-HHMMSS>/.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary.")]
NoRenderOption = Annotated[bool, typer.Option(
    "--no-render", help="Write circuit.dot but not circuit.svg.")]
NoScoreWidthOption = Annotated[bool, typer.Option(
    "--no-score-width", help="Draw every edge at one width (by default a scored circuit's "
                             "edges are as wide as their |score|).")]
ResumeOption = Annotated[Path | None, typer.Option(
    metavar="DIR", help="Continue the interrupted run in DIR: its settings and decisions come "
                        "from DIR/decisions.jsonl, and the outputs are written into DIR.")]


def method_options(methods: Sequence[str] | None = None
                   ) -> list[tuple[dataclasses.Field, list[str]]]:
    """Every option a method (or the selection rule) declares, once by name, with the methods
    that take it: the fields of the registered methods' settings dataclasses and of
    `Selection` (`acdc.core.settings.option`); only those of `methods` when given."""
    from acdc.core.selection import Selection
    from acdc.methods.registry import METHODS

    found: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    owners: list[tuple[str, type]] = [("the ranking methods", Selection)] if methods is None \
        else []
    owners += [(name, method.settings_type) for name, method in METHODS.items()
               if methods is None or name in methods]
    for owner, settings_type in owners:
        for item in dataclasses.fields(settings_type):
            if item.name in found:
                found[item.name][1].append(owner)
            else:
                found[item.name] = (item, [owner])
    return list(found.values())


def with_method_options(methods: Sequence[str] | None = None,
                        exclude: Sequence[str] = ()) -> Callable[[F], F]:
    """Add the options of every method (or of `methods`; `method_options`) but `exclude` to a
    command's parameters: typed as their fields, None when not given (flags: False); the
    command receives them in `**options`. The options are read from the registry when the
    command line is built, so a method registered later (a plug-in, a test's toy) has its own."""
    def decorate(command: F) -> F:
        return _WithMethodOptions(command, methods, exclude)  # type: ignore[return-value]

    return decorate


class _WithMethodOptions:
    """A command whose signature (what typer builds its options from) is its own parameters
    followed by the methods' options, computed whenever it is asked for."""

    def __init__(self, command: Callable[..., Any], methods: Sequence[str] | None,
                 exclude: Sequence[str]):
        functools.update_wrapper(self, command)
        self.command, self.methods, self.exclude = command, methods, set(exclude)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.command(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        signature = inspect.signature(self.command, eval_str=True)
        taken = set(signature.parameters) | self.exclude
        added = []
        for item, owners in method_options(self.methods):
            if item.name in taken:
                continue
            kind = _option_type(item)
            help_text = item.metadata.get("help", "")
            if len(owners) < 5:
                help_text += f" [{', '.join(owners)}]"
            flag = option_flag(item)
            if kind is bool:
                annotation: Any = Annotated[bool, typer.Option(flag, help=help_text)]
                default: Any = False
            else:
                annotation = Annotated[kind | None, typer.Option(flag, help=help_text)]
                default = None
            added.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY,
                                           default=default, annotation=annotation))
        params = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        return signature.replace(parameters=params + added)


def _option_type(item: dataclasses.Field) -> type:
    """The command-line type of a settings field: bool, int, float, else str (a choice the
    settings' own `validate` checks)."""
    text = str(item.type).replace(" ", "")
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text in (name, f"{name}|None"):
            return kind
    return str



def given_options(ctx: typer.Context, names: set[str]) -> dict[str, Any]:
    """The options typed on the command line (not defaults), by setting name (`abs_` is
    `abs`), enums as their values."""
    given = {}
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = ctx.params[name]
        given[name.rstrip("_")] = value.value if isinstance(value, Enum) else value
    return given

