"""The hard-concrete distribution: a mask in [0, 1] that is exactly 0 or 1 with positive
probability, with a gradient for its parameter (Louizos, Welling, Kingma 2018, "Learning
Sparse Neural Networks through L0 Regularization").

A gate with location parameter `log_alpha` is sampled from u ~ U(eps, 1 - eps) as

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta),   z = clamp(s * (r - l) + l, 0, 1)

with the stretch limits l = -0.1, r = 1.1 and the temperature beta = 2/3 (the values edge
pruning and subnetwork probing both use). Stretching past [0, 1] and clamping puts mass on 0 and
on 1, so a trained gate is usually exactly open or exactly closed, and the sample is
differentiable in `log_alpha` wherever it is strictly between.

`p_open` is the probability that the gate is not exactly 0 (the expected L0 norm of one gate),
`sigmoid(log_alpha - beta * log(-l / r))`; `p_closed` its complement, which edge pruning's
deterministic readout counts.

>>> import torch
>>> round(float(p_open(torch.tensor(0.0))), 4)
0.8318
"""

from __future__ import annotations

import math

import torch

LEFT = -0.1  # l: the stretched interval's lower end
RIGHT = 1.1  # r: its upper end
BETA = 2 / 3  # the temperature
SHIFT = BETA * math.log(-LEFT / RIGHT)  # beta log(-l/r) = -1.5986: where P(z > 0) = 1/2


def uniform(shape: torch.Size | tuple[int, ...], eps: float, generator: torch.Generator,
            device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """u ~ U(eps, 1 - eps), drawn on the CPU from `generator` (so that a seed gives the same
    masks on every device) and moved to `device`."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return u.clamp(eps, 1 - eps).to(device=device, dtype=dtype)


def sample(log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A gate per entry of `log_alpha` from the uniforms `u` (same shape), differentiable in
    `log_alpha`."""
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def p_open(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z > 0) per gate: the expected L0 norm."""
    return torch.sigmoid(log_alpha - SHIFT)


def p_closed(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z = 0) per gate: the stretched concrete's CDF at 0."""
    return torch.sigmoid(SHIFT - log_alpha)


def median_gate(log_alpha: torch.Tensor) -> torch.Tensor:
    """The gate at u = 1/2 (its median): `clamp(sigmoid(log_alpha / beta) (r - l) + l, 0, 1)`;
    at least 1/2 exactly when log_alpha >= 0."""
    return (torch.sigmoid(log_alpha / BETA) * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)
