"""Ranking quality of the embedded store's vector copies: float32 against 8-bit codes.

    python benchmarks/codec_quality.py --data ../shared/datasets/scifact \\
        --data ../shared/datasets/cacm [--model runs/scifact-final/twinbert-res] [--int8]

At 50k documents and more `auto` keeps the vectors once, as the 8-bit codes of an IVF-SQ8
index that serves kNN and rerank alike. This measures what that costs on real collections:
each corpus is indexed once (codec float32), then its snapshot is rebuilt with each index
string and evaluated with `evaluate_searcher` (the `eval` command's) on the test qrels, the
model's served settings (`--lexical-weight 0`: the crossing layer alone).

- `flat`          exact search over the float32 vectors: the reference
- `ivfN`          IVF-Flat: the lists hold float32 copies (what `auto` built before)
- `ivfN,sq8`      IVF-SQ8: the lists hold 8-bit codes, the only copy (what `auto` builds now)
- `ivfN,sq8d`     direct signed 8-bit codes scaled per dimension (`auto,sq8d`), which faiss
                  scans as integer products; its lists come from spherical k-means

The first three IVF rows use the same lists (N = corpus size / 39, capped as at build, or
--nlist), so the difference between them is the codes alone. `--split train` evaluates on
the train qrels: where a choice between codes is made (SciFact train is validation for the
default model, which never trained on it). CACM is test-only: nothing is chosen on it here,
it only reports whether the codes cost quality out of domain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twinbert_search.evaluation.searcher import evaluate_searcher
from twinbert_search.ingest.corpus import index_corpus
from twinbert_search.ingest.readers import read_qrels, read_queries
from twinbert_search.search.factory import open_searcher
from twinbert_search.stores.embedded import EmbeddedStore

MIN_POINTS_PER_LIST = 39


def _specs(count: int, nlist: int | None) -> list[str]:
    lists = nlist or max(1, count // MIN_POINTS_PER_LIST)
    return ["flat", f"ivf{lists}", f"ivf{lists},sq8", f"ivf{lists},sq8d"]


def evaluate_dataset(
    data: Path,
    work: Path,
    model: Path | None,
    int8: bool,
    nlist: int | None,
    lexical_weight: float | None = None,
    split: str = "test",
) -> list[dict]:
    """Index `data` once, then rebuild and evaluate its snapshot per index string."""
    store_dir = work / data.name
    if not (store_dir / "store.json").is_file():
        index_corpus(data, index_dir=store_dir, model=model, int8=int8, codec="float32", ann="flat")
    queries = read_queries(data / "queries.jsonl")
    qrels = read_qrels(data / "qrels" / f"{split}.tsv")
    rows = []
    with EmbeddedStore.open(store_dir) as probe:
        count = probe.info.count
    for spec in _specs(count, nlist):
        with EmbeddedStore.create_or_open(store_dir, ann=spec) as store:
            store.finalize()
            built = store.info.ann
        searcher = open_searcher("embedded", model=model, int8=int8, index_dir=store_dir)
        with searcher.store:
            report = evaluate_searcher(
                searcher, queries, qrels, lexical_weight=lexical_weight, progress=False
            )
        rows.append(
            {
                "data": data.name,
                "split": split,
                "ann": built,
                "queries": report.queries,
                "recall_ndcg@10": report.recall["ndcg@10"],
                "recall_recall@100": report.recall.get("recall@100"),
                "reranked_ndcg@10": report.reranked["ndcg@10"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, action="append", required=True, help="BEIR folder")
    p.add_argument("--model", type=Path, default=None, help="model directory (default model)")
    p.add_argument("--int8", action="store_true", help="int8 query and document graphs")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default n / 39)")
    p.add_argument(
        "--lexical-weight",
        type=float,
        default=None,
        help="BM25 weight in the rerank (default: the model's served setting; 0: crossing only)",
    )
    p.add_argument("--work-dir", type=Path, required=True, help="stores are kept here")
    p.add_argument("--split", default="test", help="qrels/SPLIT.tsv to evaluate (default test)")
    args = p.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for data in args.data:
        rows += evaluate_dataset(
            data, args.work_dir, args.model, args.int8, args.nlist, args.lexical_weight, args.split
        )
    print("| collection | split | index | queries | recall nDCG@10 | reranked nDCG@10 |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['data']} | {r['split']} | {r['ann']} | {r['queries']} "
            f"| {r['recall_ndcg@10']:.4f} "
            f"| {r['reranked_ndcg@10']:.4f} |"
        )


if __name__ == "__main__":
    main()
