"""Hybrid recall's fusion: z-scores and weighted RRF by hand, the floor of a missing document,
ties, the manifest round-trip, which fusion a model gets, the override, and its tuning."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from twinbert_search.cli import main
from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.hybrid_tuning import (
    HYBRID_RULE,
    HybridLists,
    hybrid_grid,
    tune_hybrid_fusion,
)
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus
from twinbert_search.manifest import ModelManifest
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search import Searcher
from twinbert_search.search.fusion import (
    DEFAULT_HYBRID_FUSION,
    HYBRID_MANIFEST_KEY,
    RRF,
    HybridFusion,
    hybrid_fusion_of,
    reciprocal_rank_fusion,
    zscore_fusion,
)
from twinbert_search.stores.embedded import EmbeddedStore

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample"
Z1 = math.sqrt(1.5)  # z of 3 in [3, 2, 1]: (3 - 2) / sqrt(2/3)


def test_zscore_fusion_by_hand() -> None:
    """kNN a 3, b 2, c 1 -> z +1.2247, 0, -1.2247 (floor -1.2247); BM25 c 10, d 0 -> z +1, -1
    (floor -1). Equal weights: a = 1.2247 - 1, b = 0 - 1, c = -1.2247 + 1, d = -1.2247 - 1."""
    dense = (["a", "b", "c"], [3.0, 2.0, 1.0])
    bm25 = (["c", "d"], [10.0, 0.0])
    fused = zscore_fusion([dense, bm25])
    assert [d for d, _ in fused] == ["a", "c", "b", "d"]
    assert dict(fused) == pytest.approx({"a": Z1 - 1, "c": 1 - Z1, "b": -1.0, "d": -Z1 - 1})


def test_a_document_missing_from_a_list_takes_its_floor() -> None:
    """d is in BM25 only: kNN gives it kNN's lowest z, not 0 and not nothing."""
    fused = dict(zscore_fusion([(["a", "b", "c"], [3.0, 2.0, 1.0]), (["d"], [5.0])]))
    # A list of one score standardises to 0, its floor 0.
    assert fused["d"] == pytest.approx(-Z1 + 0.0)
    assert fused["a"] == pytest.approx(Z1 + 0.0)


def test_weights_scale_each_list() -> None:
    dense = (["a", "b", "c"], [3.0, 2.0, 1.0])
    bm25 = (["c", "d"], [10.0, 0.0])
    fused = zscore_fusion([dense, bm25], [1.0, 2.0])
    assert [d for d, _ in fused] == ["c", "a", "b", "d"]
    assert dict(fused)["c"] == pytest.approx(-Z1 + 2.0)
    assert HybridFusion("zscore", bm25=2.0).fuse(dense, bm25) == fused
    # A list of weight 0 adds nothing, not even its documents.
    assert [d for d, _ in zscore_fusion([dense, bm25], [1.0, 0.0])] == ["a", "b", "c"]
    # Weighted RRF: w / (60 + rank).
    rrf = dict(reciprocal_rank_fusion([["a", "b"], ["b"]], weights=[1.0, 3.0]))
    assert rrf == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 3 / 61})
    assert HybridFusion("rrf", bm25=3.0).fuse((["a", "b"], [0.9, 0.8]), (["b"], [7.0])) == (
        reciprocal_rank_fusion([["a", "b"], ["b"]], weights=[1.0, 3.0])
    )
    with pytest.raises(ConfigurationError, match="weights"):
        zscore_fusion([dense, bm25], [1.0])


def test_ties_break_by_id() -> None:
    """Equal fused scores come out by id, as every ranking of the package does."""
    fused = zscore_fusion([(["b", "a", "c"], [1.0, 1.0, 1.0]), ([], [])])
    assert fused == [("a", 0.0), ("b", 0.0), ("c", 0.0)]
    mirrored = zscore_fusion([(["y", "x"], [2.0, 1.0]), (["x", "y"], [2.0, 1.0])])
    assert [d for d, _ in mirrored] == ["x", "y"] and mirrored[0][1] == mirrored[1][1]


def test_a_fusion_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="rrf, zscore"):
        HybridFusion("minmax")
    with pytest.raises(ConfigurationError, match="not both 0"):
        HybridFusion("zscore", dense=0.0, bm25=0.0)
    with pytest.raises(ConfigurationError, match=">= 0"):
        HybridFusion("zscore", bm25=-1.0)
    with pytest.raises(ConfigurationError, match="ids but"):
        zscore_fusion([(["a", "b"], [1.0])])
    with pytest.raises(ConfigurationError, match="unknown"):
        HybridFusion.from_dict({"method": "rrf", "weights": {"splade": 1.0}})


def test_the_manifest_round_trip_and_which_fusion_a_model_gets(tiny_model: Path, tmp_path: Path):
    chosen = HybridFusion("zscore", bm25=2.0)
    manifest = ModelManifest.load(tiny_model)
    manifest.extra[HYBRID_MANIFEST_KEY] = {**chosen.to_dict(), "ndcg@10": 0.7, "queries": 60}
    manifest.save(tmp_path)
    extra = ModelManifest.load(tmp_path).extra
    assert HybridFusion.from_dict(extra[HYBRID_MANIFEST_KEY]) == chosen
    assert hybrid_fusion_of(extra) == chosen  # recorded
    assert hybrid_fusion_of(extra, RRF) == RRF  # an override wins
    assert hybrid_fusion_of({}) == DEFAULT_HYBRID_FUSION  # nothing recorded
    # A rerank tuned over RRF recall, with no recorded fusion, keeps RRF.
    tuned_rerank = {"rerank_fusion": {"weights": {"crossing": 1.0, "recall": 1.0}}}
    assert hybrid_fusion_of(tuned_rerank) == RRF
    assert hybrid_fusion_of({**tuned_rerank, HYBRID_MANIFEST_KEY: chosen.to_dict()}) == chosen


@pytest.fixture(scope="module")
def sample_index(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index_dir = tmp_path_factory.mktemp("hybrid-index")
    runtime = TwinBertRuntime.load(tiny_model)
    with EmbeddedStore.create_or_open(index_dir, dim=runtime.dim) as store:
        index_documents(read_corpus(SAMPLE / "corpus.jsonl"), store, runtime, progress=False)
    return index_dir


def _by_hand(searcher: Searcher, query: str, n: int, fusion: HybridFusion) -> list[str]:
    dense = searcher.store.recall(searcher.encode(query), n)
    sparse = searcher.store.recall_bm25(query, n)
    fused = fusion.fuse(
        (dense.ids, dense.recall_scores.tolist()),
        ([d for d, _ in sparse], [s for _, s in sparse]),
    )
    return [d for d, _ in fused[:n]]


def test_the_searcher_fuses_by_the_models_fusion_or_the_override(
    sample_index: Path, tiny_model: Path
) -> None:
    query, n = "theremin music", 20
    searcher = Searcher.open(sample_index, tiny_model)
    with searcher.store:
        assert searcher.hybrid == DEFAULT_HYBRID_FUSION  # the tiny model records none
        result = searcher.search(query, k=n, candidates=n, hybrid=True, rerank=False)
        assert list(result.recall_ids) == _by_hand(searcher, query, n, DEFAULT_HYBRID_FUSION)
        assert (result.hybrid_fusion, result.hybrid_method) == ("client", "zscore")
        rrf = searcher.search(query, k=n, candidates=n, hybrid=True, hybrid_fusion=RRF)
        assert list(rrf.recall_ids) == _by_hand(searcher, query, n, RRF)
        assert rrf.to_dict()["hybrid_method"] == "rrf"
        plain = searcher.search(query, k=5, candidates=n)
        assert plain.hybrid_fusion is None and plain.hybrid_method is None


def test_the_cli_override_and_tune_hybrid_save(
    sample_index: Path, tiny_model: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["search", "theremin", "--index-dir", str(sample_index), "--model", str(tiny_model)]
    out = runner.invoke(main, [*base, "--hybrid", "--hybrid-fusion", "rrf", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["hybrid_method"] == "rrf"
    out = runner.invoke(main, [*base, "--hybrid", "--explain"])
    assert "hybrid_fusion=client hybrid_method=zscore" in out.output
    out = runner.invoke(main, [*base, "--hybrid", "--hybrid-bm25-weight", "2"])
    assert out.exit_code != 0 and "needs --hybrid-fusion" in out.output
    # tune-hybrid --save records its choice where search then reads it.
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    args = [
        "tune-hybrid",
        "--index-dir",
        str(sample_index),
        "--model",
        str(model),
        "--queries",
        str(SAMPLE / "queries.jsonl"),
        "--qrels",
        str(SAMPLE / "qrels" / "test.tsv"),
        "--depth",
        "20",
        "--save",
        "--json",
    ]
    out = runner.invoke(main, args)
    assert out.exit_code == 0, out.output
    tuned = json.loads(out.output)
    assert len(tuned["grid"]) == len(hybrid_grid())
    recorded = ModelManifest.load(model).extra[HYBRID_MANIFEST_KEY]
    assert HybridFusion.from_dict(recorded) == HybridFusion.from_dict(tuned)
    searcher = Searcher.open(sample_index, model)
    with searcher.store:
        assert searcher.hybrid == HybridFusion.from_dict(tuned)


def test_tuning_keeps_the_default_unless_beaten_by_more_than_chance() -> None:
    """One positive per query: BM25 puts it first, kNN last. Equal weights rank it mid-list;
    a heavier BM25 brings it to the top on every one of 12 queries, so tuning picks a
    BM25-heavy fusion. The same gain on one query, or lists where nothing differs, keep the
    baseline: z-scores with equal weights, the product's default."""
    ids = [f"d{i}" for i in range(10)]
    scores = np.linspace(1.0, 0.1, 10)
    scores[9] = -2.0  # kNN's last, far behind: equal z-score weights leave it low
    dense = (ids, scores.tolist())
    bm25 = (ids[::-1], np.linspace(9.0, 0.0, 10).tolist())
    lists = [HybridLists(f"q{i}", dense, bm25) for i in range(12)]
    qrels = {f"q{i}": {"d9": 1} for i in range(12)}
    tuned = tune_hybrid_fusion(lists, qrels)
    assert tuned["weights"]["bm25"] > tuned["weights"]["dense"]
    assert tuned["ndcg@10"] > tuned["baseline_ndcg@10"] and tuned["p_value"] <= 0.05
    assert tuned["baseline"] == "zscore dense 1 bm25 1" and tuned["rule"] == HYBRID_RULE
    one = tune_hybrid_fusion(lists[:1], {"q0": {"d9": 1}})  # 1 query: p is at least 1/2
    assert HybridFusion.from_dict(one) == HybridFusion("zscore")
    assert one["best_ndcg@10"] > one["ndcg@10"] and one["p_value"] >= 0.5
    same = [HybridLists("q", dense, dense)]
    assert HybridFusion.from_dict(tune_hybrid_fusion(same, {"q": {"d0": 1}})) == HybridFusion(
        "zscore"
    )
    with pytest.raises(ConfigurationError, match="judged"):
        tune_hybrid_fusion(lists, {"other": {"d0": 1}})
