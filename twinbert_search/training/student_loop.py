"""The TwinBERT student's training loop, shared by `distill` and the SciFact recipe.

A step learns from scored lists: a query, its candidate documents, the teacher's score of
each and which are judged relevant. `distill` draws its lists from BM25 with a cross-encoder
scoring them; the recipe gives fixed recall lists scored by its fused teacher, a frozen
document tower (the index's stored vectors) and a validation that picks the kept weights.
The loop is the same: AdamW (the crossing at its own rate), a linear schedule, gradient
clipping, optional validation with the best weights kept, optional checkpoints to resume.
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
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.data import (
    Checkpointing,
    Validation,
    linear_schedule,
)
from twinbert_search.training.loop import due, restore_state, save_state, take_step
from twinbert_search.training.losses import (
    in_batch_negatives,
    label_listwise,
    listwise_kl,
    margin_mse,
    soft_cross_entropy,
)
from twinbert_search.training.modeling import TwinBert
from twinbert_search.training.tokenizer import torch_batch

__all__ = [
    "STUDENT_LOSSES",
    "DocumentTower",
    "ScoredList",
    "StoredVectors",
    "StudentFit",
    "fit_student",
    "list_scores",
    "listwise_objective",
    "platt_calibrate",
    "rerank_validation",
]

log = logging.getLogger(__name__)

# soft_ce, margin_mse: over the batch's pairs; listwise_kl: over each list (`listwise_objective`)
STUDENT_LOSSES = ("soft_ce", "margin_mse", "listwise_kl")
StepCallback = Callable[[int, float], None]


@dataclass(frozen=True)
class ScoredList:
    """One query's candidates: document ids, the teacher's scores, the judged positives.

    `teacher` (float32) and `positives` (bool) hold one entry per document; `teacher` may be
    None where only the labels are used (calibration). The margin and recall losses take the
    first document as the list's positive.
    """

    query: str
    docs: tuple[str, ...]
    teacher: np.ndarray | None
    positives: np.ndarray


class StoredVectors:
    """Stored document vectors standing in for a frozen document tower (an index's own)."""

    def __init__(self, vectors: torch.Tensor, row_of: Mapping[str, int]) -> None:
        self.vectors = vectors
        self.row_of = row_of

    def vectors_of(self, model: TwinBert, docs: Sequence[str]) -> torch.Tensor:
        return self.vectors[torch.tensor([self.row_of[d] for d in docs], dtype=torch.int64)]


class DocumentTower:
    """Documents encoded by the model's document tower, which learns with the rest."""

    def __init__(self, corpus: Mapping[str, Document], tokenizer: TextTokenizer) -> None:
        self.corpus = corpus
        self.tokenizer = tokenizer

    def vectors_of(self, model: TwinBert, docs: Sequence[str]) -> torch.Tensor:
        texts = [self.corpus[d].encoding_text for d in docs]
        return model.encode_documents(torch_batch(self.tokenizer, texts))


Documents = StoredVectors | DocumentTower


@dataclass
class StudentFit:
    """A finished loop: per-step loss terms, the validations ({"step", "loss", ...record}),
    and the kept step and its score (None without validation)."""

    history: list[dict[str, float]]
    evaluations: list[dict[str, Any]]
    best_step: int | None
    best_score: float | None


def listwise_objective(
    scores: torch.Tensor,
    teacher: torch.Tensor,
    positives: torch.Tensor,
    *,
    temperature: float = 1.0,
    distill_weight: float = 1.0,
    label_weight: float = 0.0,
) -> torch.Tensor:
    """One list's loss: `distill_weight` x `listwise_kl` towards the teacher at `temperature`,
    plus `label_weight` x `label_listwise` on its positives (0 for a list without one)."""
    loss = distill_weight * listwise_kl(scores[None], teacher[None], temperature)
    if label_weight:
        loss = loss + label_weight * label_listwise(scores, positives)
    return loss


def _optimizer(model: TwinBert, lr: float, crossing_lr: float) -> torch.optim.Optimizer:
    """AdamW; the crossing layer gets its own rate (a cosine scale at 3e-5 would never move).

    A frozen tower's parameters are left out: only what learns is in the groups.
    """
    crossing = list(model.crossing.parameters())
    ids = {id(p) for p in crossing}
    towers = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    groups = [{"params": towers, "lr": lr}, {"params": crossing, "lr": crossing_lr}]
    return torch.optim.AdamW(groups, weight_decay=0.01)


def _step_terms(
    model: TwinBert,
    lists: Sequence[ScoredList],
    query_tokenizer: TextTokenizer,
    documents: Documents,
    *,
    loss: str,
    temperature: float,
    distill_weight: float,
    label_weight: float,
    recall_loss_weight: float,
) -> dict[str, torch.Tensor]:
    """The step's loss terms; `total` is what gets minimised.

    Stored vectors: each list is crossed with its own candidates. A learning document tower:
    the batch's documents are encoded together and crossed in one call.
    """
    q_vec = model.encode_queries(torch_batch(query_tokenizer, [x.query for x in lists]))
    counts = torch.tensor([len(x.docs) for x in lists])
    first = torch.cumsum(counts, 0) - counts  # row of each list's first document
    d_vec: torch.Tensor | None = None
    if isinstance(documents, StoredVectors):
        per_list = [
            model.crossing(
                q_vec[i : i + 1].expand(len(x.docs), -1), documents.vectors_of(model, x.docs)
            )
            for i, x in enumerate(lists)
        ]
        student = torch.cat(per_list)
    else:
        d_vec = documents.vectors_of(model, [d for x in lists for d in x.docs])
        student = model.crossing(q_vec.repeat_interleave(counts, dim=0), d_vec)
        per_list = list(torch.split(student, counts.tolist()))
    terms: dict[str, torch.Tensor] = {}
    if loss == "listwise_kl":
        terms[loss] = torch.stack(
            [
                listwise_objective(
                    s,
                    torch.from_numpy(x.teacher),
                    torch.from_numpy(x.positives),
                    temperature=temperature,
                    distill_weight=distill_weight,
                    label_weight=label_weight,
                )
                for s, x in zip(per_list, lists, strict=True)
            ]
        ).mean()
        total = terms[loss]
    else:
        teacher = torch.from_numpy(np.concatenate([x.teacher for x in lists]))
        if loss == "soft_ce":
            terms[loss] = soft_cross_entropy(student, teacher, temperature)
        else:
            is_pos = torch.zeros(len(student), dtype=torch.bool)
            is_pos[first] = True
            pos = first.repeat_interleave(counts - 1)  # each negative against its list's first
            neg = torch.arange(len(student))[~is_pos]
            terms[loss] = margin_mse(student[pos], student[neg], teacher[pos], teacher[neg])
        total = terms[loss]
        if label_weight > 0:
            terms["labels"] = torch.stack(
                [
                    label_listwise(s, torch.from_numpy(x.positives))
                    for s, x in zip(per_list, lists, strict=True)
                ]
            ).mean()
            total = total + label_weight * terms["labels"]
    if recall_loss_weight > 0:
        positives = [x.docs[0] for x in lists]
        same = torch.tensor([[a == b for b in positives] for a in positives])
        d_first = documents.vectors_of(model, positives) if d_vec is None else d_vec[first]
        terms["recall"] = in_batch_negatives(q_vec, d_first, same_doc=same)
        total = total + recall_loss_weight * terms["recall"]
    terms["total"] = total
    return terms


def _learning_modules(model: TwinBert) -> dict[str, nn.Module]:
    """The modules whose weights change: what a kept best state must hold."""
    modules: dict[str, nn.Module] = {"query_tower": model.query_tower, "crossing": model.crossing}
    doc = model.doc_tower
    if doc is not model.query_tower and any(p.requires_grad for p in doc.parameters()):
        modules["doc_tower"] = doc
    return modules


def _validate(model: TwinBert, validate: Callable[[], Validation]) -> Validation:
    model.eval()
    with torch.no_grad():
        result = validate()
    model.train()
    return result


def fit_student(
    model: TwinBert,
    batches: Callable[[int], Sequence[ScoredList]],
    *,
    steps: int,
    lr: float,
    crossing_lr: float,
    warmup_steps: int,
    query_tokenizer: TextTokenizer,
    documents: Documents,
    loss: str = "soft_ce",
    temperature: float = 1.0,
    distill_weight: float = 1.0,
    label_weight: float = 0.0,
    recall_loss_weight: float = 0.0,
    validate: Callable[[], Validation] | None = None,
    eval_every: int = 1,
    checkpoint: Checkpointing | None = None,
    state: Mapping[str, Any] | None = None,
    progress: bool = False,
    on_step: StepCallback | None = None,
) -> StudentFit:
    """Train `model` for `steps` steps on `batches(step)` (step counted from 0).

    `loss`: "soft_ce" or "margin_mse" over the batch's pairs, or "listwise_kl" per list
    (`listwise_objective`, with `distill_weight`); `label_weight` adds `label_listwise` on
    the positives, `recall_loss_weight` `in_batch_negatives` on the raw vectors (query vs its
    list's first document). With `validate`, the model is validated before training (a
    reference, never kept) and every `eval_every` steps and at the end; the best of those
    (ties: the later) is loaded back at the end. With `checkpoint`, the training state is
    saved every `checkpoint.every` steps; `state` (a saved one, checked by the caller)
    resumes the run. The caller seeds torch: the loop draws from its global generator
    (dropout) as it stands.
    """
    if loss not in STUDENT_LOSSES:
        raise ConfigurationError(f"loss must be one of {STUDENT_LOSSES}, got {loss!r}")
    if validate is not None and checkpoint is not None:
        raise ConfigurationError("a validated run keeps its best weights in memory: no checkpoint")
    optimizer = _optimizer(model, lr, crossing_lr)
    scheduler = linear_schedule(optimizer, steps, warmup_steps)
    start, history = 0, []
    if state is not None:
        restore_state(state, model, optimizer, scheduler)
        start, history = state["step"], state["history"]
        log.info("resuming distillation from step %d of %d", start, steps)
    keeper = _BestKeeper(model, validate)
    weights = {"temperature": temperature, "distill_weight": distill_weight}
    weights.update(label_weight=label_weight, recall_loss_weight=recall_loss_weight)
    model.train()
    bar = tqdm(total=steps, initial=start, disable=not progress, desc="distill", unit="step")
    for step in range(start + 1, steps + 1):
        lists = batches(step - 1)
        terms = _step_terms(model, lists, query_tokenizer, documents, loss=loss, **weights)
        take_step(model, optimizer, scheduler, terms["total"])
        record = {"step": step, **{k: float(v.detach()) for k, v in terms.items()}}
        history.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['total']:.4f}")
        if validate is not None and due(step, eval_every, steps):
            keeper.check(step, record["total"])
        if checkpoint is not None and due(step, checkpoint.every, steps):
            save_state(checkpoint, step, model, optimizer, scheduler, history=history)
        if on_step is not None:
            on_step(step, record["total"])
    bar.close()
    keeper.load_best()
    return StudentFit(history, keeper.evaluations, keeper.best_step, keeper.best_score)


class _BestKeeper:
    """Validation during a student run: a reference before training (never kept), then the
    best validated weights (ties: the later) held in memory and loaded back at the end."""

    def __init__(self, model: TwinBert, validate: Callable[[], Validation] | None) -> None:
        self.model = model
        self.validate = validate
        self.evaluations: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.best_state: dict[str, dict[str, torch.Tensor]] | None = None
        if validate is not None:
            reference = _validate(model, validate)
            self.evaluations.append({"step": 0, **reference.record})
            self.best_score = reference.score

    def check(self, step: int, loss: float) -> None:
        """Validate after `step`; keep a copy of the learning modules when it is the best."""
        if self.validate is None:
            return
        result = _validate(self.model, self.validate)
        self.evaluations.append({"step": step, "loss": loss, **result.record})
        if self.best_state is None or result.score >= self.best_score:
            self.best_score, self.best_step = result.score, step
            self.best_state = {
                name: {k: x.clone() for k, x in module.state_dict().items()}
                for name, module in _learning_modules(self.model).items()
            }

    def load_best(self) -> None:
        if self.best_state is not None:
            modules = _learning_modules(self.model)
            for name, weights in self.best_state.items():
                modules[name].load_state_dict(weights)


def list_scores(
    model: TwinBert,
    lists: Sequence[ScoredList],
    query_tokenizer: TextTokenizer,
    documents: Documents,
    *,
    chunk: int = 64,
) -> list[torch.Tensor]:
    """Each list's student logits, without grad; queries encoded `chunk` at a time."""
    out = []
    with torch.no_grad():
        for start in range(0, len(lists), chunk):
            part = lists[start : start + chunk]
            q_vec = model.encode_queries(torch_batch(query_tokenizer, [x.query for x in part]))
            for i, x in enumerate(part):
                d_vec = documents.vectors_of(model, x.docs)
                out.append(model.crossing(q_vec[i : i + 1].expand(len(x.docs), -1), d_vec))
    return out


def rerank_validation(
    model: TwinBert,
    lists: Mapping[str, ScoredList],
    qrels: Mapping[str, Mapping[str, int]],
    query_tokenizer: TextTokenizer,
    documents: Documents,
) -> Callable[[], Validation]:
    """A validation for `fit_student`: nDCG@10 of the student reranking each query's list
    (`lists` by query id, scored in their order), recorded as `val_ndcg@10`."""

    def validate() -> Validation:
        ids = list(lists)
        scores = list_scores(model, [lists[q] for q in ids], query_tokenizer, documents)
        run = {
            q: {d: float(x) for d, x in zip(lists[q].docs, s, strict=True)}
            for q, s in zip(ids, scores, strict=True)
        }
        value = evaluate(qrels, run, ("ndcg@10",))["ndcg@10"]
        return Validation(value, {"val_ndcg@10": value})

    return validate


def platt_calibrate(
    model: TwinBert,
    lists: Sequence[ScoredList],
    query_tokenizer: TextTokenizer,
    documents: Documents,
    *,
    chunk: int = 64,
) -> dict[str, Any]:
    """Platt-scale the crossing on the lists' labelled candidates (see `calibration`).

    Listwise and margin losses fix only score differences, so a student's logits can drift
    to a level where the logistic saturates and every candidate's probability ties. Leaves
    the model in eval mode; returns the fit, or why it was skipped (e.g. no labelled pair).
    """
    from twinbert_search.training.calibration import fit_platt
    from twinbert_search.training.crossing import fold_affine

    model.eval()
    logits: list[float] = []
    labels: list[bool] = []
    for x, s in zip(
        lists, list_scores(model, lists, query_tokenizer, documents, chunk=chunk), strict=True
    ):
        logits += s.tolist()
        labels += x.positives.tolist()
    before = [min(logits), max(logits)] if logits else []
    try:
        a, b = fit_platt(np.asarray(logits), np.asarray(labels, np.float64))
    except ValueError as exc:
        return {"skipped": str(exc)}
    fold_affine(model.crossing, a, b)
    return {"a": a, "b": b, "pairs": len(logits), "logit_range_before": before}
