"""Two `Weights` values compared field by field: tensors bit for bit, the rest by equality."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch

from acdc.core.weights import Weights


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
    return a is b if callable(a) else a == b


def differences(ours: Weights, theirs: Weights) -> list[str]:
    """The fields (`layers[i].W_K`, `attn_scale`, ...) in which the two differ."""
    out = []
    for field in fields(Weights):
        a, b = getattr(ours, field.name), getattr(theirs, field.name)
        if field.name != "layers":
            if not _same(a, b):
                out.append(field.name)
            continue
        if len(a) != len(b):
            out.append("layers (count)")
        for i, (la, lb) in enumerate(zip(a, b, strict=False)):
            out += [f"layers[{i}].{f.name}" for f in fields(la)
                    if not _same(getattr(la, f.name), getattr(lb, f.name))]
    return out
