"""Subnetwork probing (Cao, Sanh, Rush 2021) as the ACDC paper ran it (Conmy et al. 2023,
section 4.2): learn a gate on each head's query, key and value and on each MLP's output.

Each gate is hard concrete (`acdc.core.hard_concrete`: l = -0.1, r = 1.1, beta = 2/3; u
clamped to [1e-4, 1 - 1e-4]) with log-alpha initialised to ln 5 (so each gate starts open with
probability 0.96, the ACDC code's p = 0.9 before stretching). A gate on a head's query mixes
`z * q_live + (1 - z) * q_ablated`, which is the direct edge `a1.h2<q>->a1.h2` of the graph with
a fractional mask; a gate on an MLP mixes its output for every receiver alike (a node mask).
Each step samples every gate once (shared by all prompts and positions), runs the clean prompts
through the masked forward (`acdc.core.masked`) and descends

    loss = metric(masked logits) + lambda * R

with Adam at `lr` (1e-3), where the metric is the run's (KL to the full model by default, or
the task's metric: `--metric`) and R is the ACDC code's normalised expected L0: the probability
that a gate is open, averaged over each hook point's gates (a layer's queries, its keys, its
values, its MLP) and then over the hook points. `--lambda` weighs it; the paper swept it
(tracr: 10^linspace(-3, 0, 11); GPT-2 tasks with KL: 0.01 to 250).

**The circuit** is a node circuit. A gate is read out open when its log-alpha is >= 0: the
median of its distribution, and the test-time gate of Louizos et al. (sigmoid(log-alpha)
stretched and clamped) at least 1/2. The ACDC code instead thresholds one random sample at 0.5
(`--readout sample`, seeded by the run's seed), which can change the circuit from one seed to
the next for gates that are not saturated; the deterministic readout gives the same circuit for
the same masks, which comparisons and sweeps need. A head belongs to the circuit unless its q,
k and v gates are all closed; the circuit is every edge among kept nodes (`input` and `logits`
always), less the edges into a closed q, k or v input and that input's direct edge (as the ACDC
code removes them), pruned to the edges on a path from input to logits.

Scores: sigmoid(log-alpha) of a gate (in (0, 1), at least 1/2 exactly when the gate reads out
open, ordered as log-alpha, so ranking by |score| ranks gates). Each head's node score is that
of the largest of its q, k and v log-alphas, each MLP's its gate's; an edge's score is the
smaller of its two ends' (a q/k/v input counting as its own gate), so keeping every edge whose
score is >= 1/2 is the deterministic circuit, and the ranking gives curves and ROC at edge or
node level (the edge `input->logits`, which no gate
touches, scores as the highest gate).

Differences from the ACDC code: there a zero-ablated gate multiplies the activation by z (q,
k, v of 0 and an MLP output of 0 including `b_out`); here every ablation is the project's
(`acdc.core.patching`: zero ablation replaces a head's query by that of a bias-only residual
stream and an MLP's output without `b_out`). Every ablation (corrupt, zero, mean,
mean-positional) can be used.

Ctrl-C or SIGTERM stops training after the last complete step; the circuit is read out from the
masks as they are, marked partial.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from acdc.core.settings import CommonSettings
from acdc.errors import AcdcError
from acdc.methods.base import Discovery, KeptEdges, Method, option

if TYPE_CHECKING:
    import torch

    from acdc.core.graph import Graph

INIT = math.log(5.0)  # log(p / (1 - p)) with p = (0.9 - l) / (r - l): the ACDC code's init
EPS = 1e-4  # u clamped to [eps, 1 - eps]
READOUTS: tuple[str, ...] = ("deterministic", "sample")


@dataclass(frozen=True)
class SpSettings:
    """Subnetwork probing's settings."""

    lambda_l0: float = option(
        1.0, flag="--lambda",
        help="sp: weight of the normalised expected L0 (the fraction of gates open, averaged "
             "per hook point) added to the metric.")
    steps: int = option(10000, help="sp: optimisation steps, each one masked forward and "
                                    "backward pass over every prompt (the paper: 10000).")
    lr: float = option(1e-3, help="sp: Adam's learning rate for the gates' log-alphas.")
    readout: Literal["deterministic", "sample"] = option(
        "deterministic",
        help="sp: how the final gates are read: deterministic (open when log-alpha >= 0) or "
             "sample (one random sample thresholded at 0.5, as the ACDC code).")

    def validate(self) -> None:
        for name, value in (("lambda", self.lambda_l0), ("lr", self.lr)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0 or (name == "lr" and value == 0)):
                raise AcdcError(f"--{name} must be a number {'> 0' if name == 'lr' else '>= 0'}"
                                f", got {value!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise AcdcError(f"--steps must be a whole number >= 1, got {self.steps!r}")
        if self.readout not in READOUTS:
            raise AcdcError(f"unknown readout {self.readout!r}: use one of {', '.join(READOUTS)}")


def _check(settings: SpSettings, common: CommonSettings) -> None:
    if common.granularity != "qkv":
        raise AcdcError("method sp gates each head's q, k and v: use --granularity qkv")


@dataclass(frozen=True)
class Gates:
    """Which entries of the edge and node masks the gates drive: the direct edges (3 per head
    and layer, in graph order: per layer q heads, k heads, v heads) and the MLP senders."""

    direct: list[int]  # edge indices
    mlps: list[int]  # sender indices
    n_heads: int
    n_layers: int

    @classmethod
    def of(cls, graph: Graph) -> Gates:
        direct = [e.index for e in graph.edges if e.kind == "direct"]
        mlps = [s.index for s in graph.senders if s.kind == "mlp"]
        return cls(direct, mlps, graph.n_heads, graph.n_layers)


def regulariser(direct: torch.Tensor, mlps: torch.Tensor, gates: Gates) -> torch.Tensor:
    """The ACDC code's R: P(gate open) averaged over each hook point's gates (a layer's q
    heads, k heads, v heads; an MLP), then over the hook points."""
    import torch

    from acdc.core import hard_concrete

    per_hook = hard_concrete.p_open(direct).view(gates.n_layers * 3, gates.n_heads).mean(-1)
    if len(mlps):
        per_hook = torch.cat([per_hook, hard_concrete.p_open(mlps)])
    return per_hook.mean()


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _circuit(graph: Graph, gates: Gates, direct_alpha: list[float], mlp_alpha: list[float],
             direct_on: list[bool], mlp_on: list[bool]
             ) -> tuple[list[bool], list[float | None], dict[str, float | None]]:
    """Kept flags (before pruning), edge scores and node scores, from the gates' log-alphas
    and readouts. Scores are sigmoid(log-alpha) of the gates they take: in (0, 1), >= 1/2
    exactly for an open gate, ordered as log-alpha."""
    gate_of: dict[str, tuple[float, bool]] = {}  # q/k/v input name -> (log-alpha, open)
    for i, index in enumerate(gates.direct):
        gate_of[graph.edges[index].receiver.name] = (direct_alpha[i], direct_on[i])
    node: dict[str, tuple[float, bool]] = {}
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            name = f"a{layer}.h{head}"
            inputs = [gate_of[f"{name}<{qkv}>"] for qkv in ("q", "k", "v")]
            node[name] = (max(a for a, _ in inputs), any(on for _, on in inputs))
    for i, index in enumerate(gates.mlps):
        node[graph.senders[index].name] = (mlp_alpha[i], mlp_on[i])
    top = max([0.0, *direct_alpha, *mlp_alpha])  # input -> logits: no gate, always kept
    kept: list[bool] = []
    scores: list[float | None] = []
    for edge in graph.edges:
        ends: list[tuple[float, bool]] = []
        if edge.kind == "direct":
            ends.append(gate_of[edge.receiver.name])
        else:
            assert edge.sender is not None  # a residual edge
            if edge.sender.name in node:
                ends.append(node[edge.sender.name])
            receiver = edge.receiver
            if receiver.name in gate_of:
                ends.append(gate_of[receiver.name])
            elif receiver.name in node:
                ends.append(node[receiver.name])
        kept.append(all(on for _, on in ends))
        scores.append(_sigmoid(min(a for a, _ in ends) if ends else top))
    node_scores: dict[str, float | None] = {name: _sigmoid(a) for name, (a, _) in node.items()}
    return kept, scores, node_scores


def discover(job: Discovery) -> KeptEdges:
    import torch

    from acdc.core import hard_concrete
    from acdc.core.training import MaskProblem, TrainingProgress, run_steps

    settings: SpSettings = job.settings
    _check(settings, job.common)
    graph = job.graph
    started = time.perf_counter()
    problem = MaskProblem.of(job.model, job.task, graph, job.common)
    masked, metric = problem.masked, problem.metric
    device = masked.device
    gates = Gates.of(graph)
    generator = torch.Generator().manual_seed(job.seed)
    direct_alpha = torch.full((len(gates.direct),), INIT, device=device, requires_grad=True)
    mlp_alpha = torch.full((len(gates.mlps),), INIT, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([direct_alpha, mlp_alpha], lr=settings.lr)
    direct_index = torch.tensor(gates.direct, dtype=torch.long, device=device)
    mlp_index = torch.tensor(gates.mlps, dtype=torch.long, device=device)
    all_edges = torch.ones(len(graph.edges), device=device)
    all_nodes = torch.ones(len(graph.senders), device=device)
    last: dict[str, float] = {}

    def sampled(alpha: torch.Tensor) -> torch.Tensor:
        return hard_concrete.sample(alpha, hard_concrete.uniform(
            alpha.shape, EPS, generator, device, alpha.dtype))

    def step(i: int) -> TrainingProgress:
        edges = all_edges.scatter(0, direct_index, sampled(direct_alpha))
        nodes = all_nodes.scatter(0, mlp_index, sampled(mlp_alpha)) if len(gates.mlps) else None
        objective = metric(masked.logits(edges, nodes))
        reg = regulariser(direct_alpha, mlp_alpha, gates)
        loss = objective + settings.lambda_l0 * reg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last.update(loss=float(loss.detach()), objective=float(objective.detach()),
                    regulariser=float(reg.detach()))
        return TrainingProgress("sp", i + 1, settings.steps, last["loss"], last["objective"],
                                1 - last["regulariser"], None, time.perf_counter() - started)

    done, interrupted = run_steps(settings.steps, step, job.on_progress)
    with torch.no_grad():
        if settings.readout == "sample":
            direct_on = (sampled(direct_alpha) >= 0.5).tolist()
            mlp_on = (sampled(mlp_alpha) >= 0.5).tolist()
        else:
            direct_on = (direct_alpha >= 0).tolist()
            mlp_on = (mlp_alpha >= 0).tolist()
    kept, scores, node_scores = _circuit(graph, gates, direct_alpha.detach().double().tolist(),
                                         mlp_alpha.detach().double().tolist(), direct_on, mlp_on)
    heads_open = int(torch.tensor(direct_on).view(gates.n_layers, 3, gates.n_heads)
                     .any(1).sum())
    results = {"partial": interrupted, "steps_done": done, "final_loss": last.get("loss"),
               "final_objective": last.get("objective"),
               "regulariser": last.get("regulariser"), "heads_open": heads_open,
               "mlps_open": sum(mlp_on), "gates_open": sum(direct_on) + sum(mlp_on)}
    return KeptEdges(kept, scores, results, prune=True, meter=problem.meter(),
                     node_scores=node_scores)


METHOD = Method(
    name="sp",
    description="subnetwork probing (Cao et al. 2021, as the ACDC paper ran it): hard-concrete "
                "gates on each head's q, k, v and each MLP, learnt with an L0 penalty --lambda",
    run=discover,
    returns="kept",
    settings_type=SpSettings,
    check=_check,
    citation="Cao, Sanh, Rush. Low-Complexity Probing via Finding Subnetworks. NAACL 2021. "
             "arXiv:2104.03514; as run in Conmy et al., Towards Automated Circuit Discovery "
             "for Mechanistic Interpretability, NeurIPS 2023, arXiv:2304.14997",
)
