"""A local Hugging Face directory as a `HookedTransformer` state dict, without TransformerLens.

transformers loads the directory (any of its weight formats, tied embeddings, float32); its
config becomes `HookedTransformerConfig` arguments (`hf_mapping.hooked_config`) and each
family's parameters are rearranged here into `HookedTransformer`'s keys and per-head layouts,
the format of the project's own checkpoints, which `weights.weights_from_state_dict` reads. The
rearrangements are the ones TransformerLens 3.9's per-family converters make (the tests hold
the results to theirs, bit for bit):

- a projection `[n_heads * d_head, d_model]` (a `torch.nn.Linear` weight) becomes `W_Q`
  `[n_heads, d_model, d_head]`; GPT-2's `Conv1D` stores it transposed, with q, k and v side
  by side; GPT-NeoX interleaves q, k and v per head;
- the output projection becomes `W_O` `[n_heads, d_head, d_model]`; MLP weights are transposed
  to `[d_model, d_mlp]`; biases a family lacks are zeros;
- grouped key/value heads stay grouped (`_W_K`, `_W_V`, as TransformerLens stores them);
- Gemma's RMSNorm weights `w` become `1 + w` (its norm multiplies by `1 + w`) and its embedding
  is multiplied by sqrt(d_model) (its forward scales the embedded tokens), in float32;
- GPT-J's one LayerNorm per block is both `ln1` and `ln2`; OPT's position table loses its first
  two rows (OPT numbers positions from 2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from acdc.core.architecture import HookedConfig
from acdc.core.configs import CHECKPOINT_CONFIG, read_config
from acdc.core.hf_configs import hf_family
from acdc.core.hf_mapping import hooked_config
from acdc.core.weights import check_state_dict
from acdc.errors import ModelError, first_line

State = dict[str, torch.Tensor]


def read_hf_config(directory: Path) -> tuple[str, HookedConfig]:
    """A Hugging Face directory's family and `HookedConfig` (transformers reads the config, with
    its class's defaults); unknown families and variants the mapping refuses are one line."""
    from transformers import AutoConfig

    family = hf_family(read_config(directory / CHECKPOINT_CONFIG), str(directory))
    try:
        config = AutoConfig.from_pretrained(str(directory))
    except Exception as error:  # transformers raises many types for unreadable configs
        raise ModelError(f"{directory}: transformers cannot read this config "
                         f"({first_line(error)})") from None
    return family, HookedConfig.from_keys(hooked_config(config, family, str(directory)),
                                          str(directory))


def read_hf_state(directory: Path, family: str, cfg: HookedConfig) -> State:
    """A Hugging Face directory's weights as a `HookedTransformer` state dict (offline,
    float32), checked against `cfg`; unreadable weights are one line."""
    import warnings

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in our output
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    except Exception as error:  # transformers raises many types for unreadable directories
        raise ModelError(f"{directory}: cannot load Hugging Face weights "
                         f"({first_line(error)})") from None
    state = hooked_state_dict(family, hf_model.state_dict(), cfg)
    check_state_dict(cfg, state, str(directory), str(directory / CHECKPOINT_CONFIG))
    return state


def hooked_state_dict(family: str, hf_state: State, cfg: HookedConfig) -> State:
    """A Hugging Face state dict of `family` in `HookedTransformer`'s keys and layouts."""
    out: State = {}
    CONVERTERS[family](out, hf_state, cfg)
    return out


def _zeros(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float32)


def _heads_in(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """A Linear weight [n_heads * d_head, d_model] as [n_heads, d_model, d_head]."""
    return weight.reshape(n_heads, -1, weight.shape[-1]).transpose(1, 2)


def _heads_out(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """A Linear weight [d_model, n_heads * d_head] as [n_heads, d_head, d_model]."""
    return weight.reshape(weight.shape[0], n_heads, -1).permute(1, 2, 0)


def _attention(out: State, hf: State, layer: int, prefix: str, cfg: HookedConfig,
               out_name: str, qkv_bias: bool, out_bias: bool) -> None:
    """Separate q, k, v and output projections (`{prefix}q_proj.weight`, ...) of one layer."""
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    kv = "_" if cfg.n_key_value_heads is not None else ""
    at = f"blocks.{layer}.attn."
    for letter, source, heads, grouped in (("Q", "q_proj", cfg.n_heads, ""),
                                           ("K", "k_proj", n_kv, kv), ("V", "v_proj", n_kv, kv)):
        out[f"{at}{grouped}W_{letter}"] = _heads_in(hf[f"{prefix}{source}.weight"], heads)
        out[f"{at}{grouped}b_{letter}"] = (hf[f"{prefix}{source}.bias"].reshape(heads, -1)
                                           if qkv_bias else _zeros(heads, cfg.d_head))
    out[f"{at}W_O"] = _heads_out(hf[f"{prefix}{out_name}.weight"], cfg.n_heads)
    out[f"{at}b_O"] = hf[f"{prefix}{out_name}.bias"] if out_bias else _zeros(cfg.d_model)


def _norm(out: State, name: str, hf: State, prefix: str, bias: bool = True) -> None:
    out[f"{name}.w"] = hf[f"{prefix}.weight"]
    if bias:
        out[f"{name}.b"] = hf[f"{prefix}.bias"]


def _mlp(out: State, layer: int, hf: State, cfg: HookedConfig, w_in: str, w_out: str,
         transposed: bool, bias: bool = True, gate: str | None = None) -> None:
    """An MLP's weights as [d_model, d_mlp] and [d_mlp, d_model] (`transposed`: a Linear's
    [out, in] layout; GPT-2's Conv1D is [in, out] already); zero biases without `bias`."""
    def weight(key: str) -> torch.Tensor:
        return hf[f"{key}.weight"].T if transposed else hf[f"{key}.weight"]

    at = f"blocks.{layer}.mlp."
    out[f"{at}W_in"], out[f"{at}W_out"] = weight(w_in), weight(w_out)
    if gate is not None:
        out[f"{at}W_gate"] = weight(gate)
    out[f"{at}b_in"] = hf[f"{w_in}.bias"] if bias else _zeros(cfg.d_mlp)
    out[f"{at}b_out"] = hf[f"{w_out}.bias"] if bias else _zeros(cfg.d_model)


def _unembed(out: State, hf: State, cfg: HookedConfig, bias: str | None = None) -> None:
    weight = hf.get("lm_head.weight")
    if weight is None:  # GPT-NeoX before transformers 5.14
        weight = hf["embed_out.weight"]
    out["unembed.W_U"] = weight.T
    out["unembed.b_U"] = hf[bias] if bias else _zeros(cfg.d_vocab_out)


# --------------------------------------------------------------------------- families


def _gpt2(out: State, hf: State, cfg: HookedConfig) -> None:
    """GPT-2: Conv1D layers ([in, out]); q, k and v side by side in `c_attn`."""
    d_model, n_heads = cfg.d_model, cfg.n_heads
    out["embed.W_E"] = hf["transformer.wte.weight"]
    out["pos_embed.W_pos"] = hf["transformer.wpe.weight"][:cfg.n_ctx]
    for i in range(cfg.n_layers):
        h, at = f"transformer.h.{i}.", f"blocks.{i}.attn."
        _norm(out, f"blocks.{i}.ln1", hf, h + "ln_1")
        weights = hf[h + "attn.c_attn.weight"].split(d_model, dim=1)
        biases = hf[h + "attn.c_attn.bias"].reshape(3, n_heads, cfg.d_head)
        for j, name in enumerate("QKV"):
            out[f"{at}W_{name}"] = weights[j].reshape(d_model, n_heads, -1).transpose(0, 1)
            out[f"{at}b_{name}"] = biases[j]
        out[f"{at}W_O"] = hf[h + "attn.c_proj.weight"].reshape(n_heads, -1, d_model)
        out[f"{at}b_O"] = hf[h + "attn.c_proj.bias"]
        _norm(out, f"blocks.{i}.ln2", hf, h + "ln_2")
        _mlp(out, i, hf, cfg, h + "mlp.c_fc", h + "mlp.c_proj", transposed=False)
    _norm(out, "ln_final", hf, "transformer.ln_f")
    _unembed(out, hf, cfg)


def _gpt_neox(out: State, hf: State, cfg: HookedConfig) -> None:
    """GPT-NeoX / Pythia: one fused projection, q, k and v interleaved per head."""
    n_heads = cfg.n_heads
    out["embed.W_E"] = hf["gpt_neox.embed_in.weight"]
    for i in range(cfg.n_layers):
        h, at = f"gpt_neox.layers.{i}.", f"blocks.{i}.attn."
        _norm(out, f"blocks.{i}.ln1", hf, h + "input_layernorm")
        fused = hf[h + "attention.query_key_value.weight"]
        weights = fused.reshape(n_heads, 3, -1, fused.shape[-1])
        biases = hf[h + "attention.query_key_value.bias"].reshape(n_heads, 3, -1)
        for j, name in enumerate("QKV"):
            out[f"{at}W_{name}"] = weights[:, j].transpose(1, 2)
            out[f"{at}b_{name}"] = biases[:, j]
        out[f"{at}W_O"] = _heads_out(hf[h + "attention.dense.weight"], n_heads)
        out[f"{at}b_O"] = hf[h + "attention.dense.bias"]
        _norm(out, f"blocks.{i}.ln2", hf, h + "post_attention_layernorm")
        _mlp(out, i, hf, cfg, h + "mlp.dense_h_to_4h", h + "mlp.dense_4h_to_h",
             transposed=True)
    _norm(out, "ln_final", hf, "gpt_neox.final_layer_norm")
    _unembed(out, hf, cfg)


def _gptj(out: State, hf: State, cfg: HookedConfig) -> None:
    """GPT-J: no attention biases; one LayerNorm per block (both ln1 and ln2); an unembedding
    bias."""
    out["embed.W_E"] = hf["transformer.wte.weight"]
    for i in range(cfg.n_layers):
        h = f"transformer.h.{i}."
        _norm(out, f"blocks.{i}.ln1", hf, h + "ln_1")
        _norm(out, f"blocks.{i}.ln2", hf, h + "ln_1")
        _attention(out, hf, i, h + "attn.", cfg, "out_proj", qkv_bias=False, out_bias=False)
        _mlp(out, i, hf, cfg, h + "mlp.fc_in", h + "mlp.fc_out", transposed=True)
    _norm(out, "ln_final", hf, "transformer.ln_f")
    _unembed(out, hf, cfg, bias="lm_head.bias")


def _llama_like(out: State, hf: State, cfg: HookedConfig, family: str) -> None:
    """Llama, Mistral, Qwen2 (q/k/v biases), Gemma and Gemma 2 (norm offset, scaled embedding;
    Gemma 2's norms before and after each sublayer)."""
    gemma = family.startswith("gemma")

    def norm(name: str, key: str) -> None:
        weight = hf[f"{key}.weight"]
        out[f"{name}.w"] = weight.float() + 1 if gemma else weight

    embedding = hf["model.embed_tokens.weight"]
    out["embed.W_E"] = (embedding * torch.tensor(cfg.d_model ** 0.5, dtype=torch.float32)
                        if gemma else embedding)
    for i in range(cfg.n_layers):
        h, block = f"model.layers.{i}.", f"blocks.{i}"
        norm(f"{block}.ln1", h + "input_layernorm")
        _attention(out, hf, i, h + "self_attn.", cfg, "o_proj", qkv_bias=family == "qwen2",
                   out_bias=False)
        if family == "gemma2":
            norm(f"{block}.ln1_post", h + "post_attention_layernorm")
            norm(f"{block}.ln2", h + "pre_feedforward_layernorm")
            norm(f"{block}.ln2_post", h + "post_feedforward_layernorm")
        else:
            norm(f"{block}.ln2", h + "post_attention_layernorm")
        _mlp(out, i, hf, cfg, h + "mlp.up_proj", h + "mlp.down_proj", transposed=True,
             bias=False, gate=h + "mlp.gate_proj")
    norm("ln_final", "model.norm")
    _unembed(out, hf, cfg)


def _opt(out: State, hf: State, cfg: HookedConfig) -> None:
    """OPT: positions numbered from 2, so the table's first two rows are never read."""
    d = "model.decoder."
    out["embed.W_E"] = hf[d + "embed_tokens.weight"]
    out["pos_embed.W_pos"] = hf[d + "embed_positions.weight"][2:]
    for i in range(cfg.n_layers):
        h = f"{d}layers.{i}."
        _norm(out, f"blocks.{i}.ln1", hf, h + "self_attn_layer_norm")
        _attention(out, hf, i, h + "self_attn.", cfg, "out_proj", qkv_bias=True, out_bias=True)
        _norm(out, f"blocks.{i}.ln2", hf, h + "final_layer_norm")
        _mlp(out, i, hf, cfg, h + "fc1", h + "fc2", transposed=True)
    _norm(out, "ln_final", hf, d + "final_layer_norm")
    _unembed(out, hf, cfg)


def _gpt_neo(out: State, hf: State, cfg: HookedConfig) -> None:
    """GPT-Neo: no q/k/v biases; an output bias."""
    out["embed.W_E"] = hf["transformer.wte.weight"]
    out["pos_embed.W_pos"] = hf["transformer.wpe.weight"][:cfg.n_ctx]
    for i in range(cfg.n_layers):
        h = f"transformer.h.{i}."
        _norm(out, f"blocks.{i}.ln1", hf, h + "ln_1")
        _attention(out, hf, i, h + "attn.attention.", cfg, "out_proj", qkv_bias=False,
                   out_bias=True)
        _norm(out, f"blocks.{i}.ln2", hf, h + "ln_2")
        _mlp(out, i, hf, cfg, h + "mlp.c_fc", h + "mlp.c_proj", transposed=True)
    _norm(out, "ln_final", hf, "transformer.ln_f")
    _unembed(out, hf, cfg)


def _family(name: str) -> Callable[[State, State, HookedConfig], None]:
    return lambda out, hf, cfg: _llama_like(out, hf, cfg, name)


CONVERTERS: dict[str, Callable[[State, State, HookedConfig], None]] = {
    "gpt2": _gpt2, "gpt_neox": _gpt_neox, "gptj": _gptj, "opt": _opt, "gpt_neo": _gpt_neo,
    **{name: _family(name) for name in ("llama", "mistral", "qwen2", "gemma", "gemma2")},
}
