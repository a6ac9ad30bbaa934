"""Steps 1 and 2: the base model's index of the corpus, then the candidates every later step
reads: query sets (train, validation, test, pseudo), query and document vectors, and each
query's recall lists (dense, BM25, hybrid RRF), with the rerank recall picked on validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.search import reciprocal_rank_fusion
from twinbert_search.training.recipe.context import Context, ranked, top, top_matches
from twinbert_search.training.recipe.records import SPLITS, Candidates, Query

__all__ = ["hybrid_rows", "step_candidates", "step_index"]


def hybrid_rows(ctx: Context, dense: Sequence[int], sparse: Sequence[int]) -> list[int]:
    """Reciprocal rank fusion of a dense and a BM25 row list (the search pipeline's RRF).

    Fused by document id; rows follow the sorted ids, so RRF's ties (by id) fall as by row.
    """
    fused = reciprocal_rank_fusion(
        [[ctx.doc_ids[r] for r in dense], [ctx.doc_ids[r] for r in sparse]]
    )
    return [ctx.row_of[d] for d, _ in fused]


def step_index(ctx: Context) -> dict[str, Any]:
    """Reuse the given index of the base model, or build one with it."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.stores.embedded import EmbeddedStore

    runtime = TwinBertRuntime.load(ctx.base_model)
    if (ctx.index_dir / "store.json").is_file():  # the embedded store's own manifest
        store = EmbeddedStore.open(ctx.index_dir)
        try:
            store.ensure_model(runtime.fingerprint)
            count = store.info.count
        finally:
            store.close()
        if count != len(ctx.corpus):
            raise ConfigurationError(
                f"{ctx.index_dir} holds {count} documents, the corpus {len(ctx.corpus)}"
            )
        return {"index": str(ctx.index_dir), "reused": True, "documents": count}
    from twinbert_search.ingest.indexing import index_documents

    store = EmbeddedStore.create_or_open(ctx.index_dir, dim=runtime.dim, codec="float32")
    try:
        report = index_documents(
            (ctx.corpus[d] for d in ctx.doc_ids), store, runtime, progress=False
        )
        store.finalize()
    finally:
        store.close()
    return {"index": str(ctx.index_dir), "reused": False, **report.to_dict()}


# --- step 2: candidates ----------------------------------------------------------------------


def step_candidates(ctx: Context) -> dict[str, Any]:
    """Query sets, query and document vectors, recall lists; pick the recall for reranking."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.stores.embedded import EmbeddedStore

    cfg = ctx.cfg
    store = EmbeddedStore.open(ctx.index_dir, with_documents=False)
    try:
        dvec = np.ascontiguousarray(store.fetch(ctx.doc_ids).vectors, dtype=np.float32)
    finally:
        store.close()
    queries = _queries(ctx)
    _mark_overlap(ctx, queries)
    runtime = TwinBertRuntime.load(ctx.base_model)
    qvec = runtime.encode_queries([q.text for q in queries])
    for i, q in enumerate(queries):
        depth = max(cfg.deep_depth if q.split == "test" else cfg.rerank_depth, cfg.rerank_depth)
        q.dense = top(dvec @ qvec[i], depth).tolist()
        q.bm25 = top_matches(ctx.bm25.scores(q.text), depth).tolist()
        q.hybrid = hybrid_rows(ctx, q.dense, q.bm25)[:depth]
    choice, recall_val = _pick_recall(ctx, queries)
    for q in queries:
        q.recall = q.lists(choice)
    Candidates(queries, choice, qvec, dvec).save(ctx.work)
    counts = {s: sum(q.split == s for q in queries) for s in SPLITS}
    overlap = {s: sum(bool(q.overlap) for q in queries if q.split == s) for s in SPLITS}
    return {"recall": choice, "validation": recall_val, "queries": counts, "overlap": overlap}


def _queries(ctx: Context) -> list[Query]:
    """Every query of the run: train and validation (a seeded split of the labelled train
    queries), test, pseudo-queries for the students and the teacher's own pseudo-queries."""
    from twinbert_search.training.corpus import make_pseudo_queries
    from twinbert_search.training.data import pseudo_queries, split_validation

    cfg = ctx.cfg
    train_ids, val_ids = split_validation(
        ctx.train.labelled_query_ids(), max_queries=cfg.validation_queries, seed=cfg.seed
    )
    queries: list[Query] = []
    for split, ids, data in (
        ("train", train_ids, ctx.train),
        ("val", val_ids, ctx.train),
        ("test", ctx.test.labelled_query_ids(), ctx.test),
    ):
        for qid in ids:
            queries.append(Query(qid, data.queries[qid].text, split, list(data.positives(qid))))
    for pq in pseudo_queries(ctx.corpus, cfg.pseudo_queries, ctx.bm25, depth=1, seed=cfg.seed):
        queries.append(Query(pq.id, pq.text, "pseudo", list(pq.positives)))
    for tq in make_pseudo_queries(ctx.corpus, cfg.teacher_pseudo_queries, seed=cfg.seed):
        queries.append(Query(tq.id, tq.text, "tpseudo", [tq.doc_id], kind=tq.kind))
    return queries


def _pick_recall(ctx: Context, queries: list[Query]) -> tuple[str, dict[str, Any]]:
    """The rerank candidates: the configured recall, or (auto) the one with the better
    Recall@100 on validation queries; with every recall's validation metrics."""
    val = [q for q in queries if q.split == "val"]
    qrels = {q.id: q.qrels() for q in val}
    recall_val = {}
    for kind in ("dense", "bm25", "hybrid"):
        run = {q.id: ranked(ctx, q.lists(kind)) for q in val}
        recall_val[kind] = evaluate(qrels, run, ("recall@100", "ndcg@10"))
    choice = ctx.cfg.recall
    if choice == "auto":
        choice = max(("dense", "hybrid"), key=lambda k: recall_val[k]["recall@100"])
    if choice not in ("dense", "hybrid", "bm25"):
        raise ConfigurationError(f"recall must be dense, hybrid, bm25 or auto, got {choice!r}")
    return choice, recall_val


def _mark_overlap(ctx: Context, queries: list[Query]) -> None:
    """Flag validation and test queries with a positive that is a training positive.

    Validation queries against the positives of the queries trained on (the train split);
    test queries against every train qrel's positives, as `eval --train-qrels` splits them.
    The no-overlap queries measure what a model learned rather than what it memorised.
    """
    trained = {d for q in queries if q.split == "train" for d in q.positives}
    every = {d for qid in ctx.train.labelled_query_ids() for d in ctx.train.positives(qid)}
    for q in queries:
        if q.split in ("val", "test"):
            seen = trained if q.split == "val" else every
            q.overlap = any(d in seen for d in q.positives)
