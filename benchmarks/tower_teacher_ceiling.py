"""How far a tower teacher could lift a student: the teacher reranking the served candidates.

    python benchmarks/tower_teacher_ceiling.py --data ../shared/datasets/cacm \\
        --index-dir runs/ix/cacm-default --teacher runs/teachers/towers-bge \\
        [--teacher ...] [--train-qrels .../scifact/qrels/train.tsv] [--work runs/ttc-cacm]

A student distilled from a teacher can at best order its candidates as the teacher does.
So the teacher reranking the candidates the served model recalls (its kNN and BM25 lists,
100 deep, fused as `search --hybrid` fuses them: z-scores for the default model) bounds
what `adapt` with that teacher can give, on the collection's real queries rather than on the
pseudo-queries it trains on. Reported for each teacher beside the recall itself, nDCG@10
(and by overlap with `--train-qrels` where given). Nothing is tuned: the teachers' weights
are what their directories record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.evaluation.overlap import overlap_split
from twinbert_search.ingest.readers import read_qrels, read_queries
from twinbert_search.search.factory import open_searcher
from twinbert_search.training.corpus import read_documents
from twinbert_search.training.tower_teacher import TowerTeacher, candidate_signals

DEPTH = 100


def _ndcg(qrels: dict[str, Any], run: dict[str, Any], split: dict | None) -> dict:
    """nDCG@10 over all judged queries, and per overlap split where one is given."""
    out = {"all": round(evaluate(qrels, run)["ndcg@10"], 4)}
    for name, qids in (split or {}).items():
        if name != "all" and qids:
            subset = {q: qrels[q] for q in qids}
            out[name] = round(evaluate(subset, run)["ndcg@10"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a BEIR folder (test qrels)")
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="the served model [default]")
    parser.add_argument("--teacher", type=Path, action="append", required=True)
    parser.add_argument("--train-qrels", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/tower-teacher-ceiling"))
    args = parser.parse_args()

    qrels = read_qrels(args.data / "qrels" / "test.tsv")
    queries = [q for q in read_queries(args.data / "queries.jsonl") if q.id in qrels]
    split = overlap_split(qrels, read_qrels(args.train_qrels)) if args.train_qrels else None
    searcher = open_searcher("embedded", model=args.model, index_dir=args.index_dir, threads=1)
    with searcher.store:
        signals = candidate_signals(searcher, queries, DEPTH)
    recall = {s["query_id"]: [(d, 0.0) for d in s["docs"]] for s in signals}
    docs = read_documents(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = {"recall (served hybrid)": _ndcg(qrels, recall, split)}
    for folder in args.teacher:
        teacher = TowerTeacher.load(folder)
        if teacher is None:
            raise SystemExit(f"{folder}: not a tower teacher (teacher towers writes one)")
        cosines, _, _ = teacher.tower_cosines(
            docs, sorted(docs), [q.text for q in queries], signals, args.work, progress=True
        )
        run = {}
        for q, s, c in zip(queries, signals, cosines, strict=True):
            fused = teacher.fused(s["bm25"], s["cosine"], c).tolist()
            run[q.id] = dict(zip(s["docs"], fused, strict=True))
        rows[f"teacher {folder} ({teacher.describe()})"] = _ndcg(qrels, run, split)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
