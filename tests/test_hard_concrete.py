"""The hard-concrete gate (`acdc.core.hard_concrete`): the closed-form probabilities against
the values computed from the authors' formulas, and against the sampler itself."""

from __future__ import annotations

import math

import torch

from acdc.core import hard_concrete as hc


def test_constants_and_probabilities():
    assert math.isclose(hc.SHIFT, -1.59860, abs_tol=1e-5)
    assert math.isclose(float(hc.p_closed(torch.tensor(10.0))), 9.18e-6, rel_tol=1e-2)
    assert math.isclose(float(hc.p_open(torch.tensor(0.0))), 0.8318, abs_tol=1e-4)
    assert math.isclose(float(hc.p_open(torch.tensor(-10.0))), 2.25e-4, rel_tol=1e-2)
    assert math.isclose(float(hc.p_open(torch.tensor(math.log(5.0)))), 0.9611, abs_tol=1e-4)
    soft = torch.sigmoid(0.8 * torch.tensor([0.0, 10.0]) / hc.BETA)
    assert torch.allclose(soft, torch.tensor([0.5, 0.99999386]), atol=1e-8)


def test_sampled_gates_have_the_closed_form_distribution():
    generator = torch.Generator().manual_seed(0)
    for value in (-2.0, 0.0, 1.5):
        log_alpha = torch.full((200_000,), value)
        z = hc.sample(log_alpha, hc.uniform(log_alpha.shape, 1e-6, generator, "cpu",
                                            torch.float32))
        assert float(z.min()) >= 0 and float(z.max()) <= 1
        closed = float((z == 0).double().mean())
        assert abs(closed - float(hc.p_closed(torch.tensor(value)))) < 4e-3
        # the median gate is the sample at u = 1/2
        median = float(hc.median_gate(torch.tensor(value)))
        assert abs(float(z.median()) - median) < 1e-2
    assert float(hc.median_gate(torch.tensor(0.0))) == 0.5


def test_gates_are_differentiable_inside_and_flat_when_clamped():
    log_alpha = torch.tensor([0.0, 30.0, -30.0], requires_grad=True)
    z = hc.sample(log_alpha, torch.full((3,), 0.5))
    z.sum().backward()
    assert log_alpha.grad is not None
    assert float(log_alpha.grad[0]) > 0 and float(log_alpha.grad[1]) == 0
    assert float(log_alpha.grad[2]) == 0
    assert z.tolist()[1:] == [1.0, 0.0]


def test_uniforms_are_seeded_and_device_independent():
    a = hc.uniform((5,), 1e-4, torch.Generator().manual_seed(3), "cpu", torch.float32)
    b = hc.uniform((5,), 1e-4, torch.Generator().manual_seed(3), "cpu", torch.float64)
    assert torch.equal(a, b.float())
    assert float(a.min()) >= 1e-4 and float(a.max()) <= 1 - 1e-4
