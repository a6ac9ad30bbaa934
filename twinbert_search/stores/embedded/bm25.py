"""A BM25 index over document ids, a thin wrapper over bm25s.

bm25s does the scoring (Lucene variant, k1=0.9 and b=0.4 by default: the Anserini defaults
pyserini uses); this wrapper adds what the project needs on top: string ids, chunked
tokenization (token ids, not strings, are kept for the corpus, so a million documents fit),
quiet operation, k larger than the corpus, an optional row mask for filters, and the
deterministic (-score, id) tie order that TREC runs need.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

import bm25s
import numpy as np
from bm25s.tokenization import Tokenizer

from twinbert_search.errors import StoreError

IDS_FILE = "twinbert_bm25.json"
TOKENIZE_CHUNK = 10_000
FORMAT_VERSION = 1


def _chunks(items: Iterable[str], size: int) -> Iterable[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class BM25Index:
    """BM25 over documents identified by string ids; row i of the index is ids[i]."""

    def __init__(
        self,
        ids: list[str],
        retriever: bm25s.BM25 | None,
        *,
        stopwords: str | list[str] | None = "en",
    ) -> None:
        self.ids = ids
        self.stopwords = stopwords
        self._retriever = retriever  # None for an empty corpus
        self._row_of: dict[str, int] | None = None  # built on first use of scores_for
        self._last: tuple[str, np.ndarray] | None = None  # the last query's scores
        self._tokenizer = Tokenizer(stopwords=stopwords)
        if retriever is not None:
            # Queries map onto the corpus vocabulary; unknown words are dropped.
            self._tokenizer.word_to_id = retriever.vocab_dict

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        texts: Iterable[str],
        *,
        stopwords: str | list[str] | None = "en",
        k1: float = 0.9,
        b: float = 0.4,
    ) -> BM25Index:
        """Index `texts` (aligned with `ids`; any iterable, consumed in chunks)."""
        ids = list(ids)
        tokenizer = Tokenizer(stopwords=stopwords)
        token_ids: list[list[int]] = []
        for chunk in _chunks(texts, TOKENIZE_CHUNK):
            token_ids.extend(
                tokenizer.tokenize(chunk, update_vocab=True, return_as="ids", show_progress=False)
            )
        if len(token_ids) != len(ids):
            raise StoreError(f"BM25 build got {len(ids)} ids but {len(token_ids)} texts")
        if not ids:
            return cls([], None, stopwords=stopwords)
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index((token_ids, tokenizer.get_vocab_dict()), show_progress=False)
        return cls(ids, retriever, stopwords=stopwords)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every row for `query` (zeros where no query term occurs); read-only.

        The last query's scores are kept: a hybrid search scores its query for recall and
        again for a rerank that fuses BM25, and the second time costs nothing.
        """
        last = self._last
        if last is not None and last[0] == query:
            return last[1]
        if self._retriever is None:
            return np.zeros(0, np.float32)
        [query_ids] = self._tokenizer.tokenize(
            [query], update_vocab=False, return_as="ids", show_progress=False, allow_empty=False
        )
        if not query_ids:
            scores = np.zeros(len(self.ids), np.float32)
        else:
            scores = np.asarray(self._retriever.get_scores_from_ids(query_ids))
        scores.setflags(write=False)
        self._last = (query, scores)  # one tuple, swapped whole: safe across threads
        return scores

    def scores_for(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of the given ids, in order (0 for an id the index does not hold)."""
        if self._row_of is None:
            self._row_of = {doc_id: row for row, doc_id in enumerate(self.ids)}
        out = np.zeros(len(ids), np.float32)
        rows = np.fromiter((self._row_of.get(d, -1) for d in ids), np.int64, len(ids))
        known = rows >= 0
        if known.any():
            out[known] = self.scores(query)[rows[known]]
        return out

    def search(
        self, query: str, k: int, *, mask: np.ndarray | None = None
    ) -> list[tuple[str, float]]:
        """Up to k (id, score) hits with score > 0, ordered by (-score, id).

        `mask` (bool or 0/1 per row) keeps only the rows it marks, for filtered search.
        """
        if k <= 0 or not self.ids:
            return []
        scores = self.scores(query)
        if mask is not None:
            scores = np.where(np.asarray(mask, dtype=bool), scores, 0)
        rows = np.flatnonzero(scores > 0)
        if len(rows) > k:
            # Keep every row tied with the k-th score, then break ties by id below.
            kth = np.partition(scores[rows], len(rows) - k)[len(rows) - k]
            rows = rows[scores[rows] >= kth]
        ranked = sorted((-float(scores[row]), self.ids[row]) for row in rows)[:k]
        return [(doc_id, -neg) for neg, doc_id in ranked]

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        return [self.search(query, k) for query in queries]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._retriever is not None:
            self._retriever.save(directory, show_progress=False)
        payload = {"format_version": FORMAT_VERSION, "stopwords": self.stopwords, "ids": self.ids}
        (directory / IDS_FILE).write_text(json.dumps(payload, ensure_ascii=False))

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = False) -> BM25Index:
        directory = Path(directory)
        ids_path = directory / IDS_FILE
        if not ids_path.is_file():
            raise StoreError(f"{directory} is not a BM25 index (no {IDS_FILE})")
        payload = json.loads(ids_path.read_text())
        ids = payload["ids"]
        retriever = None
        if ids:
            retriever = bm25s.BM25.load(directory, mmap=mmap, show_progress=False)
        return cls(ids, retriever, stopwords=payload.get("stopwords", "en"))
