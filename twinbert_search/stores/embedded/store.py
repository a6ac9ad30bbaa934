"""The embedded store: a directory that needs no server.

    index_dir/
      store.json                   manifest (config, counts, generations, current snapshot)
      docs.sqlite                  source of truth (WAL): docs + meta tables
      .writer.lock                 held (flock) by the one process that may write
      snapshots/snapshot-<gen>-<tag>/
        snapshot.json              what was built, from which data generation
        ids.json                   row -> id (rows sorted by id)
        vectors.npy [scales.npy]   codec arrays, memory-mapped at query time
        precomputed.npy            optional, float32 (n, h)
        ann.faiss                  faiss index over the decoded vectors (absent when empty)
        bm25/                      optional BM25 index over "title text"
        filters/                   metadata inverted index: field -> value -> rows

Writes go to SQLite, one transaction per batch, so a crash loses at most the batch in flight.
`finalize()` builds a snapshot from SQLite into a temporary folder and renames it into place
before the manifest points at it, so a crash during finalize leaves the previous one usable.
Queries read only the snapshot (plus SQLite for document text), loaded lazily on first use.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search import __version__
from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, InputError, StoreError
from twinbert_search.stores import ann as ann_lib
from twinbert_search.stores.base import Candidates, Filters, RowIds, StoreInfo, VectorStore
from twinbert_search.stores.codecs import SCALES, VECTORS, Codec, gather_rows, get_codec
from twinbert_search.stores.embedded.bm25 import BM25Index
from twinbert_search.stores.filters import FilterBuilder, FilterIndex

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "store.json"
DB_NAME = "docs.sqlite"
LOCK_NAME = ".writer.lock"
SNAPSHOTS = "snapshots"
SNAPSHOT_META = "snapshot.json"
SQL_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
FETCH_CHUNK = 5_000  # rows per fetchmany while building a snapshot
EXACT_SUBSET_MAX = 20_000  # filtered recall scans the subset exactly up to this size
OVERFETCH = 4  # filtered ANN recall asks for n*4, then n*16, ... until n hits pass
REINDEX_HINT = "run `twinbert-search index` (or EmbeddedStore.finalize()) on it"

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,
    scale REAL,
    precomputed BLOB
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
UPSERT_SQL = """
INSERT INTO docs (id, hash, title, text, metadata, vector, scale, precomputed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET hash = excluded.hash, title = excluded.title,
    text = excluded.text, metadata = excluded.metadata, vector = excluded.vector,
    scale = excluded.scale, precomputed = excluded.precomputed
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import bm25s
    import faiss

    return {
        "twinbert_search": __version__,
        "faiss": faiss.__version__,
        "bm25s": bm25s.__version__,
        "numpy": np.__version__,
    }


def _chunks(items: Sequence[str], size: int = SQL_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _top_n(scores: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best (rows, scores), ordered by (-score, row) so ties are deterministic."""
    if len(scores) > n:
        keep = np.argpartition(-scores, n - 1)[:n]
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


# --- the search snapshot ------------------------------------------------------------------


def _load_npy(path: Path) -> np.ndarray:
    """Memory-mapped, so the arrays live in the page cache rather than the heap.

    On Linux the mapping is populated up front (MAP_POPULATE): otherwise each of a query's
    1,000 candidate rows first-touches its page, and the first queries after opening a 1M
    store spend milliseconds in page faults. Elsewhere a plain read-only memory map.
    """
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is None:
        return _plain_npy(path)
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
        count = int(np.prod(shape, dtype=np.int64))
        if fortran or dtype.hasobject or count == 0:
            return _plain_npy(path)
        mapped = mmap.mmap(
            handle.fileno(),
            offset + count * dtype.itemsize,
            flags=mmap.MAP_SHARED | populate,
            prot=mmap.PROT_READ,
        )
    array = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape)


def _plain_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:  # an empty array cannot be mapped
        return np.load(path)


@dataclass
class _Snapshot:
    """A loaded snapshot: the read side of the store."""

    path: Path
    meta: dict[str, Any]
    codec: Codec
    ids: list[str]
    row_of: dict[str, int]
    arrays: dict[str, np.ndarray]
    precomputed: np.ndarray | None
    index: Any  # faiss.Index, or None when empty
    filters: FilterIndex
    _bm25: BM25Index | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, path: Path) -> _Snapshot:
        meta = json.loads((path / SNAPSHOT_META).read_text())
        codec = get_codec(meta["codec"])
        ids = json.loads((path / "ids.json").read_text())
        has_pre = (path / "precomputed.npy").is_file()
        has_ann = (path / "ann.faiss").is_file()
        return cls(
            path=path,
            meta=meta,
            codec=codec,
            ids=ids,
            row_of={doc_id: row for row, doc_id in enumerate(ids)},
            arrays={name: _load_npy(path / f"{name}.npy") for name in codec.array_names()},
            precomputed=_load_npy(path / "precomputed.npy") if has_pre else None,
            index=ann_lib.load_index(path / "ann.faiss") if has_ann else None,
            filters=FilterIndex(path / "filters"),
        )

    @property
    def count(self) -> int:
        return len(self.ids)

    @cached_property
    def exact_vectors(self) -> bool:
        """Whether the ANN index holds the decoded vectors themselves (IVF-Flat, built from
        `codec.decode`), so recall can take the hits' vectors from it."""
        return self.index is not None and ann_lib.stores_exact_vectors(self.index)

    @property
    def dim(self) -> int | None:
        return self.meta["dim"]

    @property
    def exact(self) -> bool:
        return self.meta["ann"] == "flat"

    def bm25(self) -> BM25Index:
        if not self.meta["bm25"]:
            raise StoreError(
                f"{self.path.parent.parent} was built without a BM25 index; "
                "re-create it with bm25=True (the default) and finalize"
            )
        with self._lock:
            if self._bm25 is None:
                self._bm25 = BM25Index.load(self.path / "bm25", mmap=True)
            return self._bm25


# --- the store ----------------------------------------------------------------------------


def _connect(db_path: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(
            f"{db_path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(str(db_path), check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed batch survives a process crash (SIGKILL) without an fsync.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.isolation_level = None  # transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _read_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM meta")}


def _set_meta(conn: sqlite3.Connection, values: Mapping[str, Any]) -> None:
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(key, json.dumps(value)) for key, value in values.items()],
    )


def _init_db(conn: sqlite3.Connection, codec: str) -> None:
    conn.executescript(SCHEMA)
    defaults = {
        "format_version": FORMAT_VERSION,
        "data_generation": 0,
        "count": 0,
        "model_fingerprint": None,
        "dim": None,
        "codec": codec,
        "precomputed_dim": None,
    }
    conn.executemany(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
        [(key, json.dumps(value)) for key, value in defaults.items()],
    )


def _check_all_or_none(seen: bool | None, present: bool, doc_id: str) -> bool:
    """All or none: the rerank has the document half for every candidate or for none."""
    if seen is not None and seen != present:
        raise StoreError(
            "some documents have precomputed crossing inputs and some do not "
            f"(e.g. {doc_id!r}); re-index all documents with the same model"
        )
    return present


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{manifest_path}: invalid JSON ({exc})") from None
    if manifest.get("backend") != "embedded":
        raise StoreError(f"{path} is a {manifest.get('backend')!r} store, not an embedded one")
    version = manifest.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{manifest_path}: format_version {version} is newer than this twinbert-search "
            f"({__version__}) understands ({FORMAT_VERSION}); upgrade twinbert-search"
        )
    return manifest


def _lock_writer(path: Path) -> Any:
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
        self._conn: sqlite3.Connection | None = conn
        self._manifest = manifest
        self._lock_handle = lock_handle
        self._db_lock = threading.RLock()
        self._load_lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._dirty = False

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
        handle = _lock_writer(path)
        try:
            manifest = _read_manifest(path) if exists else {"created": _now()}
            conn = _connect(path / DB_NAME, read_only=False)
            _init_db(conn, codec_name or manifest.get("codec", "float32"))
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
        manifest = _read_manifest(path)
        conn = _connect(path / DB_NAME, read_only=True)
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
        meta = self._meta()
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
            with self._write_txn() as conn:
                _set_meta(conn, updates)
        self._manifest["ann"] = (
            ann_spec.canonical if ann_spec else self._manifest.get("ann", "auto")
        )
        self._manifest["bm25"] = bm25 if bm25 is not None else self._manifest.get("bm25", True)

    def _check_snapshot(self) -> None:
        snapshot = self._manifest.get("snapshot")
        if snapshot is None or not self._snapshot_dir(snapshot).is_dir():
            raise StoreError(f"{self.path} has no search snapshot yet; {REINDEX_HINT}")
        data_generation = self._meta()["data_generation"]
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
        current = self._manifest.get("snapshot")
        manifest = _read_manifest(self.path)
        if manifest.get("snapshot") == current:
            return False
        with self._load_lock:
            self._manifest = manifest
            self._snapshot = None
        return True

    # -- SQLite plumbing -------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store at {self.path} is closed")
        return self._conn

    @contextmanager
    def _write_txn(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only")
        with self._db_lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._dirty = True

    def _meta(self) -> dict[str, Any]:
        with self._db_lock:
            return _read_meta(self._db())

    def _select_by_ids(self, columns: str, ids: Sequence[str]) -> dict[str, tuple]:
        """Rows of `docs` for these ids, keyed by id, in chunked IN queries."""
        found: dict[str, tuple] = {}
        with self._db_lock:
            conn = self._db()
            for chunk in _chunks(ids):
                sql = f"SELECT id, {columns} FROM docs WHERE id IN ({_placeholders(len(chunk))})"
                for row in conn.execute(sql, tuple(chunk)):
                    found[row[0]] = row[1:]
        return found

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
        docs = list(documents)
        if not docs:
            return
        matrix = self._checked_vectors(docs, vectors)
        pre = self._checked_precomputed(docs, precomputed)
        self.ensure_model(model_fingerprint)
        rows = self._encode_rows(docs, matrix, pre)
        ids = [doc.id for doc in docs]
        with self._write_txn() as conn:
            meta = _read_meta(conn)
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
            _set_meta(conn, updates)

    def _checked_vectors(self, docs: list[Document], vectors: np.ndarray) -> np.ndarray:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) != len(docs):
            raise ValueError(f"expected vectors of shape ({len(docs)}, dim), got {matrix.shape}")
        dim = self._meta()["dim"]
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
        recorded = self._meta()["precomputed_dim"]
        if recorded is not None and pre.shape[1] != recorded:
            raise ConfigurationError(
                f"{self.path} holds precomputed vectors of size {recorded}, not {pre.shape[1]}"
            )
        return pre

    def _encode_rows(
        self, docs: list[Document], matrix: np.ndarray, pre: np.ndarray | None
    ) -> list[tuple]:
        codec = get_codec(self._meta()["codec"])
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
        for chunk in _chunks(ids):
            sql = f"SELECT COUNT(*) FROM docs WHERE id IN ({_placeholders(len(chunk))})"
            total += conn.execute(sql, tuple(chunk)).fetchone()[0]
        return total

    def delete(self, ids: Iterable[str]) -> int:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        with self._write_txn() as conn:
            removed = 0
            for chunk in _chunks(unique):
                sql = f"DELETE FROM docs WHERE id IN ({_placeholders(len(chunk))})"
                removed += conn.execute(sql, tuple(chunk)).rowcount
            if removed:
                meta = _read_meta(conn)
                _set_meta(
                    conn,
                    {
                        "count": meta["count"] - removed,
                        "data_generation": meta["data_generation"] + 1,
                    },
                )
        return removed

    def content_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        return {doc_id: row[0] for doc_id, row in self._select_by_ids("hash", list(ids)).items()}

    def all_ids(self) -> list[str]:
        with self._db_lock:
            return [row[0] for row in self._db().execute("SELECT id FROM docs ORDER BY id")]

    # -- finalize --------------------------------------------------------------------------

    def finalize(self, *, threads: int | None = None) -> None:
        """Build a snapshot of the current data and switch to it atomically.

        A no-op when the current snapshot already reflects the data and settings.
        `threads` caps faiss' OpenMP threads while the ANN index is built.
        """
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only")
        if self._snapshot_is_current():
            return
        snapshots = self.path / SNAPSHOTS
        snapshots.mkdir(exist_ok=True)
        generation = self._meta()["data_generation"]
        name = f"snapshot-{generation:08d}-{uuid.uuid4().hex[:8]}"
        tmp = snapshots / f".tmp-{name}"
        try:
            snapshot_meta = self._build_snapshot(tmp, name, threads)
            os.replace(tmp, snapshots / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        previous = self._manifest.get("snapshot")
        self._manifest["previous_snapshot"] = previous["name"] if previous else None
        self._manifest["snapshot"] = snapshot_meta
        self._write_manifest()
        with self._load_lock:
            self._snapshot = None
        self._prune_snapshots()

    def _snapshot_is_current(self) -> bool:
        snapshot = self._manifest.get("snapshot")
        return (
            snapshot is not None
            and self._snapshot_dir(snapshot).is_dir()
            and snapshot["data_generation"] == self._meta()["data_generation"]
            and snapshot["ann_configured"] == self._manifest["ann"]
            and snapshot["bm25"] == self._manifest["bm25"]
        )

    def _build_snapshot(self, tmp: Path, name: str, threads: int | None) -> dict[str, Any]:
        tmp.mkdir()
        # A separate connection and read transaction: a consistent view of one generation,
        # without holding the lock that concurrent reads of this store need.
        conn = _connect(self.path / DB_NAME, read_only=True)
        try:
            conn.execute("BEGIN")
            meta = _read_meta(conn)
            codec = get_codec(meta["codec"])
            columns = self._read_columns(conn, codec, meta["dim"] or 0)
            ids, arrays, pre, filters = columns
            for array_name, array in arrays.items():
                np.save(tmp / f"{array_name}.npy", array)
            (tmp / "ids.json").write_text(json.dumps(ids, ensure_ascii=False))
            if pre is not None:
                np.save(tmp / "precomputed.npy", pre)
            filter_fields = filters.save(tmp / "filters")
            if self._manifest["bm25"]:
                BM25Index.build(ids, self._texts(conn)).save(tmp / "bm25")
            conn.execute("COMMIT")
        finally:
            conn.close()
        # The slow part runs after the read transaction ends, so the WAL can checkpoint.
        resolved = ann_lib.parse_ann_spec(self._manifest["ann"]).resolve(len(ids))
        if ids:
            index = ann_lib.build_index(resolved, codec.decode(arrays), threads=threads)
            ann_lib.save_index(index, tmp / "ann.faiss")
        snapshot_meta = {
            "name": name,
            "format_version": FORMAT_VERSION,
            "data_generation": meta["data_generation"],
            "count": len(ids),
            "dim": meta["dim"],
            "codec": codec.name,
            "ann": resolved.canonical,
            "ann_configured": self._manifest["ann"],
            "bm25": bool(self._manifest["bm25"]),
            "precomputed_dim": None if pre is None else int(pre.shape[1]),
            "filter_fields": filter_fields,
            "created": _now(),
        }
        _write_json_atomic(tmp / SNAPSHOT_META, snapshot_meta)
        return snapshot_meta

    @staticmethod
    def _read_columns(
        conn: sqlite3.Connection, codec: Codec, dim: int
    ) -> tuple[list[str], dict[str, np.ndarray], np.ndarray | None, FilterBuilder]:
        """All documents in id order: ids, codec arrays, precomputed, filter postings."""
        n = conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        arrays = {VECTORS: np.zeros((n, dim), codec.dtype)}
        if codec.has_scale:
            arrays[SCALES] = np.zeros(n, np.float32)
        ids: list[str] = []
        pre_rows: list[bytes] = []
        has_pre: bool | None = None
        filters = FilterBuilder()
        cursor = conn.execute(
            "SELECT id, vector, scale, precomputed, metadata FROM docs ORDER BY id"
        )
        while batch := cursor.fetchmany(FETCH_CHUNK):
            start = len(ids)
            decoded = codec.from_blobs([r[1] for r in batch], [r[2] for r in batch], dim)
            for array_name, array in decoded.items():
                arrays[array_name][start : start + len(batch)] = array
            for offset, (doc_id, _, _, pre_blob, metadata) in enumerate(batch):
                has_pre = _check_all_or_none(has_pre, pre_blob is not None, doc_id)
                if pre_blob is not None:
                    pre_rows.append(pre_blob)
                filters.add(start + offset, json.loads(metadata))
                ids.append(doc_id)
        pre = None
        if pre_rows:
            pre = np.frombuffer(b"".join(pre_rows), np.float32).reshape(n, -1)
        return ids, arrays, pre, filters

    @staticmethod
    def _texts(conn: sqlite3.Connection) -> Iterator[str]:
        for title, text in conn.execute("SELECT title, text FROM docs ORDER BY id"):
            yield f"{title} {text}" if title else text

    def _snapshot_dir(self, snapshot: Mapping[str, Any]) -> Path:
        return self.path / SNAPSHOTS / snapshot["name"]

    def _prune_snapshots(self) -> None:
        """Keep the current and the previous snapshot (a reader may still be serving it)."""
        keep = {self._manifest["snapshot"]["name"], self._manifest.get("previous_snapshot")}
        for entry in (self.path / SNAPSHOTS).iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    def _write_manifest(self) -> None:
        meta = self._meta()
        snapshot = self._manifest.get("snapshot")
        self._manifest.update(
            {
                "format_version": FORMAT_VERSION,
                "backend": "embedded",
                "model_fingerprint": meta["model_fingerprint"],
                "dim": meta["dim"],
                "codec": meta["codec"],
                "counts": {
                    "documents": meta["count"],
                    "snapshot_documents": snapshot["count"] if snapshot else 0,
                },
                "generations": {
                    "data": meta["data_generation"],
                    "snapshot": snapshot["data_generation"] if snapshot else None,
                },
                "snapshot": snapshot,
                "updated": _now(),
                "versions": _versions(),
            }
        )
        self._manifest.setdefault("created", _now())
        _write_json_atomic(self.path / MANIFEST_NAME, self._manifest)
        self._dirty = False

    # -- reading ---------------------------------------------------------------------------

    def _loaded(self) -> _Snapshot:
        if self._snapshot is not None:
            return self._snapshot
        with self._load_lock:
            if self._snapshot is None:
                snapshot = self._manifest.get("snapshot")
                if snapshot is None or not self._snapshot_dir(snapshot).is_dir():
                    raise StoreError(f"{self.path} has no search snapshot yet; {REINDEX_HINT}")
                self._snapshot = _Snapshot.load(self._snapshot_dir(snapshot))
            return self._snapshot

    def recall(
        self,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
        with_documents: bool | None = None,
    ) -> Candidates:
        snap = self._loaded()
        query = self._checked_query(query_vector, snap)
        if n <= 0 or snap.count == 0:
            return self._empty(snap, with_documents)
        if not filters and snap.exact_vectors:
            scores, rows, vectors = ann_lib.search_with_vectors(snap.index, query, n)
            return self._candidates(snap, rows, scores, with_documents, vectors)
        if not filters:
            rows, scores = self._ann(snap, query, n)
        else:
            allowed = snap.filters.rows(filters)
            if len(allowed) == 0:
                return self._empty(snap, with_documents)
            if snap.exact or len(allowed) <= EXACT_SUBSET_MAX:
                rows, scores = self._exact(snap, query, n, allowed)
            else:
                rows, scores = self._ann_filtered(snap, query, n, allowed)
        return self._candidates(snap, rows, scores, with_documents)

    def _checked_query(self, query_vector: np.ndarray, snap: _Snapshot) -> np.ndarray:
        query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if snap.dim is not None and query.shape[0] != snap.dim:
            raise ConfigurationError(
                f"query vector has {query.shape[0]} dims, the store holds {snap.dim}-dim vectors"
            )
        return query

    def _ann(self, snap: _Snapshot, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = ann_lib.search(snap.index, query, min(n, snap.count), self.ef_search)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]

    @staticmethod
    def _exact(
        snap: _Snapshot, query: np.ndarray, n: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = snap.codec.decode(snap.arrays, allowed) @ query
        return _top_n(scores, allowed, n)

    def _ann_filtered(
        self, snap: _Snapshot, query: np.ndarray, n: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Over-fetch from the ANN index and filter, growing k until n hits pass."""
        mask = np.zeros(snap.count, dtype=bool)
        mask[allowed] = True
        k = min(snap.count, n * OVERFETCH)
        while True:
            scores, rows = ann_lib.search(snap.index, query, k, self.ef_search)
            scores, rows = scores[0], rows[0]
            keep = (rows >= 0) & mask[np.maximum(rows, 0)]
            if keep.sum() >= n or k >= snap.count:
                return rows[keep][:n], scores[keep][:n]
            k = min(snap.count, k * OVERFETCH)

    def _candidates(
        self,
        snap: _Snapshot,
        rows: np.ndarray,
        scores: np.ndarray,
        with_documents: bool | None,
        vectors: np.ndarray | None = None,
    ) -> Candidates:
        """`vectors`: the rows' vectors when the ANN search returned them (else gathered)."""
        ids = RowIds(snap.ids, rows)
        precomputed = None
        if snap.precomputed is not None:
            precomputed = np.asarray(gather_rows(snap.precomputed, rows), dtype=np.float32)
        want_docs = self.with_documents if with_documents is None else with_documents
        return Candidates(
            ids=ids,
            recall_scores=np.asarray(scores, dtype=np.float32),
            vectors=snap.codec.decode(snap.arrays, rows) if vectors is None else vectors,
            precomputed=precomputed,
            documents=self._documents(ids) if want_docs else None,
        )

    def _empty(self, snap: _Snapshot, with_documents: bool | None) -> Candidates:
        empty = Candidates.empty(snap.dim or 0)
        if snap.precomputed is not None:
            empty.precomputed = np.zeros((0, snap.precomputed.shape[1]), np.float32)
        if self.with_documents if with_documents is None else with_documents:
            empty.documents = []
        return empty

    def _documents(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stored fields by id; a document deleted since the snapshot gets empty fields."""
        found = self._select_by_ids("title, text, metadata", ids)
        documents = []
        for doc_id in ids:
            title, text, metadata = found.get(doc_id, ("", "", "{}"))
            documents.append({"title": title, "text": text, "metadata": json.loads(metadata)})
        return documents

    def documents(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        found = self.fetch(ids, with_documents=True)
        return found.documents or [{} for _ in ids]

    def fetch(self, ids: Sequence[str], *, with_documents: bool | None = None) -> Candidates:
        """Stored vectors of these ids: from the snapshot, or SQLite for ids newer than it."""
        ids = list(ids)
        snap = self._loaded() if self._manifest.get("snapshot") else None
        if snap is not None:
            rows = [snap.row_of.get(doc_id) for doc_id in ids]
            if None not in rows:
                row_array = np.asarray(rows, dtype=np.int64)
                candidates = self._candidates(
                    snap, row_array, np.zeros(len(ids), np.float32), with_documents
                )
                return candidates
        return self._fetch_from_db(ids, with_documents)

    def _fetch_from_db(self, ids: list[str], with_documents: bool | None) -> Candidates:
        found = self._select_by_ids("vector, scale, precomputed, title, text, metadata", ids)
        missing = [doc_id for doc_id in ids if doc_id not in found]
        if missing:
            shown = ", ".join(repr(doc_id) for doc_id in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise StoreError(f"unknown document id {shown}{more} in {self.path}")
        meta = self._meta()
        codec = get_codec(meta["codec"])
        rows = [found[doc_id] for doc_id in ids]
        arrays = codec.from_blobs([r[0] for r in rows], [r[1] for r in rows], meta["dim"] or 0)
        pre_blobs = [r[2] for r in rows]
        precomputed = None
        if any(blob is not None for blob in pre_blobs):
            if any(blob is None for blob in pre_blobs):
                raise StoreError("some of these documents lack precomputed crossing inputs")
            precomputed = np.frombuffer(b"".join(pre_blobs), np.float32).reshape(len(ids), -1)
        want_docs = self.with_documents if with_documents is None else with_documents
        documents = None
        if want_docs:
            documents = [{"title": r[3], "text": r[4], "metadata": json.loads(r[5])} for r in rows]
        return Candidates(
            ids=ids,
            recall_scores=np.zeros(len(ids), np.float32),
            vectors=codec.decode(arrays),
            precomputed=None if precomputed is None else precomputed.copy(),
            documents=documents,
        )

    def recall_bm25(
        self, query: str, n: int, *, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        snap = self._loaded()
        index = snap.bm25()
        mask = None
        if filters:
            allowed = snap.filters.rows(filters)
            if len(allowed) == 0:
                return []
            mask = np.zeros(snap.count, dtype=bool)
            mask[allowed] = True
        return index.search(query, n, mask=mask)

    def bm25_scores(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of these ids from the snapshot's index (0 for ids newer than it)."""
        return self._loaded().bm25().scores_for(query, ids)

    # -- info and lifetime -----------------------------------------------------------------

    @property
    def info(self) -> StoreInfo:
        meta = self._meta()
        snapshot = self._manifest.get("snapshot")
        return StoreInfo(
            backend="embedded",
            model_fingerprint=meta["model_fingerprint"],
            dim=meta["dim"],
            count=meta["count"],
            codec=meta["codec"],
            ann=snapshot["ann"] if snapshot else self._manifest.get("ann"),
            extra={
                "path": str(self.path),
                "ann_configured": self._manifest.get("ann"),
                "bm25": self._manifest.get("bm25"),
                "data_generation": meta["data_generation"],
                "precomputed_dim": meta["precomputed_dim"],
                "snapshot": dict(snapshot) if snapshot else None,
            },
        )

    def close(self) -> None:
        """Record counts in store.json (writer), then release SQLite, files and the lock."""
        with self._db_lock:
            if self._conn is None:
                return
            try:
                if not self.read_only and self._dirty:
                    self._write_manifest()
            finally:
                self._conn.close()
                self._conn = None
                with self._load_lock:
                    self._snapshot = None
                if self._lock_handle is not None:
                    self._lock_handle.close()
                    self._lock_handle = None

    def __enter__(self) -> EmbeddedStore:
        return self
