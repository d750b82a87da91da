"""The `circuit compare` job: read the inputs, compare and score them, write the results.

`summarize` takes one or two inputs (circuits, run directories or sweep directories, see
`acdc.evaluation.sources`) and an optional reference, and returns a `CompareSummary`:

- two circuits: edges and nodes in both / only in A / only in B and Jaccard (`pair`);
- with a reference, every circuit's TPR, FPR and precision at edge and node level, and every
  sweep's ROC curve and pessimistic AUC at both levels (`scores`);
- with a reference, the ROC of a circuit's ranking at both levels: its per-node scores (a node
  circuit: HISP) or else its per-edge scores (EAP, exact patching, an ACDC run's test scores,
  a MIB file's), every cut of the ranking (`acdc.evaluation.roc.ranking_roc`).

Circuits at positions (`--positions`) over the same groups compare positional edge by edge,
and every measure is also given per position group (the edges at that group: Jaccard and
whether the two agree; TPR, FPR, precision; each sweep's and ranking's ROC). When the inputs and
the reference are not all at the same groups (a positional run against a position-blind
reference, `labels` against `all`), the positional ones are read position-blind
(`acdc.evaluation.projection`), and the summary says so (`view.note`).

`write_outputs` writes what was computed into a directory: `comparison.json` (the inputs, the
pair, the reference and every circuit's scores), `union.dot`/`union.svg` (two circuits, or one
circuit against its reference, drawn together by `acdc.exports.union`), and for sweeps and
rankings `roc.json`, `roc.svg` and, when matplotlib is installed, `roc.png`.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from acdc.core.circuit import Circuit
from acdc.core.files import output_directory, write_text_atomic
from acdc.core.graph import Graph, GraphShape
from acdc.errors import GraphError, RunWarning
from acdc.evaluation.canonical import CANONICAL_NAMES
from acdc.evaluation.compare import (
    LEVELS,
    CircuitComparison,
    Confusion,
    Level,
    check_same_graph,
    compare_circuits,
    confusion,
    group_confusions,
    kept_nodes,
    node_names,
)
from acdc.evaluation.projection import (
    View,
    at_group,
    blind_graph,
    common_view,
    project,
    project_kept,
)
from acdc.evaluation.roc import RocCurve, ranking_roc, sweep_roc
from acdc.evaluation.sources import Reference, Sweep, SweepRun, load_input, load_reference

COMPARISON_FORMAT = "circuit-comparison/1"
ROC_FORMAT = "circuit-roc/1"
LABELS = ("A", "B")


@dataclass(frozen=True)
class Item:
    """One input as the user named it: a circuit or a sweep."""

    key: str  # "A" or "B"
    name: str
    value: Circuit | Sweep
    projected_from: GraphShape | None = None  # its positional shape, when read blind

    @property
    def graph(self) -> Graph:
        return self.value.graph


@dataclass(frozen=True)
class Scores:
    """A circuit against the reference, at edge and node level; at positions, also at each
    position group (`groups`)."""

    edge: Confusion
    node: Confusion
    groups: Mapping[str, Scores] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"edge": self.edge.to_json(), "node": self.node.to_json()}
        if self.groups:
            data["groups"] = {g: part.to_json() for g, part in self.groups.items()}
        return data


@dataclass(frozen=True)
class GroupRoc:
    """A sweep's or ranking's ROC restricted to the edges at one position group; a level is
    None where the reference has no edge, or every edge (node), at that group."""

    edge: RocCurve | None
    node: RocCurve | None

    def to_json(self) -> dict[str, Any]:
        return {"auc": {"edge": self.edge.auc if self.edge else None,
                        "node": self.node.auc if self.node else None},
                "edge": self.edge.to_json() if self.edge else None,
                "node": self.node.to_json() if self.node else None}


@dataclass(frozen=True)
class SweepScores:
    """A sweep against the reference: every run's scores and the ROC curve at both levels."""

    runs: tuple[Scores, ...]
    edge: RocCurve
    node: RocCurve | None  # None when the reference touches every node
    groups: Mapping[str, GroupRoc] = field(default_factory=dict)


@dataclass(frozen=True)
class RankingScores:
    """A circuit with scores against the reference: the circuit's own scores, and the ROC of
    its ranking (`ranked`: of its edges or its nodes) at both levels."""

    circuit: Scores
    ranked: str
    edge: RocCurve
    node: RocCurve | None  # None when the reference touches every node
    groups: Mapping[str, GroupRoc] = field(default_factory=dict)

    @property
    def n_cuts(self) -> int:
        return len(self.edge.points)

    def to_json(self) -> dict[str, Any]:
        return {**self.circuit.to_json(), "roc": "roc.json"}


Scored = Scores | SweepScores | RankingScores | None


@dataclass(frozen=True)
class CompareSummary:
    items: tuple[Item, ...]
    graph: Graph
    pair: CircuitComparison | None
    reference: Reference | None
    scores: tuple[Scored, ...]
    view: View | None = None

    @property
    def has_sweep(self) -> bool:
        return any(isinstance(item.value, Sweep) for item in self.items)

    @property
    def has_roc(self) -> bool:
        """A sweep's or a ranking's ROC was computed (roc.json and its plot are written)."""
        return any(isinstance(s, (SweepScores, RankingScores)) for s in self.scores)

    def comparison_json(self) -> dict[str, Any]:
        """The `comparison.json` dictionary."""
        data: dict[str, Any] = {"format": COMPARISON_FORMAT,
                                "inputs": {item.key: describe(item) for item in self.items},
                                "totals": totals(self.graph)}
        positions = self.positions_json()
        if positions:
            data["positions"] = positions
        if self.pair is not None:
            data.update(self.pair.to_json())
        if self.reference is not None:
            data["reference"] = describe_reference(self.reference, self.graph)
            data["scores"] = {item.key: scores.to_json()
                              if isinstance(scores, (Scores, RankingScores))
                              else {"roc": "roc.json"}
                              for item, scores in zip(self.items, self.scores, strict=True)}
        return data

    def positions_json(self) -> dict[str, Any]:
        """How positions were compared: the groups compared at (empty when position-blind),
        and what was projected; empty when nothing was at positions."""
        view = self.view
        if view is None or (not self.graph.positional and not view.projected):
            return {}
        return {"mode": self.graph.shape.positions, "groups": list(self.graph.groups),
                "projected": list(view.projected), "note": view.note}

    def roc_json(self) -> dict[str, Any]:
        """The `roc.json` dictionary: every sweep's and every ranking's curves."""
        assert self.reference is not None
        sweeps, rankings = [], []
        for item, scores in zip(self.items, self.scores, strict=True):
            if isinstance(scores, RankingScores):
                assert isinstance(item.value, Circuit)
                rankings.append({
                    "key": item.key, "name": item.name, "ranked": scores.ranked,
                    "units": _n_units(item.value, scores.ranked),
                    "auc": {"edge": scores.edge.auc,
                            "node": scores.node.auc if scores.node else None},
                    "edge": scores.edge.to_json(),
                    "node": scores.node.to_json() if scores.node else None,
                    **_groups_json(scores.groups),
                    "circuit": scores.circuit.to_json()})
                continue
            if not isinstance(scores, SweepScores):
                continue
            sweep = item.value
            assert isinstance(sweep, Sweep)
            runs = [{"threshold": run.threshold, "path": str(run.path),
                     "edges": run.circuit.n_edges_kept,
                     "nodes": sum(kept_nodes(run.circuit.graph, run.circuit.kept)),
                     **run_scores.to_json()}
                    for run, run_scores in zip(sweep.runs, scores.runs, strict=True)]
            sweeps.append({"key": item.key, "name": item.name, "path": str(sweep.path),
                           "auc": {"edge": scores.edge.auc,
                                   "node": scores.node.auc if scores.node else None},
                           "edge": scores.edge.to_json(),
                           "node": scores.node.to_json() if scores.node else None,
                           **_groups_json(scores.groups),
                           "runs": runs})
        return {"format": ROC_FORMAT,
                "reference": describe_reference(self.reference, self.graph),
                "totals": totals(self.graph), "sweeps": sweeps, "rankings": rankings}


def _groups_json(groups: Mapping[str, GroupRoc]) -> dict[str, Any]:
    return {"groups": {g: roc.to_json() for g, roc in groups.items()}} if groups else {}


def _n_units(circuit: Circuit, ranked: str) -> int:
    """How many units a circuit's ranking orders: scored heads and MLPs, or residual edges."""
    if ranked == "node":
        return sum(1 for s in (circuit.node_scores or {}).values() if s is not None)
    return sum(1 for e in circuit.graph.edges
               if e.kind == "residual" and circuit.scores[e.index] is not None)


def circuit_ranking(circuit: Circuit) -> str | None:
    """What a circuit ranks: `node` (it has node scores), `edge` (some edge has a score), or
    None."""
    if circuit.node_scores is not None:
        return "node"
    if any(score is not None for score in circuit.scores):
        return "edge"
    return None


def totals(graph: Graph) -> dict[str, int]:
    return {"edges": len(graph.edges), "nodes": len(node_names(graph))}


def describe(item: Item) -> dict[str, Any]:
    """An input in comparison.json: what it is and its size."""
    value = item.value
    shape = item.graph.shape
    data: dict[str, Any] = {"name": item.name, "n_layers": shape.n_layers,
                            "n_heads": shape.n_heads, "has_mlp": shape.has_mlp,
                            "granularity": shape.granularity}
    own = item.projected_from or shape
    if own.positions != "none":
        data.update(positions=own.positions, groups=list(own.groups),
                    projected=item.projected_from is not None)
    if isinstance(value, Sweep):
        data.update(kind="sweep", path=str(value.path),
                    thresholds=[run.threshold for run in value.runs])
        return data
    settings = value.settings
    data.update(kind="circuit", **{key: settings.get(key) for key in
                                   ("task", "model", "method", "threshold", "metric",
                                    "ablation")},
                level=value.level, edges=value.n_edges_kept,
                nodes=sum(kept_nodes(value.graph, value.kept)), partial=value.partial)
    return data


def describe_reference(reference: Reference, graph: Graph) -> dict[str, Any]:
    return {"name": reference.name, "edges": sum(reference.kept),
            "nodes": sum(kept_nodes(graph, reference.kept))}


def project_item(item: Item) -> Item:
    """`item` read position-blind (every run of a sweep); a blind one as it is."""
    if not item.graph.positional:
        return item
    value = item.value
    if isinstance(value, Sweep):
        value = Sweep(value.path, tuple(SweepRun(run.threshold, run.path, project(run.circuit))
                                        for run in value.runs))
    else:
        value = project(value)
    return Item(item.key, item.name, value, item.graph.shape)


def project_reference(reference: Reference) -> Reference:
    """`reference` read position-blind; a blind one as it is."""
    graph = reference.graph
    if not graph.positional:
        return reference
    return replace(reference, kept=project_kept(reference.kept, graph), graph=blind_graph(graph))


def summarize(inputs: Sequence[str | Path], reference: str | None = None) -> CompareSummary:
    """Compare one or two inputs and score them against `reference` (see the module doc).

    Raises `GraphError` for inputs of different graph shapes, for a sweep or a single
    circuit without a reference, and for anything `load_input`/`load_reference` refuses.
    """
    if not 1 <= len(inputs) <= len(LABELS):
        raise GraphError(f"compare takes one or two inputs, got {len(inputs)}")
    items = tuple(Item(key, str(path), load_input(path))
                  for key, path in zip(LABELS, inputs, strict=False))
    ref = load_reference(reference, items[0].graph) if reference is not None else None
    named = [(item.name, item.graph.shape) for item in items]
    if ref is not None:
        named.append((f"reference {ref.name}", ref.graph.shape))
    view = common_view(named)
    if view.projected:
        items = tuple(project_item(item) for item in items)
        ref = project_reference(ref) if ref is not None else None
    for item in items[1:]:
        check_same_graph(items[0].graph, item.graph, str(items[0].name), str(item.name))
    for item in items:
        if isinstance(item.value, Circuit) and item.value.partial:
            warnings.warn(f"{item.name} is a partial run: its undecided edges count as kept",
                          RunWarning, stacklevel=2)
    graph = items[0].graph
    circuits = [(item.name, item.value) for item in items if isinstance(item.value, Circuit)]
    known = ", ".join(CANONICAL_NAMES)
    if reference is None:
        if any(isinstance(item.value, Sweep) for item in items):
            raise GraphError(f"a sweep is judged against a reference: add --reference (a "
                             f"circuit.json, an edge list, or one of {known})")
        if len(items) == 1:
            raise GraphError(f"nothing to compare {items[0].name} with: give a second circuit "
                             f"or --reference (a circuit.json, an edge list, or one of {known})")
    pair = None
    if len(circuits) == 2:
        (a_name, a), (b_name, b) = circuits
        pair = compare_circuits(a, b, a_name, b_name)
        digests = {c.settings.get("positions_sha256") for c in (a, b)}
        if graph.positional and len(digests) == 2 and None not in digests:
            warnings.warn(f"{a_name} and {b_name} were found on tasks whose tokens fall into the "
                          f"position groups differently (positions_sha256 differs): compared "
                          f"group by group, by the groups' names", RunWarning, stacklevel=2)
    levels = roc_levels(graph, ref) if ref is not None else ()
    scores: list[Scored] = []
    for item in items:
        value = item.value
        if ref is None:
            scores.append(None)
        elif isinstance(value, Sweep):
            runs = tuple(score(graph, run.circuit.kept, ref.kept) for run in value.runs)
            sweep = [(run.threshold, run.circuit.kept) for run in value.runs]
            node_curve = sweep_roc(graph, sweep, ref.kept, "node") if "node" in levels else None
            scores.append(SweepScores(runs, sweep_roc(graph, sweep, ref.kept, "edge"), node_curve,
                                      sweep_group_rocs(graph, sweep, ref.kept)))
        elif (ranked := circuit_ranking(value)) is not None:
            scores.append(rank_scores(value, ranked, ref, levels, item.name))
        else:
            scores.append(score(graph, value.kept, ref.kept))
    return CompareSummary(items, graph, pair, ref, tuple(scores), view)


def defined_levels(graph: Graph, reference: Sequence[bool]) -> tuple[Level, ...]:
    """The levels at which TPR and FPR against `reference` are both defined."""
    empty = [False] * len(graph.edges)
    levels: list[Level] = []
    for level in LEVELS:
        counts = confusion(graph, empty, reference, level)
        if counts.tpr is not None and counts.fpr is not None:
            levels.append(level)
    return tuple(levels)


def sweep_group_rocs(graph: Graph, sweep: Sequence[tuple[float, Sequence[bool]]],
                     reference: Sequence[bool]) -> dict[str, GroupRoc]:
    """Per position group of a positional `graph`: the sweep's ROC over the edges at that
    group (a level is None where it is undefined there)."""
    out: dict[str, GroupRoc] = {}
    if not graph.positional:
        return out
    blind = blind_graph(graph)
    for g, name in enumerate(graph.groups):
        truth = at_group(reference, graph, g)
        levels = defined_levels(blind, truth)
        runs = [(threshold, at_group(kept, graph, g)) for threshold, kept in sweep]
        curves = {level: sweep_roc(blind, runs, truth, level) for level in levels}
        out[name] = GroupRoc(curves.get("edge"), curves.get("node"))
    return out


def rank_scores(circuit: Circuit, ranked: str, reference: Reference,
                levels: Sequence[str], name: str) -> RankingScores:
    """A circuit's own scores and its ranking's ROC at each level where one is defined."""
    node_scores = circuit.node_scores if ranked == "node" else None
    edge_scores = None if ranked == "node" else circuit.scores
    curves = {level: ranking_roc(circuit.graph, reference.kept, level,  # type: ignore[arg-type]
                                 edge_scores=edge_scores, node_scores=node_scores, name=name)
              for level in levels}
    groups: dict[str, GroupRoc] = {}
    graph = circuit.graph
    if graph.positional and edge_scores is not None:
        blind = blind_graph(graph)
        for g, group in enumerate(graph.groups):
            truth = at_group(reference.kept, graph, g)
            at_g = edge_scores[g::graph.n_groups]
            at = {level: ranking_roc(blind, truth, level, edge_scores=at_g, name=name)
                  for level in defined_levels(blind, truth)}
            groups[group] = GroupRoc(at.get("edge"), at.get("node"))
    return RankingScores(score(circuit.graph, circuit.kept, reference.kept), ranked,
                         curves["edge"], curves.get("node"), groups)


def roc_levels(graph: Graph, reference: Reference) -> tuple[str, ...]:
    """The levels at which a ROC against `reference` is defined (it needs a negative).

    A reference of every edge is refused; one touching every node (common on tiny graphs)
    gives no node-level ROC, with a warning."""
    empty = [False] * len(graph.edges)
    levels = tuple(level for level in LEVELS
                   if confusion(graph, empty, reference.kept, level).fpr is not None)
    if "edge" not in levels:
        raise GraphError(f"reference {reference.name}: holds every edge of the graph, so there "
                         f"is no negative and FPR is undefined")
    if "node" not in levels:
        warnings.warn(f"reference {reference.name} touches every node of the graph: no "
                      f"node-level FPR or ROC", RunWarning, stacklevel=3)
    return levels


def score(graph: Graph, kept: Sequence[bool], reference: Sequence[bool]) -> Scores:
    """A circuit against the reference at both levels, and at each position group."""
    edges, nodes = (group_confusions(graph, kept, reference, level) for level in LEVELS)
    groups = {g: Scores(edges[g], nodes[g]) for g in edges}
    return Scores(confusion(graph, kept, reference, "edge"),
                  confusion(graph, kept, reference, "node"), groups)


# --------------------------------------------------------------------------- outputs


def default_out_dir() -> Path:
    """`runs/compare-<YYYYmmdd-HHMMSS>` (`write_outputs` adds a suffix when it is taken)."""
    return Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"


def write_outputs(summary: CompareSummary, out_dir: str | Path | None,
                  render_svg: bool = True) -> list[Path]:
    """Write comparison.json, the union drawing and, for sweeps, roc.json and the ROC plot
    into `out_dir` (None: a new `default_out_dir()`); a failure leaves no directory it made."""
    with output_directory(out_dir, default_out_dir()) as directory:
        return _write_files(summary, directory, render_svg)


def _write_files(summary: CompareSummary, out_dir: Path, render_svg: bool) -> list[Path]:
    from acdc.evaluation.roc_plot import roc_png, roc_svg
    from acdc.exports.dot import render
    from acdc.exports.union import union_to_dot

    written = [_write_json(out_dir / "comparison.json", summary.comparison_json())]
    drawing = union_sets(summary)
    if drawing is not None:
        (a_name, a), (b_name, b) = drawing
        title = f"{a_name} (A) vs {b_name} (B)"
        source = union_to_dot(summary.graph, a, b, a_name, b_name, title)
        written.append(render(source, out_dir / "union.dot", "dot"))
        if render_svg:
            svg = render(source, out_dir / "union.svg", "svg")
            if svg.suffix == ".svg":
                written.append(svg)
    if summary.has_roc:
        written.append(_write_json(out_dir / "roc.json", summary.roc_json()))
        panels = roc_panels(summary)
        assert summary.reference is not None  # a sweep or a ranking's ROC needs one
        title = f"ROC against {summary.reference.name}"
        written.append(write_text_atomic(out_dir / "roc.svg", roc_svg(panels, title)))
        png = roc_png(panels, title, out_dir / "roc.png")
        if png is not None:
            written.append(png)
    return written


def union_sets(summary: CompareSummary) -> tuple[tuple[str, Sequence[bool]], ...] | None:
    """((name, kept), (name, kept)) to draw: the two circuits, or the circuit and the
    reference; None when there is nothing to draw (sweeps)."""
    circuits = [(item.name, item.value.kept) for item in summary.items
                if isinstance(item.value, Circuit)]
    if len(circuits) == 2:
        return circuits[0], circuits[1]
    if len(summary.items) == 1 and circuits and summary.reference is not None:
        return circuits[0], (f"reference {summary.reference.name}", summary.reference.kept)
    return None


def roc_panels(summary: CompareSummary):
    """The ROC plot's panels (edges, nodes): a series per sweep and per ranking, and a point
    per circuit."""
    from acdc.evaluation.roc import RocPoint
    from acdc.evaluation.roc_plot import RocSeries

    panels = []
    for level, title in (("edge", "edges"), ("node", "nodes")):
        series = []
        for item, scores in zip(summary.items, summary.scores, strict=True):
            if isinstance(scores, SweepScores):
                curve = getattr(scores, level)
                if curve is None:
                    continue
                series.append(RocSeries(item.name, curve.points, curve.front, curve.auc))
            elif isinstance(scores, RankingScores):
                curve = getattr(scores, level)
                if curve is None:
                    continue
                series.append(RocSeries(f"{item.name} ({scores.ranked} ranking)", curve.points,
                                        curve.front, curve.auc))
            if isinstance(scores, (Scores, RankingScores)) and isinstance(item.value, Circuit):
                counts = getattr(scores.circuit if isinstance(scores, RankingScores)
                                 else scores, level)
                if counts.fpr is None:
                    continue
                threshold = item.value.settings.get("threshold")
                point = RocPoint(counts.fpr, counts.tpr,
                                 threshold if isinstance(threshold, (int, float)) else None)
                series.append(RocSeries(item.name, (point,)))
        if series:
            panels.append((title, series))
    return panels


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")
