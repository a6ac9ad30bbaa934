"""The Elasticsearch store: kNN recall in the cluster, the rerank's inputs in the same round trip.

Documents are indexed with their TwinBERT vectors (computed by the sidecar) in a
`dense_vector` field; a top-level `knn` search returns the candidates with their stored
float32 vectors and optional precomputed crossing data, so the Python side reranks exactly as
it does over the embedded store (the rerank is the shared search pipeline, not the store's).

`ElasticsearchStore` is a facade over this sub-package and what every cluster engine shares
(`stores/cluster/`): writes stream through `bulk.py` (chunks by count and bytes, 429/5xx
resent with capped backoff, one `BulkIndexError` for the rest), the write target and
blue/green rebuilds behind an alias are `cluster.lifecycle.Generations` over
`lifecycle.ElasticsearchIndices`, request bodies come from `assets.py`, hits are decoded by
`cluster.reads`, and failures go through the shared error table.

Hybrid recall uses the `rrf` retriever where the cluster has it (the rank-rrf module, and a
licence that allows it); elsewhere `recall_fused` answers None and the searcher fuses the kNN
and BM25 hits itself, by the same reciprocal-rank formula.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from twinbert_search.errors import (
    ConfigurationError,
    InputError,
    StoreError,
)
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.base import Candidates, Filters, StoreInfo, VectorStore
from twinbert_search.stores.cluster import pipelines, reads, schema
from twinbert_search.stores.cluster.bulk import BulkOptions
from twinbert_search.stores.cluster.errors import reason
from twinbert_search.stores.cluster.lifecycle import Generations, check_name
from twinbert_search.stores.cluster.queries import scan_ids
from twinbert_search.stores.cluster.runs import IndexRunHooks, IndexRuns
from twinbert_search.stores.cluster.store import ClusterStoreBase
from twinbert_search.stores.elasticsearch import assets
from twinbert_search.stores.elasticsearch.bulk import delete_ids, send_actions
from twinbert_search.stores.elasticsearch.connection import (
    ERRORS,
    ConnectionOptions,
    translate_errors,
)
from twinbert_search.stores.elasticsearch.index_options import (
    IndexOptions,
    score_to_similarity,
)
from twinbert_search.stores.elasticsearch.lifecycle import ElasticsearchIndices

logger = logging.getLogger(__name__)

MGET_BATCH = 1000
SCAN_PAGE = 1000
BACKEND = "elasticsearch"
KEPT_KEYS = ("description", "processors")  # a pipeline equal in these is kept


class ElasticsearchStore(ClusterStoreBase, IndexRunHooks, VectorStore):
    """TwinBERT documents in an Elasticsearch index (or behind an alias, for blue/green)."""

    ENGINE = "Elasticsearch"

    def __init__(
        self,
        connection: ConnectionOptions | Any,
        *,
        index: str | None = None,
        alias: str | None = None,
        manifest: ModelManifest | None = None,
        index_options: IndexOptions | None = None,
        bulk: BulkOptions | None = None,
        num_candidates: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        read_cache_seconds: float = 30.0,
    ) -> None:
        if not index and not alias:
            raise ConfigurationError("give an index name, an alias, or both")
        check_name(index)
        check_name(alias)
        if isinstance(connection, ConnectionOptions):
            self.options: ConnectionOptions | None = connection
            self.client = connection.client()
            self._safe_url = connection.safe_url
        else:  # an Elasticsearch client made by the caller
            self.options = None
            self.client = connection
            self._safe_url = "the configured Elasticsearch cluster"
        self.index = index
        self.alias = alias
        self.manifest = manifest
        self.index_options = index_options or IndexOptions()
        self.index_options.validate()
        self.bulk = bulk or BulkOptions()
        self.num_candidates = num_candidates
        self.names = assets.AssetNames(alias or index or assets.DEFAULT_BASE)
        self.indices = ElasticsearchIndices(self.client, self._errors)
        self.generations = Generations(self.indices, index=index, alias=alias)
        self.runs = IndexRuns(self.indices)  # an unfinished indexing run, in `_meta`
        self._sleep = sleep
        self._meta_cache: dict[str, dict[str, Any]] = {}
        self.read_cache_seconds = read_cache_seconds
        self._read_state: tuple[float, int, str, IndexOptions] | None = None
        self.rrf_available: bool | None = None  # probed by the first fused recall
        self.pipeline_processors: bool | None = None  # False: the node lacks ingest-common

    def __repr__(self) -> str:
        target = self.alias or self.index
        return f"ElasticsearchStore({self._safe_url!r}, target={target!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _errors(self, what: str) -> Any:
        return translate_errors(self._safe_url, what)

    def _recorded_options(self, index: str) -> IndexOptions:
        """The index options an index was built with (its `_meta`), for its kNN queries."""
        ann = self._index_meta(index).get("ann")
        if not ann:
            return self.index_options
        try:
            recorded = IndexOptions.parse(ann)
        except ConfigurationError:
            logger.warning("%s records an unknown index description %r", index, ann)
            return self.index_options
        return replace(recorded, oversample=self.index_options.oversample)

    def prepare_index(
        self,
        manifest: ModelManifest,
        *,
        rebuild: bool = False,
        delete_old: bool = False,
        model_id: str | None = None,
    ) -> dict[str, Any]:
        """Refuse another model, put the template and pipeline, start a rebuild if asked."""
        if model_id:
            raise ConfigurationError(
                "encoding in the cluster is OpenSearch's ML Commons; Elasticsearch indexes "
                "the vectors the sidecar computes (leave out --encode-in-cluster)"
            )
        if delete_old and not rebuild:
            raise ConfigurationError("delete_old goes with rebuild")
        if not rebuild:
            self.ensure_model(manifest.fingerprint)
        done = {"assets": self.put_assets(manifest)}
        if rebuild:
            self.begin_rebuild(resume=True, delete_old=delete_old)
        return done

    # -- assets -----------------------------------------------------------------------------

    def put_assets(self, manifest: ModelManifest) -> dict[str, str]:
        """Create the index template and ingest pipeline when missing or for another model.

        Returns what was done per asset: "created", "updated", "kept", or "processorless"
        when the node lacks the pipeline's processors (then the mapping checks vectors).
        """
        done: dict[str, str] = {}
        template = assets.index_template(manifest, self.index_options, self.names)
        with self._errors("put the index template"):
            existing = self.client.options(ignore_status=404).indices.get_index_template(
                name=self.names.template
            )
            found = existing.body.get("index_templates", [])
            current = next((t["index_template"] for t in found), None)
            if current is None or current.get("_meta") != template["_meta"]:
                self._put_template(template)
                done["template"] = "created" if current is None else "updated"
            else:
                done["template"] = "kept"
        name = self.names.vector_pipeline
        done[name] = self._put_vector_pipeline(name, manifest)
        return done

    def _put_template(self, template: dict[str, Any]) -> None:
        """PUT the template. Its priority grows with the base name's length
        (`cluster.lifecycle.template_priority`), so families whose patterns overlap
        (`docs-*` covers `docs-news-*`) never tie, which the engine refuses."""
        self.client.indices.put_index_template(name=self.names.template, body=template)

    def _put_vector_pipeline(self, name: str, manifest: ModelManifest) -> str:
        from elasticsearch import BadRequestError

        body = assets.vector_pipeline(manifest)
        with self._errors(f"put the ingest pipeline {name}"):
            existing = self.client.options(ignore_status=404).ingest.get_pipeline(id=name)
            current = existing.body.get(name)
            if current is not None and all(current.get(k) == body[k] for k in KEPT_KEYS):
                self.pipeline_processors = True
                return "kept"
            try:
                self.client.ingest.put_pipeline(id=name, body=body)
            except BadRequestError as exc:  # no ingest-common / lang-painless on this node
                why = reason(exc)
                log = logger.warning if self.pipeline_processors is None else logger.debug
                log(
                    "the ingest pipeline %s is put without processors, so only the index "
                    "mapping checks vectors: %s",
                    name,
                    why,
                )
                self.pipeline_processors = False
                bare = pipelines.processorless_pipeline(manifest, why)
                if current is None or current.get("description") != bare["description"]:
                    self.client.ingest.put_pipeline(id=name, body=bare)
                return "processorless"
        self.pipeline_processors = True
        return "created" if current is None else "updated"

    # -- index lifecycle --------------------------------------------------------------------

    def _create_index(self, manifest: ModelManifest) -> str:
        self.put_assets(manifest)
        name = self.generations.new_index_name()  # an alias gets <alias>-000001, ...
        body = assets.index_body(manifest, self.index_options, building=True)
        with self._errors(f"create the index {name}"):
            self.indices.create(name, body)
        logger.info("created index %s (%s)", name, self.index_options.describe())
        self.generations.mark_created(name)
        self.runs.created(name)
        self._meta_cache.pop(name, None)
        return name

    # -- writes -----------------------------------------------------------------------------

    # -- reads ------------------------------------------------------------------------------

    def _search(self, body: dict[str, Any], what: str, index: str | None = None) -> dict[str, Any]:
        from elasticsearch import NotFoundError

        target = index or self.read_target
        try:
            with self._errors(what):
                return self.client.search(index=target, body=body).body
        except StoreError as exc:
            if isinstance(exc.__cause__, NotFoundError):
                self._read_state = None
                raise ERRORS.missing(what, target, self._safe_url) from exc
            raise

    def _read_setup(self) -> tuple[int, str, IndexOptions]:
        """Dimension, similarity and index options behind the read target, cached for
        `read_cache_seconds` (so a long-running server follows a blue/green switch)."""
        now = time.monotonic()
        if self._read_state is None or now - self._read_state[0] > self.read_cache_seconds:
            indices = self.generations.concrete_indices(self.read_target)
            if not indices:
                raise StoreError(
                    f"{self.read_target} does not exist at {self._safe_url}; index documents first"
                )
            meta = self._index_meta(indices[0])
            if meta.get("dim") is None:
                raise StoreError(f"{indices[0]} has no {schema.FIELD_VECTOR} field")
            similarity = meta.get("similarity") or "dot_product"
            self._read_state = (
                now,
                int(meta["dim"]),
                similarity,
                self._recorded_options(indices[0]),
            )
        return self._read_state[1], self._read_state[2], self._read_state[3]

    def _query_vector(self, query_vector: np.ndarray, dim: int) -> np.ndarray:
        vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != dim:
            raise InputError(f"query vector has {vector.shape[0]} values, the index {dim}")
        return vector

    def recall(
        self, query_vector: np.ndarray, n: int, *, filters: Filters | None = None
    ) -> Candidates:
        """kNN recall; scores are converted back to the inner product of the vectors."""
        dim, similarity, options = self._read_setup()
        vector = self._query_vector(query_vector, dim)
        if n <= 0:
            return Candidates.empty(dim)
        body = assets.knn_search_body(
            vector, n, options, filters=filters, candidates=self._candidates(n)
        )
        hits = self._search(body, "kNN recall")["hits"]["hits"]
        return reads.candidates_from_hits(
            hits, dim, lambda scores: score_to_similarity(similarity, scores)
        )

    def _candidates(self, n: int) -> int | None:
        return max(self.num_candidates, n) if self.num_candidates else None

    def recall_bm25(
        self, query: str, n: int, *, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        response = self._search(assets.bm25_search_body(query, n, filters=filters), "BM25 recall")
        return reads.ranked(response["hits"]["hits"])

    def bm25_scores(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of these ids in one search (0 where the query matches nothing)."""
        if not ids:
            return np.zeros(0, np.float32)
        body = assets.bm25_scores_body(query, list(dict.fromkeys(ids)))
        return reads.scores_of(self._search(body, "BM25 scores")["hits"]["hits"], ids)

    def recall_fused(
        self,
        query: str,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
    ) -> Candidates | None:
        """BM25 and kNN fused by the `rrf` retriever in one request; None where the cluster
        has no such retriever (or its licence refuses it), so the searcher fuses instead."""
        if self.rrf_available is False:
            return None
        from elasticsearch import ApiError

        dim, _, options = self._read_setup()
        vector = self._query_vector(query_vector, dim)
        if n <= 0:
            return Candidates.empty(dim)
        body = assets.rrf_search_body(
            query, vector, n, options, filters=filters, candidates=self._candidates(n)
        )
        try:
            response = self._search(body, "hybrid recall (rrf retriever)")
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiError) and cause.status_code in (400, 403):
                logger.warning(
                    "hybrid recall fuses in the client: the cluster refused the rrf retriever (%s)",
                    reason(cause),
                )
                self.rrf_available = False
                return None
            raise
        self.rrf_available = True
        return reads.candidates_from_hits(response["hits"]["hits"], dim)

    def _send_vectors(
        self, index: str, actions: list[dict[str, Any]], pipeline: str | None
    ) -> None:
        with self._errors(f"bulk indexing into {index}"):
            send_actions(
                self.client,
                actions,
                self.bulk,
                pipeline=pipeline,
                safe_url=self._safe_url,
                sleep=self._sleep,
            )

    def _delete_ids(self, index: str, ids: list[str]) -> int:
        return delete_ids(self.client, index, ids, self.bulk)

    def _live_settings(self) -> dict[str, Any]:
        return assets.live_settings(self.index_options)

    def _mget(self, index: str, ids: list[str], source: list[str]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for batch in reads.batches(ids, MGET_BATCH):
            with self._errors(f"fetch documents from {index}"):
                response = self.client.mget(index=index, ids=batch, source_includes=source)
            docs.extend(response.body["docs"])
        return docs

    def fetch(self, ids: Sequence[str]) -> Candidates:
        dim, _, _ = self._read_setup()
        ids = list(ids)
        if not ids:
            return Candidates.empty(dim)
        docs = self._mget(self.read_target, list(dict.fromkeys(ids)), list(schema.SOURCE_FIELDS))
        return reads.fetched_candidates(docs, ids, dim)

    def all_ids(self) -> list[str]:
        """Every id, paged with search_after on `doc_id` (sees refreshed documents)."""
        generations = self.generations
        index = generations.write_index if generations.rebuild else self.read_target
        if not index or not generations.concrete_indices(index):
            return []

        def search(body: dict[str, Any]) -> list[dict[str, Any]]:
            return self._search(body, f"list the ids in {index}", index)["hits"]["hits"]

        return scan_ids(search, SCAN_PAGE)

    @property
    def info(self) -> StoreInfo:
        indices = self.generations.concrete_indices(self.read_target)
        extra = {"url": self._safe_url, "alias": self.alias, "indices": indices}
        if not indices:
            return StoreInfo(
                backend=BACKEND,
                model_fingerprint=None,
                dim=None,
                count=0,
                ann=self.index_options.describe(),
                extra=extra,
            )
        meta = self._index_meta(indices[0])
        with self._errors(f"count {self.read_target}"):
            count = int(self.client.count(index=self.read_target).body["count"])
        return StoreInfo(
            backend=BACKEND,
            model_fingerprint=meta.get("model_fingerprint"),
            dim=meta.get("dim"),
            count=count,
            codec="float32",
            ann=meta.get("ann"),
            extra=extra,
        )

    def status(self) -> dict[str, Any]:
        """Cluster health, the index behind the target, its model and assets."""
        with self._errors("read the cluster status"):
            health = self.client.cluster.health().body
            template = self.client.indices.exists_index_template(name=self.names.template)
            pipeline = self.client.options(ignore_status=404).ingest.get_pipeline(
                id=self.names.vector_pipeline
            )
        info = self.info
        return {
            "url": self._safe_url,
            "cluster": {
                "name": health.get("cluster_name"),
                "status": health.get("status"),
                "nodes": health.get("number_of_nodes"),
            },
            "target": self.read_target,
            "indices": info.extra.get("indices", []),
            "count": info.count,
            "model_fingerprint": info.model_fingerprint,
            "dim": info.dim,
            "ann": info.ann,
            "template": self.names.template if template else None,
            "ingest_pipelines": sorted(k for k in pipeline.body if k == self.names.vector_pipeline),
        }
