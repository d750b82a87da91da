"""Reading task files: a YAML path or the name of a bundled task, into a `TaskSpec`.

A file is read only up to `MAX_TASK_BYTES` (whatever the file system says its size is), must
be UTF-8 text and goes through the project's bounded YAML reader. Bundled tasks are the YAML
files of `TASKS_DIR` (the repository's `tasks/`, installed with the package); their names are
the file names with `-` for `_` (`greater-than` reads `greater_than.yaml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acdc.core.bundled import tasks_dir
from acdc.core.files import FileError, parse_yaml
from acdc.core.tasks.prompts import MAX_TASK_ITEMS
from acdc.core.tasks.spec import TaskSpec, spec_from_dict
from acdc.errors import TaskError, did_you_mean

TASKS_DIR = tasks_dir()
"""Where bundled tasks live: `tasks/<name>.yaml`, found through `acdc.core.bundled`."""
MAX_TASK_BYTES = 32 * 2**20  # a task file; the bundled ones are a few kilobytes


def read_task(ref: str | Path) -> TaskSpec:
    """Read and validate a task: a YAML file path, or the name of a bundled task.

    Bundled names may use '-' for '_' (`greater-than` reads `tasks/greater_than.yaml`).
    """
    path = find_task_file(str(ref))
    source = str(ref) if Path(str(ref)).is_file() else str(path)
    try:
        with open(path, "rb") as stream:  # read at most the limit, whatever stat says
            raw = stream.read(MAX_TASK_BYTES + 1)
    except OSError as error:
        raise TaskError(f"{source}: cannot read ({error.strerror or error})") from None
    if len(raw) > MAX_TASK_BYTES:
        raise TaskError(
            f"{source}: larger than {MAX_TASK_BYTES // 2**20} MiB, far more than a task file"
            f" holds (the bundled ones are a few kilobytes); use fewer or shorter prompts, or a"
            f" generator"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TaskError(f"{source}: not a text file; a task is a YAML file") from None
    return spec_from_dict(load_yaml(text, source), source, path.resolve().parent)


def load_yaml(text: str, source: str) -> Any:
    """The task file's data through the project's bounded YAML reader (safe, no repeated keys,
    aliases and nesting bounded), every failure one `TaskError`."""
    try:
        return parse_yaml(text, source, "see tasks/README.md for the format",
                          max_nodes=2 * MAX_TASK_ITEMS)
    except FileError as error:
        raise TaskError(str(error)) from None


def list_tasks() -> list[TaskSpec]:
    """The bundled tasks, sorted by file name (tasks/README.md is not a task)."""
    if not TASKS_DIR.is_dir():
        return []
    files = sorted(p for p in TASKS_DIR.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [read_task(str(p)) for p in files]


def bundled_task_names() -> list[str]:
    """The bundled tasks' names as users write them: file names with `-` for `_`."""
    if not TASKS_DIR.is_dir():
        return []
    return sorted(
        p.stem.replace("_", "-") for p in TASKS_DIR.iterdir() if p.suffix in (".yaml", ".yml")
    )


def find_task_file(ref: str) -> Path:
    """The file `ref` names: a path, or a bundled task's name; else one line with the names."""
    path = Path(ref)
    if path.is_file():
        return path
    if path.is_dir():
        raise TaskError(f"{ref}: is a directory; give a task YAML file or a bundled task name")
    if path.exists():
        raise TaskError(f"{ref}: is not a regular file (a device or a pipe); give a task YAML file")
    looks_like_path = ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref
    if not looks_like_path:
        for suffix in (".yaml", ".yml"):
            bundled = TASKS_DIR / f"{ref.replace('-', '_')}{suffix}"
            if bundled.is_file():
                return bundled
    names = bundled_task_names()
    if looks_like_path:
        raise TaskError(
            f"{ref}: no such task file; give an existing YAML file or a bundled task"
            f" name ({or_none(names)})"
        )
    raise TaskError(
        f"unknown task {ref!r}{did_you_mean(ref.replace('_', '-'), names)}: give a"
        f" YAML file path or a bundled task name ({or_none(names)})"
    )


def or_none(names: list[str]) -> str:
    """Names for a message, or that there are none."""
    return ", ".join(names) if names else "none bundled"

