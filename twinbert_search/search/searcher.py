"""Two-stage search: kNN recall over stored document vectors, then the crossing-layer rerank.

The query is encoded once; recall returns the candidates with their stored vectors (and the
crossing layer's per-document precomputation), and one batched numpy call scores them all.
Optional hybrid recall fuses BM25 and kNN before the rerank: in the engine by reciprocal rank
where the store can (`recall_fused`), else here by the model's `HybridFusion` (`rrf` or
`zscore`, `search.fusion.hybrid_fusion_of`), or by an override the caller names (which always
fuses here, so it is what runs). The rerank serves the model's fusion
(`runtime.fusion.served_fusion`: the crossing combined with the recall stage's own signals by
weights tuned on validation queries, or the recall order where the crossing adds nothing), so
the embedded store, OpenSearch and the service rank alike; an explicit `lexical_weight` ranks
by the crossing plus BM25 instead. The stages and how `search` chains them are described in
`search.pipeline`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twinbert_search.errors import ConfigurationError, ModelMismatchError, StoreError
from twinbert_search.runtime.fusion import RECALL_ORDER, RerankFusion, served_fusion
from twinbert_search.runtime.model import TwinBertRuntime, document_graph_of
from twinbert_search.search.fusion import (
    HybridFusion,
    fuse_hybrid,
    hybrid_fusion_of,
    lexically_fused_scores,
    positions_by_score,
    served_scores,
)
from twinbert_search.search.pipeline import (
    Depths,
    SearchResult,
    build_hits,
    rank_recall,
    stored_documents,
    top_positions,
)
from twinbert_search.stores.base import Candidates, Filters, VectorStore, short_fingerprint

__all__ = ["Searcher"]


def check_search_model(store: VectorStore, runtime: TwinBertRuntime) -> None:
    """Refuse a store built with another model, naming each model as it is.

    A searcher reads the store's document graph from its fingerprint and adopts it (only the
    query tower runs at search time), so the runtime's fingerprint carries the store's graph
    suffix; when the models themselves differ, that suffix says nothing true of the model
    given, and the message names it by its hash alone.
    """
    try:
        store.ensure_model(runtime.fingerprint)
    except ModelMismatchError as exc:
        recorded, given = exc.expected.partition(":")[0], exc.actual.partition(":")[0]
        if recorded == given:  # one model, two document graphs: the store's message is true
            raise
        raise ModelMismatchError(
            f"the store was built with model {short_fingerprint(exc.expected)}, but the model "
            f"given is {given[:12]}; search with the model that built it (--model), or "
            "index again with this one",
            expected=exc.expected,
            actual=exc.actual,
        ) from None


class Searcher:
    """The two-stage searcher over any `VectorStore`; checks the store's model fingerprint.

    Its methods do each stage's work with the model and the store (`encode`, `recall`,
    `rerank_scores`); `search` runs the whole pipeline.
    """

    def __init__(
        self,
        runtime: TwinBertRuntime,
        store: VectorStore,
        *,
        check_model: bool = True,
        hybrid_fusion: HybridFusion | None = None,
    ) -> None:
        if check_model:
            check_search_model(store, runtime)
        info = store.info
        if info.dim is not None and info.dim != runtime.dim:
            raise ConfigurationError(f"store vectors have {info.dim} dims, the model {runtime.dim}")
        self.runtime = runtime
        self.store = store
        self.fusion = served_fusion(runtime.manifest)  # what `lexical_weight` None serves
        # The hybrid fusion asked for (fused here, never by the engine), else None: the model's.
        self.hybrid_override = hybrid_fusion
        self.hybrid = hybrid_fusion_of(runtime.manifest.extra, hybrid_fusion)
        self._bm25_ok: bool | None = None  # whether the store can score BM25 (probed once)

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        model: str | Path | None = None,
        *,
        int8: bool = False,
        threads: int | None = None,
        hybrid_fusion: HybridFusion | None = None,
        spinning: bool = True,
    ) -> Searcher:
        """An embedded store and its model (the default model when none is given);
        `hybrid_fusion` overrides the model's hybrid fusion; `spinning` as in
        `TwinBertRuntime.load`."""
        from twinbert_search.runtime.models import resolve_model
        from twinbert_search.stores.embedded import EmbeddedStore

        store = EmbeddedStore.open(index_dir, with_documents=False)  # text for hits only
        runtime = TwinBertRuntime.load(
            resolve_model(model), query_int8=int8, threads=threads, spinning=spinning
        )
        runtime.document_graph = document_graph_of(store.info.model_fingerprint)
        return cls(runtime, store, hybrid_fusion=hybrid_fusion)

    def encode(self, query: str) -> np.ndarray:
        """Stage one: the query vector."""
        return self.runtime.encode_query(query)

    def recall(
        self,
        query_vector: np.ndarray,
        query: str,
        n: int,
        *,
        filters: Filters | None = None,
        hybrid: bool = False,
        fusion: HybridFusion | None = None,
        head: int | None = None,
    ) -> Candidates:
        """Stage two: kNN (optionally fused with BM25).

        Without an override (`fusion`, or the searcher's), a store that fuses in one request
        (`recall_fused`, by reciprocal rank) does; otherwise the kNN and BM25 hits are fused
        here by the override or the model's fusion, and documents only BM25 found are fetched.
        `head` (the rerank's candidates, when recalling deeper): those are fused from each
        list's top `head`, as a search of `head` candidates fuses them (`fuse_hybrid`).
        """
        override = fusion or self.hybrid_override
        if hybrid and override is None:
            fused = self.store.recall_fused(query, query_vector, n, filters=filters)
            if fused is not None:
                return fused
        dense = self.store.recall(query_vector, n, filters=filters)
        if not hybrid:
            return dense
        sparse = self.store.recall_bm25(query, n, filters=filters)
        chosen = override or self.hybrid
        return fuse_hybrid(dense, sparse, n, self.store.fetch, self.runtime.dim, chosen, head)

    def hybrid_ran(self, fusion: HybridFusion | None = None) -> tuple[str, str]:
        """(who fused, by which method) for a hybrid recall just run with `fusion`:
        ("engine", "rrf") where the store fused it, else ("client", the method used)."""
        override = fusion or self.hybrid_override
        if override is None and self.store.hybrid_fusion == "engine":
            return "engine", "rrf"
        return "client", (override or self.hybrid).method

    def rerank_scores(
        self,
        query_vector: np.ndarray,
        candidates: Candidates,
        *,
        query: str | None = None,
        lexical_weight: float | None = 0.0,
    ) -> np.ndarray:
        """Stage three: the rerank score of every candidate in one call.

        `lexical_weight` None: the model's served fusion (`served_fusion_for_store`); a model
        served by its crossing alone gets probabilities, a fusion gets z-score sums. 0: the
        crossing's probabilities. > 0 (with the query text): the crossing logits fused with
        the candidates' BM25 scores (`lexical_fusion`), z-score sums.
        """
        if len(candidates) == 0:
            return np.zeros(0, dtype=np.float32)
        if lexical_weight is None:
            fusion = self.served_fusion_for_store(query)
            if fusion != RerankFusion():
                return served_scores(
                    self.runtime, self.store, fusion, query_vector, candidates, query
                )
        elif lexical_weight > 0 and query is not None:
            return lexically_fused_scores(
                self.runtime, self.store, query_vector, candidates, query, lexical_weight
            )
        return self.runtime.score(query_vector, candidates.vectors, candidates.precomputed)

    def served_fusion_for_store(self, query: str | None) -> RerankFusion:
        """The model's served fusion, less BM25 where the store cannot score it (or there is
        no query text): the other signals keep their weights; none left, the recall order."""
        fusion = self.fusion
        if fusion.uses_bm25 and (query is None or not self._can_score_bm25()):
            weights = {**fusion.weights(), "bm25": 0.0}
            return RerankFusion(**weights) if any(weights.values()) else RECALL_ORDER
        return fusion

    def lexical_weight(self, requested: float | None = None) -> float | None:
        """The BM25 weight a rerank uses: `requested`; else None (the served fusion) for a
        model with a tuned `extra.rerank_fusion`, else a tuned `extra.lexical_fusion` weight
        the store can serve, else None. An explicit request the store cannot serve is an
        error."""
        if requested is not None and requested < 0:
            raise ConfigurationError(f"lexical_weight must be >= 0, got {requested}")
        if requested is None and RerankFusion.from_manifest(self.runtime.manifest.extra):
            return None
        tuned = (self.runtime.manifest.extra.get("lexical_fusion") or {}).get("bm25_weight")
        weight = float(requested if requested is not None else tuned or 0.0)
        if weight > 0 and not self._can_score_bm25():
            if requested is not None:
                raise ConfigurationError(
                    f"lexical_weight needs BM25 scores, which {type(self.store).__name__} "
                    "cannot give for this index"
                )
            return None
        return weight if requested is not None or weight > 0 else None

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
        hybrid_fusion: HybridFusion | None = None,
    ) -> SearchResult:
        """Encode the query, recall `candidates`, rerank them all, return the top k.

        `recall_depth` recalls deeper than the rerank (evaluation of Recall@1000): the top
        `candidates` by recall score are reranked, and `recall_ids` holds the whole list.
        `fetch_documents=False` leaves the hits' stored fields out (callers that need ids
        only, such as evaluation, skip a database read per query). `lexical_weight` None serves
        the model's fusion (`rerank_scores`; a cosine model without tuned weights keeps the
        recall order, so `hybrid` keeps the fused list); a number ranks by the crossing plus
        that weight x BM25 (0: the crossing alone). `hybrid_fusion` fuses hybrid recall by
        that method and weights, here, instead of the model's (or the engine's RRF).
        Timings: `rerank` includes both orderings, `total` excludes the documents' fetch.
        """
        depths = Depths.of(k, candidates, recall_depth)
        t0 = time.perf_counter()
        vector = self.encode(query) if query_vector is None else query_vector
        t1 = time.perf_counter()
        recalled = self.recall(
            vector,
            query,
            depths.recall,
            filters=filters,
            hybrid=hybrid,
            fusion=hybrid_fusion,
            head=depths.candidates,
        )
        t2 = time.perf_counter()
        found = rank_recall(recalled, depths)
        recall_ids = found.ranked_ids()
        scores = None
        if rerank and len(found.candidates):
            weight = self.lexical_weight(lexical_weight)
            scores = self.rerank_scores(
                vector, found.candidates, query=query, lexical_weight=weight
            )
        top = top_positions(found, scores, depths.k)
        t3 = time.perf_counter()
        timings = {
            "encode": (t1 - t0) * 1e3,
            "recall": (t2 - t1) * 1e3,
            "rerank": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        documents = stored_documents(self.store, found.candidates, top) if fetch_documents else None
        fuser, method = self.hybrid_ran(hybrid_fusion) if hybrid else (None, None)
        return SearchResult(
            query=query,
            hits=build_hits(found, scores, top, documents),
            reranked=scores is not None,
            candidates=len(found.candidates),
            timings_ms=timings,
            recall_ids=recall_ids,
            hybrid_fusion=fuser,
            hybrid_method=method,
        )

    def rerank_ids(self, query: str, ids: Sequence[str]) -> list[tuple[str, float]]:
        """Score given candidates (callers that did their own recall), best first."""
        found = self.store.fetch(list(ids))
        scores = self.rerank_scores(self.encode(query), found)
        return [(found.ids[i], float(scores[i])) for i in positions_by_score(scores, found.ids)]
