"""Choose a model's hybrid fusion on validation queries: the method (`rrf`, `zscore`) and the
BM25 weight against kNN's, by nDCG@10 of the fused list.

Each validation query is searched once per list (kNN and BM25, `depth` deep, as the searcher
recalls them for a search of `depth` candidates); every fusion of the grid is then scored on
those lists, so the grid costs one recall per query. The product's default (z-scores, equal
weights) comes first and is kept unless the best other fusion beats it by more than picking
the best of the grid on so few queries would by luck (`evaluation.significance`, p at most
`ALPHA`): a weight chosen on 60 validation queries by 0.004 moved SciFact test by 0.04
(RESULTS.md). Tune on validation queries only (for SciFact, the recipe's split of the train
queries): a choice made on the test queries measures nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twinbert_search.documents import Query
from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.metrics import evaluate_per_query
from twinbert_search.evaluation.significance import max_gain_test
from twinbert_search.search import Searcher
from twinbert_search.search.fusion import DEFAULT_HYBRID_FUSION, RRF, HybridFusion

__all__ = [
    "ALPHA",
    "BM25_WEIGHTS",
    "HYBRID_RULE",
    "HybridLists",
    "hybrid_grid",
    "hybrid_lists",
    "tune_hybrid_fusion",
]

BM25_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)  # BM25's weight against kNN's 1
ALPHA = 0.05
HYBRID_RULE = "zscore 1:1 kept unless the best of the grid passes max-T sign-flip p <= 0.05"


@dataclass(frozen=True)
class HybridLists:
    """One query's kNN and BM25 lists: (ids, scores), best first."""

    query_id: str
    dense: tuple[Sequence[str], Sequence[float]]
    bm25: tuple[Sequence[str], Sequence[float]]


def hybrid_grid(bm25_weights: Sequence[float] = BM25_WEIGHTS) -> list[HybridFusion]:
    """The default (z-scores, equal weights) first, then RRF with equal weights (what the
    engines fuse), then each method at each BM25 weight (kNN's 1), once."""
    grid = [DEFAULT_HYBRID_FUSION, RRF]
    for method in ("rrf", "zscore"):
        for weight in bm25_weights:
            fusion = HybridFusion(method, bm25=float(weight))
            if fusion not in grid:
                grid.append(fusion)
    return grid


def hybrid_lists(searcher: Searcher, queries: Sequence[Query], depth: int) -> list[HybridLists]:
    """Each query's kNN and BM25 lists from the searcher's store, `depth` deep."""
    store = searcher.store
    out = []
    for query in queries:
        dense = store.recall(searcher.encode(query.text), depth)
        sparse = store.recall_bm25(query.text, depth)
        out.append(
            HybridLists(
                query.id,
                (list(dense.ids), [float(s) for s in dense.recall_scores]),
                ([d for d, _ in sparse], [float(s) for _, s in sparse]),
            )
        )
    return out


def tune_hybrid_fusion(
    lists: Sequence[HybridLists],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    grid: Sequence[HybridFusion] | None = None,
    metric: str = "ndcg@10",
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """The fusion of `grid` (default `hybrid_grid()`) served after tuning on `lists`.

    The first of the grid is the baseline; the best other (by mean `metric`; among equals the
    earlier) replaces it only with a gain whose max-T sign-flip p is at most `alpha`. Returns
    `to_dict()` of the choice plus {metric, "baseline", "baseline_" + metric, "best", "best_" +
    metric, "p_value", "queries", "depth", "grid": [{"fusion", metric}], "rule"}.
    """
    judged = [item for item in lists if item.query_id in qrels]
    if not judged:
        raise ConfigurationError("tuning the hybrid fusion needs judged validation queries")
    grid = list(grid) if grid is not None else hybrid_grid()
    if not grid:
        raise ConfigurationError("tuning the hybrid fusion needs a grid of fusions")
    sub_qrels = {item.query_id: qrels[item.query_id] for item in judged}
    order = list(sub_qrels)
    per_query = []
    for fusion in grid:
        run = {item.query_id: _by_rank(fusion.fuse(item.dense, item.bm25)) for item in judged}
        scored = evaluate_per_query(sub_qrels, run, (metric,))
        name = next(iter(scored[order[0]]))
        per_query.append([scored[q][name] for q in order])
    means = [float(sum(v) / len(v)) for v in per_query]
    chosen, best, p_value = 0, 0, 1.0
    if len(grid) > 1:
        test = max_gain_test(per_query[0], per_query[1:])
        best, p_value = 1 + test.best, test.p_value
        if test.gain > 0 and p_value <= alpha:
            chosen = best
    return {
        **grid[chosen].to_dict(),
        metric: round(means[chosen], 4),
        "baseline": grid[0].describe(),
        f"baseline_{metric}": round(means[0], 4),
        "best": grid[best].describe(),
        f"best_{metric}": round(means[best], 4),
        "p_value": round(p_value, 4),
        "queries": len(judged),
        "depth": max((len(item.dense[0]) for item in judged), default=0),
        "grid": [
            {"fusion": f.describe(), metric: round(v, 4)} for f, v in zip(grid, means, strict=True)
        ],
        "rule": HYBRID_RULE,
    }


def _by_rank(fused: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores that keep the fused order exactly (the metrics' own tie rule never applies)."""
    return {doc_id: float(len(fused) - i) for i, (doc_id, _) in enumerate(fused)}
