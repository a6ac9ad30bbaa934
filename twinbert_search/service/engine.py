"""What the routes call: the Searcher behind thread pools, a query cache and a rerank budget.

`/search` runs the stages of the one search pipeline (`twinbert_search.search.pipeline`),
which `Searcher.search` runs too. Encoding (onnxruntime), recall (faiss, SQLite, or an
OpenSearch round trip), the rerank (numpy) and the documents' fetch are blocking calls, so
each runs in a worker thread and the event loop only awaits it.

The rerank has its own pool and a time budget: the request waits for it at most
`rerank_budget_ms` (queueing included); if it runs out, or the rerank raises or yields scores
that are not finite, the recall order comes back with `reranked: false` and `degraded` says
why. A rerank still queued is cancelled; one already running cannot be stopped (numpy has no
cancellation point) and finishes in the background, its result dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from twinbert_search.errors import (
    BackendUnavailableError,
    ConfigurationError,
    InputError,
    StoreError,
)
from twinbert_search.search import Searcher, pipeline, positions_by_score
from twinbert_search.search.factory import incomplete_warning
from twinbert_search.search.fusion import HybridFusion
from twinbert_search.service.config import ServiceConfig
from twinbert_search.service.errors import UnknownDocumentError
from twinbert_search.service.metrics import ServiceMetrics
from twinbert_search.service.outage import StoreHealth
from twinbert_search.service.schemas import (
    Document,
    Hit,
    RerankRequest,
    RerankResponse,
    RerankResult,
    SearchRequest,
    SearchResponse,
)
from twinbert_search.stores.base import Candidates

logger = logging.getLogger(__name__)
T = TypeVar("T")


class QueryCache:
    """A thread-safe LRU of query text -> read-only query vector; size 0 turns it off."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, query: str) -> np.ndarray | None:
        with self._lock:
            vector = self._items.get(query)
            if vector is not None:
                self._items.move_to_end(query)
            return vector

    def put(self, query: str, vector: np.ndarray) -> None:
        if self.size == 0:
            return
        vector.setflags(write=False)  # shared by every request that hits it
        with self._lock:
            self._items[query] = vector
            self._items.move_to_end(query)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class RerankUnusable(RuntimeError):
    """The crossing layer produced scores that cannot be ranked or sent (NaN, infinity)."""


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1e3, 3)


def request_fusion(request: SearchRequest, model: HybridFusion) -> HybridFusion | None:
    """The hybrid fusion a request names, or None (the model's, or the engine's): its
    `hybrid_method` (else `model`'s method) with its `hybrid_bm25_weight` (else 1)."""
    if request.hybrid_method is None and request.hybrid_bm25_weight is None:
        return None
    method = request.hybrid_method or model.method
    return HybridFusion(method, bm25=request.hybrid_bm25_weight or 1.0)


def _response_hit(hit: pipeline.Hit) -> Hit:
    """A pipeline hit as the API sends it (stored fields as a `Document`)."""
    return Hit(
        id=hit.id,
        rank=hit.rank,
        score=hit.score,
        recall_rank=hit.recall_rank,
        recall_score=hit.recall_score,
        rerank_score=hit.rerank_score,
        document=None if hit.document is None else Document(**hit.document),
    )


class SearchService:
    """The loaded Searcher with its worker pools, query cache and rerank budget."""

    def __init__(self, searcher: Searcher, config: ServiceConfig, metrics: ServiceMetrics) -> None:
        self.searcher = searcher
        self.config = config
        self.metrics = metrics
        self.cache = QueryCache(config.cache_size)
        self.budget_s = config.rerank_budget_ms / 1e3
        self._work = ThreadPoolExecutor(config.workers, thread_name_prefix="twinbert-work")
        self._rerank = ThreadPoolExecutor(config.workers, thread_name_prefix="twinbert-rerank")
        self.health = StoreHealth()

    def probe_store(self, call: Callable[[], T]) -> T:
        """A probe's store call (readiness, metrics, startup), blocking; its outcome tells
        `health` whether the store answers, and no request is counted as refused."""
        started = self.health.now()
        try:
            result = call()
        except StoreError as exc:  # BackendUnavailableError is one
            self.health.failed(exc, started=started, request=False)
            raise
        self.health.answered(started=started)
        return result

    def index_warning(self) -> str | None:
        """The store's unfinished-indexing warning (None: its last run completed), also set
        on the `twinbert_index_incomplete` gauge; blocking, so routes run it in a thread."""
        warning = incomplete_warning(self.searcher.store)
        self.metrics.index_incomplete.set(0 if warning is None else 1)
        return warning

    def close(self) -> None:
        """Stop the pools; reranks left running after a timeout are not waited for."""
        self._work.shutdown(wait=True, cancel_futures=True)
        self._rerank.shutdown(wait=False, cancel_futures=True)

    async def refresh_forever(self, interval_s: float) -> None:
        """Pick up snapshots finalized by another process (stores with `refresh()` only)."""
        refresh = getattr(self.searcher.store, "refresh", None)
        if refresh is None or interval_s <= 0:
            return
        while True:
            await asyncio.sleep(interval_s)
            try:
                if await self._run(self._work, refresh):
                    logger.info("the store has a new snapshot; serving it")
            except Exception:
                logger.exception("refreshing the store failed; serving the previous snapshot")

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

    async def _store_call(self, fn: Callable[..., T], *args: Any) -> T:
        """A stage that reads the store, in the worker pool; a store error refuses the request
        (503) and tells `health`, which logs an outage once rather than per request. While
        the store is down, a request that another one is already trying it for is refused
        without waiting (`StoreHealth.admit`)."""
        admitted = self.health.admit()
        if admitted is False:
            raise BackendUnavailableError(
                "the store is not answering; another request is checking whether it is back"
            )
        started = self.health.now()
        try:
            result = await self._run(self._work, fn, *args)
        except UnknownDocumentError:  # the store answered: it does not hold these ids
            self.health.answered(started=started)
            raise
        except StoreError as exc:
            self.health.failed(exc, started=started)
            raise
        finally:
            if admitted is None:
                self.health.settled()
        self.health.answered(started=started)
        return result

    # -- stages ------------------------------------------------------------------------------

    def _cached_vector(self, query: str) -> np.ndarray | None:
        """The query's vector from the LRU cache (counted as a hit or a miss)."""
        cached = self.cache.get(query)
        (self.metrics.cache_hits if cached is not None else self.metrics.cache_misses).inc()
        return cached

    def _remember(self, query: str, vector: np.ndarray) -> None:
        self.cache.put(query, vector)
        self.metrics.cache_entries.set(len(self.cache))

    async def query_vector(self, query: str) -> tuple[np.ndarray, bool, float]:
        """(vector, cache hit, encode ms); a hit never leaves the event loop."""
        cached = self._cached_vector(query)
        if cached is not None:
            return cached, True, 0.0
        start = time.perf_counter()
        vector = await self._run(self._work, self.searcher.encode, query)
        self._remember(query, vector)
        return vector, False, _ms(start, time.perf_counter())

    def _recall(
        self,
        vector: np.ndarray,
        query: str,
        n: int,
        filters: Any,
        hybrid: bool,
        fusion: HybridFusion | None = None,
    ) -> Candidates:
        try:
            return self.searcher.recall(
                vector, query, n, filters=filters, hybrid=hybrid, fusion=fusion
            )
        except NotImplementedError as exc:  # a store without a text index
            raise ConfigurationError(f"hybrid recall is not available: {exc}") from None

    def _encode_and_recall(
        self,
        query: str,
        n: int,
        filters: Any,
        hybrid: bool,
        fusion: HybridFusion | None = None,
    ) -> tuple[np.ndarray, float, Candidates, float]:
        """(vector, encode ms, recall, recall ms): both stages in one worker call."""
        start = time.perf_counter()
        vector = self.searcher.encode(query)
        encoded = time.perf_counter()
        recalled = self._recall(vector, query, n, filters, hybrid, fusion)
        return vector, _ms(start, encoded), recalled, _ms(encoded, time.perf_counter())

    def _fetch(self, ids: Sequence[str]) -> Candidates:
        """Stored vectors of `ids`; which ids are unknown is found only when the fetch fails."""
        store = self.searcher.store
        try:
            return store.fetch(list(ids))
        except BackendUnavailableError:  # a StoreError too, but no id is to blame: a 503
            raise
        except StoreError:
            known = store.content_hashes(ids)
            missing = [doc_id for doc_id in ids if doc_id not in known]
            if missing:
                raise UnknownDocumentError(missing) from None
            raise

    def _scores(
        self,
        vector: np.ndarray,
        candidates: Candidates,
        query: str | None,
        lexical_weight: float | None,
    ) -> np.ndarray:
        # Overflow warnings are not errors here: non-finite scores are refused just below, and
        # the request then degrades to the recall order.
        with np.errstate(all="ignore"):
            scores = self.searcher.rerank_scores(
                vector, candidates, query=query, lexical_weight=lexical_weight
            )
        if not np.all(np.isfinite(scores)):
            raise RerankUnusable("the crossing layer returned non-finite scores")
        return scores

    async def rerank_within_budget(
        self,
        route: str,
        vector: np.ndarray,
        candidates: Candidates,
        *,
        query: str | None = None,
        lexical_weight: float | None = 0.0,
    ) -> tuple[np.ndarray | None, str | None]:
        """(scores, None), or (None, reason) when the budget ran out or the rerank failed.

        Without a crossing layer to run or BM25 to read (a cosine model, or a served fusion of
        the recall scores) the rerank is a few vector operations: it runs on the event loop, as
        the hand-off to the rerank pool costs more than the work (BENCHMARKS.md, "The sidecar
        on OpenSearch"); anything else runs in the pool, within the budget.
        """
        try:
            if self._inline_rerank(lexical_weight):
                return self._scores(vector, candidates, query, lexical_weight), None
            future = asyncio.get_running_loop().run_in_executor(
                self._rerank, self._scores, vector, candidates, query, lexical_weight
            )
            return await asyncio.wait_for(future, self.budget_s), None
        except asyncio.TimeoutError:
            reason = "rerank_timeout"
            logger.warning(
                "%s: rerank of %d candidates exceeded %.0f ms; returning the recall order",
                route,
                len(candidates),
                self.budget_s * 1e3,
            )
        except Exception:
            reason = "rerank_error"
            logger.exception("%s: rerank failed; returning the recall order", route)
        self.metrics.rerank_degraded.labels(reason).inc()
        return None, reason

    def _inline_rerank(self, lexical_weight: float | None) -> bool:
        """Whether the rerank is arithmetic on what recall returned: no crossing layer to run
        (the cosine, or a served fusion that weighs no crossing) and no BM25 to read."""
        cosine = self.searcher.runtime.manifest.crossing.type == "cosine"
        if lexical_weight is None:  # the model's served fusion
            fusion = self.searcher.fusion
            return not fusion.bm25 and (cosine or not fusion.crossing)
        return lexical_weight == 0 and cosine

    # -- endpoints ---------------------------------------------------------------------------

    async def search(self, request: SearchRequest) -> SearchResponse:
        """The pipeline's stages, awaited; `rerank` times the budgeted wait, `documents` the
        final order and the fetch, `total` the whole request."""
        route = "/search"
        t0 = time.perf_counter()
        depths = pipeline.Depths.of(request.k, request.candidates)
        fusion = request_fusion(request, self.searcher.hybrid)
        recall_args = (request.query, depths.recall, request.filters, request.hybrid, fusion)
        vector = self._cached_vector(request.query)
        cache_hit = vector is not None
        if vector is not None:
            encode_ms = 0.0
            t1 = time.perf_counter()
            recalled = await self._store_call(self._recall, vector, *recall_args)
            recall_ms = _ms(t1, time.perf_counter())
        else:  # one hand-off to the worker for both stages, not one each
            vector, encode_ms, recalled, recall_ms = await self._store_call(
                self._encode_and_recall, *recall_args
            )
            self._remember(request.query, vector)
        t2 = time.perf_counter()
        found = pipeline.rank_recall(recalled, depths)
        scores, degraded = None, None
        if request.rerank and len(found.candidates):
            weight = self.searcher.lexical_weight(request.lexical_weight)
            scores, degraded = await self.rerank_within_budget(
                route, vector, found.candidates, query=request.query, lexical_weight=weight
            )
        t3 = time.perf_counter()
        top = pipeline.top_positions(found, scores, depths.k)
        documents = None
        if request.include_documents and top:
            if found.candidates.documents is not None:  # recall carried them: no store call
                documents = pipeline.stored_documents(self.searcher.store, found.candidates, top)
            else:
                documents = await self._store_call(
                    pipeline.stored_documents, self.searcher.store, found.candidates, top
                )
        t4 = time.perf_counter()
        hits = [_response_hit(hit) for hit in pipeline.build_hits(found, scores, top, documents)]
        timings = {
            "encode": encode_ms,
            "recall": recall_ms,
            "rerank": _ms(t2, t3),
            "documents": _ms(t3, t4),
            "total": _ms(t0, time.perf_counter()),
        }
        self._observe(route, timings, cache_hit, len(found.candidates))
        fuser, method = self.searcher.hybrid_ran(fusion) if request.hybrid else (None, None)
        return SearchResponse(
            query=request.query,
            reranked=scores is not None,
            degraded=degraded,
            candidates=len(found.candidates),
            cache_hit=cache_hit,
            hybrid_fusion=fuser,
            hybrid_method=method,
            timings_ms=timings,
            hits=hits,
        )

    async def rerank(self, request: RerankRequest) -> RerankResponse:
        """Rerank the caller's candidates (stored, or given with their vectors); degraded, the
        caller's order comes back."""
        route = "/rerank"
        t0 = time.perf_counter()
        ids = request.ids
        given = self._given_vectors(request) if request.has_vectors else None
        vector, cache_hit, encode_ms = await self.query_vector(request.query)
        t1 = time.perf_counter()
        if given is None:
            candidates = await self._store_call(self._fetch, ids)
        else:
            candidates = Candidates(
                ids=ids, recall_scores=np.zeros(len(ids), np.float32), vectors=given
            )
        t2 = time.perf_counter()
        scores, degraded = await self.rerank_within_budget(route, vector, candidates)
        t3 = time.perf_counter()
        order = range(len(ids)) if scores is None else positions_by_score(scores, ids)
        results = [
            RerankResult(
                id=ids[i],
                rank=rank,
                score=None if scores is None else float(scores[i]),
                input_rank=int(i) + 1,
            )
            for rank, i in enumerate(order, start=1)
        ][: request.k]
        timings = {
            "encode": encode_ms,
            "fetch": _ms(t1, t2),
            "rerank": _ms(t2, t3),
            "total": _ms(t0, time.perf_counter()),
        }
        self._observe(route, timings, cache_hit, len(ids))
        return RerankResponse(
            query=request.query,
            reranked=scores is not None,
            degraded=degraded,
            cache_hit=cache_hit,
            timings_ms=timings,
            results=results,
        )

    def _given_vectors(self, request: RerankRequest) -> np.ndarray:
        """The request's vectors as a matrix; each must have the model's dimension."""
        dim = self.searcher.runtime.dim
        for i, candidate in enumerate(request.candidates):
            # The schema takes a list of ids or a list of objects, never a mix: has_vectors
            # (the first is an object) means every one is.
            assert not isinstance(candidate, str)
            if len(candidate.vector) != dim:
                raise InputError(
                    f"has {len(candidate.vector)} values; the model's vectors have {dim}",
                    field=f"candidates[{i}].vector",
                    record_id=candidate.id,
                )
        return np.asarray([c.vector for c in request.candidates], dtype=np.float32)  # type: ignore[union-attr]

    def _observe(self, route: str, timings: dict[str, float], cache_hit: bool, n: int) -> None:
        stages = dict(timings)
        if cache_hit:
            stages.pop("encode")  # the encode histogram measures the encoder only
        self.metrics.observe_stages(route, stages)
        self.metrics.candidates.labels(route).observe(n)
