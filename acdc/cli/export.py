"""The ways out of a saved circuit: `circuit render` (DOT, SVG, PNG) and `circuit export`
(MIB, GraphML, CSV)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from acdc.cli.app import app
from acdc.cli.boundary import user_errors
from acdc.cli.options import NoScoreWidthOption, RenderFormat


@app.command()
@user_errors
def render(
    circuit_json: Annotated[
        Path,
        typer.Argument(help="A circuit.json written by `circuit discover`."),
    ],
    format: Annotated[
        RenderFormat,
        typer.Option("--format", "-f", help="Output format; svg and png need Graphviz `dot`."),
    ] = RenderFormat.svg,
    out: Annotated[
        Path | None,
        typer.Option(help="Output file. Default: next to the JSON, with the format's suffix."),
    ] = None,
    all_edges: Annotated[
        bool,
        typer.Option("--all-edges", help="Draw removed edges too (light grey, dotted)."),
    ] = False,
    no_score_width: NoScoreWidthOption = False,
) -> None:
    """Re-draw a saved circuit (circuit.json or a MIB circuit file) as SVG, PNG or DOT
    (without the model)."""
    from acdc.core.circuit import load_circuit
    from acdc.core.files import check_output, new_directories
    from acdc.exports.dot import circuit_title, to_dot
    from acdc.exports.dot import render as render_dot

    file_format = RenderFormat(format).value
    circuit = load_circuit(circuit_json)
    source = to_dot(circuit, all_edges=all_edges, title=circuit_title(circuit),
                    score_width=not no_score_width)
    target = out if out is not None else circuit_json.with_suffix(f".{file_format}")
    check_output(target, "--out" if out is not None else "", [circuit_json])
    with new_directories(target.parent):
        written = render_dot(source, target, file_format)
    typer.echo(f"wrote {written} ({_node_words(circuit)}{circuit.size()} kept)")


# --------------------------------------------------------------------------- export


MAX_D_MODEL = 1 << 20  # far above any model's residual width (GPT-3: 12,288)


class ExportFormat(str, Enum):
    mib = "mib"
    graphml = "graphml"
    csv = "csv"


@app.command()
@user_errors
def export(
    target: Annotated[Path, typer.Argument(
        metavar="RUN_DIR_OR_CIRCUIT_JSON",
        help="A run directory written by `circuit discover`, a circuit.json or a MIB circuit "
             "file.")],
    format: Annotated[ExportFormat, typer.Option(
        "--format", "-f", help="mib: the MIB circuit track's JSON (residual edges, score and "
                               "in_graph); graphml: the graph with kept flags and scores "
                               "(networkx); csv: one row per edge.")],
    out: Annotated[Path | None, typer.Option(
        help="File to write. Default: beside the circuit, <stem>.mib.json, .graphml or "
             ".csv.")] = None,
    d_model: Annotated[int | None, typer.Option(
        min=1, max=MAX_D_MODEL,
        help="mib: the model's d_model. Default: from the run's model configuration (run.yaml "
             "beside the circuit, else the circuit's model).")] = None,
    blind: Annotated[bool, typer.Option(
        "--blind", help="A circuit at positions: write its projection onto the position-blind "
                        "graph (an edge kept at any group is kept, its score the sum over the "
                        "groups), the only way to a MIB file. Default out: <stem>.blind.<suffix>."
    )] = False,
) -> None:
    """Export a circuit for other tools: a MIB circuit file, GraphML or CSV (a circuit at
    positions: an edge per group, with its position; MIB only as its --blind projection)."""
    from acdc.exports.formats import describe_groups, export_circuit

    written, circuit = export_circuit(target, ExportFormat(format).value, out, d_model, blind)
    if ExportFormat(format) is ExportFormat.mib:  # counted as the file (and MIB) counts them
        from acdc.core.mib import mib_edge_counts

        kept, total = mib_edge_counts(circuit)
        size = f"{kept} of {total} edges in_graph: MIB counts the residual edges only"
    else:
        size = f"{circuit.size()} kept"
    if circuit.graph.positional:
        size += f" at {describe_groups(circuit.graph)}"
    elif blind:
        size += (f"; the blind projection of a circuit at {circuit.settings['projected_from']}: "
                 f"an edge kept at any group is kept, its score the sum over the groups")
    typer.echo(f"wrote {written} ({_node_words(circuit)}{size})")


def _node_words(circuit) -> str:
    """`node circuit: 3 of 6 heads and MLPs, ` for a node circuit, else nothing."""
    if circuit.level != "node":
        return ""
    from acdc.core.selection import kept_nodes, scored_nodes

    graph = circuit.graph
    return (f"node circuit: {len(kept_nodes(graph, circuit.kept))} of "
            f"{len(scored_nodes(graph))} heads and MLPs, ")


