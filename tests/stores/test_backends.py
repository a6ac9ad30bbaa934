"""One way from options to a store: `--backend opensearch` on index/search/eval (fake cluster).

The acceptance point of the OpenSearch backend is here: on the same data, its reranked results
are the embedded store's (same ids in the same order, same rerank scores).
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

from tests.conftest import build_tiny_model
from tests.fake_opensearch import FakeCluster, FakeConnection
from twinbert_search.cli import main
from twinbert_search.errors import ConfigurationError
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus, read_queries
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search import Searcher
from twinbert_search.search.factory import open_searcher
from twinbert_search.stores.factory import check_options, open_store
from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore, ml

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample"
CORPUS = SAMPLE / "corpus.jsonl"
SECRET = "backends-Pa55word-never-shown"
ENV = {
    "OPENSEARCH_URL": "https://fake:9200",
    "OPENSEARCH_USERNAME": "admin",
    "OPENSEARCH_PASSWORD": SECRET,
}
EXACT_ANN = "faiss:hnsw16:efc128:fp32:innerproduct"  # exact float32 scores, as `flat` embedded
EVAL_FILES = ["--queries", SAMPLE / "queries.jsonl", "--qrels", SAMPLE / "qrels" / "test.tsv"]


def fake_client_kwargs(cluster: FakeCluster) -> dict[str, Any]:
    return {"connection_class": FakeConnection, "cluster": cluster}


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """Every client the CLI builds talks to this fake (the flags are still parsed for real)."""
    fake = FakeCluster()
    original = ConnectionOptions.client

    def client(self: ConnectionOptions) -> Any:
        return original(dataclasses.replace(self, client_kwargs=fake_client_kwargs(fake)))

    monkeypatch.setattr(ConnectionOptions, "client", client)
    return fake


def invoke(args: list[Any], env: dict[str, str] | None = None) -> click.testing.Result:
    argv = [str(a) for a in args]
    return CliRunner().invoke(main, argv, env={**ENV, **(env or {})}, catch_exceptions=True)


def index_cmd(corpus: Path, model: Path, *extra: Any) -> list[Any]:
    return ["index", corpus, "--backend", "opensearch", "--model", model, "--alias", "sample",
            "--ann", EXACT_ANN, "--no-progress", "--json", *extra]  # fmt: skip


def write_corpus(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


def sample_lines() -> list[str]:
    return CORPUS.read_text().splitlines(keepends=True)


def cluster_ids(cluster: FakeCluster, index: str) -> list[str]:
    return sorted(cluster.indices[index].docs)


# -- options ------------------------------------------------------------------------------------


def test_each_backend_names_what_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    with pytest.raises(ConfigurationError, match="--backend embedded needs --index-dir"):
        check_options("embedded")
    with pytest.raises(ConfigurationError, match="needs --url"):
        open_store("opensearch", writable=False)
    with pytest.raises(ConfigurationError, match="--index-dir is for --backend embedded"):
        open_store("opensearch", index_dir="ix", writable=False, url="http://fake:9200")
    with pytest.raises(ConfigurationError, match="--backend must be one of"):
        open_searcher("faiss")
    with pytest.raises(ConfigurationError, match="--codec is for the embedded store"):
        open_store("opensearch", writable=True, codec="int8", url="http://fake:9200")
    with pytest.raises(ConfigurationError, match="unknown token 'hnsw32,efc=200'"):
        open_store("opensearch", writable=True, ann="hnsw32,efc=200", url="http://fake:9200")
    monkeypatch.setenv("OPENSEARCH_URL", "http://fake:9200")
    check_options("opensearch")


def test_a_misspelt_cluster_option_is_an_error_naming_it(tmp_path: Path) -> None:
    """`**cluster_kwargs` hold only known keys: a typo must not fall back to a default."""
    with pytest.raises(ConfigurationError, match="unknown store option 'ef_serach'") as err:
        open_store("opensearch", writable=False, url="http://fake:9200", ef_serach=64)
    assert "ef_search" in str(err.value), "the message lists the known keys"
    with pytest.raises(ConfigurationError, match="unknown store options 'aliass', 'usr'"):
        check_options("elasticsearch", url="http://fake:9200", usr="u", aliass="a")
    with pytest.raises(ConfigurationError, match="unknown store option 'urll'"):
        open_searcher("opensearch", urll="http://fake:9200")
    with pytest.raises(ConfigurationError, match="unknown store option 'url_'"):
        open_store("embedded", index_dir=tmp_path / "ix", writable=True, dim=4, url_="x")
    check_options("opensearch", url="http://fake:9200", ef_search=64)
    check_options("elasticsearch", url="http://fake:9200", num_candidates=200, es_api_key="k")


def test_open_store_builds_the_configured_store(tmp_path: Path) -> None:
    store = open_store(
        "opensearch",
        writable=False,
        ann=EXACT_ANN,
        url="http://u:pw@fake:9200",
        alias="news",
        client_kwargs=fake_client_kwargs(FakeCluster()),
    )
    assert isinstance(store, OpenSearchStore)
    assert store.alias == "news" and store.index_options.describe() == EXACT_ANN
    assert store.options is not None and store.options.username == "u"
    store.close()
    # writable: `auto` reads the cluster's k-NN engines (an OpenSearch build runs faiss)
    kwargs = fake_client_kwargs(FakeCluster())
    with open_store(
        "opensearch", writable=True, ann="auto", url="http://fake:9200", client_kwargs=kwargs
    ) as default:
        assert default.alias == "twinbert"
        assert default.index_options.describe() == "faiss:hnsw16:efc128:fp16:innerproduct"
    with open_store("embedded", index_dir=tmp_path / "ix", writable=True, dim=4) as embedded:
        assert embedded.info.dim == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "x"], "--backend embedded needs --index-dir"),
        (["search", "x", "--backend", "opensearch"], "needs --url (or OPENSEARCH_URL)"),
        (["eval", "--backend", "opensearch", *EVAL_FILES], "needs --url"),
        (
            ["index", CORPUS, "--index-dir", "ix", "--rebuild"],
            "--rebuild needs --backend opensearch",
        ),
        (
            ["index", CORPUS, "--backend", "opensearch", "--model-id", "m"],
            "--encode-in-cluster and --model-id go together",
        ),
        (["index", CORPUS, "--backend", "opensearch", "--delete-old"], "goes with --rebuild"),
    ],
)
def test_missing_or_misplaced_options_are_one_line_errors(
    args: list[Any], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(args, env={"OPENSEARCH_URL": ""} if "--url" in message else None)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error:") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "ix").exists(), "nothing was created"


def test_help_lists_the_backend_flags_and_never_the_password() -> None:
    for command in ("index", "search", "eval"):
        result = invoke([command, "--help"])
        assert result.exit_code == 0, result.output
        assert "--backend [embedded|opensearch|elasticsearch]" in result.output
        assert "--alias" in result.output
        assert SECRET not in result.output
    assert "opensearch" in invoke(["--help"]).output


# -- (a) index and search through the cluster ------------------------------------------------


def test_index_then_search_through_opensearch(
    cluster: FakeCluster, tiny_model: Path, tmp_path: Path
) -> None:
    first = invoke(index_cmd(CORPUS, tiny_model))
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["seen"], report["added"], report["backend"]) == (300, 300, "opensearch")
    assert report["assets"] == {
        "template": "created",
        "sample-vectors": "created",
        "sample-hybrid": "created",
    }
    assert (report["target"], report["indices"]) == ("sample", ["sample-000001"])
    assert cluster.aliases == {"sample": {"sample-000001"}}
    assert len(cluster_ids(cluster, "sample-000001")) == 300
    assert cluster.connections[-1].http_auth == ("admin", SECRET)

    again = invoke(index_cmd(CORPUS, tiny_model))
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert (report["added"], report["unchanged"]) == (0, 300)
    assert set(report["assets"].values()) == {"kept"}

    common = ["--backend", "opensearch", "--model", tiny_model, "--alias", "sample"]
    found = invoke(["search", "why does the moon show one face", *common, "-k", "5", "--json"])
    assert found.exit_code == 0, found.output
    payload = json.loads(found.stdout)
    assert payload["reranked"] is True and payload["candidates"] == 100
    assert len(payload["hits"]) == 5 and payload["hits"][0]["document"]["title"]
    scores = [h["rerank_score"] for h in payload["hits"]]
    assert scores == sorted(scores, reverse=True)
    filtered = invoke(["search", "music", *common, "--filter", "topic=sports", "--json"])
    hits = json.loads(filtered.stdout)["hits"]
    assert hits and all(h["document"]["metadata"]["topic"] == "sports" for h in hits)
    text = invoke(["search", "volcano", *common, "--explain"])
    assert text.exit_code == 0 and "recall #" in text.stdout
    assert "hybrid_fusion" not in text.stdout
    fused = invoke(["search", "volcano", *common, "--hybrid", "--explain"])
    assert fused.exit_code == 0 and "hybrid_fusion=engine" in fused.stdout, fused.output
    # the same fusion whichever side runs it: the engine's RRF, then the searcher's RRF asked
    # for (the fallback otherwise fuses by the model's method: z-scores for the tiny model)
    hybrid = ["search", "volcano", *common, "--hybrid", "--no-rerank", "-k", "50", "--json"]
    by_engine = json.loads(invoke(hybrid).stdout)
    cluster.neural_search = False  # a new store reads the plugins again
    fallback = json.loads(invoke(hybrid).stdout)
    by_client = json.loads(invoke([*hybrid, "--hybrid-fusion", "rrf"]).stdout)
    cluster.neural_search = True
    assert (fallback["hybrid_fusion"], fallback["hybrid_method"]) == ("client", "zscore")
    assert (by_engine["hybrid_method"], by_client["hybrid_method"]) == ("rrf", "rrf")
    assert (by_engine["hybrid_fusion"], by_client["hybrid_fusion"]) == ("engine", "client")
    assert [h["id"] for h in by_engine["hits"]] == [h["id"] for h in by_client["hits"]]
    np.testing.assert_allclose(
        [h["recall_score"] for h in by_engine["hits"]],
        [h["recall_score"] for h in by_client["hits"]],
        rtol=1e-6,
    )
    for result in (first, again, found, filtered, text):
        assert SECRET not in result.output


def test_index_lays_out_the_index_with_shards_and_replicas(
    cluster: FakeCluster, tiny_model: Path, tmp_path: Path
) -> None:
    """`index --shards 3 --replicas 1`: the layout of a multi-node cluster (issue 27), set at
    creation and kept while building; the embedded store refuses the flags in one line."""
    done = invoke(index_cmd(CORPUS, tiny_model, "--shards", "3", "--replicas", "2"))
    assert done.exit_code == 0, done.output
    settings = cluster.indices["sample-000001"].settings
    assert (settings["index.number_of_shards"], settings["index.number_of_replicas"]) == ("3", "2")
    embedded = invoke(["index", CORPUS, "--index-dir", tmp_path / "e", "--shards", "3"])
    assert embedded.exit_code != 0
    assert "--shards and --replicas lay out a cluster's indices" in embedded.output


def test_eval_through_opensearch_matches_the_embedded_store(
    cluster: FakeCluster, tiny_model: Path, tmp_path: Path
) -> None:
    assert invoke(index_cmd(CORPUS, tiny_model)).exit_code == 0
    embedded = invoke(["index", CORPUS, "--index-dir", tmp_path / "ix", "--model", tiny_model,
                       "--ann", "flat", "--no-progress"])  # fmt: skip
    assert embedded.exit_code == 0, embedded.output
    common = ["eval", "--model", tiny_model, *EVAL_FILES, "--candidates", "20",
              "--recall-depth", "100", "--no-progress", "--json"]  # fmt: skip
    remote = invoke([*common, "--backend", "opensearch", "--alias", "sample"])
    local = invoke([*common, "--index-dir", tmp_path / "ix"])
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output + local.output
    remote_metrics, local_metrics = json.loads(remote.stdout), json.loads(local.stdout)
    for stage in ("recall", "reranked"):
        assert remote_metrics[stage] == pytest.approx(local_metrics[stage], abs=1e-4)


# -- (b) the acceptance point: the same reranked results as the embedded store ---------------


@pytest.fixture(scope="module")
def twins(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Searcher, Searcher]]:
    """Searchers over the sample, indexed with the tiny model into both backends."""
    runtime = TwinBertRuntime.load(tiny_model)
    index_dir = tmp_path_factory.mktemp("equivalence") / "ix"
    remote = {
        "url": "http://fake:9200",
        "alias": "sample",
        "client_kwargs": fake_client_kwargs(FakeCluster()),
    }
    with open_store(
        "embedded", index_dir=index_dir, writable=True, dim=runtime.dim, ann="flat"
    ) as s:
        index_documents(read_corpus(CORPUS), s, runtime, progress=False)
    with open_store(
        "opensearch", writable=True, ann=EXACT_ANN, manifest=runtime.manifest, **remote
    ) as s:
        index_documents(read_corpus(CORPUS), s, runtime, progress=False)
    embedded = open_searcher("embedded", model=tiny_model, index_dir=index_dir)
    opensearch = open_searcher("opensearch", model=tiny_model, **remote)
    assert embedded.store.info.count == opensearch.store.info.count == 300
    yield embedded, opensearch
    embedded.store.close()
    opensearch.store.close()


QUERIES = read_queries(SAMPLE / "queries.jsonl")[:20]
THREE_TOPICS = {"topic": ["astronomy", "music", "sports"]}  # 75 documents: more than 50


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
        # OpenSearch's kNN scores are converted back to cosines
        np.testing.assert_allclose(
            [h.recall_score for h in theirs.hits], [h.recall_score for h in ours.hits], atol=1e-4
        )
        assert set(theirs.recall_ids) == set(ours.recall_ids)  # near-ties may swap recall ranks
        assert [h.document for h in theirs.hits] == [h.document for h in ours.hits]
        if filters:
            assert {h.document["metadata"]["topic"] for h in ours.hits} <= set(filters["topic"])


def test_hybrid_reranks_the_same_candidates_identically(
    twins: tuple[Searcher, Searcher],
) -> None:
    """The same fused candidates get the same rerank, BM25-only documents fetched by id included.

    The candidates themselves may differ: each backend fuses kNN with its own BM25 (bm25s with
    k1=0.9, b=0.4 and English stopwords here; the cluster's BM25 there).
    """
    embedded, opensearch = twins
    fetched = 0
    for query in QUERIES:
        theirs = opensearch.search(query.text, k=50, candidates=50, hybrid=True)
        assert len(theirs.recall_ids) == 50
        dense = opensearch.search(query.text, k=50, candidates=50, rerank=False).recall_ids
        fetched += len(set(theirs.recall_ids) - set(dense))
        ours = embedded.rerank_ids(query.text, theirs.recall_ids)
        assert [h.id for h in theirs.hits] == [doc_id for doc_id, _ in ours], query.id
        np.testing.assert_allclose(
            [h.rerank_score for h in theirs.hits], [score for _, score in ours], atol=1e-5
        )
    assert fetched > 0, "some candidates came from BM25 alone"


def test_hybrid_within_a_filter_is_identical_end_to_end(
    twins: tuple[Searcher, Searcher],
) -> None:
    """With a filter narrower than the candidates, both fusions hold the same documents."""
    embedded, opensearch = twins
    for topic in ("astronomy", "music", "cooking"):
        for query in QUERIES:
            filters = {"topic": topic}
            ours = embedded.search(query.text, k=50, candidates=50, filters=filters, hybrid=True)
            theirs = opensearch.search(
                query.text, k=50, candidates=50, filters=filters, hybrid=True
            )
            assert len(ours.hits) == 25
            assert [h.id for h in theirs.hits] == [h.id for h in ours.hits], query.id
            np.testing.assert_allclose(
                [h.rerank_score for h in theirs.hits],
                [h.rerank_score for h in ours.hits],
                atol=1e-5,
            )


# -- (c) a bulk failure, then the rerun ------------------------------------------------------


def test_a_bulk_failure_is_reported_per_document_and_the_rerun_completes(
    cluster: FakeCluster, tiny_model: Path, tmp_path: Path
) -> None:
    cluster.reject_documents(["d150", "d160"])  # both in the second chunk
    first = invoke(index_cmd(CORPUS, tiny_model, "--chunk-size", "100"))
    assert first.exit_code == 4, first.output
    assert first.stdout == "", "no report for a run that failed"
    lines = first.stderr.splitlines()
    assert lines == [
        "failed: d150: 400 mapper_parsing_exception: failed to parse document [d150] "
        "(index sample-000001, 1 attempt)",
        "failed: d160: 400 mapper_parsing_exception: failed to parse document [d160] "
        "(index sample-000001, 1 attempt)",
        "error: 2 of 100 documents failed to index "
        "(first: d150: mapper_parsing_exception: failed to parse document [d150])",
    ]
    assert "Traceback" not in first.output and SECRET not in first.output
    assert "sample" not in cluster.aliases, "an unfinished build is not made live"
    stored = cluster_ids(cluster, "sample-000001")
    assert len(stored) == 198 and "d150" not in stored

    cluster.accept_documents()
    second = invoke(index_cmd(CORPUS, tiny_model, "--chunk-size", "100"))
    assert second.exit_code == 0, second.output
    report = json.loads(second.stdout)
    assert (report["added"], report["unchanged"]) == (102, 198), "only what was missing is sent"
    assert set(cluster.indices) == {"sample-000001"}, "the unfinished index was taken up"
    assert cluster.aliases == {"sample": {"sample-000001"}}
    ids = [json.loads(line)["_id"] for line in sample_lines()]
    assert cluster_ids(cluster, "sample-000001") == sorted(ids)
    with open_store("opensearch", writable=False, url="http://fake:9200", alias="sample") as store:
        every = store.all_ids()
        assert len(every) == len(set(every)) == store.info.count == 300


# -- (d) blue/green ----------------------------------------------------------------------------


def test_rebuild_moves_the_alias_and_resumes_after_a_failure(
    cluster: FakeCluster, tiny_model: Path, tmp_path: Path
) -> None:
    assert invoke(index_cmd(CORPUS, tiny_model)).exit_code == 0
    smaller = write_corpus(tmp_path / "smaller.jsonl", sample_lines()[:60])
    cluster.reject_documents(["d045"])
    failed = invoke(
        index_cmd(smaller, tiny_model, "--rebuild", "--delete-old", "--chunk-size", "20")
    )
    assert failed.exit_code == 4 and failed.stderr.startswith("failed: d045: 400")
    assert cluster.aliases == {"sample": {"sample-000001"}}, "readers keep the old index"
    assert set(cluster.indices) == {"sample-000001", "sample-000002"}

    cluster.accept_documents()
    before = len(cluster.requests)
    rebuilt = invoke(
        index_cmd(smaller, tiny_model, "--rebuild", "--delete-old", "--chunk-size", "20")
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    report = json.loads(rebuilt.stdout)
    assert (report["added"], report["unchanged"]) == (1, 59), "the unfinished build resumed"
    assert report["indices"] == ["sample-000002"]
    switches = [r.body for r in cluster.requests[before:] if r.group == "indices.update_aliases"]
    assert switches == [
        {
            "actions": [
                {"add": {"index": "sample-000002", "alias": "sample"}},
                {"remove": {"index": "sample-000001", "alias": "sample"}},
            ]
        }
    ]
    assert set(cluster.indices) == {"sample-000002"}, "--delete-old"
    assert cluster_ids(cluster, "sample-000002") == [f"d{i:03d}" for i in range(1, 61)]

    kept = invoke(index_cmd(CORPUS, tiny_model, "--rebuild"))
    assert kept.exit_code == 0, kept.output
    assert json.loads(kept.stdout)["indices"] == ["sample-000003"]
    assert cluster.aliases == {"sample": {"sample-000003"}}
    assert set(cluster.indices) == {"sample-000002", "sample-000003"}, "kept without --delete-old"
    found = invoke(["search", "moon", "--backend", "opensearch", "--model", tiny_model,
                    "--alias", "sample", "-k", "300", "--candidates", "300", "--json"])  # fmt: skip
    assert len(json.loads(found.stdout)["hits"]) == 300


def test_rebuild_changes_the_model(
    cluster: FakeCluster, tiny_model: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    assert invoke(index_cmd(CORPUS, tiny_model)).exit_code == 0
    other = build_tiny_model(tiny_checkpoint, tmp_path / "other", pooling="cls")
    assets = json.dumps([cluster.templates, cluster.pipelines], sort_keys=True)
    refused = invoke(index_cmd(CORPUS, other))
    assert refused.exit_code == 4 and "built with model" in refused.stderr
    assert json.dumps([cluster.templates, cluster.pipelines], sort_keys=True) == assets
    rebuilt = invoke(index_cmd(CORPUS, other, "--rebuild", "--delete-old"))
    assert rebuilt.exit_code == 0, rebuilt.output
    assert cluster.aliases == {"sample": {"sample-000002"}}
    with open_store("opensearch", writable=False, url="http://fake:9200", alias="sample") as store:
        assert store.info.model_fingerprint == TwinBertRuntime.load(other).fingerprint


# -- encoding in the cluster -------------------------------------------------------------------


def test_encode_in_cluster_indexes_with_the_registered_model(
    cluster: FakeCluster, tiny_model: Path, tmp_path: Path
) -> None:
    package = ml.build_model_package(tiny_model, tmp_path / "tiny.zip")
    model_id = ml.register_and_deploy(cluster.client(), package, sleep=lambda s: None).model_id
    corpus = write_corpus(tmp_path / "some.jsonl", sample_lines()[:12])
    result = invoke(
        ["index", corpus, "--backend", "opensearch", "--model", tiny_model, "--alias", "sample",
         "--encode-in-cluster", "--model-id", model_id, "--no-progress", "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 12 and report["assets"]["sample-embed"] == "created"
    assert all(
        r.params.get("pipeline") == "sample-embed" for r in cluster.requests if r.group == "bulk"
    )
    runtime = TwinBertRuntime.load(tiny_model)
    docs = list(read_corpus(corpus))
    with open_store("opensearch", writable=False, url="http://fake:9200", alias="sample") as store:
        fetched = store.fetch([d.id for d in docs])
        assert store.info.model_fingerprint == runtime.fingerprint
    expected = runtime.encode_documents([d.encoding_text for d in docs], 8)
    np.testing.assert_allclose(fetched.vectors, expected, atol=1e-5)
    found = invoke(["search", "moon", "--backend", "opensearch", "--model", tiny_model,
                    "--alias", "sample", "-k", "3", "--json"])  # fmt: skip
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["hits"]) == 3
