"""What `--model` names, read as a shape without reading weights.

Checkpoint directories and local Hugging Face directories are read as plain data
(`configs`, `hf_configs`: no torch, so `circuit graph` answers at once); a TransformerLens
model name needs TransformerLens' own configuration table (`models`, imported only then).
"""

from __future__ import annotations

from pathlib import Path

from acdc.core.configs import (
    CHECKPOINT_CONFIG,
    ModelShape,
    check_reachable,
    checkpoint_shape,
    model_kind,
    read_config,
)
from acdc.core.hf_configs import hf_shape


def local_shape(spec: str, kind: str) -> ModelShape:
    """The shape of a checkpoint ("checkpoint") or Hugging Face ("hf") directory."""
    path = Path(spec) / CHECKPOINT_CONFIG
    config = read_config(path)
    return hf_shape(config, str(path)) if kind == "hf" else checkpoint_shape(config, str(path))


def load_shape(spec: str) -> ModelShape:
    """The shape of a model from its configuration alone (no weights are read). Checkpoints
    and Hugging Face directories are read as data (no torch); names through TransformerLens."""
    kind = model_kind(spec)
    if kind in ("checkpoint", "hf"):
        return local_shape(spec, kind)
    check_reachable(spec)
    from acdc.core.models import name_shape

    return name_shape(spec)
