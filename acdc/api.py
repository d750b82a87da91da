"""One call per step, for notebooks and scripts: load, discover, evaluate, sweep, compare,
export, report.

Every function takes what a notebook has at hand: a model as a loaded `LoadedModel` or as what
`--model` names (a checkpoint directory, a Hugging Face directory, a TransformerLens name); a
task as a tokenised `Task`, a `TaskSpec`, a bundled name or a YAML file, a task dictionary, or
just a list of prompts (`[{"clean": ..., "corrupt": ..., "answer": ..., "wrong": ...}]`).
They return values (a `Circuit`, which draws itself in Jupyter; an `Evaluation`, which shows
itself as a table; plain data) and write files only when asked (`out=`, `path=`). Nothing
holds a lock or a file open: nothing needs closing (the file pipeline of `acdc.run` holds its
run directory's lock; use it as a context manager: `with start_run(...) as run:`).

Examples:
    >>> import acdc
    >>> model = acdc.load_model("models/demo")                          # doctest: +SKIP
    >>> circuit = acdc.discover(model, "demo", threshold=0.03)          # doctest: +SKIP
    >>> circuit                                                         # doctest: +SKIP
    >>> acdc.evaluate(circuit, model, "demo")                           # doctest: +SKIP
    >>> ig = acdc.discover(model, "demo", method="eap-ig", top_n=30)    # doctest: +SKIP
    >>> acdc.compare(circuit, ig)                                       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acdc.core.circuit import Circuit, load_circuit, write_circuit
from acdc.core.files import check_output, new_directories, write_text_atomic
from acdc.errors import AcdcError
from acdc.exports import dot  # noqa: F401  (a Circuit draws itself inline once this is loaded)

if TYPE_CHECKING:
    from acdc.core.loading import LoadedModel
    from acdc.core.tasks.spec import TaskSpec
    from acdc.core.tasks.values import Task
    from acdc.evaluation.compare import CircuitComparison, Confusion
    from acdc.evaluation.measures import Evaluation, FaithfulnessCurve

# The methods whose search starts from a copy of the task's recorded runs: `discover` records
# them first and keeps them, so that `evaluate` of the circuit in this process reuses them
# (`acdc.evaluation.reuse`).
SEARCHES_FROM_RECORDINGS = ("acdc", "exact")


def load_model(model: LoadedModel | str | Path, device: str = "cpu",
               dtype: str = "float32") -> LoadedModel:
    """A model ready for every method: `model` as `--model` names it (or already loaded)."""
    from acdc.core.loading import LoadedModel
    from acdc.core.loading import load_model as load

    if isinstance(model, LoadedModel):
        return model
    return load(str(model), device=device, dtype=dtype)


def task_spec(task: Any) -> TaskSpec:
    """A `TaskSpec` from a bundled name, a YAML file, a task dictionary (the keys of a task
    file) or a list of prompts; checked as a task file is."""
    from acdc.core.tasks.reading import read_task
    from acdc.core.tasks.spec import TaskSpec

    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, (str, Path)):
        return read_task(str(task))
    if isinstance(task, Mapping):
        return TaskSpec.from_dict(dict(task), source="<task dictionary>")
    if isinstance(task, Sequence):
        return TaskSpec.from_dict({"prompts": list(task)}, source="<prompts>")
    raise AcdcError(f"a task is a bundled name, a YAML file, a task dictionary or a list of "
                    f"prompts, not {type(task).__name__}")


def load_task(task: Any, model: LoadedModel | str | Path, **overrides: Any) -> Task:
    """`task` tokenised for `model` (see `task_spec`); `overrides` replace the task file's
    `metric`, `threshold`, `ablation`, `seed` as the command line's options do."""
    from acdc.core.tasks.resolving import resolve_task
    from acdc.core.tasks.values import Task

    if isinstance(task, Task):
        return task
    loaded = load_model(model)
    spec = task_spec(task).with_overrides(**overrides)
    return resolve_task(spec, loaded.tokenizer, loaded.shape.d_vocab, loaded.shape.n_ctx)


def discover(model: LoadedModel | str | Path, task: Any, method: str = "acdc", *,
             metric: str | None = None, ablation: str | None = None, granularity: str = "qkv",
             positions: str = "none", seed: int | None = None, out: str | Path | None = None,
             **options: Any) -> Circuit:
    """Run a discovery method and return its `Circuit` (drawn inline in Jupyter).

    `options` are the method's own and the selection rule, named as on the command line with
    underscores: `threshold` (ACDC's tau, or a ranking method's score threshold), `top_n`,
    `edges_fraction`, `ig_steps`, ... (`circuit methods` lists each method's). Defaults come
    from the task as for `circuit discover`. `positions` "labels" or "all" finds a circuit at
    positions (every edge once per position group; README "Circuits at positions"). With
    `out`, the circuit is also written there (`circuit.json`, `circuit.svg`).

    Examples:
        >>> acdc.discover("models/ioi", "ioi", method="eap-ig", metric="logit_diff",
        ...               top_n=50)  # doctest: +SKIP
    """
    import torch

    from acdc.core.selection import RULES
    from acdc.core.settings import CommonSettings
    from acdc.methods.base import check_positions, make_selection, make_settings, run_method
    from acdc.methods.registry import get_method

    chosen = get_method(method)
    loaded = load_model(model)
    options = dict(options)
    rules = {rule: options.pop(rule, None) for rule in RULES} if chosen.ranks else {}
    threshold = options.get("threshold", rules.get("threshold"))
    tokenised = _task_with(task, loaded, metric=metric, ablation=ablation, seed=seed,
                           threshold=threshold)
    common = CommonSettings(metric=tokenised.metric,
                            ablation=tokenised.ablation,  # type: ignore[arg-type]
                            granularity=granularity,  # type: ignore[arg-type]
                            positions=positions)  # type: ignore[arg-type]
    common.validate()
    settings = make_settings(chosen, tokenised, options)
    if chosen.check is not None:
        chosen.check(settings, common)
    check_positions(chosen, common)
    selection = make_selection(chosen, tokenised, rules)
    recordings = None
    if chosen.name in SEARCHES_FROM_RECORDINGS:  # kept for evaluating the circuit (`evaluate`)
        from acdc.core.graph import build_graph
        from acdc.core.positions import positional_shape
        from acdc.core.recordings import record
        from acdc.evaluation.reuse import remember

        graph = build_graph(positional_shape(loaded.shape.graph_shape(granularity), tokenised,
                                             positions))
        recordings = record(loaded, tokenised, graph, common.ablation)
        remember(loaded, tokenised, recordings)
    torch.manual_seed(tokenised.seed)
    circuit = run_method(chosen, loaded, tokenised, common, settings, selection,
                         seed=tokenised.seed, recordings=recordings)
    if out is not None:
        save(circuit, out)
    return circuit


def _task_with(task: Any, model: LoadedModel, **overrides: Any) -> Task:
    """`task` tokenised for `model`, with the overrides given (None: the task's own)."""
    import dataclasses

    from acdc.core.tasks.values import Task

    if not isinstance(task, Task):
        return load_task(task, model, **overrides)
    given = {key: value for key, value in overrides.items() if value is not None}
    if not given:
        return task
    task_spec({"prompts": [{"clean": [0, 1], "corrupt": [0, 2], "answer": 1, "wrong": 2}],
               **given})  # the values checked as a task file's
    return dataclasses.replace(task, **given)


def save(circuit: Circuit, out: str | Path, draw: bool = True) -> list[Path]:
    """Write `circuit.json` (and `circuit.svg` when Graphviz is installed, else
    `circuit.dot`) into the directory `out`, which must not hold a circuit yet; return the
    files written."""
    from acdc.exports.dot import circuit_title, render, to_dot

    directory = Path(out)
    if (directory / "circuit.json").exists():
        raise AcdcError(f"{directory}: holds a circuit.json already; choose another directory")
    with new_directories(directory):
        written = [write_circuit(circuit, directory / "circuit.json")]
        if draw:
            source = to_dot(circuit, title=circuit_title(circuit))
            written.append(render(source, directory / "circuit.svg", "svg"))
    return written


@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate` returns: the circuit's metrics (`evaluation`) and, when asked, its
    faithfulness curve (`curve`); shown as a table in Jupyter."""

    evaluation: Evaluation
    curve: FaithfulnessCurve | None = None

    def _repr_html_(self) -> str:
        return self.evaluation._repr_html_()

    def faithfulness(self, metric: str) -> float | None:
        """f(C) of one metric."""
        return self.evaluation.metrics[metric].faithfulness


def evaluate(circuit: Circuit | str | Path, model: LoadedModel | str | Path, task: Any, *,
             ablation: str | None = None, metrics: Sequence[str] | None = None,
             curve: bool = False) -> EvaluationResult:
    """The circuit's faithfulness and its complement for every metric the task supports (or
    `metrics`), and with `curve` its faithfulness curve over its own scores; `circuit` a value
    or a file (`circuit.json`, a MIB file, a run directory). A circuit at positions is applied
    at its groups; the task's tokens must fall into them as on the task it was found on (its
    `positions_sha256`), else one `TaskError` line.

    A circuit found in this process by `discover` (ACDC, exact) or `sweep` on the same
    `LoadedModel` and task prompts is evaluated over the runs its search recorded, with one
    evaluator for all of them (`acdc.evaluation.reuse`): each circuit then costs its two
    patched passes (circuit and complement) only."""
    from acdc.core.circuit import circuit_path
    from acdc.evaluation.evaluate import check_task
    from acdc.evaluation.measures import MIB_FRACTIONS, ranking_from_scores
    from acdc.evaluation.reuse import evaluator_for

    source = "the circuit"
    if not isinstance(circuit, Circuit):
        path = circuit_path(circuit)
        circuit, source = load_circuit(path), str(path)
    loaded = load_model(model)
    tokenised = load_task(task, loaded)
    check_task(circuit, tokenised, source)
    chosen = ablation or circuit.settings.get("ablation") or tokenised.ablation
    evaluator = evaluator_for(loaded, tokenised, circuit.graph, chosen, metrics)
    result = evaluator.evaluate(circuit.kept)
    drawn = None
    if curve:
        drawn = (evaluator.curve(node_scores=circuit.node_scores, fractions=MIB_FRACTIONS)
                 if circuit.node_scores is not None
                 else evaluator.curve(ranking_from_scores(circuit.scores), MIB_FRACTIONS))
    return EvaluationResult(result, drawn)


@dataclass(frozen=True)
class SweepResult:
    """ACDC at every threshold of a grid: the circuits by threshold, and every edge's rank
    score (the largest threshold whose circuit keeps it; `inf` when all do)."""

    circuits: Mapping[float, Circuit]
    rank_scores: Sequence[float | None]


def sweep(model: LoadedModel | str | Path, task: Any, thresholds: Sequence[float] | str, *,
          metric: str | None = None, ablation: str | None = None, granularity: str = "qkv",
          positions: str = "none", **options: Any) -> SweepResult:
    """ACDC at every threshold (a list, or a grid spec such as `"1e-4:1e-1:13"`), the model
    and the task's recorded runs shared by every search (as `circuit sweep` does), in
    memory; `positions` "labels" or "all" sweeps circuits at positions."""
    from acdc.core.graph import build_graph
    from acdc.core.positions import positional_shape
    from acdc.core.recordings import record
    from acdc.core.settings import CommonSettings
    from acdc.evaluation.rank_scores import rank_scores
    from acdc.evaluation.reuse import remember
    from acdc.methods.acdc.settings import AcdcSettings
    from acdc.methods.base import run_method
    from acdc.methods.registry import get_method
    from acdc.sweeps.grid import parse_grid

    grid = parse_grid(thresholds).thresholds if isinstance(thresholds, str) else tuple(
        float(t) for t in thresholds)
    if not grid:
        raise AcdcError("give at least one threshold")
    loaded = load_model(model)
    tokenised = _task_with(task, loaded, metric=metric, ablation=ablation)
    common = CommonSettings(metric=tokenised.metric,
                            ablation=tokenised.ablation,  # type: ignore[arg-type]
                            granularity=granularity,  # type: ignore[arg-type]
                            positions=positions)  # type: ignore[arg-type]
    common.validate()
    graph = build_graph(positional_shape(loaded.shape.graph_shape(granularity), tokenised,
                                         positions))
    shared = record(loaded, tokenised, graph, common.ablation)
    remember(loaded, tokenised, shared)  # for `evaluate` of its circuits
    circuits = {t: run_method(get_method("acdc"), loaded, tokenised, common,
                              AcdcSettings(threshold=t, **options), graph=graph,
                              recordings=shared, seed=tokenised.seed) for t in grid}
    ranks = rank_scores(list(circuits), [c.kept for c in circuits.values()])
    return SweepResult(circuits, ranks)


@dataclass(frozen=True)
class Comparison:
    """What `compare` returns: two circuits edge by edge and node by node (`pair`; at
    positions also per group, `pair.groups`), and each circuit against the reference
    (`scores`: TPR, FPR, precision per level; at positions `group_scores`, per group and
    level). `note` says when circuits at positions were read position-blind."""

    pair: CircuitComparison | None
    scores: Mapping[str, Mapping[str, Confusion]]
    group_scores: Mapping[str, Mapping[str, Mapping[str, Confusion]]] = field(
        default_factory=dict)
    note: str | None = None

    def _repr_html_(self) -> str:
        import html

        rows = []
        if self.pair is not None:
            for level in ("edges", "nodes"):
                part = getattr(self.pair, level)
                jaccard = "-" if part.jaccard is None else f"{part.jaccard:.3f}"
                rows.append(f"<tr><td>{level}</td><td>{len(part.both)}</td><td>"
                            f"{len(part.only_a)}</td><td>{len(part.only_b)}</td>"
                            f"<td>{jaccard}</td></tr>")
        table = ("<table><tr><th></th><th>both</th><th>only A</th><th>only B</th>"
                 "<th>Jaccard</th></tr>" + "".join(rows) + "</table>") if rows else ""
        lines = []
        named = list(self.scores.items())
        named += [(f"{name} @{group}", levels) for name, groups in self.group_scores.items()
                  for group, levels in groups.items()]
        for name, levels in named:
            for level, counts in levels.items():
                lines.append(f"<tr><td>{html.escape(name)}</td><td>{level}</td>"
                             f"<td>{_fmt(counts.tpr)}</td><td>{_fmt(counts.fpr)}</td>"
                             f"<td>{_fmt(counts.precision)}</td></tr>")
        scores = ("<table><tr><th></th><th>level</th><th>TPR</th><th>FPR</th>"
                  "<th>precision</th></tr>" + "".join(lines) + "</table>") if lines else ""
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return note + table + scores


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def compare(a: Circuit | str | Path, b: Circuit | str | Path | None = None, *,
            reference: str | None = None) -> Comparison:
    """Two circuits (edges and nodes in both, only in one, Jaccard) and each against a
    `reference` (a canonical circuit's name, a circuit file or an edge list). Circuits at the
    same position groups compare at each group too; a circuit at positions meeting one at other
    groups (or position-blind) is read position-blind, and `note` says so."""
    from acdc.core.circuit import circuit_path
    from acdc.evaluation.compare import compare_circuits, confusion, group_confusions
    from acdc.evaluation.projection import common_view, project
    from acdc.evaluation.sources import load_reference
    from acdc.evaluation.summary import project_reference

    circuits = [c if isinstance(c, Circuit) else load_circuit(circuit_path(c))
                for c in (a, b) if c is not None]
    truth = load_reference(reference, circuits[0].graph) if reference is not None else None
    named = [(key, c.graph.shape) for key, c in zip("AB", circuits, strict=False)]
    if truth is not None:
        named.append((f"reference {reference}", truth.graph.shape))
    view = common_view(named)
    if view.projected:
        circuits = [project(c) for c in circuits]
        truth = project_reference(truth) if truth is not None else None
    pair = compare_circuits(circuits[0], circuits[1]) if len(circuits) == 2 else None
    scores: dict[str, dict[str, Confusion]] = {}
    groups: dict[str, dict[str, dict[str, Confusion]]] = {}
    if truth is not None:
        for key, circuit in zip("AB", circuits, strict=False):
            scores[key] = {level: confusion(circuit.graph, circuit.kept, truth.kept, level)
                           for level in ("edge", "node")}
            by_level = {level: group_confusions(circuit.graph, circuit.kept, truth.kept, level)
                        for level in ("edge", "node")}
            if circuit.graph.positional:
                groups[key] = {g: {level: by_level[level][g] for level in by_level}
                               for g in circuit.graph.groups}
    return Comparison(pair, scores, groups, view.note)


def export(circuit: Circuit | str | Path, format: str, path: str | Path | None = None, *,
           d_model: int | None = None, blind: bool = False) -> str:
    """The circuit as `format` (`mib`, `graphml`, `csv`), returned as text and written to
    `path` when given. A MIB file needs the model's `d_model` (for a circuit file, read from
    its run as `circuit export` does). A circuit at positions is written with an edge per
    group; `blind` writes its projection onto the blind graph instead (the only way to a MIB
    file: `acdc.exports.formats.blind_projection`)."""
    import json

    from acdc.core.circuit import circuit_path
    from acdc.exports.formats import (
        EXPORT_FORMATS,
        blind_projection,
        check_format,
        find_d_model,
        to_csv,
        to_graphml,
    )

    source = None
    if not isinstance(circuit, Circuit):
        source = circuit_path(circuit)
        circuit = load_circuit(source)
    if format not in EXPORT_FORMATS:
        raise AcdcError(f"unknown export format {format!r}: use one of "
                        f"{', '.join(EXPORT_FORMATS)}")
    check_format(circuit, format, blind, str(source or "the circuit"), "blind=True")
    if blind:
        circuit = blind_projection(circuit)
    if format == "mib":
        from acdc.core.mib import to_mib

        if d_model is None:
            if source is None:
                raise AcdcError("a MIB file needs the model's d_model: pass d_model=")
            d_model = find_d_model(source, circuit)
        text = json.dumps(to_mib(circuit, d_model)) + "\n"
    else:
        text = to_graphml(circuit) if format == "graphml" else to_csv(circuit)
    if path is not None:
        target = check_output(path, "path", [source] if source is not None else [])
        with new_directories(target.parent):
            write_text_atomic(target, text)
    return text


def report(target: str | Path, out: str | Path | None = None) -> Path:
    """The HTML report of a run or sweep directory (or a circuit file); returns its path."""
    from acdc.reports import write_report

    return write_report(target, out)
