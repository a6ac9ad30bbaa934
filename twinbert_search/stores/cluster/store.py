"""What an OpenSearch and an Elasticsearch store do alike: the write path and index lifecycle.

`ClusterStoreBase` holds the methods whose logic does not depend on the engine: which index a
batch goes to (creating it on the first write, refusing another model, starting a new
generation during a rebuild), the vector upsert, deletes, content hashes, finalize, and where
the store reads from. Each engine's store provides the client calls through a few hooks
(`_create_index`, `_send_vectors`, `_delete_ids`, `_mget`, `_live_settings`, `_errors`) and
keeps what its API makes different (templates, queries, reads).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.cluster import reads, schema, writes

logger = logging.getLogger(__name__)


class ClusterStoreBase:
    """Engine-neutral store methods; mixed in before `IndexRunHooks` and `VectorStore`."""

    ENGINE: str  # "OpenSearch" or "Elasticsearch": named in bulk actions and messages

    # set by the engine's store
    alias: str | None
    index: str | None
    manifest: ModelManifest | None
    generations: Any  # cluster.lifecycle.Generations
    indices: Any  # the engine's lifecycle admin (recorded_meta)
    names: Any
    bulk: Any
    client: Any
    _meta_cache: dict[str, dict[str, Any]]
    _read_state: Any

    # -- hooks each engine implements --------------------------------------------------------

    def _errors(self, what: str) -> Any:
        raise NotImplementedError

    def _create_index(self, manifest: ModelManifest) -> str:
        raise NotImplementedError

    def _send_vectors(
        self, index: str, actions: list[dict[str, Any]], pipeline: str | None
    ) -> None:
        raise NotImplementedError

    def _delete_ids(self, index: str, ids: list[str]) -> int:
        raise NotImplementedError

    def _mget(self, index: str, ids: list[str], fields: list[str]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _live_settings(self) -> dict[str, Any]:
        raise NotImplementedError

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
        target, indices = self.read_target, self.info.extra.get("indices", [])  # type: ignore[attr-defined]
        where = target if indices in ([], [target]) else f"{target} ({', '.join(indices)})"
        return {"where": where, "target": target, "indices": indices}

    # -- lifecycle ---------------------------------------------------------------------------

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
        if self.generations.finalize(self._live_settings()):
            self._read_state = None

    def finalize_partial(self) -> None:
        """Refresh what a stopped run wrote; a rebuild keeps the alias on the old index."""
        if self.generations.finalize(self._live_settings(), partial=True):
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

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(ids))
        index = self.generations.resolve_write_index()
        if not ids or index is None:
            return 0
        with self._errors(f"delete from {index}"):
            return self._delete_ids(index, ids)

    def content_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        """Hashes recorded where writes go (the new generation during a rebuild)."""
        ids = list(dict.fromkeys(ids))
        index = self.generations.hash_target()
        if not ids or index is None:
            return {}
        return reads.content_hashes(self._mget(index, ids, [schema.FIELD_HASH]))

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
