"""The served setting in numpy: a model's own hybrid recall and the rerank fusion's signals.

A search over an index encodes the query once; that vector recalls (kNN, fused with BM25 by
reciprocal rank) and feeds the crossing layer. The served score (`runtime.fusion`) then
combines the crossing logit with the recall stage's own signals: the fused RRF score, BM25
and the cosine. This module computes exactly those for any collection the recipe evaluates
(SciFact, and the out-of-domain one), so the fusion weights are tuned (validation) and
measured (test) on the lists and signals `Searcher.search(hybrid=True)` would see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.search import reciprocal_rank_fusion
from twinbert_search.training.fusion import FusionList, tune_rerank_fusion
from twinbert_search.training.recipe.context import top, top_matches

if TYPE_CHECKING:
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.stores.embedded.bm25 import BM25Index

__all__ = ["Collection", "ServedList", "served_lists", "tune_served_fusion"]


@dataclass
class Collection:
    """Documents as rows (ids sorted), their stored vectors and BM25 over them in row order."""

    doc_ids: Sequence[str]
    vectors: np.ndarray
    bm25: BM25Index
    text: Callable[[int], str]


@dataclass
class ServedList:
    """One query's served candidates (hybrid recall order, `depth` deep) and their signals."""

    query_id: str
    rows: list[int]
    signals: dict[str, np.ndarray]


def hybrid(
    coll: Collection, dense: Sequence[int], sparse: Sequence[int]
) -> tuple[list[int], np.ndarray]:
    """Rows and RRF scores of the fused dense and BM25 lists (the search pipeline's RRF)."""
    ids = coll.doc_ids
    fused = reciprocal_rank_fusion([[ids[r] for r in dense], [ids[r] for r in sparse]])
    row_of = {ids[r]: r for r in (*dense, *sparse)}
    return [row_of[d] for d, _ in fused], np.asarray([s for _, s in fused], np.float32)


def served_lists(
    coll: Collection,
    runtime: TwinBertRuntime,
    queries: Sequence[tuple[str, str]],
    *,
    depth: int,
    recall_depth: int,
) -> dict[str, tuple[list[int], ServedList]]:
    """query id -> (its whole hybrid recall list, `recall_depth` deep; its served top `depth`
    with the fusion signals), for (id, text) queries, with `runtime`'s query vectors."""
    qvec = runtime.encode_queries([text for _, text in queries])
    out = {}
    for (qid, text), qv in zip(queries, qvec, strict=True):
        bm25 = coll.bm25.scores(text)
        dense = top(coll.vectors @ qv, recall_depth).tolist()
        sparse = top_matches(bm25, recall_depth).tolist()
        rows, rrf = hybrid(coll, dense, sparse)
        rows, rrf = rows[:recall_depth], rrf[:recall_depth]
        head = rows[:depth]
        docs = coll.vectors[head]
        norms = np.maximum(np.linalg.norm(docs, axis=1) * np.linalg.norm(qv), 1e-12)
        signals = {
            "crossing": runtime.crossing.logits(qv, docs),
            "recall": rrf[:depth],
            "bm25": bm25[head].astype(np.float32),
            "cosine": (docs @ qv / norms).astype(np.float32),
        }
        out[qid] = (rows, ServedList(qid, head, signals))
    return out


def tune_served_fusion(
    coll: Collection,
    lists: Mapping[str, ServedList],
    qrels: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    """`tune_rerank_fusion` on served lists (validation queries only)."""
    items = [
        FusionList(qid, [coll.doc_ids[r] for r in x.rows], x.signals) for qid, x in lists.items()
    ]
    return tune_rerank_fusion(items, qrels)
