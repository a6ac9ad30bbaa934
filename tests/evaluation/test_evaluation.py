"""Metrics against hand-computed values, and the pytrec_eval pitfalls evaluate() corrects."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import pytrec_eval

from twinbert_search.errors import ConfigurationError, InputError
from twinbert_search.evaluation.metrics import (
    PRIMARY_METRIC,
    LatencyRecorder,
    Metric,
    evaluate,
    evaluate_per_query,
    parse_metric,
)

# q1: relevant d1, d3; ranked d2, d1, d4, d3.
# q2: relevant d5; absent from the run.
# q3: relevant d6; ten non-relevant docs first, d6 at rank 11.
QRELS = {"q1": {"d1": 1, "d3": 1, "d9": 0}, "q2": {"d5": 1}, "q3": {"d6": 1}}
RUN = {
    "q1": [("d2", 4.0), ("d1", 3.0), ("d4", 2.0), ("d3", 1.0)],
    "q3": [(f"n{i:02d}", 20.0 - i) for i in range(10)] + [("d6", 1.0)],
    "q_unjudged": [("d1", 1.0)],
}

# nDCG@10 of q1: DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3).
Q1_NDCG = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))  # 0.650921...


def test_hand_computed_per_query() -> None:
    per_query = evaluate_per_query(QRELS, RUN, ("ndcg@10", "mrr@10", "recall@100", "recall@2"))
    assert set(per_query) == {"q1", "q2", "q3"}  # judged queries only
    assert per_query["q1"] == pytest.approx(
        # MRR: first relevant at rank 2 -> 1/2. Recall@2: d1 of {d1, d3} -> 1/2.
        {"ndcg@10": Q1_NDCG, "mrr@10": 0.5, "recall@100": 1.0, "recall@2": 0.5}
    )
    # Not retrieved: zero everywhere.
    assert per_query["q2"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0, "recall@2": 0.0}
    # Relevant doc at rank 11: outside every @10 cutoff (plain recip_rank would say 1/11),
    # inside recall@100.
    assert per_query["q3"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 1.0, "recall@2": 0.0}


def test_hand_computed_means_count_missing_queries_as_zero() -> None:
    scores = evaluate(QRELS, RUN)
    assert list(scores) == ["ndcg@10", "mrr@10", "recall@100", "recall@1000"]
    # Averaged over the three judged queries, not the two that pytrec_eval would see.
    assert scores == pytest.approx(
        {"ndcg@10": Q1_NDCG / 3, "mrr@10": 0.5 / 3, "recall@100": 2 / 3, "recall@1000": 2 / 3}
    )


def test_map_and_precision() -> None:
    scores = evaluate_per_query(QRELS, RUN, ("map@10", "precision@2", "mrr@1"))["q1"]
    # AP@10 of q1: precision at the relevant ranks 2 and 4 is 1/2 and 2/4; over 2 relevant -> 0.5.
    # P@2: one relevant in the top 2. MRR@1: the top doc is not relevant.
    assert scores == pytest.approx({"map@10": 0.5, "precision@2": 0.5, "mrr@1": 0.0})


def test_ranked_list_order_is_kept_despite_tied_scores() -> None:
    qrels = {"q": {"a": 1}}
    tied = {"q": {"a": 1.0, "b": 1.0}}
    # The pitfall: pytrec_eval breaks the tie by docid descending and puts "b" first.
    raw = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(tied)
    assert raw["q"]["recip_rank"] == 0.5
    assert evaluate(qrels, {"q": [("a", 1.0), ("b", 1.0)]}, ["mrr@10"]) == {"mrr@10": 1.0}
    assert evaluate(qrels, {"q": [("b", 1.0), ("a", 1.0)]}, ["mrr@10"]) == {"mrr@10": 0.5}
    # The given order wins even over scores that disagree with it (e.g. after a rerank).
    assert evaluate(qrels, {"q": [("b", 0.1), ("a", 0.9)]}, ["mrr@10"]) == {"mrr@10": 0.5}


def test_mapping_run_is_ranked_like_the_run_file() -> None:
    # Ties broken by docid ascending, as write_run does: "a" first.
    assert evaluate({"q": {"a": 1}}, {"q": {"b": 1.0, "a": 1.0}}, ["mrr@10"]) == {"mrr@10": 1.0}
    assert evaluate({"q": {"a": 1}}, {"q": {"b": 2.0, "a": 1.0}}, ["mrr@10"]) == {"mrr@10": 0.5}


def test_duplicate_doc_in_ranked_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="more than once"):
        evaluate({"q": {"a": 1}}, {"q": [("a", 2.0), ("a", 1.0)]})


def test_empty_qrels_is_an_input_error() -> None:
    with pytest.raises(InputError, match="qrels are empty"):
        evaluate({}, RUN)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("ndcg@10", Metric("ndcg", 10)),
        ("MRR@10", Metric("mrr", 10)),
        (" recall@1000 ", Metric("recall", 1000)),
        ("map@100", Metric("map", 100)),
        ("precision@5", Metric("precision", 5)),
    ],
)
def test_parse_metric(name: str, parsed: Metric) -> None:
    assert parse_metric(name) == parsed
    assert parse_metric(parsed.name) == parsed


@pytest.mark.parametrize("name", ["ndcg", "ndcg@0", "ndcg@x", "ndcg_cut_10", "f1@10", "P@5"])
def test_parse_metric_rejects(name: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown metric"):
        parse_metric(name)


def test_metric_names_are_canonical_in_results() -> None:
    assert list(evaluate(QRELS, RUN, ["NDCG@10", "ndcg@10"])) == ["ndcg@10"]
    assert PRIMARY_METRIC == "ndcg@10"


def test_latency_recorder_summary() -> None:
    recorder = LatencyRecorder()
    for ms in range(1, 101):
        recorder.record("search", ms / 1000)
    with recorder.measure("encode"):
        pass
    with pytest.raises(RuntimeError), recorder.measure("encode"):
        raise RuntimeError("failed requests are not timed")
    summary = recorder.summary()
    # numpy's linear interpolation: p50 of 1..100 is 50.5, p99 is 99 + 0.01 * (100 - 99).
    assert summary["search"] == pytest.approx(
        {"p50_ms": 50.5, "p99_ms": 99.01, "mean_ms": 50.5, "n": 100}
    )
    assert summary["encode"]["n"] == 1
    with pytest.raises(ValueError):
        recorder.record("search", -1.0)


def test_the_package_imports_no_module() -> None:
    """`import twinbert_search.evaluation` stays cheap: pytrec_eval and the model load only
    when a module that needs them is imported."""
    code = (
        "import sys, twinbert_search.evaluation; "
        "heavy = [m for m in ('pytrec_eval', 'onnxruntime', 'torch', 'tqdm') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
