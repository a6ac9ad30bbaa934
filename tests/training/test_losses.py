"""Distillation losses: values against their formulas, minima, shape checks."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from twinbert_search.training.losses import (
    in_batch_negatives,
    label_listwise,
    listwise_kl,
    localized_contrastive,
    margin_mse,
    pointwise_bce,
    score_regression,
    soft_cross_entropy,
)


def test_soft_cross_entropy_matches_its_formula() -> None:
    student = torch.tensor([2.0, -1.0, 0.5])
    teacher = torch.tensor([4.0, -3.0, 0.0])
    t = 2.0
    p = torch.sigmoid(teacher / t)
    q = torch.sigmoid(student / t)
    expected = -(p * q.log() + (1 - p) * (1 - q).log()).mean()
    assert torch.allclose(soft_cross_entropy(student, teacher, t), expected, atol=1e-6)
    assert torch.allclose(soft_cross_entropy(student, teacher, temperature=t), expected, atol=1e-6)


def test_soft_cross_entropy_is_minimal_at_the_teacher() -> None:
    teacher = torch.tensor([3.0, -2.0, 0.7, 1.5])
    student = teacher.clone().requires_grad_(True)
    soft_cross_entropy(student, teacher, 1.5).backward()
    assert torch.allclose(student.grad, torch.zeros(4), atol=1e-7)
    at_teacher = soft_cross_entropy(teacher, teacher)
    assert float(soft_cross_entropy(teacher + 1.0, teacher)) > float(at_teacher)
    # No gradient reaches the teacher: its scores are labels.
    t = teacher.clone().requires_grad_(True)
    soft_cross_entropy(torch.zeros(4, requires_grad=True), t).backward()
    assert t.grad is None


def test_soft_cross_entropy_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(16) * 3
    student = torch.zeros(16, requires_grad=True)
    optimizer = torch.optim.SGD([student], lr=1.0)
    losses = []
    for _ in range(20):
        loss = soft_cross_entropy(student, teacher, 1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("student", "teacher", "message"),
    [
        (torch.zeros(3), torch.zeros(4), r"teacher_logits must have shape \(3,\).*got \(4,\)"),
        (torch.zeros(3, 1), torch.zeros(3, 1), r"must have shape \(batch,\), got \(3, 1\)"),
        (torch.zeros(3), torch.zeros(3, 1), r"must have shape \(3,\).*got \(3, 1\)"),
    ],
)
def test_soft_cross_entropy_states_expected_and_actual_shapes(student, teacher, message) -> None:
    with pytest.raises(ValueError, match=message):
        soft_cross_entropy(student, teacher, 1.0)


def test_soft_cross_entropy_rejects_bad_temperature() -> None:
    with pytest.raises(ValueError, match="temperature must be positive"):
        soft_cross_entropy(torch.zeros(2), torch.zeros(2), 0.0)


def test_margin_mse_matches_only_margins() -> None:
    t_pos, t_neg = torch.tensor([5.0, 2.0]), torch.tensor([1.0, 3.0])
    # Same margins on another scale: zero loss.
    assert float(margin_mse(t_pos - 10, t_neg - 10, t_pos, t_neg)) == pytest.approx(0.0)
    s_pos, s_neg = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    expected = F.mse_loss(s_pos - s_neg, t_pos - t_neg)
    assert torch.allclose(margin_mse(s_pos, s_neg, t_pos, t_neg), expected)


def test_margin_mse_checks_every_shape() -> None:
    ok = torch.zeros(4)
    with pytest.raises(ValueError, match=r"teacher_neg must have shape \(4,\).*got \(3,\)"):
        margin_mse(ok, ok, ok, torch.zeros(3))
    with pytest.raises(ValueError, match=r"student_pos must have shape \(batch,\)"):
        margin_mse(torch.zeros(4, 2), ok, ok, ok)


def test_in_batch_negatives_prefers_the_aligned_pairs() -> None:
    torch.manual_seed(0)
    q = torch.randn(4, 8)
    aligned = in_batch_negatives(q, q + 0.01 * torch.randn(4, 8))
    shuffled = in_batch_negatives(q, q[[1, 2, 3, 0]])
    assert float(aligned) < float(shuffled)


def test_in_batch_negatives_masks_duplicate_documents() -> None:
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    d = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # both queries share one positive document
    unmasked = in_batch_negatives(q, d)
    same = torch.ones(2, 2, dtype=torch.bool)
    masked = in_batch_negatives(q, d, same_doc=same)
    assert float(unmasked) == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-5)
    assert float(masked) == pytest.approx(0.0, abs=1e-6)


def test_in_batch_negatives_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"doc_vectors must have shape \(3, 4\).*got \(3, 5\)"):
        in_batch_negatives(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"query_vectors must have shape \(batch, dim\)"):
        in_batch_negatives(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"same_doc must have shape \(3, 3\), got \(2, 2\)"):
        in_batch_negatives(
            torch.zeros(3, 4), torch.zeros(3, 4), same_doc=torch.ones(2, 2, dtype=torch.bool)
        )


def test_label_listwise_pulls_the_positives_up() -> None:
    scores = torch.tensor([1.0, 0.0, 2.0, -1.0], requires_grad=True)
    positives = torch.tensor([True, False, True, False])
    loss = label_listwise(scores, positives)
    logp = torch.log_softmax(scores.detach(), -1)
    assert float(loss.detach()) == pytest.approx(float(-(logp[0] + logp[2]) / 2), rel=1e-6)
    loss.backward()
    # every negative is pushed down; the positives, together, up
    assert bool((scores.grad[~positives] > 0).all()) and float(scores.grad[positives].sum()) < 0
    # no positive among the candidates: nothing to learn from the labels
    assert float(label_listwise(scores, torch.zeros(4, dtype=torch.bool)).detach()) == 0.0
    with pytest.raises(ValueError, match="positives must have shape"):
        label_listwise(scores, torch.tensor([True]))


def test_pointwise_bce_matches_its_formula_and_checks_shapes() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(logits)
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert float(pointwise_bce(logits, labels)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\) like logits, got \(2,\)"):
        pointwise_bce(logits, labels[:2])


def test_localized_contrastive_is_the_positives_negative_log_softmax() -> None:
    groups = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, -1.0]])
    expected = -torch.log_softmax(groups, -1)[:, 0].mean()
    assert float(localized_contrastive(groups)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(groups, group size >= 2\), got \(3,\)"):
        localized_contrastive(groups[0])
    with pytest.raises(ValueError, match=r"got \(2, 1\)"):
        localized_contrastive(groups[:, :1])


def test_listwise_kl_is_zero_at_the_teacher_and_averages_over_lists() -> None:
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    assert float(listwise_kl(teacher + 7.0, teacher)) == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    p = torch.softmax(teacher / 2.0, -1)
    kl = (p * (p.log() - torch.log_softmax(student / 2.0, -1))).sum(-1).mean()
    assert float(listwise_kl(student, teacher, 2.0)) == pytest.approx(float(kl), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(lists, candidates\), got \(3,\)"):
        listwise_kl(student[0], teacher[0])
    with pytest.raises(ValueError, match=r"teacher_logits must have shape \(2, 3\)"):
        listwise_kl(student, teacher[:, :2])
    with pytest.raises(ValueError, match="temperature must be positive"):
        listwise_kl(student, teacher, 0.0)


def test_score_regression_is_the_mean_squared_error_and_checks_shapes() -> None:
    logits = torch.tensor([1.0, -1.0, 0.5], requires_grad=True)
    targets = torch.tensor([2.0, -1.0, 0.0])
    loss = score_regression(logits, targets)
    assert float(loss.detach()) == pytest.approx((1.0 + 0.0 + 0.25) / 3)
    loss.backward()
    assert logits.grad is not None and logits.grad[0] < 0  # pulls the first logit up
    with pytest.raises(ValueError, match=r"targets must have shape \(3,\)"):
        score_regression(logits, torch.zeros(2))
