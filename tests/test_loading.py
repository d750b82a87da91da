"""Loading without TransformerLens equals loading through it.

Checkpoints are read with the project's own code (`checkpoints`, `weights`) and Hugging Face
directories converted with it (`hf_weights`); TransformerLens is the reference: its model of
the same directory (`models.load_hooked`: a `HookedTransformer` with TransformerLens' own
per-family converters under 3.x) gives, through `extract_weights`, the same `Weights` bit for
bit, and its forward pass the logits of the engine's plain forward. Every tiny model of
`conftest` (all the families' features) and a few configurations beyond them (Llama 3's and
YaRN's rotary scalings, a local rotary base with a global factor, contexts beyond
TransformerLens' 2048-row rotary buffer, a separate output vocabulary, an explicit attention
scale, grouped attention with as many key/value heads as query heads) are written as
checkpoints; every family's tiny Hugging Face model is saved as a directory.

Loading either kind of directory imports no TransformerLens (checked in a fresh interpreter).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hf_families
import pytest
import torch
from conftest import FAMILIES, MODEL_CONFIGS, make_model, model_config
from same_weights import differences

import cli
from acdc.core.architecture import DEFAULTS, HookedConfig, parameter_shapes
from acdc.core.checkpoints import write_checkpoint
from acdc.core.loading import load_model
from acdc.core.models import build_model, extract_weights, load_hooked, save_checkpoint
from acdc.errors import ModelError

HOOKED = pytest.mark.hooked_transformer  # the reference model needs TransformerLens 3 to build
SMALL = {"n_layers": 2, "d_model": 16, "n_heads": 4, "d_head": 4, "d_mlp": 24, "n_ctx": 16,
         "d_vocab": 50}
ROTARY = {**SMALL, "positional_embedding_type": "rotary", "rotary_dim": 4,
          "normalization_type": "RMS", "gated_mlp": True, "act_fn": "silu"}
EXTRA = {
    "llama3_rope": {**ROTARY, "n_key_value_heads": 2, "rotary_base": 500000.0,
                    "use_NTK_by_parts_rope": True, "NTK_by_parts_factor": 8.0,
                    "NTK_original_ctx_len": 8},
    "yarn": {**ROTARY, "use_yarn_rope": True, "yarn_factor": 4.0, "yarn_attention_factor": 1.2,
             "yarn_original_max_position_embeddings": 8},
    "local_base": {**ROTARY, "use_local_attn": True, "window_size": 3,
                   "attn_types": ["local", "global"], "rotary_base_local": 1000,
                   "rotary_scaling_factor": 2.0},
    "long_context": {**ROTARY, "n_ctx": 2100, "rotary_adjacent_pairs": True},
    "kv_as_heads": {**ROTARY, "n_key_value_heads": 4},
    "no_scale": {**SMALL, "use_attn_scale": False},
}
PLAIN_EXTRA = {  # GPT-2-shaped: TransformerLens 4's native model builds them too
    "vocab_out": {**SMALL, "d_vocab_out": 7},
    "given_scale": {**SMALL, "attn_scale": 3.0},
}
CHECKPOINTS = ([pytest.param(name, marks=HOOKED if name in FAMILIES else ())
                for name in MODEL_CONFIGS]
               + [pytest.param(name, marks=HOOKED) for name in EXTRA] + list(PLAIN_EXTRA))


def checkpoint_config(name: str) -> dict:
    return model_config(name) if name in MODEL_CONFIGS else {**EXTRA, **PLAIN_EXTRA}[name]


def write_random_checkpoint(directory: Path, config: dict, seed: int = 0) -> Path:
    """A checkpoint of `config` with random parameters: norm weights around 1, biases around
    0, matrices at 1 / sqrt(fan-in), so that every term changes the logits."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in parameter_shapes(HookedConfig.from_keys(config)).items():
        noise = torch.randn(shape, generator=generator)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "w":
            state[key] = 1 + 0.2 * noise
        elif leaf.startswith(("b", "_b")):
            state[key] = 0.3 * noise
        else:
            state[key] = noise / (shape[-2] ** 0.5 if key.startswith("blocks") else 1.0)
    return write_checkpoint(directory, config, state)


def close_logits(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Equal up to float32 rounding in two implementations (logits reach about 40 without
    norms); a feature read wrong moves them by more than 0.1 (test_hf_loading)."""
    return torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_a_checkpoint_loads_as_transformer_lens_loads_it(tmp_path, name):
    directory = write_random_checkpoint(tmp_path / name, checkpoint_config(name))
    loaded = load_model(str(directory))
    hooked, _ = load_hooked(str(directory))
    assert differences(loaded.weights, extract_weights(hooked)) == []
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert close_logits(loaded.logits(tokens), hooked(tokens))


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_in_half_precision_too(tmp_path, name):
    """Cast after reading, as TransformerLens casts its float32 model."""
    directory = write_random_checkpoint(tmp_path / name, checkpoint_config(name))
    hooked, _ = load_hooked(str(directory))
    ours = load_model(str(directory), dtype="bfloat16").weights
    assert differences(ours, extract_weights(hooked.to(torch.bfloat16))) == []


@HOOKED
@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_a_saved_model_loads_with_its_own_weights(tmp_path, name):
    """`save_checkpoint` then `load_model`: the weights the model had (conftest's models)."""
    model = make_model(name)
    directory = save_checkpoint(model, tmp_path / name, config=model_config(name))
    assert differences(load_model(str(directory)).weights, extract_weights(model)) == []


@pytest.fixture(scope="module")
def hf_directories(tmp_path_factory) -> dict[str, Path]:
    return {name: hf_families.build(name, tmp_path_factory.mktemp(name))
            for name in sorted(hf_families.FAMILIES)}


@HOOKED
@pytest.mark.parametrize("name", sorted(hf_families.FAMILIES))
def test_a_hugging_face_directory_converts_as_transformer_lens_converts_it(hf_directories, name):
    """The project's conversion against TransformerLens 3.9's converter for the family."""
    directory = str(hf_directories[name])
    hooked, _ = load_hooked(directory)
    loaded = load_model(directory)
    assert differences(loaded.weights, extract_weights(hooked)) == []
    with torch.inference_mode():
        tokens = hf_families.prompts()
        assert close_logits(loaded.logits(tokens), hooked(tokens))


def test_loading_imports_no_transformer_lens(hf_directories, tmp_path):
    """The bundled demo run, Hugging Face directories: no TransformerLens."""
    code = (
        "import sys, cli\n"
        "from typer.testing import CliRunner\n"
        "from acdc.core.loading import load_model\n"
        f"r = CliRunner().invoke(cli.app, ['discover', '--task', 'demo', '--out', "
        f"{str(tmp_path / 'run')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"for directory in {[str(hf_directories[n]) for n in ('llama', 'gemma2')]!r}:\n"
        "    load_model(directory)\n"
        "assert 'transformer_lens' not in sys.modules, 'transformer_lens imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(cli.__file__).parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- the config


@HOOKED
def test_the_defaults_are_those_of_hooked_transformer_config():
    import dataclasses

    from transformer_lens import HookedTransformerConfig

    defaults = {f.name: f.default for f in dataclasses.fields(HookedTransformerConfig)}
    assert {key: defaults[key] for key in DEFAULTS} == DEFAULTS


@HOOKED
@pytest.mark.parametrize("name", [*MODEL_CONFIGS, *EXTRA, *PLAIN_EXTRA])
def test_the_resolved_config_and_parameters_are_transformer_lens(name):
    config = checkpoint_config(name)
    model = build_model(config)
    cfg = HookedConfig.from_keys(config)
    for key in ("n_heads", "d_mlp", "d_vocab_out", "act_fn", "rotary_dim", "attn_scale",
                "n_params", "normalization_type"):
        assert getattr(cfg, key) == getattr(model.cfg, key), key
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.endswith(("IGNORE", ".mask", "rotary_sin", "rotary_cos"))}
    assert parameter_shapes(cfg) == expected


@pytest.mark.parametrize("change, message", [
    ({"n_heads": -1, "d_head": 5}, "d_model .16. must be divisible by d_head .5."),
    ({"use_local_attn": True, "window_size": 3}, "local attention needs window_size and "
                                                 "attn_types"),
    ({"use_local_attn": True, "window_size": 3, "attn_types": ["local"]},
     "attn_types must give 'global' or 'local' for each of the 2 layers"),
])
def test_an_inconsistent_config_is_one_line(change, message):
    with pytest.raises(ModelError, match=f"here: invalid model configuration .{message}"):
        HookedConfig.from_keys({**SMALL, **change}, "here")


def test_a_state_dict_that_does_not_match_is_one_line(tmp_path):
    import json

    from safetensors.torch import save_file

    cfg = HookedConfig.from_keys(SMALL)
    state = {key: torch.zeros(shape) for key, shape in parameter_shapes(cfg).items()}
    (tmp_path / "config.json").write_text(json.dumps(SMALL))
    for change, message in (({"blocks.0.attn.W_Q": None}, r"missing \['blocks.0.attn.W_Q'\]"),
                            ({"blocks.0.attn._W_K": torch.zeros(1)}, "unexpected"),
                            ({"embed.W_E": torch.zeros(3, 3)}, "embed.W_E has shape .3, 3.")):
        changed = {k: v for k, v in {**state, **change}.items() if v is not None}
        save_file(changed, str(tmp_path / "model.safetensors"))
        with pytest.raises(ModelError, match=message) as caught:
            load_model(str(tmp_path))
        assert "\n" not in str(caught.value)


def test_norms_after_sublayers_need_rms_norm(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps(
        {**SMALL, "use_normalization_before_and_after": True}))
    with pytest.raises(ModelError, match="norms after each sublayer with normalization_type "
                                         "'LN' .only 'RMS'."):
        load_model(str(tmp_path))
