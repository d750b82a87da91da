"""Property-based fuzzing of the files a user hands the CLI: task files, model configs
(`config.json`), circuit files (`circuit.json`) and the files a resumed sweep reads back
(`sweep.json`, each run's `evaluation.json`).

Each test starts from a valid file and breaks it in one of many ways that hypothesis draws
(a value of the wrong type or out of range, an unknown or missing key, a damaged prompt, bytes
that are not UTF-8 or not YAML/JSON, numbers and nestings Python cannot hold, sizes nobody can
run ...), then runs the command in-process (typer's CliRunner). Every case must end as a user
error does: exit code 1 (or 2 for usage), exactly one `error:` line on stderr, no traceback,
in bounded time and memory (a damaged sweep file may also be one a resume accepts: then the
sweep is resumed and finished).

The examples are derandomized, so the suite is repeatable; `CIRCUIT_FUZZ_SCALE=10 pytest
tests/test_fuzz.py` draws ten times as many, at random (about a minute).
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import PROMPTS, TINY_CONFIG, invoke

from acdc.core.circuit import Circuit, write_circuit
from acdc.core.configs import CHECKPOINT_KEYS, NULLABLE_KEYS, WHOLE_KEYS
from acdc.core.generators.params import MAX_PROMPTS
from acdc.core.graph import GraphShape, build_graph
from acdc.core.models import build_model, save_checkpoint
from acdc.core.settings import ABLATIONS, METRICS
from acdc.core.tasks.labels import LABEL_NAME
from acdc.core.tasks.spec import TOP_LEVEL_KEYS

SCALE = int(os.environ.get("CIRCUIT_FUZZ_SCALE", "1"))  # > 1: more examples, drawn at random
COMMON = dict(deadline=3000, database=None, derandomize=SCALE == 1,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.data_too_large])
SECONDS_PER_CASE = 3.0  # far more than any case takes (milliseconds), far less than a hang
MAX_GROWTH_MB = 600  # peak memory may grow this much over the whole test

# Values of every YAML/JSON kind, including those a careless edit produces.
JUNK = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.one_of(st.integers(-3, 40), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


def _one_error(result, codes=(1, 2)) -> None:
    """What every malformed input must give: exit 1 or 2, one `error:` line, no traceback."""
    output = result.output
    assert result.exit_code in codes, (result.exit_code, output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    assert "Traceback" not in output, output
    if result.exit_code == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
        assert result.stderr.strip().splitlines()[-1] == errors[0], result.stderr


class _Bounds:
    """Time per case and the peak memory growth over a whole test."""

    def __init__(self) -> None:
        self.start_rss_mb = self.rss_mb()

    @staticmethod
    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    def run(self, *args: Any, seconds: float = SECONDS_PER_CASE):
        began = time.perf_counter()
        result = invoke(*args)
        self.took = took = time.perf_counter() - began
        assert took < seconds, f"{took:.1f} s for {args}"
        assert self.rss_mb() - self.start_rss_mb < MAX_GROWTH_MB, "memory grew"
        return result


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def model_dir(fuzz_dir) -> Path:
    """The CLI tests' tiny checkpoint (no tokenizer)."""
    directory = fuzz_dir / "model"
    save_checkpoint(build_model(TINY_CONFIG, seed=0), directory, config=TINY_CONFIG)
    return directory


class _Files:
    """A fresh path for each example (hypothesis calls the test many times per fixture)."""

    def __init__(self, root: Path) -> None:
        self.root, self.count = root, 0

    def next(self, name: str) -> Path:
        self.count += 1
        directory = self.root / f"case{self.count}"
        directory.mkdir()
        return directory / name


# --------------------------------------------------------------------------- task files

VALID_TASK = {"name": "fuzz", "metric": "kl", "threshold": 0.001, "ablation": "corrupt",
              "seed": 0, "positions": "last", "prompts": PROMPTS}
D_VOCAB = TINY_CONFIG["d_vocab"]


def _number_or_numeric_text(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _bad_for(key: str, value: Any) -> bool:
    """Whether `value` is invalid for the top-level `key` (with this test's model: no
    tokenizer, so prepend_bos: true is an error too)."""
    if key == "threshold":
        number = _number_or_numeric_text(value)
        return number is None or not math.isfinite(number) or number < 0
    if key in ("metric", "ablation"):
        return not (isinstance(value, str) and value in (METRICS if key == "metric" else ABLATIONS))
    if key == "seed":
        return isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32
    if key == "prepend_bos":
        return value is not False
    if key == "positions":  # every prompt has 6 or 7 tokens
        if value in ("last", "all"):
            return False
        return not (isinstance(value, list) and value and all(
            isinstance(p, int) and not isinstance(p, bool) and -6 <= p < 6 for p in value))
    if key == "model" and value is None:
        return False  # the same as no model: key
    if key in ("name", "model"):
        return not isinstance(value, str) or not value.strip()
    if key == "description":
        return not isinstance(value, str)
    if key == "labels":
        return _bad_labels(value)
    return True  # prompts and generator: never valid as junk


def _bad_labels(value: Any) -> bool:
    """Whether `value` cannot label every prompt of PROMPTS (token ids, 6, 6 and 7 tokens)."""
    if not isinstance(value, dict) or not value:
        return True
    for name, locator in value.items():
        if (not isinstance(name, str) or not LABEL_NAME.fullmatch(name) or len(name) > 40
                or name.casefold() == "other"):
            return True
        if isinstance(locator, bool) or not isinstance(locator, int) or not -6 <= locator < 6:
            return True  # words need text; the shortest prompt has 6 tokens
    return any(len({p % n for p in value.values()}) < len(value) for n in (6, 7))


def _bad_ids(value: Any, length: int) -> bool:
    """Whether `value` cannot stand for a prompt of `length` token ids (text needs a tokenizer,
    which this model lacks)."""
    return not (isinstance(value, list) and len(value) == length and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < D_VOCAB for i in value))


@st.composite
def malformed_tasks(draw) -> bytes:
    task = json.loads(json.dumps(VALID_TASK))
    kind = draw(st.sampled_from([
        "value", "unknown key", "missing key", "prompt value", "prompt key", "prompts",
        "generator", "same tokens", "bytes", "text", "not utf-8", "deep", "huge number",
        "too many prompts", "labels",
    ]))
    if kind == "value":
        key = draw(st.sampled_from([k for k in TOP_LEVEL_KEYS if k not in ("prompts",)]))
        value = draw(JUNK.filter(lambda v, key=key: _bad_for(key, v)))
        task[key] = value
    elif kind == "unknown key":
        task[draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in TOP_LEVEL_KEYS))] = (
            draw(JUNK))
    elif kind == "missing key":
        del task[draw(st.sampled_from(["threshold", "prompts"]))]
    elif kind == "prompt value":
        i = draw(st.integers(0, len(PROMPTS) - 1))
        prompt = task["prompts"][i]
        key = draw(st.sampled_from(["clean", "corrupt", "answer", "wrong", "positions"]))
        length = len(prompt["clean"])
        if key in ("clean", "corrupt"):
            prompt[key] = draw(JUNK.filter(lambda v, n=length: _bad_ids(v, n)))
        elif key in ("answer", "wrong"):
            prompt[key] = draw(JUNK.filter(lambda v: not (
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < D_VOCAB)
                and _bad_ids(v, len(v) if isinstance(v, list) else -1)))
        else:
            prompt[key] = draw(JUNK.filter(lambda v, n=length: v not in ("last", "all") and not (
                isinstance(v, list) and v and all(
                    isinstance(p, int) and not isinstance(p, bool) and -n <= p < n for p in v))))
    elif kind == "prompt key":
        task["prompts"][0][draw(st.text(min_size=1, max_size=10).filter(
            lambda k: k not in ("clean", "corrupt", "answer", "wrong", "positions", "labels")))] = 1
    elif kind == "prompts":
        task["prompts"] = draw(st.one_of(JUNK.filter(lambda v: not isinstance(v, list) or not v
                                                     or not all(isinstance(p, dict) for p in v)),
                                         st.just([])))
    elif kind == "generator":
        task["generator"] = draw(st.one_of(
            JUNK, st.fixed_dictionaries({"kind": st.sampled_from(["ioi", "induction"]),
                                         "n": st.integers(-5, 10**9)})))
    elif kind == "labels":  # on one prompt: bad there, or good there and absent elsewhere
        i = draw(st.integers(0, len(PROMPTS) - 1))
        task["prompts"][i]["labels"] = draw(st.one_of(
            JUNK, st.dictionaries(st.text(min_size=1, max_size=6), st.one_of(
                st.integers(-9, 9), st.text(max_size=5), st.lists(JUNK, max_size=3)),
                min_size=1, max_size=3)))
    elif kind == "same tokens":
        for prompt in task["prompts"]:
            prompt["corrupt"] = list(prompt["clean"])
    elif kind == "bytes":
        return draw(st.binary(max_size=300))
    elif kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    elif kind == "not utf-8":
        text = yaml.safe_dump(task).encode()
        at = draw(st.integers(0, len(text)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]))
        return text[:at] + bad + text[at:]
    elif kind == "deep":
        depth = draw(st.integers(500, 5000))
        return f"threshold: 0.1\nprompts: {'[' * depth}{']' * depth}\n".encode()
    elif kind == "huge number":
        key = draw(st.sampled_from(["seed", "threshold"]))
        return (yaml.safe_dump({k: v for k, v in task.items() if k != key}) +
                f"{key}: {'9' * draw(st.integers(4400, 9000))}\n").encode()
    elif kind == "too many prompts":
        return (b"threshold: 0.1\nprompts:\n - &p {clean: [1, 2], corrupt: [1, 3]}\n" +
                b" - *p\n" * MAX_PROMPTS)
    return yaml.safe_dump(task, sort_keys=False).encode()


def test_malformed_task_files_give_one_line(fuzz_dir, model_dir):
    files, bounds = _Files(fuzz_dir / "tasks"), _Bounds()
    (fuzz_dir / "tasks").mkdir()
    warm = files.next("task.yaml")
    warm.write_text(yaml.safe_dump({**VALID_TASK, "threshold": -1}))
    bounds.run("discover", "--task", warm, "--model", model_dir, "--out", warm.parent / "out")

    @settings(max_examples=150 * SCALE, **COMMON)
    @given(content=malformed_tasks())
    def check(content: bytes) -> None:
        path = files.next("task.yaml")
        path.write_bytes(content)
        result = bounds.run("discover", "--task", path, "--model", model_dir, "--out",
                            path.parent / "out", "--quiet", "--no-render")
        _one_error(result)

    check()


# --------------------------------------------------------------------------- model configs


def _bad_whole(key: str, value: Any) -> bool:
    least = WHOLE_KEYS[key]
    if isinstance(value, bool) or not isinstance(value, int):
        return value is not None or key not in NULLABLE_KEYS  # null d_mlp: 4 x d_model
    return value < least or (least == -1 and value == 0)


@st.composite
def malformed_configs(draw) -> bytes:
    config = dict(TINY_CONFIG)
    kind = draw(st.sampled_from(["whole", "bool", "text", "unknown key", "missing key",
                                 "not an object", "bytes", "not utf-8", "deep", "huge number",
                                 "heads", "hugging face"]))
    if kind == "hugging face":  # a GPT-2 config.json as transformers writes it, one value bad
        hf = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 20,
              "n_positions": 12}
        key = draw(st.sampled_from(["n_layer", "n_head", "n_embd", "vocab_size", "n_positions",
                                    "model_type"]))
        hf[key] = draw(JUNK.filter(lambda v, key=key: (
            not isinstance(v, str) if key == "model_type" else
            isinstance(v, bool) or not isinstance(v, int) or v < 1)))
        return json.dumps(hf).encode()
    if kind == "whole":
        key = draw(st.sampled_from(["n_layers", "d_model", "d_head", "n_ctx", "d_vocab",
                                    "n_heads", "d_mlp"]))
        config[key] = draw(JUNK.filter(lambda v, key=key: _bad_whole(key, v)))
    elif kind == "bool":
        key = draw(st.sampled_from(["attn_only", "gated_mlp", "use_attn_result"]))
        config[key] = draw(JUNK.filter(lambda v: not isinstance(v, bool)))
    elif kind == "text":
        key = draw(st.sampled_from(["act_fn", "normalization_type", "attention_dir"]))
        config[key] = draw(JUNK.filter(lambda v: v is not None and not isinstance(v, str)))
    elif kind == "unknown key":
        config[draw(st.text(min_size=1, max_size=30).filter(
            lambda k: k not in CHECKPOINT_KEYS))] = draw(JUNK)
    elif kind == "missing key":
        del config[draw(st.sampled_from(["n_layers", "d_model", "n_ctx", "d_head", "d_vocab"]))]
    elif kind == "not an object":
        return json.dumps(draw(JUNK.filter(lambda v: not isinstance(v, dict)))).encode()
    elif kind == "bytes":
        return draw(st.binary(max_size=200))
    elif kind == "not utf-8":
        return json.dumps(config).encode()[:-1] + b', "act_fn": "\xff"}'
    elif kind == "deep":
        depth = draw(st.integers(2000, 100_000))
        return ("[" * depth + "]" * depth).encode()
    elif kind == "huge number":
        return json.dumps(config).encode()[:-1] + b', "seed": ' + b"7" * 5000 + b"}"
    else:  # n_heads derived from d_model / d_head, which do not divide
        config.pop("n_heads")
        config["d_head"] = draw(st.integers(3, 15).filter(lambda h: TINY_CONFIG["d_model"] % h))
    return json.dumps(config).encode()


def test_malformed_model_configs_give_one_line(fuzz_dir):
    files, bounds = _Files(fuzz_dir / "configs"), _Bounds()
    (fuzz_dir / "configs").mkdir()
    task = fuzz_dir / "config-task.yaml"
    task.write_text(yaml.safe_dump(VALID_TASK))

    @settings(max_examples=80 * SCALE, **COMMON)
    @given(content=malformed_configs(), command=st.sampled_from(["graph", "discover"]))
    def check(content: bytes, command: str) -> None:
        config = files.next("config.json")
        config.write_bytes(content)
        if command == "graph":
            result = bounds.run("graph", "--model", config.parent)
        else:
            result = bounds.run("discover", "--task", task, "--model", config.parent, "--out",
                                config.parent / "out", "--quiet", "--no-render")
        _one_error(result)

    check()


# --------------------------------------------------------------------------- circuit files


@pytest.fixture(scope="module")
def valid_circuit() -> dict:
    graph = build_graph(GraphShape(2, 2, True))
    kept = tuple(i % 3 == 0 for i in range(len(graph.edges)))
    scores = tuple(None if i % 5 == 0 else 0.01 * i for i in range(len(graph.edges)))
    circuit = Circuit(graph, kept, scores,
                      {"model": "m", "task": "t", "method": "acdc", "threshold": 0.01,
                       "metric": "kl", "ablation": "corrupt", "granularity": "qkv"},
                      {"n_edges_decided": len(kept), "metric_circuit": 0.1, "metric_full": 0.0,
                       "metric_noise": 1e-7, "runtime_s": 0.5, "partial": False})
    return circuit.to_json()


REQUIRED_CIRCUIT_KEYS = ("format", "n_layers", "n_heads", "has_mlp", "granularity", "edges",
                         "metric_circuit", "metric_full", "runtime_s", "partial", "model")


@st.composite
def malformed_circuits(draw, valid: dict) -> bytes:
    data = json.loads(json.dumps(valid))
    edges = data["edges"]
    kind = draw(st.sampled_from([
        "missing key", "format", "shape", "huge shape", "granularity", "has_mlp", "result",
        "edges", "edge name", "edge order", "edge kept", "edge score", "not an object", "bytes",
        "not utf-8", "deep", "huge number",
    ]))
    if kind == "missing key":
        del data[draw(st.sampled_from(REQUIRED_CIRCUIT_KEYS))]
    elif kind == "format":
        data["format"] = draw(JUNK.filter(lambda v: v != "circuit/1"))
    elif kind == "shape":
        key = draw(st.sampled_from(["n_layers", "n_heads"]))
        data[key] = draw(JUNK.filter(lambda v, key=key: v != valid[key] or isinstance(v, bool)))
    elif kind == "huge shape":  # what an edit to 1e6 layers x 1e4 heads asks for
        data["n_layers"] = draw(st.one_of(st.integers(50, 10**6), st.just(2**70)))
        data["n_heads"] = draw(st.integers(50, 10**4))
    elif kind == "granularity":
        data["granularity"] = draw(JUNK.filter(lambda v: v not in ("qkv",)))
    elif kind == "has_mlp":
        data["has_mlp"] = draw(JUNK.filter(lambda v: v is not True))
    elif kind == "result":
        key = draw(st.sampled_from(["metric_circuit", "metric_full", "runtime_s", "partial",
                                    "n_edges_decided"]))
        data[key] = draw(st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2),
                                   st.dictionaries(st.text(max_size=2), st.integers(),
                                                   max_size=1)))
    elif kind == "edges":
        data["edges"] = draw(st.one_of(JUNK.filter(lambda v: not isinstance(v, list)),
                                       st.just(edges[:-1]), st.just(edges + edges[:1])))
    elif kind == "edge name":
        i = draw(st.integers(0, len(edges) - 1))
        edges[i]["name"] = draw(JUNK.filter(lambda v, i=i: v != valid["edges"][i]["name"]))
    elif kind == "edge order":
        i = draw(st.integers(0, len(edges) - 2))
        edges[i], edges[i + 1] = edges[i + 1], edges[i]
    elif kind == "edge kept":
        edges[draw(st.integers(0, len(edges) - 1))]["kept"] = draw(
            JUNK.filter(lambda v: not isinstance(v, bool)))
    elif kind == "edge score":
        edges[draw(st.integers(0, len(edges) - 1))]["score"] = draw(st.one_of(
            st.booleans(), st.text(max_size=4), st.lists(st.integers(), max_size=2)))
    elif kind == "not an object":
        return json.dumps(draw(JUNK.filter(lambda v: not isinstance(v, dict)))).encode()
    elif kind == "bytes":
        return draw(st.binary(max_size=200))
    elif kind == "not utf-8":
        text = json.dumps(data).encode()
        at = draw(st.integers(0, len(text)))
        return text[:at] + b"\xfe" + text[at:]
    elif kind == "deep":
        depth = draw(st.integers(2000, 100_000))
        return ('{"format": "circuit/1", "edges": ' + "[" * depth + "]" * depth + "}").encode()
    else:
        return json.dumps(data).encode()[:-1] + b', "x": ' + b"1" * 5000 + b"}"
    return json.dumps(data).encode()


def test_malformed_circuit_files_give_one_line(fuzz_dir, valid_circuit):
    files, bounds = _Files(fuzz_dir / "circuits"), _Bounds()
    (fuzz_dir / "circuits").mkdir()
    good = files.next("circuit.json")
    write_circuit(Circuit.from_json(valid_circuit), good)
    result = bounds.run("render", good, "--format", "dot")  # the file the cases break renders
    assert result.exit_code == 0, result.output

    @settings(max_examples=120 * SCALE, **COMMON)
    @given(content=malformed_circuits(valid_circuit))
    def check(content: bytes) -> None:
        path = files.next("circuit.json")
        path.write_bytes(content)
        result = bounds.run("render", path, "--format", "dot", "--out", path.parent / "c.dot")
        _one_error(result)
        assert not (path.parent / "c.dot").exists()

    check()


# --------------------------------------------------------------------------- a sweep's files

SWEEP_KEYS = ("format", "task", "task_file", "model", "method", "abs", "reverse_head_order",
              "metric", "ablation", "granularity", "seed", "device", "dtype", "grid",
              "grid_source", "thresholds", "finished", "runs", "rank_scores")


@pytest.fixture(scope="module")
def finished_sweep(fuzz_dir, model_dir) -> Path:
    """A finished sweep of two thresholds on the tiny model: the directory each case copies."""
    task = fuzz_dir / "sweep-task.yaml"
    task.write_text(yaml.safe_dump({**VALID_TASK, "model": str(model_dir)}))
    out = fuzz_dir / "sweep"
    result = invoke("sweep", "--task", task, "--thresholds", "0.001,0.01", "--out", out,
                    "--quiet", "--no-render")
    assert result.exit_code == 0, result.output
    return out


def _broken_json(draw, data: Any) -> bytes | None:
    """One of the ways any JSON file breaks, or None to break `data`'s values instead."""
    kind = draw(st.sampled_from(["values", "values", "values", "not an object", "bytes",
                                 "not utf-8", "deep", "huge number", "truncated"]))
    text = json.dumps(data).encode()
    if kind == "not an object":
        return json.dumps(draw(JUNK.filter(lambda v: not isinstance(v, dict)))).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "not utf-8":
        at = draw(st.integers(0, len(text)))
        return text[:at] + b"\xfe" + text[at:]
    if kind == "deep":
        depth = draw(st.integers(2000, 100_000))
        return b'{"format": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "huge number":
        return text[:-1] + b', "seed": ' + b"7" * draw(st.integers(4400, 100_000)) + b"}"
    if kind == "truncated":
        return text[:draw(st.integers(0, len(text) - 1))]
    return None


@st.composite
def malformed_sweep_files(draw, valid: dict) -> bytes:
    broken = _broken_json(draw, valid)
    if broken is not None:
        return broken
    data = json.loads(json.dumps(valid))
    kind = draw(st.sampled_from(["value", "threshold", "thresholds", "grid", "missing key",
                                 "unknown key", "many thresholds"]))
    if kind == "value":
        data[draw(st.sampled_from(SWEEP_KEYS))] = draw(JUNK)
    elif kind == "threshold":
        data["thresholds"][draw(st.integers(0, 1))] = draw(JUNK)
    elif kind == "thresholds":
        data["thresholds"] = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True),
                                           max_size=5))
    elif kind == "grid":
        data["grid"] = draw(st.one_of(st.text(max_size=20), st.sampled_from(
            ["0.001", "0.01,0.001", "1e-3:1e-2:2", "0:1:2", "0.001,0.01,0.01"])))
    elif kind == "missing key":
        del data[draw(st.sampled_from(SWEEP_KEYS))]
    elif kind == "unknown key":
        data[draw(st.text(max_size=8).filter(lambda k: k not in SWEEP_KEYS))] = draw(JUNK)
    else:
        data["thresholds"] = [1e-400] * draw(st.integers(2, 2000)) + [0.01]
    return json.dumps(data).encode()


@st.composite
def malformed_evaluations(draw, valid: dict) -> bytes:
    broken = _broken_json(draw, valid)
    if broken is not None:
        return broken
    data = json.loads(json.dumps(valid))
    metrics = data["metrics"]
    name = draw(st.sampled_from(sorted(metrics)))
    kind = draw(st.sampled_from(["metrics", "metric", "value", "mean", "name", "missing key",
                                 "format"]))
    if kind == "metrics":
        data["metrics"] = draw(st.one_of(JUNK, st.lists(st.sampled_from(sorted(metrics)))))
    elif kind == "metric":
        metrics[name] = draw(JUNK)
    elif kind == "value":
        key = draw(st.sampled_from(["higher_is_better", "faithfulness",
                                    "complement_faithfulness", "full", "empty", "circuit",
                                    "complement"]))
        metrics[name][key] = draw(st.one_of(JUNK, st.just("NaN-ish")))
    elif kind == "mean":
        part = draw(st.sampled_from(["full", "empty", "circuit", "complement"]))
        metrics[name][part]["mean"] = draw(JUNK)
    elif kind == "name":
        metrics[draw(st.text(max_size=8))] = metrics.pop(name)
    elif kind == "missing key":
        del metrics[name][draw(st.sampled_from(sorted(metrics[name])))]
    else:
        data["format"] = draw(JUNK)
    return json.dumps(data).encode()


RESUMED_SECONDS = 15.0  # a resumed sweep draws its plots (about a second with matplotlib)


def _resume(bounds: _Bounds, out: Path):
    """`circuit sweep --resume out`: a resumed (finished) sweep, or one user error in the
    time any error takes."""
    result = bounds.run("sweep", "--resume", out, "--quiet", "--no-render",
                        seconds=RESUMED_SECONDS)
    if result.exit_code == 0:
        data = json.loads((out / "sweep.json").read_text())
        assert data["finished"] is True and len(data["runs"]) == 2, data
        return result
    assert bounds.took < SECONDS_PER_CASE, f"{bounds.took:.1f} s for an error"
    _one_error(result, codes=(1,))
    return result


def test_malformed_sweep_json_gives_a_resumed_sweep_or_one_line(fuzz_dir, finished_sweep):
    import shutil

    files, bounds = _Files(fuzz_dir / "sweeps"), _Bounds()
    (fuzz_dir / "sweeps").mkdir()
    valid = json.loads((finished_sweep / "sweep.json").read_text())
    warm = files.next("sweep")
    shutil.copytree(finished_sweep, warm)
    assert bounds.run("sweep", "--resume", warm, "--quiet", seconds=60).exit_code == 0

    @settings(max_examples=80 * SCALE, **COMMON)
    @given(content=malformed_sweep_files(valid))
    def check(content: bytes) -> None:
        out = files.next("sweep")
        shutil.copytree(finished_sweep, out)
        (out / "sweep.json").write_bytes(content)
        _resume(bounds, out)

    check()


def test_malformed_evaluation_json_gives_a_resumed_sweep_or_one_line(fuzz_dir, finished_sweep):
    import shutil

    files, bounds = _Files(fuzz_dir / "evaluations"), _Bounds()
    (fuzz_dir / "evaluations").mkdir()
    valid = json.loads((finished_sweep / "tau-0.01" / "evaluation.json").read_text())
    warm = files.next("sweep")
    shutil.copytree(finished_sweep, warm)
    assert bounds.run("sweep", "--resume", warm, "--quiet", seconds=60).exit_code == 0

    @settings(max_examples=80 * SCALE, **COMMON)
    @given(content=malformed_evaluations(valid))
    def check(content: bytes) -> None:
        out = files.next("sweep")
        shutil.copytree(finished_sweep, out)
        (out / "tau-0.01" / "evaluation.json").write_bytes(content)
        result = _resume(bounds, out)
        if result.exit_code == 1:
            assert str(out / "tau-0.01" / "evaluation.json") in result.stderr

    check()
