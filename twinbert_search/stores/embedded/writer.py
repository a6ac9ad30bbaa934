"""The embedded store's write side: the writer lock, upserts and deletes into SQLite.

Only one process may write a store: `lock_writer` takes an exclusive flock on `.writer.lock`
for the store's lifetime, so two indexing runs never interleave their batches or finalize().
Each batch is checked whole (shape, dimension, finite values, duplicate ids, metadata that
serialises) before its one transaction, which also advances the data generation that tells
finalize() whether the snapshot is stale.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, InputError, StoreError
from twinbert_search.stores.embedded.codecs import get_codec
from twinbert_search.stores.embedded.database import (
    Database,
    chunks,
    placeholders,
    read_meta,
    set_meta,
)
from twinbert_search.stores.embedded.layout import LOCK_NAME

logger = logging.getLogger(__name__)

UPSERT_SQL = """
INSERT INTO docs (id, hash, title, text, metadata, vector, scale, precomputed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET hash = excluded.hash, title = excluded.title,
    text = excluded.text, metadata = excluded.metadata, vector = excluded.vector,
    scale = excluded.scale, precomputed = excluded.precomputed
"""


def lock_writer(path: Path) -> Any:
    """An exclusive flock, so two indexing runs never interleave finalize() on one store."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no cross-process guard
        return None
    handle = open(path / LOCK_NAME, "a+")  # noqa: SIM115 - held for the store's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreError(f"{path} is being written by another process") from None
    return handle


class Writer:
    """Upserts and deletes of one store, in SQLite transactions; holds the writer lock."""

    def __init__(self, path: Path, db: Database, lock_handle: Any) -> None:
        self.path = path
        self.db = db
        self.lock_handle = lock_handle

    def reconcile(self, dim: int | None, codec: str | None) -> None:
        """Record `dim` when the store has none, and `codec` while it is empty."""
        meta = self.db.meta()
        if dim is not None and meta["dim"] is not None and dim != meta["dim"]:
            raise ConfigurationError(
                f"{self.path} holds {meta['dim']}-dim vectors, not {dim}; "
                "use the same model or a new index directory"
            )
        updates: dict[str, Any] = {}
        if dim is not None and meta["dim"] is None:
            updates["dim"] = dim
        if codec is not None and codec != meta["codec"]:
            if meta["count"] == 0:
                updates["codec"] = codec
            else:
                logger.warning(
                    "%s stores %s vectors; keeping that codec, not %s (use a new index to change)",
                    self.path,
                    meta["codec"],
                    codec,
                )
        if updates:
            with self.db.write_txn() as conn:
                set_meta(conn, updates)

    def upsert(
        self,
        documents: Sequence[Document],
        vectors: np.ndarray,
        *,
        model_fingerprint: str,
        precomputed: np.ndarray | None,
        ensure_model: Callable[[str], None],
    ) -> None:
        """Insert or replace a batch in one transaction: all of it lands or none does.

        `ensure_model` (the store's check against the recorded model) runs after the shape
        checks and before any row is encoded.
        """
        docs = list(documents)
        if not docs:
            return
        matrix = self._checked_vectors(docs, vectors)
        pre = self._checked_precomputed(docs, precomputed)
        ensure_model(model_fingerprint)
        rows = self._encode_rows(docs, matrix, pre)
        ids = [doc.id for doc in docs]
        with self.db.write_txn() as conn:
            meta = read_meta(conn)
            existing = self._count_existing(conn, ids)
            conn.executemany(UPSERT_SQL, rows)
            updates = {
                "count": meta["count"] + len(ids) - existing,
                "data_generation": meta["data_generation"] + 1,
            }
            if meta["model_fingerprint"] is None:
                updates["model_fingerprint"] = model_fingerprint
            if meta["dim"] is None:
                updates["dim"] = matrix.shape[1]
            if pre is not None and meta["precomputed_dim"] is None:
                updates["precomputed_dim"] = pre.shape[1]
            set_meta(conn, updates)

    def _checked_vectors(self, docs: list[Document], vectors: np.ndarray) -> np.ndarray:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) != len(docs):
            raise ValueError(f"expected vectors of shape ({len(docs)}, dim), got {matrix.shape}")
        dim = self.db.meta()["dim"]
        if dim is not None and matrix.shape[1] != dim:
            raise ConfigurationError(
                f"{self.path} holds {dim}-dim vectors, not {matrix.shape[1]}; "
                "use the same model or a new index directory"
            )
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        if len(bad):
            raise InputError("vector has NaN or infinite values", record_id=docs[bad[0]].id)
        seen: set[str] = set()
        for doc in docs:
            if doc.id in seen:
                raise InputError("document id appears twice in one batch", record_id=doc.id)
            seen.add(doc.id)
        return matrix

    def _checked_precomputed(
        self, docs: list[Document], precomputed: np.ndarray | None
    ) -> np.ndarray | None:
        if precomputed is None:
            return None
        pre = np.ascontiguousarray(precomputed, dtype=np.float32)
        if pre.ndim != 2 or len(pre) != len(docs):
            raise ValueError(f"expected precomputed of shape ({len(docs)}, h), got {pre.shape}")
        recorded = self.db.meta()["precomputed_dim"]
        if recorded is not None and pre.shape[1] != recorded:
            raise ConfigurationError(
                f"{self.path} holds precomputed vectors of size {recorded}, not {pre.shape[1]}"
            )
        return pre

    def _encode_rows(
        self, docs: list[Document], matrix: np.ndarray, pre: np.ndarray | None
    ) -> list[tuple]:
        """Rows for UPSERT_SQL: vectors in the store's codec, metadata as sorted JSON."""
        codec = get_codec(self.db.meta()["codec"])
        blobs, scales = codec.to_blobs(codec.encode(matrix))
        pre_blobs = [row.tobytes() for row in pre] if pre is not None else [None] * len(docs)
        rows = []
        for doc, blob, scale, pre_blob in zip(docs, blobs, scales, pre_blobs, strict=True):
            try:
                metadata = json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True)
            except (TypeError, ValueError) as exc:
                raise InputError(str(exc), record_id=doc.id, field="metadata") from None
            rows.append(
                (doc.id, doc.content_hash, doc.title, doc.text, metadata, blob, scale, pre_blob)
            )
        return rows

    @staticmethod
    def _count_existing(conn: sqlite3.Connection, ids: Sequence[str]) -> int:
        total = 0
        for chunk in chunks(ids):
            sql = f"SELECT COUNT(*) FROM docs WHERE id IN ({placeholders(len(chunk))})"
            total += conn.execute(sql, tuple(chunk)).fetchone()[0]
        return total

    def delete(self, ids: Iterable[str]) -> int:
        """Remove these ids in one transaction; returns how many existed."""
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        with self.db.write_txn() as conn:
            removed = 0
            for chunk in chunks(unique):
                sql = f"DELETE FROM docs WHERE id IN ({placeholders(len(chunk))})"
                removed += conn.execute(sql, tuple(chunk)).rowcount
            if removed:
                meta = read_meta(conn)
                set_meta(
                    conn,
                    {
                        "count": meta["count"] - removed,
                        "data_generation": meta["data_generation"] + 1,
                    },
                )
        return removed

    def release(self) -> None:
        """Let another process write (the store is closing)."""
        if self.lock_handle is not None:
            self.lock_handle.close()
            self.lock_handle = None
