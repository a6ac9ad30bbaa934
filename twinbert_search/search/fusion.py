"""Ordering and fusion shared by every ranking: ties broken by id, hybrid recall, the rerank.

`positions_by_score` is the one sort of both stages (recall and rerank), so a tie breaks the
same way everywhere. Hybrid recall fuses the kNN and BM25 lists (`fuse_hybrid`) by the
method a `HybridFusion` names: `rrf`, weighted reciprocal rank (Cormack et al. 2009), or
`zscore`, each list's scores standardised over the list and summed with weights, a document
missing from a list taking that list's lowest z (`zscore_fusion`). Which one a model is served
with: `hybrid_fusion_of` (an override, else the model manifest's `extra.hybrid_fusion`, tuned
on validation queries, else `DEFAULT_HYBRID_FUSION`; RRF for a model whose rerank was tuned
over RRF recall and that records no choice). A model distilled with BM25 in its teacher adds
BM25 back into the rerank (`lexically_fused_scores`, over `runtime.crossing.lexical_fusion`).
The served rerank combines the crossing with the recall stage's own signals (`served_scores`,
over `runtime.fusion.RerankFusion`): the weights a model was tuned with on validation
queries, over its hybrid recall's fused scores, or the recall order where its crossing adds
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.runtime.crossing import lexical_fusion
from twinbert_search.runtime.fusion import RerankFusion, zscore
from twinbert_search.runtime.model import TwinBertRuntime
from twinbert_search.stores.base import Candidates, VectorStore

__all__ = [
    "DEFAULT_HYBRID_FUSION",
    "HYBRID_MANIFEST_KEY",
    "HYBRID_METHODS",
    "RRF",
    "RRF_K",
    "HybridFusion",
    "fuse_hybrid",
    "fuse_lists",
    "hybrid_fusion_of",
    "lexically_fused_scores",
    "positions_by_score",
    "reciprocal_rank_fusion",
    "served_scores",
    "zscore_fusion",
]

RRF_K = 60
HYBRID_METHODS = ("rrf", "zscore")
HYBRID_MANIFEST_KEY = "hybrid_fusion"


def positions_by_score(scores: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Positions sorted by (-score, id): deterministic when scores tie.

    A numpy sort by score; only runs of equal scores are then re-ordered by id.
    """
    neg = -np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(neg, kind="stable")
    ranked = neg[order]
    if len(ranked) < 2:
        return order.astype(np.int64, copy=False)
    tied = np.flatnonzero(ranked[1:] == ranked[:-1])
    if len(tied):
        # Runs of equal scores: [start, end) in sorted order, each sorted by id. `tied` holds
        # i where ranked[i] == ranked[i + 1]; a run of consecutive i from t to u covers the
        # sorted positions t..u + 1, hence the exclusive end u + 2.
        starts = tied[np.r_[True, np.diff(tied) > 1]]
        ends = tied[np.r_[np.diff(tied) > 1, True]] + 2
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            run = order[start:end].tolist()
            order[start:end] = sorted(run, key=ids.__getitem__)
    return order.astype(np.int64, copy=False)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]],
    k: int = RRF_K,
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(d) = sum w / (k + rank), ties by id. Cormack et al. 2009.

    `weights`: one per ranking (default 1 each); a ranking of weight 0 adds no documents.
    """
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, _weights_for(rankings, weights), strict=True):
        if not weight:
            continue
        for rank, doc_id in enumerate(ranking, start=1):
            if doc_id not in scores:
                scores[doc_id] = 0.0
            scores[doc_id] += weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def zscore_fusion(
    lists: Sequence[tuple[Sequence[str], Sequence[float]]],
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse scored lists: score(d) = sum over lists of w x z, ties by id.

    Each list's scores are standardised over that list (z = (s - mean) / std; a list of one
    score, or of equal scores, gives z 0); a document the list does not hold takes the list's
    lowest z, its floor (what a fusion of returned lists can know without rescoring). A list
    of weight 0, or an empty one, adds nothing. The `list` variant of issue 25's probe
    (`benchmarks/zero_shot_probe/evallib.py` `fuse_z`), which validation chose there.
    """
    parts: list[tuple[float, dict[str, float], float]] = []
    for (ids, scores), weight in zip(lists, _weights_for(lists, weights), strict=True):
        if not weight or len(ids) == 0:
            continue
        if len(ids) != len(scores):
            raise ConfigurationError(f"a fused list has {len(ids)} ids but {len(scores)} scores")
        z = zscore(np.asarray(scores, dtype=np.float64))
        own: dict[str, float] = {}
        for doc_id, value in zip(ids, z.tolist(), strict=True):
            own.setdefault(doc_id, value)  # a repeated id keeps its first (best) score
        parts.append((float(weight), own, float(z.min())))
    union = {doc_id for _, own, _ in parts for doc_id in own}
    fused = {doc_id: sum(w * own.get(doc_id, floor) for w, own, floor in parts) for doc_id in union}
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def _weights_for(lists: Sequence[Any], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ConfigurationError(f"{len(lists)} lists to fuse but {len(weights)} weights")
    return [float(w) for w in weights]


@dataclass(frozen=True)
class HybridFusion:
    """How hybrid recall fuses the kNN and BM25 lists: a method and each list's weight.

    `rrf`: sum of weight / (60 + rank); `zscore`: sum of weight x the score's z over its list
    (`zscore_fusion`). Only the ratio of the weights matters.
    """

    method: str = "rrf"
    dense: float = 1.0
    bm25: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in HYBRID_METHODS:
            raise ConfigurationError(
                f"hybrid fusion must be one of {', '.join(HYBRID_METHODS)}, got {self.method!r}"
            )
        weights = (self.dense, self.bm25)
        if any(not np.isfinite(w) or w < 0 for w in weights) or not any(weights):
            raise ConfigurationError(
                "hybrid fusion weights must be finite, >= 0 and not both 0: "
                f"dense {self.dense}, bm25 {self.bm25}"
            )

    def fuse(
        self,
        dense: tuple[Sequence[str], Sequence[float]],
        bm25: tuple[Sequence[str], Sequence[float]],
    ) -> list[tuple[str, float]]:
        """The fused (id, score) list of the kNN and BM25 (ids, scores), best first."""
        weights = (self.dense, self.bm25)
        if self.method == "rrf":
            return reciprocal_rank_fusion([dense[0], bm25[0]], weights=weights)
        return zscore_fusion([dense, bm25], weights)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "weights": {"dense": self.dense, "bm25": self.bm25}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HybridFusion:
        """From `to_dict`'s form; other keys (what tuning measured) are ignored."""
        weights = data.get("weights") or {}
        unknown = set(weights) - {"dense", "bm25"}
        if unknown:
            raise ConfigurationError(f"unknown hybrid fusion lists: {sorted(unknown)}")
        return cls(
            method=str(data.get("method", "rrf")),
            dense=float(weights.get("dense", 1.0)),
            bm25=float(weights.get("bm25", 1.0)),
        )

    def describe(self) -> str:
        """One short string, e.g. "zscore dense 1 bm25 2"."""
        return f"{self.method} dense {self.dense:g} bm25 {self.bm25:g}"


RRF = HybridFusion()
# For a model that records no choice: z-scored lists with equal weights. Issue 25's probe chose
# z-scores over RRF on SciFact validation queries (train split); RESULTS.md has the product's
# own validation measurement.
DEFAULT_HYBRID_FUSION = HybridFusion("zscore")


def hybrid_fusion_of(
    extra: Mapping[str, Any], override: HybridFusion | None = None
) -> HybridFusion:
    """The hybrid fusion a model is served with: `override`; else its manifest's tuned
    `extra.hybrid_fusion`; else RRF for a model whose served rerank was tuned over RRF recall
    (`extra.rerank_fusion` or `extra.lexical_fusion` without a recorded fusion: its weights
    hold for that recall order only); else `DEFAULT_HYBRID_FUSION`."""
    if override is not None:
        return override
    recorded = extra.get(HYBRID_MANIFEST_KEY)
    if recorded:
        return HybridFusion.from_dict(recorded)
    if extra.get("rerank_fusion") or extra.get("lexical_fusion"):
        return RRF
    return DEFAULT_HYBRID_FUSION


def fuse_lists(
    fusion: HybridFusion,
    dense: tuple[Sequence[str], Sequence[float]],
    sparse: tuple[Sequence[str], Sequence[float]],
    n: int,
    head: int | None = None,
) -> list[tuple[str, float]]:
    """The top `n` (id, fused score) of two (ids, scores) lists; with `head` below `n`, the
    first `head` fused from each list's top `head` alone and the rest in the deep order,
    scored below them (see `fuse_hybrid`)."""
    fused = fusion.fuse(dense, sparse)[:n]
    shallow = len(dense[0]) <= head and len(sparse[0]) <= head if head else True
    if head is None or not 0 < head < n or not fused or shallow:
        return fused  # no list is deeper than the head: the head's fusion is this one
    scores = np.asarray(dense[1], dtype=np.float64)
    best = np.argsort(-scores, kind="stable")[:head]
    sparse_best = np.argsort(-np.asarray(sparse[1], dtype=np.float64), kind="stable")[:head]
    top = fusion.fuse(
        ([dense[0][i] for i in best], scores[best].tolist()),
        ([sparse[0][i] for i in sparse_best], [float(sparse[1][i]) for i in sparse_best]),
    )[:head]
    taken = {doc_id for doc_id, _ in top}
    tail = [(doc_id, s) for doc_id, s in fused if doc_id not in taken][: n - len(top)]
    if tail:  # below the head, in the deep order, with its gaps
        shift = min(s for _, s in top) - 1.0 - max(s for _, s in tail)
        tail = [(doc_id, s + shift) for doc_id, s in tail]
    return top + tail


def fuse_hybrid(
    dense: Candidates,
    sparse: Sequence[tuple[str, float]],
    n: int,
    fetch: Callable[[list[str]], Candidates],
    dim: int,
    fusion: HybridFusion = RRF,
    head: int | None = None,
) -> Candidates:
    """The top `n` of kNN and BM25 (`sparse`: (id, score) pairs, best first) fused by
    `fusion`, as candidates scored by their fused score.

    `head` (below `n`): the first `head` are the fusion of each list's top `head` alone, as a
    search of `head` candidates fuses them, and the rest follow in the deep fusion's order
    (scored below the head). A z-score fusion depends on how deep its lists are: without this,
    `eval --recall-depth 1000` would rank other candidates than `search` serves. BM25 hits that
    kNN missed have no vector yet, so they are fetched (one `fetch` call).
    """
    fused = fuse_lists(
        fusion,
        (dense.ids, np.asarray(dense.recall_scores, dtype=np.float64)),
        ([doc_id for doc_id, _ in sparse], [float(score) for _, score in sparse]),
        n,
        head,
    )
    position = {doc_id: i for i, doc_id in enumerate(dense.ids)}
    missing = [doc_id for doc_id, _ in fused if doc_id not in position]
    extra = fetch(missing) if missing else Candidates.empty(dim)
    extra_position = {doc_id: i for i, doc_id in enumerate(missing)}
    parts: list[Candidates] = []
    for doc_id, _ in fused:
        if doc_id in position:
            parts.append(dense.take([position[doc_id]]))
        else:
            parts.append(extra.take([extra_position[doc_id]]))
    merged = _concat(parts, dim)
    merged.recall_scores = np.asarray([s for _, s in fused], dtype=np.float32)
    return merged


def lexically_fused_scores(
    runtime: TwinBertRuntime,
    store: VectorStore,
    query_vector: np.ndarray,
    candidates: Candidates,
    query: str,
    weight: float,
) -> np.ndarray:
    """Crossing logits fused with the candidates' BM25 scores: z-score sums, not probabilities."""
    logits = runtime.crossing.logits(query_vector, candidates.vectors, candidates.precomputed)
    bm25 = store.bm25_scores(query, candidates.ids)
    return lexical_fusion(logits, bm25, weight)


def served_scores(
    runtime: TwinBertRuntime,
    store: VectorStore,
    fusion: RerankFusion,
    query_vector: np.ndarray,
    candidates: Candidates,
    query: str | None,
) -> np.ndarray:
    """The served rerank score of every candidate: `fusion` over the z-scored crossing logit,
    recall score (the hybrid fusion's for hybrid recall, kNN otherwise), BM25 and cosine;
    only the signals it weighs are computed (the recall order costs nothing)."""
    signals: dict[str, np.ndarray] = {}
    if fusion.crossing:
        signals["crossing"] = runtime.crossing.logits(
            query_vector, candidates.vectors, candidates.precomputed
        )
    if fusion.recall:
        signals["recall"] = np.asarray(candidates.recall_scores)
    if fusion.bm25:
        signals["bm25"] = store.bm25_scores(query or "", candidates.ids)
    if fusion.cosine:
        docs = np.asarray(candidates.vectors, dtype=np.float32)
        q = np.asarray(query_vector, dtype=np.float32)
        norms = np.maximum(np.linalg.norm(docs, axis=1) * np.linalg.norm(q), 1e-12)
        signals["cosine"] = docs @ q / norms
    return fusion.scores(**signals).astype(np.float32)


def _concat(parts: Sequence[Candidates], dim: int) -> Candidates:
    if not parts:
        return Candidates.empty(dim)
    pre = [p.precomputed for p in parts]
    docs = [p.documents for p in parts]
    return Candidates(
        ids=[i for p in parts for i in p.ids],
        recall_scores=np.concatenate([p.recall_scores for p in parts]),
        vectors=np.concatenate([p.vectors for p in parts]),
        precomputed=None if any(x is None for x in pre) else np.concatenate(pre),
        documents=None if any(d is None for d in docs) else [x for d in docs for x in d],
    )
