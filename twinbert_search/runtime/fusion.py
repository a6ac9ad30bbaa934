"""The served rerank score: the crossing layer combined with the recall stage's own signals.

A rerank must never lose to the list it reranks. A student trained on one collection's labels
can order queries about documents it never saw worse than its own recall did (RESULTS.md has
the SciFact no-overlap figures). So the served score is a weighted sum of z-scores over one
query's candidates: the crossing logit, the recall score (the hybrid fusion's score for hybrid
recall, the kNN score otherwise), BM25 and the query-document cosine. The weights are tuned
on validation queries only (`training.fusion.tune_rerank_fusion`: the recall plus a weight of
the crossing; BM25 and the cosine weigh only in models tuned before that rule) and kept in the
model manifest (`extra.rerank_fusion`); where the crossing adds nothing they are the recall
score alone, and the rerank gives back the recall order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError

__all__ = [
    "FEATURES",
    "MANIFEST_KEY",
    "RECALL_ORDER",
    "RerankFusion",
    "served_fusion",
    "zscore",
]

FEATURES = ("crossing", "recall", "bm25", "cosine")
MANIFEST_KEY = "rerank_fusion"


def zscore(x: np.ndarray) -> np.ndarray:
    """`x` standardised over its own entries (float64; a constant vector gives zeros)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        return x
    return (x - x.mean()) / max(float(x.std()), 1e-9)


@dataclass(frozen=True)
class RerankFusion:
    """Weights of the z-scored signals in the served rerank score (0: left out)."""

    crossing: float = 1.0
    recall: float = 0.0
    bm25: float = 0.0
    cosine: float = 0.0

    def __post_init__(self) -> None:
        weights = self.weights()
        if any(w < 0 or not np.isfinite(w) for w in weights.values()):
            raise ConfigurationError(f"rerank fusion weights must be finite and >= 0: {weights}")
        if not any(weights.values()):
            raise ConfigurationError("rerank fusion needs at least one non-zero weight")

    def weights(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        """The non-zero weights, e.g. "crossing 0.5 + recall 1"."""
        return " + ".join(f"{k} {w:g}" for k, w in self.weights().items() if w)

    @property
    def uses_crossing(self) -> bool:
        return self.crossing > 0

    @property
    def uses_bm25(self) -> bool:
        return self.bm25 > 0

    @property
    def is_recall_order(self) -> bool:
        """Only the recall score counts: the rerank gives back the recall order."""
        return self.recall > 0 and not (self.crossing or self.bm25 or self.cosine)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RerankFusion:
        unknown = set(data) - set(FEATURES)
        if unknown:
            raise ConfigurationError(f"unknown rerank fusion signals: {sorted(unknown)}")
        return cls(**{k: float(data.get(k, 0.0)) for k in FEATURES})

    @classmethod
    def from_manifest(cls, extra: Mapping[str, Any]) -> RerankFusion | None:
        """The tuned weights a manifest's `extra.rerank_fusion.weights` holds, if any."""
        tuned = extra.get(MANIFEST_KEY) or {}
        weights = tuned.get("weights")
        return None if not weights else cls.from_dict(weights)

    def scores(
        self,
        *,
        crossing: np.ndarray | None = None,
        recall: np.ndarray | None = None,
        bm25: np.ndarray | None = None,
        cosine: np.ndarray | None = None,
    ) -> np.ndarray:
        """The fused score of each candidate: sum of weight x z-score over the candidates.

        Every signal with a non-zero weight must be given, all of one length.
        """
        given = {"crossing": crossing, "recall": recall, "bm25": bm25, "cosine": cosine}
        total: np.ndarray | None = None
        for name, weight in self.weights().items():
            if not weight:
                continue
            values = given[name]
            if values is None:
                raise ConfigurationError(f"rerank fusion weighs {name} but it was not given")
            part = weight * zscore(values)
            if total is not None and len(part) != len(total):
                raise ConfigurationError("rerank fusion signals differ in length")
            total = part if total is None else total + part
        assert total is not None  # __post_init__: some weight is non-zero
        return total


RECALL_ORDER = RerankFusion(crossing=0.0, recall=1.0)


def served_fusion(manifest: Any) -> RerankFusion:
    """The fusion a model is served with: its tuned weights (`extra.rerank_fusion`); else,
    for a cosine crossing, the recall order (the crossing is the cosine recall already
    weighed, and re-sorting a hybrid list by it would undo the fusion with BM25); else the
    crossing alone, as models distilled before the fusion existed were served."""
    tuned = RerankFusion.from_manifest(manifest.extra)
    if tuned is not None:
        return tuned
    if manifest.crossing.type == "cosine":
        return RECALL_ORDER
    return RerankFusion()
