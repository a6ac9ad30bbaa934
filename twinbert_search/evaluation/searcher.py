"""Evaluate a Searcher on judged queries: both stages' quality and per-query latency.

One recall per query (deep enough for Recall@1000) serves both runs: the recall-only run is
the recall order; the reranked run is the reranked top `candidates` followed by the rest of
the recall order, so deep recall metrics stay comparable between the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from twinbert_search.documents import Query
from twinbert_search.evaluation.metrics import DEFAULT_METRICS, LatencyRecorder, evaluate
from twinbert_search.search import Searcher

Run = dict[str, list[tuple[str, float]]]


@dataclass
class EvalReport:
    """Both runs' metrics (recall-only and reranked) and per-stage latency; `runs` are kept
    for run files but left out of `to_dict`."""

    queries: int
    candidates: int
    recall_depth: int
    recall: dict[str, float]
    reranked: dict[str, float]
    latency: dict[str, dict[str, float]]
    runs: dict[str, Run] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "candidates": self.candidates,
            "recall_depth": self.recall_depth,
            "recall": {k: round(v, 4) for k, v in self.recall.items()},
            "reranked": {k: round(v, 4) for k, v in self.reranked.items()},
            "latency_ms": {
                stage: {k: round(v, 3) for k, v in stats.items()}
                for stage, stats in self.latency.items()
            },
        }


def _ranked(ids: Sequence[str]) -> list[tuple[str, float]]:
    n = len(ids)
    return [(doc_id, float(n - i)) for i, doc_id in enumerate(ids)]


def evaluate_searcher(
    searcher: Searcher,
    queries: Sequence[Query],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    candidates: int = 100,
    recall_depth: int = 1000,
    hybrid: bool = False,
    lexical_weight: float | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    progress: bool = True,
) -> EvalReport:
    """Search every judged query once (single-query path, as a user would) and score both runs."""
    latency = LatencyRecorder()
    recall_run: Run = {}
    rerank_run: Run = {}
    judged = [q for q in queries if q.id in qrels]
    for query in tqdm(judged, desc="evaluating", unit="query", disable=not progress):
        result = searcher.search(
            query.text,
            k=candidates,
            candidates=candidates,
            recall_depth=recall_depth,
            hybrid=hybrid,
            lexical_weight=lexical_weight,
            fetch_documents=False,  # ids are all a run needs
        )
        for stage, ms in result.timings_ms.items():
            latency.record(stage, ms / 1e3)
        recall_run[query.id] = _ranked(result.recall_ids)
        top = [h.id for h in result.hits]
        reranked_set = set(top)
        rest = [doc_id for doc_id in result.recall_ids if doc_id not in reranked_set]
        rerank_run[query.id] = _ranked(top + rest)
    return EvalReport(
        queries=len(judged),
        candidates=candidates,
        recall_depth=recall_depth,
        recall=evaluate(qrels, recall_run, metrics),
        reranked=evaluate(qrels, rerank_run, metrics),
        latency=latency.summary(),
        runs={"recall": recall_run, "reranked": rerank_run},
    )
