"""Tokenizer resolution for checkpoints, and torch batches from the shared tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from twinbert_search.errors import ModelError
from twinbert_search.manifest import ModelManifest
from twinbert_search.runtime.tokenization import TextTokenizer


def tokenizer_file(checkpoint: str | Path) -> Path:
    """The checkpoint's tokenizer.json, converting from vocab files when only those exist."""
    checkpoint = Path(checkpoint)
    path = checkpoint / "tokenizer.json"
    if path.is_file():
        return path
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{checkpoint}: no usable tokenizer ({exc})", path=str(checkpoint)
        ) from None
    if not getattr(tok, "is_fast", False):
        raise ModelError(
            f"{checkpoint}: needs a fast tokenizer (tokenizer.json)", path=str(checkpoint)
        )
    tok.backend_tokenizer.save(str(path))
    return path


def to_torch(batch: dict) -> dict[str, torch.Tensor]:
    """A tokenizer's numpy batch as torch tensors (shared memory, no copy)."""
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def torch_batch(tokenizer: TextTokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenize `texts` into a padded torch batch."""
    return to_torch(tokenizer(texts))


def tower_tokenizers(
    path: str | Path, manifest: ModelManifest
) -> tuple[TextTokenizer, TextTokenizer]:
    """The query and document tokenizers a model trains with: its max lengths and the prefixes
    its manifest carries (an imported tower's), as the runtime's encoders apply them."""
    return (
        TextTokenizer.from_file(path, manifest.max_query_length, prefix=manifest.query_prefix),
        TextTokenizer.from_file(path, manifest.max_doc_length, prefix=manifest.document_prefix),
    )
