"""`twinbert-search serve --backend opensearch|elasticsearch` against the real nodes, over HTTP
(issue 26): `python -m pytest -m opensearch` and `-m elasticsearch`.

The sidecar runs as a subprocess, exactly as a user starts it, over the sample indexed with
the tiny model under a fresh alias. `/search` answers what the CLI's `search` prints for the
same query, `/rerank` reranks those hits to the same order and scores, and `/readyz` is ready.
Then the node the session started is stopped (scripts/*-node.sh stop): `/readyz` and
`/search` answer 503 `backend_unavailable`, never 500, each within the sidecar's request
timeout; the node is started again on the same port with its data kept, and the same sidecar
process answers 200 again, without a restart. The node is restarted in a `finally`, so the
session's later tests find it as they left it. A cluster given by OPENSEARCH_URL or
ELASTICSEARCH_TEST_URL is never stopped: there the outage half is skipped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from tests.opensearch_node import TEST_PLUGINS, OpenSearchNode, remove_assets
from twinbert_search.cli import main

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "sample"
QUERIES = ["how do vaccines work", "why does the moon show one face", "baking bread at home"]
REQUEST_TIMEOUT = 5.0  # the sidecar's --timeout: each cluster request's limit
SERVE_CODE = "from twinbert_search.cli import main; main(prog_name='twinbert-search')"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(args: list[Any], env: dict[str, str | None]) -> dict[str, Any]:
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.stdout)


@contextmanager
def sidecar(args: list[Any], env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    """`twinbert-search serve ARGS` in a subprocess; an HTTP client once /readyz is ready."""
    port = free_port()
    argv = [sys.executable, "-c", SERVE_CODE, "serve", *map(str, args), "--port", str(port),
            "--timeout", str(REQUEST_TIMEOUT)]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield client
        assert process.poll() is None, "the sidecar kept running through the outage"
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def search_matches_the_cli(
    client: httpx.Client, cli_search: Callable[[str], dict[str, Any]]
) -> list[str]:
    """/search and /rerank against the CLI's `search`; the first query's hit ids."""
    first: list[str] = []
    for query in QUERIES:
        response = client.post("/search", json={"query": query, "k": 5})
        assert response.status_code == 200, response.text
        served, printed = response.json(), cli_search(query)
        assert served["reranked"] is True and printed["reranked"] is True
        ids = [h["id"] for h in served["hits"]]
        assert len(ids) == 5 and ids == [h["id"] for h in printed["hits"]], query
        assert [h["rerank_score"] for h in served["hits"]] == pytest.approx(
            [h["rerank_score"] for h in printed["hits"]], rel=1e-5
        )
        reranked = client.post("/rerank", json={"query": query, "candidates": ids[::-1]})
        assert reranked.status_code == 200, reranked.text
        results = reranked.json()["results"]
        assert [r["id"] for r in results] == ids, query
        assert [r["score"] for r in results] == pytest.approx(
            [h["rerank_score"] for h in served["hits"]], rel=1e-5
        )
        first = first or ids
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["documents"] == 300, ready.text
    return first


def through_an_outage(
    client: httpx.Client, stop: Callable[[], None], start: Callable[[], None], ids: list[str]
) -> None:
    """Node down: 503s within the request timeout; node back: 200s from the same process."""
    stop()
    try:
        for call in (
            lambda: client.get("/readyz"),
            lambda: client.post("/search", json={"query": QUERIES[0], "k": 5}),
            lambda: client.post("/search", json={"query": QUERIES[1], "k": 5}),
            lambda: client.get("/readyz"),
        ):
            response, seconds = timed(call)
            assert response.status_code == 503, response.text
            assert seconds < REQUEST_TIMEOUT, (response.request.url, seconds)
            if response.request.url.path == "/search":
                assert response.json()["error"]["type"] == "backend_unavailable", response.text
    finally:
        start()
    deadline = time.monotonic() + 60
    while (ready := client.get("/readyz")).status_code != 200:
        assert ready.status_code == 503, ready.text
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.5)
    again = client.post("/search", json={"query": QUERIES[0], "k": 5})
    assert again.status_code == 200, again.text
    assert [h["id"] for h in again.json()["hits"]] == ids


def node_script(script: str, command: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (command, result.stderr[-3000:])
    return result.stdout


# -- OpenSearch ------------------------------------------------------------------------------------


def opensearch_control(node: OpenSearchNode) -> tuple[Callable[[], None], Callable[[], None]]:
    """Stop and start for the script's node at the fixture's URL (same port, data kept)."""
    if node.external:
        pytest.skip("OPENSEARCH_URL is a cluster of yours: the test does not stop it")
    url = node.connection.url
    env = {
        **os.environ,
        "TWINBERT_OPENSEARCH_VERSION": node.version,
        "TWINBERT_OPENSEARCH_PLUGINS": os.environ.get("TWINBERT_OPENSEARCH_PLUGINS")
        or TEST_PLUGINS,
        "TWINBERT_OPENSEARCH_KEEP_DATA": "1",
    }
    owned = subprocess.run(
        ["bash", str(ROOT / "scripts" / "opensearch-node.sh"), "url"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if owned.stdout.strip() != url:
        pytest.skip(f"the node at {url} is not the one scripts/opensearch-node.sh runs")
    port = str(urlsplit(url).port)

    def start() -> None:
        started = node_script(
            "opensearch-node.sh", "start", {**env, "TWINBERT_OPENSEARCH_PORT": port}
        )
        assert started.strip().splitlines()[-1] == url

    return lambda: node_script("opensearch-node.sh", "stop", env), start


@pytest.mark.opensearch
def test_the_sidecar_over_an_opensearch_node(
    opensearch_node: OpenSearchNode, tiny_model: Path, tmp_path: Path
) -> None:
    from twinbert_search.stores.opensearch import OpenSearchStore

    c = opensearch_node.connection
    env: dict[str, str | None] = {
        "OPENSEARCH_URL": c.url,
        "OPENSEARCH_USERNAME": c.username or None,
        "OPENSEARCH_PASSWORD": c.password or None,
        "OPENSEARCH_CA_CERTS": c.ca_certs or None,
        "OPENSEARCH_VERIFY_CERTS": str(c.verify_certs).lower(),
    }
    alias = f"twinbert-sc-{uuid.uuid4().hex[:8]}"
    common = ["--backend", "opensearch", "--alias", alias, "--model", tiny_model]
    stop, start = opensearch_control(opensearch_node)
    try:
        cli(
            ["index", CORPUS, *common, "--ann", opensearch_node.ann, "--no-progress", "--json"], env
        )
        served_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        with sidecar(common, served_env, tmp_path / "serve.log") as client:
            ids = search_matches_the_cli(
                client, lambda q: cli(["search", q, *common, "-k", "5", "--json"], env)
            )
            through_an_outage(client, stop, start, ids)
    finally:
        with OpenSearchStore(c, alias=alias) as store:
            remove_assets(store)


# -- Elasticsearch ---------------------------------------------------------------------------------


def elasticsearch_control(url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """Stop and start for the script's node at the fixture's URL (same version and port)."""
    from twinbert_search.stores.elasticsearch import ConnectionOptions

    if os.environ.get("ELASTICSEARCH_TEST_URL"):
        pytest.skip("ELASTICSEARCH_TEST_URL is a cluster of yours: the test does not stop it")
    client = ConnectionOptions(url).client()
    try:
        nodes = client.nodes.info(metric="process").body["nodes"]  # no `GET /`: no rest-root
        (version,) = {n["version"] for n in nodes.values()}
    finally:
        client.close()
    env = {**os.environ, "TWINBERT_ELASTICSEARCH_VERSION": version,
           "TWINBERT_ELASTICSEARCH_PORT": str(urlsplit(url).port)}  # fmt: skip
    if node_script("elasticsearch-node.sh", "url", env).strip() != url:
        pytest.skip(f"the node at {url} is not the one scripts/elasticsearch-node.sh runs")

    def start() -> None:
        assert node_script("elasticsearch-node.sh", "start", env).strip().splitlines()[-1] == url

    return lambda: node_script("elasticsearch-node.sh", "stop", env), start


@pytest.mark.elasticsearch
def test_the_sidecar_over_an_elasticsearch_node(
    elasticsearch_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    from tests.stores.elasticsearch.test_elasticsearch_node import cleanup
    from twinbert_search.stores.elasticsearch import ConnectionOptions

    env: dict[str, str | None] = {"ELASTICSEARCH_URL": elasticsearch_url,
                                  "ELASTICSEARCH_USERNAME": None, "ELASTICSEARCH_PASSWORD": None,
                                  "ELASTICSEARCH_API_KEY": None}  # fmt: skip
    alias = f"twinbert-sc-{uuid.uuid4().hex[:8]}"
    common = ["--backend", "elasticsearch", "--alias", alias, "--model", tiny_model]
    stop, start = elasticsearch_control(elasticsearch_url)
    try:
        cli(["index", CORPUS, *common, "--no-progress", "--json"], env)
        served_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        with sidecar(common, served_env, tmp_path / "serve.log") as client:
            ids = search_matches_the_cli(
                client, lambda q: cli(["search", q, *common, "-k", "5", "--json"], env)
            )
            through_an_outage(client, stop, start, ids)
    finally:
        client = ConnectionOptions(elasticsearch_url).client()
        cleanup(client, alias)
        client.close()
