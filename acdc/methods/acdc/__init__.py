"""ACDC (Conmy et al. 2023) as a discovery method: the registry entry and its run glue.

The search is `search.py`; it evaluates removals through `evaluator.py` (the incremental
engine in `propagation.py`, several candidates at once as `candidates.py` plans them, or the
full recompute). `runlog.py` is its journal: every decision is appended to
`decisions.jsonl` as it is made, so a run resumes after a crash. `memory.py` estimates a run's
memory from the model's shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from acdc.core.circuit import Circuit
from acdc.core.graph import build_graph
from acdc.core.tasks import TaskSpec
from acdc.errors import RunWarning
from acdc.methods.acdc.runlog import (
    DecisionLog,
    LoggedRun,
    RunLog,
    check_resumable,
    make_header,
    task_digest,
)
from acdc.methods.acdc.search import AcdcSettings, Decision, Progress, run_acdc
from acdc.methods.base import Discovery, Method, refuse_unknown_options

OPTIONS = {"threshold", "abs", "reverse_head_order", "engine", "candidates"}


def make_settings(spec: TaskSpec, options: Mapping[str, Any]) -> AcdcSettings:
    """ACDC's settings: the task's threshold (already overridden by --threshold), the options
    given (others take their defaults)."""
    refuse_unknown_options("acdc", options, OPTIONS)
    given = {key: value for key, value in options.items() if key != "threshold"}
    return AcdcSettings(threshold=spec.threshold, **given)


def discover(job: Discovery) -> Circuit:
    """Run ACDC, keeping its decision log in `job.out_dir` (appended to when resuming)."""
    graph = build_graph(job.model.shape.graph_shape(job.common.granularity))
    log: RunLog | None = None
    replay: Sequence[Decision] = ()
    if job.out_dir is not None:
        digest = task_digest(job.task)
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
        circuit = run_acdc(job.model, job.task, job.common, job.settings, on_progress=record,
                           replay=replay, graph=graph)
    finally:
        if log is not None:
            log.close()
    noise, threshold = circuit.results["metric_noise"], job.settings.threshold
    if noise * 10 > abs(threshold):
        dtype = str(job.model.model.cfg.dtype).removeprefix("torch.")
        warnings.warn(f"the metric's rounding noise in {dtype} is {noise:.1e}, within a factor 10 "
                      f"of the threshold {threshold:g}: decisions near it are noise", RunWarning,
                      stacklevel=2)
    return circuit


METHOD = Method(
    name="acdc",
    description="ACDC (Conmy et al. 2023): test every edge, from the logits back, and remove "
                "those whose removal raises the metric by less than the threshold",
    settings_type=AcdcSettings,
    make_settings=make_settings,
    discover=discover,
    journal=DecisionLog(),
)
