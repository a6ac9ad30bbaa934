"""OpenSearchStore against the in-process fake cluster (every request validated by the spec).

Building and reading here; bulk retries, blue/green rebuilds and connections have their own
files (test_opensearch_bulk.py, test_opensearch_rebuild.py, test_opensearch_connection.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fake_opensearch import FakeCluster
from tests.opensearch_store_helpers import DIM, FP, built, bulk_ids, corpus, make_store
from twinbert_search.documents import Document
from twinbert_search.errors import (
    BulkIndexError,
    ConfigurationError,
    InputError,
    ModelMismatchError,
    StoreError,
)
from twinbert_search.search.fusion import reciprocal_rank_fusion
from twinbert_search.stores.cluster import store as cluster_store
from twinbert_search.stores.opensearch.assets import IndexOptions


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


# -- building and reading ---------------------------------------------------------------------


def test_first_build_creates_assets_and_goes_live_at_finalize(cluster: FakeCluster) -> None:
    store = make_store(cluster)
    docs, vectors = corpus()
    store.upsert(docs, vectors, model_fingerprint=FP)
    index = cluster.indices["docs-000001"]
    assert index.settings["index.refresh_interval"] == "-1"
    assert index.settings["index.number_of_replicas"] == "1", "replicas while building too"
    assert "docs" not in cluster.aliases, "the alias waits until the build is finished"
    assert set(cluster.templates) == {"docs"}
    assert set(cluster.pipelines) == {"docs-vectors"}
    assert set(cluster.search_pipelines) == {"docs-hybrid"}
    assert all(
        r.params.get("pipeline") == "docs-vectors" for r in cluster.requests if r.group == "bulk"
    )
    store.finalize()
    assert cluster.aliases == {"docs": {"docs-000001"}}
    assert index.settings["index.refresh_interval"] == "1s"
    assert index.settings["index.number_of_replicas"] == "1"
    info = store.info
    assert (info.count, info.dim, info.model_fingerprint) == (30, DIM, FP)
    assert info.ann == IndexOptions().describe()
    assert [len(b) for b in bulk_ids(cluster)] == [8, 8, 8, 6], "chunked by count"


def test_recall_returns_cosines_and_exact_stored_data(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    query = vectors[4] * 0.6 + vectors[7] * 0.4
    query /= np.linalg.norm(query)
    found = store.recall(query, 5)
    cos = vectors @ query
    expected = [docs[i].id for i in np.argsort(-cos)[:5]]
    assert found.ids == expected
    np.testing.assert_allclose(found.recall_scores, np.sort(cos)[::-1][:5], atol=2e-3)  # SQfp16
    rows = [int(i[1:]) for i in found.ids]
    np.testing.assert_array_equal(found.vectors, vectors[rows])  # _source is exact float32
    np.testing.assert_array_equal(
        found.precomputed, np.arange(90, dtype=np.float32).reshape(30, 3)[rows]
    )
    assert found.documents[0]["title"] == docs[rows[0]].title
    assert found.documents[0]["metadata"] == docs[rows[0]].metadata


def test_filters_run_inside_the_knn_search(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    query = vectors[1]  # an "en" document
    found = store.recall(query, 4, filters={"lang": "fr"})
    fr = [d.id for d in docs if d.metadata["lang"] == "fr"]
    assert len(found) == 4 and set(found.ids) <= set(fr), "k hits even though fr ranks low"
    either = store.recall(query, 30, filters={"year": [2001, 2003]})
    assert {d["metadata"]["year"] for d in either.documents} == {2001, 2003}
    assert len(either) == 15


@pytest.mark.parametrize(
    "ann, atol",
    [
        ("faiss:fp32:innerproduct", 1e-5),
        ("faiss:fp32:cosinesimil", 1e-5),
        ("faiss:fp32:l2", 1e-5),
        ("lucene:fp32:innerproduct", 1e-5),
        ("lucene:byte:cosinesimil", 1e-5),
        ("faiss:fp16:innerproduct", 2e-3),
    ],
)
def test_recall_scores_are_cosines_for_every_space_type(
    cluster: FakeCluster, ann: str, atol: float
) -> None:
    store, _, vectors = built(cluster, index_options=IndexOptions.parse(ann))
    query = vectors[0] * 0.3 + vectors[9]
    query /= np.linalg.norm(query)
    found = store.recall(query, 30)
    rows = [int(i[1:]) for i in found.ids]
    np.testing.assert_allclose(found.recall_scores, vectors[rows] @ query, atol=atol)
    assert store.info.ann == IndexOptions.parse(ann).describe()


def test_bm25_and_hybrid_recall(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    hits = store.recall_bm25("bread flour", 5)
    assert len(hits) == 5 and all("bread" in docs[int(i[1:])].text for i, _ in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    only_fr = store.recall_bm25("bread flour", 10, filters={"lang": "fr"})
    assert only_fr and all(docs[int(i[1:])].metadata["lang"] == "fr" for i, _ in only_fr)
    assert store.hybrid_fusion == "engine"
    hybrid = store.recall_fused("bread flour", vectors[0], 6)
    assert hybrid is not None and len(hybrid) == 6 and hybrid.vectors.shape == (6, DIM)
    search = [r for r in cluster.requests if r.group == "search"][-1]
    assert search.params == {"search_pipeline": "docs-hybrid"}
    assert "hybrid" in search.body["query"]
    # the engine's RRF over its own lists is the client-side fusion's formula
    dense = store.recall(vectors[0], 6)
    sparse = [i for i, _ in store.recall_bm25("bread flour", 6)]
    expected = reciprocal_rank_fusion([sparse, dense.ids])[:6]
    assert hybrid.ids == [i for i, _ in expected]
    np.testing.assert_allclose(hybrid.recall_scores, [s for _, s in expected], rtol=1e-6)


def test_bm25_scores_of_given_ids(cluster: FakeCluster) -> None:
    """One search scores the candidates a fused rerank needs; non-matching ids score 0."""
    store, docs, _ = built(cluster)
    recalled = dict(store.recall_bm25("bread flour", 50))
    unmatched = next(d.id for d in docs if d.id not in recalled)
    ids = [*list(recalled)[:3], unmatched, next(iter(recalled))]  # a repeat keeps its place
    before = len(cluster.requests)
    got = store.bm25_scores("bread flour", ids)
    assert len(cluster.requests) == before + 1
    expected = [recalled.get(i, 0.0) for i in ids]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[3] == 0.0
    assert store.bm25_scores("bread flour", []).shape == (0,)


@pytest.mark.parametrize(("neural", "version"), [(False, "3.1.0"), (True, "2.18.0")])
def test_hybrid_fuses_in_the_client_without_neural_search_rrf(
    cluster: FakeCluster, neural: bool, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No neural-search on every node, or one before its RRF score-ranker (2.19): no search
    pipeline, `recall_fused` answers None and the searcher fuses; read once, logged once."""
    cluster.neural_search, cluster.version = neural, version
    store, _, vectors = built(cluster)
    assert store.hybrid_fusion == "client" and not cluster.search_pipelines
    assert len(store.recall(vectors[0], 3)) == 3
    before = len(cluster.requests)
    assert store.recall_fused("bread", vectors[0], 3) is None
    assert len(cluster.requests) == before, "the choice is cached, not probed per query"
    reason = "predates the RRF score-ranker" if neural else "not installed on every node"
    assert caplog.text.count("hybrid recall fuses in the client") == 1 and reason in caplog.text


def test_fetch_keeps_the_requested_order(cluster: FakeCluster) -> None:
    store, _, vectors = built(cluster)
    fetched = store.fetch(["d05", "d01", "d05"])
    assert fetched.ids == ["d05", "d01", "d05"]
    np.testing.assert_array_equal(fetched.vectors, vectors[[5, 1, 5]])
    assert not fetched.recall_scores.any()
    with pytest.raises(StoreError, match="unknown document ids"):
        store.fetch(["d01", "nope"])


def test_content_hashes_delete_and_all_ids(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, docs, _ = built(cluster)
    hashes = store.content_hashes(["d01", "d02", "missing"])
    assert hashes == {"d01": docs[1].content_hash, "d02": docs[2].content_hash}
    monkeypatch.setattr(cluster_store, "SCAN_PAGE", 7)
    assert store.all_ids() == sorted(d.id for d in docs)
    assert store.delete(["d01", "d02", "missing"]) == 2
    store.finalize()
    assert len(store.all_ids()) == 28 and store.info.count == 28


def test_documents_become_searchable_at_finalize(cluster: FakeCluster) -> None:
    store, _, vectors = built(cluster)
    new = Document(id="late", text="new arrival")
    store.upsert([new], vectors[:1], model_fingerprint=FP, precomputed=np.ones((1, 3), np.float32))
    assert "late" not in store.recall(vectors[0], 30).ids, "near-real-time: not yet refreshed"
    assert store.fetch(["late"]).ids == ["late"], "mget is realtime"
    store.finalize()
    assert "late" in store.recall(vectors[0], 31).ids


def test_index_mode_without_alias(cluster: FakeCluster) -> None:
    store, _, vectors = built(cluster, index="plain")
    assert set(cluster.indices) == {"plain"} and not cluster.aliases
    assert cluster.indices["plain"].settings["index.refresh_interval"] == "1s"
    assert len(store.recall(vectors[0], 3)) == 3
    with pytest.raises(ConfigurationError, match="needs an alias"):
        store.begin_rebuild()


def test_other_models_and_dimensions_are_refused(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    with pytest.raises(ModelMismatchError):
        store.upsert(docs[:1], vectors[:1], model_fingerprint="another-model")
    with pytest.raises(ModelMismatchError):
        store.ensure_model("another-model")
    store.ensure_model(FP)
    with pytest.raises(ConfigurationError, match="8-d"):
        store.upsert(docs[:1], np.ones((1, 4), np.float32) / 2, model_fingerprint=FP)
    with pytest.raises(InputError):
        store.recall(np.ones(4, np.float32), 3)


def test_the_ingest_pipeline_checks_vectors(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    with pytest.raises(BulkIndexError) as caught:
        store.upsert(docs[:2], vectors[:2] * 3.0, model_fingerprint=FP)  # not unit length
    assert {e["type"] for e in caught.value.errors} == {"script_exception"}
    assert all("unit length" in e["reason"] for e in caught.value.errors)


@pytest.mark.parametrize(
    "vectors, precomputed, doc_id",
    [
        (np.ones((2, DIM), np.float32), None, "d00"),
        (np.full((1, DIM), np.nan, np.float32), None, "d00"),
        (np.ones((1, DIM), np.float32), np.ones((1, 2, 2), np.float32), "d00"),
        (np.ones((1, DIM), np.float32), None, "x" * 600),
    ],
)
def test_upsert_checks_its_input(
    cluster: FakeCluster, vectors: np.ndarray, precomputed: np.ndarray | None, doc_id: str
) -> None:
    store = make_store(cluster)
    with pytest.raises(InputError):
        store.upsert(
            [Document(id=doc_id, text="t")], vectors, model_fingerprint=FP, precomputed=precomputed
        )


def test_every_request_kind_was_validated_against_the_spec(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    store.recall(vectors[0], 3, filters={"lang": "en"})
    store.recall_bm25("moon", 3)
    assert store.recall_fused("moon", vectors[0], 3) is not None
    store.fetch(["d01"])
    store.content_hashes(["d01"])
    store.delete(["d01"])
    store.all_ids()
    store.begin_rebuild(delete_old=True)
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    store.status()
    assert {
        "indices.put_index_template",
        "ingest.put_pipeline",
        "search_pipeline.put",
        "indices.create",
        "bulk",
        "search",
        "mget",
        "count",
        "indices.put_settings",
        "indices.refresh",
        "indices.update_aliases",
        "indices.delete",
    } <= set(cluster.groups())
    bodies = [r for r in cluster.requests if r.body is not None]
    assert len(bodies) > 20  # each one passed FakeCluster.handle's spec validation
