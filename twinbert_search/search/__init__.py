"""Search: encode the query, recall candidates, rerank them with the crossing layer.

`searcher` holds the `Searcher` (the model and the store, one method per stage's work),
`pipeline` the stages every caller runs and the results (`SearchResult`, `Hit`), `fusion` the
ordering and fusion they share (`positions_by_score`, hybrid recall's RRF or z-scores, BM25 in
the rerank), and `factory` `open_searcher` (a Searcher from CLI or service options).
"""

from twinbert_search.search.fusion import RRF_K, positions_by_score, reciprocal_rank_fusion
from twinbert_search.search.pipeline import Hit, SearchResult
from twinbert_search.search.searcher import Searcher

__all__ = [
    "RRF_K",
    "Hit",
    "SearchResult",
    "Searcher",
    "positions_by_score",
    "reciprocal_rank_fusion",
]
