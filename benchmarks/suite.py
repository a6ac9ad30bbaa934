"""What every benchmark section shares: the run's `BenchConfig`, its data and its runtimes.

The sections each take a `BenchConfig` and return a JSON-able dict; `run.py` runs them:

- encoding   query encoder p50/p99, fp32 vs int8 graphs, 1 and 2 threads, int8-fp32 cosine
             (`encode_rerank.py`)
- rerank     residual crossing vs the teacher cross-encoder on the same 100 / 1,000 candidates
             (`encode_rerank.py`)
- search     end-to-end search on the embedded store per size: encode + kNN + residual
             rerank, ANN recall@100 against exact search, ingest and index build time
             (`search_ann.py`)
- memory     peak RSS of a child process that loads the model and the largest store and
             serves queries (`serve_probe.py`, started by `search_ann.py`)
- ann        build time, recall@100 and latency of several index strings on the same vectors
             (`search_ann.py`)
- indexing   docs/s of a naive baseline (fp32, unsorted) vs the optimized path, per codec
             (`indexing_speed.py`)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.quantization.crossing_graph import supports_int8_graph, write_int8_graph
from twinbert_search.runtime.crossing import Crossing, OnnxCrossing, ResidualCrossing
from twinbert_search.runtime.model import TwinBertRuntime

REPO = Path(__file__).resolve().parents[1]
SAMPLE_QUERIES = REPO / "examples" / "sample" / "queries.jsonl"
SAMPLE_CORPUS = REPO / "examples" / "sample" / "corpus.jsonl"
SCIFACT_CORPUS = REPO.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"
CODECS = ("float32", "float16", "int8")
RECALL_K = 100


@dataclass
class BenchConfig:
    """Everything a run depends on; `run.py` fills it from the command line."""

    model_dir: Path
    work_dir: Path
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    ann: str = "auto"  # the product default: flat below 50k, ivfN,sq8 above
    codec: str = "float32"
    hidden: int = 128  # the default crossing size (CrossingConfig)
    alt_hidden: int | None = 256  # end-to-end also timed with this crossing size
    rerank_hidden: list[int] = field(default_factory=lambda: [64, 128, 256])  # also timed
    combine: str = "max"  # crossing combine for the end-to-end search
    candidates: int = 1000
    encode_queries: int = 300  # timed query encodings per variant
    search_queries: int = 200  # timed end-to-end searches per size
    rerank_reps: int = 200  # timed crossing calls per candidate count
    teacher_reps: int = 10  # queries the teacher reranks 100 candidates for (1 at 1,000)
    teacher: Path | None = None  # teacher dir (recipe export) or checkpoint; None: base_model
    index_docs: int = 500
    index_batch: int = 32
    corpus: Path | None = None  # None: SciFact when present, else the sample corpus
    queries: Path = SAMPLE_QUERIES
    serve_threads: int = 1  # query-encoder threads in the serving path
    crossing_int8: bool = True  # end-to-end search with the int8 crossing graph, as served
    seed: int = 0


def read_jsonl_texts(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` records of a JSONL file (all when None)."""
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                out.append(json.loads(line))
            if limit is not None and len(out) >= limit:
                break
    return out


def query_texts(cfg: BenchConfig) -> list[str]:
    """The texts of the run's queries (real text: encoding cost depends on its length)."""
    return [row["text"] for row in read_jsonl_texts(cfg.queries)]


def corpus_path(cfg: BenchConfig) -> Path:
    """The corpus asked for, else SciFact when present, else the sample corpus."""
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
    """The run's model with the given graphs and threads (int8 for both towers or neither)."""
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


# --- stores -------------------------------------------------------------------------------


def dir_bytes(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_store(
    path: Path,
    vectors: np.ndarray | Iterable[np.ndarray],
    runtime: TwinBertRuntime,
    cfg: BenchConfig,
    observe: Callable[[int, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Ingest synthetic vectors (ids d00000000...) into an embedded store and finalize it.

    `vectors` is a matrix or an iterable of chunks (10M float32 vectors do not fit beside
    the store); `observe(start_row, chunk)` sees each chunk as it is ingested, so the exact
    top-k can be kept without a second pass. Time spent producing chunks is reported apart.
    """
    from twinbert_search.stores.embedded import EmbeddedStore

    chunk = 20_000
    if isinstance(vectors, np.ndarray):
        matrix = vectors
        vectors = (matrix[lo : lo + chunk] for lo in range(0, len(matrix), chunk))
    shutil.rmtree(path, ignore_errors=True)
    store = None
    generate, ingest, lo = 0.0, 0.0, 0
    try:
        source = iter(vectors)
        while True:
            t0 = time.perf_counter()
            block = next(source, None)
            generate += time.perf_counter() - t0
            if block is None:
                break
            t0 = time.perf_counter()
            if store is None:
                store = EmbeddedStore.create_or_open(
                    path, dim=block.shape[1], codec=cfg.codec, ann=cfg.ann, bm25=False
                )
            for part in range(0, len(block), chunk):
                piece = block[part : part + chunk]
                first = lo + part
                docs = [
                    Document(id=f"d{i:08d}", text=f"doc {i}")
                    for i in range(first, first + len(piece))
                ]
                store.upsert(
                    docs,
                    piece,
                    model_fingerprint=runtime.fingerprint,
                    precomputed=runtime.precompute_documents(piece),
                )
            ingest += time.perf_counter() - t0
            if observe is not None:
                observe(lo, block)
            lo += len(block)
        start = time.perf_counter()
        store.finalize()
        finalize = time.perf_counter() - start
        ann = store.info.ann
    finally:
        if store is not None:
            store.close()
    return {"generate_s": generate, "ingest_s": ingest, "build_s": finalize, "ann": ann}


def cfg_dim(cfg: BenchConfig) -> int:
    """The model's vector dimension, read from its manifest alone (no runtime loaded)."""
    from twinbert_search.manifest import ModelManifest

    return ModelManifest.load(cfg.model_dir).dim
