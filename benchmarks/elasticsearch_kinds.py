"""Which Elasticsearch `dense_vector` kinds hold quality: recall and reranked quality per kind.

The vectors of an embedded store (built with `--ann flat`, so its search is exact) are copied
into one Elasticsearch index per kind; each kind then answers the same judged queries. For
each: overlap of its top 100 with exact search, nDCG@10 and Recall@100 of recall and of the
reranked run (the searcher's rerank of the top 100), and recall latency p50 (single queries).

    twinbert-search index ../shared/datasets/scifact --index-dir runs/scifact-flat --ann flat
    scripts/elasticsearch-node.sh start
    python benchmarks/elasticsearch_kinds.py --index-dir runs/scifact-flat \\
        --data ../shared/datasets/scifact --url http://127.0.0.1:9260

A kind is an index description (`--ann` of `--backend elasticsearch`), optionally with
`@<oversample>`: `bbq_hnsw@0` turns the float rescoring off, `bbq_hnsw@1` rescores only k.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twinbert_search.documents import Document  # noqa: E402
from twinbert_search.evaluation.searcher import evaluate_searcher  # noqa: E402
from twinbert_search.ingest.readers import read_qrels, read_queries  # noqa: E402
from twinbert_search.runtime import TwinBertRuntime  # noqa: E402
from twinbert_search.runtime.models import resolve_model  # noqa: E402
from twinbert_search.search import Searcher  # noqa: E402
from twinbert_search.stores.elasticsearch import (  # noqa: E402
    ConnectionOptions,
    ElasticsearchStore,
    IndexOptions,
)
from twinbert_search.stores.embedded import EmbeddedStore  # noqa: E402

KINDS = ("hnsw", "int8_hnsw", "int8_hnsw@0", "int4_hnsw", "bbq_hnsw", "bbq_hnsw@1", "bbq_hnsw@0")
DEPTH = 100


def copy_store(embedded: EmbeddedStore, target: ElasticsearchStore, fingerprint: str) -> float:
    """Every document and vector of `embedded` into `target`; returns the seconds it took."""
    ids = embedded.all_ids()
    start = time.perf_counter()
    for i in range(0, len(ids), 500):
        found = embedded.fetch(ids[i : i + 500])
        docs = [
            Document(
                id=d, title=m.get("title", ""), text=m.get("text") or " ", metadata=m["metadata"]
            )
            for d, m in zip(found.ids, found.documents or [], strict=True)
        ]
        target.upsert(
            docs, found.vectors, model_fingerprint=fingerprint, precomputed=found.precomputed
        )
    target.finalize()
    return time.perf_counter() - start


def overlap(exact: Searcher, other: Searcher, vectors: list[np.ndarray]) -> float:
    """Mean share of exact search's top 100 that `other` also returns in its top 100."""
    shares = []
    for vector in vectors:
        truth = set(exact.store.recall(vector, DEPTH).ids)
        shares.append(len(truth & set(other.store.recall(vector, DEPTH).ids)) / len(truth))
    return float(np.mean(shares))


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    model_dir = resolve_model(args.model)
    runtime = TwinBertRuntime.load(model_dir, threads=args.threads)
    exact = Searcher.open(args.index_dir, model_dir, threads=args.threads)
    embedded = EmbeddedStore.open(args.index_dir)
    fingerprint = embedded.info.model_fingerprint or runtime.fingerprint
    queries = read_queries(args.data / "queries.jsonl")
    qrels = read_qrels(args.data / "qrels" / "test.tsv")
    judged = [q for q in queries if q.id in qrels]
    vectors = [runtime.encode_query(q.text) for q in judged]
    common = {"candidates": DEPTH, "recall_depth": DEPTH, "progress": False}
    rows = []
    report = evaluate_searcher(exact, queries, qrels, **common)
    rows.append(row("exact (embedded flat)", report, 1.0, None))
    for kind in args.kinds:
        text, _, oversample = kind.partition("@")
        options = IndexOptions.parse(text, replicas=0)
        if oversample:
            options = IndexOptions.parse(text, replicas=0, oversample=float(oversample))
        alias = f"bench-{kind.replace('@', '-os').replace('.', '')}"
        store = ElasticsearchStore(
            ConnectionOptions(args.url, timeout=120), alias=alias, index_options=options
        )
        try:
            seconds = copy_store(embedded, store, fingerprint)
            searcher = Searcher(runtime, store)
            report = evaluate_searcher(searcher, queries, qrels, **common)
            rows.append(row(kind, report, overlap(exact, searcher, vectors), seconds))
        finally:
            if not args.keep:
                names = store.generations.concrete_indices(alias)
                if names:
                    store.client.indices.delete(index=",".join(names))
            store.close()
        print(json.dumps(rows[-1]), flush=True)
    return rows


def row(kind: str, report: Any, share: float, seconds: float | None) -> dict[str, Any]:
    return {
        "kind": kind,
        "overlap@100": round(share, 4),
        "recall_ndcg@10": round(report.recall["ndcg@10"], 4),
        "reranked_ndcg@10": round(report.reranked["ndcg@10"], 4),
        "reranked_recall@100": round(report.reranked["recall@100"], 4),
        "recall_p50_ms": round(report.latency["recall"]["p50_ms"], 2),
        "index_s": None if seconds is None else round(seconds, 1),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| kind | overlap@100 with exact | nDCG@10 recall | nDCG@10 reranked | Recall@100 "
        "| recall p50 ms | copy s |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| `{r['kind']}` | {r['overlap@100']:.4f} | {r['recall_ndcg@10']:.4f} | "
            f"{r['reranked_ndcg@10']:.4f} | {r['reranked_recall@100']:.4f} | "
            f"{r['recall_p50_ms']:.2f} | {'' if r['index_s'] is None else r['index_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index-dir", type=Path, required=True, help="embedded store, --ann flat")
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (queries, qrels)")
    parser.add_argument("--url", required=True, help="Elasticsearch URL (a test node)")
    parser.add_argument("--model", type=Path, default=None, help="the store's model")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the indices")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args()
    rows = measure(args)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
