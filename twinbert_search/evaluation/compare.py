"""Recall against rerank, side by side: what the rerank stage adds, or costs.

A rerank earns its place only if it beats the list it reranks. `stage_rows` puts each metric
of the two stages beside each other with the difference, and `rerank_losses` names the
metrics (and, with an overlap split, the subsets) where the rerank scored below its recall,
so `eval` can say so instead of leaving a reader to spot it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["format_stage_table", "rerank_losses", "stage_rows"]

# Differences smaller than this are rounding: the tables print four decimals.
TOLERANCE = 5e-5


def stage_rows(
    recall: Mapping[str, float], reranked: Mapping[str, float]
) -> list[tuple[str, float, float, float]]:
    """(metric, recall, reranked, reranked - recall) for every metric both stages have."""
    return [(m, recall[m], reranked[m], reranked[m] - recall[m]) for m in recall if m in reranked]


def rerank_losses(
    recall: Mapping[str, float], reranked: Mapping[str, float], metrics: tuple[str, ...] = ()
) -> list[str]:
    """The metrics (all shared ones unless `metrics` names some) where the rerank is lower."""
    wanted = metrics or tuple(recall)
    return [
        m for m, _, _, diff in stage_rows(recall, reranked) if m in wanted and diff < -TOLERANCE
    ]


def format_stage_table(
    recall: Mapping[str, float],
    reranked: Mapping[str, float],
    *,
    title: str = "",
    primary: str = "ndcg@10",
) -> list[str]:
    """Text lines: a header, one line per metric (recall, reranked, difference), and a
    closing line saying whether the rerank lost to its recall on the `primary` metric."""
    lines = [title] if title else []
    lines.append(f"{'metric':<12} {'recall':>8} {'reranked':>9} {'diff':>8}")
    for metric, a, b, diff in stage_rows(recall, reranked):
        lines.append(f"{metric:<12} {a:>8.4f} {b:>9.4f} {diff:>+8.4f}")
    lost = rerank_losses(recall, reranked, (primary,))
    if lost:
        lines.append(
            f"the rerank LOSES to its recall on {primary} "
            f"({reranked[primary]:.4f} < {recall[primary]:.4f})"
        )
    elif primary in recall and primary in reranked:
        lines.append(f"the rerank does not lose to its recall on {primary}")
    return lines
