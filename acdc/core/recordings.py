"""Recordings: a task's clean and corrupted runs on one model, made once, handed out as copies.

Every search and every evaluation starts from the same state: a `PatchedModel` fresh from its
constructor, which runs the clean and the corrupted prompts through the model (two ordinary
forward passes) and sets every mask to "kept". A threshold sweep runs many searches on one
model and task, and evaluates every circuit they find; recording once and giving each of them
an independent copy of that state (`Recordings.fresh`) saves the recordings of every run
after the first, and changes nothing: the copy is the recorded state bit for bit, and recording
again would repeat the same arithmetic on the same inputs.

A copy shares the model's weights and the graph (nothing writes them) and copies everything a
pass or a search writes (sender outputs, q/k/v, masks), keeping which tensors are views of
which. A copy costs one memory copy of the recorded activations, far less than two forward
passes. Measuring circuits (an evaluation, a method's `metric_circuit`) needs less:
`Recordings.for_circuits` shares every tensor a pass only reads and copies the senders'
outputs and the masks, which a pass writes.

`CircuitMeter` is the one place a circuit's metric is measured: a patched model (fresh from
the recordings, or the one a method already built) and the run's metric; every method's
circuit is measured by it, and `acdc.evaluation.faithfulness` reads circuits' logits the same
way (`PatchedModel.circuit_logits`).

>>> recordings = record(loaded_model, task, graph, "corrupt")  # doctest: +SKIP
>>> run_acdc(loaded_model, task, common, settings, recordings=recordings)  # doctest: +SKIP
>>> CircuitMeter.of(loaded_model, task, graph, "kl", "corrupt").metric(kept)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from acdc.core.graph import Graph
from acdc.core.metrics import Metric, build_metric, metric_targets
from acdc.core.patching import PatchedModel, TaskTensors, task_tensors
from acdc.core.weights import Weights

if TYPE_CHECKING:
    from acdc.core.loading import LoadedModel
    from acdc.core.tasks.values import Task


@dataclass(frozen=True)
class Recordings:
    """The state of a `PatchedModel` fresh from its constructor (`patched`, never run or
    changed), with the tensors it was built from (right-padded tokens, metric positions)."""

    patched: PatchedModel
    tensors: TaskTensors
    ablation: str

    @property
    def graph(self) -> Graph:
        return self.patched.graph

    @property
    def weights(self) -> Weights:
        return self.patched.w

    def fresh(self) -> PatchedModel:
        """An independent copy of the recorded state, sharing only the weights and the graph."""
        shared = {id(self.patched.w): self.patched.w, id(self.patched.graph): self.patched.graph}
        with torch.inference_mode():
            return copy.deepcopy(self.patched, memo=shared)

    def for_circuits(self) -> PatchedModel:
        """A copy that measures circuits (an evaluation, a method's circuit): it shares what a
        pass only reads and copies what it writes (`PatchedModel.copy_for_circuits`), so it
        costs a copy of the senders' outputs, not of every recorded tensor."""
        return self.patched.copy_for_circuits()

    def check(self, graph: Graph, tensors: TaskTensors, ablation: str) -> None:
        """Refuse (ValueError: a caller's mistake, not a user's) recordings of another graph,
        another task or another ablation than the run they are handed to."""
        if graph.shape != self.graph.shape:
            raise ValueError(f"recordings of a {self.graph.shape} graph handed to a run on "
                             f"{graph.shape}")
        if ablation != self.ablation:
            raise ValueError(f"recordings with {self.ablation} ablation handed to a run with "
                             f"{ablation} ablation")
        mine, theirs = dataclasses.astuple(self.tensors), dataclasses.astuple(tensors)
        if any((a is None) != (b is None) or (a is not None and (
                a.shape != b.shape or not torch.equal(a, b.to(a.device))))
               for a, b in zip(mine, theirs, strict=True)):
            raise ValueError("recordings of other prompts handed to a run")


def record(model: LoadedModel, task: Task, graph: Graph, ablation: str) -> Recordings:
    """Record `task`'s clean (and, under corrupt ablation, corrupted) run on `model` over
    `graph` (two ordinary forward passes, or one)."""
    weights = model.weights
    with torch.inference_mode():
        tensors = task_tensors(task, weights.W_E.device, weights.causal, graph.shape)
        patched = PatchedModel(weights, graph, tensors.clean, tensors.corrupt, tensors.pos_batch,
                               tensors.pos_index, ablation, tensors.lengths,
                               groups=tensors.groups)
    return Recordings(patched, tensors, ablation)


@dataclass
class CircuitMeter:
    """A run's metric of any circuit of one graph: one patched pass each (none for the full
    model, only the unembedding for the empty circuit)."""

    patched: PatchedModel
    metric_of: Metric

    @classmethod
    def of(cls, model: LoadedModel, task: Task, graph: Graph, metric: str, ablation: str,
           recordings: Recordings | None = None) -> CircuitMeter:
        """A meter over the task's runs: the recordings' copy, or recorded now."""
        patched = (recordings.for_circuits() if recordings is not None
                   else record(model, task, graph, ablation).patched)
        device = patched.w.W_E.device
        targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers,
                                 device)
        return cls(patched, build_metric(metric, patched.clean_logits, targets))

    def metric(self, kept: Sequence[bool] | torch.Tensor) -> float:
        flags = torch.as_tensor(kept if isinstance(kept, torch.Tensor) else list(kept),
                                dtype=torch.bool)
        with torch.inference_mode():
            return float(self.metric_of(self.patched.circuit_logits(flags)))

    @property
    def full(self) -> float:
        with torch.inference_mode():
            return float(self.metric_of(self.patched.clean_logits))
