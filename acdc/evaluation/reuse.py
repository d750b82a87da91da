"""The recordings of the last search in this process, kept for evaluating its circuits.

A circuit evaluated in the process that found it (the Python API's `discover` or `sweep`, then
`evaluate`) needs the same clean and corrupted runs the search recorded: `remember` keeps
them (one model and task at a time), and `evaluator_for` hands out a `CircuitEvaluator` over
them, made once and reused for every later circuit of that model, task, graph, ablation and
metrics, so that each circuit's metrics cost its own patched passes and nothing else. Anything
else (another model object, another task, another graph or ablation) gets an evaluator that
records its own runs, exactly as before; the values are the same either way (the copies are
the recorded state bit for bit, `acdc.core.recordings`).

Only one entry is kept, and only while its model is alive (a weak reference to the
`LoadedModel`): the recordings are the size of two forward passes' activations. `forget()`
drops them at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acdc.core.graph import Graph
    from acdc.core.loading import LoadedModel
    from acdc.core.recordings import Recordings
    from acdc.core.tasks.values import Task
    from acdc.evaluation.faithfulness import CircuitEvaluator


@dataclass
class _Entry:
    model: weakref.ref[LoadedModel]
    task: Task
    recordings: Recordings
    evaluators: dict[tuple[Any, ...], CircuitEvaluator] = field(default_factory=dict)


_LAST: list[_Entry] = []


def remember(model: LoadedModel, task: Task, recordings: Recordings) -> None:
    """Keep a search's recordings (replacing any others) for evaluating its circuits."""
    forget()
    _LAST.append(_Entry(weakref.ref(model, _model_gone), task, recordings))


def _model_gone(ref: weakref.ref[LoadedModel]) -> None:
    if _LAST and _LAST[0].model is ref:
        forget()


def forget() -> None:
    """Drop the kept recordings and evaluators."""
    _LAST.clear()


def evaluator_for(model: LoadedModel, task: Task, graph: Graph, ablation: str,
                  metrics: Sequence[str] | None = None) -> CircuitEvaluator:
    """An evaluator of `graph`'s circuits on `model` and `task`: over the kept recordings (and
    the same evaluator again) when they are this model's, task's, graph's and ablation's, else
    one that records its own runs."""
    from acdc.evaluation.faithfulness import CircuitEvaluator

    entry = _LAST[0] if _LAST else None
    if (entry is None or entry.model() is not model or entry.recordings.ablation != ablation
            or entry.recordings.graph.shape != graph.shape
            or _prompts(entry.task) != _prompts(task)):
        return CircuitEvaluator(model, task, graph, ablation, metrics)
    key = (None if metrics is None else tuple(dict.fromkeys(metrics)),)
    if key not in entry.evaluators:
        entry.evaluators[key] = CircuitEvaluator(model, task, graph, ablation, metrics,
                                                 recordings=entry.recordings)
    return entry.evaluators[key]


def _prompts(task: Task) -> tuple[Any, ...]:
    """What a task's recordings and metric targets depend on (not its metric or threshold)."""
    return (task.clean, task.corrupt, task.positions, task.answers, task.wrong_answers,
            task.labels)
