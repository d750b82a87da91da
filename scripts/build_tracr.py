"""Build the bundled tracr models and tasks: compile RASP with tracr, convert, check, write.

The ACDC paper's ground truth (Conmy et al. 2023, section 4; `shared/EVALUATION.md` section 7):
two programs compiled by tracr into transformers whose circuit is known by construction,

- `tracr-reverse`: `make_reverse(tokens)` over the vocabulary {1, 2, 3}, max_seq_len 5;
- `tracr-proportion`: `make_frac_prevs(tokens == "x")` over {w, x, y, z}, max_seq_len 5
  (at each position, the fraction of the tokens so far that are "x").

tracr and jax are needed here only, never at run time. Run it in a separate environment:

    python3 -m venv /tmp/tracr-venv
    /tmp/tracr-venv/bin/pip install tracr-pypi==1.0.0 numpy safetensors
    /tmp/tracr-venv/bin/python scripts/build_tracr.py --check-with .venv/bin/python

It writes, for each program, `models/tracr-<name>/` (config.json of HookedTransformerConfig
keys, model.safetensors of the HookedTransformer state dict, README.md with the conversion
check) and `tasks/tracr_<name>.yaml` (the authors' data, as token ids).

The conversion. tracr's compiled parameters are haiku's: one query/key/value matrix
`[d_model, n_heads * d_head]` per layer, the output matrix `[n_heads * d_head, d_model]`, the
MLP's two linear layers, token and position embeddings. TransformerLens keeps heads apart:
`W_Q[h, m, d] = query[m, h * d_head + d]` and `W_O[h, d, m] = linear[h * d_head + d, m]`.
tracr's model has no LayerNorm, ReLU MLPs and bidirectional attention scaled by
1 / sqrt(d_head), as TransformerLens' with `normalization_type: null`, `act_fn: relu`,
`attention_dir: bidirectional`. Its output is not a matrix: tracr reads the output variable's
directions out of the residual stream by their labels (for reverse, dimensions 33-35 of 41, not
the first three), so the unembedding is built from `residual_labels`: column j of `W_U` is 1 at
the residual dimension labelled with the j-th output value (`reverse_4:1`, ...) and 0 elsewhere;
a numerical output (proportion) is one column. The logits are then exactly tracr's output.

The check. Every prompt of the task (clean and corrupted) is run through tracr's own forward
and through the converted weights: a plain numpy transcription of HookedTransformer's
arithmetic here, and, with `--check-with PYTHON` (an interpreter with this project installed),
the project's own loader, TransformerLens' forward and the engine's patched forward. The
maximum absolute differences of the residual stream after every sublayer and of the output go
into the model card. `--compare` is that second half, run by the project's interpreter.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MAX_SEQ_LEN = 5
BOS = "BOS"
SEED = 0
N_PROPORTION = 50  # the authors' number of prompts for proportion
PROPORTION_LENGTH = 4


@dataclass(frozen=True)
class Program:
    """One program: how to compile it and the task that goes with it."""

    name: str  # tracr-<name>
    title: str
    rasp: str  # the RASP source, for the model card
    vocab: tuple
    threshold: float
    description: str
    components: str  # what each head and MLP computes, for the model card


PROGRAMS = {
    "reverse": Program(
        "reverse", "reverse a sequence",
        "length = SelectorWidth(Select(tokens, tokens, TRUE))\n"
        "opp_idx = (length - indices).named(\"opp_idx\")\n"
        "opp_idx = (opp_idx - 1).named(\"opp_idx-1\")\n"
        "reverse_selector = Select(indices, opp_idx, EQ)\n"
        "reverse = Aggregate(reverse_selector, tokens)        # lib.make_reverse(tokens)",
        (1, 2, 3), 0.001,
        "tracr reverse: the 6 permutations of (1, 2, 3) after BOS, reversed (zero ablation, L2)",
        "a0.h0 attends to every position and BOS alike (`Select(..., TRUE)`: its query and key "
        "do not matter) and reads the BOS indicator in its value, so it writes 1 / (length + 1); "
        "m0 turns that into `length`. m1 computes `length - indices`, m2 subtracts 1 (`opp_idx`). "
        "a3.h0 attends from each position to the position `opp_idx` (query: m2's output; key: "
        "the positions) and copies its token (value: the tokens) into the output directions. "
        "The attention of layers 1 and 2 and m3 are empty."),
    "proportion": Program(
        "proportion", "proportion of \"x\" so far",
        "bools = numerical(tokens == \"x\")\n"
        "prevs = Select(indices, indices, LEQ)\n"
        "frac_prevs = numerical(Aggregate(prevs, bools, default=0))   # lib.make_frac_prevs",
        ("w", "x", "y", "z"), 0.001,
        "tracr proportion: the fraction of \"x\" so far, 50 strings over {w, x, y, z} after BOS "
        "(zero ablation, L2)",
        "m0 computes `tokens == \"x\"` as a number (1 or 0). a1.h0 attends from each position to "
        "itself and every earlier one (query and key: the positions; `Select(indices, indices, "
        "LEQ)`) and averages m0's output (value), which is the fraction of x so far, written to "
        "the one output direction. a0.h0 and m1 are empty."),
}


# --------------------------------------------------------------------------- compiling


def compile_program(name: str):
    """The compiled model and the program's output SOp."""
    from tracr.compiler import compiling, lib
    from tracr.rasp import rasp

    if name == "reverse":
        program = lib.make_reverse(rasp.tokens)
    else:
        program = lib.make_frac_prevs(rasp.tokens == "x")
    compiled = compiling.compile_rasp_to_model(program, vocab=set(PROGRAMS[name].vocab),
                                               max_seq_len=MAX_SEQ_LEN, compiler_bos=BOS)
    return compiled, program


def output_labels(compiled, program) -> list[str]:
    """The residual labels of the output directions, in the order of the output's values."""
    from tracr.rasp import rasp

    if rasp.is_numerical(program):
        return [program.label]
    encoding = compiled.output_encoder.encoding_map
    values = sorted(encoding, key=encoding.get)
    return [f"{program.label}:{value}" for value in values]


def convert(name: str, compiled, program) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """(config.json's keys, the HookedTransformer state dict, the output labels)."""
    cfg = compiled.model_config
    params = {k: {kk: np.asarray(v, dtype=np.float32) for kk, v in d.items()}
              for k, d in compiled.params.items()}
    n_heads, d_head = cfg.num_heads, cfg.key_size
    W_E = params["token_embed"]["embeddings"]
    W_pos = params["pos_embed"]["embeddings"]
    labels = [str(label) for label in compiled.residual_labels]
    outputs = output_labels(compiled, program)
    missing = [label for label in outputs if label not in labels]
    if missing:
        raise SystemExit(f"output directions {missing} not among the residual labels")
    d_model = W_E.shape[1]
    W_U = np.zeros((d_model, len(outputs)), dtype=np.float32)
    for j, label in enumerate(outputs):
        W_U[labels.index(label), j] = 1.0
    state = {"embed.W_E": W_E, "pos_embed.W_pos": W_pos, "unembed.W_U": W_U,
             "unembed.b_U": np.zeros(len(outputs), dtype=np.float32)}

    def heads_in(w: np.ndarray) -> np.ndarray:  # [m, h*d] -> [h, m, d]
        return w.reshape(d_model, n_heads, d_head).transpose(1, 0, 2)

    for layer in range(cfg.num_layers):
        prefix = f"transformer/layer_{layer}"
        for letter, part in (("Q", "query"), ("K", "key"), ("V", "value")):
            weights = params[f"{prefix}/attn/{part}"]
            state[f"blocks.{layer}.attn.W_{letter}"] = heads_in(weights["w"])
            state[f"blocks.{layer}.attn.b_{letter}"] = weights["b"].reshape(n_heads, d_head)
        linear = params[f"{prefix}/attn/linear"]["w"]
        state[f"blocks.{layer}.attn.W_O"] = linear.reshape(n_heads, d_head, d_model)
        state[f"blocks.{layer}.attn.b_O"] = params[f"{prefix}/attn/linear"]["b"]
        state[f"blocks.{layer}.mlp.W_in"] = params[f"{prefix}/mlp/linear_1"]["w"]
        state[f"blocks.{layer}.mlp.b_in"] = params[f"{prefix}/mlp/linear_1"]["b"]
        state[f"blocks.{layer}.mlp.W_out"] = params[f"{prefix}/mlp/linear_2"]["w"]
        state[f"blocks.{layer}.mlp.b_out"] = params[f"{prefix}/mlp/linear_2"]["b"]
    config = {
        "model_name": f"tracr-{name}",
        "original_architecture": "tracr",
        "n_layers": cfg.num_layers, "n_heads": n_heads, "d_model": d_model, "d_head": d_head,
        "d_mlp": cfg.mlp_hidden_size, "n_ctx": W_pos.shape[0], "d_vocab": W_E.shape[0],
        "d_vocab_out": len(outputs), "act_fn": "relu", "normalization_type": None,
        "attention_dir": "bidirectional" if not cfg.causal else "causal",
        "positional_embedding_type": "standard",
    }
    return config, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, outputs


# --------------------------------------------------------------------------- the data


def fixed_point_free(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n) that moves every element (the corrupted rows)."""
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def task_rows(name: str) -> tuple[list[list], list[list], list[int]]:
    """Clean rows, corrupted rows (tracr's tokens, BOS first) and the metric positions.

    reverse: the 6 permutations of (1, 2, 3); proportion: 50 distinct strings over
    {w, x, y, z} of length 4, drawn without replacement from all 256. Corrupted: the clean rows
    permuted with no fixed point (the authors' construction; every corrupted row is another
    prompt's clean row). The metric is read at every position after BOS.
    """
    rng = np.random.default_rng(SEED)
    if name == "reverse":
        rows = [list(p) for p in itertools.permutations(PROGRAMS[name].vocab)]
    else:
        every = list(itertools.product(PROGRAMS[name].vocab, repeat=PROPORTION_LENGTH))
        rows = [list(every[i]) for i in rng.permutation(len(every))[:N_PROPORTION]]
    perm = fixed_point_free(len(rows), rng)
    clean = [[BOS, *row] for row in rows]
    corrupt = [clean[i] for i in perm]
    return clean, corrupt, list(range(1, len(rows[0]) + 1))


# --------------------------------------------------------------------------- the check


def numpy_forward(config: dict, state: dict[str, np.ndarray],
                  tokens: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """HookedTransformer's arithmetic for this architecture (no norm, ReLU, bidirectional):
    the residual stream after every sublayer, and the logits."""
    x = state["embed.W_E"][tokens] + state["pos_embed.W_pos"][: tokens.shape[1]]
    residuals = []
    scale = np.sqrt(config["d_head"]).astype(np.float32)
    for layer in range(config["n_layers"]):
        p = f"blocks.{layer}."
        q, k, v = (np.einsum("bpm,hmd->bhpd", x, state[p + f"attn.W_{letter}"])
                   + state[p + f"attn.b_{letter}"][None, :, None] for letter in "QKV")
        scores = q @ k.transpose(0, 1, 3, 2) / scale
        if config["attention_dir"] == "causal":
            scores = scores + np.triu(np.full(scores.shape[-2:], -np.inf, np.float32), 1)
        scores = scores - scores.max(-1, keepdims=True)
        pattern = np.exp(scores)
        pattern /= pattern.sum(-1, keepdims=True)
        z = pattern @ v
        x = x + np.einsum("bhpd,hdm->bpm", z, state[p + "attn.W_O"]) + state[p + "attn.b_O"]
        residuals.append(x)
        hidden = np.maximum(x @ state[p + "mlp.W_in"] + state[p + "mlp.b_in"], 0)
        x = x + hidden @ state[p + "mlp.W_out"] + state[p + "mlp.b_out"]
        residuals.append(x)
    return residuals, x @ state["unembed.W_U"] + state["unembed.b_U"]


def tracr_forward(compiled, rows: list[list]) -> tuple[list[np.ndarray], np.ndarray, list]:
    """tracr's own forward of every row: residual after every sublayer [n_sub, B, P, D], its
    output [B, P, d_vocab_out] (read out of the residual as tracr's unembedding does, before
    any argmax) and the decoded outputs."""
    residuals, decoded = [], []
    for row in rows:
        out = compiled.apply(row)
        residuals.append(np.stack([np.asarray(r[0], dtype=np.float32) for r in out.residuals]))
        decoded.append(out.decoded)
    residuals = np.stack(residuals, axis=1)  # [n_sub, B, P, D]
    return list(residuals), residuals[-1], decoded


def check(name: str, compiled, config: dict, state: dict[str, np.ndarray],
          rows: list[list], outputs: list[str]) -> dict:
    """The converted weights against tracr's forward on `rows`: max abs differences."""
    labels = [str(label) for label in compiled.residual_labels]
    tokens = np.array([compiled.input_encoder.encode(row) for row in rows])
    tracr_residuals, final, decoded = tracr_forward(compiled, rows)
    tracr_out = final[..., [labels.index(label) for label in outputs]]  # tracr's own read-out
    ours_residuals, logits = numpy_forward(config, state, tokens)
    residual_diff = max(float(np.abs(a - b).max())
                        for a, b in zip(tracr_residuals, ours_residuals, strict=True))
    output_diff = float(np.abs(tracr_out - logits).max())
    # tracr's decoded output (argmax for a categorical output) from ours, after BOS
    if len(outputs) > 1:
        values = [label.split(":", 1)[1] for label in outputs]
        ours_decoded = [[values[i] for i in row[1:]] for row in logits.argmax(-1)]
        same = all([str(v) for v in d[1:]] == o
                   for d, o in zip(decoded, ours_decoded, strict=True))
    else:
        same = all(np.allclose(np.asarray(d[1:], dtype=np.float32), o[1:, 0], atol=0)
                   for d, o in zip(decoded, logits, strict=True))
    return {"prompts": len(rows), "residual_max_abs_diff": residual_diff,
            "output_max_abs_diff": output_diff, "decoded_equal": bool(same),
            "tokens": tokens.tolist(), "tracr_output": tracr_out.tolist(),
            "tracr_residuals": np.stack(tracr_residuals).tolist()}


# --------------------------------------------------------------------------- writing


def write_safetensors(path: Path, state: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(state, str(path))


# edge pruning's defaults on the tracr tasks (measured: README, "Edge pruning")
EDGE_PRUNING_DEFAULTS = ("{lr: 0.03, reg_lr: 0.001, steps: 8000, sparsity_warmup: 0.625, "
                         "lr_warmup: 0.1875, quadratic_only: true}")


def yaml_rows(rows: list[list[int]]) -> str:
    return "[" + ", ".join(str(t) for t in rows) + "]"


def write_task(name: str, program: Program, compiled, clean, corrupt, positions) -> Path:
    encode = compiled.input_encoder.encode
    lines = [
        "# Generated by scripts/build_tracr.py (tracr-pypi 1.0.0); do not edit by hand.",
        f"# The ACDC paper's tracr {name} task (shared/EVALUATION.md section 7): token ids of the",
        f"# compiled model's vocabulary ({vocab_line(compiled)}),",
        "# each prompt shown as text above it. Corrupted rows: the clean rows permuted with no",
        f"# fixed point (seed {SEED}). The output is read at every position after BOS.",
        f"name: tracr-{name}",
        f"description: {json.dumps(program.description)}",
        f"model: ../models/tracr-{name}",
        "metric: l2",
        f"threshold: {program.threshold}",
        "ablation: zero",
        "seed: 0",
        "# Edge pruning's settings for these small graphs (README, \"Edge pruning\"): a slow",
        "# schedule and the quadratic penalty alone; the GPT-2 defaults close needed edges.",
        "method_defaults:",
        f"  edge-pruning: {EDGE_PRUNING_DEFAULTS}",
        f"positions: {yaml_rows(positions)}",
        "prompts:",
    ]
    for c, k in zip(clean, corrupt, strict=True):
        lines.append(f"  # {' '.join(map(str, c))}  /  corrupted: {' '.join(map(str, k))}")
        lines.append(f"  - clean: {yaml_rows(encode(c))}")
        lines.append(f"    corrupt: {yaml_rows(encode(k))}")
    path = ROOT / "tasks" / f"tracr_{name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def vocab_line(compiled) -> str:
    mapping = compiled.input_encoder.encoding_map
    return ", ".join(f"{token} = {i}" for token, i in sorted(mapping.items(), key=lambda kv: kv[1]))


def card(name: str, program: Program, compiled, config: dict, outputs: list[str],
         checks: dict, n_params: int) -> str:
    import textwrap

    import jax

    labels = [str(label) for label in compiled.residual_labels]
    out_dims = ", ".join(f"{label} (dimension {labels.index(label)})" for label in outputs)

    def wrap(text: str) -> list[str]:
        return textwrap.wrap(text, 96, break_on_hyphens=False)

    canonical = (ROOT / "acdc" / "evaluation" / "canonical" / f"tracr-{name}.txt")
    edges = [line for line in canonical.read_text().splitlines()
             if line and not line.startswith("#")] if canonical.is_file() else []
    vocab = ", ".join(map(repr, program.vocab))
    lines = [
        f"# `tracr-{name}`: the ACDC paper's tracr model that computes \"{program.title}\"",
        "",
        "A transformer compiled, not trained: tracr (Lindner et al. 2023) turns the RASP program",
        "below into weights, so what every head and MLP does is known by construction. It is the",
        "ground truth of the ACDC paper (section 4): ACDC with zero ablation should recover the",
        f"circuit in `acdc/evaluation/canonical/tracr-{name}.txt` exactly (`circuit compare",
        f"--reference tracr-{name}`). Task: `tasks/tracr_{name}.yaml`.",
        "",
        "```",
        program.rasp,
        "```",
        "",
        f"Compiled with `compile_rasp_to_model(program, vocab={{{vocab}}}, "
        f"max_seq_len={MAX_SEQ_LEN},",
        f"compiler_bos=\"{BOS}\")` (tracr-pypi 1.0.0, jax {jax.__version__}).",
        "",
        "## Architecture",
        "",
        *wrap(f"{config['n_layers']} layers, {config['n_heads']} head per layer, d_model "
              f"{config['d_model']}, d_head {config['d_head']}, ReLU MLPs of width "
              f"{config['d_mlp']}, "
              f"no LayerNorm, **bidirectional** attention (`attention_dir: bidirectional`), "
              f"positions 0-{config['n_ctx'] - 1} (position 0 is BOS), {n_params:,} parameters. "
              f"Layers the program does not use have all-zero weights (tracr's compiler places "
              f"each RASP operation in a fixed layer)."),
        "",
        *wrap(f"Vocabulary (token ids): {vocab_line(compiled)}. The tasks give token ids: this "
              f"model has no tokenizer. Every prompt starts with BOS and all have the same length "
              f"(tracr's pad token is not masked, and the engine refuses prompts of different "
              f"lengths on a bidirectional model)."),
        "",
        *wrap(f"Output: {len(outputs)} logit(s), read from the residual stream by tracr's labels: "
              f"{out_dims}. The unembedding is 1 at those dimensions and 0 elsewhere, so the "
              f"logits are exactly tracr's output"
              + (" (the argmax is the output token)." if len(outputs) > 1
                 else " (the fraction itself, not a distribution).")),
        "",
        "## What each component computes, and the circuit",
        "",
        *wrap(program.components),
        "",
        *wrap(f"The canonical circuit (`--reference tracr-{name}`, {len(edges)} edges): "
              + ", ".join(f"`{e}`" for e in edges) + "."),
        "",
        *wrap(f"`circuit discover --task tracr-{name}` (zero ablation, metric `l2`, threshold "
              f"{program.threshold:g}) returns exactly this circuit, and so does every threshold "
              f"from 1e-6 to 0.1 (tests/test_tracr.py runs 1e-5, 1e-4, 1e-3 and 1e-2 and builds "
              f"their ROC: area 1). With corrupt ablation ACDC keeps a part of it: the corrupted "
              f"prompts are permutations of the clean ones, so what they share (the length, the "
              f"positions) needs no edge."),
        "",
        "Residual stream, dimension by dimension:",
        "",
        "    " + ", ".join(f"{i} {label}" for i, label in enumerate(labels)),
        "",
        "## Conversion check",
        "",
        *wrap(f"Every clean and corrupted prompt of the task ({checks['numpy']['prompts']} "
              "sequences) through tracr's own forward and through the converted weights; maximum "
              "absolute differences of the residual stream after every attention and MLP "
              "sublayer, and of the output:"),
        "",
        "| converted model run by | residuals | output | decoded outputs equal |",
        "|---|---|---|---|",
        f"| numpy transcription of HookedTransformer (`scripts/build_tracr.py`) | "
        f"{checks['numpy']['residual_max_abs_diff']:.3g} | "
        f"{checks['numpy']['output_max_abs_diff']:.3g} | "
        f"{'yes' if checks['numpy']['decoded_equal'] else 'NO'} |",
    ]
    if "project" in checks:
        p = checks["project"]
        lines += [
            f"| TransformerLens `HookedTransformer` (this project's loader) | "
            f"{p['transformer_lens_residual_max_abs_diff']:.3g} | "
            f"{p['transformer_lens_output_max_abs_diff']:.3g} | - |",
            f"| this project's forward (`acdc.core.forward.full_forward`) | - | "
            f"{p['full_forward_output_max_abs_diff']:.3g} | - |",
            f"| the patched forward, every edge kept (`PatchedModel`) | - | "
            f"{p['patched_output_max_abs_diff']:.3g} | - |",
        ]
    lines += [
        "",
        "## Rebuilding",
        "",
        "    python3 -m venv /tmp/tracr-venv",
        "    /tmp/tracr-venv/bin/pip install tracr-pypi==1.0.0 numpy safetensors",
        "    /tmp/tracr-venv/bin/python scripts/build_tracr.py --check-with .venv/bin/python",
        "",
        "jax and tracr are needed only for this; the checkpoint is plain safetensors.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the project side


def compare(model_dir: Path, reference: Path) -> dict:
    """Run by the project's interpreter: the bundled checkpoint, loaded as every run loads it,
    against tracr's outputs saved by the build."""
    import torch

    from acdc.core.forward import full_forward
    from acdc.core.graph import build_graph
    from acdc.core.loading import load_model
    from acdc.core.models import load_hooked
    from acdc.core.patching import PatchedModel

    data = json.loads(reference.read_text())
    tokens = torch.tensor(data["tokens"])
    expected = torch.tensor(data["tracr_output"])
    expected_residuals = torch.tensor(data["tracr_residuals"])
    loaded = load_model(str(model_dir))
    model, _ = load_hooked(str(model_dir))  # TransformerLens' own model of the checkpoint
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens)
        residuals = []
        for layer in range(model.cfg.n_layers):
            residuals += [cache[f"blocks.{layer}.hook_resid_mid"],
                          cache[f"blocks.{layer}.hook_resid_post"]]
        weights = loaded.weights
        ours, _ = full_forward(weights, tokens)
        graph = build_graph(loaded.shape.graph_shape())
        batch, n_pos = tokens.shape
        pos_batch = torch.arange(batch).repeat_interleave(n_pos)
        pos_index = torch.arange(n_pos).repeat(batch)
        patched = PatchedModel(weights, graph, tokens, tokens, pos_batch, pos_index, "zero")
        patched_logits = patched.clean_logits.view(batch, n_pos, -1)
    return {
        "transformer_lens_residual_max_abs_diff":
            float((torch.stack(residuals) - expected_residuals).abs().max()),
        "transformer_lens_output_max_abs_diff": float((logits - expected).abs().max()),
        "full_forward_output_max_abs_diff": float((ours - expected).abs().max()),
        "patched_output_max_abs_diff": float((patched_logits - expected).abs().max()),
    }


# --------------------------------------------------------------------------- main


def build(name: str, check_with: str | None) -> dict:
    program = PROGRAMS[name]
    compiled, rasp_program = compile_program(name)
    config, state, outputs = convert(name, compiled, rasp_program)
    clean, corrupt, positions = task_rows(name)
    rows = clean + corrupt
    numpy_check = check(name, compiled, config, state, rows, outputs)
    checks = {"numpy": numpy_check}
    directory = ROOT / "models" / f"tracr-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_safetensors(directory / "model.safetensors", state)
    if check_with:
        with tempfile.TemporaryDirectory() as tmp:
            reference = Path(tmp) / "tracr.json"
            reference.write_text(json.dumps(numpy_check))
            command = [check_with, __file__, "--compare", str(directory), str(reference)]
            done = subprocess.run(command,
                                  capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            if done.returncode:
                raise SystemExit(f"--check-with {check_with} failed:\n{done.stderr}")
            checks["project"] = json.loads(done.stdout.strip().splitlines()[-1])
    n_params = sum(v.size for v in state.values())
    text = card(name, program, compiled, config, outputs, checks, n_params)
    (directory / "README.md").write_text(text, encoding="utf-8")
    task = write_task(name, program, compiled, clean, corrupt, positions)
    summary = {k: v for k, v in numpy_check.items() if k.endswith(("diff", "equal"))}
    print(f"tracr-{name}: wrote {directory} and {task}; numpy check {summary}"
          + (f"; project check {checks['project']}" if "project" in checks else ""))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-with", metavar="PYTHON",
                        help="also check the checkpoint as this project loads and runs it, with "
                             "this interpreter (one with the project's dependencies)")
    parser.add_argument("--compare", nargs=2, metavar=("MODEL_DIR", "TRACR_JSON"),
                        help=argparse.SUPPRESS)
    parser.add_argument("programs", nargs="*", metavar="PROGRAM",
                        help=f"which to build: {', '.join(PROGRAMS)} (default: both)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.programs if name not in PROGRAMS]
    if unknown:
        parser.error(f"unknown program(s) {', '.join(unknown)}: use {', '.join(PROGRAMS)}")
    if args.compare:
        print(json.dumps(compare(Path(args.compare[0]), Path(args.compare[1]))))
        return 0
    failed = []
    for name in args.programs or list(PROGRAMS):
        checks = build(name, args.check_with)
        numpy_check = checks["numpy"]
        if not numpy_check["decoded_equal"] or numpy_check["output_max_abs_diff"] > 1e-5:
            failed.append(name)
    if failed:
        print(f"conversion check failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
