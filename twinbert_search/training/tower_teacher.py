"""A teacher that needs no labels and no cross-encoder: BM25 and pretrained towers, z-scored.

The only cross-encoder this project can train ranks below BM25 on queries it never saw, so
distilling it teaches a student to be worse than its own recall. Issue 25's probe found a
stronger signal that needs no label of the target corpus: the z-scored fusion of BM25, the
student's own cosine and the cosines of imported towers (`models fetch`: bge-small-en-v1.5
and others), weighed on validation queries of another collection. `teacher towers` writes
such a teacher as a directory (`ensemble.json`, kind "towers"); `adapt --teacher DIR`
distils it onto a corpus' pseudo-queries like any other teacher.

Each tower encodes the corpus once with its own document tower (or reads the vectors of an
embedded index it built) and every pseudo-query with its query tower; the vectors are kept
under the adaptation's work folder, so a rerun encodes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError

__all__ = ["TOWERS_KIND", "TowerSpec", "TowerTeacher"]

TOWERS_KIND = "towers"
ENSEMBLE_FILE = "ensemble.json"


@dataclass(frozen=True)
class TowerSpec:
    """One imported tower in the ensemble: its model directory, weight, and optionally an
    embedded index of the corpus it built (its stored vectors are then reused)."""

    model: str
    weight: float
    index_dir: str | None = None

    @property
    def name(self) -> str:
        return Path(self.model).name


@dataclass(frozen=True)
class TowerTeacher:
    """Weights of z(BM25), z(the student's cosine) and z(each tower's cosine) over a list."""

    towers: tuple[TowerSpec, ...]
    bm25: float = 1.0
    dense: float = 1.0

    def __post_init__(self) -> None:
        for name, w in [("bm25", self.bm25), ("dense", self.dense)] + [
            (t.model, t.weight) for t in self.towers
        ]:
            if not np.isfinite(w) or w < 0:
                raise ConfigurationError(f"teacher weight of {name} must be >= 0, got {w}")
        if not self.towers and self.bm25 == 0 and self.dense == 0:
            raise ConfigurationError("a tower teacher needs a tower or a non-zero weight")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": TOWERS_KIND,
            "weights": {"bm25": self.bm25, "dense": self.dense},
            "towers": [asdict(t) for t in self.towers],
        }

    def save(self, folder: str | Path) -> Path:
        """Write the teacher directory (towers by absolute path) and return it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        towers = tuple(
            TowerSpec(
                str(Path(t.model).resolve()),
                t.weight,
                str(Path(t.index_dir).resolve()) if t.index_dir else None,
            )
            for t in self.towers
        )
        body = TowerTeacher(towers, self.bm25, self.dense).to_dict()
        (folder / ENSEMBLE_FILE).write_text(json.dumps(body, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TowerTeacher | None:
        """The tower teacher a directory records, or None (a cross-encoder's directory)."""
        path = Path(folder) / ENSEMBLE_FILE
        if not path.is_file():
            return None
        body = json.loads(path.read_text())
        if body.get("kind") != TOWERS_KIND:
            return None
        weights = body.get("weights", {})
        towers = tuple(TowerSpec(**t) for t in body.get("towers", []))
        return cls(towers, float(weights.get("bm25", 0.0)), float(weights.get("dense", 0.0)))

    def describe(self) -> str:
        parts = [f"{self.bm25:g} bm25", f"{self.dense:g} dense"]
        parts += [f"{t.weight:g} {t.name}" for t in self.towers]
        return ", ".join(p for p in parts if not p.startswith("0 "))

    def fused(
        self, bm25: np.ndarray, cosine: np.ndarray, towers: Sequence[np.ndarray]
    ) -> np.ndarray:
        """One list's targets: the weighted sum of its signals, each z-scored over the list."""
        from twinbert_search.runtime.fusion import zscore

        out = self.bm25 * zscore(np.asarray(bm25, np.float64))
        out = out + self.dense * zscore(np.asarray(cosine, np.float64))
        for spec, values in zip(self.towers, towers, strict=True):
            out = out + spec.weight * zscore(np.asarray(values, np.float64))
        return out.astype(np.float32)

    def tower_cosines(
        self,
        docs: Mapping[str, Any],
        ids: Sequence[str],
        texts: Sequence[str],
        lists: Sequence[Mapping[str, Any]],
        work: Path,
        progress: bool = True,
    ) -> tuple[list[list[np.ndarray]], str, int]:
        """Each tower's cosine of every candidate (per list, per tower), a fingerprint of the
        scores (the towers' own fingerprints and weights) and how many were computed now (0
        when every vector came from `work`)."""
        from twinbert_search.runtime.model import TwinBertRuntime
        from twinbert_search.training.corpus import document_vectors

        per_tower = []
        fresh = 0
        identity: list[Any] = [self.to_dict()]
        row_of = {d: i for i, d in enumerate(ids)}
        for spec in self.towers:
            runtime = TwinBertRuntime.load(spec.model)
            identity.append(runtime.fingerprint)
            vectors = document_vectors(runtime, docs, ids, work, spec.index_dir, progress)
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            queries, encoded = _query_vectors(runtime, texts, work)
            fresh += sum(len(item["docs"]) for item in lists) if encoded else 0
            per_tower.append(
                [
                    vectors[[row_of[d] for d in item["docs"]]] @ queries[i]
                    for i, item in enumerate(lists)
                ]
            )
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        by_list = [[tower[i] for tower in per_tower] for i in range(len(lists))]
        return by_list, digest, fresh


def _query_vectors(runtime: Any, texts: Sequence[str], work: Path) -> tuple[np.ndarray, bool]:
    """Unit query vectors of `texts` by this tower (kept under `work` for a rerun), and
    whether they were encoded now."""
    key = hashlib.sha256(json.dumps([runtime.fingerprint, list(texts)]).encode()).hexdigest()
    path = work / f"tower_queries.{key[:16]}.npy"
    if path.is_file():
        return np.load(path), False
    vectors = np.asarray(runtime.encode_queries(list(texts)), np.float32)
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    np.save(path, vectors / norms)
    return np.load(path), True
