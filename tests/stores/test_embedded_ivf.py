"""IVF snapshots of the embedded store: recall that takes the hits' vectors from the index
(ivfN, ivfN,sq8), and recall that rescores the index's shortlist from the stored vectors
(ivfN,fs)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.stores.test_embedded_store import MODEL, build, exact_ids, make_docs, unit_vectors
from twinbert_search.stores.embedded import EmbeddedStore


@pytest.mark.parametrize(
    ("codec", "ann", "only_copy"),
    [
        ("float32", "ivf16", False),
        ("int8", "ivf16", False),
        ("float32", "ivf16,sq8", True),
        ("float32", "ivf16,sq8d", True),
    ],
)
def test_ivf_recall_takes_vectors_from_the_index(tmp_path, codec, ann, only_copy) -> None:
    # IVF-Flat holds the decoded vectors and IVF-SQ8 their 8-bit codes, so recall reads them
    # from the lists it scanned; a fetch by id must give the same vectors. With sq8 the index
    # is the snapshot's only copy: no codec arrays are written.
    store, _, vectors = build(tmp_path, n=2000, codec=codec, ann=ann)
    snap = store._loaded()
    assert snap.vectors_from_index
    assert (snap.meta["vectors"] == "ann") is only_copy
    assert (snap.path / "vectors.npy").exists() is not only_copy
    for seed in range(3):
        query = unit_vectors(1, seed=40 + seed)[0]
        got = store.recall(query, 50)
        assert len(got) == 50
        np.testing.assert_array_equal(got.vectors, store.fetch(got.ids).vectors)
        np.testing.assert_allclose(got.recall_scores, got.vectors @ query, atol=1e-5)
        rows = [int(doc_id[1:]) for doc_id in got.ids]
        cosine = (got.vectors * vectors[rows]).sum(1) / np.linalg.norm(got.vectors, axis=1)
        assert cosine.min() > 0.995  # 8-bit codes of 16-dim vectors
    store.close()


@pytest.mark.parametrize("ann", ["ivf16,sq8", "ivf16,sq8d"])
def test_sq8_snapshot_serves_filters_and_fetch_from_the_index(tmp_path, ann) -> None:
    store, docs, vectors = build(tmp_path, n=2000, ann=ann)
    assert not store._loaded().arrays
    query = unit_vectors(1, seed=5)[0]
    allowed = {d.id for d in docs if d.metadata.get("lang") == "en"}
    got = store.recall(query, 20, filters={"lang": "en"})
    assert got.ids and set(got.ids) <= allowed
    rows = [int(doc_id[1:]) for doc_id in got.ids]
    cosine = (got.vectors * vectors[rows]).sum(1) / np.linalg.norm(got.vectors, axis=1)
    assert cosine.min() > 0.995
    np.testing.assert_array_equal(store.fetch(got.ids).vectors, got.vectors)
    store.close()


@pytest.mark.parametrize("codec", ["int8", "float32"])
def test_fastscan_snapshot_rescores_its_shortlist_from_the_stored_vectors(tmp_path, codec) -> None:
    # ivfN,fs keeps the codec arrays (the index's 4-bit codes are no copy of the vectors):
    # recall rescores the index's shortlist from them and hands the rerank the same vectors.
    store, docs, vectors = build(tmp_path, n=3000, codec=codec, ann="ivf16,fs")
    snap = store._loaded()
    assert snap.refines and not snap.vectors_from_index
    assert snap.meta["ann"] == "ivf16,fs" and snap.meta["vectors"] == "arrays"
    assert (snap.path / "vectors.npy").exists()
    for seed in range(3):
        query = unit_vectors(1, seed=60 + seed)[0]
        got = store.recall(query, 20)
        np.testing.assert_array_equal(got.vectors, store.fetch(got.ids).vectors)
        np.testing.assert_allclose(got.recall_scores, got.vectors @ query, rtol=1e-5, atol=1e-6)
        assert list(got.recall_scores) == sorted(got.recall_scores, reverse=True)
        truth = exact_ids(docs, vectors, query, 20)
        assert len(set(got.ids) & set(truth)) >= 18  # 8-bit or exact vectors rescored
    query = unit_vectors(1, seed=5)[0]
    got = store.recall(query, 20, filters={"lang": "en"})
    truth = exact_ids(docs, vectors, query, 20, lambda d: d.metadata["lang"] == "en")
    assert got.ids and all(docs[int(i[1:])].metadata["lang"] == "en" for i in got.ids)
    assert len(set(got.ids) & set(truth)) >= 18
    np.testing.assert_allclose(got.recall_scores, got.vectors @ query, rtol=1e-5, atol=1e-6)
    before = store.recall(query, 20).ids
    store.close()
    reopened = EmbeddedStore.open(tmp_path / "idx")  # the index read back, not mapped
    assert reopened.recall(query, 20).ids == before
    reopened.close()


@pytest.mark.parametrize(
    ("ann", "codec", "unit", "built"),
    [
        ("auto", "float32", True, "ivf76,sq8d"),  # what every model here writes: direct codes
        ("auto", "int8", True, "ivf76,sq8d"),  # an 8-bit codec's rounded norms still count
        ("auto", "float32", False, "ivf76,sq8"),  # lengths spherical k-means would drop
        ("auto,sq8d", "float32", False, "ivf76,sq8d"),  # asked for: as asked
        ("ivf76,sq8", "float32", True, "ivf76,sq8"),  # an explicit string is never changed
    ],
)
def test_auto_builds_direct_codes_for_unit_vectors_only(
    tmp_path, monkeypatch: pytest.MonkeyPatch, ann: str, codec: str, unit: bool, built: str
) -> None:
    """At IVF sizes `auto` takes the direct 8-bit codes (a 1.4x faster scan at 10M,
    BENCHMARKS.md) where the vectors are unit length, and records what it built."""
    monkeypatch.setattr("twinbert_search.stores.embedded.ann_spec.AUTO_HNSW_THRESHOLD", 1000)
    n = 3000  # 76 lists at 39 points per list
    docs = make_docs(n)
    vectors = unit_vectors(n) * (1.0 if unit else np.linspace(0.5, 2.0, n)[:, None])
    store = EmbeddedStore.create_or_open(tmp_path / "idx", ann=ann, codec=codec)
    store.upsert(docs, vectors.astype(np.float32), model_fingerprint=MODEL)
    store.finalize()
    assert store.info.ann == built
    assert (store._loaded().path / "ann.faiss.scales.npy").exists() is built.endswith("sq8d")
    query = unit_vectors(1, seed=9)[0]
    got = store.recall(query, 10)
    hits = set(got.ids) & set(exact_ids(docs, vectors, query, 10))
    assert len(hits) >= 8
    store.close()
