"""The served rerank fusion: z-scored signals, the recall-order fallback, tuning on validation."""

from __future__ import annotations

import numpy as np
import pytest

from twinbert_search.errors import ConfigurationError
from twinbert_search.runtime.fusion import RECALL_ORDER, RerankFusion, zscore
from twinbert_search.search import positions_by_score
from twinbert_search.training.fusion import (
    ALPHA,
    RULE,
    FusionList,
    fusion_candidates,
    tune_rerank_fusion,
)


def test_a_crossing_with_zero_weight_reproduces_the_recall_order() -> None:
    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(50)]
    recall = np.sort(rng.random(50))[::-1]  # the recall list, best first
    crossing = rng.normal(size=50)  # a crossing that disagrees with it
    fusion = RerankFusion(crossing=0.0, recall=1.0)
    assert fusion.is_recall_order and not fusion.uses_crossing
    order = positions_by_score(fusion.scores(crossing=crossing, recall=recall), ids)
    assert order.tolist() == list(range(50))
    # With weight on the crossing, the order follows it.
    flipped = positions_by_score(RerankFusion(crossing=1.0).scores(crossing=crossing), ids)
    assert flipped.tolist() == np.argsort(-crossing, kind="stable").tolist()


def test_scores_are_weighted_z_scores() -> None:
    a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 0.0, 5.0])
    fused = RerankFusion(crossing=1.0, bm25=0.5).scores(crossing=a, bm25=b)
    assert fused == pytest.approx(zscore(a) + 0.5 * zscore(b))
    assert zscore(np.ones(4)).tolist() == [0.0] * 4


def test_weights_are_checked_and_read_from_the_manifest() -> None:
    with pytest.raises(ConfigurationError, match="at least one"):
        RerankFusion(crossing=0.0)
    with pytest.raises(ConfigurationError, match=">= 0"):
        RerankFusion(crossing=-1.0)
    with pytest.raises(ConfigurationError, match="not given"):
        RerankFusion(crossing=1.0, bm25=1.0).scores(crossing=np.zeros(2))
    with pytest.raises(ConfigurationError, match="unknown"):
        RerankFusion.from_dict({"crossing": 1.0, "colour": 2.0})
    extra = {"rerank_fusion": {"weights": {"crossing": 0.5, "recall": 1.0}}}
    assert RerankFusion.from_manifest(extra) == RerankFusion(crossing=0.5, recall=1.0)
    assert RerankFusion.from_manifest({}) is None


def _lists(informative: bool, n_queries: int = 12) -> tuple[list[FusionList], dict]:
    """Queries whose one positive sits at recall rank 5; the crossing finds it or not."""
    rng = np.random.default_rng(1)
    lists, qrels = [], {}
    for q in range(n_queries):
        ids = [f"q{q}d{i}" for i in range(20)]
        recall = np.linspace(1.0, 0.0, 20)
        crossing = rng.normal(size=20)
        if informative:
            crossing[5] += 10.0
        else:
            crossing[5] -= 10.0  # the crossing buries the positive
        lists.append(FusionList(f"q{q}", ids, {"crossing": crossing, "recall": recall}))
        qrels[f"q{q}"] = {ids[5]: 1}
    return lists, qrels


def test_tuning_falls_back_to_the_recall_order_where_the_crossing_adds_nothing() -> None:
    lists, qrels = _lists(informative=False)
    tuned = tune_rerank_fusion(lists, qrels)
    assert RerankFusion.from_dict(tuned["weights"]) == RECALL_ORDER
    assert tuned["ndcg@10"] == tuned["recall_ndcg@10"]
    assert tuned["rule"] == RULE


def test_tuning_weighs_a_crossing_that_helps() -> None:
    lists, qrels = _lists(informative=True)
    tuned = tune_rerank_fusion(lists, qrels)
    assert tuned["weights"]["crossing"] > 0 and tuned["weights"]["bm25"] == 0
    assert tuned["ndcg@10"] == pytest.approx(1.0)
    assert tuned["recall_ndcg@10"] < 0.5
    assert tuned["p_value"] <= ALPHA and tuned["wins"] == 12 and tuned["losses"] == 0
    assert tuned["queries"] == 12 and tuned["candidates_tried"] == len(fusion_candidates())


def test_a_gain_on_a_few_queries_that_chance_explains_is_not_kept() -> None:
    """The crossing finds the positive on 3 of 12 queries and buries it on 1: it wins on
    validation, but not by more than picking the best of the grid would by luck."""
    lists, qrels = _lists(informative=False)
    for item in lists:
        item.signals["crossing"][:] = 0.0  # says nothing: the recall order stays
    for item in lists[:3]:
        item.signals["crossing"][5] = 10.0
    lists[3].signals["crossing"][5] = -10.0
    tuned = tune_rerank_fusion(lists, qrels)
    assert tuned["best_ndcg@10"] > tuned["recall_ndcg@10"]
    assert tuned["wins"] == 3 and tuned["losses"] == 1
    assert tuned["p_value"] > ALPHA
    assert RerankFusion.from_dict(tuned["weights"]) == RECALL_ORDER
    assert tuned["ndcg@10"] == tuned["recall_ndcg@10"]


def test_the_grid_is_the_recall_plus_the_crossing_never_bm25_re_weighted() -> None:
    """BM25 would find the positive here; the rerank may not re-tune the recall's own fusion
    (the hybrid fusion weighed BM25 on validation already), only add the crossing."""
    grid = fusion_candidates()
    assert grid[0] == RECALL_ORDER and grid[-1] == RerankFusion(crossing=1.0)
    assert all(f.bm25 == 0 and f.cosine == 0 for f in grid)
    assert all(f.recall == 1.0 for f in grid[1:-1])
    lists, qrels = _lists(informative=False)
    for item in lists:
        bm25 = np.zeros(20)
        bm25[5] = 10.0
        item.signals["bm25"] = bm25
    tuned = tune_rerank_fusion(lists, qrels)
    assert RerankFusion.from_dict(tuned["weights"]) == RECALL_ORDER
    assert tuned["ndcg@10"] == tuned["recall_ndcg@10"] < 0.5


def test_tuning_names_a_query_without_judgments() -> None:
    lists, qrels = _lists(informative=True)
    del qrels["q3"]
    with pytest.raises(ConfigurationError, match="'q3'"):
        tune_rerank_fusion(lists, qrels)
