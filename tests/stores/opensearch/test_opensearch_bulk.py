"""OpenSearchStore bulk writes on the fake cluster: failures, retries with backoff, resuming."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fake_opensearch import FakeCluster
from tests.opensearch_store_helpers import FP, VectorRuntime, built, bulk_ids, corpus, make_store
from twinbert_search.cli.index import _resent
from twinbert_search.errors import BulkIndexError
from twinbert_search.ingest.indexing import index_documents


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


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
    assert store.bulk_resends() == {"throttled": 2, "rejected": 2}, "each resend counted by why"


def test_the_index_report_counts_throttled_resends(cluster: FakeCluster) -> None:
    """Back-pressure a run absorbed is in its report (`resent`), not only in the log."""
    store = make_store(cluster, sleeps=[])
    docs, vectors = corpus(6)
    cluster.fail_documents({"d01": [429, 429], "d04": [429]})
    report = index_documents(docs, store, VectorRuntime(docs, vectors), progress=False)
    assert report.resent == {"throttled": 3}
    assert report.to_dict()["resent"] == {"throttled": 3, "rejected": 0, "unreachable": 0}
    assert store.info.count == 6
    summary = _resent({"throttled": 3, "rejected": 0})
    assert summary == "; 3 documents resent (3 throttled)", "the index command's summary says so"
    assert _resent({}) == ""


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
