"""Learning masks by gradient descent: what edge pruning and subnetwork probing share.

Both methods put hard-concrete gates (`acdc.core.hard_concrete`) on parts of the graph, run the
task's clean prompts through the masked forward (`acdc.core.masked`) and descend the run's
metric (KL to the full model by default: lower is better) plus a sparsity term. This module
holds the common parts:

- `MaskProblem`: the task's patched model (clean and ablated runs, recorded once), the
  differentiable masked forward over it, the metric, and a `CircuitMeter` that measures the
  final circuit on the same recordings;
- `TrainingProgress`: what a step reports to `Discovery.on_progress` (step, loss, sparsity,
  elapsed time and ETA);
- `run_steps`: the step loop, which reports progress and stops cleanly on Ctrl-C or SIGTERM
  (`KeyboardInterrupt`): the method then returns the state it has, marked partial;
- `linear_warmup_decay`: the learning-rate schedule of edge pruning (HF Transformers'
  linear schedule with warm-up).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from acdc.core.masked import MaskedForward
from acdc.core.metrics import Metric, build_metric, metric_targets
from acdc.core.patching import PatchedModel, task_tensors
from acdc.core.recordings import CircuitMeter

if TYPE_CHECKING:
    from acdc.core.graph import Graph
    from acdc.core.loading import LoadedModel
    from acdc.core.settings import CommonSettings
    from acdc.core.tasks.values import Task


@dataclass
class MaskProblem:
    """The masked forward of one task, ablation and graph, and its metric. Only what the
    masked forward reads is kept while masks are learnt (the ablated values, not the patched
    model's working copy of the deltas); `meter()` records the task's runs again, once, to
    measure the circuit found."""

    masked: MaskedForward
    metric: Metric
    model: LoadedModel
    task: Task
    common: CommonSettings

    @classmethod
    def of(cls, model: LoadedModel, task: Task, graph: Graph,
           common: CommonSettings) -> MaskProblem:
        """Record the task's runs (under no_grad, not inference mode: the masked forward's
        autograd graph reads the recorded tensors)."""
        weights = model.weights
        device = weights.W_E.device
        with torch.no_grad():
            tensors = task_tensors(task, device, weights.causal)
            patched = PatchedModel(weights, graph, tensors.clean, tensors.corrupt,
                                   tensors.pos_batch, tensors.pos_index, common.ablation,
                                   tensors.lengths)
            patched.take_clean_qkv()  # nothing reads them
            targets = metric_targets(task.clean, task.positions, task.answers,
                                     task.wrong_answers, device)
            metric = build_metric(common.metric, patched.clean_logits, targets)
        return cls(MaskedForward(patched), metric, model, task, common)

    def meter(self) -> CircuitMeter:
        """A meter of circuits of this graph on the task's runs, recorded again."""
        return CircuitMeter.of(self.model, self.task, self.masked.graph, self.common.metric,
                               self.common.ablation)


@dataclass(frozen=True)
class TrainingProgress:
    """One step of a mask-learning method: `loss` = `objective` (the metric) + the sparsity
    term; `sparsity` the fraction of masked units whose sampled gate is off (edge pruning: of
    the residual edges) or, for subnetwork probing, 1 - the regulariser; `target` the sparsity
    aimed at now (None: no target)."""

    method: str
    step: int
    steps: int
    loss: float
    objective: float
    sparsity: float
    target: float | None
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        """Seconds left at the pace so far."""
        return self.elapsed_s / max(self.step, 1) * (self.steps - self.step)

    def describe(self) -> str:
        target = f" (target {self.target:.3f})" if self.target is not None else ""
        return (f"{self.method} step {self.step}/{self.steps}: loss {self.loss:.4g}, metric "
                f"{self.objective:.4g}, sparsity {self.sparsity:.3f}{target}, "
                f"ETA {self.eta_s:.0f} s")


def run_steps(steps: int, step: Callable[[int], TrainingProgress],
              on_progress: Callable[[TrainingProgress], None] | None,
              every_s: float = 0.5) -> tuple[int, bool]:
    """Call `step(i)` for i = 0 .. steps - 1, reporting its progress at most every `every_s`
    seconds (and after the last step). Returns (steps done, interrupted): Ctrl-C or SIGTERM
    (`KeyboardInterrupt`, raised here or by `on_progress`) stops the loop after the last
    complete step."""
    done = 0
    last = float("-inf")
    try:
        for i in range(steps):
            progress = step(i)
            done = i + 1
            now = time.perf_counter()
            if on_progress is not None and (now - last >= every_s or done == steps):
                last = now
                on_progress(progress)
    except KeyboardInterrupt:
        return done, True
    return done, False


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor at a step: rising linearly from 0 over `warmup` steps, then
    falling linearly to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor
