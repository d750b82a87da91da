"""Running a planned sweep: hand its thresholds to a backend, keep sweep.json up to date, plot.

`run_sweep(plan, ...)` runs every job left on the chosen backend (`acdc.sweeps.backends`),
rewrites `sweep.json` as each threshold finishes (a killed sweep leaves a file that says what
is done) and, at the end, writes `sweep.json` with the rank scores once every threshold is
finished, and the plots. It returns a `SweepOutcome`; the CLI prints from it.

A sweep that fails or is interrupted before any of its thresholds wrote a file takes back what
it made (`SweepPlan.discard`: its sweep.json and empty directories), so that nothing but the
error remains; otherwise what is done stays, for `circuit sweep --resume`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acdc.core.configs import check_threads
from acdc.errors import RunWarning
from acdc.sweeps.backends import (
    Failure,
    RayConnection,
    run_here,
    run_in_processes,
    run_on_ray,
)
from acdc.sweeps.capacity import Workers, choose_workers
from acdc.sweeps.plan import SweepPlan, ThresholdJob
from acdc.sweeps.results import PLOT_STEM, SweepRecords, plot_sweep
from acdc.sweeps.worker import RunOptions, ThresholdOutcome

OnThreshold = Callable[[ThresholdJob, ThresholdOutcome], None]


@dataclass(frozen=True)
class SweepOutcome:
    """A sweep as it stands after this invocation: sweep.json's contents, the thresholds this
    invocation could not finish, the files written."""

    record: dict[str, Any]
    failures: tuple[Failure, ...]
    written: tuple[Path, ...]

    @property
    def finished(self) -> bool:
        return bool(self.record["finished"])


def run_sweep(plan: SweepPlan, options: RunOptions | None = None, jobs: int | Workers = 1,
              ray: str | RayConnection | None = None,
              on_threshold: OnThreshold | None = None) -> SweepOutcome:
    """Run the plan's jobs here (`jobs` 1), on `jobs` worker processes (at most as many as the
    machine holds: `acdc.sweeps.capacity`; a `Workers` is taken as chosen), or on the Ray
    cluster at `ray` (an address, or a connection made with `connect_ray`); then write
    sweep.json and the plots. KeyboardInterrupt stops it (sweep.json, rewritten as each
    threshold finishes, holds the finished ones); a failed or interrupted sweep that leaves no
    threshold's file is discarded (`plan.discarded`)."""
    options = options or RunOptions()
    records: list[SweepRecords] = []  # made in the try below: it reads every finished run

    def finished_one(job: ThresholdJob, outcome: ThresholdOutcome) -> None:
        records[0].refresh(job.threshold)
        records[0].write()
        if on_threshold is not None:
            on_threshold(job, outcome)

    try:
        n = jobs.n if isinstance(jobs, Workers) else jobs
        if ray is None:
            check_threads(options.threads)
            if not isinstance(jobs, Workers):
                chosen = choose_workers(jobs, len(plan.jobs), options.threads, plan.settings)
                if chosen.note is not None:
                    warnings.warn(chosen.note, RunWarning, stacklevel=2)
                n = chosen.n
        records.append(SweepRecords(plan.settings, plan.out_dir))
        if not plan.jobs:
            failures: list[Failure] = []
        elif ray is not None:
            failures = run_on_ray(plan.jobs, options, ray, finished_one)
        elif n > 1 and len(plan.jobs) > 1:
            failures = run_in_processes(plan.jobs, options, n, finished_one)
        else:
            failures = run_here(plan.jobs, options, finished_one)
    except BaseException:
        # sweep.json already holds every threshold this invocation finished (`finished_one`);
        # a failure or an interrupt finishes none, so the file is left as it is
        plan.discarded = plan.discard()
        raise
    for failure in failures:
        records[0].refresh(failure.threshold)
    path, record = records[0].write()
    written = [path, *plot_sweep(record, plan.out_dir / PLOT_STEM, sweep_title(record))]
    return SweepOutcome(record, tuple(failures), tuple(written))


def sweep_title(record: dict[str, Any]) -> str:
    """`task ioi, model ioi: ACDC sweep (kl, corrupt ablation), 13 thresholds`."""
    model = Path(str(record.get("model"))).name or record.get("model")
    return (f"task {record.get('task')}, model {model}: ACDC sweep ({record.get('metric')}, "
            f"{record.get('ablation')} ablation), {len(record['runs'])} thresholds")
