"""Any local Hugging Face sequence-classification checkpoint as a teacher.

One label: its logit; two labels: the logit of class 1 minus class 0. Only BERT-like
models, whose inputs `bert_inputs` knows how to build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from twinbert_search.errors import ModelError
from twinbert_search.training.modeling import BERT_LIKE, bert_inputs

__all__ = ["SequenceClassifier", "load_sequence_classifier"]


class SequenceClassifier(nn.Module):
    """A Hugging Face sequence-classification model reduced to one relevance logit."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_labels = int(model.config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = bert_inputs(self.model.config, input_ids, attention_mask, token_type_ids)
        logits = self.model(**inputs).logits
        return logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]


def load_sequence_classifier(path: Path, config: Any) -> SequenceClassifier:
    """The checkpoint at `path` (its `config` read already), refused unless BERT-like with
    one or two labels."""
    from transformers import AutoModelForSequenceClassification

    if config.model_type not in BERT_LIKE:
        raise ModelError(
            f"{path}: model_type {config.model_type!r} is not BERT-like "
            f"(supported: {', '.join(BERT_LIKE)})",
            path=str(path),
        )
    if config.num_labels not in (1, 2):
        raise ModelError(
            f"{path}: a teacher needs 1 or 2 labels (relevance), this one has {config.num_labels}",
            path=str(path),
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), config=config, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load weights ({exc})", path=str(path)) from None
    return SequenceClassifier(model.float())
