"""Split an evaluation by overlap with the training positives: memorised against learned.

A supervised model can score well on test queries only because their relevant documents were
relevant to training queries too (SciFact: 196 of its 300 test queries have a positive that is
a train positive). Every metric is therefore reported three ways: over all judged queries,
over those whose positives overlap the training positives, and over the rest, the
"no-overlap" subset that measures what the model learned rather than what it memorised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twinbert_search.evaluation.metrics import DEFAULT_METRICS, evaluate_per_query
from twinbert_search.evaluation.runfile import Hits

__all__ = [
    "SUBSETS",
    "OverlapSplit",
    "overlap_metrics",
    "overlap_split",
    "positives_of",
    "stage_split",
]

SUBSETS = ("all", "overlap", "no_overlap")

Judgments = Mapping[str, Mapping[str, int]]


def positives_of(qrels: Judgments) -> set[str]:
    """Every document judged relevant (score > 0) to some query."""
    return {d for docs in qrels.values() for d, rel in docs.items() if rel > 0}


class OverlapSplit:
    """The judged queries of `qrels` grouped by whether a positive is a training positive.

    `subsets` maps "all", "overlap" and "no_overlap" to sorted query ids; a query without any
    positive counts as no-overlap (it cannot have been memorised).
    """

    def __init__(self, qrels: Judgments, train_qrels: Judgments) -> None:
        seen = positives_of(train_qrels)
        overlap = sorted(
            q for q, docs in qrels.items() if any(rel > 0 and d in seen for d, rel in docs.items())
        )
        held = set(overlap)
        self.subsets: dict[str, list[str]] = {
            "all": sorted(qrels),
            "overlap": overlap,
            "no_overlap": sorted(q for q in qrels if q not in held),
        }
        self.train_positives = len(seen)

    def counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.subsets.items()}


def overlap_split(qrels: Judgments, train_qrels: Judgments) -> dict[str, list[str]]:
    """Query ids of "all", "overlap" and "no_overlap" (see `OverlapSplit`)."""
    return OverlapSplit(qrels, train_qrels).subsets


def overlap_metrics(
    qrels: Judgments,
    run: Mapping[str, Hits],
    train_qrels: Judgments,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, dict[str, float]]:
    """Each metric's mean over every subset of `overlap_split`, plus "queries" (its size).

    Means follow `evaluate`: a judged query missing from `run` counts 0. An empty subset has
    its count and no metric.
    """
    per_query = evaluate_per_query(qrels, run, metrics)
    names = list(next(iter(per_query.values())))
    out: dict[str, dict[str, float]] = {}
    for subset, ids in overlap_split(qrels, train_qrels).items():
        row: dict[str, float] = {"queries": len(ids)}
        if ids:
            row.update({m: sum(per_query[q][m] for q in ids) / len(ids) for m in names})
        out[subset] = row
    return out


def stage_split(
    qrels: Judgments,
    runs: Mapping[str, Mapping[str, Hits]],
    train_qrels: Judgments,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, dict[str, object]]:
    """Both stages' metrics per subset: {subset: {"queries", "recall", "reranked"}} for
    `runs` {"recall": run, "reranked": run} (an `EvalReport`'s runs); subsets in SUBSETS
    order, the empty ones left out."""
    split = {
        stage: overlap_metrics(qrels, run, train_qrels, metrics) for stage, run in runs.items()
    }
    out: dict[str, dict[str, object]] = {}
    for subset in SUBSETS:
        rows = {stage: dict(split[stage][subset]) for stage in runs}
        count = int(next(iter(rows.values())).pop("queries"))
        for row in rows.values():
            row.pop("queries", None)
        if count:
            out[subset] = {"queries": count, **rows}
    return out
