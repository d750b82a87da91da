"""Labelled positions: the `labels:` syntax, its checks, generated labels, rendering.

Three tokenizers: a word-level one built here (one token per word, so a labelled word's
position is its index among the words), the byte-level BPE of test_generators (names with
their leading space, several tokens for some words), and the bundled ioi and greater-than
models' tokenizers (the bundled tasks' first prompts are checked by hand against them).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml
from conftest import error_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_generators import make_bpe
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import models, pre_tokenizers

from acdc.core.generators.ioi import IOI_LABELS
from acdc.core.generators.registry import GENERATORS, generate_prompts
from acdc.core.generators.words import IOI_TEMPLATES
from acdc.core.tasks.labels import LABEL_NAME, MAX_LABEL_CHARS, word_ends
from acdc.core.tasks.reading import read_task
from acdc.core.tasks.resolving import resolve_task
from acdc.core.tasks.show import render_prompt, render_prompts
from acdc.core.tasks.spec import TaskSpec
from acdc.core.tokenizer import Tokenizer
from acdc.errors import TaskError

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["<bos>", "[UNK]", "When", "Mary", "John", "and", "went", "to", "the", "store", ",",
         "gave", "a", "drink", "Anna", "Paul", "Lisa", "Bob", "said", "hi", ".", "Johnny"]
ID = {w: i for i, w in enumerate(WORDS)}
D_VOCAB = len(WORDS)
N_CTX = 32

CLEAN = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When Anna and Paul went to the store , Lisa gave a drink to"
LABELS = {"IO": "Mary", "S1": ["John", 1], "S1+1": "went", "S2": ["John", -1], "END": -1}
POSITIONS = {"IO": 1, "S1": 3, "S1+1": 4, "S2": 9, "END": 13}  # words of CLEAN, from 0


def word_tokenizer(split_punctuation: bool = True) -> Tokenizer:
    raw = RawTokenizer(models.WordLevel(ID, unk_token="[UNK]"))
    raw.pre_tokenizer = (pre_tokenizers.Whitespace() if split_punctuation
                         else pre_tokenizers.WhitespaceSplit())
    return Tokenizer(raw, "test-words")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return word_tokenizer()


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return make_bpe()


def task(prompts: list[dict] | None = None, **top) -> dict:
    """A valid text task (two prompts of different lengths); keyword arguments are top-level
    keys."""
    if prompts is None:
        prompts = [
            {"clean": CLEAN, "corrupt": CORRUPT, "labels": dict(LABELS)},
            {"clean": "When John said hi , Mary said hi to", "corrupt":
             "When Paul said hi , Lisa said hi to",
             "labels": {"IO": "Mary", "S1": "John", "S1+1": ["said", 1], "S2": ["hi", 2],
                        "END": -1}},
        ]
    return {"threshold": 0.1, "prompts": prompts, **top}


def ids_task(labels=None, default=None, **top) -> dict:
    prompts = [{"clean": [2, 3, 5, 4, 6], "corrupt": [2, 14, 5, 15, 6]},
               {"clean": [2, 4, 5, 3], "corrupt": [2, 15, 5, 14]}]
    if labels is not None:
        for prompt, own in zip(prompts, labels, strict=False):
            if own is not None:
                prompt["labels"] = own
    data = {"threshold": 0.1, "prompts": prompts, **top}
    if default is not None:
        data["labels"] = default
    return data


def spec_of(data: dict, source: str = "t.yaml") -> TaskSpec:
    return TaskSpec.from_dict(data, source)


def resolve(data: dict, tokenizer=None, **kw) -> object:
    return resolve_task(spec_of(data), tokenizer, kw.get("d_vocab", D_VOCAB), N_CTX)


def read_error(data: dict) -> str:
    return error_of(TaskSpec.from_dict, data, "t.yaml")


def resolve_error(data: dict, tokenizer=None) -> str:
    spec = spec_of(data)
    return error_of(resolve_task, spec, tokenizer, D_VOCAB, N_CTX)


# --------------------------------------------------------------------------- good labels


def test_text_labels_resolve_to_their_words(tok):
    resolved = resolve(task(), tok)
    assert resolved.labels == [POSITIONS, {"IO": 5, "S1": 1, "S1+1": 2, "S2": 7, "END": 8}]
    assert resolved.label_names == ("IO", "S1", "S1+1", "S2", "END")
    for ids, labels in zip(resolved.clean, resolved.labels, strict=True):
        assert WORDS[ids[labels["IO"]]] == "Mary" and WORDS[ids[labels["END"]]] == "to"


def test_labels_count_the_bos_when_it_is_prepended(tok):
    with_bos = resolve(task(prepend_bos=True), tok)
    assert with_bos.labels[0] == {name: p + 1 for name, p in POSITIONS.items()}
    assert with_bos.clean[0][0] == ID["<bos>"]
    assert WORDS[with_bos.clean[0][with_bos.labels[0]["S2"]]] == "John"
    ids = resolve(ids_task([{"A": 0, "B": -1}, {"A": 0, "B": -1}], prepend_bos=True), tok)
    assert ids.labels == [{"A": 1, "B": 5}, {"A": 1, "B": 4}]  # written 0 is after the BOS


def test_a_task_default_applies_to_prompts_without_their_own(tok):
    resolved = resolve(ids_task([None, {"B": 2, "A": 1}], default={"A": 0, "B": -1}), tok)
    # the first prompt takes the default; every mapping follows the first prompt's order
    assert resolved.labels == [{"A": 0, "B": 4}, {"A": 1, "B": 2}]
    assert [list(labels) for labels in resolved.labels] == [["A", "B"], ["A", "B"]]


def test_prompts_of_different_lengths_share_labels_by_name(tok):
    prompts = [{"clean": " ".join(["Mary"] * k + ["to"]),
                "corrupt": " ".join(["Anna"] * k + ["to"]),
                "labels": {"FIRST": ["Mary", 1], "LAST_NAME": ["Mary", -1], "END": "to"}}
               for k in (2, 5, 3)]
    resolved = resolve(task(prompts), tok)
    assert resolved.labels == [{"FIRST": 0, "LAST_NAME": k - 1, "END": k} for k in (2, 5, 3)]


def test_no_labels_leaves_the_task_as_it_was(tok):
    plain = resolve(ids_task(), tok)
    assert plain.labels is None and plain.label_names == ()
    for path in sorted((ROOT / "tasks").glob("tracr_*.yaml")):
        spec = read_task(str(path))
        assert spec.labels is None and all(p.labels is None for p in spec.prompts)
        assert "labels" not in spec.to_dict()
        assert all("labels" not in p for p in spec.to_dict()["prompts"])


def test_labels_round_trip_through_to_dict():
    spec = spec_of(task(labels={"END": -1}, prompts=[
        {"clean": CLEAN, "corrupt": CORRUPT, "labels": dict(LABELS)},
        {"clean": CLEAN, "corrupt": CORRUPT, "labels": dict(LABELS)}]))
    written = spec.to_dict()
    assert written["labels"] == {"END": -1}
    assert written["prompts"][0]["labels"] == LABELS
    again = TaskSpec.from_dict(yaml.safe_load(yaml.safe_dump(written, sort_keys=False)), "t.yaml")
    assert again == spec and again.labels == spec.labels


def test_word_ends_match_whole_words_only():
    assert word_ends("John and Johnny met John.", "John") == [4, 24]
    assert word_ends("a, b, c", ",") == [2, 5]
    assert word_ends("the store , the store", "the store") == [9, 21]
    assert word_ends("Mary", "Mar") == []


# --------------------------------------------------------------------------- checks when read


@pytest.mark.parametrize("labels, expected", [
    ([1, 2], "t.yaml: prompts[0]: labels: expected a mapping of label: position"),
    ({}, "t.yaml: prompts[0]: labels: is empty; give at least one label"),
    ({"S 1": 1}, "t.yaml: prompts[0]: labels: 'S 1' is not a label name; use a letter or _"),
    ({"1S": 1}, "t.yaml: prompts[0]: labels: '1S' is not a label name"),
    ({"S1+": 1}, "t.yaml: prompts[0]: labels: 'S1+' is not a label name"),
    ({"a" * (MAX_LABEL_CHARS + 1): 1}, "is not a label name"),
    ({3: 1}, "t.yaml: prompts[0]: labels: label 3 is not a name; write a name such as IO"),
    ({"other": 1}, "t.yaml: prompts[0]: labels: 'other' is reserved: it names every"
                   " unlabelled position together; give the label another name"),
    ({"Other": 1}, "'Other' is reserved"),
    ({"IO": True}, "t.yaml: prompts[0]: labels: IO: expected a token position such as 3 or -1,"
                   " a word of the clean text, or [word, occurrence], got true"),
    ({"IO": 1.5}, "t.yaml: prompts[0]: labels: IO: expected a token position"),
    ({"IO": None}, "t.yaml: prompts[0]: labels: IO: expected a token position"),
    ({"IO": {"word": "Mary"}}, "t.yaml: prompts[0]: labels: IO: expected a token position"),
    ({"IO": ["Mary"]}, "t.yaml: prompts[0]: labels: IO: expected [word, occurrence] (two items"),
    ({"IO": ["Mary", 0]}, "t.yaml: prompts[0]: labels: IO[1]: expected which occurrence of"
                          " 'Mary': 1 for the first, 2 for the second, -1 for the last; got 0"),
    ({"IO": ["Mary", "1"]}, "labels: IO[1]: expected which occurrence"),
    ({"IO": [3, 1]}, "t.yaml: prompts[0]: labels: IO[0]: expected a word of the clean text"),
    ({"IO": " "}, "t.yaml: prompts[0]: labels: IO: the word is empty"),
    ({"IO": "x" * 300}, "t.yaml: prompts[0]: labels: IO: 300 characters, longer than any word"),
])
def test_malformed_labels_are_named_when_read(labels, expected):
    data = task()
    data["prompts"][0]["labels"] = labels
    assert expected in read_error(data)


def test_malformed_task_default_names_the_key():
    assert read_error(ids_task(default={"other": 0})).startswith(
        "t.yaml: labels: 'other' is reserved")
    assert read_error(ids_task(default="END")).startswith(
        "t.yaml: labels: expected a mapping of label: position")


def test_words_need_text_prompts():
    message = read_error(ids_task([{"A": 0}, {"A": "Mary"}]))
    assert message == ("t.yaml: prompts[1]: labels: A: 'Mary' is a word, but this prompt is"
                       " token ids; give a token position such as 3 or -1")
    message = read_error(ids_task(default={"A": ["Mary", 2]}))
    assert message.startswith("t.yaml: prompts[0]: labels (the task's default): A: 'Mary' is a"
                              " word, but this prompt is token ids")


def test_label_sets_must_agree_and_the_first_that_differs_is_named():
    three = ids_task([{"A": 0}, {"A": 1}])
    three["prompts"].append({"clean": [2, 3, 4], "corrupt": [2, 3, 5], "labels": {"A": 0, "B": 1}})
    assert read_error(three) == (
        "t.yaml: prompts[2]: labels A, B differ from prompts[0]'s (B not in prompts[0]); give"
        " every prompt the same labels, or one labels: at the top for all")
    assert read_error(ids_task([{"A": 0, "B": 1}, {"A": 0, "C": 1}])).startswith(
        "t.yaml: prompts[1]: labels A, C differ from prompts[0]'s (missing B; C not in"
        " prompts[0])")
    assert read_error(ids_task([{"A": 0}, None])).startswith(
        "t.yaml: prompts[1]: has no labels but prompts[0] has A; give every prompt the same")
    assert read_error(ids_task([None, {"A": 0}])).startswith(
        "t.yaml: prompts[1]: has labels A but prompts[0] has none")
    assert read_error(ids_task([None, {"B": 0}], default={"A": 0})).startswith(
        "t.yaml: prompts[1]: labels B differ from prompts[0]'s (missing A; B not in")


def test_generators_that_label_refuse_a_task_default():
    for kind in ("ioi", "greater-than"):
        message = read_error({"threshold": 0.1, "labels": {"END": -1},
                              "generator": {"kind": kind}})
        labels = ", ".join(GENERATORS[kind].labels)
        assert message == (f"t.yaml: labels: the {kind} generator labels its prompts itself"
                           f" ({labels}); remove labels:")


def test_a_default_labels_generated_induction_prompts():
    spec = spec_of({"threshold": 0.1, "prepend_bos": False, "labels": {"FIRST": 0, "END": -1},
                    "generator": {"kind": "induction", "n": 3, "seq_len": 12, "repeats": 1,
                                  "span_length": [2, 4]}})
    resolved = resolve_task(spec, None, 50, 16)
    assert resolved.labels == [{"FIRST": 0, "END": 11}] * 3
    plain = resolve_task(spec_of({"threshold": 0.1, "generator": {"kind": "induction", "n": 3}}),
                         None, 50, 64)
    assert plain.labels is None


# --------------------------------------------------------------------------- checks when tokenised


def with_labels(labels: dict, prompt: int = 0, data: dict | None = None) -> dict:
    data = data or task()
    data["prompts"][prompt]["labels"] = labels
    return data


def test_a_position_outside_the_prompt_is_named(tok):
    message = resolve_error(ids_task([{"A": 0}, {"A": 4}]), tok)
    assert message == ("t.yaml: prompts[1]: labels: A: position 4 is outside the prompt of 4"
                       " tokens ['When', 'John', 'and', 'Mary']; use 0..3 or -4..-1")
    message = resolve_error(ids_task(default={"A": -5}), tok)
    assert message.startswith("t.yaml: prompts[1]: labels (the task's default): A: position -5"
                              " is outside the prompt of 4 tokens")


def twice(labels: dict) -> dict:
    """A task of two copies of CLEAN with `labels` on both."""
    return task([{"clean": CLEAN, "corrupt": CORRUPT, "labels": dict(labels)} for _ in "ab"])


def test_two_labels_on_one_position_are_named(tok):
    message = resolve_error(twice({**LABELS, "S1+1": 4, "X": ["went", 1]}), tok)
    assert message == ("t.yaml: prompts[0]: labels: S1+1 and X both name position 4 ['went'];"
                       " give each label its own position")
    message = resolve_error(ids_task([{"A": 0, "B": -5}, {"A": 0, "B": -1}]), tok)
    assert message.startswith("t.yaml: prompts[0]: labels: A and B both name position 0")


def test_a_word_not_found_or_ambiguous_is_named(tok):
    two = twice(LABELS)
    message = resolve_error(with_labels({**LABELS, "IO": "mary"}, 1, two), tok)
    assert message.startswith("t.yaml: prompts[1]: labels: IO: 'mary' is not a word of the"
                              " clean prompt 'When Mary and John went to the store")
    assert message.endswith("; write it as it appears there (case and punctuation count), or"
                            " give a token position")
    message = resolve_error(with_labels({**LABELS, "S1": "John"}, 0, twice(LABELS)), tok)
    assert message == ("t.yaml: prompts[0]: labels: S1: 'John' occurs 2 times in the clean"
                       " prompt; say which, as [John, 1] .. [John, 2] (or -1 for the last)")
    message = resolve_error(with_labels({**LABELS, "S2": ["John", 3]}, 0, twice(LABELS)), tok)
    assert message == ("t.yaml: prompts[0]: labels: S2: occurrence 3 of 'John', which occurs 2"
                       " times in the clean prompt; use 1..2 or -2..-1")
    message = resolve_error(with_labels({**LABELS, "IO": ["Mary", -2]}, 0, twice(LABELS)), tok)
    assert "occurrence -2 of 'Mary', which occurs once in the clean prompt; use 1..1" in message


def test_a_word_inside_a_token_is_named():
    # Split on spaces only: "John," is one (unknown) token, so "John" ends inside it.
    words = word_tokenizer(split_punctuation=False)
    prompts = [{"clean": "When Mary John, went", "corrupt": "When Anna Paul, went",
                "labels": {"S": "John"}}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "John," is not in the vocabulary
        message = resolve_error(task(prompts), words)
    assert message.startswith("t.yaml: prompts[0]: labels: S: 'John' ends inside a token of the"
                              " clean prompt ['When', 'Mary', '[UNK]', 'went']")
    assert message.endswith("label a word that ends where a token ends, or give a token position")


def test_unequal_clean_and_corrupt_still_name_the_first_prompt(tok):
    data = task()
    data["prompts"][1]["corrupt"] = "When Paul said hi to"
    message = resolve_error(data, tok)
    assert message.startswith("t.yaml: prompts[1]: clean has 9 tokens")
    assert message.endswith("make them tokenise to the same length")


def test_every_message_is_one_line_naming_the_file(tok):
    bad = [with_labels({**LABELS, "IO": "Zed"}), with_labels({**LABELS, "IO": 99}),
           ids_task([{"A": 0, "B": 0}, {"A": 0, "B": 1}])]
    for data in bad:
        message = resolve_error(data, tok)
        assert message.startswith("t.yaml: prompts[") and "\n" not in message


# --------------------------------------------------------------------------- generators


def roles(prompt: dict, order: str, ids: list[int], tokenizer: Tokenizer) -> None:
    """The generated IOI labels land on the tokens they name."""
    labels = prompt["labels"]
    assert tuple(labels) == IOI_LABELS

    def word(position: int) -> str:  # names are single tokens (the generator keeps no other)
        return tokenizer.decode([ids[position]]).strip().lower()

    io, s = prompt["answer"].strip().lower(), prompt["wrong"].strip().lower()
    assert word(labels["IO"]) == io and word(labels["S1"]) == s and word(labels["S2"]) == s
    assert labels["S1+1"] == labels["S1"] + 1 and labels["END"] == len(ids) - 1
    assert labels["S1"] < labels["S2"] and labels["IO"] < labels["S2"]
    assert (labels["IO"] < labels["S1"]) == (order == "ABBA")
    assert len(set(labels.values())) == len(labels)


@pytest.mark.parametrize("t", range(len(IOI_TEMPLATES)))
def test_ioi_labels_every_template_in_both_orders(bpe, t):
    ioi_tok = Tokenizer.from_file(ROOT / "models" / "ioi" / "tokenizer.json")
    cases = [(bpe, {"names": ["John", "Mary", "Anna", "Paul", "Lisa", "Mark", "Emma"],
                    "places": ["store", "school"], "objects": ["drink"]}), (ioi_tok, {})]
    for tokenizer, words in cases:
        params = {"n": 4, "seed": t, "templates": [IOI_TEMPLATES[t]], **words}
        prompts = generate_prompts("ioi", params, tokenizer, tokenizer.vocab_size, "demo")
        for i, prompt in enumerate(prompts):
            order = ("ABBA", "BABA")[i % 2]
            ids = tokenizer.encode(prompt["clean"])
            roles(prompt, order, ids, tokenizer)
            corrupt = tokenizer.encode(prompt["corrupt"])
            for name in ("IO", "S1", "S2"):  # ABC: every name slot changes
                assert corrupt[prompt["labels"][name]] != ids[prompt["labels"][name]]


def test_ioi_template_that_joins_labels_is_refused(bpe):
    params = {"n": 2, "orders": ["BABA"], "names": ["John", "Mary", "Anna", "Paul", "Lisa"],
              "templates": ["When [A] [B] went, [B] said to"]}
    message = error_of(generate_prompts, "ioi", params, bpe, bpe.vocab_size, "x.yaml")
    assert message.startswith("x.yaml: generator: templates[0] (BABA): labels IO and S1+1 fall on"
                              " the same token (2) of 'When ")
    assert message.endswith("put a word between their slots")


def test_greater_than_labels_yy_and_end(bpe):
    params = {"n": 20, "nouns": ["voyage", "siege", "reign"], "centuries": [15, 16, 17]}
    for prompt in generate_prompts("greater-than", params, bpe, bpe.vocab_size, "demo"):
        ids, corrupt = bpe.encode(prompt["clean"]), bpe.encode(prompt["corrupt"])
        labels = prompt["labels"]
        assert list(labels) == ["YY", "END"] and labels["END"] == len(ids) - 1
        yy = len(prompt["wrong"]) - 1  # wrong answers are 00..YY
        assert bpe.decode([ids[labels["YY"]]]) == f"{yy:02d}"
        assert bpe.decode([corrupt[labels["YY"]]]) == "01"
        assert [i for i in range(len(ids)) if ids[i] != corrupt[i]] == [labels["YY"]]
        century = prompt["clean"].split()[-1]
        assert bpe.decode([ids[labels["END"]]]).strip() == century


def test_induction_gives_no_labels():
    prompts = generate_prompts("induction", {"n": 3, "seq_len": 16, "repeats": 1}, None, 100, "d")
    assert all("labels" not in p for p in prompts) and GENERATORS["induction"].labels == ()


def bundled(name: str):
    directory = ROOT / "models" / name
    tokenizer = Tokenizer.from_file(directory / "tokenizer.json")
    config = json.loads((directory / "config.json").read_text())
    return resolve_task(read_task(name), tokenizer, config["d_vocab"], config["n_ctx"]), tokenizer


def test_bundled_ioi_first_prompt_checked_by_hand():
    resolved, tokenizer = bundled("ioi")
    # "Afterwards, Bradley and Benjamin went to the station. Benjamin gave a drink to" -> " Bradley"
    assert render_prompt(resolved, 0, tokenizer) == (
        "<bos>|afterwards|,|bradley(IO)|and|benjamin(S1)|went(S1+1)|to|the|station|.|"
        "benjamin(S2)|gave|a|drink|to(END)")
    assert resolved.labels[0] == {"IO": 3, "S1": 5, "S1+1": 6, "S2": 11, "END": 15}
    assert tokenizer.token_strings(resolved.answers[0]) == ["bradley"]
    # the second prompt is BABA: the subject first
    assert render_prompt(resolved, 1, tokenizer).startswith(
        "<bos>|while|richard(S1)|and(S1+1)|patrick(IO)|were|")
    assert all(list(labels) == list(IOI_LABELS) for labels in resolved.labels)


def test_bundled_greater_than_first_prompt_checked_by_hand():
    resolved, tokenizer = bundled("greater-than")
    assert render_prompt(resolved, 0, tokenizer) == (
        "<bos>|the|romance|lasted|from|the|year|15|44(YY)|to|the|year|15(END)")
    assert render_prompt(resolved, 0, tokenizer, run="corrupt") == (
        "<bos>|the|romance|lasted|from|the|year|15|01(YY)|to|the|year|15(END)")
    assert resolved.labels[0] == {"YY": 8, "END": 12}
    assert tokenizer.token_strings(resolved.wrong_answers[0])[-1] == "44"  # 00..44


def test_bundled_demo_prompts_are_labelled_by_word():
    resolved, tokenizer = bundled("demo")
    assert render_prompt(resolved, 0, tokenizer) == (
        "<bos>|when|amy(S1)|and(S1+1)|jacob(IO)|went|to|the|house|,|amy(S2)|gave|a|ring|to(END)")
    for ids, labels, io, s in zip(resolved.clean, resolved.labels, resolved.answers,
                                  resolved.wrong_answers, strict=True):
        assert [ids[labels["IO"]]] == io and ids[labels["S1"]] == ids[labels["S2"]] == s[0]
        assert labels["S1+1"] == labels["S1"] + 1 and labels["END"] == len(ids) - 1


# --------------------------------------------------------------------------- rendering


def test_render_shows_tokens_and_labels(tok, bpe):
    resolved = resolve(task(prepend_bos=True), tok)
    assert render_prompt(resolved, 0, tok) == (
        "<bos>|When|Mary(IO)|and|John(S1)|went(S1+1)|to|the|store|,|John(S2)|gave|a|drink|to(END)")
    assert render_prompt(resolved, 0, tok, run="corrupt").startswith(
        "<bos>|When|Anna(IO)|and|Paul(S1)|")
    assert render_prompts(resolved, tok, limit=None)[1].startswith("[1] <bos>|When|John(S1)|")
    assert len(render_prompts(resolved, tok, limit=1)) == 1
    ids = resolve(ids_task([{"A": 0}, {"A": -1}]), None)
    assert render_prompt(ids, 0) == "2(A)|3|5|4|6" and render_prompt(ids, 1) == "2|4|5|3(A)"
    # a token holding "|" (the BPE's special token) is quoted, so each bare "|" separates
    bos = bpe.bos_id
    text = resolve_task(spec_of(task([{"clean": "When John said", "corrupt": "When Mary said",
                                       "labels": {"S": "John"}}], prepend_bos=True)),
                        bpe, bpe.vocab_size, N_CTX)
    assert text.clean[0][0] == bos
    assert render_prompt(text, 0, bpe) == "'<|endoftext|>'|When| John(S)| said"
    assert error_of(render_prompt, text, 1, bpe) == (
        "t.yaml: no prompt 1: the task has 1; use 0 to 0")


def test_readme_label_examples_are_valid_tasks(tok):
    readme = (ROOT / "tasks" / "README.md").read_text()
    section = readme.split("## Labels", 1)[1].split("\n## ", 1)[0]
    examples = [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]
    assert len(examples) == 2
    bpe = make_bpe()
    first = resolve_task(TaskSpec.from_dict(yaml.safe_load(examples[0]), "README"), bpe,
                         bpe.vocab_size, 64)
    # each label's token ends its word (" and" is three tokens of this BPE: the last is "d")
    for ids, labels, words in zip(first.clean, first.labels, ["went", "and"], strict=True):
        upto = {name: bpe.decode(ids[1:p + 1]) for name, p in labels.items()}
        assert upto["IO"].endswith(" Mary") and upto["S1+1"].endswith(" " + words)
        assert upto["S1"].endswith(" John") and upto["S2"].endswith(", John")
        assert labels["END"] == len(ids) - 1 and labels["S1"] < labels["S2"]
    second = resolve_task(TaskSpec.from_dict(yaml.safe_load(examples[1]), "README"), None, 4, 8)
    assert second.labels == [{"FIRST": 1, "LAST": 3}] * 2


# --------------------------------------------------------------------------- fuzz

NAMES = st.from_regex(LABEL_NAME, fullmatch=True).filter(
    lambda n: len(n) <= MAX_LABEL_CHARS and n.casefold() != "other")
FUZZ = dict(deadline=None, database=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@st.composite
def labelled_id_tasks(draw):
    """Token-id prompts of random lengths with random labels written as positive or negative
    positions; returns the task mapping and the expected `Task.labels` (BOS counted)."""
    lengths = draw(st.lists(st.integers(2, 9), min_size=1, max_size=4))
    names = draw(st.lists(NAMES, min_size=1, max_size=min(lengths), unique=True))
    bos = draw(st.booleans())
    prompts, expected = [], []
    for length in lengths:
        clean = draw(st.lists(st.integers(2, D_VOCAB - 1), min_size=length, max_size=length))
        where = draw(st.permutations(range(length)))[: len(names)]
        written = {n: (p if draw(st.booleans()) else p - length)
                   for n, p in zip(names, where, strict=False)}
        prompts.append({"clean": clean, "corrupt": [t % (D_VOCAB - 2) + 2 for t in clean[::-1]],
                        "labels": written})
        expected.append({n: p + bos for n, p in zip(names, where, strict=False)})
    return {"threshold": 0.1, "ablation": "zero", "prepend_bos": bos, "prompts": prompts}, expected


@given(case=labelled_id_tasks())
@settings(max_examples=150, **FUZZ)
def test_fuzz_valid_labels_land_where_written(case):
    data, expected = case
    resolved = resolve_task(spec_of(data), word_tokenizer(), D_VOCAB, N_CTX)
    assert resolved.labels == expected
    assert all(list(labels) == list(expected[0]) for labels in resolved.labels)


@st.composite
def words_with_labels(draw):
    """A text prompt of known words, some repeated, labelled by [word, occurrence]."""
    vocabulary = ["Mary", "John", "and", "went", "to", "the", "store", "gave", "a", "drink"]
    words = draw(st.lists(st.sampled_from(vocabulary), min_size=1, max_size=12))
    names = draw(st.lists(NAMES, min_size=1, max_size=len(words), unique=True))
    chosen = draw(st.permutations(range(len(words))))[: len(names)]
    labels, expected = {}, {}
    for name, index in zip(names, chosen, strict=False):
        word = words[index]
        nth = words[: index + 1].count(word)
        total = words.count(word)
        labels[name] = draw(st.sampled_from([[word, nth], [word, nth - total - 1]]
                                            + ([word] if total == 1 else [])))
        expected[name] = index
    return " ".join(words), labels, expected


@given(case=words_with_labels())
@settings(max_examples=150, **FUZZ)
def test_fuzz_word_labels_find_their_occurrence(case):
    text, labels, expected = case
    data = {"threshold": 0.1, "ablation": "zero", "prompts": [{"clean": text, "labels": labels}]}
    resolved = resolve_task(spec_of(data), word_tokenizer(), D_VOCAB, N_CTX)
    assert resolved.labels == [expected]


JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-20, 20), st.floats(allow_nan=True),
              st.text(max_size=8), st.sampled_from(["Mary", "John", "other", "S1+1", "", " "])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(NAMES, st.text(max_size=5), st.integers()),
                                            inner, max_size=3)),
    max_leaves=8,
)


NEAR_VALID = st.dictionaries(  # mostly valid mappings: collisions, ranges, words
    NAMES, st.one_of(st.integers(-4, 3), st.sampled_from(
        ["Mary", "John", "said", "to", ["John", 2], ["hi", -1], ["Mary", 1]])),
    min_size=1, max_size=5)


@given(labels=st.one_of(JUNK, NEAR_VALID), where=st.sampled_from(["top", "first", "second"]),
       text=st.booleans())
@settings(max_examples=300, **FUZZ)
def test_fuzz_any_labels_key_resolves_or_fails_in_one_line(labels, where, text):
    """Whatever `labels:` holds, the task either resolves with a label per name on every prompt
    or fails with one TaskError line naming the file: never another exception."""
    data = task() if text else ids_task()
    for prompt in data["prompts"]:
        prompt.pop("labels", None)
    if where == "top":
        data["labels"] = labels
    else:
        data["prompts"][0 if where == "first" else 1]["labels"] = labels
    try:
        resolved = resolve_task(TaskSpec.from_dict(data, "t.yaml"), word_tokenizer(), D_VOCAB,
                                N_CTX)
    except TaskError as error:
        message = str(error)
        assert "\n" not in message and message.startswith("t.yaml: "), message
        return
    assert where == "top" and isinstance(labels, dict) and labels  # one prompt alone cannot
    assert resolved.labels is not None
    for ids, found in zip(resolved.clean, resolved.labels, strict=True):
        assert list(found) == list(labels) and len(set(found.values())) == len(found)
        assert all(0 <= p < len(ids) for p in found.values())
