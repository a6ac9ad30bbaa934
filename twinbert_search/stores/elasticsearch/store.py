"""The Elasticsearch store: kNN recall in the cluster, the rerank's inputs in the same round trip.

Documents are indexed with their TwinBERT vectors (computed by the sidecar) in a
`dense_vector` field; a top-level `knn` search returns the candidates with their stored
float32 vectors and optional precomputed crossing data, so the Python side reranks exactly as
it does over the embedded store (the rerank is the shared search pipeline, not the store's).

What every cluster engine does alike is `cluster.store.ClusterStoreBase`; this module keeps
Elasticsearch's own: the official client's calls behind its hooks, the kNN body with the
recorded index options and scores converted back from the similarity, an ingest pipeline put
without processors where the node lacks them. Hybrid recall, fused by the `rrf` retriever
where the cluster can run it (chosen once), is `hybrid.RrfHybridRecall`; elsewhere the
searcher fuses the kNN and BM25 hits itself, by the model's hybrid fusion (RRF or z-scores).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.base import Candidates, Filters, VectorStore
from twinbert_search.stores.cluster import pipelines, reads
from twinbert_search.stores.cluster.errors import reason
from twinbert_search.stores.cluster.runs import IndexRunHooks
from twinbert_search.stores.cluster.schema import SOURCE_FIELDS
from twinbert_search.stores.cluster.store import ClusterStoreBase
from twinbert_search.stores.elasticsearch import assets, connection
from twinbert_search.stores.elasticsearch.hybrid import RrfHybridRecall
from twinbert_search.stores.elasticsearch.index_options import (
    IndexOptions,
    score_to_similarity,
)
from twinbert_search.stores.elasticsearch.lifecycle import ElasticsearchIndices

logger = logging.getLogger(__name__)

KEPT_KEYS = ("description", "processors")  # a pipeline equal in these is kept


class ElasticsearchStore(RrfHybridRecall, ClusterStoreBase, IndexRunHooks, VectorStore):
    """TwinBERT documents in an Elasticsearch index (or behind an alias, for blue/green)."""

    ENGINE = "Elasticsearch"
    assets = assets
    connection = connection
    ADMIN = ElasticsearchIndices

    ENGINE_OPTIONS: ClassVar[dict[str, Any]] = {"num_candidates": None}  # kNN's breadth
    num_candidates: int | None
    pipeline_processors: bool | None = None  # False: the node lacks ingest-common

    # -- the client behind the shared methods ------------------------------------------------

    def _is_missing(self, exc: BaseException | None) -> bool:
        from elasticsearch import NotFoundError

        return isinstance(exc, NotFoundError)

    def _client_search(self, index: str, body: dict[str, Any], params: dict[str, Any]) -> Any:
        return self.client.search(index=index, body=body).body

    def _mget_batch(
        self, index: str, ids: list[str], fields: list[str] | None
    ) -> list[dict[str, Any]]:
        # Elasticsearch 9 leaves `dense_vector` values out of a whole `_source`: name them
        fields = list(SOURCE_FIELDS) if fields is None else fields
        return self.client.mget(index=index, ids=ids, source_includes=fields).body["docs"]

    def _count(self, target: str) -> int:
        return int(self.client.count(index=target).body["count"])

    def _bulk_helper(self) -> Callable[..., Any]:
        from elasticsearch.helpers import streaming_bulk

        return streaming_bulk

    def _send_vectors(
        self, index: str, actions: list[dict[str, Any]], pipeline: str | None
    ) -> None:
        with self._errors(f"bulk indexing into {index}"):
            self._run_bulk(actions, **({"pipeline": pipeline} if pipeline else {}))

    def _cluster_status(self) -> tuple[dict[str, Any], dict[str, Any], Any, dict[str, Any]]:
        name = self.names.vector_pipeline
        health = self.client.cluster.health().body
        template = self.client.indices.exists_index_template(name=self.names.template)
        pipeline = self.client.options(ignore_status=404).ingest.get_pipeline(id=name)
        return (
            health,
            {},
            template,
            {
                "ingest_pipelines": sorted(k for k in pipeline.body if k == name),
                "hybrid_fusion": self.hybrid_fusion,
            },
        )

    # -- assets -------------------------------------------------------------------------------

    def _check_model_id(self, model_id: str | None) -> None:
        if model_id:
            raise ConfigurationError(
                "encoding in the cluster is OpenSearch's ML Commons; Elasticsearch indexes "
                "the vectors the sidecar computes (leave out --encode-in-cluster)"
            )

    def _current_template(self) -> dict[str, Any] | None:
        client = self.client.options(ignore_status=404)
        found = client.indices.get_index_template(name=self.names.template).body
        return next((t["index_template"] for t in found.get("index_templates", [])), None)

    def _put_template(self, template: dict[str, Any]) -> None:
        """PUT the template. Its priority grows with the base name's length
        (`cluster.lifecycle.template_priority`), so families whose patterns overlap
        (`docs-*` covers `docs-news-*`) never tie, which the engine refuses."""
        self.client.indices.put_index_template(name=self.names.template, body=template)

    def _put_pipelines(self, manifest: ModelManifest, model_id: str | None) -> dict[str, str]:
        name = self.names.vector_pipeline
        return {name: self._put_vector_pipeline(name, manifest)}

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

    # -- recall -------------------------------------------------------------------------------

    def _read_scoring(self, index: str, meta: dict[str, Any]) -> tuple[str, IndexOptions]:
        """The vector field's similarity and the index options the index was built with."""
        return meta.get("similarity") or "dot_product", self._recorded_options(meta, index)

    def _recorded_options(self, meta: dict[str, Any], index: str) -> IndexOptions:
        """The index options an index was built with (its `_meta`), for its kNN queries."""
        ann = meta.get("ann")
        if not ann:
            return self.index_options
        try:
            recorded = IndexOptions.parse(ann)
        except ConfigurationError:
            logger.warning("%s records an unknown index description %r", index, ann)
            return self.index_options
        return replace(recorded, oversample=self.index_options.oversample)

    def _candidates(self, n: int) -> int | None:
        return max(self.num_candidates, n) if self.num_candidates else None

    def _knn_body(
        self, vector: np.ndarray, n: int, filters: Filters | None, scoring: Any
    ) -> dict[str, Any]:
        _, options = scoring
        return assets.knn_search_body(
            vector, n, options, filters=filters, candidates=self._candidates(n)
        )

    def _knn_candidates(
        self, hits: list[dict[str, Any]], dim: int, vector: np.ndarray, scoring: Any
    ) -> Candidates:
        """Scores converted back from the similarity to the inner product of the vectors."""
        similarity, _ = scoring
        return reads.candidates_from_hits(
            hits, dim, lambda scores: score_to_similarity(similarity, scores)
        )
