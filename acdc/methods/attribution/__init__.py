"""Attribution methods: EAP and EAP-IG score every edge of the graph at once from gradients.

Edge attribution patching (EAP, Syed et al. 2023) gives every edge u -> v of ACDC's graph
(residual edges and direct q/k/v edges, at either granularity) the signed score

    score(u -> v) = (a_u(ablated) - a_u(clean)) . dm/dx_v

the first-order estimate of the metric's change when that edge alone carries its ablated value
(the same quantity ACDC measures exactly when it tests an edge of the full graph; metrics are
"lower is better", so a positive score means the edge matters for the behaviour). EAP takes
the gradient at the clean run: the clean and ablated runs, then one forward and one backward
pass. EAP-IG (inputs; Hanna et al. 2024) averages the gradient over `ig_steps` points on the
straight line from the ablated to the clean input embedding. `gradients.py` computes the
scores; see its docstring for how.

The circuit is then chosen by one rule: the `top_n` edges by |score|, the edges with
|score| >= `threshold`, or the top `edges_fraction` of all edges; then the kept edges that lie
on no path from `input` to `logits` through kept edges are dropped (`Graph.connected`), so a
circuit may hold fewer edges than asked for. Direct edges compete like any other edge: a
head's q input whose direct edge is not kept feeds nothing, and the edges into it are dropped.
Without a rule the task's threshold is the score threshold (a score is in the metric's units,
as ACDC's threshold is).

KL to the clean run (and the L2 distance to its logits) is minimal at the clean run, so its
gradient there is zero and plain EAP would score every edge 0: `eap` refuses those metrics;
`eap-ig` takes them (its points lie away from the clean run).

Every ablation works (`corrupt`, `zero`, `mean`, `mean-positional`): the ablated values are
those of `acdc.core.patching`, the same an ACDC run removes edges to.

>>> circuit = run_attribution(loaded_model, task, CommonSettings(metric="logit_diff"),
...                           EapSettings(top_n=100))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from acdc.core import forward
from acdc.core.circuit import Circuit, score_or_none
from acdc.core.graph import Graph, build_graph
from acdc.core.metrics import build_metric, metric_targets
from acdc.core.models import extract_weights
from acdc.core.patching import PatchedModel, Stage, task_tensors
from acdc.core.settings import CommonSettings, settings_record
from acdc.core.tasks import TaskSpec
from acdc.errors import AcdcError, RunWarning
from acdc.methods.attribution.gradients import differentiate, edge_scores
from acdc.methods.base import Discovery, Method, refuse_unknown_options

if TYPE_CHECKING:
    from acdc.core.models import LoadedModel
    from acdc.core.tasks import Task

RULES: tuple[str, ...] = ("top_n", "threshold", "edges_fraction")
ZERO_GRADIENT = {
    "kl": "KL to the clean run has zero gradient at the clean run itself",
    "l2": "the distance to the clean run's logits has zero gradient at the clean run itself",
}


@dataclass(frozen=True)
class EapSettings:
    """EAP's settings: exactly one rule choosing the circuit from the scores. `top_n`: the n
    edges with the largest |score|; `threshold`: every edge with |score| >= it;
    `edges_fraction`: the top fraction of all edges (rounded to the nearest count)."""

    top_n: int | None = None
    threshold: float | None = None
    edges_fraction: float | None = None

    @property
    def alphas(self) -> tuple[float, ...]:
        """Where on the line from the ablated to the clean input the gradient is taken."""
        return (1.0,)

    def validate(self) -> None:
        given = [rule for rule in RULES if getattr(self, rule) is not None]
        if len(given) != 1:
            flags = ", ".join("--" + rule.replace("_", "-") for rule in RULES)
            raise AcdcError(f"give exactly one of {flags} (got "
                            f"{' and '.join(given) if given else 'none'})")
        top_n, threshold, fraction = self.top_n, self.threshold, self.edges_fraction
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int)
                                  or top_n < 1):
            raise AcdcError(f"top_n must be a whole number >= 1, got {top_n!r}")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold) or threshold < 0):
            raise AcdcError(f"threshold must be a finite number >= 0, got {threshold!r}")
        if fraction is not None and (isinstance(fraction, bool)
                                     or not isinstance(fraction, (int, float))
                                     or not 0 < fraction <= 1):
            raise AcdcError(f"edges_fraction must be in (0, 1], got {fraction!r}")


@dataclass(frozen=True)
class EapIgSettings(EapSettings):
    """EAP-IG's settings: a rule as EAP's, and `ig_steps`, the number of points the gradient
    is averaged over (alpha = 0, 1/m, ..., (m - 1)/m; the authors use 5)."""

    ig_steps: int = 5

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(k / self.ig_steps for k in range(self.ig_steps))

    def validate(self) -> None:
        super().validate()
        steps = self.ig_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise AcdcError(f"ig_steps must be a whole number >= 1, got {steps!r}")


def method_name(settings: EapSettings) -> str:
    return "eap-ig" if isinstance(settings, EapIgSettings) else "eap"


def check_metric(method: str, metric: str) -> None:
    """Refuse plain EAP with a metric whose gradient vanishes at the clean run."""
    if method == "eap" and metric in ZERO_GRADIENT:
        raise AcdcError(f"method eap cannot use metric {metric}: {ZERO_GRADIENT[metric]}, so "
                        f"every edge would score 0; use a task metric (--metric logit_diff, "
                        f"prob_diff or nll) or --method eap-ig, whose points lie away from the "
                        f"clean run")


def select(scores: torch.Tensor, settings: EapSettings) -> list[bool]:
    """The edges the settings' rule keeps, before pruning (ties in |score| go to the edge
    earlier in the graph's order)."""
    size = scores.abs().nan_to_num(nan=-1.0)
    if settings.threshold is not None:
        return (size >= settings.threshold).tolist()
    n = len(scores)
    if settings.top_n is not None:
        count = settings.top_n
    else:
        count = round((settings.edges_fraction or 0.0) * n)
    order = torch.sort(size, descending=True, stable=True).indices[:count]
    kept = torch.zeros(n, dtype=torch.bool)
    kept[order.cpu()] = True
    return kept.tolist()


def run_attribution(model: LoadedModel, task: Task, common: CommonSettings,
                    settings: EapSettings, graph: Graph | None = None) -> Circuit:
    """Score every edge (EAP, or EAP-IG with `EapIgSettings`), choose and prune the circuit,
    and measure its metric with one patched pass. `scores` are every edge's signed score."""
    common.validate()
    settings.validate()
    name = method_name(settings)
    check_metric(name, common.metric)
    start = time.perf_counter()
    if graph is None:
        graph = build_graph(model.shape.graph_shape(common.granularity))
    weights = extract_weights(model.model)
    device = weights.W_E.device
    tensors = task_tensors(task, device, weights.causal)
    targets = metric_targets(task.clean, task.positions, task.answers, task.wrong_answers, device)
    clean = None
    if settings.alphas == (1.0,):  # EAP: the differentiated clean pass is the clean run
        embedding = forward.embed(weights, tensors.clean)
        clean = differentiate(weights, graph, embedding, tensors.pos_batch, tensors.pos_index,
                              lambda logits: build_metric(common.metric, logits, targets),
                              record=True)
    with torch.no_grad():  # not inference mode: the gradient passes read these tensors
        patched = PatchedModel(weights, graph, tensors.clean, tensors.corrupt, tensors.pos_batch,
                               tensors.pos_index, common.ablation, tensors.lengths,
                               clean.recorded if clean is not None else None)
        metric = build_metric(common.metric, patched.clean_logits, targets)
        metric_full = float(metric(patched.clean_logits))
    scores = edge_scores(patched, metric, settings.alphas, clean)
    del clean
    selected = select(scores, settings)
    kept = graph.connected(selected)
    n_selected, n_kept = sum(selected), sum(kept)
    if n_kept == 0:
        rule = _rule_words(settings)
        why = (f"{rule} chooses no edge" if n_selected == 0 else
               f"the one edge {rule} chooses lies on no path from input to logits, so pruning "
               f"removed it" if n_selected == 1 else
               f"the {n_selected} edges {rule} chooses lie on no path from input to logits, so "
               f"pruning removed them all")
        warnings.warn(f"the circuit is empty: {why}; ask for more edges", RunWarning,
                      stacklevel=2)
    with torch.no_grad():
        patched.take_clean_qkv()  # not needed any more
        for edge in graph.edges:
            if not kept[edge.index]:
                patched.set_edge(edge, False)
        metric_circuit = float(metric(patched.logits_from(Stage(0))))
    return Circuit(
        graph=graph,
        kept=tuple(kept),
        scores=tuple(score_or_none(s) for s in scores.tolist()),
        settings={"model": model.name, "task": task.name, "method": name,
                  **settings_record(settings, common)},
        results={"n_edges_selected": n_selected, "metric_circuit": metric_circuit,
                 "metric_full": metric_full, "runtime_s": time.perf_counter() - start,
                 "partial": False},
    )


def _rule_words(settings: EapSettings) -> str:
    """The rule as the command line gives it: `--top-n 30`."""
    for rule in RULES:
        value = getattr(settings, rule)
        if value is not None:
            return f"--{rule.replace('_', '-')} {value:g}"
    return "the rule"


def _settings_maker(name: str, settings_type: type[EapSettings], known: set[str]):
    def make_settings(spec: TaskSpec, options: Mapping[str, Any]) -> EapSettings:
        """The options given; without a rule, the task's threshold as the score threshold
        (`--threshold` has already replaced the task's)."""
        refuse_unknown_options(name, options, known)
        check_metric(name, spec.metric)
        given = {key: value for key, value in options.items() if value is not None}
        rules = [rule for rule in RULES if rule in given]
        if len(rules) > 1:
            flags = " and ".join("--" + rule.replace("_", "-") for rule in rules)
            raise AcdcError(f"{flags} are two rules for choosing the circuit; give one")
        if not rules or rules == ["threshold"]:
            given["threshold"] = spec.threshold
        settings = settings_type(**given)
        settings.validate()
        return settings

    return make_settings


def discover(job: Discovery) -> Circuit:
    return run_attribution(job.model, job.task, job.common, job.settings)


EAP = Method(
    name="eap",
    description="edge attribution patching (Syed et al. 2023): every edge scored from one "
                "gradient at the clean run; the circuit is the top edges by |score|",
    settings_type=EapSettings,
    make_settings=_settings_maker("eap", EapSettings, set(RULES)),
    discover=discover,
)
EAP_IG = Method(
    name="eap-ig",
    description="EAP with integrated gradients over the input embedding (Hanna et al. 2024): "
                "the gradient averaged over ig_steps points from the ablated to the clean input",
    settings_type=EapIgSettings,
    make_settings=_settings_maker("eap-ig", EapIgSettings, {*RULES, "ig_steps"}),
    discover=discover,
)
