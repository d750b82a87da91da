"""Hugging Face configs of each family as `HookedTransformerConfig` arguments.

`models.py` loads a local Hugging Face directory with transformers, builds the
`HookedTransformer` from `hooked_config(config, family)` and converts the weights with
TransformerLens' own per-family converter. The mapping is ours (no TransformerLens import
here): see `hooked_config` for why TransformerLens 3.9's own reader is not used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from acdc.core.hf_configs import ARCHITECTURES
from acdc.errors import ModelError


def hooked_config(config: Any, family: str, source: str) -> dict[str, Any]:
    """`HookedTransformerConfig` arguments for a transformers config (`PretrainedConfig`, whose
    attributes carry the family's defaults) of a family `hf_configs` reads.

    TransformerLens 3.9's own reader (`convert_hf_model_config`) is not used for local
    directories: it picks Llama and Gemma by the directory's *name* (a path containing "llama"
    is read with no config at all and fails), has no config-driven branch for Gemma or Gemma 2,
    ignores `n_inner` (GPT-2, GPT-J), `intermediate_size` (GPT-Neo) and `head_dim` (Llama),
    caps Mistral's context at 2048, and needs an `n_ctx` key transformers 5 no longer writes.
    Its per-family weight converters are used as they are.
    """
    cfg: dict[str, Any] = {
        "d_vocab": config.vocab_size, "original_architecture": TL_ARCHITECTURES[family],
        "model_name": Path(source).name, "tokenizer_name": None, "init_weights": False,
        "device": "cpu", "dtype": torch.float32,
    }
    cfg.update(_HOOKED_CONFIGS[family](config, source))
    return cfg


TL_ARCHITECTURES: dict[str, str] = {family: architecture
                                    for architecture, family in ARCHITECTURES.items()}


def _refuse(source: str, what: str) -> ModelError:
    return ModelError(f"{source}: {what}; TransformerLens' HookedTransformer does not model "
                      f"it, so circuit cannot load this model")


def _rotary(config: Any, source: str, d_head: int) -> dict[str, Any]:
    """Rotary settings from transformers 5's `rope_parameters` (or the older keys): base,
    the rotated dimensions, and Llama 3's scaling; other scalings are refused."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = dict(getattr(config, "rope_scaling", None) or params)
    theta = params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0
    fraction = params.get("partial_rotary_factor") or getattr(config, "rotary_pct", None) or 1.0
    out: dict[str, Any] = {"positional_embedding_type": "rotary", "rotary_base": theta,
                           "rotary_dim": int(d_head * fraction), "rotary_adjacent_pairs": False}
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "llama3":
        out.update(use_NTK_by_parts_rope=True, NTK_by_parts_factor=scaling["factor"],
                   NTK_by_parts_low_freq_factor=scaling.get("low_freq_factor", 1.0),
                   NTK_by_parts_high_freq_factor=scaling.get("high_freq_factor", 4.0),
                   NTK_original_ctx_len=scaling.get("original_max_position_embeddings",
                                                    config.max_position_embeddings))
    elif kind != "default":
        raise _refuse(source, f"rotary scaling {kind!r} (only Llama 3's 'llama3' is converted)")
    return out


def _windows(config: Any, n_layers: int) -> dict[str, Any]:
    """Sliding-window layers as TransformerLens' local attention: transformers 5's
    `layer_types` when given, else every layer when `sliding_window` is set (Mistral)."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is None:
        types = ["sliding_attention" if window else "full_attention"] * n_layers
    kinds = ["local" if t == "sliding_attention" else "global" for t in types]
    if window is None or "local" not in kinds:
        return {"use_local_attn": False}
    return {"use_local_attn": True, "attn_types": kinds, "window_size": window}


def _gpt2_config(config: Any, source: str) -> dict[str, Any]:
    return {
        "d_model": config.n_embd, "d_head": config.n_embd // config.n_head,
        "n_heads": config.n_head, "d_mlp": config.n_inner or 4 * config.n_embd,
        "n_layers": config.n_layer, "n_ctx": config.n_positions,
        "eps": config.layer_norm_epsilon, "act_fn": config.activation_function,
        "use_attn_scale": config.scale_attn_weights,
        "scale_attn_by_inverse_layer_idx": config.scale_attn_by_inverse_layer_idx,
        "normalization_type": "LN",
    }


def _gpt_neox_config(config: Any, source: str) -> dict[str, Any]:
    if not getattr(config, "attention_bias", True):
        raise _refuse(source, "attention_bias false (GPT-NeoX without q/k/v biases)")
    d_head = config.hidden_size // config.num_attention_heads
    return {
        "d_model": config.hidden_size, "d_head": d_head,
        "n_heads": config.num_attention_heads, "d_mlp": config.intermediate_size,
        "n_layers": config.num_hidden_layers, "n_ctx": config.max_position_embeddings,
        "eps": config.layer_norm_eps, "act_fn": config.hidden_act,
        "parallel_attn_mlp": config.use_parallel_residual, "normalization_type": "LN",
        "default_prepend_bos": False, **_rotary(config, source, d_head),
    }


def _gptj_config(config: Any, source: str) -> dict[str, Any]:
    """GPT-J: one LayerNorm per block feeds both the attention and the MLP (parallel); the
    converter copies it into `ln1` and `ln2`. Rotary on the first `rotary_dim` dimensions
    (all of them when null) in adjacent pairs, base 10000 (fixed in transformers' GPT-J)."""
    d_head = config.n_embd // config.n_head
    return {
        "d_model": config.n_embd, "d_head": d_head, "n_heads": config.n_head,
        "d_mlp": config.n_inner or 4 * config.n_embd, "n_layers": config.n_layer,
        "n_ctx": config.n_positions, "eps": config.layer_norm_epsilon,
        "act_fn": config.activation_function, "parallel_attn_mlp": True,
        "normalization_type": "LN", "positional_embedding_type": "rotary",
        "rotary_dim": config.rotary_dim or d_head, "rotary_adjacent_pairs": True,
        "rotary_base": 10000,
    }


def _llama_like_config(config: Any, source: str) -> dict[str, Any]:
    """Llama, Mistral, Qwen2, Gemma, Gemma 2. Gemma's (1 + w) RMSNorm offset and its
    sqrt(d_model) embedding scale are folded into the weights by TransformerLens' converter.
    Gemma 2's `query_pre_attn_scalar` is the attention scale's square (TransformerLens
    divides scores by `attn_scale`); its soft caps and post-sublayer norms map one to one."""
    family = config.model_type
    if getattr(config, "attention_bias", False) and family != "qwen2":
        raise _refuse(source, "attention_bias true (the converter drops these biases)")
    if getattr(config, "mlp_bias", False):
        raise _refuse(source, "mlp_bias true (a gated MLP's gate bias)")
    d_head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    n_kv = config.num_key_value_heads or config.num_attention_heads
    act = getattr(config, "hidden_activation", None) or config.hidden_act
    out = {
        "d_model": config.hidden_size, "d_head": d_head, "n_heads": config.num_attention_heads,
        "n_key_value_heads": None if n_kv == config.num_attention_heads else n_kv,
        "d_mlp": config.intermediate_size, "n_layers": config.num_hidden_layers,
        "n_ctx": config.max_position_embeddings, "eps": config.rms_norm_eps, "act_fn": act,
        "normalization_type": "RMS", "final_rms": True, "gated_mlp": True,
        **_rotary(config, source, d_head), **_windows(config, config.num_hidden_layers),
    }
    if family == "qwen2":
        out["default_prepend_bos"] = False
    if family == "gemma2":
        out.update(use_normalization_before_and_after=True,
                   attn_scale=float(config.query_pre_attn_scalar) ** 0.5,
                   attn_scores_soft_cap=config.attn_logit_softcapping or -1.0,
                   output_logits_soft_cap=config.final_logit_softcapping or -1.0)
    return out


def _opt_config(config: Any, source: str) -> dict[str, Any]:
    """OPT: learned positions whose table starts at offset 2 (the converter drops the first
    two rows). Post-norm OPT (350m), a projected word embedding and bias- or affine-free
    variants have no HookedTransformer counterpart."""
    for bad, what in ((not config.do_layer_norm_before, "do_layer_norm_before false (post-norm)"),
                      (config.word_embed_proj_dim != config.hidden_size,
                       "word_embed_proj_dim unlike hidden_size (projected embeddings)"),
                      (not config.enable_bias, "enable_bias false"),
                      (not config.layer_norm_elementwise_affine,
                       "layer_norm_elementwise_affine false")):
        if bad:
            raise _refuse(source, what)
    return {
        "d_model": config.hidden_size, "d_head": config.hidden_size // config.num_attention_heads,
        "n_heads": config.num_attention_heads, "d_mlp": config.ffn_dim,
        "n_layers": config.num_hidden_layers, "n_ctx": config.max_position_embeddings,
        "eps": 1e-5, "act_fn": config.activation_function, "normalization_type": "LN",
    }


def _gpt_neo_config(config: Any, source: str) -> dict[str, Any]:
    """GPT-Neo: unscaled attention scores; local layers see the last `window_size` tokens."""
    return {
        "d_model": config.hidden_size, "d_head": config.hidden_size // config.num_heads,
        "n_heads": config.num_heads, "d_mlp": config.intermediate_size or 4 * config.hidden_size,
        "n_layers": config.num_layers, "n_ctx": config.max_position_embeddings,
        "eps": config.layer_norm_epsilon, "act_fn": config.activation_function,
        "use_attn_scale": False, "normalization_type": "LN",
        "use_local_attn": "local" in config.attention_layers,
        "attn_types": list(config.attention_layers), "window_size": config.window_size,
    }


_HOOKED_CONFIGS: dict[str, Callable[[Any, str], dict[str, Any]]] = {
    "gpt2": _gpt2_config, "gpt_neox": _gpt_neox_config, "gptj": _gptj_config,
    "llama": _llama_like_config, "mistral": _llama_like_config, "qwen2": _llama_like_config,
    "gemma": _llama_like_config, "gemma2": _llama_like_config, "opt": _opt_config,
    "gpt_neo": _gpt_neo_config,
}
