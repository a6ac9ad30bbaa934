"""OpenSearchStore against the in-process fake cluster (every request validated by the spec)."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from tests.fake_opensearch import FakeCluster, FakeConnection
from twinbert_search.documents import Document
from twinbert_search.errors import (
    BackendUnavailableError,
    BulkIndexError,
    ConfigurationError,
    InputError,
    ModelMismatchError,
    StoreError,
)
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.stores.opensearch import BulkOptions, ConnectionOptions, OpenSearchStore
from twinbert_search.stores.opensearch import store as os_store
from twinbert_search.stores.opensearch.assets import IndexOptions

DIM = 8
FP = "fingerprint-one"


def corpus(n: int = 30, dim: int = DIM, seed: int = 0) -> tuple[list[Document], np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = ["star planet moon orbit", "bread oven flour", "heart blood cell virus"]
    docs = [
        Document(
            id=f"d{i:02d}",
            title=f"doc {i}",
            text=f"{topics[i % 3]} number {i}",
            metadata={"lang": "fr" if i % 5 == 0 else "en", "year": 2000 + i % 4},
        )
        for i in range(n)
    ]
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return docs, vectors


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


def make_store(
    cluster: FakeCluster,
    *,
    sleeps: list[float] | None = None,
    url: str = "http://fake:9200",
    connection: dict[str, Any] | None = None,
    **kwargs: Any,
) -> OpenSearchStore:
    kwargs.setdefault("alias", None if "index" in kwargs else "docs")
    kwargs.setdefault(
        "bulk", BulkOptions(initial_backoff=0.5, max_backoff=2.0, max_retries=3, chunk_size=8)
    )
    options = ConnectionOptions(
        url,
        client_kwargs={"connection_class": FakeConnection, "cluster": cluster},
        **(connection or {}),
    )
    sink = sleeps if sleeps is not None else []
    return OpenSearchStore(options, sleep=sink.append, **kwargs)


def built(
    cluster: FakeCluster, **kwargs: Any
) -> tuple[OpenSearchStore, list[Document], np.ndarray]:
    store = make_store(cluster, **kwargs)
    docs, vectors = corpus()
    pre = np.arange(len(docs) * 3, dtype=np.float32).reshape(len(docs), 3)
    store.upsert(docs, vectors, model_fingerprint=FP, precomputed=pre)
    store.finalize()
    return store, docs, vectors


def bulk_ids(cluster: FakeCluster) -> list[list[str]]:
    """The document ids of each bulk request, in order."""
    out = []
    for lines in cluster.bodies("bulk"):
        out.append([next(iter(line.values()))["_id"] for line in lines[::2]])
    return out


# -- building and reading ---------------------------------------------------------------------


def test_first_build_creates_assets_and_goes_live_at_finalize(cluster: FakeCluster) -> None:
    store = make_store(cluster)
    docs, vectors = corpus()
    store.upsert(docs, vectors, model_fingerprint=FP)
    index = cluster.indices["docs-000001"]
    assert index.settings["index.refresh_interval"] == "-1"
    assert index.settings["index.number_of_replicas"] == "0"
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
    hybrid = store.recall_hybrid("bread flour", vectors[0], 6)
    assert len(hybrid) == 6 and hybrid.vectors.shape == (6, DIM)
    search = [r for r in cluster.requests if r.group == "search"][-1]
    assert search.params == {"search_pipeline": "docs-hybrid"}
    assert hybrid.ids[0] in {d.id for d in docs if "bread" in d.text} | {docs[0].id}


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


def test_hybrid_is_optional_without_neural_search(cluster: FakeCluster) -> None:
    cluster.neural_search = False
    store, _, vectors = built(cluster)
    assert store.hybrid_available is False
    assert len(store.recall(vectors[0], 3)) == 3
    with pytest.raises(StoreError):
        store.recall_hybrid("bread", vectors[0], 3)


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
    monkeypatch.setattr(os_store, "SCAN_PAGE", 7)
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


# -- bulk failures, retries and resume -------------------------------------------------------


def test_429_and_5xx_items_are_resent_with_capped_backoff(cluster: FakeCluster) -> None:
    sleeps: list[float] = []
    store = make_store(cluster, sleeps=sleeps)
    docs, vectors = corpus(12)
    cluster.fail_documents({"d03": [429, 503, 429], "d07": [500]})
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    assert store.info.count == 12
    assert sleeps == [0.5, 1.0, 2.0], "doubling from initial_backoff, capped at max_backoff"
    assert bulk_ids(cluster)[2:] == [["d03", "d07"], ["d03"], ["d03"]], "only rejected docs resent"


def test_whole_request_429_and_500_are_retried(cluster: FakeCluster) -> None:
    sleeps: list[float] = []
    store = make_store(cluster, sleeps=sleeps)
    docs, vectors = corpus(5)
    store.upsert(docs[:1], vectors[:1], model_fingerprint=FP)  # creates the index
    cluster.fail_requests("bulk", 429)
    cluster.fail_requests("bulk", 500)
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    assert store.info.count == 5 and sleeps == [0.5, 1.0]


def test_gateway_errors_are_retried_by_the_transport_first(cluster: FakeCluster) -> None:
    sleeps: list[float] = []
    store = make_store(cluster, sleeps=sleeps)
    docs, vectors = corpus(5)
    cluster.fail_requests("bulk", 503, times=2)
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    assert store.info.count == 5 and sleeps == [], "opensearch-py retried on another node"


def test_failures_are_reported_per_document_after_the_rest_is_written(cluster: FakeCluster) -> None:
    sleeps: list[float] = []
    store = make_store(cluster, sleeps=sleeps)
    docs, vectors = corpus(20)
    cluster.reject_documents(["d02", "d11"])
    cluster.fail_documents({"d05": [503] * 10})
    with pytest.raises(BulkIndexError) as caught:
        store.upsert(docs, vectors, model_fingerprint=FP)
    errors = {e["id"]: e for e in caught.value.errors}
    assert set(errors) == {"d02", "d05", "d11"}
    assert errors["d02"]["status"] == 400 and errors["d02"]["type"] == "mapper_parsing_exception"
    assert errors["d02"]["attempts"] == 1, "4xx is not retried"
    assert errors["d05"]["status"] == 503 and errors["d05"]["attempts"] == 4
    assert errors["d05"]["index"] == "docs-000001"
    assert set(errors["d05"]) == {"id", "index", "op", "status", "type", "reason", "attempts"}
    assert "3 of 20 documents failed" in str(caught.value)
    store.finalize()
    assert store.info.count == 17, "the documents that succeeded stay"


class VectorRuntime:
    """Stands in for TwinBertRuntime in index_documents: vectors from a lookup table."""

    def __init__(self, docs: Sequence[Document], vectors: np.ndarray) -> None:
        self.table = {d.encoding_text: v for d, v in zip(docs, vectors, strict=True)}
        self.fingerprint = FP
        self.dim = vectors.shape[1]
        self.encoded: list[str] = []

    def encode_documents(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> np.ndarray:
        self.encoded += list(texts)
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    def precompute_documents(self, vectors: np.ndarray) -> np.ndarray | None:
        return vectors[:, :2] * 2


def test_a_rerun_after_a_failure_sends_only_what_is_missing(cluster: FakeCluster) -> None:
    store = make_store(cluster)
    docs, vectors = corpus(20)
    runtime = VectorRuntime(docs, vectors)
    cluster.reject_documents(["d08"])
    with pytest.raises(BulkIndexError):  # the job stops at the failing chunk, before finalize
        index_documents(docs, store, runtime, chunk_size=6, progress=False)
    assert "docs" not in cluster.aliases
    stored = set(cluster.indices["docs-000001"].docs)
    assert stored == {d.id for d in docs[:12]} - {"d08"}
    cluster.accept_documents()
    runtime.encoded.clear()
    rerun = make_store(cluster)
    report = index_documents(docs, rerun, runtime, chunk_size=6, progress=False)
    assert sorted(runtime.encoded) == sorted(d.encoding_text for d in docs if d.id not in stored)
    assert (report.added, report.unchanged) == (20 - len(stored), len(stored))
    assert set(cluster.indices) == {"docs-000001"}, "the unfinished index was taken up"
    assert cluster.aliases == {"docs": {"docs-000001"}}
    assert cluster.indices["docs-000001"].settings["index.refresh_interval"] == "1s"
    assert rerun.info.count == 20
    np.testing.assert_array_equal(rerun.fetch(["d08"]).precomputed, vectors[[8], :2] * 2)


def test_an_unfinished_index_without_alias_is_made_live_by_the_rerun(cluster: FakeCluster) -> None:
    docs, vectors = corpus(6)
    make_store(cluster, index="plain").upsert(docs[:3], vectors[:3], model_fingerprint=FP)
    assert cluster.indices["plain"].settings["index.refresh_interval"] == "-1"
    rerun = make_store(cluster, index="plain")
    rerun.upsert(docs[3:], vectors[3:], model_fingerprint=FP)
    rerun.finalize()
    assert cluster.indices["plain"].settings["index.refresh_interval"] == "1s"
    assert rerun.info.count == 6
    again = make_store(cluster, index="plain")
    again.upsert(docs[:1], vectors[:1], model_fingerprint=FP)
    before = len(cluster.bodies("indices.put_settings"))
    again.finalize()
    assert len(cluster.bodies("indices.put_settings")) == before, "a live index keeps its settings"


def test_a_kept_old_generation_is_not_mistaken_for_an_unfinished_one(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    store.begin_rebuild()  # keeps docs-000001
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    again = make_store(cluster)
    assert again.begin_rebuild() is None, "docs-000001 is older than the live index"
    again.upsert(docs[:2], vectors[:2], model_fingerprint=FP)
    assert again.content_hashes(["d00", "d05"]) == {"d00": docs[0].content_hash}
    again.finalize()
    assert cluster.aliases == {"docs": {"docs-000003"}}


# -- blue/green ---------------------------------------------------------------------------------


def test_rebuild_switches_the_alias_in_one_call(cluster: FakeCluster) -> None:
    store, _, _ = built(cluster)
    new_docs, new_vectors = corpus(10, seed=1)
    assert store.begin_rebuild(delete_old=True) is None  # created with the first write
    store.upsert(new_docs, new_vectors, model_fingerprint="fingerprint-two")
    reader = make_store(cluster)
    assert reader.info.model_fingerprint == FP and reader.info.count == 30, "still the old one"
    before = len(cluster.requests)
    store.finalize()
    after = [r for r in cluster.requests[before:]]
    groups = [r.group for r in after]
    assert groups.count("indices.update_aliases") == 1
    assert groups.index("indices.put_settings") < groups.index("indices.update_aliases")
    switch = next(r for r in after if r.group == "indices.update_aliases")
    assert switch.body == {
        "actions": [
            {"add": {"index": "docs-000002", "alias": "docs"}},
            {"remove": {"index": "docs-000001", "alias": "docs"}},
        ]
    }
    assert set(cluster.indices) == {"docs-000002"}
    assert reader.info.model_fingerprint == "fingerprint-two" and reader.info.count == 10


def test_rebuild_keeps_the_old_index_unless_asked(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    store.begin_rebuild()
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    assert set(cluster.indices) == {"docs-000001", "docs-000002"}
    assert cluster.aliases == {"docs": {"docs-000002"}}


def test_an_interrupted_rebuild_is_resumed(cluster: FakeCluster) -> None:
    built(cluster)
    docs, vectors = corpus(20, seed=2)
    first = make_store(cluster)
    first.begin_rebuild(delete_old=True)
    first.upsert(docs[:12], vectors[:12], model_fingerprint=FP)  # ... then the process dies
    assert cluster.aliases == {"docs": {"docs-000001"}}
    second = make_store(cluster)
    assert second.begin_rebuild(delete_old=True) == "docs-000002", "the unfinished generation"
    known = second.content_hashes(d.id for d in docs)
    todo = [i for i, d in enumerate(docs) if known.get(d.id) != d.content_hash]
    assert todo == list(range(12, 20))
    second.upsert([docs[i] for i in todo], vectors[todo], model_fingerprint=FP)
    second.finalize()
    assert cluster.aliases == {"docs": {"docs-000002"}} and set(cluster.indices) == {"docs-000002"}
    assert second.info.count == 20


def test_a_concrete_index_becomes_an_alias(cluster: FakeCluster) -> None:
    built(cluster, index="docs")
    store = make_store(cluster, alias="docs")
    with pytest.raises(StoreError, match="--delete-old"):
        store.begin_rebuild()
    store.begin_rebuild(delete_old=True)
    docs, vectors = corpus(6)
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    switch = cluster.bodies("indices.update_aliases")[-1]
    assert switch["actions"] == [
        {"add": {"index": "docs-000001", "alias": "docs"}},
        {"remove_index": {"index": "docs"}},
    ]
    assert cluster.aliases == {"docs": {"docs-000001"}} and store.info.count == 6


def test_a_long_running_reader_follows_the_switch(cluster: FakeCluster) -> None:
    built(cluster)
    reader = make_store(cluster, read_cache_seconds=0.0)
    assert len(reader.recall(corpus()[1][0], 3)) == 3
    writer = make_store(cluster)
    writer.begin_rebuild(delete_old=True)
    docs16, vectors16 = corpus(10, dim=16, seed=3)
    writer.upsert(docs16, vectors16, model_fingerprint="sixteen")
    writer.finalize()
    found = reader.recall(vectors16[2], 3)
    assert found.ids[0] == "d02" and found.vectors.shape == (3, 16)


# -- connection, credentials, errors -----------------------------------------------------------


def test_connection_options_strip_credentials_from_the_url() -> None:
    options = ConnectionOptions("https://admin:p%40ss@search.example.com:9201/prefix/")
    assert options.url == "https://search.example.com:9201/prefix"
    assert (options.username, options.password) == ("admin", "p@ss")
    assert "p@ss" not in repr(options)
    explicit = ConnectionOptions("https://u:url-secret@h:9200", username="me", password="flag")
    assert (explicit.username, explicit.password) == ("me", "flag")
    with pytest.raises(ConfigurationError):
        ConnectionOptions("ftp://h")
    with pytest.raises(ConfigurationError, match="without a username"):
        ConnectionOptions("http://h:9200", password="x")


def test_connection_options_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("OPENSEARCH_URL", "https://cluster:9200")
    monkeypatch.setenv("OPENSEARCH_USERNAME", "reader")
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "from-env")
    monkeypatch.setenv("OPENSEARCH_CA_CERTS", str(ca))
    options = ConnectionOptions.from_env()
    assert (options.url, options.username, options.password) == (
        "https://cluster:9200",
        "reader",
        "from-env",
    )
    assert options.ca_certs == str(ca)
    assert ConnectionOptions.from_env(username="flag").username == "flag"
    monkeypatch.delenv("OPENSEARCH_URL")
    with pytest.raises(ConfigurationError, match="OPENSEARCH_URL"):
        ConnectionOptions.from_env()


def test_tls_settings_reach_the_connection(
    cluster: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    make_store(
        cluster,
        url="https://fake:9200",
        connection={"username": "u", "password": "pw", "ca_certs": "/etc/ca.pem"},
    )
    conn = cluster.connections[-1]
    assert conn.use_ssl and conn.verify_certs and conn.ca_certs == "/etc/ca.pem"
    assert conn.http_auth == ("u", "pw")
    with caplog.at_level(logging.WARNING):
        make_store(cluster, url="https://fake:9200", connection={"verify_certs": False})
    assert "verification is disabled" in caplog.text
    assert cluster.connections[-1].verify_certs is False


def test_credentials_never_reach_logs_reprs_or_errors(
    cluster: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Tr0ub4dor&3-secret"
    basic = base64.b64encode(f"admin:{secret}".encode()).decode()
    caplog.set_level(logging.DEBUG)
    store = make_store(cluster, url=f"https://admin:{secret}@fake:9200")
    docs, vectors = corpus(10)
    cluster.fail_documents({"d01": [429]})
    cluster.reject_documents(["d02"])
    texts: list[str] = [repr(store), repr(store.options), str(store.options)]
    with pytest.raises(BulkIndexError) as failed:
        store.upsert(docs, vectors, model_fingerprint=FP)
    texts += [str(failed.value), repr(failed.value.errors)]
    store.finalize()
    store.recall(vectors[0], 3)
    texts.append(repr(store.status()))
    cluster.fail_requests("search", 401)
    with pytest.raises(StoreError) as denied:
        store.recall(vectors[0], 3)
    texts.append(str(denied.value))
    assert "rejected the credentials" in str(denied.value)
    assert cluster.connections[-1].http_auth == ("admin", secret), "credentials are used"
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "debug logging was on"
    everything = caplog.text + "\n".join(texts)
    assert secret not in everything
    assert basic not in everything


def test_cluster_errors_become_store_errors(cluster: FakeCluster) -> None:
    store, _, vectors = built(cluster)
    cluster.fail_requests("search", 503, times=5)
    with pytest.raises(BackendUnavailableError, match="answered 503"):
        store.recall(vectors[0], 3)
    cluster.request_failures.clear()
    missing = make_store(cluster, alias="nothing-here")
    with pytest.raises(StoreError, match="does not exist"):
        missing.recall(vectors[0], 3)
    assert missing.info.count == 0 and missing.content_hashes(["d01"]) == {}


def test_an_unreachable_cluster_is_backend_unavailable() -> None:
    with socket.socket() as sock:  # a local port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = OpenSearchStore(
        ConnectionOptions(f"http://127.0.0.1:{port}", timeout=2.0, max_retries=0), alias="docs"
    )
    with pytest.raises(BackendUnavailableError, match="cannot reach OpenSearch at http://127"):
        store.info  # noqa: B018


def test_every_request_kind_was_validated_against_the_spec(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    store.recall(vectors[0], 3, filters={"lang": "en"})
    store.recall_bm25("moon", 3)
    store.recall_hybrid("moon", vectors[0], 3)
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
