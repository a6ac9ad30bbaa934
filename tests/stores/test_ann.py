"""ANN index strings (each accepted form and several invalid ones), build, search, save."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.embedded.ann import (
    AUTO_HNSW_THRESHOLD,
    DEFAULT_NPROBE,
    MIN_POINTS_PER_LIST,
    MIN_REFINE_SHORTLIST,
    AnnSpec,
    ArraySource,
    build_index,
    exact_top_k,
    fastscan_subquantizers,
    holds_vectors,
    load_index,
    parse_ann_spec,
    reconstruct_rows,
    refine_shortlist,
    refines,
    rescore,
    save_index,
    search,
    search_refined,
    search_with_vectors,
    stores_exact_vectors,
    tune_nprobe,
)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ x.T), axis=1, kind="stable")[:, :k]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


ACCEPTED = [
    ("flat", "flat", AnnSpec("flat")),
    ("auto", "auto", AnnSpec("auto")),
    ("hnsw32", "hnsw32", AnnSpec("hnsw", m=32)),
    ("HNSW16", "hnsw16", AnnSpec("hnsw", m=16)),
    ("hnsw32,efc=100", "hnsw32,efc=100", AnnSpec("hnsw", m=32, ef_construction=100)),
    ("hnsw32,efc=200", "hnsw32", AnnSpec("hnsw", m=32)),
    ("hnsw32,sq8", "hnsw32,sq8", AnnSpec("hnsw", m=32, sq8=True)),
    (
        " hnsw8, sq8 ,efc=40 ",
        "hnsw8,efc=40,sq8",
        AnnSpec("hnsw", m=8, ef_construction=40, sq8=True),
    ),
    ("ivf1024", "ivf1024", AnnSpec("ivf", nlist=1024)),
    (" IVF64, SQ8 ", "ivf64,sq8", AnnSpec("ivf", nlist=64, sq8=True)),
    ("ivf64,fs", "ivf64,fs", AnnSpec("ivf", nlist=64, fastscan=True)),
    (" IVF8 , FS", "ivf8,fs", AnnSpec("ivf", nlist=8, fastscan=True)),
]


@pytest.mark.parametrize(("text", "canonical", "spec"), ACCEPTED)
def test_accepted_strings(text: str, canonical: str, spec: AnnSpec) -> None:
    parsed = parse_ann_spec(text)
    assert parsed == spec
    assert parsed.canonical == canonical
    assert parse_ann_spec(parsed.canonical) == parsed  # the canonical form round-trips


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "ivf",
        "ivf0",
        "ivf64,efc=10",
        "ivf64,sq8,sq8",
        "ivf64,fs,fs",
        "ivf64,sq8,fs",
        "ivf64,fs8",
        "hnsw32,fs",
        "flat,fs",
        "ivf64,nprobe=8",
        "hnsw",
        "hnsw1",
        "hnsw999",
        "hnswx",
        "hnsw32,efc=",
        "hnsw32,efc=0",
        "hnsw32,efc=-3",
        "hnsw32,foo",
        "hnsw32,sq8,sq8",
        "hnsw32,efc=10,efc=20",
        "flat,sq8",
        "auto,efc=100",
        "flat32",
    ],
)
def test_invalid_strings_name_the_string_and_the_forms(text: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_ann_spec(text)
    assert repr(text) in str(err.value)
    assert "accepted forms" in str(err.value)


def test_auto_resolves_by_size() -> None:
    auto = parse_ann_spec("auto")
    assert auto.resolve(AUTO_HNSW_THRESHOLD - 1).canonical == "flat"
    # At scale, one 8-bit copy serves kNN and rerank; lists capped at n / 39 when few.
    assert auto.resolve(AUTO_HNSW_THRESHOLD).canonical == "ivf1282,sq8"
    assert auto.resolve(1_000_000).canonical == "ivf2048,sq8"
    # Lists double while they would average over 2,500 vectors: 10M scans like 1M.
    assert auto.resolve(10_000_000).canonical == "ivf4096,sq8"
    assert auto.resolve(5_120_000).canonical == "ivf2048,sq8"
    assert auto.resolve(5_120_001).canonical == "ivf4096,sq8"
    # ivfN,fs only when asked for: at 10M its shortlist lost recall (BENCHMARKS.md).
    assert not auto.resolve(10_000_000).refines
    assert parse_ann_spec("hnsw16").resolve(10).canonical == "hnsw16"
    assert parse_ann_spec("ivf4096,fs").resolve(1000).canonical == "ivf25,fs"
    assert parse_ann_spec("ivf64,fs").refines and not parse_ann_spec("ivf64,fs").holds_vectors


@pytest.mark.parametrize("text", [t for t, _, _ in ACCEPTED])
def test_every_accepted_string_builds_and_searches(text: str) -> None:
    x = unit_vectors(300, 16)
    index = build_index(text, x)
    assert index.ntotal == 300
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    scores, rows = search(index, x[:5], 3)
    assert scores.shape == rows.shape == (5, 3)
    if refines(index):  # 4-bit codes rank roughly: the shortlist is rescored
        rows = np.array([search_refined(index, q, 3, lambda r: x[r])[1] for q in x[:5]])
    assert list(rows[:, 0]) == [0, 1, 2, 3, 4]  # each vector is its own nearest neighbour


def test_ivf_caps_its_list_count_by_size() -> None:
    spec = parse_ann_spec("ivf1024,sq8")
    assert spec.resolve(1024 * MIN_POINTS_PER_LIST) == spec
    assert spec.resolve(10 * MIN_POINTS_PER_LIST).canonical == "ivf10,sq8"
    assert parse_ann_spec("ivf64").resolve(0).canonical == "ivf1"


def test_ivf_types_and_default_nprobe() -> None:
    x = unit_vectors(4000, 8)
    flat = build_index("ivf64", x)
    assert isinstance(flat, faiss.IndexIVFFlat)
    assert flat.nlist == 64
    assert build_index("ivf64", x, tune=False).nprobe == min(DEFAULT_NPROBE, 64)
    assert isinstance(build_index("ivf64,sq8", x), faiss.IndexIVFScalarQuantizer)


def test_ivf_recall_at_10_and_nprobe_override() -> None:
    x, q = unit_vectors(5000, 16), unit_vectors(100, 16, seed=1)
    index = build_index("ivf64", x)
    truth = exact_top(x, q, 10)
    assert recall_at(search(index, q, 10)[1], truth) >= 0.95
    assert recall_at(search(index, q, 10, nprobe=64)[1], truth) == 1.0  # every list: exact
    assert recall_at(search(index, q, 10, nprobe=1)[1], truth) < 0.95


def test_search_with_vectors_matches_search_and_returns_the_indexed_rows() -> None:
    x, q = unit_vectors(3000, 16), unit_vectors(3, 16, seed=2)
    index = build_index("ivf32", x)
    assert stores_exact_vectors(index)
    assert not stores_exact_vectors(build_index("ivf32,sq8", x))
    assert not stores_exact_vectors(build_index("flat", x))
    for query in q:
        scores, rows = search(index, query, 100, nprobe=4)
        got_scores, got_rows, vectors = search_with_vectors(index, query, 100, nprobe=4)
        np.testing.assert_array_equal(got_rows, rows[0])
        np.testing.assert_array_equal(got_scores, scores[0])
        np.testing.assert_array_equal(vectors, x[got_rows])
    # Fewer hits than k (one list probed): only real hits come back, no -1 rows.
    _, rows, vectors = search_with_vectors(index, q[0], 3000, nprobe=1)
    assert 0 < len(rows) < 3000 and (rows >= 0).all() and len(vectors) == len(rows)
    with pytest.raises(ValueError, match="one query"):
        search_with_vectors(index, q, 10)


def test_tuned_nprobe_is_the_fewest_lists_reaching_the_target() -> None:
    # Clustered points: a point's neighbours share its list, so few lists suffice.
    rng = np.random.default_rng(0)
    centres = unit_vectors(64, 16, seed=3)
    x = centres[rng.integers(0, 64, 8000)] + 0.15 * rng.standard_normal((8000, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = build_index("ivf64", x, tune=False)
    nprobe, recall = tune_nprobe(index, x, target=0.9)
    assert index.nprobe == nprobe and recall >= 0.9
    assert nprobe in (8, 16, 32)
    if recall < 0.98:  # asking for a little more recall takes more lists
        more, _ = tune_nprobe(build_index("ivf64", x, tune=False), x, target=recall + 1e-9)
        assert more > nprobe
    # An unreachable target is held to 99% of what every list (here: exact) finds.
    nprobe, recall = tune_nprobe(index, x, target=1.01)
    assert recall >= 0.99
    # 8-bit codes cap recall below 1 at any nprobe: tuning stops at 99% of that ceiling
    # instead of scanning every list for a recall the codes cannot give.
    codes = build_index("ivf64,sq8", x, tune=False)
    nprobe, recall = tune_nprobe(codes, x, target=1.0)
    assert nprobe < 64 and recall < 1.0
    # Too few vectors to measure: nprobe is left alone.
    small = build_index("ivf4", x[:150], tune=False)
    assert tune_nprobe(small, x[:150]) == (small.nprobe, 1.0)


def test_auto_builds_flat_for_small_corpora() -> None:
    assert isinstance(build_index("auto", unit_vectors(10, 8)), faiss.IndexFlatIP)


def test_hnsw_types() -> None:
    x = unit_vectors(50, 8)
    assert isinstance(build_index("hnsw32", x), faiss.IndexHNSWFlat)
    assert isinstance(build_index("hnsw32,sq8", x), faiss.IndexHNSWSQ)
    assert build_index("hnsw16,efc=77", x).hnsw.efConstruction == 77


def test_flat_matches_brute_force() -> None:
    x, q = unit_vectors(1000, 16), unit_vectors(20, 16, seed=1)
    scores, rows = search(build_index("flat", x), q, 10)
    np.testing.assert_array_equal(rows, exact_top(x, q, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, rows, 1), rtol=1e-5)


def test_hnsw_recall_at_10_is_at_least_0_95() -> None:
    x, q = unit_vectors(5000, 16), unit_vectors(100, 16, seed=1)
    _, rows = search(build_index("hnsw32", x), q, 10)
    assert recall_at(rows, exact_top(x, q, 10)) >= 0.95


def test_hnsw_sq8_recall_is_reasonable() -> None:
    x, q = unit_vectors(3000, 16), unit_vectors(50, 16, seed=1)
    _, rows = search(build_index("hnsw32,sq8", x), q, 10)
    assert recall_at(rows, exact_top(x, q, 10)) >= 0.85


def test_k_beyond_the_index_pads_with_minus_one() -> None:
    _, rows = search(build_index("flat", unit_vectors(3, 8)), unit_vectors(1, 8), 5)
    assert list(rows[0, 3:]) == [-1, -1]


@pytest.mark.parametrize("text", ["flat", "hnsw32", "hnsw32,sq8", "ivf64", "ivf64,sq8"])
def test_empty_index_returns_no_rows(text: str) -> None:
    index = build_index(text, np.zeros((0, 8), np.float32))
    _, rows = search(index, unit_vectors(2, 8), 4)
    assert rows.shape == (2, 4) and (rows == -1).all()


@pytest.mark.parametrize("text", ["flat", "hnsw32", "hnsw32,sq8", "ivf8", "ivf8,sq8"])
def test_save_and_load_give_the_same_results(text: str, tmp_path) -> None:
    x, q = unit_vectors(500, 16), unit_vectors(5, 16, seed=1)
    index = build_index(text, x)
    save_index(index, tmp_path / "ann.faiss")
    loaded = load_index(tmp_path / "ann.faiss")
    for ef in (None, 16, 256):
        np.testing.assert_array_equal(search(index, q, 10, ef)[1], search(loaded, q, 10, ef)[1])
    for nprobe in (None, 1, 8):
        np.testing.assert_array_equal(
            search(index, q, 10, nprobe=nprobe)[1], search(loaded, q, 10, nprobe=nprobe)[1]
        )


def test_threads_argument_restores_the_global_setting() -> None:
    before = faiss.omp_get_max_threads()
    index = build_index("hnsw8", unit_vectors(200, 8), threads=1)
    search(index, unit_vectors(3, 8), 2, threads=1)
    assert faiss.omp_get_max_threads() == before


class CountingSource(ArraySource):
    """An ArraySource that records the largest read, to show a build streams."""

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__(matrix)
        self.largest = 0

    def rows(self, lo: int, hi: int) -> np.ndarray:
        self.largest = max(self.largest, hi - lo)
        return super().rows(lo, hi)

    def take(self, rows: np.ndarray) -> np.ndarray:
        self.largest = max(self.largest, len(rows))
        return super().take(rows)


def test_build_reads_a_source_in_chunks_and_trains_on_a_sample(monkeypatch) -> None:
    from twinbert_search.stores.embedded import ann

    monkeypatch.setattr(ann, "ADD_CHUNK", 500)
    monkeypatch.setattr(ann, "EXACT_CHUNK", 700)
    x = unit_vectors(4000, 16)
    source = CountingSource(x)
    added: list[int] = []
    index = build_index("ivf8", source, progress=added.append)
    assert index.ntotal == 4000 and added == [500] * 8
    # reads: add chunks (500), 8 lists x 64 training points (512), tuning's exact search in
    # chunks (700) with 200 sampled queries: never all 4,000 rows at once
    assert source.largest == 700
    whole = build_index("ivf8", x)
    assert whole.nprobe == index.nprobe
    assert np.array_equal(search(whole, x[:5], 10)[1], search(index, x[:5], 10)[1])


def test_exact_top_k_streams_to_the_same_answer_as_a_full_sort() -> None:
    x = unit_vectors(1000, 16)
    queries = unit_vectors(7, 16, seed=3)
    scores, rows = exact_top_k(queries, ArraySource(x), 25, chunk=90)
    assert np.array_equal(rows, exact_top(x, queries, 25))
    assert np.allclose(scores, np.take_along_axis(queries @ x.T, rows, 1))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_ivf_sq8_holds_its_vectors_and_returns_them_from_the_scanned_lists(tmp_path) -> None:
    x = unit_vectors(3000, 32)
    index = build_index("ivf16,sq8", x)
    assert isinstance(index, faiss.IndexIVFScalarQuantizer) and not index.by_residual
    assert holds_vectors(index) and not stores_exact_vectors(index)
    assert not holds_vectors(build_index("hnsw8,sq8", x))
    save_index(index, tmp_path / "i.faiss")
    mapped = load_index(tmp_path / "i.faiss", mmap=True)
    scores, rows, vectors = search_with_vectors(mapped, x[0], 50)
    assert np.array_equal(rows, search(index, x[0], 50)[1][0])
    # the codes decode to the vectors themselves (no centroid to add): 8-bit error only
    assert np.abs(vectors - x[rows]).max() < 0.01
    assert np.allclose(scores, vectors @ x[0], atol=1e-4)
    picked = np.array([2999, 0, 17])
    assert np.abs(reconstruct_rows(mapped, picked) - x[picked]).max() < 0.01


def test_fastscan_subquantizers_divide_the_dimension() -> None:
    assert fastscan_subquantizers(384) == 96
    assert fastscan_subquantizers(768) == 192
    assert fastscan_subquantizers(16) == 4
    assert fastscan_subquantizers(10) == 2
    assert fastscan_subquantizers(7) == 1
    assert fastscan_subquantizers(3) == 1


def test_rescore_keeps_the_k_best_in_order() -> None:
    query = np.array([1.0, 0.0], np.float32)
    vectors = np.array([[0.1, 0], [0.9, 0], [0.5, 0], [0.7, 0]], np.float32)
    rows = np.array([10, 11, 12, 13])
    scores, top, kept = rescore(query, rows, vectors, 2)
    assert top.tolist() == [11, 13]
    np.testing.assert_allclose(scores, [0.9, 0.7])
    np.testing.assert_array_equal(kept, vectors[[1, 3]])
    assert rescore(query, rows, vectors, 10)[1].tolist() == [11, 13, 12, 10]
    assert len(rescore(query, rows[:0], vectors[:0], 3)[1]) == 0


def test_fastscan_index_gives_a_shortlist_that_rescoring_makes_exact(tmp_path) -> None:
    x = unit_vectors(6000, 32, seed=3)
    queries = unit_vectors(20, 32, seed=4)
    index = build_index("ivf32,fs", x)
    assert isinstance(index, faiss.IndexIVFPQFastScan) and refines(index)
    assert index.pq.M == 8 and index.pq.nbits == 4 and index.by_residual
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert not holds_vectors(index) and not stores_exact_vectors(index)
    assert refine_shortlist(10) == MIN_REFINE_SHORTLIST and refine_shortlist(1000) == 2000
    truth = exact_top(x, queries, 10)
    found = []
    for query in queries:
        scores, rows, vectors = search_refined(index, query, 10, lambda r: x[r], nprobe=32)
        np.testing.assert_array_equal(vectors, x[rows])
        np.testing.assert_allclose(scores, x[rows] @ query, rtol=1e-5, atol=1e-6)
        assert list(scores) == sorted(scores, reverse=True)
        found.append(rows)
    # Every list scanned and a shortlist of 1,000 of 6,000: the rescored top 10 is exact.
    assert recall_at(np.array(found), truth) == 1.0
    save_index(index, tmp_path / "fs.faiss")
    for mmap in (False, True):  # mapping is not supported for these lists: read whole
        loaded = load_index(tmp_path / "fs.faiss", mmap=mmap)
        again = search_refined(loaded, queries[0], 10, lambda r: x[r], nprobe=32)[1]
        np.testing.assert_array_equal(again, found[0])
    with pytest.raises(ValueError, match="one query"):
        search_refined(index, queries[:2], 10, lambda r: x[r])


def test_fastscan_nprobe_is_tuned_on_rescored_results() -> None:
    x = unit_vectors(4000, 16, seed=5)
    index = build_index("ivf64,fs", x, tune=False)
    nprobe, recall = tune_nprobe(index, x, target=0.9)
    assert index.nprobe == nprobe and recall >= 0.9
    # Rescored from the vectors, the widest choice finds (almost) every neighbour; the 4-bit
    # codes' own ranking would not.
    assert tune_nprobe(index, x, target=1.0)[1] >= 0.99


def test_fastscan_search_on_a_tiny_index() -> None:
    x = unit_vectors(50, 8)
    index = build_index("ivf1,fs", x)
    _, rows, vectors = search_refined(index, x[7], 100, lambda r: x[r])
    assert sorted(rows.tolist()) == list(range(50)) and rows[0] == 7
    assert vectors.shape == (50, 8)


def test_ivf_search_widens_until_k_hits_are_found() -> None:
    """A tuned nprobe is chosen for recall@100; a deeper k (the rerank's 1,000) must still be
    filled where the probed lists hold fewer vectors."""
    x = unit_vectors(2000, 16, seed=3)
    index = build_index("ivf64", x, tune=False)
    query = x[:5]
    unfilled = index.search(query, 500, params=faiss.SearchParametersIVF(nprobe=2))[1]
    assert (unfilled < 0).any()  # two of 64 lists hold fewer than 500 vectors
    scores, rows = search(index, query, 500, nprobe=2)
    assert (rows >= 0).all() and all(len(set(r.tolist())) == 500 for r in rows)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # still best first
    everything = search(index, query, 3000, nprobe=2)[1]  # more than the store holds
    assert ((everything >= 0).sum(axis=1) == 2000).all()
