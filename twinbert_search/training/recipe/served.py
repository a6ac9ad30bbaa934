"""Step 8: each student as a search serves it. One query encoding, with the student's own
tower, both recalls (hybrid with BM25) and feeds the crossing layer; the teacher scores the
top candidates of those lists too, so teacher and student compare on the same candidates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbert_search.training.recipe.artifacts import (
    CE_SERVED_SCORES,
    CE_TEST_SCORES,
    SERVED_RECALL,
    TEACHER_DIR,
)
from twinbert_search.training.recipe.config import StudentSpec, served_specs
from twinbert_search.training.recipe.context import Context, read_json, top, write_json
from twinbert_search.training.recipe.records import Query, ScoredRows, TeacherScores
from twinbert_search.training.recipe.scores import OnnxCrossEncoder
from twinbert_search.training.recipe.signals import hybrid
from twinbert_search.training.recipe.timing import student_runtime

if TYPE_CHECKING:
    from twinbert_search.runtime.model import TwinBertRuntime

__all__ = [
    "SERVED_RECALL",
    "SERVED_SCORES",
    "read_served_scores",
    "served_runtime",
    "step_served",
]

SERVED_SCORES = CE_SERVED_SCORES


def served_runtime(ctx: Context, spec: StudentSpec) -> TwinBertRuntime:
    """The student as served: its int8 query graph when exported (the fast one), else fp32."""
    folder = ctx.out / spec.name
    return student_runtime(folder, (folder / "onnx" / "query_encoder.int8.onnx").is_file())


def _served_lists(
    ctx: Context, runtime: TwinBertRuntime, test: Sequence[Query]
) -> dict[str, list[int]]:
    """Hybrid recall with the student's own query vector: its exact kNN fused with BM25 by
    its hybrid fusion (`hybrid_fusion_of` its manifest), built as `signals.served_lists`
    builds it, which `Searcher.search(hybrid=True)` does over an index."""
    from twinbert_search.search.fusion import hybrid_fusion_of

    cfg, cand = ctx.cfg, ctx.load_candidates()
    fusion = hybrid_fusion_of(runtime.manifest.extra)
    qvec = runtime.encode_queries([q.text for q in test])
    out = {}
    for j, q in enumerate(test):
        cosines = cand.dvec @ qvec[j]
        dense = top(cosines, cfg.deep_depth).tolist()
        bm25 = ctx.bm25.scores(q.text)
        rows, _ = hybrid(ctx.doc_ids, dense, q.bm25, fusion, cosines, bm25, cfg.rerank_depth)
        out[q.id] = rows[: cfg.deep_depth]
    return out


def read_served_scores(path: Path) -> dict[str, ScoredRows]:
    """ce_served_scores.json: the teacher's scores of the served lists, by query key."""
    return {k: ScoredRows(v["rows"], v["ce"]) for k, v in read_json(path).items()}


def step_served(ctx: Context) -> dict[str, Any]:
    """TwinBERT as served: one query encoding recalls and reranks; the teacher on its list.

    In `evaluate`'s main table every student reranks the default model's recall, so its own
    query tower is an extra cost of its rerank stage. A search over the student's index
    encodes the query once, with the student's tower, and that vector both recalls and feeds
    the crossing layer. This step builds each student's own hybrid recall for the test queries
    and has the teacher score the top candidates of those lists too (pairs already scored in
    `teacher_rerank` are reused), so the teacher and the student are compared on the same
    candidates there as well.
    """
    cfg = ctx.cfg
    test = ctx.split("test")
    lists = {
        spec.name: _served_lists(ctx, served_runtime(ctx, spec), test) for spec in served_specs(cfg)
    }
    write_json(ctx.work / SERVED_RECALL, lists)
    known = TeacherScores.load(ctx.work / CE_TEST_SCORES)
    path = ctx.work / SERVED_SCORES
    saved = read_served_scores(path) if path.is_file() else {}
    ce = None
    new_pairs, seconds, last = 0, 0.0, time.perf_counter()
    for q in test:
        have = known.of(q).by_row()
        if q.key in saved:
            have.update(saved[q.key].by_row())
        wanted = {r for rows in lists.values() for r in rows[q.id][: cfg.rerank_depth]}
        need = sorted(wanted - have.keys())
        if need:
            if ce is None:
                ce = OnnxCrossEncoder(
                    ctx.out / TEACHER_DIR, cfg.teacher_threads, int8=cfg.teacher_int8
                )
            t0 = time.perf_counter()
            scores = ce.score([(q.text, ctx.doc_text(r)) for r in need])
            seconds += time.perf_counter() - t0
            have.update(zip(need, scores.tolist(), strict=True))
            new_pairs += len(need)
        saved[q.key] = ScoredRows(list(have), list(have.values()))
        if time.perf_counter() - last > 60:
            _write_served_scores(path, saved)
            last = time.perf_counter()
    _write_served_scores(path, saved)
    return {"new_pairs": new_pairs, "scoring_seconds": seconds}


def _write_served_scores(path: Path, saved: dict[str, ScoredRows]) -> None:
    write_json(path, {k: v.to_dict() for k, v in saved.items()})
