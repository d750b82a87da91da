"""Local Hugging Face directories of every family, loaded offline.

A tiny random model of each family (`tests/hf_families.py`) is written with transformers'
`save_pretrained`; the weights loaded from that directory (the project's own conversion, no
TransformerLens) must give, through the engine's plain forward, the Hugging Face model's logits
on prompts longer than every sliding window. These run under TransformerLens 3 and 4. Under 3.x
the `HookedTransformer` that TransformerLens' own converters give (the slow references' model)
is held to the same logits. (The engine's patched forward is held to them in
`test_hf_engine.py`, the conversion to TransformerLens' bit for bit in `test_loading.py`.)

The directories are named after their families on purpose: TransformerLens' own reader picks
Llama and Gemma by the directory's name, which the loader must not depend on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hf_families
import pytest
import torch
from typer.testing import CliRunner

import cli
from acdc.core import hf_mapping
from acdc.core.architecture import HookedConfig, model_shape
from acdc.core.configs import model_kind
from acdc.core.forward import full_forward
from acdc.core.graph import count_edges
from acdc.core.hf_weights import read_hf_config, read_hf_state
from acdc.core.loading import LoadedModel, load_model
from acdc.core.shapes import load_shape
from acdc.core.weights import weights_from_state_dict
from acdc.errors import ModelError

runner = CliRunner()
NAMES = sorted(hf_families.FAMILIES)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def directories(tmp_path_factory) -> dict[str, Path]:
    return {name: hf_families.build(name, tmp_path_factory.mktemp(name)) for name in NAMES}


@pytest.fixture(scope="module")
def loaded(directories) -> dict[str, tuple[LoadedModel, torch.Tensor]]:
    """Each family's loaded model and the Hugging Face model's logits on the prompts."""
    from transformers import AutoModelForCausalLM

    out = {}
    for name, directory in directories.items():
        hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        with torch.no_grad():
            expected = hf_model(hf_families.prompts()).logits
        assert model_kind(str(directory)) == "hf"
        out[name] = (load_model(str(directory)), expected)
    return out


def logits(loaded: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return loaded.logits(hf_families.prompts())


@pytest.mark.parametrize("name", NAMES)
def test_the_loaded_model_gives_the_hugging_face_logits(loaded, name):
    model, expected = loaded[name]
    assert model.dtype == torch.float32
    assert hf_families.prompts().shape[1] > hf_families.WINDOW
    difference = (logits(model) - expected).abs().max().item()
    assert difference < TOLERANCE, f"{name}: max abs logit difference {difference:.2e}"


@pytest.mark.hooked_transformer
@pytest.mark.parametrize("name", NAMES)
def test_transformer_lens_model_gives_the_hugging_face_logits(loaded, directories, name):
    """The reference model (TransformerLens 3's converter for the family, our config)."""
    from acdc.core.models import load_hooked

    model, _ = load_hooked(str(directories[name]))
    assert model.cfg.dtype == torch.float32
    with torch.no_grad():
        difference = (model(hf_families.prompts()) - loaded[name][1]).abs().max().item()
    assert difference < TOLERANCE, f"{name}: max abs logit difference {difference:.2e}"


@pytest.fixture(scope="module")
def converted(directories) -> dict[str, tuple[HookedConfig, dict[str, torch.Tensor]]]:
    out = {}
    for name, directory in directories.items():
        family, cfg = read_hf_config(directory)
        out[name] = (cfg, read_hf_state(directory, family, cfg))
    return out


# What each family's features become in the HookedTransformerConfig.
EXPECTED_CONFIG: dict[str, dict[str, Any]] = {
    "gpt2": {"d_mlp": 48, "n_ctx": 32, "positional_embedding_type": "standard"},
    "gpt_neox": {"rotary_dim": 4, "rotary_adjacent_pairs": False, "parallel_attn_mlp": True},
    "gptj": {"rotary_dim": 8, "rotary_adjacent_pairs": True, "parallel_attn_mlp": True,
             "d_mlp": 256},
    "llama": {"n_key_value_heads": 2, "gated_mlp": True, "normalization_type": "RMS",
              "rotary_dim": 16, "use_NTK_by_parts_rope": False},
    "llama3": {"d_head": 12, "rotary_dim": 12, "rotary_base": 500000.0,
               "use_NTK_by_parts_rope": True, "NTK_by_parts_factor": 8.0,
               "NTK_original_ctx_len": 16},
    "mistral": {"n_key_value_heads": 2, "use_local_attn": True, "window_size": 8,
                "attn_types": ["local", "local"], "n_ctx": 32},
    "qwen2": {"n_key_value_heads": 2, "use_local_attn": False, "rotary_base": 1000000.0},
    "gemma": {"n_key_value_heads": 1, "act_fn": "gelu_pytorch_tanh", "d_head": 16},
    "gemma2": {"use_local_attn": True, "window_size": 8,
               "attn_types": ["local", "global", "local"], "attn_scale": 12 ** 0.5,
               "attn_scores_soft_cap": 5.0, "output_logits_soft_cap": 3.0,
               "use_normalization_before_and_after": True, "n_key_value_heads": 2},
    "opt": {"n_ctx": 32, "act_fn": "relu"},
    "gpt_neo": {"use_local_attn": True, "attn_types": ["global", "local"], "window_size": 8,
                "use_attn_scale": False, "d_mlp": 128},
}


def test_every_family_is_checked():
    assert sorted(EXPECTED_CONFIG) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_each_family_maps_to_the_expected_config(converted, name):
    cfg = converted[name][0]
    found = {key: getattr(cfg, key) for key in EXPECTED_CONFIG[name]}
    found = {k: list(v) if k == "attn_types" else v for k, v in found.items()}
    assert found == EXPECTED_CONFIG[name]


def changed_logits(cfg: HookedConfig, state: dict[str, torch.Tensor], **change: Any
                   ) -> torch.Tensor:
    """The engine's logits of the same weights under a changed config (rotary tables and
    windows recomputed)."""
    weights = weights_from_state_dict(HookedConfig.from_keys({**cfg.to_dict(), **change}), state)
    with torch.no_grad():
        return full_forward(weights, hf_families.prompts())[0]


# Each feature, switched off or set as TransformerLens' own reader sets it, changes the logits
# well beyond the tolerance: the comparison above would catch a loader that got it wrong.
FEATURES = [
    ("gpt_neox", {"rotary_dim": 16}), ("gpt_neox", {"parallel_attn_mlp": False}),
    ("gptj", {"rotary_adjacent_pairs": False}), ("llama", {"rotary_base": 20000.0}),
    ("llama3", {"use_NTK_by_parts_rope": False}), ("mistral", {"use_local_attn": False}),
    ("qwen2", {"rotary_base": 10000.0}), ("gemma2", {"use_local_attn": False}),
    ("gemma2", {"attn_scale": 4.0}), ("gemma2", {"attn_scores_soft_cap": -1.0}),
    ("gemma2", {"output_logits_soft_cap": -1.0}), ("gpt_neo", {"use_local_attn": False}),
    ("gpt_neo", {"use_attn_scale": True}),
]


@pytest.mark.parametrize("name, change", FEATURES)
def test_each_feature_changes_the_logits(loaded, converted, name, change):
    cfg, state = converted[name]
    assert (changed_logits(cfg, state) - loaded[name][1]).abs().max().item() < TOLERANCE
    assert (changed_logits(cfg, state, **change) - loaded[name][1]).abs().max().item() > 0.1


def test_gemma_offsets_and_scales_are_folded_into_the_weights(loaded, directories):
    """Gemma's RMSNorm weights become 1 + w and its embedding is multiplied by sqrt(d_model);
    GPT-J's one LayerNorm per block becomes equal ln1 and ln2."""
    from safetensors.torch import load_file

    state = load_file(str(directories["gemma"] / "model.safetensors"))
    weights = loaded["gemma"][0].weights
    assert torch.allclose(weights.W_E, state["model.embed_tokens.weight"] * 64 ** 0.5)
    assert torch.allclose(weights.layers[0].ln1_w,
                          1 + state["model.layers.0.input_layernorm.weight"])
    gptj = loaded["gptj"][0].weights.layers[1]
    assert torch.equal(gptj.ln1_w, gptj.ln2_w) and torch.equal(gptj.ln1_b, gptj.ln2_b)


@pytest.mark.parametrize("name", NAMES)
def test_the_shape_read_from_config_json_agrees_with_the_loaded_model(loaded, converted,
                                                                     directories, name):
    from_file = load_shape(str(directories[name]))
    from_model = model_shape(converted[name][0])
    fields = ("n_layers", "n_heads", "n_key_value_heads", "d_model", "d_head", "d_mlp",
              "d_vocab", "n_ctx", "parallel_attn_mlp", "mlp_kind")
    assert {f: getattr(from_file, f) for f in fields} == {f: getattr(from_model, f)
                                                           for f in fields}
    assert loaded[name][0].shape == from_file


def test_the_user_directory_is_left_as_it_was(directories):
    config = json.loads((directories["gpt2"] / "config.json").read_text())
    assert "n_ctx" not in config
    assert sorted(p.name for p in directories["gpt2"].iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors"]


@pytest.mark.parametrize("name", NAMES)
def test_circuit_graph_on_each_directory(directories, name):
    result = runner.invoke(cli.app, ["graph", "--model", str(directories[name])])
    assert result.exit_code == 0, result.output
    shape = load_shape(str(directories[name]))
    counts = count_edges(shape.graph_shape())
    assert f"edges: {counts['edges']:,}" in result.stdout
    assert "architecture: " in result.stdout


# --------------------------------------------------------------------------- refusals


def refused_configs() -> dict[str, Any]:
    from transformers import BartConfig, MixtralConfig, Qwen2MoeConfig, T5Config

    small = {"vocab_size": 100, "num_hidden_layers": 2, "num_attention_heads": 4,
             "hidden_size": 32, "intermediate_size": 48}
    return {
        "mixture-of-experts model .num_local_experts 4.": MixtralConfig(
            **small, num_local_experts=4, num_experts_per_tok=2),
        "mixture-of-experts model .num_experts 4.": Qwen2MoeConfig(
            **small, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16),
        "t5 is an encoder-decoder model": T5Config(
            vocab_size=100, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4),
        "bart is an encoder-decoder model": BartConfig(
            vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=4, decoder_attention_heads=4),
    }


def test_mixture_of_experts_and_encoder_decoder_directories_are_refused(tmp_path):
    for index, (reason, config) in enumerate(refused_configs().items()):
        directory = tmp_path / f"m{index}"
        config.save_pretrained(directory)
        for load in (lambda d: load_model(str(d)), read_hf_config):
            with pytest.raises(ModelError, match=reason) as caught:
                load(directory)
            assert "\n" not in str(caught.value) and "not supported" in str(caught.value)
        result = runner.invoke(cli.app, ["graph", "--model", str(directory)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and re.search(reason, last)


@pytest.mark.parametrize("family, change, message", [
    ("opt", {"do_layer_norm_before": False}, "do_layer_norm_before false .post-norm."),
    ("opt", {"word_embed_proj_dim": 16}, "word_embed_proj_dim unlike hidden_size"),
    ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
     "rotary scaling 'linear'"),
    ("llama", {"attention_bias": True}, "attention_bias true"),
    ("mistral", {"mlp_bias": True}, "mlp_bias true"),
    ("gpt_neox", {"attention_bias": False}, "attention_bias false"),
])
def test_variants_transformer_lens_cannot_convert_are_refused_in_one_line(family, change,
                                                                         message):
    import transformers

    config = transformers.AutoConfig.for_model(family, **change)
    with pytest.raises(ModelError, match=message) as caught:
        hf_mapping.hooked_config(config, family, "here")
    assert str(caught.value).startswith("here: ") and "\n" not in str(caught.value)


def with_tokenizer(directory: Path, tmp_path: Path) -> Path:
    """A copy of the directory with a word-level tokenizer: w3 is id 5, unknown words id 1."""
    import shutil

    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models as tokenizer_models
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<bos>", "[UNK]"] + [f"w{i}" for i in range(hf_families.VOCAB - 2)]
    raw = RawTokenizer(tokenizer_models.WordLevel({w: i for i, w in enumerate(words)},
                                                  unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    copy = Path(shutil.copytree(directory, tmp_path / directory.name))
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]",
                            bos_token="<bos>").save_pretrained(copy)
    return copy


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_directory_with_a_tokenizer_loads_it(directories, tmp_path, name):
    tokenizer = load_model(str(with_tokenizer(directories[name], tmp_path))).tokenizer
    assert tokenizer is not None and tokenizer.encode("w3 w5 zz") == [5, 7, 1]
    assert tokenizer.bos_id == 0


@pytest.mark.hooked_transformer
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_the_tokenizer_is_handed_to_transformer_lens(directories, tmp_path, name):
    from acdc.core.models import load_hooked

    model, tokenizer = load_hooked(str(with_tokenizer(directories[name], tmp_path)))
    assert tokenizer is not None and model.tokenizer is not None
    assert model.to_tokens("w3", prepend_bos=False).tolist() == [[5]]


@pytest.mark.parametrize("family", ["mistral", "qwen2", "gemma"])
def test_as_many_key_value_heads_as_query_heads_load(tmp_path, family):
    """Ungrouped attention in families usually grouped (TransformerLens 3.9's converters for
    them assume grouped heads and fail)."""
    import transformers

    config = transformers.AutoConfig.for_model(
        family, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        hidden_size=64, head_dim=16, intermediate_size=96, vocab_size=hf_families.VOCAB,
        max_position_embeddings=hf_families.N_CTX)
    hf_model = transformers.AutoModelForCausalLM.from_config(config).eval()
    hf_families.randomize(hf_model)
    hf_model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.shape.n_key_value_heads is None
    with torch.no_grad():
        expected = hf_model(hf_families.prompts()).logits
    assert (logits(loaded) - expected).abs().max().item() < TOLERANCE
