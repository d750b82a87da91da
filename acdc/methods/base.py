"""The seam between the run pipeline and a discovery method: a method is a small function.

A method is a `Method` value in the registry (`acdc.methods.registry`): a name, a one-line
description, and a function that takes a `Discovery` (the loaded model, the tokenised task,
its graph, the metric, ablation and granularity every method shares, the method's own
settings, the run's seed, the selection rule, a progress callback) and returns one of

- `EdgeScores`: a score per edge (graph order; None for an edge it did not score), larger |score|
  meaning more important; the circuit is then chosen by the selection rule (`--top-n`,
  `--edges-fraction`, `--threshold`: `acdc.core.selection`, MIB's counting) and pruned;
- `NodeScores`: a score per head and MLP; the rule chooses nodes, and the circuit is every edge
  among them (a node circuit);
- `KeptEdges`: the method chose the circuit itself (ACDC, edge pruning, subnetwork probing),
  with scores when it has them (a ranking for curves, sweeps and ROC).

`finish` (here, once for every method) turns that into a `Circuit`: selection, pruning, the
metric of the circuit and of the full model from one patched pass (`acdc.core.recordings`),
the settings and the results. A method prints nothing and writes no files.

A method's own options are the fields of its frozen settings dataclass, each declared once with
`option(...)`: its default, its help text, whether a run records it, and whether its default
comes from the task file. The command line (`circuit discover`, and `circuit sweep` for the
options it shares), `run.yaml`, the resume check and the repeat command all read them from
there. A resumable method keeps a `Journal` in the run's directory (ACDC: its decision log).

A toy method, complete (tests/test_methods.py registers one like it):

Examples:
    >>> def random_scores(job: Discovery) -> EdgeScores:
    ...     import torch
    ...     generator = torch.Generator().manual_seed(job.seed)
    ...     return EdgeScores(torch.rand(len(job.graph.edges), generator=generator).tolist())
    >>> toy = Method("random", "seeded random scores (a baseline)", random_scores, returns="edges")
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from acdc.core.circuit import Circuit, score_or_none
from acdc.core.selection import (
    Selection,
    edges_among,
    n_residual,
    prune,
    select_edges,
    select_nodes,
)
from acdc.core.settings import CommonSettings, option_flag, settings_record
from acdc.core.settings import option as option  # re-exported: methods declare options with it
from acdc.errors import AcdcError

if TYPE_CHECKING:
    from acdc.core.configs import ModelShape
    from acdc.core.graph import Graph
    from acdc.core.loading import LoadedModel
    from acdc.core.recordings import CircuitMeter
    from acdc.core.tasks.spec import TaskSpec
    from acdc.core.tasks.values import Task


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class NoSettings:
    """The settings of a method without options of its own."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EdgeScores:
    """A score per edge, in graph order (None: not scored). `results` are recorded with the
    circuit (runtime, passes, ...); `meter` a `CircuitMeter` the method already holds (its
    recorded runs), lent to measure the circuit without recording the task again."""

    scores: Sequence[float | None]
    results: Mapping[str, Any] = field(default_factory=dict)
    meter: CircuitMeter | None = None


@dataclass(frozen=True)
class NodeScores:
    """A score per head and MLP (`a1.h2`, `m3`); `results` and `meter` as for `EdgeScores`."""

    scores: Mapping[str, float | None]
    results: Mapping[str, Any] = field(default_factory=dict)
    meter: CircuitMeter | None = None


@dataclass(frozen=True)
class KeptEdges:
    """The circuit a method chose itself, with scores when it has them. `results` may hold
    `metric_circuit` and `metric_full` (the pipeline then does not measure them again) and
    `partial`; `prune` asks for the kept edges on no path from input to logits to be dropped;
    `node_scores` (heads and MLPs by name) makes it a node circuit (subnetwork probing)."""

    kept: Sequence[bool]
    scores: Sequence[float | None] | None = None
    results: Mapping[str, Any] = field(default_factory=dict)
    prune: bool = False
    meter: CircuitMeter | None = None
    node_scores: Mapping[str, float | None] | None = None


MethodResult = EdgeScores | NodeScores | KeptEdges


# --------------------------------------------------------------------------- journals


class JournalState(Protocol):
    """A journal as read back: the settings it was started with, and a note to show (a
    damaged last line that was dropped), or None."""

    @property
    def header(self) -> Mapping[str, Any]: ...

    @property
    def dropped(self) -> str | None: ...

    @property
    def n_decided(self) -> int: ...

    @property
    def n_edges(self) -> int: ...


class Journal(Protocol):
    """How a resumable method records its progress in a run directory."""

    file_name: str

    def read(self, out_dir: Path) -> JournalState: ...

    def check_new_run(self, out_dir: Path) -> None:
        """Refuse (AcdcError) to start a new run over an unfinished one in `out_dir`."""
        ...


# --------------------------------------------------------------------------- the seam


@dataclass(frozen=True)
class Discovery:
    """One discovery run, as handed to a method.

    `graph` is the run's graph; `seed` the run's seed (torch's generator is seeded with it
    before the method starts, for methods that sample); `selection` the rule that will choose
    the circuit from the method's scores (None for a method that keeps edges itself; edge
    pruning takes its target size as options of its own); `record` the run's settings as a
    journal's header records them; `out_dir` is where a resumable method keeps its journal
    (None: keep none); `resume_from` the journal read back when resuming; `recordings` the
    task's clean and corrupted runs on this model, recorded once for several runs
    (`acdc.core.recordings`; a sweep), or None."""

    model: LoadedModel
    task: Task
    graph: Graph
    common: CommonSettings
    settings: Any
    seed: int = 0
    selection: Selection | None = None
    record: Mapping[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    resume_from: JournalState | None = None
    on_progress: Callable[[Any], None] | None = None
    recordings: Any = None


@dataclass(frozen=True)
class Method:
    """A discovery method: `run` maps a `Discovery` to a `MethodResult`; `returns` says which
    (`edges`, `nodes`: scores chosen by a selection rule; `kept`: a circuit). `settings_type`
    holds its options (`option(...)` fields); `check` refuses settings it cannot use before
    anything is loaded; `journal` is None for a method whose runs cannot resume;
    `extra_memory` the bytes a run needs beyond the weights (None: cannot say); `positions`
    whether it works on positional graphs (`--positions`; `check_positions` refuses the
    others)."""

    name: str
    description: str
    run: Callable[[Discovery], MethodResult]
    returns: Literal["edges", "nodes", "kept"] = "edges"
    settings_type: type = NoSettings
    check: Callable[[Any, CommonSettings], None] | None = None
    journal: Journal | None = None
    extra_memory: Callable[[ModelShape, CommonSettings, Task], int] | None = None
    citation: str = ""
    # whether the method works on positional graphs (`--positions labels|all`)
    positions: bool = False

    @property
    def ranks(self) -> bool:
        """Whether the circuit is chosen from the method's scores by a selection rule."""
        return self.returns != "kept"


def check_positions(method: Method, common: CommonSettings) -> None:
    """Refuse, in one line, a run at positions of a method that cannot work at positions."""
    if common.positions == "none" or method.positions:
        return
    from acdc.methods.registry import METHODS

    why = (" (it scores heads and MLPs, which have no positions)" if method.returns == "nodes"
           else "")
    able = ", ".join(name for name, m in METHODS.items() if m.positions)
    raise AcdcError(f"method {method.name} does not work at positions{why}: leave out "
                    f"--positions, or use a method that does ({able})")


def make_settings(method: Method, spec: TaskSpec | Task, options: Mapping[str, Any]) -> Any:
    """The method's settings from the options given (None: not given), the task file (fields
    declared `from_task`, then the file's `method_defaults:` for this method) and the fields'
    defaults; an option the method does not take is one line naming it."""
    fields = {item.name: item for item in dataclasses.fields(method.settings_type)}
    for key, value in options.items():
        if value is not None and value is not False and key not in fields:
            flag = "--" + key.replace("_", "-")
            raise AcdcError(f"{flag} is not an option of method {method.name}; leave it out or "
                            f"choose a method that takes it")
    task_defaults = dict(getattr(spec, "method_defaults", {}).get(method.name, {}))
    for key in task_defaults:
        if key not in fields:
            raise AcdcError(f"{spec.source}: method_defaults: {method.name}: {key!r} is not an "
                            f"option of method {method.name}; use one of {', '.join(fields)}")
    values = {}
    for name, item in fields.items():
        given = options.get(name)
        task_key = item.metadata.get("from_task")
        if given is not None:
            values[name] = given
        elif task_key is not None and getattr(spec, task_key, None) is not None:
            values[name] = getattr(spec, task_key)
        elif task_defaults.get(name) is not None:
            values[name] = task_defaults[name]
        elif item.default is dataclasses.MISSING:
            raise AcdcError(f"method {method.name} needs {option_flag(item)} (the task file has "
                            f"no {task_key or name}: either gives it)")
    settings = method.settings_type(**values)
    validate = getattr(settings, "validate", None)
    if validate is not None:
        validate()
    return settings


def make_selection(method: Method, spec: TaskSpec | Task,
                   given: Mapping[str, Any]) -> Selection | None:
    """The selection rule of a ranking method: the one given (`top_n`, `edges_fraction` or
    `threshold`), else the task's threshold as a score threshold; None for a method that keeps
    edges itself (which takes none of those options: refused by `make_settings`)."""
    if not method.ranks:
        return None
    rules = {key: value for key, value in given.items() if value is not None}
    if len(rules) > 1:
        flags = " and ".join("--" + rule.replace("_", "-") for rule in rules)
        raise AcdcError(f"{flags} are two rules for choosing the circuit; give one")
    if not rules:
        if spec.threshold is None:
            raise AcdcError(f"method {method.name} ranks edges: give --top-n, --edges-fraction "
                            f"or --threshold (the task file has no threshold)")
        rules = {"threshold": spec.threshold}
    selection = Selection(**rules)
    selection.validate()
    return selection


def finish(job: Discovery, method: Method, result: MethodResult, started: float) -> Circuit:
    """The `Circuit` of a method's result: the rule applied to scores, pruning, the metric of
    the circuit and of the full model (one patched pass, unless the method measured it), the
    run's settings and results."""
    graph = job.graph
    results: dict[str, Any] = {}
    node_scores: dict[str, float | None] | None = None
    scores: Sequence[float | None]
    if isinstance(result, EdgeScores):
        assert job.selection is not None, f"method {method.name} ranks but has no rule"
        scores = [score_or_none(s) if s is not None else None for s in result.scores]
        selected = select_edges(graph, scores, job.selection)
        kept = prune(graph, selected, read_at(job))
        results["n_edges_selected"] = n_residual(graph, selected)
    elif isinstance(result, NodeScores):
        assert job.selection is not None, f"method {method.name} ranks but has no rule"
        node_scores = dict(result.scores)
        nodes = select_nodes(graph, node_scores, job.selection)
        kept = prune(graph, edges_among(graph, nodes))
        scores = [None] * len(graph.edges)
        results["n_nodes_selected"] = len(nodes)
    else:
        kept = prune(graph, result.kept, read_at(job)) if result.prune else list(result.kept)
        scores = (list(result.scores) if result.scores is not None
                  else [None] * len(graph.edges))
        if result.node_scores is not None:
            node_scores = dict(result.node_scores)
    if len(scores) != len(graph.edges) or len(kept) != len(graph.edges):
        raise ValueError(f"method {method.name} returned {len(scores)} scores for a graph of "
                         f"{len(graph.edges)} edges")
    results.update(result.results)
    if "metric_circuit" not in results:
        from acdc.core.recordings import CircuitMeter

        meter = result.meter or CircuitMeter.of(job.model, job.task, graph, job.common.metric,
                                                job.common.ablation, job.recordings)
        results["metric_circuit"], results["metric_full"] = meter.metric(kept), meter.full
    results.setdefault("runtime_s", time.perf_counter() - started)
    results.setdefault("partial", False)
    selection = settings_record(job.selection) if job.selection is not None else {}
    settings = {"model": job.model.name, "task": job.task.name, "method": method.name,
                **settings_record(job.settings), **{k: v for k, v in selection.items()
                                                    if v is not None},
                **settings_record(job.common), **positions_record(job.task, graph)}
    return Circuit(graph, tuple(bool(k) for k in kept), tuple(scores), settings, results,
                   node_scores=node_scores)


def read_at(job: Discovery) -> frozenset[int] | None:
    """The groups where a positional run's `logits` are read (its task's metric positions);
    None for a blind graph."""
    if not job.graph.positional:
        return None
    from acdc.core.positions import metric_groups

    shape = job.graph.shape
    return metric_groups(job.task, shape.groups, shape.positions)


def positions_record(task: Task, graph: Graph) -> dict[str, Any]:
    """What a positional circuit records of its task besides the groups: the digest of every
    prompt's tokens' groups (`acdc.core.positions.positions_digest`); nothing for a blind
    graph."""
    if not graph.positional:
        return {}
    from acdc.core.positions import positions_digest

    shape = graph.shape
    return {"positions_sha256": positions_digest(task, shape.groups, shape.positions)}


def run_method(method: Method, model: LoadedModel, task: Task, common: CommonSettings,
               settings: Any = None, selection: Selection | None = None, seed: int = 0,
               graph: Graph | None = None, recordings: Any = None,
               on_progress: Callable[[Any], None] | None = None) -> Circuit:
    """Run `method` on a loaded model and a tokenised task, in memory (no files, no journal):
    its result chosen, pruned and measured by `finish`. `settings` default to the method's
    defaults; a ranking method needs `selection`.

    Examples:
        >>> circuit = run_method(EAP_IG, loaded_model, task, CommonSettings(metric="logit_diff"),
        ...                      selection=Selection(top_n=50))  # doctest: +SKIP
    """
    import torch

    from acdc.core.graph import build_graph
    from acdc.core.positions import positional_shape

    common.validate()
    settings = settings if settings is not None else method.settings_type()
    validate = getattr(settings, "validate", None)
    if validate is not None:
        validate()
    if method.check is not None:
        method.check(settings, common)
    check_positions(method, common)
    if method.ranks and selection is None:
        raise AcdcError(f"method {method.name} ranks edges: give a selection rule (top_n, "
                        f"edges_fraction or threshold)")
    if selection is not None:
        selection.validate()
    if graph is None:
        graph = (recordings.graph if recordings is not None
                 else build_graph(positional_shape(model.shape.graph_shape(common.granularity),
                                                   task, common.positions)))
    job = Discovery(model=model, task=task, graph=graph, common=common, settings=settings,
                    seed=seed, selection=selection if method.ranks else None,
                    on_progress=on_progress, recordings=recordings)
    torch.manual_seed(seed)
    started = time.perf_counter()
    return finish(job, method, method.run(job), started)
