"""Tokenisation shared by training and serving, so both see exactly the same ids.

Wraps a Hugging Face `tokenizers.Tokenizer` (Rust, no torch). One instance per max length,
because truncation settings live on the tokenizer object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from twinbert_search.errors import ModelError

Batch = dict[str, np.ndarray]


class TextTokenizer:
    """Tokenizes to int64 numpy arrays padded to the longest sequence of each batch."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, *, prefix: str = "") -> None:
        self._tok = tokenizer
        # Put before every text `encode` sees (not pairs): training feeds an imported tower the
        # manifest's query / document prefix, as the runtime's encoders do.
        self.prefix = prefix
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self.max_length = max_length
        pad_id = tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            pad_id = tokenizer.token_to_id("<pad>")
        self.pad_id = 0 if pad_id is None else pad_id

    @classmethod
    def from_file(cls, path: str | Path, max_length: int, *, prefix: str = "") -> TextTokenizer:
        if not Path(path).is_file():
            raise ModelError(f"tokenizer not found: {path}", path=str(path))
        return cls(Tokenizer.from_file(str(path)), max_length, prefix=prefix)

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Unpadded encodings, so callers can sort by length before batching."""
        if self.prefix:
            return self._tok.encode_batch([self.prefix + t for t in texts])
        return self._tok.encode_batch(list(texts))

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Encoding]:
        """Cross-encoder input: `[CLS] a [SEP] b [SEP]`, truncating the longer side first."""
        return self._tok.encode_batch([tuple(p) for p in pairs])

    def pad(self, encodings: Sequence[Encoding]) -> Batch:
        """Stack encodings into input_ids / attention_mask / token_type_ids (int64)."""
        width = max((len(e.ids) for e in encodings), default=1)
        n = len(encodings)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for i, enc in enumerate(encodings):
            length = len(enc.ids)
            ids[i, :length] = enc.ids
            mask[i, :length] = 1
            types[i, :length] = enc.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def __call__(self, texts: Sequence[str]) -> Batch:
        return self.pad(self.encode(texts))
