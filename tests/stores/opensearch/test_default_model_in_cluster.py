"""The default model's document tower inside OpenSearch (issue 26, item 1), on the real node:
`python -m pytest -m opensearch`.

`opensearch register-model` uploads the default model's document encoder from local files (the
zip in chunks, no URL) into ML Commons and deploys it; `index --encode-in-cluster --model DIR`
finds it by its fingerprint (no --model-id) and the ingest pipeline encodes the 300-document
sample. Every vector the engine stored is the Python encoder's for the same document (cosine
>= 0.999), and search with rerank over that index returns the embedded store's ids, in the
same order, on 20 queries.

The default model is built once (`twinbert-search build-default-model`, needs torch and the
`train` extra); without it the test skips saying so. The encoder is undeployed at the end (and
reused by the next run on the same node, by its zip's hash).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tests.opensearch_node import ML, NEURAL, OpenSearchNode, remove_assets, unique_alias
from twinbert_search.cli import main
from twinbert_search.errors import ModelError
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus, read_queries
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search.factory import open_searcher
from twinbert_search.stores.factory import open_store
from twinbert_search.stores.opensearch import OpenSearchStore

pytestmark = pytest.mark.opensearch

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sample"
QUERIES = read_queries(SAMPLE / "queries.jsonl")[:20]
EF_SEARCH = 400  # above the corpus size: the HNSW search visits every document
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def default_model() -> Path:
    from twinbert_search.runtime.models import resolve_model

    try:
        return resolve_model(None, build_default=True)
    except ModelError as exc:
        pytest.skip(f"the default model cannot be built here: {exc}")


def cli_env(node: OpenSearchNode) -> dict[str, str | None]:
    c = node.connection
    return {
        "OPENSEARCH_URL": c.url,
        "OPENSEARCH_USERNAME": c.username or None,
        "OPENSEARCH_PASSWORD": c.password or None,
        "OPENSEARCH_CA_CERTS": c.ca_certs or None,
        "OPENSEARCH_VERIFY_CERTS": str(c.verify_certs).lower(),
    }


def run(args: list[Any], env: dict[str, str | None]) -> dict[str, Any]:
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def in_cluster_index(
    opensearch_node: OpenSearchNode, default_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The sample indexed by the cluster with the registered default model: (alias, the
    register-model output, the index run's report)."""
    opensearch_node.require(ML, "registering the default model in ML Commons")
    opensearch_node.require(NEURAL, "the text_embedding ingest processor")
    if opensearch_node.external and os.environ.get("OPENSEARCH_TEST_ML") != "1":
        pytest.skip("OPENSEARCH_TEST_ML=1 is not set: no model is uploaded to your cluster")
    env = cli_env(opensearch_node)
    alias = unique_alias("dm")
    zip_path = tmp_path_factory.mktemp("ml") / "default.zip"
    registered = run(["opensearch", "register-model", "--model", default_model,
                      "--zip", zip_path, "--json"], env)  # fmt: skip
    try:
        report = run(["index", SAMPLE, "--backend", "opensearch", "--alias", alias,
                      "--model", default_model, "--encode-in-cluster",
                      "--ann", opensearch_node.ann, "--no-progress", "--json"], env)  # fmt: skip
        yield alias, registered, report
    finally:
        with OpenSearchStore(opensearch_node.connection, alias=alias) as store:
            remove_assets(store)
            store.client.plugins.ml.undeploy_model(model_id=registered["model_id"])


def test_the_default_towers_vectors_from_the_cluster_are_the_encoders(
    in_cluster_index: tuple[str, dict[str, Any], dict[str, Any]],
    opensearch_node: OpenSearchNode,
    default_model: Path,
    tmp_path: Path,
) -> None:
    alias, registered, report = in_cluster_index
    assert registered["state"] == "DEPLOYED" and registered["size_in_bytes"] > 10_000_000
    assert report["added"] == 300 and report["assets"][f"{alias}-embed"] == "created"

    runtime = TwinBertRuntime.load(default_model)
    docs = list(read_corpus(SAMPLE))
    with open_store(
        "embedded", index_dir=tmp_path / "ix", writable=True, dim=runtime.dim, ann="flat"
    ) as embedded:
        index_documents(iter(docs), embedded, runtime, progress=False)
        expected = embedded.fetch([d.id for d in docs]).vectors
    with OpenSearchStore(opensearch_node.connection, alias=alias) as store:
        assert store.info.count == 300 and store.info.model_fingerprint == runtime.fingerprint
        stored = store.fetch([d.id for d in docs]).vectors
    cosines = np.sum(stored * expected, axis=1) / (
        np.linalg.norm(stored, axis=1) * np.linalg.norm(expected, axis=1)
    )
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= MIN_COSINE, (docs[worst].id, float(cosines[worst]))

    # search with rerank: the embedded store's ids, in its order, on 20 queries
    embedded_searcher = open_searcher("embedded", model=default_model, index_dir=tmp_path / "ix")
    remote = {"url": opensearch_node.connection.url, "alias": alias, "ef_search": EF_SEARCH}
    cluster_searcher = open_searcher("opensearch", model=default_model, **remote)
    try:
        for query in QUERIES:
            ours = embedded_searcher.search(query.text, k=10, candidates=50)
            theirs = cluster_searcher.search(query.text, k=10, candidates=50)
            assert ours.reranked and theirs.reranked
            assert [h.id for h in theirs.hits] == [h.id for h in ours.hits], query.id
    finally:
        embedded_searcher.store.close()
        cluster_searcher.store.close()
