"""A/B timings behind the end-to-end search figures (BENCHMARKS.md), each pair interleaved
query by query so that a change in machine load hits both sides alike.

    python benchmarks/pipeline_ab.py [--size 1000000] [--work-dir /tmp/twinbert-ab]

1. Recall with vectors: `ann.search_with_vectors` (the hits' vectors from the IVF-Flat lists)
   against `ann.search` plus a gather from the snapshot's vector array.
2. The whole search pipeline (query encoding, kNN, rerank of 1,000) with the int8 crossing
   graph against numpy's float crossing, on the same store (each side its own query vectors).
3. Search (query vector given) with recall's ids as a lazy view against a list of 1,000.
4. The same pipeline with ONNX Runtime's default thread pool (threads unset), whose idle
   threads spin-wait after each run or not (`TwinBertRuntime.load(spinning=...)`).
5. Single-query encoding with the default thread pool, spinning or not.
6. Single-query encoding: the int8 query graph against ONNX Runtime's fused BERT graph
   (int8) and weight-only MatMulNBits 8-bit with int8 compute.

Builds a synthetic store of `--size` documents in `--work-dir` once (about 75 s at 1M here)
and reuses it. Needs the default model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import suite
from benchmarks.synthetic import ClusteredSphere
from twinbert_search.runtime.encoder import OnnxEncoder, make_session
from twinbert_search.runtime.models import resolve_model
from twinbert_search.search import Searcher
from twinbert_search.stores.embedded import EmbeddedStore, ann


def _alternate(arms: dict[str, Callable[[int], float | None]], n: int) -> dict[str, float]:
    """Run each arm on queries 0..n-1, alternating which goes first; p50 ms of the second half
    (the first half warms up)."""
    samples: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(n):
        for name in names if i % 2 else names[::-1]:
            t0 = time.perf_counter()
            ms = arms[name](i)
            elapsed = (time.perf_counter() - t0) * 1e3 if ms is None else ms
            if i >= n // 2:
                samples[name].append(elapsed)
    return {name: float(np.median(v)) for name, v in samples.items()}


def _store(cfg: suite.BenchConfig, size: int) -> Path:
    path = cfg.work_dir / f"store-{size}"
    if not (path / "store.json").is_file():
        runtime = suite.load_runtime(cfg, int8=True, threads=1)
        docs = ClusteredSphere(dim=runtime.dim, seed=cfg.seed).document_matrix(size)
        suite.build_store(path, docs, suite.with_residual(runtime, cfg, cfg.combine), cfg)
    return path


def recall_vectors(store: EmbeddedStore, queries: np.ndarray) -> dict[str, float]:
    snap = store._loaded()  # the benchmark reaches into the snapshot on purpose
    half = len(queries) // 2

    def from_index(i: int) -> None:
        ann.search_with_vectors(snap.index, queries[i], 1000)

    def gathered(i: int) -> None:
        _, rows = ann.search(snap.index, queries[half + i], 1000)
        snap.codec.decode(snap.arrays, rows[0][rows[0] >= 0])

    return _alternate({"search_with_vectors": from_index, "search + gather": gathered}, half)


def pipeline(cfg: suite.BenchConfig, store: EmbeddedStore, queries: np.ndarray) -> dict:
    base = suite.load_runtime(cfg, int8=True, threads=cfg.serve_threads)
    texts = suite.query_texts(cfg)
    half = len(queries) // 2
    searchers = {
        "int8 crossing graph": Searcher(suite.with_residual(base, cfg, cfg.combine), store),
        "numpy float crossing": Searcher(
            suite.with_residual(base, cfg, cfg.combine, int8=False), store
        ),
    }
    stages: dict[str, dict[str, list[float]]] = {k: {"rerank": []} for k in searchers}

    def arm(name: str, offset: int) -> Callable[[int], float]:
        searcher = searchers[name]

        def run(i: int) -> float:
            t0 = time.perf_counter()
            searcher.runtime.encode_query(texts[i % len(texts)])
            result = searcher.search(
                "", k=10, candidates=1000, query_vector=queries[offset + i], fetch_documents=False
            )
            if i >= half // 2:
                stages[name]["rerank"].append(result.timings_ms["rerank"])
            return (time.perf_counter() - t0) * 1e3

        return run

    totals = _alternate({name: arm(name, k * half) for k, name in enumerate(searchers)}, half)
    return {
        name: {"total": totals[name], "rerank": float(np.median(stages[name]["rerank"]))}
        for name in searchers
    }


def candidate_ids(cfg: suite.BenchConfig, store: EmbeddedStore, queries: np.ndarray) -> dict:
    """Search (vector given) with recall's ids as a lazy `RowIds` view against the eager list
    it replaced (the B side patches the store module's `RowIds` with a list builder)."""
    import operator

    from twinbert_search.stores.embedded import reader as embedded

    runtime = suite.with_residual(suite.load_runtime(cfg, int8=True, threads=1), cfg, cfg.combine)
    searcher = Searcher(runtime, store)
    view = embedded.RowIds
    half = len(queries) // 2

    def eager(table: list[str], rows: np.ndarray) -> list[str]:
        return list(operator.itemgetter(*rows.tolist())(table))

    def arm(ids: Callable, offset: int) -> Callable[[int], None]:
        def run(i: int) -> None:
            embedded.RowIds = ids
            searcher.search(
                "", k=10, candidates=1000, query_vector=queries[offset + i], fetch_documents=False
            )

        return run

    try:
        return _alternate({"RowIds view": arm(view, 0), "list of 1,000": arm(eager, half)}, half)
    finally:
        embedded.RowIds = view


def spinning(cfg: suite.BenchConfig, store: EmbeddedStore, queries: np.ndarray) -> dict:
    """The search pipeline with ONNX Runtime's default thread pool (threads unset), the fp32
    query graph and numpy's float crossing, its sessions spin-waiting after a run or not.

    Spinning threads of one side would slow the other, so the sides run in alternating
    blocks of 50 queries, in separate runtimes, rather than query by query.
    """
    from twinbert_search.runtime.model import TwinBertRuntime

    texts = suite.query_texts(cfg)
    searchers = {}
    for spin in (True, False):
        runtime = TwinBertRuntime.load(
            cfg.model_dir, document_int8=True, spinning=spin, crossing_int8=False
        )
        runtime = suite.with_residual(runtime, cfg, cfg.combine, int8=False)
        searchers["spinning" if spin else "not spinning"] = Searcher(runtime, store)
    samples: dict[str, dict[str, list[float]]] = {k: {"total": [], "rerank": []} for k in searchers}
    block = 50
    for b in range(len(queries) // block):
        name = list(searchers)[b % 2]
        searcher = searchers[name]
        for i in range(b * block, (b + 1) * block):
            t0 = time.perf_counter()
            searcher.runtime.encode_query(texts[i % len(texts)])
            result = searcher.search(
                "", k=10, candidates=1000, query_vector=queries[i], fetch_documents=False
            )
            if b >= 2:  # the first block of each side warms up
                samples[name]["total"].append((time.perf_counter() - t0) * 1e3)
                samples[name]["rerank"].append(result.timings_ms["rerank"])
    return {k: {m: float(np.median(v)) for m, v in d.items()} for k, d in samples.items()}


def spinning_encode(cfg: suite.BenchConfig) -> dict[str, dict[str, float]]:
    """Single-query encoding alone, threads unset: what spin-waiting buys the encoder.
    Alternating blocks of 100 queries (after 50 to warm up), as in `spinning`."""
    from twinbert_search.runtime.model import TwinBertRuntime

    texts = suite.query_texts(cfg)
    out = {}
    for graph, int8 in (("fp32 graph", False), ("int8 graph", True)):
        runtimes = {
            spin: TwinBertRuntime.load(cfg.model_dir, int8=int8, spinning=spin)
            for spin in (True, False)
        }
        samples: dict[bool, list[float]] = {True: [], False: []}
        for block in range(6):
            spin = block % 2 == 0
            runtime = runtimes[spin]
            for i in range(50):
                runtime.encode_query(texts[i % len(texts)])
            for i in range(100):
                t0 = time.perf_counter()
                runtime.encode_query(texts[(50 + i) % len(texts)])
                samples[spin].append((time.perf_counter() - t0) * 1e3)
        out[graph] = {
            "spinning": float(np.median(samples[True])),
            "not spinning": float(np.median(samples[False])),
        }
    return out


def query_graphs(cfg: suite.BenchConfig, tmp: Path) -> dict[str, float]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    from benchmarks.document_graphs import matmul_nbits
    from twinbert_search.quantization import quiet_quantizer

    model = Path(cfg.model_dir)
    fp32 = model / "onnx" / "query_encoder.onnx"
    fused = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=384)
    fused.save_model_to_file(str(tmp / "fused.onnx"))
    with quiet_quantizer():
        quantize_dynamic(
            str(tmp / "fused.onnx"),
            str(tmp / "fused.int8.onnx"),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": 1},  # float: the fused ops hide types
        )
        matmul_nbits(fp32, tmp / "nbits8.onnx", 8)
    tok = suite.load_runtime(cfg, int8=True, threads=1).query_encoder.tokenizer
    graphs = {
        "int8 (export --int8)": model / "onnx" / "query_encoder.int8.onnx",
        "int8, fused BERT graph": tmp / "fused.int8.onnx",
        "MatMulNBits 8-bit, int8 compute": tmp / "nbits8.onnx",
    }
    encoders = {k: OnnxEncoder(make_session(p, 1), tok) for k, p in graphs.items()}
    texts = suite.query_texts(cfg)

    def arm(encoder: OnnxEncoder) -> Callable[[int], None]:
        def run(i: int) -> None:
            encoder.encode([texts[i % len(texts)]], 1)

        return run

    arms = {name: arm(encoder) for name, encoder in encoders.items()}
    return _alternate(arms, 6 * len(texts))


def _table(title: str, rows: dict[str, float | dict[str, float]]) -> None:
    print(f"\n{title}\n")
    first = next(iter(rows.values()))
    columns = list(first) if isinstance(first, dict) else ["p50 ms"]
    print(
        "| variant | " + " | ".join(f"{c} p50 ms" if c != "p50 ms" else c for c in columns) + " |"
    )
    print("|---|" + "---:|" * len(columns))
    for name, value in rows.items():
        cells = value.values() if isinstance(value, dict) else [value]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/twinbert-ab"))
    p.add_argument("--queries", type=int, default=400)
    args = p.parse_args()
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    cfg = suite.BenchConfig(
        model_dir=Path(resolve_model(None, build_default=True)), work_dir=args.work_dir
    )
    path = _store(cfg, args.size)
    queries = ClusteredSphere(dim=384, seed=cfg.seed).queries(args.queries)
    store = EmbeddedStore.open(path, with_documents=False)
    try:
        _table(
            f"Recall of 1,000 hits with their vectors, {args.size:,} documents",
            recall_vectors(store, queries),
        )
        _table(
            f"Search pipeline, {args.size:,} documents, rerank 1,000", pipeline(cfg, store, queries)
        )
        _table(
            f"Search with a given query vector, {args.size:,} documents: candidate ids",
            candidate_ids(cfg, store, queries),
        )
        _table(
            "The same with threads unset, the fp32 query graph and numpy's crossing",
            spinning(cfg, store, queries),
        )
    finally:
        store.close()
    _table("Single-query encoding, threads unset", spinning_encode(cfg))
    _table("Single-query encoding, 1 thread", query_graphs(cfg, args.work_dir))


if __name__ == "__main__":
    main()
