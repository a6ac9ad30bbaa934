"""ivfN,sq8d: faiss's direct signed 8-bit codes with per-dimension scales (`direct_codes.py`).

What could break: the inner product after both sides are scaled (scores must stay cosines),
codes that overflow the byte (a component beyond the training sample's range wraps around
unless clipped), the scales travelling with the index file, and the list ranking of a scaled
query."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.synthetic import ClusteredSphere
from twinbert_search.errors import ModelError
from twinbert_search.stores.embedded import ann, direct_codes
from twinbert_search.stores.embedded.ann_spec import parse_ann_spec


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    gen = ClusteredSphere(dim=64, centers=200, topics=20)
    return gen.document_matrix(20_000).astype(np.float32), gen.queries(40).astype(np.float32)


def recall_at_100(index: object, docs: np.ndarray, queries: np.ndarray) -> float:
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :100]
    _, rows = ann.search(index, queries, 100)
    return float(np.mean([len(set(r) & set(t)) / 100 for r, t in zip(rows, truth, strict=True)]))


def test_spec_round_trip() -> None:
    spec = parse_ann_spec("IVF64, SQ8D")
    assert spec.direct and spec.sq8 and spec.holds_vectors and not spec.refines
    assert spec.canonical == "ivf64,sq8d"
    assert parse_ann_spec("ivf64,sq8").canonical == "ivf64,sq8"
    assert parse_ann_spec("ivf4096,sq8d").resolve(1000).canonical == "ivf25,sq8d"
    assert not parse_ann_spec("auto").resolve(10_000_000).direct  # opt-in
    auto = parse_ann_spec("auto, sq8d")
    assert auto.canonical == "auto,sq8d"
    assert auto.resolve(10_000_000).canonical == "ivf4096,sq8d"
    assert auto.resolve(1_000_000).canonical == "ivf2048,sq8d"
    assert auto.resolve(1_000).canonical == "flat"


def test_recall_and_scores_match_sq8(data: tuple[np.ndarray, np.ndarray]) -> None:
    docs, queries = data
    sq8 = ann.build_index("ivf64,sq8", docs, tune=False)
    direct = ann.build_index("ivf64,sq8d", docs, tune=False)
    assert isinstance(direct, direct_codes.DirectIndex)
    assert recall_at_100(direct, docs, queries) >= recall_at_100(sq8, docs, queries) - 0.01
    scores, rows = ann.search(direct, queries[:5], 10)
    exact = np.einsum("qd,qkd->qk", queries[:5], docs[rows])
    np.testing.assert_allclose(scores, exact, atol=0.01)  # cosines, not scaled integers
    got, hit_rows, vectors = ann.search_with_vectors(direct, queries[0], 50)
    np.testing.assert_allclose(got, vectors @ queries[0], rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(got) <= 0)  # best first
    np.testing.assert_allclose(vectors, docs[hit_rows], atol=0.02)
    np.testing.assert_allclose(ann.reconstruct_rows(direct, hit_rows[:3]), vectors[:3])


def test_a_component_beyond_the_sample_is_clipped_not_wrapped() -> None:
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((5_000, 32)).astype(np.float32) * 0.05
    docs[-1] = 0.0
    docs[-1, 0] = 1.0  # far beyond the 99.99th percentile of |x_0|
    index = ann.build_index("ivf8,sq8d", docs, tune=False)
    vector = ann.reconstruct_rows(index, np.array([len(docs) - 1]))[0]
    assert 0 < vector[0] <= 1.0  # clipped to the largest code; wrapped it would be negative
    query = np.zeros(32, np.float32)
    query[0] = 1.0
    _, rows = ann.search(index, query, 1, nprobe=8)
    assert rows[0, 0] == len(docs) - 1


def test_a_zero_query_does_not_divide_by_zero(data: tuple[np.ndarray, np.ndarray]) -> None:
    index = ann.build_index("ivf16,sq8d", data[0][:2000], tune=False)
    scores, rows = ann.search(index, np.zeros((1, 64), np.float32), 5)
    assert np.isfinite(scores).all() and (rows >= 0).all()


def test_the_scales_travel_with_the_index_file(tmp_path, data) -> None:
    docs, queries = data
    index = ann.build_index("ivf32,sq8d", docs[:5000])
    path = tmp_path / "ann.faiss"
    ann.save_index(index, path)
    for mmap in (False, True):
        loaded = ann.load_index(path, mmap=mmap)
        assert loaded.nprobe == index.nprobe
        np.testing.assert_array_equal(
            ann.search(loaded, queries, 20)[1], ann.search(index, queries, 20)[1]
        )
    (tmp_path / f"ann.faiss{direct_codes.SCALES_SUFFIX}").unlink()
    with pytest.raises(ModelError, match=r"scales\.npy is missing"):
        ann.load_index(path)
