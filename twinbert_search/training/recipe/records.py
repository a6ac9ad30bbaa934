"""The typed records steps pass to each other, each read from and written to its artefact.

The JSON layouts are those earlier runs wrote (`to_dict` gives exactly them back), so a
run folder resumes across this change; in memory, steps read attributes, not string keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.training.recipe.artifacts import (
    DOC_VECTORS,
    QUERIES,
    QUERY_VECTORS,
    TEACHER_ENSEMBLE,
)
from twinbert_search.training.recipe.jsonio import read_json, write_json

__all__ = ["SPLITS", "Candidates", "Ensemble", "Query", "ScoredRows", "TeacherScores"]

# The query sets of a run: labelled train and validation (carved from train) and test
# queries, pseudo-queries for the students and the teacher's own pseudo-queries.
SPLITS = ("train", "val", "test", "pseudo", "tpseudo")


@dataclass
class Query:
    """One query of the `candidates` step with its recall lists (rows of sorted doc ids)."""

    id: str
    text: str
    split: str
    positives: list[str]
    kind: str | None = None  # a teacher pseudo-query's kind (title, sentence, keyphrase)
    overlap: bool | None = None  # val and test: a positive was a training positive
    dense: list[int] = field(default_factory=list)
    bm25: list[int] = field(default_factory=list)
    hybrid: list[int] = field(default_factory=list)
    recall: list[int] = field(default_factory=list)  # the rerank candidates: one of the above

    @property
    def key(self) -> str:
        """ "split:id", how the score files name a query (an id may be in two splits)."""
        return f"{self.split}:{self.id}"

    def qrels(self) -> dict[str, int]:
        return {d: 1 for d in self.positives}

    def lists(self, kind: str) -> list[int]:
        """One recall list by name (dense, bm25, hybrid)."""
        return {"dense": self.dense, "bm25": self.bm25, "hybrid": self.hybrid}[kind]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "split": self.split,
            "positives": list(self.positives),
        }
        if self.kind is not None:
            out["kind"] = self.kind
        if self.overlap is not None:
            out["overlap"] = self.overlap
        if self.dense or self.bm25 or self.hybrid or self.recall:
            out.update(dense=self.dense, bm25=self.bm25, hybrid=self.hybrid, recall=self.recall)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Query:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Candidates:
    """What `candidates` leaves for every later step: the queries, which recall reranks,
    and the query and document vectors (rows in the order of `queries` and sorted ids)."""

    queries: list[Query]
    recall: str
    qvec: np.ndarray
    dvec: np.ndarray

    def __post_init__(self) -> None:
        self._row = {q.id: i for i, q in enumerate(self.queries)}

    def row(self, query_id: str) -> int:
        """A query's row in `queries` and `qvec` (by id; the last split holding it wins)."""
        return self._row[query_id]

    def query(self, query_id: str) -> Query:
        return self.queries[self._row[query_id]]

    def split(self, name: str) -> list[Query]:
        return [q for q in self.queries if q.split == name]

    def save(self, work: Path) -> None:
        np.save(work / DOC_VECTORS, self.dvec)
        np.save(work / QUERY_VECTORS, self.qvec)
        queries = [q.to_dict() for q in self.queries]
        write_json(work / QUERIES, {"queries": queries, "recall": self.recall})

    @classmethod
    def load(cls, work: Path) -> Candidates:
        data = read_json(work / QUERIES)
        return cls(
            [Query.from_dict(q) for q in data["queries"]],
            data["recall"],
            np.load(work / QUERY_VECTORS),
            np.load(work / DOC_VECTORS),
        )


@dataclass
class ScoredRows:
    """A query's scored candidates: doc rows and the cross-encoder's logit of each."""

    rows: list[int]
    ce: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "ce": list(self.ce)}

    def by_row(self) -> dict[int, float]:
        return dict(zip(self.rows, self.ce, strict=True))


@dataclass
class TeacherScores:
    """A score file (`scores`, `teacher_rerank`): scored rows by query key ("split:id"),
    and the scoring time per split."""

    rows: dict[str, ScoredRows] = field(default_factory=dict)
    timing: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of(self, query: Query) -> ScoredRows:
        return self.rows[query.key]

    def save(self, path: Path) -> None:
        rows = {k: v.to_dict() for k, v in self.rows.items()}
        write_json(path, {"rows": rows, "timing": self.timing})

    @classmethod
    def load(cls, path: Path, *, missing_ok: bool = False) -> TeacherScores:
        if missing_ok and not path.is_file():
            return cls()
        data = read_json(path)
        rows = {k: ScoredRows(v["rows"], v["ce"]) for k, v in data["rows"].items()}
        return cls(rows, data.get("timing", {}))


@dataclass
class Ensemble:
    """The teacher distilled (`ensemble`): weights of the z-scored cross-encoder logit, BM25
    and cosine, and the logit's global mean and deviation."""

    weights: dict[str, float]
    ce_stats: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "ce_stats": list(self.ce_stats)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ensemble:
        mean, std = data["ce_stats"]
        return cls(dict(data["weights"]), (float(mean), float(std)))

    @classmethod
    def load(cls, work: Path) -> Ensemble:
        return cls.from_dict(read_json(work / TEACHER_ENSEMBLE))
