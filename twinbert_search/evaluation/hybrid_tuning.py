"""Choose a model's hybrid fusion on validation queries: the method (`rrf`, `zscore`) and the
BM25 weight against kNN's, by nDCG@10 of the fused list.

Each validation query is searched once per list (kNN and BM25, `depth` deep, as the searcher
recalls them for a search of `depth` candidates); every fusion of the grid is then scored on
those lists, so the grid costs one recall per query. RRF with equal weights, what the engines
fuse, comes first and is kept unless another fusion beats it; ties keep the earlier one. Tune
on validation queries only (for SciFact, the recipe's split of the train queries): a choice
made on the test queries measures nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twinbert_search.documents import Query
from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.search import Searcher
from twinbert_search.search.fusion import RRF, HybridFusion

__all__ = ["BM25_WEIGHTS", "HybridLists", "hybrid_grid", "hybrid_lists", "tune_hybrid_fusion"]

BM25_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)  # BM25's weight against kNN's 1


@dataclass(frozen=True)
class HybridLists:
    """One query's kNN and BM25 lists: (ids, scores), best first."""

    query_id: str
    dense: tuple[Sequence[str], Sequence[float]]
    bm25: tuple[Sequence[str], Sequence[float]]


def hybrid_grid(bm25_weights: Sequence[float] = BM25_WEIGHTS) -> list[HybridFusion]:
    """RRF with equal weights first, then each method at each BM25 weight (kNN's 1), once."""
    grid = [RRF]
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
) -> dict[str, Any]:
    """The fusion of `grid` (default `hybrid_grid()`) with the best `metric` on `lists`.

    The first of the grid is the baseline: another fusion must beat it to be chosen; among
    equals the earlier wins. Returns `to_dict()` of the choice plus {metric, "baseline",
    "baseline_" + metric, "queries", "grid": [{"fusion", metric}]}.
    """
    judged = [item for item in lists if item.query_id in qrels]
    if not judged:
        raise ConfigurationError("tuning the hybrid fusion needs judged validation queries")
    grid = list(grid) if grid is not None else hybrid_grid()
    if not grid:
        raise ConfigurationError("tuning the hybrid fusion needs a grid of fusions")
    sub_qrels = {item.query_id: qrels[item.query_id] for item in judged}
    scored = []
    for fusion in grid:
        run = {item.query_id: _by_rank(fusion.fuse(item.dense, item.bm25)) for item in judged}
        scored.append((evaluate(sub_qrels, run, (metric,))[metric], fusion))
    best_value, best = scored[0]
    for value, fusion in scored[1:]:
        if value > best_value:
            best_value, best = value, fusion
    return {
        **best.to_dict(),
        metric: round(best_value, 4),
        "baseline": scored[0][1].describe(),
        f"baseline_{metric}": round(scored[0][0], 4),
        "queries": len(judged),
        "depth": max((len(item.dense[0]) for item in judged), default=0),
        "grid": [{"fusion": f.describe(), metric: round(v, 4)} for v, f in scored],
    }


def _by_rank(fused: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores that keep the fused order exactly (the metrics' own tie rule never applies)."""
    return {doc_id: float(len(fused) - i) for i, (doc_id, _) in enumerate(fused)}
