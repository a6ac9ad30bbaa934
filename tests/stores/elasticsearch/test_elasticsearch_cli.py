"""`--backend elasticsearch` on index, search, eval and serve (fake cluster, real flag parsing).

The acceptance point is here on the fake, and on a real node in test_elasticsearch_node.py:
on the same data and model, the reranked results (ids and scores) are the embedded store's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner

from tests.fake_elasticsearch import FakeElasticsearch
from twinbert_search.cli import main
from twinbert_search.errors import ConfigurationError
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus, read_queries
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search import Searcher
from twinbert_search.search.factory import open_searcher
from twinbert_search.search.fusion import RRF
from twinbert_search.service.config import ServiceConfig
from twinbert_search.stores.elasticsearch import ConnectionOptions, ElasticsearchStore
from twinbert_search.stores.factory import check_options, open_store

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sample"
CORPUS = SAMPLE / "corpus.jsonl"
SECRET = "es-Pa55word-never-shown"
ENV = {
    "ELASTICSEARCH_URL": "https://fake:9200",
    "ELASTICSEARCH_USERNAME": "elastic",
    "ELASTICSEARCH_PASSWORD": SECRET,
    "OPENSEARCH_URL": "https://the-other-engine:9200",  # never read by --backend elasticsearch
    "OPENSEARCH_PASSWORD": "other-engine-secret",
}
EVAL_FILES = ["--queries", SAMPLE / "queries.jsonl", "--qrels", SAMPLE / "qrels" / "test.tsv"]
QUERIES = read_queries(SAMPLE / "queries.jsonl")[:20]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeElasticsearch:
    """Every client the CLI builds talks to this fake (the flags are still parsed for real)."""
    fake = FakeElasticsearch()
    original = ConnectionOptions.client

    def client(self: ConnectionOptions) -> Any:
        assert self.url == "https://fake:9200", "the URL came from ELASTICSEARCH_URL"
        kwargs = {"node_class": fake.node_class()}
        return original(dataclasses.replace(self, client_kwargs=kwargs))

    monkeypatch.setattr(ConnectionOptions, "client", client)
    return fake


def invoke(args: list[Any], env: dict[str, str] | None = None) -> click.testing.Result:
    argv = [str(a) for a in args]
    return CliRunner().invoke(main, argv, env={**ENV, **(env or {})}, catch_exceptions=True)


def index_cmd(corpus: Path, model: Path, *extra: Any) -> list[Any]:
    return ["index", corpus, "--backend", "elasticsearch", "--model", model, "--alias", "sample",
            "--no-progress", "--json", *extra]  # fmt: skip


def test_options_name_the_backend_and_keep_the_engines_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ELASTICSEARCH_URL", raising=False)
    monkeypatch.setenv("OPENSEARCH_URL", "http://opensearch:9200")
    with pytest.raises(ConfigurationError, match="needs --url \\(or ELASTICSEARCH_URL\\)"):
        check_options("elasticsearch")
    with pytest.raises(ConfigurationError, match="Elasticsearch takes --url"):
        check_options("elasticsearch", index_dir="ix", url="http://h:9200")
    with pytest.raises(ConfigurationError, match="--es-api-key is for --backend elasticsearch"):
        check_options("opensearch", es_api_key="k")
    with pytest.raises(ConfigurationError, match=r"e\.g\. int8_hnsw or bbq_hnsw"):
        open_store("elasticsearch", writable=True, codec="int8", url="http://h:9200")
    with pytest.raises(ConfigurationError, match="unknown token 'faiss'"):
        open_store("elasticsearch", writable=True, ann="faiss:hnsw16", url="http://h:9200")
    with open_store("elasticsearch", writable=True, ann="bbq_hnsw", url="http://h:9200") as s:
        assert isinstance(s, ElasticsearchStore) and s.alias == "twinbert"
        assert s.index_options.describe() == "elasticsearch:bbq_hnsw16:efc128:innerproduct"
    config = ServiceConfig(backend="elasticsearch", cluster={"url": "http://h:9200"}).validate()
    assert "h:9200" not in repr(config)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "x", "--backend", "elasticsearch"], "needs --url (or ELASTICSEARCH_URL)"),
        (["index", CORPUS, "--index-dir", "ix", "--rebuild"], "--rebuild needs --backend"),
        (
            [
                "index",
                CORPUS,
                "--backend",
                "elasticsearch",
                "--encode-in-cluster",
                "--model-id",
                "m",
            ],
            "--encode-in-cluster, --model-id needs --backend opensearch",
        ),
        (["search", "x", "--backend", "opensearch", "--es-api-key", "k"], "--es-api-key is for"),
    ],
)
def test_misplaced_options_are_one_line_errors(
    args: list[Any], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(args, env={"ELASTICSEARCH_URL": ""})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error:") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_help_lists_the_backend_and_its_api_key_flag() -> None:
    for command in ("index", "search", "eval", "serve"):
        result = invoke([command, "--help"])
        assert result.exit_code == 0, result.output
        assert "elasticsearch" in result.output and "--es-api-key" in result.output
        assert "ELASTICSEARCH_API_KEY" in result.output and SECRET not in result.output


def test_index_search_eval_and_rebuild_through_elasticsearch(
    cluster: FakeElasticsearch, tiny_model: Path, tmp_path: Path
) -> None:
    first = invoke(index_cmd(CORPUS, tiny_model))
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["seen"], report["added"], report["backend"]) == (300, 300, "elasticsearch")
    assert report["assets"] == {"template": "created", "sample-vectors": "created"}
    assert (report["target"], report["indices"]) == ("sample", ["sample-000001"])
    assert cluster.requests[-1].headers["authorization"].startswith("Basic ")
    again = json.loads(invoke(index_cmd(CORPUS, tiny_model)).stdout)
    assert (again["added"], again["unchanged"]) == (0, 300)

    common = ["--backend", "elasticsearch", "--model", tiny_model, "--alias", "sample"]
    found = invoke(["search", "why does the moon show one face", *common, "-k", "5", "--json"])
    assert found.exit_code == 0, found.output
    payload = json.loads(found.stdout)
    assert payload["reranked"] is True and len(payload["hits"]) == 5
    hybrid = invoke(["search", "volcano", *common, "--hybrid", "--filter", "topic=music", "--json"])
    hits = json.loads(hybrid.stdout)["hits"]
    assert hits and all(h["document"]["metadata"]["topic"] == "music" for h in hits)
    assert "retriever" in cluster.bodies("search")[-1] or cluster.bodies("mget")
    evaluated = invoke(
        ["eval", *common, *EVAL_FILES, "--candidates", "20", "--no-progress", "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["queries"] > 0

    cluster.reject_documents(["d010"])
    failed = invoke(index_cmd(CORPUS, tiny_model, "--rebuild", "--delete-old"))
    assert failed.exit_code == 4 and failed.stderr.startswith("failed: d010: 400")
    assert cluster.aliases == {"sample": {"sample-000001"}}, "readers keep the old index"
    cluster.accept_documents()
    rebuilt = invoke(index_cmd(CORPUS, tiny_model, "--rebuild", "--delete-old"))
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.stdout)["added"] == 1, "the unfinished build resumed"
    assert cluster.aliases == {"sample": {"sample-000002"}} and set(cluster.indices) == {
        "sample-000002"
    }
    for result in (first, found, hybrid, evaluated, failed, rebuilt):
        assert SECRET not in result.output and "other-engine-secret" not in result.output


# -- the acceptance point: the same reranked results as the embedded store -----------------------


def build_twins(
    model: Path, index_dir: Path, remote: dict[str, Any], ann: str | None = None
) -> tuple[Searcher, Searcher]:
    """Searchers over the sample indexed with `model` into the embedded store and a cluster."""
    runtime = TwinBertRuntime.load(model)
    with open_store(
        "embedded", index_dir=index_dir, writable=True, dim=runtime.dim, ann="flat"
    ) as s:
        index_documents(read_corpus(CORPUS), s, runtime, progress=False)
    with open_store(
        "elasticsearch", writable=True, ann=ann, manifest=runtime.manifest, **remote
    ) as s:
        index_documents(read_corpus(CORPUS), s, runtime, progress=False)
    embedded = open_searcher("embedded", model=model, index_dir=index_dir)
    elasticsearch = open_searcher("elasticsearch", model=model, **remote)
    assert embedded.store.info.count == elasticsearch.store.info.count == 300
    return embedded, elasticsearch


def assert_same_reranking(embedded: Searcher, elasticsearch: Searcher) -> None:
    """Reranked ids and scores equal the embedded store's, with and without a filter."""
    for filters in (None, {"topic": ["astronomy", "music", "sports"]}):
        for query in QUERIES:
            ours = embedded.search(query.text, k=50, candidates=50, filters=filters)
            theirs = elasticsearch.search(query.text, k=50, candidates=50, filters=filters)
            assert len(ours.hits) == 50 and ours.reranked and theirs.reranked
            assert [h.id for h in theirs.hits] == [h.id for h in ours.hits], query.id
            np.testing.assert_allclose(
                [h.rerank_score for h in theirs.hits], [h.rerank_score for h in ours.hits],
                atol=1e-5,
            )  # fmt: skip
            np.testing.assert_allclose(  # Elasticsearch's kNN scores turned back into cosines
                [h.recall_score for h in theirs.hits], [h.recall_score for h in ours.hits],
                atol=1e-5,
            )  # fmt: skip
            assert [h.document for h in theirs.hits] == [h.document for h in ours.hits]


@pytest.fixture(scope="module")
def twins(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Searcher, Searcher, FakeElasticsearch]]:
    fake = FakeElasticsearch()
    remote = {
        "url": "http://fake:9200",
        "alias": "sample",
        "client_kwargs": {"node_class": fake.node_class()},
    }
    embedded, elasticsearch = build_twins(tiny_model, tmp_path_factory.mktemp("es-twins"), remote)
    yield embedded, elasticsearch, fake
    embedded.store.close()
    elasticsearch.store.close()


def test_index_lays_out_the_index_with_shards_and_replicas(
    cluster: FakeElasticsearch, tiny_model: Path
) -> None:
    done = invoke(index_cmd(CORPUS, tiny_model, "--shards", "3", "--replicas", "2"))
    assert done.exit_code == 0, done.output
    settings = cluster.indices["sample-000001"].settings
    assert (settings["index.number_of_shards"], settings["index.number_of_replicas"]) == ("3", "2")


def test_reranked_results_are_the_embedded_stores(
    twins: tuple[Searcher, Searcher, FakeElasticsearch],
) -> None:
    embedded, elasticsearch, _ = twins
    assert_same_reranking(embedded, elasticsearch)


def test_hybrid_fused_in_the_cluster_equals_the_searchers_own_fusion(
    twins: tuple[Searcher, Searcher, FakeElasticsearch],
) -> None:
    """The rrf retriever and the searcher's client-side RRF give the same candidates and the
    same rerank; the embedded store reranks those candidates identically. Without RRF asked
    for, the client-side fallback fuses by the model's fusion (z-scores for the tiny model)."""
    embedded, elasticsearch, fake = twins
    store = elasticsearch.store
    assert isinstance(store, ElasticsearchStore)
    assert store.hybrid_fusion == "engine"
    fake.rrf = False  # a store connecting now finds no rank-rrf module: the searcher fuses
    by_client = Searcher(elasticsearch.runtime, ElasticsearchStore(store.client, alias="sample"))
    assert by_client.store.hybrid_fusion == "client"
    fake.rrf = True
    for query in QUERIES[:10]:
        in_cluster = elasticsearch.search(query.text, k=30, candidates=30, hybrid=True)
        fallback = by_client.search(query.text, k=30, candidates=30, hybrid=True)
        assert (fallback.hybrid_fusion, fallback.hybrid_method) == ("client", "zscore")
        in_client = by_client.search(
            query.text, k=30, candidates=30, hybrid=True, hybrid_fusion=RRF
        )
        assert (in_cluster.hybrid_fusion, in_client.hybrid_fusion) == ("engine", "client")
        assert in_client.hybrid_method == "rrf"
        assert set(in_cluster.recall_ids) == set(in_client.recall_ids), query.id
        assert [h.id for h in in_cluster.hits] == [h.id for h in in_client.hits]
        ours = embedded.rerank_ids(query.text, in_cluster.recall_ids)
        assert [h.id for h in in_cluster.hits] == [doc_id for doc_id, _ in ours]
        np.testing.assert_allclose(
            [h.rerank_score for h in in_cluster.hits], [s for _, s in ours], atol=1e-5
        )


@pytest.mark.parametrize("rank_rrf", [True, False])
def test_explain_search_and_status_report_the_one_path(
    twins: tuple[Searcher, Searcher, FakeElasticsearch], tiny_model: Path, rank_rrf: bool
) -> None:
    """`--explain`, `search --json`, the sidecar's /search and the store's status name the
    same fusion path, chosen when the store connected."""
    from fastapi.testclient import TestClient

    from twinbert_search.service import create_app, load_searcher

    _, _, fake = twins
    expected = "engine" if rank_rrf else "client"
    remote = {"url": "http://fake:9200", "alias": "sample"}
    kwargs = {"node_class": fake.node_class()}
    fake.rrf = rank_rrf
    try:
        config = ServiceConfig(
            backend="elasticsearch", model=tiny_model, cluster={**remote, "client_kwargs": kwargs}
        ).validate()
        searcher = load_searcher(config)
        try:
            with TestClient(create_app(config, searcher)) as client:
                body = {"query": QUERIES[0].text, "k": 5, "hybrid": True}
                assert client.post("/search", json=body).json()["hybrid_fusion"] == expected
            assert searcher.store.status()["hybrid_fusion"] == expected
        finally:
            searcher.store.close()
        original = ConnectionOptions.client

        def client_of(self: ConnectionOptions) -> Any:
            return original(dataclasses.replace(self, client_kwargs=kwargs))

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ConnectionOptions, "client", client_of)
            common = ["--backend", "elasticsearch", "--model", tiny_model, "--alias", "sample"]
            env = {"ELASTICSEARCH_URL": "http://fake:9200"}
            explained = invoke(["search", "volcano", *common, "--hybrid", "--explain"], env)
            assert explained.exit_code == 0, explained.output
            assert f"hybrid_fusion={expected}" in explained.stdout
            found = invoke(["search", "volcano", *common, "--hybrid", "--json"], env)
            assert json.loads(found.stdout)["hybrid_fusion"] == expected
    finally:
        fake.rrf = True


def test_serve_answers_from_elasticsearch(
    twins: tuple[Searcher, Searcher, FakeElasticsearch], tiny_model: Path
) -> None:
    """The sidecar's config and loader take --backend elasticsearch as the CLI does."""
    from fastapi.testclient import TestClient

    from twinbert_search.service import create_app, load_searcher

    embedded, _, fake = twins
    remote = {
        "url": "http://fake:9200",
        "alias": "sample",
        "client_kwargs": {"node_class": fake.node_class()},
    }
    config = ServiceConfig(backend="elasticsearch", model=tiny_model, cluster=remote).validate()
    searcher = load_searcher(config)
    try:
        with TestClient(create_app(config, searcher)) as client:
            ready = client.get("/readyz").json()
            assert ready["backend"] == "elasticsearch" and ready["documents"] == 300
            found = client.post("/search", json={"query": QUERIES[0].text, "k": 5}).json()
        ours = embedded.search(QUERIES[0].text, k=5)
        assert [h["id"] for h in found["hits"]] == [h.id for h in ours.hits]
    finally:
        searcher.store.close()
