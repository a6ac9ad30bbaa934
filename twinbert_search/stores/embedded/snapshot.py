"""Building a search snapshot from SQLite, and publishing it atomically.

A snapshot is immutable: the ids in id order, the vectors, the precomputed crossing inputs,
the ANN index (`ann.py`), the BM25 index (`bm25.py`) and the metadata filter postings
(`filters.py`). The vectors are kept once: in the store's codec, or, when the ANN index
holds decodable codes (`ivfN,sq8`, what `auto` builds at 50k documents and more), only there
(`snapshot.json` says `"vectors": "ann"`). An `ivfN,fs` index (on request) holds 4-bit
codes that only rank a shortlist, so the codec arrays stay and rescore it.

Rows stream from SQLite into memory-mapped files and the index trains on a sample, so the
build holds a chunk of float32 vectors at a time, whatever the store's size.

It is built in a temporary folder from one read transaction (a consistent data generation)
and renamed into place; only then does the caller point `store.json` at it, so a crash
during a build leaves the previous snapshot serving.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from twinbert_search.errors import StoreError
from twinbert_search.stores.embedded import ann as ann_lib
from twinbert_search.stores.embedded.bm25 import BM25Index
from twinbert_search.stores.embedded.codecs import SCALES, VECTORS, Codec, get_codec
from twinbert_search.stores.embedded.database import connect, read_meta
from twinbert_search.stores.embedded.filters import FilterBuilder
from twinbert_search.stores.embedded.layout import (
    DB_NAME,
    FORMAT_VERSION,
    SNAPSHOT_META,
    SNAPSHOTS,
    VECTORS_IN_ANN,
    now,
    write_json_atomic,
)

log = logging.getLogger(__name__)

FETCH_CHUNK = 5_000  # rows per fetchmany while building a snapshot


class CodecSource:
    """A snapshot's codec arrays as an `ann.VectorSource`: decoded a chunk at a time."""

    def __init__(self, codec: Codec, arrays: Mapping[str, np.ndarray], dim: int) -> None:
        self.codec, self.arrays, self.dim = codec, arrays, dim

    def __len__(self) -> int:
        return len(self.arrays[VECTORS])

    def rows(self, lo: int, hi: int) -> np.ndarray:
        return self.codec.decode({name: array[lo:hi] for name, array in self.arrays.items()})

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.codec.decode(self.arrays, rows)


def build_and_publish(
    store_path: Path, generation: int, ann: str, bm25: bool, threads: int | None
) -> dict[str, Any]:
    """Build a snapshot of the store's current data into place; returns its `snapshot.json`.

    `generation` names the folder (the data generation when finalize started); `ann` and
    `bm25` are the store's configured settings. Nothing is left behind on failure.
    """
    snapshots = store_path / SNAPSHOTS
    snapshots.mkdir(exist_ok=True)
    name = f"snapshot-{generation:08d}-{uuid.uuid4().hex[:8]}"
    tmp = snapshots / f".tmp-{name}"
    try:
        snapshot_meta = build_snapshot(store_path, tmp, name, ann, bm25, threads)
        os.replace(tmp, snapshots / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return snapshot_meta


def build_snapshot(
    store_path: Path, tmp: Path, name: str, ann: str, bm25: bool, threads: int | None
) -> dict[str, Any]:
    """Write every snapshot file into `tmp`; `threads` caps faiss' OpenMP threads."""
    tmp.mkdir()
    # A separate connection and read transaction: a consistent view of one generation,
    # without holding the lock that concurrent reads of this store need.
    conn = connect(store_path / DB_NAME, read_only=True)
    try:
        conn.execute("BEGIN")
        meta = read_meta(conn)
        codec = get_codec(meta["codec"])
        ids, arrays, pre, filters = read_columns(conn, codec, meta["dim"] or 0, tmp)
        (tmp / "ids.json").write_text(json.dumps(ids, ensure_ascii=False))
        filter_fields = filters.save(tmp / "filters")
        del filters
        if bm25:
            BM25Index.build(ids, _texts(conn)).save(tmp / "bm25")
        conn.execute("COMMIT")
    finally:
        conn.close()
    # The slow part runs after the read transaction ends, so the WAL can checkpoint.
    source = CodecSource(codec, arrays, meta["dim"])
    resolved = ann_lib.resolve_for(ann, source) if ids else ann_lib.parse_ann_spec(ann).resolve(0)
    vectors_in_ann = bool(ids) and resolved.holds_vectors
    log.info("snapshot %s: %d documents read; building %s", name, len(ids), resolved)
    if ids:
        with tqdm(total=len(ids), desc="ANN index", unit="doc", disable=None) as bar:
            index = ann_lib.build_index(
                resolved,
                source,
                threads=threads,
                progress=bar.update,
            )
        ann_lib.save_index(index, tmp / "ann.faiss")
        log.info("snapshot %s: %s built (nprobe %s)", name, resolved, getattr(index, "nprobe", "-"))
        del index
    if vectors_in_ann:  # the index's codes serve kNN and rerank: no second copy
        arrays.clear()
        for array_name in codec.array_names():
            (tmp / f"{array_name}.npy").unlink()
    snapshot_meta = {
        "name": name,
        "format_version": FORMAT_VERSION,
        "data_generation": meta["data_generation"],
        "count": len(ids),
        "dim": meta["dim"],
        "codec": codec.name,
        "vectors": VECTORS_IN_ANN if vectors_in_ann else "arrays",
        "ann": resolved.canonical,
        "ann_configured": ann,
        "bm25": bool(bm25),
        "precomputed_dim": None if pre is None else int(pre.shape[1]),
        "filter_fields": filter_fields,
        "created": now(),
    }
    write_json_atomic(tmp / SNAPSHOT_META, snapshot_meta)
    return snapshot_meta


def read_columns(
    conn: sqlite3.Connection, codec: Codec, dim: int, directory: Path
) -> tuple[list[str], dict[str, np.ndarray], np.ndarray | None, FilterBuilder]:
    """All documents in id order: ids, codec arrays, precomputed, filter postings.

    The arrays are written into memory-mapped .npy files in `directory` as rows stream in
    (`vectors.npy`, `scales.npy`, `precomputed.npy`), so no array is held whole in memory.
    """
    n = conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
    arrays = {VECTORS: _open_npy(directory / f"{VECTORS}.npy", (n, dim), codec.dtype)}
    if codec.has_scale:
        arrays[SCALES] = _open_npy(directory / f"{SCALES}.npy", (n,), np.float32)
    ids: list[str] = []
    pre: np.ndarray | None = None
    has_pre: bool | None = None
    filters = FilterBuilder()
    cursor = conn.execute("SELECT id, vector, scale, precomputed, metadata FROM docs ORDER BY id")
    with tqdm(total=n, desc="snapshot", unit="doc", disable=None) as bar:
        while batch := cursor.fetchmany(FETCH_CHUNK):
            start = len(ids)
            decoded = codec.from_blobs([r[1] for r in batch], [r[2] for r in batch], dim)
            for array_name, array in decoded.items():
                arrays[array_name][start : start + len(batch)] = array
            pre_blobs = []
            for offset, (doc_id, _, _, pre_blob, metadata) in enumerate(batch):
                has_pre = check_all_or_none(has_pre, pre_blob is not None, doc_id)
                if pre_blob is not None:
                    pre_blobs.append(pre_blob)
                filters.add(start + offset, json.loads(metadata))
                ids.append(doc_id)
            if pre_blobs:
                block = np.frombuffer(b"".join(pre_blobs), np.float32).reshape(len(batch), -1)
                if pre is None:
                    pre = _open_npy(directory / "precomputed.npy", (n, block.shape[1]), np.float32)
                pre[start : start + len(batch)] = block
            bar.update(len(batch))
    for array in (*arrays.values(), pre):
        if isinstance(array, np.memmap):
            array.flush()
    return ids, arrays, pre, filters


def _open_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A new .npy file of this shape, mapped for writing (a plain array when empty)."""
    if 0 in shape:
        array = np.zeros(shape, dtype)
        np.save(path, array)
        return array
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def check_all_or_none(seen: bool | None, present: bool, doc_id: str) -> bool:
    """All or none: the rerank has the document half for every candidate or for none."""
    if seen is not None and seen != present:
        raise StoreError(
            "some documents have precomputed crossing inputs and some do not "
            f"(e.g. {doc_id!r}); re-index all documents with the same model"
        )
    return present


def _texts(conn: sqlite3.Connection) -> Iterator[str]:
    for title, text in conn.execute("SELECT title, text FROM docs ORDER BY id"):
        yield f"{title} {text}" if title else text
