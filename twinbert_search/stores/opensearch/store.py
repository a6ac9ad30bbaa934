"""The OpenSearch store: kNN recall in the cluster, the rerank's inputs in the same round trip.

Documents are indexed with their TwinBERT vectors (computed by the sidecar, or in the cluster
by ML Commons); a `knn` query returns the candidates with their stored vectors and optional
precomputed crossing data, so the Python side reranks without a second request.

`OpenSearchStore` is a facade over the sub-package and the parts every cluster engine shares
(`stores/cluster/`): writes stream through `bulk.py` (chunks by count and bytes, 429/5xx
resent with capped backoff, one `BulkIndexError` for the rest; `_id` is the document id, so
a rerun rewrites instead of duplicating), the write target and blue/green rebuilds behind an
alias are `cluster.lifecycle.Generations` over `lifecycle.OpenSearchIndices`, request bodies
come from `assets.py`, and hits are decoded by `cluster.reads`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.errors import (
    ConfigurationError,
    InputError,
    StoreError,
)
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.base import (
    Candidates,
    Filters,
    StoreInfo,
    VectorStore,
)
from twinbert_search.stores.cluster import reads, schema
from twinbert_search.stores.cluster.bulk import BulkOptions
from twinbert_search.stores.cluster.errors import reason
from twinbert_search.stores.cluster.lifecycle import Generations, check_name
from twinbert_search.stores.cluster.queries import scan_ids
from twinbert_search.stores.cluster.runs import IndexRunHooks, IndexRuns
from twinbert_search.stores.cluster.store import ClusterStoreBase
from twinbert_search.stores.opensearch import assets
from twinbert_search.stores.opensearch.assets import IndexOptions
from twinbert_search.stores.opensearch.bulk import delete_ids, send_actions
from twinbert_search.stores.opensearch.connection import (
    ERRORS,
    ConnectionOptions,
    translate_errors,
)
from twinbert_search.stores.opensearch.lifecycle import OpenSearchIndices

logger = logging.getLogger(__name__)

MGET_BATCH = 1000
SCAN_PAGE = 1000


class OpenSearchStore(ClusterStoreBase, IndexRunHooks, VectorStore):
    """TwinBERT documents in an OpenSearch index (or behind an alias, for blue/green builds)."""

    ENGINE = "OpenSearch"

    def __init__(
        self,
        connection: ConnectionOptions | Any,
        *,
        index: str | None = None,
        alias: str | None = None,
        manifest: ModelManifest | None = None,
        index_options: IndexOptions | None = None,
        bulk: BulkOptions | None = None,
        ef_search: int | None = None,
        hybrid_weights: Sequence[float] = assets.DEFAULT_HYBRID_WEIGHTS,
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
        else:  # an opensearch-py client made by the caller
            self.options = None
            self.client = connection
            self._safe_url = "the configured OpenSearch cluster"
        self.index = index
        self.alias = alias
        self.manifest = manifest
        self.index_options = index_options or IndexOptions()
        self.index_options.validate()
        self.bulk = bulk or BulkOptions()
        self.ef_search = ef_search
        self.hybrid_weights = tuple(hybrid_weights)
        self.names = assets.AssetNames(alias or index or assets.DEFAULT_BASE)
        self.indices = OpenSearchIndices(self.client, self._errors)
        self.generations = Generations(self.indices, index=index, alias=alias)
        self.runs = IndexRuns(self.indices)  # an unfinished indexing run, in `_meta`
        self._sleep = sleep
        self._meta_cache: dict[str, dict[str, Any]] = {}
        self.hybrid_available: bool | None = None
        self.read_cache_seconds = read_cache_seconds
        self._read_state: tuple[float, int, str] | None = None
        self._embed_pipeline_for: str | None = None

    def __repr__(self) -> str:
        target = self.alias or self.index
        return f"OpenSearchStore({self._safe_url!r}, target={target!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _errors(self, what: str) -> Any:
        return translate_errors(self._safe_url, what)

    def _space_type(self, index: str) -> str:
        ann = self._index_meta(index).get("ann")
        return IndexOptions.parse(ann).space_type if ann else self.index_options.space_type

    def prepare_index(
        self,
        manifest: ModelManifest,
        *,
        rebuild: bool = False,
        delete_old: bool = False,
        model_id: str | None = None,
    ) -> dict[str, Any]:
        """Refuse another model, put the template and pipelines, start a rebuild if asked.

        The model check comes first so a mismatch leaves the template and pipelines as they
        were; a rebuild may hold another model (that is what it is for).
        """
        if delete_old and not rebuild:
            raise ConfigurationError("delete_old goes with rebuild")
        if not rebuild:
            self.ensure_model(manifest.fingerprint)
        done = {"assets": self.put_assets(manifest, model_id=model_id)}
        if rebuild:
            self.begin_rebuild(resume=True, delete_old=delete_old)
        return done

    # -- assets -----------------------------------------------------------------------------

    def put_assets(self, manifest: ModelManifest, *, model_id: str | None = None) -> dict[str, str]:
        """Create the index template and pipelines when missing or rendered for another model.

        Returns what was done per asset ("created", "updated", "kept", "unavailable").
        """
        done: dict[str, str] = {}
        template = assets.index_template(manifest, self.index_options, self.names)
        with self._errors("put the index template"):
            existing = self.client.indices.get_index_template(name=self.names.template, ignore=404)
            current = next((t["index_template"] for t in existing.get("index_templates", [])), None)
            if current is None or current.get("_meta") != template["_meta"]:
                self.client.indices.put_index_template(name=self.names.template, body=template)
                done["template"] = "created" if current is None else "updated"
            else:
                done["template"] = "kept"
        pipelines = {self.names.vector_pipeline: assets.vector_pipeline(manifest)}
        if model_id:
            pipelines[self.names.embed_pipeline] = assets.embedding_pipeline(manifest, model_id)
        for name, body in pipelines.items():
            with self._errors(f"put the ingest pipeline {name}"):
                existing = self.client.ingest.get_pipeline(id=name, ignore=404)
                current = existing.get(name)
                # the description names the model (the engine refuses `_meta` here)
                if current is None or any(current.get(k) != v for k, v in body.items()):
                    self.client.ingest.put_pipeline(id=name, body=body)
                    done[name] = "created" if current is None else "updated"
                else:
                    done[name] = "kept"
        done[self.names.hybrid_pipeline] = self._put_hybrid_pipeline()
        return done

    def _put_hybrid_pipeline(self) -> str:
        from opensearchpy.exceptions import RequestError

        name = self.names.hybrid_pipeline
        body = assets.hybrid_search_pipeline(self.hybrid_weights)
        with self._errors(f"put the search pipeline {name}"):
            existing = self.client.search_pipeline.get(id=name, ignore=404)
            if existing.get(name) == body:
                self.hybrid_available = True
                return "kept"
            try:
                self.client.search_pipeline.put(id=name, body=body)
            except RequestError as exc:  # no neural-search plugin: hybrid recall is off
                logger.warning("hybrid search is unavailable: %s", reason(exc))
                self.hybrid_available = False
                return "unavailable"
        self.hybrid_available = True
        return "created" if name not in existing else "updated"

    # -- index lifecycle --------------------------------------------------------------------

    def _create_index(self, manifest: ModelManifest) -> str:
        self.put_assets(manifest)
        # no --index: an alias gets numbered generations (<alias>-000001, ...)
        name = self.generations.new_index_name()
        body = assets.index_body(manifest, self.index_options, building=True)
        with self._errors(f"create the index {name}"):
            self.indices.create(name, body)
        logger.info("created index %s (%s)", name, self.index_options.describe())
        self.generations.mark_created(name)
        self.runs.created(name)
        self._meta_cache.pop(name, None)
        return name

    # -- writes -----------------------------------------------------------------------------

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
            self._index_action(index, doc, {schema.FIELD_ENCODING_TEXT: doc.encoding_text})
            for doc in documents
        ]
        self._run_bulk(actions, pipeline=self.names.embed_pipeline)

    @staticmethod
    def _index_action(index: str, doc: Document, extra: dict[str, Any]) -> dict[str, Any]:
        return schema.index_action(index, doc, extra, engine="OpenSearch")

    def _send_vectors(
        self, index: str, actions: list[dict[str, Any]], pipeline: str | None
    ) -> None:
        self._run_bulk(actions, pipeline=pipeline)

    def _delete_ids(self, index: str, ids: list[str]) -> int:
        return delete_ids(self.client, index, ids, self.bulk)

    def _live_settings(self) -> dict[str, Any]:
        return assets.live_settings(self.index_options)

    def _run_bulk(self, actions: list[dict[str, Any]], *, pipeline: str | None) -> int:
        """Send actions; resend 429/5xx failures with backoff; raise once for the rest."""
        return send_actions(
            self.client,
            actions,
            self.bulk,
            pipeline=pipeline,
            safe_url=self._safe_url,
            sleep=self._sleep,
        )

    # -- reads ------------------------------------------------------------------------------

    def _search(self, body: dict[str, Any], what: str, **params: Any) -> dict[str, Any]:
        from opensearchpy.exceptions import NotFoundError

        try:
            with self._errors(what):
                return self.client.search(index=self.read_target, body=body, params=params or None)
        except StoreError as exc:
            if isinstance(exc.__cause__, NotFoundError):
                self._read_state = None
                raise ERRORS.missing(what, self.read_target, self._safe_url) from exc
            raise

    def _read_dim_space(self) -> tuple[int, str]:
        """Dimension and space type behind the read target, cached for `read_cache_seconds`.

        The cache saves the per-query alias lookups; its expiry lets a long-running server
        follow a blue/green switch.
        """
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
            self._read_state = (now, int(meta["dim"]), self._space_type(indices[0]))
        return self._read_state[1], self._read_state[2]

    def recall(
        self, query_vector: np.ndarray, n: int, *, filters: Filters | None = None
    ) -> Candidates:
        """kNN recall; scores are the space's similarity (the cosine of unit vectors), computed
        from the exact vectors of the hits: a compact encoding's scores are approximate."""
        dim, space = self._read_dim_space()
        query_vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if query_vector.shape[0] != dim:
            raise InputError(f"query vector has {query_vector.shape[0]} values, the index {dim}")
        if n <= 0:
            return Candidates.empty(dim)
        body = assets.knn_search_body(query_vector, n, filters=filters, ef_search=self.ef_search)
        hits = self._search(body, "kNN recall")["hits"]["hits"]
        found = reads.candidates_from_hits(hits, dim)
        return reads.rescored(found, assets.exact_similarity(space, query_vector, found.vectors))

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

    def recall_hybrid(
        self,
        query: str,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
    ) -> Candidates:
        """BM25 and kNN in one `hybrid` query; recall scores are the pipeline's combined scores."""
        dim, _ = self._read_dim_space()
        if n <= 0:
            return Candidates.empty(dim)
        body = assets.hybrid_search_body(
            query,
            np.asarray(query_vector, dtype=np.float32),
            n,
            filters=filters,
            ef_search=self.ef_search,
        )
        pipeline = self.names.hybrid_pipeline
        hits = self._search(body, "hybrid recall", search_pipeline=pipeline)["hits"]["hits"]
        if assets.raw_hybrid_hits(hits):
            raise StoreError(
                f"hybrid recall: the search pipeline {pipeline} at {self._safe_url} has no "
                "normalization-processor, so the scores came back uncombined; put the assets "
                "again (`twinbert-search opensearch put-templates`)"
            )
        return reads.candidates_from_hits(hits, dim)

    def _mget(self, index: str, ids: list[str], fields: list[str]) -> list[dict[str, Any]]:
        source = ",".join(fields)
        docs: list[dict[str, Any]] = []
        for batch in reads.batches(ids, MGET_BATCH):
            with self._errors(f"fetch documents from {index}"):
                response = self.client.mget(
                    index=index, body={"ids": batch}, params={"_source_includes": source}
                )
            docs.extend(response["docs"])
        return docs

    def fetch(self, ids: Sequence[str]) -> Candidates:
        dim, _ = self._read_dim_space()
        ids = list(ids)
        if not ids:
            return Candidates.empty(dim)
        docs = self._mget(self.read_target, list(dict.fromkeys(ids)), list(assets.SOURCE_FIELDS))
        return reads.fetched_candidates(docs, ids, dim)

    def all_ids(self) -> list[str]:
        """Every id, paged with search_after on `doc_id` (sees refreshed documents)."""
        generations = self.generations
        index = generations.write_index if generations.rebuild else self.read_target
        if not index or not generations.concrete_indices(index):
            return []

        def search(body: dict[str, Any]) -> list[dict[str, Any]]:
            with self._errors(f"list the ids in {index}"):
                return self.client.search(index=index, body=body)["hits"]["hits"]

        return scan_ids(search, SCAN_PAGE)

    @property
    def info(self) -> StoreInfo:
        indices = self.generations.concrete_indices(self.read_target)
        if not indices:
            return StoreInfo(
                backend="opensearch",
                model_fingerprint=None,
                dim=None,
                count=0,
                ann=self.index_options.describe(),
                extra={"url": self._safe_url, "alias": self.alias, "indices": []},
            )
        meta = self._index_meta(indices[0])
        with self._errors(f"count {self.read_target}"):
            count = int(self.client.count(index=self.read_target)["count"])
        return StoreInfo(
            backend="opensearch",
            model_fingerprint=meta.get("model_fingerprint"),
            dim=meta.get("dim"),
            count=count,
            codec="float32",
            ann=meta.get("ann"),
            extra={"url": self._safe_url, "alias": self.alias, "indices": indices},
        )

    def status(self) -> dict[str, Any]:
        """What `twinbert-search opensearch status` prints: cluster, index, assets."""
        with self._errors("read the cluster status"):
            health = self.client.cluster.health()
            about = self.client.info()
            template = self.client.indices.exists_index_template(name=self.names.template)
            pipelines = self.client.ingest.get_pipeline(
                id=f"{self.names.vector_pipeline},{self.names.embed_pipeline}", ignore=404
            )
            search_pipeline = self.client.search_pipeline.get(
                id=self.names.hybrid_pipeline, ignore=404
            )
        info = self.info
        return {
            "url": self._safe_url,
            "cluster": {
                "name": health.get("cluster_name"),
                "status": health.get("status"),
                "nodes": health.get("number_of_nodes"),
                "version": about.get("version", {}).get("number"),
            },
            "target": self.read_target,
            "indices": info.extra.get("indices", []),
            "count": info.count,
            "model_fingerprint": info.model_fingerprint,
            "dim": info.dim,
            "ann": info.ann,
            "template": self.names.template if template else None,
            "ingest_pipelines": sorted(k for k in pipelines if not k.startswith("error")),
            "search_pipelines": sorted(
                k for k in search_pipeline if k == self.names.hybrid_pipeline
            ),
        }
