"""ACDC's own settings, beside the `CommonSettings` every method shares (no torch: the CLI and
the run pipeline read them before anything heavy is loaded)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from acdc.errors import AcdcError
from acdc.methods.base import option

ENGINES: tuple[str, ...] = ("incremental", "full")


@dataclass(frozen=True)
class AcdcSettings:
    """ACDC's own settings. `threshold` is tau; `abs` removes an edge when |change| < tau
    instead of change < tau; `reverse_head_order` visits heads 0 upwards. `engine` and
    `candidates` choose how tests are computed and never change a decision (not recorded)."""

    threshold: float = option(
        dataclasses.MISSING, from_task="threshold",
        help="ACDC's threshold tau: an edge is removed when removing it raises the metric by "
             "less than this. Default: the task's.")
    abs: bool = option(False, flag="--abs", help="Remove an edge when |metric change| < tau "
                                                 "(the paper's default is the signed rule).")
    reverse_head_order: bool = option(
        False, help="Visit heads from 0 upwards instead of from the highest index down.")
    engine: Literal["incremental", "full"] = option(
        "incremental", recorded=False,
        help="How edge tests are computed (never changes a decision): incremental, or full "
             "recompute from the receiver's layer.")
    candidates: int = option(
        0, recorded=False,
        help="Edge removals evaluated together, with the decisions of one at a time; 0 "
             "(default): by model and batch size (more on a GPU, which one test leaves idle).")

    def validate(self) -> None:
        if (isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float))
                or not math.isfinite(self.threshold)):
            raise AcdcError(f"threshold must be a finite number, got {self.threshold!r}")
        if self.engine not in ENGINES:
            raise AcdcError(f"unknown engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if not isinstance(self.candidates, int) or self.candidates < 0:
            raise AcdcError(f"candidates must be 0 (automatic) or a positive number, got "
                            f"{self.candidates!r}")
        if self.candidates > 1 and self.engine == "full":
            raise AcdcError("the full engine tests one edge at a time: use candidates 0 or 1 "
                            "with it")
