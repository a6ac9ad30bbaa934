"""BM25 wrapper: rare words, tie order, k beyond the corpus, masks, save/load."""

from __future__ import annotations

import pytest

from twinbert_search.errors import StoreError
from twinbert_search.stores.embedded.bm25 import BM25Index

IDS = ["d1", "d2", "d3", "d4", "d5"]
TEXTS = [
    "the cat sat on the mat",
    "a dog chased the cat around the garden",
    "quantum chromodynamics describes the strong interaction",
    "the weather today is sunny and warm",
    "dogs and cats are common household pets",
]


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return BM25Index.build(IDS, TEXTS)


def test_rare_word_finds_its_document(index: BM25Index) -> None:
    hits = index.search("chromodynamics", 10)
    assert [doc_id for doc_id, _ in hits] == ["d3"]
    assert hits[0][1] > 0


def test_only_positive_scores_and_k_beyond_corpus(index: BM25Index) -> None:
    hits = index.search("cat", 100)
    assert {doc_id for doc_id, _ in hits} == {"d1", "d2"}
    assert all(score > 0 for _, score in hits)
    assert index.search("zzzunknown", 3) == []
    assert index.search("the and", 3) == []  # stopwords only


def test_scores_descend(index: BM25Index) -> None:
    scores = [score for _, score in index.search("cat dog garden", 5)]
    assert scores == sorted(scores, reverse=True)


def test_ties_are_ordered_by_id() -> None:
    ids = ["c", "a", "b", "d"]
    texts = ["apple pie", "apple pie", "apple pie", "banana split"]
    ranked = BM25Index.build(ids, texts).search("apple", 2)
    assert [doc_id for doc_id, _ in ranked] == ["a", "b"]
    assert ranked[0][1] == ranked[1][1]


def test_mask_restricts_hits(index: BM25Index) -> None:
    mask = [False, True, False, False, False]
    assert [doc_id for doc_id, _ in index.search("cat", 5, mask=mask)] == ["d2"]


def test_search_batch(index: BM25Index) -> None:
    batch = index.search_batch(["chromodynamics", "weather"], 2)
    assert [hits[0][0] for hits in batch] == ["d3", "d4"]


def test_save_and_load(index: BM25Index, tmp_path) -> None:
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    for query in ("cat", "chromodynamics", "dogs pets", "nothing here"):
        assert loaded.search(query, 5) == index.search(query, 5)
    mapped = BM25Index.load(tmp_path / "bm25", mmap=True)
    assert mapped.search("cat", 5) == index.search("cat", 5)


def test_default_parameters_are_anserini() -> None:
    retriever = BM25Index.build(IDS, TEXTS)._retriever
    assert (retriever.k1, retriever.b) == (0.9, 0.4)


def test_empty_corpus(tmp_path) -> None:
    empty = BM25Index.build([], [])
    assert empty.search("anything", 5) == []
    empty.save(tmp_path / "e")
    assert BM25Index.load(tmp_path / "e").search("anything", 5) == []


def test_generator_texts_and_length_mismatch() -> None:
    index = BM25Index.build(["x", "y"], (t for t in ["red fox", "blue whale"]))
    assert index.search("whale", 1)[0][0] == "y"
    with pytest.raises(StoreError):
        BM25Index.build(["x"], ["a b", "c d"])


def test_load_of_a_non_index_dir(tmp_path) -> None:
    with pytest.raises(StoreError, match="not a BM25 index"):
        BM25Index.load(tmp_path)


def test_quiet(capsys) -> None:
    BM25Index.build(IDS, TEXTS).search("cat", 2)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_scores_for_ids_reuse_the_last_query(index: BM25Index) -> None:
    """A hybrid search that fuses BM25 into its rerank scores the same query twice."""
    first = index.scores("cat")
    assert index.scores("cat") is first  # kept, not recomputed
    with pytest.raises(ValueError):
        first[0] = 1.0  # shared, so read-only
    hits = dict(index.search("cat", 3))
    assert len(hits) >= 2
    got = index.scores_for("cat", [*hits, "no-such-id"])
    assert got[:-1].tolist() == pytest.approx(list(hits.values()))
    assert got[-1] == 0.0
    assert index.scores("dog") is not first
