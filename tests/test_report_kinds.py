"""`circuit report` of the circuits that are not plain edge circuits: a circuit at positions
(its groups, the grid drawing, a group column, an evaluation made at other groups), a node
circuit (HISP, subnetwork probing: its heads and MLPs with their scores), and the ROC of a
circuit's ranking from `circuit compare`.

The circuits are written by hand (no model), so every count on the page is checked against one
made plainly here; position groups carry markup (a group name may hold anything but `@` and
spaces), which the page must only ever show escaped. The page of a circuit at positions is also
opened in headless Chromium, as `tests/test_report.py` opens the others.
"""

from __future__ import annotations

import json
import random
import re
from html import escape
from pathlib import Path

import pytest
from cli_helpers import invoke
from test_report import (
    CHROMIUM,
    HAS_DOT,
    NO_CHROMIUM,
    NO_DOT,
    browse,
    check_safe,
    console,
    edge_json,
    report_of,
)
from test_report_fuzz import EVALUATION

from acdc.core.circuit import Circuit, write_circuit
from acdc.core.graph import GraphShape, build_graph
from acdc.core.selection import edges_among
from acdc.exports.dot import attention_links

HOSTILE_GROUPS = ("IO", "<script>alert(1)</script>", "\"'&amp;<!--", "END", "other")
SETTINGS = {"model": "models/tiny", "task": "tiny", "method": "eap", "top_n": 20,
            "metric": "logit_diff", "ablation": "corrupt", "granularity": "qkv"}
RESULTS = {"metric_circuit": -1.0, "metric_full": -2.0, "runtime_s": 0.5, "partial": False}


def positional_circuit(groups=("IO", "S1", "S2", "END", "other"), seed: int = 0,
                       granularity: str = "qkv") -> Circuit:
    graph = build_graph(GraphShape(2, 2, True, granularity, positions="labels", groups=groups))
    rng = random.Random(seed)
    kept = tuple(rng.random() < 0.12 and e.group != 2 for e in graph.edges)  # none at group 2
    scores = tuple(None if i % 7 == 0 else rng.uniform(-1, 1) for i in range(len(kept)))
    return Circuit(graph, kept, scores, {**SETTINGS, "positions": "labels",
                                         "positions_sha256": "0" * 64}, RESULTS)


def run_of(circuit: Circuit, directory: Path) -> Path:
    directory.mkdir(parents=True)
    write_circuit(circuit, directory / "circuit.json")
    return directory


def text_of(page: str, anchor: str) -> str:
    """The text of the page's section with id `anchor`, tags dropped."""
    start = page.index(f'id="{anchor}"')
    end = page.index("</section>", start)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page[start:end]))


def table_rows(page: str, anchor: str) -> list[list[str]]:
    start = page.index(f'id="{anchor}"')
    body = page[page.index("<tbody>", start):page.index("</tbody>", start)]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


# --------------------------------------------------------------------------- at positions


def test_the_page_of_a_circuit_at_positions(tmp_path):
    circuit = positional_circuit()
    graph = circuit.graph
    run = run_of(circuit, tmp_path / "run")
    page = report_of(run)
    check_safe(page)
    assert "positions labels: 5 groups (IO, S1, S2, END, other)" in text_of(page, "summary")
    assert ", positions labels</title>" in page
    # a row per group, in order, counted plainly
    rows = table_rows(page, "groups")
    assert [row[0] for row in rows] == list(graph.groups)
    for g, row in enumerate(rows):
        kept = [e for e in circuit.kept_edges() if e.group == g]
        units = {name.split("<")[0] for e in kept for name in e.endpoints} - {"input", "logits"}
        total = sum(abs(circuit.scores[e.index] or 0.0) for e in kept)
        assert row[1:4] == [str(len(kept)), str(sum(e.kind == "residual" for e in kept)),
                            str(len(units))]
        assert row[4] == (f"{total:.4g}" if kept else "–")
    # the edge table names each edge's group
    data = edge_json(page)
    assert data["columns"] == ["#", "edge", "kind", "into", "group", "kept", "score", "|score|"]
    assert [row[4] for row in data["rows"]] == [graph.groups[e.group] for e in graph.edges]
    assert all(row[1].endswith("@" + row[4]) for row in data["rows"])
    if HAS_DOT:
        drawn = page[page.index('id="drawing"'):page.index('<p class="legend">')]
        assert drawn.count('class="cluster"') == len({e.group for e in circuit.kept_edges()})
        assert drawn.count('class="edge"') == circuit.n_edges_kept + len(attention_links(circuit))
        assert "dashed grey arrow" in page


def test_a_blind_page_has_no_groups():
    """The positional parts appear only for a circuit at positions (checked on a blind one)."""
    graph = build_graph(GraphShape(2, 2, True))
    circuit = Circuit(graph, (True,) * len(graph.edges), (0.5,) * len(graph.edges), SETTINGS,
                      RESULTS)
    from acdc.reports.page import build_report, groups_table, nodes_table
    from acdc.reports.source import Source

    source = Source(Path("."), Path("circuit.json"), circuit, None, Path("evaluation.json"),
                    None)
    assert groups_table(source) == "" and nodes_table(source) == ""
    page = build_report(source)
    assert 'id="groups"' not in page and "positions" not in text_of(page, "summary")


def test_group_names_are_only_ever_shown_escaped(tmp_path):
    circuit = positional_circuit(HOSTILE_GROUPS, seed=3)
    page = report_of(run_of(circuit, tmp_path / "run"))
    check_safe(page)
    for name in HOSTILE_GROUPS[1:3]:
        assert name not in page
        assert escape(name) in text_of(page, "summary") or escape(name, quote=False) in page
    assert "<script>alert(1)" not in page
    data = edge_json(page)
    assert {row[4] for row in data["rows"]} == set(HOSTILE_GROUPS)


@pytest.mark.parametrize("made_at, warned", [
    ({"positions": "labels", "groups": ["IO", "S1", "S2", "END", "other"]}, False),
    ({"positions": "labels", "groups": ["IO", "S1", "S2", "END"]}, True),
    ({}, True),  # an evaluation of a position-blind circuit
])
def test_an_evaluation_made_at_other_groups_is_flagged(made_at, warned, tmp_path):
    circuit = positional_circuit()
    run = run_of(circuit, tmp_path / "run")
    (run / "evaluation.json").write_text(json.dumps(
        {**EVALUATION, "n_edges_kept": circuit.n_edges_kept, **made_at}))
    page = report_of(run)
    check_safe(page)
    metrics = text_of(page, "metrics")
    assert "f(C)" in metrics
    assert ("was made for a circuit" in metrics) == warned
    if warned:
        assert "this one is at positions labels (IO, S1, S2, END, other)" in metrics


def test_an_evaluation_of_a_circuit_at_positions_beside_a_blind_one_is_flagged(tmp_path):
    graph = build_graph(GraphShape(2, 2, True))
    circuit = Circuit(graph, (True,) * len(graph.edges), (0.5,) * len(graph.edges), SETTINGS,
                      RESULTS)
    run = run_of(circuit, tmp_path / "run")
    (run / "evaluation.json").write_text(json.dumps(
        {**EVALUATION, "n_edges_kept": circuit.n_edges_kept, "positions": "all",
         "groups": ["0", "1"]}))
    metrics = text_of(report_of(run), "metrics")
    assert "made for a circuit at positions all (0, 1), this one is position-blind" in metrics


# --------------------------------------------------------------------------- node circuits


def node_circuit(seed: int = 0) -> Circuit:
    graph = build_graph(GraphShape(3, 2, True))
    rng = random.Random(seed)
    units = [s.name for s in graph.senders if s.kind != "input"]
    scores = {name: round(rng.uniform(-1, 1), 4) for name in units}
    scores[units[-1]] = None  # a node never scored
    chosen = sorted((n for n in units if scores[n] is not None),
                    key=lambda n: -abs(scores[n]))[:4]
    kept = tuple(edges_among(graph, chosen))
    return Circuit(graph, kept, (None,) * len(kept),
                   {**SETTINGS, "method": "hisp", "top_n": 4}, RESULTS, scores)


def test_the_page_of_a_node_circuit_lists_its_heads_and_mlps(tmp_path):
    circuit = node_circuit()
    page = report_of(run_of(circuit, tmp_path / "run"))
    check_safe(page)
    assert "node circuit 4 of 9 heads and MLPs, every edge among them" in text_of(page,
                                                                                 "summary")
    rows = table_rows(page, "nodes")
    scores = circuit.node_scores
    assert scores is not None and len(rows) == len(scores) == 9
    kept = [row for row in rows if row[1] == "yes"]
    assert [row[0] for row in kept] == sorted((n for n in scores if scores[n] is not None),
                                              key=lambda n: -abs(scores[n]))[:4]
    assert rows[:4] == kept  # kept first, then by |score|; the unscored one last
    rest = [abs(float(row[2])) for row in rows[4:-1]]
    assert rest == sorted(rest, reverse=True) and rows[-1][2] == "–"
    for row in rows[:-1]:
        assert float(row[2]) == pytest.approx(scores[row[0]], abs=5e-4)
    assert "a node&#x27;s border grows with its |score|" in page or \
        "node's border grows with its |score|" in page


# --------------------------------------------------------------------------- ranking ROC


@pytest.mark.parametrize("level", ["edge", "node"])
def test_a_rankings_roc_is_tabled_and_drawn(level, tmp_path):
    if level == "node":
        circuit = node_circuit(1)
    else:
        graph = build_graph(GraphShape(3, 2, True))
        rng = random.Random(5)
        kept = tuple(rng.random() < 0.2 for _ in graph.edges)
        circuit = Circuit(graph, kept, tuple(rng.uniform(-1, 1) for _ in kept), SETTINGS,
                          RESULTS)
    run = run_of(circuit, tmp_path / "run")
    reference = node_circuit(2)  # another circuit of the same graph
    reference_path = tmp_path / "reference.json"
    write_circuit(reference, reference_path)
    done = invoke("compare", run, "--reference", reference_path, "--out", run / "compare",
                  "--no-render")
    assert done.exit_code == 0, done.output
    roc = json.loads((run / "compare" / "roc.json").read_text())
    (ranking,) = roc["rankings"]
    assert ranking["ranked"] == level
    page = report_of(run)
    check_safe(page)
    comparisons = page[page.index('id="comparisons"'):page.index('id="settings"')]
    table = comparisons[comparisons.index("<th>ranking</th>"):]
    cells = re.findall(r"<td>(.*?)</td>", table[:table.index("</tbody>")])
    assert cells == [escape(str(run)), "heads and MLPs" if level == "node" else "residual edges",
                     str(ranking["units"]), f"{ranking['auc']['edge']:.4g}",
                     f"{ranking['auc']['node']:.4g}" if ranking["auc"]["node"] is not None
                     else "–"]
    plot = comparisons[comparisons.index('data-plot="roc"'):]
    assert f"({level} ranking): AUC {ranking['auc']['edge']:.3f}" in plot
    # the ranking's curve (its staircase) and the circuit's own point, in each panel
    assert plot.count("<polyline") >= 1 and "circle" in plot


# --------------------------------------------------------------------------- in a browser


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
@pytest.mark.skipif(not HAS_DOT, reason=NO_DOT)
def test_the_page_of_a_circuit_at_positions_in_headless_chromium(tmp_path):
    circuit = positional_circuit(HOSTILE_GROUPS, seed=4)
    run = run_of(circuit, tmp_path / "run")
    report_of(run)
    done = browse(run / "report.html", tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console(done) == [], console(done)
    dom = done.stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-report-ready="1"' in body and "data-errors" not in body
    drawn = re.search(r'<div class="drawing" id="drawing">(.*?)</div>', dom, re.S).group(1)
    assert drawn.count('class="edge"') == circuit.n_edges_kept + len(attention_links(circuit))
    table = re.search(r'<table id="edge-table"[^>]*>(.*?)</table>', dom, re.S).group(1)
    assert "<th scope=\"col\">group</th>" in table
    assert table.count("<tr>") == 1 + circuit.n_edges_kept
    assert escape(HOSTILE_GROUPS[1], quote=False) in table  # a group name, as text
