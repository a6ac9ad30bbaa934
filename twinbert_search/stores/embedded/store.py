"""The embedded store: a directory that needs no server (its layout: `layout.py`).

Writes go to SQLite, one transaction per batch, so a crash loses at most the batch in flight.
`finalize()` builds a snapshot from SQLite into a temporary folder and renames it into place
before the manifest points at it, so a crash during finalize leaves the previous one usable.
Queries read only the snapshot (plus SQLite for document text), loaded lazily on first use.

`EmbeddedStore` is the facade that implements `VectorStore` by composing the pieces, each
in its own module: the SQLite connection (`database.py`), the writer and its lock
(`writer.py`), the snapshot builder (`snapshot.py`) and the read path (`reader.py`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, StoreError
from twinbert_search.stores.base import Candidates, Filters, StoreInfo, VectorStore
from twinbert_search.stores.embedded import ann as ann_lib
from twinbert_search.stores.embedded import snapshot as snapshot_builder
from twinbert_search.stores.embedded.codecs import get_codec
from twinbert_search.stores.embedded.database import Database, connect, init_db
from twinbert_search.stores.embedded.layout import (
    DB_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    REINDEX_HINT,
    UNFINISHED_RUN,
    StoreManifest,
    now,
    read_manifest,
)
from twinbert_search.stores.embedded.reader import Reader, Snapshot
from twinbert_search.stores.embedded.writer import Writer, lock_writer

logger = logging.getLogger(__name__)


class EmbeddedStore(VectorStore):
    """Directory-backed store: SQLite for the truth, immutable snapshots for search.

    Build with `create_or_open` (a writer), serve with `open` (read-only by default). Reads are
    thread-safe: one SQLite connection guarded by a lock, and faiss searches that set their
    knobs per call.
    """

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        manifest: dict[str, Any],
        *,
        read_only: bool,
        with_documents: bool = True,
        ef_search: int | None = None,
        lock_handle: Any = None,
    ) -> None:
        """Use `create_or_open` or `open`, which check the directory first."""
        self.path = path
        self.read_only = read_only
        self.with_documents = with_documents
        self.ef_search = ef_search
        self._manifest = StoreManifest(path, manifest)
        self._db = Database(path, conn, read_only=read_only)
        self._writer = Writer(path, self._db, lock_handle)
        self._reader = Reader(path, self._db, self._manifest)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create_or_open(
        cls,
        index_dir: str | Path,
        *,
        dim: int | None = None,
        codec: str | None = None,
        ann: str | None = None,
        bm25: bool | None = None,
        with_documents: bool = True,
    ) -> EmbeddedStore:
        """A writable store; None keeps what the store records (or the default when new).

        A different `dim` than recorded is an error; a different `codec` is adopted only while
        the store is empty (stored blobs are in the recorded codec), otherwise ignored with a
        warning; `ann` and `bm25` only shape the next snapshot, so they are always adopted.
        """
        codec_name = get_codec(codec).name if codec is not None else None
        ann_spec = ann_lib.parse_ann_spec(ann) if ann is not None else None
        if dim is not None and dim < 1:
            raise ConfigurationError(f"dim must be positive, got {dim}")
        path = Path(index_dir)
        path.mkdir(parents=True, exist_ok=True)
        exists = (path / MANIFEST_NAME).is_file()
        ours = {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_NAME}  # a create cut short
        if not exists and any(p.name not in ours for p in path.iterdir()):
            raise StoreError(f"{path} is not empty and not an embedded store; use a new directory")
        handle = lock_writer(path)
        try:
            manifest = read_manifest(path) if exists else {"created": now()}
            conn = connect(path / DB_NAME, read_only=False)
            init_db(conn, codec_name or manifest.get("codec", "float32"))
        except BaseException:
            if handle is not None:
                handle.close()
            raise
        store = cls(
            path,
            conn,
            manifest,
            read_only=False,
            with_documents=with_documents,
            lock_handle=handle,
        )
        try:
            store._reconcile(dim, codec_name, ann_spec, bm25)
            store._write_manifest()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        *,
        read_only: bool = True,
        with_documents: bool = True,
        ef_search: int | None = None,
    ) -> EmbeddedStore:
        """An existing store; read-only opening needs a snapshot and warns when it is stale."""
        path = Path(index_dir)
        if not (path / MANIFEST_NAME).is_file() or not (path / DB_NAME).is_file():
            raise StoreError(
                f"{path} is not a twinbert-search embedded store (no {MANIFEST_NAME} and "
                f"{DB_NAME}); build one with `twinbert-search index`"
            )
        if not read_only:
            store = cls.create_or_open(path, with_documents=with_documents)
            store.ef_search = ef_search
            return store
        manifest = read_manifest(path)
        conn = connect(path / DB_NAME, read_only=True)
        store = cls(
            path, conn, manifest, read_only=True, with_documents=with_documents, ef_search=ef_search
        )
        try:
            store._check_snapshot()
        except BaseException:
            store.close()
            raise
        return store

    def _reconcile(
        self,
        dim: int | None,
        codec: str | None,
        ann_spec: ann_lib.AnnSpec | None,
        bm25: bool | None,
    ) -> None:
        self._writer.reconcile(dim, codec)
        data = self._manifest.data
        data["ann"] = ann_spec.canonical if ann_spec else data.get("ann", "auto")
        data["bm25"] = bm25 if bm25 is not None else data.get("bm25", True)

    def _check_snapshot(self) -> None:
        snapshot = self._manifest.snapshot
        if snapshot is None or not self._manifest.snapshot_dir(snapshot).is_dir():
            raise StoreError(f"{self.path} has no search snapshot yet; {REINDEX_HINT}")
        data_generation = self._db.meta()["data_generation"]
        if snapshot["data_generation"] < data_generation:
            logger.warning(
                "%s: the search snapshot (data generation %d) is older than the documents (%d); "
                "serving it anyway, %s to include the latest changes",
                self.path,
                snapshot["data_generation"],
                data_generation,
                REINDEX_HINT,
            )

    def refresh(self) -> bool:
        """Pick up a snapshot finalized by another process since opening; True if changed."""
        return self._reader.refresh()

    @property
    def _conn(self) -> sqlite3.Connection | None:
        """The SQLite connection; None once the store is closed."""
        return self._db.conn

    def _loaded(self) -> Snapshot:
        """The loaded snapshot (benchmarks and tests look inside it)."""
        return self._reader.loaded()

    def _want_documents(self, with_documents: bool | None) -> bool:
        return self.with_documents if with_documents is None else with_documents

    # -- writing ---------------------------------------------------------------------------

    def upsert(
        self,
        documents: Sequence[Document],
        vectors: np.ndarray,
        *,
        model_fingerprint: str,
        precomputed: np.ndarray | None = None,
    ) -> None:
        """Insert or replace a batch in one transaction: all of it lands or none does."""
        self._writer.upsert(
            documents,
            vectors,
            model_fingerprint=model_fingerprint,
            precomputed=precomputed,
            ensure_model=self.ensure_model,
        )

    def delete(self, ids: Iterable[str]) -> int:
        return self._writer.delete(ids)

    def content_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        return self._db.content_hashes(list(ids))

    def all_ids(self) -> list[str]:
        return self._db.all_ids()

    def finalize(self, *, threads: int | None = None) -> None:
        """Build a snapshot of the current data and switch to it atomically.

        A no-op when the current snapshot already reflects the data and settings.
        `threads` caps faiss' OpenMP threads while the ANN index is built.
        """
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only")
        if self._snapshot_is_current():
            return
        data = self._manifest.data
        snapshot_meta = snapshot_builder.build_and_publish(
            self.path, self._db.meta()["data_generation"], data["ann"], data["bm25"], threads
        )
        previous = self._manifest.snapshot
        data["previous_snapshot"] = previous["name"] if previous else None
        data["snapshot"] = snapshot_meta
        self._write_manifest()
        self._reader.unload()
        self._manifest.prune_snapshots()

    def begin_index_run(self) -> None:
        """Record the run in store.json at once, so a kill at any point leaves it there."""
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only")
        self._manifest.data[UNFINISHED_RUN] = {"started": now()}
        self._write_manifest()

    def end_index_run(self) -> None:
        if self._manifest.data.pop(UNFINISHED_RUN, None) is not None:
            self._write_manifest()

    def unfinished_index_run(self) -> dict[str, Any] | None:
        """From store.json on disk when read-only (a server sees another process's run)."""
        data = self._manifest.data
        if self.read_only:
            with contextlib.suppress(OSError, StoreError):  # else: what was read at opening
                data = read_manifest(self.path)
        return data.get(UNFINISHED_RUN)

    def _snapshot_is_current(self) -> bool:
        snapshot = self._manifest.snapshot
        return (
            snapshot is not None
            and self._manifest.snapshot_dir(snapshot).is_dir()
            and snapshot["data_generation"] == self._db.meta()["data_generation"]
            and snapshot["ann_configured"] == self._manifest.data["ann"]
            and snapshot["bm25"] == self._manifest.data["bm25"]
        )

    def _write_manifest(self) -> None:
        self._manifest.record(self._db.meta())
        self._db.dirty = False

    # -- reading ---------------------------------------------------------------------------

    def recall(
        self,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
        with_documents: bool | None = None,
    ) -> Candidates:
        return self._reader.recall(
            query_vector,
            n,
            filters=filters,
            with_documents=self._want_documents(with_documents),
            ef_search=self.ef_search,
        )

    def documents(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        found = self.fetch(ids, with_documents=True)
        return found.documents or [{} for _ in ids]

    def fetch(self, ids: Sequence[str], *, with_documents: bool | None = None) -> Candidates:
        """Stored vectors of these ids: from the snapshot, or SQLite for ids newer than it."""
        return self._reader.fetch(ids, with_documents=self._want_documents(with_documents))

    def recall_bm25(
        self, query: str, n: int, *, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        return self._reader.recall_bm25(query, n, filters=filters)

    def bm25_scores(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of these ids from the snapshot's index (0 for ids newer than it)."""
        return self._reader.bm25_scores(query, ids)

    # -- info and lifetime -----------------------------------------------------------------

    @property
    def info(self) -> StoreInfo:
        meta = self._db.meta()
        data = self._manifest.data
        snapshot = self._manifest.snapshot
        return StoreInfo(
            backend="embedded",
            model_fingerprint=meta["model_fingerprint"],
            dim=meta["dim"],
            count=meta["count"],
            codec=meta["codec"],
            ann=snapshot["ann"] if snapshot else data.get("ann"),
            extra={
                "path": str(self.path),
                "ann_configured": data.get("ann"),
                "bm25": data.get("bm25"),
                "data_generation": meta["data_generation"],
                "precomputed_dim": meta["precomputed_dim"],
                "snapshot": dict(snapshot) if snapshot else None,
            },
        )

    def location(self) -> dict[str, Any]:
        """The store directory."""
        return {"where": str(self.path)}

    def close(self) -> None:
        """Record counts in store.json (writer), then release SQLite, files and the lock."""
        with self._db.lock:
            if self._db.conn is None:
                return
            try:
                if not self.read_only and self._db.dirty:
                    self._write_manifest()
            finally:
                self._db.close()
                self._reader.unload()
                self._writer.release()

    def __enter__(self) -> EmbeddedStore:
        return self
