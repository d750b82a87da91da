"""TransformerLens models: the only module that imports transformer_lens.

Runs on checkpoints and Hugging Face directories need no TransformerLens (`loading`). It is
needed, and imported (seconds) only then, for:

- models named by TransformerLens (`gpt2`), fetched from the hub: `load_name`, `name_shape`;
- models built from a config (`build_model`: tests, zoo training), saved by `save_checkpoint`;
- TransformerLens' own model of a checkpoint, a Hugging Face directory or a name
  (`load_hooked`): what the tests' hooked references run, the reference of our conversion.
`extract_weights` reads the engine's `Weights` off any of these models.

Which TransformerLens is installed is decided once, by `backend()`. With 3.x a model is a
`HookedTransformer`. TransformerLens 4 removed that class (and `HookedTransformerConfig`, its
per-family converters, `loading_from_pretrained`); there a model is a `TransformerBridge`:

- `TransformerBridge.boot_native(TransformerBridgeConfig)` builds its own small model from
  `HookedTransformerConfig`'s fields, and `utilities.tl_checkpoint_conversion.
  convert_tl_checkpoint` maps a `HookedTransformer` state dict onto it. Its native model always
  scales attention scores and its gated MLP has no biases, and the bridge keeps rotary tables,
  local windows and post-sublayer norms elsewhere than `HookedTransformer`: such configs are
  refused in one line (GPT-2-shaped models only);
- `TransformerBridge.boot_transformers(name)` wraps a Hugging Face model: used for names, of
  the GPT-2 family only, for the same reason;
- every bridge exposes the per-head weight views `extract_weights` reads (`blocks[i].attn.W_Q`,
  `embed.W_E`, ...) in `HookedTransformer`'s layouts; the one attribute it lacks,
  `attn.attn_scale`, is set here.

>>> model = build_model({"n_layers": 2, "d_model": 32, "n_heads": 4, "d_head": 8,
...                      "n_ctx": 16, "d_vocab": 50, "attn_only": True})
>>> extract_weights(model).n_heads
4
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from acdc.core.architecture import check_supported, model_shape
from acdc.core.checkpoints import (
    read_checkpoint_config,
    read_checkpoint_state,
    read_checkpoint_tokenizer,
    write_checkpoint,
)
from acdc.core.configs import (
    CHECKPOINT_CONFIG,
    ModelShape,
    checkpoint_shape,
    go_offline_without_network,
    offline_message,
    read_config,
    unknown_model_message,
)
from acdc.core.hf_configs import hf_family, hf_shape
from acdc.core.hf_mapping import hooked_config
from acdc.core.tokenizer import Tokenizer, hf_directory_tokenizer
from acdc.core.weights import (
    LAYER_TENSORS,
    LayerWeights,
    Weights,
    architecture_constants,
    is_buffer_key,
)
from acdc.errors import ModelError, first_line


@functools.cache
def transformer_lens_major() -> int:
    """The installed TransformerLens' major version, from its package metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("transformer-lens").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 3  # not installed: the import that follows says so


@functools.cache
def backend() -> HookedBackend | BridgeBackend:
    """The installed TransformerLens' back-end, imported once."""
    return BridgeBackend() if transformer_lens_major() >= 4 else HookedBackend()


def make_config(config: dict[str, Any], source: str = "config") -> Any:
    """TransformerLens' config from `HookedTransformerConfig` keyword arguments, with a readable
    error (and the project's default activation: ReLU attention-only, else GELU)."""
    config = dict(config)
    config.setdefault("act_fn", "relu" if config.get("attn_only") else "gelu")
    return backend().config(config, source)


def build_model(config: dict[str, Any], tokenizer: Tokenizer | None = None,
                seed: int | None = None):
    """A TransformerLens model with freshly initialised weights (tests, training)."""
    if seed is not None:
        config = {**config, "seed": seed}
    chosen = backend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = chosen.build(make_config(config), config,
                             _hf_tokenizer(tokenizer) if tokenizer else None)
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
    """Write a model in the project's checkpoint format. `config` is the keyword arguments the
    model was built from (what goes to `config.json`)."""
    if config is None:
        raise ModelError("save_checkpoint needs the config dictionary the model was built from")
    return write_checkpoint(directory, config, backend().state_dict(model), tokenizer_file)


def load_hooked(spec: str) -> tuple[Any, Tokenizer | None]:
    """TransformerLens' own model (and tokenizer) of a checkpoint directory, a Hugging Face
    directory or a name, in float32 on the CPU: a `HookedTransformer` with 3.x."""
    from acdc.core.configs import model_kind

    kind, chosen = model_kind(spec), backend()
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints "Moving model to"
        if kind == "checkpoint":
            directory = Path(spec)
            config, cfg = read_checkpoint_config(directory)
            state = read_checkpoint_state(directory, cfg)
            model = build_model({**config, "init_weights": False})
            chosen.load_state(model, {k: v for k, v in state.items() if not is_buffer_key(k)},
                              str(directory))
            return model.eval(), read_checkpoint_tokenizer(directory)
        if kind == "hf":
            return chosen.hf_directory(Path(spec))
        return chosen.named(spec)


def load_name(name: str, device: str, dtype: torch.dtype
              ) -> tuple[Weights, Tokenizer | None, ModelShape]:
    """A TransformerLens model name's weights, tokenizer and shape, on `device` in `dtype`."""
    model, tokenizer = load_hooked(name)
    with contextlib.redirect_stdout(io.StringIO()):
        model = model.to(dtype, print_details=False).to(device, print_details=False)
    model.eval()
    check_supported(model.cfg, name)
    return extract_weights(model), tokenizer, model_shape(model.cfg)


def name_shape(name: str) -> ModelShape:
    """The shape of a TransformerLens model name, from its config (hub or local cache)."""
    return backend().name_shape(name)


# --------------------------------------------------------------------------- reading weights


def extract_weights(model) -> Weights:
    """Copy (by reference) a TransformerLens model's parameters into a `Weights` value.

    Grouped-query attention is ungrouped here: `W_K`, `W_V` (and their biases) come per query
    head, each the copy of its key/value head's, so that every query head has its own k and v
    input (the shared projection applied to that head's residual copy)."""
    cfg = model.cfg

    def norm(module: Any, name: str) -> torch.Tensor | None:
        value = getattr(module, name, None) if module is not None else None
        return None if value is None else value.detach()

    rotary = cfg.positional_embedding_type == "rotary"
    tables: dict[tuple[Any, str], tuple[torch.Tensor, torch.Tensor]] = {}
    layers = []
    for block in model.blocks:
        attn, mlp = block.attn, None if cfg.attn_only else block.mlp
        ln2 = None if cfg.attn_only else block.ln2
        ln1_post = ln2_post = None
        if getattr(cfg, "use_normalization_before_and_after", False):
            ln1_post = block.ln1_post
            ln2_post = None if cfg.attn_only else block.ln2_post
        sin = cos = None
        if rotary:
            sin, cos = _rotary_tables(attn, cfg, tables)
        kind = getattr(attn, "attn_type", "global")
        found: dict[str, Any] = {
            "ln1_w": norm(block.ln1, "w"), "ln1_b": norm(block.ln1, "b"),
            "ln2_w": norm(ln2, "w"), "ln2_b": norm(ln2, "b"),
            "ln1_post_w": norm(ln1_post, "w"), "ln1_post_b": norm(ln1_post, "b"),
            "ln2_post_w": norm(ln2_post, "w"), "ln2_post_b": norm(ln2_post, "b"),
            "rotary_sin": sin, "rotary_cos": cos,
            **{name: norm(attn, name) for name in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V",
                                                   "W_O", "b_O")},
            **{name: norm(mlp, name) for name in ("W_in", "b_in", "W_gate", "W_out", "b_out")},
        }
        layers.append(LayerWeights(**{name: found[name] for name in LAYER_TENSORS},
                                   window=cfg.window_size if kind == "local" else None))
    ln_final = getattr(model, "ln_final", None)
    pos_embed = getattr(model, "pos_embed", None)
    return Weights(
        W_E=model.embed.W_E.detach(),
        W_pos=pos_embed.W_pos.detach() if pos_embed is not None else None,
        layers=tuple(layers), ln_final_w=norm(ln_final, "w"), ln_final_b=norm(ln_final, "b"),
        W_U=model.unembed.W_U.detach(), b_U=model.unembed.b_U.detach(),
        **architecture_constants(cfg, model.blocks[0].attn.attn_scale),
    )


def _rotary_tables(attn, cfg, tables: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's rotary sin and cos for every position of the context, as TransformerLens
    computes them (its buffers may cover only the first positions; layers with one base and
    one kind, global or local, share one table)."""
    base = attn._rotary_base() if hasattr(attn, "_rotary_base") else cfg.rotary_base
    key = (base, getattr(attn, "attn_type", "global"))
    if key not in tables:
        sin, cos = attn.rotary_sin, attn.rotary_cos
        if sin.shape[0] < cfg.n_ctx:
            sin, cos = attn.calculate_sin_cos_rotary(cfg.rotary_dim, cfg.n_ctx, base=base,
                                                     dtype=sin.dtype)
        tables[key] = (sin.to(attn.W_Q.device).detach(), cos.to(attn.W_Q.device).detach())
    return tables[key]


# --------------------------------------------------------------------------- names and the hub


def _quietly_import() -> Any:
    """Import transformer_lens (its deprecation notices and transformers' progress bars off)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import transformer_lens
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return transformer_lens


# --------------------------------------------------------------------------- TransformerLens 3


class HookedBackend:
    """TransformerLens 3.x: `HookedTransformer`, its config and its per-family converters."""

    major = 3

    def __init__(self) -> None:
        self.tl = _quietly_import()

    def config(self, config: dict[str, Any], source: str) -> Any:
        try:
            return self.tl.HookedTransformerConfig(**config)
        except TypeError as error:
            raise ModelError(f"{source}: {error}; keys must be HookedTransformerConfig "
                             f"arguments") from None
        except (ValueError, AssertionError) as error:
            raise ModelError(f"{source}: invalid model configuration ({error})") from None

    def build(self, cfg: Any, config: dict[str, Any], tokenizer: Any) -> Any:
        return self.tl.HookedTransformer(cfg, tokenizer=tokenizer)

    def load_state(self, model, state: dict[str, torch.Tensor], source: str) -> None:
        model.load_state_dict(state, strict=False)

    def state_dict(self, model) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def hf_directory(self, directory: Path) -> tuple[Any, Tokenizer | None]:
        """TransformerLens' converter for the family maps the weights; the config is ours
        (`hooked_config`). Unprocessed (no folding or centring)."""
        from transformer_lens import loading_from_pretrained as loading
        from transformers import AutoModelForCausalLM

        family = hf_family(read_config(directory / CHECKPOINT_CONFIG), str(directory))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hf_model = AutoModelForCausalLM.from_pretrained(str(directory),
                                                                dtype=torch.float32)
        except Exception as error:  # transformers raises many types for unreadable directories
            raise ModelError(f"{directory}: cannot load Hugging Face weights "
                             f"({first_line(error)})") from None
        cfg = make_config(hooked_config(hf_model.config, family, str(directory)), str(directory))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = loading.get_pretrained_state_dict(str(directory), cfg, hf_model=hf_model)
        except Exception as error:  # a converter meeting weights it does not expect
            raise ModelError(f"{directory}: TransformerLens cannot convert these weights "
                             f"({first_line(error)})") from None
        del hf_model
        tokenizer = hf_directory_tokenizer(directory)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = self.tl.HookedTransformer(cfg, tokenizer=tokenizer.backend if tokenizer
                                              else None)
            model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                              center_unembed=False, fold_value_biases=False)
        return model.eval(), tokenizer

    def named(self, name: str) -> tuple[Any, Tokenizer | None]:
        self._name_config(name)  # validates the name, fails fast offline
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = self.tl.HookedTransformer.from_pretrained_no_processing(name,
                                                                                device="cpu")
        except Exception as error:  # network and hub errors come in many types
            raise ModelError(offline_message(name, error)) from None
        return model, Tokenizer(model.tokenizer, name) if model.tokenizer is not None else None

    def name_shape(self, name: str) -> ModelShape:
        return model_shape(self._name_config(name))

    def _name_config(self, name: str) -> Any:
        """The `HookedTransformerConfig` of a name, from the hub (or its local cache): an
        unknown name or no network fails fast, in one line."""
        from transformer_lens import loading_from_pretrained as loading

        go_offline_without_network()
        try:
            loading.get_official_model_name(name)
        except ValueError:
            raise ModelError(unknown_model_message(name)) from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return loading.get_pretrained_model_config(name, device="cpu")
        except Exception as error:  # the hub client raises many types; all mean "not here"
            raise ModelError(offline_message(name, error)) from None


# --------------------------------------------------------------------------- TransformerLens 4

# Families whose TransformerLens 4 bridge gives every weight `extract_weights` needs, in its
# layouts. The others expose rotary tables, local windows and post-sublayer norms on other
# attributes (or none), and OPT's position table keeps its offset of 2 rows.
BRIDGE_FAMILIES = ("gpt2",)
# Keys whose features the native bridge does not give `extract_weights` in its layouts.
BEYOND_NATIVE = ("use_local_attn", "parallel_attn_mlp", "n_key_value_heads",
                 "use_normalization_before_and_after", "attn_scores_soft_cap",
                 "output_logits_soft_cap")


class BridgeBackend:
    """TransformerLens 4.x: `TransformerBridge` around its native model or a Hugging Face one."""

    major = 4

    def __init__(self) -> None:
        self.tl = _quietly_import()
        from transformer_lens.model_bridge import TransformerBridge

        self.bridge = TransformerBridge

    def config(self, config: dict[str, Any], source: str) -> Any:
        """A `TransformerBridgeConfig` from `HookedTransformerConfig` keyword arguments."""
        from transformer_lens.config import TransformerBridgeConfig

        if config.get("use_attn_scale") is False:
            # HookedTransformer then divides scores by 1; the native model always scales them.
            raise ModelError(f"{source}: use_attn_scale false is not supported with "
                             f"TransformerLens 4 (its native model always scales attention "
                             f"scores)")
        beyond = [key for key in BEYOND_NATIVE if config.get(key) not in (None, False, 0, -1)
                  and not (key == "n_key_value_heads" and config[key] == config.get("n_heads"))]
        if config.get("positional_embedding_type", "standard") != "standard":
            beyond.insert(0, f"positional_embedding_type {config['positional_embedding_type']}")
        if beyond:
            raise ModelError(f"{source}: {', '.join(beyond)} need TransformerLens 3 to build "
                             f"(its HookedTransformer); TransformerLens 4's native model keeps "
                             f"them elsewhere. Such checkpoints load without TransformerLens; "
                             f"to build one, install 'transformer-lens>=3.9,<4'")
        if config.get("gated_mlp"):
            raise ModelError(f"{source}: gated MLPs are not supported with TransformerLens 4 "
                             f"(its native model's gated MLP has no biases b_in, b_out)")
        try:
            return TransformerBridgeConfig(**config)
        except TypeError as error:  # a 3.x key the bridge's config does not take
            raise ModelError(f"{source}: {error}; TransformerLens 4's TransformerBridgeConfig "
                             f"does not take this HookedTransformerConfig key (install "
                             f"transformer-lens<4 for it)") from None
        except (ValueError, AssertionError) as error:
            raise ModelError(f"{source}: invalid model configuration ({error})") from None

    def build(self, cfg: Any, config: dict[str, Any], tokenizer: Any) -> Any:
        try:
            model = self.bridge.boot_native(cfg, tokenizer=tokenizer)
        except (ValueError, NotImplementedError) as error:
            raise ModelError(f"config: TransformerLens 4 cannot build this model "
                             f"({first_line(error)})") from None
        model.cfg.n_params = checkpoint_shape(config).n_params  # HookedTransformerConfig's count
        self._expose_attn_scale(model)
        return model

    def load_state(self, model, state: dict[str, torch.Tensor], source: str) -> None:
        """A `HookedTransformer` state dict, in the native bridge's keys and layouts."""
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

        try:
            converted = convert_tl_checkpoint(state, model.cfg)
        except ValueError as error:
            raise ModelError(f"{source}: TransformerLens 4 cannot convert this state dict "
                             f"({first_line(error).removeprefix('convert_tl_checkpoint: ')})"
                             ) from None
        model.load_state_dict(converted, strict=False)

    def state_dict(self, model) -> dict[str, torch.Tensor]:
        """The bridge's parameters as a `HookedTransformer` state dict (the checkpoint format)."""
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
            if not model.cfg.attn_only:
                add(f"blocks.{i}.ln2", block.ln2, ("w", "b"))
                add(f"blocks.{i}.mlp", block.mlp, ("W_in", "W_gate", "W_out", "b_in", "b_out"))
        add("ln_final", model.ln_final, ("w", "b"))
        add("unembed", model.unembed, ("W_U", "b_U"))
        return state

    def hf_directory(self, directory: Path) -> tuple[Any, Tokenizer | None]:
        raise ModelError(f"{directory}: TransformerLens 4 has no per-family weight converter; "
                         f"this directory loads without TransformerLens (`load_model`), and "
                         f"TransformerLens' own model of it needs 'transformer-lens>=3.9,<4'")

    def named(self, name: str) -> tuple[Any, Tokenizer | None]:
        official = self._official_name(name)
        go_offline_without_network()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = self.bridge.boot_transformers(official, device="cpu")
        except Exception as error:  # network and hub errors come in many types
            raise ModelError(offline_message(name, error)) from None
        family = getattr(getattr(model.original_model, "config", None), "model_type", None)
        if family not in BRIDGE_FAMILIES:
            raise ModelError(f"{name}: {family} models need TransformerLens 3's weight "
                             f"conversion; install 'transformer-lens>=3.9,<4'")
        self._expose_attn_scale(model)
        return model, Tokenizer(model.tokenizer, name) if model.tokenizer is not None else None

    def name_shape(self, name: str) -> ModelShape:
        """From the name's Hugging Face config: TransformerLens 4 has no configuration table."""
        official = self._official_name(name)
        go_offline_without_network()
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(official)
        except Exception as error:  # the hub client raises many types; all mean "not here"
            raise ModelError(offline_message(name, error)) from None
        return hf_shape(config.to_dict(), name)

    @staticmethod
    def _official_name(name: str) -> str:
        """The Hugging Face name of a TransformerLens model name or alias (`gpt2`)."""
        # 4.x only (3.x has it in loading_from_pretrained): mypy checks against 3.x.
        from transformer_lens.supported_models import (  # type: ignore[attr-defined, unused-ignore]
            get_official_model_name,
        )

        try:
            return get_official_model_name(name)
        except ValueError:
            raise ModelError(unknown_model_message(name)) from None

    @staticmethod
    def _expose_attn_scale(bridge) -> None:
        """Give each attention bridge HookedTransformer's `attn_scale`: the divisor of its
        scores."""
        from transformer_lens.model_bridge.sources.native import NativeAttention

        cfg = bridge.cfg
        configured = ((cfg.attn_scale if cfg.attn_scale > 0 else math.sqrt(cfg.d_head))
                      if cfg.use_attn_scale else 1.0)
        for block in bridge.blocks:
            module = block.attn.original_component
            # The native model keeps the divisor it uses; Hugging Face modules follow the config.
            block.attn.attn_scale = (float(module.scale) if isinstance(module, NativeAttention)
                                     else float(configured))
