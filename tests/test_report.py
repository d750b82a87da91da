"""`circuit report`: the HTML page of a run and of a sweep, read as text and in a real browser.

The runs come from `circuit discover` on a tiny checkpoint (written into tmp_path); the sweep
is made by hand the way `circuit sweep` lays one out (`tau-<threshold>/` run directories, a
`sweep.json` with a row per threshold, plot files). The browser test loads the page in
headless Chromium (Debian's `chromium`, which `.ci/run` installs) and reads back the DOM the
page's script built; it is skipped, saying so, only where no Chromium can be found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import yaml
from cli_helpers import error_line, invoke

from acdc.core.circuit import load_circuit
from acdc.core.models import build_model, save_checkpoint
from acdc.evaluation.rank_scores import encode_score, rank_scores
from acdc.evaluation.sources import load_sweep
from acdc.report import edge_data, read_source

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
            'viewBox="0 0 200 100"><defs><clipPath id="c"><rect width="200" height="100"/>'
            '</clipPath></defs><polyline clip-path="url(#c)" points="0,90 100,40 200,10" '
            'fill="none" stroke="#1f77b4"/><text x="10" y="20">edges kept</text></svg>\n')




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


@pytest.fixture(scope="module")
def sweep_dir(workspace) -> Path:
    """A sweep as `circuit sweep` lays it out, made by hand, with a comparison against a
    reference in a subdirectory."""
    sweep = workspace / "sweep"
    rows = []
    for threshold in THRESHOLDS:
        run = discover(workspace, sweep / f"tau-{threshold}", threshold)
        circuit = load_circuit(run / "circuit.json")
        rows.append({"threshold": float(threshold), "edges_kept": circuit.n_edges_kept,
                     "nodes_kept": len(circuit.nodes()), "faithfulness": {"kl": 0.5},
                     "runtime_s": 0.1})
    (sweep / "sweep.json").write_text(json.dumps({"format": "sweep/1", "task": "tiny",
                                                  "runs": rows}))
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
    return json.loads(found.group(1).replace("<\\/", "</"))


def external_references(page: str) -> list[str]:
    """Everything the page would fetch: src/href attributes that are not `data:` URIs or
    in-page anchors, style sheets and imports."""
    found = [m.group(0) for m in re.finditer(r'\b(?:src|href)\s*=\s*"(?!data:|#)[^"]*"', page)]
    found += re.findall(r"<link\b[^>]*>|@import|url\((?!#)[^)]*\)|<script\b[^>]*\bsrc=", page)
    return found


# --------------------------------------------------------------------------- the page as text


def test_report_of_a_run_without_evaluation(run_dir):
    page = report_of(run_dir)
    circuit = load_circuit(run_dir / "circuit.json")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>tiny on model, kl threshold 0.001</title>" in page
    assert 'id="no-evaluation"' in page
    assert f"circuit evaluate {run_dir} --curve" in page  # the command that makes it
    assert external_references(page) == []
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
        assert drawn and "<?xml" not in drawn.group(1)
        assert drawn.group(1).count('class="edge"') == circuit.n_edges_kept
        assert 'id="circuit-graph0"' in drawn.group(1)  # ids prefixed, one namespace a drawing
        assert "stroke-width" in drawn.group(1)  # widths by |score|


def test_report_with_evaluation_has_the_metrics_and_the_curve(evaluated_run):
    page = report_of(evaluated_run)
    evaluation = json.loads((evaluated_run / "evaluation.json").read_text())
    assert 'id="no-evaluation"' not in page
    metrics = re.search(r'<section id="metrics">(.*?)</section>', page, re.S).group(1)
    for name, values in evaluation["metrics"].items():
        assert f"<td>{name}" in metrics
        assert f"{values['faithfulness']:.4g}" in metrics
    assert "CPR (higher is better)" in metrics
    curve = evaluated_run / "evaluation-curve.svg"
    if curve.is_file():  # matplotlib's SVG carries a style sheet: embedded as an image
        assert 'data-file="evaluation-curve.svg"><img class="plot"' in metrics
        assert "data:image/svg+xml;base64," in metrics
    assert external_references(page) == []


def test_report_of_a_sweep(sweep_dir):
    page = report_of(sweep_dir)
    runs = sweep_runs(sweep_dir)
    assert [run.threshold for run in runs] == [float(t) for t in THRESHOLDS]
    sweep = re.search(r'<section id="sweep">(.*?)</section>', page, re.S).group(1)
    assert "From sweep.json." in sweep
    assert sweep.count("<tr") == 1 + len(THRESHOLDS)
    assert "<th>faithfulness</th>" not in sweep  # not a scalar: left out of the table
    assert '<tr class="current"><td>0.001</td>' in sweep  # the middle threshold is drawn
    assert 'data-file="edges-vs-threshold.svg"><svg' in sweep  # no style sheet: inline
    assert 'clip-path="url(#sweep0-c)"' in sweep and 'id="sweep0-c"' in sweep
    assert 'data-file="faithfulness.png"><img class="plot"' in sweep
    assert "data:image/png;base64," in sweep
    comparisons = re.search(r'<section id="comparisons">(.*?)</section>', page, re.S).group(1)
    assert "ROC against" in comparisons and 'data-file="roc.svg"' in comparisons
    data = edge_json(page)
    rank = data["columns"].index("rank score")
    expected = rank_scores(runs)
    assert [row[rank] for row in data["rows"]] == [
        "Infinity" if value == float("inf") else value for value in expected]
    assert "Infinity" in [row[rank] for row in data["rows"]]
    assert external_references(page) == []


def test_rank_scores_are_the_largest_threshold_an_edge_is_kept_at(sweep_dir):
    runs = sweep_runs(sweep_dir)
    ranks = rank_scores(runs)
    for i, rank in enumerate(ranks):
        kept_at = [run.threshold for run in runs if run.circuit.kept[i]]
        if rank == float("inf"):
            assert len(kept_at) == len(runs)
        elif rank is None:
            assert kept_at == []
        else:
            assert rank == max(kept_at) and len(kept_at) < len(runs)


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
    assert source.sweep_rows is None and source.sweep_plots == []
    page = report_of(copy)
    assert "no sweep.json" in page and "No plots in the sweep directory." in page
    assert len(edge_data(source)["rows"]) == len(source.circuit.graph.edges)


def test_report_bad_input_is_one_line(run_dir, tmp_path):
    result = invoke("report", tmp_path)  # a directory without a circuit
    assert result.exit_code == 1
    assert "neither a run directory (no circuit.json) nor a sweep" in error_line(result)
    result = invoke("report", tmp_path / "missing")
    assert result.exit_code == 1 and "no such run or sweep directory" in error_line(result)
    (tmp_path / "tau-0.1").mkdir()
    result = invoke("report", tmp_path)
    assert result.exit_code == 1 and "no finished run" in error_line(result)
    result = invoke("report", run_dir, "--threshold", "0.1", "--out", tmp_path / "x.html")
    assert result.exit_code == 1 and "is a run, not a sweep" in error_line(result)
    result = invoke("report", run_dir, "--comparison", tmp_path, "--out", tmp_path / "x.html")
    assert result.exit_code == 1 and "not a `circuit compare` output" in error_line(result)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "evaluation.json").write_text("{not json")
    shutil.copy(run_dir / "circuit.json", tmp_path / "bad" / "circuit.json")
    result = invoke("report", tmp_path / "bad")
    assert result.exit_code == 0, result.output  # left out, and said so
    assert "warning:" in result.stderr and "evaluation.json: left out" in result.stderr
    assert "evaluation.json: left out" in (tmp_path / "bad" / "report.html").read_text()


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
    import acdc.export.dot

    monkeypatch.setattr(acdc.export.dot.shutil, "which", lambda name: None)
    out = tmp_path / "r.html"
    result = invoke("report", run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "warning: Graphviz `dot` not found: no drawing" in result.stderr
    page = out.read_text()
    assert 'id="drawing"' not in page and "apt-get install -y graphviz" in page


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


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
@pytest.mark.skipif(not HAS_DOT, reason=NO_DOT)
@pytest.mark.parametrize("which", ["run", "sweep"])
def test_the_page_in_headless_chromium(which, evaluated_run, sweep_dir, tmp_path):
    target = evaluated_run if which == "run" else sweep_dir
    report_of(target)
    page = target / "report.html"
    done = browse(page, tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no console message at all: no error, no warning
    dom = done.stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-report-ready="1"' in body and "data-errors" not in body
    plots = len(re.findall(r'<img class="plot"', dom))
    assert plots >= 1 and f'data-plots-loaded="{plots}"' in body  # every image decoded
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
