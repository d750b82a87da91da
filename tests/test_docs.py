"""The documentation: links that resolve, examples that run, a Commands page made from the
command line, every method documented, no reference to a file outside the repository.

`mkdocs build --strict` (in `.ci/run`) checks every link and anchor between the site's pages;
these tests need no MkDocs and also cover what the site does not build: the README, and links
from the pages to the repository's other files.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import re
import sys
from pathlib import Path

import pytest

from acdc.methods import registry
from acdc.methods.base import EdgeScores, Method, option

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
MARKDOWN = [ROOT / "README.md", ROOT / "tasks" / "README.md", *PAGES]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)


def prose(text: str) -> str:
    """The Markdown without code blocks and code spans (where a link is not a link)."""
    return CODE.sub("", FENCE.sub("", text))


def expanded(path: Path) -> str:
    """A page as the site builds it: its snippets (`--8<-- "file"`, paths from the root)
    included; the Commands page generated (`scripts/mkdocs_hooks.py`)."""
    if path == ROOT / "docs" / "cli.md":
        from acdc.cli.reference import command_reference

        return command_reference()
    text = path.read_text(encoding="utf-8")
    return SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(encoding="utf-8"), text)


def slugs(heading: str) -> set[str]:
    """The anchors a heading gets: MkDocs' (the site) and GitHub's (the repository view)."""
    text = CODE.sub(lambda m: m.group(0)[1:-1], heading).strip().lower()
    mkdocs = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text)).strip("-")
    github = re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))
    return {mkdocs, github}


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", expanded(path))):
        found |= slugs(heading)
    return found


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    """Every relative link or image names a file of the repository (and, into a Markdown file,
    one of its headings); nothing points outside the repository."""
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_check_sees_a_broken_link(tmp_path, monkeypatch):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A section\n")
    page.write_text("[ok](other.md#a-section) `[code](nowhere.md)` [bad](missing.svg) "
                    "[anchor](other.md#no-section)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError) as failure:
        test_every_relative_link_and_image_resolves(page)
    message = str(failure.value)
    assert "missing.svg: no such file" in message and "#no-section" in message
    assert "nowhere.md" not in message and "a-section:" not in message


def documented_modules() -> list[str]:
    """The modules the API pages render (`::: module`), and the Commands page's generator."""
    names = [m for page in sorted((DOCS / "api").glob("*.md"))
             for m in re.findall(r"^::: ([\w.]+)$", page.read_text(), re.M)]
    return [*names, "acdc.cli.reference"]


@pytest.mark.parametrize("name", documented_modules())
def test_the_documented_modules_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@dataclasses.dataclass(frozen=True)
class ToySettings:
    wobble: float = option(0.5, help="toy: how much the scores wobble")


def toy_scores(job):
    return EdgeScores([0.0] * len(job.graph.edges))


def test_the_commands_page_is_made_from_the_command_line():
    """Every command and every option of each is on the page, the discovery methods' options
    included: a method registered now (a plug-in) has its option there at once."""
    import typer

    from acdc.cli import app
    from acdc.cli.reference import command_reference

    toy = Method("toy-docs", "a toy", toy_scores, settings_type=ToySettings)
    registry.register(toy)
    try:
        text = command_reference()
        root = typer.main.get_command(app)
        context = root.context_class(root, info_name="circuit")
        for name in root.list_commands(context):
            command = root.get_command(context, name)
            assert f"## circuit {name}\n" in text
            for param in command.get_params(context):
                for flag in getattr(param, "opts", []):
                    if flag.startswith("--"):
                        assert f"{flag}" in text, (name, flag)
        discover = text.split("## circuit discover\n")[1].split("\n## ")[0]
        assert "--wobble" in discover and "toy: how much the scores wobble" in discover
        assert "--ig-steps" in discover and "--max-memory" in discover
        assert "## circuit zoo train\n" in text
    finally:
        registry.METHODS.pop(toy.name)
    assert "--wobble" not in command_reference()


def test_every_method_is_documented():
    """Each registered method has a row in the README's table and on the Methods page, and its
    paper on the Cite page, as `circuit methods --cite` prints it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    methods = (DOCS / "methods.md").read_text(encoding="utf-8")
    cite = (DOCS / "cite.md").read_text(encoding="utf-8")
    for name, method in registry.METHODS.items():
        assert f"| `{name}`" in readme, name
        assert f"| `{name}`" in methods, name
        assert method.citation and method.citation in cite, name


def test_no_file_refers_to_a_file_outside_the_repository():
    """The team's notes are not in the repository: nothing may send a reader there."""
    notes = "|".join(("EVALUATION", "ACDC", "STACK", "STYLE", "METHODS"))
    pattern = re.compile(r"(\.\./)?shar" + r"ed/(" + notes + r")\.md")
    skipped = {"site", "runs", "sweeps", "build", "dist", "venv"}
    tops = [top for top in ROOT.iterdir() if not top.name.startswith(".")
            and top.name not in skipped and not top.name.endswith(".egg-info")]
    found = []
    for path in [p for top in tops for p in ([top] if top.is_file() else top.rglob("*"))]:
        if path.is_file() and path.suffix in (".py", ".md", ".txt", ".yaml", ".yml", ".toml",
                                              ".cff"):
            if pattern.search(path.read_text(encoding="utf-8", errors="replace")):
                found.append(str(path.relative_to(ROOT)))
    assert not found
