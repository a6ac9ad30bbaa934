"""Against a real Elasticsearch node: `python -m pytest -m elasticsearch`.

tests/elasticsearch_node.py starts one with scripts/elasticsearch-node.sh (or uses
ELASTICSEARCH_TEST_URL).

The acceptance point runs here on the real engine: the sample indexed with the same model into
the embedded store and into Elasticsearch gives the same reranked ids and scores. The fake's
answers are checked against the node's for the same requests, so the unit tests' fake keeps
telling the truth. Each test works under its own alias and removes what it made.

What the integ-test node lacks is said by the tests that meet it: no ingest-common or Painless
(the pipeline is put without processors, and the mapping checks vectors), no rank-rrf (hybrid
recall fuses in the client).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tests.elasticsearch_store_helpers import corpus
from tests.fake_elasticsearch import FakeElasticsearch
from tests.stores.elasticsearch.test_elasticsearch_cli import (
    CORPUS,
    EVAL_FILES,
    QUERIES,
    assert_same_reranking,
    build_twins,
)
from twinbert_search.cli import main
from twinbert_search.errors import BulkIndexError, StoreError
from twinbert_search.stores.elasticsearch import (
    ConnectionOptions,
    ElasticsearchStore,
    IndexOptions,
    assets,
)

pytestmark = pytest.mark.elasticsearch

DIM = 16


def cleanup(client: Any, base: str) -> None:
    found = client.options(ignore_status=404).indices.get(index=f"{base}*").body
    indices = [name for name in found if name == base or name.startswith(f"{base}-")]
    if indices:  # by name: Elasticsearch refuses wildcard deletes
        client.indices.delete(index=",".join(indices))
    client.options(ignore_status=404).indices.delete_index_template(name=base)
    client.options(ignore_status=404).ingest.delete_pipeline(id=f"{base}-vectors")


@pytest.fixture
def alias(elasticsearch_url: str) -> Iterator[str]:
    name = f"twinbert-it-{uuid.uuid4().hex[:8]}"
    client = ConnectionOptions(elasticsearch_url).client()
    try:
        yield name
    finally:
        cleanup(client, name)
        client.close()


def node_store(url: str, alias: str, **kwargs: Any) -> ElasticsearchStore:
    return ElasticsearchStore(ConnectionOptions(url), alias=alias, **kwargs)


def test_build_recall_filters_bm25_and_rebuild(elasticsearch_url: str, alias: str) -> None:
    store = node_store(elasticsearch_url, alias)
    docs, vectors = corpus(60, dim=DIM)
    pre = np.arange(60 * 4, dtype=np.float32).reshape(60, 4)
    store.upsert(docs, vectors, model_fingerprint="it-model", precomputed=pre)
    store.finalize()
    assert store.info.count == 60 and store.info.model_fingerprint == "it-model"
    # the pipeline has processors exactly where the node has the modules they need
    can_process = {"ingest-common", "lang-painless"} <= node_modules(store.client)
    assert store.pipeline_processors is can_process
    stored = store.client.ingest.get_pipeline(id=f"{alias}-vectors").body[f"{alias}-vectors"]
    assert bool(stored["processors"]) is can_process

    found = store.recall(vectors[7], 10)
    assert found.ids[0] == "d07"
    rows = [int(i[1:]) for i in found.ids]
    # int8_hnsw, rescored with the float vectors: the scores are the exact cosines
    np.testing.assert_allclose(found.recall_scores, vectors[rows] @ vectors[7], atol=1e-5)
    assert list(found.ids) == [f"d{i:02d}" for i in np.argsort(-(vectors @ vectors[7]))[:10]]
    np.testing.assert_array_equal(found.vectors, vectors[rows])  # _source keeps float32
    np.testing.assert_array_equal(found.precomputed, pre[rows])

    fr = store.recall(vectors[1], 5, filters={"lang": "fr"})
    assert len(fr) == 5 and all(d["metadata"]["lang"] == "fr" for d in fr.documents)
    hits = dict(store.recall_bm25("bread flour", 3))
    scores = store.bm25_scores("bread flour", list(hits))
    np.testing.assert_allclose(scores, list(hits.values()), rtol=1e-5)
    assert store.content_hashes(["d01"]) == {"d01": docs[1].content_hash}
    assert sorted(store.all_ids()) == sorted(d.id for d in docs)
    np.testing.assert_array_equal(store.fetch(["d05", "d02"]).vectors, vectors[[5, 2]])

    store.begin_rebuild(delete_old=True)
    store.upsert(docs[:20], vectors[:20], model_fingerprint="it-model-2")
    store.finalize()
    assert store.info.model_fingerprint == "it-model-2" and store.info.count == 20
    assert store.info.extra["indices"] == [f"{alias}-000002"]


def test_the_node_refuses_bad_vectors(elasticsearch_url: str, alias: str) -> None:
    store = node_store(elasticsearch_url, alias)
    docs, vectors = corpus(4, dim=DIM)
    store.upsert(docs[:1], vectors[:1], model_fingerprint="it-model")
    with pytest.raises(BulkIndexError) as caught:
        store.upsert(docs[1:3], vectors[1:3] * 2.0, model_fingerprint="it-model")
    assert len(caught.value.errors) == 2
    error = caught.value.errors[0]
    if store.pipeline_processors:
        assert error["type"] == "script_exception"
    else:  # the mapping's own check (dot_product needs unit vectors)
        assert error["type"] == "document_parsing_exception" and "unit-length" in error["reason"]


def node_modules(client: Any) -> set[str]:
    """The modules and plugins every node of the cluster runs."""
    nodes = client.nodes.info(metric="plugins").body["nodes"].values()
    names = [{m["name"] for m in n.get("modules", []) + n.get("plugins", [])} for n in nodes]
    return set.intersection(*names)


def engine_accepts_rrf(client: Any, index: str, vector: np.ndarray) -> bool:
    """Whether the cluster runs the `rrf` retriever: asked directly, not through the store."""
    from elasticsearch import ApiError

    body = assets.rrf_search_body("bread flour", vector, 5, IndexOptions())
    try:
        client.search(index=index, body=body)
    except ApiError as exc:
        assert exc.status_code in (400, 403), exc  # refused, never broken
        return False
    return True


def by_hand_rrf(*rankings: list[str]) -> dict[str, float]:
    """score(d) = sum over the lists of 1 / (60 + rank of d), ranks from 1."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (60 + rank)
    return scores


def test_hybrid_recall_in_the_cluster_or_in_the_client(elasticsearch_url: str, alias: str) -> None:
    """The store fuses in the cluster exactly where the node runs the `rrf` retriever; either
    way the fused list is reciprocal rank fusion over the engine's own BM25 and kNN lists."""
    from twinbert_search.search.fusion import fuse_hybrid

    store = node_store(elasticsearch_url, alias)
    docs, vectors = corpus(30, dim=DIM)
    store.upsert(docs, vectors, model_fingerprint="it-model")
    store.finalize()
    query, n = "bread flour", 5
    in_cluster = engine_accepts_rrf(store.client, alias, vectors[0])
    # chosen from the cluster's version, modules and licence, before any hybrid query
    assert store.hybrid_fusion == ("engine" if in_cluster else "client")
    assert store.status()["hybrid_fusion"] == store.hybrid_fusion
    fused = store.recall_fused(query, vectors[0], n)
    assert (fused is not None) is in_cluster
    dense = store.recall(vectors[0], n)
    scored = store.recall_bm25(query, n)
    sparse = [doc_id for doc_id, _ in scored]
    assert sparse and set(sparse) - set(dense.ids), "BM25 brings documents kNN missed"
    expected = sorted(by_hand_rrf(dense.ids, sparse).items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    if fused is None:  # the searcher's fallback: fused here, BM25-only vectors fetched
        fused = fuse_hybrid(dense, scored, n, store.fetch, DIM)
        rows = [int(doc_id[1:]) for doc_id in fused.ids]
        np.testing.assert_array_equal(fused.vectors, vectors[rows])
    assert len(fused) == n
    np.testing.assert_allclose(fused.recall_scores, [s for _, s in expected], rtol=1e-6)
    cut = expected[-1][1] + 1e-9  # among ties at the cut-off, the engine picks
    assert [i for i, s in zip(fused.ids, fused.recall_scores, strict=True) if s > cut] == [
        doc_id for doc_id, s in expected if s > cut
    ]


@pytest.fixture(scope="module")
def node_twins(
    elasticsearch_url: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Any]]:
    alias = f"twinbert-twins-{uuid.uuid4().hex[:8]}"
    remote = {"url": elasticsearch_url, "alias": alias}
    embedded, elasticsearch = build_twins(tiny_model, tmp_path_factory.mktemp("node-twins"), remote)
    yield embedded, elasticsearch
    embedded.store.close()
    cleanup(elasticsearch.store.client, alias)
    elasticsearch.store.close()


def test_reranked_results_are_the_embedded_stores_on_the_node(node_twins: tuple[Any, Any]) -> None:
    embedded, elasticsearch = node_twins
    assert elasticsearch.store.info.ann == IndexOptions().describe()  # the default, int8_hnsw
    assert_same_reranking(embedded, elasticsearch)


def test_hybrid_reranks_the_same_candidates_as_the_embedded_store(
    node_twins: tuple[Any, Any],
) -> None:
    embedded, elasticsearch = node_twins
    for query in QUERIES:
        theirs = elasticsearch.search(query.text, k=50, candidates=50, hybrid=True)
        assert len(theirs.recall_ids) == 50
        ours = embedded.rerank_ids(query.text, theirs.recall_ids)
        assert [h.id for h in theirs.hits] == [doc_id for doc_id, _ in ours], query.id
        np.testing.assert_allclose(
            [h.rerank_score for h in theirs.hits], [s for _, s in ours], atol=1e-5
        )


def test_the_cli_from_an_empty_cluster_to_a_search_with_rerank(
    elasticsearch_url: str, alias: str, tiny_model: Path, tmp_path: Path
) -> None:
    index_dir = tmp_path / "embedded"
    env = {"ELASTICSEARCH_URL": elasticsearch_url}
    common = ["--backend", "elasticsearch", "--model", str(tiny_model), "--alias", alias]

    def run(*args: Any) -> Any:
        result = CliRunner().invoke(main, [str(a) for a in args], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    report = run("index", CORPUS, *common, "--no-progress", "--json")
    assert (report["added"], report["indices"]) == (300, [f"{alias}-000001"])
    found = run("search", "why does the moon show one face", *common, "-k", "3", "--json")
    assert found["reranked"] is True and len(found["hits"]) == 3
    metrics = run("eval", *common, *EVAL_FILES, "--candidates", "20", "--no-progress", "--json")
    # the same evaluation over the embedded store of the same corpus and model: equal metrics
    local = ["--backend", "embedded", "--model", str(tiny_model), "--index-dir", str(index_dir)]
    run("index", CORPUS, *local, "--ann", "flat", "--no-progress", "--json")
    embedded = run("eval", *local, *EVAL_FILES, "--candidates", "20", "--no-progress", "--json")
    for stage in ("recall", "reranked"):
        assert metrics[stage]["ndcg@10"] > 0, stage
        assert metrics[stage] == pytest.approx(embedded[stage], abs=1e-4), stage


# -- the fake answers as the node does -------------------------------------------------------------


def outcome(call: Any) -> tuple[Any, ...]:
    """What a request came to: the error's status, type and reason prefix, or 'ok'."""
    from elasticsearch import ApiError

    try:
        call()
    except ApiError as exc:
        error = exc.info.get("error", {}) if isinstance(exc.info, dict) else {}
        kind = error.get("type") if isinstance(error, dict) else str(error)
        text = str(error.get("reason", "")) if isinstance(error, dict) else ""
        return exc.status_code, kind, text[:40]
    return ("ok",)


def answers_of(client: Any, base: str) -> dict[str, Any]:
    """The same requests, answered by one cluster: errors by status and type, kNN hits."""
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.stores.elasticsearch import assets

    docs, vectors = corpus(12, dim=DIM)
    manifest = ModelManifest(dim=DIM, fingerprint="agree")
    index = f"{base}-000001"
    body = assets.index_body(manifest, IndexOptions())
    seen: dict[str, Any] = {}
    client.indices.create(index=index, body=body)
    try:
        knn_setting = {"index": {"knn": True}}
        seen["knn setting"] = outcome(
            lambda: client.indices.create(index=f"{base}-x", settings=knn_setting)
        )
        for i, doc in enumerate(docs):
            source = {"doc_id": doc.id, "title": doc.title, "text": doc.text,
                      "metadata": doc.metadata, "embedding": vectors[i].tolist()}  # fmt: skip
            client.index(index=index, id=doc.id, document=source)
        longer = {"embedding": (vectors[0] * 2).tolist()}
        seen["not unit"] = outcome(lambda: client.index(index=index, id="x", document=longer))
        short = {"embedding": [1.0, 0.0]}
        seen["dims"] = outcome(lambda: client.index(index=index, id="y", document=short))
        seen["strict"] = outcome(lambda: client.index(index=index, id="z", document={"nope": 1}))
        client.indices.refresh(index=index)
        seen["missing"] = outcome(lambda: client.search(index=f"{base}-none"))
        seen["wildcard delete"] = outcome(lambda: client.indices.delete(index=f"{base}-*"))
        knn = assets.knn_search_body(vectors[3], 5, IndexOptions())
        hits = client.search(index=index, body=knn).body["hits"]["hits"]
        seen["knn"] = [(h["_id"], round(h["_score"], 5)) for h in hits]
        wide, narrow = assets.AssetNames(f"{base}-t"), assets.AssetNames(f"{base}-t-x")
        client.indices.put_index_template(
            name=wide.template, body=assets.index_template(manifest, IndexOptions(), wide)
        )
        narrower = assets.index_template(manifest, IndexOptions(), narrow)
        seen["template overlap"] = outcome(
            lambda: client.indices.put_index_template(name=narrow.template, body=narrower)
        )
        client.indices.delete_index_template(name=wide.template)
        fr = assets.knn_search_body(vectors[3], 3, IndexOptions(), filters={"lang": "fr"})
        seen["knn filtered"] = [
            h["_id"] for h in client.search(index=index, body=fr).body["hits"]["hits"]
        ]
    finally:
        client.options(ignore_status=404).indices.delete(index=index)
        client.close()
    return seen


def test_the_fake_answers_as_the_node_does(elasticsearch_url: str) -> None:
    base = f"twinbert-agree-{uuid.uuid4().hex[:8]}"
    node = answers_of(ConnectionOptions(elasticsearch_url).client(), base)
    fake = answers_of(FakeElasticsearch().client(), base)
    for key in node:
        if key.startswith("knn"):  # the same hits, ids and scores
            assert fake[key] == node[key], key
        else:  # the same status and error type
            assert fake[key][:2] == node[key][:2], (key, node[key], fake[key])


def test_a_missing_target_is_a_store_error(elasticsearch_url: str) -> None:
    store = node_store(elasticsearch_url, f"twinbert-none-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StoreError, match="does not exist"):
        store.recall(np.ones(DIM, np.float32) / 4, 3)
    assert store.info.count == 0


def test_lean_recalls_with_the_vector_cache_match_full_ones(
    elasticsearch_url: str, alias: str
) -> None:
    """`_source: false` with `seq_no_primary_term` on the node: the same candidates, and a
    document written again is read again."""
    plain = node_store(elasticsearch_url, alias)
    docs, vectors = corpus(40, dim=DIM)
    pre = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    plain.upsert(docs, vectors, model_fingerprint="it-model", precomputed=pre)
    plain.finalize()
    cached = node_store(elasticsearch_url, alias, vector_cache_mb=1)
    expected = plain.recall(vectors[9], 10)
    for _ in range(2):
        found = cached.recall(vectors[9], 10)
        assert list(found.ids) == list(expected.ids)
        np.testing.assert_array_equal(found.vectors, expected.vectors)
        np.testing.assert_array_equal(found.precomputed, expected.precomputed)
        assert found.documents == expected.documents
    assert cached.vector_cache.stats()["hits"] == 10
    moved = -vectors[9]
    plain.upsert(docs[9:10], moved[None, :], model_fingerprint="it-model", precomputed=pre[:1])
    plain.finalize()
    found = cached.recall(moved, 3)
    assert found.ids[0] == docs[9].id
    np.testing.assert_array_equal(found.vectors[0], moved)
    if plain.hybrid_fusion == "engine":
        fused = plain.recall_fused("bread flour", vectors[0], 10)
        for _ in range(2):
            lean = cached.recall_fused("bread flour", vectors[0], 10)
        assert list(lean.ids) == list(fused.ids)
        np.testing.assert_array_equal(lean.vectors, fused.vectors)
    cached.close()
