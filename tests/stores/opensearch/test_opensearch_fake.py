"""The fake cluster answers as OpenSearch 2.19.1 did on a real node (tests/test_opensearch_node.py
checks the same requests against the engine itself; the numbers here were measured there).
"""

from __future__ import annotations

import numpy as np
import pytest
from opensearchpy.exceptions import RequestError

from tests.fake_opensearch import FakeCluster, knn_score
from tests.fake_opensearch.common import HYBRID_DELIMITER, HYBRID_START_STOP
from tests.opensearch_spec import SpecViolation
from tests.opensearch_store_helpers import FP, built, corpus, make_store
from twinbert_search.errors import BulkIndexError, StoreError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.opensearch import assets

MANIFEST = ModelManifest(dim=8, fingerprint=FP)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


def test_ingest_pipelines_refuse_meta() -> None:
    body = {**assets.vector_pipeline(MANIFEST), "_meta": {"twinbert_search": {"format": 1}}}
    with pytest.raises(SpecViolation, match="take no _meta"):
        FakeCluster().client().ingest.put_pipeline(id="p", body=body)
    with pytest.raises(RequestError) as caught:  # what the engine answers
        FakeCluster(validate=False).client().ingest.put_pipeline(id="p", body=body)
    assert caught.value.error == "parse_exception"
    assert caught.value.info["error"]["reason"] == (
        "pipeline [p] doesn't support one or more provided configuration parameters [_meta]"
    )
    assert "_meta" not in assets.vector_pipeline(MANIFEST)
    assert "model fingerprint-one" in assets.vector_pipeline(MANIFEST)["description"]


def test_templates_of_nested_names_never_tie() -> None:
    """`news-*` overlaps `news-2024-*`: the engine refuses the second at the same priority."""
    cluster = FakeCluster()
    client = cluster.client()
    news, news2024 = assets.AssetNames("news"), assets.AssetNames("news-2024")
    template = assets.index_template(MANIFEST, assets.IndexOptions(), news)
    client.indices.put_index_template(name="news", body=template)
    same_priority = {**template, "index_patterns": news2024.index_patterns}
    with pytest.raises(RequestError, match="that have the same priority \\[204\\]"):
        client.indices.put_index_template(name="news-2024", body=same_priority)
    for base in ("news-2024", "sport"):  # longer: higher priority; same length: no overlap
        store = make_store(cluster, alias=base)
        store.put_assets(MANIFEST)
    assert {n: t["priority"] for n, t in cluster.templates.items()} == {
        "news": 204,
        "news-2024": 209,
        "sport": 205,
    }


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("innerproduct", {"b": 1.96, "a": 1.8, "d": 1.0, "c": 0.60975605}),
        ("cosinesimil", {"b": 0.98, "a": 0.9, "d": 0.5, "c": 0.18}),
        ("l2", {"b": 0.9259259, "a": 0.7142857, "d": 0.33333334, "c": 0.23364483}),
    ],
)
def test_knn_scores_per_space_type_are_the_engines(space: str, expected: dict) -> None:
    """Scores OpenSearch 2.19.1 (lucene engine) gave for these vectors and this query."""
    docs = {"a": [1, 0, 0], "b": [0.6, 0.8, 0], "c": [-0.8, 0, 0.6], "d": [0, 0, -1]}
    query = np.array([0.8, 0.6, 0], dtype=np.float32)
    got = {k: knn_score(space, query, np.array(v, dtype=np.float32)) for k, v in docs.items()}
    assert got == pytest.approx(expected, rel=1e-6)


def test_a_painless_check_fails_with_its_message_in_the_cause(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    with pytest.raises(BulkIndexError) as caught:
        store.upsert(docs[:1], vectors[:1] * 2.0, model_fingerprint=FP)
    (error,) = caught.value.errors
    assert (error["type"], error["status"]) == ("script_exception", 400)
    assert error["reason"].startswith(
        "runtime error; caused by illegal_argument_exception: "
        "[embedding] is not unit length (squared norm 3.99999"
    )


def test_a_hybrid_query_without_normalization_gets_the_raw_lists(cluster: FakeCluster) -> None:
    """The engine answers 200 with each sub-query's hits between markers, not an error."""
    store, _, vectors = built(cluster)
    body = assets.hybrid_search_body("bread flour", vectors[0], 4, include_text=False)
    client = store.client
    hits = client.search(index="docs", body=body)["hits"]["hits"]
    scores = [h["_score"] for h in hits]
    assert scores[:2] == [HYBRID_START_STOP, HYBRID_DELIMITER] and len(hits) == 4
    assert len({h["_id"] for h in hits[:2]}) == 1 and assets.raw_hybrid_hits(hits)
    with pytest.raises(RequestError, match="Pipeline nope is not defined"):
        client.search(index="docs", body=body, params={"search_pipeline": "nope"})
    cluster.search_pipelines[store.names.hybrid_pipeline] = {"phase_results_processors": []}
    with pytest.raises(StoreError, match="no score-ranker processor"):
        store.recall_fused("bread flour", vectors[0], 4)


def test_mapping_errors_are_the_engines(cluster: FakeCluster) -> None:
    """`binary` (no doc_values) is not decoded at index time; the others fail as on 2.19.1."""
    store, _, vectors = built(cluster)
    _, seven = corpus(1, dim=7)
    source = {"doc_id": "x", "embedding": vectors[0].tolist()}
    bodies = {
        "x": {**source, "precomputed": "!!not base64"},
        "y": {**source, "metadata": "en"},
        "z": {**source, "embedding": seven[0].tolist()},
    }
    lines = [line for i, body in bodies.items() for line in ({"index": {"_id": i}}, body)]
    items = [item["index"] for item in store.client.bulk(index="docs", body=lines)["items"]]
    assert [item["status"] for item in items] == [201, 400, 400]
    assert items[1]["error"]["reason"] == (
        "object mapping for [metadata] tried to parse field [metadata] as object, but found a "
        "concrete value"
    )
    assert items[2]["error"] == {
        "type": "mapper_parsing_exception",
        "reason": "failed to parse field [embedding] of type [knn_vector] in document with id "
        "'z'. Preview of field's value: 'null'",
        "caused_by": {
            "type": "illegal_argument_exception",
            "reason": "Vector dimension mismatch. Expected: 8, Given: 7",
        },
    }


def test_recall_scores_come_from_the_exact_vectors(cluster: FakeCluster) -> None:
    """Faiss SQfp16 (and Lucene's int7) score the graph's quantized copy; the store does not."""
    store, _, vectors = built(cluster, index_options=assets.IndexOptions.parse("faiss:fp16"))
    query = vectors[4]
    hits = store.client.search(
        index="docs", body=assets.knn_search_body(query, 30, include_text=False)
    )["hits"]["hits"]
    raw = assets.score_to_similarity("innerproduct", np.array([h["_score"] for h in hits]))
    exact = np.array([vectors[int(h["_id"][1:])] @ query for h in hits])
    assert np.abs(raw - exact).max() > 1e-6, "the fake rounds the graph's copy to fp16"
    found = store.recall(query, 30)
    rows = [int(i[1:]) for i in found.ids]
    assert rows == list(np.argsort(-(vectors @ query), kind="stable"))
    np.testing.assert_allclose(found.recall_scores, vectors[rows] @ query, atol=1e-6)
