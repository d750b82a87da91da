"""Loading models: the project's checkpoint format, local Hugging Face directories, names."""

import json

import pytest
import torch

from acdc.core.models import build_model, load_model, load_shape, save_checkpoint
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
    assert torch.equal(loaded.model(tokens), model(tokens))
    assert loaded.tokenizer is None
    assert loaded.shape.n_layers == 2 and loaded.shape.d_mlp == 64


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


def test_unsupported_architectures_are_refused(tmp_path):
    config = {**CONFIG, "positional_embedding_type": "rotary", "rotary_dim": 8}
    model = build_model(config, seed=0)
    directory = save_checkpoint(model, tmp_path / "rotary", config=config)
    with pytest.raises(ModelError, match="positional_embedding_type 'rotary'"):
        load_model(str(directory))


def test_local_hugging_face_directory_loads_offline(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=60,
                                    n_positions=32)).eval()
    hf.save_pretrained(tmp_path / "hf")
    assert load_shape(str(tmp_path / "hf")).n_heads == 4
    loaded = load_model(str(tmp_path / "hf"))
    tokens = torch.randint(0, 60, (2, 7))
    with torch.no_grad():
        assert torch.allclose(loaded.model(tokens), hf(tokens).logits, atol=1e-5)
    # left as it was
    assert "n_ctx" not in json.loads((tmp_path / "hf" / "config.json").read_text())


def test_model_names(monkeypatch):
    with pytest.raises(ModelError, match="unknown model 'gpt7'"):
        load_shape("gpt7")

    def no_network(*args, **kwargs):
        raise OSError("no route")

    monkeypatch.setattr("socket.create_connection", no_network)
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache")
    with pytest.raises(ModelError, match="cannot fetch model 'gpt2'.*checkpoint directory"):
        load_shape("gpt2")
