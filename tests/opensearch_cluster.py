"""The three-node OpenSearch cluster of `python -m pytest -m opensearch_cluster` (issue 27).

The session fixture `opensearch_cluster` starts `scripts/opensearch-cluster.sh` (three nodes
from one k-NN installation on 127.0.0.1, HTTP ports TWINBERT_CLUSTER_HTTP_PORT..+2, default
9280-9282) and stops it when the session ends; a cluster the script already runs is reused and
left running. Node 2 has a write thread pool of one thread and a one-slot queue, so a bulk
request that reaches several of its primaries at once is partly refused with 429. The tests
kill nodes (`kill(n)`, SIGKILL) and bring them back (`start()`: the missing nodes rejoin with
their data, and the cluster is green with three nodes again).

Without Java or Maven the tests skip with the script's one line naming what is missing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.opensearch_node import MISSING, _report
from twinbert_search.stores.opensearch import ConnectionOptions

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "opensearch-cluster.sh"
ANN = "lucene:hnsw16:efc128:fp32:innerproduct"  # the Maven k-NN zip runs lucene only


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=600
    )


@dataclass
class OpenSearchCluster:
    """The running cluster: its nodes' URLs, and what the tests do to its nodes."""

    urls: list[str]
    config: pytest.Config
    killed: set[int] = field(default_factory=set)

    def connection(self, *nodes: int) -> ConnectionOptions:
        """Options for the given nodes (all three when none is named)."""
        chosen = [self.urls[n] for n in nodes] if nodes else self.urls
        return ConnectionOptions(",".join(chosen))

    def kill(self, node: int) -> None:
        """SIGKILL one node, as a machine that dies."""
        done = _script("kill", str(node))
        assert done.returncode == 0, done.stderr
        self.killed.add(node)
        self.report(f"killed node {node} (kill -9)")

    def start(self) -> None:
        """Start the nodes that are down; return once the cluster is green with three."""
        started = time.monotonic()
        done = _script("start")
        assert done.returncode == 0, done.stderr[-3000:]
        if self.killed:
            seconds = time.monotonic() - started
            self.report(f"node(s) {sorted(self.killed)} rejoined, green in {seconds:.0f} s")
        self.killed.clear()

    def report(self, line: str) -> None:
        _report(self.config, f"opensearch-cluster: {line}")


@pytest.fixture(scope="session")
def opensearch_cluster(request: pytest.FixtureRequest) -> Iterator[OpenSearchCluster]:
    """Three nodes for the session: a cluster the script runs, or one started here."""
    running = _script("urls")
    urls = running.stdout.strip().split(",") if running.returncode == 0 else []
    if len(urls) == 3:
        cluster = OpenSearchCluster(urls, request.config)
        cluster.start()  # green with three nodes before the tests kill any
        cluster.report(f"reusing the cluster at {running.stdout.strip()} (left running)")
        yield cluster
        if cluster.killed:  # left as it was found: three nodes
            cluster.start()
        return
    checked = _script("check")
    if checked.returncode == MISSING:
        pytest.skip(f"no OpenSearch cluster: {checked.stderr.strip()}")
    started_at = time.monotonic()
    started = _script("start")
    try:
        if started.returncode != 0:
            log = "\n".join(started.stderr.strip().splitlines()[-30:])
            pytest.fail(f"scripts/opensearch-cluster.sh start failed:\n{log}", pytrace=False)
        urls = started.stdout.strip().splitlines()[-1].split(",")
        cluster = OpenSearchCluster(urls, request.config)
        seconds = time.monotonic() - started_at
        cluster.report(f"started three nodes at {','.join(urls)}, green in {seconds:.0f} s")
        yield cluster
    finally:
        stopped = _script("stop")
        if stopped.returncode != 0:
            _report(request.config, f"opensearch-cluster: stop failed: {stopped.stderr}")
