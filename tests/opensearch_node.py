"""The real OpenSearch node of `python -m pytest -m opensearch`, found or started once per session.

The session fixture `opensearch_node` uses, in this order:

1. `OPENSEARCH_URL` when set: a cluster of yours (docker/docker-compose.yml, say), with the
   credentials and TLS settings of `ConnectionOptions.from_env`; never started or stopped here.
2. The node `scripts/opensearch-node.sh` already runs for `TWINBERT_OPENSEARCH_VERSION` and
   `TWINBERT_OPENSEARCH_PLUGINS`: reused and left running.
3. Otherwise it starts that node (here the plugin set defaults to `neural`: k-NN, ML Commons,
   job-scheduler and neural-search) and stops it when the session ends.

Without Java or Maven the tests skip with the script's one line naming what is missing. The
tests index with `OPENSEARCH_TEST_ANN` (default `lucene:hnsw16:efc128:fp32:innerproduct`): the
k-NN zip on Maven Central has no native libraries, so only the lucene engine can index there.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore
from twinbert_search.stores.opensearch.index_options import IndexOptions

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "opensearch-node.sh"
DEFAULT_ANN = "lucene:hnsw16:efc128:fp32:innerproduct"
TEST_PLUGINS = "neural"  # what the tests start when TWINBERT_OPENSEARCH_PLUGINS is unset
MISSING = 4  # `opensearch-node.sh check`: something the node needs is missing

# the plugins' names in `_cat/plugins`, by what the tests need them for
KNN, ML, NEURAL = "opensearch-knn", "opensearch-ml", "opensearch-neural-search"


@dataclass(frozen=True)
class OpenSearchNode:
    """Where the node is, what it runs, and how the tests index on it."""

    connection: ConnectionOptions
    version: str
    plugins: frozenset[str]
    ann: str
    source: str  # "OPENSEARCH_URL", or the script and its plugin set
    external: bool  # OPENSEARCH_URL: a cluster of the user's, handled with care

    def index_options(self, **overrides: object) -> IndexOptions:
        """The tests' index description, with replicas 0 (a single node stays green)."""
        return IndexOptions.parse(self.ann, **{"replicas": 0, **overrides})

    def require(self, plugin: str, what: str) -> None:
        """Skip, naming the missing plugin, when the node lacks it."""
        if plugin not in self.plugins:
            hint = ""
            if not self.external:
                hint = (
                    " (Maven Central publishes ML Commons and neural-search for 2.x only: run "
                    "2.19.1, the default)"
                    if int(self.version.split(".")[0]) >= 3
                    else " (TWINBERT_OPENSEARCH_PLUGINS=neural adds it)"
                )
            pytest.skip(
                f"{what} needs the {plugin} plugin, which OpenSearch {self.version} from "
                f"{self.source} lacks{hint}"
            )


def _script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), command], env=env, capture_output=True, text=True, check=False
    )


def _describe(connection: ConnectionOptions, ann: str, source: str) -> OpenSearchNode:
    client = connection.client()
    try:
        version = client.info()["version"]["number"]
        rows = client.cat.plugins(format="json")
    finally:
        client.close()
    plugins = frozenset(row["component"] for row in rows)
    external = source == "OPENSEARCH_URL"
    return OpenSearchNode(connection, version, plugins, ann, source, external)


def _report(config: pytest.Config, line: str) -> None:
    """One line in the terminal, past pytest's capture (how long the node took, say)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{line}", flush=True)


@pytest.fixture(scope="session")
def opensearch_node(request: pytest.FixtureRequest) -> Iterator[OpenSearchNode]:
    """A real node for the session: OPENSEARCH_URL, a running script node, or a new one."""
    ann = os.environ.get("OPENSEARCH_TEST_ANN") or DEFAULT_ANN
    if os.environ.get("OPENSEARCH_URL"):
        yield _describe(ConnectionOptions.from_env(), ann, "OPENSEARCH_URL")
        return
    if IndexOptions.parse(ann).engine != "lucene":
        pytest.fail(
            f"OPENSEARCH_TEST_ANN={ann}: the k-NN plugin on Maven Central has no native "
            "libraries, so the node the tests start indexes with lucene only (a faiss index "
            "kills it at its first refresh); set OPENSEARCH_URL to test faiss on your cluster",
            pytrace=False,
        )
    env = {**os.environ}
    plugin_set = env.setdefault("TWINBERT_OPENSEARCH_PLUGINS", TEST_PLUGINS)
    source = f"scripts/opensearch-node.sh (TWINBERT_OPENSEARCH_PLUGINS={plugin_set})"
    running = _script("url", env)
    if running.returncode == 0:
        url = running.stdout.strip()
        _report(request.config, f"opensearch: reusing the node at {url} (left running)")
        yield _describe(ConnectionOptions(url), ann, source)
        return
    checked = _script("check", env)
    if checked.returncode == MISSING:
        pytest.skip(f"no OpenSearch node: {checked.stderr.strip()} (or set OPENSEARCH_URL)")
    started_at = time.monotonic()
    started = _script("start", env)
    if started.returncode != 0:
        log = "\n".join(started.stderr.strip().splitlines()[-30:])
        pytest.fail(f"scripts/opensearch-node.sh start failed:\n{log}", pytrace=False)
    url = started.stdout.strip().splitlines()[-1]
    seconds = time.monotonic() - started_at
    try:
        node = _describe(ConnectionOptions(url), ann, source)
        plugins = ", ".join(sorted(p.removeprefix("opensearch-") for p in node.plugins))
        _report(
            request.config,
            f"opensearch: started {node.version} ({plugins}) at {url} in {seconds:.0f} s",
        )
        yield node
    finally:
        stopped = _script("stop", env)
        if stopped.returncode != 0:
            _report(request.config, f"opensearch: stopping the node failed: {stopped.stderr}")


def remove_assets(store: OpenSearchStore) -> None:
    """Delete the indices, template and pipelines a test store made (by name: clusters may
    refuse wildcard deletes)."""
    client, names = store.client, store.names
    made = client.indices.get(index=f"{names.base}-*", ignore=404)
    indices = [name for name in made if name.startswith(f"{names.base}-")]
    if indices:
        client.indices.delete(index=",".join(indices))
    client.indices.delete_index_template(name=names.template, ignore=404)
    for pipeline in (names.vector_pipeline, names.embed_pipeline):
        client.ingest.delete_pipeline(id=pipeline, ignore=404)
    client.search_pipeline.delete(id=names.hybrid_pipeline, ignore=404)


def unique_alias(kind: str = "it") -> str:
    """A fresh alias; equal lengths, so the tests' templates never overlap one another."""
    return f"twinbert-{kind}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def node_stores(opensearch_node: OpenSearchNode) -> Iterator[Callable[..., OpenSearchStore]]:
    """Stores on the node, each under a fresh alias; what they made is removed afterwards.

    `make(ann=None, **kwargs)`: `ann` overrides the tests' index description (replicas 0),
    the rest reaches OpenSearchStore.
    """
    made: list[OpenSearchStore] = []

    def make(ann: str | None = None, **kwargs: object) -> OpenSearchStore:
        kwargs.setdefault("alias", unique_alias())
        options = IndexOptions.parse(ann, replicas=0) if ann else opensearch_node.index_options()
        store = OpenSearchStore(opensearch_node.connection, index_options=options, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        remove_assets(store)
        store.close()
