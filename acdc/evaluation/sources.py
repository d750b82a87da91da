"""What `circuit compare` and `circuit report` read: circuits, run directories, sweep
directories, references.

- A circuit is a `circuit.json` file, or a run directory holding one (`circuit discover`'s
  output directory).
- A sweep directory is the minimal layout both commands rely on: a directory with one
  subdirectory per threshold, named `tau-<threshold>` (`tau-0.01`, `tau-1e-05`: anything after
  `tau-` that reads as a finite number >= 0, as `circuit sweep` writes them), each a run
  directory holding its `circuit.json`. The threshold is taken from the subdirectory's name;
  anything else in the directory (`sweep.json`, plots) is not read here. Subdirectories whose
  name is not a threshold (`tau-abc`, `tau-inf`, `tau-nan`, `tau--1`), subdirectories without a
  `circuit.json` (thresholds not run yet) and partial runs are left out with one warning naming
  them; a sweep with no finished run is an error, as are runs of different graph shapes, two
  subdirectories for one threshold (`tau-0.01` and `tau-0.010`) and a directory that cannot be
  read.
- A reference is the name of a canonical circuit (`ioi-gpt2`, see
  `acdc.evaluation.canonical`), a `circuit.json` (or run directory), or a plain edge-list file
  (`acdc.evaluation.edge_list`). A canonical circuit or circuit file is read over its own graph
  (at positions or not), an edge list against the graph of the circuits it judges.
"""

from __future__ import annotations

import math
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from acdc.core.circuit import Circuit, load_circuit
from acdc.core.files import disk_error
from acdc.core.graph import Graph
from acdc.errors import GraphError, RunWarning, did_you_mean
from acdc.evaluation.canonical import CANONICAL, CANONICAL_NAMES, canonical_graph, load_canonical
from acdc.evaluation.compare import check_same_graph
from acdc.evaluation.edge_list import read_edge_list
from acdc.evaluation.projection import blind_graph

CIRCUIT_FILE = "circuit.json"
SWEEP_FILE = "sweep.json"
RUN_PREFIX = "tau-"
# A threshold as `circuit sweep` names its directories (Python's shortest repr of a float):
# digits, an optional fraction and exponent; no sign, no `inf` or `nan`, no spaces or `_`.
THRESHOLD_NAME = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
MAX_NAMED = 20  # left-out subdirectories named in one warning


@dataclass(frozen=True)
class SweepRun:
    """One threshold of a sweep: its value, run directory and circuit."""

    threshold: float
    path: Path
    circuit: Circuit


@dataclass(frozen=True)
class Sweep:
    """The finished runs of a sweep directory, by increasing threshold."""

    path: Path
    runs: tuple[SweepRun, ...]

    @property
    def graph(self) -> Graph:
        return self.runs[0].circuit.graph


@dataclass(frozen=True)
class Reference:
    """A reference circuit: what the user named it, its graph (a circuit file's or canonical
    circuit's own, possibly at positions) and its kept flags over that graph."""

    name: str
    kept: tuple[bool, ...]
    graph: Graph


def run_threshold(name: str) -> float | None:
    """The threshold a run directory's name gives (`tau-0.01` -> 0.01), or None when the name
    is not `tau-` and a finite number >= 0 (`tau-abc`, `tau-inf`, `tau-nan`, `tau--1`,
    `tau-1e999`).

    >>> run_threshold("tau-1e-05"), run_threshold("tau-inf"), run_threshold("tau--1")
    (1e-05, None, None)
    """
    text = name[len(RUN_PREFIX):] if name.startswith(RUN_PREFIX) else ""
    if not THRESHOLD_NAME.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _status(path: Path) -> os.stat_result | None:
    """`path`'s status (links followed), None when nothing is there; a path that cannot be
    read (permission denied, a file where a directory should be) is one `AcdcError` line."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise disk_error(path, error, "cannot read") from None


def _is_dir(path: Path) -> bool:
    info = _status(path)
    return info is not None and stat.S_ISDIR(info.st_mode)


def _run_directories(path: Path) -> list[Path]:
    """The `tau-*` subdirectories of the directory `path`, by name."""
    try:
        with os.scandir(path) as entries:
            names = sorted(entry.name for entry in entries if entry.name.startswith(RUN_PREFIX))
    except OSError as error:
        raise disk_error(path, error, "cannot read the directory") from None
    return [path / name for name in names if _is_dir(path / name)]


def is_sweep_dir(path: Path) -> bool:
    """A directory with at least one `tau-*` subdirectory and no circuit.json of its own."""
    path = Path(path)
    if not _is_dir(path) or _status(path / CIRCUIT_FILE) is not None:
        return False
    return bool(_run_directories(path))


def circuit_file(path: str | Path) -> Path:
    """`path` itself, or the circuit.json in the run directory `path`."""
    path = Path(path)
    return path / CIRCUIT_FILE if _is_dir(path) else path


def input_kind(path: str | Path) -> Literal["circuit", "sweep"]:
    """What `path` names: a circuit (a file, or a run directory holding a circuit.json) or a
    sweep (a directory of `tau-<threshold>/` run directories, or one holding a sweep.json).
    Anything else is one `GraphError` line; what is wrong with a circuit file is said when it is
    read (`load_circuit`)."""
    path = Path(path)
    info = _status(path)
    if info is None:
        raise GraphError(f"{path}: no such file or directory")
    if not stat.S_ISDIR(info.st_mode) or _status(path / CIRCUIT_FILE) is not None:
        return "circuit"
    if _run_directories(path) or _status(path / SWEEP_FILE) is not None:
        return "sweep"
    raise GraphError(f"{path}: neither a run directory (no {CIRCUIT_FILE}) nor a sweep "
                     f"directory (no {RUN_PREFIX}<threshold>/ subdirectories)")


def load_input(path: str | Path) -> Circuit | Sweep:
    """A circuit (file or run directory) or a sweep (directory of `tau-*` run directories)."""
    if input_kind(path) == "sweep":
        return load_sweep(path)
    return load_circuit(circuit_file(path))


def load_sweep(path: str | Path) -> Sweep:
    """The finished runs of the sweep directory `path` (see the module docstring)."""
    path = Path(path)
    if not _is_dir(path):
        raise GraphError(f"{path}: not a directory; a sweep is a directory of "
                         f"{RUN_PREFIX}<threshold>/ run directories")
    runs: list[SweepRun] = []
    left_out: list[str] = []
    by_threshold: dict[float, Path] = {}
    for sub in _run_directories(path):
        threshold = run_threshold(sub.name)
        if threshold is None:
            left_out.append(f"{sub.name} (not a threshold: a finite number >= 0)")
            continue
        if _status(sub / CIRCUIT_FILE) is None:
            left_out.append(f"{sub.name} (no {CIRCUIT_FILE})")
            continue
        circuit = load_circuit(sub / CIRCUIT_FILE)
        if circuit.partial:
            left_out.append(f"{sub.name} (partial run)")
            continue
        if threshold in by_threshold:
            raise GraphError(f"{path}: {by_threshold[threshold].name} and {sub.name} are both "
                             f"threshold {threshold:g}")
        if runs:
            check_same_graph(runs[0].circuit.graph, circuit.graph,
                             str(runs[0].path / CIRCUIT_FILE), str(sub / CIRCUIT_FILE))
        by_threshold[threshold] = sub
        runs.append(SweepRun(threshold, sub, circuit))
    if not runs:
        found = f" ({_listed(left_out)})" if left_out else ""
        raise GraphError(f"{path}: empty sweep: no {RUN_PREFIX}<threshold>/{CIRCUIT_FILE} of a "
                         f"finished run{found}")
    if left_out:
        warnings.warn(f"{path}: left out {_listed(left_out)}", RunWarning, stacklevel=2)
    return Sweep(path, tuple(sorted(runs, key=lambda run: run.threshold)))


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown if len(items) <= MAX_NAMED else f"{shown} and {len(items) - MAX_NAMED} more"


def load_reference(spec: str, graph: Graph) -> Reference:
    """The reference named by `spec`, for circuits of `graph`.

    `spec` is a canonical circuit's name or a circuit.json or run directory, read over its own
    graph (at positions or not: `acdc.evaluation.projection.common_view` decides how it meets
    the circuits), or an edge-list file, read against `graph` (for a positional `graph`, an
    edge list of blind names is read against the blind graph). Raises `GraphError` for unknown
    names or edges, for a circuit of another model's graph and for an empty
    reference (its TPR would be undefined).
    """
    path = Path(spec)
    info = _status(path)
    if info is None and spec in CANONICAL:
        own = canonical_graph(spec)
        if own.shape.blind() != graph.shape.blind():
            load_canonical(spec, graph)  # the line naming the canonical circuit's model
        kept, graph = load_canonical(spec, own), own
    elif info is None:
        raise GraphError(f"reference {spec!r}: no such file, and not a canonical circuit"
                         f"{did_you_mean(spec, CANONICAL)} (known: {', '.join(CANONICAL_NAMES)})")
    elif stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and _looks_like_json(path)):
        circuit = load_circuit(circuit_file(path))
        check_same_graph(blind_graph(graph), blind_graph(circuit.graph), "the compared circuit",
                         f"reference {spec}")
        kept, graph = circuit.kept, circuit.graph
    else:  # an edge list; the bounded reader refuses a device or a pipe
        kept, graph = _read_edge_list(path, graph)
    if not any(kept):
        raise GraphError(f"reference {spec}: has no edges, so TPR is undefined")
    return Reference(spec, tuple(kept), graph)


def _read_edge_list(path: Path, graph: Graph) -> tuple[tuple[bool, ...], Graph]:
    """An edge list against `graph`; for a positional `graph`, one whose names are not
    positional edges but are all blind ones (no `@group`) is read against the blind graph
    (otherwise the positional graph's error line)."""
    try:
        return read_edge_list(path, graph), graph
    except GraphError:
        if not graph.positional:
            raise
        blind = blind_graph(graph)
        try:
            return read_edge_list(path, blind), blind
        except GraphError:
            pass
        raise


def _looks_like_json(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(256).lstrip().startswith(b"{")
    except OSError as error:
        raise GraphError(f"{path}: cannot read ({error.strerror or error})") from None

