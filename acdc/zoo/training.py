"""Training a zoo model, reproducibly, on the CPU.

`train_model` builds the recipe's tokenizer and a seeded model, trains it with AdamW (linear
warm-up, cosine decay to a tenth of the peak, gradient clipping at 1) on batches its data draws
from one `random.Random(seed)`, and writes a checkpoint in the project's format
(`config.json`, `model.safetensors`, `tokenizer.json`) that `acdc.core.loading.load_model`
reads, then scores it on held-out data (`evaluate_model`).

Training is deterministic: the same recipe, seed and step count give bit-identical weights on
the same machine (a fixed thread count, deterministic algorithms, torch's global state
restored afterwards).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from acdc.core.configs import CHECKPOINT_TOKENIZER
from acdc.core.models import build_model, save_checkpoint
from acdc.errors import AcdcError
from acdc.zoo.evaluation import evaluate_model
from acdc.zoo.recipes import Recipe, get_recipe

TRAIN_THREADS = 2


@dataclass(frozen=True)
class TrainingProgress:
    """Reported every `Recipe.log_every` steps and after the last one."""

    step: int
    steps: int
    loss: float  # mean cross-entropy of the answer over the last `log_every` steps
    elapsed_s: float


ProgressCallback = Callable[[TrainingProgress], None]


@contextmanager
def _deterministic_cpu(seed: int) -> Iterator[None]:
    """Seeded, single-machine-reproducible torch state; restored on exit."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(rng_state)
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def _learning_rate(recipe: Recipe, step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = min(recipe.warmup_steps, max(steps // 10, 1))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item()))


def train_model(name: str, out_dir: str | Path, seed: int = 0, steps: int | None = None,
                on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train zoo model `name` on the CPU and write its checkpoint to `out_dir`.

    Returns a report: the recipe's name, seed, steps, batch size, final training loss,
    held-out accuracy (see `evaluate_model`), training time and the files written.

    >>> report = train_model("demo", "/tmp/demo", steps=10)  # doctest: +SKIP
    >>> report["steps"]  # doctest: +SKIP
    10
    """
    recipe = get_recipe(name)
    steps = recipe.steps if steps is None else steps
    if steps < 1:
        raise AcdcError(f"--steps must be at least 1, got {steps}")
    out_dir = Path(out_dir)
    data = recipe.task
    tokenizer = data.build_tokenizer()
    data_rng = random.Random(seed)
    start = time.perf_counter()
    with _deterministic_cpu(seed):
        model = build_model(recipe.config, seed=seed)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "W_pos" not in n]
        no_decay = [p for n, p in model.named_parameters()
                    if not (p.ndim >= 2 and "W_pos" not in n)]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": recipe.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=recipe.lr, betas=(0.9, 0.98),
        )
        window: list[float] = []
        final_loss = float("nan")
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, step, steps)
            loss = data.training_loss(model, tokenizer, recipe.batch_size, data_rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            window.append(loss.item())
            done = step + 1
            if done % recipe.log_every == 0 or done == steps:
                final_loss = sum(window) / len(window)
                window.clear()
                if on_progress is not None:
                    on_progress(TrainingProgress(done, steps, final_loss,
                                                 time.perf_counter() - start))
        model.eval()
    train_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_file = Path(scratch) / CHECKPOINT_TOKENIZER
        tokenizer.save(str(tokenizer_file))
        save_checkpoint(model, out_dir, tokenizer_file=tokenizer_file, config=recipe.config)
    evaluation = evaluate_model(name, out_dir)
    heldout = {f"heldout_{k}": v for k, v in evaluation.items()
               if k not in ("model", "checkpoint", "n_params", "recipe_steps")
               and isinstance(v, (int, float, str))}
    return {
        "model": name, "seed": seed, "steps": steps, "batch_size": recipe.batch_size,
        "final_loss": final_loss, "train_seconds": round(train_s, 1), **heldout,
        "out_dir": str(out_dir),
        "files": {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()},
    }
