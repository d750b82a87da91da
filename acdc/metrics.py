"""Metrics ACDC minimises: lower is better, compared with the clean full model's output.

(Work in progress: the registry below is the public API.)
"""

from __future__ import annotations

METRICS: dict[str, str] = {
    "kl": "KL(clean model || circuit) of the next-token distribution at the metric positions",
    "logit_diff": "minus the logit difference answer - wrong answer (mean over each list)",
    "prob_diff": "minus the probability difference P(answers) - P(wrong answers)",
    "nll": "negative log-probability of the clean next token (of the answer at a prompt's end)",
    "l2": "Euclidean distance between the circuit's and the clean model's logits",
}
NEEDS_ANSWER_AND_WRONG = frozenset({"logit_diff", "prob_diff"})
