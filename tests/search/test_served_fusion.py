"""The served rerank: a model's tuned fusion, or the recall order where its crossing adds
nothing, the same in the embedded store, the OpenSearch store and the HTTP service."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import build_tiny_model
from tests.fake_opensearch import FakeCluster
from tests.stores.test_backends import EXACT_ANN, fake_client_kwargs
from twinbert_search.evaluation.searcher import evaluate_searcher
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus, read_qrels, read_queries
from twinbert_search.manifest import CrossingConfig, ModelManifest
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.runtime.fusion import RerankFusion, zscore
from twinbert_search.search import Searcher, SearchResult
from twinbert_search.search.factory import open_searcher
from twinbert_search.service import ServiceConfig, create_app
from twinbert_search.stores.factory import open_store

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample"
QUERIES = read_queries(SAMPLE / "queries.jsonl")
QUERY = "why does the moon show one face"
TUNED = {"crossing": 1.0, "recall": 0.5, "bm25": 0.5, "cosine": 0.25}


def _index(model: Path, index_dir: Path) -> Path:
    runtime = TwinBertRuntime.load(model)
    with open_store(
        "embedded", index_dir=index_dir, writable=True, dim=runtime.dim, ann="flat"
    ) as s:
        index_documents(read_corpus(SAMPLE / "corpus.jsonl"), s, runtime, progress=False)
    return index_dir


def _with_fusion(model: Path, folder: Path, weights: dict[str, float]) -> Path:
    """A copy of `model` whose manifest carries tuned served-fusion weights (same vectors)."""
    shutil.copytree(model, folder)
    manifest = ModelManifest.load(folder)
    manifest.extra["rerank_fusion"] = {"weights": weights}
    manifest.save(folder)
    return folder


@pytest.fixture(scope="module")
def cosine_model(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model shaped like the default one: shared towers, mean pooling, cosine."""
    folder = tmp_path_factory.mktemp("cosine")
    return build_tiny_model(tiny_checkpoint, folder, pooling="mean", crossing=CrossingConfig())


@pytest.fixture(scope="module")
def cosine_index(cosine_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _index(cosine_model, tmp_path_factory.mktemp("cosine-ix") / "ix")


@pytest.fixture(scope="module")
def residual_index(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _index(tiny_model, tmp_path_factory.mktemp("residual-ix") / "ix")


@pytest.fixture(scope="module")
def tuned_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _with_fusion(tiny_model, tmp_path_factory.mktemp("tuned") / "model", TUNED)


def test_the_default_models_hybrid_rerank_keeps_the_fused_orders_quality(
    cosine_model: Path, cosine_index: Path
) -> None:
    searcher = Searcher.open(cosine_index, cosine_model)
    with searcher.store:
        for query in QUERIES[:10]:
            result = searcher.search(query.text, k=20, candidates=40, hybrid=True)
            assert [h.recall_rank for h in result.hits] == list(range(1, 21))
        qrels = read_qrels(SAMPLE / "qrels" / "test.tsv")
        options = dict(candidates=40, recall_depth=80, hybrid=True, progress=False)
        served = evaluate_searcher(searcher, QUERIES, qrels, **options)
        assert served.reranked == served.recall
        # Ranked by the cosine crossing alone (what serving did before), the fused list
        # falls back into the kNN order, and its quality moves with it.
        by_cosine = evaluate_searcher(searcher, QUERIES, qrels, lexical_weight=0.0, **options)
        assert by_cosine.reranked != served.reranked


def test_a_crossing_with_zero_weight_gives_back_the_recall_order(
    tiny_model: Path, residual_index: Path, tmp_path: Path
) -> None:
    model = _with_fusion(tiny_model, tmp_path / "recall-only", {"crossing": 0.0, "recall": 1.0})
    searcher = Searcher.open(residual_index, model)
    crossing = Searcher.open(residual_index, tiny_model)
    with searcher.store, crossing.store:
        for hybrid in (False, True):
            result = searcher.search(QUERY, k=30, candidates=30, hybrid=hybrid)
            assert [h.recall_rank for h in result.hits] == list(range(1, 31))
            # the same model without the tuned weights reorders the same candidates
            plain = crossing.search(QUERY, k=30, candidates=30, hybrid=hybrid)
            assert [h.recall_rank for h in plain.hits] != list(range(1, 31))


def _expected(searcher: Searcher, result: SearchResult, weights: dict[str, float]) -> np.ndarray:
    """The fusion of the hits' signals, each taken from the searcher's own model and store."""
    ids = [h.id for h in result.hits]
    found = searcher.store.fetch(ids)
    q = searcher.runtime.encode_query(QUERY)
    cosine = found.vectors @ q / (np.linalg.norm(found.vectors, axis=1) * np.linalg.norm(q))
    return RerankFusion(**weights).scores(
        crossing=searcher.runtime.crossing.logits(q, found.vectors, found.precomputed),
        recall=np.asarray([h.recall_score for h in result.hits]),
        bm25=searcher.store.bm25_scores(QUERY, ids),
        cosine=cosine,
    )


def test_tuned_weights_fuse_the_crossing_with_the_recall_signals(
    tuned_model: Path, residual_index: Path, opensearch: Searcher
) -> None:
    embedded = Searcher.open(residual_index, tuned_model)
    with embedded.store:
        assert embedded.lexical_weight() is None  # the served fusion, not a BM25 weight
        # Each store fuses its own signals (its BM25: bm25s here, the cluster's there).
        for searcher in (embedded, opensearch):
            result = searcher.search(QUERY, k=40, candidates=40, hybrid=True)
            got = np.asarray([h.rerank_score for h in result.hits])
            np.testing.assert_allclose(got, _expected(searcher, result, TUNED), atol=1e-4)
            assert got.tolist() == sorted(got.tolist(), reverse=True)
        # An explicit lexical weight still ranks by the crossing plus BM25 alone.
        ids = [h.id for h in embedded.search(QUERY, k=40, candidates=40, hybrid=True).hits]
        legacy = embedded.search(QUERY, k=40, candidates=40, hybrid=True, lexical_weight=1.0)
        assert [h.id for h in legacy.hits] != ids
    assert zscore(np.array([1.0, 3.0])).tolist() == [-1.0, 1.0]


@pytest.fixture(scope="module")
def opensearch(tuned_model: Path) -> Iterator[Searcher]:
    remote = {
        "url": "http://fake:9200",
        "alias": "sample",
        "client_kwargs": fake_client_kwargs(FakeCluster()),
    }
    runtime = TwinBertRuntime.load(tuned_model)
    with open_store(
        "opensearch", writable=True, ann=EXACT_ANN, manifest=runtime.manifest, **remote
    ) as s:
        index_documents(read_corpus(SAMPLE / "corpus.jsonl"), s, runtime, progress=False)
    searcher = open_searcher("opensearch", model=tuned_model, **remote)
    yield searcher
    searcher.store.close()


def test_the_embedded_store_opensearch_and_the_service_serve_alike(
    tuned_model: Path, residual_index: Path, opensearch: Searcher, tmp_path: Path
) -> None:
    """Without BM25 in the fusion (each store has its own BM25), the signals are the same
    everywhere and so are the served hits; the service serves what the library does."""
    weights = {"crossing": 1.0, "recall": 0.5, "cosine": 0.25}
    dense_model = _with_fusion(tuned_model, tmp_path / "no-bm25", weights)
    embedded = Searcher.open(residual_index, dense_model)
    remote = Searcher(TwinBertRuntime.load(dense_model), opensearch.store)
    config = ServiceConfig(index_dir=residual_index, model=tuned_model, workers=2)
    served_by = Searcher.open(residual_index, tuned_model)
    with embedded.store, served_by.store, TestClient(create_app(config, served_by)) as client:
        for query in QUERIES[:8]:
            ours = embedded.search(query.text, k=10, candidates=40)
            theirs = remote.search(query.text, k=10, candidates=40)
            assert [h.id for h in theirs.hits] == [h.id for h in ours.hits], query.id
            np.testing.assert_allclose(
                [h.rerank_score for h in theirs.hits],
                [h.rerank_score for h in ours.hits],
                atol=1e-4,
            )
            body = {"query": query.text, "k": 10, "candidates": 40, "hybrid": True}
            served = client.post("/search", json=body).json()
            library = served_by.search(query.text, k=10, candidates=40, hybrid=True)
            assert [h["id"] for h in served["hits"]] == [h.id for h in library.hits]
            np.testing.assert_allclose(
                [h["rerank_score"] for h in served["hits"]],
                [h.rerank_score for h in library.hits],
                atol=1e-5,
            )


def test_the_service_reports_which_side_fused_hybrid_recall(
    tuned_model: Path, residual_index: Path, opensearch: Searcher
) -> None:
    """/search says who fused a hybrid recall: the engine (the fake has neural-search 2.19+),
    the sidecar over the embedded store; null without hybrid."""
    config = ServiceConfig(index_dir=residual_index, model=tuned_model, workers=2)
    body = {"query": QUERY, "k": 10, "candidates": 40, "hybrid": True}
    with TestClient(create_app(config, opensearch)) as client:
        answer = client.post("/search", json=body).json()
        assert (answer["hybrid_fusion"], answer["hybrid_method"]) == ("engine", "rrf")
        plain = client.post("/search", json={**body, "hybrid": False}).json()
        assert plain["hybrid_fusion"] is None and plain["hybrid_method"] is None
        # A fusion the request names is fused by the sidecar, whatever the engine can do.
        named = client.post("/search", json={**body, "hybrid_method": "zscore"}).json()
        assert (named["hybrid_fusion"], named["hybrid_method"]) == ("client", "zscore")
    embedded = Searcher.open(residual_index, tuned_model)
    with embedded.store, TestClient(create_app(config, embedded)) as client:
        answer = client.post("/search", json=body).json()
        assert (answer["hybrid_fusion"], answer["hybrid_method"]) == (
            "client",
            embedded.hybrid.method,
        )
        weighted = client.post("/search", json={**body, "hybrid_bm25_weight": 2.0}).json()
        assert weighted["hybrid_method"] == embedded.hybrid.method


def test_the_recipes_served_lists_are_the_searchers(cosine_model: Path, cosine_index: Path) -> None:
    """The recipe measures the served setting in numpy (`recipe.signals`): the same hybrid
    list and recall scores as `Searcher.search(hybrid=True)`, BM25 non-matches left out, by
    the model's hybrid fusion (the default, z-scores, for this cosine model)."""
    from twinbert_search.training.data import build_bm25
    from twinbert_search.training.recipe.signals import Collection, served_lists

    docs = {d.id: d for d in read_corpus(SAMPLE / "corpus.jsonl")}
    ids = sorted(docs)
    searcher = Searcher.open(cosine_index, cosine_model)
    with searcher.store:
        vectors = np.asarray(searcher.store.fetch(ids).vectors, dtype=np.float32)
        coll = Collection(ids, vectors, build_bm25({d: docs[d] for d in ids}), lambda r: "")
        queries = [(q.id, q.text) for q in QUERIES[:10]]
        lists = served_lists(coll, searcher.runtime, queries, depth=20, recall_depth=60)
        for qid, text in queries:
            result = searcher.search(text, k=20, candidates=20, recall_depth=60, hybrid=True)
            rows, served = lists[qid]
            assert [ids[r] for r in rows] == list(result.recall_ids), qid
            # The default model's hybrid fusion is z-scores: float32 scores standardised agree
            # to about 1e-5, where RRF's reciprocal ranks agreed exactly.
            np.testing.assert_allclose(
                served.signals["recall"], [h.recall_score for h in result.hits], atol=1e-4
            )


def test_a_deeper_recall_ranks_the_candidates_that_search_serves(
    cosine_model: Path, cosine_index: Path
) -> None:
    """A z-score fusion depends on how deep its lists are. `eval --recall-depth` recalls deeper
    than `search` to measure Recall@1000, but the candidates it ranks must be the ones `search`
    serves: the head is fused from each list's top `candidates`, the deeper rest follows."""
    from twinbert_search.search.fusion import HybridFusion

    searcher = Searcher.open(cosine_index, cosine_model)
    fusion = HybridFusion("zscore", bm25=2.0)
    differs = 0
    with searcher.store:
        for q in QUERIES[:10]:
            served = searcher.search(q.text, k=5, candidates=5, hybrid=True, hybrid_fusion=fusion)
            deep = searcher.search(
                q.text, k=5, candidates=5, recall_depth=60, hybrid=True, hybrid_fusion=fusion
            )
            assert [h.id for h in deep.hits] == [h.id for h in served.hits], q.id
            assert list(deep.recall_ids[:5]) == list(served.recall_ids)
            assert len(set(deep.recall_ids)) == len(deep.recall_ids) > 5
            # Fusing the 60-deep lists whole would have ranked another head for some queries.
            whole = searcher.recall(searcher.encode(q.text), q.text, 60, hybrid=True, fusion=fusion)
            differs += [whole.ids[i] for i in range(5)] != list(served.recall_ids)
    assert differs > 0
