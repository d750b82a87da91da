"""Built-in prompt generators: the IOI, greater-than and induction data of the ACDC paper.

A task file may give `generator:` instead of `prompts:`. The generator mapping holds every
parameter of the data (kind, number of prompts, seed, templates, word lists, ranges), so a
copy of a bundled task with edited lists is a new task. Generation needs the model's
tokenizer, because what a "name" or a "year" is depends on it: the generators keep only the
words that are single tokens for the tokenizer in use (for a byte-level BPE such as GPT-2's
that is the word with its leading space, `" John"`; for a word-level tokenizer a word that
becomes the unknown token does not count), and fail with one line naming the list when too
few remain.

`registry.generate_prompts` returns plain prompt dictionaries in the task-file schema (`clean`,
`corrupt`, `answer`, `wrong`, `positions`, `labels`); `acdc.core.tasks.resolving.resolve_task`
then checks and tokenises them exactly like hand-written prompts. The same function serves
the model zoo for training data. Output is a function of the parameters (the seed included)
and the tokenizer alone.

- `ioi` (Wang et al. 2022): "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to"
  -> " A". Both name orders (ABBA as written, BABA with the first two names swapped); the
  corrupt prompt fills the three name slots with three other, distinct names (ABC). Labels
  IO, S1, S1+1, S2 and END.
- `greater-than` (Hanna et al. 2023): "The [NOUN] lasted from the year [CC][YY] to the year
  [CC]" -> a two-digit year above YY; the corrupt prompt has "01" for YY. Answers are the
  two-digit tokens above YY, wrong answers those at or below it (for `prob_diff`). Labels YY
  and END.
- `induction`: random token ids holding repeated spans; the metric positions are the tokens
  whose next token follows from an earlier occurrence; the corrupt batch is the clean batch
  with its sequences permuted so that none keeps its own. No labels.

The package is split by concept, so that adding a generator touches one module and the
registry: `params` (what a generator is, its limits and the checks of its parameters),
`words` (the default word lists and templates), `tokens` (what the data asks of a tokenizer),
one module per kind (`ioi`, `greater_than`, `induction`) and `registry` (kinds by name,
checking a `generator:` mapping, generating). `tasks/README.md` documents every parameter
and rule.

>>> from acdc.core.generators.registry import generate_prompts
>>> prompts = generate_prompts("induction", {"n": 3, "seq_len": 16, "repeats": 1},
...                            tokenizer=None, d_vocab=100, source="demo")
>>> len(prompts), len(prompts[0]["clean"]), all(p["clean"] != p["corrupt"] for p in prompts)
(3, 16, True)
"""
