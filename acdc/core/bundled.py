"""Bundled data: the task files and model checkpoints that ship with the package.

The repository keeps them at its root, where a reader looks for them: `tasks/` (one YAML file per
task, and the schema in `tasks/README.md`) and `models/` (one checkpoint directory per zoo model).
The package reaches them through `acdc/data/`, whose `tasks` and `models` entries are symbolic
links to those two folders. Building a wheel, or `pip install .`, copies the files behind the
links into the package (`acdc/data/tasks/*.yaml`, `acdc/data/models/<name>/`), so every install
finds them the same way, through the package's resources (`importlib.resources`):

- a source checkout or an editable install reads `acdc/data/...` through the links, that is,
  the repository's `tasks/` and `models/` themselves;
- an installed wheel (or a non-editable install) reads the copies inside `site-packages/acdc/`.

Tasks and models stay side by side in both layouts, so a bundled task's `model: ../models/demo`
resolves against the task file's own directory wherever the package lives.

>>> (tasks_dir() / "demo.yaml").is_file(), (model_dir("demo") / "config.json").is_file()
(True, True)
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from acdc.errors import AcdcError

__all__ = ["data_dir", "model_dir", "models_dir", "tasks_dir"]


def data_dir() -> Path:
    """The directory that holds `tasks/` and `models/` for this installation of `acdc`."""
    root = files("acdc") / "data"
    if not isinstance(root, Path):  # e.g. imported from a zip file: loaders need real files
        raise AcdcError(
            f"the bundled tasks and models are not on the file system ({root}); install the"
            f" package into a directory (pip install) rather than importing it from an archive"
        )
    return root


def tasks_dir() -> Path:
    """Where the bundled task files live: `<name>.yaml`, plus the schema's README.md."""
    return data_dir() / "tasks"


def models_dir() -> Path:
    """Where the bundled checkpoints live: one directory per zoo model."""
    return data_dir() / "models"


def model_dir(name: str) -> Path:
    """The bundled checkpoint directory of zoo model `name` (it may not exist)."""
    return models_dir() / name
