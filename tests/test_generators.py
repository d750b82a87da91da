"""Built-in generators: determinism, corruption properties, tokenisation filtering, messages.

Two tokenizers: the bundled demo model's word-level one, and a small byte-level BPE trained
here in a few milliseconds, in which " John" is one token but " Zebulon" is two (the bare
"Zebulon" is one), "00".."99" are tokens, and only the years of centuries 15-17 tokenise as
" CC" + "YY".
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from conftest import error_of
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from acdc.core.generators.induction import derangement, predictable_positions
from acdc.core.generators.registry import GENERATORS, check_generator, generate_prompts
from acdc.core.tokenizer import Tokenizer

DEMO_TOKENIZER = Path(__file__).resolve().parent.parent / "models" / "demo" / "tokenizer.json"
COMMON = ["John", "Mary", "Anna", "Paul", "Lisa", "Mark", "Emma"]
RARE = ["Zebulon", "Quintavius", "Xanthippe"]
NOUNS = ["voyage", "siege", "reign"]


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return make_bpe()


def make_bpe() -> Tokenizer:
    """The byte-level BPE of these tests (no unknown token; `<|endoftext|>` special)."""
    corpus = []
    for _ in range(50):
        corpus += [f"When {n} went to the store, {n} gave a drink to the school." for n in COMMON]
        corpus += [f"The {noun} lasted from the year to the year" for noun in NOUNS]
        corpus += [f"{n} said hello." for n in COMMON[:5]]  # bare "John" too, not "Mark"
    corpus += [f"{n} once." for n in RARE]
    corpus += [f"the year {cc}" for cc in (15, 16, 17) for _ in range(40)]
    corpus += [" ".join(f"-{k:02d}" for k in range(100))] * 30
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"], show_progress=False,
    )
    raw.train_from_iterator(corpus, trainer)
    return Tokenizer(raw, "test-bpe")


@pytest.fixture(scope="module")
def demo() -> Tokenizer:
    return Tokenizer.from_file(DEMO_TOKENIZER)


def gen(kind: str, tokenizer, d_vocab: int = 1000, **params) -> list[dict]:
    return generate_prompts(kind, params, tokenizer, d_vocab, "t.yaml")


def words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def test_bpe_fixture_has_the_intended_tokens(bpe):
    assert len(bpe.encode(" John")) == 1 and len(bpe.encode(" Zebulon")) == 2
    assert len(bpe.encode("Zebulon")) == 1  # bare it is one token: the leading space matters
    assert bpe.unk_id is None and bpe.bos_id is not None
    assert bpe.encode(" 1732") == bpe.encode(" 17") + bpe.encode("32")
    assert len(bpe.encode(" 1132")) != 2


def test_unk_id(demo, bpe):
    assert demo.unk_id == demo.encode("zebulon")[0] == demo.backend.token_to_id("<unk>")
    assert bpe.unk_id is None


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(("kind", "params"), [
    ("ioi", {"n": 12, "names": COMMON + RARE}),
    ("greater-than", {"n": 12, "nouns": NOUNS}),
    ("induction", {"n": 6, "seq_len": 32}),
])
def test_same_seed_same_prompts(bpe, kind, params):
    first = gen(kind, bpe, **params)
    assert first == gen(kind, bpe, **params)
    assert len(first) == params["n"]
    assert first != gen(kind, bpe, **params, seed=1)


# --------------------------------------------------------------------------- ioi


def test_ioi_prompts_and_abc_corruption(bpe):
    prompts = gen("ioi", bpe, n=40, names=COMMON + RARE)
    orders = []
    for p in prompts:
        io, s = p["answer"][1:], p["wrong"][1:]
        assert p["answer"] == f" {io}" and p["wrong"] == f" {s}" and io != s
        clean, corrupt = words(p["clean"]), words(p["corrupt"])
        assert clean.count(io) == 1 and clean.count(s) == 2
        assert clean.index(s) < len(clean) - 1 - clean[::-1].index(s)  # S named, then repeated
        orders.append("ABBA" if clean.index(io) < clean.index(s) else "BABA")
        # same template, place and object: the prompts differ exactly at the three name slots
        differ = [i for i, (a, b) in enumerate(zip(clean, corrupt, strict=False)) if a != b]
        assert len(clean) == len(corrupt) and len(differ) == 3
        assert sorted(clean[i] for i in differ) == sorted([io, s, s])
        fresh = [corrupt[i] for i in differ]
        assert len(set(fresh)) == 3 and not {io, s} & set(fresh)  # ABC: three new names
        assert len(bpe.encode(p["clean"])) == len(bpe.encode(p["corrupt"]))
        assert not set(RARE) & set(clean + corrupt)  # " Zebulon" is two tokens: left out
    assert orders == ["ABBA", "BABA"] * 20


def test_ioi_orders_and_templates_are_parameters(bpe):
    template = "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to"
    prompts = gen("ioi", bpe, n=6, names=COMMON, orders=["BABA"], templates=[template],
                  places=["store"], objects=["drink"])
    for p in prompts:
        s, io = p["wrong"][1:], p["answer"][1:]
        assert p["clean"] == f"When {s} and {io} went to the store, {s} gave a drink to"


def test_ioi_too_few_single_token_names(bpe):
    message = error_of(gen, "ioi", bpe, names=COMMON[:3] + RARE)
    assert message == (
        "t.yaml: generator: names: only 3 of 6 names are single tokens for the tokenizer"
        " (test-bpe), at least 5 needed; for example ' Zebulon' -> ['Ġ', 'Zebulon'];"
        " ' Quintavius' -> ['Ġ', 'Quintavius']; ' Xanthippe' -> ['Ġ', 'Xanthippe'];"
        " add names that are single tokens for it"
    )


def test_ioi_name_at_the_start_needs_the_bare_form_too(bpe):
    # " Mark" is one token but "Mark" is not: a template that starts with a name leaves it out
    assert len(bpe.encode(" Mark")) == 1 and len(bpe.encode("Mark")) > 1
    assert all(len(bpe.encode(n)) == 1 for n in COMMON[:5])
    template = "[A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to"
    prompts = gen("ioi", bpe, n=20, names=COMMON, templates=[template])
    used = {w for p in prompts for w in words(p["clean"] + " " + p["corrupt"]) if w in COMMON}
    assert used == set(COMMON[:5])
    assert len({p["clean"].split()[0] for p in prompts}) > 1
    everywhere_spaced = gen("ioi", bpe, n=40, names=COMMON)
    assert {"Mark", "Emma"} & {w for p in everywhere_spaced for w in words(p["clean"])}


def test_ioi_word_level_tokenizer_unknown_words(demo):
    # the demo vocabulary is lowercase words; "quintavius" becomes <unk> and is left out
    names = ["mary", "john", "anna", "paul", "lisa", "quintavius"]
    prompts = gen("ioi", demo, n=10, names=names, templates=[
        "when [A] and [B] went to the [PLACE] , [B] gave a [OBJECT] to"], places=["store"],
        objects=["drink", "spaceship"])
    text = " ".join(p["clean"] + " " + p["corrupt"] for p in prompts)
    assert "quintavius" not in text and "spaceship" not in text
    message = error_of(gen, "ioi", demo, n=4, names=names, places=["store"], objects=["drink"])
    assert message.startswith("t.yaml: generator: templates[")
    assert "the tokenizer (" in message and "does not know" in message


def test_ioi_needs_a_tokenizer():
    message = error_of(gen, "ioi", None)
    assert message == (
        "t.yaml: generator: the ioi generator writes text, but the model has no tokenizer;"
        " use a model with tokenizer.json"
    )


# --------------------------------------------------------------------------- greater-than


def test_greater_than_prompts(bpe):
    prompts = gen("greater-than", bpe, n=30, nouns=NOUNS + ["abduction"])
    for p in prompts:
        m = re.fullmatch(r"The (\w+) lasted from the year (\d\d)(\d\d) to the year (\d\d)",
                         p["clean"])
        assert m is not None, p["clean"]
        noun, cc, yy, cc_again = m.groups()
        assert noun in NOUNS and cc == cc_again and cc in ("15", "16", "17")
        assert 2 <= int(yy) <= 98 and yy != "01"
        assert p["corrupt"] == p["clean"].replace(f" {cc}{yy} ", f" {cc}01 ")  # YY -> 01 only
        assert p["answer"] == [f"{k:02d}" for k in range(int(yy) + 1, 100)]
        assert p["wrong"] == [f"{k:02d}" for k in range(int(yy) + 1)]
        assert len(bpe.encode(p["clean"])) == len(bpe.encode(p["corrupt"]))


def test_greater_than_no_usable_year(bpe):
    message = error_of(gen, "greater-than", bpe, nouns=NOUNS, centuries=[11, 12])
    assert message.startswith(
        "t.yaml: generator: centuries: no year tokenises as ' CC' + 'YY' (two single tokens,"
        " also with YY = 01) for the tokenizer (test-bpe), for example ' 1102' -> ["
    )


def test_greater_than_needs_two_digit_tokens(demo):
    message = error_of(gen, "greater-than", demo)
    assert message.startswith(
        "t.yaml: generator: the tokenizer (" )
    assert "must have each two-digit year '00'..'99' as one token" in message
    assert "100 are not, for example '00' -> ['<unk>']" in message


def test_greater_than_nouns_filtered(bpe):
    assert "nouns: only 0 of 2 nouns are single tokens" in error_of(
        gen, "greater-than", bpe, nouns=["abduction", "zeppelin"])


# --------------------------------------------------------------------------- induction


def test_predictable_positions_rule():
    # 5 6 7 | 9 | 5 6 7 8: after the repeat, 5 -> 6 and 6 -> 7 follow; 7 was followed by 9
    assert predictable_positions([5, 6, 7, 9, 5, 6, 7, 8]) == [4, 5]
    # 1 is followed by 2 and then by 3: ambiguous from then on
    assert predictable_positions([1, 2, 1, 3, 1, 2]) == []
    assert predictable_positions([4, 4, 4]) == [1]  # the last token predicts nothing


def test_derangement_has_no_fixed_point():
    rng = random.Random(0)
    for n in (2, 3, 10):
        for _ in range(20):
            p = derangement(n, rng)
            assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))


def test_induction_prompts(demo):
    prompts = gen("induction", demo, d_vocab=91, n=12, seq_len=40, repeats=2,
                  span_length=[3, 6], token_min=0, exclude=[10, 11])
    special = {demo.bos_id, demo.unk_id, 10, 11}
    clean = [p["clean"] for p in prompts]
    for i, p in enumerate(prompts):
        tokens = p["clean"]
        assert len(tokens) == len(p["corrupt"]) == 40
        assert all(0 <= t < 91 and t not in special for t in tokens)
        # the corrupt sequence is another prompt's clean one, never its own
        sources = [j for j, c in enumerate(clean) if c == p["corrupt"]]
        assert sources and i not in sources
        # every position predicts its next token from every earlier occurrence
        assert p["positions"] and p["positions"] == sorted(set(p["positions"]))
        for q in p["positions"]:
            assert q + 1 < len(tokens)
            earlier = [r for r in range(q) if tokens[r] == tokens[q]]
            assert earlier and all(tokens[r + 1] == tokens[q + 1] for r in earlier)
        assert p["positions"] == predictable_positions(tokens)
        assert len(p["positions"]) >= 2  # at least one span of >= 3 tokens was repeated
    assert sorted(map(tuple, clean)) == sorted(tuple(p["corrupt"]) for p in prompts)


def test_induction_without_tokenizer_uses_the_range():
    prompts = gen("induction", None, d_vocab=50, n=3, seq_len=20, repeats=1,
                  span_length=[2, 4], token_min=5, token_max=30)
    assert all(5 <= t <= 30 for p in prompts for t in p["clean"])


@pytest.mark.parametrize(("params", "expected"), [
    ({"token_max": 50}, "token_max: 50 is outside the model's vocabulary [0, 50)"),
    ({"token_min": 40, "token_max": 45},
     "token_min..token_max leaves 6 token ids after leaving out special tokens and exclude,"
     " at least 16 needed"),
    ({"seq_len": 20}, "seq_len: 20 tokens cannot hold repeats: 2 spans of up to 8 tokens"),
    ({"token_min": 9, "token_max": 3}, "token_max: 3 is below token_min 9"),
])
def test_induction_parameter_problems(params, expected):
    message = error_of(gen, "induction", None, d_vocab=50, **params)
    assert message.startswith(f"t.yaml: generator: {expected}"), message


# --------------------------------------------------------------------------- checking


def test_defaults_are_complete_and_valid():
    for generator in GENERATORS.values():
        defaults = generator.defaults()
        assert list(defaults) == ["kind", *generator.params]
        assert check_generator(defaults, "x") == defaults


@pytest.mark.parametrize(("data", "expected"), [
    ([1], "expected a mapping with kind: and the generator's parameters, got a list"),
    ({"n": 3}, "missing key 'kind'; use one of: ioi, greater-than, induction"),
    ({"kind": "iio"}, "kind: unknown generator 'iio' (did you mean 'ioi'?); use one of:"),
    ({"kind": "ioi", "nmes": []}, "unknown key 'nmes' for kind ioi (did you mean 'names'?);"
     " valid keys: kind, n, seed, orders, templates, names, places, objects"),
    ({"kind": "ioi", "n": "10"}, "n: expected a whole number, got '10'"),
    ({"kind": "ioi", "n": 0}, "n: must be from 1 to 10,000, got 0"),
    ({"kind": "ioi", "names": "John"}, "names: expected a list of names, got 'John'"),
    ({"kind": "ioi", "names": ["A", "B"]}, "names: has 2 names, needs at least 5"),
    ({"kind": "ioi", "names": ["A", "B", 3, "D", "E"]},
     "names[2]: expected a word (a string), got 3"),
    ({"kind": "ioi", "names": ["A", "B", " C", "D", "E"]},
     "names[2]: ' C' is empty or has spaces around it"),
    ({"kind": "ioi", "places": ["store", "store"]},
     "places[1]: 'store' is already places[0]; list each once"),
    ({"kind": "ioi", "orders": ["ABAB"]}, "orders[0]: unknown order 'ABAB'; use ABBA or BABA"),
    ({"kind": "ioi", "templates": ["When [A] and [B] went, [B] gave it to [A]"]},
     "templates[0]: ends with [A]; end the template just before the indirect object"),
    ({"kind": "ioi", "templates": ["When [A] and [C] went, [B] gave it to"]},
     "templates[0]: unknown slot [C]; the slots are [A], [B], [PLACE], [OBJECT]"),
    ({"kind": "ioi", "templates": ["When [B] and [A] went, [B] gave it to"]},
     "templates[0]: has name slots [B] [A] [B]; write [A] (the indirect object) and [B]"),
    ({"kind": "greater-than", "templates": ["The [NOUN] lasted from [CC][YY] to [CC]!"]},
     "templates[0]: needs one [NOUN], one ' [CC][YY]' (a year after a space)"),
    ({"kind": "greater-than", "yy_range": [5, 99]}, "yy_range[1]: must be from 0 to 98, got 99"),
    ({"kind": "greater-than", "yy_range": [50, 10]}, "yy_range: first 50 is greater than last 10"),
    ({"kind": "greater-than", "centuries": [9]}, "centuries[0]: must be from 10 to 99, got 9"),
    ({"kind": "induction", "n": 1}, "n: must be from 2 to 10,000, got 1"),
    ({"kind": "induction", "span_length": 3},
     "span_length: expected [first, last] (two whole numbers), got 3"),
    ({"kind": "induction", "token_max": "all"}, "token_max: expected a whole number, got 'all'"),
    # sizes nobody can run, refused before generating anything
    ({"kind": "induction", "n": 100_000_000},
     "n: must be from 2 to 10,000 (more prompts than any run can use), got 100000000"),
    ({"kind": "ioi", "seed": 2**32}, "seed: must be from 0 to 4,294,967,295 (2**32 - 1), got"),
    ({"kind": "induction", "seq_len": 10**6},
     "seq_len: must be from 4 to 65,536 (longer than any model's context), got 1000000"),
    ({"kind": "induction", "n": 10_000, "seq_len": 300},
     "n x seq_len is 10,000 x 300 = 3,000,000 tokens, more than the 1,000,000 a run can hold;"
     " lower n or seq_len"),
    ({"kind": "ioi", "names": [f"n{i}" for i in range(1001)]},
     "names: has 1,001 names, more than the 1,000 a generator takes; shorten the list"),
    ({"kind": "ioi", "places": ["x" * 101]}, "places[0]: 101 characters; a word has at most 100"),
    ({"kind": "ioi", "templates": ["When [A] and [B] met, [B] said to" + " x" * 500]},
     "templates[0]: 1,033 characters; a template has at most 1,000 (one prompt's text)"),
])
def test_bad_generator_mappings(data, expected):
    message = error_of(check_generator, data, "t.yaml")
    assert message.startswith(f"t.yaml: generator: {expected}"), message


def test_generate_prompts_kind_must_match():
    message = error_of(generate_prompts, "ioi", {"kind": "induction"}, None, 10, "zoo")
    assert message.startswith("zoo: generator: kind 'induction' does not match")


# --------------------------------------------------------------------------- bundled files


@pytest.mark.parametrize("name", ["ioi", "greater-than", "induction"])
def test_bundled_generated_tasks_resolve(bpe, name):
    from acdc.core.tasks.reading import read_task
    from acdc.core.tasks.resolving import resolve_task

    spec = read_task(name)
    assert spec.generator is not None and spec.generator["kind"] == name
    assert spec.model is not None and spec.model.endswith(name)
    task = resolve_task(spec, bpe, d_vocab=bpe.vocab_size, n_ctx=64)
    assert task.n_prompts == spec.n_prompts == {"ioi": 100, "greater-than": 100,
                                                "induction": 40}[name]
    assert all(len(c) == len(k) for c, k in zip(task.clean, task.corrupt, strict=True))


@pytest.mark.hooked_transformer  # conftest's tiny random models (HookedTransformer names)
def test_generated_induction_task_runs_end_to_end(tiny_models):
    from acdc.core.architecture import model_shape
    from acdc.core.loading import LoadedModel
    from acdc.core.models import extract_weights
    from acdc.core.settings import CommonSettings
    from acdc.core.tasks.resolving import resolve_task
    from acdc.core.tasks.spec import TaskSpec
    from acdc.methods.acdc.search import AcdcSettings, run_acdc

    model = tiny_models["attn2"]
    spec = TaskSpec.from_dict({
        "threshold": 0.05, "metric": "nll",
        "generator": {"kind": "induction", "n": 4, "seq_len": 16, "repeats": 1,
                      "span_length": [3, 5]},
    }, "t.yaml")
    task = resolve_task(spec, None, model.cfg.d_vocab, model.cfg.n_ctx)
    loaded = LoadedModel("attn2", extract_weights(model), None, model_shape(model.cfg))
    result = run_acdc(loaded, task, CommonSettings("nll"), AcdcSettings(threshold=0.05))
    assert any(score is not None for score in result.scores)
    assert 0 <= result.n_edges_kept <= len(result.graph.edges)
