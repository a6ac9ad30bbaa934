"""Platt scaling: recovers a known calibration, keeps rankings, folds into both crossings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinbert_search.training.calibration import fit_platt
from twinbert_search.training.crossing import CosineCrossing, ResidualCrossing, fold_affine


def test_fit_platt_recovers_the_generating_calibration() -> None:
    rng = np.random.default_rng(0)
    # logits far from zero, as a listwise loss can leave them: sigmoid would be 1.0 everywhere
    logits = rng.normal(60.0, 3.0, 20_000)
    labels = rng.random(20_000) < 1 / (1 + np.exp(-(0.8 * logits - 50.0)))
    a, b = fit_platt(logits, labels)
    assert a == pytest.approx(0.8, rel=0.1) and b == pytest.approx(-50.0, rel=0.1)
    p = 1 / (1 + np.exp(-(a * logits + b)))
    assert p.min() > 0.0 and p.max() < 1.0
    assert abs(p.mean() - labels.mean()) < 0.01  # calibrated: mean probability = base rate


def test_fit_platt_never_reverses_a_ranking_and_rejects_one_class() -> None:
    logits = np.array([3.0, 2.0, 1.0, 0.0])
    a, _ = fit_platt(logits, np.array([0, 0, 1, 1]))  # anti-correlated labels
    assert a > 0
    with pytest.raises(ValueError, match="both"):
        fit_platt(logits, np.ones(4))
    with pytest.raises(ValueError, match="equal"):
        fit_platt(logits, np.ones(3))


@pytest.mark.parametrize(
    "crossing",
    [CosineCrossing(), ResidualCrossing(8, 4, "mul"), ResidualCrossing(8, 4, "concat")],
    ids=["cosine", "res-mul", "res-concat"],
)
def test_fold_affine_scales_and_shifts_the_logits(crossing: torch.nn.Module) -> None:
    torch.manual_seed(0)
    q, d = torch.randn(5, 8), torch.randn(5, 8)
    before = crossing(q, d).detach()
    fold_affine(crossing, 0.5, -2.0)
    assert torch.allclose(crossing(q, d), 0.5 * before - 2.0, atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        fold_affine(crossing, 0.0, 1.0)
