"""Search: encode the query, recall candidates, rerank them with the crossing layer."""

from twinbert_search.search.pipeline import (
    RRF_K,
    Hit,
    Searcher,
    SearchResult,
    positions_by_score,
    reciprocal_rank_fusion,
)

__all__ = [
    "RRF_K",
    "Hit",
    "SearchResult",
    "Searcher",
    "positions_by_score",
    "reciprocal_rank_fusion",
]
