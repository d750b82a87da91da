"""What a report is made of, read from disk: `read_source`.

The target is read as `circuit compare` reads its inputs (`acdc.evaluation.sources`: one
reader of circuits, run directories and sweep directories for both commands): a circuit file,
a run directory, or a sweep directory of `tau-<threshold>/` runs. Beside the circuit drawn, the
page reads `run.yaml` and `evaluation.json`; in a sweep directory `sweep.json`; and the
`circuit compare` output directories found in the directory (itself and its subdirectories
other than runs) or named with `--comparison`. Each of these files is optional: one that cannot
be read or holds a wrong value is left out, with a note naming the file and what is wrong
(`acdc.reports.inputs`). A circuit that cannot be read is an error.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from acdc.core.circuit import Circuit, load_circuit
from acdc.core.files import FileError, disk_error
from acdc.errors import AcdcError, RunWarning
from acdc.evaluation.sources import (
    CIRCUIT_FILE,
    RUN_PREFIX,
    SWEEP_FILE,
    Sweep,
    SweepRun,
    circuit_file,
    input_kind,
    load_sweep,
)
from acdc.reports.inputs import (
    Comparison,
    Evaluation,
    Roc,
    SweepTable,
    read_comparison,
    read_evaluation,
    read_roc,
    read_settings,
    read_sweep_json,
    read_sweep_plot,
    read_sweep_table,
)

RUN_FILE = "run.yaml"
EVALUATION_FILE = "evaluation.json"
COMPARISON_FILE = "comparison.json"
ROC_FILE = "roc.json"
UNION_FILE = "union.svg"
COMPARISON_FILES: tuple[str, ...] = (COMPARISON_FILE, ROC_FILE)
MAX_COMPARISONS = 100  # compare output directories found in one directory

T = TypeVar("T")


@dataclass(frozen=True)
class ComparisonDir:
    """One `circuit compare` output directory: what could be read of it."""

    path: Path
    comparison: Comparison | None
    roc: Roc | None
    union: Path | None  # union.svg, when there is one


@dataclass
class Source:
    """What the page is made of, read from disk. `inputs` are every file read (the page is
    never written over one); `notes` say what was left out and why."""

    directory: Path
    circuit_path: Path
    circuit: Circuit
    settings: dict[str, Any] | None
    evaluation_path: Path
    evaluation: Evaluation | None
    sweep: Sweep | None = None
    sweep_table: SweepTable | None = None
    sweep_plot: dict[str, Any] | None = None
    comparisons: list[ComparisonDir] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def is_sweep(self) -> bool:
        return self.sweep is not None

    @property
    def runs(self) -> tuple[SweepRun, ...]:
        return self.sweep.runs if self.sweep is not None else ()


def read_source(target: str | Path, threshold: float | None = None,
                comparisons: Sequence[str | Path] | None = None) -> Source:
    """Read everything the page shows about `target` (a run or sweep directory, or a circuit
    file, whose directory is then read)."""
    target = Path(target)
    notes: list[str] = []
    inputs: list[Path] = []
    sweep = None
    if input_kind(target) == "sweep":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sweep = load_sweep(target)
        notes += [str(w.message) for w in caught if issubclass(w.category, RunWarning)]
        run = chosen_run(sweep, threshold)
        directory, circuit_path, circuit = target, run.path / CIRCUIT_FILE, run.circuit
        inputs += [r.path / CIRCUIT_FILE for r in sweep.runs]
    else:
        if threshold is not None:
            raise AcdcError(f"--threshold: {target} is a run, not a sweep; leave it out")
        circuit_path = circuit_file(target)
        circuit = load_circuit(circuit_path)
        directory = circuit_path.parent
        inputs.append(circuit_path)

    def optional(path: Path, reader: Callable[[Path], T]) -> T | None:
        if not os.path.lexists(path):
            return None
        inputs.append(path)
        try:
            return reader(path)
        except FileError as error:
            notes.append(f"{error}; left out")
            return None

    settings = optional(circuit_path.parent / RUN_FILE, read_settings)
    evaluation_path = evaluation_file(circuit_path, circuit)
    evaluation = optional(evaluation_path, read_evaluation)
    source = Source(directory, circuit_path, circuit, settings, evaluation_path, evaluation,
                    sweep, inputs=inputs, notes=notes)
    if sweep is not None:
        data = optional(directory / SWEEP_FILE, read_sweep_json)
        if data is not None:
            where = str(directory / SWEEP_FILE)
            try:
                source.sweep_table = read_sweep_table(data, where)
                if source.sweep_table is None:
                    notes.append(f"{where}: no list of rows with a 'threshold'; the sweep "
                                 f"table is made from the runs' circuits")
            except FileError as error:
                notes.append(f"{error}; left out")
            source.sweep_plot = optional_value(lambda: read_sweep_plot(data, where), notes)
    for path in (Path(p) for p in comparisons) if comparisons else find_comparisons(directory):
        if comparisons and not any(_present(path / name) for name in COMPARISON_FILES):
            raise AcdcError(f"--comparison {path}: not a `circuit compare` output directory "
                            f"(no {' or '.join(COMPARISON_FILES)})")
        union = path / UNION_FILE
        source.comparisons.append(ComparisonDir(
            path, optional(path / COMPARISON_FILE, read_comparison),
            optional(path / ROC_FILE, read_roc), union if os.path.lexists(union) else None))
        if source.comparisons[-1].union is not None:
            inputs.append(union)
    return source


def optional_value(read: Callable[[], T], notes: list[str]) -> T | None:
    """`read()`, or None with a note when it raises `FileError`."""
    try:
        return read()
    except FileError as error:
        notes.append(f"{error}; left out")
        return None


def chosen_run(sweep: Sweep, threshold: float | None) -> SweepRun:
    """The run at `threshold`, by default the middle one of the sweep's thresholds."""
    runs = sweep.runs
    if threshold is None:
        return runs[(len(runs) - 1) // 2]
    for run in runs:
        if math.isclose(run.threshold, threshold, rel_tol=1e-9):
            return run
    known = ", ".join(f"{run.threshold:g}" for run in runs)
    raise AcdcError(f"--threshold {threshold:g}: {sweep.path} has no finished run at that "
                    f"threshold (it has {known})")


def evaluation_file(circuit_path: Path, circuit: Circuit) -> Path:
    """Where `circuit evaluate` writes by default: evaluation.json beside the circuit, or for a
    MIB file `<file>.evaluation.json`."""
    if circuit.settings.get("method") == "mib":
        return circuit_path.with_name(circuit_path.name.removesuffix(".json")
                                      + f".{EVALUATION_FILE}")
    return circuit_path.parent / EVALUATION_FILE


def find_comparisons(directory: Path) -> list[Path]:
    """The directory itself and its subdirectories (not sweep runs) holding `circuit compare`
    output, at most `MAX_COMPARISONS`."""
    try:
        with os.scandir(directory) as entries:
            names = sorted(entry.name for entry in entries
                           if not entry.name.startswith(RUN_PREFIX) and entry.is_dir())
    except OSError as error:
        raise disk_error(directory, error, "cannot read the directory") from None
    found = [candidate for candidate in [directory, *(directory / name for name in names)]
             if any(_present(candidate / name) for name in COMPARISON_FILES)]
    return found[:MAX_COMPARISONS]


def _present(path: Path) -> bool:
    """Something is at `path` (what is wrong with it is said when it is read)."""
    return os.path.lexists(path)
