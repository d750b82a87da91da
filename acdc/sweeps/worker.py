"""One threshold of a sweep, run wherever a worker is: this process, a local worker process or
a Ray task on another machine.

`run_threshold` runs (or resumes) the threshold's ACDC run as `circuit discover` would, writes
its run directory (circuit.json, circuit.dot/.svg, run.yaml, decisions.jsonl) and evaluates
the circuit with `circuit evaluate`'s `CircuitEvaluator` (`evaluation.json`, every metric the
task supports).

A worker loads the model, tokenises the task and records its clean and corrupted runs once,
for every threshold it is given (`acdc.run.load_shared`, kept in `_CACHE`), and its evaluator
shares those recordings: each run starts from an exact copy of them, so its decisions are
those of an independent `circuit discover` (the tests hold the two to identical files).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from acdc.core.circuit import Circuit, load_circuit
from acdc.core.files import atomic_path, disk_error
from acdc.errors import RunWarning
from acdc.evaluation.evaluate import (
    EVALUATION_JSON,
    EvaluationJob,
    EvaluationOutcome,
    check_task,
    run_metric_check,
    write_evaluation,
)
from acdc.methods.registry import get_method
from acdc.run import (
    CIRCUIT_JSON,
    RUN_YAML,
    Run,
    RunLock,
    SharedInputs,
    execute,
    load_shared,
    run_yaml,
    write_outputs,
    write_run_yaml,
)
from acdc.sweeps.plan import ThresholdJob

Status = Literal["finished", "interrupted"]


@dataclass(frozen=True)
class RunOptions:
    """How a worker runs its thresholds; none of these changes a decision."""

    threads: int = 0  # 0: 1 for small models on a CPU, else PyTorch's default
    render_svg: bool = True


@dataclass(frozen=True)
class ThresholdOutcome:
    """What a worker reports for one threshold. `files` holds the run directory's files when
    the worker wrote them somewhere the sweep's directory is not (a Ray worker)."""

    threshold: float
    status: Status
    n_edges_kept: int
    n_edges_total: int
    seconds: float  # the whole threshold: run, outputs and evaluation
    warnings: tuple[str, ...] = ()
    files: Mapping[str, bytes] = field(default_factory=dict)
    n_edges_decided: int | None = None  # an interrupted search's decisions (None: all)


@dataclass
class _Shared:
    key: tuple[Any, ...]
    inputs: SharedInputs
    evaluator: Any  # CircuitEvaluator over the same recordings


_CACHE: list[_Shared] = []  # the inputs of the last model and task this process ran


def _key(job: ThresholdJob, threads: int) -> tuple[Any, ...]:
    """What the shared inputs depend on: everything recorded but the method's own settings."""
    record = job.settings.record()
    return (record["task"], record["task_file"], record["model"], record["ablation"],
            record["granularity"], record.get("positions"), record["seed"], record["device"],
            record["dtype"],
            replace(job.spec, threshold=0.0), threads)


def _shared(job: ThresholdJob, run: Run, threads: int) -> _Shared:
    """The model, task, recordings and evaluator for `job`, loaded once per process."""
    from acdc.evaluation.faithfulness import CircuitEvaluator

    key = _key(job, threads)
    if _CACHE and _CACHE[0].key == key:
        return _CACHE[0]
    _CACHE.clear()  # one model at a time: a worker never holds two
    inputs = load_shared(run, threads)
    recordings = inputs.recordings
    evaluator = CircuitEvaluator(inputs.model, inputs.task, recordings.graph,
                                 run.settings.common.ablation, None, recordings=recordings)
    _CACHE.append(_Shared(key, inputs, evaluator))
    return _CACHE[0]


def run_threshold(job: ThresholdJob, options: RunOptions,
                  out_dir: Path | None = None) -> ThresholdOutcome:
    """Run, resume or only evaluate `job`'s threshold, in `out_dir` (default: the job's own
    directory; a Ray worker passes a directory of its own and ships the files back).
    KeyboardInterrupt during the search returns an "interrupted" outcome with partial files."""
    started = time.perf_counter()
    directory = job.out_dir if out_dir is None else out_dir
    try:
        directory.mkdir(exist_ok=True)  # the sweep's directory exists; a threshold's is made here
    except OSError as error:
        raise disk_error(directory, error, "cannot create the directory") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunWarning)
        method = get_method(job.settings.method)
        run = Run(job.settings, job.spec, directory, method, RunLock(directory),
                  command=job.command, typed=job.typed)
        with contextlib.closing(run):
            shared = _shared(job, run, options.threads)
            if job.action == "evaluate":  # a circuit at positions: found on this task
                circuit = load_circuit(directory / CIRCUIT_JSON)
                check_task(circuit, shared.inputs.task, str(job.out_dir / CIRCUIT_JSON))
            else:
                circuit = _search(job, run, shared.inputs, options)
            if not circuit.partial:
                _evaluate(job, circuit, shared, directory)
    messages = tuple(str(w.message) for w in caught if issubclass(w.category, RunWarning))
    decided = circuit.results.get("n_edges_decided") if circuit.partial else None
    return ThresholdOutcome(job.threshold, "interrupted" if circuit.partial else "finished",
                            circuit.n_edges_kept, len(circuit.graph.edges),
                            time.perf_counter() - started, messages,
                            n_edges_decided=decided if isinstance(decided, int) else None)


def _search(job: ThresholdJob, run: Run, inputs: SharedInputs, options: RunOptions) -> Circuit:
    """The threshold's run, as `circuit discover` (or `--resume`) makes it."""
    journal = run.method.journal
    if job.action == "resume" and journal is not None:
        state = journal.read(run.out_dir)
        if state.dropped:
            warnings.warn(state.dropped, RunWarning, stacklevel=2)
        run = replace(run, resume_from=state)
    elif journal is not None:
        journal.check_new_run(run.out_dir)
    outcome = execute(run, threads=options.threads, shared=inputs)
    write_outputs(run, outcome, render_svg=options.render_svg)
    if run.out_dir != job.out_dir:  # run.yaml's repeat command names the sweep's directory
        write_run_yaml(run_yaml(replace(run, out_dir=job.out_dir), outcome),
                       run.out_dir / RUN_YAML)
    return outcome.circuit


def _evaluate(job: ThresholdJob, circuit: Circuit, shared: _Shared, directory: Path) -> None:
    """evaluation.json of the circuit, as `circuit evaluate RUN_DIR` writes it."""
    settings = job.settings
    evaluator = shared.evaluator
    passes, started = evaluator.passes, time.perf_counter()
    evaluation = evaluator.evaluate(circuit.kept)
    check = run_metric_check(circuit, evaluation)
    if check is not None and not check.agrees:
        warnings.warn(f"{check.metric} of the circuit at threshold {job.threshold:g} evaluates "
                      f"to {check.evaluated:.6g}, but its circuit.json records "
                      f"{check.recorded:.6g}", RunWarning, stacklevel=2)
    evaluation_job = EvaluationJob(
        circuit_path=job.out_dir / CIRCUIT_JSON, circuit=circuit, spec=job.spec,
        task_file=settings.task_file, model=settings.model, ablation=settings.common.ablation,
        seed=settings.seed, device=settings.device, dtype=settings.dtype, metrics=None,
        out=directory / EVALUATION_JSON, run_yaml=job.out_dir / RUN_YAML, same_as_run=True)
    outcome = EvaluationOutcome(evaluation, None, check, recorded_runs=0,
                                patched_passes=evaluator.passes - passes,
                                seconds=time.perf_counter() - started)
    write_evaluation(evaluation_job, outcome)


# --------------------------------------------------------------------------- remote workers


def run_threshold_elsewhere(job: ThresholdJob, options: RunOptions) -> ThresholdOutcome:
    """`run_threshold` on a machine without the sweep's directory (a Ray worker): in a
    temporary directory seeded with the job's payload (the decision log to resume, or the
    circuit to evaluate); the run directory's files come back in the outcome."""
    with _scratch() as directory:
        for name, data in job.payload.items():
            (directory / name).write_bytes(data)
        outcome = run_threshold(job, options, out_dir=directory)
        files = {p.name: p.read_bytes() for p in sorted(directory.iterdir())
                 if p.is_file() and not p.name.startswith(".")}
    return replace(outcome, files=files)


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="circuit-sweep-") as name:
        directory = Path(name) / "run"
        directory.mkdir()
        yield directory


def land(outcome: ThresholdOutcome, job: ThresholdJob) -> None:
    """Write the files a remote worker sent back into the threshold's directory, each
    atomically, the decision log first (an interrupted landing is resumed from it)."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(outcome.files, key=lambda name: (name != "decisions.jsonl", name)):
        with atomic_path(job.out_dir / name) as temporary:
            temporary.write_bytes(outcome.files[name])
