"""Messages that name what happened: why bulk documents are resent, which model built a store.

The bulk retry line used to say "rejected (429/5xx)" whatever the cause, a refused connection
included; a search with the wrong model labelled the model given with the store's document
graph, which it may not have.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionTimeout
from opensearchpy.helpers import streaming_bulk

from tests.fake_opensearch import FakeCluster
from tests.opensearch_store_helpers import FP, corpus, make_store
from tests.stores.test_embedded_store import make_docs, unit_vectors
from twinbert_search.errors import BackendUnavailableError, ModelMismatchError
from twinbert_search.manifest import ModelManifest
from twinbert_search.search import Searcher
from twinbert_search.stores.cluster.bulk import (
    BulkOptions,
    helper_stream,
    retry_reason,
    send_with_retries,
)
from twinbert_search.stores.embedded import EmbeddedStore

BULK = "twinbert_search.stores.cluster.bulk"


def _retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == BULK]


def test_bulk_retry_says_the_cluster_throttled_or_rejected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster()
    store = make_store(cluster)
    docs, vectors = corpus(6)
    caplog.set_level(logging.WARNING, logger=BULK)
    cluster.fail_documents({"d01": [429], "d02": [429], "d04": [503]})
    store.upsert(docs, vectors, model_fingerprint=FP)
    assert _retry_lines(caplog) == [
        "bulk: 3 documents to resend (2 throttled by the cluster (429 Too Many Requests), "
        "1 rejected by the cluster with 503); retry 1/3 in 0.5s"
    ]
    caplog.clear()
    cluster.fail_requests("bulk", 429)  # the whole request
    store.upsert(docs, vectors, model_fingerprint=FP)
    assert _retry_lines(caplog) == [
        "bulk: 6 documents to resend (6 throttled by the cluster (429 Too Many Requests)); "
        "retry 1/3 in 0.5s"
    ]
    store.finalize()
    assert store.info.count == 6


def test_bulk_retry_says_the_cluster_was_not_reached(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nothing listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = OpenSearch(hosts=[{"host": "127.0.0.1", "port": port}], max_retries=0)
    options = BulkOptions(max_retries=2, initial_backoff=0.0)
    actions = [{"_index": "docs", "_id": f"d{i}", "text": "x"} for i in range(3)]
    caplog.set_level(logging.WARNING, logger=BULK)
    with pytest.raises(BackendUnavailableError, match="bulk indexing: cannot reach OpenSearch"):
        send_with_retries(
            helper_stream(streaming_bulk, client, options),
            actions,
            options,
            sleep=lambda s: None,
            unreachable=f"OpenSearch at {url}",
        )
    expected = f"3 not delivered: cannot reach OpenSearch at {url}"
    assert _retry_lines(caplog) == [
        f"bulk: 3 documents to resend ({expected}); retry 1/2 in 0.0s",
        f"bulk: 3 documents to resend ({expected}); retry 2/2 in 0.0s",
    ]
    # Words, not digits: a random port such as 54299 holds "429" and once failed this check.
    assert not any(
        "throttled" in line or "Too Many" in line or "rejected" in line
        for line in _retry_lines(caplog)
    )


def test_bulk_retry_reasons_one_by_one() -> None:
    where = "OpenSearch at http://search:9200"
    timeout = ConnectionTimeout("TIMEOUT", "read timed out", None)
    assert retry_reason({"status": "N/A", "exception": timeout}, where) == (
        f"timed out waiting for {where}"
    )
    assert (
        retry_reason({"status": 429}, where) == "throttled by the cluster (429 Too Many Requests)"
    )
    assert retry_reason({"status": 502}, where) == "rejected by the cluster with 502"


def test_a_search_with_another_model_labels_each_model_truly(
    tiny_model: Path, tmp_path: Path
) -> None:
    dim = ModelManifest.load(tiny_model).dim
    built_with = "a" * 64 + ":openvino-int8"  # another model, indexed through OpenVINO
    with EmbeddedStore.create_or_open(tmp_path / "ix", dim=dim) as store:
        store.upsert(make_docs(2), unit_vectors(2, dim=dim), model_fingerprint=built_with)
        store.finalize()
    with pytest.raises(ModelMismatchError) as err:
        Searcher.open(tmp_path / "ix", tiny_model)
    message = str(err.value)
    assert message.startswith(
        "the store was built with model aaaaaaaaaaaa (openvino-int8 document graph), but the "
        "model given is "
    ), message
    assert message.count("openvino-int8") == 1, "the model given is not labelled with it"
    assert err.value.expected == built_with
