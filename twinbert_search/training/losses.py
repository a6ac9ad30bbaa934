"""Training losses, teacher and student: one function per loss, each checking its input shapes.

Every loss takes the score tensors first and hyperparameters after them, returns the batch
mean as a 0-d tensor, and raises `ValueError` stating the expected and the actual shapes,
because a silently broadcast (B,) against (B, 1) trains on the wrong pairs without an error.
Pointwise losses take (batch,) scores; listwise ones (lists, candidates), one query per row.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = [
    "in_batch_negatives",
    "label_listwise",
    "listwise_kl",
    "localized_contrastive",
    "margin_mse",
    "pointwise_bce",
    "score_regression",
    "soft_cross_entropy",
]


def _check_same_1d(**tensors: torch.Tensor) -> None:
    names = list(tensors)
    first = tensors[names[0]]
    if first.dim() != 1:
        raise ValueError(f"{names[0]} must have shape (batch,), got {tuple(first.shape)}")
    for name in names[1:]:
        if tensors[name].shape != first.shape:
            raise ValueError(
                f"{name} must have shape {tuple(first.shape)} like {names[0]}, "
                f"got {tuple(tensors[name].shape)}"
            )


def _check_lists(**tensors: torch.Tensor) -> None:
    names = list(tensors)
    first = tensors[names[0]]
    if first.dim() != 2:
        raise ValueError(
            f"{names[0]} must have shape (lists, candidates), got {tuple(first.shape)}"
        )
    for name in names[1:]:
        if tensors[name].shape != first.shape:
            raise ValueError(
                f"{name} must have shape {tuple(first.shape)} like {names[0]}, "
                f"got {tuple(tensors[name].shape)}"
            )


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Binary cross-entropy between sigmoid(student / T) and sigmoid(teacher / T).

    TwinBERT's distillation objective (Lu, Jiao, Zhang 2020, sec. 3.3): the student learns the
    teacher's soft relevance probability for each (query, document) pair rather than the 0/1
    label, which carries the teacher's ranking of negatives. A higher T flattens both
    probabilities so mid-range teacher scores weigh more. The minimum is the teacher's own
    entropy, not zero.

    student_logits, teacher_logits: (batch,) logits of the same pairs.
    """
    _check_same_1d(student_logits=student_logits, teacher_logits=teacher_logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    target = torch.sigmoid(teacher_logits.detach().to(student_logits.dtype) / temperature)
    return F.binary_cross_entropy_with_logits(student_logits / temperature, target)


def margin_mse(
    student_pos: torch.Tensor,
    student_neg: torch.Tensor,
    teacher_pos: torch.Tensor,
    teacher_neg: torch.Tensor,
) -> torch.Tensor:
    """Mean squared error between the student's and the teacher's score margins.

    Margin-MSE (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with
    Cross-Architecture Knowledge Distillation"): only the difference pos - neg is matched, so
    the student may keep its own score scale (a cosine crossing cannot reach a cross-encoder's
    logit range).

    All four: (batch,) logits, row i being the same (query, positive, negative) triple.
    """
    _check_same_1d(
        student_pos=student_pos,
        student_neg=student_neg,
        teacher_pos=teacher_pos,
        teacher_neg=teacher_neg,
    )
    teacher_margin = (teacher_pos - teacher_neg).detach().to(student_pos.dtype)
    return F.mse_loss(student_pos - student_neg, teacher_margin)


def in_batch_negatives(
    query_vectors: torch.Tensor,
    doc_vectors: torch.Tensor,
    *,
    scale: float = 20.0,
    same_doc: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy of each query over every document of the batch (MNRL).

    Multiple-negatives ranking loss (Henderson et al. 2017; Karpukhin et al. 2020, DPR): row
    i's positive is doc i and every other row's doc is a negative, on scaled cosine similarity.
    Used as an auxiliary loss for a residual-crossing student, whose crossing layer scores only
    recalled candidates: it keeps the raw vectors good for kNN recall.

    query_vectors, doc_vectors: (batch, dim). same_doc: optional (batch, batch) bool, True
    where doc j is the same document as doc i; those off-diagonal entries are not negatives.
    """
    if query_vectors.dim() != 2:
        raise ValueError(
            f"query_vectors must have shape (batch, dim), got {tuple(query_vectors.shape)}"
        )
    if doc_vectors.shape != query_vectors.shape:
        raise ValueError(
            f"doc_vectors must have shape {tuple(query_vectors.shape)} like query_vectors, "
            f"got {tuple(doc_vectors.shape)}"
        )
    n = query_vectors.shape[0]
    sims = scale * F.normalize(query_vectors, dim=-1) @ F.normalize(doc_vectors, dim=-1).T
    if same_doc is not None:
        if same_doc.shape != (n, n):
            raise ValueError(f"same_doc must have shape ({n}, {n}), got {tuple(same_doc.shape)}")
        eye = torch.eye(n, dtype=torch.bool, device=sims.device)
        sims = sims.masked_fill(same_doc.to(torch.bool) & ~eye, float("-inf"))
    return F.cross_entropy(sims, torch.arange(n, device=sims.device))


def label_listwise(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean negative log-softmax of the labelled positives among one query's candidates.

    The hard-label term of Hinton et al.'s distillation, beside the teacher's soft one: the
    teacher's scores carry its mistakes, the qrels correct them. On SciFact it lifts the
    student past its teacher on validation (RESULTS.md). A list without a positive gives 0.

    scores: (candidates,) logits of one query's list; positives: (candidates,) bool.
    """
    _check_same_1d(scores=scores, positives=positives)
    positives = positives.to(torch.bool)
    if not bool(positives.any()):
        return scores.sum() * 0.0
    return -torch.log_softmax(scores, -1)[positives].mean()


def pointwise_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each (query, document) logit against its 0/1 label.

    The pointwise objective of BERT rerankers (Nogueira and Cho 2019, "Passage Re-ranking
    with BERT", monoBERT): each pair is classified on its own, so the logits keep an absolute
    meaning (a probability after the logistic) that a listwise loss leaves free.

    logits: (batch,) pair logits; labels: (batch,) 1.0 for a relevant pair, 0.0 otherwise.
    """
    _check_same_1d(logits=logits, labels=labels)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def localized_contrastive(group_logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of each group's positive (column 0) against its hard negatives.

    Localized Contrastive Estimation (Gao, Dai, Callan 2021, "Rethink Training of BERT
    Rerankers in Multi-Stage Retrieval Pipeline"): a group is one positive and negatives
    drawn from the first-stage retriever's top candidates, so the reranker learns to order
    exactly the lists it will see.

    group_logits: (groups, group size) logits, each row's positive first.
    """
    if group_logits.dim() != 2 or group_logits.shape[1] < 2:
        raise ValueError(
            "group_logits must have shape (groups, group size >= 2), "
            f"got {tuple(group_logits.shape)}"
        )
    target = torch.zeros(group_logits.shape[0], dtype=torch.long, device=group_logits.device)
    return F.cross_entropy(group_logits, target)


def listwise_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) between the softmaxes over each list, at temperature T.

    Listwise distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural
    Network", over a query's candidates as in ListNet, Cao et al. 2007): only each list's
    order and spacing are matched, not the scores' level, so a teacher may be any fusion of
    scores (its softmax is the target). Summed over candidates, averaged over lists.

    student_logits, teacher_logits: (lists, candidates) scores of the same candidates.
    """
    _check_lists(student_logits=student_logits, teacher_logits=teacher_logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    target = torch.softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, -1)
    return F.kl_div(
        torch.log_softmax(student_logits / temperature, -1), target, reduction="batchmean"
    )


def score_regression(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between each pair's logit and a target score for it.

    A cross-encoder's warm start before the labels: regressing onto fused BM25 + dense
    z-scores of hybrid-recall candidates (the cheap strong signal) teaches it lexical and
    semantic matching from pseudo-queries, which have no labels, at the logit scale of those
    z-scores. Margin-MSE's pointwise cousin (Hofstätter et al. 2020 regress margins).

    logits, targets: (batch,) scores of the same pairs.
    """
    _check_same_1d(logits=logits, targets=targets)
    return F.mse_loss(logits, targets.detach().to(logits.dtype))
