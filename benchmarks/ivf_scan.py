"""The IVF list scan with faiss's direct 8-bit codes against the store's `sq8` (issue 28, 10M).

At 10M a query's kNN is mostly the scan of its 8 lists' 8-bit codes (BENCHMARKS.md, "Scale").
faiss scans `QT_8bit_direct_signed` codes faster than `QT_8bit` ones (integer products, no
decoding), but it quantizes the query to bytes as well, so unit vectors (components well
inside [-1, 1]) must be scaled first, or every score is 0 (what was seen and dropped on
2026-12-05). Here both sides are scaled so that the inner product is kept:

- documents: code_d = round(x_d * s_d), with s_d = 127 / (the 99.99th percentile of |x_d| over
  the training sample), clipped to [-128, 127];
- queries: q_d / s_d, then multiplied by one factor per query so its largest component is 127
  (a ranking does not change when a query is scaled), then rounded.

Then sum_d code_d * q'_d is proportional to sum_d x_d q_d up to the rounding. `global` scales
every dimension alike (one s for all). Same coarse quantizer and lists for every variant; one
thread; recall@100 against exact inner-product search; the latency is the kNN at k = 1,000 (the
rerank depth), p50 over single-query searches.

    python benchmarks/ivf_scan.py --size 1000000 --nlist 2048
    python benchmarks/ivf_scan.py --size 10000000 --nlist 4096
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import ClusteredSphere  # noqa: E402
from benchmarks.timing import machine  # noqa: E402

DIM = 384
CHUNK = 500_000


def log(message: str) -> None:
    print(f"[ivf_scan {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def chunks(docs: np.ndarray) -> Any:
    """(first row, float32 block) over the float16 documents."""
    for start in range(0, len(docs), CHUNK):
        yield start, docs[start : start + CHUNK].astype(np.float32)


def exact_top(docs: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top k over the documents, chunk by chunk."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start, block in chunks(docs):
        scores = np.concatenate([best_s, queries @ block.T], axis=1)
        ids = np.arange(start, start + len(block))[None, :].repeat(len(queries), 0)
        ids = np.concatenate([best_i, ids], axis=1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return best_i


def scales_of(sample: np.ndarray, variant: str) -> np.ndarray | None:
    if variant == "sq8":
        return None
    spread = np.quantile(np.abs(sample), 0.9999, axis=0)
    if variant == "direct-global":
        spread = np.full(DIM, spread.max(), np.float32)
    return (127.0 / spread).astype(np.float32)


def as_codes(block: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    if scales is None:
        return block
    return np.clip(np.round(block * scales), -128, 127).astype(np.float32)


def as_queries(queries: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    if scales is None:
        return queries
    q = queries / scales
    return np.round(q * (127.0 / np.abs(q).max(axis=1, keepdims=True))).astype(np.float32)


def run(args: argparse.Namespace) -> dict[str, Any]:
    gen = ClusteredSphere()
    queries = gen.queries(args.queries).astype(np.float32)
    before = machine(ROOT)
    # the documents once, as float16 (10M x 384 in 7.7 GB): every variant indexes these
    docs = np.empty((args.size, DIM), np.float16)
    start = 0
    for block in gen.documents(args.size, chunk=CHUNK):
        docs[start : start + len(block)] = block
        start += len(block)
    log(f"{args.size:,} documents generated")
    truth = exact_top(docs, queries, 100)
    log("exact top 100 found")
    faiss.omp_set_num_threads(2)
    sample = docs[:: max(1, args.size // (args.nlist * 64))][: args.nlist * 64].astype(np.float32)
    coarse = faiss.IndexFlatIP(DIM)
    kmeans = faiss.Clustering(DIM, args.nlist)
    kmeans.niter, kmeans.spherical, kmeans.max_points_per_centroid = 10, True, 64
    start = time.perf_counter()
    kmeans.train(sample, coarse)
    log(f"k-means over {args.nlist} lists: {time.perf_counter() - start:.0f} s")
    centroids = faiss.rev_swig_ptr(coarse.get_xb(), args.nlist * DIM).reshape(args.nlist, DIM)
    # each document's list, once: every variant shares the lists (add_core skips assignment)
    assign = np.empty(args.size, np.int64)
    for first, block in chunks(docs):
        assign[first : first + len(block)] = coarse.search(block, 1)[1][:, 0]
    log("lists assigned")
    rows = []
    for variant in args.variants:
        qtype = (
            faiss.ScalarQuantizer.QT_8bit
            if variant == "sq8"
            else faiss.ScalarQuantizer.QT_8bit_direct_signed
        )
        quantizer = faiss.IndexFlatIP(DIM)
        quantizer.add(centroids.copy())
        scales = scales_of(sample, variant)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, DIM, args.nlist, qtype, faiss.METRIC_INNER_PRODUCT, False
        )
        index.train(as_codes(sample, scales))
        faiss.omp_set_num_threads(2)
        start = time.perf_counter()
        for first, block in chunks(docs):
            codes = np.ascontiguousarray(as_codes(block, scales))
            lists = np.ascontiguousarray(assign[first : first + len(block)])
            ids = np.arange(first, first + len(block), dtype=np.int64)
            index.add_core(
                len(codes), faiss.swig_ptr(codes), faiss.swig_ptr(ids), faiss.swig_ptr(lists)
            )
        added = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        q = as_queries(queries, scales)
        for nprobe in args.nprobe:
            index.nprobe = nprobe
            index.search(q[:10], args.k)  # warm
            times = []
            for i in range(len(q)):
                t0 = time.perf_counter()
                index.search(q[i : i + 1], args.k)
                times.append((time.perf_counter() - t0) * 1e3)
            _, found = index.search(q, 100)
            pairs = zip(found, truth, strict=True)
            recall = float(np.mean([len(set(f) & set(t)) / 100 for f, t in pairs]))
            row = {
                "variant": variant,
                "nprobe": nprobe,
                "knn_p50_ms": round(float(np.median(times)), 3),
                "knn_p99_ms": round(float(np.percentile(times, 99)), 3),
                "recall_at_100": round(recall, 4),
                "add_s": round(added, 1),
            }
            rows.append(row)
            log(json.dumps(row))
        del index
    return {
        "size": args.size,
        "nlist": args.nlist,
        "k": args.k,
        "queries": args.queries,
        "rows": rows,
        "machine": before,
        "command": shlex.join(["python", "benchmarks/ivf_scan.py", *sys.argv[1:]]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--nlist", type=int, default=2048)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16])
    p.add_argument("--variants", nargs="+", default=["sq8", "direct-perdim", "direct-global"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=1)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
