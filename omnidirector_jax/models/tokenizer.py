"""Tokenizers for the text encoder: a built-in byte-level one, and `transformers` ones from a folder.

Both return fixed-length (padded, truncated) int32 ids and a boolean mask, so the encoder sees
static shapes under `jit`.

The byte tokenizer follows ByT5's scheme and needs no vocabulary file: a token is a UTF-8 byte
plus 3, after the specials pad = 0, eos = 1, unk = 2; every sequence ends with eos. ByT5 also
reserves 125 sentinel ids above the bytes (`<extra_id_*>`), hence a table of 384 ids. Text is
taken literally: strings such as "</s>" are bytes here, not special tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Tokenizer(Protocol):
    """What the text encoder needs from a tokenizer."""

    pad_id: int
    vocab_size: int

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids `[B, max_length]` int32 and mask `[B, max_length]` bool (True on real tokens)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes + 3, ByT5-compatible ids (pad 0, eos 1, unk 2)."""

    pad_id = 0
    eos_id = 1
    unk_id = 2
    offset = 3
    num_extra_ids = 125
    vocab_size = 256 + offset + num_extra_ids

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = [b + self.offset for b in text.encode("utf-8")]
        return ids + [self.eos_id] if add_eos else ids

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special: bool = True) -> str:
        """Bytes back to text; specials and sentinels are dropped, invalid UTF-8 is skipped (as ByT5)."""
        data = bytearray()
        for i in np.asarray(ids).reshape(-1).tolist():
            if self.offset <= i < self.offset + 256:
                data.append(i - self.offset)
            elif not skip_special and i == self.eos_id:
                data.extend(b"</s>")
        return data.decode("utf-8", errors="ignore")

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not a single string")
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        ids = np.full((len(texts), max_length), self.pad_id, np.int32)
        for row, text in enumerate(texts):
            # Truncate the text, never the eos, as transformers' truncation does.
            tokens = self.encode(text, add_eos=False)[: max_length - 1] + [self.eos_id]
            ids[row, : len(tokens)] = tokens
        return ids, ids != self.pad_id  # no real token is 0: byte 0 is id 3


class HFTokenizer:
    """A `transformers` tokenizer loaded from a local folder (e.g. the UMT5 sentencepiece model)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        from transformers import AutoTokenizer  # late: transformers is slow to import

        self.tokenizer = AutoTokenizer.from_pretrained(os.fspath(folder), local_files_only=True)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer in {os.fspath(folder)!r} has no pad token")
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.vocab_size = len(self.tokenizer)

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not a single string")
        out = self.tokenizer(
            list(texts),
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="np",
        )
        return out["input_ids"].astype(np.int32), out["attention_mask"].astype(bool)


def load_tokenizer(folder: str | os.PathLike | None = None) -> Tokenizer:
    """The tokenizer saved in `folder` (via `transformers.AutoTokenizer`), or the byte tokenizer."""
    return ByteTokenizer() if folder is None else HFTokenizer(folder)
