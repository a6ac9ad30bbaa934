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

__all__ = ["TOWERS_KIND", "TowerSpec", "TowerTeacher", "candidate_signals", "tune_weights"]

TOWERS_KIND = "towers"
ENSEMBLE_FILE = "ensemble.json"
TUNING_GRID = (0.0, 0.5, 1.0, 2.0)


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
        try:
            body = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigurationError(f"{path}: not JSON ({exc})") from None
        if not isinstance(body, dict) or body.get("kind") != TOWERS_KIND:
            return None
        try:
            weights = body.get("weights", {})
            towers = tuple(
                TowerSpec(str(t["model"]), float(t.get("weight", 1.0)), t.get("index_dir"))
                for t in body.get("towers", [])
            )
            bm25, dense = float(weights.get("bm25", 0.0)), float(weights.get("dense", 0.0))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"{path}: a tower teacher needs towers of {{model, weight}} and numeric "
                f"weights ({type(exc).__name__}: {exc})"
            ) from None
        return cls(towers, bm25, dense)

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


def candidate_signals(searcher: Any, queries: Sequence[Any], depth: int = 100) -> list[dict]:
    """Each query's served candidates, as `search --hybrid` recalls them (the kNN and BM25
    lists, `depth` deep, fused by the searcher's hybrid fusion), with their BM25 scores and
    cosines to the query: the lists a tower teacher reranks when it is tuned or measured."""
    from twinbert_search.evaluation.hybrid_tuning import hybrid_lists

    store = searcher.store
    out = []
    for query, item in zip(queries, hybrid_lists(searcher, queries, depth), strict=True):
        ids = [d for d, _ in searcher.hybrid.fuse(item.dense, item.bm25)[:depth]]
        vectors = np.asarray(store.fetch(ids).vectors, np.float64)
        vector = np.asarray(searcher.encode(query.text), np.float64)
        norms = np.maximum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(vector), 1e-12)
        out.append(
            {
                "query_id": query.id,
                "docs": ids,
                "bm25": np.asarray(store.bm25_scores(query.text, ids), np.float64),
                "cosine": vectors @ vector / norms,
            }
        )
    return out


def _ndcg(
    teacher: TowerTeacher,
    lists: Sequence[Mapping[str, Any]],
    cosines: Sequence[Sequence[np.ndarray]],
    qrels: Mapping[str, Mapping[str, int]],
) -> float:
    """nDCG@10 of `teacher` reranking the lists."""
    from twinbert_search.evaluation.metrics import evaluate

    run = {}
    for item, towers in zip(lists, cosines, strict=True):
        fused = teacher.fused(item["bm25"], item["cosine"], towers).tolist()
        run[item["query_id"]] = dict(zip(item["docs"], fused, strict=True))
    return float(evaluate(qrels, run)["ndcg@10"])


def tune_weights(
    teacher: TowerTeacher,
    lists: Sequence[Mapping[str, Any]],
    cosines: Sequence[Sequence[np.ndarray]],
    qrels: Mapping[str, Mapping[str, int]],
    grid: Sequence[float] = TUNING_GRID,
) -> tuple[TowerTeacher, list[dict[str, Any]]]:
    """The weights of `teacher`'s signals that rerank labelled validation lists best (nDCG@10;
    ties keep the first in grid order), and every combination's score. Scale-free: a
    combination and its multiples are one."""
    import itertools

    rows: list[dict[str, Any]] = []
    seen: set[tuple[float, ...]] = set()
    best: tuple[float, TowerTeacher] | None = None
    for combo in itertools.product(grid, repeat=2 + len(teacher.towers)):
        top = max(combo)
        if top <= 0:
            continue
        key = tuple(round(w / top, 6) for w in combo)
        if key in seen:
            continue
        seen.add(key)
        bm25, dense, *weights = key
        towers = tuple(
            TowerSpec(t.model, w, t.index_dir) for t, w in zip(teacher.towers, weights, strict=True)
        )
        candidate = TowerTeacher(towers, bm25, dense)
        score = _ndcg(candidate, lists, cosines, qrels)
        rows.append({"weights": candidate.describe(), "ndcg@10": round(score, 4)})
        if best is None or score > best[0]:
            best = (score, candidate)
    assert best is not None  # the grid holds a positive weight
    return best[1], rows


def tune_on(
    teacher: TowerTeacher,
    data: str | Path,
    qrels: str | Path,
    index_dir: str | Path,
    work: str | Path,
    *,
    model: str | Path | None = None,
    tower_indexes: Mapping[str, str] | None = None,
    progress: bool = True,
) -> tuple[TowerTeacher, dict[str, Any]]:
    """`teacher` with its weights tuned on a labelled collection: `data` (a BEIR folder: its
    corpus and queries), validation `qrels` (never a test split), the candidates `model`
    serves from `index_dir` (an embedded index of that corpus). Each tower's corpus vectors
    come from `tower_indexes[tower model]` when given, else are encoded (and kept in `work`)."""
    from twinbert_search.ingest.readers import read_qrels, read_queries
    from twinbert_search.search.factory import open_searcher
    from twinbert_search.training.corpus import read_documents

    judged = read_qrels(qrels)
    queries = [q for q in read_queries(Path(data) / "queries.jsonl") if q.id in judged]
    if not queries:
        raise ConfigurationError(f"{qrels}: no query of {data} is judged there")
    searcher = open_searcher("embedded", model=model, index_dir=index_dir)
    with searcher.store:
        lists = candidate_signals(searcher, queries)
    indexes = tower_indexes or {}
    local = TowerTeacher(
        tuple(
            TowerSpec(t.model, t.weight, indexes.get(str(Path(t.model).resolve())))
            for t in teacher.towers
        ),
        teacher.bm25,
        teacher.dense,
    )
    docs = read_documents(data)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    cosines, _, _ = local.tower_cosines(
        docs, sorted(docs), [q.text for q in queries], lists, work, progress
    )
    best, rows = tune_weights(teacher, lists, cosines, judged)
    report = {
        "data": str(data),
        "qrels": str(qrels),
        "queries": len(queries),
        "chosen": best.describe(),
        "ndcg@10": max(r["ndcg@10"] for r in rows),
        "given": {
            "weights": teacher.describe(),
            "ndcg@10": round(_ndcg(teacher, lists, cosines, judged), 4),
        },
        "recall_ndcg@10": round(_recall_ndcg(lists, judged), 4),
        "grid": rows,
    }
    return best, report


def _recall_ndcg(lists: Sequence[Mapping[str, Any]], qrels: Mapping[str, Any]) -> float:
    """nDCG@10 of the lists in their served (recall) order."""
    from twinbert_search.evaluation.metrics import evaluate

    run = {item["query_id"]: [(d, 0.0) for d in item["docs"]] for item in lists}
    return float(evaluate(qrels, run)["ndcg@10"])
