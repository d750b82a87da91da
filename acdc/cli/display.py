"""What the command line prints besides results: status lines, progress, and the formatting of
numbers, sizes and tables every command shares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acdc.cli.boundary import err


def table(rows: Sequence[Sequence[str]], right: Sequence[int] = (), last_free: bool = False
          ) -> list[str]:
    """Rows as text columns two spaces apart, each as wide as its widest cell; the columns in
    `right` right-aligned; with `last_free` the last column is not padded (a description)."""
    n = len(rows[0]) - (1 if last_free else 0)
    widths = [max(len(row[i]) for row in rows) for i in range(n)]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row[:n], widths, strict=True))]
        if last_free:
            cells.append(row[n])
        lines.append("  ".join(cells).rstrip())
    return lines


def number(value: float | None) -> str:
    """A value for a table: 4 significant digits, `-` when undefined."""
    return "-" if value is None else f"{value:.4g}"


class Status:
    """Plain status lines on stderr, silenced by --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            err(message)


class ProgressDisplay:
    """The engine's progress: a live rich bar when stderr is a terminal; otherwise a plain line
    at every tenth of the edges; nothing with --quiet."""

    def __init__(self, quiet: bool, method: str = "acdc"):
        self.quiet = quiet
        self.method = method
        self.started = False
        self.bar: Any = None  # a rich Progress while shown (rich is imported when needed)
        self.task_id = None
        self.next_report = 0.1

    def __enter__(self) -> ProgressDisplay:
        return self

    def _start(self) -> None:
        """The bar, at the first report (a method that reports no progress shows none)."""
        self.started = True
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn(f"[bold]{self.method}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("kept {task.fields[kept]}"), TextColumn("metric {task.fields[metric]}"),
                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                TextColumn("[dim]{task.fields[edge]}"),
                console=console, transient=False,
            )
            self.bar.__enter__()
            self.task_id = self.bar.add_task("acdc", total=None, kept="-", metric="-", edge="",
                                             eta="-")

    def update(self, progress) -> None:
        if self.quiet:
            return
        if not self.started:
            self._start()
        if self.bar is not None:
            self.bar.update(self.task_id, completed=progress.decided, total=progress.total,
                            kept=progress.kept, metric=f"{progress.metric:.4g}", edge=progress.edge,
                            eta=duration(getattr(progress, "eta_s", None)))
            return
        if progress.total and progress.decided >= self.next_report * progress.total:
            while self.next_report * progress.total <= progress.decided:
                self.next_report += 0.1
            err(f"{progress.decided}/{progress.total} edges decided, {progress.kept} kept, "
                 f"metric {progress.metric:.4g}, {progress.elapsed_s:.1f} s, ETA "
                 f"{duration(getattr(progress, 'eta_s', None))}")

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def duration(seconds: float | None) -> str:
    """`1:02:03`, `2:03`, or `-` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"




def byte_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def count_words(n: int) -> str:
    if n >= 1e12:
        return f"{n / 1e12:.2f}T"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)




def short_model(model: str | None) -> str:
    if model is None:
        return "-"
    path = Path(model)
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else model
    except ValueError:
        return model

