"""A model's document tower inside OpenSearch, checked against the Python encoder (issue 26).

What the real-node tests of in-cluster encoding share (the default model's and a distilled
student's): register the model with `opensearch register-model` from local files, index the
300-document sample with `index --encode-in-cluster --model DIR` (no --model-id), then compare
every vector the engine stored with the Python encoder's, and search with rerank over that
index with the embedded store's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tests.opensearch_node import ML, NEURAL, OpenSearchNode, remove_assets, unique_alias
from twinbert_search.cli import main
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus, read_queries
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search.factory import open_searcher
from twinbert_search.stores.factory import open_store
from twinbert_search.stores.opensearch import OpenSearchStore

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample"
QUERIES = read_queries(SAMPLE / "queries.jsonl")[:20]
EF_SEARCH = 400  # above the corpus size: the HNSW search visits every document
MIN_COSINE = 0.999


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


@dataclass(frozen=True)
class InClusterIndex:
    """The sample indexed by the cluster with a registered model."""

    alias: str
    registered: dict[str, Any]  # register-model's --json output
    report: dict[str, Any]  # the index run's --json report


@contextmanager
def indexed_in_cluster(
    node: OpenSearchNode, model: Path, zip_path: Path, kind: str
) -> Iterator[InClusterIndex]:
    """Register `model`'s document tower (chunked upload of the local zip), index the sample
    through the ingest pipeline with `--model` only; remove the assets and undeploy after."""
    node.require(ML, "registering a document tower in ML Commons")
    node.require(NEURAL, "the text_embedding ingest processor")
    if node.external and os.environ.get("OPENSEARCH_TEST_ML") != "1":
        pytest.skip("OPENSEARCH_TEST_ML=1 is not set: no model is uploaded to your cluster")
    env = cli_env(node)
    alias = unique_alias(kind)
    registered = run(["opensearch", "register-model", "--model", model,
                      "--zip", zip_path, "--json"], env)  # fmt: skip
    try:
        report = run(["index", SAMPLE, "--backend", "opensearch", "--alias", alias,
                      "--model", model, "--encode-in-cluster",
                      "--ann", node.ann, "--no-progress", "--json"], env)  # fmt: skip
        yield InClusterIndex(alias, registered, report)
    finally:
        with OpenSearchStore(node.connection, alias=alias) as store:
            remove_assets(store)
            store.client.plugins.ml.undeploy_model(model_id=registered["model_id"])


def embedded_index(model: Path, index_dir: Path) -> np.ndarray:
    """The sample indexed by the Python encoder into an embedded store; its stored vectors
    in corpus order."""
    runtime = TwinBertRuntime.load(model)
    docs = list(read_corpus(SAMPLE))
    with open_store(
        "embedded", index_dir=index_dir, writable=True, dim=runtime.dim, ann="flat"
    ) as embedded:
        index_documents(iter(docs), embedded, runtime, progress=False)
        return embedded.fetch([d.id for d in docs]).vectors


def cluster_cosines(
    node: OpenSearchNode, alias: str, model: Path, expected: np.ndarray
) -> np.ndarray:
    """Each engine-stored vector's cosine with `expected` (corpus order); checks the index
    records the model's vector fingerprint and holds the whole sample."""
    runtime = TwinBertRuntime.load(model)
    ids = [d.id for d in read_corpus(SAMPLE)]
    with OpenSearchStore(node.connection, alias=alias) as store:
        assert store.info.count == len(ids)
        assert store.info.model_fingerprint == runtime.fingerprint
        stored = store.fetch(ids).vectors
    return np.sum(stored * expected, axis=1) / (
        np.linalg.norm(stored, axis=1) * np.linalg.norm(expected, axis=1)
    )


def reranked_ids_equal(
    node: OpenSearchNode, alias: str, model: Path, index_dir: Path
) -> list[tuple[str, bool]]:
    """For each of the 20 queries: (query id, the cluster's reranked top-10 ids equal the
    embedded store's, in order). Both searches rerank 50 candidates."""
    embedded_searcher = open_searcher("embedded", model=model, index_dir=index_dir)
    remote = {"url": node.connection.url, "alias": alias, "ef_search": EF_SEARCH}
    cluster_searcher = open_searcher("opensearch", model=model, **remote)
    out = []
    try:
        for query in QUERIES:
            ours = embedded_searcher.search(query.text, k=10, candidates=50)
            theirs = cluster_searcher.search(query.text, k=10, candidates=50)
            assert ours.reranked and theirs.reranked
            out.append((query.id, [h.id for h in theirs.hits] == [h.id for h in ours.hits]))
    finally:
        embedded_searcher.store.close()
        cluster_searcher.store.close()
    return out
