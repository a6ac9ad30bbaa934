"""Tune the served rerank fusion (`runtime.fusion.RerankFusion`) on validation queries.

The served score adds the crossing to the recall it reranks: z(recall score) + w x z(crossing)
over one query's candidates, w from `CROSSING_WEIGHTS` (or the crossing alone). The recall
score already holds BM25 and the cosine as the model's hybrid fusion weighed them on validation;
the rerank only decides how much the crossing adds. The crossing must earn its place twice: the
best w must beat the recall order on the validation queries, and by more than choosing the best
of the grid on so few queries gives by chance (`evaluation.significance.max_gain_test`, p at
most `ALPHA`). Otherwise the served rerank keeps the recall order.

Why so strict: the rule this replaces chose the best of 369 weightings of four signals on 20
validation queries; it beat the recall there by 0.06 and lost to it on test by 0.013 (SciFact
no-overlap) and 0.033 (CACM). A served rerank that may not lose to its recall cannot be chosen
by a maximum over noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.metrics import evaluate_per_query
from twinbert_search.evaluation.significance import max_gain_test
from twinbert_search.runtime.fusion import FEATURES, RECALL_ORDER, RerankFusion

__all__ = [
    "ALPHA",
    "CROSSING_WEIGHTS",
    "RULE",
    "FusionList",
    "fusion_candidates",
    "tune_rerank_fusion",
]

CROSSING_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)  # the crossing's weight against the recall's 1
ALPHA = 0.05
# Recorded with every tuned fusion; a recipe re-tunes a model whose record names another rule.
RULE = "recall + w x crossing, kept if max-T sign-flip p <= 0.05 on validation"


@dataclass(frozen=True)
class FusionList:
    """One validation query's rerank candidates (in recall order) and their raw signals."""

    query_id: str
    doc_ids: Sequence[str]
    signals: Mapping[str, np.ndarray]


def fusion_candidates(weights: Sequence[float] = CROSSING_WEIGHTS) -> list[RerankFusion]:
    """The recall order first, then recall + w x crossing for each w, then the crossing alone."""
    out = [RECALL_ORDER]
    out += [RerankFusion(crossing=float(w), recall=1.0) for w in weights if w > 0]
    out.append(RerankFusion(crossing=1.0))
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
    weights: Sequence[float] = CROSSING_WEIGHTS,
    alpha: float = ALPHA,
    metric: str = "ndcg@10",
) -> dict[str, Any]:
    """The served fusion chosen on `lists` (validation queries) by `metric`, and the evidence.

    Returns {"weights", metric (the kept fusion's), "recall_" + metric, "best", "best_" +
    metric, "p_value", "wins", "losses", "queries", "candidates_tried", "grid", "rule"}: "best"
    is the grid's winner whether or not it was kept; "wins"/"losses" count its queries above and
    below the recall.
    """
    if not lists:
        raise ConfigurationError("tuning the rerank fusion needs validation queries")
    missing = [item.query_id for item in lists if item.query_id not in qrels]
    if missing:
        raise ConfigurationError(f"validation query {missing[0]!r} has no judgments")
    judged = {item.query_id: qrels[item.query_id] for item in lists}
    order = list(judged)
    candidates = fusion_candidates(weights)
    per_query = []
    for fusion in candidates:
        scored = evaluate_per_query(judged, _run(fusion, lists), (metric,))
        name = next(iter(next(iter(scored.values()))))
        per_query.append([scored[q][name] for q in order])
    means = [float(np.mean(v)) for v in per_query]
    test = max_gain_test(per_query[0], per_query[1:])
    best = candidates[1 + test.best]
    kept = best if test.gain > 0 and test.p_value <= alpha else RECALL_ORDER
    return {
        "weights": kept.weights(),
        metric: means[candidates.index(kept)],
        f"recall_{metric}": means[0],
        "best": best.describe(),
        f"best_{metric}": means[1 + test.best],
        "p_value": round(test.p_value, 4),
        "wins": test.wins,
        "losses": test.losses,
        "queries": len(order),
        "candidates_tried": len(candidates),
        "grid": [
            {"fusion": f.describe(), metric: round(m, 4)}
            for f, m in zip(candidates, means, strict=True)
        ],
        "rule": RULE,
    }
