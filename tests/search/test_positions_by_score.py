"""`positions_by_score` (numpy sort, id only on ties) equals the plain (-score, id) sort."""

from __future__ import annotations

import numpy as np
import pytest

from twinbert_search.search import positions_by_score


def reference(scores: np.ndarray, ids: list[str]) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i]))


@pytest.mark.parametrize("seed", range(20))
def test_matches_the_reference_sort_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    ids = [f"doc-{int(x)}" for x in rng.permutation(10_000)[:n]]
    if seed % 2:
        scores = rng.integers(0, 4, n).astype(np.float32)  # many ties
    else:
        scores = rng.standard_normal(n).astype(np.float32)
    order = positions_by_score(scores, ids)
    assert order.dtype == np.int64
    assert order.tolist() == reference(scores, ids)


def test_ties_break_by_id_not_by_position() -> None:
    order = positions_by_score(np.array([0.5, 0.9, 0.5], np.float32), ["b", "z", "a"])
    assert order.tolist() == [1, 2, 0]
