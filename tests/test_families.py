"""Model families read from Hugging Face configs, and the graph of parallel blocks.

`tests/data/published/*/config.json` are the published configs of the models circuit research
uses (config-only directories: no weights). Their edge counts include the MIB benchmark's
residual-edge counts; their parameter counts are the published ones, and equal what
transformers' own model classes hold (built on the meta device: no memory, no weights).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import invoke

import cli
from acdc.core.circuit import Circuit
from acdc.core.graph import GraphShape, build_graph, count_edges
from acdc.core.hf_configs import hf_shape
from acdc.core.shapes import load_shape
from acdc.errors import ModelError

PUBLISHED = Path(__file__).parent / "data" / "published"

# name: (layers, query heads, key/value heads, d_head, d_mlp, parallel, MLP kind,
#        residual edges, direct edges, parameters)
COUNTS = {
    "gpt2": (12, 12, 12, 64, 3072, False, "plain", 32_491, 432, 124_439_808),
    "pythia-70m": (6, 8, 8, 64, 2048, True, "plain", 3_580, 144, 70_426_624),
    "gpt-j-6b": (28, 16, 16, 256, 16384, True, "plain", 316_723, 1_344, 6_050_882_784),
    "llama-3.2-1b": (16, 32, 8, 64, 8192, False, "gated", 386_713, 1_536, 1_235_814_400),
    "llama-3.1-8b": (32, 32, 8, 128, 14336, False, "gated", 1_592_881, 3_072, 8_030_261_248),
    "qwen2.5-0.5b": (24, 14, 2, 64, 4864, False, "gated", 179_749, 1_008, 494_032_768),
    "gemma-2-2b": (26, 8, 4, 256, 9216, False, "gated", 74_218, 624, 2_614_341_888),
    "mistral-7b-v0.1": (32, 32, 8, 128, 14336, False, "gated", 1_592_881, 3_072, 7_241_732_096),
}
# The MIB benchmark's residual-edge counts (its graph: one q, k and v input per query head).
MIB = {"gpt2": 32_491, "qwen2.5-0.5b": 179_749, "gemma-2-2b": 74_218, "llama-3.1-8b": 1_592_881}



def write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


# --------------------------------------------------------------------------- published configs


def test_every_published_config_is_tested():
    assert sorted(p.name for p in PUBLISHED.iterdir()) == sorted(COUNTS)
    for name, residual in MIB.items():
        assert COUNTS[name][7] == residual


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_published_config_shapes_and_edge_counts(name):
    layers, heads, kv, d_head, d_mlp, parallel, mlp, residual, direct, params = COUNTS[name]
    shape = load_shape(str(PUBLISHED / name))
    assert (shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.d_head, shape.d_mlp) == (
        layers, heads, kv, d_head, d_mlp)
    assert shape.parallel_attn_mlp == parallel and shape.mlp_kind == mlp
    assert shape.n_params_total == params
    counts = count_edges(shape.graph_shape())
    assert (counts["residual"], counts["direct"]) == (residual, direct)
    assert direct == 3 * layers * heads  # one per query head and q/k/v, whatever the k/v heads


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_circuit_graph_on_published_configs(name):
    *_, residual, direct, params = COUNTS[name]
    result = invoke("graph", "--model", PUBLISHED / name)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"edges: {residual + direct:,} = {residual:,} residual + {direct:,} direct" in out
    assert "memory estimate for a run" in out and "GiB" in out
    assert "architecture: " in out


def test_published_parameter_counts_equal_transformers_own_classes():
    for name in COUNTS:
        config = json.loads((PUBLISHED / name / "config.json").read_text())
        assert hf_shape(config).n_params_total == transformers_count(config), name


def transformers_count(config: dict) -> int:
    """Parameters of transformers' own model class for a config, built on the meta device."""
    import warnings

    import torch
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_config = transformers.AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())


def test_memory_estimate_grows_with_gated_mlps_and_shrinks_with_shared_key_value_heads():
    from acdc.methods.acdc.memory import estimate_memory

    shape = load_shape(str(PUBLISHED / "llama-3.1-8b"))
    estimate = estimate_memory(shape, count_edges(shape.graph_shape())["senders"], 50, 32)
    # the weights as a run holds them: the published count (untied: no extra copy), plus the
    # key/value projections copied per query head: 32 layers x 2 x (32 - 8) heads x 4096 x 128
    assert estimate["params"] == 4 * (8_030_261_248 + 32 * 2 * 24 * 4096 * 128)
    tied = load_shape(str(PUBLISHED / "llama-3.2-1b"))
    assert tied.n_params_loaded == 1_235_814_400 + 128_256 * 2048  # the unembedding's own copy
    assert estimate["total"] > 90 * 2**30


def test_circuit_graph_on_a_hugging_face_directory_imports_no_torch():
    code = (
        "import sys, cli\n"
        "from typer.testing import CliRunner\n"
        f"for name in {sorted(COUNTS)!r}:\n"
        f"    model = {str(PUBLISHED)!r} + '/' + name\n"
        "    r = CliRunner().invoke(cli.app, ['graph', '--model', model])\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(cli.__file__).parent)


# --------------------------------------------------------------------------- every family


SMALL = {  # a small config of every family, with its features switched on
    "gpt2": {"n_layer": 2, "n_head": 4, "n_embd": 32, "n_positions": 24, "vocab_size": 60},
    "gpt_neox": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32,
                 "intermediate_size": 48, "vocab_size": 60, "max_position_embeddings": 24,
                 "rotary_pct": 0.5},
    "gpt_neox_sequential": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32,
                            "intermediate_size": 48, "vocab_size": 60, "attention_bias": False,
                            "use_parallel_residual": False, "tie_word_embeddings": True},
    "gptj": {"n_layer": 2, "n_head": 4, "n_embd": 32, "n_positions": 24, "vocab_size": 60,
             "rotary_dim": 4, "n_inner": 40},
    "llama": {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "hidden_size": 32, "intermediate_size": 40, "vocab_size": 60,
              "attention_bias": True, "mlp_bias": True, "head_dim": 12,
              "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}},
    "mistral": {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
                "hidden_size": 32, "intermediate_size": 40, "vocab_size": 60, "sliding_window": 8},
    "qwen2": {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "hidden_size": 32, "intermediate_size": 40, "vocab_size": 60,
              "tie_word_embeddings": True},
    "gemma": {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
              "hidden_size": 32, "intermediate_size": 40, "vocab_size": 60, "head_dim": 16},
    "gemma2": {"num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
               "hidden_size": 32, "intermediate_size": 40, "vocab_size": 60, "head_dim": 16,
               "sliding_window": 8, "query_pre_attn_scalar": 16},
    "opt": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32, "ffn_dim": 48,
            "vocab_size": 60, "max_position_embeddings": 24},
    "opt_350m_like": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32,
                      "ffn_dim": 48, "vocab_size": 60, "max_position_embeddings": 24,
                      "word_embed_proj_dim": 16, "do_layer_norm_before": False},
    "gpt_neo": {"num_layers": 2, "num_heads": 4, "hidden_size": 32, "vocab_size": 60,
                "max_position_embeddings": 24, "attention_types": [[["global", "local"], 1]],
                "window_size": 8},
}


def small_config(key: str) -> dict:
    model_type = key.removesuffix("_sequential").removesuffix("_350m_like")
    context = {} if model_type in ("gpt2", "gptj") else {"max_position_embeddings": 24}
    return {"model_type": model_type, **context, **SMALL[key]}


@pytest.mark.parametrize("key", sorted(SMALL))
def test_parameter_counts_equal_transformers_own_classes(key):
    config = small_config(key)
    assert hf_shape(config).n_params_total == transformers_count(config)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_configs_written_by_transformers_are_read_alike(key, tmp_path):
    """transformers 5 rewrites rotary settings as `rope_parameters` and adds `layer_types`:
    a config it saves reads as the config it was made from."""
    import warnings

    import transformers

    config = small_config(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.AutoConfig.for_model(**config).save_pretrained(tmp_path)
    assert load_shape(str(tmp_path)) == hf_shape(config, str(tmp_path / "config.json"))


def test_what_each_family_maps_to():
    shapes = {key: hf_shape(small_config(key)) for key in SMALL}
    assert {k for k, s in shapes.items() if s.parallel_attn_mlp} == {"gpt_neox", "gptj"}
    assert {k for k, s in shapes.items() if s.mlp_kind == "gated"} == {
        "llama", "mistral", "qwen2", "gemma", "gemma2"}
    assert {k: s.n_kv_heads for k, s in shapes.items() if s.n_key_value_heads} == {
        "llama": 2, "mistral": 1, "qwen2": 2, "gemma": 1, "gemma2": 2}
    features = {k: "; ".join(s.features) for k, s in shapes.items()}
    assert "rotary (4 of 8 dims" in features["gpt_neox"] and "NeoX" in features["gpt_neox"]
    assert "rotary (4 of 8 dims" in features["gptj"] and "interleaved" in features["gptj"]
    assert "llama3 scaling x8" in features["llama"] and shapes["llama"].d_head == 12
    assert "sliding-window attention (8 tokens)" in features["mistral"]
    assert "multi-query attention" in features["mistral"]
    assert "q/k/v biases" in features["qwen2"]
    assert "local attention (8 tokens) in 2 of 3 layers" in features["gemma2"]
    assert "local attention (8 tokens) in 1 of 2 layers" in features["gpt_neo"]
    assert "post-norm" in features["opt_350m_like"] and "width 16" in features["opt_350m_like"]
    published = hf_shape(json.loads((PUBLISHED / "gemma-2-2b" / "config.json").read_text()))
    assert {"attention-logit soft-capping at 50", "final-logit soft-capping at 30",
            "norms after attention and after the MLP", "RMSNorm with offset (1 + w)",
            "embeddings scaled by sqrt(d_model)"} <= set(published.features)
    assert not hf_shape(small_config("gpt_neox_sequential")).parallel_attn_mlp


# --------------------------------------------------------------------------- refusals


MIXTRAL = {"model_type": "mixtral", "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "hidden_size": 4096, "intermediate_size": 14336,
           "vocab_size": 32000, "num_local_experts": 8, "num_experts_per_tok": 2}
QWEN2_MOE = {"model_type": "qwen2_moe", "num_hidden_layers": 24, "num_attention_heads": 16,
             "hidden_size": 2048, "intermediate_size": 5632, "vocab_size": 151936,
             "num_experts": 60, "num_experts_per_tok": 4}
T5 = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 512,
      "num_layers": 6, "num_heads": 8, "vocab_size": 32128, "is_encoder_decoder": True}
BART = {"model_type": "bart", "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12,
        "vocab_size": 50265, "is_encoder_decoder": True}


@pytest.mark.parametrize("config, reason", [
    (MIXTRAL, "mixtral is a mixture-of-experts model .num_local_experts 8."),
    (QWEN2_MOE, "qwen2_moe is a mixture-of-experts model .num_experts 60."),
    ({"model_type": "llama", "num_local_experts": 4}, "llama is a mixture-of-experts model"),
    ({"model_type": "dbrx", "ffn_config": {"moe_num_experts": 16}}, "mixture-of-experts"),
    ({"model_type": "olmoe"}, "olmoe is a mixture-of-experts model"),
    (T5, "t5 is an encoder-decoder model"),
    (BART, "bart is an encoder-decoder model"),
    ({"architectures": ["MarianMTModel"], "is_encoder_decoder": True},
     "MarianMTModel is an encoder-decoder"),
    ({"model_type": "mbart"}, "mbart is an encoder-decoder model"),
])
def test_mixture_of_experts_and_encoder_decoder_models_are_refused(tmp_path, config, reason):
    directory = write_config(tmp_path / "m", config)
    with pytest.raises(ModelError, match=reason) as caught:
        load_shape(str(directory))
    assert "\n" not in str(caught.value) and "not supported" in str(caught.value)
    result = invoke("graph", "--model", directory)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_a_run_refuses_them_before_loading_anything(tmp_path):
    from acdc.core.loading import load_model

    for config, reason in ((MIXTRAL, "mixture-of-experts"), (T5, "encoder-decoder")):
        directory = write_config(tmp_path / config["model_type"], config)
        with pytest.raises(ModelError, match=reason):
            load_model(str(directory))


LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "hidden_size": 32, "intermediate_size": 40, "vocab_size": 60,
         "max_position_embeddings": 64}


@pytest.mark.parametrize("change, message", [
    ({"num_hidden_layers": "two"}, "num_hidden_layers is 'two'; it must be a whole number"),
    ({"num_attention_heads": 0}, "num_attention_heads is 0; it must be >= 1"),
    ({"hidden_size": 30}, "hidden size 30 is not a multiple of num_attention_heads 4"),
    ({"num_key_value_heads": 3},
     "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    ({"vocab_size": None}, "missing vocab_size"),
    ({"intermediate_size": 4.5}, "intermediate_size is 4.5; it must be a whole number"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings is 'yes'; it must be true or false"),
    ({"rope_scaling": [8]}, "rope_scaling is \\[8\\]; it must be a JSON object or null"),
    ({"rope_theta": -1}, "rope_theta is -1; it must be a positive number"),
    ({"rope_parameters": {"rope_theta": "big"}}, "rope_parameters.rope_theta is 'big'"),
    ({"sliding_window": True}, "sliding_window is True; it must be a whole number"),
    ({"layer_types": ["full_attention"], "sliding_window": 4},
     "layer_types must list one attention type per layer"),
    ({"attn_logit_softcapping": "50"}, "attn_logit_softcapping is '50'; it must be a number"),
    ({"model_type": "bloomz"},
     "model_type 'bloomz' is not a family circuit reads; supported: gpt2"),
    ({"model_type": "lama"}, "did you mean 'llama'"),
    ({"model_type": 7}, "model_type is 7; it must be a string"),
    ({"model_type": None, "architectures": "LlamaForCausalLM"},
     "architectures is 'LlamaForCausalLM'; it must be a list"),
    ({"model_type": None, "architectures": ["Unknown"]},
     "no model_type and no known architectures"),
])
def test_malformed_hugging_face_configs_are_one_line_errors(tmp_path, change, message):
    config = {k: v for k, v in {**LLAMA, **change}.items() if v is not None}
    directory = write_config(tmp_path / "m", config)
    with pytest.raises(ModelError, match=message) as caught:
        load_shape(str(directory))
    assert "\n" not in str(caught.value) and str(directory) in str(caught.value)
    result = invoke("graph", "--model", directory)
    assert result.exit_code == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("config, message", [
    ({**small_config("gpt_neox"), "rotary_pct": 1.5},
     "the rotary fraction is 1.5; it must be at most 1"),
    ({**small_config("gptj"), "rotary_dim": 12}, "rotary_dim 12 is more than the head dimension 8"),
    ({**small_config("gpt_neo"), "attention_types": [["global", 2]]}, "attention_types is"),
    ({**small_config("gpt_neo"), "attention_types": [[["global"], 3]]},
     "attention_types gives 3 layers"),
    ({**small_config("gpt2"), "add_cross_attention": True}, "add_cross_attention is true"),
])
def test_malformed_family_keys_are_one_line_errors(config, message):
    with pytest.raises(ModelError, match=message) as caught:
        hf_shape(config)
    assert "\n" not in str(caught.value)


def test_an_architecture_without_model_type_is_read_by_its_class_name():
    config = {**LLAMA, "architectures": ["LlamaForCausalLM"]}
    del config["model_type"]
    assert hf_shape(config).architecture == "llama"


# --------------------------------------------------------------------------- parallel blocks


def brute_force_edges(shape: GraphShape) -> set[str]:
    """Every edge, from when each node reads and writes the residual stream: a sender feeds a
    receiver that reads after it writes. In block l the heads read at 2l and write at 2l + 1;
    a sequential MLP reads at 2l + 1, a parallel one at 2l (with the heads); both write at
    2l + 2, after which the next block reads."""
    senders = [("input", 0)]
    receivers = []
    qkvs = ["q", "k", "v"] if shape.granularity == "qkv" else [None]
    for layer in range(shape.n_layers):
        for head in range(shape.n_heads):
            senders.append((f"a{layer}.h{head}", 2 * layer + 1))
            for qkv in qkvs:
                receivers.append((f"a{layer}.h{head}" + (f"<{qkv}>" if qkv else ""), 2 * layer))
        if shape.has_mlp:
            reads = 2 * layer if shape.parallel_attn_mlp else 2 * layer + 1
            senders.append((f"m{layer}", 2 * layer + 2))
            receivers.append((f"m{layer}", reads))
    receivers.append(("logits", 2 * shape.n_layers))
    edges = {f"{s}->{r}" for s, writes in senders for r, reads in receivers if writes <= reads}
    if shape.granularity == "qkv":
        edges |= {f"a{layer}.h{h}<{x}>->a{layer}.h{h}" for layer in range(shape.n_layers)
                  for h in range(shape.n_heads) for x in qkvs}
    return edges


@pytest.mark.parametrize("shape", [
    GraphShape(1, 1, True, "qkv", True), GraphShape(3, 2, True, "qkv", True),
    GraphShape(4, 3, True, "head", True), GraphShape(6, 8, True, "qkv", True),
    GraphShape(3, 2, True, "qkv", False), GraphShape(2, 3, False, "qkv", True),
])
def test_graph_equals_a_brute_force_enumeration(shape):
    graph = build_graph(shape)
    names = [e.name for e in graph.edges]
    assert len(names) == len(set(names))
    assert set(names) == brute_force_edges(shape)
    counts = count_edges(shape)
    assert counts["edges"] == len(names)
    assert counts["residual"] == sum(e.kind == "residual" for e in graph.edges)
    mlp_edges = sum(e.receiver.kind == "mlp" for e in graph.edges if e.kind == "residual")
    assert counts["by_receiver"].get("MLPs", 0) == mlp_edges
    for layer in range(shape.n_layers):  # the helper the patched forward sizes MLP masks with
        reads = [e for e in graph.edges if e.receiver.name == f"m{layer}"]
        assert len(reads) == (graph.senders_of_mlp(layer) if shape.has_mlp else 0)


def test_a_parallel_mlp_does_not_read_its_own_heads_and_acdc_visits_every_edge():
    graph = build_graph(GraphShape(2, 2, True, parallel_attn_mlp=True))
    assert "a1.h0->m1" not in graph.edge_index and "a0.h0->m1" in graph.edge_index
    assert count_edges(GraphShape(2, 2, True))["residual"] - len(
        [e for e in graph.edges if e.kind == "residual"]) == 2 * 2
    visited = [e.index for _, group in graph.acdc_order() for e in group]
    assert sorted(visited) == list(range(len(graph.edges)))


def test_a_parallel_circuit_file_round_trips_and_sequential_files_are_unchanged():
    parallel = build_graph(GraphShape(2, 2, True, parallel_attn_mlp=True))
    kept = tuple(e.name == "a0.h1->m0" for e in parallel.edges)
    settings = {"model": "m", "task": "t", "method": "acdc", "threshold": 0.1, "metric": "kl",
                "ablation": "corrupt", "granularity": "qkv"}
    results = {"metric_circuit": 0.5, "metric_full": 0.0, "runtime_s": 1.0, "partial": False}
    data = Circuit(parallel, kept, (None,) * len(kept), settings, results).to_json()
    assert data["parallel_attn_mlp"] is True
    back = Circuit.from_json(json.loads(json.dumps(data)))
    assert back.graph.shape.parallel_attn_mlp and back.kept == kept
    sequential = build_graph(GraphShape(2, 2, True))
    assert "parallel_attn_mlp" not in Circuit(sequential, (False,) * len(sequential.edges),
                                              (None,) * len(sequential.edges)).to_json()


def test_parallel_checkpoints_get_the_parallel_graph_and_load(tmp_path):
    from test_loading import write_random_checkpoint

    from acdc.core.loading import load_model

    config = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32, "n_ctx": 12,
              "d_vocab": 20, "parallel_attn_mlp": True, "n_key_value_heads": 1}
    directory = write_random_checkpoint(tmp_path / "p", config)
    shape = load_shape(str(directory))
    assert shape.parallel_attn_mlp and shape.n_kv_heads == 1
    assert count_edges(shape.graph_shape())["by_receiver"]["MLPs"] == 1 + (1 + 3)
    loaded = load_model(str(directory))
    assert loaded.shape.graph_shape() == shape.graph_shape()
