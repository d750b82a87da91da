"""`circuit zoo train|eval`: the project's own small models."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from acdc.cli.app import zoo_app
from acdc.cli.boundary import err, user_errors


@zoo_app.command("train")
@user_errors
def zoo_train(
    name: Annotated[str, typer.Argument(help="Zoo model name (demo).")],
    out: Annotated[
        Path | None,
        typer.Option(help="Checkpoint directory to write. Default: models/<name>."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    steps: Annotated[
        int | None,
        typer.Option(help="Training steps. Default: the recipe's."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the report.")] = False,
) -> None:
    """Train a zoo model on the CPU; write config.json, model.safetensors and tokenizer.json."""
    from acdc.zoo import train_model

    out_dir = out if out is not None else Path("models") / name

    def on_progress(p) -> None:
        if not quiet:
            err(f"step {p.step}/{p.steps}  loss {p.loss:.4f}  {p.elapsed_s:.1f} s")

    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens chatter
        report = train_model(name, out_dir, seed=seed, steps=steps, on_progress=on_progress)
    _print_report(report)


@zoo_app.command("eval")
@user_errors
def zoo_eval(
    name: Annotated[str, typer.Argument(help="Zoo model name (demo).")],
    model: Annotated[
        Path | None,
        typer.Option(help="Checkpoint directory. Default: the bundled models/<name>."),
    ] = None,
) -> None:
    """Evaluate a zoo checkpoint on its held-out prompts (top-1 accuracy, logit difference)."""
    from acdc.core.bundled import model_dir
    from acdc.zoo import evaluate_model

    directory = model if model is not None else model_dir(name)
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens chatter
        report = evaluate_model(name, directory)
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    for key, value in report.items():
        if isinstance(value, float) and not math.isnan(value):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} ({v:,} B)" if isinstance(v, int) else f"{k} {v}"
                              for k, v in value.items())
        typer.echo(f"{key}: {value}")


