"""The search, ann and memory sections: the whole pipeline on stores of growing size.

- search     end-to-end search on the embedded store per size: encode + kNN + residual
             rerank, ANN recall@100 against exact search, ingest and index build time
- ann        build time, recall@100 and latency of several index strings on the same vectors
- memory     peak RSS of a child process that loads the model and the largest store and
             serves queries (`serve_probe.py`)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suite import (
    RECALL_K,
    REPO,
    BenchConfig,
    build_store,
    cfg_dim,
    dir_bytes,
    query_texts,
    with_residual,
)
from benchmarks.synthetic import ClusteredSphere
from benchmarks.timing import sample_ms, summary_ms
from twinbert_search.runtime.model import TwinBertRuntime
from twinbert_search.stores.embedded.ann import RunningTopK

MATRIX_MAX = 1_000_000  # above: vectors streamed in chunks, no brute-force latency reference


def _truth(top: RunningTopK, k: int) -> tuple[np.ndarray, dict[str, float]]:
    """Top-k rows per query and the mean similarity at ranks 1, 10, 100 and 1,000."""
    scores, rows = top.result()
    ranks = [r for r in (1, 10, 100, 1000) if r <= scores.shape[1]]
    mean = scores[:, [r - 1 for r in ranks]].mean(axis=0)
    return rows[:, :k], {str(r): float(v) for r, v in zip(ranks, mean, strict=True)}


def exact_top(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, float]]:
    """Exact top-k rows per query by inner product (blocked, so 1M x 384 fits), and the mean
    similarity at ranks 1, 10, 100 and 1,000 (what the synthetic neighbourhoods look like)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    ranks = [r for r in (1, 10, 100, 1000) if r <= len(docs)]
    at_rank = np.zeros((len(queries), len(ranks)))
    for lo in range(0, len(queries), 64):
        scores = queries[lo : lo + 64] @ docs.T
        out[lo : lo + 64] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        deepest = -np.partition(-scores, ranks[-1] - 1, axis=1)[:, : ranks[-1]]
        deepest.sort(axis=1)
        at_rank[lo : lo + 64] = deepest[:, ::-1][:, [r - 1 for r in ranks]]
    return out, {str(r): float(v) for r, v in zip(ranks, at_rank.mean(axis=0), strict=True)}


def _exact_latency(docs: np.ndarray, queries: np.ndarray, k: int, n: int) -> dict[str, float]:
    """Brute-force kNN latency (numpy matrix-vector product + top-k) as a reference."""

    def call(i: int) -> np.ndarray:
        return np.argpartition(-(docs @ queries[i % len(queries)]), k - 1)[:k]

    return summary_ms(sample_ms(call, n, warmup=2))


def bench_search_size(cfg: BenchConfig, size: int, runtime: TwinBertRuntime) -> dict[str, Any]:
    """End-to-end search latency and ANN recall@100 at one store size.

    Above MATRIX_MAX documents the vectors are generated, ingested and scored for the exact
    top-k a chunk at a time, and the brute-force latency reference is skipped.
    """
    from twinbert_search.search import Searcher
    from twinbert_search.stores.embedded import EmbeddedStore

    sphere = ClusteredSphere(dim=runtime.dim, seed=cfg.seed)
    start = time.perf_counter()
    docs = sphere.document_matrix(size) if size <= MATRIX_MAX else None
    # Queries of the same distribution: the first half warms the process up (as a serving
    # process is warm), the second half is measured; none of the measured ones ran before.
    warmup, queries = np.split(sphere.queries(2 * cfg.search_queries), 2)
    generate = time.perf_counter() - start
    path = cfg.work_dir / f"store-{size}"
    top = RunningTopK(queries, min(1000, size))
    built = build_store(
        path, sphere.documents(size) if docs is None else docs, runtime, cfg, observe=top.add
    )
    generate += built.pop("generate_s")
    k = min(RECALL_K, size)
    truth, similarity = _truth(top, k)
    exact = None
    if docs is not None:
        exact = _exact_latency(docs, queries, k, min(50, cfg.search_queries))
    del docs
    start = time.perf_counter()
    store = EmbeddedStore.open(path, with_documents=False)
    searcher = Searcher(runtime, store)
    searcher.search("warm up", k=10, candidates=cfg.candidates, query_vector=queries[0])
    open_s = time.perf_counter() - start
    texts = query_texts(cfg)
    alt = None  # the same pipeline with the crossing at cfg.alt_hidden, timed alternately
    if cfg.alt_hidden and cfg.alt_hidden != cfg.hidden:
        alt = Searcher(with_residual(runtime, cfg, cfg.combine, cfg.alt_hidden), store)
    alt_total: list[float] = []

    def timed(engine: Searcher, text: str, vector: np.ndarray) -> tuple[Any, float, float]:
        t0 = time.perf_counter()
        engine.runtime.encode_query(text)  # for real; recall uses the synthetic vector
        t1 = time.perf_counter()
        result = engine.search(
            text,
            k=10,
            candidates=cfg.candidates,
            query_vector=vector,
            fetch_documents=False,  # the target's pipeline: encode + kNN + rerank
        )
        return result, t1 - t0, time.perf_counter() - t0

    for i, vector in enumerate(warmup):
        for engine in (searcher, alt) if alt else (searcher,):
            timed(engine, texts[i % len(texts)], vector)
    recall_hits, coverage_hits = 0, 0
    parts: dict[str, list[float]] = {
        "encode": [],
        "recall": [],
        "rerank": [],
        "total": [],
        "fetch": [],
    }
    try:
        for i, vector in enumerate(queries):
            found = store.recall(vector, k)
            recall_hits += len({int(d[1:]) for d in found.ids} & set(truth[i].tolist()))
            text = texts[i % len(texts)]
            if alt and i % 2:  # alternate which crossing runs first
                alt_total.append(timed(alt, text, vector)[2] * 1e3)
            result, encode_s, total_s = timed(searcher, text, vector)
            if alt and not i % 2:
                alt_total.append(timed(alt, text, vector)[2] * 1e3)
            t0 = time.perf_counter()
            store.documents([hit.id for hit in result.hits])  # the hits' stored fields
            parts["fetch"].append((time.perf_counter() - t0) * 1e3)
            parts["encode"].append(encode_s * 1e3)
            parts["recall"].append(result.timings_ms["recall"])
            parts["rerank"].append(result.timings_ms["rerank"])
            parts["total"].append(total_s * 1e3)
            ids = {int(d[1:]) for d in result.recall_ids}
            coverage_hits += len(ids & set(truth[i].tolist()))
    finally:
        store.close()
    snapshot = next(p for p in (path / "snapshots").iterdir() if not p.name.startswith("."))
    sweep = []
    tuned_nprobe = None
    if built["ann"].startswith("ivf"):  # the recall/latency trade-off of this very index
        from twinbert_search.stores.embedded import ann as ann_lib

        index = ann_lib.load_index(snapshot / "ann.faiss", mmap=True)
        tuned_nprobe = int(index.nprobe)  # chosen at build by ann.tune_nprobe
        depth = min(cfg.candidates, size)
        decode = _snapshot_decoder(snapshot) if ann_lib.refines(index) else None
        sweep = [
            _knn_quality(index, queries, truth, depth, nprobe, decode) for nprobe in (8, 16, 32, 64)
        ]
        del index, decode
    return {
        "size": size,
        **built,
        "nprobe_sweep": sweep,
        "nprobe": tuned_nprobe,
        "generate_s": generate,
        "open_and_first_query_s": open_s,
        "queries": len(queries),
        "candidates": cfg.candidates,
        "combine": cfg.combine,
        "recall_at_100": recall_hits / (k * len(queries)),
        "exact_similarity_at_rank": similarity,
        "exact_top100_in_candidates": coverage_hits / (k * len(queries)),
        "latency_ms": {name: summary_ms(values) for name, values in parts.items()},
        "alt_hidden": {"hidden": cfg.alt_hidden, "total": summary_ms(alt_total)}
        if alt_total
        else None,
        "exact_knn_ms": exact,
        "snapshot_bytes": dir_bytes(snapshot),
        "ann_bytes": (snapshot / "ann.faiss").stat().st_size,
        "store_path": str(path),
    }


def _snapshot_decoder(snapshot: Path) -> Any:
    """Rows -> float32 vectors from a snapshot's codec arrays (what an ivfN,fs search rescores
    its shortlist with), memory-mapped."""
    from twinbert_search.stores.embedded.codecs import get_codec

    codec = get_codec(json.loads((snapshot / "snapshot.json").read_text())["codec"])
    arrays = {
        name: np.load(snapshot / f"{name}.npy", mmap_mode="r") for name in codec.array_names()
    }
    return lambda rows: codec.decode(arrays, rows)


def bench_ann_choice(cfg: BenchConfig, size: int, specs: list[str]) -> dict[str, Any]:
    """Build time, recall@100 and kNN latency (k = candidates) of several index strings on the
    same vectors, with the search knob swept: how the index for the stores was chosen."""
    from twinbert_search.stores.embedded import ann as ann_lib

    sphere = ClusteredSphere(dim=cfg_dim(cfg), seed=cfg.seed)
    docs = sphere.document_matrix(size)
    queries = sphere.queries(min(cfg.search_queries, 100))
    k = min(RECALL_K, size)
    truth, _ = exact_top(docs, queries, k)
    depth = min(cfg.candidates, size)
    rows = []
    for spec in specs:
        start = time.perf_counter()
        index = ann_lib.build_index(spec, docs)
        build = time.perf_counter() - start
        resolved = ann_lib.parse_ann_spec(spec).resolve(size)
        knobs: list[int | None] = [8, 16, 32, 64] if resolved.kind == "ivf" else [None]
        decode = (lambda rows: docs[rows]) if ann_lib.refines(index) else None
        for knob in knobs:
            row = _knn_quality(index, queries, truth, depth, knob, decode)
            rows.append({"spec": resolved.canonical, "build_s": build, **row})
        del index
    return {"size": size, "candidates": min(cfg.candidates, size), "rows": rows}


def _knn_quality(
    index: Any,
    queries: np.ndarray,
    truth: np.ndarray,
    depth: int,
    nprobe: int | None,
    decode: Any = None,
) -> dict[str, Any]:
    """recall@k (k = truth width) and single-query latency at `depth` for one search knob;
    with `decode` (rows -> vectors) the shortlist is rescored as the store does (ivfN,fs)."""
    from twinbert_search.stores.embedded import ann as ann_lib

    def knn(query: np.ndarray, k: int) -> np.ndarray:
        if decode is not None:
            return ann_lib.search_refined(index, query, k, decode, nprobe=nprobe)[1]
        return ann_lib.search(index, query, k, nprobe=nprobe)[1][0]

    k = truth.shape[1]
    hits = 0
    for i, query in enumerate(queries):
        hits += len(set(knn(query, k).tolist()) & set(truth[i].tolist()))
    latency = sample_ms(lambda i: knn(queries[i % len(queries)], depth), len(queries), warmup=2)
    return {
        "knob": "default" if nprobe is None else f"nprobe={nprobe}",
        "recall_at_100": hits / truth.size,
        "knn_ms": summary_ms(latency),
    }


# --- memory -------------------------------------------------------------------------------


def bench_memory(cfg: BenchConfig, store_path: Path, queries: int = 200) -> dict[str, Any]:
    """Peak RSS of a fresh process serving `queries` searches from the given store."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.serve_probe",
        "--store",
        str(store_path),
        "--model",
        str(cfg.model_dir),
        "--queries-file",
        str(cfg.queries),
        "--queries",
        str(queries),
        "--candidates",
        str(cfg.candidates),
        "--hidden",
        str(cfg.hidden),
        "--combine",
        cfg.combine,
        "--threads",
        str(cfg.serve_threads),
        "--seed",
        str(cfg.seed),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"serve_probe failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
