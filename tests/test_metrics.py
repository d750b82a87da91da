"""Metrics: the values the ACDC paper defines, and one metric per candidate circuit for batched
logits."""

import pytest
import torch

from acdc.core.metrics import METRICS, build_metric, metric_targets, position_metric

CLEAN = [[1, 2, 3, 4], [5, 6, 7, 8, 9]]
POSITIONS = [[3], [2, 4]]
ANSWERS = [[7], [3, 4]]
WRONG = [[8, 9], [1]]


def targets():
    return metric_targets(CLEAN, POSITIONS, ANSWERS, WRONG)


@pytest.mark.parametrize("name", list(METRICS))
def test_batched_logits_give_one_metric_per_candidate(name):
    torch.manual_seed(0)
    clean_logits = 3 * torch.randn(3, 12)
    metric = build_metric(name, clean_logits, targets())
    candidates = clean_logits + torch.randn(5, 3, 12)
    batched = metric(candidates)
    assert batched.shape == (5,)
    for k in range(5):
        assert torch.allclose(batched[k], metric(candidates[k]), atol=1e-6)


def test_kl_is_the_definition_and_zero_on_the_clean_logits():
    torch.manual_seed(1)
    clean_logits = 10 * torch.randn(3, 50) - 40
    logits = clean_logits + torch.randn(3, 50)
    metric = build_metric("kl", clean_logits, targets())
    p = clean_logits.double().log_softmax(-1)
    q = logits.double().log_softmax(-1)
    expected = (p.exp() * (p - q)).sum(-1).mean()
    assert abs(float(metric(logits)) - float(expected)) < 1e-6
    assert abs(float(metric(clean_logits))) < 1e-6


def test_task_metrics_read_the_answers():
    logits = torch.zeros(3, 12)
    logits[0, 7], logits[1, 3], logits[2, 4] = 2.0, 1.0, 3.0  # positions (0,3), (1,2), (1,4)
    metric = build_metric("logit_diff", logits, targets())
    # per position: mean answer logit - mean wrong logit = 2, 0.5, 1.5; negated mean
    assert float(metric(logits)) == pytest.approx(-(2 + 0.5 + 1.5) / 3)


@pytest.mark.parametrize("name", list(METRICS))
def test_position_metric_is_the_metric_before_its_mean(name):
    torch.manual_seed(2)
    clean_logits = 3 * torch.randn(3, 12)
    logits = clean_logits + torch.randn(4, 3, 12)
    per_position = position_metric(name, clean_logits, targets())(logits)
    assert per_position.shape == (4, 3)
    assert torch.equal(per_position.mean(-1), build_metric(name, clean_logits, targets())(logits))


@pytest.mark.parametrize("name", list(METRICS))
def test_metrics_over_chunks_of_positions_equal_the_whole(name, monkeypatch):
    """A large vocabulary is read a few positions at a time: the same values, per candidate,
    against the plain formulas (log_softmax, softmax, norm) on the whole tensor."""
    import acdc.core.metrics as metrics

    torch.manual_seed(1)
    clean_logits = 3 * torch.randn(3, 12)
    candidates = clean_logits + torch.randn(4, 3, 12)
    whole = position_metric(name, clean_logits, targets())(candidates.clone())
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 12 * 4 * 2)  # two positions per chunk
    chunked = position_metric(name, clean_logits, targets())(candidates.clone())
    assert torch.allclose(chunked, whole, atol=1e-6, rtol=1e-6)
    if name == "kl":  # the definition, position by position
        logp = clean_logits.log_softmax(-1)
        plain = (logp.exp() * (logp - candidates.log_softmax(-1))).sum(-1)
        assert torch.allclose(chunked, plain, atol=1e-5)
    grad = candidates.clone().requires_grad_()
    position_metric(name, clean_logits, targets())(grad).sum().backward()  # whole, differentiable
    assert grad.grad is not None
