"""Tiny random Hugging Face models of every family circuit loads, for tests.

Each builder makes a model with transformers' own class from a small config of its family,
with the family's distinctive features switched on (partial rotary, parallel blocks, grouped-
and multi-query attention, sliding windows shorter than `PROMPT_LENGTH`, soft-capping, norms
after each sublayer, learned positions with an offset), and writes it with `save_pretrained`
(safetensors, float32) to a directory. `build(name, directory)` is the entry point.

transformers initialises norm weights to one (Gemma's to zero, read as 1 + w) and biases to
zero; every parameter is then redrawn or perturbed with a seeded generator, so that norm
weights, offsets and biases all change the logits and a loader that drops one is caught.

>>> sorted(FAMILIES)[:3]
['gemma', 'gemma2', 'gpt2']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VOCAB = 100
N_CTX = 32
WINDOW = 8  # every sliding or local window; shorter than the prompts
PROMPT_LENGTH = 20  # tokens per test prompt: longer than every window
SEED = 0
# GPT-2, GPT-J and GPT-Neo default to token 50256, outside the tiny vocabulary
_IDS = {"bos_token_id": 0, "eos_token_id": 0}


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, n_inner=48, **_IDS,
                                      n_positions=N_CTX, vocab_size=VOCAB))


def _gpt_neox() -> Any:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    return GPTNeoXForCausalLM(GPTNeoXConfig(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=96,
        vocab_size=VOCAB, max_position_embeddings=N_CTX, rotary_pct=0.25,
        use_parallel_residual=True))


def _gptj() -> Any:
    from transformers import GPTJConfig, GPTJForCausalLM

    return GPTJForCausalLM(GPTJConfig(n_layer=2, n_head=4, n_embd=64, rotary_dim=8, **_IDS,
                                      n_positions=N_CTX, vocab_size=VOCAB))


def _llama(**extra: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
        intermediate_size=96, vocab_size=VOCAB, max_position_embeddings=N_CTX, **extra))


def _llama3() -> Any:
    """Llama 3.1's rotary scaling, and a head dimension that is not d_model / n_heads."""
    return _llama(head_dim=12, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 16})


def _mistral() -> Any:
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
        intermediate_size=96, vocab_size=VOCAB, max_position_embeddings=N_CTX,
        sliding_window=WINDOW))


def _qwen2() -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
        intermediate_size=96, vocab_size=VOCAB, max_position_embeddings=N_CTX,
        rope_theta=1000000.0, tie_word_embeddings=True))


def _gemma() -> Any:
    from transformers import GemmaConfig, GemmaForCausalLM

    return GemmaForCausalLM(GemmaConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, hidden_size=64,
        head_dim=16, intermediate_size=96, vocab_size=VOCAB, max_position_embeddings=N_CTX))


def _gemma2() -> Any:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
        head_dim=16, intermediate_size=96, vocab_size=VOCAB, max_position_embeddings=N_CTX,
        sliding_window=WINDOW, query_pre_attn_scalar=12, attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0))


def _opt() -> Any:
    from transformers import OPTConfig, OPTForCausalLM

    return OPTForCausalLM(OPTConfig(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=32, ffn_dim=48,
        vocab_size=VOCAB, max_position_embeddings=N_CTX, word_embed_proj_dim=32))


def _gpt_neo() -> Any:
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    return GPTNeoForCausalLM(GPTNeoConfig(
        num_layers=2, num_heads=4, hidden_size=32, vocab_size=VOCAB, **_IDS,
        max_position_embeddings=N_CTX, attention_types=[[["global", "local"], 1]],
        window_size=WINDOW))


BUILDERS: dict[str, Callable[[], Any]] = {
    "gpt2": _gpt2, "gpt_neox": _gpt_neox, "gptj": _gptj, "llama": _llama, "llama3": _llama3,
    "mistral": _mistral, "qwen2": _qwen2, "gemma": _gemma, "gemma2": _gemma2, "opt": _opt,
    "gpt_neo": _gpt_neo,
}


def randomize(model: Any, seed: int = SEED) -> None:
    """Redraw every matrix at 1 / sqrt(fan-in) and perturb every vector (norm weights around
    their initial value, biases around zero) by 0.3 standard deviations."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim >= 2:
                parameter.copy_(noise / math.sqrt(parameter.shape[-1]))
            else:
                parameter.add_(0.3 * noise)


def make(name: str, seed: int = SEED) -> Any:
    """The family's model, randomised, in float32 and eval mode."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BUILDERS[name]().float().eval()
    randomize(model, seed)
    return model


def build(name: str, directory: str | Path, seed: int = SEED) -> Path:
    """Write the family's tiny random model to `directory` with `save_pretrained`."""
    directory = Path(directory)
    model = make(name, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(directory, safe_serialization=True)
    return directory


FAMILIES: dict[str, Callable[[str | Path], Path]] = {
    name: (lambda directory, name=name: build(name, directory)) for name in BUILDERS
}


def prompts(seed: int = SEED, batch: int = 2, length: int = PROMPT_LENGTH) -> torch.Tensor:
    """Random token ids [batch, length], longer than every window."""
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
