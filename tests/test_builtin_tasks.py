"""Every bundled task, end to end on its bundled model, at a small N: generated prompts resolve
with the model's tokenizer, ACDC keeps a non-trivial circuit, and the circuit is faithful
enough to be worth looking at."""

import pytest

from acdc.core.loading import load_model
from acdc.core.settings import CommonSettings
from acdc.core.tasks.reading import list_tasks, read_task
from acdc.core.tasks.resolving import resolve_task
from acdc.methods.acdc.search import AcdcSettings, run_acdc

BUILT_IN = ["ioi", "greater-than", "induction"]


def test_circuit_tasks_lists_the_built_in_tasks():
    names = {spec.name for spec in list_tasks()}
    assert set(BUILT_IN) | {"demo"} <= names


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_task_runs_end_to_end_at_small_n(name):
    spec = read_task(name)
    spec = spec.with_generator(n=12)
    model = load_model(spec.model)
    task = resolve_task(spec, model.tokenizer, model.shape.d_vocab, model.shape.n_ctx)
    assert len(task.clean) == 12
    assert all(len(c) == len(k) for c, k in zip(task.clean, task.corrupt, strict=True))
    result = run_acdc(model, task, CommonSettings(spec.metric, spec.ablation),
                      AcdcSettings(threshold=spec.threshold))
    total = len(result.graph.edges)
    assert 0 < result.n_edges_kept < 0.6 * total
    # Faithful: the circuit is much closer to the model than the fully corrupted network.
    everything_removed = run_acdc(model, task, CommonSettings(spec.metric),
                                  AcdcSettings(threshold=1e9))
    assert result.metric_circuit < 0.5 * everything_removed.metric_circuit
