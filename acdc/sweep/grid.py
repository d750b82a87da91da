"""Threshold grids: how a sweep's thresholds are written, chosen and named on disk.

A grid is written `LO:HI:N` (N thresholds spaced evenly in log10 from LO to HI, both
included, as numpy's `logspace` does: `1e-4:1e-1:13` is 10^-4, 10^-3.75, ..., 10^-1), or as a
comma-separated list of thresholds (`0.001,0.01,0.1`, used exactly as written). Points of a log
grid are rounded to 3 significant digits (`1e-4:1e-1:13` gives 0.0001, 0.000178, 0.000316, ...),
so that the threshold a run uses is the one its directory's name says.

Without `--thresholds` a sweep takes the grid the ACDC paper swept for its task
(`shared/EVALUATION.md`, section 3), chosen by the task's name and metric (`PAPER_GRIDS`), else
`DEFAULT_GRID`.

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

from acdc.errors import AcdcError

DEFAULT_GRID = "1e-4:1e-1:13"
RUN_PREFIX = "tau-"
SIGNIFICANT_DIGITS = 3
MAX_THRESHOLDS = 1000

# The ACDC paper's sweeps (`shared/EVALUATION.md`, section 3), by task name and metric (None:
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
    """A threshold grid that cannot be read or is empty."""


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
    parts = [p.strip() for p in text.split(":")]
    if len(parts) != 3 or not all(parts):
        raise GridError(f"--thresholds {text}: a log grid is LO:HI:N, three parts (e.g. "
                        f"1e-4:1e-1:13), got {len(parts)}")
    lo, hi = (_number(p, text, what) for p, what in zip(parts[:2], ("LO", "HI"), strict=True))
    try:
        n = int(parts[2])
    except ValueError:
        raise GridError(f"--thresholds {text}: N must be a whole number of thresholds, got "
                        f"{parts[2]!r}") from None
    if n < 1:
        raise GridError(f"--thresholds {text}: the grid is empty (N = {n}); N must be at least 1")
    if n > MAX_THRESHOLDS:
        raise GridError(f"--thresholds {text}: {n} thresholds is more than {MAX_THRESHOLDS}")
    for value, what in ((lo, "LO"), (hi, "HI")):
        if value <= 0:
            raise GridError(f"--thresholds {text}: {what} is {value:g}, but a log grid needs "
                            f"thresholds > 0; give the thresholds as a list (0,0.001,0.01) to "
                            f"include 0")
    if lo > hi:
        raise GridError(f"--thresholds {text}: LO {lo:g} is larger than HI {hi:g}")
    if n > 1 and lo == hi:
        raise GridError(f"--thresholds {text}: LO = HI gives one threshold, not {n}")
    grid = log_grid(lo, hi, n)
    for a, b in zip(grid, grid[1:], strict=False):
        if a == b:
            raise GridError(f"--thresholds {text}: too dense: two thresholds round to {a:g} at "
                            f"{SIGNIFICANT_DIGITS} significant digits; use a smaller N")
    return grid


def _parse_list(text: str) -> tuple[float, ...]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise GridError(f"--thresholds {text}: an empty item in the list; separate "
                            f"thresholds by single commas")
        value = _number(part, text, "a threshold")
        if value < 0:
            raise GridError(f"--thresholds {text}: {part} is negative; thresholds are >= 0")
        values.append(value)
    seen: set[float] = set()
    for value in values:
        if value in seen:
            raise GridError(f"--thresholds {text}: {value:g} is given twice")
        seen.add(value)
    return tuple(sorted(values))


def _number(part: str, text: str, what: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise GridError(f"--thresholds {text}: {what} {part!r} is not a number; write LO:HI:N "
                        f"(e.g. 1e-4:1e-1:13) or a list such as 0.001,0.01,0.1") from None
    if not math.isfinite(value):
        raise GridError(f"--thresholds {text}: {what} {part!r} is not a finite number")
    return value


def default_grid(task: str, metric: str) -> Grid:
    """The paper's grid for a task of this name and metric, else `DEFAULT_GRID`.

    >>> default_grid("ioi", "kl").source
    "the ACDC paper's grid for ioi (kl)"
    >>> default_grid("demo", "kl").spec
    '1e-4:1e-1:13'
    """
    for key in ((task, metric), (task, None)):
        if key in PAPER_GRIDS:
            spec = PAPER_GRIDS[key]
            return Grid(_parse_log_grid(spec), spec,
                        f"the ACDC paper's grid for {task}" + (f" ({metric})" if key[1] else ""))
    return Grid(_parse_log_grid(DEFAULT_GRID), DEFAULT_GRID, "the default grid")


def run_dir_name(threshold: float) -> str:
    """`tau-<threshold>`: the shortest repr that reads back as exactly this float."""
    return f"{RUN_PREFIX}{float(threshold)!r}"
