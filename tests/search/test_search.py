"""The two-stage Searcher and the search / eval commands over a tiny model and the sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from twinbert_search.cli import main
from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.searcher import evaluate_searcher
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus, read_qrels, read_queries
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search import Searcher, reciprocal_rank_fusion
from twinbert_search.stores.embedded import EmbeddedStore

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample"


@pytest.fixture(scope="module")
def sample_index(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index_dir = tmp_path_factory.mktemp("sample-index")
    runtime = TwinBertRuntime.load(tiny_model)
    with EmbeddedStore.create_or_open(index_dir, dim=runtime.dim) as store:
        index_documents(read_corpus(SAMPLE / "corpus.jsonl"), store, runtime, progress=False)
    return index_dir


@pytest.fixture()
def searcher(sample_index: Path, tiny_model: Path) -> Searcher:
    return Searcher.open(sample_index, tiny_model)


def test_two_stage_reranks_all_candidates(searcher: Searcher) -> None:
    result = searcher.search("why does the moon show one face", k=5, candidates=40)
    assert result.reranked and result.candidates == 40 and len(result.hits) == 5
    scores = [h.rerank_score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)
    # the reranked top 5 are the best 5 of all 40 candidates by the crossing layer
    q = searcher.runtime.encode_query("why does the moon show one face")
    found = searcher.store.fetch(result.recall_ids)
    best = np.sort(searcher.runtime.score(q, found.vectors, found.precomputed))[::-1][:5]
    np.testing.assert_allclose(scores, best, rtol=1e-5)
    assert all(1 <= h.recall_rank <= 40 for h in result.hits)
    assert set(result.timings_ms) == {"encode", "recall", "rerank", "total"}


def test_hits_without_documents_rank_the_same(searcher: Searcher) -> None:
    full = searcher.search("why does the moon show one face", k=5, candidates=40)
    bare = searcher.search(
        "why does the moon show one face", k=5, candidates=40, fetch_documents=False
    )
    assert [h.id for h in bare.hits] == [h.id for h in full.hits]
    assert all(h.document is None for h in bare.hits)
    assert all(h.document and h.document["text"] for h in full.hits)
    assert "document" not in bare.hits[0].to_dict()


def test_recall_only_keeps_recall_order(searcher: Searcher) -> None:
    result = searcher.search("volcano", k=10, candidates=10, rerank=False)
    assert not result.reranked
    assert [h.recall_rank for h in result.hits] == list(range(1, 11))
    assert all(h.rerank_score is None for h in result.hits)


def test_filters_apply_to_recall(searcher: Searcher) -> None:
    result = searcher.search("music", k=10, candidates=30, filters={"topic": ["sports"]})
    assert result.hits and all(h.document["metadata"]["topic"] == "sports" for h in result.hits)


def test_hybrid_recall_includes_bm25_hits(searcher: Searcher) -> None:
    sparse = [doc_id for doc_id, _ in searcher.store.recall_bm25("theremin", 5)]
    assert sparse
    result = searcher.search("theremin", k=50, candidates=50, hybrid=True)
    assert set(sparse) <= {h.id for h in result.hits}


def test_rrf_is_deterministic() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "a", "d"]])
    assert [d for d, _ in fused] == ["a", "b", "c", "d"]  # a and b tie: broken by id


def test_bad_k_is_rejected(searcher: Searcher) -> None:
    with pytest.raises(ConfigurationError):
        searcher.search("x", k=0)


def test_evaluate_searcher_reports_both_runs(searcher: Searcher) -> None:
    report = evaluate_searcher(
        searcher,
        read_queries(SAMPLE / "queries.jsonl"),
        read_qrels(SAMPLE / "qrels" / "test.tsv"),
        candidates=20,
        recall_depth=100,
        progress=False,
    )
    assert report.queries == 60
    assert set(report.recall) == {"ndcg@10", "mrr@10", "recall@100", "recall@1000"}
    # the reranked run reorders only the top 20, so deep recall is identical
    assert report.recall["recall@100"] == pytest.approx(report.reranked["recall@100"])
    assert {"p50_ms", "p99_ms"} <= set(report.latency["total"])


def test_search_and_eval_commands(sample_index: Path, tiny_model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--index-dir", str(sample_index), "--model", str(tiny_model)]
    out = runner.invoke(main, ["search", "planet orbit", *common, "-k", "3", "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert len(payload["hits"]) == 3 and payload["reranked"] is True
    assert {"recall_score", "rerank_score", "recall_rank"} <= set(payload["hits"][0])
    explained = runner.invoke(main, ["search", "planet orbit", *common, "--explain"])
    assert explained.exit_code == 0 and "recall #" in explained.stdout
    run_file = tmp_path / "runs" / "sample.trec"
    ev = runner.invoke(
        main,
        ["eval", *common, "--queries", str(SAMPLE / "queries.jsonl"),
         "--qrels", str(SAMPLE / "qrels" / "test.tsv"), "--json", "--no-progress",
         "--run-file", str(run_file)],
    )  # fmt: skip
    assert ev.exit_code == 0, ev.output
    metrics = json.loads(ev.stdout)
    assert set(metrics) >= {"recall", "reranked", "latency_ms"}
    assert set(metrics["reranked"]) == {"ndcg@10", "mrr@10", "recall@100", "recall@1000"}
    assert {"p50_ms", "p99_ms"} <= set(metrics["latency_ms"]["total"])
    first = run_file.read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[5] == "twinbert-rerank"
    assert run_file.with_suffix(".recall.trec").exists()


def test_search_on_a_missing_index(tiny_model: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(
        main, ["search", "x", "--index-dir", str(tmp_path / "none"), "--model", str(tiny_model)]
    )
    assert out.exit_code != 0 and out.stderr.startswith("error:")


QUERY = "why does the moon show one face"


def test_lexical_weight_fuses_bm25_into_the_rerank(searcher: Searcher) -> None:
    from twinbert_search.runtime.crossing import lexical_fusion

    plain = searcher.search(QUERY, k=40, candidates=40, lexical_weight=0)
    fused = searcher.search(QUERY, k=40, candidates=40, lexical_weight=1.0)
    assert fused.recall_ids == plain.recall_ids
    found = searcher.store.fetch([h.id for h in fused.hits])
    q = searcher.runtime.encode_query(QUERY)
    expected = lexical_fusion(
        searcher.runtime.crossing.logits(q, found.vectors, found.precomputed),
        searcher.store.bm25_scores(QUERY, found.ids),
        1.0,
    )
    # z-scores over the same 40 candidates: the hits carry exactly the fused scores, in order
    np.testing.assert_allclose([h.rerank_score for h in fused.hits], expected, rtol=1e-6)
    assert expected.tolist() == sorted(expected.tolist(), reverse=True)
    # a heavy weight hands the top to BM25's best candidate
    heavy = searcher.search(QUERY, k=1, candidates=40, lexical_weight=1e6)
    bm25 = searcher.store.bm25_scores(QUERY, plain.recall_ids)
    assert heavy.hits[0].id == plain.recall_ids[int(np.argmax(bm25))]


def test_model_tuned_lexical_weight_is_the_default(
    sample_index: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from twinbert_search.manifest import ModelManifest

    tuned_model = tmp_path / "tuned"
    shutil.copytree(tiny_model, tuned_model)
    manifest = ModelManifest.load(tuned_model)
    manifest.extra["lexical_fusion"] = {"bm25_weight": 2.0}
    manifest.save(tuned_model)
    tuned = Searcher.open(sample_index, tuned_model)
    default = tuned.search(QUERY, k=10, candidates=40)
    explicit = tuned.search(QUERY, k=10, candidates=40, lexical_weight=2.0)
    assert [h.rerank_score for h in default.hits] == [h.rerank_score for h in explicit.hits]
    off = tuned.search(QUERY, k=10, candidates=40, lexical_weight=0)
    assert all(0.0 < h.rerank_score < 1.0 for h in off.hits)  # probabilities again
    with pytest.raises(ConfigurationError, match=">= 0"):
        tuned.search(QUERY, lexical_weight=-1)

    # A store that cannot score BM25: the tuned weight quietly steps aside, a request fails.
    def no_bm25(query: str, ids: list[str]) -> np.ndarray:
        raise NotImplementedError("no text index")

    bare = Searcher.open(sample_index, tuned_model)
    monkeypatch.setattr(bare.store, "bm25_scores", no_bm25)
    assert [h.id for h in bare.search(QUERY, k=10, candidates=40).hits] == [h.id for h in off.hits]
    with pytest.raises(ConfigurationError, match="BM25"):
        bare.search(QUERY, k=10, candidates=40, lexical_weight=1.0)


def test_eval_cli_takes_a_lexical_weight(sample_index: Path, tiny_model: Path) -> None:
    args = ["eval", "--index-dir", str(sample_index), "--model", str(tiny_model)]
    args += ["--queries", str(SAMPLE / "queries.jsonl")]
    args += ["--qrels", str(SAMPLE / "qrels" / "test.tsv")]
    args += ["--candidates", "20", "--recall-depth", "40", "--no-progress", "--json"]
    plain = CliRunner().invoke(main, [*args, "--lexical-weight", "0"])
    fused = CliRunner().invoke(main, [*args, "--lexical-weight", "1e6"])
    assert plain.exit_code == 0 and fused.exit_code == 0, plain.output + fused.output
    a, b = json.loads(plain.output), json.loads(fused.output)
    assert a["recall"] == b["recall"] and a["reranked"] != b["reranked"]
    bad = CliRunner().invoke(main, [*args, "--lexical-weight", "-1"])
    assert bad.exit_code != 0 and "lexical-weight" in bad.output


def test_eval_cli_splits_by_overlap_and_says_when_the_rerank_loses(
    sample_index: Path, tiny_model: Path, tmp_path: Path
) -> None:
    # Training positives: those of the first ten judged queries, so they all overlap.
    lines = (SAMPLE / "qrels" / "test.tsv").read_text().splitlines()
    train = tmp_path / "train.tsv"
    first = sorted({line.split("\t")[0] for line in lines[1:]})[:10]
    train.write_text("\n".join([lines[0], *(x for x in lines[1:] if x.split("\t")[0] in first)]))
    args = ["eval", "--index-dir", str(sample_index), "--model", str(tiny_model)]
    args += ["--queries", str(SAMPLE / "queries.jsonl")]
    args += ["--qrels", str(SAMPLE / "qrels" / "test.tsv"), "--train-qrels", str(train)]
    args += ["--candidates", "20", "--recall-depth", "40", "--no-progress"]
    out = CliRunner().invoke(main, [*args, "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    split = payload["overlap_split"]
    assert split["overlap"]["queries"] >= 10 and split["all"]["queries"] == payload["queries"]
    assert split["overlap"]["queries"] + split["no_overlap"]["queries"] == payload["queries"]
    for stage in ("recall", "reranked"):
        assert split["all"][stage] == pytest.approx(payload[stage], abs=1e-4)
    diff = payload["reranked"]["ndcg@10"] - payload["recall"]["ndcg@10"]
    assert payload["difference"]["ndcg@10"] == pytest.approx(diff, abs=1e-4)
    assert payload["rerank_loses"] == (diff < -5e-5)
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[1].startswith("no-overlap queries") and "recall" in lines[2]
    verdict = "LOSES" if payload["rerank_loses"] else "does not lose"
    assert sum(verdict in line for line in lines) >= 1
