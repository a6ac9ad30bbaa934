"""The acceptance point on a real node: on the same data and model, the reranked results
(ids and scores) are the embedded store's; and the CLI end to end, with the engine the node
serves chosen by `--ann`. Run with `python -m pytest -m opensearch`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tests.opensearch_node import NEURAL, OpenSearchNode, remove_assets, unique_alias
from twinbert_search.cli import main
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus, read_queries
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search import Searcher
from twinbert_search.search.factory import open_searcher
from twinbert_search.stores.factory import open_store
from twinbert_search.stores.opensearch import OpenSearchStore

pytestmark = pytest.mark.opensearch

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sample"
CORPUS = SAMPLE / "corpus.jsonl"
QUERIES = read_queries(SAMPLE / "queries.jsonl")[:20]
THREE_TOPICS = {"topic": ["astronomy", "music", "sports"]}  # 75 documents: more than 50
EF_SEARCH = 400  # above the corpus size: the HNSW search visits every document


def connection_kwargs(node: OpenSearchNode) -> dict[str, Any]:
    """The store flags (`store_from_options`) that reach this node."""
    c = node.connection
    return {"url": c.url, "username": c.username, "password": c.password,
            "ca_certs": c.ca_certs, "verify_certs": c.verify_certs}  # fmt: skip


def cli_env(node: OpenSearchNode) -> dict[str, str]:
    c = node.connection
    env = {"OPENSEARCH_URL": c.url, "OPENSEARCH_VERIFY_CERTS": str(c.verify_certs).lower()}
    for key, value in (("USERNAME", c.username), ("PASSWORD", c.password),
                       ("CA_CERTS", c.ca_certs)):  # fmt: skip
        if value:
            env[f"OPENSEARCH_{key}"] = value
    return env


@pytest.fixture(scope="module")
def twins(
    tiny_model: Path, opensearch_node: OpenSearchNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Searcher, Searcher]]:
    """Searchers over the sample, indexed with the tiny model into both stores."""
    runtime = TwinBertRuntime.load(tiny_model)
    index_dir = tmp_path_factory.mktemp("node-equivalence") / "ix"
    remote = {**connection_kwargs(opensearch_node), "alias": unique_alias("eq")}
    with open_store(
        "embedded", index_dir=index_dir, writable=True, dim=runtime.dim, ann="flat"
    ) as s:
        index_documents(read_corpus(CORPUS), s, runtime, progress=False)
    with open_store(
        "opensearch", writable=True, ann=opensearch_node.ann, manifest=runtime.manifest, **remote
    ) as s:
        index_documents(read_corpus(CORPUS), s, runtime, progress=False)
    embedded = open_searcher("embedded", model=tiny_model, index_dir=index_dir)
    opensearch = open_searcher("opensearch", model=tiny_model, ef_search=EF_SEARCH, **remote)
    try:
        assert embedded.store.info.count == opensearch.store.info.count == 300
        yield embedded, opensearch
    finally:
        assert isinstance(opensearch.store, OpenSearchStore)
        remove_assets(opensearch.store)
        embedded.store.close()
        opensearch.store.close()


@pytest.mark.parametrize("filters", [None, THREE_TOPICS], ids=["all", "filtered"])
def test_reranked_results_are_the_embedded_stores(
    twins: tuple[Searcher, Searcher], filters: dict[str, list[str]] | None
) -> None:
    embedded, opensearch = twins
    for query in QUERIES:
        ours = embedded.search(query.text, k=50, candidates=50, filters=filters)
        theirs = opensearch.search(query.text, k=50, candidates=50, filters=filters)
        assert len(ours.hits) == 50 and ours.reranked and theirs.reranked
        assert [h.id for h in theirs.hits] == [h.id for h in ours.hits], query.id
        np.testing.assert_allclose(
            [h.rerank_score for h in theirs.hits], [h.rerank_score for h in ours.hits], atol=1e-5
        )
        np.testing.assert_allclose(
            [h.recall_score for h in theirs.hits], [h.recall_score for h in ours.hits], atol=1e-5
        )
        assert [h.document for h in theirs.hits] == [h.document for h in ours.hits]


def test_hybrid_candidates_rerank_identically(
    twins: tuple[Searcher, Searcher], opensearch_node: OpenSearchNode
) -> None:
    """Hybrid recall through the node's search pipeline (or the client-side fusion where
    neural-search is missing); the same candidates get the same rerank as embedded."""
    embedded, opensearch = twins
    fused_by = "engine" if NEURAL in opensearch_node.plugins else "client"
    for query in QUERIES:
        theirs = opensearch.search(query.text, k=50, candidates=50, hybrid=True)
        assert len(theirs.recall_ids) == 50 and theirs.hybrid_fusion == fused_by
        ours = embedded.rerank_ids(query.text, theirs.recall_ids)
        assert [h.id for h in theirs.hits] == [doc_id for doc_id, _ in ours], query.id
        np.testing.assert_allclose(
            [h.rerank_score for h in theirs.hits], [score for _, score in ours], atol=1e-5
        )


def test_the_cli_end_to_end_on_the_engine_the_node_serves(
    tiny_model: Path, opensearch_node: OpenSearchNode, tmp_path: Path
) -> None:
    """put-templates, index (incremental, then a blue/green rebuild), search, status."""
    alias = unique_alias("cli")
    env = cli_env(opensearch_node)
    common = ["--backend", "opensearch", "--alias", alias, "--model", str(tiny_model)]
    ann = ["--ann", opensearch_node.ann]

    def run(*args: Any) -> dict[str, Any]:
        result = CliRunner().invoke(main, [str(a) for a in args], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    try:
        templates = run("opensearch", "put-templates", "--alias", alias,
                        "--model", tiny_model, *ann, "--replicas", "0", "--json")  # fmt: skip
        assert templates["template"] == "created"
        index = ["index", CORPUS, *common, *ann, "--no-progress", "--json"]
        first = run(*index)
        assert (first["added"], first["indices"]) == (300, [f"{alias}-000001"])
        again = run(*index)
        assert (again["added"], again["unchanged"]) == (0, 300)
        assert set(again["assets"].values()) <= {"kept", "unavailable"}
        rebuilt = run(*index, "--rebuild", "--delete-old")
        assert (rebuilt["added"], rebuilt["indices"]) == (300, [f"{alias}-000002"])
        found = run("search", "why does the moon show one face", *common, "-k", "5", "--json")
        assert found["reranked"] and len(found["hits"]) == 5
        filtered = run("search", "music", *common, "--filter", "topic=sports", "--json")
        assert filtered["hits"]
        assert {h["document"]["metadata"]["topic"] for h in filtered["hits"]} == {"sports"}
        status = run("opensearch", "status", "--alias", alias)
        assert status["count"] == 300 and status["ann"].startswith(opensearch_node.ann[:6])
        assert status["cluster"]["version"] == opensearch_node.version
    finally:
        with OpenSearchStore(opensearch_node.connection, alias=alias) as store:
            remove_assets(store)
