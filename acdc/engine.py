"""ACDC: visit receivers in reverse topological order and prune edges that do not matter.

(Work in progress: the types below are the public API; `run_acdc` is being written.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from acdc.graph import Edge, Graph

Ablation = Literal["corrupt", "zero"]
ABLATIONS: tuple[str, ...] = ("corrupt", "zero")


@dataclass(frozen=True)
class AcdcConfig:
    """How to run ACDC. `threshold` is tau; the metric is lower-is-better."""

    threshold: float
    metric: str = "kl"
    ablation: Ablation = "corrupt"
    granularity: Literal["qkv", "head"] = "qkv"
    use_abs: bool = False  # remove when |delta| < tau instead of delta < tau
    reverse_head_order: bool = False  # visit heads 0 upwards


@dataclass(frozen=True)
class Progress:
    """Reported after every edge decision."""

    decided: int  # edges decided so far (tested or skipped as dead)
    tested: int  # edges actually tested
    total: int
    kept: int  # edges currently in the circuit, undecided ones included
    metric: float  # metric of the current circuit
    edge: str  # the edge just decided
    elapsed_s: float


@dataclass
class CircuitResult:
    """The outcome of a run. Tensors are indexed by `Edge.index` of `graph`."""

    graph: Graph
    config: AcdcConfig
    kept: torch.Tensor  # bool [n_edges]; undecided edges of a partial run count as kept
    scores: torch.Tensor  # float64 [n_edges]; metric change when tested, nan if never tested
    decided: torch.Tensor  # bool [n_edges]
    metric_full: float  # metric of the full model (0 for kl)
    metric_circuit: float  # metric of the final circuit
    runtime_s: float
    partial: bool  # True when the run was interrupted

    @property
    def n_edges_kept(self) -> int:
        return int(self.kept.sum())

    def kept_edges(self) -> list[Edge]:
        return [e for e in self.graph.edges if self.kept[e.index]]


ProgressCallback = Callable[[Progress], None]


def run_acdc(model, task, config: AcdcConfig, on_progress: ProgressCallback | None = None) -> CircuitResult:
    raise NotImplementedError
