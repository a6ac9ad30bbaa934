"""The encoding and rerank sections: the query side of a search, timed alone.

- encoding   query encoder p50/p99, fp32 vs int8 graphs, 1 and 2 threads, int8-fp32 cosine
- rerank     residual crossing alone, then against the recipe's teacher on the same recalled
             100 / 1,000 candidates (`teacher_timing.py`)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks import teacher_timing
from benchmarks.suite import (
    BenchConfig,
    load_runtime,
    query_texts,
    with_residual,
)
from benchmarks.timing import sample_ms, summary_ms
from twinbert_search.runtime.encoder import row_cosines
from twinbert_search.runtime.model import TwinBertRuntime

LEGACY_HIDDEN = 256  # the crossing's default size before 0.1.0, timed in its old form


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
    try:
        import torch  # noqa: F401  (exporting a teacher needs the train extra)
    except ImportError:
        out["teacher_skipped"] = "torch is not installed (pip install -e '.[train]')"
        return out
    student = with_residual(runtime, cfg, cfg.combine)
    out.update(teacher_timing.bench_teacher(cfg, runtime, student))
    return out
