"""ACDC: visit receivers in reverse topological order and prune edges that do not matter.

`run_acdc` follows the ACDC paper (Conmy et al. 2023): starting from the full graph H, it visits
every receiver from the output back to the input (`Graph.acdc_order`). For each incoming edge
it removes the edge, measures the metric of H without it, and removes it for good if the metric
rose by less than the threshold (`|change| < threshold` with `abs`); the current metric is then
the new one. A node with no remaining outgoing edge is dead: its incoming edges are removed
without testing.

In a positional graph (`acdc.core.graph`) every receiver's edges are visited once per position
group, and a node is dead at a group. The edges visited together (one receiver, one group g)
are removed untested exactly when they provably change nothing:

- every edge at g, when g is inert (`acdc.core.positions.inert_groups`: each of its tokens lies
  after its prompt's last metric position, or before the first token where the prompt's clean
  and corrupted tokens differ under corrupt ablation; causal attention only);
- edges into `logits` at g, when no prompt has a metric position in g (the logits are read
  there only);
- edges into an MLP at g, when the MLP keeps no outgoing edge at g (it works token by token:
  its input at g reaches its output at g only);
- the direct query edge of a head at g, when the head keeps no outgoing edge at g (a query at g
  changes the head's output at g only); its direct key or value edge at g (and at head
  granularity, every edge into the head at g), when the head keeps no outgoing edge at any
  group (later queries of every group read a key or value at g);
- edges into a head's q, k or v input at g, when that input's direct edge at g is gone.

The search talks to one `Evaluator` (`evaluator.py`): the incremental engine
(`propagation.py`) or the full recompute; both compute the same patched forward. It is a pure
library call: it returns a `Circuit`, reports progress through a callback, prints nothing and
writes no files. Ctrl-C (KeyboardInterrupt) during a run returns the decisions made so far,
with `partial` set in the results; undecided edges stay in the circuit.

>>> circuit = run_acdc(loaded_model, task, CommonSettings(),
...                    AcdcSettings(threshold=0.01))  # doctest: +SKIP
>>> circuit.n_edges_kept, circuit.metric_circuit  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from acdc.core.circuit import Circuit, score_or_none
from acdc.core.graph import Edge, Graph, build_graph
from acdc.core.metrics import build_metric, metric_targets
from acdc.core.patching import Stage, task_tensors
from acdc.core.positions import (
    inert_groups,
    metric_groups,
    positional_shape,
    positions_digest,
)
from acdc.core.recordings import Recordings, record
from acdc.core.settings import CommonSettings, settings_record
from acdc.errors import AcdcError
from acdc.methods.acdc import candidates
from acdc.methods.acdc.evaluator import Evaluator, FullRecompute
from acdc.methods.acdc.propagation import IncrementalPatcher
from acdc.methods.acdc.runlog import Decision
from acdc.methods.acdc.settings import AcdcSettings

if TYPE_CHECKING:
    from acdc.core.loading import LoadedModel
    from acdc.core.tasks.values import Task

@dataclass(frozen=True)
class Progress:
    """Reported after every edge decision."""

    decision: Decision  # the edge just decided
    decided: int  # edges decided so far (tested or skipped as dead)
    tested: int  # edges actually tested
    total: int
    kept: int  # edges currently in the circuit, undecided ones included
    elapsed_s: float
    eta_s: float | None  # from measured per-layer test costs; None until a test was timed
    replayed: bool = False  # decided by replaying a log, not computed

    @property
    def metric(self) -> float:
        return self.decision.metric

    @property
    def edge(self) -> str:
        return self.decision.edge


ProgressCallback = Callable[[Progress], None]


MAX_CANDIDATES = 32
# Numbers (batch x positions x d_model) below which a test is bound by per-operation overhead,
# so that evaluating several candidates together costs little more than one: on a CPU only
# the smallest bundled batch (demo) gains (CHANGELOG.md has the measurements). The CUDA figure
# is a guess, not yet measured on a GPU: one test of a small batch leaves most of a GPU idle.
OVERHEAD_BOUND_NUMBERS = {"cpu": 2**17, "cuda": 2**24}


def candidate_width(settings: AcdcSettings, batch: int, seq_len: int, d_model: int,
                    device: torch.device | str) -> int:
    """How many candidate removals one evaluation holds (`candidates.py`): the configured
    number, or as many as fit in an evaluation that costs about as much as one test."""
    if settings.engine == "full":
        return 1
    if settings.candidates:
        return settings.candidates
    budget = OVERHEAD_BOUND_NUMBERS.get(torch.device(device).type, OVERHEAD_BOUND_NUMBERS["cpu"])
    return max(1, min(MAX_CANDIDATES, budget // (batch * seq_len * d_model)))


def _source_node(edge: Edge) -> str:
    """The node an edge leaves: its sender, or for a direct edge the q/k/v input."""
    return edge.sender.name if edge.sender is not None else edge.receiver.name


def run_acdc(model: LoadedModel, task: Task, common: CommonSettings, settings: AcdcSettings,
             on_progress: ProgressCallback | None = None, replay: Sequence[Decision] = (),
             graph: Graph | None = None, recordings: Recordings | None = None) -> Circuit:
    """Run ACDC on `task` (clean/corrupt tokens, metric positions, answers).

    `replay` resumes an interrupted run: the logged decisions are applied without testing
    (their edge names must follow this run's order) and the search goes on from there.
    `graph` is the model's graph at `common.granularity`, when the caller already built it.
    `recordings` are the task's clean and corrupted runs on this model and graph, recorded
    once for several runs (a sweep, `acdc.core.recordings`): the search works on a fresh copy
    of them instead of recording its own, with the same decisions.
    """
    common.validate()
    settings.validate()
    start = time.perf_counter()
    if graph is None:
        graph = (recordings.graph if recordings is not None
                 else build_graph(positional_shape(model.shape.graph_shape(common.granularity),
                                                   task, common.positions)))
    if graph.shape.positions != common.positions:
        raise ValueError(f"a graph at positions {graph.shape.positions} handed to a run at "
                         f"positions {common.positions}")
    torch.manual_seed(task.seed)
    patched = (record(model, task, graph, common.ablation).patched if recordings is None
               else recordings.fresh())
    weights = patched.w
    device = weights.W_E.device
    with torch.inference_mode():
        tensors = task_tensors(task, device, weights.causal, graph.shape)
        clean = tensors.clean
        if recordings is not None:
            recordings.check(graph, tensors, common.ablation)
        targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers,
                                 device)
        metric = build_metric(common.metric, patched.clean_logits, targets)
        metric_full = float(metric(patched.clean_logits))
        evaluator: Evaluator = (IncrementalPatcher(patched) if settings.engine == "incremental"
                                else FullRecompute(patched, metric, metric_full))
        batch, seq_len = clean.shape
        width = candidate_width(settings, batch, seq_len, weights.W_E.shape[1], device)
        search = _Search(graph, evaluator, metric, settings, metric_full, on_progress, start,
                         replay, width)
        if graph.positional:
            shape = graph.shape
            search.read_at = metric_groups(task, shape.groups, shape.positions)
            search.inert = inert_groups(task, shape.groups, shape.positions, common.ablation,
                                        weights.causal)
        partial = search.run()
        evaluator.release()  # before the last full pass, the peak of a run's memory
        metric_circuit = float(metric(patched.logits_from(Stage(0))))
        metric_noise = evaluator.rounding_noise(metric_circuit, search.current)
    return Circuit(
        graph=graph,
        kept=tuple(bool(k) for k in search.kept.tolist()),
        scores=tuple(score_or_none(s) for s in search.scores.tolist()),
        settings={"model": model.name, "task": task.name, "method": "acdc",
                  **settings_record(settings, common),
                  **({"positions_sha256": positions_digest(task, graph.groups,
                                                           graph.shape.positions)}
                     if graph.positional else {})},
        results={"n_edges_decided": search.n_decided, "metric_circuit": metric_circuit,
                 "metric_full": metric_full, "metric_noise": metric_noise,
                 "runtime_s": time.perf_counter() - start, "partial": partial},
    )


class _Search:
    """The decision loop and its bookkeeping (which edges are kept, outgoing counts).

    Tests go through the evaluator; one evaluation may hold several candidate removals into
    the same receiver (`candidates.py`: same decisions as one at a time).
    """

    def __init__(self, graph: Graph, evaluator: Evaluator, metric, settings: AcdcSettings,
                 metric_full: float, on_progress: ProgressCallback | None, start: float,
                 replay: Sequence[Decision] = (), width: int = 1):
        self.graph, self.evaluator, self.metric, self.settings = graph, evaluator, metric, settings
        self.width = width  # candidate removals per evaluation
        self.on_progress, self.start, self.replay = on_progress, start, list(replay)
        n = len(graph.edges)
        if len(self.replay) > n:
            raise AcdcError(f"cannot resume: the log has {len(self.replay)} decisions, "
                            f"the graph {n} edges")
        self.kept = torch.ones(n, dtype=torch.bool)
        self.scores = torch.full((n,), float("nan"), dtype=torch.float64)
        self.current = metric_full
        self.n_kept, self.n_decided, self.n_tested, self.n_removed_tested = n, 0, 0, 0
        self.outgoing: dict[str, int] = {}
        # positional graphs: kept outgoing edges per (node, group); the groups where logits are
        # read and the inert groups (set by `run_acdc`)
        self.outgoing_at: dict[tuple[str, int], int] = {}
        self.read_at: frozenset[int] = frozenset(range(graph.n_groups))
        self.inert: frozenset[int] = frozenset()
        for edge in graph.edges:
            source = _source_node(edge)
            self.outgoing[source] = self.outgoing.get(source, 0) + 1
            if edge.group is not None:
                key = (source, edge.group)
                self.outgoing_at[key] = self.outgoing_at.get(key, 0) + 1
        self.clock = _CostClock(graph)
        self.synced = False

    def run(self) -> bool:
        """Decide every edge; True if interrupted (the edge in flight stays in the circuit)."""
        try:
            for node, edges in self.graph.acdc_order(self.settings.reverse_head_order):
                n_logged = max(0, min(len(edges), len(self.replay) - self.n_decided))
                for edge in edges[:n_logged]:
                    self._replay(edge, self.replay[self.n_decided])
                edges = edges[n_logged:]
                if not edges:
                    continue
                if self.replay and not self.synced:
                    self.evaluator.resync()  # rebuild the activations of the replayed circuit
                    self.synced = True
                if self._dead(node, edges[0]):
                    for edge in edges:
                        self._remove(edge)
                        self._decided(edge, None)
                    continue
                self.evaluator.enter(edges[0])
                while edges:
                    edges = edges[self._test(edges):]
        except KeyboardInterrupt:
            return True
        return False

    def _replay(self, edge: Edge, decision: Decision) -> None:
        if decision.edge != edge.name:
            raise AcdcError(
                f"cannot resume: decision {self.n_decided} of the log is {decision.edge!r}, "
                f"this run visits {edge.name!r} there; the log was written with other settings"
            )
        if not decision.kept:
            self._remove(edge)
        if decision.score is not None:
            self.scores[edge.index] = decision.score
            self.n_tested += 1
            self.n_removed_tested += not decision.kept
        self.current = decision.metric
        self._decided(edge, decision.score, replayed=True)

    def _dead(self, node: str, edge: Edge) -> bool:
        """Whether the edges into `edge`'s receiver (at its group) are removed untested: their
        node keeps no outgoing edge (see the module docstring for positional graphs)."""
        g = edge.group
        if g is None:
            return node != "logits" and self.outgoing.get(node, 0) == 0
        if g in self.inert:
            return True
        if edge.receiver.kind == "logits":
            return g not in self.read_at
        reads_every_group = (edge.receiver.kind == "head"
                             and (edge.qkv in ("k", "v")
                                  or (edge.kind == "residual" and edge.receiver.qkv is None)))
        if reads_every_group:  # a key or value at g reaches the head's output at every group
            return self.outgoing.get(node, 0) == 0
        return self.outgoing_at.get((node, g), 0) == 0

    def _remove(self, edge: Edge) -> None:
        self.evaluator.remove(edge)
        self.kept[edge.index] = False
        self.n_kept -= 1
        source = _source_node(edge)
        self.outgoing[source] -= 1
        if edge.group is not None:
            self.outgoing_at[(source, edge.group)] -= 1

    def _keep_rate(self) -> float:
        """The fraction of tested edges kept so far (with one kept and one removed assumed):
        how likely the run is to keep the next one, for choosing candidates."""
        kept = self.n_tested - self.n_removed_tested
        return (kept + 1) / (self.n_tested + 2)

    def _test(self, edges: list[Edge]) -> int:
        """Test edges into one receiver from the first on; return how many were decided."""
        started = time.perf_counter()
        width = 1 if edges[0].kind == "direct" else self.width
        plan = candidates.plan(len(edges), width, self._keep_rate())
        coefficients = torch.tensor(candidates.coefficients(plan), dtype=self.evaluator.dtype,
                                    device=self.evaluator.device)
        logits, tentative = self.evaluator.evaluate(edges, coefficients)
        metrics = self.metric(logits).tolist()
        threshold = self.settings.threshold
        if self.settings.abs:
            remove = lambda score: abs(score) < threshold  # noqa: E731
        else:
            remove = lambda score: score < threshold  # noqa: E731
        steps, last = candidates.walk(plan, metrics, self.current, remove)
        # Interrupt-safe from here on: state changes only after the decisions are made.
        if last is not None:
            self.evaluator.commit(tentative, last)
        seconds = (time.perf_counter() - started) / len(steps)
        for step in steps:
            edge = edges[step.edge]
            self.scores[edge.index] = step.score
            self.n_tested += 1
            if step.remove:
                self._remove(edge)
                self.n_removed_tested += 1
            self.current = step.metric
            self.clock.record(edge, seconds)
            self._decided(edge, step.score)
        return len(steps)

    def _decided(self, edge: Edge, score: float | None, replayed: bool = False) -> None:
        self.n_decided += 1
        self.clock.decided(edge, tested=score is not None and not replayed)
        if self.on_progress is not None:
            decision = Decision(edge.name, bool(self.kept[edge.index]), score, self.current)
            self.on_progress(Progress(
                decision=decision, decided=self.n_decided, tested=self.n_tested,
                total=len(self.graph.edges), kept=self.n_kept,
                elapsed_s=time.perf_counter() - self.start, eta_s=self.clock.eta(),
                replayed=replayed,
            ))


class _CostClock:
    """ETA from measured costs: a test's cost depends on its receiver's layer (how much lies
    downstream), so remaining edges are priced per layer. Layers not reached yet are priced at
    the earliest measured layer's cost, scaled by how many layers lie downstream of them; and
    only the fraction of edges actually tested so far (the rest die untested) is counted."""

    def __init__(self, graph: Graph):
        self.n_layers = graph.n_layers
        self.remaining = [0] * (graph.n_layers + 1)
        for edge in graph.edges:
            self.remaining[edge.receiver.layer] += 1
        self.seconds = [0.0] * (graph.n_layers + 1)
        self.tests = [0] * (graph.n_layers + 1)
        self.n_decided = 0
        self.n_tested = 0

    def record(self, edge: Edge, seconds: float) -> None:
        self.seconds[edge.receiver.layer] += seconds
        self.tests[edge.receiver.layer] += 1

    def decided(self, edge: Edge, tested: bool) -> None:
        self.remaining[edge.receiver.layer] -= 1
        self.n_decided += 1
        self.n_tested += tested

    def eta(self) -> float | None:
        measured = [layer for layer in range(self.n_layers + 1) if self.tests[layer]]
        if not measured:
            return None
        earliest = min(measured)
        base = self.seconds[earliest] / self.tests[earliest]
        tested_fraction = self.n_tested / max(self.n_decided, 1)
        total = 0.0
        for layer, left in enumerate(self.remaining):
            if not left:
                continue
            if self.tests[layer]:
                cost = self.seconds[layer] / self.tests[layer]
            else:
                cost = base * (self.n_layers + 1 - layer) / (self.n_layers + 1 - earliest)
            total += left * cost * tested_fraction
        return total
