"""What every step reads: the data, the base model, the artefacts under OUT/work; and the
small helpers the steps share (atomic JSON, top-n, z-scores, ordering rows into runs).

Documents are rows: positions in the corpus ids sorted, so a row's order is its id's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twinbert_search.training.recipe.artifacts import INDEX_DIR, WORK_DIR
from twinbert_search.training.recipe.config import RecipeConfig
from twinbert_search.training.recipe.jsonio import read_json, write_json
from twinbert_search.training.recipe.records import Candidates, Query

if TYPE_CHECKING:
    from twinbert_search.stores.embedded.bm25 import BM25Index
    from twinbert_search.training.recipe.signals import Collection

__all__ = [
    "Context",
    "order_rows",
    "ranked",
    "read_json",
    "top",
    "top_matches",
    "with_tail",
    "write_json",  # re-exported from `jsonio`
    "zscore",
]


def zscore(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`x` standardised by the mean and deviation of `ref` (a query's candidates)."""
    return (x - ref.mean()) / max(float(ref.std()), 1e-6)


def top(scores: np.ndarray, n: int) -> np.ndarray:
    """The rows of the `n` best scores, best first, ties broken by row."""
    n = min(n, len(scores))
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.lexsort((part, -scores[part]))]


def top_matches(scores: np.ndarray, n: int) -> np.ndarray:
    """The rows of the `n` best positive scores (BM25: the documents sharing a query term),
    as the stores' BM25 recall returns them: a row scoring 0 is no match, not a candidate."""
    rows = top(scores, n)
    return rows[scores[rows] > 0]


def with_tail(reranked: Sequence[int], recall: Sequence[int]) -> list[int]:
    """The reranked candidates, then the rest of the recall list in its order."""
    seen = set(reranked)
    return [*reranked, *(r for r in recall if r not in seen)]


def order_rows(rows: Sequence[int], scores: np.ndarray, doc_ids: Sequence[str]) -> list[int]:
    """`rows` by descending score, ties broken by document id."""
    return [rows[i] for i in sorted(range(len(rows)), key=lambda i: (-scores[i], doc_ids[rows[i]]))]


class Context:
    """What every step reads: the data, the base model, the step artefacts under OUT/work."""

    def __init__(self, cfg: RecipeConfig) -> None:
        from twinbert_search.runtime.models import default_checkpoint, resolve_model
        from twinbert_search.training.data import load_training_data

        self.cfg = cfg
        self.out = cfg.out_dir
        self.work = self.out / WORK_DIR
        self.work.mkdir(parents=True, exist_ok=True)
        self.train = load_training_data(cfg.data, "train")
        self.test = load_training_data(cfg.data, "test")
        self.corpus = self.train.corpus
        self.doc_ids = sorted(self.corpus)
        self.row_of = {d: i for i, d in enumerate(self.doc_ids)}
        self.base_model = (
            Path(cfg.base_model) if cfg.base_model else resolve_model(None, build_default=True)
        )
        self.checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint()
        self._bm25: BM25Index | None = None
        self._cand: Candidates | None = None

    @property
    def index_dir(self) -> Path:
        return Path(self.cfg.index) if self.cfg.index else self.out / INDEX_DIR

    @property
    def bm25(self) -> BM25Index:
        """BM25 over the corpus in row order, built on first use."""
        from twinbert_search.training.data import build_bm25

        if self._bm25 is None:
            ordered = {d: self.corpus[d] for d in self.doc_ids}
            self._bm25 = build_bm25(ordered)
        return self._bm25

    def doc_text(self, row: int) -> str:
        return self.corpus[self.doc_ids[row]].encoding_text

    def collection(self) -> Collection:
        """The corpus as the served setting sees it: stored vectors and BM25, by row."""
        from twinbert_search.training.recipe.signals import Collection

        return Collection(self.doc_ids, self.load_candidates().dvec, self.bm25, self.doc_text)

    def split(self, name: str) -> list[Query]:
        """The candidates step's queries of one split (train, val, test, pseudo, tpseudo)."""
        return self.load_candidates().split(name)

    def load_candidates(self) -> Candidates:
        """The `candidates` step's record, read once."""
        if self._cand is None:
            self._cand = Candidates.load(self.work)
        return self._cand

    def features(self, qi: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """z-scored BM25 and cosine of query `qi` for doc rows (stats over its top candidates)."""
        cand = self.load_candidates()
        q = cand.queries[qi]
        ref = np.asarray(q.recall[: self.cfg.rerank_depth], dtype=np.int64)
        bm = self.bm25.scores(q.text).astype(np.float32)
        cos = cand.dvec @ cand.qvec[qi]
        return {
            "bm25": zscore(bm[rows], bm[ref]).astype(np.float32),
            "dense": zscore(cos[rows], cos[ref]).astype(np.float32),
        }


def ranked(ctx: Context, rows: Sequence[int]) -> list[tuple[str, float]]:
    """A ranked row list as a run (doc id, descending rank score) for `evaluate`."""
    return [(ctx.doc_ids[r], float(len(rows) - i)) for i, r in enumerate(rows)]
