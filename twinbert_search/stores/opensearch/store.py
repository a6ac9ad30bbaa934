"""The OpenSearch store: kNN recall in the cluster, the rerank's inputs in the same round trip.

Documents are indexed with their TwinBERT vectors (computed by the sidecar, or in the cluster
by ML Commons); a `knn` query returns the candidates with their stored vectors and optional
precomputed crossing data, so the Python side reranks without a second request.

What every cluster engine does alike is `cluster.store.ClusterStoreBase`; this module keeps
OpenSearch's own: the opensearch-py calls behind its hooks, the `knn` query with recall scores
recomputed from the exact vectors, in-cluster encoding (`index_texts`, ML Commons) and
hybrid recall.

Hybrid recall, fused by the engine where it can, is `hybrid.EngineHybridRecall`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.base import Candidates, Filters, VectorStore
from twinbert_search.stores.cluster import reads, schema
from twinbert_search.stores.cluster.runs import IndexRunHooks
from twinbert_search.stores.cluster.store import ClusterStoreBase
from twinbert_search.stores.opensearch import assets, connection
from twinbert_search.stores.opensearch.assets import IndexOptions
from twinbert_search.stores.opensearch.hybrid import EngineHybridRecall
from twinbert_search.stores.opensearch.lifecycle import OpenSearchIndices

logger = logging.getLogger(__name__)


class OpenSearchStore(EngineHybridRecall, ClusterStoreBase, IndexRunHooks, VectorStore):
    """TwinBERT documents in an OpenSearch index (or behind an alias, for blue/green builds)."""

    ENGINE = "OpenSearch"
    assets = assets
    connection = connection
    ADMIN = OpenSearchIndices

    ENGINE_OPTIONS: ClassVar[dict[str, Any]] = {"ef_search": None}  # k-NN's query-time ef
    ef_search: int | None
    _embed_pipeline_for: str | None = None  # the model whose ingest pipeline is in place

    # -- the client behind the shared methods ------------------------------------------------

    def _is_missing(self, exc: BaseException | None) -> bool:
        from opensearchpy.exceptions import NotFoundError

        return isinstance(exc, NotFoundError)

    def _client_search(self, index: str, body: dict[str, Any], params: dict[str, Any]) -> Any:
        return self.client.search(index=index, body=body, params=params or None)

    def _mget_batch(
        self, index: str, ids: list[str], fields: list[str] | None
    ) -> list[dict[str, Any]]:
        params = None if fields is None else {"_source_includes": ",".join(fields)}
        return self.client.mget(index=index, body={"ids": ids}, params=params)["docs"]

    def _count(self, target: str) -> int:
        return int(self.client.count(index=target)["count"])

    def _bulk_helper(self) -> Callable[..., Any]:
        from opensearchpy.helpers import streaming_bulk

        return streaming_bulk

    def _send_vectors(
        self, index: str, actions: list[dict[str, Any]], pipeline: str | None
    ) -> None:
        self._run_bulk(actions, params={"pipeline": pipeline} if pipeline else None)

    def _cluster_status(self) -> tuple[dict[str, Any], dict[str, Any], Any, dict[str, Any]]:
        names, client = self.names, self.client
        health = client.cluster.health()
        version = client.info().get("version", {}).get("number")
        template = client.indices.exists_index_template(name=names.template)
        ingest = f"{names.vector_pipeline},{names.embed_pipeline}"
        pipelines = client.ingest.get_pipeline(id=ingest, ignore=404)
        search = client.search_pipeline.get(id=names.hybrid_pipeline, ignore=404)
        return (
            health,
            {"version": version},
            template,
            {
                "ingest_pipelines": sorted(k for k in pipelines if not k.startswith("error")),
                "search_pipelines": sorted(k for k in search if k == names.hybrid_pipeline),
                "hybrid_fusion": self.hybrid_fusion,
            },
        )

    # -- assets -------------------------------------------------------------------------------

    def _current_template(self) -> dict[str, Any] | None:
        existing = self.client.indices.get_index_template(name=self.names.template, ignore=404)
        return next((t["index_template"] for t in existing.get("index_templates", [])), None)

    def _put_template(self, template: dict[str, Any]) -> None:
        self.client.indices.put_index_template(name=self.names.template, body=template)

    def _put_pipelines(self, manifest: ModelManifest, model_id: str | None) -> dict[str, str]:
        done: dict[str, str] = {}
        pipelines = {self.names.vector_pipeline: assets.vector_pipeline(manifest)}
        if model_id:
            pipelines[self.names.embed_pipeline] = assets.embedding_pipeline(manifest, model_id)
        for name, body in pipelines.items():
            with self._errors(f"put the ingest pipeline {name}"):
                current = self.client.ingest.get_pipeline(id=name, ignore=404).get(name)
                # the description names the model (the engine refuses `_meta` here)
                if current is None or any(current.get(k) != v for k, v in body.items()):
                    self.client.ingest.put_pipeline(id=name, body=body)
                    done[name] = "created" if current is None else "updated"
                else:
                    done[name] = "kept"
        done[self.names.hybrid_pipeline] = self._put_hybrid_pipeline()
        return done

    # -- in-cluster encoding ------------------------------------------------------------------

    def index_texts(
        self, documents: Sequence[Document], *, model_fingerprint: str, model_id: str
    ) -> None:
        """Index documents encoded in the cluster (`--encode-in-cluster`): ingest pipeline (b).

        The cluster computes the vectors with the registered ML Commons model; there is no
        precomputed crossing data, so the rerank computes that half per candidate.
        """
        if not documents:
            return
        if self.manifest is None:
            raise ConfigurationError("encoding in the cluster needs the model manifest")
        dim = self.manifest.dim
        index = self._prepare_write(dim, model_fingerprint)
        if self._embed_pipeline_for != model_id:  # once per store, not per batch
            self.put_assets(self._manifest_for(dim, model_fingerprint), model_id=model_id)
            self._embed_pipeline_for = model_id
        actions = [
            schema.index_action(
                index, doc, {schema.FIELD_ENCODING_TEXT: doc.encoding_text}, engine=self.ENGINE
            )
            for doc in documents
        ]
        self._run_bulk(actions, params={"pipeline": self.names.embed_pipeline})

    # -- recall -------------------------------------------------------------------------------

    def _read_scoring(self, index: str, meta: dict[str, Any]) -> str:
        """The space type the index was built with (its `_meta`), else the configured one."""
        ann = meta.get("ann")
        return IndexOptions.parse(ann).space_type if ann else self.index_options.space_type

    def _knn_body(
        self, vector: np.ndarray, n: int, filters: Filters | None, scoring: Any
    ) -> dict[str, Any]:
        return assets.knn_search_body(vector, n, filters=filters, ef_search=self.ef_search)

    def _knn_candidates(
        self, hits: list[dict[str, Any]], dim: int, vector: np.ndarray, scoring: Any
    ) -> Candidates:
        """Scores from the hits' exact vectors: a compact encoding's own are approximate."""
        found = reads.candidates_from_hits(hits, dim)
        return reads.rescored(found, assets.exact_similarity(scoring, vector, found.vectors))
