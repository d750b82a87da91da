"""Loading a model for a run: what `--model` names, read into the engine's `Weights`.

`--model` names one of three things, tried in this order (`configs.model_kind`):

1. a checkpoint directory in the project's format (`checkpoints`): its `HookedTransformer`
   state dict is read as it is;
2. a local Hugging Face model directory of a family `hf_configs` reads: transformers loads it
   and `hf_weights` converts it to the same state dict (offline: nothing is fetched);
3. a TransformerLens model name such as `gpt2`, fetched from the hub when online: the one
   source that needs TransformerLens (`models`), imported only then.

The first two need neither TransformerLens nor its converters, so they load the same under
TransformerLens 3 and 4 and a run on the bundled models does not pay TransformerLens' import.
Sizes are checked against the free memory before anything is allocated, and what the engine
does not model is refused (`architecture.check_supported`) before the weights are read.

>>> loaded = load_model("models/demo")  # doctest: +SKIP
>>> loaded.logits(tokens)  # the plain forward pass  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from acdc.core.architecture import check_supported
from acdc.core.checkpoints import (
    read_checkpoint_config,
    read_checkpoint_state,
    read_checkpoint_tokenizer,
)
from acdc.core.configs import ModelShape, available_memory, check_reachable, model_kind
from acdc.core.forward import full_forward
from acdc.core.shapes import local_shape
from acdc.core.tokenizer import Tokenizer, hf_directory_tokenizer
from acdc.core.weights import Weights, weights_from_state_dict
from acdc.errors import ModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for the engine: its weights, its tokenizer and its shape."""

    name: str
    weights: Weights
    tokenizer: Tokenizer | None
    shape: ModelShape

    @property
    def device(self) -> torch.device:
        return self.weights.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.dtype

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The plain forward pass: logits [batch, pos, d_vocab] of tokens [batch, pos]."""
        return full_forward(self.weights, tokens)[0]


def load_model(spec: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load a model for a run, on `device` in `dtype`."""
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    _check_device(device)
    kind = model_kind(spec)
    if kind == "name":
        check_reachable(spec)
        from acdc.core.models import load_name  # TransformerLens: seconds to import

        weights, tokenizer, shape = load_name(spec, device, DTYPES[dtype])
        return LoadedModel(spec, weights, tokenizer, shape)
    shape = local_shape(spec, kind)
    _check_fits(spec, shape, dtype)
    directory = Path(spec)
    if kind == "checkpoint":
        _, cfg = read_checkpoint_config(directory)
        check_supported(cfg, spec)
        state = read_checkpoint_state(directory, cfg)
        tokenizer = read_checkpoint_tokenizer(directory)
    else:
        from acdc.core.hf_weights import read_hf_config, read_hf_state

        family, cfg = read_hf_config(directory)
        check_supported(cfg, spec)
        state = read_hf_state(directory, family, cfg)
        tokenizer = hf_directory_tokenizer(directory)
    weights = weights_from_state_dict(cfg, state, DTYPES[dtype], device)
    return LoadedModel(spec, weights, tokenizer, shape)


def _check_device(device: str) -> None:
    try:
        torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: CUDA is not available here; use --device cpu")


def _check_fits(spec: str, shape: ModelShape, dtype: str) -> None:
    """Refuse, before allocating, a model whose weights alone exceed the free memory."""
    needed = shape.n_params_loaded * DTYPES[dtype].itemsize
    free = available_memory()
    if free is not None and needed > free:
        raise ModelError(f"{spec}: its weights alone need about {needed / 2**30:.1f} GiB in "
                         f"{dtype}, more than the {free / 2**30:.1f} GiB of memory available; use "
                         f"a smaller model or a machine with more memory")
