"""Tune the served rerank fusion (`runtime.fusion.RerankFusion`) on validation queries.

A grid over the weights of the crossing logit, the recall score, BM25 and the cosine, each
z-scored over one query's candidates, scored by nDCG@10 of the fused order on validation
queries (never test). The crossing must earn its place: the best combination that weighs it
is kept only if it beats every combination that does not (the recall stage's own signals,
re-weighted); otherwise the crossing adds nothing and the served rerank keeps the recall
order itself. Re-weighting the recall signals without the crossing is not kept either: that
would re-tune the recall's fusion on a few validation queries, not rerank.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.runtime.fusion import FEATURES, RECALL_ORDER, RerankFusion

__all__ = ["FUSION_GRID", "FusionList", "tune_rerank_fusion"]

FUSION_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class FusionList:
    """One validation query's rerank candidates (in recall order) and their raw signals."""

    query_id: str
    doc_ids: Sequence[str]
    signals: Mapping[str, np.ndarray]


def _candidates(grid: Sequence[float], features: Sequence[str]) -> list[RerankFusion]:
    """Every weight vector of the grid, scale-free (divided by its largest weight), once."""
    seen: set[tuple[float, ...]] = set()
    out = [RECALL_ORDER]
    seen.add(tuple(RECALL_ORDER.weights()[f] for f in FEATURES))
    for combo in itertools.product(grid, repeat=len(features)):
        top = max(combo)
        if top <= 0:
            continue
        weights = dict.fromkeys(FEATURES, 0.0)
        weights.update({f: round(w / top, 6) for f, w in zip(features, combo, strict=True)})
        key = tuple(weights[f] for f in FEATURES)
        if key not in seen:
            seen.add(key)
            out.append(RerankFusion(**weights))
    return out


def _run(fusion: RerankFusion, lists: Sequence[FusionList]) -> dict[str, dict[str, float]]:
    run = {}
    for item in lists:
        scores = fusion.scores(**{k: item.signals.get(k) for k in FEATURES})
        # Ties fall back to the recall order: a small bonus by recall rank, below any z gap.
        scores = scores - 1e-9 * np.arange(len(scores))
        run[item.query_id] = {d: float(s) for d, s in zip(item.doc_ids, scores, strict=True)}
    return run


def tune_rerank_fusion(
    lists: Sequence[FusionList],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    grid: Sequence[float] = FUSION_GRID,
    features: Sequence[str] = FEATURES,
    metric: str = "ndcg@10",
) -> dict[str, Any]:
    """The best weights by `metric` on `lists` (validation queries), and what they scored.

    `features`: the signals the grid may weigh (each list must hold them). The best
    combination with the crossing (ties: fewer signals) is kept if it beats the best without
    it; else the recall order. Returns {"weights", metric, "recall_" + metric,
    "without_crossing_" + metric, "queries", "candidates_tried"}.
    """
    if not lists:
        raise ConfigurationError("tuning the rerank fusion needs validation queries")
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ConfigurationError(f"unknown rerank fusion signals: {sorted(unknown)}")
    judged = {item.query_id: qrels[item.query_id] for item in lists}
    candidates = _candidates(grid, features)
    scored = []
    for fusion in candidates:
        value = evaluate(judged, _run(fusion, lists), (metric,))[metric]
        used = sum(1 for w in fusion.weights().values() if w)
        scored.append((value, -used, fusion))
    recall_value = scored[0][0]  # RECALL_ORDER comes first
    with_crossing = [s for s in scored if s[2].uses_crossing]
    without = max(s[0] for s in scored if not s[2].uses_crossing)
    best = max(with_crossing, key=lambda s: s[:2]) if with_crossing else None
    if best is None or best[0] <= without:
        best = scored[0]
    return {
        "weights": best[2].weights(),
        metric: best[0],
        f"recall_{metric}": recall_value,
        f"without_crossing_{metric}": without,
        "queries": len(lists),
        "candidates_tried": len(candidates),
    }
