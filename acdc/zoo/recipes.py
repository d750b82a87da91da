"""The zoo's registry: one `Recipe` per bundled model, in `ZOO`.

A recipe names everything that makes a zoo model: the `HookedTransformerConfig` keyword
arguments (d_vocab from its data's vocabulary), the data it is trained on (a `ZooData`), and
the optimiser settings and step count. `train_model(name)` with the recipe's steps and seed 0
reproduces the checkpoint under `models/<name>`.

>>> sorted(ZOO)
['demo', 'greater-than', 'induction', 'ioi']
>>> ZOO["induction"].config["attn_only"]
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acdc.core.generators.registry import GENERATORS
from acdc.errors import AcdcError
from acdc.zoo.data import ZooData
from acdc.zoo.demo_ioi import DEMO_WORDS
from acdc.zoo.generated import GeneratedGreaterThan, GeneratedIoi
from acdc.zoo.repeated_spans import RepeatedSpans


@dataclass(frozen=True)
class Recipe:
    """How to build and train one zoo model."""

    name: str
    description: str
    config: dict[str, Any]  # HookedTransformerConfig keyword arguments (d_vocab filled in)
    task: ZooData
    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    eval_prompts: int = 2000  # held-out prompts scored by `evaluate_model`
    log_every: int = 50


IOI_DATA = GeneratedIoi()
GREATER_THAN_DATA = GeneratedGreaterThan()
INDUCTION_DATA = RepeatedSpans(
    n_tokens=126,
    train_params={"seq_len": 63, "repeats": 3, "span_length": [2, 10], "token_min": 0,
                  "token_max": None, "exclude": []},
    eval_params={**GENERATORS["induction"].defaults(), "kind": "induction"},
)


def _mlp_config(n_layers: int, d_vocab: int, n_ctx: int, model_name: str) -> dict[str, Any]:
    return {
        "n_layers": n_layers, "n_heads": 4, "d_model": 64, "d_head": 16, "d_mlp": 256,
        "act_fn": "gelu", "normalization_type": "LN", "n_ctx": n_ctx, "d_vocab": d_vocab,
        "positional_embedding_type": "standard", "original_architecture": "circuit-zoo",
        "model_name": model_name,
    }


ZOO: dict[str, Recipe] = {
    "demo": Recipe(
        name="demo",
        description="2-layer, 4-head transformer with MLPs trained on a word-level IOI task",
        config=_mlp_config(2, len(DEMO_WORDS.vocabulary()), 32, "circuit-demo"),
        task=DEMO_WORDS,
        steps=1000,
    ),
    "ioi": Recipe(
        name="ioi",
        description="3-layer, 4-head transformer with MLPs trained on the ioi task's prompts",
        config=_mlp_config(3, len(IOI_DATA.vocabulary()), 32, "circuit-ioi"),
        task=IOI_DATA,
        steps=2000,
    ),
    "greater-than": Recipe(
        name="greater-than",
        description="2-layer, 4-head transformer with MLPs trained on the greater-than prompts",
        config=_mlp_config(2, len(GREATER_THAN_DATA.vocabulary()), 16, "circuit-greater-than"),
        task=GREATER_THAN_DATA,
        steps=1500,
    ),
    "induction": Recipe(
        name="induction",
        description="2-layer, 4-head attention-only transformer trained on repeated random spans",
        config={
            "n_layers": 2, "n_heads": 4, "d_model": 128, "d_head": 32, "attn_only": True,
            "act_fn": "relu", "normalization_type": "LN", "n_ctx": 64,
            "d_vocab": len(INDUCTION_DATA.vocabulary()), "positional_embedding_type": "standard",
            "original_architecture": "circuit-zoo", "model_name": "circuit-induction",
        },
        task=INDUCTION_DATA,
        steps=2500,
        batch_size=64,
        lr=3e-3,
        eval_prompts=200,
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or an error that lists the zoo."""
    if name not in ZOO:
        raise AcdcError(f"unknown zoo model {name!r}: choose one of {', '.join(sorted(ZOO))}")
    return ZOO[name]
