"""The max-T sign-flip test that guards a choice made on a few validation queries."""

from __future__ import annotations

import numpy as np
import pytest

from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.significance import max_gain_test


def test_exact_p_value_of_one_candidate_is_the_sign_flip_count() -> None:
    """Four queries: gains +1, +1, +1, -1 (mean 0.5). Of the 16 sign patterns, those with a
    mean >= 0.5 have at least three positive terms: 4 + 1 of them, p = 5/16."""
    result = max_gain_test([0, 0, 0, 0], [[1, 1, 1, -1]])
    assert result.best == 0 and result.gain == pytest.approx(0.5)
    assert result.p_value == pytest.approx(5 / 16)
    assert (result.wins, result.losses, result.queries) == (3, 1, 4)


def test_more_candidates_raise_the_bar_for_the_same_best() -> None:
    """The max over candidates corrects for choosing: a rival below the best on the observed
    signs, but able to beat it when signs flip, raises the best's p."""
    base = np.zeros(8)
    best = np.array([1.0, 1, 1, 1, 1, 0, 0, -0.5])
    alone = max_gain_test(base, [best]).p_value
    rivals = np.array([[1.5, -1.5, 1.5, -1.5, 0, 1, 1, 1]])  # mean 0.375, but it swings
    with_rivals = max_gain_test(base, [best, *rivals])
    assert with_rivals.best == 0
    assert with_rivals.p_value > alone


def test_a_consistent_gain_is_significant_and_noise_is_not() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(40)
    noise = [base + rng.normal(0, 0.1, 40) for _ in range(10)]
    assert max_gain_test(base, noise).p_value > 0.05
    better = base + 0.05 + rng.normal(0, 0.02, 40)  # 40 queries: sampled, not enumerated
    result = max_gain_test(base, [*noise, better])
    assert result.best == 10 and result.p_value < 0.01
    assert result.p_value == max_gain_test(base, [*noise, better]).p_value  # seeded


def test_shapes_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="at least one"):
        max_gain_test([0.1, 0.2], [])
    with pytest.raises(ConfigurationError, match="one score per"):
        max_gain_test([0.1, 0.2], [[0.3]])
