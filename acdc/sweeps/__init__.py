"""Threshold sweeps: one full ACDC run per threshold, sharing what the runs have in common.

ACDC's threshold trades the size of the circuit for its faithfulness; a sweep shows the whole
trade (the ACDC paper's ROC curves, faithfulness-by-size plots) and turns ACDC into an edge
ranking (`acdc.evaluation.rank_scores`). `circuit sweep` is this package:

- `grid`: the thresholds (`LO:HI:N` log grids, lists, the paper's grid per task) and the
  run directories' names (`tau-<threshold>`);
- `plan`: the sweep's settings, its directory, what is done and what is left (resuming);
  everything checked before anything is written (`prepare_sweep`, `prepare_resume`), then the
  directory made (`open_sweep`);
- `capacity`: how many local worker processes the machine's cores and memory hold;
- `worker`: one threshold, run or resumed like `circuit discover` and evaluated like
  `circuit evaluate`, in any process; a worker loads the model, tokenises the task and records
  the clean and corrupted runs once for all the thresholds it runs;
- `backends`: where thresholds run (this process, local worker processes, Ray);
- `results`: `sweep.json` and the plots, read back from the run directories;
- `driver`: runs a plan on a backend and writes the results.

A sweep directory:

    DIR/sweep.json              settings, per-threshold results, rank scores
    DIR/sweep.svg, sweep.png    edges kept by threshold; f(C) by edges kept
    DIR/tau-0.0001/             an ordinary run directory (circuit.json, circuit.dot/.svg,
    DIR/tau-0.000178/ ...       run.yaml, decisions.jsonl) plus evaluation.json

>>> plan = start_sweep("demo", thresholds="1e-3:1e-1:5", out=Path("runs/sweep"))  # doctest: +SKIP
>>> outcome = run_sweep(plan)  # doctest: +SKIP
>>> [run["n_edges_kept"] for run in outcome.record["runs"]]  # doctest: +SKIP
"""

from acdc.sweeps.backends import RayConnection, connect_ray
from acdc.sweeps.capacity import Workers, choose_workers
from acdc.sweeps.driver import SweepOutcome, run_sweep
from acdc.sweeps.grid import DEFAULT_GRID, Grid, GridError, default_grid, parse_grid, run_dir_name
from acdc.sweeps.plan import (
    SweepConflict,
    SweepPlan,
    SweepRequest,
    open_sweep,
    prepare_resume,
    prepare_sweep,
    resume_sweep,
    start_sweep,
)
from acdc.sweeps.worker import RunOptions

__all__ = ["DEFAULT_GRID", "Grid", "GridError", "RayConnection", "RunOptions", "SweepConflict",
           "SweepOutcome", "SweepPlan", "SweepRequest", "Workers", "choose_workers",
           "connect_ray", "default_grid", "open_sweep", "parse_grid", "prepare_resume",
           "prepare_sweep", "resume_sweep", "run_dir_name", "run_sweep", "start_sweep"]
