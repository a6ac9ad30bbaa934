"""ElasticsearchStore connections: credentials, API keys, TLS, the environment, and errors."""

from __future__ import annotations

import base64
import logging
import socket
from pathlib import Path

import pytest

from tests.elasticsearch_store_helpers import FP, built, corpus, make_store
from tests.fake_elasticsearch import FakeElasticsearch
from twinbert_search.errors import (
    BackendUnavailableError,
    BulkIndexError,
    ConfigurationError,
    PermissionDeniedError,
    StoreError,
)
from twinbert_search.stores.elasticsearch import ConnectionOptions, ElasticsearchStore
from twinbert_search.stores.elasticsearch.connection import (
    connection_from_options,
    store_from_options,
)


@pytest.fixture
def cluster() -> FakeElasticsearch:
    return FakeElasticsearch()


def test_options_strip_credentials_and_hide_secrets() -> None:
    options = ConnectionOptions("https://elastic:p%40ss@search.example.com/prefix/")
    assert options.url == "https://search.example.com/prefix"
    assert (options.username, options.password) == ("elastic", "p@ss")
    assert options.node() == {
        "scheme": "https",
        "host": "search.example.com",
        "port": 9200,
        "path_prefix": "/prefix",
    }
    keyed = ConnectionOptions("http://h:9201", api_key="c2VjcmV0LWtleQ==")
    assert "c2VjcmV0LWtleQ==" not in repr(keyed) and "p@ss" not in repr(options)
    with pytest.raises(ConfigurationError, match="API key or a password"):
        connection_from_options(url="http://h:9200", username="u", password="p", es_api_key="k")


def test_several_urls_are_several_nodes() -> None:
    options = ConnectionOptions("http://127.0.0.1:9280,http://127.0.0.1:9281")
    assert [n["port"] for n in options.nodes()] == [9280, 9281]
    client = options.client()
    try:
        assert len(client.transport.node_pool.all()) == 2
    finally:
        client.close()


def test_the_environment_fills_what_the_flags_leave_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("OPENSEARCH_URL", "https://the-other-engine:9200")
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "not-for-elasticsearch")
    with pytest.raises(ConfigurationError, match="ELASTICSEARCH_URL"):
        connection_from_options()
    monkeypatch.setenv("ELASTICSEARCH_URL", "https://es:9243")
    monkeypatch.setenv("ELASTICSEARCH_USERNAME", "reader")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "from-env")
    monkeypatch.setenv("ELASTICSEARCH_CA_CERTS", str(ca))
    monkeypatch.setenv("ELASTICSEARCH_VERIFY_CERTS", "false")
    options = connection_from_options(username=None, password=None, verify_certs=None)
    assert (options.url, options.username, options.password) == (
        "https://es:9243",
        "reader",
        "from-env",
    )
    assert options.ca_certs == str(ca) and options.verify_certs is False
    assert connection_from_options(verify_certs=True).verify_certs is True, "a flag wins"
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "a2V5")
    assert connection_from_options(password=None).api_key == "a2V5"


def test_credentials_and_tls_reach_the_node(
    cluster: FakeElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    basic = base64.b64encode(b"u:pw").decode()
    cluster.accepted_auth = {f"Basic {basic}", "ApiKey a2V5OnNlY3JldA=="}
    store = make_store(
        cluster,
        url="https://fake:9200",
        connection={"username": "u", "password": "pw", "ca_certs": "/etc/ca.pem"},
    )
    assert store.info.count == 0
    node = cluster.nodes[-1].config
    assert (node.scheme, node.verify_certs, node.ca_certs) == ("https", True, "/etc/ca.pem")
    assert cluster.requests[-1].headers["authorization"] == f"Basic {basic}"
    keyed = make_store(cluster, connection={"api_key": "a2V5OnNlY3JldA=="})
    assert keyed.info.count == 0
    assert cluster.requests[-1].headers["authorization"] == "ApiKey a2V5OnNlY3JldA=="
    with caplog.at_level(logging.WARNING):
        make_store(cluster, url="https://fake:9200", connection={"verify_certs": False})
    assert "verification is disabled" in caplog.text
    assert cluster.nodes[-1].config.verify_certs is False


def test_credentials_never_reach_logs_reprs_or_errors(
    cluster: FakeElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Tr0ub4dor&3-secret"
    basic = base64.b64encode(f"elastic:{secret}".encode()).decode()
    caplog.set_level(logging.DEBUG)
    store = make_store(cluster, url=f"https://elastic:{secret}@fake:9200")
    docs, vectors = corpus(10)
    cluster.fail_documents({"d01": [429]})
    cluster.reject_documents(["d02"])
    texts = [repr(store), repr(store.options), str(store.options)]
    with pytest.raises(BulkIndexError) as failed:
        store.upsert(docs, vectors, model_fingerprint=FP)
    texts += [str(failed.value), repr(failed.value.errors)]
    store.finalize()
    texts.append(repr(store.status()))
    cluster.accepted_auth = set()
    with pytest.raises(StoreError) as denied:
        store.recall(vectors[0], 3)
    texts.append(str(denied.value))
    assert "rejected the credentials" in str(denied.value)
    assert "ELASTICSEARCH_PASSWORD" in str(denied.value)
    assert cluster.requests[-1].headers["authorization"] == f"Basic {basic}", "they are used"
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "debug logging was on"
    everything = caplog.text + "\n".join(texts)
    assert secret not in everything and basic not in everything


def test_cluster_errors_take_the_shared_error_table(cluster: FakeElasticsearch) -> None:
    store, _, vectors = built(cluster)
    cluster.fail_requests("search", 503)
    with pytest.raises(BackendUnavailableError, match="Elasticsearch answered 503"):
        store.recall(vectors[0], 3)
    cluster.fail_requests("search", 403)
    with pytest.raises(
        PermissionDeniedError, match="permission denied for these credentials by Elasticsearch"
    ) as denied:
        store.recall(vectors[0], 3)
    assert not isinstance(denied.value, BackendUnavailableError)
    missing = make_store(cluster, alias="nothing-here")
    with pytest.raises(StoreError, match="does not exist"):
        missing.recall(vectors[0], 3)
    assert missing.info.count == 0 and missing.content_hashes(["d01"]) == {}
    assert missing.all_ids() == [] and missing.delete(["d01"]) == 0


def test_an_unreachable_cluster_is_backend_unavailable() -> None:
    with socket.socket() as sock:  # a local port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = ElasticsearchStore(
        ConnectionOptions(f"http://127.0.0.1:{port}", timeout=2.0, max_retries=0), alias="docs"
    )
    with pytest.raises(BackendUnavailableError, match="cannot reach Elasticsearch at http://127"):
        store.info  # noqa: B018
    docs, vectors = corpus(2)
    store.generations.write_index = "docs-000001"  # known already: the bulk request fails
    store._meta_cache["docs-000001"] = {}
    with pytest.raises(BackendUnavailableError, match="bulk indexing into docs-000001: cannot"):
        store.upsert(docs, vectors, model_fingerprint=FP)


def test_store_from_options_ignores_what_it_does_not_know(cluster: FakeElasticsearch) -> None:
    store = store_from_options(
        url="http://u:p@fake:9200",
        timeout=5,
        top_k=10,
        client_kwargs={"node_class": cluster.node_class()},
    )
    assert store.alias == "twinbert" and store.index is None
    assert store.options is not None and store.options.timeout == 5.0
    assert (store.options.username, store.options.password) == ("u", "p")
    store.close()
