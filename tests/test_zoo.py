"""The bundled demo model, its task file and the zoo's reproducible training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from acdc.errors import AcdcError
from acdc.models import Tokenizer, load_model
from acdc.zoo import ZOO, demo_task_yaml, evaluate_model, train_model

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "models" / "demo"
DEMO_TASK = ROOT / "tasks" / "demo.yaml"


@pytest.fixture(scope="module")
def demo():
    return load_model(str(DEMO_MODEL))


@pytest.fixture(scope="module")
def task():
    return yaml.safe_load(DEMO_TASK.read_text())


def test_bundled_checkpoint_loads(demo):
    assert demo.tokenizer is not None and demo.tokenizer.bos_id is not None
    assert demo.shape.n_layers == 2 and demo.shape.n_heads == 4 and demo.shape.has_mlp
    assert demo.shape.d_vocab == demo.tokenizer.vocab_size < 200
    total = sum(p.stat().st_size for p in DEMO_MODEL.iterdir())
    assert total < 2_000_000


def test_task_file_is_what_the_generator_writes(task):
    assert DEMO_TASK.read_text() == demo_task_yaml()
    assert task["model"] == "../models/demo" and task["prepend_bos"] is True
    assert (DEMO_TASK.parent / task["model"]).resolve() == DEMO_MODEL.resolve()
    assert 20 <= len(task["prompts"]) <= 30


def test_tokenizer_round_trips_task_words(demo, task):
    tok = demo.tokenizer
    unk = tok.backend.token_to_id("<unk>")
    for p in task["prompts"]:
        clean, corrupt = tok.encode(p["clean"]), tok.encode(p["corrupt"])
        assert unk not in clean and unk not in corrupt
        assert len(clean) == len(corrupt)
        assert tok.token_strings(clean) == p["clean"].split()
        assert tok.decode(clean) == p["clean"]
        for word in (p["answer"], p["wrong"]):
            ids = tok.encode(word)
            assert len(ids) == 1 and tok.token_strings(ids) == [word.strip()]


@torch.no_grad()
def test_demo_model_solves_its_task(demo, task):
    tok = demo.tokenizer
    correct, margins = 0, []
    for p in task["prompts"]:
        tokens = torch.tensor([[tok.bos_id, *tok.encode(p["clean"])]])
        logits = demo.model(tokens)[0, -1]
        answer, wrong = tok.encode(p["answer"])[0], tok.encode(p["wrong"])[0]
        correct += int(logits.argmax()) == answer
        margins.append(float(logits[answer] - logits[wrong]))
    assert correct / len(task["prompts"]) >= 0.9
    assert sum(margins) / len(margins) > 3


def test_training_is_deterministic_and_loadable(tmp_path):
    first = train_model("demo", tmp_path / "a", seed=3, steps=4)
    second = train_model("demo", tmp_path / "b", seed=3, steps=4)
    other = train_model("demo", tmp_path / "c", seed=4, steps=4)
    assert first["steps"] == 4 and set(first["files"]) == {"config.json", "model.safetensors",
                                                           "tokenizer.json"}
    a, b, c = (load_file(str(tmp_path / d / "model.safetensors")) for d in "abc")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    loaded = load_model(str(tmp_path / "a"))
    assert loaded.shape.d_vocab == ZOO["demo"].config["d_vocab"]
    assert Tokenizer.from_file(tmp_path / "a" / "tokenizer.json").vocab_size == loaded.shape.d_vocab
    assert 0.0 <= first["heldout_accuracy"] <= 1.0


def test_evaluate_and_unknown_names(demo):
    report = evaluate_model("demo", DEMO_MODEL)
    assert report["accuracy"] >= 0.9 and report["prompts"] == ZOO["demo"].eval_prompts
    with pytest.raises(AcdcError, match="unknown zoo model"):
        train_model("nope", "/nonexistent")
