"""`circuit compare`: circuits side by side, against a reference, and ROC curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acdc.cli.app import app
from acdc.cli.boundary import user_errors
from acdc.cli.display import (
    number,
    table,
)
from acdc.cli.options import NoRenderOption


@app.command()
@user_errors
def compare(
    a: Annotated[Path, typer.Argument(
        metavar="A", help="A circuit.json, a run directory, or a sweep directory (tau-<threshold>/ "
                          "run directories).")],
    b: Annotated[Path | None, typer.Argument(
        metavar="[B]", help="A second circuit, run directory or sweep directory.")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", "-r", metavar="REF",
        help="The circuit to score against: a circuit.json, an edge-list file (one edge a line, "
             "# comments) or a canonical circuit: ioi-gpt2, greater-than-gpt2, tracr-reverse, "
             "tracr-proportion, and at positions ioi-gpt2-positions, "
             "greater-than-gpt2-positions.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output directory. Default: runs/compare-<YYYYmmdd-HHMMSS>/.")] = None,
    no_render: NoRenderOption = False,
) -> None:
    """Compare two circuits (edges and nodes in both / only in one, Jaccard, a drawing of the
    union), score circuits against a reference (TPR, FPR, precision at edge and node level),
    and draw the ROC curve and AUC of a sweep, or of a circuit's ranking (its edge or node
    scores, every cut), against the reference. Circuits at the same position groups compare
    edge by edge at each group, with a part per group; a circuit at positions against a
    position-blind one, or at other groups, is read position-blind (said in the output)."""
    from acdc.evaluation.summary import summarize, write_outputs

    summary = summarize([a] if b is None else [a, b], reference)
    for line in _comparison_lines(summary):
        typer.echo(line)
    written = write_outputs(summary, out, render_svg=not no_render)
    typer.echo("wrote " + ", ".join(str(p) for p in written))



def _comparison_lines(summary) -> list[str]:
    from acdc.evaluation.sources import Sweep
    from acdc.evaluation.summary import RankingScores, SweepScores, describe
    from acdc.exports.dot import circuit_title

    lines = []
    for item in summary.items:
        info = describe(item)
        if isinstance(item.value, Sweep):
            thresholds = info["thresholds"]
            lines.append(f"{item.key} {item.name}: sweep of {len(thresholds)} threshold(s), "
                         f"{min(thresholds):g} to {max(thresholds):g}")
        else:
            level = (" (a node circuit: every edge among its nodes)" if info["level"] == "node"
                     else "")
            lines.append(f"{item.key} {item.name}: {info['edges']} edges, {info['nodes']} nodes"
                         f"{level} ({circuit_title(item.value)})")
    view = summary.view
    if view is not None and view.note is not None:
        lines.append(view.note)
    elif summary.graph.positional:
        lines.append(f"compared edge by edge at {len(summary.graph.groups)} position groups "
                     f"({', '.join(summary.graph.groups)})")
    if summary.pair is not None:
        for level, part in (("edges", summary.pair.edges), ("nodes", summary.pair.nodes)):
            jaccard = "-" if part.jaccard is None else f"{part.jaccard:.3f}"
            lines.append(f"{level}: {len(part.both)} in both, {len(part.only_a)} only in A, "
                         f"{len(part.only_b)} only in B; Jaccard {jaccard}")
        lines += _group_pair_lines(summary.pair)
    if summary.reference is None:
        return lines
    data = summary.comparison_json()
    ref, totals = data["reference"], data["totals"]
    lines.append(f"reference {ref['name']}: {ref['edges']} of {totals['edges']} edges, "
                 f"{ref['nodes']} of {totals['nodes']} nodes")
    header = ("", "edge TPR", "edge FPR", "edge prec", "node TPR", "node FPR", "node prec")
    rows = []
    for item, scores in zip(summary.items, summary.scores, strict=True):
        if isinstance(scores, SweepScores):
            node_auc = "undefined" if scores.node is None else f"{scores.node.auc:.3f}"
            lines.append(f"{item.key} ROC AUC: edges {scores.edge.auc:.3f}, nodes {node_auc} "
                         f"(pessimistic staircase)")
            lines += _group_auc_lines(item.key, scores.groups)
            for run, run_scores in zip(item.value.runs, scores.runs, strict=True):
                rows.append((f"{item.key} tau {run.threshold:g}", *_score_cells(run_scores)))
        elif isinstance(scores, RankingScores):
            node_auc = "undefined" if scores.node is None else f"{scores.node.auc:.3f}"
            lines.append(f"{item.key} ROC AUC of its {scores.ranked} ranking: edges "
                         f"{scores.edge.auc:.3f}, nodes {node_auc} (every cut, pessimistic "
                         f"staircase)")
            lines += _group_auc_lines(item.key, scores.groups)
            rows.append((item.key, *_score_cells(scores.circuit)))
            rows += [(f"{item.key} @{g}", *_score_cells(part))
                     for g, part in scores.circuit.groups.items()]
        else:
            rows.append((item.key, *_score_cells(scores)))
            rows += [(f"{item.key} @{g}", *_score_cells(part))
                     for g, part in scores.groups.items()]
    return lines + table([header, *rows])


def _group_pair_lines(pair) -> list[str]:
    """Two circuits at positions: a row per group, and the groups they agree on."""
    if not pair.groups:
        return []
    rows = [("group", "both", "only A", "only B", "Jaccard")]
    for group, part in pair.groups.items():
        rows.append((group, str(len(part.both)), str(len(part.only_a)), str(len(part.only_b)),
                     "-" if part.jaccard is None else f"{part.jaccard:.3f}"))
    agree = ", ".join(pair.agree) if pair.agree else "none"
    return [*table(rows), f"the same edges at: {agree}"]


def _group_auc_lines(key: str, groups) -> list[str]:
    """A sweep's or ranking's edge AUC at each position group (undefined where the reference
    has no edge, or every edge, at that group)."""
    if not groups:
        return []
    parts = [f"{g} {'undefined' if roc.edge is None else f'{roc.edge.auc:.3f}'}"
             for g, roc in groups.items()]
    return [f"{key} edge ROC AUC by position group: {', '.join(parts)}"]


def _score_cells(scores) -> tuple[str, ...]:
    return tuple(number(getattr(getattr(scores, level), what))
                 for level in ("edge", "node") for what in ("tpr", "fpr", "precision"))


