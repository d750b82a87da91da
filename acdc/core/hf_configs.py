"""Hugging Face `config.json` files read as plain data: a model's shape without torch.

`circuit graph` on a local Hugging Face directory answers from its `config.json` alone, and a
run checks a model's size before anything is loaded. Each family names its facts differently
(`n_layer`, `num_hidden_layers`, `num_layers`; `n_inner` that means 4 x `n_embd` when null; a
`head_dim` that is not `hidden_size / num_attention_heads`); one reader per family maps them to
a `ModelShape`: the layer and query-head counts, the key/value heads under grouped-query
attention, whether attention and MLP run in parallel, the MLP's kind and width, vocabulary,
context, and the parameter count (every weight, bias and norm, computed from the config).

Families: GPT-2 (`gpt2`), GPT-NeoX / Pythia (`gpt_neox`), GPT-J (`gptj`), Llama 2 and 3
(`llama`), Mistral (`mistral`), Qwen2 / Qwen2.5 (`qwen2`), Gemma (`gemma`), Gemma 2
(`gemma2`), OPT (`opt`) and GPT-Neo (`gpt_neo`). Mixture-of-experts models (a routed choice
of MLPs is not one MLP node per layer) and encoder-decoder models (two stacks, cross
attention) are refused in one line that says why; so is any other family, and any key of the
wrong type or range.

Both spellings of the rotary settings are read: the published configs' `rope_theta`,
`rope_scaling` and `rotary_pct`, and the `rope_parameters` that transformers 5 writes.

>>> shape = hf_shape({"model_type": "llama", "num_hidden_layers": 16, "num_attention_heads": 32,
...                   "num_key_value_heads": 8, "hidden_size": 2048, "intermediate_size": 8192,
...                   "vocab_size": 128256, "max_position_embeddings": 131072,
...                   "tie_word_embeddings": True})
>>> shape.n_kv_heads, shape.mlp_kind, shape.n_params_total  # Llama-3.2-1B
(8, 'gated', 1235814400)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from acdc.core.configs import ModelShape
from acdc.errors import ModelError, did_you_mean

_REQUIRED = object()

# model_type of the families read here, and the architecture class names that imply them
# (for a config.json with `architectures` and no `model_type`).
ARCHITECTURES: dict[str, str] = {
    "GPT2LMHeadModel": "gpt2", "GPTNeoXForCausalLM": "gpt_neox", "GPTJForCausalLM": "gptj",
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2", "OPTForCausalLM": "opt",
    "GPTNeoForCausalLM": "gpt_neo",
}
# Keys that give a mixture-of-experts model its experts (Mixtral, PhiMoE: num_local_experts;
# Qwen2-MoE, OLMoE: num_experts; DeepSeek: n_routed_experts; DBRX: ffn_config.moe_num_experts).
EXPERT_KEYS: tuple[str, ...] = ("num_local_experts", "num_experts", "n_routed_experts",
                                "moe_num_experts")
MOE_TYPES: frozenset[str] = frozenset({
    "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "dbrx",
    "phimoe", "granitemoe", "jetmoe", "switch_transformers", "nllb-moe", "jamba",
})
ENCODER_DECODER_TYPES: frozenset[str] = frozenset({
    "t5", "mt5", "umt5", "longt5", "bart", "mbart", "pegasus", "pegasus_x", "marian", "led",
    "m2m_100", "prophetnet", "fsmt", "blenderbot", "blenderbot-small", "plbart", "whisper",
    "encoder-decoder", "bigbird_pegasus", "switch_transformers",
})
# What transformers' config classes assume when a key is absent (not when it is null, which
# switches the feature off), where that differs from "no such feature".
ABSENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "gptj": {"rotary_dim": 64},
    "mistral": {"sliding_window": 4096},
    "gemma": {"head_dim": 256, "hidden_act": "gelu_pytorch_tanh"},
    "gemma2": {"head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
               "query_pre_attn_scalar": 256, "sliding_window": 4096},
}


class Keys:
    """A config's keys read with their type and range checked: one line naming the key."""

    def __init__(self, config: dict[str, Any], source: str):
        self.config = config
        self.source = source

    def _get(self, key: str, default: Any) -> tuple[Any, bool]:
        """The key's value and True, or (absent or null) the default and False."""
        value = self.config.get(key)
        if value is not None:
            return value, True
        if default is _REQUIRED:
            raise ModelError(f"{self.source}: missing {key}; a {self.config.get('model_type')} "
                             f"config.json gives it")
        return default, False

    def whole(self, key: str, default: Any = _REQUIRED, least: int = 1) -> Any:
        value, given = self._get(key, default)
        if given and (isinstance(value, bool) or not isinstance(value, int)):
            raise ModelError(f"{self.source}: {key} is {value!r}; it must be a whole number")
        if given and value < least:
            raise ModelError(f"{self.source}: {key} is {value}; it must be >= {least}")
        return value

    def number(self, key: str, default: Any = None) -> Any:
        value, given = self._get(key, default)
        if given and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ModelError(f"{self.source}: {key} is {value!r}; it must be a number")
        if given and not value > 0:
            raise ModelError(f"{self.source}: {key} is {value}; it must be positive")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value, given = self._get(key, default)
        if given and not isinstance(value, bool):
            raise ModelError(f"{self.source}: {key} is {value!r}; it must be true or false")
        return value

    def text(self, key: str, default: Any = None) -> Any:
        value, given = self._get(key, default)
        if given and not isinstance(value, str):
            raise ModelError(f"{self.source}: {key} is {value!r}; it must be a string")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value, _ = self._get(key, {})
        if not isinstance(value, dict):
            raise ModelError(f"{self.source}: {key} is {value!r}; it must be a JSON object or null")
        return value

    def divides(self, whole_key: str, part_key: str, whole: int, part: int) -> None:
        if whole % part:
            raise ModelError(f"{self.source}: {whole_key} {whole} is not a multiple of "
                             f"{part_key} {part}")


@dataclass(frozen=True)
class Block:
    """One family's block layout, for the parameter count."""

    qkv_bias: bool
    out_bias: bool
    mlp_bias: bool
    norms: int  # per block
    norm_params: int  # per norm, in units of d_model: 2 LayerNorm, 1 RMSNorm, 0 none
    final_norm: bool = True


def hf_shape(config: dict[str, Any], source: str = "config.json") -> ModelShape:
    """The shape of a Hugging Face model from its `config.json` dictionary."""
    family = hf_family(config, source)
    return READERS[family](Keys({**ABSENT_DEFAULTS.get(family, {}), **config}, source), family)


def hf_family(config: dict[str, Any], source: str = "config.json") -> str:
    """The family a config belongs to; mixture-of-experts, encoder-decoder and unknown
    families refused in one line."""
    keys = Keys(config, source)
    model_type = keys.text("model_type")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        raise ModelError(f"{source}: architectures is {architectures!r}; it must be a list")
    name = model_type or next((ARCHITECTURES[a] for a in architectures if a in ARCHITECTURES), None)
    what = model_type or (architectures[0] if architectures else "this model")
    if config.get("is_encoder_decoder") is True or name in ENCODER_DECODER_TYPES:
        raise ModelError(f"{source}: {what} is an encoder-decoder model (is_encoder_decoder): "
                         f"circuit reads decoder-only language models (one residual stream, "
                         f"no cross-attention); not supported")
    experts = _experts(config)
    if experts or name in MOE_TYPES:
        count = f" ({experts[0]} {experts[1]})" if experts else ""
        raise ModelError(f"{source}: {what} is a mixture-of-experts model{count}: a routed "
                         f"choice among expert MLPs is not the one MLP node per layer the graph "
                         f"has; not supported")
    if name is None:
        raise ModelError(f"{source}: no model_type and no known architectures; a Hugging Face "
                         f"config.json names its model_type (one of {', '.join(READERS)})")
    if name not in READERS:
        raise ModelError(f"{source}: model_type {name!r} is not a family circuit reads"
                         f"{did_you_mean(name, READERS)}; supported: {', '.join(READERS)}")
    return name


def _experts(config: dict[str, Any]) -> tuple[str, Any] | None:
    nested = config.get("ffn_config")
    if not isinstance(nested, dict):
        nested = {}
    for key in EXPERT_KEYS:
        for where in (config, nested):
            value = where.get(key)
            if value not in (None, 0, 1, False):
                return key, value
    return None


# --------------------------------------------------------------------------- counting


def _count(keys: Keys, family: str, *, n_layers: int, n_heads: int, n_kv: int, d_model: int,
           d_head: int, d_mlp: int, gated: bool, d_vocab: int, n_ctx: int, parallel: bool,
           tied: bool, block: Block, positions: int = 0, d_embed: int | None = None,
           unembed_bias: bool = False, features: list[str]) -> ModelShape:
    """A `ModelShape` with its parameters counted: attention (query heads, key/value heads,
    output), MLP, biases, norms; embedding, position table, unembedding (once when tied), and
    the projections of word embeddings narrower than d_model (`d_embed`)."""
    attn = d_model * d_head * (2 * n_heads + 2 * n_kv)
    mlp = d_model * d_mlp * (3 if gated else 2)
    biases = ((n_heads + 2 * n_kv) * d_head if block.qkv_bias else 0)
    biases += d_model if block.out_bias else 0
    biases += ((2 if gated else 1) * d_mlp + d_model) if block.mlp_bias else 0
    norm = d_model * block.norm_params
    per_block = attn + mlp + biases + block.norms * norm
    d_embed = d_embed or d_model
    embeddings = d_vocab * d_embed * (1 if tied else 2) + positions * d_model
    embeddings += 2 * d_embed * d_model if d_embed != d_model else 0
    embeddings += d_vocab if unembed_bias else 0
    total = n_layers * per_block + (norm if block.final_norm else 0) + embeddings
    if parallel:
        features.insert(0, "parallel attention and MLP")
    if n_kv != n_heads:
        kind = "multi-query" if n_kv == 1 else "grouped-query"
        features.append(f"{kind} attention ({n_heads} query heads share {n_kv} key/value heads)")
    if tied:
        features.append("tied embeddings")
    return ModelShape(
        n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_head, d_mlp=d_mlp,
        d_vocab=d_vocab, n_ctx=n_ctx, n_params=n_layers * (attn + mlp),
        n_key_value_heads=None if n_kv == n_heads else n_kv, parallel_attn_mlp=parallel,
        mlp_kind="gated" if gated else "plain", n_params_all=total, tied_embeddings=tied,
        architecture=family, features=tuple(features), post_norm=family == "gemma2",
    )


def _heads(keys: Keys, d_model: int, heads_key: str, head_dim_key: str | None = None,
           kv_key: str | None = None) -> tuple[int, int, int]:
    """(query heads, key/value heads, d_head), checked against each other."""
    n_heads = keys.whole(heads_key)
    n_kv = keys.whole(kv_key, n_heads) if kv_key else n_heads
    keys.divides(heads_key, kv_key or heads_key, n_heads, n_kv)
    d_head = keys.whole(head_dim_key, None) if head_dim_key else None
    if d_head is None:
        keys.divides("hidden size", heads_key, d_model, n_heads)
        d_head = d_model // n_heads
    return n_heads, n_kv, d_head


def _rope(keys: Keys, d_head: int, theta_key: str = "rope_theta", fraction_key: str | None = None,
          default_fraction: float = 1.0, rotary_dim: int | None = None, layout: str = "") -> str:
    """The rotary settings as a feature: dimensions, base, scaling. Reads both the published
    keys and transformers 5's `rope_parameters`."""
    params = keys.mapping("rope_parameters")
    scaling = keys.mapping("rope_scaling") or {k: v for k, v in params.items()
                                               if k not in ("rope_theta", "partial_rotary_factor")}
    theta = _positive(keys, theta_key, params, "rope_theta", 10000.0)
    if rotary_dim is None:
        fraction = _positive(keys, fraction_key, params, "partial_rotary_factor", default_fraction)
        if fraction > 1:
            raise ModelError(f"{keys.source}: the rotary fraction is {fraction}; it must be at "
                             f"most 1")
        rotary_dim = int(d_head * fraction)
    if rotary_dim > d_head:
        raise ModelError(f"{keys.source}: rotary_dim {rotary_dim} is more than the head dimension "
                         f"{d_head}")
    dims = f"all {d_head}" if rotary_dim == d_head else f"{rotary_dim} of {d_head}"
    base = f"{int(theta)}" if float(theta).is_integer() else f"{theta:g}"
    text = f"rotary ({dims} dims of each head{layout}, base {base}"
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind not in (None, "default"):
        factor = scaling.get("factor")
        text += f", {kind} scaling" + (f" x{factor:g}" if _is_number(factor) else "")
    return text + ")"


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _positive(keys: Keys, key: str | None, params: dict[str, Any], params_key: str,
              default: float) -> float:
    """A positive number given by the published key, else by `rope_parameters`, else the
    family's default."""
    given = keys.config.get(key) if key else None
    for value, where in ((given, key), (params.get(params_key), f"rope_parameters.{params_key}")):
        if value is None:
            continue
        if not _is_number(value) or not value > 0:
            raise ModelError(f"{keys.source}: {where} is {value!r}; it must be a positive number")
        return value
    return default


# --------------------------------------------------------------------------- families


def _gpt2(keys: Keys, family: str) -> ModelShape:
    d_model = keys.whole("n_embd")
    n_heads, n_kv, d_head = _heads(keys, d_model, "n_head")
    n_ctx = keys.whole("n_positions", None) or keys.whole("n_ctx")
    act = keys.text("activation_function", "gelu_new")
    features = ["learned positions", "LayerNorm", f"MLP ({act})"]
    if keys.flag("scale_attn_by_inverse_layer_idx", False):
        features.append("attention scaled by 1 / (layer + 1)")
    if keys.flag("add_cross_attention", False):
        raise ModelError(f"{keys.source}: add_cross_attention is true: a decoder of an "
                         f"encoder-decoder model (cross-attention); not supported")
    return _count(keys, family, n_layers=keys.whole("n_layer"), n_heads=n_heads, n_kv=n_kv,
                  d_model=d_model, d_head=d_head, d_mlp=keys.whole("n_inner", 4 * d_model),
                  gated=False, d_vocab=keys.whole("vocab_size"), n_ctx=n_ctx, parallel=False,
                  tied=keys.flag("tie_word_embeddings", True),
                  block=Block(qkv_bias=True, out_bias=True, mlp_bias=True, norms=2, norm_params=2),
                  positions=n_ctx, features=features)


def _gpt_neox(keys: Keys, family: str) -> ModelShape:
    d_model = keys.whole("hidden_size")
    n_heads, n_kv, d_head = _heads(keys, d_model, "num_attention_heads")
    parallel = keys.flag("use_parallel_residual", True)
    bias = keys.flag("attention_bias", True)
    features = [_rope(keys, d_head, "rotary_emb_base", "rotary_pct", default_fraction=0.25,
                      layout=", NeoX layout: first and second halves"),
                "LayerNorm", f"MLP ({keys.text('hidden_act', 'gelu')})"]
    return _count(keys, family, n_layers=keys.whole("num_hidden_layers"), n_heads=n_heads,
                  n_kv=n_kv, d_model=d_model, d_head=d_head, d_mlp=keys.whole("intermediate_size"),
                  gated=False, d_vocab=keys.whole("vocab_size"),
                  n_ctx=keys.whole("max_position_embeddings"), parallel=parallel,
                  tied=keys.flag("tie_word_embeddings", False),
                  block=Block(qkv_bias=bias, out_bias=bias, mlp_bias=True, norms=2, norm_params=2),
                  features=features)


def _gptj(keys: Keys, family: str) -> ModelShape:
    d_model = keys.whole("n_embd")
    n_heads, n_kv, d_head = _heads(keys, d_model, "n_head")
    rotary_dim = keys.whole("rotary_dim", d_head)
    act = keys.text("activation_function", "gelu_new")
    features = [_rope(keys, d_head, rotary_dim=rotary_dim,
                      layout=", GPT-J layout: interleaved pairs"),
                "LayerNorm (one per block)", f"MLP ({act})"]
    return _count(keys, family, n_layers=keys.whole("n_layer"), n_heads=n_heads, n_kv=n_kv,
                  d_model=d_model, d_head=d_head, d_mlp=keys.whole("n_inner", 4 * d_model),
                  gated=False, d_vocab=keys.whole("vocab_size"), n_ctx=keys.whole("n_positions"),
                  parallel=True, tied=keys.flag("tie_word_embeddings", False),
                  block=Block(qkv_bias=False, out_bias=False, mlp_bias=True, norms=1,
                              norm_params=2),
                  unembed_bias=True, features=features)


def _llama_like(keys: Keys, family: str) -> ModelShape:
    """Llama, Mistral, Qwen2, Gemma and Gemma 2: RMSNorm, rotary, gated MLP, grouped-query
    attention; they differ in biases, norms, windows and soft-capping."""
    d_model = keys.whole("hidden_size")
    gemma = family.startswith("gemma")
    n_heads, n_kv, d_head = _heads(keys, d_model, "num_attention_heads", "head_dim",
                                   "num_key_value_heads")
    n_layers = keys.whole("num_hidden_layers")
    act = keys.text("hidden_activation") or keys.text("hidden_act", "silu")
    glu = {"silu": "SwiGLU", "swish": "SwiGLU", "gelu": "GeGLU", "gelu_pytorch_tanh": "GeGLU",
           "gelu_new": "GeGLU", "gelu_fast": "GeGLU"}.get(act, "gated")
    attention_bias = keys.flag("attention_bias", False)
    qkv_bias = attention_bias or family == "qwen2"
    features = [_rope(keys, d_head), "RMSNorm with offset (1 + w)" if gemma else "RMSNorm",
                f"gated MLP ({glu}: {act})"]
    if qkv_bias:
        features.append("q/k/v biases" + (" and output bias" if attention_bias else ""))
    if gemma:
        features.append("embeddings scaled by sqrt(d_model)")
    norms = 2
    if family == "gemma2":
        norms = 4
        features.append("norms after attention and after the MLP")
        scalar = keys.number("query_pre_attn_scalar", None)
        if scalar is not None and scalar != d_head:
            features.append(f"attention scaled by 1 / sqrt({scalar:g})")
    window = keys.whole("sliding_window", None)
    if family == "qwen2" and not keys.flag("use_sliding_window", False):
        window = None
    if window is not None:
        local = _local_layers(keys, n_layers, family)
        if local == n_layers:
            features.append(f"sliding-window attention ({window} tokens)")
        elif local:
            features.append(f"local attention ({window} tokens) in {local} of {n_layers} layers")
    for key, what in (("attn_logit_softcapping", "attention-logit"),
                      ("final_logit_softcapping", "final-logit")):
        cap = keys.number(key, None)
        if cap is not None:
            features.append(f"{what} soft-capping at {cap:g}")
    return _count(keys, family, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, d_model=d_model,
                  d_head=d_head, d_mlp=keys.whole("intermediate_size"), gated=True,
                  d_vocab=keys.whole("vocab_size"), n_ctx=keys.whole("max_position_embeddings"),
                  parallel=False, tied=keys.flag("tie_word_embeddings", gemma),
                  block=Block(qkv_bias=qkv_bias, out_bias=attention_bias,
                              mlp_bias=keys.flag("mlp_bias", False), norms=norms, norm_params=1),
                  features=features)


def _local_layers(keys: Keys, n_layers: int, family: str) -> int:
    """How many layers attend within the window: `layer_types` when given (transformers 5),
    else every other layer for Gemma 2, the layers from `max_window_layers` on for Qwen2, and
    all of them for Mistral."""
    types = keys.config.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n_layers:
            raise ModelError(f"{keys.source}: layer_types must list one attention type per layer "
                             f"({n_layers})")
        return sum(t == "sliding_attention" for t in types)
    if family == "gemma2":
        return (n_layers + 1) // 2
    if family == "qwen2":
        return max(0, n_layers - keys.whole("max_window_layers", n_layers, least=0))
    return n_layers


def _opt(keys: Keys, family: str) -> ModelShape:
    d_model = keys.whole("hidden_size")
    n_heads, n_kv, d_head = _heads(keys, d_model, "num_attention_heads")
    n_ctx = keys.whole("max_position_embeddings")
    d_embed = keys.whole("word_embed_proj_dim", d_model)
    bias = keys.flag("enable_bias", True)
    affine = keys.flag("layer_norm_elementwise_affine", True)
    pre_norm = keys.flag("do_layer_norm_before", True)
    final_norm = pre_norm and not keys.flag("_remove_final_layer_norm", False)
    features = ["learned positions (offset 2)",
                "LayerNorm" if pre_norm else "LayerNorm after each sublayer (post-norm)",
                f"MLP ({keys.text('activation_function', 'relu')})"]
    if d_embed != d_model:
        features.append(f"word embeddings of width {d_embed}, projected to and from d_model")
    return _count(keys, family, n_layers=keys.whole("num_hidden_layers"), n_heads=n_heads,
                  n_kv=n_kv, d_model=d_model, d_head=d_head, d_mlp=keys.whole("ffn_dim"),
                  gated=False, d_vocab=keys.whole("vocab_size"), n_ctx=n_ctx, parallel=False,
                  tied=keys.flag("tie_word_embeddings", True),
                  block=Block(qkv_bias=bias, out_bias=bias, mlp_bias=bias, norms=2,
                              norm_params=2 if affine else 0, final_norm=final_norm),
                  positions=n_ctx + 2, d_embed=d_embed, features=features)


def _gpt_neo(keys: Keys, family: str) -> ModelShape:
    d_model = keys.whole("hidden_size")
    n_heads, n_kv, d_head = _heads(keys, d_model, "num_heads")
    n_layers = keys.whole("num_layers")
    n_ctx = keys.whole("max_position_embeddings")
    local = _gpt_neo_local_layers(keys, n_layers)
    features = ["learned positions", "LayerNorm",
                f"MLP ({keys.text('activation_function', 'gelu_new')})",
                "attention scores not scaled by 1 / sqrt(d_head)"]
    if local:
        window = keys.whole("window_size", 256)
        features.append(f"local attention ({window} tokens) in {local} of {n_layers} layers")
    return _count(keys, family, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, d_model=d_model,
                  d_head=d_head, d_mlp=keys.whole("intermediate_size", 4 * d_model), gated=False,
                  d_vocab=keys.whole("vocab_size"), n_ctx=n_ctx, parallel=False,
                  tied=keys.flag("tie_word_embeddings", True),
                  block=Block(qkv_bias=False, out_bias=True, mlp_bias=True, norms=2, norm_params=2),
                  positions=n_ctx, features=features)


def _gpt_neo_local_layers(keys: Keys, n_layers: int) -> int:
    """GPT-Neo's `attention_types`, e.g. [[["global", "local"], 12]]: patterns and repeats."""
    spec = keys.config.get("attention_types", [[["global", "local"], n_layers // 2]])
    layers: list[str] = []
    try:
        for pattern, repeat in spec:
            if not isinstance(repeat, int) or not all(t in ("global", "local") for t in pattern):
                raise ValueError
            layers += list(pattern) * repeat
    except (TypeError, ValueError):
        raise ModelError(f"{keys.source}: attention_types is {spec!r}; it must look like "
                         f"[[[\"global\", \"local\"], 12]]") from None
    if len(layers) != n_layers:
        raise ModelError(f"{keys.source}: attention_types gives {len(layers)} layers, num_layers "
                         f"is {n_layers}")
    return layers.count("local")


READERS: dict[str, Callable[[Keys, str], ModelShape]] = {
    "gpt2": _gpt2, "gpt_neox": _gpt_neox, "gptj": _gptj, "llama": _llama_like,
    "mistral": _llama_like, "qwen2": _llama_like, "gemma": _llama_like, "gemma2": _llama_like,
    "opt": _opt, "gpt_neo": _gpt_neo,
}
