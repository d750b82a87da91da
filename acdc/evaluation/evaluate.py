"""`circuit evaluate`: from a run directory or a circuit file to `evaluation.json`.

Three calls, as for a run (`acdc.run`), each usable from Python as from the CLI:

1. `prepare_evaluation(target, ...)`: find the circuit (`target` is a run directory or a
   `circuit.json`), read the run's `run.yaml` beside it when there is one, resolve every
   setting and read the task; nothing heavy is loaded, so mistakes are reported at once.
   Each setting comes from the option given, else the run's `run.yaml` (task_file, model,
   ablation, seed, device, dtype), else the circuit file's settings (model, task, ablation),
   else the task file. The graph's granularity is the circuit's own, and so are its
   position groups: a circuit at positions is applied at its groups, on a task whose tokens
   fall into them as on the task it was found on (`check_task`, once the task is tokenised).
2. `run_evaluation(job, curve=...)`: load the model, tokenise the task, evaluate the circuit
   (`acdc.evaluation.faithfulness`), and with `curve` its faithfulness curve over the edges
   ranked by the circuit's scores (a node circuit's: the top heads and MLPs by their scores,
   every edge among them).
3. `write_evaluation(job, outcome)`: `evaluation.json` (format `evaluation/1`) and, with a
   curve, its plot as SVG and PNG (`<out stem>-curve.svg`/`.png`).

When the task, model, ablation and seed are the run's, the evaluated value of the run's own
metric must equal `metric_circuit` in `circuit.json` (to float rounding: ten times the run's
measured `metric_noise`, or 1e-5 relative); `evaluation.json` records both, and a mismatch
(an edited task file, another model under the same path) is reported as a warning.

>>> job = prepare_evaluation(Path("runs/demo"))  # doctest: +SKIP
>>> outcome = run_evaluation(job, curve=True)  # doctest: +SKIP
>>> write_evaluation(job, outcome)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acdc.core.circuit import Circuit, circuit_path, load_circuit
from acdc.core.configs import check_threads
from acdc.core.files import check_output, new_directories, read_yaml, write_json_atomic
from acdc.core.tasks.reading import read_task
from acdc.core.tasks.spec import TaskSpec
from acdc.errors import AcdcError, RunWarning, short_repr
from acdc.evaluation.measures import (
    MIB_FRACTIONS,
    Evaluation,
    FaithfulnessCurve,
    ranking_from_scores,
)
from acdc.evaluation.plots import FORMATS as PLOT_FORMATS
from acdc.run import DTYPES, RUN_YAML, cpu_threads, precision_warning, task_file

if TYPE_CHECKING:
    from acdc.core.tasks.values import Task

EVALUATION_JSON = "evaluation.json"
FORMAT = "evaluation/1"
ACDC_RANKING = "ACDC scores (the metric change when an edge was tested), untested edges last"
SWEEP_RANKING = "rank scores (the largest threshold that keeps an edge)"
NODE_RANKING = "node scores (the top heads and MLPs by |score|, every edge among them)"


def own_ranking(circuit: Circuit) -> str:
    """What a circuit's own scores rank, in words (a curve's ranking)."""
    if circuit.level == "node":
        return f"{circuit.settings.get('method', 'the')} {NODE_RANKING}"
    method = circuit.settings.get("method", "acdc")
    return ACDC_RANKING if method == "acdc" else f"{method} scores, by |score|"


@dataclass(frozen=True)
class EvaluationJob:
    """An evaluation ready to run: the circuit, the resolved settings and where results go.
    `same_as_run` is True when the task, model, ablation and seed are the run's own."""

    circuit_path: Path
    circuit: Circuit
    spec: TaskSpec
    task_file: str
    model: str
    ablation: str
    seed: int
    device: str
    dtype: str
    metrics: tuple[str, ...] | None  # None: every metric the task supports
    out: Path
    run_yaml: Path | None
    same_as_run: bool
    curve: bool = False
    # The curve's ranking: (edge index, score) for every edge, and what it is; None: the
    # circuit's own scores.
    ranking: tuple[tuple[int, float | None], ...] | None = None
    ranking_name: str = ACDC_RANKING


@dataclass(frozen=True)
class RunMetricCheck:
    """The run's own metric (minimised, as circuit.json holds it): recorded and evaluated."""

    metric: str
    recorded: float
    evaluated: float
    tolerance: float

    @property
    def agrees(self) -> bool:
        return abs(self.evaluated - self.recorded) <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "metric_circuit": self.recorded,
                "evaluated": self.evaluated, "difference": self.evaluated - self.recorded,
                "tolerance": self.tolerance, "agrees": self.agrees}


@dataclass(frozen=True)
class EvaluationOutcome:
    evaluation: Evaluation
    curve: FaithfulnessCurve | None
    run_check: RunMetricCheck | None
    recorded_runs: int  # ordinary forward passes recorded (clean, and corrupt)
    patched_passes: int
    seconds: float  # evaluating, after the model was loaded and the task tokenised


# --------------------------------------------------------------------------- preparing


def find_circuit(target: Path) -> tuple[Path, Path | None]:
    """The circuit file a target names, and the run's run.yaml beside it (None if absent)."""
    path = circuit_path(target)
    run_yaml = path.parent / RUN_YAML
    return path, run_yaml if run_yaml.is_file() else None


def read_run_yaml(path: Path) -> dict[str, Any]:
    """The settings of a run's run.yaml that an evaluation reuses, each checked (the file is
    read through the bounded YAML reader: one line for a damaged or hostile file)."""
    data = read_yaml(path, "a run.yaml is the mapping `circuit discover` writes; pass --task "
                           "and --model instead")
    if not isinstance(data, dict):
        raise AcdcError(f"{path}: expected the mapping `circuit discover` writes")
    record = {}
    for key, kind in (("task", str), ("task_file", str), ("model", str), ("ablation", str),
                      ("device", str), ("dtype", str), ("seed", int)):
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise AcdcError(f"{path}: {key} is {short_repr(value)}, expected "
                            f"{'a whole number' if kind is int else 'text'}; pass "
                            f"--{key.removesuffix('_file')} instead")
        record[key] = value
    return record


def prepare_evaluation(target: Path, *, task: str | None = None, model: str | None = None,
                       metrics: Sequence[str] | None = None, ablation: str | None = None,
                       seed: int | None = None, device: str | None = None,
                       dtype: str | None = None, out: Path | None = None,
                       curve: bool = False, ranking: Path | None = None) -> EvaluationJob:
    """Resolve an evaluation of the circuit `target` names (see the module docstring).
    `ranking` is a sweep directory whose rank scores rank the edges of the curve (implies
    `curve`; `acdc.evaluation.rank_scores`)."""
    from acdc.core.settings import ABLATIONS, METRICS

    circuit_path, run_yaml = find_circuit(target)
    circuit = load_circuit(circuit_path)
    record = read_run_yaml(run_yaml) if run_yaml is not None else {}
    settings = circuit.settings
    task_ref = task or record.get("task_file") or record.get("task") or settings.get("task")
    if not isinstance(task_ref, str) or not task_ref:
        raise AcdcError(f"{circuit_path}: names no task and there is no {RUN_YAML} beside it; "
                        f"pass --task")
    spec = read_task(task_ref)
    if circuit.graph.positional:  # a task without labels: refused before the model loads
        from acdc.core.positions import check_spec

        try:
            check_spec(spec, circuit.graph.shape.positions)
        except AcdcError:
            raise AcdcError(f"{circuit_path}: is a circuit at the labels of its task "
                            f"({', '.join(circuit.graph.groups)}), but task {spec.name} labels "
                            f"no positions; evaluate it on a task with those labels (the task "
                            f"it was found on: {settings.get('task', 'see its run.yaml')})"
                            ) from None
    model = model or record.get("model") or settings.get("model") or spec.model
    if not isinstance(model, str) or not model:
        raise AcdcError(f"{circuit_path}: no model is named by the circuit, its run or the task; "
                        f"pass --model")
    ablation = ablation or record.get("ablation") or settings.get("ablation") or spec.ablation
    if ablation not in ABLATIONS:
        raise AcdcError(f"unknown ablation {ablation!r}: use one of {', '.join(ABLATIONS)}")
    if seed is None:
        seed = record.get("seed", spec.seed) if task is None else spec.seed
    spec = spec.with_overrides(model=model, ablation=ablation, seed=seed)
    device = device or record.get("device") or "cpu"
    dtype = dtype or record.get("dtype") or "float32"
    if dtype not in DTYPES:
        raise AcdcError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if metrics is not None:
        metrics = tuple(dict.fromkeys(metrics))
        if not metrics:
            raise AcdcError(f"--metric: give one or more of {', '.join(METRICS)}")
        for name in metrics:
            if name not in METRICS:
                raise AcdcError(f"unknown metric {name!r}: use one of {', '.join(METRICS)}")
    ranked = None
    if ranking is not None:
        from acdc.evaluation.compare import check_same_graph
        from acdc.evaluation.rank_scores import sweep_ranking

        graph, scores = sweep_ranking(ranking)
        check_same_graph(circuit.graph, graph, str(circuit_path), f"sweep {ranking}")
        ranked, curve = tuple(scores), True
    elif curve and circuit.level == "node" and not any(
            s is not None for s in (circuit.node_scores or {}).values()):
        raise AcdcError(f"{circuit_path}: no head or MLP has a score, so there is no ranking to "
                        f"draw a curve from; leave out --curve")
    elif curve and circuit.level == "edge" and all(score is None for score in circuit.scores):
        raise AcdcError(f"{circuit_path}: no edge has a score, so there is no ranking to draw a "
                        f"curve from; leave out --curve")
    if out is None:  # a MIB file exported into a run directory keeps the run's own results
        out = circuit_path.parent / (EVALUATION_JSON if circuit.settings.get("method") != "mib"
                                     else circuit_path.name.removesuffix(".json")
                                     + f".{EVALUATION_JSON}")
    inputs = [circuit_path, *([run_yaml] if run_yaml is not None else []), Path(spec.source)]
    out = check_output(out, "--out", inputs)
    if curve:
        stem = curve_stem(out)
        for suffix in PLOT_FORMATS:
            check_output(stem.with_name(f"{stem.name}.{suffix}"), "--out (its curve plot)", inputs)
    same = task is None and ablation == settings.get("ablation", ablation) and (
        model == settings.get("model", model)) and seed == record.get("seed", seed)
    return EvaluationJob(circuit_path=circuit_path, circuit=circuit, spec=spec,
                         task_file=task_file(spec), model=model, ablation=ablation, seed=seed,
                         device=device, dtype=dtype, metrics=metrics, out=out,
                         run_yaml=run_yaml, same_as_run=same, curve=curve, ranking=ranked,
                         ranking_name=own_ranking(circuit) if ranked is None else
                         f"{SWEEP_RANKING} of {ranking}")


# --------------------------------------------------------------------------- running


def run_evaluation(job: EvaluationJob, threads: int = 0) -> EvaluationOutcome:
    """Load the model, tokenise the task, evaluate the circuit (and its curve)."""
    import torch

    from acdc.core.loading import load_model
    from acdc.core.tasks.resolving import resolve_task
    from acdc.evaluation.faithfulness import CircuitEvaluator, check_graph_fits

    loaded = load_model(job.model, device=job.device, dtype=job.dtype)
    check_graph_fits(job.circuit.graph, loaded, str(job.circuit_path))
    task = resolve_task(job.spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)
    check_task(job.circuit, task, str(job.circuit_path))
    warning = precision_warning(loaded.dtype, job.device)
    if warning:
        warnings.warn(warning, RunWarning, stacklevel=2)
    chosen = check_threads(threads) or cpu_threads(loaded.shape, job.device)
    if chosen:
        torch.set_num_threads(chosen)
    start = time.perf_counter()
    evaluator = CircuitEvaluator(loaded, task, job.circuit.graph, job.ablation, job.metrics)
    evaluation = evaluator.evaluate(job.circuit.kept)
    curve = None
    if job.curve and job.ranking is None and job.circuit.level == "node":
        curve = evaluator.curve(node_scores=job.circuit.node_scores)
    elif job.curve:
        ranking = (job.ranking if job.ranking is not None
                   else ranking_from_scores(job.circuit.scores))
        curve = evaluator.curve(ranking, MIB_FRACTIONS)
    seconds = time.perf_counter() - start
    check = run_metric_check(job.circuit, evaluation)
    if check is not None and not check.agrees and job.same_as_run:
        warnings.warn(f"{check.metric} of the circuit evaluates to {check.evaluated:.6g}, but "
                      f"{job.circuit_path} records metric_circuit {check.recorded:.6g}: the task "
                      f"file, its seed or the model differ from the run's", RunWarning,
                      stacklevel=2)
    return EvaluationOutcome(evaluation, curve, check,
                             recorded_runs=2 if job.ablation == "corrupt" else 1,
                             patched_passes=evaluator.passes, seconds=seconds)


def check_task(circuit: Circuit, task: Task, source: str) -> None:
    """A circuit at positions applies to a task whose tokens fall into its groups as on the
    task it was found on (`acdc.core.positions.check_assignment`); a blind one to any."""
    graph = circuit.graph
    if graph.positional:
        from acdc.core.positions import check_assignment

        check_assignment(task, graph.groups, graph.shape.positions,
                         circuit.settings.get("positions_sha256"), source)


def run_metric_check(circuit: Circuit, evaluation: Evaluation) -> RunMetricCheck | None:
    """The run's own metric as recorded and as evaluated; None when it was not evaluated or
    the circuit records none."""
    name = circuit.settings.get("metric")
    recorded = circuit.results.get("metric_circuit")
    if (not isinstance(name, str) or name not in evaluation.metrics
            or not isinstance(recorded, (int, float))):
        return None
    metric = evaluation.metrics[name]
    noise = circuit.results.get("metric_noise")
    noise = float(noise) if isinstance(noise, (int, float)) and math.isfinite(noise) else 0.0
    tolerance = max(10 * noise, 1e-5 * max(1.0, abs(float(recorded))))
    return RunMetricCheck(name, float(recorded), metric.minimised(metric.circuit.mean), tolerance)


# --------------------------------------------------------------------------- writing


def evaluation_record(job: EvaluationJob, outcome: EvaluationOutcome) -> dict[str, Any]:
    """The contents of evaluation.json."""
    circuit = job.circuit
    curve = outcome.curve
    return {
        "format": FORMAT,
        "circuit": str(job.circuit_path),
        "task": job.spec.name,
        "task_file": job.task_file,
        "model": job.model,
        "ablation": job.ablation,
        "granularity": circuit.graph.granularity,
        # only for a circuit at positions, so blind evaluations' files are unchanged
        **({"positions": circuit.graph.shape.positions, "groups": list(circuit.graph.groups)}
           if circuit.graph.positional else {}),
        "seed": job.seed,
        "device": job.device,
        "dtype": job.dtype,
        "run_metric": outcome.run_check.to_json() if outcome.run_check is not None else None,
        "level": circuit.level,
        **node_counts(circuit),
        **outcome.evaluation.to_json(),
        "curve": None if curve is None else {"ranking": job.ranking_name, **curve.to_json()},
        "cost": {"recorded_runs": outcome.recorded_runs,
                 "patched_passes": outcome.patched_passes, "seconds": outcome.seconds},
    }


def node_counts(circuit: Circuit) -> dict[str, int]:
    """The heads and MLPs a circuit uses (touching a kept edge) and how many the graph has."""
    from acdc.core.selection import kept_nodes, scored_nodes

    return {"n_nodes_kept": len(kept_nodes(circuit.graph, circuit.kept)),
            "n_nodes_total": len(scored_nodes(circuit.graph))}


def curve_stem(out: Path) -> Path:
    """Where the curve's plots go: `<out stem>-curve` beside the JSON file."""
    return out.with_name(f"{out.stem}-curve")


def write_evaluation(job: EvaluationJob, outcome: EvaluationOutcome) -> list[Path]:
    """Write evaluation.json and, with a curve, its SVG and PNG plots; return the files."""
    from acdc.evaluation.plots import plot_curve

    with new_directories(job.out.parent):
        write_json_atomic(job.out, _strict(evaluation_record(job, outcome)))
    written = [job.out]
    if outcome.curve is not None:
        title = f"task {job.spec.name}, model {_short(job.model)}: faithfulness by circuit size"
        written += plot_curve(outcome.curve, curve_stem(job.out), title, job.ranking_name)
    return written


def _strict(value: Any) -> Any:
    """Strict JSON: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _short(model: str) -> str:
    """A model as a title names it: a directory's last part, or the name."""
    return Path(model).name or model
