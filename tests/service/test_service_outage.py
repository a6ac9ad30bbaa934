"""The service's log while its store goes down and comes back: one line each way.

The outage is injected by wrapping the store (a switch that makes every read fail as an
unreachable cluster does), never by replacing the service code under test; the log is read
with pytest's caplog. `serve` started against a closed port runs as a subprocess, so its
stderr is exactly what a user sees.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.test_service import QUERY, build_sample_index
from twinbert_search.errors import BackendUnavailableError
from twinbert_search.search import Searcher
from twinbert_search.service import ServiceConfig, create_app
from twinbert_search.service.config import SERVE_CLUSTER_TIMEOUT_S
from twinbert_search.service.logs import configure_logging
from twinbert_search.service.outage import StoreHealth

OUTAGE = "twinbert_search.service.outage"
DOWN = "recall: cannot reach OpenSearch at http://search:9200 (ConnectionError)"


class SwitchedStore:
    """Wraps a store; while `down`, every read fails as if the cluster refused connections."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name in ("recall", "fetch", "recall_bm25", "recall_fused", "documents") and self.down:
            return self._fail
        return attr

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise BackendUnavailableError(DOWN) from exc

    @property
    def info(self) -> Any:
        if self.down:
            self._fail()
        return self._store.info


@pytest.fixture(scope="module")
def sample_index(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample_index(tiny_model, tmp_path_factory.mktemp("outage-index"))


@pytest.fixture
def switched(sample_index: Path, tiny_model: Path) -> Iterator[tuple[TestClient, SwitchedStore]]:
    searcher = Searcher.open(sample_index, tiny_model)
    store = SwitchedStore(searcher.store)
    searcher.store = store  # type: ignore[assignment]
    config = ServiceConfig(index_dir=sample_index, model=tiny_model, workers=2, cache_size=0)
    with TestClient(create_app(config, searcher), raise_server_exceptions=False) as client:
        yield client, store
    store._store.close()


def _lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and r.name.startswith("twinbert_search")
    ]


def test_an_outage_is_one_line_down_and_one_line_back(
    switched: tuple[TestClient, SwitchedStore], caplog: pytest.LogCaptureFixture
) -> None:
    client, store = switched
    caplog.set_level(logging.INFO)
    assert client.post("/search", json={"query": QUERY}).status_code == 200
    caplog.clear()
    store.down = True
    statuses = [
        client.post("/search", json={"query": f"{QUERY} {i}"}).status_code for i in range(6)
    ]
    statuses.append(
        client.post("/rerank", json={"query": QUERY, "candidates": ["d001"]}).status_code
    )
    assert client.get("/readyz").status_code == 503  # a probe: not a refused request
    assert statuses == [503] * 7
    down = _lines(caplog)
    assert down == [
        f"the store stopped answering: {DOWN}; requests get 503 until it answers again"
    ], down
    assert all(r.exc_info is None for r in caplog.records)  # no traceback below debug
    caplog.clear()
    store.down = False
    assert client.post("/search", json={"query": QUERY}).status_code == 200
    assert client.post("/search", json={"query": QUERY}).status_code == 200
    back = _lines(caplog)
    assert len(back) == 1 and back[0].startswith("the store answers again after "), back
    assert back[0].endswith("; 7 requests were refused (503) meanwhile")
    # a second outage is reported again, and counted from zero
    caplog.clear()
    store.down = True
    client.post("/search", json={"query": QUERY})
    store.down = False
    client.get("/readyz")
    assert [m.split(" after ")[0] for m in _lines(caplog)] == [
        f"the store stopped answering: {DOWN}; requests get 503 until it answers again",
        "the store answers again",
    ]
    assert _lines(caplog)[1].endswith("; 1 request was refused (503) meanwhile")


def test_at_debug_the_outage_line_has_its_traceback_and_each_503_a_line(
    switched: tuple[TestClient, SwitchedStore], caplog: pytest.LogCaptureFixture
) -> None:
    client, store = switched
    caplog.set_level(logging.DEBUG)
    store.down = True
    for _ in range(3):
        assert client.post("/search", json={"query": QUERY}).status_code == 503
    opened = [r for r in caplog.records if r.name == OUTAGE]
    assert len(opened) == 1 and opened[0].exc_info is not None
    per_request = [r for r in caplog.records if r.name == "twinbert_search.service.errors"]
    assert len(per_request) == 3 and all(r.levelno == logging.DEBUG for r in per_request)


def test_calls_in_flight_across_a_change_do_not_flap_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    health = StoreHealth(clock=lambda: now[0])
    caplog.set_level(logging.INFO)
    before = health.now()
    now[0] = 1.0
    health.failed(RuntimeError("down"), started=health.now())
    health.answered(started=before)  # sent before the outage: says nothing of the store now
    assert health.down
    now[0] = 5.0
    straggler = health.now()  # sent while down, fails after the store came back
    now[0] = 10.0
    health.answered(started=health.now())
    health.failed(RuntimeError("late"), started=straggler)
    assert not health.down and health.outages == 1
    assert [r.getMessage() for r in caplog.records] == [
        "the store stopped answering: down; requests get 503 until it answers again",
        "the store answers again after 9.0 s; 1 request was refused (503) meanwhile",
    ]


def test_client_libraries_are_quiet_below_debug(
    restore_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    configure_logging("info")
    caplog.set_level(logging.INFO, logger="twinbert_search")
    for name in ("opensearch", "opensearchpy.trace", "elastic_transport.transport", "urllib3"):
        logging.getLogger(name).info("GET http://search:9200/x [status:200 request:0.003s]")
        logging.getLogger(name).warning("GET http://search:9200/x [status:N/A]")
    pool = logging.getLogger("urllib3.connectionpool")
    for _ in range(3):  # a pool too small for the threads: said once
        pool.warning("Connection pool is full, discarding connection: %s", "search")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("urllib3.connectionpool", "Connection pool is full, discarding connection: search")
    ]
    caplog.clear()
    configure_logging("debug")
    logging.getLogger("opensearch").warning("GET http://search:9200/x [status:N/A]")
    pool.warning("Connection pool is full, discarding connection: %s", "search")
    assert len(caplog.records) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_with_the_cluster_down_prints_one_line_and_exits_5(tiny_model: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    code = "from twinbert_search.cli import main; main(prog_name='twinbert-search')"
    args = ["serve", "--backend", "opensearch", "--url", url, "--model", str(tiny_model)]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 5, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0], lines
    debug = subprocess.run(
        [sys.executable, "-c", code, *args, "--log-level", "debug"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert debug.returncode == 5 and "Traceback" in debug.stderr


class HangingStore(SwitchedStore):
    """While `hang` is set, a read blocks until `release` is set, then fails as a client
    timeout does: a node that stopped answering without refusing connections."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.hang = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        if self.hang:
            self.entered.set()
            assert self.release.wait(30)
        return super()._fail(*args, **kwargs)


def test_while_down_one_request_tries_the_store_and_the_rest_get_503_at_once(
    sample_index: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    searcher = Searcher.open(sample_index, tiny_model)
    store = HangingStore(searcher.store)
    searcher.store = store  # type: ignore[assignment]
    config = ServiceConfig(index_dir=sample_index, model=tiny_model, workers=2, cache_size=0)
    caplog.set_level(logging.INFO)
    with TestClient(create_app(config, searcher), raise_server_exceptions=False) as client:
        store.down = True
        assert client.post("/search", json={"query": QUERY}).status_code == 503  # opens it
        store.hang = True
        probe: dict[str, int] = {}
        prober = threading.Thread(
            target=lambda: probe.update(
                status=client.post("/search", json={"query": QUERY}).status_code
            )
        )
        prober.start()
        assert store.entered.wait(30)  # the one request trying the store is waiting on it
        started = time.perf_counter()
        refused = [client.post("/search", json={"query": QUERY}) for _ in range(3)]
        waited = time.perf_counter() - started
        assert [r.status_code for r in refused] == [503] * 3
        assert all(r.headers.get("Retry-After") for r in refused)
        assert not prober.is_alive() or waited < 10  # none of them waited on the hung store
        store.release.set()
        prober.join(30)
        assert probe == {"status": 503}
        store.down = store.hang = False
        assert client.post("/search", json={"query": QUERY}).status_code == 200
    store._store.close()
    lines = _lines(caplog, logging.WARNING)
    assert len(lines) == 2, lines
    assert lines[1].endswith("; 5 requests were refused (503) meanwhile"), lines


def test_store_health_admits_one_request_at_a_time_while_down() -> None:
    health = StoreHealth()
    assert health.admit() is True
    health.failed(RuntimeError("down"), started=health.now())
    assert health.admit() is None  # this one tries the store
    assert health.admit() is False and health.admit() is False  # refused, counted
    assert health.refused == 3
    health.settled()
    assert health.admit() is None
    health.settled()
    health.answered(started=health.now())
    assert health.admit() is True and not health.down


def test_serve_bounds_the_cluster_wait_unless_told_otherwise(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from twinbert_search.cli import main
    from twinbert_search.errors import ConfigurationError

    seen: list[ServiceConfig] = []

    def capture(config: ServiceConfig) -> Any:
        seen.append(config)
        raise ConfigurationError("stop here")

    monkeypatch.setattr("twinbert_search.service.load_searcher", capture)
    base = ["serve", "--backend", "opensearch", "--url", "http://127.0.0.1:9", "--model"]
    for extra in ([], ["--timeout", "42"]):
        result = CliRunner().invoke(main, [*base, str(tiny_model), *extra])
        assert result.exit_code == 2 and "stop here" in result.output, result.output
    default, given = (dict(config.cluster) for config in seen)
    assert default["timeout"] == SERVE_CLUSTER_TIMEOUT_S and given["timeout"] == 42
    assert default["client_kwargs"] == given["client_kwargs"] == {"max_retries": 1}


def test_a_service_built_in_python_bounds_the_cluster_wait_too() -> None:
    """The bound belongs to the service, not only to `serve`'s flags."""
    url = {"url": "http://127.0.0.1:9"}
    config = ServiceConfig(backend="opensearch", cluster=url)
    assert config.cluster["timeout"] == SERVE_CLUSTER_TIMEOUT_S
    assert config.cluster["client_kwargs"] == {"max_retries": 1}
    own = ServiceConfig(
        backend="opensearch", cluster={**url, "timeout": 9, "client_kwargs": {"max_retries": 4}}
    )
    assert own.cluster["timeout"] == 9 and own.cluster["client_kwargs"] == {"max_retries": 4}
    assert "timeout" not in ServiceConfig(index_dir=Path("x")).cluster  # embedded: no cluster


def test_the_service_keeps_cluster_vectors_unless_told_not_to(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served cluster store gets the vector cache (`--vector-cache-mb`, 0: off)."""
    from click.testing import CliRunner

    from twinbert_search.cli import main
    from twinbert_search.errors import ConfigurationError

    url = {"url": "http://127.0.0.1:9"}
    assert ServiceConfig(backend="opensearch", cluster=url).cluster["vector_cache_mb"] == 256
    assert (
        ServiceConfig(backend="elasticsearch", cluster=url, vector_cache_mb=0).cluster[
            "vector_cache_mb"
        ]
        == 0
    )
    assert "vector_cache_mb" not in ServiceConfig(index_dir=Path("x")).cluster
    with pytest.raises(ConfigurationError, match="--vector-cache-mb"):
        ServiceConfig(backend="opensearch", cluster=url, vector_cache_mb=-1).validate()

    seen: list[ServiceConfig] = []

    def capture(config: ServiceConfig) -> Any:
        seen.append(config)
        raise ConfigurationError("stop here")

    monkeypatch.setattr("twinbert_search.service.load_searcher", capture)
    base = ["serve", "--backend", "opensearch", "--url", "http://127.0.0.1:9"]
    result = CliRunner().invoke(main, [*base, "--model", str(tiny_model), "--vector-cache-mb", "0"])
    assert "stop here" in result.output, result.output
    assert seen[0].cluster["vector_cache_mb"] == 0
