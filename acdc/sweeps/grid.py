"""Threshold grids: how a sweep's thresholds are written, chosen and named on disk.

A grid is written `LO:HI:N` (N thresholds spaced evenly in log10 from LO to HI, both
included, as numpy's `logspace` does: `1e-4:1e-1:13` is 10^-4, 10^-3.75, ..., 10^-1), or as a
comma-separated list of thresholds (`0.001,0.01,0.1`, used exactly as written). Points of a log
grid are rounded to 3 significant digits (`1e-4:1e-1:13` gives 0.0001, 0.000178, 0.000316, ...),
so that the threshold a run uses is the one its directory's name says.

Without `--thresholds` a sweep takes the grid the ACDC paper swept for its task (Conmy et al.
2023, section 3 and appendix), chosen by the task's name and metric (`PAPER_GRIDS`) when it
reaches the task's own threshold, else `DEFAULT_GRID`.

A grid read back from a sweep's `sweep.json` (`recorded_grid`) is held to the rules of
`--thresholds`: at most `MAX_THRESHOLDS`, finite, >= 0 (> 0 in a log grid), increasing, no two
with one directory name, and the thresholds those its recorded spec gives.

Each threshold's run lives in `tau-<threshold>/`, the threshold written as Python's shortest
round-trip repr of the float (`tau-0.0001`, `tau-0.000178`, `tau-1e-05`, `tau-0.1`): reading the
name back with `float()` gives the threshold exactly, which is how `circuit compare` reads it.

>>> parse_grid("1e-4:1e-1:4").thresholds
(0.0001, 0.001, 0.01, 0.1)
>>> run_dir_name(0.0001), run_dir_name(1e-05)
('tau-0.0001', 'tau-1e-05')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from acdc.errors import AcdcError, short_repr

DEFAULT_GRID = "1e-4:1e-1:13"
RUN_PREFIX = "tau-"
SIGNIFICANT_DIGITS = 3
MAX_THRESHOLDS = 1000
MAX_SPEC_CHARS = 100_000  # a list of MAX_THRESHOLDS thresholds, written out

# The ACDC paper's sweeps (Conmy et al. 2023), by task name and metric (None:
# any metric). The paper ran them on GPT-2 small (IOI, greater-than), a 2-layer attention-only
# model (induction) and the tracr programs; they apply to any model given a task of that name.
PAPER_GRIDS: dict[tuple[str, str | None], str] = {
    ("ioi", "kl"): "1e-6:1:31",
    ("greater-than", "kl"): "1e-6:1e-4:11",
    ("greater-than", "prob_diff"): "1e-3:1e-1:21",
    ("induction", None): "1e-4:1:21",
    ("tracr-reverse", None): "1e-5:1e-1:21",
    ("tracr-proportion", None): "1e-5:1e-1:21",
}


class GridError(AcdcError):
    """A threshold grid given with `--thresholds` that cannot be read or is empty."""


class RecordedGridError(AcdcError):
    """A grid recorded in a sweep's file that no sweep writes (the file is damaged)."""


@dataclass(frozen=True)
class Grid:
    """A sweep's thresholds, increasing, with the spec they came from and why it was chosen."""

    thresholds: tuple[float, ...]
    spec: str
    source: str  # "--thresholds", "the paper's grid for ioi (kl)" or "the default grid"


def log_grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    """N thresholds evenly spaced in log10 from `lo` to `hi`, rounded to 3 significant digits.

    >>> log_grid(1e-3, 1e-1, 5)
    (0.001, 0.00316, 0.01, 0.0316, 0.1)
    """
    if n == 1:
        return (_round(lo),)
    a, b = math.log10(lo), math.log10(hi)
    return tuple(_round(10 ** (a + (b - a) * i / (n - 1))) for i in range(n))


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS - 1}e}")


def parse_grid(spec: str) -> Grid:
    """The grid `spec` writes: `LO:HI:N` or `T1,T2,...`. Raises `GridError` naming the problem."""
    text = spec.strip()
    if not text or not text.strip(",: "):
        raise GridError("--thresholds: the grid is empty; give LO:HI:N (e.g. 1e-4:1e-1:13) or "
                        "a list such as 0.001,0.01,0.1")
    if ":" in text:
        thresholds = _parse_log_grid(text)
    else:
        thresholds = _parse_list(text)
    return Grid(thresholds, text, "--thresholds")


def _parse_log_grid(text: str) -> tuple[float, ...]:
    shown = _cut(text)
    parts = [p.strip() for p in text.split(":")]
    if len(parts) != 3 or not all(parts):
        raise GridError(f"--thresholds {shown}: a log grid is LO:HI:N, three parts (e.g. "
                        f"1e-4:1e-1:13), got {len(parts)}")
    lo, hi = (_number(p, text, what) for p, what in zip(parts[:2], ("LO", "HI"), strict=True))
    try:
        n = int(parts[2])
    except ValueError:
        raise GridError(f"--thresholds {shown}: N must be a whole number of thresholds, got "
                        f"{_cut(parts[2])!r}") from None
    if n < 1:
        raise GridError(f"--thresholds {shown}: the grid is empty (N = {n}); N must be at least 1")
    if n > MAX_THRESHOLDS:
        raise GridError(f"--thresholds {shown}: {n} thresholds is more than {MAX_THRESHOLDS}")
    for value, what in ((lo, "LO"), (hi, "HI")):
        if value <= 0:
            raise GridError(f"--thresholds {shown}: {what} is {value:g}, but a log grid needs "
                            f"thresholds > 0; give the thresholds as a list (0,0.001,0.01) to "
                            f"include 0")
    if lo > hi:
        raise GridError(f"--thresholds {shown}: LO {lo:g} is larger than HI {hi:g}")
    if n > 1 and lo == hi:
        raise GridError(f"--thresholds {shown}: LO = HI gives one threshold, not {n}")
    grid = log_grid(lo, hi, n)
    for a, b in zip(grid, grid[1:], strict=False):
        if a == b:
            raise GridError(f"--thresholds {shown}: too dense: two thresholds round to {a:g} at "
                            f"{SIGNIFICANT_DIGITS} significant digits; use a smaller N")
    return grid


def _parse_list(text: str) -> tuple[float, ...]:
    shown = _cut(text)
    parts = text.split(",")
    if len(parts) > MAX_THRESHOLDS:
        raise GridError(f"--thresholds {shown}: {len(parts):,} thresholds is more than "
                        f"{MAX_THRESHOLDS}")
    values = []
    for part in parts:
        part = part.strip()
        if not part:
            raise GridError(f"--thresholds {shown}: an empty item in the list; separate "
                            f"thresholds by single commas")
        value = _number(part, text, "a threshold")
        if value < 0:
            raise GridError(f"--thresholds {shown}: {_cut(part)} is negative; thresholds are >= 0")
        values.append(value)
    seen: set[float] = set()
    for value in values:
        if value in seen:
            raise GridError(f"--thresholds {shown}: {value:g} is given twice")
        seen.add(value)
    return tuple(sorted(values))


def _number(part: str, text: str, what: str) -> float:
    shown = _cut(text)
    try:
        value = float(part) + 0.0  # -0 is 0: one directory name, tau-0.0
    except ValueError:
        raise GridError(f"--thresholds {shown}: {what} {_cut(part)!r} is not a number; write "
                        f"LO:HI:N (e.g. 1e-4:1e-1:13) or a list such as 0.001,0.01,0.1") from None
    if not math.isfinite(value):
        raise GridError(f"--thresholds {shown}: {what} {_cut(part)!r} is not a finite number")
    return value


def recorded_grid(thresholds: Any, spec: Any, source: Any, where: str) -> Grid:
    """The grid a sweep recorded (`where` names its file), checked as `--thresholds` is:
    a list of at most `MAX_THRESHOLDS` finite numbers >= 0 (> 0 in a log grid), increasing,
    each with its own directory name, and the thresholds that `spec` gives. Anything else is
    one `RecordedGridError` line naming the file."""
    damaged = "; the file is damaged: start a new sweep with --out"
    if not isinstance(spec, str) or len(spec) > MAX_SPEC_CHARS:
        raise RecordedGridError(f"{where}: grid is {short_repr(spec)}, expected the grid's spec "
                                f"(such as {DEFAULT_GRID}){damaged}")
    if not isinstance(source, str) or len(source) > MAX_SPEC_CHARS:
        raise RecordedGridError(f"{where}: grid_source is {short_repr(source)}, expected "
                                f"text{damaged}")
    if not isinstance(thresholds, list) or not thresholds:
        found = "an empty list" if thresholds == [] else short_repr(thresholds)
        raise RecordedGridError(f"{where}: thresholds is {found}, expected a list of "
                                f"thresholds{damaged}")
    if len(thresholds) > MAX_THRESHOLDS:
        raise RecordedGridError(f"{where}: {len(thresholds):,} thresholds, more than the "
                                f"{MAX_THRESHOLDS} a sweep runs{damaged}")
    log = ":" in spec
    values: list[float] = []
    names: dict[str, int] = {}
    for i, value in enumerate(thresholds):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value) or value < 0 or (log and value <= 0):
            need = "> 0 (a log grid)" if log else ">= 0"
            raise RecordedGridError(f"{where}: thresholds[{i}] is {short_repr(value)}, expected a "
                                    f"finite number {need}{damaged}")
        value = float(value) + 0.0
        name = run_dir_name(value)
        if name in names:
            raise RecordedGridError(f"{where}: thresholds[{names[name]}] and thresholds[{i}] "
                                    f"are both {value!r} ({name}){damaged}")
        names[name] = i
        if values and value < values[-1]:
            raise RecordedGridError(f"{where}: thresholds[{i}] ({value!r}) is smaller than the "
                                    f"one before it; a sweep lists them in increasing "
                                    f"order{damaged}")
        values.append(value)
    try:
        expected = parse_grid(spec).thresholds
    except GridError as error:
        problem = str(error).removeprefix(f"--thresholds {_cut(spec.strip())}: ")
        raise RecordedGridError(f"{where}: grid {short_repr(spec)} is not a grid ({problem})"
                                f"{damaged}") from None
    if expected != tuple(values):
        raise RecordedGridError(f"{where}: its {len(values)} thresholds are not those of its grid "
                                f"{short_repr(spec)} ({len(expected)} thresholds){damaged}")
    return Grid(tuple(values), spec, source)


def _cut(text: str) -> str:
    """A grid spec in a message, cut to a readable length."""
    return text if len(text) <= 80 else text[:77] + "..."


def default_grid(task: str, metric: str, threshold: float | None = None) -> Grid:
    """The paper's grid for a task of this name and metric, else `DEFAULT_GRID`.

    The paper's grids were swept on its models (GPT-2 small for ioi and greater-than), whose
    metric changes can be orders of magnitude from another model's: a paper grid that does not
    reach the task's own threshold (`threshold`, when given and > 0) would keep nearly every
    edge at every point, so the default grid is taken instead, and its source says why.

    >>> default_grid("ioi", "kl").source
    "the ACDC paper's grid for ioi (kl)"
    >>> default_grid("demo", "kl").spec
    '1e-4:1e-1:13'
    >>> default_grid("greater-than", "kl", threshold=0.1).spec
    '1e-4:1e-1:13'
    """
    for key in ((task, metric), (task, None)):
        if key in PAPER_GRIDS:
            spec = PAPER_GRIDS[key]
            thresholds = _parse_log_grid(spec)
            name = f"the ACDC paper's grid for {task}" + (f" ({metric})" if key[1] else "")
            if threshold and not thresholds[0] <= threshold <= thresholds[-1]:
                return Grid(_parse_log_grid(DEFAULT_GRID), DEFAULT_GRID,
                            f"the default grid ({name}, {spec}, does not reach the task's "
                            f"threshold {threshold:g})")
            return Grid(thresholds, spec, name)
    return Grid(_parse_log_grid(DEFAULT_GRID), DEFAULT_GRID, "the default grid")


def run_dir_name(threshold: float) -> str:
    """`tau-<threshold>`: the shortest repr that reads back as exactly this float."""
    return f"{RUN_PREFIX}{float(threshold)!r}"
