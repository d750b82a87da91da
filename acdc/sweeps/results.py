"""`sweep.json` and the sweep's plots, from the run directories of a sweep.

Everything here is read back from `tau-<t>/circuit.json` and `tau-<t>/evaluation.json`, so the
file describes what is on disk, whichever process or machine ran each threshold. `sweep.json`
(format `circuit-sweep/1`) holds, after the settings header (`acdc.sweeps.plan`):

- `finished`: every threshold has a finished, evaluated run;
- `n_edges_total`, `n_nodes_total`: the graph's edges and nodes (heads, MLPs, input, logits);
- `runs`, one per threshold, increasing: `threshold`, `dir`, `status` (`finished` or
  `unfinished`) and, when finished: `n_edges_kept`, `n_nodes_kept` (a node touches a kept edge; a
  head's q/k/v inputs count as the head), `metric_circuit` (the run's own metric, minimised, as
  circuit.json has it), `runtime_s` (the search), `faithfulness` (f(C) per metric) and `metrics`
  (per metric: `full`, `empty`, `circuit`, `complement` means with their usual sign, f of the
  circuit and of the complement, `higher_is_better`), from the run's `evaluation.json`, which has
  the per-prompt spreads;
- `rank_scores` (null until the sweep is finished): every edge of the graph in graph order,
  `{"edge": name, "score": s}` where s is the largest threshold whose circuit keeps the edge,
  the string "inf" when every threshold keeps it (JSON has no infinity), null when none does
  (`acdc.evaluation.rank_scores`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acdc.core.circuit import Circuit, load_circuit
from acdc.core.files import MAX_GRAPH_FILE_BYTES, FileError, read_json, read_text, write_text_atomic
from acdc.core.settings import METRICS
from acdc.errors import AcdcError, short_repr
from acdc.evaluation.compare import kept_nodes, node_names
from acdc.evaluation.evaluate import EVALUATION_JSON
from acdc.evaluation.evaluate import FORMAT as EVALUATION_FORMAT
from acdc.evaluation.rank_scores import encode_score, rank_scores
from acdc.run import CIRCUIT_JSON
from acdc.sweeps.grid import run_dir_name
from acdc.sweeps.plan import SWEEP_JSON, SweepSettings

PLOT_STEM = "sweep"


MEANS = ("full", "empty", "circuit", "complement")


def read_run(directory: Path) -> tuple[Circuit, dict[str, Any]] | None:
    """A finished, evaluated run's circuit and the part of its evaluation a sweep records (see
    `read_evaluation`); None when it is not both yet."""
    circuit_path, evaluation_path = directory / CIRCUIT_JSON, directory / EVALUATION_JSON
    if not (circuit_path.is_file() and evaluation_path.is_file()):
        return None
    circuit = load_circuit(circuit_path)
    if circuit.partial:
        return None
    return circuit, read_evaluation(evaluation_path)


def read_evaluation(path: Path) -> dict[str, Any]:
    """`{"metrics": {name: {"higher_is_better", "full", "empty", "circuit", "complement",
    "faithfulness", "complement_faithfulness"}}}` from a run's evaluation.json, every value
    checked (a known metric, a bool, finite numbers or null): a damaged file is one line
    naming it, the key and the fix, never a value written on into sweep.json."""
    fix = (f"delete it and resume the sweep (`circuit sweep --resume {path.parent.parent}`) to "
           f"evaluate the circuit again")
    try:
        data = read_json(path, "an evaluation written by `circuit evaluate`")
    except FileError as error:
        raise AcdcError(f"{error}; {fix}") from None

    def damaged(key: str, value: Any, expected: str) -> AcdcError:
        return AcdcError(f"{path}: {key} is {short_repr(value)}, expected {expected}; {fix}")

    if not isinstance(data, dict):
        raise damaged("the file", data, "the mapping `circuit evaluate` writes")
    if data.get("format") != EVALUATION_FORMAT:
        raise damaged("format", data.get("format"), repr(EVALUATION_FORMAT))
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise damaged("metrics", metrics, "a mapping of metric names to results")
    checked: dict[str, Any] = {}
    for name, result in metrics.items():
        if name not in METRICS:
            raise damaged("a metric's name", name, f"one of {', '.join(METRICS)}")
        if not isinstance(result, dict):
            raise damaged(f"metrics.{name}", result, "a mapping")
        higher = result.get("higher_is_better")
        if not isinstance(higher, bool):
            raise damaged(f"metrics.{name}.higher_is_better", higher, "true or false")
        entry: dict[str, Any] = {"higher_is_better": higher}
        for part in MEANS:
            summary = result.get(part)
            if not isinstance(summary, dict):
                raise damaged(f"metrics.{name}.{part}", summary, "a mapping with its mean")
            entry[part] = {"mean": _number(summary.get("mean"), f"metrics.{name}.{part}.mean",
                                           damaged)}
        for key in ("faithfulness", "complement_faithfulness"):
            entry[key] = _number(result.get(key), f"metrics.{name}.{key}", damaged)
        checked[name] = entry
    return {"metrics": checked}


def _number(value: Any, key: str, damaged: Any) -> float | None:
    """A finite number or None (strict JSON's null for a value that is not defined)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise damaged(key, value, "a finite number or null")
    return float(value)


def run_record(threshold: float, directory: Path,
               found: tuple[Circuit, dict[str, Any]] | None) -> dict[str, Any]:
    """One threshold's entry of `runs`."""
    record: dict[str, Any] = {"threshold": threshold, "dir": directory.name,
                              "status": "finished" if found else "unfinished"}
    if found is None:
        return record
    circuit, evaluation = found
    metrics = evaluation["metrics"]
    record.update({
        "n_edges_kept": circuit.n_edges_kept,
        "n_nodes_kept": sum(kept_nodes(circuit.graph, circuit.kept)),
        "metric": circuit.settings.get("metric"),
        "metric_circuit": circuit.results.get("metric_circuit"),
        "runtime_s": circuit.results.get("runtime_s"),
        "faithfulness": {name: m["faithfulness"] for name, m in metrics.items()},
        "metrics": {name: {"higher_is_better": m["higher_is_better"],
                           **{part: m[part]["mean"] for part in MEANS},
                           "faithfulness": m["faithfulness"],
                           "complement_faithfulness": m["complement_faithfulness"]}
                    for name, m in metrics.items()},
    })
    return record


class SweepRecords:
    """sweep.json's contents, kept up to date one threshold at a time (each run directory is
    read when it changes, not at every update: a GPT-2 circuit.json has 32,923 edges)."""

    def __init__(self, settings: SweepSettings, out_dir: Path):
        self.settings, self.out_dir = settings, out_dir
        self.runs: dict[float, dict[str, Any]] = {}
        self.kept: dict[float, tuple[bool, ...]] = {}
        self.graph: Any = None
        for threshold in settings.grid.thresholds:
            self.refresh(threshold)

    def refresh(self, threshold: float) -> None:
        """Read the run directory of `threshold` again."""
        directory = self.out_dir / run_dir_name(threshold)
        found = read_run(directory)
        self.runs[threshold] = run_record(threshold, directory, found)
        self.kept.pop(threshold, None)
        if found is not None:
            self.kept[threshold] = found[0].kept
            self.graph = self.graph or found[0].graph

    def to_json(self) -> dict[str, Any]:
        """The whole of sweep.json."""
        thresholds = self.settings.grid.thresholds
        finished = len(self.kept) == len(thresholds)
        graph = self.graph
        scores = None
        if finished and graph is not None:
            values = rank_scores(list(thresholds), [self.kept[t] for t in thresholds])
            scores = [{"edge": edge.name, "score": encode_score(score)}
                      for edge, score in zip(graph.edges, values, strict=True)]
        return {
            **self.settings.record(),
            "finished": finished,
            "n_edges_total": len(graph.edges) if graph is not None else None,
            "n_nodes_total": len(node_names(graph)) if graph is not None else None,
            "runs": [self.runs[t] for t in thresholds],
            "rank_scores": scores,
        }

    def write(self) -> tuple[Path, dict[str, Any]]:
        """Write sweep.json (atomically; not at all when it holds this already, so that a
        command that changed nothing leaves the file as it was); return it and its contents."""
        record = self.to_json()
        path = self.out_dir / SWEEP_JSON
        text = json.dumps(_strict(record), indent=1) + "\n"
        try:
            unchanged = read_text(path, "", MAX_GRAPH_FILE_BYTES) == text
        except FileError:
            unchanged = False
        if not unchanged:
            write_text_atomic(path, text)
        return path, record


def _strict(value: Any) -> Any:
    """Strict JSON: non-finite floats (none is expected) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


# --------------------------------------------------------------------------- plots


def plot_sweep(record: dict[str, Any], stem: Path, title: str = "") -> list[Path]:
    """Two panels, written to `stem`.svg and `stem`.png: edges kept against the threshold
    (log x), and f(C) of every metric against the edges kept (log x). Returns the files
    (none without matplotlib, with one warning)."""
    from acdc.evaluation.plots import _pyplot, save_figure  # the shared off-screen set-up

    runs = [r for r in record["runs"] if r["status"] == "finished"]
    if not runs:
        return []
    plt = _pyplot()
    if plt is None:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    try:
        _edges_panel(left, runs, record)
        _faithfulness_panel(right, runs, record)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        return save_figure(fig, stem)
    finally:
        plt.close(fig)


def _edges_panel(ax: Any, runs: Sequence[dict[str, Any]], record: dict[str, Any]) -> None:
    xs = [r["threshold"] for r in runs if r["threshold"] > 0]
    ys = [r["n_edges_kept"] for r in runs if r["threshold"] > 0]
    ax.plot(xs, ys, marker="o", markersize=4, color="#1f77b4")
    ax.set_xscale("log")
    total = record.get("n_edges_total")
    _count_axis(ax.yaxis, ys + ([total] if total else []), ax.set_yscale)
    if total:
        ax.axhline(total, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"all {total:,} edges", (min(xs) if xs else 1, total), fontsize=8,
                    color="grey", xytext=(2, -10), textcoords="offset points")
    ax.set_xlabel(f"threshold tau ({record.get('metric')})")
    ax.set_ylabel("edges kept")
    ax.set_title("circuit size by threshold", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)


def _faithfulness_panel(ax: Any, runs: Sequence[dict[str, Any]],
                        record: dict[str, Any]) -> None:
    names = list(runs[0]["faithfulness"])
    for name, marker in zip(names, "osD^v<>", strict=False):
        points = sorted((r["n_edges_kept"], r["faithfulness"][name]) for r in runs
                        if r["faithfulness"].get(name) is not None)
        if points:  # distinct markers: two metrics can coincide (kl and nll often do)
            ax.plot(*zip(*points, strict=True), marker=marker, markersize=4, label=name,
                    linewidth=2.2 if name == record.get("metric") else 1.2)
    _count_axis(ax.xaxis, [r["n_edges_kept"] for r in runs], ax.set_xscale)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("edges kept")
    ax.set_ylabel("normalised faithfulness f(C)")
    ax.set_title("faithfulness by circuit size (one point per threshold)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if names:
        ax.legend(fontsize=8, loc="best")


def _count_axis(axis: Any, values: Sequence[float], set_scale: Any) -> None:
    """A log axis for counts (symlog when one is 0: an empty circuit), labelled at 1, 2, 5 x
    powers of ten so that a narrow range still shows numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if values and min(values) <= 0:
        set_scale("symlog", linthresh=1)
        return
    set_scale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())
