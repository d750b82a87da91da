"""The one interface through which the ACDC search evaluates edge removals.

The search (`search.py`) asks an evaluator for the logits of candidate circuits (edges into
one receiver removed, as `candidates.py` plans them), then tells it which candidate became
the circuit (`commit`) and which edges are gone for good (`remove`). Two evaluators implement
it and compute the same patched forward:

- `propagation.IncrementalPatcher`: recomputes only what a removal can change, several
  candidates per evaluation;
- `FullRecompute` (below): reruns the patched forward from the edge's stage on, one edge at a
  time; plainly written, the incremental engine's yardstick in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from acdc.core.graph import Edge
from acdc.core.patching import PatchedModel, Stage


class Evaluator(Protocol):
    """Evaluates candidate removals on the committed circuit."""

    dtype: torch.dtype
    device: torch.device

    def enter(self, edge: Edge) -> None:
        """Tests of the edges into `edge.receiver` begin."""

    def evaluate(self, edges: list[Edge], coefficients: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Logits `[k, n_positions, d_vocab]` of k candidates (candidate i removes `edges[j]`
        where `coefficients[i, j]` is 1), and what `commit` needs to make one of them real."""

    def commit(self, tentative: Any, candidate: int) -> None:
        """Candidate `candidate` of the last evaluation is the circuit now."""

    def remove(self, edge: Edge) -> None:
        """`edge` is out of the circuit (after `commit`, or untested: its node is dead)."""

    def resync(self) -> None:
        """Rebuild the state from the masks (after decisions were replayed from a log)."""

    def release(self) -> None:
        """The search is over: drop caches before the final full pass."""

    def rounding_noise(self, metric_circuit: float, tracked: float) -> float:
        """The metric's rounding noise: `metric_circuit` is the final circuit's metric from a
        fresh patched pass, `tracked` the one the search tracked for it."""


class FullRecompute:
    """Every test reruns the patched forward from the edge's stage on; one edge at a time."""

    def __init__(self, patched: PatchedModel, metric: Callable[[torch.Tensor], torch.Tensor],
                 metric_full: float):
        self.pm = patched
        self.dtype, self.device = patched.delta.dtype, patched.delta.device
        # The search tracks metrics through this same pass, so its own gap is no measure of
        # rounding: take the full graph's patched pass against the plain forward's metric.
        self.full_graph_gap = abs(float(metric(patched.logits_from(Stage(0)))) - metric_full)
        patched.take_last_qkv()  # not needed: every test reruns the pass

    def enter(self, edge: Edge) -> None:
        pass

    def evaluate(self, edges: list[Edge], coefficients: torch.Tensor) -> tuple[torch.Tensor, None]:
        edge = edges[0]
        self.pm.set_edge(edge, False)
        try:
            return self.pm.logits_from(PatchedModel.stage_of(edge))[None], None
        finally:
            self.pm.set_edge(edge, True)

    def commit(self, tentative: None, candidate: int) -> None:
        pass

    def remove(self, edge: Edge) -> None:
        self.pm.set_edge(edge, False)

    def resync(self) -> None:
        pass

    def release(self) -> None:
        pass

    def rounding_noise(self, metric_circuit: float, tracked: float) -> float:
        return self.full_graph_gap
