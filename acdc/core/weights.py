"""The weights the engine computes with, and how a `HookedTransformer` state dict becomes them.

`Weights` holds every tensor the forward passes in `forward.py`, `patching.py` and the
attribution methods need, in `HookedTransformer`'s per-head layouts (`W_Q` [n_heads, d_model,
d_head], `W_O` [n_heads, d_head, d_model], `W_in` [d_model, d_mlp], `W_U` [d_model, d_vocab]),
plus the constants of the architecture (norm kind, attention scale, rotary layout, windows,
soft caps). Nothing in it refers to a framework.

`weights_from_state_dict` builds it from a `HookedTransformer` state dict (a checkpoint's
`model.safetensors`, or a Hugging Face model converted by `hf_weights`; `check_state_dict`
checks its keys and shapes first) and the model's `HookedConfig`, without TransformerLens: it
ungroups grouped-query attention (every query head gets its own copy of its key/value head's
projection, as TransformerLens' `W_K` property does) and computes the rotary sin/cos tables with
TransformerLens' formulas (default, Llama 3's NTK-by-parts and YaRN scaling, a local base, a
linear factor on global layers), in float32, before the whole is cast to the run's dtype.
`models.extract_weights` reads the same value off a TransformerLens model; the tests hold the
two to bit-identical tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from acdc.core.architecture import SUPPORTED_ACTIVATIONS, HookedConfig, parameter_shapes
from acdc.errors import ModelError


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")


# TransformerLens' activations as single fused kernels (gelu_new and gelu_fast are the tanh
# approximation of GELU, written out in several operations there).
ACTIVATIONS = {
    "relu": torch.nn.functional.relu, "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "gelu_new": _gelu_tanh, "gelu_fast": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh,
}
assert tuple(ACTIVATIONS) == SUPPORTED_ACTIVATIONS


@dataclass(frozen=True)
class LayerWeights:
    """One block's parameters, in the layouts `forward.py` computes with."""

    ln1_w: torch.Tensor | None  # [d_model]
    ln1_b: torch.Tensor | None
    W_Q: torch.Tensor  # [n_heads, d_model, d_head]
    b_Q: torch.Tensor  # [n_heads, d_head]
    W_K: torch.Tensor
    b_K: torch.Tensor
    W_V: torch.Tensor
    b_V: torch.Tensor
    W_O: torch.Tensor  # [n_heads, d_head, d_model]
    b_O: torch.Tensor  # [d_model]
    ln2_w: torch.Tensor | None
    ln2_b: torch.Tensor | None
    W_in: torch.Tensor | None  # [d_model, d_mlp]
    b_in: torch.Tensor | None
    W_gate: torch.Tensor | None
    W_out: torch.Tensor | None  # [d_mlp, d_model]
    b_out: torch.Tensor | None
    # norms after the attention and the MLP (Gemma 2), applied before the residual addition
    ln1_post_w: torch.Tensor | None = None
    ln1_post_b: torch.Tensor | None = None
    ln2_post_w: torch.Tensor | None = None
    ln2_post_b: torch.Tensor | None = None
    rotary_sin: torch.Tensor | None = None  # [n_ctx, rotary_dim]
    rotary_cos: torch.Tensor | None = None
    window: int | None = None  # local attention: a query reads the `window` latest keys


@dataclass(frozen=True)
class Weights:
    """Everything the patched forward needs, detached from the framework."""

    W_E: torch.Tensor  # [d_vocab, d_model]
    W_pos: torch.Tensor | None  # [n_ctx, d_model]; None with rotary positions
    layers: tuple[LayerWeights, ...]
    ln_final_w: torch.Tensor | None
    ln_final_b: torch.Tensor | None
    W_U: torch.Tensor  # [d_model, d_vocab_out]
    b_U: torch.Tensor
    normalization: str | None  # None, "LN", "LNPre", "RMS", "RMSPre"
    eps: float
    attn_scale: float
    act_fn: str | None
    act: Any  # the MLP activation, a fused equivalent of the model's
    n_heads: int
    attn_only: bool
    causal: bool = True  # attention_dir "causal"; False: "bidirectional" (every key, every query)
    rotary_dim: int = 0  # rotary positions on the first rotary_dim of d_head; 0: none
    rotary_adjacent: bool = False  # GPT-J's layout (adjacent pairs); else NeoX's (two halves)
    attn_soft_cap: float = 0.0  # scores -> cap * tanh(scores / cap) when > 0
    logit_soft_cap: float = 0.0  # logits -> cap * tanh(logits / cap) when > 0
    parallel: bool = False  # the MLP reads the block's input, as its heads do
    post_norm: bool = False  # sublayer outputs are normalised before the residual addition

    @property
    def dtype(self) -> torch.dtype:
        return self.W_E.dtype

    @property
    def device(self) -> torch.device:
        return self.W_E.device


def architecture_constants(cfg: Any, attn_scale: float) -> dict[str, Any]:
    """The fields of `Weights` that are not tensors, from a `HookedConfig` or TransformerLens'
    config (`attn_scale`: the divisor of the attention scores)."""
    rotary = cfg.positional_embedding_type == "rotary"
    return dict(
        normalization=cfg.normalization_type, eps=cfg.eps, attn_scale=float(attn_scale),
        act_fn=cfg.act_fn, act=None if cfg.attn_only else ACTIVATIONS[cfg.act_fn],
        n_heads=cfg.n_heads, attn_only=cfg.attn_only, causal=cfg.attention_dir == "causal",
        rotary_dim=(cfg.rotary_dim or 0) if rotary else 0,
        rotary_adjacent=bool(getattr(cfg, "rotary_adjacent_pairs", False)),
        attn_soft_cap=max(float(getattr(cfg, "attn_scores_soft_cap", -1.0) or 0.0), 0.0),
        logit_soft_cap=max(float(getattr(cfg, "output_logits_soft_cap", -1.0) or 0.0), 0.0),
        parallel=bool(getattr(cfg, "parallel_attn_mlp", False)),
        post_norm=bool(getattr(cfg, "use_normalization_before_and_after", False)),
    )


LAYER_TENSORS = tuple(f.name for f in fields(LayerWeights) if f.name != "window")


def is_buffer_key(key: str) -> bool:
    """A `HookedTransformer` buffer (masks, rotary tables): recomputed, never read."""
    return key.endswith(("IGNORE", ".mask", "rotary_sin", "rotary_cos"))


def check_state_dict(cfg: HookedConfig, state: dict[str, torch.Tensor], source: str,
                     config_source: str) -> None:
    """The state dict read from `source` holds exactly the parameters `config_source` implies,
    at their shapes (buffers are ignored): else one line naming the first keys at fault."""
    expected = parameter_shapes(cfg)
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected and not is_buffer_key(k))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(f"{source}: state dict does not match {config_source} ({what})")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ModelError(f"{source}: {key} has shape {tuple(state[key].shape)}, config "
                             f"implies {shape}")


def weights_from_state_dict(cfg: HookedConfig, state: dict[str, torch.Tensor],
                            dtype: torch.dtype = torch.float32,
                            device: torch.device | str = "cpu") -> Weights:
    """The engine's `Weights` of a `HookedTransformer` state dict (checked with
    `check_state_dict`) in `dtype` on `device`.

    Each tensor is read as float32 first, as a `HookedTransformer` built in float32 holds it,
    then cast; every tensor is contiguous."""

    def get(key: str) -> torch.Tensor | None:
        value = state.get(key)
        if value is None:
            return None
        return value.to(torch.float32).to(device=device, dtype=dtype).contiguous()

    def need(key: str) -> torch.Tensor:
        value = get(key)
        assert value is not None, key  # check_state_dict has seen every parameter
        return value

    def ungrouped(key: str) -> torch.Tensor:
        value = need(key)
        if cfg.n_key_value_heads is None:
            return value
        return torch.repeat_interleave(value, dim=0, repeats=cfg.n_heads // cfg.n_key_value_heads)

    kv = "_" if cfg.n_key_value_heads is not None else ""
    tables = RotaryTables(cfg, dtype, device)
    layers = []
    for i, kind in enumerate(cfg.attn_types):
        p = f"blocks.{i}"
        sin, cos = tables.for_layer(kind) if cfg.positional_embedding_type == "rotary" else (
            None, None)
        layers.append(LayerWeights(
            ln1_w=get(f"{p}.ln1.w"), ln1_b=get(f"{p}.ln1.b"),
            W_Q=need(f"{p}.attn.W_Q"), b_Q=need(f"{p}.attn.b_Q"),
            W_K=ungrouped(f"{p}.attn.{kv}W_K"), b_K=ungrouped(f"{p}.attn.{kv}b_K"),
            W_V=ungrouped(f"{p}.attn.{kv}W_V"), b_V=ungrouped(f"{p}.attn.{kv}b_V"),
            W_O=need(f"{p}.attn.W_O"), b_O=need(f"{p}.attn.b_O"),
            ln2_w=get(f"{p}.ln2.w"), ln2_b=get(f"{p}.ln2.b"),
            W_in=get(f"{p}.mlp.W_in"), b_in=get(f"{p}.mlp.b_in"), W_gate=get(f"{p}.mlp.W_gate"),
            W_out=get(f"{p}.mlp.W_out"), b_out=get(f"{p}.mlp.b_out"),
            ln1_post_w=get(f"{p}.ln1_post.w"), ln1_post_b=get(f"{p}.ln1_post.b"),
            ln2_post_w=get(f"{p}.ln2_post.w"), ln2_post_b=get(f"{p}.ln2_post.b"),
            rotary_sin=sin, rotary_cos=cos,
            window=cfg.window_size if kind == "local" else None))
    return Weights(
        W_E=need("embed.W_E"), W_pos=get("pos_embed.W_pos"), layers=tuple(layers),
        ln_final_w=get("ln_final.w"), ln_final_b=get("ln_final.b"),
        W_U=need("unembed.W_U"), b_U=need("unembed.b_U"),
        **architecture_constants(cfg, cfg.attn_scale if cfg.use_attn_scale else 1.0))


class RotaryTables:
    """A model's rotary sin and cos tables [n_ctx, rotary_dim], one per kind of layer ("global"
    or "local": a local base, YaRN on global layers only and the linear factor make them
    differ), computed once each with TransformerLens' formulas in float32, then cast."""

    def __init__(self, cfg: HookedConfig, dtype: torch.dtype, device: torch.device | str):
        self.cfg, self.dtype, self.device = cfg, dtype, device
        self.tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def for_layer(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        if kind not in self.tables:
            sin, cos = rotary_tables(self.cfg, kind)
            self.tables[kind] = (sin.to(device=self.device, dtype=self.dtype),
                                 cos.to(device=self.device, dtype=self.dtype))
        return self.tables[kind]


def rotary_tables(cfg: HookedConfig, kind: str = "global") -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) [n_ctx, rotary_dim] in float32 for a layer of `kind`: angle position / freq
    for each frequency, repeated in adjacent pairs (GPT-J) or as two halves (NeoX)."""
    dim, n_ctx = cfg.rotary_dim, cfg.n_ctx
    base = cfg.rotary_base_local if kind == "local" and cfg.rotary_base_local is not None else (
        cfg.rotary_base)
    positions = torch.arange(n_ctx, dtype=torch.float32)
    yarn = cfg.use_yarn_rope and not (cfg.yarn_global_attn_only and kind == "local")
    if cfg.use_NTK_by_parts_rope:
        freq = 1 / _ntk_by_parts_inverse(cfg, base, dim)
    elif yarn:
        freq = 1.0 / _yarn_inverse(cfg, base, dim)
    else:
        freq = base ** (torch.arange(dim // 2, dtype=torch.float32) / (dim / 2))
        if cfg.rotary_scaling_factor != 1.0 and kind != "local":
            freq = freq * cfg.rotary_scaling_factor
    freq = freq.repeat_interleave(2) if cfg.rotary_adjacent_pairs else freq.repeat(2)
    angles = positions[:, None] / freq[None, :]
    sin, cos = torch.sin(angles), torch.cos(angles)
    if yarn and cfg.yarn_attention_factor != 1.0:
        sin, cos = sin * cfg.yarn_attention_factor, cos * cfg.yarn_attention_factor
    return sin, cos


def _ntk_by_parts_inverse(cfg: HookedConfig, base: float, dim: int) -> torch.Tensor:
    """Llama 3's inverse frequencies: long wavelengths divided by the factor, short ones kept,
    those between blended smoothly."""
    inverse = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    factor = cfg.NTK_by_parts_factor
    low, high = cfg.NTK_by_parts_low_freq_factor, cfg.NTK_by_parts_high_freq_factor
    context = cfg.NTK_original_ctx_len
    low_wavelength, high_wavelength = context / low, context / high
    wavelength = 2 * math.pi / inverse
    scaled = torch.where(wavelength > low_wavelength, inverse / factor, inverse)
    smooth = (context / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelength < high_wavelength) * ~(wavelength > low_wavelength)
    return torch.where(medium, blended, scaled)


def _yarn_inverse(cfg: HookedConfig, base: float, dim: int) -> torch.Tensor:
    """YaRN's inverse frequencies: interpolated (divided by the factor) above the correction
    range, extrapolated (kept) below it, ramped linearly between."""
    inverse = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    context = cfg.yarn_original_max_position_embeddings

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(context / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(cfg.yarn_beta_fast), correction_dim(cfg.yarn_beta_slow)
    if cfg.yarn_truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    top = float(high) + 0.001 if low == high else float(high)
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (top - low), 0, 1)
    return (inverse / cfg.yarn_factor) * ramp + inverse * (1 - ramp)
