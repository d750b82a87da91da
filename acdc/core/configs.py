"""A model's configuration read as plain data: what `--model` names, its shape, its size.

Reading a model's shape needs no weights and, for the project's own checkpoints, no torch or
TransformerLens: `circuit graph` answers from `config.json` alone, and a run checks sizes
before anything is allocated. Every key the shape depends on is checked for its type and range
first, so a `config.json` with `"n_layers": "two"` or `"n_heads": -4` is one line naming the
key, never a traceback from deep inside a library.

`--model` names one of three things, told apart here (`model_kind`): a checkpoint directory
in the project's format (`config.json` holding `HookedTransformerConfig` keyword arguments), a
local Hugging Face directory (`config.json` with `model_type` or `architectures`, whose shape
`acdc.core.hf_configs` reads), or a TransformerLens model name, whose shape is read through
TransformerLens (`acdc.core.models`), imported only then.

>>> checkpoint_shape({"n_layers": 2, "d_model": 64, "n_heads": 4, "d_head": 16,
...                   "n_ctx": 32, "d_vocab": 100}).d_mlp
256
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acdc.core.graph import GraphShape
from acdc.errors import AcdcError, ModelError, did_you_mean, first_line, short_repr

CHECKPOINT_CONFIG = "config.json"
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_TOKENIZER = "tokenizer.json"
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few kilobytes
# The keyword arguments of TransformerLens' HookedTransformerConfig (3.x), the keys a checkpoint's
# config.json may hold (tests/test_models.py checks the list against the installed library).
CHECKPOINT_KEYS: frozenset[str] = frozenset({
    "d_model", "d_head", "n_layers", "n_ctx", "n_heads", "d_mlp", "d_vocab", "device",
    "use_attn_result", "use_split_qkv_input", "default_prepend_bos", "positional_embedding_type",
    "n_key_value_heads", "attn_only", "gated_mlp", "uses_rms_norm", "eps", "layer_norm_folding",
    "act_fn", "normalization_type", "num_experts", "experts_per_token", "final_rms", "dtype",
    "model_name", "use_attn_scale", "attn_scale", "use_hook_mlp_in", "use_attn_in", "use_qk_norm",
    "clip_qkv", "use_logn_attn", "train_seq_length", "use_dynamic_ntk_rope", "use_local_attn",
    "ungroup_grouped_query_attention", "original_architecture", "from_checkpoint",
    "checkpoint_index", "checkpoint_label_type", "checkpoint_value", "tokenizer_name",
    "window_size", "attn_types", "init_mode", "n_devices", "attention_dir", "seed",
    "initializer_range", "init_weights", "scale_attn_by_inverse_layer_idx", "d_vocab_out",
    "parallel_attn_mlp", "rotary_dim", "n_params", "use_hook_tokens", "tokenizer_prepends_bos",
    "post_embedding_ln", "rotary_base", "rotary_base_local", "rotary_scaling_factor",
    "trust_remote_code", "rotary_adjacent_pairs", "load_in_4bit", "quantization_method",
    "relative_attention_max_distance", "relative_attention_num_buckets", "decoder_start_token_id",
    "tie_word_embeddings", "use_normalization_before_and_after", "attn_scores_soft_cap",
    "output_logits_soft_cap", "use_NTK_by_parts_rope", "NTK_by_parts_low_freq_factor",
    "NTK_by_parts_high_freq_factor", "NTK_by_parts_factor", "NTK_original_ctx_len",
    "use_yarn_rope", "yarn_factor", "yarn_attention_factor", "yarn_beta_fast", "yarn_beta_slow",
    "yarn_original_max_position_embeddings", "yarn_truncate", "yarn_global_attn_only",
    "use_attention_sinks", "norm_topk_prob",
})
# Keys of a checkpoint's config that must be whole numbers, and their least value (-1: "derive
# it", as HookedTransformerConfig allows).
WHOLE_KEYS: dict[str, int] = {"n_layers": 1, "d_model": 1, "d_head": 1, "n_ctx": 1,
                              "d_vocab": 1, "n_heads": -1, "d_mlp": 1, "d_vocab_out": -1,
                              "n_key_value_heads": 1, "seed": 0}
NULLABLE_KEYS: tuple[str, ...] = ("d_mlp", "n_key_value_heads", "seed")  # null: the default
BOOL_KEYS: tuple[str, ...] = ("attn_only", "gated_mlp", "parallel_attn_mlp", "use_attn_result",
                              "use_split_qkv_input", "final_rms", "use_local_attn")
TEXT_KEYS: tuple[str, ...] = ("act_fn", "normalization_type", "positional_embedding_type",
                              "attention_dir", "model_name", "original_architecture")


@dataclass(frozen=True)
class ModelShape:
    """The facts about a model that the graph and the memory estimates need.

    `n_heads` counts query heads; `n_key_value_heads` is None when every query head has its
    own key and value head, else the number of shared ones (grouped-query attention; 1 is
    multi-query). `parallel_attn_mlp`: attention and MLP read the same residual (GPT-NeoX,
    GPT-J). `mlp_kind` "gated" is W_out(act(x W_gate) * x W_in) (SwiGLU, GeGLU).

    `n_params` counts the blocks' weight matrices (attention and MLP, no biases or norms), as
    TransformerLens does (but with the key/value matrices at their real size under grouped-query
    attention). `n_params_total` counts every parameter: given exactly by a Hugging Face
    configuration (`n_params_all`: biases, norms, a tied unembedding once), else estimated as
    the blocks plus embedding, positions and unembedding. `architecture` and `features` describe
    a Hugging Face model for people (its family, and how it differs from GPT-2)."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int | None
    d_vocab: int
    n_ctx: int
    n_params: int
    n_key_value_heads: int | None = None
    parallel_attn_mlp: bool = False
    mlp_kind: str = "plain"  # "plain" or "gated"
    n_params_all: int | None = None
    tied_embeddings: bool = False
    architecture: str | None = None
    features: tuple[str, ...] = ()
    post_norm: bool = False  # norms after attention and MLP (Gemma 2)

    @property
    def has_mlp(self) -> bool:
        return self.d_mlp is not None

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads: `n_heads` unless they are shared."""
        return self.n_key_value_heads or self.n_heads

    @property
    def n_params_total(self) -> int:
        if self.n_params_all is not None:
            return self.n_params_all
        return self.n_params + (2 * self.d_vocab + self.n_ctx) * self.d_model

    @property
    def n_params_loaded(self) -> int:
        """Parameters a run holds: a tied unembedding becomes its own copy when loaded."""
        return self.n_params_total + (self.d_vocab * self.d_model if self.tied_embeddings else 0)

    def graph_shape(self, granularity: str = "qkv") -> GraphShape:
        return GraphShape(self.n_layers, self.n_heads, self.has_mlp, granularity,  # type: ignore[arg-type]
                          self.parallel_attn_mlp)


def model_kind(spec: str) -> str:
    """"checkpoint", "hf" (a local Hugging Face directory) or "name" (a TransformerLens name)."""
    path = Path(spec)
    if path.is_dir():
        config = path / CHECKPOINT_CONFIG
        if not config.is_file():
            raise ModelError(f"{spec}: directory has no {CHECKPOINT_CONFIG}; a checkpoint needs "
                             f"{CHECKPOINT_CONFIG} and {CHECKPOINT_WEIGHTS}")
        data = read_config(config)
        return "hf" if "model_type" in data or "architectures" in data else "checkpoint"
    if path.exists():
        raise ModelError(f"{spec}: is a file; --model takes a checkpoint directory or a model name")
    if spec.startswith((".", "/", "~")) or spec.endswith("/"):
        raise ModelError(f"{spec}: no such directory; give a checkpoint directory or a model name")
    return "name"


def read_config(path: Path) -> dict[str, Any]:
    """A `config.json` as a dictionary, or one line saying why it cannot be read."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ModelError(f"{path}: {size:,} bytes, not a model configuration (those are a "
                             f"few kilobytes)")
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a text file; a model configuration is JSON") from None
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: cannot read JSON ({str(error).split(';')[0]})") from None
    except RecursionError:
        raise ModelError(f"{path}: cannot read JSON (arrays or objects nested too "
                         f"deeply)") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object of config keys")
    return data


def check_checkpoint_config(config: dict[str, Any], source: str) -> None:
    """Unknown keys, and the types and ranges of the keys a checkpoint's shape depends on: one
    line per fault."""
    for key in config:
        if key not in CHECKPOINT_KEYS:
            hint = did_you_mean(str(key), CHECKPOINT_KEYS)
            raise ModelError(f"{source}: unknown key {short_repr(key)}{hint}; "
                             f"keys must be HookedTransformerConfig arguments")
    for key, least in WHOLE_KEYS.items():
        value = config.get(key)
        if value is None:
            if key in config and key not in NULLABLE_KEYS:
                raise ModelError(f"{source}: {key} is null; give a whole number (or leave the key "
                                 f"out where it has a default)")
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(f"{source}: {key} is {short_repr(value)}; it must be a whole number")
        if value < least or (least == -1 and value == 0):
            bound = f">= {least}" if least >= 0 else "a positive number (or -1 to derive it)"
            raise ModelError(f"{source}: {key} is {value}; it must be {bound}")
    for key in BOOL_KEYS:
        if key in config and not isinstance(config[key], bool):
            raise ModelError(f"{source}: {key} is {short_repr(config[key])}; it must be true "
                             f"or false")
    for key in TEXT_KEYS:
        if config.get(key) is not None and not isinstance(config[key], str):
            raise ModelError(f"{source}: {key} is {short_repr(config[key])}; it must be a string")
    for key in ("n_layers", "d_model", "n_ctx"):
        if key not in config:
            raise ModelError(f"{source}: missing {key}; a checkpoint's config needs n_layers, "
                             f"d_model, n_ctx, d_head and d_vocab")
    if "d_head" not in config or "d_vocab" not in config:
        missing = "d_head" if "d_head" not in config else "d_vocab"
        raise ModelError(f"{source}: missing {missing}; a checkpoint's config needs n_layers, "
                         f"d_model, n_ctx, d_head and d_vocab")


def checkpoint_shape(config: dict[str, Any], source: str = "config") -> ModelShape:
    """The shape of a checkpoint's config, with `HookedTransformerConfig`'s defaults (MLP width
    4 x d_model, heads d_model / d_head when -1)."""
    check_checkpoint_config(config, source)
    d_model, d_head = config["d_model"], config["d_head"]
    n_heads = config.get("n_heads", -1)
    if n_heads == -1:
        if d_model % d_head:
            raise ModelError(f"{source}: n_heads is not given and d_model {d_model} is not a "
                             f"multiple of d_head {d_head}")
        n_heads = d_model // d_head
    attn_only = config.get("attn_only", False)
    d_mlp = None if attn_only else config.get("d_mlp") or 4 * d_model
    n_layers = config["n_layers"]
    n_kv = config.get("n_key_value_heads") or n_heads
    if n_heads % n_kv:
        raise ModelError(f"{source}: n_heads {n_heads} is not a multiple of n_key_value_heads "
                         f"{n_kv}")
    gated = bool(config.get("gated_mlp"))
    n_params = n_layers * d_model * d_head * (2 * n_heads + 2 * n_kv)
    if d_mlp is not None:
        n_params += n_layers * d_model * d_mlp * (3 if gated else 2)
    return ModelShape(n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_head,
                      d_mlp=d_mlp, d_vocab=config["d_vocab"], n_ctx=config["n_ctx"],
                      n_params=n_params, n_key_value_heads=None if n_kv == n_heads else n_kv,
                      parallel_attn_mlp=bool(config.get("parallel_attn_mlp")),
                      mlp_kind="gated" if gated else "plain",
                      post_norm=bool(config.get("use_normalization_before_and_after")))


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers (the probe fails at once without a network).
    Without it, the hub's client is told to use its local cache only: otherwise it retries
    for about 25 s before failing."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        return False


def check_reachable(name: str) -> None:
    """A model named by the hub can be read: online, or offline from the local cache. Offline
    and not cached is one line at once, before TransformerLens (seconds to import) loads."""
    if hub_reachable():
        return
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get(
        "HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    wanted = name.lower().replace("/", "--")
    cached = cache.is_dir() and any(wanted in entry.name.lower() for entry in cache.iterdir())
    if not cached:
        raise ModelError(f"cannot fetch model {name!r}: no network and not in the local Hugging "
                         f"Face cache ({cache}); offline, pass a checkpoint directory "
                         f"(config.json + model.safetensors) or a local Hugging Face model "
                         f"directory with --model")


def unknown_model_message(spec: str) -> str:
    return (f"unknown model {spec!r}: give a checkpoint directory (config.json + "
            f"model.safetensors), a local Hugging Face model directory, or a TransformerLens "
            f"model name such as gpt2")


def go_offline_without_network() -> None:
    """Offline, make the hub's client use its local cache only (and fail at once)."""
    if not hub_reachable():
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import time otherwise


def offline_message(spec: str, error: BaseException) -> str:
    reason = ("no network and not in the local Hugging Face cache"
              if os.environ.get("HF_HUB_OFFLINE") == "1" else first_line(error))
    return (f"cannot fetch model {spec!r} from the hub ({reason}); offline, pass a checkpoint "
            f"directory (config.json + model.safetensors) or a local Hugging Face model "
            f"directory with --model")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one: a container's
    or a batch job's share, not the whole machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int, option: str = "--threads") -> int:
    """`threads` if it is 0 (the default choice) or at most the cores this process may use;
    else one `AcdcError` line (more threads than cores only slow a run down, and OpenMP fails
    on absurd counts)."""
    cores = available_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise AcdcError(f"{option} {threads!r}: give a whole number of threads >= 0 (0: the "
                        f"default)")
    if threads > cores:
        raise AcdcError(f"{option} {threads}: this process may use {cores} CPU core"
                        f"{'s' if cores > 1 else ''}; give at most {cores} (0: the default)")
    return threads


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None
