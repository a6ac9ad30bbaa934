"""The arguments of the three training entry points, one validated dataclass each.

`teacher train`, `distill` and `adapt` (the CLI), the SciFact recipe and the Python API all
build a `TeacherArgs`, `DistillArgs` or `AdaptArgs` and hand it over whole, so a new option
is added in one place. `validate()` raises `ConfigurationError` naming the field before any
data or model is read. `run_config()` is the part a resume must match (`check_resume_config`):
its keys are those earlier checkpoints recorded, so old output directories still resume.

Torch-free: the CLI builds these before it imports the training code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbert_search.errors import ConfigurationError

if TYPE_CHECKING:
    from twinbert_search.training.modeling import TwinBertConfig

__all__ = ["LOSSES", "TEACHER_POOLINGS", "AdaptArgs", "DistillArgs", "TeacherArgs"]

TEACHER_POOLINGS = ("cls", "mean")
LOSSES = ("soft_ce", "margin_mse")


def _positive(args: Any, *names: str) -> None:
    """Raise for the first of `names` whose value is not positive."""
    for name in names:
        value = getattr(args, name)
        if value <= 0:
            raise ConfigurationError(f"{name} must be positive, got {value}")


def _pick(args: Any, *names: str) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


def _warmup_steps(fraction: float, steps: int) -> int:
    return max(1, round(fraction * steps))


@dataclass
class TeacherArgs:
    """Fine-tune a cross-encoder teacher on a BEIR folder (`train_teacher`).

    Each step takes `batch_size` training queries, each with one positive and `negatives`
    hard negatives from BM25's top `bm25_depth`. Every `eval_every` steps the teacher reranks
    BM25's top `rerank_depth` of a seeded validation split (up to `validation_queries`) and
    the best by nDCG@10 is kept. The state is saved every `checkpoint_every` steps (default:
    `eval_every`); with `resume`, rerunning the same call continues from it.
    """

    data_dir: str | Path
    out_dir: str | Path
    checkpoint: str | Path | None = None  # None: the default checkpoint
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-5
    negatives: int = 3
    max_length: int = 192
    pooling: str = "cls"
    seed: int = 0
    eval_every: int = 200
    checkpoint_every: int | None = None
    validation_queries: int = 50
    rerank_depth: int = 20
    bm25_depth: int = 50
    warmup_fraction: float = 0.1
    resume: bool = True
    progress: bool = True

    def validate(self) -> TeacherArgs:
        """Raise `ConfigurationError` naming the first invalid field; return self."""
        _positive(self, "steps", "batch_size", "lr", "negatives", "eval_every")
        if self.save_every <= 0:  # 0 or None: every evaluation
            raise ConfigurationError(f"checkpoint_every must be positive, got {self.save_every}")
        _positive(self, "rerank_depth")
        if self.pooling not in TEACHER_POOLINGS:
            raise ConfigurationError(
                f"teacher pooling must be one of {TEACHER_POOLINGS}, got {self.pooling!r}"
            )
        if self.max_length < 8:
            raise ConfigurationError(f"max_length must be at least 8, got {self.max_length}")
        return self

    @property
    def save_every(self) -> int:
        """Steps between saved training states."""
        return self.checkpoint_every or self.eval_every

    @property
    def warmup_steps(self) -> int:
        return _warmup_steps(self.warmup_fraction, self.steps)

    def run_config(self, checkpoint: Path, max_length: int) -> dict[str, Any]:
        """What a resume must match; `checkpoint` resolved, `max_length` as capped."""
        return {
            "checkpoint": str(checkpoint.resolve()),
            "data": str(Path(self.data_dir).resolve()),
            **_pick(self, "steps", "batch_size", "lr", "negatives"),
            "max_length": max_length,
            **_pick(self, "pooling", "seed", "eval_every", "validation_queries"),
            **_pick(self, "rerank_depth", "bm25_depth", "warmup_fraction"),
        }


@dataclass
class DistillArgs:
    """Distil a teacher into a TwinBERT student (`distill`).

    `config` is the student's shape (None: `TwinBertConfig()`). `recall_loss_weight` > 0 adds
    an in-batch-negatives loss on the raw tower vectors, which a residual-crossing student
    needs to stay usable for kNN recall; `label_weight` > 0 adds the qrels' hard labels to the
    teacher's soft ones; `temperature` applies to `soft_ce` only. `cache_dir`: where teacher
    scores are kept (None: OUT/cache).
    """

    data_dir: str | Path
    teacher_dir: str | Path
    out_dir: str | Path
    student_checkpoint: str | Path | None = None  # None: the default checkpoint
    config: TwinBertConfig | None = None
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-5
    crossing_lr: float = 1e-3
    temperature: float = 1.0
    loss: str = "soft_ce"
    pseudo_queries: int = 0
    candidates_per_query: int = 8
    bm25_depth: int = 50
    recall_loss_weight: float = 0.0
    label_weight: float = 0.0
    seed: int = 0
    checkpoint_every: int = 100
    warmup_fraction: float = 0.1
    teacher_batch_size: int = 32
    cache_dir: str | Path | None = None
    int8: bool = True
    resume: bool = True
    progress: bool = True

    def validate(self) -> DistillArgs:
        """Raise `ConfigurationError` naming the first invalid field; return self."""
        _positive(self, "steps", "batch_size", "lr", "crossing_lr", "temperature")
        _positive(self, "checkpoint_every", "bm25_depth")
        if self.loss not in LOSSES:
            raise ConfigurationError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.candidates_per_query < 2:
            raise ConfigurationError(
                f"candidates_per_query must be at least 2 (a positive and a negative), "
                f"got {self.candidates_per_query}"
            )
        for name in ("pseudo_queries", "recall_loss_weight"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must not be negative, got {getattr(self, name)}")
        return self

    @property
    def warmup_steps(self) -> int:
        return _warmup_steps(self.warmup_fraction, self.steps)

    def run_config(
        self, teacher: str, student_checkpoint: Path, config: TwinBertConfig
    ) -> dict[str, Any]:
        """What a resume must match: the teacher's fingerprint, the resolved checkpoint."""
        return {
            "data": str(Path(self.data_dir).resolve()),
            "teacher": teacher,
            "student_checkpoint": str(student_checkpoint.resolve()),
            "model": json.dumps(asdict(config), sort_keys=True),
            **_pick(self, "steps", "batch_size", "lr", "crossing_lr", "temperature", "loss"),
            **_pick(self, "pseudo_queries", "candidates_per_query", "bm25_depth"),
            **_pick(self, "recall_loss_weight", "seed", "warmup_fraction"),
            # only when set, so checkpoints written before the option existed still resume
            **({"label_weight": self.label_weight} if self.label_weight else {}),
        }


@dataclass
class AdaptArgs:
    """Adapt a student to a corpus from its text alone (`adapt`).

    `index_dir`: an embedded index of the corpus by this model, whose stored vectors are
    reused instead of encoding the corpus. The teacher's targets are its logits, or the
    ensemble its directory records unless `use_teacher_fusion` is False. With
    `learn_documents` the document tower learns too and the model needs an index of its own.
    """

    corpus: str | Path
    model_dir: str | Path
    out_dir: str | Path
    teacher: str | Path
    index_dir: str | Path | None = None
    pseudo_queries: int = 400
    candidates: int = 30
    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-5
    crossing_lr: float = 1e-3
    learn_documents: bool = False
    seed: int = 0
    teacher_batch_size: int = 32
    use_teacher_fusion: bool = True
    checkpoint_every: int = 50
    resume: bool = True
    progress: bool = True

    def validate(self) -> AdaptArgs:
        """Raise `ConfigurationError` naming the first invalid field; return self."""
        _positive(self, "pseudo_queries")
        if self.candidates < 2:
            raise ConfigurationError(f"candidates must be at least 2, got {self.candidates}")
        _positive(self, "steps", "batch_size", "lr", "crossing_lr", "checkpoint_every")
        return self

    @property
    def warmup_steps(self) -> int:
        return max(1, self.steps // 10)

    def run_config(
        self, corpus: str, model: str, teacher: str, fusion: Any, queries: int
    ) -> dict[str, Any]:
        """What a resume must match: digests of the corpus, model and teacher, the ensemble
        distilled and the pseudo-queries made."""
        return {
            "corpus": corpus,
            "model": model,
            "teacher": teacher,
            "teacher_fusion": fusion,
            "pseudo_queries": queries,
            **_pick(self, "candidates", "steps", "batch_size", "lr", "crossing_lr"),
            **_pick(self, "learn_documents", "seed"),
        }
