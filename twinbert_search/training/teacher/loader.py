"""`load_teacher`: a scorer from either kind of teacher directory.

Ours (teacher.json, written by `CrossEncoder.save`) or any local Hugging Face
sequence-classification checkpoint (config.json); anything else is a `ModelError` that
says which of the two it expected.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from twinbert_search.errors import ConfigurationError, ModelError
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.teacher.hf import load_sequence_classifier
from twinbert_search.training.teacher.model import TEACHER_FILE, CrossEncoder, fingerprint
from twinbert_search.training.teacher.scorer import TeacherScorer
from twinbert_search.training.tokenizer import tokenizer_file

__all__ = ["load_teacher"]


def load_teacher(
    path: str | Path, *, max_length: int | None = None, batch_size: int = 32
) -> TeacherScorer:
    """A scorer from our teacher directory or a local HF sequence-classification checkpoint.

    `max_length` defaults to the length the teacher was trained with (ours) or 256 (HF),
    capped by the backbone's position embeddings.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"teacher directory not found: {path}", path=str(path))
    if (path / TEACHER_FILE).is_file():
        model, meta = CrossEncoder.load(path)
        positions = model.backbone.config.max_position_embeddings
        length = min(max_length or int(meta.get("max_length", 256)), positions)
        model_fingerprint = model.fingerprint()
    else:
        _refuse_towers(path)
        model, length, model_fingerprint = _load_hf(path, max_length)
    if length < 8:
        raise ConfigurationError(f"teacher max_length must be at least 8, got {length}")
    tokenizer = TextTokenizer.from_file(tokenizer_file(path), length)
    return TeacherScorer(model.eval(), tokenizer, model_fingerprint, batch_size)


def _refuse_towers(path: Path) -> None:
    """A tower teacher fuses whole candidate lists (z-scores need the list), so it cannot
    score the pairs a cross-encoder scores: say where it is used instead."""
    from twinbert_search.training.tower_teacher import TowerTeacher

    if TowerTeacher.load(path) is not None:
        raise ModelError(
            f"{path} is a tower teacher (`teacher towers`): it scores candidate lists, not "
            "pairs; use it with `adapt --teacher`, or give a cross-encoder here",
            path=str(path),
        )


def _load_hf(path: Path, max_length: int | None) -> tuple[nn.Module, int, str]:
    """A Hugging Face checkpoint: the model, its pair length (default 256), its fingerprint."""
    from transformers import AutoConfig

    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path} is neither a twinbert-search teacher ({TEACHER_FILE}) nor a Hugging "
            "Face checkpoint (config.json)",
            path=str(path),
        )
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable config.json ({exc})", path=str(path)) from None
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(
            f"{path} is not a sequence-classification checkpoint (architectures: "
            f"{', '.join(architectures) or 'none'}); train a teacher from it with "
            "`twinbert-search teacher train --checkpoint`",
            path=str(path),
        )
    model = load_sequence_classifier(path, config)
    length = min(max_length or 256, config.max_position_embeddings)
    return model, length, fingerprint(model, {"kind": "hf-sequence-classification"})
