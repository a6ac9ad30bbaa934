"""What an OpenSearch and an Elasticsearch store do alike, written once.

`ClusterStoreBase` holds every store method whose logic does not depend on the engine: the
constructor's checks and wiring, preparing an index (model check, template, rebuild), which
index a batch goes to (creating it on the first write, refusing another model, starting a new
generation during a rebuild), upsert, deletes, content hashes, finalize, the read target and
its cached dimension, kNN and BM25 recall, fetch, paging the ids, `info` and `status`.

An engine's store names itself (`ENGINE`), its sub-package's `assets` and `connection`
modules and its `IndexAdmin` adapter, and implements small hooks: the client calls
(`_client_search`, `_mget_batch`, `_count`, `_current_template`, `_put_template`,
`_put_pipelines`, `_send_vectors`, `_cluster_status`, `_bulk_helper`), the kNN body and its
scores (`_read_scoring`, `_knn_body`, `_knn_candidates`) and which of its errors means a
missing index (`_is_missing`); its `connection.translate_errors` translates the rest. What its
API makes different (OpenSearch's in-cluster encoding and hybrid query, Elasticsearch's rrf
retriever) stays in the engine's store.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, InputError, StoreError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.base import Candidates, Filters, StoreInfo
from twinbert_search.stores.cluster import bulk as cluster_bulk
from twinbert_search.stores.cluster import queries, reads, schema, writes
from twinbert_search.stores.cluster.bulk import BulkOptions
from twinbert_search.stores.cluster.lifecycle import Generations, check_name
from twinbert_search.stores.cluster.runs import IndexRuns
from twinbert_search.stores.cluster.vector_cache import VectorCache

logger = logging.getLogger(__name__)

MGET_BATCH = 1000
SCAN_PAGE = 1000


class ClusterStoreBase:
    """Engine-neutral store methods; mixed in before `IndexRunHooks` and `VectorStore`."""

    # set by the engine's store: its name and the sub-package modules behind the hooks
    ENGINE: str  # "OpenSearch" or "Elasticsearch": named in bulk actions and messages
    assets: Any  # IndexOptions, AssetNames, index_template, index_body, live_settings
    connection: Any  # ConnectionOptions, ERRORS, translate_errors
    ADMIN: type  # the engine's IndexAdmin adapter over its index and alias API
    # the engine's own keyword arguments (a query-time kNN breadth) and their defaults
    ENGINE_OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        connection: Any,
        *,
        index: str | None = None,
        alias: str | None = None,
        manifest: ModelManifest | None = None,
        index_options: Any = None,
        bulk: BulkOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
        read_cache_seconds: float = 30.0,
        vector_cache_mb: float = 0.0,
        **engine: Any,
    ) -> None:
        """`connection`: the engine's ConnectionOptions, or a client made by the caller;
        `vector_cache_mb`: memory for the documents recalls have fetched (0: off), so a
        long-running reader's recalls carry ids only (`vector_cache.VectorCache`);
        `engine`: the engine's own keywords (`ENGINE_OPTIONS`), each kept as an attribute."""
        unknown = sorted(set(engine) - set(self.ENGINE_OPTIONS))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword(s) {unknown}")
        for name, default in self.ENGINE_OPTIONS.items():
            setattr(self, name, engine.get(name, default))
        if not index and not alias:
            raise ConfigurationError("give an index name, an alias, or both")
        check_name(index)
        check_name(alias)
        if isinstance(connection, self.connection.ConnectionOptions):
            self.options: Any = connection
            self.client = connection.client()
            self._safe_url = connection.safe_url
        else:  # a client made by the caller
            self.options = None
            self.client = connection
            self._safe_url = f"the configured {self.ENGINE} cluster"
        self.index = index
        self.alias = alias
        self.manifest = manifest
        self.index_options = index_options or self.assets.IndexOptions()
        self.index_options.validate()
        self.bulk = bulk or BulkOptions()
        self.resent: Counter[str] = Counter()  # documents resent, by retry_kind
        self.names = self.assets.AssetNames(alias or index or self.assets.DEFAULT_BASE)
        self.indices = self.ADMIN(self.client, self._errors)
        self.generations = Generations(self.indices, index=index, alias=alias)
        self.runs = IndexRuns(self.indices)  # an unfinished indexing run, in `_meta`
        self._sleep = sleep
        self._meta_cache: dict[str, dict[str, Any]] = {}
        self.read_cache_seconds = read_cache_seconds
        self._read_state: tuple[float, int, Any] | None = None
        if vector_cache_mb < 0:
            raise ConfigurationError(
                f"vector_cache_mb must be 0 (off) or more, got {vector_cache_mb}"
            )
        self.vector_cache = (
            VectorCache(int(vector_cache_mb * 2**20)) if vector_cache_mb > 0 else None
        )
        self._cached_indices: list[str] | None = None

    def __repr__(self) -> str:
        target = self.alias or self.index
        return f"{type(self).__name__}({self._safe_url!r}, target={target!r})"

    # -- hooks each engine implements --------------------------------------------------------

    def _errors(self, what: str) -> Any:
        """A context manager turning the client's exceptions into the package's errors."""
        user = getattr(self.options, "username", None)
        return self.connection.translate_errors(self._safe_url, what, user)

    def _is_missing(self, exc: BaseException | None) -> bool:
        """Whether a client exception says the index or alias does not exist (404)."""
        raise NotImplementedError

    def _client_search(self, index: str, body: dict[str, Any], params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _mget_batch(
        self, index: str, ids: list[str], fields: list[str] | None
    ) -> list[dict[str, Any]]:
        """One mget; `fields` filters `_source`, None asks for all of it as stored."""
        raise NotImplementedError

    def _count(self, target: str) -> int:
        raise NotImplementedError

    def _current_template(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _put_template(self, template: dict[str, Any]) -> None:
        raise NotImplementedError

    def _put_pipelines(self, manifest: ModelManifest, model_id: str | None) -> dict[str, str]:
        raise NotImplementedError

    def _send_vectors(
        self, index: str, actions: list[dict[str, Any]], pipeline: str | None
    ) -> None:
        raise NotImplementedError

    def _bulk_helper(self) -> Callable[..., Any]:
        """The client library's `helpers.streaming_bulk` (imported lazily)."""
        raise NotImplementedError

    def _cluster_status(self) -> tuple[dict[str, Any], dict[str, Any], Any, dict[str, Any]]:
        """(health, extra cluster keys, whether the template exists, the pipelines' keys)."""
        raise NotImplementedError

    def _read_scoring(self, index: str, meta: dict[str, Any]) -> Any:
        """What the kNN queries and scores need of the index read from (cached with its dim)."""
        raise NotImplementedError

    def _knn_body(
        self, vector: np.ndarray, n: int, filters: Filters | None, scoring: Any
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _knn_candidates(
        self, hits: list[dict[str, Any]], dim: int, vector: np.ndarray, scoring: Any
    ) -> Candidates:
        raise NotImplementedError

    def _check_model_id(self, model_id: str | None) -> None:
        """An engine that cannot encode in the cluster refuses a `model_id` here."""

    # -- where reads go ----------------------------------------------------------------------

    @property
    def read_target(self) -> str:
        """What queries name: the alias when there is one (it follows rebuilds), else the index."""
        return self.alias or self.index or ""

    def _index_meta(self, index: str) -> dict[str, Any]:
        if index not in self._meta_cache:
            self._meta_cache[index] = self.indices.recorded_meta(index)
        return self._meta_cache[index]

    def location(self) -> dict[str, Any]:
        """The read target (alias or index) and the concrete indices behind it."""
        target, indices = self.read_target, self.info.extra.get("indices", [])
        where = target if indices in ([], [target]) else f"{target} ({', '.join(indices)})"
        return {"where": where, "target": target, "indices": indices}

    def _read_setup(self) -> tuple[int, Any]:
        """Dimension and scoring behind the read target, cached for `read_cache_seconds`.

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
            scoring = self._read_scoring(indices[0], meta)
            self._read_state = (now, int(meta["dim"]), scoring)
            if self.vector_cache is not None and indices != self._cached_indices:
                # other indices (a switch, or one deleted and made again): new sequence numbers
                self.vector_cache.clear()
                self._cached_indices = indices
        return self._read_state[1], self._read_state[2]

    # -- assets and lifecycle ----------------------------------------------------------------

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
        self._check_model_id(model_id)
        if delete_old and not rebuild:
            raise ConfigurationError("delete_old goes with rebuild")
        if not rebuild:
            self.ensure_model(manifest.fingerprint)
        done = {"assets": self.put_assets(manifest, model_id=model_id)}
        if rebuild:
            self.begin_rebuild(resume=True, delete_old=delete_old)
        return done

    def put_assets(self, manifest: ModelManifest, *, model_id: str | None = None) -> dict[str, str]:
        """Create the index template and pipelines when missing or rendered for another model.

        Returns what was done per asset: "created", "updated", "kept", or the engine's word
        for a pipeline it could not put as rendered ("unavailable", "processorless").
        """
        self._check_model_id(model_id)
        done: dict[str, str] = {}
        template = self.assets.index_template(manifest, self.index_options, self.names)
        with self._errors(f"put the index template {self.names.template}"):
            current = self._current_template()
            if current is None or current.get("_meta") != template["_meta"]:
                self._put_template(template)
                done["template"] = "created" if current is None else "updated"
            else:
                done["template"] = "kept"
        done.update(self._put_pipelines(manifest, model_id))
        return done

    def _create_index(self, manifest: ModelManifest) -> str:
        self.put_assets(manifest)
        name = self.generations.new_index_name()  # an alias gets <alias>-000001, ...
        body = self.assets.index_body(manifest, self.index_options, building=True)
        with self._errors(f"create the index {name}"):
            self.indices.create(name, body)
        logger.info("created index %s (%s)", name, self.index_options.describe())
        self.generations.mark_created(name)
        self.runs.created(name)
        self._meta_cache.pop(name, None)
        return name

    def _manifest_for(self, dim: int, fingerprint: str, *, unit: bool = True) -> ModelManifest:
        """The manifest an index is rendered from (`cluster.writes.manifest_for`)."""
        return writes.manifest_for(self.manifest, dim, fingerprint, unit=unit)

    def _prepare_write(self, dim: int, fingerprint: str, *, unit: bool = True) -> str:
        """The index this batch goes to, created on the first write; refuses other models."""
        if self.generations.rebuild:
            return self._prepare_rebuild_write(dim, fingerprint, unit=unit)
        index = self.generations.resolve_write_index()
        if index is None:
            return self._create_index(self._manifest_for(dim, fingerprint, unit=unit))
        writes.check_recorded(index, self._index_meta(index), dim, fingerprint)
        return index

    def _prepare_rebuild_write(self, dim: int, fingerprint: str, *, unit: bool = True) -> str:
        generations = self.generations
        if generations.write_index is not None:
            meta = self._index_meta(generations.write_index)
            if meta.get("model_fingerprint") not in (None, fingerprint) or meta.get("dim") != dim:
                logger.warning(
                    "the unfinished rebuild %s holds another model; starting a new generation",
                    generations.write_index,
                )
                generations.write_index = None
        if generations.write_index is None:
            return self._create_index(self._manifest_for(dim, fingerprint, unit=unit))
        return generations.write_index

    def ensure_model(self, fingerprint: str) -> None:
        """During a rebuild the new generation may hold another model: that is its purpose.

        The generation being written is checked when it is (re)opened for writing instead.
        """
        if self.generations.rebuild is None:
            super().ensure_model(fingerprint)  # type: ignore[misc]

    def begin_rebuild(self, *, resume: bool = True, delete_old: bool = False) -> str | None:
        """Send the following writes to a new generation; `finalize()` moves the alias to it.

        With `resume`, an unaliased generation left by a failed rebuild is reused, so only
        the documents it lacks need sending. Returns the index name once known.
        """
        index = self.generations.begin_rebuild(resume=resume, delete_old=delete_old)
        if index is None and self.manifest is not None:
            self._create_index(self.manifest)
        return self.generations.write_index

    def finalize(self) -> None:
        """Refresh; a newly built index gets its live settings and then the alias."""
        if self.generations.finalize(self.assets.live_settings(self.index_options)):
            self._read_state = None

    def finalize_partial(self) -> None:
        """Refresh what a stopped run wrote; a rebuild keeps the alias on the old index."""
        if self.generations.finalize(self.assets.live_settings(self.index_options), partial=True):
            self._read_state = None

    # -- writes ------------------------------------------------------------------------------

    def upsert(
        self,
        documents: Sequence[Document],
        vectors: np.ndarray,
        *,
        model_fingerprint: str,
        precomputed: np.ndarray | None = None,
    ) -> None:
        """Index documents with their vectors; partial failures raise BulkIndexError at the end.

        Not atomic: documents that succeeded stay. Ids are `_id`s, so resending is harmless.
        """
        vectors, precomputed = writes.checked_arrays(documents, vectors, precomputed)
        if not documents:
            return
        # without a manifest, the vectors say whether the index may insist on unit length
        unit = schema.all_unit(vectors)
        index = self._prepare_write(int(vectors.shape[1]), model_fingerprint, unit=unit)
        actions = writes.vector_actions(index, documents, vectors, precomputed, engine=self.ENGINE)
        pipeline = self.names.vector_pipeline if self.bulk.use_pipeline else None
        self._send_vectors(index, actions, pipeline)

    def _run_bulk(self, actions: list[dict[str, Any]], **request: Any) -> int:
        """Send actions; resend 429/5xx failures with backoff; raise once for the rest."""
        stream = cluster_bulk.helper_stream(self._bulk_helper(), self.client, self.bulk, **request)
        return cluster_bulk.send_with_retries(
            stream,
            actions,
            self.bulk,
            sleep=self._sleep,
            unreachable=f"{self.ENGINE} at {self._safe_url}",
            resent=self.resent,
        )

    def bulk_resends(self) -> dict[str, int]:
        return dict(self.resent)

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(ids))
        index = self.generations.resolve_write_index()
        if not ids or index is None:
            return 0
        with self._errors(f"delete from {index}"):
            stream = cluster_bulk.helper_stream(
                self._bulk_helper(), self.client, self.bulk, helper_retries=True
            )
            actions = ({"_op_type": "delete", "_index": index, "_id": i} for i in ids)
            return cluster_bulk.count_deletions(stream(actions))

    def content_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        """Hashes recorded where writes go (the new generation during a rebuild)."""
        ids = list(dict.fromkeys(ids))
        index = self.generations.hash_target()
        if not ids or index is None:
            return {}
        return reads.content_hashes(self._mget(index, ids, [schema.FIELD_HASH]))

    # -- reads -------------------------------------------------------------------------------

    def _search(
        self, body: dict[str, Any], what: str, index: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """One search of `index` (the read target by default); a missing one says so."""
        target = index or self.read_target
        try:
            with self._errors(what):
                return self._client_search(target, body, params)
        except StoreError as exc:
            if self._is_missing(exc.__cause__):
                self._read_state = None
                raise self.connection.ERRORS.missing(what, target, self._safe_url) from exc
            raise

    def _query_vector(self, query_vector: np.ndarray, dim: int) -> np.ndarray:
        vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != dim:
            raise InputError(f"query vector has {vector.shape[0]} values, the index {dim}")
        return vector

    def recall(
        self, query_vector: np.ndarray, n: int, *, filters: Filters | None = None
    ) -> Candidates:
        """kNN recall; scores are the inner product of the vectors (the cosine of unit vectors),
        read back from the engine's scores or computed from the hits' exact vectors."""
        dim, scoring = self._read_setup()
        vector = self._query_vector(query_vector, dim)
        if n <= 0:
            return Candidates.empty(dim)
        body = self._lean(self._knn_body(vector, n, filters, scoring))
        hits = self._with_sources(self._search(body, "kNN recall")["hits"]["hits"])
        return self._knn_candidates(hits, dim, vector, scoring)

    def _lean(self, body: dict[str, Any]) -> dict[str, Any]:
        """With the vector cache, a recall asks for ids and versions only."""
        if self.vector_cache is None:
            return body
        return {**body, "_source": False, "seq_no_primary_term": True}

    def _with_sources(self, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A lean recall's hits with their sources, from the cache or one mget per index."""
        if self.vector_cache is None:
            return hits
        return self.vector_cache.fill(hits, lambda index, ids: self._mget(index, ids, None))

    def recall_bm25(
        self, query: str, n: int, *, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        response = self._search(queries.bm25_search_body(query, n, filters=filters), "BM25 recall")
        return reads.ranked(response["hits"]["hits"])

    def bm25_scores(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of these ids in one search (0 where the query matches nothing)."""
        if not ids:
            return np.zeros(0, np.float32)
        body = queries.bm25_scores_body(query, list(dict.fromkeys(ids)))
        return reads.scores_of(self._search(body, "BM25 scores")["hits"]["hits"], ids)

    def _mget(self, index: str, ids: list[str], fields: list[str] | None) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for batch in reads.batches(ids, MGET_BATCH):
            with self._errors(f"fetch documents from {index}"):
                docs.extend(self._mget_batch(index, batch, fields))
        return docs

    def fetch(self, ids: Sequence[str]) -> Candidates:
        dim, _ = self._read_setup()
        ids = list(ids)
        if not ids:
            return Candidates.empty(dim)
        # the whole `_source` (all of SOURCE_FIELDS and the hash): sent as stored, where a
        # field list makes the engine parse and write each document again
        docs = self._mget(self.read_target, list(dict.fromkeys(ids)), None)
        return reads.fetched_candidates(docs, ids, dim)

    def all_ids(self) -> list[str]:
        """Every id, paged with search_after on `doc_id` (sees refreshed documents)."""
        generations = self.generations
        index = generations.write_index if generations.rebuild else self.read_target
        if not index or not generations.concrete_indices(index):
            return []

        def search(body: dict[str, Any]) -> list[dict[str, Any]]:
            return self._search(body, f"list the ids in {index}", index)["hits"]["hits"]

        return queries.scan_ids(search, SCAN_PAGE)

    @property
    def info(self) -> StoreInfo:
        indices = self.generations.concrete_indices(self.read_target)
        extra = {"url": self._safe_url, "alias": self.alias, "indices": indices}
        if not indices:
            return StoreInfo(
                backend=self.ENGINE.lower(),
                model_fingerprint=None,
                dim=None,
                count=0,
                ann=self.index_options.describe(),
                extra=extra,
            )
        meta = self._index_meta(indices[0])
        with self._errors(f"count {self.read_target}"):
            count = self._count(self.read_target)
        return StoreInfo(
            backend=self.ENGINE.lower(),
            model_fingerprint=meta.get("model_fingerprint"),
            dim=meta.get("dim"),
            count=count,
            codec="float32",
            ann=meta.get("ann"),
            extra=extra,
        )

    def status(self) -> dict[str, Any]:
        """What `twinbert-search <engine> status` prints: cluster, index, model, assets."""
        with self._errors("read the cluster status"):
            health, cluster, template, pipelines = self._cluster_status()
        info = self.info
        return {
            "url": self._safe_url,
            "cluster": {
                "name": health.get("cluster_name"),
                "status": health.get("status"),
                "nodes": health.get("number_of_nodes"),
                **cluster,
            },
            "target": self.read_target,
            "indices": info.extra.get("indices", []),
            "count": info.count,
            "model_fingerprint": info.model_fingerprint,
            "dim": info.dim,
            "ann": info.ann,
            "template": self.names.template if template else None,
            **pipelines,
        }

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
