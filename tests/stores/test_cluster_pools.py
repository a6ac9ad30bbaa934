"""Cluster clients keep as many connections as the service has threads that use them.

opensearch-py's urllib3 pool holds one connection unless told: eight threads calling it at
once open eight and throw seven away ("Connection pool is full, discarding connection").
The clients here talk to a small local HTTP server, over real sockets, from eight threads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from twinbert_search.service import ServiceConfig
from twinbert_search.stores.factory import open_store

POOL_FULL = "Connection pool is full"
THREADS = 8


class _Root(BaseHTTPRequestHandler):
    """GET / as a cluster answers it (both engines' clients accept the body)."""

    protocol_version = "HTTP/1.1"  # keep-alive: connections are reused, or discarded

    def do_GET(self) -> None:
        time.sleep(0.005)  # long enough for the threads' requests to overlap
        body = json.dumps({"version": {"number": "8.19.0"}, "tagline": "fake"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _from_threads(call: Callable[[], Any], each: int = 25) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: [call() for _ in range(each)], range(THREADS)))


def _pool_full(caplog: pytest.LogCaptureFixture) -> int:
    return sum(POOL_FULL in r.getMessage() for r in caplog.records)


def test_the_service_sizes_the_opensearch_pool_to_its_threads(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServiceConfig(backend="opensearch", cluster={"url": url}, workers=THREADS)
    assert config.pool_size >= THREADS
    caplog.set_level(logging.WARNING, logger="urllib3")
    with open_store("opensearch", writable=False, url=url, pool_size=config.pool_size) as store:
        _from_threads(store.client.info)
    assert _pool_full(caplog) == 0
    # the client's own default, for contrast: what the service did before
    with open_store("opensearch", writable=False, url=url) as store:
        _from_threads(store.client.info)
    assert _pool_full(caplog) > 0


def test_the_elasticsearch_pool_follows_the_same_size(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="urllib3")
    with open_store("elasticsearch", writable=False, url=url, pool_size=THREADS + 4) as store:
        node = store.client.transport.node_pool.all()[0]
        assert node.config.connections_per_node == THREADS + 4
        _from_threads(store.client.info)
    assert _pool_full(caplog) == 0


def test_client_kwargs_given_by_the_caller_win(url: str) -> None:
    kwargs = {"client_kwargs": {"pool_maxsize": 3}}
    with open_store("opensearch", writable=False, url=url, pool_size=20, **kwargs) as store:
        assert store.client.transport.connection_pool.connections[0].pool.pool.maxsize == 3
