"""Faithfulness: how much of the model's behaviour on a task a circuit's edges carry.

For a circuit C (a set of kept edges) and a metric m:

- m(M), the full model: every edge kept;
- m(empty), the empty circuit: every edge ablated (under corrupt ablation, the corrupted run);
- m(C), the circuit: kept edges carry their clean values, every other edge its ablated value;
- m(complement): C's edges ablated, every other edge kept (the completeness check: a circuit
  that explains the behaviour leaves little of it behind);
- f(C) = (m(C) - m(empty)) / (m(M) - m(empty)), the normalised faithfulness: 1 when the circuit
  does what the model does, 0 when it does no better than everything ablated. f of the
  complement is read the same way (near 0: little is left outside the circuit). f is None
  when m(M) = m(empty) (the task does not tell the model from its ablation).

**Signs.** The project's metrics are minimised (`acdc.core.metrics`: `logit_diff` is *minus*
the logit difference). Here values are reported as people read them: `logit_diff` and
`prob_diff` are the differences themselves (higher is better; positive for a model that does
the task), `kl`, `nll` and `l2` are what they are (lower is better; `kl` and `l2` are 0 for the
full model). f is the same in either convention (negating m negates both differences).
`METRIC_SIGN[name]` times a reported value gives the minimised one, as `circuit.json`'s
`metric_circuit` holds it.

**Which metrics.** `kl` and `l2` always (they compare with the model's own logits, which every
task has; `l2` is the metric of compiled models such as tracr's, but it moves with a constant
shift of the logits that changes no probability, so on language models read `kl`);
`logit_diff` and `prob_diff` when every prompt has answers and wrong answers; `nll` when every
metric position has a next token (the clean prompt's next token, or its first answer at its
end). All of them come from the same logits, so each extra metric costs nothing.

**Mean and spread.** A metric is one mean over every (prompt, position) pair, exactly as the
search computes it, so the `mean` of a circuit's own metric equals its `metric_circuit` (to
float rounding). The spread is over prompts: a prompt's value is the mean over its own metric
positions, and `std` (population, ddof 0), `min` and `max` are taken over those. With one
metric position per prompt, `mean` is also the mean of the per-prompt values.

**Cost.** One `PatchedModel` records the clean and the corrupted runs (two ordinary forward
passes); the full model's logits are the clean recording; the empty circuit needs only the
unembedding (with every edge into the logits ablated nothing upstream matters); every other
circuit is one patched pass, with all of its masks written at once. Evaluating a circuit with
its complement: the two recordings plus two patched passes.

**Curves** (the MIB circuit track): for a ranking of the edges (any list of (edge index,
score); the top-k are taken by |score|, edges without a score last), the circuit of the top
k = fraction x residual edges at each fraction of `MIB_FRACTIONS` (`acdc.core.selection`:
counted as MIB counts, the direct q/k/v edges following their inputs), pruned to the edges on
a path from `input` to `logits`, gives one point f(k). A node ranking (per-head and per-MLP
scores: HISP) gives a curve the same way, k being that fraction of the heads and MLPs and the
circuit every edge among the top k (`curve(node_scores=...)`). CPR is the trapezoid area under
f over the fractions (higher is better; f, and so CPR, can exceed 1), CMD the trapezoid area of
|1 - f| (0 is best). A curve costs one patched pass per distinct pruned circuit (at most one
per fraction; all edges and no edge are free).

**Circuits at positions** (`--positions labels|all`, `acdc.core.graph`): the same measures
over the positional graph. A circuit keeps edges at position groups; the patched pass reads an
edge's live value at its group's tokens when the edge is kept there and the ablated value when
it is not (`acdc.core.patching`), so the full model and the empty circuit are the blind ones,
every metric is read as for a blind circuit, and the complement ablates exactly the (edge,
group) pairs the circuit keeps.
The task's tokens are grouped by `acdc.core.positions` (a task that groups them under other
names is one `TaskError` line; the circuit file's digest is checked by the caller,
`acdc.core.positions.check_assignment`). A curve ranks positional edges: k is a fraction of
the positional residual edges, and pruning reads `logits` at the groups holding a metric
position, as discovery prunes.

For an ACDC circuit the scores are the metric changes measured when each edge was tested, each
in the circuit of that moment (kept edges scored at least the threshold; removed edges below,
some negative: their removal helped the metric); edges removed untested because their node was
dead have none and rank last. Ranked by |score|, these mix contexts: every score was measured
against a different circuit, and an edge removed with a large negative score ranks near the
top. A sweep's rank score, the largest threshold at which an edge is still kept (+inf when kept
at every threshold: auto-circuit's convention), ranks edges by how firmly ACDC keeps them and
is the better ranking for ACDC; `CircuitEvaluator.curve` takes any ranking, so a sweep's plugs in.

Examples:
    >>> evaluator = CircuitEvaluator(loaded_model, task, circuit.graph, "corrupt")  # doctest: +SKIP
    >>> result = evaluator.evaluate(circuit.kept)  # doctest: +SKIP
    >>> result.metrics["kl"].faithfulness  # doctest: +SKIP
    0.97
    >>> evaluator.curve(ranking_from_scores(circuit.scores)).cpr["kl"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from acdc.core.graph import Graph
from acdc.core.metrics import MetricTargets, metric_targets, position_metric
from acdc.core.patching import PatchedModel, task_tensors
from acdc.core.positions import metric_groups
from acdc.core.recordings import Recordings
from acdc.core.selection import (
    Selection,
    edges_among,
    edges_at,
    residual_edges,
    scored_nodes,
    select_edges,
    select_nodes,
)
from acdc.core.selection import n_residual as count_residual
from acdc.core.selection import prune as prune_edges
from acdc.core.settings import METRICS, NEEDS_ANSWER_AND_WRONG
from acdc.errors import AcdcError, GraphError
from acdc.evaluation.measures import (
    METRIC_SIGN,
    MIB_FRACTIONS,
    CurvePoint,
    Evaluation,
    FaithfulnessCurve,
    MetricEvaluation,
    Ranking,
    Spread,
    cmd,
    cpr,
    normalised,
    ranking_scores,
)

if TYPE_CHECKING:
    from acdc.core.loading import LoadedModel
    from acdc.core.tasks.values import Task

def supported_metrics(targets: MetricTargets) -> list[str]:
    """The metrics a task's targets allow, in `METRICS` order (see the module docstring)."""
    has_answers = targets.answers is not None and targets.wrong is not None
    has_next = targets.next_token is not None and not bool((targets.next_token < 0).any())
    allowed = {"kl", "l2"} | (set(NEEDS_ANSWER_AND_WRONG) if has_answers else set()) | (
        {"nll"} if has_next else set())
    return [name for name in METRICS if name in allowed]


def _unsupported(name: str, task_name: str, allowed: list[str]) -> str:
    need = ("an answer and a wrong answer on every prompt" if name in NEEDS_ANSWER_AND_WRONG
            else "a next token at every metric position (an answer where a prompt ends)")
    return (f"metric {name} needs {need}, which task {task_name} does not give; use one of "
            f"{', '.join(allowed)}")


def check_graph_fits(graph: Graph, model: LoadedModel, source: str = "the circuit") -> None:
    """Refuse, in one line, a circuit whose graph is not the model's (a circuit at positions:
    whose graph, without its groups, is not the model's)."""
    expected = model.shape.graph_shape(graph.granularity)
    if graph.shape.blind() != expected:
        raise GraphError(f"{source}: its graph ({_describe(graph.shape)}) is not the graph of "
                         f"model {model.name} ({_describe(expected)}); evaluate it with the model "
                         f"it was found on (--model)")


def _describe(shape) -> str:
    mlps = "MLPs" if shape.has_mlp else "attention only"
    return f"{shape.n_layers} layers, {shape.n_heads} heads, {mlps}"


class CircuitEvaluator:
    """A task's clean and corrupted runs on one model, ready to evaluate any number of circuits
    of `graph` (one patched pass each).

    `metrics` None evaluates every metric the task supports; naming one it does not support is
    an `AcdcError`. `passes` counts the patched passes run so far (the recordings not included).
    `recordings` are the task's runs on this model and graph when already recorded
    (`acdc.core.recordings`: a sweep records once for its searches and their evaluations).
    `graph` may be positional (module docstring): the task's tokens are then grouped by its
    groups.
    """

    def __init__(self, model: LoadedModel, task: Task, graph: Graph, ablation: str,
                 metrics: Sequence[str] | None = None, recordings: Recordings | None = None):
        check_graph_fits(graph, model)
        self.graph = graph
        self.n_edges = len(graph.edges)
        self.n_prompts = task.n_prompts
        self.passes = 0
        weights = model.weights
        device = weights.W_E.device
        targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers,
                                 device)
        allowed = supported_metrics(targets)
        chosen = allowed if metrics is None else list(dict.fromkeys(metrics))
        if not chosen:
            raise AcdcError(f"no metric to evaluate: use one or more of {', '.join(allowed)}")
        for name in chosen:
            if name not in METRICS:
                raise AcdcError(f"unknown metric {name!r}: use one of {', '.join(METRICS)}")
            if name not in allowed:
                raise AcdcError(_unsupported(name, task.name, allowed))
        self.metrics = [name for name in METRICS if name in chosen]
        # a positional graph: each token's group (a task grouped otherwise is one TaskError
        # line), and the groups where `logits` is read, which a curve's pruning starts from
        self.sinks = (metric_groups(task, graph.groups, graph.shape.positions)
                      if graph.positional else None)
        with torch.inference_mode():
            tensors = task_tensors(task, device, weights.causal, graph.shape)
            if recordings is None:
                self.patched = PatchedModel(weights, graph, tensors.clean, tensors.corrupt,
                                            tensors.pos_batch, tensors.pos_index, ablation,
                                            tensors.lengths, groups=tensors.groups)
            else:
                recordings.check(graph, tensors, ablation)
                self.patched = recordings.for_circuits()
        self._metric = {name: position_metric(name, self.patched.clean_logits, targets)
                        for name in self.metrics}
        self._prompt_of = tensors.pos_batch.cpu()
        self._per_prompt_count = torch.bincount(self._prompt_of, minlength=self.n_prompts).double()
        self._signs = torch.tensor([float(METRIC_SIGN[name]) for name in self.metrics],
                                   dtype=torch.float64)
        self.n_positions = len(tensors.pos_batch)
        self._cache: dict[bytes, dict[str, Spread]] = {}
        self.full = self.spreads(torch.ones(self.n_edges, dtype=torch.bool))
        self.empty = self.spreads(torch.zeros(self.n_edges, dtype=torch.bool))

    # ------------------------------------------------------------------ circuits

    def _kept(self, kept: Sequence[bool] | torch.Tensor) -> torch.Tensor:
        flags = torch.as_tensor(kept if isinstance(kept, torch.Tensor) else list(kept))
        if flags.shape != (self.n_edges,):
            raise GraphError(f"a circuit of this graph needs {self.n_edges} kept flags, got "
                             f"{tuple(flags.shape)}")
        return flags.to(device="cpu", dtype=torch.bool)

    def logits(self, kept: Sequence[bool] | torch.Tensor) -> torch.Tensor:
        """The circuit's logits at the metric positions `[n_positions, d_vocab]`."""
        flags = self._kept(kept)
        self.passes += int(bool(flags.any()) and not bool(flags.all()))
        with torch.inference_mode():
            return self.patched.circuit_logits(flags)

    def spreads(self, kept: Sequence[bool] | torch.Tensor) -> dict[str, Spread]:
        """Every metric of the circuit, reported with its usual sign (cached per circuit)."""
        flags = self._kept(kept)
        key = flags.numpy().tobytes()
        if key not in self._cache:
            logits = self.logits(flags)
            with torch.inference_mode():
                self._cache[key] = self._spreads(logits)
        return self._cache[key]

    def _spreads(self, logits: torch.Tensor) -> dict[str, Spread]:
        """Every metric's spread from the circuit's logits, the metrics side by side."""
        values = [self._metric[name](logits) for name in self.metrics]
        # The mean as the search takes it (same dtype and reduction), so it equals the run's
        # metric_circuit; the spread over prompts in float64. A sign is +-1: minimised =
        # reported * sign, and the other way round.
        means = torch.stack([v.mean(-1) for v in values]).tolist()
        per_position = torch.stack(values).double().cpu() * self._signs[:, None]
        per_prompt = torch.zeros(len(values), self.n_prompts, dtype=torch.float64).index_add_(
            1, self._prompt_of, per_position) / self._per_prompt_count
        stds = per_prompt.std(1, correction=0).tolist()
        lows, highs = per_prompt.min(1).values.tolist(), per_prompt.max(1).values.tolist()
        rows = per_prompt.tolist()
        return {name: Spread(mean=means[i] * METRIC_SIGN[name], std=stds[i], min=lows[i],
                             max=highs[i], per_prompt=tuple(rows[i]))
                for i, name in enumerate(self.metrics)}

    def evaluate(self, kept: Sequence[bool] | torch.Tensor) -> Evaluation:
        """The full model, the empty circuit, the circuit and its complement, every metric."""
        flags = self._kept(kept)
        circuit = self.spreads(flags)
        complement = self.spreads(~flags)
        metrics = {name: MetricEvaluation(name, self.full[name], self.empty[name], circuit[name],
                                          complement[name]) for name in self.metrics}
        return Evaluation(metrics, self.n_edges, int(flags.sum()), self.n_prompts,
                          self.n_positions)

    def curve(self, ranking: Ranking | None = None,
              fractions: Sequence[float] = MIB_FRACTIONS, prune: bool = True,
              node_scores: Mapping[str, float | None] | None = None) -> FaithfulnessCurve:
        """f of the top-k edges of `ranking` at each fraction of the graph's residual edges
        (counted as MIB counts them: `acdc.core.selection`; pruned unless `prune` is False),
        and each metric's CPR and CMD.

        With `node_scores` instead (a node circuit's scores: HISP), k is that fraction of the
        heads and MLPs, and each point's circuit is every edge among the top k of them
        (`select_nodes`, `edges_among`), as the node circuit a method returns."""
        if (ranking is None) == (node_scores is None):
            raise ValueError("give a ranking of the edges or node scores")
        points = []
        if node_scores is not None:
            units = scored_nodes(self.graph)
            n_total = len(units)
            n_scored = sum(1 for u in units
                           if (s := node_scores.get(u)) is not None and not math.isnan(s))
        else:
            assert ranking is not None
            scores, n_scored = ranking_scores(ranking, self.n_edges)
            n_total = len(residual_edges(self.graph))
        for fraction in fractions:
            n = edges_at(fraction, n_total)
            if node_scores is not None:
                nodes = select_nodes(self.graph, node_scores, Selection(top_n=n))
                kept = edges_among(self.graph, nodes)
            else:
                kept = select_edges(self.graph, scores, Selection(top_n=n))
            if prune:
                kept = prune_edges(self.graph, kept, self.sinks)
            spreads = self.spreads(kept)
            values = {name: spreads[name].mean for name in self.metrics}
            f = {name: normalised(values[name], self.full[name].mean, self.empty[name].mean)
                 for name in self.metrics}
            points.append(CurvePoint(float(fraction), n, count_residual(self.graph, kept),
                                     values, f))
        xs = [p.fraction for p in points]
        return FaithfulnessCurve(
            points=tuple(points),
            cpr={name: cpr(xs, [p.faithfulness[name] for p in points]) for name in self.metrics},
            cmd={name: cmd(xs, [p.faithfulness[name] for p in points]) for name in self.metrics},
            n_edges_total=n_total, n_scored=n_scored, pruned=prune,
            level="edge" if node_scores is None else "node")
