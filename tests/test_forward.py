"""The block arithmetic (`acdc.core.forward`) against TransformerLens and against itself."""

import pytest
import torch

from acdc.core import forward
from acdc.core.models import build_model, extract_weights, transformer_lens_major

SHAPE = {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_head": 8, "n_ctx": 16, "d_vocab": 50}
CONFIGS = {
    "attn-only": {**SHAPE, "attn_only": True},
    "mlp-ln": {**SHAPE, "d_mlp": 64},
    "no-norm-relu": {**SHAPE, "n_heads": 3, "d_head": 5, "d_mlp": 48, "normalization_type": None,
                     "act_fn": "relu"},
    "rms-gated": {**SHAPE, "d_mlp": 64, "normalization_type": "RMS", "gated_mlp": True,
                  "act_fn": "silu"},
    "ln-pre": {**SHAPE, "n_layers": 1, "d_mlp": 32, "normalization_type": "LNPre"},
    "bidirectional": {**SHAPE, "d_mlp": 48, "normalization_type": None, "act_fn": "relu",
                      "attention_dir": "bidirectional"},
}


@pytest.fixture(params=list(CONFIGS))
def model(request):
    if CONFIGS[request.param].get("gated_mlp") and transformer_lens_major() >= 4:
        pytest.skip("TransformerLens 4's native model has gated MLPs without biases (b_in, "
                    "b_out); the project refuses them there")
    model = build_model(CONFIGS[request.param], seed=5)
    with torch.no_grad():  # random biases and norm weights too, so every term is exercised
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_full_forward_is_the_model(model):
    tokens = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits, patterns = forward.full_forward(extract_weights(model), tokens)
        assert torch.allclose(logits, model(tokens), atol=1e-5)
    assert patterns.shape == (model.cfg.n_layers, 3, model.cfg.n_heads, 10, 10)
    assert torch.allclose(patterns.sum(-1), torch.ones(()), atol=1e-6)
    if model.cfg.attention_dir == "causal":
        assert not patterns.triu(1).any()  # causal: no weight on later keys
    else:
        assert (patterns > 0).all()  # bidirectional: weight on every key


def test_attention_at_scattered_positions_equals_the_full_attention():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 2, 4, 7, 8, generator=g)  # [candidates, batch, pos, d_head]
    prompt = torch.tensor([0, 0, 1, 1, 1])
    position = torch.tensor([2, 6, 0, 3, 6])
    mask = forward.causal_mask(7, q.dtype, q.device)
    future = torch.arange(7)[None, :] > position[:, None]
    full = forward.attend(q, k, v, 2.0, mask)[..., prompt, position, :]
    scattered = forward.attend_at(q[..., prompt, position, :], k, v, 2.0, prompt, future)
    assert torch.allclose(scattered, full, atol=1e-6)
    # bidirectional: no mask, every key
    full = forward.attend(q, k, v, 2.0, torch.zeros(7, 7))[..., prompt, position, :]
    scattered = forward.attend_at(q[..., prompt, position, :], k, v, 2.0, prompt, None)
    assert torch.allclose(scattered, full, atol=1e-6)


def test_unembedding_is_linear_in_its_projection(model):
    w = extract_weights(model)
    unembedding = forward.Unembedding(w)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, w.W_U.shape[0], generator=g)
    dz = torch.randn(5, w.layers[0].W_O.shape[1], generator=g)
    with torch.inference_mode():
        W_O = w.layers[0].W_O[1]
        centred = unembedding.centred(x)
        assert torch.allclose(unembedding.logits(unembedding.project_centred(centred), centred),
                              forward.unembed(w, x), atol=1e-5)
        moved = x + dz @ W_O
        updated = unembedding.project(x) + dz @ unembedding.factor(W_O)
        assert torch.allclose(unembedding.logits(updated, unembedding.centred(moved)),
                              forward.unembed(w, moved), atol=1e-4)
