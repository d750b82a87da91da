"""`circuit report`: the HTML page of a run and of a sweep, read as text and in a real browser,
and the page of a directory planted with hostile files and names.

The runs come from `circuit discover` on a tiny checkpoint (written into tmp_path); the sweep
is made by hand the way `circuit sweep` lays one out (`tau-<threshold>/` run directories, a
`sweep.json` with a row per threshold, plot files). The hostile cases use circuits written by
hand (no model): names, settings and files that carry script, links to the network, values of
the wrong kind, and outputs that are devices, pipes, links or the report's own inputs.

The browser tests load pages in headless Chromium (Debian's `chromium`, which `.ci/run`
installs) and read back the DOM the page's script built; they are skipped, saying so, only
where no Chromium can be found. The hostile page is opened with a local HTTP server that
records every request: the planted SVGs point at it, and it must record none.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import random
import re
import resource
import shutil
import stat
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
import yaml
from cli_helpers import error_line, invoke

from acdc.core.circuit import Circuit, load_circuit, write_circuit
from acdc.core.files import FileError
from acdc.core.graph import GraphShape, build_graph
from acdc.core.models import build_model, save_checkpoint
from acdc.evaluation.rank_scores import encode_score, rank_scores
from acdc.evaluation.sources import load_sweep
from acdc.reports import edge_data, read_source
from acdc.reports.page import content_security_policy, script_json
from acdc.reports.svg import ATTRIBUTES, ELEMENTS, clean_svg

HAS_DOT = shutil.which("dot") is not None
NO_DOT = "Graphviz `dot` missing (apt-get install -y graphviz): the report has no drawing"
TINY_CONFIG = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32,
               "act_fn": "gelu", "normalization_type": "LN", "d_vocab": 20, "n_ctx": 12}
PROMPTS = [
    {"clean": [1, 2, 3, 4, 5, 6], "corrupt": [1, 2, 9, 4, 5, 7]},
    {"clean": [3, 8, 2, 2, 9, 1], "corrupt": [3, 8, 5, 2, 9, 4]},
    {"clean": [7, 7, 1, 0, 4, 3, 2], "corrupt": [7, 7, 6, 0, 4, 11, 2]},
]
THRESHOLDS = ("0.0001", "0.001", "0.01")
PLOT_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" '
            'viewBox="0 0 200 100"><polyline points="0,90 100,40 200,10" fill="none" '
            'stroke="#1f77b4"/><text x="10" y="20">planted plot</text></svg>\n')


def png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG, all blue."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + b"\x1f\x77\xb4" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("report")
    checkpoint = directory / "model"
    save_checkpoint(build_model(TINY_CONFIG, seed=0), checkpoint, config=TINY_CONFIG)
    task = directory / "tiny.yaml"
    task.write_text(yaml.safe_dump({"name": "tiny", "metric": "kl", "threshold": 0.001,
                                    "model": str(checkpoint), "prompts": PROMPTS}))
    return directory


def discover(workspace: Path, out: Path, threshold: str) -> Path:
    result = invoke("discover", "--task", workspace / "tiny.yaml", "--out", out, "--threshold",
                    threshold, "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def run_dir(workspace) -> Path:
    return discover(workspace, workspace / "run", "0.001")


@pytest.fixture(scope="module")
def evaluated_run(workspace, run_dir) -> Path:
    copy = workspace / "evaluated"
    shutil.copytree(run_dir, copy)
    result = invoke("evaluate", copy, "--curve", "--quiet")
    assert result.exit_code == 0, result.output
    return copy


def sweep_record(sweep: Path, thresholds=THRESHOLDS) -> dict:
    """sweep.json as `circuit sweep` writes it (format circuit-sweep/1), for the runs there."""
    runs = []
    for threshold in thresholds:
        circuit = load_circuit(sweep / f"tau-{threshold}" / "circuit.json")
        runs.append({"threshold": float(threshold), "dir": f"tau-{threshold}",
                     "status": "finished", "n_edges_kept": circuit.n_edges_kept,
                     "n_nodes_kept": len(circuit.nodes()), "metric_circuit": 0.1,
                     "faithfulness": {"kl": 0.5 + float(threshold)}, "runtime_s": 0.1})
    return {"format": "circuit-sweep/1", "task": "tiny", "model": "model", "metric": "kl",
            "ablation": "corrupt", "finished": True, "n_edges_total": 94, "runs": runs}


@pytest.fixture(scope="module")
def sweep_dir(workspace) -> Path:
    """A sweep as `circuit sweep` lays it out, made by hand, with a comparison against a
    reference in a subdirectory, and plot files the report no longer pastes in."""
    sweep = workspace / "sweep"
    for threshold in THRESHOLDS:
        discover(workspace, sweep / f"tau-{threshold}", threshold)
    (sweep / "sweep.json").write_text(json.dumps(sweep_record(sweep)))
    (sweep / "edges-vs-threshold.svg").write_text(PLOT_SVG)
    (sweep / "faithfulness.png").write_bytes(png())
    result = invoke("compare", sweep, "--reference", sweep / "tau-0.001", "--out",
                    sweep / "compare", "--no-render")
    assert result.exit_code == 0, result.output
    return sweep


def report_of(target: Path, *args) -> str:
    out = target / "report.html" if target.is_dir() else target.with_name(
        target.name.removesuffix(".json") + ".html")
    result = invoke("report", target, *args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    return out.read_text(encoding="utf-8")


def edge_json(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="edge-data">(.*?)</script>', page,
                      re.S)
    assert found
    return json.loads(found.group(1))


def external_references(page: str) -> list[str]:
    """Everything the page would fetch: src/href attributes that are not in-page anchors,
    style sheets and imports, images."""
    found = [m.group(0) for m in re.finditer(r'\b(?:src|href)\s*=\s*"(?!#)[^"]*"', page)]
    found += re.findall(r"<link\b[^>]*>|@import|url\((?!#)[^)]*\)|<script\b[^>]*\bsrc=|<img\b"
                        r"|<image\b|<iframe\b|<object\b|<embed\b|<foreignObject\b", page, re.I)
    return found


def scripts(page: str) -> list[str]:
    """The page's `<script>` elements (any case), as opening tags."""
    return re.findall(r"<script\b[^>]*>", page, re.I)


def check_safe(page: str) -> None:
    """What any page must be: no fetch, exactly the page's own two scripts (its code and its
    data), no event handler or `javascript:` anywhere, the CSP first in <head>."""
    assert external_references(page) == []
    assert scripts(page) == ['<script type="application/json" id="edge-data">', "<script>"]
    for tag in re.findall(r"<[A-Za-z][^>]*>", page):  # attribute values hold no " < >
        names = re.sub(r'="[^"]*"', "", tag).lower()
        assert not re.search(r"\son[a-z]+\b|\s(src|style|xml:base)\b", names), tag
        assert not re.search(r'="\s*(javascript|data|vbscript):', tag, re.I), tag
    head = page[:page.index("</head>")]
    assert head.index('http-equiv="Content-Security-Policy"') < head.index("<style>")


# --------------------------------------------------------------------------- the page as text


def test_report_of_a_run_without_evaluation(run_dir):
    page = report_of(run_dir)
    circuit = load_circuit(run_dir / "circuit.json")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>tiny on model, kl threshold 0.001</title>" in page
    assert 'id="no-evaluation"' in page
    assert f"circuit evaluate {run_dir} --curve" in page  # the command that makes it
    check_safe(page)
    data = edge_json(page)
    assert len(data["rows"]) == len(circuit.graph.edges)
    kept = data["columns"].index("kept")
    assert sum(row[kept] for row in data["rows"]) == circuit.n_edges_kept
    assert "rank score" not in data["columns"]
    assert "repeat (repeats the run" in page and "circuit discover" in page  # run.yaml
    assert 'id="sweep"' not in page and 'id="comparisons"' not in page
    if HAS_DOT:
        drawn = re.search(r'<div class="drawing" id="drawing">(<svg.*?</svg>)\s*</div>', page,
                          re.S)
        assert drawn and "<?xml" not in drawn.group(1) and "<!DOCTYPE svg" not in drawn.group(1)
        assert drawn.group(1).count('class="edge"') == circuit.n_edges_kept
        assert 'id="circuit-graph0"' in drawn.group(1)  # ids prefixed, one namespace a drawing
        assert "stroke-width" in drawn.group(1)  # widths by |score|
        assert "xlink:title=" in drawn.group(1)  # the tooltips survive the allow-list


def test_report_with_evaluation_has_the_metrics_and_a_redrawn_curve(evaluated_run, tmp_path):
    page = report_of(evaluated_run)
    evaluation = json.loads((evaluated_run / "evaluation.json").read_text())
    assert 'id="no-evaluation"' not in page
    metrics = re.search(r'<section id="metrics">(.*?)</section>', page, re.S).group(1)
    for name, values in evaluation["metrics"].items():
        assert f"<td>{name}" in metrics
        assert f"{values['faithfulness']:.4g}" in metrics
    assert "CPR (higher is better)" in metrics
    assert re.search(r'<figure class="plot" data-plot="curve"><svg\b', metrics)
    assert "<style" not in metrics and "style=" not in metrics  # read into attributes
    check_safe(page)
    # The curve is drawn from evaluation.json: the SVG file beside it is never read.
    copy = tmp_path / "run"
    shutil.copytree(evaluated_run, copy)
    (copy / "evaluation-curve.svg").write_text(PLOT_SVG)
    (copy / "evaluation-curve.png").unlink()
    assert "planted plot" not in report_of(copy)


def test_report_of_a_sweep(sweep_dir):
    page = report_of(sweep_dir)
    sweep = load_sweep(sweep_dir)
    assert [run.threshold for run in sweep.runs] == [float(t) for t in THRESHOLDS]
    section = re.search(r'<section id="sweep">(.*?)</section>', page, re.S).group(1)
    assert "From sweep.json." in section
    assert section.count("<tr") == 1 + len(THRESHOLDS)
    assert "<th>faithfulness</th>" not in section  # not a scalar: left out of the table
    assert '<tr class="current"><td>0.001</td>' in section  # the middle threshold is drawn
    assert re.search(r'<figure class="plot" data-plot="sweep"><svg\b', section)  # re-drawn
    assert "planted plot" not in page and "image/png" not in page  # files there: not shown
    comparisons = re.search(r'<section id="comparisons">(.*?)</section>', page, re.S).group(1)
    assert "ROC against" in comparisons and 'data-plot="roc"><svg' in comparisons
    data = edge_json(page)
    rank = data["columns"].index("rank score")
    expected = rank_scores([run.threshold for run in sweep.runs],
                           [run.circuit.kept for run in sweep.runs])
    assert [row[rank] for row in data["rows"]] == [encode_score(s) for s in expected]
    assert "inf" in [row[rank] for row in data["rows"]]
    check_safe(page)


def test_report_of_a_sweep_at_a_threshold(sweep_dir, tmp_path):
    out = tmp_path / "r.html"
    result = invoke("report", sweep_dir, "--threshold", "0.01", "--out", out)
    assert result.exit_code == 0, result.output
    assert '<tr class="current"><td>0.01</td>' in out.read_text()
    result = invoke("report", sweep_dir, "--threshold", "0.5", "--out", out)
    assert result.exit_code == 1 and "no finished run at that threshold" in error_line(result)


def test_a_sweep_without_sweep_json_is_tabled_from_its_runs(sweep_dir, tmp_path):
    copy = tmp_path / "sweep"
    for threshold in THRESHOLDS[:2]:
        shutil.copytree(sweep_dir / f"tau-{threshold}", copy / f"tau-{threshold}")
    source = read_source(copy)
    assert source.sweep_table is None and source.sweep_plot is None
    page = report_of(copy)
    assert "no sweep.json" in page and "No sweep plot" in page
    assert len(edge_data(source)["rows"]) == len(source.circuit.graph.edges)


def test_report_bad_input_is_one_line(run_dir, tmp_path):
    result = invoke("report", tmp_path)  # a directory without a circuit
    assert result.exit_code == 1
    assert "neither a run directory (no circuit.json) nor a sweep" in error_line(result)
    result = invoke("report", tmp_path / "missing")
    assert result.exit_code == 1 and "no such file or directory" in error_line(result)
    (tmp_path / "tau-0.1").mkdir()
    result = invoke("report", tmp_path)
    assert result.exit_code == 1 and "empty sweep" in error_line(result)
    result = invoke("report", run_dir, "--threshold", "0.1", "--out", tmp_path / "x.html")
    assert result.exit_code == 1 and "is a run, not a sweep" in error_line(result)
    result = invoke("report", run_dir, "--comparison", tmp_path, "--out", tmp_path / "x.html")
    assert result.exit_code == 1 and "not a `circuit compare` output" in error_line(result)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "evaluation.json").write_text("{not json")
    shutil.copy(run_dir / "circuit.json", tmp_path / "bad" / "circuit.json")
    result = invoke("report", tmp_path / "bad")
    assert result.exit_code == 0, result.output  # left out, and said so
    line = f"{tmp_path / 'bad' / 'evaluation.json'}: not valid JSON (line 1, column 2"
    assert f"warning: {line}" in result.stderr and "; left out" in result.stderr
    assert line in (tmp_path / "bad" / "report.html").read_text()


def test_report_of_a_mib_file_beside_its_run(evaluated_run, tmp_path):
    mib = tmp_path / "circuit.mib.json"
    assert invoke("export", evaluated_run, "-f", "mib", "--out", mib).exit_code == 0
    shutil.copy(evaluated_run / "run.yaml", tmp_path / "run.yaml")
    shutil.copy(evaluated_run / "evaluation.json", tmp_path / "evaluation.json")  # not its own
    page = report_of(mib)
    assert (tmp_path / "circuit.mib.html").is_file()
    assert "<title>MIB circuit file, 2 layers x 2 heads</title>" in page
    assert "No circuit.mib.evaluation.json beside" in page
    assert f"circuit evaluate {mib} --curve" in page


def test_without_graphviz_the_page_says_how_to_get_the_drawing(run_dir, tmp_path, monkeypatch):
    import acdc.exports.dot
    import acdc.reports.page

    monkeypatch.setattr(acdc.exports.dot.shutil, "which", lambda name: None)
    monkeypatch.setattr(acdc.reports.page, "_graphviz", lambda: False)
    out = tmp_path / "r.html"
    result = invoke("report", run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "warning: Graphviz `dot` not found: no drawing" in result.stderr
    page = out.read_text()
    assert 'id="drawing"' not in page and "apt-get install -y graphviz" in page
    # With the run's own circuit.svg, that file is shown, through the allow-list.
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "circuit.svg").write_text(hostile_svg("http://127.0.0.1:9/"))
    page = report_of(copy)
    assert 'id="drawing"><svg' in page and "planted drawing" in page
    check_safe(page)


# --------------------------------------------------------------------------- hostile input

PLANTED = ("document.title='pwned';"
           "document.body.appendChild(document.createElement('hr')).id='pwned'")


def hostile_svg(server: str) -> str:
    """An SVG that runs script and fetches from `server` in every way an SVG can, around a
    harmless drawing (`planted drawing`)."""
    return f"""<?xml version="1.0"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="300"
     height="100" onload="{PLANTED}" style="background: url({server}style-attr.png)">
 <SCRIPT>{PLANTED}</SCRIPT><script type="text/javascript"><![CDATA[{PLANTED}]]></script>
 <Script xlink:href="{server}script.js"/><script href="{server}script2.js"/>
 <style>@import url({server}import.css); rect {{ fill: url({server}fill.png) }}</style>
 <image href="{server}image.png" width="10" height="10"/>
 <image xlink:href="{server}image2.png" width="10" height="10" onerror="{PLANTED}"/>
 <foreignObject width="100" height="50"><iframe xmlns="http://www.w3.org/1999/xhtml"
   src="{server}iframe.html"></iframe><img xmlns="http://www.w3.org/1999/xhtml"
   src="{server}img.png" onerror="{PLANTED}"/></foreignObject>
 <use href="{server}use.svg#a"/><use xlink:href="{server}use2.svg#a"/>
 <a xlink:href="javascript:{PLANTED}"><text x="5" y="20">planted drawing</text></a>
 <a href="javascript:{PLANTED}"><rect width="5" height="5"/></a>
 <animate attributeName="href" to="javascript:{PLANTED}" begin="0s"/>
 <set attributeName="onclick" to="{PLANTED}"/>
 <filter id="f"><feImage href="{server}feimage.png"/></filter>
 <rect width="10" height="10" fill="url({server}fill2.png#x)" filter="url(#f)"
       style="fill: image-set(&quot;{server}set.png&quot; 1x); stroke: red"
       onmouseover="{PLANTED}" onclick="{PLANTED}" ONLOAD="{PLANTED}"/>
 <rect width="10" height="10" style="fill: u\\72l({server}escaped.png)"/>
 <text x="5" y="40" font-family="x&apos;);background:url({server}font.png">&lt;script&gt;
 {PLANTED}&lt;/script&gt;</text>
 <iframe src="{server}iframe2.html"/><embed src="{server}embed.swf"/>
 <object data="{server}object.html"/><link rel="stylesheet" href="{server}link.css"/>
</svg>
"""


HOSTILE_NAME = "<img src=x onerror=\"" + PLANTED.replace("'", "`") + "\">"
HOSTILE_TEXT = f"</title><script>{PLANTED}</script>\"' javascript:{PLANTED} <!-- $\\sqrt{{$"


def hand_circuit(seed: int, threshold=0.01, **settings) -> Circuit:
    graph = build_graph(GraphShape(2, 2, True))
    rng = random.Random(seed)
    kept = tuple(rng.random() < 0.5 for _ in graph.edges)
    scores = tuple(None if i % 5 == 0 else 0.01 * (i + seed) for i in range(len(graph.edges)))
    return Circuit(graph, kept, scores,
                   {"model": "models/tiny", "task": "tiny", "method": "acdc",
                    "threshold": threshold, "metric": "kl", "ablation": "corrupt",
                    "granularity": "qkv", **settings},
                   {"n_edges_decided": len(kept), "metric_circuit": 0.1, "metric_full": 0.0,
                    "runtime_s": 0.5, "partial": False})


def hand_sweep(directory: Path, thresholds=("0.001", "0.01", "0.1"), **settings) -> Path:
    for i, threshold in enumerate(thresholds):
        (directory / f"tau-{threshold}").mkdir(parents=True)
        write_circuit(hand_circuit(i, threshold=float(threshold), **settings),
                      directory / f"tau-{threshold}" / "circuit.json")
    return directory


def plant(directory: Path, server: str) -> Path:
    """A sweep with hostile names and files everywhere the report looks."""
    sweep = hand_sweep(directory, task=HOSTILE_TEXT, model=f"javascript:{PLANTED}",
                       note={HOSTILE_NAME: HOSTILE_TEXT})
    svg = hostile_svg(server)
    for name in ("sweep.svg", "evil.svg", HOSTILE_NAME + ".svg"):
        (sweep / name).write_text(svg)
    (sweep / "faithfulness.png").write_text(svg)  # an SVG named .png
    for run in sweep.glob("tau-*"):
        for name in ("circuit.svg", "evaluation-curve.svg"):
            (run / name).write_text(svg)
        (run / "run.yaml").write_text(yaml.safe_dump({
            "task": HOSTILE_TEXT, HOSTILE_NAME: HOSTILE_TEXT, "command": f"circuit {HOSTILE_TEXT}",
            "nested": {HOSTILE_TEXT: [HOSTILE_NAME]}}))
    middle = sweep / "tau-0.01"
    curve_points = [{"fraction": f, "n_edges": 1, "n_edges_kept": 1, "values": {"kl": 0.1},
                     "faithfulness": {"kl": f}} for f in (0.1, 0.5, 1.0)]
    (middle / "evaluation.json").write_text(json.dumps({
        "format": "evaluation/1", "task": HOSTILE_TEXT, "model": HOSTILE_NAME,
        "ablation": HOSTILE_TEXT, "n_edges_kept": 3, "n_prompts": 2, "n_positions": 2,
        "metrics": {"kl": {"higher_is_better": False, "faithfulness": 0.5,
                           "full": {"mean": 0.1}, "empty": {"mean": 1.0}}},
        "curve": {"ranking": HOSTILE_TEXT, "n_edges_total": 94, "n_scored": 94, "pruned": True,
                  "cpr": {"kl": 0.5}, "cmd": {"kl": 0.5}, "points": curve_points}}))
    record = sweep_record(sweep, ("0.001", "0.01", "0.1"))
    record.update(task=HOSTILE_TEXT, model=HOSTILE_NAME, ablation=HOSTILE_TEXT)
    for row in record["runs"]:
        row[HOSTILE_NAME] = HOSTILE_TEXT
    (sweep / "sweep.json").write_text(json.dumps(record))
    compare = sweep / HOSTILE_NAME  # a `circuit compare` output directory, names and all
    result = invoke("compare", sweep / "tau-0.01", sweep / "tau-0.1", "--reference",
                    sweep / "tau-0.001", "--out", compare, "--no-render")
    assert result.exit_code == 0, result.output
    comparison = json.loads((compare / "comparison.json").read_text())
    comparison["inputs"]["A"]["name"] = HOSTILE_TEXT
    comparison["reference"]["name"] = HOSTILE_NAME
    (compare / "comparison.json").write_text(json.dumps(comparison))
    (compare / "union.svg").write_text(svg)
    (compare / "roc.svg").write_text(svg)
    roc_compare = sweep / "roc"
    result = invoke("compare", sweep, "--reference", sweep / "tau-0.001", "--out", roc_compare,
                    "--no-render")
    assert result.exit_code == 0, result.output
    roc = json.loads((roc_compare / "roc.json").read_text())
    roc["sweeps"][0]["name"] = HOSTILE_TEXT
    roc["reference"]["name"] = HOSTILE_NAME
    (roc_compare / "roc.json").write_text(json.dumps(roc))
    (roc_compare / "roc.svg").write_text(svg)
    return sweep


def test_a_hostile_directory_gives_a_page_with_no_script_and_no_fetch(tmp_path):
    sweep = plant(tmp_path / HOSTILE_NAME, "http://127.0.0.1:9/")
    result = invoke("report", sweep)
    assert result.exit_code == 0, result.output
    page = (sweep / "report.html").read_text()
    check_safe(page)
    assert "<script>document" not in page.lower()
    assert page.count('data-plot="union"><svg') == 1  # the union drawing, cleaned
    assert "planted drawing" in page and 'data-plot="curve"' in page
    assert 'data-plot="sweep"' in page and 'data-plot="roc"' in page
    for name in (HOSTILE_NAME, HOSTILE_TEXT):
        assert name not in page  # only ever escaped
    assert "&lt;img src=x onerror=&quot;" in page and "&lt;/title&gt;&lt;script&gt;" in page


def test_rank_scores_are_the_largest_threshold_an_edge_is_kept_at(tmp_path):
    sweep = load_sweep(hand_sweep(tmp_path / "sweep"))
    thresholds = [run.threshold for run in sweep.runs]
    ranks = rank_scores(thresholds, [run.circuit.kept for run in sweep.runs])
    for i, rank in enumerate(ranks):
        kept_at = [run.threshold for run in sweep.runs if run.circuit.kept[i]]
        if rank == float("inf"):
            assert len(kept_at) == len(thresholds)
        elif rank is None:
            assert kept_at == []
        else:
            assert rank == max(kept_at) and len(kept_at) < len(thresholds)
    assert {float("inf"), None} <= set(ranks)


@pytest.mark.parametrize("name", ["tau-inf", "tau-1e999", "tau-nan", "tau--1", "tau-+1",
                                  "tau-1_0", "tau- 1", "tau-Infinity"])
def test_run_folders_that_are_no_threshold_are_left_out_by_report_and_compare(name, tmp_path):
    sweep = hand_sweep(tmp_path / "sweep")
    (sweep / name).mkdir()
    write_circuit(hand_circuit(5), sweep / name / "circuit.json")
    result = invoke("report", sweep)
    assert result.exit_code == 0, result.output
    said = f"left out {name} (not a threshold: a finite number >= 0)"
    assert said in result.stderr
    data = edge_json((sweep / "report.html").read_text())
    ranks = {row[-1] for row in data["rows"]}
    assert ranks <= {"inf", None, 0.001, 0.01, 0.1}  # the named run counts for nothing
    result = invoke("compare", sweep, "--reference", sweep / "tau-0.001", "--out",
                    tmp_path / "cmp", "--no-render")
    assert result.exit_code == 0 and said in result.stderr


def test_two_folders_of_one_threshold_are_one_error_in_report_and_compare(tmp_path):
    sweep = hand_sweep(tmp_path / "sweep")
    shutil.copytree(sweep / "tau-0.01", sweep / "tau-0.010")
    said = "tau-0.01 and tau-0.010 are both threshold 0.01"
    result = invoke("report", sweep)
    assert result.exit_code == 1 and said in error_line(result)
    result = invoke("compare", sweep, "--reference", "ioi-gpt2")
    assert result.exit_code == 1 and said in error_line(result)


def _unreadable(monkeypatch, denied: Path) -> None:
    """Make `denied` unreadable as a directory is to a user without permission (the tests run
    as root, who may read anything): listing it, or looking at anything in it, raises
    PermissionError, as os.scandir and os.stat do then."""
    real_scandir, real_stat = os.scandir, os.stat

    def scandir(path=".", *args):
        if Path(os.fsdecode(path)) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path, *args)

    def stat_(path, *args, **kwargs):
        if isinstance(path, (str, bytes, os.PathLike)) and denied in Path(
                os.fsdecode(path)).parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat_)


@pytest.mark.parametrize("denied", ["sweep", "tau-0.01"])
def test_an_unreadable_folder_is_one_line_in_report_and_compare(denied, tmp_path, monkeypatch):
    sweep = hand_sweep(tmp_path / "sweep")
    path = sweep if denied == "sweep" else sweep / denied
    _unreadable(monkeypatch, path)
    result = invoke("report", sweep)
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith(f"error: {path}") and line.endswith("(permission denied)"), line
    result = invoke("compare", sweep, "--reference", "ioi-gpt2")
    assert result.exit_code == 1 and error_line(result) == line


def test_a_file_where_a_run_folder_should_be(tmp_path):
    """No permission needed: `tau-0.05` is a file, `tau-0.5/circuit.json` a directory."""
    sweep = hand_sweep(tmp_path / "sweep")
    (sweep / "tau-0.05").write_text("not a run")
    result = invoke("report", sweep)
    assert result.exit_code == 0, result.output  # not a directory: not a run
    (sweep / "tau-0.5" / "circuit.json").mkdir(parents=True)
    result = invoke("report", sweep)
    assert result.exit_code == 1
    assert f"{sweep / 'tau-0.5' / 'circuit.json'}: is a directory" in error_line(result)


@pytest.mark.parametrize("kind", ["/dev/null", "fifo", "device copy"])
def test_a_target_that_is_no_file_is_one_line(kind, tmp_path):
    target = Path("/dev/null") if kind == "/dev/null" else tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device copy":
        try:
            os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("mknod needs root (CAP_MKNOD); /dev/null itself is tested")
    result = invoke("report", target, "--out", tmp_path / "r.html")
    assert result.exit_code == 1
    assert f"{target}: is not a regular file (a device, a pipe or a socket)" in error_line(result)
    assert not (tmp_path / "r.html").exists()


def _outputs(run: Path, tmp_path: Path) -> dict[str, Path]:
    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "elsewhere.html")
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    found = {"/dev/null": Path("/dev/null"), "a link": link, "a FIFO": fifo,
             "a directory": tmp_path, "its circuit": run / "circuit.json",
             "its run.yaml": run / "run.yaml", "its evaluation": run / "evaluation.json",
             "a decision log": tmp_path / "decisions.jsonl",
             "a sweep's record": tmp_path / "sweep.json",
             "a run file's name": tmp_path / "new" / "run.yaml"}
    (tmp_path / "decisions.jsonl").write_text("{}\n")
    (tmp_path / "sweep.json").write_text("{}\n")
    try:
        os.mknod(tmp_path / "null.html", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        found["a device copy"] = tmp_path / "null.html"
    except PermissionError:
        pass  # not root: /dev/null itself stands for devices
    return found


def test_outputs_that_are_no_place_for_a_page_are_refused(evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    before = {p: p.read_bytes() for p in run.iterdir()}
    for what, out in _outputs(run, tmp_path).items():
        result = invoke("report", run, "--out", out)
        assert result.exit_code == 1, (what, result.output)
        line = error_line(result)
        assert line.startswith(f"error: --out {out}: "), (what, line)
        assert any(words in line for words in (
            "symbolic link", "not a regular file", "is a directory", "is this command's input",
            "would overwrite a run's", "is the name of a run's file")), (what, line)
    assert {p: p.read_bytes() for p in run.iterdir()} == before
    assert not (tmp_path / "elsewhere.html").exists() and not (tmp_path / "new").exists()
    # The default report.html, when it is a link, is refused too.
    (run / "report.html").unlink(missing_ok=True)
    (run / "report.html").symlink_to(tmp_path / "elsewhere.html")
    result = invoke("report", run)
    assert result.exit_code == 1 and "report.html: is a symbolic link" in error_line(result)


def test_a_full_disk_leaves_no_half_written_page(run_dir, tmp_path, monkeypatch):
    import acdc.core.files

    out = tmp_path / "new" / "deeper" / "report.html"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(acdc.core.files.os, "fsync", full)
    result = invoke("report", run_dir, "--out", out)
    assert result.exit_code == 1
    assert f"{out}: cannot write (no space left on the device" in error_line(result)
    assert not (tmp_path / "new").exists()  # nothing written, the new folders removed
    assert list(tmp_path.iterdir()) == []


def _bounded(*args) -> tuple:
    """Run `circuit ARGS` in-process: the result, seconds taken, peak memory growth (MB)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began = time.perf_counter()
    result = invoke(*args)
    took = time.perf_counter() - began
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return result, took, grew


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
    for i in range(8))

MALFORMED = {  # file: (content, what the one line says)
    "nested evaluation": ("evaluation.json", "[" * 100_000 + "]" * 100_000,
                          "nested too deeply"),
    "long integer": ("evaluation.json", '{"n_prompts": ' + "7" * 100_000 + "}",
                     "a whole number of more than"),
    "evaluation a list": ("evaluation.json", "[1, 2]", "holds a list, expected an object"),
    "metrics a string": ("evaluation.json", '{"metrics": "kl"}',
                         "metrics is 'kl', expected an object"),
    "metrics of strings": ("evaluation.json", '{"metrics": {"kl": {"faithfulness": "high"}}}',
                           "metrics.kl.faithfulness is 'high', expected a number"),
    "unknown metric": ("evaluation.json", '{"metrics": {"<b>": {}}}',
                       "metrics names the metric '<b>', not one of"),
    "curve of strings": ("evaluation.json", '{"curve": {"cpr": {"kl": "x"}}}',
                         "curve.cpr.kl is 'x', expected a number"),
    "alias bomb": ("run.yaml", BILLION_LAUGHS, "once its aliases (*name) are expanded"),
    "run.yaml a list": ("run.yaml", "- 1\n- 2\n", "holds a list, expected the mapping"),
    "run.yaml not utf-8": ("run.yaml", b"task: \xff\xfe", "not a text file"),
    "sweep.json nested": ("../sweep.json", "[" * 100_000, "not valid JSON"),
    "sweep rows wrong": ("../sweep.json", '{"format": "circuit-sweep/1", "runs": [{"threshold":'
                         ' 0.1, "status": "finished", "n_edges_kept": -3}]}',
                         "runs[0].n_edges_kept is -3, expected a whole number >= 0"),
    "sweep too many rows": ("../sweep.json", json.dumps([{"threshold": 1}] * 10_001),
                            "10,001 rows, more than"),
    "comparison wrong": ("../compare/comparison.json", '{"edges": {"jaccard": 7}}',
                         "edges.jaccard is 7, expected a number from 0 to 1"),
    "roc wrong": ("../compare/roc.json", '{"sweeps": [{"edge": {"points": [{"fpr": 2}]}}]}',
                  "sweeps[0].edge.points[0].fpr is 2, expected a number from 0 to 1"),
    "union not svg": ("../compare/union.svg", "<html><script>alert(1)</script></html>",
                      "not an SVG document (its root is <html>)"),
    "union entities": ("../compare/union.svg", '<!DOCTYPE svg [<!ENTITY a "aaaa">]><svg/>',
                       "declares entities or elements in its DOCTYPE"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_left_out_in_one_line_quickly(case, tmp_path):
    sweep = hand_sweep(tmp_path / "sweep")
    (sweep / "compare").mkdir()
    (sweep / "compare" / "comparison.json").write_text("{}")
    name, content, said = MALFORMED[case]
    path = (sweep / "tau-0.01" / name).resolve()
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result, took, grew = _bounded("report", sweep)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if str(path) in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {path}: "), result.stderr
    assert said in lines[0] and lines[0].endswith("; left out"), lines[0]
    assert took < 10 and grew < 1000, (took, grew)
    assert said in (sweep / "report.html").read_text().replace("&#x27;", "'").replace(
        "&lt;", "<").replace("&gt;", ">")


def test_script_json_cannot_end_its_block():
    text = script_json({"a": "</script><!--<script>", "b": "&amp;"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!--<script>", "b": "&amp;"}


# --------------------------------------------------------------------------- the allow-list


def test_the_allow_list_keeps_what_graphviz_and_matplotlib_draw(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2], label="kl")
    ax.set_xscale("log")
    ax.legend()
    fig.savefig(tmp_path / "plot.svg")
    plt.close(fig)
    text = (tmp_path / "plot.svg").read_text()
    cleaned = clean_svg(text, "p")
    for element in ("path", "use", "clipPath", "g"):
        assert cleaned.count(f"<{element} ") + cleaned.count(f"<{element}>") == \
            len(re.findall(rf"<{element}\b", text)), element
    assert "style=" not in cleaned and "fill=" in cleaned and 'clip-path="url(#p-' in cleaned
    assert 'xlink:href="#p-' in cleaned
    if HAS_DOT:
        dot = subprocess.run(["dot", "-Tsvg"], input="digraph { a -> b [tooltip=\"a<b\"] }",
                             capture_output=True, text=True, check=True).stdout
        cleaned = clean_svg(dot, "q")
        assert cleaned.count("<path") == dot.count("<path")
        assert cleaned.count("<polygon") == dot.count("<polygon")
        assert 'xlink:title="a&lt;b"' in cleaned and 'id="q-graph0"' in cleaned


def test_the_allow_list_drops_every_way_to_run_or_fetch():
    cleaned = clean_svg(re.sub(r"<!DOCTYPE[^>]*>", "", hostile_svg("http://127.0.0.1:9/")),
                        "x")
    assert "127.0.0.1" not in cleaned and "javascript" not in cleaned.lower()
    for tag in re.findall(r"<([A-Za-z]+)", cleaned):
        assert tag in ELEMENTS
    for attribute in re.findall(r"\s([A-Za-z:-]+)=\"", cleaned):
        assert attribute in ATTRIBUTES and not attribute.lower().startswith("on")
    assert "planted drawing" in cleaned
    assert cleaned.count("<script") == 0 and "&lt;script&gt;" in cleaned  # text stays text
    for bad in ('<svg><rect fill="url(http://x)"/></svg>', '<svg><rect fill="URL(//x)"/></svg>',
                '<svg><rect style="fill:url( \'http://x\' )"/></svg>',
                '<svg><rect fill="url(#a) url(http://x)"/></svg>',
                '<svg><rect fill="expression(alert(1))"/></svg>',
                '<svg><rect fill="/**/url(http://x)"/></svg>',
                '<svg><use href=" http://x/#a"/></svg>', '<svg><use href="#a b"/></svg>'):
        assert clean_svg(bad, "x") in ("<svg><rect></rect></svg>", "<svg><use></use></svg>"), bad
    for refused in ('<!DOCTYPE svg [<!ENTITY a "b">]><svg>&a;</svg>',
                    '<!DOCTYPE svg [<!ENTITY a SYSTEM "http://x/">]><svg>&a;</svg>',
                    '<!DOCTYPE svg SYSTEM "http://x/"><svg>&a;</svg>', "<svg><rect></svg>",
                    "<html/>", "", "<svg/><svg/>", "\x00", "<svg>" + "<g>" * 300):
        with pytest.raises(FileError):
            clean_svg(refused, "x", "t.svg")


def test_the_content_security_policy_allows_only_the_pages_own_code():
    policy = content_security_policy("body{}", "var a;")
    assert policy.startswith("default-src 'none'; script-src 'sha256-")
    assert "unsafe" not in policy and "http" not in policy and "data:" not in policy
    assert "base-uri 'none'" in policy and "form-action 'none'" in policy


# --------------------------------------------------------------------------- in a browser


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = find_chromium()
NO_CHROMIUM = ("no Chromium found (chromium, chromium-browser or google-chrome on PATH; "
               "`apt-get install -y chromium` installs Debian's): the report was not opened "
               "in a browser")
# As this machine kind's notes say: no sandbox as root, and none of the background network
# requests a closed network refuses.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--enable-logging=stderr", "--v=0")


def browse(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args,
                           page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path)})


def console(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
@pytest.mark.skipif(not HAS_DOT, reason=NO_DOT)
@pytest.mark.parametrize("which", ["run", "sweep"])
def test_the_page_in_headless_chromium(which, evaluated_run, sweep_dir, tmp_path):
    target = evaluated_run if which == "run" else sweep_dir
    report_of(target)
    page = target / "report.html"
    done = browse(page, tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console(done) == [], console(done)  # no message at all: no error, no CSP report
    dom = done.stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-report-ready="1"' in body and "data-errors" not in body
    plots = len(re.findall(r'<figure class="plot" data-plot="[a-z]+"><svg', dom))
    assert plots == (1 if which == "run" else 2)  # the curve; the sweep's plot and the ROC
    circuit = read_source(target).circuit
    drawn = re.search(r'<div class="drawing" id="drawing">(.*?)</div>', dom, re.S).group(1)
    assert drawn.count('class="edge"') == circuit.n_edges_kept
    table = re.search(r'<table id="edge-table"[^>]*>(.*?)</table>', dom, re.S).group(1)
    assert table.count("<tr>") == 1 + min(circuit.n_edges_kept, 1000)  # built by the script
    assert f"{circuit.n_edges_kept} of {len(circuit.graph.edges)} edges" in dom

    shot = tmp_path / f"{which}.png"
    done = browse(page, tmp_path, "--window-size=1280,2400", f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request it gets (the planted SVGs point here) and answers 200 with
    script, so that anything fetched would also show."""

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the handler's name)
        self.requests.append(self.path)
        body = f"{PLANTED};".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", _Recorder.requests
    finally:
        server.shutdown()
        server.server_close()


def _ran(dom: str) -> bool:
    """Whether a planted script ran: it renames the page and adds <hr id="pwned">."""
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    return 'id="pwned"' in dom or (title is not None and title.group(1) == "pwned")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_harness_sees_a_planted_script_and_a_fetch(recorder, tmp_path):
    """The check below can fail: the hostile SVG pasted into a page as it is (what the report
    did before) runs its script and fetches from the recorder."""
    server, requests = recorder
    page = tmp_path / "raw.html"
    svg = re.sub(r"<\?xml[^>]*>|<!DOCTYPE[^>]*>", "", hostile_svg(server))
    page.write_text(f"<!DOCTYPE html><html><head><title>raw</title></head><body>{svg}"
                    f"</body></html>")
    done = browse(page, tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _ran(done.stdout)
    assert requests, "the raw SVG fetched nothing"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
@pytest.mark.parametrize("graphviz", [True, False])
def test_a_hostile_directory_runs_nothing_and_fetches_nothing_in_chromium(
        graphviz, recorder, tmp_path, monkeypatch):
    server, requests = recorder
    if not graphviz:  # the run's own circuit.svg is then shown, through the allow-list
        import acdc.exports.dot
        import acdc.reports.page

        monkeypatch.setattr(acdc.exports.dot.shutil, "which", lambda name: None)
        monkeypatch.setattr(acdc.reports.page, "_graphviz", lambda: False)
    elif not HAS_DOT:
        pytest.skip(NO_DOT)
    sweep = plant(tmp_path / HOSTILE_NAME, server)
    result = invoke("report", sweep)
    assert result.exit_code == 0, result.output
    done = browse(sweep / "report.html", tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert not _ran(dom), "a planted script ran"
    assert requests == [], requests
    assert console(done) == [], console(done)  # no CSP violation either: nothing got through
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-report-ready="1"' in body and "data-errors" not in body
    assert "planted drawing" in dom  # the cleaned union drawing (and circuit.svg) is there
    assert re.search(r"<title>tiny on models/tiny", dom) is None  # the hostile task's title
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert title.startswith("&lt;/title&gt;&lt;script&gt;")  # the task name, as text


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_content_security_policy_blocks_what_might_get_past(recorder, run_dir, tmp_path):
    """Belt and braces: a script and an image slipped into a report (as if the allow-list had
    a hole) are blocked by the page's policy, and the page's own script still runs."""
    server, requests = recorder
    out = tmp_path / "r.html"
    assert invoke("report", run_dir, "--out", out).exit_code == 0
    html = out.read_text()
    slipped = (f"<script>{PLANTED}</script><img src=\"{server}img.png\">"
               f"<svg><image href=\"{server}image.png\"/></svg>"
               f"<div style=\"background:url({server}bg.png)\">x</div>")
    out.write_text(html.replace("<footer>", slipped + "<footer>"))
    done = browse(out, tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not _ran(done.stdout) and requests == [], requests
    assert 'data-report-ready="1"' in done.stdout  # the page's own script, allowed by hash
    assert any("Content Security Policy" in line for line in console(done)), done.stderr[-2000:]


# --------------------------------------------------------------------------- its layer


def _imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_report_reuses_the_readers_of_evaluation():
    """The report sits above evaluation (tests/test_layers.py checks the layers) and reads
    sweeps and rank scores through evaluation's readers, not copies of them."""
    root = Path(__file__).resolve().parent.parent
    report = set().union(*(_imports(p) for p in (root / "acdc" / "reports").glob("*.py")))
    assert {"acdc.evaluation.sources", "acdc.evaluation.rank_scores"} <= report  # no copies
