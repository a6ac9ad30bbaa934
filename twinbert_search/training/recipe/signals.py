"""The served setting in numpy: a model's own hybrid recall and the rerank fusion's signals.

A search over an index encodes the query once; that vector recalls (kNN, fused with BM25 by
the model's hybrid fusion, `search.fusion.hybrid_fusion_of`: RRF or z-scores) and feeds the
crossing layer. The served score (`runtime.fusion`) then combines the crossing logit with the
recall stage's own signals: the fused recall score, BM25 and the cosine. This module computes
exactly those for any collection the recipe evaluates (SciFact, and the out-of-domain one), so
the fusion weights are tuned (validation) and measured (test) on the lists and signals
`Searcher.search(hybrid=True)` would see. A z-score fusion depends on how deep the lists are,
so the served top `depth` is fused from each list's top `depth`, as `search` fuses its
`candidates`, however deep `recall_depth` (`eval --recall-depth`) extends the list below it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.evaluation.hybrid_tuning import HybridLists, tune_hybrid_fusion
from twinbert_search.search.fusion import HybridFusion, fuse_lists, hybrid_fusion_of
from twinbert_search.training.fusion import FusionList, tune_rerank_fusion
from twinbert_search.training.recipe.context import top, top_matches

if TYPE_CHECKING:
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.stores.embedded.bm25 import BM25Index

__all__ = [
    "Collection",
    "ServedList",
    "recall_label",
    "served_lists",
    "tune_served_fusion",
    "tune_served_hybrid",
]


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
    doc_ids: Sequence[str],
    dense: Sequence[int],
    sparse: Sequence[int],
    fusion: HybridFusion,
    dense_scores: np.ndarray,
    bm25_scores: np.ndarray,
    head: int | None = None,
) -> tuple[list[int], np.ndarray]:
    """Rows and fused scores of the dense and BM25 row lists (the search pipeline's fusion,
    `search.fusion.fuse_lists`: with `head`, the top `head` as a search of `head` candidates
    fuses them); `dense_scores` / `bm25_scores` hold every row's score."""
    ids = doc_ids
    fused = fuse_lists(
        fusion,
        ([ids[r] for r in dense], dense_scores[list(dense)].tolist()),
        ([ids[r] for r in sparse], bm25_scores[list(sparse)].tolist()),
        len(dense) + len(sparse),
        head,
    )
    row_of = {ids[r]: r for r in (*dense, *sparse)}
    return [row_of[d] for d, _ in fused], np.asarray([s for _, s in fused], np.float32)


def recall_label(extra: Mapping[str, Any], depth: int) -> str:
    """How a model's served hybrid recall is fused, for result tables: "zscore dense 1 bm25
    0.5 of its kNN and BM25, top 100 fused 100 deep"."""
    fused = hybrid_fusion_of(extra).describe()
    return f"{fused} of its kNN and BM25, top {depth} fused {depth} deep"


def served_lists(
    coll: Collection,
    runtime: TwinBertRuntime,
    queries: Sequence[tuple[str, str]],
    *,
    depth: int,
    recall_depth: int,
    fusion: HybridFusion | None = None,
) -> dict[str, tuple[list[int], ServedList]]:
    """query id -> (its whole hybrid recall list, `recall_depth` deep; its served top `depth`
    with the fusion signals), for (id, text) queries, with `runtime`'s query vectors; the
    lists fused by `fusion`, default the model's (`hybrid_fusion_of` its manifest)."""
    fusion = fusion or hybrid_fusion_of(runtime.manifest.extra)
    qvec = runtime.encode_queries([text for _, text in queries])
    out = {}
    for (qid, text), qv in zip(queries, qvec, strict=True):
        bm25 = coll.bm25.scores(text)
        cosines = coll.vectors @ qv
        dense = top(cosines, recall_depth).tolist()
        sparse = top_matches(bm25, recall_depth).tolist()
        rows, fused = hybrid(coll.doc_ids, dense, sparse, fusion, cosines, bm25, depth)
        rows, fused = rows[:recall_depth], fused[:recall_depth]
        head = rows[:depth]
        docs = coll.vectors[head]
        norms = np.maximum(np.linalg.norm(docs, axis=1) * np.linalg.norm(qv), 1e-12)
        signals = {
            "crossing": runtime.crossing.logits(qv, docs),
            "recall": fused[:depth],
            "bm25": bm25[head].astype(np.float32),
            "cosine": (docs @ qv / norms).astype(np.float32),
        }
        out[qid] = (rows, ServedList(qid, head, signals))
    return out


def tune_served_hybrid(
    coll: Collection,
    runtime: TwinBertRuntime,
    queries: Sequence[tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    depth: int,
) -> dict[str, Any]:
    """The model's hybrid fusion tuned on (id, text) validation queries over `depth`-deep
    lists (`evaluation.hybrid_tuning`, as `twinbert-search tune-hybrid` does over an index)."""
    qvec = runtime.encode_queries([text for _, text in queries])
    ids = coll.doc_ids
    lists = []
    for (qid, text), qv in zip(queries, qvec, strict=True):
        bm25 = coll.bm25.scores(text)
        cosines = coll.vectors @ qv
        dense = top(cosines, depth).tolist()
        sparse = top_matches(bm25, depth).tolist()
        lists.append(
            HybridLists(
                qid,
                ([ids[r] for r in dense], cosines[dense].tolist()),
                ([ids[r] for r in sparse], bm25[sparse].tolist()),
            )
        )
    return tune_hybrid_fusion(lists, qrels)


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
