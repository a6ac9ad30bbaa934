"""The embedded store's read path: a loaded snapshot, recall, fetch, documents and BM25.

Queries read only the snapshot that `store.json` names (plus SQLite for document text and
for ids newer than it), loaded lazily on first use and memory-mapped so several server
processes share the page cache. When the snapshot keeps its vectors only in the ANN index
(`"vectors": "ann"`, an IVF-SQ8 index), recall takes the hits' vectors from the lists it
scanned and fetches decode them from the index. `refresh()` picks up a snapshot another
process finalized.

Filtered recall scans the allowed rows exactly up to `EXACT_SUBSET_MAX` of them (exact and
cheap at that size); above it the ANN index is over-fetched until enough hits pass.
"""

from __future__ import annotations

import json
import mmap
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError, StoreError
from twinbert_search.stores.base import Candidates, Filters, RowIds
from twinbert_search.stores.embedded import ann as ann_lib
from twinbert_search.stores.embedded.bm25 import BM25Index
from twinbert_search.stores.embedded.codecs import Codec, gather_rows, get_codec
from twinbert_search.stores.embedded.database import Database
from twinbert_search.stores.embedded.filters import FilterIndex
from twinbert_search.stores.embedded.layout import (
    REINDEX_HINT,
    SNAPSHOT_META,
    VECTORS_IN_ANN,
    StoreManifest,
    read_manifest,
)

EXACT_SUBSET_MAX = 20_000  # filtered recall scans the subset exactly up to this size
OVERFETCH = 4  # filtered ANN recall asks for n*4, then n*16, ... until n hits pass


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


def _top_n(scores: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best (rows, scores), ordered by (-score, row) so ties are deterministic."""
    if len(scores) > n:
        keep = np.argpartition(-scores, n - 1)[:n]
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


@dataclass
class Snapshot:
    """A loaded snapshot: the read side of the store."""

    path: Path
    meta: dict[str, Any]
    codec: Codec
    ids: list[str]
    arrays: dict[str, np.ndarray]  # the codec arrays; empty when the index holds the vectors
    precomputed: np.ndarray | None
    index: Any  # faiss.Index, or None when empty
    filters: FilterIndex
    _bm25: BM25Index | None = None
    _row_map: bool = False  # the index's row -> list map exists (`decode`)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        meta = json.loads((path / SNAPSHOT_META).read_text())
        codec = get_codec(meta["codec"])
        ids = json.loads((path / "ids.json").read_text())
        has_pre = (path / "precomputed.npy").is_file()
        index = None
        if (path / "ann.faiss").is_file():
            ivf = meta["ann"].startswith("ivf")  # lists mapped from the file, then touched once
            index = ann_lib.load_index(path / "ann.faiss", mmap=ivf)
            if ivf:
                ann_lib.warm(index)
        in_ann = meta.get("vectors") == VECTORS_IN_ANN
        return cls(
            path=path,
            meta=meta,
            codec=codec,
            ids=ids,
            arrays={}
            if in_ann
            else {name: _load_npy(path / f"{name}.npy") for name in codec.array_names()},
            precomputed=_load_npy(path / "precomputed.npy") if has_pre else None,
            index=index,
            filters=FilterIndex(path / "filters"),
        )

    @property
    def count(self) -> int:
        return len(self.ids)

    @cached_property
    def row_of(self) -> dict[str, int]:
        """id -> row, built on first fetch by id (searches never need it)."""
        return {doc_id: row for row, doc_id in enumerate(self.ids)}

    @cached_property
    def vectors_from_index(self) -> bool:
        """Whether recall takes the hits' vectors from the ANN index: it holds the only copy,
        or the decoded vectors bit for bit (IVF-Flat, built from `codec.decode`)."""
        if self.index is None:
            return False
        return not self.arrays or ann_lib.stores_exact_vectors(self.index)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Float32 vectors of these rows, from the codec arrays or the index holding them."""
        if self.arrays:
            return self.codec.decode(self.arrays, rows)
        if not self._row_map:  # built once, under the lock; reads after it need none
            with self._lock:
                ann_lib.reconstruct_rows(self.index, rows[:0])
                self._row_map = True
        return ann_lib.reconstruct_rows(self.index, rows)

    @cached_property
    def refines(self) -> bool:
        """Whether the index's hits are a shortlist to rescore from the vectors (ivfN,fs)."""
        return self.index is not None and ann_lib.refines(self.index)

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


class Reader:
    """Queries against the snapshot the manifest names; documents come from SQLite.

    `with_documents` and `ef_search` are the store's settings, passed per call so the
    store's attributes stay the one place they live.
    """

    def __init__(self, path: Path, db: Database, manifest: StoreManifest) -> None:
        self.path = path
        self.db = db
        self.manifest = manifest
        self._snapshot: Snapshot | None = None

    def loaded(self) -> Snapshot:
        """The current snapshot, loaded on first use (StoreError when there is none)."""
        if self._snapshot is not None:
            return self._snapshot
        with self.manifest.lock:
            if self._snapshot is None:
                snapshot = self.manifest.snapshot
                if snapshot is None or not self.manifest.snapshot_dir(snapshot).is_dir():
                    raise StoreError(f"{self.path} has no search snapshot yet; {REINDEX_HINT}")
                self._snapshot = Snapshot.load(self.manifest.snapshot_dir(snapshot))
            return self._snapshot

    def unload(self) -> None:
        """Forget the loaded snapshot (finalize switched to another, or the store closes)."""
        with self.manifest.lock:
            self._snapshot = None

    def refresh(self) -> bool:
        """Pick up a snapshot finalized by another process since opening; True if changed."""
        current = self.manifest.snapshot
        fresh = read_manifest(self.path)
        if fresh.get("snapshot") == current:
            return False
        with self.manifest.lock:
            self.manifest.data = fresh
            self._snapshot = None
        return True

    # -- recall ----------------------------------------------------------------------------

    def recall(
        self,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None,
        with_documents: bool,
        ef_search: int | None,
    ) -> Candidates:
        snap = self.loaded()
        query = self._checked_query(query_vector, snap)
        if n <= 0 or snap.count == 0:
            return self._empty(snap, with_documents)
        if not filters and snap.vectors_from_index:
            scores, rows, vectors = ann_lib.search_with_vectors(snap.index, query, n)
            return self.candidates(snap, rows, scores, with_documents, vectors)
        if not filters and snap.refines:
            scores, rows, vectors = ann_lib.search_refined(snap.index, query, n, snap.decode)
            return self.candidates(snap, rows, scores, with_documents, vectors)
        if not filters:  # an index that holds no vectors and needs no rescoring
            rows, scores = self._ann(snap, query, n, ef_search)
        else:
            allowed = snap.filters.rows(filters)
            if len(allowed) == 0:
                return self._empty(snap, with_documents)
            if snap.exact or len(allowed) <= EXACT_SUBSET_MAX:
                rows, scores = self._exact(snap, query, n, allowed)
            else:
                rows, scores = self._ann_filtered(snap, query, n, allowed, ef_search)
        return self.candidates(snap, rows, scores, with_documents)

    @staticmethod
    def _checked_query(query_vector: np.ndarray, snap: Snapshot) -> np.ndarray:
        query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if snap.dim is not None and query.shape[0] != snap.dim:
            raise ConfigurationError(
                f"query vector has {query.shape[0]} dims, the store holds {snap.dim}-dim vectors"
            )
        return query

    @staticmethod
    def _ann(
        snap: Snapshot, query: np.ndarray, n: int, ef_search: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = ann_lib.search(snap.index, query, min(n, snap.count), ef_search)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]

    @staticmethod
    def _exact(
        snap: Snapshot, query: np.ndarray, n: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = snap.decode(allowed) @ query
        return _top_n(scores, allowed, n)

    @staticmethod
    def _ann_filtered(
        snap: Snapshot, query: np.ndarray, n: int, allowed: np.ndarray, ef_search: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Over-fetch from the ANN index and filter, growing k until n hits pass."""
        mask = np.zeros(snap.count, dtype=bool)
        mask[allowed] = True
        wanted = ann_lib.refine_shortlist(n) if snap.refines else n
        k = min(snap.count, wanted * OVERFETCH)
        while True:
            scores, rows = ann_lib.search(snap.index, query, k, ef_search)
            scores, rows = scores[0], rows[0]
            keep = (rows >= 0) & mask[np.maximum(rows, 0)]
            if keep.sum() >= wanted or k >= snap.count:
                rows, scores = rows[keep][:wanted], scores[keep][:wanted]
                if snap.refines:  # the shortlist rescored from the stored vectors
                    scores, rows, _ = ann_lib.rescore(query, rows, snap.decode(rows), n)
                return rows, scores
            k = min(snap.count, k * OVERFETCH)

    def candidates(
        self,
        snap: Snapshot,
        rows: np.ndarray,
        scores: np.ndarray,
        with_documents: bool,
        vectors: np.ndarray | None = None,
    ) -> Candidates:
        """`vectors`: the rows' vectors when the ANN search returned them (else gathered)."""
        ids = RowIds(snap.ids, rows)
        precomputed = None
        if snap.precomputed is not None:
            precomputed = np.asarray(gather_rows(snap.precomputed, rows), dtype=np.float32)
        return Candidates(
            ids=ids,
            recall_scores=np.asarray(scores, dtype=np.float32),
            vectors=snap.decode(rows) if vectors is None else vectors,
            precomputed=precomputed,
            documents=self._documents(ids) if with_documents else None,
        )

    @staticmethod
    def _empty(snap: Snapshot, with_documents: bool) -> Candidates:
        empty = Candidates.empty(snap.dim or 0)
        if snap.precomputed is not None:
            empty.precomputed = np.zeros((0, snap.precomputed.shape[1]), np.float32)
        if with_documents:
            empty.documents = []
        return empty

    # -- by id -----------------------------------------------------------------------------

    def _documents(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stored fields by id; a document deleted since the snapshot gets empty fields."""
        found = self.db.select_by_ids("title, text, metadata", ids)
        documents = []
        for doc_id in ids:
            title, text, metadata = found.get(doc_id, ("", "", "{}"))
            documents.append({"title": title, "text": text, "metadata": json.loads(metadata)})
        return documents

    def fetch(self, ids: Sequence[str], *, with_documents: bool) -> Candidates:
        """Stored vectors of these ids: from the snapshot, or SQLite for ids newer than it."""
        ids = list(ids)
        snap = self.loaded() if self.manifest.snapshot else None
        if snap is not None:
            rows = [snap.row_of.get(doc_id) for doc_id in ids]
            if None not in rows:
                row_array = np.asarray(rows, dtype=np.int64)
                return self.candidates(
                    snap, row_array, np.zeros(len(ids), np.float32), with_documents
                )
        return self._fetch_from_db(ids, with_documents)

    def _fetch_from_db(self, ids: list[str], with_documents: bool) -> Candidates:
        found = self.db.select_by_ids("vector, scale, precomputed, title, text, metadata", ids)
        missing = [doc_id for doc_id in ids if doc_id not in found]
        if missing:
            shown = ", ".join(repr(doc_id) for doc_id in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise StoreError(f"unknown document id {shown}{more} in {self.path}")
        meta = self.db.meta()
        codec = get_codec(meta["codec"])
        rows = [found[doc_id] for doc_id in ids]
        arrays = codec.from_blobs([r[0] for r in rows], [r[1] for r in rows], meta["dim"] or 0)
        pre_blobs = [r[2] for r in rows]
        precomputed = None
        if any(blob is not None for blob in pre_blobs):
            if any(blob is None for blob in pre_blobs):
                raise StoreError("some of these documents lack precomputed crossing inputs")
            precomputed = np.frombuffer(b"".join(pre_blobs), np.float32).reshape(len(ids), -1)
        documents = None
        if with_documents:
            documents = [{"title": r[3], "text": r[4], "metadata": json.loads(r[5])} for r in rows]
        return Candidates(
            ids=ids,
            recall_scores=np.zeros(len(ids), np.float32),
            vectors=codec.decode(arrays),
            precomputed=None if precomputed is None else precomputed.copy(),
            documents=documents,
        )

    # -- BM25 ------------------------------------------------------------------------------

    def recall_bm25(
        self, query: str, n: int, *, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        snap = self.loaded()
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
        return self.loaded().bm25().scores_for(query, ids)
