"""The vector sets of `peers.py`: SciFact encoded by the default model, or synthetic vectors,
each with its queries and the exact top 1,000 per query."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.suite import SAMPLE_QUERIES, BenchConfig, with_residual
from benchmarks.synthetic import ClusteredSphere
from twinbert_search.runtime import TwinBertRuntime

TRUTH_DEPTH = 1000


@dataclass
class VectorSet:
    """Documents (ids, vectors, crossing data, texts), queries and the exact top 1,000."""

    name: str
    ids: list[str]
    vectors: np.ndarray
    precomputed: np.ndarray | None
    titles: list[str]
    texts: list[str]
    queries: np.ndarray
    query_texts: list[str]
    truth: list[list[str]]  # per query, the exact top TRUTH_DEPTH ids, best first


def exact_truth(vectors: np.ndarray, queries: np.ndarray, depth: int) -> np.ndarray:
    """Rows of the exact top `depth` by inner product per query, best first."""
    depth = min(depth, len(vectors))
    out = np.empty((len(queries), depth), dtype=np.int64)
    for lo in range(0, len(queries), 32):
        scores = queries[lo : lo + 32] @ vectors.T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[lo : lo + 32] = np.take_along_axis(top, order, axis=1)
    return out


# --- data ---------------------------------------------------------------------------------


def serving_runtime(model: Path | None, work: Path, *, residual: bool = True) -> TwinBertRuntime:
    """The model's int8 towers (one thread); with `residual`, the residual crossing of the
    shipped shape (hidden 128, max, random weights) scored by its int8 graph, the serving path
    BENCHMARKS times; without, the model's own crossing (the default model's is cosine)."""
    from twinbert_search.runtime.models import resolve_model

    model_dir = Path(resolve_model(model, build_default=True))
    cfg = BenchConfig(model_dir=model_dir, work_dir=work)
    runtime = TwinBertRuntime.load(model_dir, query_int8=True, document_int8=True, threads=1)
    return with_residual(runtime, cfg, cfg.combine) if residual else runtime


def load_scifact(
    index_dir: Path, runtime: TwinBertRuntime, data: Path, limit: int | None = None
) -> VectorSet:
    """SciFact's vectors from an embedded store built by `twinbert-search index`, and its
    judged test queries (the first `limit`) encoded by the same model."""
    from twinbert_search.ingest.readers import read_qrels, read_queries
    from twinbert_search.stores.embedded import EmbeddedStore

    store = EmbeddedStore.open(index_dir)
    try:
        ids = store.all_ids()
        parts = [store.fetch(ids[i : i + 1000]) for i in range(0, len(ids), 1000)]
    finally:
        store.close()
    vectors = np.concatenate([p.vectors for p in parts]).astype(np.float32)
    documents = [d for p in parts for d in (p.documents or [])]
    qrels = read_qrels(data / "qrels" / "test.tsv")
    queries = [q for q in read_queries(data / "queries.jsonl") if q.id in qrels][:limit]
    texts = [q.text for q in queries]
    matrix = runtime.encode_queries(texts).astype(np.float32)
    return _vector_set(
        "scifact",
        ids,
        vectors,
        runtime,
        [d.get("title", "") for d in documents],
        [d.get("text") or " " for d in documents],
        matrix,
        texts,
    )


def load_synthetic(size: int, runtime: TwinBertRuntime, queries: int) -> VectorSet:
    """The suite's clustered synthetic vectors (`synthetic.py`, seed 0) and held-out queries;
    query texts (encoded for the two-stage timing only) from the sample queries."""
    sphere = ClusteredSphere(dim=runtime.dim, seed=0)
    vectors = sphere.document_matrix(size)
    texts = [json.loads(line)["text"] for line in SAMPLE_QUERIES.read_text().splitlines() if line]
    ids = [f"d{i:08d}" for i in range(size)]
    return _vector_set(
        f"synthetic-{size}",
        ids,
        vectors,
        runtime,
        [""] * size,
        [f"doc {i}" for i in range(size)],
        sphere.queries(queries),
        [texts[i % len(texts)] for i in range(queries)],
    )


def _vector_set(
    name: str,
    ids: list[str],
    vectors: np.ndarray,
    runtime: TwinBertRuntime,
    titles: list[str],
    texts: list[str],
    queries: np.ndarray,
    query_texts: list[str],
) -> VectorSet:
    blocks = [
        runtime.precompute_documents(vectors[i : i + 20_000]) for i in range(0, len(ids), 20_000)
    ]
    precomputed = None if blocks[0] is None else np.concatenate(blocks).astype(np.float32)
    rows = exact_truth(vectors, queries, TRUTH_DEPTH)
    truth = [[ids[r] for r in row] for row in rows]
    return VectorSet(name, ids, vectors, precomputed, titles, texts, queries, query_texts, truth)
