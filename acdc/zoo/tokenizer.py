"""The zoo's word-level tokenizers, built in code (no download), and text encoding.

A zoo tokenizer is a Hugging Face `tokenizers.Tokenizer` with a `WordLevel` model: text is
lowercased and split on whitespace and punctuation, every word of the recipe's vocabulary is
one token and anything else is `<unk>`. The vocabulary's order fixes the token ids, and so the
shape of the embedding a seeded model starts from: recipes build it from their word lists in
a fixed order (`build_vocabulary`). The checkpoint carries the tokenizer as `tokenizer.json`.

>>> tokenizer = build_tokenizer(build_vocabulary(SPECIAL_TOKENS, split_words("When [A] met Mary.")))
>>> tokenizer.encode("when mary met", add_special_tokens=False).tokens
['when', 'mary', 'met']
"""

from __future__ import annotations

import re

import torch

from acdc.errors import AcdcError

BOS, PAD, UNK = "<bos>", "<pad>", "<unk>"
SPECIAL_TOKENS = (BOS, PAD, UNK)
_WORD = re.compile(r"\w+|[^\w\s]+")  # what the Whitespace pre-tokenizer splits on
_SLOT = re.compile(r"\[[A-Z]+\]")  # a template slot such as [A] or [PLACE]


def build_tokenizer(vocabulary: list[str], digit_pairs: bool = False,
                    specials: tuple[str, ...] = SPECIAL_TOKENS):
    """A word-level `tokenizers.Tokenizer`: lowercase, split on whitespace and punctuation.

    The `specials` (by default `<bos>`, `<pad>` and `<unk>`) are special tokens; " mary" and
    "mary" both encode to the single token "mary". With `digit_pairs`, runs of digits are also
    split into pairs, so " 1732" is the two tokens "17" and "32".
    """
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as RawTokenizer

    vocab = {word: i for i, word in enumerate(vocabulary)}
    tokenizer = RawTokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    if digit_pairs:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Whitespace(),
            pre_tokenizers.Split(Regex(r"\d\d"), behavior="isolated"),
        ])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer.add_special_tokens(list(specials))
    return tokenizer


def split_words(*texts: str) -> list[str]:
    """The lowercase words (as the tokenizer splits them) of `texts`, slots like [A] removed,
    each once, in order of first appearance."""
    out: list[str] = []
    for text in texts:
        for word in _WORD.findall(_SLOT.sub(" ", text).lower()):
            if word not in out:
                out.append(word)
    return out


def build_vocabulary(specials: tuple[str, ...], *groups: list[str]) -> list[str]:
    """`specials`, then every group's words not already listed, in order."""
    out = list(specials)
    for group in groups:
        out += [w for w in group if w not in out]
    return out


def encode_texts(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [batch, pos] with <bos> first and <pad> after, each row's last position)."""
    bos, pad = tokenizer.token_to_id(BOS), tokenizer.token_to_id(PAD)
    rows = [[bos, *e.ids] for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    return tokens, torch.tensor([len(r) - 1 for r in rows])


def single_id(tokenizer, text: str) -> int:
    """The id of `text`, which must be one token (a leading space is dropped by the split)."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) != 1:
        raise AcdcError(f"zoo: {text!r} is not one token for the zoo tokenizer")
    return ids[0]
