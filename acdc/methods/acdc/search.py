"""ACDC: visit receivers in reverse topological order and prune edges that do not matter.

`run_acdc` follows `../shared/ACDC.md`, section 2: starting from the full graph H, it visits
every receiver from the output back to the input (`Graph.acdc_order`). For each incoming edge
it removes the edge, measures the metric of H without it, and removes it for good if the metric
rose by less than the threshold (`|change| < threshold` with `use_abs`); the current metric is
then the new one. A node with no remaining outgoing edge is dead: its incoming edges are
removed without testing.

The engine is a pure library call: it returns a `CircuitResult`, reports progress through a
callback, prints nothing and writes no files. Ctrl-C (KeyboardInterrupt) during a run returns
the decisions made so far, with `partial=True`; undecided edges stay in the circuit.

>>> result = run_acdc(loaded_model, task, AcdcConfig(threshold=0.01))  # doctest: +SKIP
>>> result.n_edges_kept, result.metric_circuit  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from acdc.methods.acdc import candidates
from acdc.errors import AcdcError
from acdc.core.graph import GRANULARITIES, Edge, Graph, build_graph
from acdc.core.metrics import METRICS, build_metric, metric_targets
from acdc.core.models import LoadedModel, extract_weights
from acdc.core.patching import PatchedModel, Stage
from acdc.methods.acdc.propagation import FACTOR_CACHE_BYTES, INPUT_CACHE_BYTES, IncrementalPatcher
from acdc.core.tasks import ABLATIONS, Task

Ablation = Literal["corrupt", "zero"]
ENGINES: tuple[str, ...] = ("incremental", "full")


@dataclass(frozen=True)
class AcdcConfig:
    """How to run ACDC. `threshold` is tau; the metric is lower-is-better."""

    threshold: float
    metric: str = "kl"
    ablation: Ablation = "corrupt"
    granularity: Literal["qkv", "head"] = "qkv"
    use_abs: bool = False  # remove when |change| < tau instead of change < tau
    reverse_head_order: bool = False  # visit heads 0 upwards
    engine: Literal["incremental", "full"] = "incremental"  # how a test is computed (same results)
    candidates: int = 0  # removals evaluated together (same decisions); 0: chosen by batch size

    def validate(self) -> None:
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise AcdcError(f"threshold must be a finite number, got {self.threshold!r}")
        if self.metric not in METRICS:
            raise AcdcError(f"unknown metric {self.metric!r}: use one of {', '.join(METRICS)}")
        if self.ablation not in ABLATIONS:
            raise AcdcError(f"unknown ablation {self.ablation!r}: use one of {', '.join(ABLATIONS)}")
        if self.engine not in ENGINES:
            raise AcdcError(f"unknown engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if self.granularity not in GRANULARITIES:
            raise AcdcError(f"unknown granularity {self.granularity!r}: use one of {', '.join(GRANULARITIES)}")
        if not isinstance(self.candidates, int) or self.candidates < 0:
            raise AcdcError(f"candidates must be 0 (automatic) or a positive number, got {self.candidates!r}")
        if self.candidates > 1 and self.engine == "full":
            raise AcdcError("the full engine tests one edge at a time: use candidates 0 or 1 with it")


@dataclass(frozen=True)
class Decision:
    """One edge decided: removed or kept, the metric change if it was tested (None when it was
    removed untested, its node being dead) and the circuit's metric afterwards. A run's
    decisions, in order, are enough to resume it (`run_acdc(..., replay=...)`)."""

    edge: str
    kept: bool
    score: float | None
    metric: float


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


@dataclass
class CircuitResult:
    """The outcome of a run. Tensors are indexed by `Edge.index` of `graph`."""

    graph: Graph
    config: AcdcConfig
    kept: torch.Tensor  # bool [n_edges]; undecided edges of a partial run count as kept
    scores: torch.Tensor  # float64 [n_edges]; metric change when tested, nan if never tested
    decided: torch.Tensor  # bool [n_edges]
    metric_full: float  # metric of the full model (0 for kl)
    metric_circuit: float  # metric of the final circuit
    metric_noise: float  # |final circuit's metric, fresh patched pass - as the search tracked it|
    runtime_s: float
    partial: bool  # True when the run was interrupted

    @property
    def n_edges_kept(self) -> int:
        return int(self.kept.sum())

    @property
    def n_tested(self) -> int:
        return int((~self.scores.isnan()).sum())

    def kept_edges(self) -> list[Edge]:
        return [e for e in self.graph.edges if self.kept[e.index]]


ProgressCallback = Callable[[Progress], None]


SMALL_MODEL_PARAMS = 20_000_000
MAX_CANDIDATES = 32
# Numbers (batch x positions x d_model) below which a test is bound by per-operation overhead,
# so that evaluating several candidates together costs little more than one. On this CPU the
# bundled demo (24 x 18 x 64) ran 1.3x faster with 4 candidates, while greater-than (100 x 13
# x 64) gained nothing and ioi (100 x 21 x 64) lost. The CUDA figure is a guess, unmeasured
# (no GPU was available): one test of a small batch leaves most of a GPU idle.
OVERHEAD_BOUND_NUMBERS = {"cpu": 2**17, "cuda": 2**24}


def cpu_threads(shape, device: str) -> int | None:
    """Threads for a CPU run: 1 for small models (their operations are too small to split,
    and extra threads only add overhead: about 2x slower with 2 threads on the bundled
    models), else None for PyTorch's default."""
    return 1 if device == "cpu" and shape.n_params < SMALL_MODEL_PARAMS else None


def candidate_width(config: AcdcConfig, batch: int, seq_len: int, d_model: int, device: str) -> int:
    """How many candidate removals one evaluation holds (`candidates.py`): the configured
    number, or as many as fit in an evaluation that costs about as much as one test."""
    if config.engine == "full":
        return 1
    if config.candidates:
        return config.candidates
    budget = OVERHEAD_BOUND_NUMBERS.get(torch.device(device).type, OVERHEAD_BOUND_NUMBERS["cpu"])
    return max(1, min(MAX_CANDIDATES, budget // (batch * seq_len * d_model)))


def precision_warning(dtype: torch.dtype, device: str) -> str | None:
    """A warning for half-precision runs, before they start."""
    if dtype not in (torch.float16, torch.bfloat16):
        return None
    text = (f"{str(dtype).removeprefix('torch.')} rounds activations to about "
            f"{torch.finfo(dtype).eps:.0e}; metric changes near the rounding noise (measured and "
            f"reported at the end of the run) are meaningless; use float32 to compare runs")
    if device == "cpu":
        text += "; on a CPU half precision is also much slower than float32"
    return text


def _batch(task: Task, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded clean and corrupt tokens and the flattened metric positions."""
    width = max(len(p) for p in task.clean)
    pad = lambda rows: torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)  # noqa: E731
    pos_batch = torch.tensor([b for b, pos in enumerate(task.positions) for _ in pos], dtype=torch.long)
    pos_index = torch.tensor([p for pos in task.positions for p in pos], dtype=torch.long)
    return tuple(t.to(device) for t in (pad(task.clean), pad(task.corrupt), pos_batch, pos_index))


def _source_node(edge: Edge) -> str:
    """The node an edge leaves: its sender, or for a direct edge the q/k/v input."""
    return edge.sender.name if edge.sender is not None else edge.receiver.name


def run_acdc(model: LoadedModel, task: Task, config: AcdcConfig,
             on_progress: ProgressCallback | None = None,
             replay: Sequence[Decision] = ()) -> CircuitResult:
    """Run ACDC on `task` (clean/corrupt tokens, metric positions, answers) with `config`.

    `replay` resumes an interrupted run: the logged decisions are applied without testing
    (their edge names must follow this run's order) and the search goes on from there.
    """
    config.validate()
    start = time.perf_counter()
    graph = build_graph(model.shape.graph_shape(config.granularity))
    torch.manual_seed(task.seed)
    weights = extract_weights(model.model)
    device = weights.W_E.device
    with torch.inference_mode():
        clean, corrupt, pos_batch, pos_index = _batch(task, device)
        patched = PatchedModel(weights, graph, clean, corrupt, pos_batch, pos_index, config.ablation)
        targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers, device)
        metric = build_metric(config.metric, patched.clean_logits, targets)
        metric_full = float(metric(patched.clean_logits))
        if config.engine == "full":  # it tracks metrics through the patched pass itself
            full_graph_gap = abs(float(metric(patched.logits_from(Stage(0)))) - metric_full)
            patched.last_qkv = [None] * graph.n_layers  # not needed (GPT-2: 0.16 GB)
        width = candidate_width(config, *clean.shape, weights.W_E.shape[1], device)
        search = _Search(graph, patched, metric, config, metric_full, on_progress, start, replay, width)
        partial = search.run()
        if search.incremental is not None:
            search.incremental.release()  # before the last full pass, the peak of a run's memory
        metric_circuit = float(metric(patched.logits_from(Stage(0))))
        # The search tracked the same circuit's metric through other arithmetic (incremental
        # updates; the plain forward while nothing is removed): the gap is the rounding noise
        # floor below which a threshold means nothing (about 1e-7 in float32).
        tracked_gap = abs(metric_circuit - search.current)
        metric_noise = full_graph_gap if config.engine == "full" else tracked_gap
    return CircuitResult(
        graph=graph, config=config, kept=search.kept, scores=search.scores, decided=search.decided,
        metric_full=metric_full, metric_circuit=metric_circuit, metric_noise=metric_noise,
        runtime_s=time.perf_counter() - start, partial=partial,
    )


class _Search:
    """The decision loop and its bookkeeping (which edges are kept, outgoing counts).

    With the incremental engine a test propagates the removal through the kept edges only
    (`propagation.py`), and one evaluation may hold several candidate removals into the same
    receiver (`candidates.py`: same decisions as one at a time); with the full engine it reruns
    every stage from the edge's receiver on (`patching.py`). Both compute the same patched
    forward.
    """

    def __init__(self, graph: Graph, patched: PatchedModel, metric, config: AcdcConfig,
                 metric_full: float, on_progress: ProgressCallback | None, start: float,
                 replay: Sequence[Decision] = (), width: int = 1):
        self.graph, self.patched, self.metric, self.config = graph, patched, metric, config
        self.width = width  # candidate removals per evaluation
        self.incremental = IncrementalPatcher(patched) if config.engine == "incremental" else None
        self.on_progress, self.start, self.replay = on_progress, start, list(replay)
        n = len(graph.edges)
        if len(self.replay) > n:
            raise AcdcError(f"cannot resume: the log has {len(self.replay)} decisions, the graph {n} edges")
        self.kept = torch.ones(n, dtype=torch.bool)
        self.decided = torch.zeros(n, dtype=torch.bool)
        self.scores = torch.full((n,), float("nan"), dtype=torch.float64)
        self.current = metric_full
        self.n_kept, self.n_decided, self.n_tested, self.n_removed_tested = n, 0, 0, 0
        self.outgoing: dict[str, int] = {}
        for edge in graph.edges:
            source = _source_node(edge)
            self.outgoing[source] = self.outgoing.get(source, 0) + 1
        self.clock = _CostClock(graph)
        self.synced = False

    def run(self) -> bool:
        """Decide every edge; True if interrupted (the edge in flight stays in the circuit)."""
        try:
            for node, edges in self.graph.acdc_order(self.config.reverse_head_order):
                n_logged = max(0, min(len(edges), len(self.replay) - self.n_decided))
                for edge in edges[:n_logged]:
                    self._replay(edge, self.replay[self.n_decided])
                edges = edges[n_logged:]
                if not edges:
                    continue
                if self.replay and not self.synced and self.incremental is not None:
                    self.incremental.resync()  # rebuild the activations of the replayed circuit
                    self.synced = True
                if node != "logits" and self.outgoing.get(node, 0) == 0:
                    for edge in edges:
                        self._remove(edge)
                        self._decided(edge, None)
                    continue
                if self.incremental is not None:
                    self.incremental.enter(edges[0])
                while edges:
                    edges = edges[self._test(edges):]
        except KeyboardInterrupt:
            return True
        return False

    def _replay(self, edge: Edge, decision: Decision) -> None:
        if decision.edge != edge.name:
            raise AcdcError(
                f"cannot resume: decision {self.n_decided} of the log is {decision.edge!r}, this run "
                f"visits {edge.name!r} there; the log was written with other settings"
            )
        if not decision.kept:
            self._remove(edge)
        if decision.score is not None:
            self.scores[edge.index] = decision.score
            self.n_tested += 1
            self.n_removed_tested += not decision.kept
        self.current = decision.metric
        self._decided(edge, decision.score, replayed=True)

    def _remove(self, edge: Edge) -> None:
        if self.incremental is not None:
            self.incremental.remove(edge)
        else:
            self.patched.set_edge(edge, False)
        self.kept[edge.index] = False
        self.n_kept -= 1
        self.outgoing[_source_node(edge)] -= 1

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
        if self.incremental is not None:
            patched = self.patched
            coefficients = torch.tensor(candidates.coefficients(plan), dtype=patched.delta.dtype,
                                        device=patched.delta.device)
            logits, tentative = self.incremental.evaluate(edges, coefficients)
        else:
            edge = edges[0]
            self.patched.set_edge(edge, False)
            try:
                logits = self.patched.logits_from(PatchedModel.stage_of(edge))[None]
            finally:
                self.patched.set_edge(edge, True)
        metrics = self.metric(logits).tolist()
        threshold = self.config.threshold
        if self.config.use_abs:
            remove = lambda score: abs(score) < threshold  # noqa: E731
        else:
            remove = lambda score: score < threshold  # noqa: E731
        steps, last = candidates.walk(plan, metrics, self.current, remove)
        # Interrupt-safe from here on: state changes only after the decisions are made.
        if last is not None and self.incremental is not None:
            self.incremental.commit(tentative, last)
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
        self.decided[edge.index] = True
        self.n_decided += 1
        self.clock.decided(edge, tested=score is not None and not replayed)
        if self.on_progress is not None:
            decision = Decision(edge.name, bool(self.kept[edge.index]), score, self.current)
            self.on_progress(Progress(
                decision=decision, decided=self.n_decided, tested=self.n_tested,
                total=len(self.graph.edges), kept=self.n_kept,
                elapsed_s=time.perf_counter() - self.start, eta_s=self.clock.eta(), replayed=replayed,
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


def estimate_memory(shape, n_senders: int, batch: int, seq_len: int, bytes_per_number: int = 4,
                    ablation: str = "corrupt", n_positions: int | None = None) -> dict[str, int]:
    """Bytes a run holds, from the tensors this module and `propagation.py` allocate.

    `shape` is a `models.ModelShape`. Counted: parameters; every sender's output delta and
    its ablated value `[senders, batch, pos, d_model]` (one of them under zero ablation); every
    head's committed and ablated q/k/v `[3, layers, heads, batch, pos, d_head]`; the cache of
    committed receiver inputs (bounded); and the largest per-layer temporaries (the q/k/v
    inputs' normalised residual copies, an MLP's hidden layer, one layer's attention
    patterns); the unembedding (the cache of head-to-vocabulary factors, bounded, and three
    logits-sized tensors at the metric positions, one per prompt unless `n_positions` says
    otherwise). Not counted: the Python runtime and libraries (about 0.5-1 GB resident).
    """
    tokens = batch * seq_len
    per_layer = 4 * shape.n_heads * shape.d_model * shape.d_head
    if shape.has_mlp:
        per_layer += 2 * shape.d_model * shape.d_mlp
    n_params = shape.n_layers * per_layer + (2 * shape.d_vocab + shape.n_ctx) * shape.d_model
    caches = (1 if ablation == "zero" else 2) * n_senders * tokens * shape.d_model
    qkv = 2 * 3 * shape.n_layers * shape.n_heads * tokens * shape.d_head
    temporaries = max(3 * 3 * shape.n_heads * tokens * shape.d_model,
                      2 * tokens * (shape.d_mlp or 0),
                      2 * shape.n_heads * batch * seq_len * seq_len)
    n_receivers = shape.n_layers * (3 * shape.n_heads + int(shape.has_mlp)) + 1
    unembedding = 3 * (n_positions or batch) * shape.d_vocab
    sizes = {"params": n_params, "caches": caches, "qkv": qkv, "temporaries": temporaries,
             "unembedding": unembedding}
    result = {name: count * bytes_per_number for name, count in sizes.items()}
    result["inputs"] = min(INPUT_CACHE_BYTES, n_receivers * tokens * shape.d_model * bytes_per_number)
    factors = shape.n_layers * shape.n_heads * shape.d_head * shape.d_vocab * bytes_per_number
    result["unembedding"] += min(FACTOR_CACHE_BYTES, factors)
    result["n_params"] = n_params
    result["total"] = sum(result[name] for name in (*sizes, "inputs"))
    return result
