"""The report's HTML: sections from a `Source`, one self-contained page, written safely.

Every string that comes from a file (names, settings, task names, paths) is HTML-escaped where
it is written; the edge table's data is JSON with `<`, `>` and `&` written as `\\u` escapes, so
nothing in it can end its `<script type="application/json">` block. The page's style and script
are the package's `report.css` and `report.js`, inline; a Content-Security-Policy meta tag
allows exactly those two (by their SHA-256) and nothing else: no other script, no inline style
attribute, no image, font, frame or connection, from anywhere. The drawings are inline SVG that
went through `acdc.reports.svg`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from html import escape
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from acdc.core.files import (
    RUN_FILES,
    FileError,
    check_output,
    new_directories,
    write_text_atomic,
)
from acdc.errors import AcdcError, RunWarning, short_repr
from acdc.evaluation.rank_scores import encode_score, rank_scores
from acdc.exports.dot import names_line
from acdc.reports.figures import (
    circuit_drawing,
    curve_drawing,
    roc_drawing,
    saved_drawing,
    sweep_drawing,
)
from acdc.reports.inputs import ComparedInput
from acdc.reports.source import (
    CIRCUIT_FILE,
    RUN_FILE,
    SWEEP_FILE,
    ComparisonDir,
    Source,
    read_source,
)

REPORT_FILE = "report.html"
MAX_SETTING_ROWS = 1000  # rows of the settings table
MAX_SETTING_TEXT = 2000  # characters of one setting's value
MAX_SETTING_DEPTH = 8  # nested mappings flattened into `a.b.c` names


@cache
def asset(name: str) -> str:
    """The package's `report.css` or `report.js`."""
    return resources.files("acdc.reports").joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def content_security_policy(style: str, script: str) -> str:
    """Only this style sheet and this script run; nothing is loaded from anywhere."""
    return (f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; "
            f"img-src 'none'; base-uri 'none'; form-action 'none'")


# --------------------------------------------------------------------------- pieces of HTML


def _num(value: Any) -> str:
    """A value for a table cell: numbers to 4 significant digits, None as a dash, escaped."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value).lower()
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return "–" if math.isnan(value) else f"{value:.4g}"
    return escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "",
           row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; the header is text, cells are HTML already."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        extra = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{extra}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(svg: str, name: str, caption: str) -> str:
    return (f'<figure class="plot" data-plot="{escape(name)}">{svg}'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _drawn(draw: Any, notes: list[str], *args: Any) -> str | None:
    """`draw(*args)`, or None with a note when a drawing cannot be made or read."""
    try:
        return draw(*args)
    except FileError as error:
        notes.append(f"{error}; left out")
        return None


def drawing(source: Source, score_width: bool) -> str:
    """The circuit drawn by Graphviz; without Graphviz the run's own circuit.svg, or a note."""
    from acdc.exports.dot import INSTALL_HINT, circuit_title

    circuit = source.circuit
    svg = _drawn(circuit_drawing, source.notes, circuit, circuit_title(circuit), score_width,
                 "circuit")
    legend = "Line colours and styles are given in the drawing's title."
    if circuit.graph.positional:
        legend += (" Columns are the position groups that keep an edge, rows the layers; each "
                   "edge is drawn in its group's column, and a dashed grey arrow goes from a "
                   "head at one group to the same head at another whose queries read its keys "
                   "and values there.")
    elif circuit.level == "node":
        legend += (" One arrow joins two nodes joined by kept edges; a node's border grows with "
                   "its |score|.")
    if score_width and any(s is not None for s in circuit.scores):
        legend += (" Each edge's width grows with the square root of its |score| (the widest "
                   "has the largest |score|).")
    legend += " Hover over an edge for its name and score."
    if svg is None and not _graphviz():
        saved = source.circuit_path.with_suffix(".svg")
        if os.path.lexists(saved):
            source.inputs.append(saved)
            svg = _drawn(saved_drawing, source.notes, saved, "circuit")
            if svg is not None:
                source.notes.append(f"Graphviz `dot` not found: the drawing is {saved} as the "
                                    f"run drew it (install Graphviz: {INSTALL_HINT})")
        else:
            source.notes.append(f"Graphviz `dot` not found: no drawing (install it: "
                                f"{INSTALL_HINT})")
    if svg is None:
        return ('<p class="note">No drawing (the notes above say why; Graphviz: '
                f"<code>{escape(INSTALL_HINT)}</code>).</p>")
    return f'<div class="drawing" id="drawing">{svg}</div><p class="legend">{escape(legend)}</p>'


def _graphviz() -> bool:
    import shutil

    return shutil.which("dot") is not None


def groups_table(source: Source) -> str:
    """A circuit at positions: per position group, in the groups' order, what it keeps."""
    from acdc.core.selection import ALWAYS_NODES, node_of

    circuit = source.circuit
    graph = circuit.graph
    if not graph.positional:
        return ""
    n = len(graph.groups)
    edges, residual, scored = [0] * n, [0] * n, [0.0] * n
    nodes: list[set[str]] = [set() for _ in range(n)]
    for edge in circuit.kept_edges():
        g = edge.group
        assert g is not None  # a positional edge
        edges[g] += 1
        residual[g] += edge.kind == "residual"
        score = circuit.scores[edge.index]
        if score is not None and math.isfinite(score):
            scored[g] += abs(score)
        nodes[g].update(node_of(name) for name in edge.endpoints)
    rows = [(escape(name), _num(edges[g]), _num(residual[g]), _num(len(nodes[g] - ALWAYS_NODES)),
             _num(scored[g]) if edges[g] else _num(None)) for g, name in enumerate(graph.groups)]
    return ('<h3 id="groups">Position groups</h3><p class="legend">A circuit at positions '
            f"({escape(graph.shape.positions)}): every edge once per group, kept or not at "
            "each; a group keeps the edges drawn in its column.</p>"
            + _table(("group", "edges kept", "residual edges kept", "heads and MLPs",
                      "sum of |score|"), rows, "numbers"))


def nodes_table(source: Source) -> str:
    """A node circuit (HISP, subnetwork probing): every head and MLP with its score, kept
    ones first, then by |score|."""
    from acdc.core.selection import kept_nodes, scored_nodes

    circuit = source.circuit
    if circuit.level != "node":
        return ""
    graph = circuit.graph
    kept = kept_nodes(graph, circuit.kept)
    scores = circuit.node_scores or {}

    def magnitude(name: str) -> float:
        score = scores.get(name)
        return abs(score) if score is not None and math.isfinite(score) else -1.0

    names = sorted(scored_nodes(graph), key=lambda n: (n not in kept, -magnitude(n)))
    rows = [(escape(name), "yes" if name in kept else "no", _num(scores.get(name)),
             _num(abs(value) if (value := scores.get(name)) is not None else None))
            for name in names]
    return ('<h3 id="nodes">Nodes</h3><p class="legend">A node circuit: the method scored '
            "heads and MLPs and kept some; the circuit is every edge among the kept ones (with "
            "input and logits). Kept nodes first, then by |score|.</p>"
            + _table(("node", "kept", "score", "|score|"), rows, "numbers"))


def summary_section(source: Source) -> str:
    circuit = source.circuit
    graph = circuit.graph
    kept, total = circuit.n_edges_kept, len(graph.edges)
    facts = [("edges kept", f"{kept:,} of {total:,} ({100 * kept / total:.1f}%)"),
             ("nodes", f"{len(circuit.nodes()):,} of {len(graph.node_names()):,}"),
             ("graph", f"{graph.n_layers} layers × {graph.n_heads} heads, "
                       f"{'with' if graph.shape.has_mlp else 'no'} MLPs, {graph.granularity}")]
    if graph.positional:
        facts.append(("positions", f"{graph.shape.positions}: {len(graph.groups):,} groups "
                                   f"({names_line(graph.groups)})"))
    if circuit.level == "node":
        from acdc.core.selection import kept_nodes, scored_nodes

        facts.append(("node circuit", f"{len(kept_nodes(graph, circuit.kept)):,} of "
                                      f"{len(scored_nodes(graph)):,} heads and MLPs, every edge "
                                      f"among them"))
    results = circuit.results
    metric = circuit.settings.get("metric")
    if "metric_circuit" in results:
        noise = results.get("metric_noise")
        noise = abs(noise) if isinstance(noise, (int, float)) and math.isfinite(noise) else 0.0

        def shown(value: Any) -> str:  # as `discover` prints it: 0 within the rounding noise
            if isinstance(value, (int, float)) and abs(value) <= noise:
                return "0"
            return _num(value)

        facts.append((f"metric ({short_repr(metric)})",
                      f"circuit {shown(results['metric_circuit'])}, full model "
                      f"{shown(results.get('metric_full'))}"))
    runtime = results.get("runtime_s")
    if isinstance(runtime, (int, float)) and math.isfinite(runtime):
        facts.append(("runtime", f"{runtime:.1f} s"))
    if source.is_sweep:
        thresholds = [run.threshold for run in source.runs]
        facts.insert(0, ("sweep", f"{len(thresholds)} thresholds, {min(thresholds):g} to "
                                  f"{max(thresholds):g}; drawn and listed below: "
                                  f"{source.circuit_path.parent.name}"))
    items = "".join(f"<div class='fact'><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>"
                    for k, v in facts)
    warning = ""
    if circuit.partial:
        warning = ("<p class='warning'>This run was interrupted: its undecided edges are kept. "
                   "Resume it with <code>circuit discover --resume "
                   f"{escape(str(source.circuit_path.parent))}</code>.</p>")
    return f'<section id="summary"><dl class="facts">{items}</dl>{warning}</section>'


def metrics_section(source: Source) -> str:
    evaluation = source.evaluation
    path = source.evaluation_path
    title = '<section id="metrics"><h2>Metrics</h2>'
    if evaluation is None:
        what = (source.circuit_path.parent if source.circuit_path.name == CIRCUIT_FILE
                else source.circuit_path)
        return (title + f'<p class="note" id="no-evaluation">No {escape(path.name)} beside '
                f"{escape(str(source.circuit_path))} (or it was left out): the circuit has not "
                f"been evaluated. Make it with <code>circuit evaluate {escape(str(what))} "
                f"--curve</code> and write this page again.</p></section>")
    rows = []
    for m in evaluation.metrics:
        label = escape(m.name) + (" <small>(higher is better)</small>"
                                  if m.higher_is_better else "")
        rows.append((label, _num(m.full), _num(m.empty), _num(m.circuit), _num(m.faithfulness),
                     _num(m.complement), _num(m.complement_faithfulness)))
    parts = [title]
    kept = evaluation.n_edges_kept
    if kept is not None and kept != source.circuit.n_edges_kept:
        parts.append(f"<p class='warning'>{escape(path.name)} was made for a circuit of {kept} "
                     f"edges, this one keeps {source.circuit.n_edges_kept}: evaluate it again."
                     f"</p>")
    graph = source.circuit.graph
    made_at = (evaluation.positions or "none", evaluation.groups or ())
    if made_at[0] != graph.shape.positions or (evaluation.groups is not None
                                               and made_at[1] != graph.groups):
        where = ("position-blind" if made_at[0] == "none"
                 else f"at positions {made_at[0]} ({names_line(made_at[1])})")
        here = ("position-blind" if not graph.positional
                else f"at positions {graph.shape.positions} ({names_line(graph.groups)})")
        parts.append(f"<p class='warning'>{escape(path.name)} was made for a circuit "
                     f"{escape(where)}, this one is {escape(here)}: evaluate it again.</p>")
    parts.append(_table(("metric", "full model", "empty circuit", "circuit", "f(C)",
                         "complement", "f(complement)"), rows, "numbers"))
    parts.append(
        f"<p class='legend'>Means over {_num(evaluation.n_positions)} metric positions "
        f"of {_num(evaluation.n_prompts)} prompts of task {_num(evaluation.task)}, ablation "
        f"{_num(evaluation.ablation)}; f = (m − empty) / (full − empty): 1 when the circuit "
        f"does what the model does, 0 when it does no better than everything ablated.</p>")
    if evaluation.run_metric is not None:
        evaluated, recorded = evaluation.run_metric
        parts.append(f"<p class='warning'>The run's metric evaluates to {_num(evaluated)}, but "
                     f"the circuit records {_num(recorded)}: the task or model changed since "
                     f"the run.</p>")
    curve = evaluation.curve
    if curve is not None and curve.cpr:
        areas = [(escape(name), _num(value), _num(curve.cmd.get(name)))
                 for name, value in curve.cpr.items()]
        parts.append("<h3>Faithfulness curve</h3>")
        parts.append(_table(("metric", "CPR (higher is better)", "CMD (0 is best)"), areas,
                            "numbers"))
        svg = _drawn(curve_drawing, source.notes, evaluation, "curve")
        if svg is not None:
            parts.append(_figure(svg, "curve", "faithfulness by circuit size"))
    parts.append("</section>")
    return "".join(parts)


def sweep_section(source: Source) -> str:
    if source.sweep is None:
        return ""
    shown = source.circuit_path.parent
    parts = ['<section id="sweep"><h2>Sweep</h2>']
    table = source.sweep_table
    if table is not None:
        drawn = [_same(t, shown) for t in table.thresholds]
        rows = [tuple(_num(value) for value in row) for row in table.rows]
        parts.append(f"<p class='legend'>From {SWEEP_FILE}.</p>")
        parts.append(_table(table.columns, rows, "numbers",
                            ["current" if mark else "" for mark in drawn]))
    else:
        columns = ["threshold", "edges kept", "nodes", "metric of the circuit"]
        rows = [(_num(run.threshold), _num(run.circuit.n_edges_kept),
                 _num(len(run.circuit.nodes())),
                 _num(_finite(run.circuit.results.get("metric_circuit"))))
                for run in source.runs]
        parts.append(f"<p class='legend'>From the runs' circuits (no {SWEEP_FILE}).</p>")
        parts.append(_table(columns, rows, "numbers",
                            ["current" if run.path == shown else "" for run in source.runs]))
    svg = (_drawn(sweep_drawing, source.notes, source.sweep_plot, "sweep")
           if source.sweep_plot is not None else None)
    if svg is not None:
        parts.append(_figure(svg, "sweep", "edges kept by threshold, and faithfulness by "
                                           "circuit size"))
    else:
        parts.append(f"<p class='note'>No sweep plot: it is drawn from the {SWEEP_FILE} that "
                     f"<code>circuit sweep</code> writes.</p>")
    parts.append("</section>")
    return "".join(parts)


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    return None


def _same(threshold: float | None, run_dir: Path) -> bool:
    from acdc.evaluation.sources import run_threshold

    own = run_threshold(run_dir.name)
    return threshold is not None and own is not None and math.isclose(threshold, own,
                                                                       rel_tol=1e-9)


def comparison_section(source: Source) -> str:
    if not source.comparisons:
        return ""
    parts = ['<section id="comparisons"><h2>Comparisons</h2>']
    for n, found in enumerate(source.comparisons):
        parts.append(f"<h3>{escape(str(found.path))}</h3>")
        parts.append(_comparison_tables(found))
        roc = found.roc
        if roc is not None:
            rows = [(escape(s.name), _num(s.auc.get("edge")), _num(s.auc.get("node")))
                    for s in roc.sweeps]
            parts.append(f"<h4>ROC against {escape(roc.reference or '?')}</h4>")
            if rows:
                parts.append(_table(("sweep", "edge AUC", "node AUC"), rows, "numbers"))
            ranked = [(escape(r.name), escape("heads and MLPs" if r.ranked == "node"
                                               else "residual edges"), _num(r.units),
                       _num(r.auc.get("edge")), _num(r.auc.get("node"))) for r in roc.rankings]
            if ranked:
                parts.append("<p class='legend'>A circuit with scores is also judged as a "
                             "ranking: every cut of it (its top k by |score|) is a point.</p>")
                parts.append(_table(("ranking", "ranks", "scored", "edge AUC", "node AUC"),
                                    ranked, "numbers"))
            svg = _drawn(roc_drawing, source.notes, roc, found.comparison, f"roc{n}")
            if svg is not None:
                parts.append(_figure(svg, "roc", "ROC curve (pessimistic staircase)"))
        if found.union is not None:
            svg = _drawn(saved_drawing, source.notes, found.union, f"union{n}")
            if svg is not None:
                parts.append(_figure(svg, "union", "union of the circuits: black in both, "
                                                   "orange only in A, purple only in B"))
    parts.append("</section>")
    return "".join(parts)


def _comparison_tables(found: ComparisonDir) -> str:
    data = found.comparison
    if data is None:
        return ""
    parts = []
    if data.inputs:
        parts.append(_table(("", "input", "kind", "size"),
                            [(escape(item.key), escape(item.name), escape(item.kind),
                              _size(item)) for item in data.inputs]))
    if data.overlap:
        parts.append(_table(("", "in both", "only in A", "only in B", "Jaccard"),
                            [(level.level, _num(level.both), _num(level.only_a),
                              _num(level.only_b), _num(level.jaccard))
                             for level in data.overlap], "numbers"))
    if data.scores:
        parts.append(f"<h4>Against the reference {escape(data.reference or '?')}</h4>")
        parts.append(_table(("", "edge TPR", "edge FPR", "edge precision", "node TPR",
                             "node FPR", "node precision"),
                            [(escape(score.key), *(_num(v) for v in score.edge),
                              *(_num(v) for v in score.node)) for score in data.scores],
                            "numbers"))
    return "".join(parts)


def _size(item: ComparedInput) -> str:
    if item.kind == "sweep":
        return f"{_num(item.thresholds)} thresholds"
    return f"{_num(item.edges)} edges, {_num(item.nodes)} nodes"


def settings_section(source: Source) -> str:
    parts = ['<section id="settings"><h2>Settings</h2>']
    record = source.settings
    if source.is_sweep:
        parts.append(f"<p class='legend'>Of the run drawn above, "
                     f"{escape(source.circuit_path.parent.name)}.</p>")
    if record is None:
        record = dict(source.circuit.settings)
        parts.append(f"<p class='note'>No {RUN_FILE} beside the circuit (or it was left out): "
                     f"these are the circuit file's own settings.</p>")
    rows = []
    commands = []
    flattened = list(_flatten(record))
    for key, value in flattened[:MAX_SETTING_ROWS]:
        if key in ("command", "repeat"):
            commands.append((key, _plain(value)))
        else:
            rows.append((escape(key), f"<code>{escape(_plain(value))}</code>"))
    parts.append(_table(("setting", "value"), rows, "settings"))
    if len(flattened) > MAX_SETTING_ROWS:
        parts.append(f"<p class='note'>The first {MAX_SETTING_ROWS:,} settings are shown.</p>")
    for key, value in commands:
        what = "as typed" if key == "command" else "repeats the run with every setting spelled out"
        parts.append(f"<p class='legend'>{escape(key)} ({what}):</p>"
                     f"<pre><code>{escape(value)}</code></pre>")
    parts.append("</section>")
    return "".join(parts)


def _flatten(record: Mapping[Any, Any]) -> Iterator[tuple[str, Any]]:
    """(`a.b.c`, value) for every value of nested mappings, in order, without recursion;
    mappings deeper than `MAX_SETTING_DEPTH` are one value."""
    stack: list[tuple[str, Iterator[tuple[Any, Any]]]] = [("", iter(record.items()))]
    while stack:
        prefix, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        name = f"{prefix}{item[0]}"
        if isinstance(item[1], Mapping) and len(stack) < MAX_SETTING_DEPTH:
            stack.append((name + ".", iter(item[1].items())))
        else:
            yield name, item[1]


def _plain(value: Any) -> str:
    """A setting's value as text, at most `MAX_SETTING_TEXT` characters."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif value is None:
        text = "null"
    elif isinstance(value, (list, tuple, Mapping)):
        text = _short_json(value)
    else:
        text = str(value)
    return text if len(text) <= MAX_SETTING_TEXT else text[:MAX_SETTING_TEXT] + " …"


def _short_json(value: Any) -> str:
    """A list or mapping as JSON text when it is small and shallow, else its kind and size."""
    try:
        text = json.dumps(value, default=str, check_circular=True)
    except (ValueError, TypeError, RecursionError):
        text = ""
    return text if text and len(text) <= MAX_SETTING_TEXT else \
        f"({short_repr(value)} of {len(value):,} items)"


def edge_data(source: Source) -> dict[str, Any]:
    """The edge table's data: column names and one row per edge, in graph order. A rank score
    of +inf is the string "inf" (`acdc.evaluation.rank_scores.encode_score`); None is null."""
    circuit = source.circuit
    ranks = (rank_scores([run.threshold for run in source.runs],
                         [run.circuit.kept for run in source.runs]) if source.is_sweep else None)
    graph = circuit.graph
    columns = ["#", "edge", "kind", "into", "kept", "score", "|score|"]
    if graph.positional:
        columns.insert(4, "group")
    if ranks is not None:
        columns.append("rank score")
    rows = []
    for edge in graph.edges:
        score = circuit.scores[edge.index]
        if score is not None and not math.isfinite(score):
            score = None
        into = "head" if edge.kind == "direct" else (edge.receiver.qkv or edge.receiver.kind)
        row: list[Any] = [edge.index, edge.name, edge.kind, into, circuit.kept[edge.index],
                          score, None if score is None else abs(score)]
        if graph.positional:
            assert edge.group is not None  # a positional edge
            row.insert(4, graph.groups[edge.group])
        if ranks is not None:
            row.append(encode_score(ranks[edge.index]))
        rows.append(row)
    return {"columns": columns, "rows": rows}


def script_json(value: Any) -> str:
    """JSON for a `<script type="application/json">` block: `<`, `>` and `&` as `\\u`
    escapes, so that no `</script>` or `<!--` can appear in it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def edges_section(source: Source) -> str:
    data = script_json(edge_data(source))
    rank_note = (" The rank score is the largest threshold of the sweep at which the edge is "
                 "kept (∞: kept at every threshold)." if source.is_sweep else "")
    return (
        '<section id="edges"><h2>Edges</h2>'
        "<p class='legend'>Every edge of the graph. Click a column's heading to sort by it "
        f"(again to reverse).{rank_note}</p>"
        '<div class="controls"><label>filter <input id="edge-filter" type="search" '
        'placeholder="a0.h1, &lt;q&gt;, -&gt;logits"></label> <label><input id="kept-only" '
        'type="checkbox" checked> kept edges only</label> <span id="edge-count"></span> '
        '<button id="show-all" type="button" hidden>show all</button></div>'
        '<table id="edge-table" class="numbers sortable"><thead></thead><tbody></tbody></table>'
        f'<script type="application/json" id="edge-data">{data}</script></section>')


def build_report(source: Source, score_width: bool = True) -> str:
    """The page's HTML."""
    from acdc.exports.dot import circuit_title

    title = circuit_title(source.circuit)
    sections = [
        summary_section(source),
        '<section id="circuit"><h2>Circuit</h2>' + drawing(source, score_width)
        + groups_table(source) + nodes_table(source) + "</section>",
        metrics_section(source),
        sweep_section(source),
        comparison_section(source),
        settings_section(source),
        edges_section(source),
    ]
    links = [("circuit", "Circuit"), ("metrics", "Metrics")]
    if source.is_sweep:
        links.append(("sweep", "Sweep"))
    if source.comparisons:
        links.append(("comparisons", "Comparisons"))
    links += [("settings", "Settings"), ("edges", "Edges")]
    nav = "".join(f'<a href="#{anchor}">{text}</a>' for anchor, text in links)
    what = "sweep" if source.is_sweep else "run"
    try:
        version = metadata.version("circuit")
    except metadata.PackageNotFoundError:
        version = "unknown"
    notes = "".join(f"<p class='note'>{escape(note)}</p>" for note in source.notes)
    style, script = asset("report.css"), asset("report.js")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" '
        f'content="{escape(content_security_policy(style, script))}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{style}</style></head>"
        f'<body><header><h1>{escape(title)}</h1><p class="subtitle">Report of the {what} '
        f"<code>{escape(str(source.directory))}</code></p><nav>{nav}</nav></header>"
        f'<p id="js-errors" role="alert"></p>{notes}{"".join(sections)}'
        f"<footer>Written by circuit {escape(version)} (<code>circuit report</code>); one "
        f"self-contained file: it loads nothing from the network.</footer>"
        f"<script>{script}</script></body></html>\n")


def default_out(target: Path, source: Source) -> Path:
    """`report.html` in the directory; beside a circuit file, named after it."""
    if source.circuit_path == target:  # a circuit file: beside it, named after it
        return source.circuit_path.with_name(source.circuit_path.name.removesuffix(".json")
                                             + ".html")
    return source.directory / REPORT_FILE


def write_report(target: str | Path, out: str | Path | None = None, *,
                 threshold: float | None = None, comparisons: Sequence[str | Path] | None = None,
                 score_width: bool = True) -> Path:
    """Write the report of `target` (default `report.html` in its directory) and return its
    path. What was left out (an unreadable file, no Graphviz) is said in the page and as a
    `RunWarning` each. The page is never written through a link, onto a device, over one of
    the files it was made from or over a run's files (`acdc.core.files.check_output`), and it
    is written atomically."""
    target = Path(target)
    if out is not None:
        check_output(out, "--out")  # before any work
    source = read_source(target, threshold, comparisons)
    path = Path(out) if out is not None else default_out(target, source)
    option = "--out" if out is not None else ""
    check_output(path, option, inputs=source.inputs)
    if path.name in RUN_FILES:  # absent now, but the next command would read it as one
        raise AcdcError(f"{option} {path}: is the name of a run's file ({path.name}); choose "
                        f"another file name".lstrip())
    page = build_report(source, score_width)
    with new_directories(path.parent):
        write_text_atomic(path, page)
    for note in source.notes:
        warnings.warn(note, RunWarning, stacklevel=2)
    return path
