"""Step 5: the teacher actually distilled: cross-encoder, BM25 and bi-encoder z-scores fused
with weights tuned on the validation queries' candidates (a weight may zero out the
cross-encoder; the table names what won). `teacher_targets` gives the students its scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.training.recipe.artifacts import (
    CE_SCORES,
    ENSEMBLE_FILE,
    TEACHER_DIR,
    TEACHER_ENSEMBLE,
)
from twinbert_search.training.recipe.context import Context, write_json
from twinbert_search.training.recipe.records import Ensemble, ScoredRows, TeacherScores

__all__ = ["WEIGHT_GRID", "combine", "step_ensemble", "teacher_features", "teacher_targets"]

WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


def _ce_stats(saved: Mapping[str, ScoredRows]) -> tuple[float, float]:
    """Mean and deviation of the cross-encoder's validation logits (its global z-score)."""
    vals = np.concatenate([np.asarray(v.ce) for k, v in saved.items() if k.startswith("val:")])
    return float(vals.mean()), max(float(vals.std()), 1e-6)


def teacher_features(
    ctx: Context, key: str, entry: ScoredRows, ce_stats: tuple[float, float]
) -> dict[str, np.ndarray]:
    """The fused features of one scored query ("split:id"): z-scored BM25, cosine and
    cross-encoder logit for its scored rows."""
    qi = ctx.load_candidates().row(key.split(":", 1)[1])
    rows = np.asarray(entry.rows, dtype=np.int64)
    f = ctx.features(qi, rows)
    f["ce"] = ((np.asarray(entry.ce, np.float32) - ce_stats[0]) / ce_stats[1]).astype(np.float32)
    return f


def combine(features: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The weighted sum of the features with a non-zero weight (0 when every weight is 0)."""
    return sum(w * features[k] for k, w in weights.items() if w)


def step_ensemble(ctx: Context) -> dict[str, Any]:
    """Tune the fusion weights (CE, BM25, cosine) on the validation queries' candidates."""
    saved = TeacherScores.load(ctx.work / CE_SCORES).rows
    stats = _ce_stats(saved)
    cand = ctx.load_candidates()
    val = {k: v for k, v in saved.items() if k.startswith("val:")}
    feats = {k: teacher_features(ctx, k, v, stats) for k, v in val.items()}
    qrels = {}
    for k in val:
        qid = k.split(":", 1)[1]
        qrels[qid] = cand.query(qid).qrels()

    def score(weights: Mapping[str, float]) -> dict[str, float]:
        run = {}
        for k, v in val.items():
            s = combine(feats[k], weights)
            if isinstance(s, int):
                s = np.zeros(len(v.rows), np.float32)
            run[k.split(":", 1)[1]] = {
                ctx.doc_ids[r]: float(x) for r, x in zip(v.rows, s, strict=True)
            }
        return evaluate(qrels, run, ("ndcg@10", "mrr@10"))

    grid = []
    for wc in WEIGHT_GRID:
        for wb in WEIGHT_GRID:
            for wd in WEIGHT_GRID:
                if wc == wb == wd == 0 or max(wc, wb, wd) != 1.0:
                    continue  # scale-free: one weight is 1
                w = {"ce": wc, "bm25": wb, "dense": wd}
                grid.append({"weights": w, **score(w)})
    best = max(grid, key=lambda g: (g["ndcg@10"], g["mrr@10"]))
    singles = {
        "cross-encoder": score({"ce": 1.0}),
        "bm25 (on candidates)": score({"bm25": 1.0}),
        "bi-encoder (on candidates)": score({"dense": 1.0}),
        "bm25 + bi-encoder": score({"bm25": 1.0, "dense": 1.0}),
    }
    teacher = Ensemble(best["weights"], stats).to_dict()
    write_json(ctx.work / TEACHER_ENSEMBLE, teacher)
    # Beside the teacher, so `adapt --teacher OUT/teacher` distils the same ensemble.
    write_json(ctx.out / TEACHER_DIR / ENSEMBLE_FILE, teacher)
    return {"teacher": teacher, "best_val": best, "validation": singles, "grid": grid}


def teacher_targets(ctx: Context) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (doc rows, teacher scores) for every scored query, under the tuned ensemble."""
    saved = TeacherScores.load(ctx.work / CE_SCORES).rows
    teacher = Ensemble.load(ctx.work)
    out = {}
    for key, entry in saved.items():
        f = teacher_features(ctx, key, entry, teacher.ce_stats)
        out[key] = (np.asarray(entry.rows, np.int64), combine(f, teacher.weights))
    return out
