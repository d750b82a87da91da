"""Task files: good files resolve to token ids; each malformed one is named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import error_of
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import models, pre_tokenizers

from acdc.core.generators.words import IOI_NAMES
from acdc.core.tasks import reading as tasks_module
from acdc.core.tasks.reading import list_tasks, read_task
from acdc.core.tasks.resolving import resolve_task
from acdc.core.tasks.spec import TaskSpec
from acdc.core.tasks.values import RawPrompt, Task
from acdc.core.tokenizer import Tokenizer
from acdc.errors import RunWarning

WORDS = [
    "<bos>",
    "[UNK]",
    "When",
    "Mary",
    "John",
    "went",
    "to",
    "the",
    "store",
    ",",
    "gave",
    "a",
    "drink",
    "Anna",
    "Paul",
    "Lisa",
    "Bob",
]
ID = {w: i for i, w in enumerate(WORDS)}
D_VOCAB = len(WORDS)
N_CTX = 16

CLEAN = "When Mary and John went to the store , John gave a drink to"
IOI_CLEAN = "When Mary John went to the store , John gave a drink to"
IOI_CORRUPT = "When Anna Paul went to the store , Lisa gave a drink to"


def make_tokenizer(with_bos: bool = True) -> Tokenizer:
    words = WORDS if with_bos else ["<pad>"] + WORDS[1:]
    raw = RawTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return Tokenizer(raw, "test-tokenizer")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return make_tokenizer()


def write(tmp_path: Path, content, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    )
    return path


def base(**overrides) -> dict:
    """A valid task with text prompts; keyword arguments replace top-level keys."""
    data = {
        "name": "ioi-mini",
        "description": "indirect object identification, tiny",
        "metric": "logit_diff",
        "threshold": 0.01,
        "prompts": [
            {"clean": IOI_CLEAN, "corrupt": IOI_CORRUPT, "answer": " Mary", "wrong": " John"},
            {
                "clean": "When John Mary went to the store , Mary gave a drink to",
                "corrupt": "When Paul Anna went to the store , Lisa gave a drink to",
                "answer": "John",
                "wrong": ["Mary"],
            },
        ],
    }
    data.update(overrides)
    return data


def ids_task(**overrides) -> dict:
    data = {"threshold": 0.5, "prompts": [{"clean": [3, 12, 4, 9], "corrupt": [3, 11, 4, 8]}]}
    data.update(overrides)
    return data


def read_error(tmp_path: Path, content) -> tuple[str, str]:
    path = write(tmp_path, content)
    return error_of(read_task, str(path)), str(path)


def resolve_error(
    tmp_path: Path, content, tokenizer=None, d_vocab=D_VOCAB, n_ctx=N_CTX
) -> tuple[str, str]:
    path = write(tmp_path, content)
    spec = read_task(str(path))
    return error_of(resolve_task, spec, tokenizer, d_vocab, n_ctx), str(path)


# --------------------------------------------------------------------------- good files


def test_text_task_resolves_to_token_ids(tmp_path, tok):
    path = write(tmp_path, base())
    spec = read_task(str(path))
    assert spec.source == str(path)
    assert (spec.name, spec.metric, spec.threshold, spec.ablation, spec.seed) == (
        "ioi-mini",
        "logit_diff",
        0.01,
        "corrupt",
        0,
    )
    assert spec.prepend_bos is False and spec.positions == "last" and spec.model is None
    assert spec.prompts[0] == RawPrompt(0, IOI_CLEAN, IOI_CORRUPT, (" Mary",), (" John",), None)

    task = resolve_task(spec, tok, D_VOCAB, N_CTX)
    assert isinstance(task, Task) and task.n_prompts == 2
    assert task.clean[0] == tok.encode(IOI_CLEAN)
    assert task.corrupt[0] == tok.encode(IOI_CORRUPT)
    assert [len(c) for c in task.clean] == [len(c) for c in task.corrupt] == [13, 13]
    assert task.positions == [[12], [12]]
    assert task.answers == [[ID["Mary"]], [ID["John"]]]
    assert task.wrong_answers == [[ID["John"]], [ID["Mary"]]]
    assert (task.name, task.metric, task.source) == ("ioi-mini", "logit_diff", str(path))


def test_id_prompts_without_tokenizer(tmp_path):
    path = write(
        tmp_path,
        ids_task(
            metric="kl",
            prompts=[
                {
                    "clean": [3, 16, 4, 9],
                    "corrupt": [3, 12, 4, 8],
                    "positions": [1, -1],
                    "answer": 1,
                    "wrong": 2,
                },
                {
                    "clean": [5, 6],
                    "corrupt": [6, 5],
                    "positions": "all",
                    "answer": 7,
                    "wrong": [8, 9],
                },
                {"clean": [1, 2, 3], "corrupt": [1, 2, 4], "answer": [2], "wrong": 3},
            ],
        ),
    )
    task = resolve_task(read_task(str(path)), None, D_VOCAB, N_CTX)
    assert task.clean == [[3, 16, 4, 9], [5, 6], [1, 2, 3]]
    assert task.corrupt == [[3, 12, 4, 8], [6, 5], [1, 2, 4]]
    assert task.positions == [[1, 3], [0, 1], [2]]
    assert task.answers == [[1], [7], [2]]
    assert task.wrong_answers == [[2], [8, 9], [3]]


def test_answers_are_none_when_no_prompt_has_any(tmp_path):
    task = resolve_task(read_task(str(write(tmp_path, ids_task()))), None, D_VOCAB, N_CTX)
    assert task.answers is None and task.wrong_answers is None
    assert task.metric == "kl" and task.positions == [[3]]


def test_prompts_of_different_lengths_and_all_positions(tmp_path, tok):
    path = write(
        tmp_path,
        {
            "threshold": 0,
            "positions": "all",
            "prompts": [
                {"clean": "Mary went", "corrupt": "John went"},
                {"clean": [3, 5, 6, 7], "corrupt": [4, 5, 6, 7], "positions": [-2, 0, 0, 2]},
            ],
        },
    )
    task = resolve_task(read_task(str(path)), tok, D_VOCAB, N_CTX)
    assert task.clean == [[3, 5], [3, 5, 6, 7]]
    assert task.positions == [[0, 1], [0, 2]]  # sorted, unique, negative counted from the end
    assert task.threshold == 0.0


def test_prepend_bos_shifts_positions(tmp_path, tok):
    path = write(
        tmp_path,
        base(
            prepend_bos=True,
            prompts=[
                {
                    "clean": "Mary went to",
                    "corrupt": "John went to",
                    "answer": "the",
                    "wrong": "a",
                    "positions": [0, -1],
                },
                {"clean": [3, 5], "corrupt": [4, 5], "answer": 7, "wrong": 11},
            ],
        ),
    )
    task = resolve_task(read_task(str(path)), tok, D_VOCAB, N_CTX)
    assert task.clean == [[0, 3, 5, 6], [0, 3, 5]]
    assert task.corrupt == [[0, 4, 5, 6], [0, 4, 5]]
    assert task.positions == [[1, 3], [2]]


def test_multiple_answers_per_prompt(tmp_path, tok):
    path = write(
        tmp_path,
        base(
            metric="prob_diff",
            prompts=[
                {
                    "clean": "Mary went to",
                    "corrupt": "John went to",
                    "answer": ["the", 11],
                    "wrong": ["store", "drink", 4],
                },
            ],
        ),
    )
    task = resolve_task(read_task(str(path)), tok, D_VOCAB, N_CTX)
    assert task.answers == [[ID["the"], 11]]
    assert task.wrong_answers == [[ID["store"], ID["drink"], 4]]


def test_zero_ablation_needs_no_corrupt(tmp_path):
    path = write(
        tmp_path, {"threshold": 0.1, "ablation": "zero", "prompts": [{"clean": [1, 2, 3]}]}
    )
    spec = read_task(str(path))
    task = resolve_task(spec, None, D_VOCAB, N_CTX)
    assert task.corrupt == task.clean == [[1, 2, 3]] and task.ablation == "zero"
    message = error_of(spec.with_overrides, ablation="corrupt")
    assert f"{path}: prompts[0]: no corrupt prompt" in message and "ablation zero" in message


def test_model_path_resolved_relative_to_the_file(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    sub = tmp_path / "tasks"
    sub.mkdir()
    spec = read_task(str(write(sub, ids_task(model="../models/tiny"))))
    assert spec.model == str((tmp_path / "models" / "tiny").resolve())
    assert read_task(str(write(sub, ids_task(model="gpt2")))).model == "gpt2"
    assert (
        read_task(str(write(sub, ids_task(model="../models/nowhere")))).model == "../models/nowhere"
    )


def test_defaults(tmp_path):
    spec = read_task(str(write(tmp_path, ids_task(), name="my_task.yaml")))
    assert (spec.name, spec.description, spec.metric, spec.ablation, spec.seed) == (
        "my_task",
        "",
        "kl",
        "corrupt",
        0,
    )
    assert spec.prepend_bos is False and spec.positions == "last" and spec.model is None


def test_scientific_threshold_without_dot(tmp_path):
    # PyYAML reads 1e-2 as a string; it is still a number to the user
    spec = read_task(
        str(write(tmp_path, "threshold: 1e-2\nprompts:\n  - {clean: [1], corrupt: [2]}\n"))
    )
    assert spec.threshold == 0.01


def test_overrides(tmp_path):
    spec = read_task(str(write(tmp_path, base())))
    changed = spec.with_overrides(metric="kl", threshold=0.5, ablation="zero", seed=3, model="gpt2")
    assert (changed.metric, changed.threshold, changed.ablation, changed.seed, changed.model) == (
        "kl",
        0.5,
        "zero",
        3,
        "gpt2",
    )
    assert spec.with_overrides(metric=None, threshold=None) == spec
    assert spec.metric == "logit_diff"  # the original is unchanged


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "metric",
            "kll",
            "--metric: unknown metric 'kll' (did you mean 'kl'?); use one of: kl, logit_diff",
        ),
        ("threshold", -1.0, "--threshold: must be a finite number >= 0"),
        ("threshold", float("nan"), "--threshold: must be a finite number >= 0"),
        ("threshold", "abc", "--threshold: expected a number"),
        ("ablation", "resample", "--ablation: unknown ablation 'resample'; use one of: corrupt, "
                                 "zero, mean, mean-positional"),
        ("seed", 1.5, "--seed: expected a whole number"),
        ("seed", -2, "--seed: must be from 0 to 4294967295 (2**32 - 1), got -2"),
        ("seed", 2**32, "--seed: must be from 0 to 4294967295 (2**32 - 1), got 4294967296"),
        ("model", "", "--model: is empty"),
    ],
)
def test_bad_overrides(tmp_path, key, value, expected):
    spec = read_task(str(write(tmp_path, ids_task())))
    assert expected in error_of(spec.with_overrides, **{key: value})


def test_override_metric_checks_answers(tmp_path):
    path = write(tmp_path, ids_task())
    message = error_of(read_task(str(path)).with_overrides, metric="logit_diff")
    assert message.startswith(f"{path}: prompts[0]: metric logit_diff needs answer: and wrong:")


def test_override_of_unknown_field_is_a_programming_error(tmp_path):
    with pytest.raises(TypeError):
        read_task(str(write(tmp_path, ids_task()))).with_overrides(prompts=[])


def test_to_dict_round_trips(tmp_path, tok):
    spec = read_task(str(write(tmp_path, base(positions=[0, -1]))))
    again = TaskSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict())), spec.source)
    assert again == spec


# --------------------------------------------------------------------------- bundled tasks


def test_bundled_names_and_listing(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    write(bundled, base(name="greater-than"), name="greater_than.yaml")
    write(bundled, ids_task(name="zeta", description="ids only"), name="zeta.yaml")
    (bundled / "README.md").write_text("# not a task\n")
    monkeypatch.setattr(tasks_module, "TASKS_DIR", bundled)

    assert read_task("greater-than").name == "greater-than"
    assert read_task("greater_than").source == str(bundled / "greater_than.yaml")
    assert [t.name for t in list_tasks()] == ["greater-than", "zeta"]
    message = error_of(read_task, "greater-thn")
    assert message.startswith("unknown task 'greater-thn' (did you mean 'greater-than'?)")
    assert "(greater-than, zeta)" in message
    assert "'greater-than'?" in error_of(read_task, "greater_thn")  # names shown hyphenated


def test_real_bundled_tasks_are_valid():
    for spec in list_tasks():  # whatever is bundled must read without error
        assert spec.source.endswith((".yaml", ".yml"))
        assert bool(spec.prompts) != (spec.generator is not None)
        assert spec.n_prompts > 0


# --------------------------------------------------------------------------- malformed files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = error_of(read_task, str(path))
    assert message.startswith(f"{path}: no such task file")


def test_directory_instead_of_file(tmp_path):
    assert "is a directory" in error_of(read_task, str(tmp_path))


def test_not_yaml(tmp_path):
    message, path = read_error(tmp_path, "name: [unclosed\nprompts: {\n")
    assert message.startswith(f"{path}: not valid YAML (line ")


def test_not_text(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    assert error_of(read_task, str(path)).startswith(f"{path}: not a text file")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "expected a mapping of task keys"),
        ("just text\n", "expected a mapping of task keys"),
    ],
)
def test_not_a_mapping(tmp_path, content, expected):
    message, path = read_error(tmp_path, content)
    assert message.startswith(f"{path}: ") and expected in message


def test_unknown_top_level_key_suggests_the_closest(tmp_path):
    message, path = read_error(tmp_path, ids_task(treshold=0.1))
    assert message.startswith(
        f"{path}: unknown key 'treshold' (did you mean 'threshold'?); valid keys: name,"
    )
    assert "prompts" in message


def test_unknown_prompt_key(tmp_path):
    data = base()
    data["prompts"][1]["answers"] = " Mary"
    message, path = read_error(tmp_path, data)
    assert message.startswith(
        f"{path}: prompts[1]: unknown prompt key 'answers' (did you mean 'answer'?)"
    )
    assert "valid keys: clean, corrupt, answer, wrong, positions" in message


def test_missing_required_key(tmp_path):
    data = ids_task()
    del data["prompts"]
    message, path = read_error(tmp_path, data)
    assert message.startswith(f"{path}: missing required key 'prompts'")
    assert message.endswith("; see tasks/README.md")


def test_threshold_is_optional(tmp_path):
    """ACDC's threshold is ACDC's: a task without one is valid (ACDC then needs --threshold,
    a ranking method a selection rule)."""
    data = ids_task()
    del data["threshold"]
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    assert read_task(path).threshold is None


def test_missing_clean(tmp_path):
    message, path = read_error(
        tmp_path, ids_task(prompts=[{"clean": [1], "corrupt": [2]}, {"corrupt": [1]}])
    )
    assert message.startswith(f"{path}: prompts[1]: missing required key 'clean'")


def test_missing_corrupt_with_corrupt_ablation(tmp_path):
    message, path = read_error(tmp_path, ids_task(prompts=[{"clean": [1, 2]}]))
    assert message.startswith(
        f"{path}: prompts[0]: no corrupt prompt, which ablation 'corrupt' needs"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("threshold", "high", "threshold: expected a number such as 0.01, got 'high'"),
        ("threshold", True, "threshold: expected a number such as 0.01, got true (a boolean)"),
        ("threshold", [0.1], "threshold: expected a number such as 0.01, got a list"),
        ("threshold", -0.5, "threshold: must be a finite number >= 0, got -0.5"),
        ("threshold", ".nan", "threshold: must be a finite number >= 0"),
        ("seed", 1.5, "seed: expected a whole number such as 0, got 1.5"),
        ("seed", "1", "seed: expected a whole number such as 0, got '1'"),
        ("seed", -1, "seed: must be from 0 to 4294967295 (2**32 - 1), got -1"),
        ("prepend_bos", "no way", "prepend_bos: expected true or false, got 'no way'"),
        ("name", 3, "name: expected a task name (a string), got 3"),
        ("name", "  ", "name: is empty; give a task name"),
        ("description", ["a"], "description: expected one line of text (a string), got a list"),
        ("model", 12, "model: expected a model directory or name (a string), got 12"),
        (
            "metric",
            "logit-diff",
            "metric: unknown metric 'logit-diff' (did you mean 'logit_diff'?);"
            " use one of: kl, logit_diff, prob_diff, nll, l2",
        ),
        ("metric", 5, "metric: unknown metric 5; use one of: kl"),
        (
            "ablation",
            "zeros",
            "ablation: unknown ablation 'zeros' (did you mean 'zero'?); use one of: corrupt, "
            "zero, mean, mean-positional",
        ),
        (
            "positions",
            "first",
            "positions: unknown value 'first';"
            " use last, all, or a list of positions such as [3, -1]",
        ),
        ("positions", [], "positions: is an empty list"),
        ("positions", [1, "x"], "positions[1]: positions are whole numbers"),
        (
            "positions",
            3,
            "positions: expected last, all, or a list of positions such as [3, -1], got 3",
        ),
    ],
)
def test_wrong_top_level_values(tmp_path, key, value, expected):
    if value == ".nan":
        path = write(tmp_path, "threshold: .nan\nprompts:\n  - {clean: [1], corrupt: [2]}\n")
        message = error_of(read_task, str(path))
    else:
        message, path = read_error(tmp_path, ids_task(**{key: value}))
    assert message.startswith(f"{path}: {expected}"), message


@pytest.mark.parametrize(
    ("prompts", "expected"),
    [
        ([], "prompts: the list is empty; give at least one prompt"),
        (
            {"clean": "a"},
            "prompts: expected a list of prompts (each with clean: and corrupt:), got a mapping",
        ),
        (
            [{"clean": [1], "corrupt": [1]}, "text"],
            "prompts[1]: expected a mapping with clean: and corrupt:, got a string",
        ),
        ([{"clean": "", "corrupt": "x"}], "prompts[0]: clean: is empty"),
        ([{"clean": [1], "corrupt": []}], "prompts[0]: corrupt: is an empty list"),
        (
            [{"clean": [1, 2.5], "corrupt": [1, 2]}],
            "prompts[0]: clean[1]: token ids must be whole numbers, got 2.5",
        ),
        (
            [{"clean": [1, True], "corrupt": [1, 2]}],
            "prompts[0]: clean[1]: token ids must be whole numbers",
        ),
        (
            [{"clean": 12, "corrupt": [1]}],
            "prompts[0]: clean: expected text (a string) or a list of token ids, got 12",
        ),
        ([{"clean": [1], "corrupt": [2], "answer": []}], "prompts[0]: answer: is an empty list"),
        (
            [{"clean": [1], "corrupt": [2], "answer": [1, 0.5]}],
            "prompts[0]: answer[1]: expected one token",
        ),
        ([{"clean": [1], "corrupt": [2], "wrong": ""}], "prompts[0]: wrong: is empty"),
        (
            [{"clean": [1], "corrupt": [2], "positions": "every"}],
            "prompts[0]: positions: unknown value 'every'",
        ),
    ],
)
def test_malformed_prompts(tmp_path, prompts, expected):
    message, path = read_error(tmp_path, ids_task(prompts=prompts))
    assert message.startswith(f"{path}: {expected}"), message


def test_metric_needs_answer_and_wrong(tmp_path):
    data = base()
    del data["prompts"][1]["wrong"]
    message, path = read_error(tmp_path, data)
    assert message == (
        f"{path}: prompts[1]: metric logit_diff needs answer: and wrong: on every"
        f" prompt, this one has no wrong:; add it or use metric kl"
    )


def test_answers_all_or_none(tmp_path):
    data = base(metric="kl")
    del data["prompts"][1]["answer"]
    message, path = read_error(tmp_path, data)
    assert message.startswith(f"{path}: prompts[1]: has no answer: but prompts[0] has one")


# --------------------------------------------------------------------------- tokenisation problems


def test_clean_and_corrupt_lengths_differ(tmp_path, tok):
    data = base()
    data["prompts"][1]["corrupt"] = "When Paul Anna Bob went to the store , Lisa gave a drink to"
    message, path = resolve_error(tmp_path, data, tok)
    assert message.startswith(
        f"{path}: prompts[1]: clean has 13 tokens ['When', 'John', 'Mary', 'went', 'to', 'the',"
        f" 'store', ',', 'Mary', 'gave', 'a', 'drink', ...],"
        f" corrupt has 14 ['When', 'Paul', 'Anna',"
    )
    assert message.endswith("; make them tokenise to the same length")


def test_id_lengths_differ(tmp_path):
    message, path = resolve_error(
        tmp_path, ids_task(prompts=[{"clean": [1, 2], "corrupt": [1, 2, 3]}])
    )
    assert message.startswith(
        f"{path}: prompts[0]: clean has 2 tokens [1, 2], corrupt has 3 [1, 2, 3]"
    )


def test_answer_not_one_token(tmp_path, tok):
    data = base()
    data["prompts"][1]["answer"] = "Mary Ann"
    message, path = resolve_error(tmp_path, data, tok)
    assert message.startswith(
        f"{path}: prompts[1]: answer: 'Mary Ann' is 2 tokens ['Mary', '[UNK]'];"
        f" an answer must be exactly one token"
    )


def test_wrong_answer_in_list_not_one_token(tmp_path, tok):
    data = base()
    data["prompts"][0]["wrong"] = ["John", "   "]
    message, path = resolve_error(tmp_path, data, tok)
    assert message.startswith(f"{path}: prompts[0]: wrong[1]: '   ' is 0 tokens []")


def test_text_tokenising_to_nothing(tmp_path, tok):
    message, path = resolve_error(
        tmp_path, ids_task(prompts=[{"clean": "  ", "corrupt": "  "}]), tok
    )
    assert message.startswith(f"{path}: prompts[0]: clean: '  ' tokenises to no tokens")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            {"clean": [1, 17], "corrupt": [1, 2]},
            "prompts[0]: clean[1]: token id 17 is outside the model's vocabulary [0, 17)",
        ),
        ({"clean": [1, 2], "corrupt": [-1, 2]}, "prompts[0]: corrupt[0]: token id -1 is outside"),
        (
            {"clean": [1], "corrupt": [2], "answer": 99, "wrong": 1},
            "prompts[0]: answer: token id 99 is outside",
        ),
        (
            {"clean": [1], "corrupt": [2], "answer": 3, "wrong": [1, 40]},
            "prompts[0]: wrong[1]: token id 40 is outside",
        ),
    ],
)
def test_token_ids_outside_vocabulary(tmp_path, prompt, expected):
    message, path = resolve_error(tmp_path, ids_task(prompts=[prompt]))
    assert message.startswith(f"{path}: {expected}"), message
    assert "use ids from 0 to 16" in message


def test_tokenizer_larger_than_model_vocabulary(tmp_path, tok):
    message, path = resolve_error(tmp_path, base(), tok, d_vocab=5)
    assert message == (
        f"{path}: prompts[0]: clean: token 3 ('went') has id 5, outside the model's"
        f" vocabulary [0, 5); the tokenizer (test-tokenizer) does not match the model"
    )


def test_prompt_longer_than_context(tmp_path, tok):
    message, path = resolve_error(tmp_path, base(prepend_bos=True), tok, n_ctx=13)
    assert message == (
        f"{path}: prompts[0]: 14 tokens with BOS, longer than the model's context of"
        f" 13; shorten the prompt"
    )
    resolve_task(read_task(str(path)).with_overrides(), tok, D_VOCAB, 14)  # fits exactly


@pytest.mark.parametrize(("positions", "where"), [([4], "positions"), ([-5], "positions")])
def test_position_outside_prompt(tmp_path, positions, where):
    message, path = resolve_error(
        tmp_path,
        ids_task(
            prompts=[
                {"clean": [1], "corrupt": [2]},
                {"clean": [3, 12, 4, 9], "corrupt": [3, 11, 4, 8], "positions": positions},
            ]
        ),
    )
    assert message == (
        f"{path}: prompts[1]: {where}: position {positions[0]} is outside the prompt of"
        f" 4 tokens [3, 12, 4, 9]; use 0..3 or -4..-1"
    )


def test_default_position_outside_a_short_prompt(tmp_path):
    message, path = resolve_error(
        tmp_path,
        ids_task(
            positions=[2],
            prompts=[
                {"clean": [1, 2, 3], "corrupt": [1, 2, 4]},
                {"clean": [1, 2], "corrupt": [1, 3]},
            ],
        ),
    )
    assert message.startswith(
        f"{path}: prompts[1]: positions (the task's default): position 2 is outside"
    )


def test_nll_needs_an_answer_at_the_last_position(tmp_path):
    data = ids_task(
        metric="nll",
        prompts=[
            {"clean": [1, 2, 3], "corrupt": [4, 2, 4], "positions": [0, 1]},
            {"clean": [1, 2, 3], "corrupt": [4, 2, 4], "positions": [0, 2]},
        ],
    )
    message, path = resolve_error(tmp_path, data)
    assert message.startswith(
        f"{path}: prompts[1]: metric nll reads the last position, whose next"
        f" token is not in the prompt; add answer:"
    )
    data["prompts"][1]["positions"] = [0, 1]
    task = resolve_task(read_task(str(write(tmp_path, data))), None, D_VOCAB, N_CTX)
    assert task.answers is None and task.positions == [[0, 1], [0, 1]]


def test_nll_with_answers(tmp_path):
    data = ids_task(
        metric="nll",
        positions="all",
        prompts=[{"clean": [1, 2, 3], "corrupt": [1, 2, 4], "answer": 5}],
    )
    task = resolve_task(read_task(str(write(tmp_path, data))), None, D_VOCAB, N_CTX)
    assert task.answers == [[5]] and task.positions == [[0, 1, 2]]


@pytest.mark.parametrize(
    ("prompt", "where"),
    [
        ({"clean": "Mary went", "corrupt": [1, 2]}, "prompts[0]: clean: 'Mary went'"),
        ({"clean": [1, 2], "corrupt": "John went"}, "prompts[0]: corrupt: 'John went'"),
        (
            {"clean": [1], "corrupt": [2], "answer": " Mary", "wrong": 3},
            "prompts[0]: answer: ' Mary'",
        ),
    ],
)
def test_text_without_tokenizer(tmp_path, prompt, where):
    message, path = resolve_error(tmp_path, ids_task(prompts=[prompt]))
    assert message == (
        f"{path}: {where} is text but the model has no tokenizer; give token ids or"
        f" a model with tokenizer.json"
    )


def test_prepend_bos_without_bos(tmp_path):
    message, path = resolve_error(
        tmp_path, ids_task(prepend_bos=True), make_tokenizer(with_bos=False)
    )
    assert message == (
        f"{path}: prepend_bos is true but the tokenizer (test-tokenizer) has no BOS"
        f" token; set prepend_bos: false"
    )
    message, path = resolve_error(tmp_path, ids_task(prepend_bos=True), None)
    assert message.startswith(f"{path}: prepend_bos is true but the model has no tokenizer")


def test_readme_example_is_a_valid_task(tok):
    readme = Path(tasks_module.__file__).resolve().parents[3] / "tasks" / "README.md"
    example = readme.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = TaskSpec.from_dict(yaml.safe_load(example), str(readme))
    with pytest.warns(RunWarning, match="does not know 'and'"):  # not in this test's vocabulary
        task = resolve_task(spec, tok, d_vocab=50, n_ctx=N_CTX)
    assert task.positions == [[13], [1, 3]]
    assert task.answers == [[ID["Mary"]], [5]] and task.wrong_answers == [[ID["John"]], [6, 7]]


# --------------------------------------------------------------------------- generated tasks

DEMO_DIR = Path(tasks_module.__file__).resolve().parents[3] / "models" / "demo"


def demo_copy_of(tmp_path: Path, bundled: str, **generator) -> Path:
    """A user's copy of a bundled task file with edited generator lists."""
    data = yaml.safe_load((tasks_module.TASKS_DIR / bundled).read_text())
    data["generator"].update(generator)
    data["model"] = str(DEMO_DIR)
    return write(tmp_path, data, name="my_task.yaml")


def test_generated_task_reads_without_a_tokenizer(tmp_path):
    path = write(tmp_path, {"threshold": 0.1, "generator": {"kind": "ioi", "n": 7}})
    spec = read_task(str(path))
    assert spec.prompts == () and spec.n_prompts == 7
    assert spec.generator["kind"] == "ioi" and spec.generator["names"] == list(IOI_NAMES)
    assert spec.with_generator(n=3).n_prompts == 3 and spec.n_prompts == 7
    again = TaskSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict())), spec.source)
    assert again == spec


def test_users_copy_of_the_ioi_task_with_edited_lists(tmp_path):
    demo = Tokenizer.from_file(DEMO_DIR / "tokenizer.json")
    path = demo_copy_of(
        tmp_path, "ioi.yaml", n=12, seed=3,
        names=["mary", "john", "anna", "paul", "lisa", "james"],
        templates=["when [A] and [B] went to the [PLACE] , [B] gave a [OBJECT] to",
                   "then , [A] and [B] went to the [PLACE] . [B] gave a [OBJECT] to"],
        places=["store", "garden"], objects=["drink"],
    )
    spec = read_task(str(path))
    assert spec.model == str(DEMO_DIR) and spec.prepend_bos
    task = resolve_task(spec, demo, d_vocab=91, n_ctx=32)
    assert task.n_prompts == 12 and task.metric == "kl"
    assert all(c[0] == demo.bos_id and len(c) == len(k)
               for c, k in zip(task.clean, task.corrupt, strict=True))
    assert task.positions == [[len(c) - 1] for c in task.clean]
    assert all(len(a) == 1 and len(w) == 1
               for a, w in zip(task.answers, task.wrong_answers, strict=True))
    again = resolve_task(read_task(str(path)), demo, d_vocab=91, n_ctx=32)
    assert again.clean == task.clean and again.corrupt == task.corrupt
    logit_diff = resolve_task(spec.with_overrides(metric="logit_diff"), demo, 91, 32)
    assert logit_diff.answers == task.answers


def test_generated_prompts_are_checked_like_written_ones(tmp_path):
    demo = Tokenizer.from_file(DEMO_DIR / "tokenizer.json")
    path = demo_copy_of(tmp_path, "ioi.yaml", n=3,
                        names=["mary", "john", "anna", "paul", "lisa"],
                        templates=["when [A] and [B] went to the [PLACE] , [B] gave a [OBJECT]"
                                   " to"],
                        places=["store"], objects=["drink"])
    message = error_of(resolve_task, read_task(str(path)), demo, 91, 10)
    assert message.startswith(
        f"{path}: generated prompts[0]: 15 tokens with BOS, longer than the model's context"
    )


def test_users_copy_of_the_induction_task(tmp_path):
    path = demo_copy_of(tmp_path, "induction.yaml", n=5, seq_len=24, repeats=1,
                        span_length=[3, 5])
    data = yaml.safe_load(path.read_text())
    data["prepend_bos"] = False
    data["metric"] = "nll"
    spec = read_task(str(write(tmp_path, data)))
    task = resolve_task(spec, None, d_vocab=40, n_ctx=24)
    assert [len(c) for c in task.clean] == [24] * 5 and task.answers is None
    assert all(p and p[-1] < 23 for p in task.positions)  # nll reads next tokens in the prompt
    assert all(c != k for c, k in zip(task.clean, task.corrupt, strict=True))


@pytest.mark.parametrize(("change", "expected"), [
    ({"generator": {"kind": "induction", "sed": 1}},
     "generator: unknown key 'sed' for kind induction (did you mean 'seed'?)"),
    ({"generator": {"kind": "fibonacci"}}, "generator: kind: unknown generator 'fibonacci'"),
    ({"generator": {"kind": "ioi", "names": 5}}, "generator: names: expected a list of names"),
    ({"generator": {"kind": "induction"}, "metric": "logit_diff"},
     "metric logit_diff needs answer and wrong tokens, which the induction generator does not"
     " give; use one of: kl, nll, l2"),
    ({"generator": {"kind": "ioi"}, "prompts": [{"clean": [1], "corrupt": [2]}]},
     "has both prompts: and generator:"),
])
def test_bad_generator_in_a_task_file(tmp_path, change, expected):
    data = {"threshold": 0.1, **change}
    message, path = read_error(tmp_path, data)
    assert message.startswith(f"{path}: {expected}"), message


def test_metric_override_checked_against_the_generator(tmp_path):
    spec = read_task(str(write(tmp_path, {"threshold": 0.1, "generator": {"kind": "induction"}})))
    message = error_of(spec.with_overrides, metric="prob_diff")
    assert "metric prob_diff needs answer and wrong tokens" in message


# --------------------------------------------------------------------------- unknown words


def hf_tokenizers(tmp_path: Path) -> dict[str, Tokenizer]:
    """The test vocabulary as a Hugging Face fast tokenizer and as a Python ("slow") one."""
    from transformers import BertTokenizer, PreTrainedTokenizerFast

    raw = RawTokenizer(models.WordLevel(ID, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", bos_token="<bos>")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    slow = BertTokenizer(str(vocab), do_lower_case=False, unk_token="[UNK]")
    return {"hf-fast": Tokenizer(fast, "hf-fast"), "hf-slow": Tokenizer(slow, "hf-slow")}


@pytest.fixture(params=["tokenizers", "hf-fast", "hf-slow"])
def any_tok(request, tok, tmp_path) -> Tokenizer:
    """The test vocabulary in each tokenizer flavour the project reads."""
    return tok if request.param == "tokenizers" else hf_tokenizers(tmp_path)[request.param]


@pytest.mark.parametrize("key", ["answer", "wrong"])
def test_an_answer_the_tokenizer_does_not_know_is_an_error(tmp_path, any_tok, key):
    data = base()
    data["prompts"][1][key] = [" Mary", " zzyzx"] if key == "wrong" else " zzyzx"
    message, path = resolve_error(tmp_path, data, any_tok)
    at = f"{key}[1]" if key == "wrong" else key
    assert message.startswith(
        f"{path}: prompts[1]: {at}: ' zzyzx' is not in the vocabulary of the tokenizer"
        f" ({any_tok.source}): it becomes the unknown token '[UNK]'"
    ), message
    assert "or the id 1 to mean the unknown token itself" in message


def test_the_unknown_token_by_id_or_its_own_text_is_accepted(tmp_path, tmp_path_factory):
    data = base()
    data["prompts"][0]["answer"] = ID["[UNK]"]
    spec = read_task(str(write(tmp_path, data)))
    task = resolve_task(spec, make_tokenizer(), D_VOCAB, N_CTX)
    assert task.answers[0] == [ID["[UNK]"]]
    # written as its own text: an added special token, as Hugging Face tokenizers keep it
    hf = hf_tokenizers(tmp_path_factory.mktemp("hf"))["hf-fast"]
    data["prompts"][0]["answer"] = "[UNK]"
    data["prompts"][0]["clean"] = IOI_CLEAN.replace("Mary", "[UNK]")
    spec = read_task(str(write(tmp_path, data)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = resolve_task(spec, hf, D_VOCAB, N_CTX)
    assert task.answers[0] == [ID["[UNK]"]] and ID["[UNK]"] in task.clean[0]


def test_unknown_prompt_words_give_one_warning_naming_the_first(tmp_path, any_tok):
    data = base()
    data["prompts"][0]["corrupt"] = IOI_CORRUPT.replace("store", "zzyzx")
    data["prompts"][1]["clean"] = data["prompts"][1]["clean"].replace("drink", "qwerty").replace(
        "store", "xyzzy")
    path = write(tmp_path, data)
    with pytest.warns(RunWarning) as caught:
        task = resolve_task(read_task(str(path)), any_tok, D_VOCAB, N_CTX)
    caught = [w for w in caught if w.category is RunWarning]
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{path}: the tokenizer ({any_tok.source}) does not know 'zzyzx' (prompts[0]: corrupt):"
        f" 2 of 2 prompts have words it does not know, 3 tokens in all, each read as the unknown"
        f" token '[UNK]', which the model cannot tell apart; check the spelling or use words in"
        f" its vocabulary")
    assert task.corrupt[0][6] == ID["[UNK]"]


def test_no_warning_without_unknown_words_or_without_an_unknown_token(tmp_path, tok):
    import warnings

    from test_generators import make_bpe
    from transformers import PreTrainedTokenizerFast

    bpe = make_bpe()  # byte-level: every text is known, there is no unknown token
    assert bpe.unk_id is None and bpe.unknown_words("zzyzx") == []
    # GPT-2's tokenizer names <|endoftext|> its unknown token; byte-level BPE never produces
    # it from text, and written as such it is the user's choice
    gpt2_like = Tokenizer(PreTrainedTokenizerFast(tokenizer_object=make_bpe().backend,
                                                  unk_token="<|endoftext|>"), "gpt2-like")
    assert gpt2_like.unk_id is not None
    prompts = [{"clean": "When John went to the store<|endoftext|>",
                "corrupt": "When Mary went to the store<|endoftext|>",
                "answer": "<|endoftext|>", "wrong": " John"}]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunWarning)
        resolve_task(read_task(str(write(tmp_path, base()))), tok, D_VOCAB, N_CTX)
        for tokenizer in (bpe, gpt2_like):
            spec = read_task(str(write(tmp_path, ids_task(prompts=prompts, metric="logit_diff"))))
            task = resolve_task(spec, tokenizer, 1000, 64)
            assert task.answers == [[tokenizer.backend.token_to_id("<|endoftext|>")
                                     if tokenizer is bpe else gpt2_like.unk_id]]


# --------------------------------------------------------------------------- clean = corrupt


def test_corrupt_identical_to_clean_everywhere_is_an_error(tmp_path, tok):
    prompts = [{"clean": IOI_CLEAN, "corrupt": IOI_CLEAN, "answer": " Mary", "wrong": " John"}]
    message, path = resolve_error(tmp_path, base(prompts=prompts), tok)
    assert message == (
        f"{path}: prompts[0]: corrupt is the same tokens as clean, so ablating an edge with the"
        f" corrupt run changes nothing and every edge would be removed; make each corrupt prompt"
        f" differ from its clean one, or use ablation zero")
    prompts = [{"clean": [1, 2, 3], "corrupt": [1, 2, 3]}, {"clean": [4, 5], "corrupt": [4, 5]}]
    message, path = resolve_error(tmp_path, ids_task(prompts=prompts))
    assert message.startswith(
        f"{path}: prompts: on every prompt (2 of 2): corrupt is the same tokens as clean")
    # zero ablation does not read the corrupt prompts
    spec = read_task(str(write(tmp_path, ids_task(prompts=prompts, ablation="zero"))))
    assert resolve_task(spec, None, D_VOCAB, N_CTX).n_prompts == 2


def test_corrupt_differing_anywhere_is_enough(tmp_path):
    """Even after the metric positions: a bidirectional model reads those tokens too."""
    prompts = [{"clean": [1, 2, 3], "corrupt": [1, 2, 4], "positions": [0, 1]}]
    spec = read_task(str(write(tmp_path, ids_task(prompts=prompts))))
    assert resolve_task(spec, None, D_VOCAB, N_CTX).corrupt == [[1, 2, 4]]


def test_corrupt_identical_on_some_prompts_gives_one_warning(tmp_path):
    prompts = [{"clean": [1, 2, 3], "corrupt": [1, 2, 4]}] + [
        {"clean": [5, 6, i], "corrupt": [5, 6, i]} for i in range(3)]
    path = write(tmp_path, ids_task(prompts=prompts))
    with pytest.warns(RunWarning) as caught:
        resolve_task(read_task(str(path)), None, D_VOCAB, N_CTX)
    assert [str(w.message) for w in caught if w.category is RunWarning] == [
        f"{path}: prompts: on 3 of 4 prompts (first prompts[1]) corrupt is the same tokens as"
        f" clean, so ablating an edge changes nothing there and only dilutes the metric; make"
        f" their corrupt prompts differ or remove them"]


# --------------------------------------------------------------------------- limits


def test_a_task_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks_module, "MAX_TASK_BYTES", 1000)
    path = write(tmp_path, ids_task(description="x" * 2000))
    message = error_of(read_task, str(path))
    assert message.startswith(f"{path}: larger than ") and "far more than a task file" in message


def test_the_real_size_limit_is_tens_of_megabytes():
    assert 16 * 2**20 <= tasks_module.MAX_TASK_BYTES <= 64 * 2**20


def test_a_device_is_not_a_task_file():
    message = error_of(read_task, "/dev/zero")
    assert message == "/dev/zero: is not a regular file (a device or a pipe); give a task YAML file"


@pytest.mark.parametrize(("text", "expected"), [
    ("threshold: 0.1\nprompts: " + "[" * 2000 + "]" * 2000, "not valid YAML ("),
    ("threshold: 0.1\nseed: " + "9" * 5000 + "\nprompts: [{clean: [1]}]",
     "not valid YAML (a whole number of more than 4300 digits)"),
])
def test_yaml_that_python_cannot_hold(tmp_path, text, expected):
    message, path = read_error(tmp_path, text)
    assert message.startswith(f"{path}: {expected}"), message


def test_too_many_prompts(tmp_path):
    prompts = [{"clean": [1], "corrupt": [2]}] * 10_001
    message, path = read_error(tmp_path, ids_task(prompts=prompts))
    assert message == (f"{path}: prompts: 10,001 prompts, more than the 10,000 a run can use"
                       f" (ACDC's tasks have 50 to a few hundred); use fewer prompts")


def test_aliases_cannot_multiply_a_small_file_into_a_huge_task(tmp_path):
    text = "x " * 50_000
    body = "\n".join(["  - &p {clean: '" + text + "', corrupt: '" + text + "'}"] +
                     ["  - *p"] * 120)
    path = write(tmp_path, "threshold: 0.1\nprompts:\n" + body + "\n")
    assert path.stat().st_size < 300_000
    message = error_of(read_task, str(path))
    assert message == (f"{path}: prompts: more than 10,000,000 characters, token ids, answers"
                       f" and positions in all (reached at prompts[50]: clean); no run can use"
                       f" that much data: use fewer or shorter prompts")


class _CountingTokenizer:
    """The test tokenizer, recording the length of every text it is asked to encode."""

    def __init__(self, tokenizer: Tokenizer):
        self.inner, self.lengths = tokenizer, []
        self.source, self.bos_id, self.unk_id = "counting", tokenizer.bos_id, tokenizer.unk_id

    def encode(self, text: str) -> list[int]:
        self.lengths.append(len(text))
        return self.inner.encode(text)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_prompt_far_longer_than_the_context_is_refused_before_tokenising(tmp_path, tok):
    counting = _CountingTokenizer(tok)
    data = base(prompts=[{"clean": "Mary " * 1000, "corrupt": "John " * 1000,
                          "answer": " Mary", "wrong": " John"}])
    message, path = resolve_error(tmp_path, data, counting)
    assert message == (
        f"{path}: prompts[0]: clean: 5,000 characters, far more than the model's context of"
        f" {N_CTX} tokens holds (text longer than 64 characters per token is refused before"
        f" tokenising); shorten the prompt")
    assert counting.lengths == []
    data = base(prompts=[{"clean": "Mary John", "corrupt": "John Mary", "answer": "x" * 300,
                          "wrong": " John"}])
    message, path = resolve_error(tmp_path, data, counting)
    assert message.endswith("answer: 300 characters, longer than any token; an answer must be"
                            " exactly one token (a word, or its id)")
    assert max(counting.lengths) < 20
