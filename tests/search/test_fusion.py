"""The served rerank fusion: z-scored signals, the recall-order fallback, tuning on validation."""

from __future__ import annotations

import numpy as np
import pytest

from twinbert_search.errors import ConfigurationError
from twinbert_search.runtime.fusion import RECALL_ORDER, RerankFusion, zscore
from twinbert_search.search import positions_by_score
from twinbert_search.training.fusion import FusionList, tune_rerank_fusion


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
    tuned = tune_rerank_fusion(lists, qrels, features=("crossing", "recall"))
    assert RerankFusion.from_dict(tuned["weights"]) == RECALL_ORDER
    assert tuned["ndcg@10"] == tuned["recall_ndcg@10"]


def test_tuning_weighs_a_crossing_that_helps() -> None:
    lists, qrels = _lists(informative=True)
    tuned = tune_rerank_fusion(lists, qrels, features=("crossing", "recall"))
    assert tuned["weights"]["crossing"] > 0
    assert tuned["ndcg@10"] == pytest.approx(1.0)
    assert tuned["recall_ndcg@10"] < 0.5
    assert tuned["queries"] == 12 and tuned["candidates_tried"] > 2


def test_re_weighting_the_recall_signals_alone_is_not_a_rerank() -> None:
    """BM25 finds the positive and the crossing does not: the recall's own signals would win
    on validation, but without the crossing the served rerank is the recall order itself."""
    lists, qrels = _lists(informative=False)
    for item in lists:
        bm25 = np.zeros(20)
        bm25[5] = 10.0
        item.signals["bm25"] = bm25
    tuned = tune_rerank_fusion(lists, qrels, features=("crossing", "recall", "bm25"))
    assert RerankFusion.from_dict(tuned["weights"]) == RECALL_ORDER
    assert tuned["without_crossing_ndcg@10"] == pytest.approx(1.0)
    assert tuned["ndcg@10"] == tuned["recall_ndcg@10"] < 0.5
