"""The seam between the run pipeline and a discovery method.

A method is a `Method` value in `acdc.methods.registry.METHODS`: a name, a description, the
frozen dataclass of its own settings (next to the `CommonSettings` every method shares) and a
`discover` function that takes a `Discovery` (the loaded model, the tokenised task, the
settings, where the run lives, a progress callback) and returns a `Circuit`
(`acdc.core.circuit`). The pipeline (`acdc.run`) loads, resolves, writes the outputs and
records the settings; a method only finds the circuit.

A method whose runs can be resumed keeps a `Journal` in the run's directory (ACDC: its
decision log). The pipeline asks the journal, before loading anything, for the settings the
run was started with and whether a directory holds an unfinished run; the method's `discover`
reads what it needs from the `JournalState` it is handed back.

Adding a method: a package or module under `acdc/methods/` with its settings dataclass and a
`discover` function, one entry in the registry; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from acdc.core.settings import CommonSettings
from acdc.errors import AcdcError

if TYPE_CHECKING:
    from acdc.core.circuit import Circuit
    from acdc.core.configs import ModelShape
    from acdc.core.loading import LoadedModel
    from acdc.core.tasks import Task, TaskSpec


class JournalState(Protocol):
    """A journal as read back: the settings it was started with, and a note to show (a
    damaged last line that was dropped), or None."""

    @property
    def header(self) -> Mapping[str, Any]: ...

    @property
    def dropped(self) -> str | None: ...

    @property
    def n_decided(self) -> int: ...

    @property
    def n_edges(self) -> int: ...


class Journal(Protocol):
    """How a resumable method records its progress in a run directory."""

    file_name: str

    def read(self, out_dir: Path) -> JournalState: ...

    def check_new_run(self, out_dir: Path) -> None:
        """Refuse (AcdcError) to start a new run over an unfinished one in `out_dir`."""
        ...


@dataclass(frozen=True)
class Discovery:
    """One discovery run, as handed to a method.

    `record` is the run's settings as the run records them (a journal's header);
    `out_dir` is where a resumable method keeps its journal (None: keep none);
    `resume_from` is the journal read back when the run is being resumed;
    `recordings` the task's clean and corrupted runs on this model, recorded once for several
    runs (`acdc.core.recordings`; a sweep), or None: a method that records runs makes its own."""

    model: LoadedModel
    task: Task
    common: CommonSettings
    settings: Any
    record: Mapping[str, Any]
    out_dir: Path | None = None
    resume_from: JournalState | None = None
    on_progress: Callable[[Any], None] | None = None
    recordings: Any = None


@dataclass(frozen=True)
class Method:
    """A discovery method: its settings type, how to make its settings from a task and the
    options given, and `discover`. `journal` is None for a method whose runs cannot resume."""

    name: str
    description: str
    settings_type: type
    make_settings: Callable[[TaskSpec, Mapping[str, Any]], Any]
    discover: Callable[[Discovery], Circuit]
    journal: Journal | None = None
    # Bytes a run needs beyond the model's weights, from the model's shape, the settings and
    # the task's size; None when the method cannot say.
    extra_memory: Callable[[ModelShape, CommonSettings, Task], int] | None = None


def refuse_unknown_options(method: str, options: Mapping[str, Any], known: set[str]) -> None:
    """One line naming the first option that `method` does not take."""
    for key in options:
        if key not in known:
            flag = "--" + key.replace("_", "-")
            raise AcdcError(f"{flag} is not an option of method {method}; leave it out or choose "
                            f"a method that takes it")
