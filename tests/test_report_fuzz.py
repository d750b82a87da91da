"""Property-based fuzzing of every file `circuit report` reads, and of the sweep-folder reader
it shares with `circuit compare` (the style of `tests/test_fuzz.py`).

Each test starts from a sweep directory whose files are valid (three `tau-*` runs, `run.yaml`,
`evaluation.json` with a curve, `sweep.json`, `circuit compare` outputs with
`comparison.json`, `roc.json` (of the sweep, and of the two circuits' rankings) and
`union.svg`) and breaks one file in one of many ways that
hypothesis draws: a value of the wrong kind anywhere in it, a key gone, bytes that are not
UTF-8 or not JSON/YAML/XML, nestings and numbers Python cannot hold, alias bombs, hostile
SVG. Whatever the bytes, `circuit report` ends as a report (exit 0: the file left out with one
`warning:` line, and a page that is still safe) or as a user error (exit 1, one `error:` line),
never another exception, in bounded time and memory. The sweep folder's run directories get
names and circuit files drawn at random, and `circuit report` and `circuit compare` must say
the same. The SVG allow-list is fuzzed on its own: whatever it is given, what it returns holds
only allowed elements and attributes and no way to fetch.

Each example writes a whole report (Graphviz and two matplotlib plots, about half a second), so
the tests that do are marked `slow`. The examples are derandomized, so the suite is repeatable;
`CIRCUIT_FUZZ_SCALE=10` draws ten times as many, at random.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import invoke
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import COMMON, JUNK, SCALE
from test_report import check_safe, hand_sweep, hostile_svg, plant, sweep_record

from acdc.core.files import FileError
from acdc.reports.svg import ATTRIBUTES, ELEMENTS, clean_svg

SECONDS_PER_CASE = 10.0  # a report draws with Graphviz and matplotlib; far less than a hang
MAX_GROWTH_MB = 1000
FUZZ = {**COMMON, "deadline": None}  # time is checked per case, above the drawing's cost

EVALUATION = {
    "format": "evaluation/1", "task": "tiny", "model": "models/tiny", "ablation": "corrupt",
    "n_edges_total": 94, "n_edges_kept": 40, "n_prompts": 3, "n_positions": 3,
    "run_metric": {"agrees": False, "evaluated": 0.2, "metric_circuit": 0.1},
    "metrics": {"kl": {"higher_is_better": False, "faithfulness": 0.5,
                       "complement_faithfulness": 0.1, "full": {"mean": 0.0},
                       "empty": {"mean": 1.0}, "circuit": {"mean": 0.5},
                       "complement": {"mean": 0.9}}},
    "curve": {"ranking": "ACDC scores", "n_edges_total": 94, "n_scored": 90, "pruned": True,
              "cpr": {"kl": 0.5}, "cmd": {"kl": 0.4},
              "points": [{"fraction": f, "n_edges": n, "n_edges_kept": n,
                          "values": {"kl": 1 - f}, "faithfulness": {"kl": f}}
                         for f, n in ((0.01, 1), (0.1, 9), (0.5, 47), (1.0, 94))]},
}
RUN_YAML = {"task": "tiny", "task_file": "tiny.yaml", "model": "models/tiny", "method": "acdc",
            "threshold": 0.01, "seed": 0, "metric": "kl", "ablation": "corrupt",
            "versions": {"circuit": "0.1.0", "torch": "2.13.0"},
            "command": "circuit discover --task tiny", "repeat": "circuit discover --task tiny"}
FILES = {  # which file, and where it lives in the case directory
    "evaluation.json": "tau-0.01/evaluation.json", "run.yaml": "tau-0.01/run.yaml",
    "sweep.json": "sweep.json", "comparison.json": "compare/comparison.json",
    "roc.json": "roc/roc.json", "union.svg": "compare/union.svg",
    "roc.json of rankings": "compare/roc.json",
    "circuit.json": "tau-0.01/circuit.json",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The valid sweep directory every case starts from (its report is written cleanly)."""
    sweep = hand_sweep(tmp_path_factory.mktemp("report-fuzz") / "sweep")
    (sweep / "tau-0.01" / "evaluation.json").write_text(json.dumps(EVALUATION))
    (sweep / "tau-0.01" / "run.yaml").write_text(yaml.safe_dump(RUN_YAML, sort_keys=False))
    (sweep / "sweep.json").write_text(json.dumps(sweep_record(sweep, ("0.001", "0.01", "0.1"))))
    for out, inputs in (("compare", ["tau-0.01", "tau-0.1"]), ("roc", ["."])):
        result = invoke("compare", *(sweep / name for name in inputs), "--reference",
                        sweep / "tau-0.001", "--out", sweep / out, "--no-render")
        assert result.exit_code == 0, result.output
    assert len(json.loads((sweep / "compare" / "roc.json").read_text())["rankings"]) == 2
    (sweep / "compare" / "union.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><g id="graph0">'
        '<path d="M0,0L10,10" stroke="black"/><text x="1" y="9">union</text></g></svg>')
    result = invoke("report", sweep)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output
    return sweep


class _Cases:
    """A fresh copy of the base directory for each example."""

    def __init__(self, base: Path, root: Path) -> None:
        self.base, self.root, self.count = base, root, 0
        root.mkdir()

    def next(self) -> Path:
        self.count += 1
        return shutil.copytree(self.base, self.root / f"case{self.count}")


def _run(*args: Any):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began = time.perf_counter()
    result = invoke(*args)
    took = time.perf_counter() - began
    assert took < SECONDS_PER_CASE, f"{took:.1f} s for {args}"
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert grew < MAX_GROWTH_MB, f"memory grew {grew:.0f} MB"
    return result


def _report_or_one_error(result, page: Path) -> None:
    """A report whose every warning is one line, or one `error:` line; never a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    if result.exit_code == 0:
        assert all(line.startswith("warning: ") for line in lines), result.stderr
        check_safe(page.read_text(encoding="utf-8"))
    else:
        assert result.exit_code == 1, result.output
        errors = [line for line in lines if line.startswith("error")]
        assert errors == lines[-1:] and errors[0].startswith("error: "), result.stderr
        assert all(line.startswith("warning: ") for line in lines[:-1]), result.stderr


# --------------------------------------------------------------------------- breaking a value


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value (keys and list indices from the top)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:4]):
            found += _paths(item, (*prefix, i))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    value[head] = _replace(value[head], rest, new)
    return value


NASTY = st.one_of(
    JUNK,
    st.sampled_from(["<script>alert(1)</script>", "javascript:alert(1)", "$\\frac{1}{0}$",
                     "\x00\u202e\ud7ff", "</script><!--", "inf", "-1", "1e999", "x" * 5000]),
    st.floats(min_value=-1e308, max_value=1e308),
    st.just(10**4000), st.just(-(2**63)),
    st.recursive(st.none() | st.integers(-5, 5) | st.text(max_size=3),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.sampled_from(["kl", "edge", "mean", "x"]), inner,
                                   max_size=3), max_leaves=8),
)


@st.composite
def broken(draw, valid: Any, as_yaml: bool = False) -> bytes:
    """`valid` broken in one way (see the module docstring), as the file's bytes."""
    kind = draw(st.sampled_from(["value", "value", "value", "delete", "bytes", "text",
                                 "not utf-8", "deep", "huge number", "truncated", "list"]))
    data = json.loads(json.dumps(valid))
    if kind in ("value", "delete"):
        path = draw(st.sampled_from(_paths(data)[1:]))
        if kind == "value":
            data = _replace(data, path, draw(NASTY))
        else:
            parent = data
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
    elif kind == "bytes":
        return draw(st.binary(max_size=300))
    elif kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    elif kind == "not utf-8":
        text = json.dumps(data).encode()
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + \
            text[at:]
    elif kind == "deep":
        depth = draw(st.integers(150, 100_000))
        inner = "[" * depth + "]" * depth
        return (f"x: {inner}\n" if as_yaml else '{"metrics": ' + inner + "}").encode()
    elif kind == "huge number":
        digits = "9" * draw(st.integers(4400, 100_000))
        return (f"seed: {digits}\n" if as_yaml else '{"n_prompts": ' + digits + "}").encode()
    elif kind == "truncated":
        text = json.dumps(data).encode()
        return text[:draw(st.integers(0, len(text) - 1))]
    else:
        data = [data]
    if as_yaml:
        return yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogatepass")
    return json.dumps(data).encode("utf-8", "surrogatepass")


YAML_ATTACKS = st.sampled_from([
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
        for i in range(8)),
    "a: !!python/object/apply:os.system ['echo pwned']\n", "a: 1\na: 2\n",
    "&a [*a]\n", "a: !!binary AAAA\nb: 2001-02-03\nc: 1e999\n", "? [1, 2]\n: x\n",
    "%YAML 1.1\n---\na: 1\n---\nb: 2\n", "- " * 2000 + "x\n",
])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["evaluation.json", "sweep.json", "comparison.json",
                                  "roc.json", "roc.json of rankings", "run.yaml"])
def test_any_bytes_in_a_result_file_give_a_report_or_one_line(name, base, tmp_path):
    cases = _Cases(base, tmp_path / "cases")
    path = FILES[name]
    valid = (yaml.safe_load((base / path).read_text()) if name == "run.yaml"
             else json.loads((base / path).read_text()))
    content = broken(valid, as_yaml=name == "run.yaml")
    if name == "run.yaml":
        content = st.one_of(content, YAML_ATTACKS.map(str.encode))

    @settings(max_examples=20 * SCALE, **FUZZ)
    @given(content=content)
    def check(content: bytes) -> None:
        case = cases.next()
        (case / path).write_bytes(content)
        result = _run("report", case)
        _report_or_one_error(result, case / "report.html")

    check()


SVG_PIECES = st.sampled_from([
    "<script>alert(1)</script>", '<rect onload="alert(1)"/>', '<image href="http://x/"/>',
    '<use href="http://x/#a"/>', "<foreignObject><b>x</b></foreignObject>", "<!--",
    "<![CDATA[<script>]]>", "&amp;", "&x;", "<", ">", '"', "</svg>", "<svg>", "<g>", "</g>",
    '<a xlink:href="javascript:alert(1)">', '<rect style="fill:url(http://x)"/>',
    '<rect id="edge-data" class="note"/>', "<text>t</text>", "\x00", "\ufffe",
    '<!DOCTYPE svg [<!ENTITY a "b">]>', '<?xml version="1.0" encoding="latin-1"?>',
])


@st.composite
def svg_texts(draw) -> str:
    """A hostile SVG cut and spliced with pieces of attacks, or text from scratch."""
    base_text = hostile_svg("http://127.0.0.1:9/")
    kind = draw(st.sampled_from(["splice", "splice", "cut", "pieces"]))
    if kind == "pieces":
        return "".join(draw(st.lists(SVG_PIECES, max_size=12)))
    text = base_text
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        if kind == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 200)):]
        else:
            text = text[:at] + draw(SVG_PIECES) + text[at:]
    return text


def _only_allowed(cleaned: str) -> None:
    for tag in re.findall(r"<(/?)([^\s>/]+)", cleaned):
        assert tag[1] in ELEMENTS, tag
    for attribute in re.findall(r"\s([^\s=<>\"]+)=\"", cleaned):
        assert attribute in ATTRIBUTES, attribute
    for value in re.findall(r'="([^"]*)"', cleaned):
        lowered = value.lower()
        assert "http" not in lowered and "javascript" not in lowered, value
        assert all(u.startswith("url(#") for u in re.findall(r"url\([^)]*\)", lowered)), value
    assert "<script" not in cleaned.lower()


def test_the_svg_allow_list_returns_only_allowed_markup_whatever_it_is_given():
    @settings(max_examples=300 * SCALE, **FUZZ)
    @given(text=svg_texts())
    def check(text: str) -> None:
        try:
            cleaned = clean_svg(text, "f", "t.svg")
        except FileError as error:
            assert str(error).startswith("t.svg: ") and "\n" not in str(error)
            return
        _only_allowed(cleaned)

    check()


@pytest.mark.slow
def test_any_bytes_in_a_union_drawing_give_a_report_or_one_line(base, tmp_path):
    cases = _Cases(base, tmp_path / "cases")

    @settings(max_examples=20 * SCALE, **FUZZ)
    @given(content=st.one_of(svg_texts().map(lambda t: t.encode("utf-8", "surrogatepass")),
                             st.binary(max_size=300)))
    def check(content: bytes) -> None:
        case = cases.next()
        (case / FILES["union.svg"]).write_bytes(content)
        result = _run("report", case)
        _report_or_one_error(result, case / "report.html")
        assert result.exit_code == 0  # a drawing is optional: left out at worst

    check()


# --------------------------------------------------------------------------- the sweep folder

RUN_NAMES = st.one_of(
    st.sampled_from(["tau-inf", "tau-nan", "tau--1", "tau-1e999", "tau-0.010", "tau-0.1",
                     "tau-", "tau-1e-05", "tau-0", "tau-.5", "tau-5.", "tau-1_0", "tau-٣"]),
    st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
            max_size=30).map(lambda s: "tau-" + s),
).filter(lambda name: len(name.encode()) <= 255 and name not in ("tau-.", "tau-.."))


@st.composite
def circuit_bytes(draw, valid: dict) -> bytes:
    return draw(st.one_of(st.just(json.dumps(valid).encode()), broken(valid)))


@pytest.mark.slow
def test_any_run_folder_gives_report_and_compare_the_same_answer(base, tmp_path):
    cases = _Cases(base, tmp_path / "cases")
    valid = json.loads((base / "tau-0.01" / "circuit.json").read_text())

    @settings(max_examples=25 * SCALE, **FUZZ)
    @given(name=RUN_NAMES, content=circuit_bytes(valid), empty=st.booleans())
    def check(name: str, content: bytes, empty: bool) -> None:
        case = cases.next()
        run = case / name
        run.mkdir(exist_ok=True)
        if not empty:
            (run / "circuit.json").write_bytes(content)
        report = _run("report", case, "--out", case / "page.html")
        _report_or_one_error(report, case / "page.html")
        compare = _run("compare", case, "--reference", case / "tau-0.001", "--out",
                       case / "cmp", "--no-render")
        assert compare.exit_code == report.exit_code, (report.output, compare.output)
        if report.exit_code == 1:
            assert compare.stderr.strip().splitlines()[-1] == \
                report.stderr.strip().splitlines()[-1]
        left_out = [line for line in report.stderr.splitlines() if ": left out tau-" in line]
        assert left_out == [line for line in compare.stderr.splitlines()
                            if ": left out tau-" in line]

    check()


@pytest.mark.slow
def test_a_planted_directory_fuzzed_still_gives_a_safe_page(tmp_path):
    """The browser test's hostile directory, with one more file broken at random."""
    sweep = plant(tmp_path / "planted", "http://127.0.0.1:9/")
    cases = _Cases(sweep, tmp_path / "cases")
    names = sorted(str(p.relative_to(sweep)) for p in sweep.rglob("*") if p.is_file())

    @settings(max_examples=15 * SCALE, **FUZZ)
    @given(name=st.sampled_from(names), content=st.one_of(
        st.binary(max_size=200), svg_texts().map(lambda t: t.encode("utf-8", "surrogatepass"))))
    def check(name: str, content: bytes) -> None:
        case = cases.next()
        (case / name).write_bytes(content)
        result = _run("report", case, "--out", case / "page.html")
        _report_or_one_error(result, case / "page.html")

    check()
