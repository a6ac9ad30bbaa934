"""The store against a real OpenSearch node: every request it sends, checked by the engine.

`python -m pytest -m opensearch` finds or starts the node (tests/opensearch_node.py); each
test works under its own alias and removes what it made. Where the fake cluster models the
same behaviour, the test sends the same requests to both and compares the answers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.fake_opensearch import FakeCluster, FakeConnection, build_onnx_model_dir
from tests.fake_opensearch import encode_with_onnx as onnx_reference
from tests.opensearch_node import ML, NEURAL, OpenSearchNode
from twinbert_search.documents import Document
from twinbert_search.errors import BulkIndexError
from twinbert_search.manifest import ModelManifest
from twinbert_search.search.fusion import reciprocal_rank_fusion
from twinbert_search.stores.cluster.bulk import BulkOptions
from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore, assets, ml

pytestmark = pytest.mark.opensearch

DIM = 16
Stores = Callable[..., OpenSearchStore]


def corpus(n: int, seed: int = 0) -> tuple[list[Document], np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = ["star planet moon orbit", "bread oven flour", "heart blood cell virus"]
    docs = [
        Document(
            id=f"it-{i:03d}",
            title=f"document {i}",
            text=f"{topics[i % 3]} number {i}",
            metadata={"lang": "fr" if i % 4 == 0 else "en"},
        )
        for i in range(n)
    ]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return docs, vectors


def fake_twin(store: OpenSearchStore, cluster: FakeCluster, **kwargs: object) -> OpenSearchStore:
    """The same store (alias, index options) on the fake cluster."""
    connection = ConnectionOptions(
        "http://fake:9200", client_kwargs={"connection_class": FakeConnection, "cluster": cluster}
    )
    return OpenSearchStore(
        connection, alias=store.alias, index_options=store.index_options, **kwargs
    )


def test_assets_are_accepted_as_rendered_and_kept(
    node_stores: Stores, opensearch_node: OpenSearchNode
) -> None:
    """Template, pipelines (a) and (c) as rendered; read back, they compare equal (`kept`)."""
    store = node_stores()
    manifest = ModelManifest(dim=DIM, fingerprint="it-model")
    hybrid = "created" if NEURAL in opensearch_node.plugins else "unavailable"
    names = store.names
    first = store.put_assets(manifest)
    assert first == {"template": "created", names.vector_pipeline: "created",
                     names.hybrid_pipeline: hybrid}  # fmt: skip
    again = store.put_assets(manifest)
    assert set(again.values()) == {"kept"} | ({"unavailable"} if hybrid != "created" else set())
    pipeline = store.client.ingest.get_pipeline(id=names.vector_pipeline)[names.vector_pipeline]
    assert pipeline == assets.vector_pipeline(manifest)
    stored = store.client.indices.get_index_template(name=names.template)["index_templates"][0]
    rendered = assets.index_template(manifest, store.index_options, names)
    assert stored["index_template"]["template"]["mappings"] == rendered["template"]["mappings"]
    assert stored["index_template"]["priority"] == names.template_priority
    changed = store.put_assets(ModelManifest(dim=DIM, fingerprint="it-model-2"))
    assert changed["template"] == changed[names.vector_pipeline] == "updated"


def test_bulk_knn_filter_bm25_and_the_blue_green_switch(node_stores: Stores) -> None:
    store = node_stores()
    docs, vectors = corpus(60)
    pre = np.arange(60 * 4, dtype=np.float32).reshape(60, 4)
    store.upsert(docs, vectors, model_fingerprint="it-model", precomputed=pre)  # pipeline (a)
    store.finalize()
    assert store.info.count == 60 and store.info.model_fingerprint == "it-model"
    (first_index,) = store.info.extra["indices"]

    found = store.recall(vectors[7], 10)
    assert found.ids[0] == "it-007"
    rows = [int(i.split("-")[1]) for i in found.ids]
    np.testing.assert_allclose(found.recall_scores, vectors[rows] @ vectors[7], atol=1e-5)
    np.testing.assert_array_equal(found.vectors, vectors[rows])
    np.testing.assert_array_equal(found.precomputed, pre[rows])
    assert [d["title"] for d in found.documents] == [docs[r].title for r in rows]

    french = store.recall(vectors[1], 5, filters={"lang": "fr"})  # filtered inside the kNN
    exact = sorted((i for i in range(60) if i % 4 == 0), key=lambda i: -vectors[i] @ vectors[1])
    assert french.ids == [docs[i].id for i in exact[:5]]
    hits = dict(store.recall_bm25("bread flour", 3))
    assert hits and all(int(i.split("-")[1]) % 3 == 1 for i in hits)
    scores = store.bm25_scores("bread flour", list(hits))  # what a fused rerank asks for
    np.testing.assert_allclose(scores, list(hits.values()), rtol=1e-5)
    assert store.content_hashes(["it-001"]) == {"it-001": docs[1].content_hash}

    # blue/green: a new generation with another model; readers see the old one until finalize
    store.begin_rebuild(delete_old=True)
    store.upsert(docs[:20], vectors[:20] * -1.0, model_fingerprint="it-model-2")
    assert store.info.model_fingerprint == "it-model" and store.info.count == 60
    assert store.recall(vectors[7], 1).ids == ["it-007"]
    store.finalize()
    (second_index,) = store.info.extra["indices"]
    assert second_index != first_index
    assert store.info.model_fingerprint == "it-model-2" and store.info.count == 20
    assert store.recall(-vectors[7], 1).ids == ["it-007"]
    assert not store.client.indices.exists(index=first_index)
    assert set(store.all_ids()) == {d.id for d in docs[:20]}


def test_rejected_items_and_the_retry_path(node_stores: Stores) -> None:
    """Bad vectors fail alone, with the fake's errors; 429s from the engine are resent."""
    store = node_stores()
    docs, vectors = corpus(30)
    store.upsert(docs[:10], vectors[:10], model_fingerprint="it-model")
    index = store.generations.write_index
    batch = vectors[10:20].copy()
    batch[[2, 5]] *= 2.0  # not unit length: refused by pipeline (a)'s painless check

    # the index refuses writes with a 429 until the first backoff lifts the block
    block = {"index": {"blocks": {"read_only_allow_delete": True}}}
    store.client.indices.put_settings(index=index, body=block)
    sleeps: list[float] = []

    def unblock(seconds: float) -> None:
        sleeps.append(seconds)
        lift = {"index": {"blocks": {"read_only_allow_delete": None}}}
        store.client.indices.put_settings(index=index, body=lift)

    retrying = OpenSearchStore(
        store.options,
        alias=store.alias,
        index_options=store.index_options,
        bulk=BulkOptions(initial_backoff=0.01),
        sleep=unblock,
    )
    with pytest.raises(BulkIndexError) as caught:
        retrying.upsert(docs[10:20], batch, model_fingerprint="it-model")
    retrying.close()
    assert sleeps == [0.01], "one resend, after the 429s"
    errors = caught.value.errors
    assert [(e["id"], e["status"], e["type"], e["attempts"]) for e in errors] == [
        ("it-012", 400, "script_exception", 1),
        ("it-015", 400, "script_exception", 1),
    ]
    store.finalize()
    assert store.info.count == 18

    cluster = FakeCluster()  # the fake refuses the same documents with the same words
    fake = fake_twin(store, cluster)
    fake.upsert(docs[:10], vectors[:10], model_fingerprint="it-model")
    with pytest.raises(BulkIndexError) as faked:
        fake.upsert(docs[10:20], batch, model_fingerprint="it-model")
    for theirs, ours in zip(errors, faked.value.errors, strict=True):
        assert (theirs["id"], theirs["type"]) == (ours["id"], ours["type"])
        real, mine = (
            re.fullmatch(r"(.*squared norm )([\d.]+)\)", e["reason"]) for e in (theirs, ours)
        )
        assert real and mine and real[1] == mine[1], (theirs["reason"], ours["reason"])
        assert float(real[2]) == pytest.approx(float(mine[2]), rel=1e-12)


def test_hybrid_recall_is_fused_by_the_engine_with_the_clients_formula(
    node_stores: Stores, opensearch_node: OpenSearchNode
) -> None:
    """With neural-search (2.19.1) the engine fuses: one `hybrid` query through the RRF
    search pipeline, whose list is `reciprocal_rank_fusion` (the searcher's fallback) over the
    engine's own BM25 and kNN lists: the same ids in the same order, the same scores; without
    the pipeline the engine's raw lists, as the fake's."""
    opensearch_node.require(NEURAL, "hybrid recall")
    store = node_stores()
    docs, vectors = corpus(30)
    store.upsert(docs, vectors, model_fingerprint="it-model")
    store.finalize()
    assert store.hybrid_fusion == "engine"
    assert store.status()["hybrid_fusion"] == "engine"
    n = 8
    for query, vector, filters in (
        ("bread flour", vectors[0], None),
        ("bread flour", vectors[0], {"lang": "en"}),
        ("star moon", vectors[5], None),
    ):
        found = store.recall_fused(query, vector, n, filters=filters)
        assert found is not None and len(found) == n
        sparse = [i for i, _ in store.recall_bm25(query, n, filters=filters)]
        dense = store.recall(vector, n, filters=filters).ids
        assert set(sparse) - set(dense), "a fusion that could not differ from kNN proves nothing"
        formula = reciprocal_rank_fusion([sparse, dense])  # the whole fused list, untruncated
        expected = dict(formula)
        for doc_id, score in zip(found.ids, found.recall_scores, strict=True):
            assert score == pytest.approx(expected[doc_id], abs=1e-5), doc_id
        # ids and order: the formula's top n, ties by id as both sides sort; only which of
        # the documents tied at the cut-off make the list is the engine's choice
        cut = found.recall_scores[-1]
        tied = {i for i, s in formula if abs(s - cut) <= 1e-6}
        above = [i for i, s in formula if s > cut + 1e-6]
        assert found.ids[: len(above)] == above, (found.ids, formula[:n])
        assert set(found.ids[len(above) :]) <= tied

    raw_body = assets.hybrid_search_body("bread flour", vectors[0], 30, include_text=False)
    raw = store.client.search(index=store.alias, body=raw_body)["hits"]["hits"]
    cluster = FakeCluster()
    fake = fake_twin(store, cluster)
    fake.upsert(docs, vectors, model_fingerprint="it-model")
    fake.finalize()
    faked = fake.client.search(index=store.alias, body=raw_body)["hits"]["hits"]
    assert assets.raw_hybrid_hits(raw) and len(raw) == len(faked) == 30
    markers = [(i, h["_score"]) for i, h in enumerate(raw) if h["_score"] < -1e9]
    assert markers == [(i, h["_score"]) for i, h in enumerate(faked) if h["_score"] < -1e9]


def test_encoding_in_the_cluster(
    node_stores: Stores, opensearch_node: OpenSearchNode, tmp_path: Path
) -> None:
    """ML Commons registers and deploys the packaged encoder; pipeline (b) encodes as we do."""
    opensearch_node.require(ML, "ML Commons register/deploy")
    opensearch_node.require(NEURAL, "the text_embedding ingest processor")
    if opensearch_node.external and os.environ.get("OPENSEARCH_TEST_ML") != "1":
        pytest.skip("OPENSEARCH_TEST_ML=1 is not set: no model is uploaded to your cluster")
    store = node_stores()
    model_dir = build_onnx_model_dir(tmp_path / "model", dim=DIM)
    package = ml.build_model_package(model_dir, tmp_path / "model.zip")
    registered = ml.register_and_deploy(store.client, package, timeout=300, poll_interval=1)
    assert registered.state == "DEPLOYED"
    store.manifest = ModelManifest.load(model_dir)
    docs, _ = corpus(5)
    store.index_texts(
        docs, model_fingerprint=package.vector_fingerprint, model_id=registered.model_id
    )
    store.finalize()
    fetched = store.fetch([d.id for d in docs])
    expected = onnx_reference(model_dir, [d.encoding_text for d in docs])
    np.testing.assert_allclose(fetched.vectors, expected, atol=1e-4)
    again = ml.register_and_deploy(store.client, package, timeout=300, poll_interval=1)
    assert again.reused and again.model_id == registered.model_id
