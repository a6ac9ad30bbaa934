"""OpenSearchStore connections: credentials, TLS, the environment, and errors from the cluster."""

from __future__ import annotations

import base64
import logging
import socket
from typing import Any

import pytest

from tests.fake_opensearch import FakeCluster
from tests.opensearch_store_helpers import FP, built, corpus, make_store
from twinbert_search.errors import (
    BackendUnavailableError,
    BulkIndexError,
    ConfigurationError,
    StoreError,
)
from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


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


def test_several_urls_name_every_node_of_a_cluster() -> None:
    """A multi-node cluster: comma-separated URLs, each a host of the client (issue 27)."""
    options = ConnectionOptions("http://admin:pw@127.0.0.1:9280/, http://127.0.0.1:9281")
    assert options.url == options.safe_url == "http://127.0.0.1:9280,http://127.0.0.1:9281"
    assert (options.username, options.password) == ("admin", "pw")
    assert [(h["host"], h["port"]) for h in options.hosts()] == [
        ("127.0.0.1", 9280),
        ("127.0.0.1", 9281),
    ]
    client = options.client()
    try:
        pool = client.transport.connection_pool
        assert sorted(c.host for c in pool.connections) == [
            "http://127.0.0.1:9280",
            "http://127.0.0.1:9281",
        ]
    finally:
        client.close()
    with pytest.raises(ConfigurationError, match="mix http and https"):
        ConnectionOptions("http://a:9200,https://b:9200")
    with pytest.raises(ConfigurationError, match="empty"):
        ConnectionOptions(" , ")


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


def test_basic_auth_over_plain_http_warns_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cret-over-http"
    caplog.set_level(logging.WARNING)
    ConnectionOptions("https://admin@search.example.com", password=secret).client_options({})
    assert caplog.records == [], "https carries the password encrypted: nothing to say"
    ConnectionOptions(f"http://admin:{secret}@search.example.com").client_options({})
    assert [r.getMessage() for r in caplog.records] == [
        "sending the OpenSearch password over plain http to http://search.example.com: "
        "use an https:// URL"
    ]
    caplog.clear()
    ConnectionOptions("http://search.example.com").client_options({})
    assert caplog.records == [], "no credentials, no warning"
