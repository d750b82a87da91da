"""The layering the README's Architecture section describes, checked on the import graph.

Every import of every module under `acdc/` and of `cli.py` (at the top of a file or inside a
function: a lazy import is still a dependency) is read with `ast`. A module may import its
own layer and the layers below it, never one above; methods never import one another (only the
registry knows them all); and the module-level imports have no cycle. The test fails, naming
the file and the import, as soon as a lower layer imports a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top: a module's layer is the first entry its dotted name starts with.
LAYERS: list[tuple[str, ...]] = [
    ("acdc.errors",),
    ("acdc.core",),
    ("acdc.methods", "acdc.zoo"),
    ("acdc.exports",),
    ("acdc.evaluation",),  # judging circuits (its pipeline, `evaluate`, is higher)
    ("acdc.run",),  # the discovery pipeline
    ("acdc.evaluation.evaluate", "acdc.sweeps"),  # pipelines built on runs
    ("acdc.reports",),  # reads what evaluate, compare and sweep wrote
    ("acdc.api", "acdc"),  # the notebook functions, and the package's own `__init__`
    ("acdc.cli", "cli"),
]
# More specific prefixes first, so `acdc.evaluation.evaluate` is not taken for evaluation.
PREFIXES = sorted(((prefix, level) for level, group in enumerate(LAYERS) for prefix in group),
                  key=lambda item: -len(item[0]))
SHARED_METHOD_MODULES = {"acdc.methods.base", "acdc.methods.registry", "acdc.methods"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(name: str) -> int | None:
    for prefix, level in PREFIXES:
        if name == prefix or (prefix != "acdc" and name.startswith(prefix + ".")):
            return level
    return None


def imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import of the file (`from x import y` gives x.y
    too, since y may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def sources() -> list[Path]:
    return [*sorted((ROOT / "acdc").rglob("*.py")), ROOT / "cli.py"]


def method_package(name: str) -> str | None:
    """`acdc.methods.acdc` for `acdc.methods.acdc.search`; None for the shared modules."""
    parts = name.split(".")
    if len(parts) < 3 or parts[:2] != ["acdc", "methods"]:
        return None
    package = ".".join(parts[:3])
    return None if package in SHARED_METHOD_MODULES else package


def known(name: str) -> bool:
    """Whether `name` is one of the project's modules (not an attribute imported from one)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_no_layer_imports_a_higher_one():
    wrong = []
    for path in sources():
        name = module_name(path)
        own = layer(name)
        assert own is not None, f"{name} belongs to no layer: add it to LAYERS"
        for line, imported in imports(path):
            if not imported.startswith(("acdc", "cli")) or not known(imported):
                continue
            theirs = layer(imported)
            if theirs is not None and theirs > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, "lower layers import higher ones:\n" + "\n".join(wrong)


def test_methods_do_not_import_each_other():
    wrong = []
    for path in sources():
        mine = method_package(module_name(path))
        if mine is None:
            continue
        for line, imported in imports(path):
            theirs = method_package(imported)
            if theirs is not None and theirs != mine and known(imported):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, "methods import one another:\n" + "\n".join(wrong)


def test_module_level_imports_have_no_cycle():
    graph: dict[str, set[str]] = {}
    for path in sources():
        name = module_name(path)
        graph[name] = {imported for _, imported in imports(path, top_level_only=True)
                       if imported.startswith(("acdc", "cli")) and known(imported)
                       and imported != name}
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):  # a package importing its own submodule
                continue
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize("lower,higher", [("acdc/core/graph.py", "acdc.methods.base"),
                                          ("acdc/methods/hisp/__init__.py", "acdc.methods.acdc")])
def test_the_checks_catch_a_planted_import(tmp_path, monkeypatch, lower, higher):
    """The checks cannot pass vacuously: a planted upward or cross-method import is found."""
    original = imports

    def planted(path: Path, top_level_only: bool = False):
        found = original(path, top_level_only)
        return [*found, (1, higher)] if path == ROOT / lower else found

    monkeypatch.setattr(__import__(__name__), "imports", planted)
    check = (test_no_layer_imports_a_higher_one if lower.startswith("acdc/core")
             else test_methods_do_not_import_each_other)
    with pytest.raises(AssertionError, match=higher):
        check()
