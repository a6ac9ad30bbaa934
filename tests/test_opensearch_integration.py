"""Against a real cluster: run with OPENSEARCH_URL set (docker/docker-compose.yml starts one).

Credentials come from OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD, TLS from OPENSEARCH_CA_CERTS
or OPENSEARCH_VERIFY_CERTS=false. Each test works under its own alias and removes what it made.
The ML Commons test also needs OPENSEARCH_TEST_ML=1 (it uploads and deploys a tiny model).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fake_opensearch import build_onnx_model_dir, encode_with_onnx
from twinbert_search.documents import Document
from twinbert_search.errors import BulkIndexError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore

pytestmark = [
    pytest.mark.opensearch,
    pytest.mark.skipif(
        not os.environ.get("OPENSEARCH_URL"),
        reason="OPENSEARCH_URL is not set: integration tests against a real OpenSearch cluster "
        "were skipped (start one with docker/docker-compose.yml, see docker/README.md)",
    ),
]

DIM = 16


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


def cleanup(store: OpenSearchStore) -> None:
    client, names = store.client, store.names
    made = client.indices.get(index=f"{names.base}-*", ignore=404)
    indices = [name for name in made if name.startswith(f"{names.base}-")]
    if indices:  # by name: clusters may refuse wildcard deletes
        client.indices.delete(index=",".join(indices))
    client.indices.delete_index_template(name=names.template, ignore=404)
    for pipeline in (names.vector_pipeline, names.embed_pipeline):
        client.ingest.delete_pipeline(id=pipeline, ignore=404)
    client.search_pipeline.delete(id=names.hybrid_pipeline, ignore=404)


@pytest.fixture
def store() -> Iterator[OpenSearchStore]:
    alias = f"twinbert-it-{uuid.uuid4().hex[:8]}"
    store = OpenSearchStore(ConnectionOptions.from_env(), alias=alias)
    try:
        yield store
    finally:
        cleanup(store)
        store.close()


def test_build_recall_and_rebuild(store: OpenSearchStore) -> None:
    docs, vectors = corpus(60)
    pre = np.arange(60 * 4, dtype=np.float32).reshape(60, 4)
    store.upsert(docs, vectors, model_fingerprint="it-model", precomputed=pre)
    store.finalize()
    assert store.info.count == 60 and store.info.model_fingerprint == "it-model"

    found = store.recall(vectors[7], 10)
    assert found.ids[0] == "it-007"
    rows = [int(i.split("-")[1]) for i in found.ids]
    np.testing.assert_allclose(found.recall_scores, vectors[rows] @ vectors[7], atol=5e-3)
    np.testing.assert_array_equal(found.vectors, vectors[rows])
    np.testing.assert_array_equal(found.precomputed, pre[rows])

    fr = store.recall(vectors[1], 5, filters={"lang": "fr"})
    assert len(fr) == 5 and all(d["metadata"]["lang"] == "fr" for d in fr.documents)
    hits = dict(store.recall_bm25("bread flour", 3))
    assert hits
    scores = store.bm25_scores("bread flour", list(hits))  # what a fused rerank asks for
    np.testing.assert_allclose(scores, list(hits.values()), rtol=1e-5)
    assert store.content_hashes(["it-001"]) == {"it-001": docs[1].content_hash}

    store.begin_rebuild(delete_old=True)
    store.upsert(docs[:20], vectors[:20], model_fingerprint="it-model-2")
    store.finalize()
    assert store.info.model_fingerprint == "it-model-2" and store.info.count == 20
    assert len(store.info.extra["indices"]) == 1


def test_hybrid_recall(store: OpenSearchStore) -> None:
    docs, vectors = corpus(30)
    store.upsert(docs, vectors, model_fingerprint="it-model")
    store.finalize()
    if not store.hybrid_available:
        pytest.skip("the cluster has no neural-search plugin (normalization-processor)")
    found = store.recall_hybrid("bread flour", vectors[0], 5)
    assert len(found) == 5


def test_the_ingest_pipeline_rejects_bad_vectors(store: OpenSearchStore) -> None:
    docs, vectors = corpus(4)
    store.upsert(docs[:1], vectors[:1], model_fingerprint="it-model")
    with pytest.raises(BulkIndexError) as caught:
        store.upsert(docs[1:3], vectors[1:3] * 2.0, model_fingerprint="it-model")
    assert len(caught.value.errors) == 2
    assert all("unit length" in e["reason"] or "script" in e["type"] for e in caught.value.errors)


@pytest.mark.skipif(
    os.environ.get("OPENSEARCH_TEST_ML") != "1",
    reason="OPENSEARCH_TEST_ML=1 not set: the ML Commons register/deploy test was skipped",
)
def test_encoding_in_the_cluster(store: OpenSearchStore, tmp_path: Path) -> None:
    from twinbert_search.stores.opensearch import ml

    model_dir = build_onnx_model_dir(tmp_path / "model", dim=DIM)
    package = ml.build_model_package(model_dir, tmp_path / "model.zip")
    registered = ml.register_and_deploy(store.client, package, timeout=300, poll_interval=2)
    assert registered.state == "DEPLOYED"
    store.manifest = ModelManifest.load(model_dir)
    docs, _ = corpus(5)
    store.index_texts(
        docs, model_fingerprint=package.vector_fingerprint, model_id=registered.model_id
    )
    store.finalize()
    fetched = store.fetch([d.id for d in docs])
    expected = encode_with_onnx(model_dir, [d.encoding_text for d in docs])
    np.testing.assert_allclose(fetched.vectors, expected, atol=1e-4)
