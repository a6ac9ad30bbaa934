"""Recall and rerank side by side, and the line that says when the rerank loses."""

from __future__ import annotations

import pytest

from twinbert_search.evaluation.compare import format_stage_table, rerank_losses, stage_rows

RECALL = {"ndcg@10": 0.70, "mrr@10": 0.65, "recall@100": 0.95}


def test_rows_hold_both_stages_and_their_difference() -> None:
    reranked = {"ndcg@10": 0.72, "mrr@10": 0.60, "recall@100": 0.95}
    rows = stage_rows(RECALL, reranked)
    assert [r[0] for r in rows] == ["ndcg@10", "mrr@10", "recall@100"]
    assert rows[0][3] == pytest.approx(0.02) and rows[1][3] == pytest.approx(-0.05)
    assert rerank_losses(RECALL, reranked) == ["mrr@10"]
    assert rerank_losses(RECALL, reranked, ("ndcg@10",)) == []


def test_the_table_says_when_the_rerank_loses() -> None:
    lost = format_stage_table(RECALL, {**RECALL, "ndcg@10": 0.66}, title="all 3 queries")
    assert lost[0] == "all 3 queries" and "-0.0400" in lost[2]
    assert lost[-1] == "the rerank LOSES to its recall on ndcg@10 (0.6600 < 0.7000)"
    kept = format_stage_table(RECALL, {**RECALL, "ndcg@10": 0.70000001})
    assert kept[-1] == "the rerank does not lose to its recall on ndcg@10"
