"""ElasticsearchStore against the in-process fake (every request checked by the specification).

Building and reading, hybrid recall, the ingest pipeline's fallback, bulk retries and
blue/green rebuilds; connections and errors are in test_elasticsearch_connection.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.elasticsearch_store_helpers import DIM, FP, built, bulk_ids, corpus, make_store
from tests.fake_elasticsearch import FakeElasticsearch, knn_score
from twinbert_search.documents import Document
from twinbert_search.errors import (
    BulkIndexError,
    ConfigurationError,
    InputError,
    ModelMismatchError,
    StoreError,
)
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.cluster import pipelines
from twinbert_search.stores.elasticsearch import IndexOptions


@pytest.fixture
def cluster() -> FakeElasticsearch:
    return FakeElasticsearch()


# -- building and reading ---------------------------------------------------------------------


def test_first_build_creates_assets_and_goes_live_at_finalize(cluster: FakeElasticsearch) -> None:
    store = make_store(cluster)
    docs, vectors = corpus()
    store.upsert(docs, vectors, model_fingerprint=FP)
    index = cluster.indices["docs-000001"]
    assert index.settings["index.refresh_interval"] == "-1"
    assert index.settings["index.number_of_replicas"] == "1", "replicas while building too"
    assert "docs" not in cluster.aliases, "the alias waits until the build is finished"
    assert set(cluster.templates) == {"docs"} and set(cluster.pipelines) == {"docs-vectors"}
    assert store.pipeline_processors is True
    assert all(
        r.params.get("pipeline") == "docs-vectors" for r in cluster.requests if r.endpoint == "bulk"
    )
    vector = index.mappings["properties"]["embedding"]
    assert vector["index_options"] == {"type": "int8_hnsw", "m": 16, "ef_construction": 128}
    assert (vector["similarity"], vector["dims"]) == ("dot_product", DIM)
    assert index.mappings["_meta"]["twinbert_search"]["model_fingerprint"] == FP
    store.finalize()
    assert cluster.aliases == {"docs": {"docs-000001"}}
    assert index.settings["index.refresh_interval"] == "1s"
    assert index.settings["index.number_of_replicas"] == "1"
    info = store.info
    assert (info.backend, info.count, info.dim, info.model_fingerprint) == (
        "elasticsearch", 30, DIM, FP,
    )  # fmt: skip
    assert info.ann == IndexOptions().describe() == "elasticsearch:int8_hnsw16:efc128:innerproduct"
    assert [len(b) for b in bulk_ids(cluster)] == [8, 8, 8, 6], "chunked by count"


def test_recall_returns_exact_cosines_and_stored_data(cluster: FakeElasticsearch) -> None:
    store, docs, vectors = built(cluster)
    query = vectors[4] * 0.6 + vectors[7] * 0.4
    query /= np.linalg.norm(query)
    found = store.recall(query, 5)
    cos = vectors @ query
    assert found.ids == [docs[i].id for i in np.argsort(-cos)[:5]]
    # int8_hnsw: every query rescores with the float vectors, so scores are exact
    np.testing.assert_allclose(found.recall_scores, np.sort(cos)[::-1][:5], atol=1e-6)
    knn = cluster.bodies("search")[-1]["knn"]
    assert knn["rescore_vector"] == {"oversample": 2.0}
    assert knn["k"] == 5 and knn["num_candidates"] == 100
    rows = [int(i[1:]) for i in found.ids]
    np.testing.assert_array_equal(found.vectors, vectors[rows])  # _source is exact float32
    np.testing.assert_array_equal(
        found.precomputed, np.arange(90, dtype=np.float32).reshape(30, 3)[rows]
    )
    assert found.documents[0]["metadata"] == docs[rows[0]].metadata


def test_without_rescoring_the_quantized_scores_are_approximate(cluster: FakeElasticsearch) -> None:
    """Why the store rescores: the graph's int8 copy alone gives scores off in the 3rd digit."""
    store, _, vectors = built(cluster, index_options=IndexOptions(oversample=0))
    found = store.recall(vectors[3], 10)
    assert "rescore_vector" not in cluster.bodies("search")[-1]["knn"]
    rows = [int(i[1:]) for i in found.ids]
    assert np.abs(found.recall_scores - vectors[rows] @ vectors[3]).max() > 1e-4


def test_float_hnsw_needs_no_rescoring(cluster: FakeElasticsearch) -> None:
    store, _, vectors = built(cluster, index_options=IndexOptions.parse("hnsw32:efc200"))
    found = store.recall(vectors[3], 4)
    assert "rescore_vector" not in cluster.bodies("search")[-1]["knn"]
    rows = [int(i[1:]) for i in found.ids]
    np.testing.assert_allclose(found.recall_scores, vectors[rows] @ vectors[3], atol=1e-6)
    assert cluster.indices["docs-000001"].mappings["properties"]["embedding"]["index_options"] == {
        "type": "hnsw", "m": 32, "ef_construction": 200,
    }  # fmt: skip


def test_filters_run_inside_the_knn_search(cluster: FakeElasticsearch) -> None:
    store, docs, vectors = built(cluster)
    found = store.recall(vectors[1], 4, filters={"lang": "fr"})
    fr = [d.id for d in docs if d.metadata["lang"] == "fr"]
    assert len(found) == 4 and set(found.ids) <= set(fr)
    knn = cluster.bodies("search")[-1]["knn"]
    assert knn["filter"] == {"bool": {"filter": [{"term": {"metadata.lang": "fr"}}]}}
    several = store.recall(vectors[1], 30, filters={"year": [2001, 2002], "lang": "en"})
    assert {docs[int(i[1:])].metadata["year"] for i in several.ids} == {2001, 2002}


def test_bm25_fetch_hashes_and_ids(cluster: FakeElasticsearch) -> None:
    store, docs, vectors = built(cluster)
    hits = store.recall_bm25("bread flour", 5)
    assert hits and all(int(i[1:]) % 3 == 1 for i, _ in hits)
    scores = store.bm25_scores("bread flour", [i for i, _ in hits] + ["d00"])
    np.testing.assert_allclose(scores[:-1], [s for _, s in hits], rtol=1e-6)
    assert scores[-1] == 0.0
    fetched = store.fetch(["d03", "d01", "d03"])
    assert fetched.ids == ["d03", "d01", "d03"]
    np.testing.assert_array_equal(fetched.vectors, vectors[[3, 1, 3]])
    with pytest.raises(StoreError, match="unknown document ids"):
        store.fetch(["nope"])
    assert store.content_hashes(["d01", "nope"]) == {"d01": docs[1].content_hash}
    assert sorted(store.all_ids()) == sorted(d.id for d in docs)
    assert store.delete(["d01", "nope"]) == 1


def test_upsert_refuses_bad_arrays_and_other_models(cluster: FakeElasticsearch) -> None:
    store, docs, vectors = built(cluster)
    with pytest.raises(InputError, match="shape"):
        store.upsert(docs[:2], vectors[:3], model_fingerprint=FP)
    bad = vectors[:2].copy()
    bad[1, 0] = np.nan
    with pytest.raises(InputError, match="not finite"):
        store.upsert(docs[:2], bad, model_fingerprint=FP)
    with pytest.raises(ModelMismatchError, match="was built with model"):
        store.upsert(docs[:2], vectors[:2], model_fingerprint="another")
    with pytest.raises(ConfigurationError, match="holds 8-d vectors"):
        store.upsert(docs[:1], np.ones((1, 4), np.float32) / 2, model_fingerprint=FP)
    with pytest.raises(InputError, match="1 to 512 bytes"):
        store.upsert([Document(id="x" * 600, text="t")], vectors[:1], model_fingerprint=FP)


def test_the_ingest_pipeline_rejects_bad_vectors_and_falls_back_without_ingest_common(
    cluster: FakeElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    store, docs, vectors = built(cluster)
    with pytest.raises(BulkIndexError) as caught:
        store.upsert(docs[:2], vectors[:2] * 2.0, model_fingerprint=FP)
    assert {e["type"] for e in caught.value.errors} == {"script_exception"}

    bare = FakeElasticsearch()
    bare.ingest_common = False  # the integ-test distribution: no set/trim/script processors
    store = make_store(bare)
    store.upsert(docs, vectors, model_fingerprint=FP)
    assert store.pipeline_processors is False
    assert "No processor type exists with name [script]" in caplog.text
    assert bare.pipelines["docs-vectors"]["processors"] == []
    assert "without processors" in bare.pipelines["docs-vectors"]["description"]
    with pytest.raises(BulkIndexError) as caught:  # the mapping still refuses them
        store.upsert(docs[:2], vectors[:2] * 2.0, model_fingerprint=FP)
    assert {e["type"] for e in caught.value.errors} == {"document_parsing_exception"}
    assert "unit-length" in caught.value.errors[0]["reason"]
    manifest = ModelManifest(dim=DIM, fingerprint=FP)
    assert store.put_assets(manifest)["docs-vectors"] == "processorless"


def test_the_vector_pipeline_is_the_one_opensearch_runs() -> None:
    from twinbert_search.stores.opensearch import assets as os_assets

    manifest = ModelManifest(dim=384, fingerprint="abc")
    assert pipelines.vector_pipeline(manifest) == os_assets.vector_pipeline(manifest)


# -- hybrid ------------------------------------------------------------------------------------


def rrf(rankings: list[list[str]], k: int = 60) -> dict[str, float]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return scores


def test_fused_recall_is_one_rrf_retriever_request(cluster: FakeElasticsearch) -> None:
    store, _, vectors = built(cluster)
    assert store.hybrid_fusion == "engine"
    fused = store.recall_fused("bread flour", vectors[0], 6, filters={"lang": "en"})
    assert fused is not None and len(fused) == 6
    body = cluster.bodies("search")[-1]["retriever"]["rrf"]
    assert (body["rank_window_size"], body["rank_constant"]) == (6, 60)
    dense = store.recall(vectors[0], 6, filters={"lang": "en"}).ids
    sparse = [i for i, _ in store.recall_bm25("bread flour", 6, filters={"lang": "en"})]
    expected = rrf([list(dense), sparse])
    assert dict(zip(fused.ids, fused.recall_scores.tolist(), strict=True)) == pytest.approx(
        {i: expected[i] for i in fused.ids}
    )
    assert sorted(expected.values(), reverse=True)[:6] == pytest.approx(
        sorted(fused.recall_scores.tolist(), reverse=True)
    )


@pytest.mark.parametrize(
    ("cluster_lacks", "why"),
    [
        ("module", "the rank-rrf module is not on every node"),
        ("licence", "needs an active enterprise or trial licence (the cluster's: basic, active)"),
        ("version", "Elasticsearch 8.13.4 predates the rrf retriever"),
        ("read access", "could not be read (security_exception"),
    ],
)
def test_hybrid_fusion_is_decided_once_from_the_cluster_before_any_hybrid_query(
    cluster: FakeElasticsearch, cluster_lacks: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The version, every node's modules and the licence are read once; where the rrf
    retriever cannot run, no rrf request is ever sent and the searcher fuses."""
    if cluster_lacks == "module":
        cluster.rrf = False
    elif cluster_lacks == "licence":
        cluster.rrf_licensed = False
    elif cluster_lacks == "version":
        cluster.version = "8.13.4"
    else:
        cluster.fail_requests("license.get", 403)
    store, _, vectors = built(cluster)
    assert "license.get" not in cluster.endpoints()  # indexing does not ask
    assert store.hybrid_fusion == "client"
    assert f"fuses in the client at {store._safe_url}: " in caplog.text and why in caplog.text
    searches = len(cluster.bodies("search"))
    assert store.recall_fused("bread", vectors[0], 5) is None
    assert store.recall_fused("bread", vectors[0], 5) is None
    assert len(cluster.bodies("search")) == searches, "no rrf request is sent"
    assert store.status()["hybrid_fusion"] == "client"
    assert cluster.endpoints().count("license.get") == 1, "read once"


def test_a_refusal_after_the_choice_is_an_error_not_a_quiet_switch(
    cluster: FakeElasticsearch,
) -> None:
    """The path reported stays the path run: a cluster that refuses the rrf retriever after
    the store chose it (its licence lapsed, say) fails the hybrid recall, saying so."""
    store, _, vectors = built(cluster)
    assert store.hybrid_fusion == "engine"
    cluster.rrf_licensed = False
    with pytest.raises(StoreError, match=r"refused the rrf retriever .* reconnect"):
        store.recall_fused("bread", vectors[0], 5)
    assert store.hybrid_fusion == "engine" and store.status()["hybrid_fusion"] == "engine"


# -- bulk and rebuilds --------------------------------------------------------------------------


def test_transient_bulk_failures_are_resent_with_backoff(cluster: FakeElasticsearch) -> None:
    sleeps: list[float] = []
    store = make_store(cluster, sleeps=sleeps)
    docs, vectors = corpus()
    cluster.fail_documents({"d03": [429, 503], "d10": [429]})
    store.upsert(docs, vectors, model_fingerprint=FP)
    assert sleeps == [0.5, 1.0]
    assert len(cluster.indices["docs-000001"].docs) == 30
    cluster.fail_documents({"d04": [429] * 5})
    with pytest.raises(BulkIndexError) as caught:
        store.upsert(docs[:5], vectors[:5], model_fingerprint=FP)
    assert [(e["id"], e["status"], e["attempts"]) for e in caught.value.errors] == [("d04", 429, 4)]


def test_a_whole_bulk_request_refused_is_retried_then_reported(cluster: FakeElasticsearch) -> None:
    store = make_store(cluster)
    docs, vectors = corpus(4)
    store.upsert(docs[:1], vectors[:1], model_fingerprint=FP)
    cluster.fail_requests("bulk", 503)
    store.upsert(docs, vectors, model_fingerprint=FP)
    assert sorted(cluster.indices["docs-000001"].docs) == [d.id for d in docs]
    cluster.fail_requests("bulk", 400, times=1)
    with pytest.raises(BulkIndexError, match="4 of 4 documents failed"):
        store.upsert(docs, vectors, model_fingerprint=FP)


def test_blue_green_rebuild_moves_the_alias_and_resumes(cluster: FakeElasticsearch) -> None:
    store, docs, vectors = built(cluster)
    store.begin_rebuild(delete_old=True)
    cluster.reject_documents(["d05"])
    with pytest.raises(BulkIndexError):
        store.upsert(docs[:10], vectors[:10], model_fingerprint="model-two")
    assert cluster.aliases == {"docs": {"docs-000001"}}, "readers keep the old index"
    cluster.accept_documents()

    again = make_store(cluster)  # a new run takes the unfinished build up
    assert again.begin_rebuild(delete_old=True) == "docs-000002"
    assert set(again.content_hashes([d.id for d in docs[:10]])) == {
        d.id for d in docs[:10] if d.id != "d05"
    }
    again.upsert(docs[5:6], vectors[5:6], model_fingerprint="model-two")
    again.finalize()
    switch = cluster.bodies("indices.update_aliases")[-1]
    assert switch == {"actions": [
        {"add": {"index": "docs-000002", "alias": "docs"}},
        {"remove": {"index": "docs-000001", "alias": "docs"}},
    ]}  # fmt: skip
    assert set(cluster.indices) == {"docs-000002"}, "deleted by name after the switch"
    assert again.info.model_fingerprint == "model-two" and again.info.count == 10
    assert again.recall(vectors[2], 1).ids == ["d02"]


def test_families_whose_templates_overlap_both_get_one(cluster: FakeElasticsearch) -> None:
    """`docs-*` covers `docs-news-*`: each family's template priority grows with its name, so
    the two never tie (Elasticsearch refuses overlapping templates of one priority)."""
    built(cluster)
    news, _, _ = built(cluster, alias="docs-news")
    assert cluster.templates["docs"]["priority"] == 200 + len("docs")
    assert cluster.templates["docs-news"]["priority"] == 200 + len("docs-news")
    assert news.info.count == 30
    again = make_store(cluster, alias="docs-news")
    manifest = ModelManifest(dim=DIM, fingerprint=FP)
    assert again.put_assets(manifest)["template"] == "kept"


def test_a_concrete_index_needs_delete_old_to_become_an_alias(cluster: FakeElasticsearch) -> None:
    _, docs, vectors = built(cluster, index="docs")
    store = make_store(cluster, alias="docs")
    with pytest.raises(StoreError, match="concrete index"):
        store.begin_rebuild()
    store.begin_rebuild(delete_old=True)
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    assert cluster.aliases == {"docs": {"docs-000001"}} and set(cluster.indices) == {"docs-000001"}


def test_index_descriptions_and_scores() -> None:
    for text in ("elasticsearch:int8_hnsw16:efc128:innerproduct", "bbq_hnsw32:efc200:cosinesimil",
                 "elasticsearch:flat:l2", "int4_hnsw8:efc64:innerproduct"):  # fmt: skip
        assert IndexOptions.parse(text).describe().removeprefix("elasticsearch:") == (
            text.removeprefix("elasticsearch:")
        )
    assert (
        IndexOptions.parse("dot_product:bbq_flat").describe()
        == "elasticsearch:bbq_flat:innerproduct"
    )
    assert IndexOptions.parse("bbq_hnsw").rescore_oversample == 3.0
    assert IndexOptions.parse("hnsw").rescore_oversample is None
    for bad in ("faiss:hnsw16", "int8_hnsw16:int8_hnsw32", "hnsw1", "pq_hnsw"):
        with pytest.raises(ConfigurationError):
            IndexOptions.parse(bad)
    from twinbert_search.stores.elasticsearch.index_options import score_to_similarity

    rng = np.random.default_rng(1)
    q, d = rng.standard_normal((2, 16)).astype(np.float32)
    q, d = q / np.linalg.norm(q), d / np.linalg.norm(d)
    for name in ("dot_product", "cosine", "l2_norm", "max_inner_product"):
        for doc in (d, -d):
            score = np.float32(knn_score(name, q, doc))
            assert score_to_similarity(name, np.array([score]))[0] == pytest.approx(
                float(q @ doc), abs=1e-5
            ), name
