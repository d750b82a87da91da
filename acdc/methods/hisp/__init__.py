"""HISP (Michel, Levy and Neubig 2019) as the ACDC paper used it: heads and MLPs ranked by
the gradient of the metric with respect to a gate on their output.

Every head's output (`z @ W_O`, without `b_O`) and every MLP's output (without `b_out`) is
multiplied by a gate xi = 1. A unit's score is

    I(u) = sum over prompts of | d metric(prompt) / d xi_u |  =  sum over prompts of
           | sum over positions and d_model of  a_u . d metric(prompt) / d a_u |

(a_u the unit's output on that prompt; the absolute value is taken per prompt, then summed,
as the ACDC paper's code does). A prompt's metric is the mean of the run's metric over its
metric positions. One forward and one backward pass give every prompt's gradient at once:
the prompts of a batch do not interact, so the gradient of the summed metric with respect to
prompt i's activations is prompt i's own.

**Normalisation.** By default each layer's scores (its heads and its MLP together) are divided
by their joint L2 norm (at least 1e-6), as Michel et al. normalise head importance per layer
and as the ACDC paper's HISP code does; `raw_scores` keeps the sums.

**Differences from the ACDC paper's HISP.** Its gates sit on each head's q, k and v separately
(a head is removed only when all three are) and on the MLP's output with its bias; here a head
is one unit, gated on its output (as Michel et al. gate heads), and an MLP's bias is not part
of its output (as in the graph's senders). The ranking does not depend on the ablation; the
circuit of the top units is measured with the run's ablation like any other node circuit.

KL to the clean run (and the L2 distance to its logits) has zero gradient at the clean run:
every unit would score 0 (the ACDC paper's KL runs rank rounding noise), so hisp refuses them.

The circuit is a node circuit: the top units by score (`--top-n` units, `--edges-fraction` of
them, or a score `--threshold`; `acdc.core.selection.select_nodes`), with every edge among
them, `input` and `logits` (`edges_among`).

>>> circuit = run_method(HISP, loaded_model, task, CommonSettings(metric="logit_diff"),
...                      selection=Selection(top_n=10))  # doctest: +SKIP
>>> sorted(circuit.node_scores, key=circuit.node_scores.get)[-3:]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from acdc.core.settings import ZERO_GRADIENT, CommonSettings
from acdc.errors import AcdcError
from acdc.methods.base import Discovery, Method, NodeScores, option


@dataclass(frozen=True)
class HispSettings:
    """HISP's settings: whether scores are normalised per layer."""

    raw_scores: bool = option(
        False, help="hisp: rank by the summed gradients themselves, without dividing each "
                    "layer's scores by their joint L2 norm (Michel et al.'s normalisation, "
                    "which the ACDC paper's code applies).")


def check_metric(settings: HispSettings, common: CommonSettings) -> None:
    """Refuse a metric whose gradient vanishes at the clean run."""
    if common.metric in ZERO_GRADIENT:
        raise AcdcError(f"method hisp cannot use metric {common.metric}: "
                        f"{ZERO_GRADIENT[common.metric]}, so every head and MLP would score 0; "
                        f"use a task metric (--metric logit_diff, prob_diff or nll)")


def discover(job: Discovery) -> NodeScores:
    from acdc.methods.hisp.scores import unit_scores  # torch: once a run starts

    start = time.perf_counter()
    check_metric(job.settings, job.common)
    scores, meter = unit_scores(job.model, job.task, job.common, job.graph,
                                normalise=not job.settings.raw_scores)
    return NodeScores(scores, {"scoring_s": time.perf_counter() - start}, meter)


HISP = Method(
    name="hisp",
    description="head importance scores (Michel et al. 2019, as the ACDC paper used them): "
                "heads and MLPs ranked by |gate gradient| summed over prompts; the circuit is "
                "the top units and every edge among them",
    run=discover,
    returns="nodes",
    settings_type=HispSettings,
    check=check_metric,
    citation="Michel, Levy, Neubig. Are Sixteen Heads Really Better than One? NeurIPS 2019. "
             "arXiv:1905.10650 (as used by Conmy et al. 2023, arXiv:2304.14997)",
)
