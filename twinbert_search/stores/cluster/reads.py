"""From a cluster's search and mget answers to what the rerank consumes.

A recall's hits carry everything the rerank needs in `_source` (the exact float32 vector as
a JSON array, the precomputed crossing half as base64 float32), so the Python side reranks
without a second request; with a `VectorCache` the sources come from memory instead (arrays
already decoded). Hits are ordered by (-score, id), so ties are deterministic across
engines and runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from twinbert_search.errors import StoreError
from twinbert_search.stores.base import Candidates
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


def candidates_from_hits(
    hits: Iterable[Hit],
    dim: int,
    to_similarity: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Candidates:
    """Candidates from search hits; `to_similarity` turns the engine's scores into cosines.

    Every hit must hold a `dim`-d vector; precomputed data is all or none, as in the
    embedded store, because the rerank takes it for every candidate or for none.
    """
    hits = sorted(hits, key=lambda h: (-float(h["_score"]), h["_id"]))
    ids = [h["_id"] for h in hits]
    vectors = np.zeros((len(hits), dim), dtype=np.float32)
    pre: list[np.ndarray | None] = []
    documents = []
    for i, hit in enumerate(hits):
        source = hit.get("_source") or {}
        vector = source.get(FIELD_VECTOR)
        if vector is None or len(vector) != dim:
            raise StoreError(f"document {hit['_id']} has no stored {dim}-d vector")
        vectors[i] = vector
        encoded = source.get(FIELD_PRECOMPUTED)  # base64, or decoded by the vector cache
        if isinstance(encoded, str):
            encoded = decode_floats(encoded)
        pre.append(encoded)
        documents.append(
            {
                "title": source.get(FIELD_TITLE, ""),
                "text": source.get(FIELD_TEXT, ""),
                "metadata": source.get(FIELD_METADATA) or {},
            }
        )
    precomputed = None
    if pre and all(p is not None for p in pre):
        precomputed = np.stack(pre).astype(np.float32)
    elif any(p is not None for p in pre):
        missing = next(ids[i] for i, p in enumerate(pre) if p is None)
        raise StoreError(f"document {missing} lacks the precomputed data its neighbours have")
    scores = np.array([float(h["_score"]) for h in hits], dtype=np.float32)
    return Candidates(
        ids=ids,
        recall_scores=to_similarity(scores) if to_similarity is not None else scores,
        vectors=vectors,
        precomputed=precomputed,
        documents=documents,
    )


def rescored(found: Candidates, scores: np.ndarray) -> Candidates:
    """`found` with these recall scores, ordered again by (-score, id)."""
    order = sorted(range(len(found)), key=lambda i: (-float(scores[i]), found.ids[i]))
    found.recall_scores = np.asarray(scores, dtype=np.float32)
    return found.take(order)


def fetched_candidates(docs: Iterable[Hit], ids: Sequence[str], dim: int) -> Candidates:
    """mget answers as Candidates in the order of `ids` (repeats kept, recall scores 0)."""
    found = {d["_id"]: d for d in docs if d.get("found")}
    missing = [i for i in ids if i not in found]
    if missing:
        raise StoreError(f"{len(missing)} unknown document ids, e.g. {missing[:5]}")
    hits = [{"_id": i, "_score": 0.0, "_source": d["_source"]} for i, d in found.items()]
    fetched = candidates_from_hits(hits, dim)
    fetched.recall_scores = np.zeros(len(fetched), dtype=np.float32)
    position = {doc_id: pos for pos, doc_id in enumerate(fetched.ids)}
    return fetched.take([position[i] for i in ids])


def ranked(hits: Iterable[Hit]) -> list[tuple[str, float]]:
    """(id, score) of BM25 hits, by (-score, id)."""
    return sorted(((h["_id"], float(h["_score"])) for h in hits), key=lambda x: (-x[1], x[0]))


def scores_of(hits: Iterable[Hit], ids: Sequence[str]) -> np.ndarray:
    """The hits' scores in the order of `ids`; 0 where an id has no hit."""
    score = {h["_id"]: float(h["_score"]) for h in hits}
    out = np.zeros(len(ids), np.float32)
    for i, doc_id in enumerate(ids):
        out[i] = score.get(doc_id, 0.0)
    return out


def content_hashes(docs: Iterable[Hit]) -> dict[str, str]:
    """The recorded content hash of each found document of an mget answer."""
    return {
        d["_id"]: d["_source"][FIELD_HASH]
        for d in docs
        if d.get("found") and FIELD_HASH in (d.get("_source") or {})
    }


def batches(ids: Sequence[str], size: int) -> Iterable[list[str]]:
    """`ids` in lists of at most `size` (one mget each)."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])
