"""Step 8: each student as a search serves it. One query encoding, with the student's own
tower, both recalls (hybrid with BM25) and feeds the crossing layer; the teacher scores the
top candidates of those lists too, so teacher and student compare on the same candidates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twinbert_search.training.recipe.candidates import hybrid_rows
from twinbert_search.training.recipe.config import StudentSpec, served_specs
from twinbert_search.training.recipe.context import Context, read_json, top, write_json
from twinbert_search.training.recipe.scores import OnnxCrossEncoder
from twinbert_search.training.recipe.timing import student_runtime

if TYPE_CHECKING:
    from twinbert_search.runtime.model import TwinBertRuntime

__all__ = ["SERVED_RECALL", "SERVED_SCORES", "served_runtime", "step_served"]

SERVED_RECALL = "served_recall.json"
SERVED_SCORES = "ce_served_scores.json"


def served_runtime(ctx: Context, spec: StudentSpec) -> TwinBertRuntime:
    """The student as served: its int8 query graph when exported (the fast one), else fp32."""
    folder = ctx.out / spec.name
    return student_runtime(folder, (folder / "onnx" / "query_encoder.int8.onnx").is_file())


def _served_lists(
    ctx: Context, runtime: TwinBertRuntime, test: Sequence[dict[str, Any]]
) -> dict[str, list[int]]:
    """Hybrid recall with the student's own query vector: its exact kNN fused with BM25 (RRF),
    built as `candidates` builds the default model's, which `Searcher.search(hybrid=True)`
    does over an index."""
    cfg, cand = ctx.cfg, ctx.load_candidates()
    qvec = runtime.encode_queries([q["text"] for q in test])
    out = {}
    for j, q in enumerate(test):
        dense = top(cand["dvec"] @ qvec[j], cfg.deep_depth).tolist()
        out[q["id"]] = hybrid_rows(ctx, dense, q["bm25"])[: cfg.deep_depth]
    return out


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
    cand = ctx.load_candidates()
    test = [q for q in cand["queries"] if q["split"] == "test"]
    lists = {
        spec.name: _served_lists(ctx, served_runtime(ctx, spec), test) for spec in served_specs(cfg)
    }
    write_json(ctx.work / SERVED_RECALL, lists)
    known = read_json(ctx.work / "ce_test_scores.json")["rows"]
    path = ctx.work / SERVED_SCORES
    saved: dict[str, Any] = read_json(path) if path.is_file() else {}
    ce = None
    new_pairs, seconds, last = 0, 0.0, time.perf_counter()
    for q in test:
        key = f"test:{q['id']}"
        have = dict(zip(known[key]["rows"], known[key]["ce"], strict=True))
        if key in saved:
            have.update(zip(saved[key]["rows"], saved[key]["ce"], strict=True))
        wanted = {r for rows in lists.values() for r in rows[q["id"]][: cfg.rerank_depth]}
        need = sorted(wanted - have.keys())
        if need:
            if ce is None:
                ce = OnnxCrossEncoder(
                    ctx.out / "teacher", cfg.teacher_threads, int8=cfg.teacher_int8
                )
            t0 = time.perf_counter()
            scores = ce.score([(q["text"], ctx.doc_text(r)) for r in need])
            seconds += time.perf_counter() - t0
            have.update(zip(need, scores.tolist(), strict=True))
            new_pairs += len(need)
        saved[key] = {"rows": list(have), "ce": list(have.values())}
        if time.perf_counter() - last > 60:
            write_json(path, saved)
            last = time.perf_counter()
    write_json(path, saved)
    return {"new_pairs": new_pairs, "scoring_seconds": seconds}
