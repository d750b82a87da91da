"""Text <-> token ids, for the two kinds of tokenizer a model comes with.

A checkpoint in the project's format carries `tokenizer.json` (Hugging Face `tokenizers`
format, read without transformers); a Hugging Face directory carries whatever transformers'
`AutoTokenizer` reads. `Tokenizer` gives both one interface, never adding special tokens
implicitly (a task's prompts say where BOS goes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from acdc.errors import ModelError

HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


class Tokenizer:
    """Text <-> token ids, with no special tokens added implicitly.

    Wraps either a `tokenizers.Tokenizer` (the project's `tokenizer.json`) or a Hugging Face
    `PreTrainedTokenizer`. `bos_id` is None when the vocabulary has no BOS token.
    """

    def __init__(self, backend: Any, source: str):
        self.backend = backend
        self.source = source
        self._is_fast_file = not hasattr(backend, "convert_ids_to_tokens")

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as RawTokenizer

        try:
            return cls(RawTokenizer.from_file(str(path)), str(path))
        except Exception as error:  # tokenizers raises a bare Exception on bad files
            raise ModelError(f"{path}: not a valid tokenizers JSON file ({error})") from None

    def encode(self, text: str) -> list[int]:
        if self._is_fast_file:
            return self.backend.encode(text, add_special_tokens=False).ids
        return self.backend.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids))

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each id's own string, for error messages that show a tokenisation."""
        if self._is_fast_file:
            return [self.backend.id_to_token(i) for i in ids]
        return self.backend.convert_ids_to_tokens(list(ids))

    @property
    def vocab_size(self) -> int:
        if self._is_fast_file:
            return self.backend.get_vocab_size(with_added_tokens=True)
        return len(self.backend)

    @property
    def bos_id(self) -> int | None:
        if self._is_fast_file:
            for token in ("<bos>", "<s>", "<|endoftext|>", "[BOS]"):
                found = self.backend.token_to_id(token)
                if found is not None:
                    return found
            return None
        return self.backend.bos_token_id

    @property
    def unk_id(self) -> int | None:
        """The id that unknown text becomes (word-level vocabularies), or None if there is none."""
        if self._is_fast_file:
            model = self.backend.model
            token = getattr(model, "unk_token", None)
            if token is None and not hasattr(model, "unk_token"):  # Unigram keeps an id only
                found = json.loads(self.backend.to_str()).get("model", {}).get("unk_id")
                return found if isinstance(found, int) else None
            return self.backend.token_to_id(token) if token else None
        return self.backend.unk_token_id

    def unknown_words(self, text: str) -> list[str]:
        """The pieces of `text` that become the unknown token, one per unknown token, in order;
        the unknown token's own text, written as such, does not count. Empty for vocabularies
        without an unknown token (byte-level BPE).

        >>> from tokenizers import Tokenizer as Raw, models, pre_tokenizers
        >>> raw = Raw(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
        >>> raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        >>> Tokenizer(raw, "demo").unknown_words("a zzyzx a [UNK]")
        ['zzyzx']
        """
        unk = self.unk_id
        if unk is None:
            return []
        literal = self.token_strings([unk])[0]
        words = [text[start:end].strip() or text[start:end]
                 for token, (start, end) in self._with_offsets(text) if token == unk]
        return [word for word in words if word != literal]

    def _with_offsets(self, text: str) -> list[tuple[int, tuple[int, int]]]:
        """(id, (start, end)) of each token of `text`, the span in characters of `text`."""
        if self._is_fast_file:
            encoding = self.backend.encode(text, add_special_tokens=False)
            return list(zip(encoding.ids, encoding.offsets, strict=True))
        if getattr(self.backend, "is_fast", False):
            found = self.backend(text, add_special_tokens=False, return_offsets_mapping=True)
            return list(zip(found["input_ids"], map(tuple, found["offset_mapping"]), strict=True))
        # A Python ("slow") tokenizer has no offsets: each whitespace-separated word alone.
        out: list[tuple[int, tuple[int, int]]] = []
        position = 0
        for word in text.split():
            start = text.index(word, position)
            position = start + len(word)
            out += [(token, (start, position)) for token in self.encode(word)]
        return out


def hf_directory_tokenizer(directory: Path) -> Tokenizer | None:
    """The tokenizer saved in a Hugging Face directory (transformers reads it), or None when
    the directory has no tokenizer files."""
    if not any((directory / name).is_file() for name in HF_TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return Tokenizer(AutoTokenizer.from_pretrained(str(directory)), str(directory))
