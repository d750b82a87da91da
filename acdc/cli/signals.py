"""Ctrl-C and SIGTERM during a run: stop at the next logged decision, never mid-write."""

from __future__ import annotations

import signal
from typing import Any


class Interrupts:
    """Ctrl-C (SIGINT) and SIGTERM (a batch scheduler's preemption) alike. Before a search's
    first decision they stop the command at once; after it, they take effect at the next
    decision, once it is logged, so that the log and the partial outputs hold the same
    decisions. A second signal while outputs are written waits for them to be complete."""

    NAMES: dict[int, str] = {signal.SIGINT: "interrupted",
                             signal.SIGTERM: "terminated (SIGTERM)"}

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferring = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        for signum in self.NAMES:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        if not self.deferring:
            raise KeyboardInterrupt

    def checkpoint(self) -> None:
        """A decision was logged: from now on signals wait for the next one."""
        self.deferring = True
        if self.received is not None:
            raise KeyboardInterrupt

    @property
    def name(self) -> str:
        return self.NAMES.get(self.received or signal.SIGINT, "interrupted")

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)


