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

**Normalisation.** A score is summed over prompts and metric positions of the metric's mean,
so it is the estimated change of the run's metric itself, in its units (comparable to ACDC's
threshold and to `exact` patching). The EAP-IG library (MIB) differentiates the mean metric
of each batch of its dataloader, adds the batches up and divides by the number of prompts N:
its score is this one divided by its batch size B. `per_prompt` divides by N, which is the
library's score when it reads the prompts as one batch (B = N; `benchmarks/peer_eap_ig.py`
compares the two); with MIB's batches of 20 the library's scores are N/20 times these. The
ranking, and so every circuit a rule chooses, is the same either way.

The circuit is chosen from the scores by the pipeline's one selection rule
(`acdc.core.selection`: `--top-n`, `--edges-fraction`, `--threshold`, counted in residual
edges as MIB counts them, then pruned). Direct q/k/v edges are scored too, for the record and
for curves, but follow their inputs in a circuit.

KL to the clean run (and the L2 distance to its logits) is minimal at the clean run, so its
gradient there is zero and plain EAP would score every edge 0: `eap` refuses those metrics;
`eap-ig` takes them (its points lie away from the clean run).

Every ablation works (`corrupt`, `zero`, `mean`, `mean-positional`): the ablated values are
those of `acdc.core.patching`, the same an ACDC run removes edges to.

>>> scores, meter = edge_attribution(loaded_model, task, CommonSettings(metric="logit_diff"),
...                                  EapIgSettings(ig_steps=5))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from acdc.core.settings import ZERO_GRADIENT, CommonSettings
from acdc.errors import AcdcError
from acdc.methods.base import Discovery, EdgeScores, Method, option


@dataclass(frozen=True)
class EapSettings:
    """EAP's settings: how scores are normalised."""

    per_prompt: bool = option(
        False, help="eap/eap-ig: divide every score by the number of prompts N: the EAP-IG "
                    "library's scores when it reads the prompts as one batch (in batches of B "
                    "its scores are N/B times these). By default a score is the estimated "
                    "change of the metric itself, in its units (as ACDC's threshold).")

    @property
    def alphas(self) -> tuple[float, ...]:
        """Where on the line from the ablated to the clean input the gradient is taken."""
        return (1.0,)


@dataclass(frozen=True)
class EapIgSettings(EapSettings):
    """EAP-IG's settings: `ig_steps`, the number of points the gradient is averaged over
    (alpha = 0, 1/m, ..., (m - 1)/m; the authors use 5)."""

    ig_steps: int = option(
        5, help="eap-ig: points on the line from the ablated to the clean input embedding that "
                "the gradient is averaged over.")

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(k / self.ig_steps for k in range(self.ig_steps))

    def validate(self) -> None:
        steps = self.ig_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise AcdcError(f"--ig-steps must be a whole number >= 1, got {steps!r}")


def method_name(settings: EapSettings) -> str:
    return "eap-ig" if isinstance(settings, EapIgSettings) else "eap"


def check_metric(method: str, metric: str) -> None:
    """Refuse plain EAP with a metric whose gradient vanishes at the clean run."""
    if method == "eap" and metric in ZERO_GRADIENT:
        raise AcdcError(f"method eap cannot use metric {metric}: {ZERO_GRADIENT[metric]}, so "
                        f"every edge would score 0; use a task metric (--metric logit_diff, "
                        f"prob_diff or nll) or --method eap-ig, whose points lie away from the "
                        f"clean run")


def discover(job: Discovery) -> EdgeScores:
    from acdc.methods.attribution.scores import edge_attribution  # torch: once a run starts

    start = time.perf_counter()
    scores, meter = edge_attribution(job.model, job.task, job.common, job.settings, job.graph)
    return EdgeScores(scores, {"scoring_s": time.perf_counter() - start}, meter)


def _check(settings: EapSettings, common: CommonSettings) -> None:
    check_metric(method_name(settings), common.metric)


EAP = Method(
    name="eap",
    description="edge attribution patching (Syed et al. 2023): every edge scored from one "
                "gradient at the clean run; the circuit is the top edges by |score|",
    run=discover,
    settings_type=EapSettings,
    check=_check,
    positions=True,
    citation="Syed, Rager, Conmy. Attribution Patching Outperforms Automated Circuit "
             "Discovery. 2023. arXiv:2310.10348",
)
EAP_IG = Method(
    name="eap-ig",
    description="EAP with integrated gradients over the input embedding (Hanna et al. 2024): "
                "the gradient averaged over ig_steps points from the ablated to the clean input",
    run=discover,
    settings_type=EapIgSettings,
    check=_check,
    positions=True,
    citation="Hanna, Pezzelle, Belinkov. Have Faith in Faithfulness: Going Beyond Circuit "
             "Overlap When Finding Model Mechanisms. COLM 2024. arXiv:2403.17806",
)
