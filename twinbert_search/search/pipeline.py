"""Two-stage search: kNN recall over stored document vectors, then the crossing-layer rerank.

The query is encoded once; recall returns the candidates with their stored vectors (and the
crossing layer's per-document precomputation), and one batched numpy call scores them all.
Optional hybrid recall fuses BM25 and kNN by reciprocal rank before the rerank, and a model
distilled by the recipe can fuse BM25 into the rerank itself (`lexical_weight`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError, StoreError
from twinbert_search.runtime.crossing import lexical_fusion
from twinbert_search.runtime.model import TwinBertRuntime, document_graph_of
from twinbert_search.stores.base import Candidates, Filters, VectorStore, take_ids

RRF_K = 60


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
    query: str
    hits: list[Hit]
    reranked: bool
    candidates: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    recall_ids: Sequence[str] = field(default_factory=list)  # the full recall order

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "reranked": self.reranked,
            "candidates": self.candidates,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "hits": [h.to_dict() for h in self.hits],
        }


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
        # Runs of equal scores: [start, end) in sorted order, each sorted by id.
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


class Searcher:
    """The two-stage searcher over any `VectorStore`; checks the store's model fingerprint."""

    def __init__(self, runtime: TwinBertRuntime, store: VectorStore, *, check_model: bool = True):
        if check_model:
            store.ensure_model(runtime.fingerprint)
        info = store.info
        if info.dim is not None and info.dim != runtime.dim:
            raise ConfigurationError(f"store vectors have {info.dim} dims, the model {runtime.dim}")
        self.runtime = runtime
        self.store = store
        self._bm25_ok: bool | None = None  # whether the store can score BM25 (probed once)

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        model: str | Path | None = None,
        *,
        int8: bool = False,
        threads: int | None = None,
    ) -> Searcher:
        """An embedded store and its model (the default model when none is given)."""
        from twinbert_search.runtime.models import resolve_model
        from twinbert_search.stores.embedded import EmbeddedStore

        store = EmbeddedStore.open(index_dir, with_documents=False)  # text for hits only
        runtime = TwinBertRuntime.load(resolve_model(model), query_int8=int8, threads=threads)
        runtime.document_graph = document_graph_of(store.info.model_fingerprint)
        return cls(runtime, store)

    def recall(
        self,
        query_vector: np.ndarray,
        query: str,
        n: int,
        *,
        filters: Filters | None = None,
        hybrid: bool = False,
    ) -> Candidates:
        """Stage one: kNN (optionally fused with BM25 by reciprocal rank).

        A store that fuses in one request (`recall_fused`) does; otherwise the kNN and BM25
        hits are fused here, and documents only BM25 found are fetched.
        """
        if hybrid:
            fused = self.store.recall_fused(query, query_vector, n, filters=filters)
            if fused is not None:
                return fused
        dense = self.store.recall(query_vector, n, filters=filters)
        if not hybrid:
            return dense
        sparse = self.store.recall_bm25(query, n, filters=filters)
        fused = reciprocal_rank_fusion([dense.ids, [doc_id for doc_id, _ in sparse]])[:n]
        position = {doc_id: i for i, doc_id in enumerate(dense.ids)}
        missing = [doc_id for doc_id, _ in fused if doc_id not in position]
        extra = self.store.fetch(missing) if missing else None
        parts: list[Candidates] = []
        for doc_id, _ in fused:
            if doc_id in position:
                parts.append(dense.take([position[doc_id]]))
            else:
                parts.append(extra.take([missing.index(doc_id)]))
        merged = _concat(parts, self.runtime.dim)
        merged.recall_scores = np.asarray([s for _, s in fused], dtype=np.float32)
        return merged

    def rerank_scores(
        self,
        query_vector: np.ndarray,
        candidates: Candidates,
        *,
        query: str | None = None,
        lexical_weight: float = 0.0,
    ) -> np.ndarray:
        """Stage two: crossing-layer probabilities for every candidate in one call.

        With `lexical_weight` > 0 (and the query text) the scores are the crossing logits fused
        with the candidates' BM25 scores (`lexical_fusion`): z-score sums, not probabilities.
        """
        if len(candidates) == 0:
            return np.zeros(0, dtype=np.float32)
        if lexical_weight > 0 and query is not None:
            logits = self.runtime.crossing.logits(
                query_vector, candidates.vectors, candidates.precomputed
            )
            bm25 = self.store.bm25_scores(query, candidates.ids)
            return lexical_fusion(logits, bm25, lexical_weight)
        return self.runtime.score(query_vector, candidates.vectors, candidates.precomputed)

    def lexical_weight(self, requested: float | None = None) -> float:
        """The BM25 weight a rerank uses: `requested`, else the model's tuned one, if the store
        can score BM25 (an explicit request it cannot serve is an error)."""
        if requested is not None and requested < 0:
            raise ConfigurationError(f"lexical_weight must be >= 0, got {requested}")
        tuned = (self.runtime.manifest.extra.get("lexical_fusion") or {}).get("bm25_weight")
        weight = float(requested if requested is not None else tuned or 0.0)
        if weight > 0 and not self._can_score_bm25():
            if requested is not None:
                raise ConfigurationError(
                    f"lexical_weight needs BM25 scores, which {type(self.store).__name__} "
                    "cannot give for this index"
                )
            return 0.0
        return weight

    def _can_score_bm25(self) -> bool:
        if self._bm25_ok is None:
            try:
                self.store.bm25_scores("probe", [])
                self._bm25_ok = True
            except (NotImplementedError, StoreError):
                self._bm25_ok = False
        return self._bm25_ok

    def search(
        self,
        query: str,
        k: int = 10,
        candidates: int = 100,
        *,
        filters: Filters | None = None,
        rerank: bool = True,
        hybrid: bool = False,
        query_vector: np.ndarray | None = None,
        recall_depth: int | None = None,
        fetch_documents: bool = True,
        lexical_weight: float | None = None,
    ) -> SearchResult:
        """Encode the query, recall `candidates`, rerank them all, return the top k.

        `recall_depth` recalls deeper than the rerank (evaluation of Recall@1000): the top
        `candidates` by recall score are reranked, and `recall_ids` holds the whole list.
        `fetch_documents=False` leaves the hits' stored fields out (callers that need ids
        only, such as evaluation, skip a database read per query). `lexical_weight` fuses BM25
        into the rerank (`rerank_scores`); None takes the model's tuned weight, 0 turns it off.
        """
        if k < 1 or candidates < 1:
            raise ConfigurationError(
                f"k and candidates must be positive (k={k}, candidates={candidates})"
            )
        candidates = max(candidates, k)
        depth = max(candidates, recall_depth or 0)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if query_vector is None:
            query_vector = self.runtime.encode_query(query)
        t1 = time.perf_counter()
        recalled = self.recall(query_vector, query, depth, filters=filters, hybrid=hybrid)
        t2 = time.perf_counter()
        timings["encode"] = (t1 - t0) * 1e3
        timings["recall"] = (t2 - t1) * 1e3
        full_order = positions_by_score(recalled.recall_scores, recalled.ids)
        recall_ids = take_ids(recalled.ids, full_order)
        if depth == candidates:
            found, recall_order = recalled, full_order
        else:
            found = recalled.take(full_order[:candidates])
            recall_order = positions_by_score(found.recall_scores, found.ids)
        recall_rank = np.empty(len(found), dtype=np.int64)
        recall_rank[recall_order] = np.arange(1, len(found) + 1)
        rerank_scores = None
        if rerank and len(found):
            weight = self.lexical_weight(lexical_weight)
            rerank_scores = self.rerank_scores(
                query_vector, found, query=query, lexical_weight=weight
            )
            order = positions_by_score(rerank_scores, found.ids)
        else:
            order = recall_order
        timings["rerank"] = (time.perf_counter() - t2) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        top = order[:k]
        documents: list[dict[str, Any] | None]
        if not fetch_documents:
            documents = [None] * len(top)
        elif found.documents is not None:
            documents = [found.documents[i] for i in top]
        else:
            documents = self.store.documents([found.ids[i] for i in top]) if len(top) else []
        hits = []
        for rank, (i, document) in enumerate(zip(top, documents, strict=True), start=1):
            rerank_score = None if rerank_scores is None else float(rerank_scores[i])
            hits.append(
                Hit(
                    id=found.ids[i],
                    rank=rank,
                    score=float(found.recall_scores[i]) if rerank_score is None else rerank_score,
                    recall_rank=int(recall_rank[i]),
                    recall_score=float(found.recall_scores[i]),
                    rerank_score=rerank_score,
                    document=document,
                )
            )
        return SearchResult(
            query=query,
            hits=hits,
            reranked=rerank_scores is not None,
            candidates=len(found),
            timings_ms=timings,
            recall_ids=recall_ids,
        )

    def rerank_ids(self, query: str, ids: Sequence[str]) -> list[tuple[str, float]]:
        """Score given candidates (callers that did their own recall), best first."""
        found = self.store.fetch(list(ids))
        scores = self.rerank_scores(self.runtime.encode_query(query), found)
        return [(found.ids[i], float(scores[i])) for i in positions_by_score(scores, found.ids)]


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
