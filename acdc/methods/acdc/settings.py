"""ACDC's own settings, beside the `CommonSettings` every method shares (no torch: the CLI and
the run pipeline read them before anything heavy is loaded)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from acdc.core.settings import UNRECORDED
from acdc.errors import AcdcError

ENGINES: tuple[str, ...] = ("incremental", "full")


@dataclass(frozen=True)
class AcdcSettings:
    """ACDC's own settings. `threshold` is tau; `abs` removes an edge when |change| < tau
    instead of change < tau; `reverse_head_order` visits heads 0 upwards. `engine` and
    `candidates` choose how tests are computed and never change a decision (not recorded)."""

    threshold: float
    abs: bool = False
    reverse_head_order: bool = False
    engine: Literal["incremental", "full"] = field(default="incremental", metadata=UNRECORDED)
    candidates: int = field(default=0, metadata=UNRECORDED)  # 0: chosen by batch size

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
