"""Shared fixtures: tiny seeded random models built from configs, and small random tasks.

The models are built with `acdc.core.models.build_model` (the only way tests make a model) and then
given fresh, larger random weights, biases and LayerNorm parameters: TransformerLens
initialises biases to zero and weights small, which would make every bias-only path trivial
and every edge's effect tiny. Each model covers a different corner of the architecture.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
import torch

from acdc.core.models import build_model, transformer_lens_major

# Under TransformerLens 4 the `hooked_transformer` tests skip, saying why: they need its 3.x
# `HookedTransformer`, which 4.x removed. The slow references run its per-head hooks, which 4.x's
# bridge refuses (`set_use_split_qkv_input`: NotImplementedError, no hook before the q/k/v
# projections of its AttentionBridge); the tiny models of the families are built from configs
# its native model cannot build (rotary, grouped heads, gated MLPs with biases, ...); and
# TransformerLens' own per-family converters, the reference of the project's conversion, are
# gone. Loading needs none of it: those tests run under both.
HOOKED_TRANSFORMER_SKIP = (
    "needs TransformerLens 3.x's HookedTransformer (the slow references' per-head hooks, models "
    "of the families built from configs, its per-family converters); 4.x removed it")


def pytest_collection_modifyitems(config, items):
    if transformer_lens_major() < 4:
        return
    skip = pytest.mark.skip(reason=HOOKED_TRANSFORMER_SKIP)
    for item in items:
        if "hooked_transformer" in item.keywords:
            item.add_marker(skip)


# The models are tiny: one thread is many times faster than several contending for 2 cores.
torch.set_num_threads(1)

D_VOCAB = 50
N_CTX = 16

MODEL_CONFIGS: dict[str, dict] = {
    # 2 layers, attention only, LayerNorm
    "attn2": {"n_layers": 2, "d_model": 16, "n_heads": 4, "d_head": 4, "attn_only": True,
              "normalization_type": "LN"},
    # 3 layers with GELU MLPs, LayerNorm
    "mlp3": {"n_layers": 3, "d_model": 24, "n_heads": 3, "d_head": 8, "d_mlp": 32,
             "act_fn": "gelu", "normalization_type": "LN"},
    # 2 layers with ReLU MLPs, no normalisation, d_head != d_model / n_heads
    "nonorm2": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 6, "d_mlp": 24,
                "act_fn": "relu", "normalization_type": None},
    # 1 layer, 1 head: small enough to check by hand
    "one_head": {"n_layers": 1, "d_model": 8, "n_heads": 1, "d_head": 4, "attn_only": True,
                 "normalization_type": "LN"},
    # bidirectional attention (tracr's compiled models): every query reads every key
    "bidir_attn2": {"n_layers": 2, "d_model": 16, "n_heads": 3, "d_head": 4, "attn_only": True,
                    "normalization_type": "LN", "attention_dir": "bidirectional"},
    "bidir_mlp3": {"n_layers": 3, "d_model": 16, "n_heads": 2, "d_head": 6, "d_mlp": 24,
                   "act_fn": "relu", "normalization_type": None,
                   "attention_dir": "bidirectional"},
    # the model families (FAMILIES below): GPT-NeoX (partial rotary, parallel blocks)
    "neox2": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32,
              "act_fn": "gelu", "normalization_type": "LN", "positional_embedding_type": "rotary",
              "rotary_dim": 4, "parallel_attn_mlp": True},
    # GPT-J: rotary on adjacent pairs of the first 6 of 8 dimensions, parallel blocks
    "gptj2": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 24,
              "act_fn": "gelu_new", "normalization_type": "LN",
              "positional_embedding_type": "rotary", "rotary_dim": 6,
              "rotary_adjacent_pairs": True, "parallel_attn_mlp": True},
    # Llama / Mistral / Qwen2: RMSNorm, rotary, SwiGLU, 4 query heads sharing 2 key/value heads
    "llama2": {"n_layers": 2, "d_model": 16, "n_heads": 4, "n_key_value_heads": 2, "d_head": 4,
               "d_mlp": 24, "act_fn": "silu", "gated_mlp": True, "normalization_type": "RMS",
               "positional_embedding_type": "rotary", "rotary_dim": 4},
    # Gemma 2: one key/value head, GeGLU, norms after each sublayer, soft-capping, a local
    # layer (window 3) then a global one
    "gemma2": {"n_layers": 2, "d_model": 16, "n_heads": 2, "n_key_value_heads": 1, "d_head": 8,
               "d_mlp": 24, "act_fn": "gelu_pytorch_tanh", "gated_mlp": True,
               "normalization_type": "RMS", "positional_embedding_type": "rotary",
               "rotary_dim": 8, "use_normalization_before_and_after": True,
               "attn_scores_soft_cap": 4.0, "output_logits_soft_cap": 6.0,
               "use_local_attn": True, "window_size": 3, "attn_types": ["local", "global"]},
    # GPT-Neo: learned positions, a global layer then a local one (window 3)
    "neo2": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32,
             "act_fn": "gelu_new", "normalization_type": "LN", "use_local_attn": True,
             "window_size": 3, "attn_types": ["global", "local"]},
}
FAMILIES = ("neox2", "gptj2", "llama2", "gemma2", "neo2")
MODEL_SEEDS = {"attn2": 1, "mlp3": 2, "nonorm2": 3, "one_head": 4, "bidir_attn2": 5,
               "bidir_mlp3": 6, "neox2": 7, "gptj2": 8, "llama2": 9, "gemma2": 10, "neo2": 11}
# Weight scale: without normalisation the residual grows layer by layer, so that model gets
# smaller weights to keep its logits (and KL scores) in a sensible range.
MODEL_GAINS = {"attn2": 1.5, "mlp3": 1.5, "nonorm2": 0.6, "one_head": 1.5, "bidir_attn2": 1.5,
               "bidir_mlp3": 0.6, "neox2": 1.5, "gptj2": 1.5, "llama2": 1.5, "gemma2": 1.5,
               "neo2": 1.5}
# Bidirectional attention reads every position, padding included: their prompts share a length.
EQUAL_LENGTHS = frozenset({"bidir_attn2", "bidir_mlp3"})


def model_config(name: str) -> dict:
    return {**MODEL_CONFIGS[name], "d_vocab": D_VOCAB, "n_ctx": N_CTX}


def randomize(model, seed: int, gain: float = 1.5) -> None:
    """Redraw every parameter: weights ~ N(0, gain^2/fan_in), biases ~ N(0, 0.3^2), norm scales
    ~ 1 + N(0, 0.2^2), embeddings ~ N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            leaf = name.rsplit(".", 1)[-1]
            if name.startswith(("embed.", "pos_embed.")):
                param.copy_(noise)
            elif leaf == "w":  # normalisation scale
                param.copy_(1 + 0.2 * noise)
            elif leaf.startswith("b"):  # b_Q, b_O, b_in, b_out, b_U, LayerNorm b
                param.copy_(0.3 * noise)
            else:  # W_Q/W_K/W_V [h, d_model, d_head], W_O [h, d_head, d_model], W_in, W_out, W_U
                fan_in = param.shape[-2]
                param.copy_(noise * (gain / math.sqrt(fan_in)))


def make_model(name: str):
    model = build_model(model_config(name), seed=MODEL_SEEDS[name])
    randomize(model, MODEL_SEEDS[name], MODEL_GAINS[name])
    return model


@dataclass(frozen=True)
class TinyTask:
    """The data of a task, without depending on `acdc.core.tasks`."""

    clean: list[list[int]]
    corrupt: list[list[int]]
    positions: list[list[int]]
    answers: list[list[int]]
    wrong_answers: list[list[int]]

    def args(self) -> tuple:
        """Positional arguments of `reference_acdc` after the model."""
        return self.clean, self.corrupt, self.positions, self.answers, self.wrong_answers


def make_task(seed: int, n_prompts: int = 5, min_len: int = 6, max_len: int = 9,
              d_vocab: int = D_VOCAB) -> TinyTask:
    """Random prompts of different lengths, random corrupt prompts of the same lengths, 1-3
    metric positions per prompt (the last one always included), 1-2 answers and wrong
    answers."""
    rng = random.Random(seed)
    clean, corrupt, positions, answers, wrong = [], [], [], [], []
    for _ in range(n_prompts):
        length = rng.randint(min_len, max_len)
        clean.append([rng.randrange(d_vocab) for _ in range(length)])
        corrupt.append([rng.randrange(d_vocab) for _ in range(length)])
        extra = rng.sample(range(length - 1), rng.randint(0, 2))
        positions.append(sorted(extra + [length - 1]))
        tokens = rng.sample(range(d_vocab), 4)
        n_answers, n_wrong = rng.randint(1, 2), rng.randint(1, 2)
        answers.append(tokens[:n_answers])
        wrong.append(tokens[2:2 + n_wrong])
    return TinyTask(clean, corrupt, positions, answers, wrong)


@pytest.fixture(scope="session")
def tiny_models() -> dict:
    """name -> HookedTransformer, for every entry of MODEL_CONFIGS."""
    return {name: make_model(name) for name in MODEL_CONFIGS}


@pytest.fixture(scope="session")
def tiny_tasks() -> dict[str, TinyTask]:
    """name -> a random task for the model of that name (seeded per model); prompts of one
    length for the bidirectional models."""
    return {name: make_task(100 + MODEL_SEEDS[name], **({"min_len": 8, "max_len": 8}
                                                        if name in EQUAL_LENGTHS else {}))
            for name in MODEL_CONFIGS}


def error_of(fn, *args, **kwargs) -> str:
    """The one-line message of the TaskError `fn` raises."""
    from acdc.errors import TaskError

    with pytest.raises(TaskError) as caught:
        fn(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# A hand-set model whose circuit is known (the mask-learning methods' tests): two layers of
# two heads, no norms, no biases. a0.h0 averages the tokens' one-hot embeddings (dims 0-3) into
# dims 4-7 (uniform attention: zero W_Q and W_K); a1.h0 averages those into dims 8-11, which
# alone the unembedding reads. The other heads' W_O is zero. Under zero ablation the circuit is
# input -> a0.h0<v> -> a0.h0 -> a1.h0<v> -> a1.h0 -> logits and nothing else matters.
KNOWN_CIRCUIT = ("input->a0.h0<v>", "a0.h0<v>->a0.h0", "a0.h0->a1.h0<v>", "a1.h0<v>->a1.h0",
                 "a1.h0->logits")


def known_circuit_model():
    model = build_model({"n_layers": 2, "d_model": 12, "n_heads": 2, "d_head": 4,
                         "attn_only": True, "normalization_type": None, "d_vocab": 4,
                         "n_ctx": 8}, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, param in model.named_parameters():
            param.zero_()
        eye = torch.eye(4)
        model.embed.W_E[:, :4] = eye
        for layer, (read, write) in enumerate(((0, 4), (4, 8))):
            attn = model.blocks[layer].attn
            attn.W_V[0, read:read + 4] = eye
            attn.W_O[0, :, write:write + 4] = eye
            # the other head computes something, but writes nothing
            for W in (attn.W_Q, attn.W_K, attn.W_V):
                W[1] = torch.randn(W[1].shape, generator=generator)
        model.unembed.W_U[8:12] = 10 * eye
    return model


def known_circuit_task():
    """Prompts of 6 tokens over a vocabulary of 4, read at the last two positions."""
    from acdc.core.tasks import Task

    rng = random.Random(0)
    clean = [[rng.randrange(4) for _ in range(6)] for _ in range(8)]
    return Task(name="known", description="", source="tests", model=None, metric="kl",
                threshold=0.0, ablation="zero", seed=0, clean=clean, corrupt=clean,
                positions=[[4, 5]] * len(clean), answers=None, wrong_answers=None)
