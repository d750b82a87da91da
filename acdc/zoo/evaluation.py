"""Scoring a zoo checkpoint on data it never saw in training.

The measures are the recipe's data's own (`ZooData.evaluate`): accuracy and logit difference
for the IOI models, probability difference for greater-than, accuracy at the predictable
positions and every head's previous-token and induction scores for induction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from acdc.core.configs import CHECKPOINT_TOKENIZER
from acdc.core.loading import load_model
from acdc.errors import AcdcError
from acdc.zoo.recipes import get_recipe


@torch.no_grad()
def evaluate_model(name: str, checkpoint_dir: str | Path, n: int | None = None) -> dict[str, Any]:
    """Score a checkpoint of zoo model `name` on `n` held-out prompts (default: the recipe's).

    Returns the model, checkpoint, parameter count and the data's own measures: for the IOI
    models `accuracy` and `logit_diff`, for greater-than `prob_diff` and `accuracy`, for
    induction `accuracy` at the predictable positions and every head's previous-token and
    induction scores.
    """
    recipe = get_recipe(name)
    loaded = load_model(str(checkpoint_dir))
    if loaded.tokenizer is None:
        raise AcdcError(f"{checkpoint_dir}: no {CHECKPOINT_TOKENIZER}; zoo checkpoints carry one")
    scores = recipe.task.evaluate(loaded, recipe.eval_prompts if n is None else n)
    return {"model": name, "checkpoint": str(checkpoint_dir), **scores,
            "n_params": loaded.shape.n_params, "recipe_steps": recipe.steps}
