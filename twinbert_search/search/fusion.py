"""Ordering and fusion shared by every ranking: ties broken by id, RRF, the served rerank.

`positions_by_score` is the one sort of both stages (recall and rerank), so a tie breaks the
same way everywhere. Hybrid recall fuses kNN and BM25 rankings by reciprocal rank
(`fuse_hybrid`); a model distilled with BM25 in its teacher adds BM25 back into the rerank
(`lexically_fused_scores`, over `runtime.crossing.lexical_fusion`). The served rerank
combines the crossing with the recall stage's own signals (`served_scores`, over
`runtime.fusion.RerankFusion`): the weights a model was tuned with on validation queries, or
the recall order where its crossing adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from twinbert_search.runtime.crossing import lexical_fusion
from twinbert_search.runtime.fusion import RerankFusion
from twinbert_search.runtime.model import TwinBertRuntime
from twinbert_search.stores.base import Candidates, VectorStore

__all__ = [
    "RRF_K",
    "fuse_hybrid",
    "lexically_fused_scores",
    "positions_by_score",
    "reciprocal_rank_fusion",
    "served_scores",
]

RRF_K = 60


def positions_by_score(scores: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Positions sorted by (-score, id): deterministic when scores tie.

    A numpy sort by score; only runs of equal scores are then re-ordered by id.
    """
    neg = -np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(neg, kind="stable")
    ranked = neg[order]
    if len(ranked) < 2:
        return order.astype(np.int64, copy=False)
    tied = np.flatnonzero(ranked[1:] == ranked[:-1])
    if len(tied):
        # Runs of equal scores: [start, end) in sorted order, each sorted by id. `tied` holds
        # i where ranked[i] == ranked[i + 1]; a run of consecutive i from t to u covers the
        # sorted positions t..u + 1, hence the exclusive end u + 2.
        starts = tied[np.r_[True, np.diff(tied) > 1]]
        ends = tied[np.r_[np.diff(tied) > 1, True]] + 2
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            run = order[start:end].tolist()
            order[start:end] = sorted(run, key=ids.__getitem__)
    return order.astype(np.int64, copy=False)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], k: int = RRF_K
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(d) = sum 1 / (k + rank). Cormack et al. 2009."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def fuse_hybrid(
    dense: Candidates,
    sparse_ids: Sequence[str],
    n: int,
    fetch: Callable[[list[str]], Candidates],
    dim: int,
) -> Candidates:
    """The top `n` of kNN and BM25 fused by RRF, as candidates scored by their RRF score.

    BM25 hits that kNN missed have no vector yet, so they are fetched (one `fetch` call).
    """
    fused = reciprocal_rank_fusion([dense.ids, sparse_ids])[:n]
    position = {doc_id: i for i, doc_id in enumerate(dense.ids)}
    missing = [doc_id for doc_id, _ in fused if doc_id not in position]
    extra = fetch(missing) if missing else Candidates.empty(dim)
    extra_position = {doc_id: i for i, doc_id in enumerate(missing)}
    parts: list[Candidates] = []
    for doc_id, _ in fused:
        if doc_id in position:
            parts.append(dense.take([position[doc_id]]))
        else:
            parts.append(extra.take([extra_position[doc_id]]))
    merged = _concat(parts, dim)
    merged.recall_scores = np.asarray([s for _, s in fused], dtype=np.float32)
    return merged


def lexically_fused_scores(
    runtime: TwinBertRuntime,
    store: VectorStore,
    query_vector: np.ndarray,
    candidates: Candidates,
    query: str,
    weight: float,
) -> np.ndarray:
    """Crossing logits fused with the candidates' BM25 scores: z-score sums, not probabilities."""
    logits = runtime.crossing.logits(query_vector, candidates.vectors, candidates.precomputed)
    bm25 = store.bm25_scores(query, candidates.ids)
    return lexical_fusion(logits, bm25, weight)


def served_scores(
    runtime: TwinBertRuntime,
    store: VectorStore,
    fusion: RerankFusion,
    query_vector: np.ndarray,
    candidates: Candidates,
    query: str | None,
) -> np.ndarray:
    """The served rerank score of every candidate: `fusion` over the z-scored crossing logit,
    recall score (RRF for hybrid recall, kNN otherwise), BM25 and cosine; only the signals
    it weighs are computed (the recall order costs nothing)."""
    signals: dict[str, np.ndarray] = {}
    if fusion.crossing:
        signals["crossing"] = runtime.crossing.logits(
            query_vector, candidates.vectors, candidates.precomputed
        )
    if fusion.recall:
        signals["recall"] = np.asarray(candidates.recall_scores)
    if fusion.bm25:
        signals["bm25"] = store.bm25_scores(query or "", candidates.ids)
    if fusion.cosine:
        docs = np.asarray(candidates.vectors, dtype=np.float32)
        q = np.asarray(query_vector, dtype=np.float32)
        norms = np.maximum(np.linalg.norm(docs, axis=1) * np.linalg.norm(q), 1e-12)
        signals["cosine"] = docs @ q / norms
    return fusion.scores(**signals).astype(np.float32)


def _concat(parts: Sequence[Candidates], dim: int) -> Candidates:
    if not parts:
        return Candidates.empty(dim)
    pre = [p.precomputed for p in parts]
    docs = [p.documents for p in parts]
    return Candidates(
        ids=[i for p in parts for i in p.ids],
        recall_scores=np.concatenate([p.recall_scores for p in parts]),
        vectors=np.concatenate([p.vectors for p in parts]),
        precomputed=None if any(x is None for x in pre) else np.concatenate(pre),
        documents=None if any(d is None for d in docs) else [x for d in docs for x in d],
    )
