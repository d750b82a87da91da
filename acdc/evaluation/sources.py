"""What `circuit compare` reads: circuits, run directories, sweep directories, references.

- A circuit is a `circuit.json` file, or a run directory holding one (`circuit discover`'s
  output directory).
- A sweep directory is the minimal layout `circuit compare` relies on: a directory with one
  subdirectory per threshold, named `tau-<threshold>` (`tau-0.01`, `tau-1e-05`: anything after
  `tau-` that reads as a number), each a run directory holding its `circuit.json`. The threshold
  is taken from the subdirectory's name; anything else in the directory (`sweep.json`, plots)
  is not read. Subdirectories without a `circuit.json` (thresholds not run yet) and partial runs
  are left out with a warning; a sweep with no finished run is an error, as are runs of
  different graph shapes or two subdirectories for one threshold.
- A reference is the name of a canonical circuit (`ioi-gpt2`, see
  `acdc.evaluation.canonical`), a `circuit.json` (or run directory), or a plain edge-list file
  (`acdc.evaluation.edge_list`); it is read against the graph of the circuits it judges.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from acdc.core.circuit import Circuit, load_circuit
from acdc.core.graph import Graph
from acdc.errors import GraphError, RunWarning, did_you_mean
from acdc.evaluation.canonical import CANONICAL, CANONICAL_NAMES, load_canonical
from acdc.evaluation.compare import check_same_graph
from acdc.evaluation.edge_list import read_edge_list

CIRCUIT_FILE = "circuit.json"
RUN_PREFIX = "tau-"


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
    """A reference circuit: what the user named it and its kept flags over a graph."""

    name: str
    kept: tuple[bool, ...]


def is_sweep_dir(path: Path) -> bool:
    """A directory with at least one `tau-*` subdirectory and no circuit.json of its own."""
    if not path.is_dir() or (path / CIRCUIT_FILE).exists():
        return False
    return any(sub.is_dir() and sub.name.startswith(RUN_PREFIX) for sub in path.iterdir())


def circuit_file(path: str | Path) -> Path:
    """`path` itself, or the circuit.json in the run directory `path`."""
    path = Path(path)
    return path / CIRCUIT_FILE if path.is_dir() else path


def load_input(path: str | Path) -> Circuit | Sweep:
    """A circuit (file or run directory) or a sweep (directory of `tau-*` run directories)."""
    path = Path(path)
    if not path.exists():
        raise GraphError(f"{path}: no such file or directory")
    if path.is_dir() and not (path / CIRCUIT_FILE).is_file():
        if is_sweep_dir(path) or (path / "sweep.json").is_file():
            return load_sweep(path)
        raise GraphError(f"{path}: neither a run directory (no {CIRCUIT_FILE}) nor a sweep "
                         f"directory (no {RUN_PREFIX}<threshold>/ subdirectories)")
    return load_circuit(circuit_file(path))


def load_sweep(path: str | Path) -> Sweep:
    """The finished runs of the sweep directory `path` (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise GraphError(f"{path}: not a directory; a sweep is a directory of "
                         f"{RUN_PREFIX}<threshold>/ run directories")
    runs: list[SweepRun] = []
    left_out: list[str] = []
    by_threshold: dict[float, Path] = {}
    for sub in sorted(path.iterdir()):
        if not (sub.is_dir() and sub.name.startswith(RUN_PREFIX)):
            continue
        try:
            threshold = float(sub.name[len(RUN_PREFIX):])
        except ValueError:
            left_out.append(f"{sub.name} (not a threshold)")
            continue
        if not (sub / CIRCUIT_FILE).is_file():
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
        found = f" ({', '.join(left_out)})" if left_out else ""
        raise GraphError(f"{path}: empty sweep: no {RUN_PREFIX}<threshold>/{CIRCUIT_FILE} of a "
                         f"finished run{found}")
    if left_out:
        warnings.warn(f"{path}: left out {', '.join(left_out)}", RunWarning, stacklevel=2)
    return Sweep(path, tuple(sorted(runs, key=lambda run: run.threshold)))


def load_reference(spec: str, graph: Graph) -> Reference:
    """The reference named by `spec`, read against `graph`.

    `spec` is a canonical circuit's name, a circuit.json or run directory, or an edge-list
    file. Raises `GraphError` for unknown names, edges or graph shapes and for an empty
    reference (its TPR would be undefined).
    """
    path = Path(spec)
    if spec in CANONICAL and not path.exists():
        kept = load_canonical(spec, graph)
    elif path.is_dir() or (path.is_file() and _looks_like_json(path)):
        circuit = load_circuit(circuit_file(path))
        check_same_graph(graph, circuit.graph, "the compared circuit", f"reference {spec}")
        kept = circuit.kept
    elif path.is_file():
        kept = read_edge_list(path, graph)
    else:
        raise GraphError(f"reference {spec!r}: no such file, and not a canonical circuit"
                         f"{did_you_mean(spec, CANONICAL)} (known: {', '.join(CANONICAL_NAMES)})")
    if not any(kept):
        raise GraphError(f"reference {spec}: has no edges, so TPR is undefined")
    return Reference(spec, tuple(kept))


def _looks_like_json(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(256).lstrip().startswith(b"{")
    except OSError as error:
        raise GraphError(f"{path}: cannot read ({error.strerror or error})") from None

