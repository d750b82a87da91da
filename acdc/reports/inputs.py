"""The result files a report shows, read and checked: each is a typed value or one line.

Every file goes through the bounded readers of `acdc.core.files` (a size cap, a regular file
only, JSON or YAML errors in one line), and then through a reader here that checks every value
the page uses: its kind (a number, a whole number, text, true/false, an object, a list), that a
number is finite and a fraction within [0, 1], that a metric is a known one. The first value
that is wrong is a `FileError` naming the file, the key and what was expected; the page then
leaves that file out and says so. Nothing of a file reaches the page unchecked, so no file can
break the page's code, and the plots are re-drawn from these values by the project's own
plotting (`acdc.reports.figures`).

- `evaluation.json` (`circuit evaluate`): `read_evaluation`;
- `sweep.json` (`circuit sweep`): `read_sweep_table` (the per-threshold rows) and
  `read_sweep_plot` (what the sweep's plot is drawn from);
- `comparison.json` and `roc.json` (`circuit compare`): `read_comparison`, `read_roc`;
- `run.yaml` (`circuit discover`): `read_settings`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acdc.core.files import (
    MAX_GRAPH_FILE_BYTES,
    MAX_RESULTS_BYTES,
    MAX_SETTINGS_BYTES,
    FileError,
    read_json,
    read_yaml,
)
from acdc.core.settings import METRICS
from acdc.errors import kind_of, short_repr

MAX_ROWS = 10_000  # rows of a table read from a file (a sweep has at most 1,000 thresholds)
MAX_COLUMNS = 40
MAX_SETTINGS_VALUES = 10_000  # values in run.yaml once aliases are expanded (a run has ~50)
MAX_TEXT = 10_000  # characters of one text value shown
MAX_WHOLE = 10**15  # a count read from a file (edges, prompts): more is no count of ours
LEVELS = ("edge", "node")
INPUT_KEYS = ("A", "B")


class Record:
    """One JSON object of a file, read key by key: each getter checks the kind of the value
    and raises `FileError` naming the file and the key (`metrics.kl.faithfulness`)."""

    def __init__(self, data: Any, source: str, where: str = "") -> None:
        if not isinstance(data, dict):
            what = f"{where.rstrip('.')} is" if where else "holds"
            raise FileError(f"{source}: {what} {kind_of(data)}, expected an object")
        self.data, self.source, self.where = data, source, where

    def wrong(self, key: str, expected: str) -> FileError:
        value = self.data.get(key)
        return FileError(f"{self.source}: {self.where}{key} is {short_repr(value)}, expected "
                         f"{expected}")

    def number(self, key: str, low: float = -math.inf, high: float = math.inf) -> float | None:
        """A finite number within [low, high], or None when absent or null."""
        value = self.data.get(key)
        if value is None:
            return None
        expected = "a number" if (low, high) == (-math.inf, math.inf) else \
            f"a number from {low:g} to {high:g}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.wrong(key, expected)
        try:
            number = float(value)
        except OverflowError:
            raise self.wrong(key, expected) from None
        if not (math.isfinite(number) and low <= number <= high):
            raise self.wrong(key, expected)
        return number

    def whole(self, key: str) -> int | None:
        """A whole number from 0 to `MAX_WHOLE` (a count of edges, prompts), or None."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WHOLE:
            raise self.wrong(key, "a whole number >= 0" if isinstance(value, int) and value < 0
                             else f"a whole number from 0 to {MAX_WHOLE:.0e}")
        return value

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.wrong(key, "text")
        return value[:MAX_TEXT]

    def texts(self, key: str, limit: int = MAX_ROWS) -> tuple[str, ...] | None:
        """A list of text values (position groups), or None when absent."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) > limit or \
                not all(isinstance(item, str) for item in value):
            raise self.wrong(key, f"a list of at most {limit:,} texts")
        return tuple(item[:MAX_TEXT] for item in value)

    def flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.wrong(key, "true or false")
        return value

    def record(self, key: str) -> Record | None:
        """The object under `key`, or None."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.wrong(key, "an object")
        return Record(value, self.source, f"{self.where}{key}.")

    def records(self, key: str, limit: int = MAX_ROWS) -> list[Record]:
        """The list of objects under `key` (empty when absent)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.wrong(key, "a list")
        if len(value) > limit:
            raise self.wrong(key, f"at most {limit:,} entries, not {len(value):,}")
        return [Record(item, self.source, f"{self.where}{key}[{i}].")
                for i, item in enumerate(value)]

    def metrics(self, key: str) -> Iterator[tuple[str, Record]]:
        """The (metric, object) pairs of the object under `key`; a metric must be known."""
        record = self._metric_record(key)
        if record is None:
            return
        for name, value in record.data.items():
            yield name, Record(value, self.source, f"{record.where}{name}.")

    def metric_numbers(self, key: str, low: float = -math.inf) -> dict[str, float | None]:
        """{metric: number or None} of the object under `key`."""
        record = self._metric_record(key)
        return {} if record is None else {name: record.number(name, low) for name in record.data}

    def _metric_record(self, key: str) -> Record | None:
        record = self.record(key)
        for name in record.data if record is not None else ():
            if name not in METRICS:
                raise FileError(f"{self.source}: {self.where}{key} names the metric "
                                f"{short_repr(name)}, not one of {', '.join(METRICS)}")
        return record


# --------------------------------------------------------------------------- evaluation.json


@dataclass(frozen=True)
class MetricRow:
    """One metric of an evaluation: the means with their usual sign, and the two f."""

    name: str
    higher_is_better: bool
    full: float | None
    empty: float | None
    circuit: float | None
    complement: float | None
    faithfulness: float | None
    complement_faithfulness: float | None


@dataclass(frozen=True)
class Evaluation:
    """What the page shows of `evaluation.json`."""

    path: Path
    metrics: tuple[MetricRow, ...]
    n_edges_kept: int | None
    n_prompts: int | None
    n_positions: int | None
    task: str | None
    model: str | None
    ablation: str | None
    run_metric: tuple[float | None, float | None] | None  # evaluated, recorded: they disagree
    curve: Any  # acdc.evaluation.faithfulness.FaithfulnessCurve, or None
    ranking: str
    positions: str | None = None  # a circuit at positions': its mode and groups
    groups: tuple[str, ...] | None = None


def read_evaluation(path: Path) -> Evaluation:
    """`evaluation.json`, checked; one `FileError` line for the first wrong value."""
    record = Record(read_json(path, "evaluation.json is what `circuit evaluate` writes",
                              MAX_RESULTS_BYTES), str(path))
    rows = []
    for name, metric in record.metrics("metrics"):
        means = {}
        for part in ("full", "empty", "circuit", "complement"):
            part_record = metric.record(part)
            means[part] = part_record.number("mean") if part_record is not None else None
        rows.append(MetricRow(name, bool(metric.flag("higher_is_better")), means["full"],
                              means["empty"], means["circuit"], means["complement"],
                              metric.number("faithfulness"),
                              metric.number("complement_faithfulness")))
    check = record.record("run_metric")
    run_metric = None
    if check is not None and check.flag("agrees") is False:
        run_metric = (check.number("evaluated"), check.number("metric_circuit"))
    curve_record = record.record("curve")
    return Evaluation(path, tuple(rows), record.whole("n_edges_kept"), record.whole("n_prompts"),
                      record.whole("n_positions"), record.text("task"), record.text("model"),
                      record.text("ablation"), run_metric,
                      _curve(curve_record) if curve_record is not None else None,
                      (curve_record.text("ranking") or "") if curve_record is not None else "",
                      record.text("positions"), record.texts("groups"))


def _curve(record: Record) -> Any:
    """A `FaithfulnessCurve` from its JSON (`FaithfulnessCurve.to_json`), checked."""
    from acdc.evaluation.measures import CurvePoint, FaithfulnessCurve

    cpr, cmd = record.metric_numbers("cpr"), record.metric_numbers("cmd")
    if set(cmd) != set(cpr):
        raise record.wrong("cmd", f"the metrics of cpr ({', '.join(cpr) or 'none'})")
    points = []
    last = 0.0
    for point in record.records("points"):
        fraction = point.number("fraction", 0.0, 1.0)
        if fraction is None or fraction <= last:
            raise point.wrong("fraction", "a fraction in (0, 1], larger than the one before")
        last = fraction
        faithfulness = point.metric_numbers("faithfulness")
        if set(faithfulness) != set(cpr):
            raise point.wrong("faithfulness", f"f of each metric of cpr "
                                              f"({', '.join(cpr) or 'none'})")
        values = {name: value for name, value in point.metric_numbers("values").items()
                  if value is not None}
        points.append(CurvePoint(fraction, point.whole("n_edges") or 0,
                                 point.whole("n_edges_kept") or 0, values, faithfulness))
    n_edges_total = record.whole("n_edges_total")
    if n_edges_total is None:
        raise record.wrong("n_edges_total", "a whole number >= 0")
    return FaithfulnessCurve(tuple(points), cpr, cmd, n_edges_total,
                             record.whole("n_scored") or 0, bool(record.flag("pruned")))


# --------------------------------------------------------------------------- sweep.json


@dataclass(frozen=True)
class SweepTable:
    """The per-threshold rows of `sweep.json`: column names and one row of values each (a
    number, text, true/false or None)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    thresholds: tuple[float | None, ...]


def read_sweep_json(path: Path) -> Any:
    """The value of `sweep.json` (one line when it cannot be read)."""
    return read_json(path, "sweep.json is what `circuit sweep` writes", MAX_GRAPH_FILE_BYTES)


def read_sweep_table(data: Any, source: str) -> SweepTable | None:
    """The rows of a `sweep.json` value: the first list of objects that all have a `threshold`
    (the value itself if it is such a list, else the first such list among its top-level
    values); every scalar value of a row is a column. None when there is no such list."""
    candidates = [data] if isinstance(data, list) else (
        list(data.values()) if isinstance(data, dict) else [])
    rows = next((value for value in candidates if isinstance(value, list) and value
                 and all(isinstance(row, dict) and "threshold" in row for row in value)), None)
    if rows is None:
        return None
    if len(rows) > MAX_ROWS:
        raise FileError(f"{source}: {len(rows):,} rows, more than the {MAX_ROWS:,} a sweep can "
                        f"have")
    columns: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in columns and (value is None or isinstance(value, (str, int, float))):
                columns.append(key)
    if len(columns) > MAX_COLUMNS:
        raise FileError(f"{source}: its rows have {len(columns)} columns, more than the "
                        f"{MAX_COLUMNS} shown")
    table = tuple(tuple(_scalar(row.get(column)) for column in columns) for row in rows)
    thresholds = tuple(_finite(row["threshold"]) for row in rows)
    return SweepTable(tuple(columns), table, thresholds)


def _scalar(value: Any) -> Any:
    """A scalar as the table shows it (text cut short); lists and objects as None."""
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return None


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None when it is not a number or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def read_sweep_plot(data: Any, source: str) -> dict[str, Any] | None:
    """What `acdc.sweeps.results.plot_sweep` draws (and `acdc.sweeps.driver.sweep_title` names),
    from a `sweep.json` that `circuit sweep` wrote (format `circuit-sweep/1`), checked; None
    for another layout."""
    from acdc.sweeps.plan import FORMAT

    if not (isinstance(data, dict) and isinstance(data.get("runs"), list)
            and data.get("format") == FORMAT):
        return None
    record = Record(data, source)
    runs = []
    for run in record.records("runs"):
        status = run.text("status")
        if status not in ("finished", "unfinished"):
            raise run.wrong("status", "'finished' or 'unfinished'")
        threshold = run.number("threshold", 0.0)
        if threshold is None:
            raise run.wrong("threshold", "a number >= 0")
        if status == "finished":
            kept = run.whole("n_edges_kept")
            if kept is None:
                raise run.wrong("n_edges_kept", "a whole number >= 0")
            runs.append({"threshold": threshold, "status": status, "n_edges_kept": kept,
                         "faithfulness": run.metric_numbers("faithfulness")})
        else:
            runs.append({"threshold": threshold, "status": status})
    metric = record.text("metric")
    if metric is not None and metric not in METRICS:
        raise record.wrong("metric", f"one of {', '.join(METRICS)}")
    return {"runs": runs, "n_edges_total": record.whole("n_edges_total"), "metric": metric,
            "task": record.text("task"), "model": record.text("model"),
            "ablation": record.text("ablation")}


# --------------------------------------------------------------------------- compare output


@dataclass(frozen=True)
class ComparedInput:
    key: str
    name: str
    kind: str
    thresholds: int | None  # a sweep's number of thresholds
    edges: int | None
    nodes: int | None
    threshold: float | None  # a circuit's own threshold (its point on the ROC plot)


@dataclass(frozen=True)
class Overlap:
    level: str
    both: int | None
    only_a: int | None
    only_b: int | None
    jaccard: float | None


@dataclass(frozen=True)
class Score:
    """A circuit against the reference: (tpr, fpr, precision) at edge and node level."""

    key: str
    edge: tuple[float | None, float | None, float | None]
    node: tuple[float | None, float | None, float | None]


@dataclass(frozen=True)
class Comparison:
    """What the page shows of `comparison.json`."""

    inputs: tuple[ComparedInput, ...]
    overlap: tuple[Overlap, ...]
    reference: str | None
    scores: tuple[Score, ...]


def read_comparison(path: Path) -> Comparison:
    record = Record(read_json(path, "comparison.json is what `circuit compare` writes",
                              MAX_GRAPH_FILE_BYTES), str(path))
    inputs = []
    compared = record.record("inputs")
    for key in INPUT_KEYS:
        item = compared.record(key) if compared is not None else None
        if item is None:
            continue
        kind = item.text("kind") or ""
        listed = item.data.get("thresholds")
        if listed is not None and not isinstance(listed, list):
            raise item.wrong("thresholds", "a list")
        inputs.append(ComparedInput(key, item.text("name") or "", kind,
                                    len(listed) if listed is not None else None,
                                    item.whole("edges"), item.whole("nodes"),
                                    item.number("threshold")))
    overlap = []
    for level in ("edges", "nodes"):
        part = record.record(level)
        if part is not None:
            overlap.append(Overlap(level, part.whole("both"), part.whole("only_a"),
                                   part.whole("only_b"), part.number("jaccard", 0.0, 1.0)))
    reference = record.record("reference")
    scores = []
    given = record.record("scores")
    for key in INPUT_KEYS:
        score = given.record(key) if given is not None else None
        if score is None or score.record("edge") is None:  # a sweep's scores are in roc.json
            continue
        edge, node = (_rates(score.record(level)) for level in LEVELS)
        scores.append(Score(key, edge, node))
    return Comparison(tuple(inputs), tuple(overlap),
                      reference.text("name") if reference is not None else None, tuple(scores))


def _rates(counts: Record | None) -> tuple[float | None, float | None, float | None]:
    """(tpr, fpr, precision) of a level's confusion counts."""
    if counts is None:
        return None, None, None
    return (counts.number("tpr", 0.0, 1.0), counts.number("fpr", 0.0, 1.0),
            counts.number("precision", 0.0, 1.0))


@dataclass(frozen=True)
class RocSweep:
    key: str
    name: str
    auc: dict[str, float | None]
    # per level: the points (fpr, tpr, threshold) and the curve through them, or None
    levels: dict[str, tuple[tuple[tuple[float, float, float | None], ...],
                            tuple[tuple[float, float, float | None], ...]] | None]


@dataclass(frozen=True)
class RocRanking:
    """A circuit's ranking in `roc.json` (EAP, HISP, ... scores): what it ranks (`edge`: its
    residual edges, `node`: its heads and MLPs) and how many, its curves, and the circuit's own
    (fpr, tpr) at each level."""

    key: str
    name: str
    ranked: str
    units: int | None
    auc: dict[str, float | None]
    levels: dict[str, tuple[tuple[tuple[float, float, float | None], ...],
                            tuple[tuple[float, float, float | None], ...]] | None]
    circuit: dict[str, tuple[float, float] | None]


@dataclass(frozen=True)
class Roc:
    """What the page shows and draws of `roc.json`."""

    reference: str | None
    sweeps: tuple[RocSweep, ...]
    rankings: tuple[RocRanking, ...] = ()


def read_roc(path: Path) -> Roc:
    record = Record(read_json(path, "roc.json is what `circuit compare` writes",
                              MAX_GRAPH_FILE_BYTES), str(path))
    sweeps = []
    for sweep in record.records("sweeps", len(INPUT_KEYS)):
        sweeps.append(RocSweep(sweep.text("key") or "", sweep.text("name") or "",
                               _aucs(sweep), _roc_levels(sweep)))
    rankings = []
    for ranking in record.records("rankings", len(INPUT_KEYS)):
        ranked = ranking.text("ranked")
        if ranked not in LEVELS:
            raise ranking.wrong("ranked", "'edge' or 'node'")
        own = ranking.record("circuit")
        circuit: dict[str, tuple[float, float] | None] = {}
        for level in LEVELS:
            counts = own.record(level) if own is not None else None
            fpr = counts.number("fpr", 0.0, 1.0) if counts is not None else None
            tpr = counts.number("tpr", 0.0, 1.0) if counts is not None else None
            circuit[level] = (fpr, tpr) if fpr is not None and tpr is not None else None
        rankings.append(RocRanking(ranking.text("key") or "", ranking.text("name") or "", ranked,
                                   ranking.whole("units"), _aucs(ranking),
                                   _roc_levels(ranking), circuit))
    reference = record.record("reference")
    return Roc(reference.text("name") if reference is not None else None, tuple(sweeps),
               tuple(rankings))


def _aucs(record: Record) -> dict[str, float | None]:
    auc = record.record("auc")
    return {level: auc.number(level, 0.0, 1.0) if auc is not None else None for level in LEVELS}


def _roc_levels(record: Record) -> dict[str, Any]:
    """Per level the (points, curve) of a sweep's or a ranking's ROC, or None."""
    levels: dict[str, Any] = {}
    for level in LEVELS:
        curve = record.record(level)
        levels[level] = None if curve is None else (
            tuple(_roc_point(p) for p in curve.records("points")),
            tuple(_roc_point(p) for p in curve.records("curve")))
    return levels


def _roc_point(record: Record) -> tuple[float, float, float | None]:
    fpr, tpr = record.number("fpr", 0.0, 1.0), record.number("tpr", 0.0, 1.0)
    if fpr is None:
        raise record.wrong("fpr", "a number from 0 to 1")
    if tpr is None:
        raise record.wrong("tpr", "a number from 0 to 1")
    return fpr, tpr, record.number("threshold")


# --------------------------------------------------------------------------- run.yaml


def read_settings(path: Path) -> dict[str, Any]:
    """A run's `run.yaml` as a mapping (its values are shown as they are, escaped)."""
    data = read_yaml(path, "run.yaml is what `circuit discover` writes", MAX_SETTINGS_BYTES,
                     max_nodes=MAX_SETTINGS_VALUES)
    if not isinstance(data, dict):
        raise FileError(f"{path}: holds {kind_of(data)}, expected the mapping `circuit "
                        f"discover` writes")
    return data
