"""The cross-encoder's training loop, shared by `train_teacher` and the SciFact recipe.

The callers differ in data and in what they measure, not in how a step is taken: each gives
the queries with their candidate documents, the loss, and a validation that picks the kept
checkpoint; the loop draws the groups (one positive and hard negatives from the candidates,
seeded by (seed, step)), steps AdamW with a linear schedule, validates, and checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.data import (
    Checkpointing,
    TrainingQuery,
    Validation,
    batch_indices,
    linear_schedule,
    sample_group,
    step_rng,
)
from twinbert_search.training.loop import due, restore_state, save_state, take_step
from twinbert_search.training.losses import (
    listwise_kl,
    localized_contrastive,
    pointwise_bce,
    score_regression,
)
from twinbert_search.training.tokenizer import to_torch

__all__ = ["TEACHER_LOSSES", "SoftTargets", "TeacherFit", "fit_teacher"]

log = logging.getLogger(__name__)

TEACHER_LOSSES = ("bce", "listwise", "regress")
# (query, its group's document ids, positive first) -> one score per document: the soft
# target of the listwise KL term (the recipe: fused BM25 + bi-encoder z-scores).
SoftTargets = Callable[[TrainingQuery, Sequence[str]], np.ndarray]
StepCallback = Callable[[int, float], None]


@dataclass
class TeacherFit:
    """What a finished loop leaves: the per-step history and the best validation (None when
    nothing was validated)."""

    history: list[dict[str, Any]]
    best: dict[str, Any] | None


def fit_teacher(
    model: nn.Module,
    tokenizer: TextTokenizer,
    queries: Sequence[TrainingQuery],
    corpus: Mapping[str, Document],
    *,
    steps: int,
    batch_size: int,
    negatives: int,
    lr: float,
    warmup_steps: int,
    seed: int = 0,
    loss: str = "bce",
    soft_targets: SoftTargets | None = None,
    soft_weight: float = 0.0,
    sample_stream: int = 0,
    corpus_ids: Sequence[str] = (),
    validate: Callable[[], Validation] | None = None,
    eval_every: int = 200,
    best_key: str = "ndcg@10",
    on_best: Callable[[dict[str, Any], Validation], None] | None = None,
    checkpoint: Checkpointing | None = None,
    state: Mapping[str, Any] | None = None,
    progress: bool = False,
    on_step: StepCallback | None = None,
) -> TeacherFit:
    """Fine-tune `model` (a cross-encoder: pair batch -> logits) for `steps` steps.

    Each step takes `batch_size` of `queries`, each with its positive and `negatives` hard
    negatives drawn from its candidates (`TrainingQuery.bm25`: any ranked list; too short a
    list is filled from `corpus_ids`), from `step_rng(seed, step, sample_stream)`.
    `loss`: "bce" (`pointwise_bce`, each pair against its label), "listwise"
    (`localized_contrastive` per group, plus `soft_weight` x `listwise_kl` towards
    `soft_targets` when given) or "regress" (`score_regression` of every logit onto its
    `soft_targets` score: a warm start that needs no label, so pseudo-queries can feed it).
    Every `eval_every` steps and at the end, `validate()` runs
    (the model in eval mode); its record joins the step's history and a higher score than
    any before becomes `best` ({"step", best_key}) and is handed to `on_best` (to save it).
    With `checkpoint`, the training state is saved every `checkpoint.every` steps; `state`
    (a saved one, checked by the caller) resumes the run where it stopped.
    """
    soft_weight = _check_loss(loss, soft_targets, soft_weight)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = linear_schedule(optimizer, steps, warmup_steps)
    step, best, history = 0, None, []
    if state is not None:
        restore_state(state, model, optimizer, scheduler)
        step, best, history = state["step"], state["best"], state["history"]
        log.info("resuming teacher training from step %d of %d", step, steps)
    draw = _GroupDraw(queries, corpus, batch_size, negatives, seed, sample_stream, corpus_ids)
    model.train()
    bar = tqdm(total=steps, initial=step, disable=not progress, desc="teacher", unit="step")
    while step < steps:
        pairs, sizes, soft = draw(step, soft_targets if soft_weight > 0 else None)
        logits = model(**to_torch(tokenizer.pad(tokenizer.encode_pairs(pairs))))
        value_t = _teacher_loss(logits, sizes, loss, soft, soft_weight)
        take_step(model, optimizer, scheduler, value_t)
        step += 1
        value = float(value_t.detach())
        record: dict[str, Any] = {"step": step, "loss": value}
        history.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if validate is not None and due(step, eval_every, steps):
            best = _validate(model, validate, record, best, best_key, on_best)
        if checkpoint is not None and due(step, checkpoint.every, steps):
            save_state(checkpoint, step, model, optimizer, scheduler, best=best, history=history)
        if on_step is not None:
            on_step(step, value)
    bar.close()
    return TeacherFit(history, best)


def _check_loss(loss: str, soft_targets: SoftTargets | None, soft_weight: float) -> float:
    """Refuse an unknown loss or a regression without targets; the soft term's weight
    (a regression is all soft term: weight 1 unless given)."""
    if loss not in TEACHER_LOSSES:
        raise ConfigurationError(f"teacher loss must be one of {TEACHER_LOSSES}, got {loss!r}")
    if loss == "regress" and soft_targets is None:
        raise ConfigurationError("a regression warm start needs soft_targets to regress onto")
    if loss == "regress":
        return soft_weight or 1.0
    return soft_weight


@dataclass
class _GroupDraw:
    """A step's groups: `batch_size` queries, each with its positive and `negatives` hard
    negatives, drawn from `step_rng(seed, step, stream)` so a resumed run draws the same."""

    queries: Sequence[TrainingQuery]
    corpus: Mapping[str, Document]
    batch_size: int
    negatives: int
    seed: int
    stream: int
    corpus_ids: Sequence[str]

    def __call__(
        self, step: int, soft_targets: SoftTargets | None
    ) -> tuple[list[tuple[str, str]], list[int], list[np.ndarray]]:
        """The step's (query, document) pairs, each group's size and its soft targets."""
        rng = step_rng(self.seed, step, self.stream)
        pairs: list[tuple[str, str]] = []
        sizes: list[int] = []
        soft: list[np.ndarray] = []
        for i in batch_indices(len(self.queries), self.batch_size, step, self.seed):
            query = self.queries[i]
            positive, negs = sample_group(query, self.negatives, rng, self.corpus_ids)
            docs = [positive, *negs]
            pairs += [(query.text, self.corpus[d].encoding_text) for d in docs]
            sizes.append(len(docs))
            if soft_targets is not None:
                soft.append(soft_targets(query, docs))
        return pairs, sizes, soft


def _validate(
    model: nn.Module,
    validate: Callable[[], Validation],
    record: dict[str, Any],
    best: dict[str, Any] | None,
    best_key: str,
    on_best: Callable[[dict[str, Any], Validation], None] | None,
) -> dict[str, Any] | None:
    """Validate in eval mode, log the result in the step's record; a new best (strictly
    higher) is handed to `on_best`. Returns the best so far."""
    model.eval()
    result = validate()
    model.train()
    record.update(result.record)
    if best is None or result.score > best[best_key]:
        best = {"step": record["step"], best_key: result.score}
        if on_best is not None:
            on_best(best, result)
    return best


def _teacher_loss(
    logits: torch.Tensor,
    sizes: Sequence[int],
    loss: str,
    soft: Sequence[np.ndarray],
    soft_weight: float,
) -> torch.Tensor:
    if loss == "regress":
        return score_regression(logits, torch.from_numpy(np.concatenate(soft)))
    if loss == "bce":  # each group's positive comes first
        labels = [x for n in sizes for x in (1.0, *([0.0] * (n - 1)))]
        return pointwise_bce(logits, torch.tensor(labels))
    if len(set(sizes)) != 1:
        raise ConfigurationError(
            f"a listwise teacher needs groups of one size, got sizes {sorted(set(sizes))} "
            "(too few candidates for the negatives asked)"
        )
    groups = logits.view(-1, sizes[0])
    value = localized_contrastive(groups)
    if soft:
        value = value + soft_weight * listwise_kl(groups, torch.from_numpy(np.stack(soft)))
    return value
