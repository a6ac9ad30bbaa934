"""IR metrics through pytrec_eval, and per-stage latency percentiles.

Metric names are spelled `family@K` everywhere (`ndcg@10`, `mrr@10`, `recall@100`, ...) and
parsed in `parse_metric` only. Two pytrec_eval behaviours are corrected here:

- it orders a query's documents by score alone, breaking ties by docid *descending*, so the
  order it scores can differ from the order we ranked. We hand it scores derived from rank, so
  it evaluates exactly our order;
- it silently skips queries absent from the run; a query we judged but did not answer must
  count as 0, so averages are taken over every query in the qrels.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytrec_eval

from twinbert_search.errors import ConfigurationError, InputError
from twinbert_search.evaluation.runfile import Hits, rank_order

__all__ = [
    "DEFAULT_METRICS",
    "PRIMARY_METRIC",
    "LatencyRecorder",
    "Metric",
    "evaluate",
    "evaluate_per_query",
    "parse_metric",
]

PRIMARY_METRIC = "ndcg@10"
DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100", "recall@1000")

# Our family name -> pytrec_eval measure. `mrr` has no cutoff in trec_eval: the run is cut.
_MEASURES = {
    "ndcg": "ndcg_cut",
    "mrr": "recip_rank",
    "recall": "recall",
    "map": "map_cut",
    "precision": "P",
}
_NAME = re.compile(r"^([a-z]+)@([1-9][0-9]*)$")


@dataclass(frozen=True)
class Metric:
    """A parsed metric name: `family` (ndcg, mrr, recall, map, precision) and cutoff `k`."""

    family: str
    k: int

    @property
    def name(self) -> str:
        return f"{self.family}@{self.k}"


def parse_metric(name: str) -> Metric:
    """Parse `family@K` (case-insensitive); raise `ConfigurationError` on anything else."""
    match = _NAME.match(name.strip().lower())
    if not match or match.group(1) not in _MEASURES:
        raise ConfigurationError(
            f"unknown metric {name!r}; expected one of {', '.join(_MEASURES)} followed by @K, "
            f"e.g. ndcg@10"
        )
    return Metric(match.group(1), int(match.group(2)))


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Hits],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Mean of each metric over every query in `qrels` (queries missing from `run` count 0).

    `run` maps each query to either `(docid, score)` pairs in rank order (that order is what
    gets scored, whatever the scores) or a docid->score mapping (ranked by `(-score, docid)`,
    the order `write_run` writes).
    """
    per_query = evaluate_per_query(qrels, run, metrics)
    names = list(next(iter(per_query.values())))
    return {name: float(np.mean([scores[name] for scores in per_query.values()])) for name in names}


def evaluate_per_query(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Hits],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, dict[str, float]]:
    """Each metric for each query in `qrels`, keyed by canonical metric name; see `evaluate`."""
    parsed = list(dict.fromkeys(parse_metric(m) for m in metrics))
    if not parsed:
        raise ConfigurationError("no metrics requested")
    judged = {qid: {d: int(r) for d, r in docs.items()} for qid, docs in qrels.items()}
    if not judged:
        raise InputError("qrels are empty: there is nothing to evaluate against")
    ordered = {qid: _ordered_ids(qid, run[qid]) for qid in judged if qid in run}

    results = {qid: {m.name: 0.0 for m in parsed} for qid in judged}
    cutoffs: dict[str, set[int]] = defaultdict(set)
    for m in parsed:
        if m.family != "mrr":
            cutoffs[_MEASURES[m.family]].add(m.k)
    if cutoffs:
        measures = {
            f"{measure}.{','.join(map(str, sorted(ks)))}" for measure, ks in cutoffs.items()
        }
        scored = _pytrec(judged, ordered, measures, limit=None)
        for m in parsed:
            if m.family != "mrr":
                _fill(results, scored, m.name, f"{_MEASURES[m.family]}_{m.k}")
    for m in parsed:
        if m.family == "mrr":
            scored = _pytrec(judged, ordered, {"recip_rank"}, limit=m.k)
            _fill(results, scored, m.name, "recip_rank")
    return results


def _ordered_ids(qid: str, hits: Hits) -> list[str]:
    if isinstance(hits, Mapping):
        return [doc_id for doc_id, _ in rank_order(hits)]
    ids = [doc_id for doc_id, _ in hits]
    if len(set(ids)) != len(ids):
        raise ValueError(f"ranked list of query {qid!r} holds a docid more than once")
    return ids


def _pytrec(
    qrels: dict[str, dict[str, int]],
    ordered: Mapping[str, list[str]],
    measures: set[str],
    limit: int | None,
) -> dict[str, dict[str, float]]:
    # Strictly decreasing scores from rank, so pytrec_eval's sort reproduces our order exactly.
    run = {}
    for qid, ids in ordered.items():
        top = ids[:limit] if limit is not None else ids
        run[qid] = {doc_id: float(len(top) - i) for i, doc_id in enumerate(top)}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def _fill(
    results: dict[str, dict[str, float]],
    scored: Mapping[str, Mapping[str, float]],
    name: str,
    key: str,
) -> None:
    for qid, values in scored.items():
        if qid in results:
            results[qid][name] = float(values[key])


class LatencyRecorder:
    """Collects durations per named stage (encode, search, rerank, ...) for percentile reports."""

    def __init__(self) -> None:
        self._durations: dict[str, list[float]] = defaultdict(list)

    def record(self, stage: str, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"duration of stage {stage!r} is negative: {seconds}")
        self._durations[stage].append(float(seconds))

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Time the `with` block and record it under `stage`; a block that raises is not
        recorded, so failures do not skew the latencies of served requests."""
        start = time.perf_counter()
        yield
        self.record(stage, time.perf_counter() - start)

    def summary(self) -> dict[str, dict[str, float]]:
        """`{stage: {"p50_ms", "p99_ms", "mean_ms", "n"}}` for every stage recorded so far."""
        out = {}
        for stage, values in self._durations.items():
            ms = np.asarray(values) * 1000.0
            out[stage] = {
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "mean_ms": float(ms.mean()),
                "n": len(values),
            }
        return out
