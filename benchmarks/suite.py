"""The benchmark sections: each takes a `BenchConfig` and returns a JSON-able dict.

- encoding   query encoder p50/p99, fp32 vs int8 graphs, 1 and 2 threads, int8-fp32 cosine
- rerank     residual crossing vs the teacher cross-encoder on the same 100 / 1,000 candidates
- search     end-to-end search on the embedded store per size: encode + kNN + residual
  rerank, ANN recall@100 against exact search, ingest and index build time
- indexing   docs/s of a naive baseline (fp32, unsorted) vs the optimized path, per codec
- memory     peak RSS of a child process that loads the model and the largest store and
  serves queries (`serve_probe.py`)
- ann        build time, recall@100 and latency of several index strings on the same vectors
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.synthetic import ClusteredSphere
from benchmarks.timing import sample_ms, summary_ms
from twinbert_search.documents import Document
from twinbert_search.quantization.crossing_graph import supports_int8_graph, write_int8_graph
from twinbert_search.runtime.crossing import Crossing, OnnxCrossing, ResidualCrossing
from twinbert_search.runtime.encoder import row_cosines
from twinbert_search.runtime.model import TwinBertRuntime

REPO = Path(__file__).resolve().parents[1]
SAMPLE_QUERIES = REPO / "examples" / "sample" / "queries.jsonl"
SAMPLE_CORPUS = REPO / "examples" / "sample" / "corpus.jsonl"
SCIFACT_CORPUS = REPO.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"
CODECS = ("float32", "float16", "int8")
RECALL_K = 100


LEGACY_HIDDEN = 256  # the crossing's default size before 0.1.0, timed in its old form


@dataclass
class BenchConfig:
    """Everything a run depends on; `run.py` fills it from the command line."""

    model_dir: Path
    work_dir: Path
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    ann: str = "ivf2048"
    codec: str = "float32"
    hidden: int = 128  # the default crossing size (CrossingConfig)
    alt_hidden: int | None = 256  # end-to-end also timed with this crossing size
    rerank_hidden: list[int] = field(default_factory=lambda: [64, 128, 256])  # also timed
    combine: str = "max"  # crossing combine for the end-to-end search
    candidates: int = 1000
    encode_queries: int = 300  # timed query encodings per variant
    search_queries: int = 200  # timed end-to-end searches per size
    rerank_reps: int = 200  # timed crossing calls per candidate count
    teacher_reps: int = 3  # timed teacher calls on 100 candidates (1 on 1,000)
    teacher: Path | None = None  # cross-encoder checkpoint; None: the model's base_model
    teacher_max_length: int = 256
    index_docs: int = 500
    index_batch: int = 32
    corpus: Path | None = None  # None: SciFact when present, else the sample corpus
    queries: Path = SAMPLE_QUERIES
    serve_threads: int = 1  # query-encoder threads in the serving path
    crossing_int8: bool = True  # end-to-end search with the int8 crossing graph, as served
    seed: int = 0


def read_jsonl_texts(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                out.append(json.loads(line))
            if limit is not None and len(out) >= limit:
                break
    return out


def query_texts(cfg: BenchConfig) -> list[str]:
    return [row["text"] for row in read_jsonl_texts(cfg.queries)]


def corpus_path(cfg: BenchConfig) -> Path:
    return cfg.corpus or (SCIFACT_CORPUS if SCIFACT_CORPUS.is_file() else SAMPLE_CORPUS)


def corpus_documents(cfg: BenchConfig, n: int) -> list[Document]:
    """n real documents: SciFact when available, else the sample corpus repeated."""
    rows = read_jsonl_texts(corpus_path(cfg), n)
    docs = []
    for i in range(n):
        row = rows[i % len(rows)]
        docs.append(
            Document(id=f"{row['_id']}-{i}", text=row.get("text", ""), title=row.get("title", ""))
        )
    return docs


def load_runtime(
    cfg: BenchConfig, *, int8: bool, threads: int, spinning: bool = True
) -> TwinBertRuntime:
    return TwinBertRuntime.load(
        cfg.model_dir,
        query_int8=int8,
        document_int8=int8,
        threads=threads,
        spinning=spinning,
    )


def residual_crossing(
    dim: int, hidden: int, combine: str, seed: int = 0, output_relu: bool = False
) -> ResidualCrossing:
    """A residual crossing layer with random weights of the trained layer's shapes."""
    rng = np.random.default_rng(seed)
    width = 2 * dim if combine == "concat" else dim

    def dense(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    weights = {
        "dense1.weight": dense(hidden, width),
        "dense1.bias": np.zeros(hidden, np.float32),
        "dense2.weight": dense(width, hidden),
        "dense2.bias": np.zeros(width, np.float32),
        "out.weight": dense(1, width),
        "out.bias": np.zeros(1, np.float32),
    }
    return ResidualCrossing(weights, combine, output_relu)


def with_residual(
    runtime: TwinBertRuntime,
    cfg: BenchConfig,
    combine: str,
    hidden: int | None = None,
    output_relu: bool = False,
    int8: bool | None = None,
) -> TwinBertRuntime:
    """The same towers with a residual crossing layer (TwinBERT-res) for timing.

    `int8` (default: `cfg.crossing_int8`) scores with the layer's int8 graph, as an int8
    serving runtime does for a model exported with --int8 (`quantization.crossing_graph`).
    """
    hidden = hidden or cfg.hidden
    crossing: Crossing = residual_crossing(runtime.dim, hidden, combine, cfg.seed, output_relu)
    if (cfg.crossing_int8 if int8 is None else int8) and supports_int8_graph(crossing):
        graph = cfg.work_dir / f"crossing-{combine}-{hidden}.int8.onnx"
        if not graph.is_file():
            write_int8_graph(crossing, graph)  # type: ignore[arg-type]
        crossing = OnnxCrossing.load(graph)
    return TwinBertRuntime(
        runtime.model_dir,
        runtime.manifest,
        runtime.query_encoder,
        runtime.document_encoder,
        crossing,
        document_graph=runtime.document_graph,
    )


# --- query encoding -----------------------------------------------------------------------


def bench_encoding(cfg: BenchConfig) -> dict[str, Any]:
    """Single-query encoding latency per graph and thread count, and int8-fp32 cosine.

    The four variants take turns query by query, so a change in machine load during the run
    shifts them all alike and their ratios hold.
    """
    texts = query_texts(cfg)
    variants = [(graph, threads) for graph in ("fp32", "int8") for threads in (1, 2)]
    runtimes = {v: load_runtime(cfg, int8=v[0] == "int8", threads=v[1]) for v in variants}
    samples: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    for runtime in runtimes.values():
        for text in texts[:10]:
            runtime.encode_query(text)  # warm-up
    for i in range(cfg.encode_queries):
        text = texts[i % len(texts)]
        for variant, runtime in runtimes.items():
            start = time.perf_counter()
            runtime.encode_query(text)
            samples[variant].append((time.perf_counter() - start) * 1e3)
    rows = [{"graph": g, "threads": t, **summary_ms(samples[(g, t)])} for g, t in variants]
    cos = row_cosines(
        runtimes[("int8", 1)].encode_queries(texts), runtimes[("fp32", 1)].encode_queries(texts)
    )
    p50 = {(r["graph"], r["threads"]): r["p50"] for r in rows}
    return {
        "queries": len(texts),
        "rows": rows,
        "int8_fp32_cosine": {"mean": float(cos.mean()), "min": float(cos.min())},
        "int8_speedup": {str(t): p50[("fp32", t)] / p50[("int8", t)] for t in (1, 2)},
    }


# --- rerank -------------------------------------------------------------------------------


def _teacher(cfg: BenchConfig, runtime: TwinBertRuntime) -> Any:
    """A cross-encoder on the model's base checkpoint (random head: fine for timing)."""
    import torch

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.teacher import CrossEncoder, TeacherScorer
    from twinbert_search.training.tokenizer import tokenizer_file

    torch.set_num_threads(2)
    path = Path(cfg.teacher or runtime.manifest.base_model)
    model = CrossEncoder.from_checkpoint(path).eval()
    length = min(cfg.teacher_max_length, model.backbone.config.max_position_embeddings)
    tokenizer = TextTokenizer.from_file(tokenizer_file(path), length)
    return TeacherScorer(model, tokenizer, "benchmark", batch_size=32), str(path)


def _gemm_floor(
    cfg: BenchConfig, dim: int, hidden_sizes: list[int], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """The max-combine layer's one matrix product (dense1; dense2 is folded into the output
    vector) alone, for 1,000 candidates: the BLAS floor the whole layer is compared with."""
    x = rng.standard_normal((1000, dim)).astype(np.float32)
    rows = []
    for hidden in hidden_sizes:
        w1 = rng.standard_normal((dim, hidden)).astype(np.float32)
        samples = sample_ms(lambda i, a=w1: x @ a, cfg.rerank_reps, warmup=5)
        rows.append({"hidden": hidden, "candidates": 1000, **summary_ms(samples)})
    return rows


def bench_rerank(cfg: BenchConfig, runtime: TwinBertRuntime) -> dict[str, Any]:
    """Crossing-layer rerank vs the teacher cross-encoder on the same candidates."""
    texts = query_texts(cfg)
    docs = corpus_documents(cfg, max(1000, cfg.candidates))
    rng = np.random.default_rng(cfg.seed)
    query = runtime.encode_query(texts[0])
    crossing_rows = []
    hidden_sizes = sorted({cfg.hidden, *cfg.rerank_hidden})
    variants = [(c, h, False, False) for c in ("max", "concat") for h in hidden_sizes]
    variants += [("max", h, False, True) for h in hidden_sizes]  # the int8 graph
    variants.append(("max", LEGACY_HIDDEN, True, False))  # the pre-0.1.0 form, to compare
    for combine, hidden, output_relu, int8 in variants:
        res = with_residual(runtime, cfg, combine, hidden, output_relu, int8=int8)
        for n in (100, 1000):
            vectors = rng.standard_normal((n, runtime.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            pre = res.precompute_documents(vectors)  # done once at ingest, not per query
            samples = sample_ms(
                lambda i, r=res, v=vectors, p=pre: r.score(query, v, p),
                cfg.rerank_reps,
                warmup=5,
            )
            crossing_rows.append(
                {
                    "combine": combine,
                    "hidden": hidden,
                    "output_relu": output_relu,
                    "int8": int8,
                    "candidates": n,
                    **summary_ms(samples),
                }
            )
    encode = summary_ms(
        sample_ms(lambda i: runtime.encode_query(texts[i % len(texts)]), 50, warmup=5)
    )
    out: dict[str, Any] = {
        "crossing": crossing_rows,
        "gemm_floor": _gemm_floor(cfg, runtime.dim, hidden_sizes, rng),
        "query_encode_ms": encode["p50"],
    }
    if cfg.teacher_reps <= 0:
        return out
    scorer, teacher_path = _teacher(cfg, runtime)
    teacher_rows = []
    for n, reps in ((100, cfg.teacher_reps), (1000, 1)):
        pairs = [(texts[0], d.encoding_text) for d in docs[:n]]
        samples = sample_ms(lambda i, p=pairs: scorer.score(p), reps, warmup=1 if n == 100 else 0)
        teacher_rows.append({"candidates": n, **summary_ms(samples)})
    out["teacher"] = {
        "checkpoint": teacher_path,
        "max_length": scorer.max_length,
        "rows": teacher_rows,
    }
    ratios = []
    for t in teacher_rows:
        for c in crossing_rows:
            if (
                c["candidates"] == t["candidates"]
                and c["hidden"] == cfg.hidden
                and not c.get("output_relu")
                and not c.get("int8")
            ):
                ratios.append(
                    {
                        "combine": c["combine"],
                        "candidates": t["candidates"],
                        "teacher_over_crossing": t["p50"] / c["p50"],
                        "teacher_over_encode_plus_crossing": t["p50"] / (c["p50"] + encode["p50"]),
                    }
                )
    out["ratios"] = ratios
    return out


# --- end-to-end search --------------------------------------------------------------------


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_store(
    path: Path, vectors: np.ndarray, runtime: TwinBertRuntime, cfg: BenchConfig
) -> dict[str, float]:
    """Ingest synthetic vectors (ids d0000000...) into an embedded store and finalize it."""
    from twinbert_search.stores.embedded import EmbeddedStore

    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    store = EmbeddedStore.create_or_open(
        path, dim=vectors.shape[1], codec=cfg.codec, ann=cfg.ann, bm25=False
    )
    try:
        chunk = 20_000
        for lo in range(0, len(vectors), chunk):
            block = vectors[lo : lo + chunk]
            docs = [Document(id=f"d{i:08d}", text=f"doc {i}") for i in range(lo, lo + len(block))]
            store.upsert(
                docs,
                block,
                model_fingerprint=runtime.fingerprint,
                precomputed=runtime.precompute_documents(block),
            )
        ingest = time.perf_counter() - start
        start = time.perf_counter()
        store.finalize()
        finalize = time.perf_counter() - start
        ann = store.info.ann
    finally:
        store.close()
    return {"ingest_s": ingest, "build_s": finalize, "ann": ann}


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
    """End-to-end search latency and ANN recall@100 at one store size."""
    from twinbert_search.search import Searcher
    from twinbert_search.stores.embedded import EmbeddedStore

    sphere = ClusteredSphere(dim=runtime.dim, seed=cfg.seed)
    start = time.perf_counter()
    docs = sphere.document_matrix(size)
    # Queries of the same distribution: the first half warms the process up (as a serving
    # process is warm), the second half is measured; none of the measured ones ran before.
    warmup, queries = np.split(sphere.queries(2 * cfg.search_queries), 2)
    generate = time.perf_counter() - start
    path = cfg.work_dir / f"store-{size}"
    built = build_store(path, docs, runtime, cfg)
    k = min(RECALL_K, size)
    truth, similarity = exact_top(docs, queries, k)
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
        from twinbert_search.stores import ann as ann_lib

        index = ann_lib.load_index(snapshot / "ann.faiss")
        tuned_nprobe = int(index.nprobe)  # chosen at build by ann.tune_nprobe
        depth = min(cfg.candidates, size)
        sweep = [_knn_quality(index, queries, truth, depth, nprobe) for nprobe in (8, 16, 32, 64)]
        del index
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
        "snapshot_bytes": _dir_bytes(snapshot),
        "ann_bytes": (snapshot / "ann.faiss").stat().st_size,
        "store_path": str(path),
    }


def bench_ann_choice(cfg: BenchConfig, size: int, specs: list[str]) -> dict[str, Any]:
    """Build time, recall@100 and kNN latency (k = candidates) of several index strings on the
    same vectors, with the search knob swept: how the index for the stores was chosen."""
    from twinbert_search.stores import ann as ann_lib

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
        for knob in knobs:
            row = _knn_quality(index, queries, truth, depth, knob)
            rows.append({"spec": resolved.canonical, "build_s": build, **row})
        del index
    return {"size": size, "candidates": min(cfg.candidates, size), "rows": rows}


def _knn_quality(
    index: Any, queries: np.ndarray, truth: np.ndarray, depth: int, nprobe: int | None
) -> dict[str, Any]:
    """recall@k (k = truth width) and single-query latency at `depth` for one search knob."""
    from twinbert_search.stores import ann as ann_lib

    k = truth.shape[1]
    hits = 0
    for i, query in enumerate(queries):
        rows = ann_lib.search(index, query, k, nprobe=nprobe)[1][0]
        hits += len(set(rows.tolist()) & set(truth[i].tolist()))
    latency = sample_ms(
        lambda i: ann_lib.search(index, queries[i % len(queries)], depth, nprobe=nprobe),
        len(queries),
        warmup=2,
    )
    return {
        "knob": "default" if nprobe is None else f"nprobe={nprobe}",
        "recall_at_100": hits / truth.size,
        "knn_ms": summary_ms(latency),
    }


def cfg_dim(cfg: BenchConfig) -> int:
    from twinbert_search.manifest import ModelManifest

    return ModelManifest.load(cfg.model_dir).dim


# --- indexing -----------------------------------------------------------------------------


def _index_run(
    cfg: BenchConfig,
    docs: list[Document],
    runtime: TwinBertRuntime,
    *,
    name: str,
    codec: str,
    sort_by_length: bool,
    batch_size: int,
) -> tuple[dict[str, Any], np.ndarray]:
    from twinbert_search.ingest.indexing import index_documents
    from twinbert_search.stores.codecs import get_codec
    from twinbert_search.stores.embedded import EmbeddedStore

    path = cfg.work_dir / f"index-{name}"
    shutil.rmtree(path, ignore_errors=True)
    runtime.encode_documents([d.encoding_text for d in docs[:8]], 8)  # warm the session
    store = EmbeddedStore.create_or_open(path, codec=codec)
    try:
        report = index_documents(
            docs,
            store,
            runtime,
            batch_size=batch_size,
            sort_by_length=sort_by_length,
            progress=False,
        )
        vectors = store.fetch([d.id for d in docs], with_documents=False).vectors
    finally:
        store.close()
    snapshot = next(p for p in (path / "snapshots").iterdir() if not p.name.startswith("."))
    vector_bytes = sum(
        (snapshot / f"{a}.npy").stat().st_size for a in get_codec(codec).array_names()
    )
    row = {
        "name": name,
        "graph": runtime.document_graph,
        "sorted": sort_by_length,
        "batch_size": batch_size,
        "codec": codec,
        "docs": report.encoded,
        "encode_docs_per_s": report.docs_per_s,
        "docs_per_s": report.encoded / report.seconds,
        "seconds": report.seconds,
        "vector_bytes_per_doc": vector_bytes / len(docs),
        "codec_bytes_per_vector": get_codec(codec).bytes_per_vector(runtime.dim),
        "store_bytes_per_doc": _dir_bytes(path) / len(docs),
    }
    shutil.rmtree(path, ignore_errors=True)
    return row, vectors


def _openvino_model(cfg: BenchConfig, calibration: list[Document]) -> Path:
    """A view of the model (links to its files, its own manifest) with a static int8
    document graph calibrated on `calibration`, so the user's model directory is untouched."""
    from twinbert_search.quantization import quantize_documents

    view = cfg.work_dir / "model-openvino"
    shutil.rmtree(view, ignore_errors=True)
    (view / "onnx").mkdir(parents=True)
    for entry in cfg.model_dir.iterdir():
        if entry.name == "manifest.json":
            shutil.copy(entry, view / entry.name)
        elif entry.name == "onnx":
            for graph in entry.iterdir():
                if graph.name != "document_encoder.static-int8.onnx":  # the user's, if any
                    (view / "onnx" / graph.name).symlink_to(graph.resolve())
        else:
            (view / entry.name).symlink_to(entry.resolve())
    quantize_documents(view, [d.encoding_text for d in calibration], overwrite=True)
    return view


def bench_indexing(cfg: BenchConfig) -> dict[str, Any]:
    """Naive (fp32 graph, unsorted batches) vs the optimized paths (length-sorted batches;
    the int8 graph on ONNX Runtime and, where OpenVINO is installed, the calibrated static
    int8 graph on OpenVINO), then the fastest path per codec.

    Naive and each optimized path run twice, alternately, and the faster of each pair counts,
    so a passing load spike does not decide the ratio; the other codecs run once. The static
    graph is calibrated on the 128 documents after the timed ones.
    """
    from twinbert_search.runtime.openvino import openvino_available

    calibration = 128
    docs = corpus_documents(cfg, cfg.index_docs + calibration)
    docs, calib_docs = docs[: cfg.index_docs], docs[cfg.index_docs :]
    # Without spin-waiting, one path's idle ONNX Runtime threads cannot slow the next path.
    runtimes = {
        "naive": load_runtime(cfg, int8=False, threads=2, spinning=False),
        "optimized-float32": load_runtime(cfg, int8=True, threads=2, spinning=False),
    }
    if openvino_available():
        runtimes["openvino-float32"] = TwinBertRuntime.load(
            _openvino_model(cfg, calib_docs), document_graph="openvino-int8", threads=2
        )
    runs: dict[str, list[tuple[dict[str, Any], np.ndarray]]] = {k: [] for k in runtimes}
    for _ in range(2):
        for name, runtime in runtimes.items():
            runs[name].append(
                _index_run(
                    cfg,
                    docs,
                    runtime,
                    name=name,
                    codec="float32",
                    sort_by_length=name != "naive",
                    batch_size=cfg.index_batch,
                )
            )
    best = {k: max(v, key=lambda r: r[0]["docs_per_s"]) for k, v in runs.items()}
    naive, naive_vectors = best.pop("naive")
    fastest = max(best, key=lambda k: best[k][0]["docs_per_s"])
    rows = [naive] + [row for row, _ in best.values()]
    for codec in CODECS[1:]:
        row, _ = _index_run(
            cfg,
            docs,
            runtimes[fastest],
            name=f"{fastest.removesuffix('-float32')}-{codec}",
            codec=codec,
            sort_by_length=True,
            batch_size=cfg.index_batch,
        )
        rows.append(row)
    for row in rows:
        row["x_naive"] = row["docs_per_s"] / naive["docs_per_s"]
    cosines = {}
    for name, (_, vectors) in best.items():
        cos = row_cosines(vectors, naive_vectors)
        cosines[name] = {"mean": float(cos.mean()), "min": float(cos.min())}
    top = best[fastest][0]
    return {
        "docs": len(docs),
        "calibration_docs": len(calib_docs) if "openvino-float32" in runtimes else 0,
        "corpus": str(corpus_path(cfg)),
        "rows": rows,
        "fastest": fastest,
        "speedup_end_to_end": top["docs_per_s"] / naive["docs_per_s"],
        "speedup_encode": top["encode_docs_per_s"] / naive["encode_docs_per_s"],
        "optimized_naive_cosine": cosines[fastest],
        "cosine_to_naive": cosines,
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
