"""The project's checkpoint format, read and written without TransformerLens.

A checkpoint is a directory with `config.json` (keyword arguments of TransformerLens'
`HookedTransformerConfig`), `model.safetensors` (a `HookedTransformer` state dict: its
parameters, buffers allowed and ignored) and an optional `tokenizer.json` (Hugging Face
`tokenizers` format). Reading one needs safetensors and tokenizers only; the config's keys,
types and ranges are checked before anything else is read, and the state dict against the
parameters the config implies (`architecture.parameter_shapes`), each fault one line.
Weights are read only through safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from acdc.core.architecture import HookedConfig
from acdc.core.configs import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_TOKENIZER,
    CHECKPOINT_WEIGHTS,
    check_checkpoint_config,
    read_config,
)
from acdc.core.tokenizer import Tokenizer
from acdc.core.weights import check_state_dict
from acdc.errors import ModelError, first_line


def read_checkpoint_config(directory: Path) -> tuple[dict[str, Any], HookedConfig]:
    """A checkpoint's `config.json` as given, and as `HookedTransformerConfig` resolves it."""
    path = directory / CHECKPOINT_CONFIG
    config = read_config(path)
    check_checkpoint_config(config, str(path))
    return config, HookedConfig.from_keys(config, str(path))


def read_checkpoint_state(directory: Path, cfg: HookedConfig) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, checked against `cfg` (every parameter, at its shape)."""
    from safetensors.torch import load_file

    weights = directory / CHECKPOINT_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{directory}: no {CHECKPOINT_WEIGHTS}; `circuit graph` works from "
                         f"{CHECKPOINT_CONFIG} alone, a run needs the weights too")
    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types
        raise ModelError(f"{weights}: cannot read safetensors file ({first_line(error)})") from None
    check_state_dict(cfg, state, str(weights), str(directory / CHECKPOINT_CONFIG))
    return state


def read_checkpoint_tokenizer(directory: Path) -> Tokenizer | None:
    path = directory / CHECKPOINT_TOKENIZER
    return Tokenizer.from_file(path) if path.is_file() else None


def write_checkpoint(directory: str | Path, config: dict[str, Any],
                     state: dict[str, torch.Tensor],
                     tokenizer_file: str | Path | None = None) -> Path:
    """Write `config` (the keyword arguments the model was built from), the state dict and
    optionally a copy of `tokenizer_file` as a checkpoint directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CHECKPOINT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()},
              str(directory / CHECKPOINT_WEIGHTS))
    if tokenizer_file is not None:
        (directory / CHECKPOINT_TOKENIZER).write_bytes(Path(tokenizer_file).read_bytes())
    return directory
