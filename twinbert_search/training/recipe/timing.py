"""Timing teacher against students fairly: same queries, same candidates, alternating blocks.

Each side runs as it runs fastest here: the teacher's batches of 32 pairs on 2 ONNX Runtime
threads, a student's one short query on 1 (`STUDENT_THREADS`); no session spin-waits after a
run, so none holds the cores the next one needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.training.recipe.artifacts import TEACHER_DIR
from twinbert_search.training.recipe.context import Context
from twinbert_search.training.recipe.records import Query
from twinbert_search.training.recipe.scores import OnnxCrossEncoder

if TYPE_CHECKING:
    from twinbert_search.runtime.model import TwinBertRuntime

__all__ = [
    "STUDENT_THREADS",
    "TIMING_BLOCK",
    "block_timing",
    "paired_timing",
    "speedups",
    "student_runtime",
]

STUDENT_THREADS = 1  # a student's one short query runs fastest on one ONNX Runtime thread here

TIMING_BLOCK = 5  # queries per turn when systems are timed in alternating blocks


def block_timing(
    systems: Mapping[str, Callable[[Any], object]],
    queries: Sequence[Any],
    warm: Any,
    block: int = TIMING_BLOCK,
) -> dict[str, Any]:
    """Time every system on the same queries, each in its steady state, in alternating blocks.

    The systems take turns block by block, the order reversed every other block, so drift in
    the machine's load falls on all of them alike. Before its block a system runs once,
    untimed, on `warm` (a query outside the timed set): a serving process answers query after
    query, so its weights are in cache, while here the other systems ran in between. That first
    call is reported apart, as the cold cost ('cold_ms_per_call').
    """
    names = list(systems)
    samples: dict[str, list[float]] = {n: [] for n in names}
    cold: dict[str, list[float]] = {n: [] for n in names}
    for b, start in enumerate(range(0, len(queries), block)):
        part = queries[start : start + block]
        for name in names if b % 2 == 0 else names[::-1]:
            run = systems[name]
            t0 = time.perf_counter()
            run(warm)
            cold[name].append(1e3 * (time.perf_counter() - t0))
            for q in part:
                t0 = time.perf_counter()
                run(q)
                samples[name].append(1e3 * (time.perf_counter() - t0))
    return {
        "queries": len(queries),
        "block": block,
        "ms_per_query": {k: float(np.mean(v)) if v else 0.0 for k, v in samples.items()},
        "p50_ms_per_query": {k: float(np.median(v)) if v else 0.0 for k, v in samples.items()},
        "cold_ms_per_call": {k: float(np.mean(v)) if v else 0.0 for k, v in cold.items()},
    }


def speedups(timing: dict[str, Any], teacher: str = "teacher") -> dict[str, Any]:
    """Add each system's speed-up over the teacher (means and medians) to a `block_timing`."""
    mean, p50 = timing["ms_per_query"], timing["p50_ms_per_query"]
    timing["speedup"] = {k: mean[teacher] / max(v, 1e-9) for k, v in mean.items() if k != teacher}
    timing["speedup_p50"] = {k: p50[teacher] / max(v, 1e-9) for k, v in p50.items() if k != teacher}
    return timing


def paired_timing(ctx: Context, queries: Sequence[Query]) -> dict[str, Any]:
    """Teacher and students on the same queries and candidates (`block_timing`).

    A student's rerank stage here is its query tower plus the crossing over the stored vectors
    of the same candidates (these candidates were recalled with the default model's query
    vector); it is timed with its fp32 query graph and its int8 one. Each side runs as it runs
    fastest here: the teacher's batches of 32 pairs on 2 ONNX Runtime threads, a student's one
    short query on 1 (`STUDENT_THREADS`). No session spin-waits after a run, so none holds the
    cores the next one needs.
    """
    cfg = ctx.cfg
    dvec = ctx.load_candidates().dvec
    ce = OnnxCrossEncoder(
        ctx.out / TEACHER_DIR, cfg.teacher_threads or 2, int8=cfg.teacher_int8, spinning=False
    )
    depth = cfg.rerank_depth

    def teacher(q: Query) -> None:
        ce.score([(q.text, ctx.doc_text(r)) for r in q.recall[:depth]])

    def student(runtime: TwinBertRuntime) -> Callable[[Query], None]:
        def run(q: Query) -> None:
            runtime.score(runtime.encode_query(q.text), dvec[q.recall[:depth]])

        return run

    systems: dict[str, Callable[[Query], None]] = {"teacher": teacher}
    for spec in cfg.students:
        folder = ctx.out / spec.name
        systems[spec.name] = student(student_runtime(folder, False))
        if (folder / "onnx" / "query_encoder.int8.onnx").is_file():
            systems[f"{spec.name} (int8 query graph)"] = student(student_runtime(folder, True))
    test = ctx.split("test")
    timed = list(queries)
    warm = next((q for q in reversed(test) if q not in timed), timed[0])
    return {"candidates": depth, **speedups(block_timing(systems, timed, warm))}


def student_runtime(folder: Path, int8: bool) -> TwinBertRuntime:
    """A student as timed: its fp32 or int8 query graph, one thread, no spin-waiting."""
    from twinbert_search.runtime.model import TwinBertRuntime

    return TwinBertRuntime.load(folder, query_int8=int8, threads=STUDENT_THREADS, spinning=False)
