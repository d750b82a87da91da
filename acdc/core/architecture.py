"""A model's architecture as `HookedTransformerConfig` describes it, read without TransformerLens.

The project's checkpoints store `HookedTransformerConfig` keyword arguments in `config.json`,
and a Hugging Face family's config is mapped to the same arguments (`hf_mapping`). `HookedConfig`
gives those keys the values TransformerLens 3.9's `HookedTransformerConfig` gives them (its
defaults for absent keys; `n_heads` from d_model / d_head, an MLP of 4 x d_model, `d_vocab_out`
= `d_vocab`, the attention scale sqrt(d_head), rotary on all of d_head), read by attribute as
on the real class. From it, with no TransformerLens import:

- `check_supported` refuses, in one line, what the engine does not model (it reads
  TransformerLens' own configs the same way, for models loaded by name);
- `parameter_shapes` lists a `HookedTransformer`'s parameters and their shapes: what a
  checkpoint's `model.safetensors` must hold;
- `model_shape` gives the graph's and the memory estimate's `ModelShape`.

>>> cfg = HookedConfig.from_keys({"n_layers": 1, "d_model": 16, "d_head": 4, "n_ctx": 8,
...                               "d_vocab": 10})
>>> cfg.n_heads, cfg.d_mlp, cfg.act_fn, cfg.attn_scale
(4, 64, 'gelu', 2.0)
>>> parameter_shapes(cfg)["blocks.0.attn.W_Q"]
(4, 16, 4)
"""

from __future__ import annotations

import math
from typing import Any

from acdc.core.configs import ModelShape
from acdc.errors import ModelError

# The activations the engine computes (`weights.ACTIVATIONS` holds their functions).
SUPPORTED_ACTIVATIONS = ("relu", "gelu", "silu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh")
SUPPORTED_NORMS = (None, "LN", "LNPre", "RMS", "RMSPre")
# Architectures whose blocks normalise after the residual addition (TransformerLens 3.9's
# POST_NORM_ARCHITECTURES): it applies their norms inside the sublayer, the engine does not.
POST_NORM_ARCHITECTURES = frozenset({"Olmo2ForCausalLM", "Olmo3ForCausalLM"})

# `HookedTransformerConfig`'s defaults (TransformerLens 3.9) for the keys read here; the project
# adds one: the activation is ReLU for attention-only models, else GELU. tests/test_models.py
# checks them against the installed 3.x.
DEFAULTS: dict[str, Any] = {
    "n_heads": -1, "d_mlp": None, "d_vocab_out": -1, "attn_only": False,
    "normalization_type": "LN", "eps": 1e-5, "final_rms": False,
    "positional_embedding_type": "standard", "attention_dir": "causal",
    "n_key_value_heads": None, "gated_mlp": False, "parallel_attn_mlp": False,
    "use_attn_scale": True, "attn_scale": -1.0, "scale_attn_by_inverse_layer_idx": False,
    "use_local_attn": False, "window_size": None, "attn_types": None,
    "rotary_dim": None, "rotary_base": 10000, "rotary_base_local": None,
    "rotary_scaling_factor": 1.0, "rotary_adjacent_pairs": False,
    "use_NTK_by_parts_rope": False, "NTK_by_parts_factor": 8.0,
    "NTK_by_parts_low_freq_factor": 1.0, "NTK_by_parts_high_freq_factor": 4.0,
    "NTK_original_ctx_len": 8192, "use_yarn_rope": False, "yarn_factor": 1.0,
    "yarn_attention_factor": 1.0, "yarn_beta_fast": 32.0, "yarn_beta_slow": 1.0,
    "yarn_original_max_position_embeddings": 4096, "yarn_truncate": True,
    "yarn_global_attn_only": False, "use_normalization_before_and_after": False,
    "attn_scores_soft_cap": -1.0, "output_logits_soft_cap": -1.0, "original_architecture": None,
    "use_qk_norm": False, "use_logn_attn": False, "use_dynamic_ntk_rope": False,
    "post_embedding_ln": False, "use_attention_sinks": False, "load_in_4bit": False,
    "num_experts": None, "clip_qkv": None,
}


class HookedConfig:
    """`HookedTransformerConfig`'s values for a set of its keyword arguments, by attribute.

    Attributes are those of the real class (`cfg.n_heads`, `cfg.normalization_type`, ...);
    `attn_types` is always one "global" or "local" per layer. `n_params` counts the blocks'
    weight matrices as TransformerLens does."""

    def __init__(self, values: dict[str, Any]):
        self._values = values

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_values"][key]
        except KeyError:
            raise AttributeError(key) from None

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @classmethod
    def from_keys(cls, config: dict[str, Any], source: str = "config") -> HookedConfig:
        """The values for `HookedTransformerConfig(**config)`; an inconsistent configuration is
        one line naming `source`. (A checkpoint's keys and their types are checked first, by
        `configs.check_checkpoint_config`.)"""
        values = {**DEFAULTS, **config}
        values.setdefault("act_fn", "relu" if values["attn_only"] else "gelu")
        d_model, d_head, n_layers = values["d_model"], values["d_head"], values["n_layers"]

        def invalid(what: str) -> ModelError:
            return ModelError(f"{source}: invalid model configuration ({what})")

        if values["n_heads"] == -1:
            if d_model % d_head:
                raise invalid(f"d_model ({d_model}) must be divisible by d_head ({d_head})")
            values["n_heads"] = d_model // d_head
        if values["d_mlp"] is None:
            values["d_mlp"] = 4 * d_model
        if values["d_vocab_out"] == -1:
            values["d_vocab_out"] = values["d_vocab"]
        if values["positional_embedding_type"] == "rotary" and values["rotary_dim"] is None:
            values["rotary_dim"] = d_head
        if values["use_attn_scale"] and values["attn_scale"] == -1.0:
            values["attn_scale"] = math.sqrt(d_head)
        types = values["attn_types"]
        if values["use_local_attn"]:
            if values["window_size"] is None or types is None:
                raise invalid("local attention needs window_size and attn_types")
            if (not isinstance(types, (list, tuple)) or len(types) != n_layers
                    or any(t not in ("global", "local") for t in types)):
                raise invalid(f"attn_types must give 'global' or 'local' for each of the "
                              f"{n_layers} layers")
            values["attn_types"] = tuple(types)
        else:
            values["attn_types"] = ("global",) * n_layers
        mlp = 0 if values["attn_only"] else d_model * values["d_mlp"] * (2 + values["gated_mlp"])
        values["n_params"] = n_layers * (d_model * d_head * values["n_heads"] * 4 + mlp)
        return cls(values)


def check_supported(cfg: Any, source: str) -> None:
    """Refuse, in one line, the architectures whose graph or forward the engine does not model.

    `cfg` is a `HookedConfig` or TransformerLens' own config. Modelled: learned or rotary
    positions (any base, Llama 3's and YaRN's scalings), grouped- and multi-query attention,
    parallel blocks, local attention, attention and final-logit soft-capping, and RMS norms
    after each sublayer (Gemma 2). Gemma's RMSNorm offset and scaled embeddings are in the
    weights (the conversion folds them in)."""
    problems = []
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        problems.append(f"positional_embedding_type {cfg.positional_embedding_type!r} "
                        f"(only 'standard' and 'rotary')")
    if cfg.normalization_type not in SUPPORTED_NORMS:
        problems.append(f"normalization_type {cfg.normalization_type!r}")
    if not cfg.attn_only and cfg.act_fn not in SUPPORTED_ACTIVATIONS:
        problems.append(f"act_fn {cfg.act_fn!r} (supported: {', '.join(SUPPORTED_ACTIVATIONS)})")
    if cfg.n_key_value_heads is not None and cfg.n_heads % cfg.n_key_value_heads:
        problems.append(f"{cfg.n_heads} query heads do not divide into {cfg.n_key_value_heads} "
                        f"key/value heads")
    if cfg.attention_dir not in ("causal", "bidirectional"):
        problems.append(f"attention_dir {cfg.attention_dir!r} (only 'causal' and 'bidirectional')")
    if getattr(cfg, "use_local_attn", False) and not isinstance(cfg.window_size, int):
        problems.append("local attention without an integer window_size")
    unsupported_flags = {
        "use_qk_norm": "query/key norms", "use_logn_attn": "log-length query scaling",
        "use_dynamic_ntk_rope": "dynamic NTK rotary scaling",
        "post_embedding_ln": "a norm after the embedding",
        "scale_attn_by_inverse_layer_idx": "attention scaled by layer index",
        "use_attention_sinks": "attention sinks", "load_in_4bit": "4-bit weights",
        "num_experts": "mixture of experts",
    }
    problems += [what for flag, what in unsupported_flags.items() if getattr(cfg, flag, None)]
    if getattr(cfg, "final_rms", False) and cfg.normalization_type in ("LN", "LNPre"):
        problems.append("an RMS final norm after LayerNorm blocks (final_rms)")
    if (getattr(cfg, "use_normalization_before_and_after", False)
            and cfg.normalization_type not in (None, "RMS")):
        problems.append(f"norms after each sublayer with normalization_type "
                        f"{cfg.normalization_type!r} (only 'RMS')")
    if getattr(cfg, "clip_qkv", None) is not None:
        problems.append("clipped q/k/v")
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        problems.append(f"post-norm blocks ({cfg.original_architecture})")
    if problems:
        raise ModelError(f"{source}: not supported by the ACDC engine: {'; '.join(problems)}")


def _norm_keys(kind: str | None) -> tuple[str, ...]:
    """The parameters of a norm: LayerNorm's weight and bias, RMSNorm's weight, else none."""
    return {"LN": ("w", "b"), "RMS": ("w",)}.get(kind or "", ())


def parameter_shapes(cfg: HookedConfig) -> dict[str, tuple[int, ...]]:
    """A `HookedTransformer`'s parameters (its state dict without buffers) and their shapes.

    Grouped-query attention (`n_key_value_heads` given) keeps one key and value projection per
    key/value head, under `_W_K`, `_W_V`, `_b_K`, `_b_V`."""
    d_model, d_head, n_heads = cfg.d_model, cfg.d_head, cfg.n_heads
    grouped = cfg.n_key_value_heads is not None
    n_kv, kv = (cfg.n_key_value_heads, "_") if grouped else (n_heads, "")
    shapes: dict[str, tuple[int, ...]] = {"embed.W_E": (cfg.d_vocab, d_model)}
    if cfg.positional_embedding_type != "rotary":
        shapes["pos_embed.W_pos"] = (cfg.n_ctx, d_model)
    block_norm = _norm_keys(cfg.normalization_type)
    post_norm = block_norm if cfg.use_normalization_before_and_after else None
    for i in range(cfg.n_layers):
        layer = f"blocks.{i}"
        norms = ["ln1"] if cfg.attn_only else ["ln1", "ln2"]
        for name in norms:
            shapes.update({f"{layer}.{name}.{p}": (d_model,) for p in block_norm})
            if post_norm is not None:
                shapes.update({f"{layer}.{name}_post.{p}": (d_model,) for p in post_norm})
        at = f"{layer}.attn."
        shapes.update({
            f"{at}W_Q": (n_heads, d_model, d_head), f"{at}b_Q": (n_heads, d_head),
            f"{at}{kv}W_K": (n_kv, d_model, d_head), f"{at}{kv}b_K": (n_kv, d_head),
            f"{at}{kv}W_V": (n_kv, d_model, d_head), f"{at}{kv}b_V": (n_kv, d_head),
            f"{at}W_O": (n_heads, d_head, d_model), f"{at}b_O": (d_model,),
        })
        if not cfg.attn_only:
            d_mlp, mlp = cfg.d_mlp, f"{layer}.mlp."
            shapes.update({f"{mlp}W_in": (d_model, d_mlp), f"{mlp}b_in": (d_mlp,),
                           f"{mlp}W_out": (d_mlp, d_model), f"{mlp}b_out": (d_model,)})
            if cfg.gated_mlp:
                shapes[f"{mlp}W_gate"] = (d_model, d_mlp)
    final = "RMS" if cfg.final_rms and cfg.normalization_type == "LN" else cfg.normalization_type
    shapes.update({f"ln_final.{p}": (d_model,) for p in _norm_keys(final)})
    shapes.update({"unembed.W_U": (d_model, cfg.d_vocab_out), "unembed.b_U": (cfg.d_vocab_out,)})
    return shapes


def model_shape(cfg: Any) -> ModelShape:
    """The shape of a `HookedConfig` or a TransformerLens config."""
    d_mlp = None if cfg.attn_only else cfg.d_mlp
    n_kv = getattr(cfg, "n_key_value_heads", None)
    return ModelShape(
        n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model, d_head=cfg.d_head,
        d_mlp=d_mlp, d_vocab=cfg.d_vocab, n_ctx=cfg.n_ctx, n_params=int(cfg.n_params or 0),
        n_key_value_heads=None if n_kv in (None, cfg.n_heads) else n_kv,
        parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
        mlp_kind="gated" if getattr(cfg, "gated_mlp", False) else "plain",
        post_norm=bool(getattr(cfg, "use_normalization_before_and_after", False)),
    )
