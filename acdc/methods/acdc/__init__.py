"""ACDC (Conmy et al. 2023) as a discovery method: the registry entry and its run glue.

The search is `search.py`; it evaluates removals through `evaluator.py` (the incremental
engine in `propagation.py`, several candidates at once as `candidates.py` plans them, or the
full recompute). `runlog.py` is its journal: every decision is appended to
`decisions.jsonl` as it is made, so a run resumes after a crash. `memory.py` estimates a run's
memory from the model's shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from acdc.core.graph import count_edges
from acdc.core.settings import CommonSettings
from acdc.errors import RunWarning
from acdc.methods.acdc.memory import estimate_memory
from acdc.methods.acdc.runlog import (
    Decision,
    DecisionLog,
    LoggedRun,
    RunLog,
    check_resumable,
    make_header,
    task_digest,
)
from acdc.methods.acdc.settings import AcdcSettings
from acdc.methods.base import Discovery, KeptEdges, Method, positions_record

if TYPE_CHECKING:
    from acdc.core.configs import ModelShape
    from acdc.core.tasks.values import Task
    from acdc.methods.acdc.search import Progress

def discover(job: Discovery) -> KeptEdges:
    """Run ACDC, keeping its decision log in `job.out_dir` (appended to when resuming)."""
    from acdc.methods.acdc import search  # torch: only once a run starts

    graph = job.graph
    log: RunLog | None = None
    replay: Sequence[Decision] = ()
    if job.out_dir is not None:
        digest = task_digest(job.task, positions_record(job.task, graph).get("positions_sha256"))
        if job.resume_from is not None:
            logged = job.resume_from
            assert isinstance(logged, LoggedRun)  # what this method's journal read
            check_resumable(logged, len(graph.edges), digest)
            log, replay = RunLog.reopen(logged), logged.decisions
        else:
            log = RunLog.create(job.out_dir, make_header(job.record, len(graph.edges), digest))

    def record(progress: Progress) -> None:
        if log is not None and not progress.replayed:
            log.append(progress.decision)  # first: the log matters more than the display
        if job.on_progress is not None:
            job.on_progress(progress)

    try:
        circuit = search.run_acdc(job.model, job.task, job.common, job.settings, on_progress=record,
                                  replay=replay, graph=graph, recordings=job.recordings)
    finally:
        if log is not None:
            log.close()
    noise, threshold = circuit.results["metric_noise"], job.settings.threshold
    if noise * 10 > abs(threshold):
        dtype = str(job.model.dtype).removeprefix("torch.")
        warnings.warn(f"the metric's rounding noise in {dtype} is {noise:.1e}, within a factor 10 "
                      f"of the threshold {threshold:g}: decisions near it are noise", RunWarning,
                      stacklevel=2)
    return KeptEdges(circuit.kept, circuit.scores, circuit.results)


def extra_memory(shape: ModelShape, common: CommonSettings, task: Task) -> int:
    """Bytes an ACDC run allocates besides the weights (`memory.estimate_memory`)."""
    from acdc.core.positions import group_names

    graph = count_edges(shape.graph_shape(common.granularity))
    bytes_per_number = 4  # float32; half precision needs less, float64 twice as much
    estimate = estimate_memory(shape, graph["senders"], task.n_prompts,
                               max(len(p) for p in task.clean), bytes_per_number,
                               common.ablation, sum(len(p) for p in task.positions),
                               n_groups=len(group_names(task, common.positions)))
    return estimate["total"] - estimate["params"]


METHOD = Method(
    name="acdc",
    description="ACDC (Conmy et al. 2023): test every edge, from the logits back, and remove "
                "those whose removal raises the metric by less than the threshold",
    run=discover,
    returns="kept",
    settings_type=AcdcSettings,
    journal=DecisionLog(),
    extra_memory=extra_memory,
    positions=True,
    citation="Conmy, Mavor-Parker, Lynch, Heimersheim, Garriga-Alonso. Towards Automated "
             "Circuit Discovery for Mechanistic Interpretability. NeurIPS 2023. "
             "arXiv:2304.14997",
)
