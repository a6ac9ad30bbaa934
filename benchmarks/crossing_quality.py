"""The int8 crossing graph against the float crossing: ranking quality and rerank time.

    python benchmarks/crossing_quality.py --model runs/scifact-final/twinbert-res \\
        --index-dir runs/scifact-res --data ../shared/datasets/scifact

Needs a model exported with --int8 whose crossing is residual (max or mul), and an embedded
store indexed with that model. Both runs use the int8 query graph; only the crossing differs.
Evaluation is `evaluate_searcher` (the `eval` command's), on the test qrels, BM25 fusion off.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from twinbert_search.evaluation.searcher import evaluate_searcher
from twinbert_search.ingest.readers import read_qrels, read_queries
from twinbert_search.runtime.model import TwinBertRuntime, document_graph_of
from twinbert_search.search import Searcher
from twinbert_search.stores.embedded import EmbeddedStore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--index-dir", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="BEIR folder (queries, qrels/)")
    p.add_argument("--split", default="test")
    p.add_argument("--candidates", default="100,1000")
    args = p.parse_args()
    queries = read_queries(args.data / "queries.jsonl")
    qrels = read_qrels(args.data / "qrels" / f"{args.split}.tsv")
    store = EmbeddedStore.open(args.index_dir, with_documents=False)
    print("| crossing | candidates | nDCG@10 | MRR@10 | rerank p50 / p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for int8 in (False, True):
        runtime = TwinBertRuntime.load(args.model, int8=True, crossing_int8=int8)
        runtime.document_graph = document_graph_of(store.info.model_fingerprint)
        searcher = Searcher(runtime, store)
        for candidates in (int(c) for c in args.candidates.split(",")):
            report = evaluate_searcher(
                searcher, queries, qrels, candidates=candidates, lexical_weight=0, progress=False
            )
            rerank = report.latency["rerank"]
            print(
                f"| {'int8 graph' if int8 else 'float (numpy)'} | {candidates:,} "
                f"| {report.reranked['ndcg@10']:.4f} | {report.reranked['mrr@10']:.4f} "
                f"| {rerank['p50_ms']:.2f} / {rerank['p99_ms']:.2f} |"
            )
    store.close()


if __name__ == "__main__":
    main()
