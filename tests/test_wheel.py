"""The package as a user installs it: a wheel, or a non-editable `pip install .`, carries the
bundled tasks and models, and `circuit discover --task demo` works from any directory. An
editable install reads them from the checkout, through the links in `acdc/data/`.

A fresh virtual environment with every dependency costs about 75 s and 1.6 GB, so the fresh
environment here holds only the project. It is created without pip and borrows its dependencies
from the environment running the tests, through a `.pth` file naming that environment's
site-packages directories: plain path lines, so the `.pth` files in there (an editable install's
import hook among them) are not executed and the repository stays out of reach. The project is
installed with `--no-deps` by the running pip (`pip --python <fresh python>`). A check inside the
fresh environment asserts that `acdc` and `cli` come from its own site-packages (or, editable,
from the copied checkout) and that the bundled data found are the installed copies, not the
repository's.

Builds run on a copy of the project, so no `build/` or `*.egg-info` lands in the repository and
no stale `build/lib` from an earlier build can leak into the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("pyproject.toml", "README.md", "cli.py", "acdc", "tasks", "models")
EDGES_TOTAL, EDGES_KEPT = 134, 49  # the bundled demo task's circuit, as the checkout finds it

# Run inside the fresh environment: where the package and its bundled data come from.
WHERE_FROM = """
import json, sysconfig
import acdc, cli
from acdc.core import bundled
from acdc.core.tasks import reading
print(json.dumps({
    "purelib": sysconfig.get_path("purelib"),
    "acdc": acdc.__file__,
    "cli": cli.__file__,
    "tasks_dir": str(reading.TASKS_DIR),
    "demo_model": str(bundled.model_dir("demo")),
}))
"""


def run(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def pip(*args) -> list:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]


def copy_project(copy: Path) -> Path:
    """A copy of the files the build reads (links kept: acdc/data/ links to tasks/, models/)."""
    copy.mkdir()
    for name in PROJECT_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, copy / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, copy / name)
    return copy


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = copy_project(tmp_path_factory.mktemp("wheel") / "source")
    out = source.parent / "dist"
    run(pip("wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", out, source),
        cwd=source.parent)
    (built,) = out.glob("circuit-*.whl")
    return built


def fresh_env(directory: Path) -> tuple[Path, dict]:
    """A virtual environment without pip whose dependencies are the running environment's."""
    run([sys.executable, "-m", "venv", "--without-pip", directory], cwd=directory.parent)
    python = directory / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       cwd=directory).stdout.strip())
    borrowed = [*site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        borrowed.append(site.getusersitepackages())
    (purelib / "_borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return python, env


def test_wheel_carries_every_bundled_file(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    data = {n.removeprefix("acdc/data/") for n in names if n.startswith("acdc/data/")}
    expected = {str(p.relative_to(ROOT)) for folder in ("tasks", "models")
                for p in (ROOT / folder).rglob("*") if p.is_file()}
    assert data == expected
    assert "acdc/py.typed" in names and "cli.py" in names
    assert "acdc/core/bundled.py" in names and "acdc/methods/acdc/search.py" in names
    assert {"acdc/reports/report.css", "acdc/reports/report.js"} <= names  # the page's own


def install(how: str, wheel: Path, tmp_path: Path) -> tuple[Path, dict, Path, dict]:
    """Install the project into a fresh environment; return its python, the environment
    variables to run it with, the project copy, and where its package and data come from."""
    python, env = fresh_env(tmp_path / "venv")
    source = copy_project(tmp_path / "source")
    target = {"wheel": [wheel], "pip install .": [source], "pip install -e .": ["-e", source]}
    run(pip("--python", python, "install", "--no-deps", "--no-index", "--no-build-isolation",
            *target[how]), cwd=tmp_path, env=env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = json.loads(run([python, "-c", WHERE_FROM], cwd=elsewhere, env=env).stdout)
    return python, env, source, where


@pytest.mark.parametrize("how", ["wheel", "pip install ."])
def test_installed_package_discovers_the_demo_circuit(how, wheel, tmp_path):
    python, env, _, where = install(how, wheel, tmp_path)
    package = Path(where["purelib"]) / "acdc"
    assert Path(where["acdc"]) == package / "__init__.py"
    assert Path(where["cli"]) == package.parent / "cli.py"
    tasks, demo = Path(where["tasks_dir"]), Path(where["demo_model"])
    assert (tasks, demo) == (package / "data" / "tasks", package / "data" / "models" / "demo")
    assert not tasks.is_symlink() and not demo.parent.is_symlink()  # copies, not the links

    circuit = python.parent / "circuit"
    elsewhere = tmp_path / "elsewhere"
    run([circuit, "discover", "--task", "demo", "--quiet", "--out", "out"], cwd=elsewhere, env=env)
    result = json.loads((elsewhere / "out" / "circuit.json").read_text())
    assert (result["n_edges_kept"], result["n_edges_total"]) == (EDGES_KEPT, EDGES_TOTAL)
    assert Path(result["model"]) == demo.resolve()
    run([circuit, "report", "out"], cwd=elsewhere, env=env)  # its style and script installed
    page = (elsewhere / "out" / "report.html").read_text()
    assert 'id="edge-table"' in page and "data-report-ready" in page and "--muted" in page


def test_editable_install_reads_the_checkout(wheel, tmp_path):
    # The rest of the suite runs the CLI on an editable install or a checkout; this checks
    # only where the package and its data come from in one.
    _, _, source, where = install("pip install -e .", wheel, tmp_path)
    package = source / "acdc"
    assert Path(where["acdc"]) == package / "__init__.py"
    assert Path(where["cli"]) == source / "cli.py"
    tasks, demo = Path(where["tasks_dir"]), Path(where["demo_model"])
    assert (tasks, demo) == (package / "data" / "tasks", package / "data" / "models" / "demo")
    assert (tasks.resolve(), demo.resolve()) == (source / "tasks", source / "models" / "demo")
