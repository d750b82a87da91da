"""Loading models: the project's checkpoint format, local Hugging Face directories, names."""

import json

import pytest
import torch
from same_weights import differences

from acdc.core.loading import load_model
from acdc.core.models import (
    build_model,
    extract_weights,
    make_config,
    save_checkpoint,
    transformer_lens_major,
)
from acdc.core.shapes import load_shape
from acdc.errors import ModelError

CONFIG = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=50)


@pytest.fixture
def checkpoint(tmp_path):
    model = build_model(CONFIG, seed=0)
    return model, save_checkpoint(model, tmp_path / "ck", config=CONFIG)


def test_checkpoint_round_trip(checkpoint):
    model, directory = checkpoint
    loaded = load_model(str(directory))
    tokens = torch.randint(0, 50, (3, 10))
    assert differences(loaded.weights, extract_weights(model)) == []
    with torch.inference_mode():
        assert torch.allclose(loaded.logits(tokens), model(tokens), atol=1e-5)
    assert loaded.tokenizer is None
    assert loaded.shape.n_layers == 2 and loaded.shape.d_mlp == 64


def test_extracted_weights_are_the_checkpoint_tensors():
    # Read without TransformerLens, the engine's weights are the bundled checkpoint's tensors.
    from safetensors.torch import load_file

    from acdc.core.bundled import model_dir

    directory = model_dir("ioi")
    state = load_file(str(directory / "model.safetensors"))
    weights = load_model(str(directory)).weights
    assert torch.equal(weights.W_E, state["embed.W_E"])
    assert torch.equal(weights.W_U, state["unembed.W_U"])
    assert torch.equal(weights.b_U, state["unembed.b_U"])
    for i, layer in enumerate(weights.layers):
        for field, key in (("W_Q", "attn.W_Q"), ("b_K", "attn.b_K"), ("W_O", "attn.W_O"),
                           ("b_O", "attn.b_O"), ("ln1_w", "ln1.w"), ("W_in", "mlp.W_in"),
                           ("W_out", "mlp.W_out"), ("b_out", "mlp.b_out")):
            assert torch.equal(getattr(layer, field), state[f"blocks.{i}.{key}"]), (i, field)
    assert weights.attn_scale == 4.0  # sqrt(d_head 16)


def test_shape_from_config_alone(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "attn_only": True}))
    shape = load_shape(str(tmp_path))
    assert (shape.n_layers, shape.n_heads, shape.has_mlp) == (2, 4, False)
    with pytest.raises(ModelError, match="no model.safetensors"):
        load_model(str(tmp_path))


def test_checkpoint_problems_are_one_line_errors(checkpoint, tmp_path):
    _, directory = checkpoint
    with pytest.raises(ModelError, match="no such directory"):
        load_model(str(tmp_path / "missing") + "/")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_shape(str(empty))
    (directory / "config.json").write_text(json.dumps({**CONFIG, "d_mlp": 128}))
    with pytest.raises(ModelError, match="has shape"):
        load_model(str(directory))
    (directory / "config.json").write_text(json.dumps({**CONFIG, "n_layerz": 2}))
    with pytest.raises(ModelError, match="n_layerz"):
        load_shape(str(directory))
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read JSON"):
        load_shape(str(directory))


@pytest.mark.hooked_transformer  # TransformerLens 4's native model cannot build them
@pytest.mark.parametrize(("extra", "reason"), [
    ({"positional_embedding_type": "alibi"}, "positional_embedding_type 'alibi'"),
    ({"positional_embedding_type": "rotary", "rotary_dim": 8, "use_qk_norm": True},
     "query/key norms"),
])
def test_unsupported_architectures_are_refused(tmp_path, extra, reason):
    config = {**CONFIG, **extra}
    model = build_model(config, seed=0)
    directory = save_checkpoint(model, tmp_path / "model", config=config)
    with pytest.raises(ModelError, match=f"not supported by the ACDC engine: {reason}"):
        load_model(str(directory))


def test_rotary_checkpoint_loads(tmp_path):
    """Written without TransformerLens: a family's checkpoint loads under either version."""
    from test_loading import write_random_checkpoint

    config = {**CONFIG, "positional_embedding_type": "rotary", "rotary_dim": 6,
              "n_key_value_heads": 2, "normalization_type": "RMS", "gated_mlp": True,
              "act_fn": "silu"}
    write_random_checkpoint(tmp_path, config)
    weights = load_model(str(tmp_path)).weights
    assert weights.rotary_dim == 6 and weights.layers[0].W_K.shape == (4, 32, 8)
    assert weights.layers[0].rotary_sin.shape == (16, 6)


def test_local_hugging_face_directory_loads_offline(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=60,
                                    n_positions=32)).eval()
    hf.save_pretrained(tmp_path / "hf")
    assert load_shape(str(tmp_path / "hf")).n_heads == 4
    loaded = load_model(str(tmp_path / "hf"))
    tokens = torch.randint(0, 60, (2, 7))
    with torch.no_grad():
        assert torch.allclose(loaded.logits(tokens), hf(tokens).logits, atol=1e-5)
    # left as it was
    assert "n_ctx" not in json.loads((tmp_path / "hf" / "config.json").read_text())


def test_model_names(monkeypatch):
    with monkeypatch.context() as online:  # the name is checked against TransformerLens' list
        online.setattr("acdc.core.configs.hub_reachable", lambda: True)
        with pytest.raises(ModelError, match="unknown model 'gpt7'"):
            load_shape("gpt7")

    def no_network(*args, **kwargs):
        raise OSError("no route")

    monkeypatch.setattr("socket.create_connection", no_network)
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache")
    with pytest.raises(ModelError, match="cannot fetch model 'gpt2'.*checkpoint directory"):
        load_shape("gpt2")


@pytest.mark.skipif(transformer_lens_major() >= 4, reason="TransformerLens 4 removed "
                    "HookedTransformerConfig; the checkpoint keys stay those of its 3.x version")
def test_checkpoint_keys_are_those_transformer_lens_takes():
    import dataclasses

    from transformer_lens import HookedTransformerConfig

    from acdc.core.configs import CHECKPOINT_KEYS

    fields = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    assert CHECKPOINT_KEYS == fields


@pytest.mark.skipif(transformer_lens_major() < 4, reason="TransformerLens 4 only")
def test_transformer_lens_4_refuses_keys_its_config_lacks_in_one_line():
    # The checkpoint format stays HookedTransformerConfig's (3.x) keys; the few that
    # TransformerBridgeConfig does not take are refused by name.
    with pytest.raises(ModelError, match="use_yarn_rope.*TransformerBridgeConfig does not take"):
        make_config({**CONFIG, "use_yarn_rope": False})


@pytest.mark.skipif(transformer_lens_major() < 4, reason="TransformerLens 4 only")
def test_transformer_lens_4_builds_no_family_model_in_one_line():
    """Its native model cannot build them (they load, without TransformerLens, all the same)."""
    rotary = {**CONFIG, "positional_embedding_type": "rotary", "rotary_dim": 8}
    with pytest.raises(ModelError, match="positional_embedding_type rotary need TransformerLens "
                                         "3 to build") as caught:
        build_model(rotary)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("change, message", [
    ({"n_layers": "two"}, "n_layers is 'two'; it must be a whole number"),
    ({"n_heads": -4}, "n_heads is -4; it must be a positive number"),
    ({"d_model": True}, "d_model is True; it must be a whole number"),
    ({"attn_only": "yes"}, "attn_only is 'yes'; it must be true or false"),
    ({"n_layrs": 2}, "unknown key 'n_layrs' .did you mean 'n_layers'"),
    ({"n_layers": None}, "n_layers is null; give a whole number"),
    ({"n_heads": None}, "n_heads is null; give a whole number"),
    ({"d_model": [64] * 100_000}, "d_model is a list; it must be a whole number"),
])
def test_config_values_are_checked_before_any_library_sees_them(tmp_path, change, message):
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, **change}))
    with pytest.raises(ModelError, match=message) as caught:
        load_shape(str(tmp_path))
    assert "\n" not in str(caught.value)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=message):
        load_model(str(tmp_path))


def test_a_model_larger_than_memory_is_refused_before_it_is_built(tmp_path):
    huge = {**CONFIG, "n_layers": 100_000, "d_model": 100_000, "d_head": 100, "n_heads": 1000}
    (tmp_path / "config.json").write_text(json.dumps(huge))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="its weights alone need about"):
        load_model(str(tmp_path))


def test_a_deeply_nested_config_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match="nested too deeply"):
        load_shape(str(tmp_path))


def test_a_config_that_is_not_text_is_one_line(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ModelError, match="not a text file"):
        load_shape(str(tmp_path))
