"""The embedded store: writes, snapshots, recall, filters, BM25, crashes and mismatches."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, ModelMismatchError, StoreError
from twinbert_search.stores.base import RowIds
from twinbert_search.stores.embedded import EmbeddedStore
from twinbert_search.stores.embedded import reader as embedded

DIM = 16
MODEL = "f" * 64
REPO = Path(__file__).resolve().parents[2]


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_docs(n: int, prefix: str = "d") -> list[Document]:
    return [
        Document(
            id=f"{prefix}{i:05d}",
            title=f"title {i}",
            text=f"document number {i} about topic{i % 7}",
            metadata={"lang": "en" if i % 2 else "de", "year": 2000 + i % 5, "tags": [f"t{i % 3}"]},
        )
        for i in range(n)
    ]


def build(tmp_path: Path, n: int = 200, **options) -> tuple[EmbeddedStore, list, np.ndarray]:
    docs, vectors = make_docs(n), unit_vectors(n)
    store = EmbeddedStore.create_or_open(tmp_path / "idx", **options)
    store.upsert(docs, vectors, model_fingerprint=MODEL)
    store.finalize()
    return store, docs, vectors


def exact_ids(docs, vectors, query, n, keep=None) -> list[str]:
    scores = vectors @ query
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], docs[i].id))
    return [docs[i].id for i in order if keep is None or keep(docs[i])][:n]


# --- recall ---------------------------------------------------------------------------------


def test_flat_recall_matches_brute_force(tmp_path) -> None:
    store, docs, vectors = build(tmp_path, ann="flat")
    for seed in range(5):
        query = unit_vectors(1, seed=100 + seed)[0]
        got = store.recall(query, 10)
        assert got.ids == exact_ids(docs, vectors, query, 10)
        np.testing.assert_allclose(got.recall_scores, got.vectors @ query, rtol=1e-5)
        assert got.recall_scores.dtype == np.float32 and got.vectors.dtype == np.float32
    store.close()


def test_hnsw_recall_at_10(tmp_path) -> None:
    store, docs, vectors = build(tmp_path, n=5000, ann="hnsw32")
    assert store.info.ann == "hnsw32"
    queries = unit_vectors(50, seed=7)
    hits = 0
    for query in queries:
        hits += len(set(store.recall(query, 10).ids) & set(exact_ids(docs, vectors, query, 10)))
    assert hits / (10 * len(queries)) >= 0.95
    store.close()


def test_auto_is_resolved_and_recorded(tmp_path) -> None:
    store, _, _ = build(tmp_path, n=20)
    manifest = json.loads((tmp_path / "idx" / "store.json").read_text())
    assert manifest["ann"] == "auto"
    assert manifest["snapshot"]["ann"] == "flat"
    assert store.info.ann == "flat" and store.info.extra["ann_configured"] == "auto"
    store.close()


def test_candidates_carry_documents_vectors_and_order(tmp_path) -> None:
    store, docs, vectors = build(tmp_path, n=50)
    got = store.recall(vectors[3], 5)
    assert got.ids[0] == docs[3].id
    assert isinstance(got.ids, RowIds)  # read lazily: a search reads ten of 1,000 ids
    np.testing.assert_allclose(got.vectors[0], vectors[3], atol=1e-6)
    assert got.documents[0] == {
        "title": docs[3].title,
        "text": docs[3].text,
        "metadata": docs[3].metadata,
    }
    assert got.precomputed is None
    assert store.recall(vectors[3], 5, with_documents=False).documents is None
    assert len(store.recall(vectors[3], 500)) == 50
    assert len(store.recall(vectors[3], 0)) == 0
    store.close()


def test_with_documents_false_on_open(tmp_path) -> None:
    build(tmp_path, n=20)[0].close()
    with EmbeddedStore.open(tmp_path / "idx", with_documents=False) as store:
        got = store.recall(unit_vectors(1)[0], 3)
        assert got.documents is None and len(got) == 3


@pytest.mark.parametrize("codec", ["float16", "int8"])
def test_compressed_codecs_recall(tmp_path, codec: str) -> None:
    store, docs, vectors = build(tmp_path, codec=codec, ann="flat")
    assert store.info.codec == codec
    query = unit_vectors(1, seed=9)[0]
    got = store.recall(query, 10)
    assert len(set(got.ids) & set(exact_ids(docs, vectors, query, 10))) >= 9
    rows = [int(doc_id[1:]) for doc_id in got.ids]
    cosine = (got.vectors * vectors[rows]).sum(1) / np.linalg.norm(got.vectors, axis=1)
    assert cosine.min() > 0.999
    store.close()


def test_query_dim_mismatch(tmp_path) -> None:
    store, _, _ = build(tmp_path, n=10)
    with pytest.raises(ConfigurationError, match="dims"):
        store.recall(np.zeros(DIM + 1, np.float32), 3)
    store.close()


# --- filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ann", ["flat", "hnsw16"])
def test_filters(tmp_path, ann: str) -> None:
    store, docs, vectors = build(tmp_path, n=300, ann=ann)
    query = unit_vectors(1, seed=3)[0]
    cases = [
        ({"lang": "en"}, lambda d: d.metadata["lang"] == "en"),
        ({"year": [2001, 2003]}, lambda d: d.metadata["year"] in (2001, 2003)),
        ({"year": 2002.0}, lambda d: d.metadata["year"] == 2002),
        (
            {"lang": "de", "year": 2004},
            lambda d: d.metadata == {**d.metadata, "lang": "de", "year": 2004},
        ),
        ({"tags": "t1"}, lambda d: "t1" in d.metadata["tags"]),
    ]
    for filters, keep in cases:
        got = store.recall(query, 10, filters=filters)
        assert got.ids == exact_ids(docs, vectors, query, 10, keep), filters
        assert all(keep(docs[int(i[1:])]) for i in got.ids)
    assert len(store.recall(query, 10, filters={"lang": "fr"})) == 0
    assert len(store.recall(query, 10, filters={"missing": 1})) == 0
    assert len(store.recall(query, 10, filters={"lang": []})) == 0
    store.close()


def test_filtered_ann_overfetch_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(embedded, "EXACT_SUBSET_MAX", 0)  # force over-fetch from HNSW
    store, docs, vectors = build(tmp_path, n=2000, ann="hnsw32")
    query = unit_vectors(1, seed=5)[0]
    keep = lambda d: d.metadata["year"] == 2003  # noqa: E731 - 1 in 5 documents
    got = store.recall(query, 20, filters={"year": 2003})
    assert len(got) == 20 and all(keep(docs[int(i[1:])]) for i in got.ids)
    assert len(set(got.ids) & set(exact_ids(docs, vectors, query, 20, keep))) >= 18
    store.close()


# --- writes -----------------------------------------------------------------------------------


def test_upsert_replaces_and_delete_removes(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx")
    docs = make_docs(10)
    store.upsert(docs, unit_vectors(10), model_fingerprint=MODEL)
    before = store.content_hashes([d.id for d in docs])
    changed = Document(id=docs[0].id, text="completely new text", title="new")
    store.upsert([changed, docs[1]], unit_vectors(2, seed=1), model_fingerprint=MODEL)
    assert store.info.count == 10 and len(store.all_ids()) == 10
    after = store.content_hashes([d.id for d in docs] + ["nope"])
    assert after[docs[0].id] == changed.content_hash != before[docs[0].id]
    assert after[docs[1].id] == before[docs[1].id] and "nope" not in after
    assert store.delete([docs[2].id, docs[2].id, "nope"]) == 1
    assert store.info.count == 9 and docs[2].id not in store.all_ids()
    assert store.delete([]) == 0
    fetched = store.fetch([docs[0].id])
    assert fetched.documents[0]["text"] == "completely new text"
    np.testing.assert_allclose(fetched.vectors[0], unit_vectors(2, seed=1)[0], atol=1e-6)
    store.close()


def test_generation_increments_on_every_write(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx")
    generation = lambda: store.info.extra["data_generation"]  # noqa: E731
    assert generation() == 0
    store.upsert(make_docs(3), unit_vectors(3), model_fingerprint=MODEL)
    store.upsert(make_docs(1), unit_vectors(1), model_fingerprint=MODEL)
    store.delete(["d00002"])
    assert generation() == 3
    store.close()


def test_content_hashes_in_chunks(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx")
    docs = make_docs(1200)
    store.upsert(docs, unit_vectors(1200), model_fingerprint=MODEL)
    hashes = store.content_hashes([d.id for d in docs])
    assert len(hashes) == 1200 and hashes[docs[1111].id] == docs[1111].content_hash
    store.close()


def test_model_mismatch(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx")
    store.upsert(make_docs(2), unit_vectors(2), model_fingerprint=MODEL)
    with pytest.raises(ModelMismatchError) as err:
        store.upsert(make_docs(2), unit_vectors(2), model_fingerprint="0" * 64)
    assert err.value.expected == MODEL
    store.close()
    with EmbeddedStore.create_or_open(tmp_path / "idx") as reopened:
        assert reopened.info.model_fingerprint == MODEL
        with pytest.raises(ModelMismatchError):
            reopened.ensure_model("1" * 64)
        # Two document graphs of one model differ only in the suffix: the message shows it.
        with pytest.raises(ModelMismatchError, match=r"f{12}, not f{12} \(int8 document graph\)"):
            reopened.ensure_model(MODEL + ":int8")


def test_dim_mismatch(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx", dim=DIM)
    with pytest.raises(ConfigurationError, match="16-dim"):
        store.upsert(make_docs(2), unit_vectors(2, dim=8), model_fingerprint=MODEL)
    store.upsert(make_docs(2), unit_vectors(2), model_fingerprint=MODEL)
    store.close()
    with pytest.raises(ConfigurationError, match="16-dim"):
        EmbeddedStore.create_or_open(tmp_path / "idx", dim=32)
    EmbeddedStore.create_or_open(tmp_path / "idx", dim=DIM).close()


def test_recorded_codec_wins_unless_empty(tmp_path, caplog) -> None:
    EmbeddedStore.create_or_open(tmp_path / "a", codec="int8").close()
    with EmbeddedStore.create_or_open(tmp_path / "a", codec="float16") as empty:
        assert empty.info.codec == "float16"  # nothing stored yet: the new codec is adopted
        empty.upsert(make_docs(2), unit_vectors(2), model_fingerprint=MODEL)
    with (
        caplog.at_level(logging.WARNING),
        EmbeddedStore.create_or_open(tmp_path / "a", codec="float32") as full,
    ):
        assert full.info.codec == "float16"
    assert "keeping that codec" in caplog.text
    with pytest.raises(ConfigurationError, match="valid codecs"):
        EmbeddedStore.create_or_open(tmp_path / "b", codec="int4")
    with pytest.raises(ConfigurationError, match="accepted forms"):
        EmbeddedStore.create_or_open(tmp_path / "b", ann="ivf")


def test_bad_batches_are_refused(tmp_path) -> None:
    from twinbert_search.errors import InputError

    store = EmbeddedStore.create_or_open(tmp_path / "idx")
    docs = make_docs(2)
    bad = unit_vectors(2)
    bad[1, 0] = np.nan
    with pytest.raises(InputError, match="d00001"):
        store.upsert(docs, bad, model_fingerprint=MODEL)
    with pytest.raises(InputError, match="twice"):
        store.upsert([docs[0], docs[0]], unit_vectors(2), model_fingerprint=MODEL)
    with pytest.raises(ValueError, match="shape"):
        store.upsert(docs, unit_vectors(3), model_fingerprint=MODEL)
    assert store.info.count == 0 and store.info.extra["data_generation"] == 0
    store.close()


# --- open, manifest, snapshots -----------------------------------------------------------------


def test_open_refuses_non_stores_and_missing_snapshots(tmp_path) -> None:
    with pytest.raises(StoreError, match="not a twinbert-search embedded store"):
        EmbeddedStore.open(tmp_path)
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        EmbeddedStore.create_or_open(tmp_path)
    store = EmbeddedStore.create_or_open(tmp_path / "idx")
    store.upsert(make_docs(3), unit_vectors(3), model_fingerprint=MODEL)
    store.close()
    with pytest.raises(StoreError, match="no search snapshot"):
        EmbeddedStore.open(tmp_path / "idx")


def test_manifest_contents(tmp_path) -> None:
    store, _, _ = build(tmp_path, n=30, codec="int8")
    store.close()
    manifest = json.loads((tmp_path / "idx" / "store.json").read_text())
    assert manifest["format_version"] == 1 and manifest["backend"] == "embedded"
    assert manifest["model_fingerprint"] == MODEL and manifest["dim"] == DIM
    assert manifest["codec"] == "int8" and manifest["counts"]["documents"] == 30
    assert manifest["generations"] == {"data": 1, "snapshot": 1}
    assert {"created", "updated", "versions"} <= set(manifest)
    assert "twinbert_search" in manifest["versions"]


def test_stale_snapshot_is_served_with_a_warning(tmp_path, caplog) -> None:
    store, _, vectors = build(tmp_path, n=20)
    store.upsert(make_docs(5, prefix="new"), unit_vectors(5, seed=4), model_fingerprint=MODEL)
    store.close()
    with caplog.at_level(logging.WARNING), EmbeddedStore.open(tmp_path / "idx") as reader:
        assert "older than the documents" in caplog.text
        assert len(reader.recall(vectors[0], 100)) == 20  # the old snapshot
        assert reader.fetch(["new00001"]).ids == ["new00001"]  # newer ids come from SQLite
        with pytest.raises(StoreError, match="read-only"):
            reader.upsert(make_docs(1), unit_vectors(1), model_fingerprint=MODEL)


def test_finalize_is_idempotent_and_prunes(tmp_path) -> None:
    store, _, _ = build(tmp_path, n=20)
    name = store.info.extra["snapshot"]["name"]
    store.finalize()
    assert store.info.extra["snapshot"]["name"] == name
    for i in range(3):
        store.upsert(make_docs(1, prefix=f"x{i}"), unit_vectors(1), model_fingerprint=MODEL)
        store.finalize()
    assert len(list((tmp_path / "idx" / "snapshots").iterdir())) == 2  # current + previous
    assert len(store.recall(unit_vectors(1)[0], 100)) == 23
    store.close()


def test_interrupted_finalize_keeps_the_previous_snapshot(tmp_path, monkeypatch) -> None:
    store, docs, vectors = build(tmp_path, n=40)
    store.upsert(make_docs(10, prefix="late"), unit_vectors(10, seed=2), model_fingerprint=MODEL)

    def crash(*args, **kwargs):
        raise RuntimeError("killed while building the index")

    monkeypatch.setattr(embedded.ann_lib, "build_index", crash)
    with pytest.raises(RuntimeError, match="killed"):
        store.finalize()
    store.close()
    leftovers = [p.name for p in (tmp_path / "idx" / "snapshots").iterdir()]
    assert all(not name.startswith(".tmp") for name in leftovers)
    with EmbeddedStore.open(tmp_path / "idx") as reader:
        assert len(reader.recall(vectors[0], 100)) == 40
        assert reader.recall(vectors[0], 1).ids == [docs[0].id]
    monkeypatch.undo()
    with EmbeddedStore.create_or_open(tmp_path / "idx") as writer:
        writer.finalize()
        assert len(writer.recall(vectors[0], 100)) == 50


def test_refresh_picks_up_a_new_snapshot(tmp_path) -> None:
    writer, _, vectors = build(tmp_path, n=10)
    reader = EmbeddedStore.open(tmp_path / "idx")
    assert len(reader.recall(vectors[0], 100)) == 10
    assert reader.refresh() is False
    writer.upsert(make_docs(5, prefix="n"), unit_vectors(5), model_fingerprint=MODEL)
    writer.finalize()
    assert reader.refresh() is True
    assert len(reader.recall(vectors[0], 100)) == 15
    reader.close()
    writer.close()


def test_second_writer_is_refused(tmp_path) -> None:
    writer = EmbeddedStore.create_or_open(tmp_path / "idx")
    with pytest.raises(StoreError, match="another process"):
        EmbeddedStore.create_or_open(tmp_path / "idx")
    writer.close()
    EmbeddedStore.create_or_open(tmp_path / "idx").close()


def test_empty_store_finalizes_and_recalls_nothing(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx", dim=DIM)
    store.finalize()
    assert len(store.recall(unit_vectors(1)[0], 5)) == 0
    assert store.recall_bm25("anything", 5) == []
    store.close()


# --- fetch, precomputed, bm25 --------------------------------------------------------------------


def test_fetch_in_order_and_unknown_ids(tmp_path) -> None:
    store, docs, vectors = build(tmp_path, n=30)
    got = store.fetch([docs[7].id, docs[2].id])
    assert got.ids == [docs[7].id, docs[2].id]
    np.testing.assert_allclose(got.vectors, vectors[[7, 2]], atol=1e-6)
    assert not got.recall_scores.any()
    with pytest.raises(StoreError, match="'ghost'"):
        store.fetch([docs[0].id, "ghost"])
    assert len(store.fetch([])) == 0
    store.close()


def test_precomputed_round_trip(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx", codec="int8")
    docs, vectors = make_docs(25), unit_vectors(25)
    pre = np.random.default_rng(1).standard_normal((25, 6)).astype(np.float32)
    store.upsert(docs, vectors, model_fingerprint=MODEL, precomputed=pre)
    before = store.fetch([docs[4].id, docs[9].id])  # from SQLite (no snapshot yet)
    np.testing.assert_array_equal(before.precomputed, pre[[4, 9]])
    store.finalize()
    got = store.recall(vectors[4], 3)
    np.testing.assert_array_equal(got.precomputed[0], pre[4])
    np.testing.assert_array_equal(store.fetch([docs[9].id]).precomputed, pre[[9]])
    with pytest.raises(ConfigurationError, match="size 6"):
        store.upsert(docs[:1], vectors[:1], model_fingerprint=MODEL, precomputed=pre[:1, :3])
    store.close()


def test_mixed_precomputed_refuses_to_finalize(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx")
    store.upsert(
        make_docs(3), unit_vectors(3), model_fingerprint=MODEL, precomputed=np.ones((3, 4))
    )
    store.upsert(make_docs(2, prefix="z"), unit_vectors(2), model_fingerprint=MODEL)
    with pytest.raises(StoreError, match="some documents have precomputed"):
        store.finalize()
    store.close()


def test_bm25_finds_the_rare_word_and_filters(tmp_path) -> None:
    store = EmbeddedStore.create_or_open(tmp_path / "idx")
    docs = make_docs(50)
    docs[17] = Document(
        id=docs[17].id, title="Odd", text="a xylophonist walks in", metadata={"lang": "en"}
    )
    store.upsert(docs, unit_vectors(50), model_fingerprint=MODEL)
    store.finalize()
    assert store.recall_bm25("xylophonist", 5)[0][0] == docs[17].id
    assert store.recall_bm25("odd", 5)[0][0] == docs[17].id  # the title is indexed too
    assert store.recall_bm25("xylophonist", 5, filters={"lang": "de"}) == []
    hits = store.recall_bm25("topic3", 100, filters={"lang": "en"})
    assert hits and all(int(doc_id[1:]) % 2 == 1 for doc_id, _ in hits)
    store.close()


def test_store_without_bm25(tmp_path) -> None:
    store, _, _ = build(tmp_path, n=5, bm25=False)
    with pytest.raises(StoreError, match="without a BM25 index"):
        store.recall_bm25("title", 3)
    store.close()


# --- concurrency and crashes ---------------------------------------------------------------------


def test_concurrent_reads(tmp_path) -> None:
    build(tmp_path, n=500, ann="hnsw16")[0].close()
    store = EmbeddedStore.open(tmp_path / "idx")
    queries = unit_vectors(40, seed=11)
    expected = [store.recall(q, 5).ids for q in queries]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for q, ids in zip(queries, expected, strict=True):
                assert store.recall(q, 5).ids == ids
                store.fetch(ids)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store.close()


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from twinbert_search.documents import Document
    from twinbert_search.stores.embedded import EmbeddedStore

    path, log = sys.argv[1], sys.argv[2]
    store = EmbeddedStore.create_or_open(path)
    rng = np.random.default_rng(0)
    batch = 0
    while True:
        docs = [Document(id=f"b{batch:05d}-{i:03d}", text="x " * 200) for i in range(200)]
        vectors = rng.standard_normal((200, 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert(docs, vectors, model_fingerprint="m" * 64)
        with open(log, "a") as f:
            f.write(f"{batch}\\n")
        batch += 1
    """
)


def test_sigkill_mid_run_loses_at_most_the_batch_in_flight(tmp_path) -> None:
    path, log = tmp_path / "idx", tmp_path / "committed.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(log)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and len(log.read_text().split()) >= 8:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the child never committed 8 batches")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    committed = {int(b) for b in log.read_text().split()}

    conn = sqlite3.connect(path / "docs.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = [row[0] for row in conn.execute("SELECT id FROM docs")]
    conn.close()
    assert len(ids) == len(set(ids))
    per_batch: dict[int, int] = {}
    for doc_id in ids:
        batch = int(doc_id[1:6])
        per_batch[batch] = per_batch.get(batch, 0) + 1
    assert committed <= set(per_batch)  # every batch logged as committed is there...
    assert set(per_batch.values()) == {200}  # ...and every batch present is whole
    assert len(per_batch) - len(committed) <= 1  # at most one committed but not yet logged

    with EmbeddedStore.create_or_open(path) as store:
        info = store.info
        assert info.count == len(ids)  # the meta count agrees with the rows
        assert info.extra["data_generation"] == len(per_batch)
        store.finalize()
        probe = store.fetch(["b00003-007"])
        assert store.recall(probe.vectors[0], 1).ids == ["b00003-007"]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(4, 3),
        np.arange(5, dtype=np.int8),
        np.zeros((0, 3), np.float32),
        np.asfortranarray(np.arange(6, dtype=np.float16).reshape(2, 3)),
    ],
    ids=["float32-2d", "int8-1d", "empty", "fortran"],
)
def test_snapshot_arrays_load_mapped_read_only_and_equal(tmp_path: Path, array) -> None:
    from twinbert_search.stores.embedded.reader import _load_npy

    path = tmp_path / "a.npy"
    np.save(path, array)
    loaded = _load_npy(path)
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)
    if loaded.size:
        with pytest.raises(ValueError):
            loaded[0] = 1  # the snapshot is immutable
