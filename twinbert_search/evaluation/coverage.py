"""Judged documents the store does not hold, which `eval` warns about before it measures.

BEIR allows qrels to name documents missing from the corpus, so this is a warning, not an
error; but when many are missing (an index run that stopped early, the wrong --index-dir)
every metric drops with no other sign.
"""

from __future__ import annotations

from collections.abc import Mapping

from twinbert_search.stores.base import VectorStore

__all__ = ["coverage_warning", "missing_judged"]


def missing_judged(
    store: VectorStore, qrels: Mapping[str, Mapping[str, int]]
) -> tuple[int, int, int]:
    """(judged documents, how many the store lacks, how many of those are judged relevant)."""
    judged = sorted({doc_id for docs in qrels.values() for doc_id in docs})
    known = store.content_hashes(judged) if judged else {}
    missing = {doc_id for doc_id in judged if doc_id not in known}
    relevant = {d for docs in qrels.values() for d, rel in docs.items() if rel > 0 and d in missing}
    return len(judged), len(missing), len(relevant)


def coverage_warning(store: VectorStore, qrels: Mapping[str, Mapping[str, int]]) -> str | None:
    """One line counting the judged documents the store lacks, or None when it has them all."""
    judged, missing, relevant = missing_judged(store, qrels)
    if not missing:
        return None
    return (
        f"{missing} of the {judged} documents the qrels judge are not in the store "
        f"({relevant} of them judged relevant); they count as never retrieved"
    )
