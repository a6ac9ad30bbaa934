"""Teacher scores kept on disk, and scoring the pairs a run still misses.

`distill` and `adapt` both plan every (query, document) pair first, score only those the
cache lacks, and flush the cache per chunk, so a killed run loses at most one chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from twinbert_search.errors import ModelError

__all__ = ["TeacherScoreCache", "score_missing"]


class PairScorer(Protocol):
    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


class TeacherScoreCache:
    """Teacher logits by key, persisted as one `.npz` (keys, scores) replaced atomically.

    A key hashes the teacher fingerprint, the query text, the document id and the document's
    content hash, so a retrained teacher or an edited document never reuses a stale score.
    """

    FILE = "teacher_scores.npz"

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / self.FILE
        self._scores: dict[str, float] = {}
        if self.path.is_file():
            try:
                with np.load(self.path) as data:
                    keys, scores = data["keys"], data["scores"]
            except (OSError, ValueError, KeyError) as exc:
                raise ModelError(
                    f"{self.path}: unreadable teacher score cache ({exc}); delete it",
                    path=str(self.path),
                ) from None
            self._scores = dict(zip(keys.astype(str).tolist(), scores.tolist(), strict=True))

    @staticmethod
    def key(fingerprint: str, query: str, doc_id: str, doc_hash: str) -> str:
        payload = json.dumps([fingerprint, query, doc_id, doc_hash], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, key: str) -> bool:
        return key in self._scores

    def get_many(self, keys: Iterable[str]) -> np.ndarray:
        return np.array([self._scores[k] for k in keys], dtype=np.float32)

    def update(self, keys: Sequence[str], scores: Sequence[float]) -> None:
        self._scores.update(zip(keys, (float(s) for s in scores), strict=True))

    def flush(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._scores), dtype="S32")
        scores = np.array(list(self._scores.values()), dtype=np.float32)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=keys, scores=scores)
        os.replace(tmp, self.path)


def score_missing(
    teacher: PairScorer,
    cache: TeacherScoreCache,
    missing: Mapping[str, tuple[str, str]],
    *,
    chunk: int,
    progress: bool,
) -> None:
    """Score the `missing` pairs (cache key -> (query, document text)) in chunks, flushing
    the cache after each, so a kill loses one chunk's work at most."""
    keys = list(missing)
    bar = tqdm(total=len(keys), disable=not progress, desc="teacher scores", unit="pair")
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        cache.update(part, teacher.score([missing[k] for k in part]).tolist())
        cache.flush()
        bar.update(len(part))
    bar.close()
