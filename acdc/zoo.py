"""The project's own small models, trained reproducibly on the CPU by the project's own code.

A zoo entry is a `Recipe`: the `HookedTransformerConfig` keyword arguments of the model, the
word lists and templates of its toy task, and the optimiser settings. `train_model` builds the
tokenizer in code (a word-level vocabulary, no download), trains the model from a seeded
initialisation and writes a checkpoint in the project's format (`config.json`,
`model.safetensors`, `tokenizer.json`) that `acdc.models.load_model` reads. `evaluate_model`
measures top-1 accuracy of a checkpoint on held-out prompts.

The one entry so far, `demo`, is a 2-layer transformer trained on a word-level
indirect-object-identification task: "when mary and john went to the store , john gave a drink
to" -> "mary". Every name appears in training, but a fixed set of name pairs never appears
together in a training prompt; evaluation (and the bundled `tasks/demo.yaml`) uses only those
held-out pairs, so a high accuracy means the model copies the non-repeated name rather than
remembering pairs. The split depends on the recipe alone, not on the training seed.

Training is deterministic: the same recipe, seed and step count give bit-identical weights on
the same machine (CPU, a fixed thread count, deterministic algorithms).

>>> sorted(ZOO)
['demo']
>>> ZOO["demo"].config["n_layers"]
2
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from acdc.errors import AcdcError
from acdc.models import CHECKPOINT_TOKENIZER, build_model, load_model, save_checkpoint

BOS, PAD, UNK = "<bos>", "<pad>", "<unk>"
SPECIAL_TOKENS = (BOS, PAD, UNK)
TRAIN_THREADS = 2


# --------------------------------------------------------------------------- the IOI-like task


@dataclass(frozen=True)
class IoiWords:
    """Word lists and templates of a word-level indirect-object task.

    Each template has the slots {A}, {B} (the two names introduced), {S} (the repeated one),
    {P} (a place) and {O} (an object); the prompt ends where the other name, the indirect
    object, is the next word.
    """

    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]
    templates: tuple[str, ...]
    held_out_pairs: int  # unordered name pairs kept out of training
    split_seed: int = 1234

    def vocabulary(self) -> list[str]:
        """Every word the task can produce, in a fixed order, special tokens first."""
        words: list[str] = list(SPECIAL_TOKENS)
        for word in (*self.names, *self.places, *self.objects,
                     *(w for t in self.templates for w in t.split())):
            if not word.startswith("{") and word not in words:
                words.append(word)
        return words

    def pair_split(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(training pairs, held-out pairs): unordered name pairs, fixed by `split_seed`."""
        pairs = [(a, b) for i, a in enumerate(self.names) for b in self.names[i + 1:]]
        random.Random(self.split_seed).shuffle(pairs)
        return pairs[self.held_out_pairs:], pairs[:self.held_out_pairs]


@dataclass(frozen=True)
class IoiPrompt:
    """One prompt: `text` ends just before `answer` (the indirect object); `wrong` is S."""

    text: str
    answer: str
    wrong: str
    template: int


def ioi_prompt(words: IoiWords, template: int, pair: tuple[str, str], s_first: bool,
               place: str, obj: str, order_swapped: bool = False) -> IoiPrompt:
    """Fill a template. `s_first`: the repeated name is the first one introduced (ABA)."""
    a, b = (pair[1], pair[0]) if order_swapped else pair
    s, io = (a, b) if s_first else (b, a)
    text = words.templates[template].format(A=a, B=b, S=s, P=place, O=obj)
    return IoiPrompt(text, io, s, template)


def sample_prompts(words: IoiWords, pairs: list[tuple[str, str]], n: int,
                   rng: random.Random) -> list[IoiPrompt]:
    """`n` prompts drawn uniformly over templates, pairs, name orders, places and objects."""
    return [
        ioi_prompt(words, rng.randrange(len(words.templates)), rng.choice(pairs),
                   rng.random() < 0.5, rng.choice(words.places), rng.choice(words.objects),
                   rng.random() < 0.5)
        for _ in range(n)
    ]


def corrupt_prompt(words: IoiWords, prompt: IoiPrompt, rng: random.Random) -> str:
    """ABC corruption: the three name slots get three new, different names."""
    clean = prompt.text.split()
    used = {w for w in clean if w in words.names}
    fresh = rng.sample([n for n in words.names if n not in used], 3)
    slots = [i for i, w in enumerate(clean) if w in words.names]
    corrupt = list(clean)
    for slot, name in zip(slots, fresh):
        corrupt[slot] = name
    return " ".join(corrupt)


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """How to build and train one zoo model."""

    name: str
    description: str
    config: dict[str, Any]  # HookedTransformerConfig keyword arguments (d_vocab filled in)
    task: IoiWords
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    eval_prompts: int  # held-out prompts scored by `evaluate_model`
    log_every: int = 50


DEMO_WORDS = IoiWords(
    names=("mary", "john", "anna", "paul", "lisa", "james", "sarah", "david", "laura", "kevin",
           "emma", "thomas", "rachel", "peter", "susan", "george", "alice", "henry", "grace",
           "jacob", "emily", "samuel", "karen", "brian", "kate", "steven", "helen", "mark",
           "linda", "jason", "amy", "eric", "ruth", "adam", "claire", "daniel", "jessica",
           "andrew", "michael", "robert"),
    places=("store", "garden", "restaurant", "school", "hospital", "office", "house", "station"),
    objects=("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"),
    templates=(
        "when {A} and {B} went to the {P} , {S} gave a {O} to",
        "then , {A} and {B} went to the {P} . {S} gave a {O} to",
        "when {A} and {B} got a {O} at the {P} , {S} decided to give it to",
        "while {A} and {B} were working at the {P} , {S} gave a {O} to",
        "after {A} and {B} went to the {P} , {S} handed a {O} to",
        "{A} and {B} went to the {P} . {S} brought a {O} to",
        "friends {A} and {B} found a {O} at the {P} . {S} gave it to",
        "when {A} and {B} arrived at the {P} , {S} sent a {O} to",
        "the {P} was quiet when {A} and {B} came in . {S} passed a {O} to",
        "{A} and {B} were at the {P} . afterwards , {S} showed the {O} to",
    ),
    held_out_pairs=160,
)

ZOO: dict[str, Recipe] = {
    "demo": Recipe(
        name="demo",
        description="2-layer, 4-head transformer with MLPs trained on a word-level IOI task",
        config={
            "n_layers": 2, "n_heads": 4, "d_model": 64, "d_head": 16, "d_mlp": 256,
            "act_fn": "gelu", "normalization_type": "LN", "n_ctx": 32,
            "d_vocab": len(DEMO_WORDS.vocabulary()), "positional_embedding_type": "standard",
            "original_architecture": "circuit-zoo", "model_name": "circuit-demo",
        },
        task=DEMO_WORDS,
        steps=1000,
        batch_size=128,
        lr=1e-3,
        weight_decay=0.01,
        warmup_steps=100,
        eval_prompts=2000,
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or an error that lists the zoo."""
    if name not in ZOO:
        raise AcdcError(f"unknown zoo model {name!r}: choose one of {', '.join(sorted(ZOO))}")
    return ZOO[name]


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer(vocabulary: list[str]):
    """A word-level `tokenizers.Tokenizer`: lowercase, split on whitespace and punctuation.

    `<bos>`, `<pad>` and `<unk>` are special tokens; " mary" and "mary" both encode to the
    single token "mary".
    """
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    vocab = {word: i for i, word in enumerate(vocabulary)}
    tokenizer = RawTokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def _encode_batch(tokenizer, prompts: list[IoiPrompt]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [batch, pos] with <bos> first and <pad> after, last positions, answer ids)."""
    bos, pad = tokenizer.token_to_id(BOS), tokenizer.token_to_id(PAD)
    rows = [[bos, *tokenizer.encode(p.text, add_special_tokens=False).ids] for p in prompts]
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    last = torch.tensor([len(r) - 1 for r in rows])
    answers = torch.tensor([tokenizer.token_to_id(p.answer) for p in prompts])
    return tokens, last, answers


def _answer_logits(model, tokens: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Logits [batch, d_vocab] at each row's last real position (padding is on the right)."""
    logits = model(tokens, return_type="logits")
    return logits[torch.arange(tokens.shape[0]), last]


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainingProgress:
    """Reported every `Recipe.log_every` steps and after the last one."""

    step: int
    steps: int
    loss: float  # mean cross-entropy of the answer over the last `log_every` steps
    elapsed_s: float


ProgressCallback = Callable[[TrainingProgress], None]


@contextmanager
def _deterministic_cpu(seed: int) -> Iterator[None]:
    """Seeded, single-machine-reproducible torch state; restored on exit."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(rng_state)
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def _learning_rate(recipe: Recipe, step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = min(recipe.warmup_steps, max(steps // 10, 1))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item()))


def train_model(name: str, out_dir: str | Path, seed: int = 0, steps: int | None = None,
                on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train zoo model `name` on the CPU and write its checkpoint to `out_dir`.

    Returns a report: the recipe's name, seed, steps, batch size, final training loss,
    held-out accuracy (see `evaluate_model`), training time and the files written.

    >>> report = train_model("demo", "/tmp/demo", steps=10)  # doctest: +SKIP
    >>> report["steps"]  # doctest: +SKIP
    10
    """
    recipe = get_recipe(name)
    steps = recipe.steps if steps is None else steps
    if steps < 1:
        raise AcdcError(f"--steps must be at least 1, got {steps}")
    out_dir = Path(out_dir)
    words = recipe.task
    tokenizer = build_tokenizer(words.vocabulary())
    train_pairs, _ = words.pair_split()
    data_rng = random.Random(seed)
    start = time.perf_counter()
    with _deterministic_cpu(seed):
        model = build_model(recipe.config, seed=seed)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "W_pos" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "W_pos" not in n)]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": recipe.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=recipe.lr, betas=(0.9, 0.98),
        )
        window: list[float] = []
        final_loss = float("nan")
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, step, steps)
            batch = sample_prompts(words, train_pairs, recipe.batch_size, data_rng)
            tokens, last, answers = _encode_batch(tokenizer, batch)
            loss = F.cross_entropy(_answer_logits(model, tokens, last), answers)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            window.append(loss.item())
            done = step + 1
            if done % recipe.log_every == 0 or done == steps:
                final_loss = sum(window) / len(window)
                window.clear()
                if on_progress is not None:
                    on_progress(TrainingProgress(done, steps, final_loss, time.perf_counter() - start))
        model.eval()
    train_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_file = Path(scratch) / CHECKPOINT_TOKENIZER
        tokenizer.save(str(tokenizer_file))
        save_checkpoint(model, out_dir, tokenizer_file=tokenizer_file, config=recipe.config)
    evaluation = evaluate_model(name, out_dir)
    return {
        "model": name, "seed": seed, "steps": steps, "batch_size": recipe.batch_size,
        "final_loss": final_loss, "train_seconds": round(train_s, 1),
        "heldout_accuracy": evaluation["accuracy"], "heldout_logit_diff": evaluation["logit_diff"],
        "heldout_prompts": evaluation["prompts"], "out_dir": str(out_dir),
        "files": {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()},
    }


# --------------------------------------------------------------------------- the demo task


def demo_task_prompts(name: str = "demo", n: int = 24, seed: int = 0) -> list[dict[str, str]]:
    """Clean/corrupt prompt pairs for `tasks/<name>.yaml`, from held-out name pairs only.

    Deterministic. One prompt per template in turn, alternating ABB/BAB name orders; the
    corruption is ABC (three fresh names), so clean and corrupt tokenise to the same length.
    """
    recipe = get_recipe(name)
    words = recipe.task
    _, held_out = words.pair_split()
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        prompt = ioi_prompt(words, i % len(words.templates), rng.choice(held_out), i % 2 == 0,
                            rng.choice(words.places), rng.choice(words.objects), rng.random() < 0.5)
        prompts.append({"clean": prompt.text, "corrupt": corrupt_prompt(words, prompt, rng),
                        "answer": " " + prompt.answer, "wrong": " " + prompt.wrong})
    return prompts


def demo_task_yaml(name: str = "demo", n: int = 24, seed: int = 0) -> str:
    """The text of `tasks/<name>.yaml` (written once and committed)."""
    lines = [
        f"name: {name}",
        "description: word-level indirect-object identification on the bundled 2-layer demo model",
        f"model: ../models/{name}",
        "metric: kl",
        "threshold: 0.01",
        "ablation: corrupt",
        "seed: 0",
        "prepend_bos: true",
        "positions: last",
        f"# generated by acdc.zoo.demo_task_yaml(n={n}, seed={seed}); name pairs held out of training",
        "prompts:",
    ]
    for p in demo_task_prompts(name, n, seed):
        lines += [f'  - clean: "{p["clean"]}"', f'    corrupt: "{p["corrupt"]}"',
                  f'    answer: "{p["answer"]}"', f'    wrong: "{p["wrong"]}"']
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- evaluation


def heldout_prompts(name: str, n: int | None = None, seed: int = 0) -> list[IoiPrompt]:
    """`n` prompts built only from the name pairs the model never saw together in training."""
    recipe = get_recipe(name)
    _, held_out = recipe.task.pair_split()
    return sample_prompts(recipe.task, held_out, recipe.eval_prompts if n is None else n,
                          random.Random(seed))


@torch.no_grad()
def evaluate_model(name: str, checkpoint_dir: str | Path) -> dict[str, Any]:
    """Top-1 accuracy of a checkpoint on zoo model `name`'s held-out prompts.

    Returns `accuracy` (the answer is the arg-max over the whole vocabulary), `logit_diff`
    (mean logit of the answer minus the repeated name) and `prompts` (how many were scored).
    """
    recipe = get_recipe(name)
    loaded = load_model(str(checkpoint_dir))
    if loaded.tokenizer is None:
        raise AcdcError(f"{checkpoint_dir}: no {CHECKPOINT_TOKENIZER}; zoo checkpoints carry one")
    tokenizer = loaded.tokenizer.backend
    prompts = heldout_prompts(name)
    correct, diffs = 0, []
    for start in range(0, len(prompts), 500):
        chunk = prompts[start:start + 500]
        tokens, last, answers = _encode_batch(tokenizer, chunk)
        logits = _answer_logits(loaded.model, tokens, last)
        wrong = torch.tensor([tokenizer.token_to_id(p.wrong) for p in chunk])
        rows = torch.arange(len(chunk))
        correct += int((logits.argmax(-1) == answers).sum())
        diffs.append(logits[rows, answers] - logits[rows, wrong])
    return {
        "model": name, "checkpoint": str(checkpoint_dir), "prompts": len(prompts),
        "accuracy": correct / len(prompts), "logit_diff": float(torch.cat(diffs).mean()),
        "n_params": loaded.shape.n_params, "recipe_steps": recipe.steps,
    }
