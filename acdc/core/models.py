"""Loading models and reading their weights: the only module that imports transformer_lens.

`--model` names one of three things, tried in this order:

1. a checkpoint directory in the project's own format: `config.json` (keyword arguments of
   `HookedTransformerConfig`), `model.safetensors` (the `HookedTransformer` state dict) and an
   optional `tokenizer.json` (Hugging Face `tokenizers` format);
2. a local Hugging Face model directory (`config.json` with `model_type`, weights, tokenizer
   files if any) of a family `hf_configs` reads: transformers loads it, `hooked_config` maps
   its config to TransformerLens' and TransformerLens' converter for the family maps its
   weights (offline: nothing is fetched);
3. a TransformerLens model name such as `gpt2`, fetched from the hub when online.

With TransformerLens 3.x the model is a `HookedTransformer`. TransformerLens 4 removed that
class; there the model is a `TransformerBridge` (see the section "TransformerLens 4" below):
`boot_native` around the project's checkpoints (their `HookedTransformer` state dict converted
by TransformerLens' own `convert_tl_checkpoint`) and `boot_transformers` around Hugging Face
models. Both expose the same per-head weight views (`blocks[i].attn.W_Q`, `embed.W_E`, ...), so
`extract_weights` reads either. Which version is installed is decided here and nowhere else.

Weights are read only through safetensors or `torch.load(weights_only=True)`. Everything the
engine needs from a model is copied into a plain `Weights` value, so that the patched forward
in `forward.py` and `patching.py` never touches transformer_lens and a move to its 4.x
`TransformerBridge` changes this module alone.

>>> model = build_model({"n_layers": 2, "d_model": 32, "n_heads": 4, "d_head": 8,
...                      "n_ctx": 16, "d_vocab": 50, "attn_only": True})
>>> model_shape(model.cfg).n_heads
4
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from acdc.core.configs import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_TOKENIZER,
    CHECKPOINT_WEIGHTS,
    ModelShape,
    available_memory,
    check_checkpoint_config,
    check_reachable,
    checkpoint_shape,
    hub_reachable,
    model_kind,
    read_config,
)
from acdc.core.hf_configs import hf_family, hf_shape
from acdc.core.hf_mapping import hooked_config
from acdc.errors import ModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")


# TransformerLens' activations as single fused kernels (gelu_new and gelu_fast are the tanh
# approximation of GELU, written out in several operations there).
ACTIVATIONS = {
    "relu": torch.nn.functional.relu, "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "gelu_new": _gelu_tanh, "gelu_fast": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh,
}
SUPPORTED_ACTIVATIONS = tuple(ACTIVATIONS)
SUPPORTED_NORMS = (None, "LN", "LNPre", "RMS", "RMSPre")


def _transformer_lens():
    """Import transformer_lens lazily: it costs seconds and `--help` should not pay them."""
    if transformer_lens_major() >= 4:
        return _transformer_lens_4()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import transformer_lens
        from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: F401
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in our output
    return transformer_lens


# --------------------------------------------------------------------------- tokenizers


class Tokenizer:
    """Text <-> token ids, with no special tokens added implicitly.

    Wraps either a `tokenizers.Tokenizer` (the project's `tokenizer.json`) or a Hugging Face
    `PreTrainedTokenizer`. `bos_id` is None when the vocabulary has no BOS token.
    """

    def __init__(self, backend: Any, source: str):
        self.backend = backend
        self.source = source
        self._is_fast_file = not hasattr(backend, "convert_ids_to_tokens")

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as RawTokenizer

        try:
            return cls(RawTokenizer.from_file(str(path)), str(path))
        except Exception as error:  # tokenizers raises a bare Exception on bad files
            raise ModelError(f"{path}: not a valid tokenizers JSON file ({error})") from None

    def encode(self, text: str) -> list[int]:
        if self._is_fast_file:
            return self.backend.encode(text, add_special_tokens=False).ids
        return self.backend.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids))

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each id's own string, for error messages that show a tokenisation."""
        if self._is_fast_file:
            return [self.backend.id_to_token(i) for i in ids]
        return self.backend.convert_ids_to_tokens(list(ids))

    @property
    def vocab_size(self) -> int:
        if self._is_fast_file:
            return self.backend.get_vocab_size(with_added_tokens=True)
        return len(self.backend)

    @property
    def bos_id(self) -> int | None:
        if self._is_fast_file:
            for token in ("<bos>", "<s>", "<|endoftext|>", "[BOS]"):
                found = self.backend.token_to_id(token)
                if found is not None:
                    return found
            return None
        return self.backend.bos_token_id

    @property
    def unk_id(self) -> int | None:
        """The id that unknown text becomes (word-level vocabularies), or None if there is none."""
        if self._is_fast_file:
            model = self.backend.model
            token = getattr(model, "unk_token", None)
            if token is None and not hasattr(model, "unk_token"):  # Unigram keeps an id only
                import json

                found = json.loads(self.backend.to_str()).get("model", {}).get("unk_id")
                return found if isinstance(found, int) else None
            return self.backend.token_to_id(token) if token else None
        return self.backend.unk_token_id

    def unknown_words(self, text: str) -> list[str]:
        """The pieces of `text` that become the unknown token, one per unknown token, in order;
        the unknown token's own text, written as such, does not count. Empty for vocabularies
        without an unknown token (byte-level BPE).

        >>> from tokenizers import Tokenizer as Raw, models, pre_tokenizers
        >>> raw = Raw(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
        >>> raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        >>> Tokenizer(raw, "demo").unknown_words("a zzyzx a [UNK]")
        ['zzyzx']
        """
        unk = self.unk_id
        if unk is None:
            return []
        literal = self.token_strings([unk])[0]
        words = [text[start:end].strip() or text[start:end]
                 for token, (start, end) in self._with_offsets(text) if token == unk]
        return [word for word in words if word != literal]

    def _with_offsets(self, text: str) -> list[tuple[int, tuple[int, int]]]:
        """(id, (start, end)) of each token of `text`, the span in characters of `text`."""
        if self._is_fast_file:
            encoding = self.backend.encode(text, add_special_tokens=False)
            return list(zip(encoding.ids, encoding.offsets, strict=True))
        if getattr(self.backend, "is_fast", False):
            found = self.backend(text, add_special_tokens=False, return_offsets_mapping=True)
            return list(zip(found["input_ids"], map(tuple, found["offset_mapping"]), strict=True))
        # A Python ("slow") tokenizer has no offsets: each whitespace-separated word alone.
        out: list[tuple[int, tuple[int, int]]] = []
        position = 0
        for word in text.split():
            start = text.index(word, position)
            position = start + len(word)
            out += [(token, (start, position)) for token in self.encode(word)]
        return out


# --------------------------------------------------------------------------- shapes


def model_shape(cfg: Any) -> ModelShape:
    """The shape of a `HookedTransformerConfig`."""
    d_mlp = None if cfg.attn_only else cfg.d_mlp
    n_kv = getattr(cfg, "n_key_value_heads", None)
    return ModelShape(
        n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model, d_head=cfg.d_head,
        d_mlp=d_mlp, d_vocab=cfg.d_vocab, n_ctx=cfg.n_ctx, n_params=int(cfg.n_params or 0),
        n_key_value_heads=None if n_kv in (None, cfg.n_heads) else n_kv,
        parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
        mlp_kind="gated" if getattr(cfg, "gated_mlp", False) else "plain",
    )


# --------------------------------------------------------------------------- building


def make_config(config: dict[str, Any], source: str = "config") -> Any:
    """A `HookedTransformerConfig` from its keyword arguments, with a readable error."""
    if transformer_lens_major() >= 4:
        return _make_config_4(config, source)
    tl = _transformer_lens()
    config = dict(config)
    config.setdefault("act_fn", "relu" if config.get("attn_only") else "gelu")
    try:
        return tl.HookedTransformerConfig(**config)
    except TypeError as error:
        raise ModelError(f"{source}: {error}; keys must be HookedTransformerConfig "
                         f"arguments") from None
    except (ValueError, AssertionError) as error:
        raise ModelError(f"{source}: invalid model configuration ({error})") from None


def build_model(config: dict[str, Any], tokenizer: Tokenizer | None = None,
                seed: int | None = None):
    """A `HookedTransformer` with freshly initialised weights (tests, training); with
    TransformerLens 4, a `TransformerBridge` around its native model."""
    if transformer_lens_major() >= 4:
        return _build_model_4(config, tokenizer, seed)
    tl = _transformer_lens()
    if seed is not None:
        config = {**config, "seed": seed}
    cfg = make_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tl.HookedTransformer(cfg, tokenizer=_hf_tokenizer(tokenizer) if tokenizer else None)
    model.eval()
    return model


def _hf_tokenizer(tokenizer: Tokenizer):
    """TransformerLens wants a transformers tokenizer; wrap a raw `tokenizers` one."""
    if not tokenizer._is_fast_file:
        return tokenizer.backend
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend)


def save_checkpoint(model, directory: str | Path, tokenizer_file: str | Path | None = None,
                    config: dict[str, Any] | None = None) -> Path:
    """Write a model in the project's checkpoint format.

    `config` should be the keyword arguments the model was built from (what goes to
    `config.json`); the state dict goes to `model.safetensors`.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if config is None:
        raise ModelError("save_checkpoint needs the config dictionary the model was built from")
    (directory / CHECKPOINT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in _tl_state_dict(model).items()}
    save_file(state, str(directory / CHECKPOINT_WEIGHTS))
    if tokenizer_file is not None:
        (directory / CHECKPOINT_TOKENIZER).write_bytes(Path(tokenizer_file).read_bytes())
    return directory


# --------------------------------------------------------------------------- TransformerLens 4
#
# TransformerLens 4.0 deleted `HookedTransformer`, `HookedTransformerConfig`, `loading_from_
# pretrained` and `components`; `TransformerBridge` replaces them. What this module needs from it:
#
# - `TransformerBridge.boot_native(TransformerBridgeConfig)`: a bridge around TransformerLens' own
#   small model (`model_bridge/sources/native`), built from config fields that are those of
#   `HookedTransformerConfig`; no hub, no transformers model;
# - `utilities.tl_checkpoint_conversion.convert_tl_checkpoint`: a `HookedTransformer` state dict
#   (our checkpoints' `model.safetensors`) to the native bridge's keys and layouts;
# - `TransformerBridge.boot_transformers(<local directory>)`: a bridge around a Hugging Face model
#   with its raw (unprocessed) weights;
# - on every bridge, `blocks[i].attn.W_Q` [n_heads, d_model, d_head], `W_O` [n_heads, d_head,
#   d_model], `b_Q` [n_heads, d_head], `mlp.W_in` [d_model, d_mlp], `ln1.w`, `embed.W_E`,
#   `pos_embed.W_pos`, `unembed.W_U` [d_model, d_vocab], `unembed.b_U`: the HookedTransformer
#   layouts `extract_weights` reads. The one attribute a bridge lacks is `attn.attn_scale`.


@functools.cache
def transformer_lens_major() -> int:
    """The installed TransformerLens' major version, from its package metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("transformer-lens").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 3  # not installed: the import that follows says so


def _transformer_lens_4():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import transformer_lens
        from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return transformer_lens


def _make_config_4(config: dict[str, Any], source: str) -> Any:
    """A `TransformerBridgeConfig` from `HookedTransformerConfig` keyword arguments."""
    _transformer_lens_4()
    from transformer_lens.config import TransformerBridgeConfig

    config = dict(config)
    config.setdefault("act_fn", "relu" if config.get("attn_only") else "gelu")
    if config.get("use_attn_scale") is False:
        # HookedTransformer then divides scores by 1; the native model always scales them.
        raise ModelError(f"{source}: use_attn_scale false is not supported with TransformerLens "
                         f"4 (its native model always scales attention scores)")
    beyond = [key for key in ("use_local_attn", "parallel_attn_mlp", "n_key_value_heads",
                              "use_normalization_before_and_after", "attn_scores_soft_cap",
                              "output_logits_soft_cap")
              if config.get(key) not in (None, False, 0, -1)
              and not (key == "n_key_value_heads" and config[key] == config.get("n_heads"))]
    if config.get("positional_embedding_type", "standard") != "standard":
        beyond.insert(0, f"positional_embedding_type {config['positional_embedding_type']}")
    if beyond:
        # the bridge keeps rotary tables, windows and post-norms elsewhere than HookedTransformer
        raise ModelError(f"{source}: {', '.join(beyond)} need TransformerLens 3 (its "
                         f"HookedTransformer is what the engine reads these from); install "
                         f"'transformer-lens>=3.9,<4'")
    if config.get("gated_mlp"):
        # HookedTransformer's gated MLP has b_in and b_out; the native one has no biases.
        raise ModelError(f"{source}: gated MLPs are not supported with TransformerLens 4 (its "
                         f"native model's gated MLP has no biases b_in, b_out)")
    try:
        return TransformerBridgeConfig(**config)
    except TypeError as error:  # a 3.x key the bridge's config does not take
        raise ModelError(f"{source}: {error}; TransformerLens 4's TransformerBridgeConfig does "
                         f"not take this HookedTransformerConfig key (install "
                         f"transformer-lens<4 for it)") from None
    except (ValueError, AssertionError) as error:
        raise ModelError(f"{source}: invalid model configuration ({error})") from None


def _official_name_4(name: str) -> str:
    """The Hugging Face name of a TransformerLens model name or alias (`gpt2`)."""
    # 4.x only (3.x has it in loading_from_pretrained): mypy checks against 3.x.
    from transformer_lens.supported_models import (  # type: ignore[attr-defined, unused-ignore]
        get_official_model_name,
    )

    try:
        return get_official_model_name(name)
    except ValueError:
        raise ModelError(_unknown_model_message(name)) from None


def _build_model_4(config: dict[str, Any], tokenizer: Tokenizer | None, seed: int | None):
    tl = _transformer_lens_4()
    if seed is not None:
        config = {**config, "seed": seed}
    cfg = _make_config_4(config, "config")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tl.TransformerBridge.boot_native(
                cfg, tokenizer=_hf_tokenizer(tokenizer) if tokenizer else None)
    except (ValueError, NotImplementedError) as error:
        raise ModelError(f"config: TransformerLens 4 cannot build this model "
                         f"({_first_line(error)})") from None
    model.cfg.n_params = checkpoint_shape(config).n_params  # HookedTransformerConfig's count
    _expose_attn_scale(model)
    model.eval()
    return model


def _expose_attn_scale(bridge) -> None:
    """Give each attention bridge HookedTransformer's `attn_scale`: the divisor of its scores."""
    cfg = bridge.cfg
    configured = ((cfg.attn_scale if cfg.attn_scale > 0 else math.sqrt(cfg.d_head))
                  if cfg.use_attn_scale else 1.0)
    from transformer_lens.model_bridge.sources.native import NativeAttention

    for block in bridge.blocks:
        module = block.attn.original_component
        # The native model keeps the divisor it uses; Hugging Face modules follow the config.
        block.attn.attn_scale = (float(module.scale) if isinstance(module, NativeAttention)
                                 else float(configured))


def _bridge_state_dict(model, state: dict[str, torch.Tensor], fault: str
                       ) -> dict[str, torch.Tensor]:
    """A `HookedTransformer` state dict in the native bridge's keys and layouts."""
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    try:
        return convert_tl_checkpoint({k: v for k, v in state.items() if not _is_buffer_key(k)},
                                     model.cfg)
    except ValueError as error:
        raise ModelError(f"{fault} ({_first_line(error).removeprefix('convert_tl_checkpoint: ')})"
                         ) from None


def _tl_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's parameters as a `HookedTransformer` state dict (the checkpoint format)."""
    if transformer_lens_major() < 4:
        return model.state_dict()
    cfg = model.cfg
    state: dict[str, torch.Tensor] = {"embed.W_E": model.embed.W_E}
    if hasattr(model, "pos_embed"):  # none with rotary positions
        state["pos_embed.W_pos"] = model.pos_embed.W_pos

    def add(prefix: str, module, names: tuple[str, ...]) -> None:
        for name in names:
            value = getattr(module, name, None)
            if isinstance(value, torch.Tensor):
                state[f"{prefix}.{name}"] = value

    for i, block in enumerate(model.blocks):
        add(f"blocks.{i}.ln1", block.ln1, ("w", "b"))
        add(f"blocks.{i}.attn", block.attn,
            ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"))
        if not cfg.attn_only:
            add(f"blocks.{i}.ln2", block.ln2, ("w", "b"))
            add(f"blocks.{i}.mlp", block.mlp, ("W_in", "W_gate", "W_out", "b_in", "b_out"))
    add("ln_final", model.ln_final, ("w", "b"))
    add("unembed", model.unembed, ("W_U", "b_U"))
    return state


def _hf_directory_tokenizer(directory: Path) -> Tokenizer | None:
    if not any((directory / f).is_file()
               for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    return Tokenizer(AutoTokenizer.from_pretrained(str(directory)), str(directory))


# Families whose TransformerLens 4 bridge gives every weight `extract_weights` needs, in its
# layouts. The others expose rotary tables, local windows and post-sublayer norms on other
# attributes (or none), and OPT's position table keeps its offset of 2 rows.
BRIDGE_FAMILIES = ("gpt2",)


def _load_hf_directory_4(directory: Path):
    path = directory / CHECKPOINT_CONFIG
    family = hf_family(read_config(path), str(path))
    if family not in BRIDGE_FAMILIES:
        raise ModelError(f"{directory}: {family} models are read through TransformerLens 3's "
                         f"weight conversion; TransformerLens 4 is installed, whose bridge does "
                         f"not give this family's weights in the engine's layout (rotary tables, "
                         f"local windows, post-norms); install 'transformer-lens>=3.9,<4'")
    tl = _transformer_lens_4()
    tokenizer = _hf_directory_tokenizer(directory)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tl.TransformerBridge.boot_transformers(
                str(directory), device="cpu", dtype=torch.float32,
                tokenizer=tokenizer.backend if tokenizer else None)
    except Exception as error:  # transformers raises many types for unreadable directories
        raise ModelError(f"{directory}: cannot load Hugging Face weights "
                         f"({_first_line(error)})") from None
    model.cfg.n_params = hf_shape(read_config(path), str(path)).n_params
    _expose_attn_scale(model)
    return model, tokenizer


def _load_hub_4(name: str):
    tl = _transformer_lens_4()
    official = _official_name_4(name)
    _go_offline_without_network()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tl.TransformerBridge.boot_transformers(official, device="cpu")
    except Exception as error:  # network and hub errors come in many types
        raise ModelError(_offline_message(name, error)) from None
    family = getattr(getattr(model.original_model, "config", None), "model_type", None)
    if family not in BRIDGE_FAMILIES:
        raise ModelError(f"{name}: {family} models need TransformerLens 3's weight conversion; "
                         f"install 'transformer-lens>=3.9,<4'")
    _expose_attn_scale(model)
    tokenizer = Tokenizer(model.tokenizer, name) if model.tokenizer is not None else None
    return model, tokenizer


def _shape_4(spec: str, kind: str) -> ModelShape:
    """A name's (or directory's) shape from its Hugging Face config: TransformerLens 4 no longer
    has a configuration table of its own."""
    if kind == "hf":
        path = Path(spec) / CHECKPOINT_CONFIG
        return hf_shape(read_config(path), str(path))
    _transformer_lens_4()
    official = _official_name_4(spec)
    _go_offline_without_network()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(official)
    except Exception as error:  # the hub client raises many types; all mean "not here"
        raise ModelError(_offline_message(spec, error)) from None
    return hf_shape(config.to_dict(), spec)


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A model ready for the engine: the HookedTransformer, its tokenizer and its shape."""

    name: str
    model: Any  # HookedTransformer
    tokenizer: Tokenizer | None
    shape: ModelShape

    @property
    def device(self) -> torch.device:
        return (self.model.cfg.device if isinstance(self.model.cfg.device, torch.device)
                else torch.device(self.model.cfg.device))


def transformer_lens_shape(spec: str, kind: str) -> ModelShape:
    """The shape of a Hugging Face directory or a TransformerLens name, from its config."""
    if transformer_lens_major() >= 4:
        return _shape_4(spec, kind)
    if kind == "hf":
        from transformers import AutoConfig

        family = hf_family(read_config(Path(spec) / CHECKPOINT_CONFIG), spec)
        try:
            config = AutoConfig.from_pretrained(spec)
        except Exception as error:  # transformers raises many types for unreadable configs
            raise ModelError(f"{spec}: transformers cannot read this config "
                             f"({_first_line(error)})") from None
        return model_shape(make_config(hooked_config(config, family, spec), spec))
    return model_shape(_name_config(spec))


def _name_config(name: str):
    """The `HookedTransformerConfig` of a TransformerLens model name, from the hub (or its
    local cache): an unknown name or no network fails fast, in one line."""
    tl = _transformer_lens()
    from transformer_lens import loading_from_pretrained as loading

    _go_offline_without_network()
    try:
        loading.get_official_model_name(name)
    except ValueError:
        raise ModelError(_unknown_model_message(name)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return loading.get_pretrained_model_config(name, device="cpu")
    except Exception as error:  # the hub client raises many types; all mean "not here"
        raise ModelError(_offline_message(name, error)) from None
    finally:
        del tl


def _unknown_model_message(spec: str) -> str:
    return (f"unknown model {spec!r}: give a checkpoint directory (config.json + "
            f"model.safetensors), a local Hugging Face model directory, or a TransformerLens "
            f"model name such as gpt2")


def _go_offline_without_network() -> None:
    """Offline, make the hub's client use its local cache only (and fail at once)."""
    if not hub_reachable():
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import time otherwise


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _offline_message(spec: str, error: BaseException) -> str:
    reason = ("no network and not in the local Hugging Face cache"
              if os.environ.get("HF_HUB_OFFLINE") == "1" else _first_line(error))
    return (f"cannot fetch model {spec!r} from the hub ({reason}); offline, pass a checkpoint "
            f"directory (config.json + model.safetensors) or a local Hugging Face model "
            f"directory with --model")


def load_model(spec: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load a model for a run, on `device` in `dtype`."""
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    _check_device(device)
    kind = model_kind(spec)
    if kind in ("checkpoint", "hf"):
        _check_fits(spec, kind, dtype)
    elif kind == "name":
        check_reachable(spec)
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints "Moving model to"
        if kind == "checkpoint":
            model, tokenizer = _load_checkpoint(Path(spec))
        elif kind == "hf":
            model, tokenizer = _load_hf_directory(Path(spec))
        else:
            model, tokenizer = _load_hub(spec)
    model = model.to(DTYPES[dtype], print_details=False).to(device, print_details=False)
    model.eval()
    check_supported(model.cfg, spec)
    return LoadedModel(spec, model, tokenizer, model_shape(model.cfg))


def _check_fits(spec: str, kind: str, dtype: str) -> None:
    """Refuse, before allocating, a model whose weights alone exceed the free memory (and,
    for a Hugging Face directory, a mixture-of-experts, encoder-decoder or unknown family)."""
    path = Path(spec) / CHECKPOINT_CONFIG
    config = read_config(path)
    shape = hf_shape(config, str(path)) if kind == "hf" else checkpoint_shape(config, str(path))
    needed = shape.n_params_loaded * DTYPES[dtype].itemsize
    free = available_memory()
    if free is not None and needed > free:
        raise ModelError(f"{spec}: its weights alone need about {needed / 2**30:.1f} GiB in "
                         f"{dtype}, more than the {free / 2**30:.1f} GiB of memory available; use "
                         f"a smaller model or a machine with more memory")


def _check_device(device: str) -> None:
    try:
        torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: CUDA is not available here; use --device cpu")


def _load_checkpoint(directory: Path):
    from safetensors.torch import load_file

    config = read_config(directory / CHECKPOINT_CONFIG)
    check_checkpoint_config(config, str(directory / CHECKPOINT_CONFIG))
    weights = directory / CHECKPOINT_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{directory}: no {CHECKPOINT_WEIGHTS}; `circuit graph` works from "
                         f"{CHECKPOINT_CONFIG} alone, a run needs the weights too")
    tokenizer_path = directory / CHECKPOINT_TOKENIZER
    tokenizer = Tokenizer.from_file(tokenizer_path) if tokenizer_path.is_file() else None
    model = build_model({**config, "init_weights": False})
    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types
        raise ModelError(f"{weights}: cannot read safetensors file "
                         f"({_first_line(error)})") from None
    if transformer_lens_major() >= 4:
        state = _bridge_state_dict(model, state, f"{weights}: state dict does not match "
                                                 f"{directory / CHECKPOINT_CONFIG}")
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not _is_buffer_key(k))
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(f"{weights}: state dict does not match "
                         f"{directory / CHECKPOINT_CONFIG} ({what})")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ModelError(f"{weights}: {key} has shape {tuple(value.shape)}, config implies "
                             f"{tuple(expected[key].shape)}")
    model.load_state_dict(state, strict=False)
    return model, tokenizer


def _is_buffer_key(key: str) -> bool:
    return key.endswith(("IGNORE", ".mask", "rotary_sin", "rotary_cos"))


def _load_hf_directory(directory: Path):
    """A local Hugging Face directory as a HookedTransformer: transformers reads the weights,
    `hooked_config` maps its config, TransformerLens' converter for the family maps the
    weights. Unprocessed (no folding or centring), so its forward equals the original's."""
    if transformer_lens_major() >= 4:
        return _load_hf_directory_4(directory)
    tl = _transformer_lens()
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM

    family = hf_family(read_config(directory / CHECKPOINT_CONFIG), str(directory))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    except Exception as error:  # transformers raises many types for unreadable directories
        raise ModelError(f"{directory}: cannot load Hugging Face weights "
                         f"({_first_line(error)})") from None
    cfg = make_config(hooked_config(hf_model.config, family, str(directory)), str(directory))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = loading.get_pretrained_state_dict(str(directory), cfg, hf_model=hf_model)
    except Exception as error:  # a converter meeting weights it does not expect
        raise ModelError(f"{directory}: TransformerLens cannot convert these weights "
                         f"({_first_line(error)})") from None
    del hf_model
    tokenizer = _hf_directory_tokenizer(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tl.HookedTransformer(cfg, tokenizer=tokenizer.backend if tokenizer else None)
        model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                          center_unembed=False, fold_value_biases=False)
    return model, tokenizer


def _load_hub(name: str):
    if transformer_lens_major() >= 4:
        return _load_hub_4(name)
    tl = _transformer_lens()
    _name_config(name)  # validates the name, fails fast offline
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tl.HookedTransformer.from_pretrained_no_processing(name, device="cpu")
    except Exception as error:  # network and hub errors come in many types
        raise ModelError(_offline_message(name, error)) from None
    tokenizer = Tokenizer(model.tokenizer, name) if model.tokenizer is not None else None
    return model, tokenizer


def check_supported(cfg: Any, source: str) -> None:
    """Refuse, in one line, the architectures whose graph or forward the engine does not model.

    Modelled: learned or rotary positions (TransformerLens' own sin/cos tables, any base or
    scaling it computes them with), grouped- and multi-query attention, parallel blocks,
    local attention, attention and final-logit soft-capping, and norms after each sublayer
    (Gemma 2). Gemma's RMSNorm offset and scaled embeddings arrive folded into the weights by
    TransformerLens' conversion."""
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
    if getattr(cfg, "clip_qkv", None) is not None:
        problems.append("clipped q/k/v")
    if cfg.original_architecture in _post_norm_architectures():
        problems.append(f"post-norm blocks ({cfg.original_architecture})")
    if problems:
        raise ModelError(f"{source}: not supported by the ACDC engine: {'; '.join(problems)}")


def _post_norm_architectures() -> frozenset[str]:
    """Architectures whose blocks normalise after the residual addition (OLMo 2): TransformerLens
    applies their norms inside the sublayer, which the engine does not model."""
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # an older TransformerLens knows none
        return frozenset()
    return frozenset(POST_NORM_ARCHITECTURES)


# --------------------------------------------------------------------------- weights


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
    rotary_sin: torch.Tensor | None = None  # [n_ctx, rotary_dim]: TransformerLens' tables
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


def extract_weights(model) -> Weights:
    """Copy (by reference) a HookedTransformer's parameters into a `Weights` value.

    Grouped-query attention is ungrouped here: `W_K`, `W_V` (and their biases) come per query
    head, each the copy of its key/value head's, so that every query head has its own k and v
    input (the shared projection applied to that head's residual copy)."""
    cfg = model.cfg

    def norm_params(module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return getattr(module, "w", None), getattr(module, "b", None)

    def detached(t: Any) -> Any:  # a tensor or None
        return None if t is None else t.detach()

    rotary = cfg.positional_embedding_type == "rotary"
    tables: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    layers = []
    for block in model.blocks:
        attn = block.attn
        ln1_w, ln1_b = norm_params(block.ln1)
        ln2_w = ln2_b = W_in = b_in = W_gate = W_out = b_out = None
        if not cfg.attn_only:
            ln2_w, ln2_b = norm_params(block.ln2)
            mlp = block.mlp
            W_in, b_in, W_out, b_out = mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out
            W_gate = getattr(mlp, "W_gate", None)
        post: list[torch.Tensor | None] = [None, None, None, None]
        if getattr(cfg, "use_normalization_before_and_after", False):
            post = [*norm_params(block.ln1_post),
                    *(norm_params(block.ln2_post) if not cfg.attn_only else (None, None))]
        sin = cos = None
        if rotary:
            sin, cos = _rotary_tables(attn, cfg, tables)
        window = cfg.window_size if getattr(attn, "attn_type", "global") == "local" else None
        tensors = (ln1_w, ln1_b, attn.W_Q, attn.b_Q, attn.W_K, attn.b_K, attn.W_V, attn.b_V,
                   attn.W_O, attn.b_O, ln2_w, ln2_b, W_in, b_in, W_gate, W_out, b_out, *post,
                   sin, cos)
        names = [f for f in LayerWeights.__dataclass_fields__ if f != "window"]
        layers.append(LayerWeights(**{name: detached(t) for name, t in zip(names, tensors,
                                                                           strict=True)},
                                   window=window))
    ln_final_w, ln_final_b = (norm_params(model.ln_final) if hasattr(model, "ln_final")
                              else (None, None))
    return Weights(
        W_E=model.embed.W_E.detach(),
        W_pos=model.pos_embed.W_pos.detach() if hasattr(model, "pos_embed") else None,
        layers=tuple(layers),
        ln_final_w=detached(ln_final_w), ln_final_b=detached(ln_final_b),
        W_U=model.unembed.W_U.detach(), b_U=model.unembed.b_U.detach(),
        normalization=cfg.normalization_type, eps=cfg.eps,
        attn_scale=float(model.blocks[0].attn.attn_scale), act_fn=cfg.act_fn,
        act=None if cfg.attn_only else ACTIVATIONS[cfg.act_fn],
        n_heads=cfg.n_heads, attn_only=cfg.attn_only, causal=cfg.attention_dir == "causal",
        rotary_dim=(cfg.rotary_dim or 0) if rotary else 0,
        rotary_adjacent=bool(getattr(cfg, "rotary_adjacent_pairs", False)),
        attn_soft_cap=max(float(getattr(cfg, "attn_scores_soft_cap", -1.0) or 0.0), 0.0),
        logit_soft_cap=max(float(getattr(cfg, "output_logits_soft_cap", -1.0) or 0.0), 0.0),
        parallel=bool(getattr(cfg, "parallel_attn_mlp", False)),
        post_norm=bool(getattr(cfg, "use_normalization_before_and_after", False)),
    )


def _rotary_tables(attn, cfg, tables: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's rotary sin and cos for every position of the context, as TransformerLens
    computes them (its buffers may cover only the first positions; layers with one base share
    one table)."""
    base = attn._rotary_base() if hasattr(attn, "_rotary_base") else cfg.rotary_base
    if base not in tables:
        sin, cos = attn.rotary_sin, attn.rotary_cos
        if sin.shape[0] < cfg.n_ctx:
            sin, cos = attn.calculate_sin_cos_rotary(cfg.rotary_dim, cfg.n_ctx, base=base,
                                                     dtype=sin.dtype)
        tables[base] = (sin.to(attn.W_Q.device).detach(), cos.to(attn.W_Q.device).detach())
    return tables[base]
