"""The overlap split: test queries whose positives were training positives, and the rest."""

from __future__ import annotations

import pytest

from twinbert_search.evaluation.overlap import (
    OverlapSplit,
    overlap_metrics,
    overlap_split,
    stage_split,
)

# Training positives: d1, d2 (d9 judged non-relevant: not a positive).
TRAIN = {"t1": {"d1": 1}, "t2": {"d2": 1, "d9": 0}}
# q1 shares d1; q2 shares nothing (d9 was only judged non-relevant); q3 shares d2 among
# others; q4 judges d1 non-relevant only, so nothing it needs was a training positive.
TEST = {
    "q1": {"d1": 1},
    "q2": {"d5": 1, "d9": 1},
    "q3": {"d2": 1, "d6": 1},
    "q4": {"d1": 0, "d7": 1},
}


def test_split_on_a_toy_qrels() -> None:
    split = overlap_split(TEST, TRAIN)
    assert split == {
        "all": ["q1", "q2", "q3", "q4"],
        "overlap": ["q1", "q3"],
        "no_overlap": ["q2", "q4"],
    }
    assert OverlapSplit(TEST, TRAIN).counts() == {"all": 4, "overlap": 2, "no_overlap": 2}


def test_every_metric_per_subset() -> None:
    # q1 and q3 find a positive first; q2 and q4 rank theirs second (q2) or not at all (q4).
    run = {
        "q1": [("d1", 2.0), ("x", 1.0)],
        "q2": [("x", 2.0), ("d5", 1.0)],
        "q3": [("d6", 2.0), ("d2", 1.0)],
    }
    out = overlap_metrics(TEST, run, TRAIN, ("mrr@10", "recall@100"))
    assert out["overlap"] == pytest.approx({"queries": 2, "mrr@10": 1.0, "recall@100": 1.0})
    # q2: MRR 1/2, recall 1/2; q4 is absent from the run and counts 0.
    assert out["no_overlap"] == pytest.approx({"queries": 2, "mrr@10": 0.25, "recall@100": 0.25})
    assert out["all"] == pytest.approx({"queries": 4, "mrr@10": 0.625, "recall@100": 0.625})


def test_an_empty_subset_has_its_count_only() -> None:
    out = overlap_metrics({"q1": {"d1": 1}}, {"q1": [("d1", 1.0)]}, TRAIN, ("ndcg@10",))
    assert out["no_overlap"] == {"queries": 0}
    assert out["overlap"]["ndcg@10"] == pytest.approx(1.0)


def test_both_stages_per_subset() -> None:
    recall = {"q1": [("x", 2.0), ("d1", 1.0)], "q2": [("d5", 2.0)]}
    reranked = {"q1": [("d1", 2.0), ("x", 1.0)], "q2": [("x", 2.0), ("d5", 1.0)]}
    out = stage_split(TEST, {"recall": recall, "reranked": reranked}, TRAIN, ("mrr@10",))
    assert list(out) == ["all", "overlap", "no_overlap"]
    assert out["overlap"] == {"queries": 2, "recall": {"mrr@10": 0.25}, "reranked": {"mrr@10": 0.5}}
    assert out["no_overlap"]["reranked"] == {"mrr@10": 0.25}  # q2 at rank 2, q4 missing
