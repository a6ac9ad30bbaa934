"""The search pipeline's model-free stages: depths, recall order and ranks, hits, hybrid fusion.

`Searcher.search` and the service both chain these, so what is pinned here holds for the
CLI, evaluation and HTTP alike (tests/search/test_search.py and tests/service/test_service.py
run them end
to end on a tiny model).
"""

from __future__ import annotations

import numpy as np
import pytest

from twinbert_search.errors import ConfigurationError
from twinbert_search.search.fusion import fuse_hybrid, reciprocal_rank_fusion
from twinbert_search.search.pipeline import (
    Depths,
    build_hits,
    rank_recall,
    stored_documents,
    top_positions,
)
from twinbert_search.stores.base import Candidates

DIM = 4


def candidates(ids: list[str], scores: list[float], *, documents: bool = False) -> Candidates:
    n = len(ids)
    vectors = np.arange(n * DIM, dtype=np.float32).reshape(n, DIM)
    return Candidates(
        ids=list(ids),
        recall_scores=np.asarray(scores, dtype=np.float32),
        vectors=vectors,
        documents=[{"text": f"text of {i}"} for i in ids] if documents else None,
    )


def test_depths_raise_candidates_to_k_and_recall_to_candidates() -> None:
    assert Depths.of(10, 100) == Depths(10, 100, 100)
    assert Depths.of(30, 5) == Depths(30, 30, 30)
    assert Depths.of(10, 100, recall_depth=1000) == Depths(10, 100, 1000)
    assert Depths.of(10, 100, recall_depth=50) == Depths(10, 100, 100)
    with pytest.raises(ConfigurationError, match="positive"):
        Depths.of(0, 10)
    with pytest.raises(ConfigurationError, match="positive"):
        Depths.of(10, 0)


def test_recall_ranks_break_ties_by_id() -> None:
    found = rank_recall(candidates(["c", "a", "b"], [0.5, 0.5, 0.9]), Depths.of(3, 3))
    assert found.order.tolist() == [2, 1, 0]  # b (0.9), then a before c at 0.5
    assert found.ranks.tolist() == [3, 2, 1]
    assert list(found.ranked_ids()) == ["b", "a", "c"]
    assert found.candidates.ids == ["c", "a", "b"]  # positions are the store's


def test_a_deeper_recall_reranks_only_the_top_candidates() -> None:
    recalled = candidates(["a", "b", "c", "d"], [0.1, 0.4, 0.3, 0.2])
    found = rank_recall(recalled, Depths.of(1, 2, recall_depth=4))
    assert list(found.candidates.ids) == ["b", "c"]
    assert found.ranks.tolist() == [1, 2]
    assert list(found.ranked_ids()) == ["b", "c", "d", "a"]


def test_hits_carry_both_stages_and_fall_back_to_the_recall_order() -> None:
    found = rank_recall(candidates(["a", "b", "c"], [0.9, 0.5, 0.1]), Depths.of(2, 3))
    scores = np.asarray([0.2, 0.3, 0.8])
    top = top_positions(found, scores, 2)
    assert top == [2, 1]
    hits = build_hits(found, scores, top)
    assert [(h.id, h.rank, h.recall_rank) for h in hits] == [("c", 1, 3), ("b", 2, 2)]
    assert hits[0].score == hits[0].rerank_score == pytest.approx(0.8)
    assert hits[0].recall_score == pytest.approx(0.1) and hits[0].document is None
    degraded = build_hits(found, None, top_positions(found, None, 2))
    assert [h.id for h in degraded] == ["a", "b"]
    assert all(h.rerank_score is None and h.score == h.recall_score for h in degraded)


def test_documents_come_from_recall_when_it_carried_them() -> None:
    found = rank_recall(candidates(["a", "b"], [0.9, 0.5], documents=True), Depths.of(2, 2))

    class NoStore:
        def documents(self, ids: list[str]) -> list[dict[str, str]]:
            raise AssertionError("recall carried the fields; the store must not be read")

    top = top_positions(found, None, 2)
    documents = stored_documents(NoStore(), found.candidates, top)  # type: ignore[arg-type]
    hits = build_hits(found, None, top, documents)
    assert [h.document for h in hits] == [{"text": "text of a"}, {"text": "text of b"}]
    with pytest.raises(ValueError):
        build_hits(found, None, top, documents[:1])  # one document per hit, no fewer


def test_hybrid_fusion_fetches_only_what_knn_missed() -> None:
    dense = candidates(["a", "b", "c"], [0.9, 0.8, 0.7])
    fetched: list[list[str]] = []

    def fetch(ids: list[str]) -> Candidates:
        fetched.append(ids)
        return candidates(ids, [0.0] * len(ids))

    merged = fuse_hybrid(dense, [("x", 3.0), ("c", 2.0), ("a", 1.0)], 4, fetch, DIM)
    expected = reciprocal_rank_fusion([["a", "b", "c"], ["x", "c", "a"]])[:4]
    assert list(merged.ids) == [doc_id for doc_id, _ in expected]
    np.testing.assert_allclose(merged.recall_scores, [s for _, s in expected], rtol=1e-6)
    assert fetched == [["x"]]
    np.testing.assert_array_equal(merged.vectors[list(merged.ids).index("b")], dense.vectors[1])
