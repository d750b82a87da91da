"""`circuit report`: one self-contained HTML page about a run or a sweep.

The page needs nothing but itself: styles, data and a few lines of JavaScript are inline, the
circuit drawing is inline SVG (Graphviz), and plots are inline SVG or `data:` images. No
network, no CDN, no external library. It shows, in order:

1. a summary: the circuit's title (`acdc.export.dot.circuit_title`), edges and nodes kept, the
   run's metric;
2. the circuit drawing, with edge widths by |score| unless turned off;
3. the metrics table from `evaluation.json` beside the circuit (`circuit evaluate`; for a MIB
   file, `<file>.evaluation.json`), and its faithfulness curve (`evaluation-curve.svg`) when
   present; without it the page says so and gives the command that makes it;
4. for a sweep: a row per threshold (from `sweep.json`, else from the runs' circuits), the
   sweep's plots, and every edge's rank score (the largest threshold at which it is kept;
   +inf when kept at every threshold);
5. comparisons (`circuit compare` output: `comparison.json`, `roc.json`, `roc.svg`,
   `union.svg`) found in the directory or its subdirectories, or named with `--comparison`:
   the scores against the reference, the ROC curve and its AUC, the union drawing;
6. the run's settings (`run.yaml`, with the command that repeats the run);
7. a sortable, filterable table of every edge with its kept flag and score.

What a sweep directory must hold (the least the report relies on, as for `circuit compare`):
run directories `tau-<threshold>/` each with a `circuit.json`; optionally `sweep.json`, whose
per-threshold rows are the first list of objects that have a `threshold` key (the file itself
if it is such a list, else the first such list among its top-level values; every scalar field
of a row becomes a column); and plot files directly in the directory, each `*.svg` (or `*.png`
where there is no SVG of the same name) shown as a plot. The circuit drawn and listed is the
run at `threshold` (default: the middle one of the thresholds).

The target may also be a circuit file (a `circuit.json` or a MIB file): the files beside it are
read, and the page is written beside it, named after it (`circuit.mib.json` ->
`circuit.mib.html`).

>>> write_report(Path("runs/demo"))  # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import base64
import json
import math
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

from acdc.core.circuit import Circuit, load_circuit
from acdc.core.files import write_text_atomic
from acdc.errors import AcdcError, RunWarning
from acdc.export.dot import INSTALL_HINT, circuit_title, render, to_dot

REPORT_FILE = "report.html"
CIRCUIT_FILE = "circuit.json"
RUN_FILE = "run.yaml"
EVALUATION_FILE = "evaluation.json"
SWEEP_FILE = "sweep.json"
RUN_PREFIX = "tau-"
COMPARISON_FILES: tuple[str, ...] = ("comparison.json", "roc.json")
MAX_PLOT_BYTES = 20 << 20  # a plot bigger than this is linked by name, not embedded


@dataclass(frozen=True)
class SweepRun:
    threshold: float
    path: Path
    circuit: Circuit


@dataclass
class Source:
    """What the page is made of, read from disk."""

    directory: Path
    circuit_path: Path
    circuit: Circuit
    run_yaml: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    runs: list[SweepRun] = field(default_factory=list)  # a sweep's finished runs
    sweep_rows: list[dict[str, Any]] | None = None
    sweep_plots: list[Path] = field(default_factory=list)
    comparisons: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def is_sweep(self) -> bool:
        return bool(self.runs)


# --------------------------------------------------------------------------- reading


def read_json(path: Path, notes: list[str]) -> Any:
    """A JSON file, or None with a note saying why it was left out."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        notes.append(f"{path}: left out, cannot be read ({error})")
        return None


def read_run_yaml(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        notes.append(f"{path}: left out, cannot be read ({type(error).__name__})")
        return None
    return data if isinstance(data, dict) else None


def sweep_runs(directory: Path) -> list[SweepRun]:
    """The `tau-<threshold>/circuit.json` runs of a sweep directory, by threshold."""
    runs = []
    for sub in sorted(directory.iterdir()):
        if not (sub.is_dir() and sub.name.startswith(RUN_PREFIX)):
            continue
        try:
            threshold = float(sub.name[len(RUN_PREFIX):])
        except ValueError:
            continue
        if (sub / CIRCUIT_FILE).is_file():
            runs.append(SweepRun(threshold, sub, load_circuit(sub / CIRCUIT_FILE)))
    runs.sort(key=lambda run: run.threshold)
    for run in runs[1:]:
        if run.circuit.graph.shape != runs[0].circuit.graph.shape:
            raise AcdcError(f"{directory}: {runs[0].path.name} and {run.path.name} are circuits "
                            f"of different graphs; a sweep's runs share one model")
    return runs


def sweep_rows(data: Any) -> list[dict[str, Any]] | None:
    """The per-threshold rows of a sweep.json (see the module docstring), or None."""
    candidates = [data] if isinstance(data, list) else (
        list(data.values()) if isinstance(data, dict) else [])
    for value in candidates:
        if (isinstance(value, list) and value
                and all(isinstance(row, dict) and "threshold" in row for row in value)):
            return value
    return None


def plot_files(directory: Path) -> list[Path]:
    """`*.svg` files of a directory, and `*.png` files without an SVG of the same name."""
    files = sorted(p for p in directory.iterdir() if p.is_file()
                   and p.suffix.lower() in (".svg", ".png"))
    svgs = {p.stem for p in files if p.suffix.lower() == ".svg"}
    return [p for p in files if p.suffix.lower() == ".svg" or p.stem not in svgs]


def find_comparisons(directory: Path) -> list[Path]:
    """The directory itself and its subdirectories (not sweep runs) holding `circuit compare`
    output."""
    found = []
    for candidate in [directory, *sorted(p for p in directory.iterdir() if p.is_dir())]:
        if candidate.name.startswith(RUN_PREFIX) and candidate != directory:
            continue
        if any((candidate / name).is_file() for name in COMPARISON_FILES):
            found.append(candidate)
    return found


def read_source(target: str | Path, threshold: float | None = None,
                comparisons: Sequence[str | Path] | None = None) -> Source:
    """Read everything the page shows about `target` (a run or sweep directory, or a circuit
    file, whose directory is then read)."""
    target = Path(target)
    notes: list[str] = []
    if not target.exists():
        raise AcdcError(f"{target}: no such run or sweep directory")
    runs: list[SweepRun] = []
    rows = None
    plots: list[Path] = []
    if target.is_file():
        directory, circuit_path = target.parent, target
    elif (target / CIRCUIT_FILE).is_file():
        directory, circuit_path = target, target / CIRCUIT_FILE
    else:
        directory = target
        runs = sweep_runs(target)
        has_sweep_file = (target / SWEEP_FILE).is_file()
        if not runs:
            if has_sweep_file or any(p.name.startswith(RUN_PREFIX) for p in target.iterdir()):
                raise AcdcError(f"{target}: a sweep directory with no finished run (no "
                                f"{RUN_PREFIX}<threshold>/{CIRCUIT_FILE})")
            raise AcdcError(f"{target}: neither a run directory (no {CIRCUIT_FILE}) nor a sweep "
                            f"directory (no {RUN_PREFIX}<threshold>/ runs); give a directory "
                            f"written by `circuit discover` or `circuit sweep`")
        if has_sweep_file:
            data = read_json(target / SWEEP_FILE, notes)
            rows = sweep_rows(data) if data is not None else None
            if data is not None and rows is None:
                notes.append(f"{target / SWEEP_FILE}: no list of rows with a 'threshold'; the "
                             f"sweep table is made from the runs' circuits")
        plots = plot_files(target)
        chosen = _chosen_run(runs, threshold, target)
        circuit_path = chosen.path / CIRCUIT_FILE
    if threshold is not None and not runs:
        raise AcdcError(f"--threshold: {target} is a run, not a sweep; leave it out")
    circuit = runs_circuit(runs, circuit_path) if runs else load_circuit(circuit_path)
    evaluation = None
    evaluation_path = evaluation_file(circuit_path, circuit)
    if evaluation_path.is_file():
        evaluation = read_json(evaluation_path, notes)
        if evaluation is not None and not isinstance(evaluation, dict):
            notes.append(f"{evaluation_path}: not an evaluation; left out")
            evaluation = None
    if comparisons:
        found = []
        for path in map(Path, comparisons):
            if not (path.is_dir() and any((path / n).is_file() for n in COMPARISON_FILES)):
                raise AcdcError(f"--comparison {path}: not a `circuit compare` output directory "
                                f"(no {' or '.join(COMPARISON_FILES)})")
            found.append(path)
    else:
        found = find_comparisons(directory)
    return Source(directory=directory, circuit_path=circuit_path, circuit=circuit,
                  run_yaml=read_run_yaml(circuit_path.parent / RUN_FILE, notes),
                  evaluation=evaluation, runs=runs, sweep_rows=rows, sweep_plots=plots,
                  comparisons=found, notes=notes)


def evaluation_file(circuit_path: Path, circuit: Circuit) -> Path:
    """Where `circuit evaluate` writes by default: evaluation.json beside the circuit, or for a
    MIB file `<file>.evaluation.json`."""
    if circuit.settings.get("method") == "mib":
        return circuit_path.with_name(circuit_path.name.removesuffix(".json")
                                      + f".{EVALUATION_FILE}")
    return circuit_path.parent / EVALUATION_FILE


def runs_circuit(runs: Sequence[SweepRun], circuit_path: Path) -> Circuit:
    return next(run.circuit for run in runs if run.path / CIRCUIT_FILE == circuit_path)


def _chosen_run(runs: Sequence[SweepRun], threshold: float | None, target: Path) -> SweepRun:
    if threshold is None:
        return runs[(len(runs) - 1) // 2]
    for run in runs:
        if math.isclose(run.threshold, threshold, rel_tol=1e-9):
            return run
    known = ", ".join(f"{run.threshold:g}" for run in runs)
    raise AcdcError(f"--threshold {threshold:g}: {target} has no finished run at that threshold "
                    f"(it has {known})")


def rank_scores(runs: Sequence[SweepRun]) -> list[float | None]:
    """Per edge: +inf when kept at every threshold, else the largest threshold at which it is
    kept, None when never kept (auto-circuit's ranking of a sweep)."""
    n = len(runs[0].circuit.kept)
    ranks: list[float | None] = []
    for i in range(n):
        kept_at = [run.threshold for run in runs if run.circuit.kept[i]]
        if len(kept_at) == len(runs):
            ranks.append(math.inf)
        else:
            ranks.append(max(kept_at) if kept_at else None)
    return ranks


# --------------------------------------------------------------------------- pieces of HTML


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value).lower()
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return "–" if math.isnan(value) else f"{value:.4g}"
    return escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "",
           row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are HTML already."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        extra = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{extra}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_ID = re.compile(r'\bid="([^"]+)"')


def inline_svg(text: str, prefix: str) -> str:
    """An SVG file's markup for inlining in HTML: without the XML prolog, doctype and
    comments, its ids (and references to them) prefixed so that two drawings never share
    one."""
    start = text.find("<svg")
    if start < 0:
        raise ValueError("not an SVG document")
    body = re.sub(r"<!--.*?-->", "", text[start:], flags=re.S)
    ids = set(_ID.findall(body))
    body = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', body)
    if ids:
        body = re.sub(r'(href="#|url\(#)([^")]+)',
                      lambda m: m.group(1) + (f"{prefix}-{m.group(2)}" if m.group(2) in ids
                                              else m.group(2)), body)
    return body


def embed_plot(path: Path, prefix: str, caption: str) -> str:
    """A plot file as a figure: SVG inline when it carries no style sheet of its own
    (matplotlib's does, and it would restyle the page), else a `data:` image."""
    try:
        size = path.stat().st_size
        if size > MAX_PLOT_BYTES:
            return (f'<p class="note">{escape(path.name)} ({size:,} bytes) is too large to '
                    f"embed; open it beside this page.</p>")
        data = path.read_bytes()
    except OSError as error:
        return f'<p class="note">{escape(str(path))}: cannot be read ({escape(str(error))}).</p>'
    if path.suffix.lower() == ".svg":
        text = data.decode("utf-8", errors="replace")
        if "<style" not in text and "<script" not in text:
            try:
                figure = inline_svg(text, prefix)
            except ValueError:
                figure = ""
            if figure:
                return (f'<figure class="plot inline" data-file="{escape(path.name)}">{figure}'
                        f"<figcaption>{escape(caption)}</figcaption></figure>")
        mime = "image/svg+xml"
    else:
        mime = "image/png"
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return (f'<figure class="plot" data-file="{escape(path.name)}"><img class="plot" '
            f'alt="{escape(caption)}" src="{uri}"><figcaption>{escape(caption)}</figcaption>'
            f"</figure>")


def drawing(source: Source, score_width: bool) -> str:
    """The circuit drawn by Graphviz as inline SVG; without Graphviz the run's own
    circuit.svg, or a note."""
    circuit = source.circuit
    dot_source = to_dot(circuit, title=circuit_title(circuit), score_width=score_width)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        written = render(dot_source, Path(tmp) / "circuit.svg", "svg")
        svg = written.read_text(encoding="utf-8") if written.suffix == ".svg" else None
    legend = "Line colours and styles are given in the drawing's title."
    if score_width and any(s is not None for s in circuit.scores):
        legend += (" Each edge's width grows with the square root of its |score| (the widest "
                   "has the largest |score|).")
    legend += " Hover over an edge for its name and score."
    if svg is None:
        saved = source.circuit_path.with_suffix(".svg")
        if saved.is_file():
            svg = saved.read_text(encoding="utf-8")
            source.notes.append(f"Graphviz `dot` not found: the drawing is {saved} as the run "
                                f"drew it (install Graphviz: {INSTALL_HINT})")
        else:
            source.notes.append(f"Graphviz `dot` not found: no drawing (install it: "
                                f"{INSTALL_HINT})")
            return (f'<p class="note">No drawing: Graphviz <code>dot</code> is not installed '
                    f"(<code>{escape(INSTALL_HINT)}</code>).</p>")
    return (f'<div class="drawing" id="drawing">{inline_svg(svg, "circuit")}</div>'
            f'<p class="legend">{escape(legend)}</p>')


def summary_section(source: Source) -> str:
    circuit = source.circuit
    graph = circuit.graph
    kept, total = circuit.n_edges_kept, len(graph.edges)
    facts = [("edges kept", f"{kept:,} of {total:,} ({100 * kept / total:.1f}%)"),
             ("nodes", f"{len(circuit.nodes()):,} of {len(graph.node_names()):,}"),
             ("graph", f"{graph.n_layers} layers × {graph.n_heads} heads, "
                       f"{'with' if graph.shape.has_mlp else 'no'} MLPs, {graph.granularity}")]
    results = circuit.results
    metric = circuit.settings.get("metric")
    if "metric_circuit" in results:
        noise = results.get("metric_noise")
        noise = abs(noise) if isinstance(noise, (int, float)) and math.isfinite(noise) else 0.0

        def shown(value: Any) -> str:  # as `discover` prints it: 0 within the rounding noise
            if isinstance(value, (int, float)) and abs(value) <= noise:
                return "0"
            return _num(value)

        facts.append((f"metric ({metric})", f"circuit {shown(results['metric_circuit'])}, full "
                                             f"model {shown(results.get('metric_full'))}"))
    if isinstance(results.get("runtime_s"), (int, float)):
        facts.append(("runtime", f"{results['runtime_s']:.1f} s"))
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
    path = evaluation_file(source.circuit_path, source.circuit)
    title = '<section id="metrics"><h2>Metrics</h2>'
    if evaluation is None:
        what = (source.circuit_path.parent if source.circuit_path.name == CIRCUIT_FILE
                else source.circuit_path)
        return (title + f'<p class="note" id="no-evaluation">No {escape(path.name)} beside '
                f"{escape(str(source.circuit_path))}: the circuit has not been evaluated. Make "
                f"it with <code>circuit evaluate {escape(str(what))} --curve</code> and "
                f"write this page again.</p></section>")
    metrics = evaluation.get("metrics")
    rows = []
    if isinstance(metrics, dict):
        for name, m in metrics.items():
            if not isinstance(m, dict):
                continue

            def mean(key: str, m: dict[str, Any] = m) -> str:
                value = m.get(key)
                return _num(value.get("mean") if isinstance(value, dict) else None)

            label = escape(name) + (" <small>(higher is better)</small>"
                                    if m.get("higher_is_better") else "")
            rows.append((label, mean("full"), mean("empty"), mean("circuit"),
                         _num(m.get("faithfulness")), mean("complement"),
                         _num(m.get("complement_faithfulness"))))
    parts = [title]
    kept = evaluation.get("n_edges_kept")
    if isinstance(kept, int) and kept != source.circuit.n_edges_kept:
        parts.append(f"<p class='warning'>{escape(path.name)} was made for a circuit of {kept} "
                     f"edges, this one keeps {source.circuit.n_edges_kept}: evaluate it again."
                     f"</p>")
    parts.append(_table(("metric", "full model", "empty circuit", "circuit", "f(C)",
                         "complement", "f(complement)"), rows, "numbers"))
    parts.append(
        f"<p class='legend'>Means over {_num(evaluation.get('n_positions'))} metric positions "
        f"of {_num(evaluation.get('n_prompts'))} prompts of task "
        f"{_num(evaluation.get('task'))}, ablation {_num(evaluation.get('ablation'))}; "
        f"f = (m − empty) / (full − empty): 1 when the circuit does what the model does, 0 when "
        f"it does no better than everything ablated.</p>")
    check = evaluation.get("run_metric")
    if isinstance(check, dict) and check.get("agrees") is False:
        parts.append(f"<p class='warning'>The run's metric evaluates to "
                     f"{_num(check.get('evaluated'))}, but the circuit records "
                     f"{_num(check.get('metric_circuit'))}: the task or model changed since the "
                     f"run.</p>")
    curve = evaluation.get("curve")
    if isinstance(curve, dict) and isinstance(curve.get("cpr"), dict):
        cmd = curve["cmd"] if isinstance(curve.get("cmd"), dict) else {}
        areas = [(escape(name), _num(value), _num(cmd.get(name)))
                 for name, value in curve["cpr"].items()]
        parts.append("<h3>Faithfulness curve</h3>")
        parts.append(_table(("metric", "CPR (higher is better)", "CMD (0 is best)"), areas,
                            "numbers"))
    plots = [path.with_name(f"{path.stem}-curve.{suffix}") for suffix in ("svg", "png")]
    plot = next((p for p in plots if p.is_file()), None)
    if plot is not None:
        parts.append(embed_plot(plot, "curve", "faithfulness by circuit size"))
    parts.append("</section>")
    return "".join(parts)


def sweep_section(source: Source) -> str:
    if not source.is_sweep:
        return ""
    shown = source.circuit_path.parent
    parts = ['<section id="sweep"><h2>Sweep</h2>']
    if source.sweep_rows is not None:
        columns: list[str] = []
        for row in source.sweep_rows:
            columns += [k for k, v in row.items() if k not in columns
                        and (v is None or isinstance(v, (str, int, float, bool)))]
        rows = [tuple(_num(row.get(c)) for c in columns) for row in source.sweep_rows]
        marks = ["current" if _same(row.get("threshold"), shown) else ""
                 for row in source.sweep_rows]
        parts.append(f"<p class='legend'>From {SWEEP_FILE}.</p>")
    else:
        columns = ["threshold", "edges kept", "nodes", "metric of the circuit", "partial"]
        rows = [(_num(run.threshold), _num(run.circuit.n_edges_kept),
                 _num(len(run.circuit.nodes())), _num(run.circuit.results.get("metric_circuit")),
                 _num(run.circuit.partial)) for run in source.runs]
        marks = ["current" if run.path == shown else "" for run in source.runs]
        parts.append(f"<p class='legend'>From the runs' circuits (no {SWEEP_FILE}).</p>")
    parts.append(_table(columns, rows, "numbers", marks))
    for i, plot in enumerate(source.sweep_plots):
        parts.append(embed_plot(plot, f"sweep{i}", plot.name))
    if not source.sweep_plots:
        parts.append("<p class='note'>No plots in the sweep directory.</p>")
    parts.append("</section>")
    return "".join(parts)


def _same(threshold: Any, run_dir: Path) -> bool:
    try:
        return math.isclose(float(threshold), float(run_dir.name[len(RUN_PREFIX):]),
                            rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def comparison_section(source: Source) -> str:
    if not source.comparisons:
        return ""
    parts = ['<section id="comparisons"><h2>Comparisons</h2>']
    for n, directory in enumerate(source.comparisons):
        parts.append(f"<h3>{escape(str(directory))}</h3>")
        comparison = (read_json(directory / "comparison.json", source.notes)
                      if (directory / "comparison.json").is_file() else None)
        if isinstance(comparison, dict):
            parts.append(_comparison_tables(comparison))
        roc = (read_json(directory / "roc.json", source.notes)
               if (directory / "roc.json").is_file() else None)
        if isinstance(roc, dict):
            rows = [(escape(str(s.get("name"))), _num((s.get("auc") or {}).get("edge")),
                     _num((s.get("auc") or {}).get("node")))
                    for s in roc.get("sweeps", []) if isinstance(s, dict)]
            reference = (roc.get("reference") or {}).get("name")
            parts.append(f"<h4>ROC against {escape(str(reference))}</h4>")
            parts.append(_table(("sweep", "edge AUC", "node AUC"), rows, "numbers"))
        for i, name in enumerate(("roc.svg", "roc.png", "union.svg")):
            path = directory / name
            if not path.is_file() or (name == "roc.png" and (directory / "roc.svg").is_file()):
                continue
            caption = "ROC curve (pessimistic staircase)" if name.startswith("roc") else (
                "union of the circuits: black in both, orange only in A, purple only in B")
            parts.append(embed_plot(path, f"cmp{n}-{i}", caption))
    parts.append("</section>")
    return "".join(parts)


def _comparison_tables(data: dict[str, Any]) -> str:
    parts = []
    inputs: dict[str, Any] = data["inputs"] if isinstance(data.get("inputs"), dict) else {}
    rows: list[tuple[str, ...]] = []
    for key, info in inputs.items():
        if isinstance(info, dict):
            size = (f"{len(info.get('thresholds') or [])} thresholds" if info.get("kind") == "sweep"
                    else f"{_num(info.get('edges'))} edges, {_num(info.get('nodes'))} nodes")
            rows.append((escape(str(key)), _num(info.get("name")), _num(info.get("kind")), size))
    if rows:
        parts.append(_table(("", "input", "kind", "size"), rows))
    if isinstance(data.get("edges"), dict) and isinstance(data.get("nodes"), dict):
        pair = [(level, _num(part.get("both")), _num(part.get("only_a")),
                 _num(part.get("only_b")), _num(part.get("jaccard")))
                for level, part in (("edges", data["edges"]), ("nodes", data["nodes"]))]
        parts.append(_table(("", "in both", "only in A", "only in B", "Jaccard"), pair,
                            "numbers"))
    scores: dict[str, Any] = data["scores"] if isinstance(data.get("scores"), dict) else {}
    rows = []
    for key, score in scores.items():
        if isinstance(score, dict) and isinstance(score.get("edge"), dict):
            rows.append((escape(str(key)), *(
                _num((score.get(level) or {}).get(what)) for level in ("edge", "node")
                for what in ("tpr", "fpr", "precision"))))
    if rows:
        reference = (data.get("reference") or {}).get("name")
        parts.append(f"<h4>Against the reference {escape(str(reference))}</h4>")
        parts.append(_table(("", "edge TPR", "edge FPR", "edge precision", "node TPR",
                             "node FPR", "node precision"), rows, "numbers"))
    return "".join(parts)


def settings_section(source: Source) -> str:
    parts = ['<section id="settings"><h2>Settings</h2>']
    record = source.run_yaml
    if source.is_sweep:
        parts.append(f"<p class='legend'>Of the run drawn above, "
                     f"{escape(source.circuit_path.parent.name)}.</p>")
    if record is None:
        record = dict(source.circuit.settings)
        parts.append(f"<p class='note'>No {RUN_FILE} beside the circuit: these are the "
                     f"circuit file's own settings.</p>")
    rows = []
    commands = []
    for key, value in _flatten(record):
        if key in ("command", "repeat"):
            commands.append((key, str(value)))
        else:
            rows.append((escape(key), f"<code>{escape(_plain(value))}</code>"))
    parts.append(_table(("setting", "value"), rows, "settings"))
    for key, value in commands:
        what = "as typed" if key == "command" else "repeats the run with every setting spelled out"
        parts.append(f"<p class='legend'>{escape(key)} ({what}):</p>"
                     f"<pre><code>{escape(value)}</code></pre>")
    parts.append("</section>")
    return "".join(parts)


def _flatten(record: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items += _flatten(value, name + ".")
        else:
            items.append((name, value))
    return items


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def edge_data(source: Source) -> dict[str, Any]:
    """The edge table's data: column names and one row per edge, in graph order. +inf is the
    string "Infinity" (JSON has no infinity); None is null."""
    circuit = source.circuit
    ranks = rank_scores(source.runs) if source.is_sweep else None
    columns = ["#", "edge", "kind", "into", "kept", "score", "|score|"]
    if ranks is not None:
        columns.append("rank score")
    rows = []
    for edge in circuit.graph.edges:
        score = circuit.scores[edge.index]
        if score is not None and not math.isfinite(score):
            score = None
        into = "head" if edge.kind == "direct" else (edge.receiver.qkv or edge.receiver.kind)
        row: list[Any] = [edge.index, edge.name, edge.kind, into, circuit.kept[edge.index],
                          score, None if score is None else abs(score)]
        if ranks is not None:
            rank = ranks[edge.index]
            row.append("Infinity" if rank == math.inf else rank)
        rows.append(row)
    return {"columns": columns, "rows": rows}


def edges_section(source: Source) -> str:
    data = json.dumps(edge_data(source), separators=(",", ":")).replace("</", "<\\/")
    rank_note = (" The rank score is the largest threshold of the sweep at which the edge is "
                 "kept (∞: kept at every threshold)." if source.is_sweep else "")
    return (
        '<section id="edges"><h2>Edges</h2>'
        "<p class='legend'>Every edge of the graph. Click a column's heading to sort by it "
        f"(again to reverse).{rank_note}</p>"
        '<div class="controls"><label>filter <input id="edge-filter" type="search" '
        'placeholder="a0.h1, <q>, ->logits"></label> <label><input id="kept-only" '
        'type="checkbox" checked> kept edges only</label> <span id="edge-count"></span> '
        '<button id="show-all" type="button" hidden>show all</button></div>'
        '<table id="edge-table" class="numbers sortable"><thead></thead><tbody></tbody></table>'
        f'<script type="application/json" id="edge-data">{data}</script></section>')


STYLE = """
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #dadce0; --accent: #1f77b4; --bg2: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); margin: 0 auto; max-width: 1200px; padding: 24px 28px 64px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 36px 0 10px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 22px 0 8px; }
h4 { font-size: 1em; margin: 16px 0 6px; }
nav { margin: 8px 0 0; color: var(--muted); }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
.subtitle, .legend { color: var(--muted); }
.legend { font-size: 0.9em; }
.facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 18px 0 0; }
.fact { background: var(--bg2); border: 1px solid var(--line); border-radius: 6px;
        padding: 8px 12px; }
.fact dt { font-size: 0.8em; color: var(--muted); text-transform: uppercase;
           letter-spacing: .03em; }
.fact dd { margin: 2px 0 0; font-weight: 600; }
.note { background: #fff8e1; border-left: 4px solid #f9a825; padding: 8px 12px; }
.warning { background: #fdecea; border-left: 4px solid #d93025; padding: 8px 12px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.92em; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
         vertical-align: top; }
thead th { background: var(--bg2); position: sticky; top: 0; }
table.numbers td { font-variant-numeric: tabular-nums; }
tr.current td { background: #e8f0fe; font-weight: 600; }
.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
.sortable th[aria-sort="ascending"]::after { content: " ▲"; }
.sortable th[aria-sort="descending"]::after { content: " ▼"; }
.drawing { overflow: auto; border: 1px solid var(--line); border-radius: 6px; padding: 8px;
           max-height: 90vh; background: white; }
.drawing svg { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figure.plot { margin: 12px 0; }
figure.plot img, figure.plot svg { max-width: min(100%, 900px); height: auto;
                                   border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.85em; }
pre { background: var(--bg2); border: 1px solid var(--line); padding: 8px 12px; overflow-x: auto;
      white-space: pre-wrap; overflow-wrap: anywhere; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
.controls { margin: 6px 0; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
.controls input[type=search] { padding: 3px 6px; min-width: 16em; }
#edge-count { color: var(--muted); }
#js-errors { color: #d93025; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85em; }
"""

# Sorting, filtering and showing the edge table; marks the page ready (or its errors) on
# <body> so that a test can tell the script ran.
SCRIPT = """
(function () {
  "use strict";
  var errors = [];
  window.addEventListener("error", function (event) {
    errors.push(String(event.message));
    document.body.setAttribute("data-errors", String(errors.length));
    var box = document.getElementById("js-errors");
    if (box) { box.textContent = "Script error: " + errors.join("; "); }
  });
  var LIMIT = 1000;
  var data = JSON.parse(document.getElementById("edge-data").textContent);
  var columns = data.columns;
  var rows = data.rows.map(function (row) {
    return row.map(function (v) { return v === "Infinity" ? Infinity : v; });
  });
  var table = document.getElementById("edge-table");
  var filter = document.getElementById("edge-filter");
  var keptOnly = document.getElementById("kept-only");
  var count = document.getElementById("edge-count");
  var showAll = document.getElementById("show-all");
  var KEPT = columns.indexOf("kept"), NAME = columns.indexOf("edge");
  var sortColumn = columns.indexOf("|score|"), direction = -1, all = false;

  function shown(v) {
    if (v === null || v === undefined) { return "\\u2013"; }
    if (v === Infinity) { return "\\u221e"; }
    if (typeof v === "boolean") { return v ? "yes" : "no"; }
    if (typeof v === "number" && !Number.isInteger(v)) { return v.toPrecision(4); }
    return String(v);
  }
  function compare(a, b) {
    var x = a[sortColumn], y = b[sortColumn];
    if (x === y) { return a[0] - b[0]; }
    if (x === null) { return 1; }
    if (y === null) { return -1; }
    return (x < y ? -1 : 1) * direction;
  }
  function head() {
    var tr = document.createElement("tr");
    columns.forEach(function (name, i) {
      var th = document.createElement("th");
      th.textContent = name;
      th.setAttribute("scope", "col");
      if (i === sortColumn) {
        th.setAttribute("aria-sort", direction > 0 ? "ascending" : "descending");
      }
      th.addEventListener("click", function () {
        direction = i === sortColumn ? -direction : (i === NAME ? 1 : -1);
        sortColumn = i;
        draw();
      });
      tr.appendChild(th);
    });
    table.tHead.replaceChildren(tr);
  }
  function draw() {
    var text = filter.value.trim();
    var picked = rows.filter(function (row) {
      return (!keptOnly.checked || row[KEPT]) && (!text || row[NAME].indexOf(text) >= 0);
    }).sort(compare);
    var fragment = document.createDocumentFragment();
    picked.slice(0, all ? picked.length : LIMIT).forEach(function (row) {
      var tr = document.createElement("tr");
      row.forEach(function (value) {
        var td = document.createElement("td");
        td.textContent = shown(value);
        tr.appendChild(td);
      });
      fragment.appendChild(tr);
    });
    table.tBodies[0].replaceChildren(fragment);
    var visible = Math.min(picked.length, all ? picked.length : LIMIT);
    count.textContent = (visible < picked.length ? "showing " + visible + " of " : "") +
      picked.length + " of " + rows.length + " edges";
    showAll.hidden = visible >= picked.length;
    head();
  }
  filter.addEventListener("input", draw);
  keptOnly.addEventListener("change", draw);
  showAll.addEventListener("click", function () { all = true; draw(); });
  draw();
  window.addEventListener("load", function () {
    var images = Array.prototype.filter.call(document.querySelectorAll("img.plot"),
      function (img) { return img.complete && img.naturalWidth > 0; });
    document.body.setAttribute("data-plots-loaded", String(images.length));
  });
  document.body.setAttribute("data-report-ready", "1");
})();
"""


def build_report(source: Source, score_width: bool = True) -> str:
    """The page's HTML."""
    circuit = source.circuit
    title = circuit_title(circuit)
    sections = [
        summary_section(source),
        '<section id="circuit"><h2>Circuit</h2>' + drawing(source, score_width) + "</section>",
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
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body><header><h1>{escape(title)}</h1><p class="subtitle">Report of the {what} '
        f"<code>{escape(str(source.directory))}</code></p><nav>{nav}</nav></header>"
        f'<p id="js-errors" role="alert"></p>{notes}{"".join(sections)}'
        f"<footer>Written by circuit {escape(version)} (<code>circuit report</code>); one "
        f"self-contained file: it loads nothing from the network.</footer>"
        f"<script>{SCRIPT}</script></body></html>\n")


def write_report(target: str | Path, out: str | Path | None = None, *,
                 threshold: float | None = None, comparisons: Sequence[str | Path] | None = None,
                 score_width: bool = True) -> Path:
    """Write the report of `target` (default `report.html` in its directory) and return its
    path. What was left out (an unreadable file, no Graphviz) is said in the page and as a
    `RunWarning` each."""
    source = read_source(target, threshold, comparisons)
    page = build_report(source, score_width)
    if out is not None:
        path = Path(out)
    elif Path(target).is_file():  # a circuit file: beside it, named after it
        path = source.circuit_path.with_name(source.circuit_path.name.removesuffix(".json")
                                             + ".html")
    else:
        path = source.directory / REPORT_FILE
    if path.is_dir():
        raise AcdcError(f"--out {path}: is a directory; give the HTML file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AcdcError(f"--out {path}: cannot create its directory "
                        f"({error.strerror or error})") from None
    for note in source.notes:
        warnings.warn(note, RunWarning, stacklevel=2)
    return write_text_atomic(path, page)
