"""The documents a long-running reader has already fetched, kept so a recall carries only ids.

A rerank of 100 candidates needs their stored vectors. Sent in every answer they are most of
a recall's cost beyond the engine's own `took` (about 500 KB of JSON for 100 hits at 384-d,
written by the engine, carried and parsed by the client: BENCHMARKS.md, "The sidecar on
OpenSearch"). With this cache the recall asks for `_source: false` and each hit's
`_seq_no`/`_primary_term`; a hit whose document is cached under the same index, id, sequence
number and primary term is served from memory, the rest come in one mget per index and are
kept. A document written again gets a new sequence number, so a cached copy is never served
for it; a deleted one drops out of the hits. An index deleted and created again under the same
name restarts its sequence numbers, so the store clears the cache whenever the indices behind
its read target change (it looks every `read_cache_seconds`).

The cache is an LRU bounded in bytes (vectors, precomputed rows, text), safe across threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinbert_search.stores.cluster.schema import (
    FIELD_HASH,
    FIELD_METADATA,
    FIELD_PRECOMPUTED,
    FIELD_TEXT,
    FIELD_TITLE,
    FIELD_VECTOR,
    decode_floats,
)

Hit = Mapping[str, Any]
# (index, ids) -> that index's mget answer for those ids
Fetch = Callable[[str, list[str]], list[dict[str, Any]]]
# a cached entry's bookkeeping beyond its arrays and strings
ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True)
class _Entry:
    version: tuple[int, int]  # (_seq_no, _primary_term)
    source: dict[str, Any]  # the stored fields, vector and precomputed decoded
    nbytes: int


def _version(doc: Hit) -> tuple[int, int] | None:
    seq_no, term = doc.get("_seq_no"), doc.get("_primary_term")
    if seq_no is None or term is None:
        return None
    return int(seq_no), int(term)


def _decoded(source: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The stored source as the rerank reads it, and its approximate size in bytes."""
    out = {k: v for k, v in source.items() if k != FIELD_HASH}
    nbytes = ENTRY_OVERHEAD_BYTES
    vector = source.get(FIELD_VECTOR)
    if vector is not None:
        out[FIELD_VECTOR] = np.asarray(vector, dtype=np.float32)
        nbytes += out[FIELD_VECTOR].nbytes
    encoded = source.get(FIELD_PRECOMPUTED)
    if isinstance(encoded, str):
        out[FIELD_PRECOMPUTED] = decode_floats(encoded)
        nbytes += out[FIELD_PRECOMPUTED].nbytes
    for name in (FIELD_TITLE, FIELD_TEXT):
        nbytes += len(source.get(name) or "")
    nbytes += len(repr(source.get(FIELD_METADATA) or {}))
    return out, nbytes


class VectorCache:
    """An LRU of (index, id) -> stored source, valid for one (seq_no, primary_term)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"a vector cache needs a positive size, got {max_bytes} bytes")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, int]:
        """Counters since start: documents served from memory, fetched, evicted; size now."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "documents": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
            }

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _get(self, key: tuple[str, str], version: tuple[int, int] | None) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or version is None or entry.version != version:
            return None
        self._entries.move_to_end(key)
        return entry

    def _put(self, key: tuple[str, str], entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        if entry.nbytes > self.max_bytes:
            return
        self._entries[key] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.nbytes
            self.evictions += 1

    def fill(self, hits: Sequence[Hit], fetch: Fetch) -> list[dict[str, Any]]:
        """The hits, each with its `_source`: from memory, or fetched (one mget per index)
        and kept. A hit whose document is gone by the time it is fetched is dropped."""
        sources: list[dict[str, Any] | None] = [None] * len(hits)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, hit in enumerate(hits):
                entry = self._get((hit["_index"], hit["_id"]), _version(hit))
                if entry is None:
                    missing.setdefault(hit["_index"], []).append(i)
                else:
                    sources[i] = entry.source
            self.hits += len(hits) - sum(len(p) for p in missing.values())
            self.misses += sum(len(p) for p in missing.values())
        for index, positions in missing.items():
            ids = list(dict.fromkeys(hits[i]["_id"] for i in positions))
            fetched: dict[str, dict[str, Any]] = {}
            for doc in fetch(index, ids):
                if not doc.get("found"):
                    continue
                source, nbytes = _decoded(doc.get("_source") or {})
                fetched[doc["_id"]] = source
                version = _version(doc)
                if version is not None:
                    with self._lock:
                        self._put((index, doc["_id"]), _Entry(version, source, nbytes))
            for i in positions:
                sources[i] = fetched.get(hits[i]["_id"])
        return [
            {**hit, "_source": source}
            for hit, source in zip(hits, sources, strict=True)
            if source is not None
        ]
