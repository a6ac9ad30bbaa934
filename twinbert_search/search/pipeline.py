"""The one search pipeline, in four stages, that the CLI, evaluation and the service all run.

1. encode    `Searcher.encode`: the query vector (the runtime's query encoder).
2. recall    `Searcher.recall`: kNN candidates with their stored vectors (hybrid: fused with
             BM25 by reciprocal rank); then `rank_recall`: their recall order and ranks.
3. rerank    `Searcher.rerank_scores`: crossing-layer scores of every candidate in one numpy
             call (optionally fused with BM25, `Searcher.lexical_weight`).
4. assemble  `top_positions` (the final order, cut to k), `stored_documents` (the hits'
             stored fields) and `build_hits` (both stages' scores and ranks per hit).

`Searcher.search` runs the stages in a row (CLI, evaluation, Python API). The service
(`service.engine`) awaits the same stages in its thread pools, around them its query cache and
its rerank budget (a rerank that fails or runs out of time leaves `scores` None: the recall
order). Both time the stages themselves, so each keeps its own timing keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.search.fusion import positions_by_score
from twinbert_search.stores.base import Candidates, VectorStore, take_ids

__all__ = [
    "Depths",
    "Hit",
    "Recall",
    "SearchResult",
    "build_hits",
    "rank_recall",
    "stored_documents",
    "top_positions",
]


@dataclass
class Hit:
    """One result with both stages' scores (rerank_score is None when not reranked)."""

    id: str
    rank: int
    score: float
    recall_rank: int
    recall_score: float
    rerank_score: float | None = None
    document: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.document is None:
            out.pop("document")
        return out


@dataclass
class SearchResult:
    """A search's hits, whether the rerank ran, per-stage timings and the whole recall order."""

    query: str
    hits: list[Hit]
    reranked: bool
    candidates: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    recall_ids: Sequence[str] = field(default_factory=list)  # the full recall order
    hybrid_fusion: str | None = None  # hybrid recall: "engine" or "client" fused it
    hybrid_method: str | None = None  # ... by "rrf" or "zscore" (the engine: rrf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "reranked": self.reranked,
            "candidates": self.candidates,
            "hybrid_fusion": self.hybrid_fusion,
            "hybrid_method": self.hybrid_method,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "hits": [h.to_dict() for h in self.hits],
        }


@dataclass(frozen=True)
class Depths:
    """How deep each stage goes: `k` hits of `candidates` reranked of `recall` recalled."""

    k: int
    candidates: int
    recall: int

    @classmethod
    def of(cls, k: int, candidates: int, recall_depth: int | None = None) -> Depths:
        """Candidates are at least k (a rerank cannot return more than it scored); recall is
        at least candidates, deeper with `recall_depth` (evaluation of Recall@1000)."""
        if k < 1 or candidates < 1:
            raise ConfigurationError(
                f"k and candidates must be positive (k={k}, candidates={candidates})"
            )
        candidates = max(candidates, k)
        return cls(k, candidates, max(candidates, recall_depth or 0))


# -- 2. recall -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recall:
    """What recall hands the rerank: the candidates and their recall order and ranks."""

    candidates: Candidates  # the top `Depths.candidates` by recall score
    order: np.ndarray  # positions in `candidates` by (-recall score, id)
    ranks: np.ndarray  # the 1-based recall rank of each position in `candidates`
    recalled: Candidates  # all that recall returned (deeper than `candidates` with a depth)
    recalled_order: np.ndarray  # positions in `recalled` by (-recall score, id)

    def ranked_ids(self) -> Sequence[str]:
        """Every recalled id in recall order (a view for stores that return row ids)."""
        return take_ids(self.recalled.ids, self.recalled_order)


def rank_recall(recalled: Candidates, depths: Depths) -> Recall:
    """Order what recall returned by (-score, id) and keep the top `depths.candidates`."""
    full_order = positions_by_score(recalled.recall_scores, recalled.ids)
    if depths.recall == depths.candidates:
        found, order = recalled, full_order
    else:
        found = recalled.take(full_order[: depths.candidates])
        order = positions_by_score(found.recall_scores, found.ids)
    # The inverse permutation of `order`: position order[r] holds the candidate ranked r + 1.
    ranks = np.empty(len(found), dtype=np.int64)
    ranks[order] = np.arange(1, len(found) + 1)
    return Recall(found, order, ranks, recalled, full_order)


# -- 4. assemble -----------------------------------------------------------------------------


def top_positions(recall: Recall, scores: np.ndarray | None, k: int) -> list[int]:
    """Positions in `recall.candidates` of the k hits: by rerank score, else in recall order."""
    order = recall.order if scores is None else positions_by_score(scores, recall.candidates.ids)
    return order[:k].tolist()


def stored_documents(
    store: VectorStore, candidates: Candidates, top: Sequence[int]
) -> list[dict[str, Any]]:
    """Stored fields of the hits: recall carried them, or the store reads them (one call)."""
    if candidates.documents is not None:
        return [candidates.documents[i] for i in top]
    return store.documents([candidates.ids[i] for i in top]) if len(top) else []


def build_hits(
    recall: Recall,
    scores: np.ndarray | None,
    top: Sequence[int],
    documents: Sequence[dict[str, Any]] | None = None,
) -> list[Hit]:
    """The hits at `top`, ranked from 1; `score` is the rerank score when there is one."""
    found = recall.candidates
    fields = [None] * len(top) if documents is None else documents
    hits = []
    for rank, (i, document) in enumerate(zip(top, fields, strict=True), start=1):
        rerank_score = None if scores is None else float(scores[i])
        recall_score = float(found.recall_scores[i])
        hits.append(
            Hit(
                id=found.ids[i],
                rank=rank,
                score=recall_score if rerank_score is None else rerank_score,
                recall_rank=int(recall.ranks[i]),
                recall_score=recall_score,
                rerank_score=rerank_score,
                document=document,
            )
        )
    return hits
