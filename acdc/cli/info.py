"""Commands that describe without running: `graph`, `tasks`, `metrics`, `methods`."""

from __future__ import annotations

from typing import Annotated

import typer

from acdc.cli.app import app
from acdc.cli.boundary import user_errors
from acdc.cli.display import (
    byte_size,
    count_words,
    short_model,
    table,
)
from acdc.cli.options import GRANULARITY_HELP, Granularity


@app.command()
@user_errors
def graph(
    model: Annotated[
        str,
        typer.Option(
            help="Checkpoint directory (config.json is enough), local Hugging Face directory or "
                 "TransformerLens model name."
        ),
    ],
    granularity: Annotated[Granularity, typer.Option(help=GRANULARITY_HELP)] = Granularity.qkv,
    batch: Annotated[
        int,
        typer.Option(min=1, help="Prompts per run, for the memory estimate."),
    ] = 50,
    seq_len: Annotated[
        int,
        typer.Option(min=1, help="Tokens per prompt, for the memory estimate."),
    ] = 32,
    positions: Annotated[
        int,
        typer.Option(min=0, metavar="N", help="Position groups: every edge once per group, as "
                                              "`circuit discover --positions` makes them (a "
                                              "task's labels and `other`: 6 for ioi; a group "
                                              "per token for `all`). 0: position-blind."),
    ] = 0,
) -> None:
    """Node and edge counts of a model's graph and a memory estimate for a run; reads no weights.

    A checkpoint or a local Hugging Face directory is read from its config.json alone (Hugging
    Face families: GPT-2, GPT-NeoX/Pythia, GPT-J, Llama, Mistral, Qwen2, Gemma, Gemma 2, OPT,
    GPT-Neo), without torch. In a parallel block (GPT-NeoX, GPT-J) an MLP does not read its
    own layer's heads; under grouped-query attention every query head keeps its own q, k and
    v input, so the counts are those of the MIB graph.

    The memory estimate (fp32, corrupt ablation) adds up what a run allocates: parameters;
    2 x senders x batch x seq_len x d_model (every sender's output delta and ablated value);
    2 x 3 x layers x query heads x batch x seq_len x d_head (committed and ablated q/k/v); cached
    receiver inputs (at most 256 MiB); the unembedding (head-to-vocabulary factors of at most
    256 MiB, logits at one position per prompt); and the largest per-layer
    temporaries. The Python runtime and libraries (about 0.5-1 GB) come on top. With
    --positions N, every edge is counted once per group and the estimate adds the masks' group
    axis and where each receiver of a layer reads each sender.
    """
    from acdc.core.graph import GraphShape, count_edges
    from acdc.core.shapes import load_shape
    from acdc.methods.acdc.memory import estimate_memory

    chosen = Granularity(granularity).value
    shape = load_shape(model)
    blind = shape.graph_shape(chosen)
    graph_shape = blind if not positions else GraphShape(
        blind.n_layers, blind.n_heads, blind.has_mlp, blind.granularity,
        blind.parallel_attn_mlp, "all", tuple(str(i) for i in range(positions)))
    counts = count_edges(graph_shape)
    estimate = estimate_memory(shape, counts["senders"], batch, seq_len, n_groups=positions)
    heads = f"{shape.n_heads} heads"
    if shape.n_key_value_heads:
        heads = f"{shape.n_heads} query heads, {shape.n_key_value_heads} key/value heads"
    mlp = "attention only"
    if shape.has_mlp:
        mlp = f"{'gated ' if shape.mlp_kind == 'gated' else ''}d_mlp {shape.d_mlp}"
    family = f" ({shape.architecture})" if shape.architecture else ""
    typer.echo(f"model {model}{family}: {shape.n_layers} layers, {heads}, d_model "
               f"{shape.d_model}, d_head {shape.d_head}, {mlp}, vocab {shape.d_vocab}, "
               f"n_ctx {shape.n_ctx}")
    if shape.features:
        typer.echo(f"architecture: {'; '.join(shape.features)}")
    total = shape.n_params_total
    rest = ("the embeddings, unembedding, biases and norms" if shape.n_params_all is not None
            else "the embeddings and unembedding")
    zoo = "" if shape.architecture else " (the count `circuit zoo eval` gives)"
    typer.echo(f"parameters: about {count_words(total)} in all ({byte_size(4 * total)} in fp32): "
               f"{count_words(shape.n_params)} in the blocks' weight matrices{zoo} and "
               f"{count_words(total - shape.n_params)} in {rest}")
    typer.echo(f"graph ({chosen}): {counts['nodes']} nodes ({counts['senders']} senders: "
               f"1 input, "
               f"{counts['heads']} heads, {counts['mlps']} MLPs; {counts['receivers']} receivers)")
    if shape.parallel_attn_mlp and shape.has_mlp:
        typer.echo("parallel blocks: an MLP reads what its layer's heads read, not those heads")
    at = (f" ({count_edges(blind)['edges']:,} blind edges at {positions} position groups)"
          if positions else "")
    typer.echo(f"edges: {counts['edges']:,} = {counts['residual']:,} residual + "
               f"{counts['direct']:,} direct{at}")
    for kind, n in counts["by_receiver"].items():
        typer.echo(f"  into {kind}: {n:,}")
    typer.echo(f"memory estimate for a run (batch {batch}, {seq_len} tokens, fp32): about "
               f"{byte_size(estimate['total'])} = parameters {byte_size(estimate['params'])} + "
               f"sender caches {byte_size(estimate['caches'])} + q/k/v caches "
               f"{byte_size(estimate['qkv'])} + "
               f"receiver inputs {byte_size(estimate['inputs'])} + unembedding "
               f"{byte_size(estimate['unembedding'])} + temporaries "
               f"{byte_size(estimate['temporaries'])}"
               + (f" + positions {byte_size(estimate['positions'])}" if positions else "")
               + ", plus the Python runtime")




@app.command()
@user_errors
def tasks() -> None:
    """List the bundled tasks: name, metric, threshold, default model, description."""
    from acdc.core.tasks.reading import list_tasks

    specs = list_tasks()
    if not specs:
        typer.echo("no bundled tasks found")
        return
    rows = [(s.name, s.metric, "-" if s.threshold is None else f"{s.threshold:g}",
             short_model(s.model), s.description) for s in specs]
    header = ("NAME", "METRIC", "THRESHOLD", "MODEL", "DESCRIPTION")
    for line in table([header, *rows], last_free=True):
        typer.echo(line)


@app.command()
@user_errors
def metrics() -> None:
    """List the metrics a run can minimise: name, what it reads besides the circuit's logits
    (the clean model's logits, the task's answers, or the next token), direction, meaning."""
    from acdc.core.settings import METRIC_INPUTS, METRICS

    rows = [(name, METRIC_INPUTS[name], "lower is better", text) for name, text in METRICS.items()]
    header = ("NAME", "READS", "DIRECTION", "DESCRIPTION")
    for line in table([header, *rows], last_free=True):
        typer.echo(line)


@app.command()
@user_errors
def methods(cite: Annotated[bool, typer.Option(
        "--cite", help="Print each method's paper, to cite it.")] = False) -> None:
    """List the discovery methods: name, what a method returns (a circuit, or edge or node
    scores that --top-n, --edges-fraction or --threshold cut), its options, what it is."""
    import dataclasses as dc

    from acdc.core.settings import option_flag
    from acdc.methods.registry import METHODS

    if cite:
        for name, method in METHODS.items():
            typer.echo(f"{name}: {method.citation or '(no paper)'}")
        return
    returns = {"kept": "circuit", "edges": "edge scores", "nodes": "node scores"}
    rows = [(name, returns[m.returns],
             " ".join(option_flag(f) for f in dc.fields(m.settings_type)) or "-", m.description)
            for name, m in METHODS.items()]
    header = ("NAME", "RETURNS", "OPTIONS", "DESCRIPTION")
    for line in table([header, *rows], last_free=True):
        typer.echo(line)


