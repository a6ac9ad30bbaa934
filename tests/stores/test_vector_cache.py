"""The cluster stores' vector cache: recalls carry ids and versions, vectors stay in memory.

Each engine's store is run on its fake (which validates every request against the engine's
API specification) with and without the cache: the candidates must be the same, a cached
document must never be served after it was written again or deleted, and the memory bound
must hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests import elasticsearch_store_helpers as es_helpers
from tests import opensearch_store_helpers as os_helpers
from tests.fake_elasticsearch import FakeElasticsearch
from tests.fake_opensearch import FakeCluster
from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.cluster.schema import FIELD_TEXT, FIELD_VECTOR
from twinbert_search.stores.cluster.vector_cache import VectorCache

ENGINES: dict[str, tuple[Callable[[], Any], Any]] = {
    "opensearch": (FakeCluster, os_helpers),
    "elasticsearch": (FakeElasticsearch, es_helpers),
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    make_cluster, helpers = ENGINES[request.param]
    return make_cluster(), helpers


def query_of(vectors: np.ndarray, *rows: int) -> np.ndarray:
    q = sum(vectors[r] for r in rows)
    return (q / np.linalg.norm(q)).astype(np.float32)


def assert_same(a: Any, b: Any) -> None:
    assert list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.recall_scores, b.recall_scores)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.precomputed, b.precomputed)
    assert a.documents == b.documents


def test_cached_recall_matches_and_sends_no_vectors(engine: tuple[Any, Any]) -> None:
    cluster, helpers = engine
    plain, _, vectors = helpers.built(cluster)
    cached = helpers.make_store(cluster, vector_cache_mb=1)
    query = query_of(vectors, 3, 11)
    expected = plain.recall(query, 12)

    first = cached.recall(query, 12)
    assert_same(first, expected)
    body = cluster.bodies("search")[-1]
    assert body["_source"] is False and body["seq_no_primary_term"] is True
    assert len(cluster.bodies("mget")) == 1  # the misses, in one request
    assert cached.vector_cache.stats()["misses"] == 12

    mgets = len(cluster.bodies("mget"))
    again = cached.recall(query, 12)
    assert_same(again, expected)
    assert len(cluster.bodies("mget")) == mgets  # all twelve from memory
    assert cached.vector_cache.stats()["hits"] == 12


def test_a_document_written_again_is_fetched_again(engine: tuple[Any, Any]) -> None:
    cluster, helpers = engine
    store, docs, vectors = helpers.built(cluster, vector_cache_mb=1)
    query = query_of(vectors, 5)
    top = store.recall(query, 5)
    assert top.ids[0] == docs[5].id

    moved = vectors[5].copy()
    moved[0] = -moved[0]
    moved /= np.linalg.norm(moved)
    changed = Document(id=docs[5].id, title=docs[5].title, text="rewritten", metadata={})
    pre = np.full((1, 3), 7.0, np.float32)
    store.upsert([changed], moved[None, :], model_fingerprint=helpers.FP, precomputed=pre)
    store.finalize()

    found = store.recall(query, 30)
    row = list(found.ids).index(docs[5].id)
    np.testing.assert_array_equal(found.vectors[row], moved)
    np.testing.assert_array_equal(found.precomputed[row], pre[0])
    assert found.documents[row]["text"] == "rewritten"


def test_a_deleted_document_drops_out(engine: tuple[Any, Any]) -> None:
    cluster, helpers = engine
    store, docs, vectors = helpers.built(cluster, vector_cache_mb=1)
    query = query_of(vectors, 8)
    store.recall(query, 5)
    # gone from the index but still in the last refreshed view the search reads
    name = next(iter(cluster.indices))
    cluster.indices[name].docs.pop(docs[8].id)
    store.vector_cache.clear()
    found = store.recall(query, 5)
    assert docs[8].id not in found.ids and len(found) == 4


def test_switching_the_alias_clears_the_cache(engine: tuple[Any, Any]) -> None:
    cluster, helpers = engine
    store, docs, vectors = helpers.built(cluster, vector_cache_mb=1, read_cache_seconds=0)
    store.recall(query_of(vectors, 2), 5)
    assert len(store.vector_cache) == 5
    store.begin_rebuild()
    store.upsert(docs, vectors, model_fingerprint=helpers.FP)
    store.finalize()
    found = store.recall(query_of(vectors, 2), 5)
    assert found.precomputed is None  # the new generation's documents, not the cached ones
    assert store.vector_cache.stats()["documents"] == 5


def test_negative_size_is_refused(engine: tuple[Any, Any]) -> None:
    cluster, helpers = engine
    with pytest.raises(ConfigurationError, match="vector_cache_mb"):
        helpers.make_store(cluster, vector_cache_mb=-1)


# -- the cache alone ---------------------------------------------------------------------------


def hit(doc_id: str, seq_no: int | None = 0, index: str = "i") -> dict[str, Any]:
    out: dict[str, Any] = {"_index": index, "_id": doc_id, "_score": 1.0}
    if seq_no is not None:
        out |= {"_seq_no": seq_no, "_primary_term": 1}
    return out


class Source:
    """An mget stand-in: what the cluster holds, and which ids each call asked for."""

    def __init__(self, n: int, dim: int = 4, text: str = "") -> None:
        self.docs = {
            f"d{i}": {FIELD_VECTOR: [float(i)] * dim, FIELD_TEXT: text, "content_hash": "h"}
            for i in range(n)
        }
        self.seq = dict.fromkeys(self.docs, 0)
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, index: str, ids: list[str]) -> list[dict[str, Any]]:
        self.calls.append((index, ids))
        return [
            {"_id": i, "found": True, "_source": self.docs[i], "_seq_no": self.seq[i],
             "_primary_term": 1} if i in self.docs else {"_id": i, "found": False}
            for i in ids
        ]  # fmt: skip


def test_fill_keeps_order_decodes_once_and_drops_the_hash() -> None:
    source, cache = Source(3), VectorCache(1 << 20)
    filled = cache.fill([hit("d2"), hit("d0"), hit("d2")], source)
    assert [h["_id"] for h in filled] == ["d2", "d0", "d2"]
    assert source.calls == [("i", ["d2", "d0"])]  # one mget, each id once
    assert isinstance(filled[0]["_source"][FIELD_VECTOR], np.ndarray)
    assert "content_hash" not in filled[0]["_source"]
    cache.fill([hit("d0")], source)
    assert len(source.calls) == 1


def test_a_new_sequence_number_or_none_misses() -> None:
    source, cache = Source(2), VectorCache(1 << 20)
    cache.fill([hit("d0"), hit("d1")], source)
    source.seq["d0"] = 5
    source.docs["d0"][FIELD_VECTOR] = [9.0] * 4
    filled = cache.fill([hit("d0", seq_no=5), hit("d1", seq_no=None)], source)
    assert source.calls[-1] == ("i", ["d0", "d1"])
    np.testing.assert_array_equal(filled[0]["_source"][FIELD_VECTOR], [9.0] * 4)
    # the same id in another index is another document
    cache.fill([hit("d1", index="other")], source)
    assert source.calls[-1] == ("other", ["d1"])


def test_documents_without_a_version_are_served_but_not_kept() -> None:
    source, cache = Source(1), VectorCache(1 << 20)
    source.seq["d0"] = None  # type: ignore[assignment]
    assert len(cache.fill([hit("d0")], source)) == 1
    assert len(cache) == 0


def test_the_byte_bound_evicts_the_least_recent() -> None:
    source = Source(10, dim=64, text="x" * 100)
    probe = VectorCache(1 << 20)
    probe.fill([hit("d0")], source)
    per_doc = probe.nbytes
    cache = VectorCache(3 * per_doc)
    cache.fill([hit("d0"), hit("d1"), hit("d2")], source)
    cache.fill([hit("d0")], source)  # d0 is now the most recent
    cache.fill([hit("d3")], source)  # evicts d1
    assert cache.stats()["evictions"] == 1 and cache.nbytes <= 3 * per_doc
    calls = len(source.calls)
    cache.fill([hit("d0"), hit("d2"), hit("d3")], source)
    assert len(source.calls) == calls
    cache.fill([hit("d1")], source)
    assert source.calls[-1] == ("i", ["d1"])


def test_a_document_larger_than_the_cache_is_served_not_kept() -> None:
    source = Source(1, dim=1024)
    cache = VectorCache(1000)
    assert len(cache.fill([hit("d0")], source)) == 1
    assert len(cache) == 0 and cache.nbytes == 0


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        VectorCache(0)


def test_engine_fused_recall_is_lean_too(engine: tuple[Any, Any]) -> None:
    cluster, helpers = engine
    plain, _, vectors = helpers.built(cluster)
    cached = helpers.make_store(cluster, vector_cache_mb=1)
    assert cached.hybrid_fusion == "engine"
    query = query_of(vectors, 1, 4)
    expected = plain.recall_fused("bread flour", query, 10)
    assert_same(cached.recall_fused("bread flour", query, 10), expected)
    body = cluster.bodies("search")[-1]
    assert body["_source"] is False and body["seq_no_primary_term"] is True
    assert_same(cached.recall_fused("bread flour", query, 10), expected)
    assert cached.vector_cache.stats()["hits"] == 10
