"""Training signal from a corpus alone: lenient reading and pseudo-queries of each kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, InputError
from twinbert_search.training.corpus import (
    keyphrase_query,
    make_pseudo_queries,
    read_documents,
)


def _write(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_title_without_text_is_a_document_of_its_title(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "c",
        [
            {"_id": "1", "title": "Parallel sorting networks", "text": ""},
            {"_id": "2", "title": "", "text": "Stacks and queues."},
            {"_id": "3", "title": "", "text": "  "},  # nothing to search: skipped
        ],
    )
    docs = read_documents(folder)
    assert list(docs) == ["1", "2"]
    assert docs["1"].encoding_text == "Parallel sorting networks"
    assert docs["2"].encoding_text == "Stacks and queues."


def test_bad_lines_name_the_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "c", [{"_id": "1", "text": "a b"}, {"_id": "1", "text": "c"}])
    with pytest.raises(InputError, match="duplicate id") as info:
        read_documents(folder)
    assert info.value.line == 2
    (folder / "corpus.jsonl").write_text('{"_id": "1", "text": "a"}\n{oops\n')
    with pytest.raises(InputError, match="malformed JSON"):
        read_documents(folder)


CORPUS = {
    "a": Document(
        "a",
        "Quicksort partitions an array around a pivot element. Its expected cost is n log n.",
        "Quicksort analysis",
    ),
    "b": Document("b", "", "Compilers for algebraic languages"),
    "c": Document("c", "Hash tables store keys. Collisions chain in buckets.", "Hashing methods"),
    "d": Document("d", "Storage allocation for recursive procedures is studied here.", ""),
}


def test_pseudo_queries_rotate_their_kinds_and_skip_what_would_be_a_string_match() -> None:
    queries = make_pseudo_queries(CORPUS, 10, seed=1)
    assert len(queries) == 4  # one per document
    kinds = {q.doc_id: q.kind for q in queries}
    # A title-only document never gives its own title; a one-sentence text gives no sentence.
    assert kinds["b"] == "keyphrase" and kinds["d"] == "keyphrase"
    for q in queries:
        doc = CORPUS[q.doc_id]
        assert q.id == f"pseudo:{q.kind}:{q.doc_id}"
        if q.kind == "title":
            assert q.text == doc.title
        elif q.kind == "sentence":
            assert q.text in doc.text and q.text != doc.text
    assert make_pseudo_queries(CORPUS, 10, seed=1) == queries  # seeded
    assert make_pseudo_queries(CORPUS, 0) == []
    with pytest.raises(ConfigurationError):
        make_pseudo_queries(CORPUS, 3, kinds=("abstract",))


def test_keyphrases_are_rare_content_words_in_document_order() -> None:
    common = "quicksort analysis partitions array around pivot element expected cost log"
    df = {w: 3 for w in common.split()} | {"quicksort": 1, "partitions": 1, "pivot": 1}
    text = keyphrase_query(CORPUS["a"], df, n_docs=4, words=3)
    assert text is not None
    words = text.split()
    assert len(words) == 3 and "the" not in words and "its" not in words
    assert words == ["quicksort", "partitions", "pivot"]
